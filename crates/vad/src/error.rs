//! The crate's error type.

use mica_core::error::{ErrorKind, RunError};

/// The network's name in messages.
pub(crate) const MODEL: &str = "Silero VAD";

/// Errors from loading the Silero model and running it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VadError {
    /// Loading or running the network failed, as in every model crate (bad weights, bad
    /// input, bad options, device failure).
    #[error(transparent)]
    Run(#[from] RunError),
    /// A sample rate other than 16 kHz or 8 kHz was given.
    #[error(
        "Silero VAD runs at 16000 or 8000 Hz, not {0} Hz; resample the audio first (the mica \
         decoder gives 16 kHz)"
    )]
    UnsupportedRate(u32),
    /// The stream was used after [`crate::VadStream::finish`].
    #[error("the VAD stream is finished; call reset() before pushing more audio")]
    Finished,
    /// Decoding the input failed.
    #[cfg(feature = "media")]
    #[error(transparent)]
    Media(#[from] mica_media::MediaError),
}

impl VadError {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VadError::Run(e) => e.kind(),
            VadError::UnsupportedRate(_) => ErrorKind::Input,
            VadError::Finished => ErrorKind::State,
            #[cfg(feature = "media")]
            VadError::Media(_) => ErrorKind::Media,
        }
    }
}

impl From<candle_core::Error> for VadError {
    fn from(source: candle_core::Error) -> VadError {
        VadError::Run(RunError::Candle {
            model: MODEL,
            source,
        })
    }
}
