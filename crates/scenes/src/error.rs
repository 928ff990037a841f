//! The crate's error type.

use std::path::PathBuf;

use mica_core::error::{ErrorKind, RunError};

/// The network's name in messages.
pub(crate) const MODEL: &str = "TransNetV2";

/// Errors from loading TransNetV2, running it and detecting shots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenesError {
    /// Loading or running the network failed, as in every model crate (bad weights, bad
    /// input, bad options, device failure).
    #[error(transparent)]
    Run(#[from] RunError),
    /// A frame pushed to the detector has the wrong size.
    #[error(
        "frame {index} is {width}x{height} with {bytes} bytes; TransNetV2 needs 48x27 rgb24 \
         frames (3888 bytes): decode with FrameOptions::new(48, 27)"
    )]
    FrameSize {
        /// The frame's index.
        index: u64,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// Its data length.
        bytes: usize,
    },
    /// The video has no frames to analyse.
    #[error("{path}: the video stream holds no frames; nothing to detect shots in")]
    NoFrames {
        /// The input.
        path: PathBuf,
    },
    /// A thumbnail could not be written.
    #[error("{path}: cannot write the shot thumbnail: {reason}; check the directory is writable")]
    Thumbnail {
        /// The JPEG that was being written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The caller's observer stopped the detection.
    #[error("shot detection was cancelled")]
    Cancelled,
    /// Decoding the input failed.
    #[error(transparent)]
    Media(#[from] mica_media::MediaError),
}

impl ScenesError {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ScenesError::Run(e) => e.kind(),
            ScenesError::FrameSize { .. } => ErrorKind::Input,
            ScenesError::NoFrames { .. } | ScenesError::Media(_) => ErrorKind::Media,
            ScenesError::Thumbnail { .. } => ErrorKind::Options,
            ScenesError::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl From<candle_core::Error> for ScenesError {
    fn from(source: candle_core::Error) -> ScenesError {
        ScenesError::Run(RunError::Candle {
            model: MODEL,
            source,
        })
    }
}

/// [`RunError::InvalidOption`] of shot detection.
pub(crate) fn invalid_option(reason: impl Into<String>) -> ScenesError {
    ScenesError::Run(RunError::option("shot detection", reason))
}
