//! The local store of fetched models and samples.

use std::path::PathBuf;

use super::ModelError;

fn cache_root() -> PathBuf {
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("mica")
}

/// The directory holding asset `name`, fetching it first when it is missing.
pub fn ensure(name: &str) -> Result<PathBuf, ModelError> {
    let models = std::env::var_os("MICA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("models"));
    let samples = std::env::var_os("MICA_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("samples"));
    [models.join(name), samples.join(name)]
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| ModelError::NotFetched(name.to_string()))
}
