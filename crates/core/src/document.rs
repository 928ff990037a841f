//! The documents mica produces: transcript, speech regions, speaker turns, shots, analysis.
//!
//! These are the JSON schema of DESIGN.md: field names are snake_case, `Option` fields are
//! left out when `None`, and every number is an `f64` second (or an integer frame count)
//! so an [`Analysis`] survives a JSON round trip bit for bit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::TimeRange;

/// What was said: the output of speech recognition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Transcript {
    /// Language code of the speech (`en`, `es`, ...), detected or given.
    pub language: String,
    /// Seconds of media the transcript covers.
    pub duration: f64,
    /// Segments in time order.
    pub segments: Vec<Segment>,
}

/// One decoded stretch of speech, usually a phrase or sentence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Segment {
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The text, as decoded (leading space and all).
    pub text: String,
    /// Speaker label (e.g. `SPEAKER_00`) when diarization assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Word timings, empty unless word timestamps were asked for.
    #[serde(default)]
    pub words: Vec<Word>,
    /// Mean log-probability of the segment's tokens.
    pub avg_logprob: f64,
    /// Probability that the segment holds no speech.
    pub no_speech_prob: f64,
}

impl Segment {
    /// The segment's span as a [`TimeRange`].
    pub fn range(&self) -> TimeRange {
        TimeRange::new(self.start, self.end)
    }
}

/// One timed word.
///
/// Following Whisper, `text` carries its own leading space when it starts a new word
/// (`" Hello"`) and none when it attaches to the previous one (CJK characters,
/// punctuation, `"'s"`), so concatenating the words of a segment gives its text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Word {
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The word, with its leading space if any.
    pub text: String,
    /// Model confidence, 0 to 1.
    pub probability: f64,
}

/// Where there is speech: the output of voice activity detection, in time order.
///
/// An alias rather than a newtype so it serialises as a plain JSON array of ranges.
pub type SpeechRegions = Vec<TimeRange>;

/// Who spoke when: the output of diarization, in time order (turns may overlap).
pub type SpeakerTurns = Vec<SpeakerTurn>;

/// One stretch of time attributed to one speaker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpeakerTurn {
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// Speaker label, e.g. `SPEAKER_00`.
    pub speaker: String,
}

impl SpeakerTurn {
    /// The turn's span as a [`TimeRange`].
    pub fn range(&self) -> TimeRange {
        TimeRange::new(self.start, self.end)
    }
}

/// Where the picture cuts: the output of shot detection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Shots {
    /// Frame rate the frame indices count at.
    pub fps: f64,
    /// Total frames in the video.
    pub frames: u64,
    /// Shots in time order.
    pub shots: Vec<Shot>,
}

/// One shot: a run of frames between two cuts.
///
/// Frame ranges are half-open: `end_frame` is one past the shot's last frame, so
/// back-to-back shots share a boundary (`shots[i].end_frame == shots[i + 1].start_frame`)
/// and the length is `end_frame - start_frame`. `start`/`end` are the same bounds in
/// seconds (`start_frame / fps`, `end_frame / fps` for constant-rate video).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Shot {
    /// First frame of the shot (zero-based).
    pub start_frame: u64,
    /// One past the last frame of the shot.
    pub end_frame: u64,
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
}

impl Shot {
    /// Number of frames in the shot.
    pub fn len_frames(&self) -> u64 {
        self.end_frame.saturating_sub(self.start_frame)
    }
}

/// The one document the engine returns; every writer reads from it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Analysis {
    /// What was analysed.
    pub media: MediaInfo,
    /// Speech recognition, when the `asr` task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Transcript>,
    /// Voice activity, when the `vad` task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech: Option<SpeechRegions>,
    /// Diarization, when the `diarize` task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speakers: Option<SpeakerTurns>,
    /// Shot boundaries, when the `shots` task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shots: Option<Shots>,
    /// Where the audio was cut into parts for the workers (seconds, in order, back to
    /// back); empty when the audio tasks did not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<TimeRange>,
    /// How long each stage took.
    #[serde(default)]
    pub timings: Timings,
    /// What the reader should know about the result: a task that could not run on this
    /// input (no audio, no video), media that was damaged and partly skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The input media, as probed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Path, URL or name of the input (`-` for standard input).
    pub source: String,
    /// Length in seconds.
    pub duration: f64,
    /// The audio stream, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioInfo>,
    /// The video stream, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoInfo>,
}

/// The audio stream of the input, before resampling.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
}

/// The video stream of the input.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
    /// Frame count, when the container states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
}

/// Wall-clock seconds spent per stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Seconds per stage (`decode`, `vad`, `asr`, ...), sorted by name.
    #[serde(default)]
    pub stages: BTreeMap<String, f64>,
    /// Seconds end to end (stages may run in parallel, so this is not their sum).
    #[serde(default)]
    pub total: f64,
}

impl Timings {
    /// Add `seconds` to `stage`, creating it if new.
    pub fn add(&mut self, stage: impl Into<String>, seconds: f64) {
        *self.stages.entry(stage.into()).or_insert(0.0) += seconds;
    }
}
