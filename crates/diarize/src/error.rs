//! The crate's error type.

use mica_core::error::{ErrorKind, RunError};

/// Errors from loading the diarization models and running them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiarizeError {
    /// Loading or running a network failed, as in every model crate (bad weights, bad
    /// input, bad options, device failure).
    #[error(transparent)]
    Run(#[from] RunError),
    /// Decoding the input failed.
    #[cfg(feature = "media")]
    #[error(transparent)]
    Media(#[from] mica_media::MediaError),
}

impl DiarizeError {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiarizeError::Run(e) => e.kind(),
            #[cfg(feature = "media")]
            DiarizeError::Media(_) => ErrorKind::Media,
        }
    }
}

impl From<candle_core::Error> for DiarizeError {
    fn from(source: candle_core::Error) -> DiarizeError {
        DiarizeError::Run(RunError::Candle {
            model: "diarization",
            source,
        })
    }
}
