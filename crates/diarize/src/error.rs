//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading the diarization models and running them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiarizeError {
    /// A weights file could not be read or lacks a tensor the network needs.
    #[error(
        "{path}: cannot load {model} weights: {reason}; run `mica models fetch {asset}` or pass \
         a directory holding the converted model.safetensors"
    )]
    Weights {
        /// Which network (`segmentation`, `speaker embedding`).
        model: &'static str,
        /// The store asset that provides it.
        asset: &'static str,
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A weights file lacks a tensor the network needs.
    #[error("weight {name} is missing; the file is not the converted {model} model")]
    MissingWeight {
        /// Which network.
        model: &'static str,
        /// The tensor's name.
        name: String,
    },
    /// A tensor of a weights file has a shape the network cannot use.
    #[error(
        "weight {name} has shape {found:?}, expected {expected:?}; the file is not the converted \
         {model} model"
    )]
    WeightShape {
        /// Which network.
        model: &'static str,
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A tensor passed to a forward has the wrong shape.
    #[error("{what} has shape {found:?}, expected {expected}")]
    InputShape {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// An input sample was NaN or infinite.
    #[error(
        "audio sample {index} is {value} (not finite); the decoder output is damaged or the \
         buffer was not initialised"
    )]
    NonFinite {
        /// Index of the first bad sample, counted from the start of the stream.
        index: u64,
        /// The value found.
        value: f32,
    },
    /// An option is out of range or options contradict each other.
    #[error("invalid diarization option: {0}")]
    InvalidOption(String),
    /// Decoding the input failed.
    #[error(transparent)]
    Media(#[from] mica_core::media::MediaError),
    /// The model store could not provide the weights.
    #[error(transparent)]
    Model(#[from] mica_core::models::ModelError),
    /// candle failed (device out of memory, unsupported op on the device, ...).
    #[error("diarization tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
