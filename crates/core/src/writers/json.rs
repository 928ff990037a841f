//! JSON: the analysis, or one of its parts, as pretty-printed serde JSON.
//!
//! Numbers are written in shortest round-trip form and read back with serde_json's
//! `float_roundtrip`, so `Analysis -> JSON -> Analysis` is exact. NaN and infinity have no
//! JSON form and are refused rather than written as `null`.

use std::io::Write;

use serde::Serialize;

use crate::document::Analysis;

use super::{Format, Part, WriteError, check};

fn pretty<T: Serialize + ?Sized>(value: &T, out: &mut dyn Write) -> Result<(), WriteError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Write the whole analysis, or only `part` of it, as pretty JSON with a final newline.
pub fn write(
    analysis: &Analysis,
    part: Option<Part>,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    let missing = |part| WriteError::Missing {
        format: Format::Json,
        part,
    };
    match part {
        None => {
            check::analysis(analysis)?;
            pretty(analysis, out)
        }
        Some(Part::Transcript) => {
            let t = analysis
                .transcript
                .as_ref()
                .ok_or_else(|| missing(Part::Transcript))?;
            check::transcript(t)?;
            pretty(t, out)
        }
        Some(Part::Speech) => {
            let r = analysis
                .speech
                .as_ref()
                .ok_or_else(|| missing(Part::Speech))?;
            check::speech(r)?;
            pretty(r, out)
        }
        Some(Part::Speakers) => {
            let t = analysis
                .speakers
                .as_ref()
                .ok_or_else(|| missing(Part::Speakers))?;
            check::speakers(t)?;
            pretty(t, out)
        }
        Some(Part::Shots) => {
            let s = analysis
                .shots
                .as_ref()
                .ok_or_else(|| missing(Part::Shots))?;
            check::shots(s)?;
            pretty(s, out)
        }
    }
}
