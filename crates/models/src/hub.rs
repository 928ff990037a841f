//! `hf:owner/repo` model specs, through the hf-hub client and its cache.

use std::path::PathBuf;

use super::ModelError;

/// Downloads `files` of the model repository `repo` (or finds them in the hub cache) and
/// returns the snapshot directory holding them.
pub fn download(repo: &str, files: &[&str]) -> Result<PathBuf, ModelError> {
    let hub_err = |file: &str, e: hf_hub::api::sync::ApiError| ModelError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        reason: e.to_string(),
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub_err("", e))?;
    let model = api.model(repo.to_string());
    let mut dir = None;
    for file in files {
        let path = model.get(file).map_err(|e| hub_err(file, e))?;
        dir = path.parent().map(PathBuf::from);
    }
    dir.ok_or_else(|| ModelError::BadSpec(format!("hf:{repo}: no files requested")))
}
