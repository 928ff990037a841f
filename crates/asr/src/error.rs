//! The crate's error type.

use std::path::PathBuf;

use mica_core::error::{ErrorKind, RunError};

/// The network's name in messages.
pub(crate) const MODEL: &str = "Whisper";

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
    /// The mel filter bank could not be built.
    #[error("cannot build a mel filter bank with {n_mels} bins: {reason}")]
    MelFilters {
        /// Number of mel bins asked for.
        n_mels: usize,
        /// Why.
        reason: String,
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
    /// The caller's observer stopped the transcription.
    #[error("the transcription was cancelled")]
    Cancelled,
    /// Loading or running the network failed, as in every model crate (bad weights, bad
    /// input, bad options, device failure).
    #[error(transparent)]
    Run(#[from] RunError),
    /// Voice activity detection (for the VAD-batched mode) failed.
    #[error(transparent)]
    Vad(#[from] mica_vad::VadError),
    /// Decoding the input failed.
    #[cfg(feature = "media")]
    #[error(transparent)]
    Media(#[from] mica_media::MediaError),
}

impl AsrError {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AsrError::Run(e) => e.kind(),
            AsrError::Config { .. } | AsrError::Tokenizer { .. } => ErrorKind::Model,
            AsrError::MelFilters { .. } | AsrError::Precision { .. } | AsrError::Language(_) => {
                ErrorKind::Options
            }
            AsrError::ContextFull { .. } | AsrError::Tokenize(_) => ErrorKind::Input,
            AsrError::State(_) => ErrorKind::State,
            AsrError::Cancelled => ErrorKind::Cancelled,
            AsrError::Vad(e) => e.kind(),
            #[cfg(feature = "media")]
            AsrError::Media(_) => ErrorKind::Media,
        }
    }
}

impl From<candle_core::Error> for AsrError {
    fn from(source: candle_core::Error) -> AsrError {
        AsrError::Run(RunError::Candle {
            model: MODEL,
            source,
        })
    }
}

/// [`RunError::InvalidOption`] of Whisper.
pub(crate) fn invalid_option(reason: impl Into<String>) -> AsrError {
    AsrError::Run(RunError::option(MODEL, reason))
}
