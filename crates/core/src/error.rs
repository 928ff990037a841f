//! The crate-level error: one variant per area, each with its own typed enum.

pub use crate::device::DeviceError;
pub use crate::media::MediaError;
pub use crate::models::ModelError;
pub use crate::writers::WriteError;

/// Any error mica-core can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Media could not be opened or decoded.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A model or sample could not be resolved, fetched, verified or converted.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A document could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The requested compute device is not usable.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
