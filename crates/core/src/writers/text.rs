//! Plain text: the transcript, one segment per line.

use std::io::Write;

use crate::document::{SpeakerTurn, Transcript};

use super::subtitle::resolve_speaker;
use super::wrap::normalize;
use super::{WriteError, WriterOptions};

/// Write each non-empty segment's text on its own line, whitespace collapsed, prefixed
/// `SPEAKER: ` when the segment has a speaker (its own, else from `turns`) and labels are on.
pub fn write(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    for seg in &transcript.segments {
        let text = normalize(&seg.text);
        if text.is_empty() {
            continue;
        }
        let speaker = if opts.speaker_labels {
            resolve_speaker(seg, turns)
        } else {
            None
        };
        match speaker {
            Some(s) => writeln!(out, "{s}: {text}")?,
            None => writeln!(out, "{text}")?,
        }
    }
    Ok(())
}
