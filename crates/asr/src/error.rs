//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading Whisper, computing features and running the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsrError {
    /// `config.json` could not be read or parsed.
    #[error(
        "{}: cannot read the Whisper config: {reason}; pass a directory holding a Hugging Face \
         Whisper config.json, model.safetensors and tokenizer.json (or run `mica models fetch`)",
        path.display()
    )]
    Config {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The weights file could not be read or lacks a tensor the network needs.
    #[error(
        "{}: cannot load Whisper weights: {reason}; the file must be a Hugging Face Whisper \
         model.safetensors (run `mica models fetch tiny.en` for a converted one)",
        path.display()
    )]
    Weights {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A tensor of the weights file has a shape that does not match config.json.
    #[error(
        "Whisper weight {name} has shape {found:?}, expected {expected:?}; model.safetensors and \
         config.json belong to different checkpoints"
    )]
    WeightShape {
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape config.json implies.
        expected: Vec<usize>,
    },
    /// The mel filter bank could not be built.
    #[error("cannot build a mel filter bank with {n_mels} bins: {reason}")]
    MelFilters {
        /// Number of mel bins asked for.
        n_mels: usize,
        /// Why.
        reason: String,
    },
    /// An input sample was NaN or infinite.
    #[error(
        "audio sample {index} is {value} (not finite); the decoder output is damaged or the \
         buffer was not initialised"
    )]
    NonFinite {
        /// Index of the first bad sample.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A tensor or slice passed in has the wrong shape.
    #[error("{what} has shape {found:?}, expected {expected}")]
    InputShape {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// The decoder was asked to go past its maximum number of positions.
    #[error(
        "the decoder holds at most {max} positions, {requested} were asked for; shorten the \
         prompt or the maximum number of new tokens"
    )]
    ContextFull {
        /// Positions the request needs.
        requested: usize,
        /// `max_target_positions` of the checkpoint.
        max: usize,
    },
    /// A bad argument to a decoder-state operation (reorder, keep_items).
    #[error("invalid decoder state operation: {0}")]
    State(String),
    /// The requested precision cannot be used with this checkpoint or device.
    #[error("precision {precision} is not usable here: {reason}")]
    Precision {
        /// The precision asked for.
        precision: String,
        /// Why not, and what to use instead.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid ASR option: {0}")]
    InvalidOption(String),
    /// `tokenizer.json` could not be read or is not a Whisper tokenizer.
    #[error(
        "{}: cannot load the Whisper tokenizer: {reason}; the model directory needs the \
         tokenizer.json of the same checkpoint",
        path.display()
    )]
    Tokenizer {
        /// The file that was read.
        path: std::path::PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Text could not be turned into tokens or back.
    #[error("tokenizer failed: {0}")]
    Tokenize(String),
    /// A language that the checkpoint does not know, or a multilingual option given to an
    /// English-only checkpoint.
    #[error("{0}")]
    Language(String),
    /// Voice activity detection (for the VAD-batched mode) failed.
    #[error(transparent)]
    Vad(#[from] mica_vad::VadError),
    /// Decoding the input failed.
    #[error(transparent)]
    Media(#[from] mica_core::media::MediaError),
    /// The model store could not provide the weights.
    #[error(transparent)]
    Model(#[from] mica_core::models::ModelError),
    /// candle failed (device out of memory, unsupported op on the device, ...).
    #[error("Whisper tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}
