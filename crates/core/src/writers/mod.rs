//! Writers: every output format reads an [`crate::document::Analysis`] or one of its parts.
//!
//! [`write()`] is the one entry point the CLI and server use; the per-format modules also
//! expose functions over a single part for callers that hold only that part.
//!
//! | format | reads | notes |
//! |--------|-------|-------|
//! | `json` | the analysis, or one part with [`WriterOptions::json_part`] | pretty, exact round trip |
//! | `srt`, `vtt` | transcript | subtitle rules in [`subtitle`] |
//! | `rttm` | speaker turns, else speech regions as speaker `speech` | see [`rttm`] |
//! | `txt` | transcript | one segment per line |
//! | `csv`, `edl` | shots | see [`shots`] |
//!
//! A format whose part is absent is a [`WriteError::Missing`]; a part that is present but
//! empty writes an empty, valid file.

use std::fmt;
use std::io::{BufWriter, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::document::Analysis;
use crate::time::TimeError;

mod check;
pub mod json;
pub mod rttm;
pub mod shots;
pub mod subtitle;
pub mod text;
mod wrap;

pub use subtitle::Cue;

/// Errors from writers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output could not be written.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The format needs a part of the analysis that the analysis does not have.
    #[error("cannot write {format}: the analysis has no {part} (run the `{}` task)", part.task())]
    Missing {
        /// The format asked for.
        format: Format,
        /// The part it needs.
        part: Part,
    },
    /// A number in the document is NaN or infinite.
    #[error(
        "{field} is {value}; documents must hold finite numbers (a stage produced a bad value)"
    )]
    NonFinite {
        /// Where the value sits, e.g. `transcript.segments[3].start`.
        field: String,
        /// The value found.
        value: f64,
    },
    /// A writer option is out of range.
    #[error("invalid writer option {option}: {reason}")]
    InvalidOption {
        /// The option's field name in [`WriterOptions`].
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A frame rate or timecode request is invalid (e.g. shots with fps 0).
    #[error(transparent)]
    Time(#[from] TimeError),
    /// JSON serialisation failed.
    #[error("JSON serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The analysis (or one part) as pretty JSON.
    Json,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// NIST Rich Transcription Time Marked speaker segments.
    Rttm,
    /// Plain transcript text.
    Txt,
    /// Shot list as CSV, PySceneDetect columns.
    Csv,
    /// Shot list as a CMX3600 edit decision list.
    Edl,
}

impl Format {
    /// Every format, in the order the CLI lists them.
    pub const ALL: [Format; 7] = [
        Format::Json,
        Format::Srt,
        Format::Vtt,
        Format::Rttm,
        Format::Txt,
        Format::Csv,
        Format::Edl,
    ];

    /// The name used on the command line and in serde (`json`, `srt`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Rttm => "rttm",
            Format::Txt => "txt",
            Format::Csv => "csv",
            Format::Edl => "edl",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// The parts of an analysis this format writes: it needs at least one of them
    /// (none for JSON, which writes whatever there is).
    pub fn needs(self) -> &'static [Part] {
        match self {
            Format::Json => &[],
            Format::Srt | Format::Vtt | Format::Txt => &[Part::Transcript],
            Format::Rttm => &[Part::Speakers, Part::Speech],
            Format::Csv | Format::Edl => &[Part::Shots],
        }
    }

    /// The MIME type to send it with (UTF-8 text throughout).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Srt => "application/x-subrip",
            Format::Vtt => "text/vtt",
            Format::Csv => "text/csv",
            Format::Rttm | Format::Txt | Format::Edl => "text/plain",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {given:?}; valid formats: json, srt, vtt, rttm, txt, csv, edl")]
pub struct UnknownFormat {
    /// What was asked for.
    pub given: String,
}

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Parses a format name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| UnknownFormat {
                given: s.to_owned(),
            })
    }
}

/// A part of an [`Analysis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// [`Analysis::transcript`].
    Transcript,
    /// [`Analysis::speech`].
    Speech,
    /// [`Analysis::speakers`].
    Speakers,
    /// [`Analysis::shots`].
    Shots,
}

impl Part {
    /// The `--tasks` name of the stage that produces this part.
    pub fn task(self) -> &'static str {
        match self {
            Part::Transcript => "asr",
            Part::Speech => "vad",
            Part::Speakers => "diarize",
            Part::Shots => "shots",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Transcript => "transcript",
            Part::Speech => "speech regions",
            Part::Speakers => "speaker turns",
            Part::Shots => "shots",
        })
    }
}

