//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading the Silero model and running it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VadError {
    /// The weights file could not be read or lacks a tensor the network needs.
    #[error(
        "{path}: cannot load Silero VAD weights: {reason}; run `mica models fetch silero-v6` \
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
        "Silero VAD weight {name} has shape {found:?}, expected {expected:?}; the file is not \
         a converted Silero VAD v6 model"
    )]
    WeightShape {
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A sample rate other than 16 kHz or 8 kHz was given.
    #[error(
        "Silero VAD runs at 16000 or 8000 Hz, not {0} Hz; resample the audio first (the mica \
         decoder gives 16 kHz)"
    )]
    UnsupportedRate(u32),
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
    /// A tensor passed to the batched forward has the wrong shape.
    #[error("{what} has shape {found:?}, expected {expected}")]
    InputShape {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// An option is out of range.
    #[error("invalid VAD option: {0}")]
    InvalidOption(String),
    /// The stream was used after [`crate::VadStream::finish`].
    #[error("the VAD stream is finished; call reset() before pushing more audio")]
    Finished,
    /// Decoding the input failed.
    #[error(transparent)]
    Media(#[from] mica_core::media::MediaError),
    /// The model store could not provide the weights.
    #[error(transparent)]
    Model(#[from] mica_core::models::ModelError),
    /// candle failed (device out of memory, unsupported op on the device, ...).
    #[error("Silero VAD tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
