//! RTTM (NIST Rich Transcription Time Marked), the format diarization scorers read.
//!
//! One `SPEAKER <file-id> 1 <start> <dur> <NA> <NA> <speaker> <NA> <NA>` line per turn,
//! sorted by start, times in seconds with 3 decimals. Fields are space-separated, so
//! whitespace in names becomes `_`. Turns that round to zero length are left out (scorers
//! reject them). Without speaker turns, speech regions are written as speaker `speech`.

use std::io::Write;

use crate::document::{Analysis, SpeakerTurn};
use crate::time::to_millis;

use super::{Format, Part, WriteError, WriterOptions, check, file_stem};

/// A field with no whitespace, so it cannot split the line; `fallback` when empty.
fn field(s: &str, fallback: &str) -> String {
    let f: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if f.is_empty() { fallback.to_owned() } else { f }
}

/// Seconds as `S.mmm` from whole milliseconds, so rounding is exact and never `-0.000`.
pub(crate) fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The RTTM file id for `analysis`: the option, else the media file stem, else `audio`.
pub fn file_id(analysis: &Analysis, opts: &WriterOptions) -> String {
    let id = opts
        .file_id
        .as_deref()
        .unwrap_or_else(|| file_stem(&analysis.media.source));
    field(id, "audio")
}

/// Write `turns` as RTTM lines for `file_id`.
pub fn write_turns(
    file_id: &str,
    turns: &[SpeakerTurn],
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    check::speakers(turns)?;
    let id = field(file_id, "audio");
    let mut sorted: Vec<&SpeakerTurn> = turns.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    for t in sorted {
        let start = to_millis(t.start);
        let dur = to_millis(t.end).saturating_sub(start);
        if dur == 0 {
            tracing::debug!(
                start = t.start,
                end = t.end,
                "RTTM: skipping a zero-length turn"
            );
            continue;
        }
        let speaker = field(&t.speaker, "unknown");
        writeln!(
            out,
            "SPEAKER {id} 1 {} {} <NA> <NA> {speaker} <NA> <NA>",
            secs3(start),
            secs3(dur)
        )?;
    }
    Ok(())
}

/// Write the analysis' speaker turns, or its speech regions as speaker `speech` when it
/// has no (or no non-empty) turns; [`WriteError::Missing`] when it has neither.
pub fn write(
    analysis: &Analysis,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    let id = file_id(analysis, opts);
    match (&analysis.speakers, &analysis.speech) {
        (Some(turns), _) if !turns.is_empty() => write_turns(&id, turns, out),
        (_, Some(regions)) => {
            check::speech(regions)?;
            let turns: Vec<SpeakerTurn> = regions
                .iter()
                .map(|r| SpeakerTurn {
                    start: r.start,
                    end: r.end,
                    speaker: "speech".into(),
                })
                .collect();
            write_turns(&id, &turns, out)
        }
        (Some(turns), None) => write_turns(&id, turns, out),
        (None, None) => Err(WriteError::Missing {
            format: Format::Rttm,
            part: Part::Speakers,
        }),
    }
}