/// Options for every writer; each field applies to the formats its doc names.
///
/// Deserialises with missing fields taking their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriterOptions {
    /// Show speaker labels (`srt`, `vtt`, `txt`). Default on.
    pub speaker_labels: bool,
    /// Most characters per subtitle line, counted as `char`s (`srt`, `vtt`). Default 42.
    pub max_line_chars: usize,
    /// Most lines per subtitle cue (`srt`, `vtt`). Default 2.
    pub max_lines: usize,
    /// Shortest cue in seconds where the next cue leaves room (`srt`, `vtt`). Default 1.
    pub min_cue_seconds: f64,
    /// Longest cue in seconds (`srt`, `vtt`). Default 7.
    pub max_cue_seconds: f64,
    /// Write only this part as JSON instead of the whole analysis (`json`). Default none.
    pub json_part: Option<Part>,
    /// RTTM file id; default the media file name without extension (`rttm`).
    pub file_id: Option<String>,
    /// EDL `TITLE:`; default the media file name without extension (`edl`).
    pub edl_title: Option<String>,
    /// Hour the EDL record timeline starts at: 1 gives the broadcast `01:00:00:00` (`edl`).
    pub edl_record_start_hour: u32,
    /// Use drop-frame timecode when the frame rate is 29.97 or 59.94 (`edl`). Default on.
    pub drop_frame: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            speaker_labels: true,
            max_line_chars: 42,
            max_lines: 2,
            min_cue_seconds: 1.0,
            max_cue_seconds: 7.0,
            json_part: None,
            file_id: None,
            edl_title: None,
            edl_record_start_hour: 1,
            drop_frame: true,
        }
    }
}

impl WriterOptions {
    /// Check the options are usable; writers call this first.
    pub fn validate(&self) -> Result<(), WriteError> {
        let bad = |option, reason: &str| {
            Err(WriteError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        // A label takes up to half a line and needs room for `[x…]`.
        if self.max_line_chars < 8 {
            return bad("max_line_chars", "must be at least 8");
        }
        if self.max_lines == 0 {
            return bad("max_lines", "must be at least 1");
        }
        if !(self.min_cue_seconds.is_finite() && self.min_cue_seconds >= 0.0) {
            return bad("min_cue_seconds", "must be a finite number >= 0");
        }
        if !(self.max_cue_seconds.is_finite() && self.max_cue_seconds > 0.0) {
            return bad("max_cue_seconds", "must be a finite number > 0");
        }
        if self.min_cue_seconds > self.max_cue_seconds {
            return bad("min_cue_seconds", "must not exceed max_cue_seconds");
        }
        if self.edl_record_start_hour > 23 {
            return bad("edl_record_start_hour", "must be 0-23");
        }
        Ok(())
    }
}

/// Write `analysis` as `format` to `out`.
///
/// Fails with [`WriteError::Missing`] when the analysis lacks the part the format needs,
/// [`WriteError::NonFinite`] when a number it reads is NaN or infinite, and
/// [`WriteError::InvalidOption`] for out-of-range options. Output is buffered internally
/// and flushed before returning.
pub fn write(
    analysis: &Analysis,
    format: Format,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    opts.validate()?;
    let mut w = BufWriter::new(out);
    let missing = |part| WriteError::Missing { format, part };
    let turns = analysis.speakers.as_deref();
    match format {
        Format::Json => json::write(analysis, opts.json_part, &mut w)?,
        Format::Srt | Format::Vtt | Format::Txt => {
            let t = analysis
                .transcript
                .as_ref()
                .ok_or_else(|| missing(Part::Transcript))?;
            match format {
                Format::Srt => subtitle::write_srt(t, turns, opts, &mut w)?,
                Format::Vtt => subtitle::write_vtt(t, turns, opts, &mut w)?,
                _ => text::write(t, turns, opts, &mut w)?,
            }
        }
        Format::Rttm => rttm::write(analysis, opts, &mut w)?,
        Format::Csv | Format::Edl => {
            let s = analysis
                .shots
                .as_ref()
                .ok_or_else(|| missing(Part::Shots))?;
            if format == Format::Csv {
                shots::write_csv(s, &mut w)?;
            } else {
                shots::write_edl(s, &analysis.media, opts, &mut w)?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

/// [`write()`] into a `String`.
pub fn write_to_string(
    analysis: &Analysis,
    format: Format,
    opts: &WriterOptions,
) -> Result<String, WriteError> {
    let mut buf = Vec::new();
    write(analysis, format, opts, &mut buf)?;
    String::from_utf8(buf)
        .map_err(|e| WriteError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// The file name of a path or URL without directory or extension (`a/b/My Show.mp4` ->
/// `My Show`); empty for an empty source.
pub(crate) fn file_stem(source: &str) -> &str {
    let name = source
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}
