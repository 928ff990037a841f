//! Time types shared by every document, and timestamp formatting for the writers.
//!
//! Times are `f64` seconds at the API edge. Formatting functions never fail on odd
//! seconds: negative values and NaN are **clamped** to zero, and values past
//! [`MAX_FORMAT_SECONDS`] (including +infinity) are clamped to it, so a formatted
//! timestamp is always well formed. Writers reject non-finite document values before they
//! get here, so clamping only ever affects the sign of tiny negative rounding noise.
//! Frame rates, where a wrong value would silently corrupt every timecode, are
//! **rejected** with a [`TimeError`] instead.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest time the formatters print: 99:59:59.999, so hours always fit two digits.
pub const MAX_FORMAT_SECONDS: f64 = 359_999.999;

/// The highest frame rate timecodes accept; far above any real video, low enough that
/// frame arithmetic cannot overflow.
pub const MAX_FPS: f64 = 10_000.0;

/// A span of time in seconds, `start` inclusive and `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimeRange {
    /// Start in seconds from the beginning of the media.
    pub start: f64,
    /// End in seconds from the beginning of the media.
    pub end: f64,
}

impl TimeRange {
    /// A range from `start` to `end` seconds (not reordered or validated; see [`Self::is_valid`]).
    pub fn new(start: f64, end: f64) -> Self {
        Self { start, end }
    }

    /// Length in seconds; zero for empty, reversed or non-finite ranges.
    pub fn duration(&self) -> f64 {
        let d = self.end - self.start;
        if d > 0.0 { d } else { 0.0 }
    }

    /// True when both ends are finite, `start >= 0` and `end >= start`.
    pub fn is_valid(&self) -> bool {
        self.start.is_finite()
            && self.end.is_finite()
            && self.start >= 0.0
            && self.end >= self.start
    }

    /// True when the range holds no time.
    pub fn is_empty(&self) -> bool {
        self.duration() == 0.0
    }

    /// True when `t` lies in `[start, end)`.
    pub fn contains(&self, t: f64) -> bool {
        t >= self.start && t < self.end
    }

    /// Seconds shared by both ranges (zero when they do not overlap).
    pub fn overlap(&self, other: &TimeRange) -> f64 {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        TimeRange { start, end }.duration()
    }

    /// True when the ranges share a positive amount of time (touching ends do not count).
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.overlap(other) > 0.0
    }

    /// The intersection, or `None` when the ranges share no time.
    pub fn intersection(&self, other: &TimeRange) -> Option<TimeRange> {
        let r = TimeRange {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        };
        (r.duration() > 0.0).then_some(r)
    }

    /// The smallest range covering both.
    pub fn union_span(&self, other: &TimeRange) -> TimeRange {
        TimeRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Errors from time and timecode helpers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The frame rate is not a number in `(0, MAX_FPS]`.
    #[error(
        "invalid frame rate {0}: it must be a number of frames per second above 0 and at most {MAX_FPS}"
    )]
    InvalidFps(f64),
    /// Drop-frame timecode was asked for at a rate that has no drop-frame form.
    #[error("drop-frame timecode exists only for 29.97 and 59.94 fps, not {0}; use non-drop-frame")]
    NoDropFrame(f64),
}

/// Clamp seconds into `[0, MAX_FORMAT_SECONDS]` and round to whole milliseconds.
///
/// Rounding the total first (rather than each field) is what makes `,1000` impossible.
pub fn to_millis(seconds: f64) -> u64 {
    if seconds.is_nan() || seconds <= 0.0 {
        return 0;
    }
    let s = seconds.min(MAX_FORMAT_SECONDS);
    // In range and non-negative, so the cast is exact after rounding.
    (s * 1000.0).round() as u64
}

fn split_millis(seconds: f64) -> (u64, u64, u64, u64) {
    let ms = to_millis(seconds);
    (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    )
}

/// `HH:MM:SS,mmm` as SubRip wants it (clamped as described in the module docs).
pub fn format_srt(seconds: f64) -> String {
    let (h, m, s, ms) = split_millis(seconds);
    format!("{h:02}:{m:02}:{s:02},{ms:03}")
}

/// `HH:MM:SS.mmm` as WebVTT wants it (clamped as described in the module docs).
pub fn format_vtt(seconds: f64) -> String {
    let (h, m, s, ms) = split_millis(seconds);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

/// A video frame rate with its SMPTE counting scheme.
///
/// Timecode counts whole frames at the nominal (integer) rate: 23.976 counts as 24, 29.97
/// as 30. Drop-frame skips frame labels 0 and 1 (0-3 at 59.94) at the start of every minute
/// except each tenth, so 29.97 fps timecode keeps pace with the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRate {
    fps: f64,
    nominal: u64,
    drop_frame: bool,
}

