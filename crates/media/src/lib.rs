//! Media input: audio decoded to 16 kHz mono f32 chunks, video frames over ffmpeg.
//!
//! Audio goes through symphonia and rubato in-process ([`AudioStream`], [`load_all`]); what
//! symphonia cannot open (video containers it lacks, Opus, AVI, ...) falls back to an ffmpeg
//! subprocess streamed from its stdout. Video frames always come from ffmpeg
//! ([`FrameSource`], [`probe`]). Both stream: memory stays flat however long the input.
//! Live sources (network URLs, or files played at native speed) come from ffmpeg through
//! [`LiveAudio`], sample by sample as they arrive.
//!
//! Errors ([`MediaError`]) name the file, the reason and what to do. A partly damaged input
//! is not an error: it yields what decodes, plus [`MediaWarning`]s on the stream or result
//! (each also logged with `tracing::warn!`).
#![deny(missing_docs)]

mod audio;
mod describe;
mod ffmpeg;
mod live;
mod mp4;
mod record;
mod resample;
mod symph;
mod video;

use std::path::{Path, PathBuf};

pub use audio::{
    Audio, AudioChunk, AudioOptions, AudioStream, Backend, BackendChoice, SAMPLE_RATE, SourceInfo,
    load_all, load_all_with,
};
pub use describe::describe;
pub use ffmpeg::Tools;
pub use live::{LiveAudio, LiveOptions, LiveRead, LiveStopper, is_url};
pub use record::{Clip, LiveRecorder, RecordOptions, RecordedSegment};
pub use video::{
    FrameOptions, FrameSource, Rational, VideoFrame, VideoInfo, extract_jpeg, probe, probe_with,
    smpte_timecode,
};

/// Errors from media input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The file does not exist.
    #[error("{path}: no such file; check the path and that it is visible to this process")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error("{path}: is a directory, not a media file; pass one of the files inside it")]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The file has 0 bytes.
    #[error(
        "{path}: the file is empty (0 bytes); the copy or upload probably failed, send it again"
    )]
    Empty {
        /// The path given.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{path}: cannot read the file: {source}; check permissions and the disk")]
    Io {
        /// The path given.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not audio or video (text, an image, random bytes).
    #[error("{path}: not a media file ({reason}); pass an audio or video file")]
    NotMedia {
        /// The path given.
        path: PathBuf,
        /// What the decoders said.
        reason: String,
    },
    /// The file has no audio stream to decode.
    #[error("{path}: no audio stream ({reason}); pass a file with sound")]
    NoAudioStream {
        /// The path given.
        path: PathBuf,
        /// What the decoders said.
        reason: String,
    },
    /// The file has no video stream (audio only, or only cover art).
    #[error("{path}: no video stream; shot detection and frames need a video file")]
    NoVideoStream {
        /// The path given.
        path: PathBuf,
    },
    /// No decoder for the codec (in symphonia, and in ffmpeg when it was tried).
    #[error(
        "{path}: unsupported codec {codec} ({reason}); install ffmpeg with that codec or convert \
         the file, e.g. `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"
    )]
    UnsupportedCodec {
        /// The path given.
        path: PathBuf,
        /// The codec name, or "unknown".
        codec: String,
        /// What the decoders said.
        reason: String,
    },
    /// The file is recognised but nothing in it could be decoded.
    #[error(
        "{path}: damaged, nothing could be decoded ({reason}); re-export or re-encode the source"
    )]
    Damaged {
        /// The path given.
        path: PathBuf,
        /// What the decoders said.
        reason: String,
    },
    /// ffmpeg or ffprobe is needed but not installed where we looked.
    #[error(
        "{path}: needs {tool} ({why}) but {tool} was not found at {tool_path}: install ffmpeg \
         (e.g. `apt-get install ffmpeg` or `brew install ffmpeg`) or set {env} to the binary"
    )]
    ToolMissing {
        /// The media path being opened.
        path: PathBuf,
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// Where we looked.
        tool_path: PathBuf,
        /// The environment variable that overrides `tool_path`.
        env: &'static str,
        /// Why the tool was needed.
        why: String,
    },
    /// ffmpeg or ffprobe ran and failed for a reason not covered by another variant.
    #[error("{path}: {tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// The media path being opened.
        path: PathBuf,
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The exit status.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// An option was out of range (a chunk size or frame size of 0, ...).
    #[error("invalid media option: {0}")]
    InvalidOption(String),
}

