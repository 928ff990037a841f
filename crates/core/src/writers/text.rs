//! Plain text: the transcript, one segment per line.

use std::io::Write;

use crate::document::{SpeakerTurn, Transcript};

use super::subtitle::spoken_segments;
use super::{WriteError, WriterOptions};

/// Write each non-empty segment's text on its own line, whitespace collapsed, prefixed
/// `SPEAKER: ` when the segment has a speaker (its own, else from `turns`) and labels are on.
pub fn write(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    for (_, text, speaker) in spoken_segments(transcript, turns, opts) {
        match speaker {
            Some(s) => writeln!(out, "{s}: {text}")?,
            None => writeln!(out, "{text}")?,
        }
    }
    Ok(())
}