impl FrameRate {
    /// A rate counted non-drop-frame, or drop-frame when `drop_frame` is set.
    ///
    /// Rejects rates outside `(0, MAX_FPS]` (NaN included), and drop-frame at rates other than
    /// 29.97/59.94 (30000/1001 and 60000/1001, within 0.01).
    pub fn new(fps: f64, drop_frame: bool) -> Result<Self, TimeError> {
        if !(fps.is_finite() && fps > 0.0 && fps <= MAX_FPS) {
            return Err(TimeError::InvalidFps(fps));
        }
        // Sub-1 fps would round to a nominal rate of zero frames per second.
        let nominal = (fps.round() as u64).max(1);
        if drop_frame && !Self::supports_drop_frame(fps) {
            return Err(TimeError::NoDropFrame(fps));
        }
        Ok(Self {
            fps,
            nominal,
            drop_frame,
        })
    }

    /// Drop-frame when the rate has a drop-frame form (29.97, 59.94), else non-drop-frame.
    pub fn broadcast(fps: f64) -> Result<Self, TimeError> {
        Self::new(fps, fps.is_finite() && Self::supports_drop_frame(fps))
    }

    /// True for 29.97 and 59.94 fps, the rates that have a drop-frame timecode.
    pub fn supports_drop_frame(fps: f64) -> bool {
        (fps - 30_000.0 / 1001.0).abs() < 0.01 || (fps - 60_000.0 / 1001.0).abs() < 0.01
    }

    /// The actual frames per second.
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The integer rate the frame field counts to (24 for 23.976, 30 for 29.97).
    pub fn nominal(&self) -> u64 {
        self.nominal
    }

    /// Whether timecodes use drop-frame counting.
    pub fn is_drop_frame(&self) -> bool {
        self.drop_frame
    }

    /// Frame labels skipped at each non-tenth minute (2 at 29.97, 4 at 59.94, else 0).
    fn dropped_per_minute(&self) -> u64 {
        if self.drop_frame {
            self.nominal / 15
        } else {
            0
        }
    }

    /// How many real frames one timecode hour spans (107 892 at 29.97 DF, 90 000 at 25).
    pub fn frames_per_hour(&self) -> u64 {
        self.nominal * 3600 - self.dropped_per_minute() * 54
    }

    /// The frame index nearest to `seconds` (clamped to zero for negative or NaN input).
    pub fn frame_at(&self, seconds: f64) -> u64 {
        if seconds.is_nan() || seconds <= 0.0 {
            return 0;
        }
        let f = (seconds * self.fps).round();
        if f >= u64::MAX as f64 {
            u64::MAX
        } else {
            f as u64
        }
    }

    /// Seconds at which frame `frame` starts.
    pub fn seconds_at(&self, frame: u64) -> f64 {
        frame as f64 / self.fps
    }

    /// The SMPTE timecode of frame index `frame` (zero-based from 00:00:00:00).
    pub fn timecode(&self, frame: u64) -> Timecode {
        let drop = self.dropped_per_minute();
        let mut label = frame;
        if drop > 0 {
            let per_min = self.nominal * 60 - drop;
            let per_10min = self.nominal * 600 - drop * 9;
            let tens = frame / per_10min;
            let rem = frame % per_10min;
            // The first minute of each ten keeps all its labels; later ones lose `drop`.
            label = label.saturating_add(drop * 9 * tens);
            if rem > drop {
                label = label.saturating_add(drop * ((rem - drop) / per_min));
            }
        }
        let n = self.nominal;
        Timecode {
            hours: label / (n * 3600),
            minutes: (label / (n * 60)) % 60,
            seconds: (label / n) % 60,
            frames: label % n,
            drop_frame: self.drop_frame,
        }
    }
}

/// An SMPTE timecode. Displays as `HH:MM:SS:FF`, or `HH:MM:SS;FF` when drop-frame.
///
/// Hours do not wrap at 24: a 25-hour recording prints `25:00:00:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timecode {
    /// Hours.
    pub hours: u64,
    /// Minutes, 0-59.
    pub minutes: u64,
    /// Seconds, 0-59.
    pub seconds: u64,
    /// Frame within the second, 0 to the nominal rate minus one.
    pub frames: u64,
    /// Whether this is a drop-frame label (printed with `;`).
    pub drop_frame: bool,
}

impl fmt::Display for Timecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.drop_frame { ';' } else { ':' };
        write!(
            f,
            "{:02}:{:02}:{:02}{sep}{:02}",
            self.hours, self.minutes, self.seconds, self.frames
        )
    }
}

/// `HH:MM:SS:FF` (or `HH:MM:SS;FF` with `drop_frame`) for a zero-based frame index.
pub fn format_timecode(frame: u64, fps: f64, drop_frame: bool) -> Result<String, TimeError> {
    Ok(FrameRate::new(fps, drop_frame)?.timecode(frame).to_string())
}