impl MediaError {
    /// The same error naming the input `name` instead of the path `from` it was read from
    /// (in the path and in what the decoders said): an input given as bytes and copied to
    /// a temporary file is named as its caller knows it, not by a path it never saw.
    pub fn renamed(mut self, from: &Path, name: &str) -> MediaError {
        let from_text = from.display().to_string();
        let fix = |text: &mut String| {
            if !from_text.is_empty() && text.contains(&from_text) {
                *text = text.replace(&from_text, name);
            }
        };
        match &mut self {
            MediaError::NotFound { path }
            | MediaError::IsDirectory { path }
            | MediaError::Empty { path }
            | MediaError::NoVideoStream { path } => *path = PathBuf::from(name),
            MediaError::Io { path, .. } => *path = PathBuf::from(name),
            MediaError::NotMedia { path, reason }
            | MediaError::NoAudioStream { path, reason }
            | MediaError::Damaged { path, reason } => {
                *path = PathBuf::from(name);
                fix(reason);
            }
            MediaError::UnsupportedCodec { path, reason, .. } => {
                *path = PathBuf::from(name);
                fix(reason);
            }
            MediaError::ToolMissing { path, why, .. } => {
                *path = PathBuf::from(name);
                fix(why);
            }
            MediaError::ToolFailed { path, stderr, .. } => {
                *path = PathBuf::from(name);
                fix(stderr);
            }
            MediaError::InvalidOption(_) => {}
        }
        self
    }
}

/// What kind of problem a [`MediaWarning`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningKind {
    /// The data ends before the length the header announced.
    Truncated,
    /// A packet or frame could not be decoded and was skipped.
    DecodeError,
    /// The stream stopped on an error after some data decoded.
    Damaged,
    /// Samples were NaN or infinite and were replaced by silence.
    NonFinite,
    /// Timestamps were missing or odd and were estimated.
    Timestamps,
    /// A message the decoder (usually ffmpeg) printed.
    Decoder,
}

/// A problem that did not stop decoding: what was skipped or repaired, and where.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MediaWarning {
    /// The kind of problem.
    pub kind: WarningKind,
    /// Position in seconds from the start of the media, when known.
    pub at: Option<f64>,
    /// A human-readable description.
    pub message: String,
}

impl std::fmt::Display for MediaWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some(at) => write!(f, "at {at:.3} s: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Most warnings kept per input: a wholly corrupt multi-hour file must not grow memory with
/// one warning per packet. Later ones are counted and summarised.
const MAX_WARNINGS: usize = 64;

/// A bounded warning list that also logs each entry.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    list: Vec<MediaWarning>,
    suppressed: u64,
}

impl Warnings {
    pub(crate) fn push(
        &mut self,
        path: &Path,
        kind: WarningKind,
        at: Option<f64>,
        message: String,
    ) {
        if self.list.len() < MAX_WARNINGS {
            tracing::warn!("{}: {}", path.display(), message);
            self.list.push(MediaWarning { kind, at, message });
        } else {
            self.suppressed += 1;
        }
    }

    /// Adds the "N more" summary once input ends.
    pub(crate) fn finish(&mut self, path: &Path) {
        if self.suppressed > 0 {
            let message = format!("{} more warnings not shown", self.suppressed);
            tracing::warn!("{}: {}", path.display(), message);
            self.list.push(MediaWarning {
                kind: WarningKind::Decoder,
                at: None,
                message,
            });
            self.suppressed = 0;
        }
    }

    pub(crate) fn as_slice(&self) -> &[MediaWarning] {
        &self.list
    }

    pub(crate) fn take(&mut self) -> Vec<MediaWarning> {
        std::mem::take(&mut self.list)
    }
}

/// Checks that `path` is a non-empty regular file; returns its length.
pub(crate) fn check_file(path: &Path) -> Result<u64, MediaError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => MediaError::NotFound {
            path: path.to_path_buf(),
        },
        _ => MediaError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if meta.is_dir() {
        return Err(MediaError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(MediaError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(meta.len())
}
