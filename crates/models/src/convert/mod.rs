//! Converters from the packaged formats (CTranslate2, ONNX, torch pickles, npz) to
//! safetensors that candle loads.
//!
//! Every converter reads the extracted package files of one asset from an input directory
//! and writes `model.safetensors` (plus, for Whisper, the Hugging Face `config.json` and
//! `tokenizer.json`) into an output directory. Nothing here trusts a length or an offset
//! read from a file: each is checked against the bytes actually present before anything is
//! sliced or allocated, so a damaged download gives a [`ConvertError`], never a panic.

mod ct2;
mod npz;
mod onnx;
mod tensor;
mod torch;

use std::path::{Path, PathBuf};

pub use onnx::SILERO_TENSORS;

/// Errors from converting a packaged model file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An input file could not be read or an output written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The input directory lacks a file the converter needs.
    #[error("{}: no {what} found; fetch the model again", dir.display())]
    MissingInput {
        /// The directory searched.
        dir: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// The input directory holds several candidates and the converter cannot tell which.
    #[error("{}: several {what} found ({}); keep only one", dir.display(), names.join(", "))]
    AmbiguousInput {
        /// The directory searched.
        dir: PathBuf,
        /// What was looked for.
        what: String,
        /// The candidates' file names.
        names: Vec<String>,
    },
    /// The file ends before a structure it announces.
    #[error(
        "{}: truncated: needed {needed} bytes for {what} at offset {offset}, only {available} left; the download is incomplete, fetch it again",
        path.display()
    )]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Byte offset of the read.
        offset: u64,
        /// Bytes the read needed.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The file's format version is not one this converter knows.
    #[error("{}: unsupported {format} version {found} (supported: {supported})", path.display())]
    UnsupportedVersion {
        /// The file involved.
        path: PathBuf,
        /// The format.
        format: &'static str,
        /// The version found.
        found: u32,
        /// The versions this converter reads.
        supported: String,
    },
    /// A tensor's element type is unknown or cannot be stored.
    #[error("{}: tensor {tensor}: unsupported element type {dtype}", path.display())]
    UnsupportedDtype {
        /// The file involved.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The element type as the file names it.
        dtype: String,
    },
    /// The file is structurally wrong (bad magic, impossible sizes, unknown layout).
    #[error("{}: malformed: {reason}", path.display())]
    Malformed {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A weight cannot be placed in the target layout.
    #[error("{}: {name}: {reason}", path.display())]
    Mapping {
        /// The file involved.
        path: PathBuf,
        /// The weight's name in the source file.
        name: String,
        /// Why it cannot be mapped.
        reason: String,
    },
    /// The checkpoint has no entry under the key the manifest names.
    #[error("{}: no entry {key:?} in the checkpoint (top-level keys: {})", path.display(), available.join(", "))]
    KeyNotFound {
        /// The file involved.
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// The keys present.
        available: Vec<String>,
    },
    /// The ONNX protobuf could not be decoded.
    #[error("{}: not a readable ONNX model: {source}", path.display())]
    Protobuf {
        /// The file involved.
        path: PathBuf,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// A zip container (npz, torch checkpoint) could not be read.
    #[error("{}: not a readable zip archive: {source}", path.display())]
    Zip {
        /// The file involved.
        path: PathBuf,
        /// The zip reader's error.
        source: zip::result::ZipError,
    },
    /// A JSON side file (config.json, tokenizer.json) could not be parsed.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The safetensors output could not be written.
    #[error("{}: cannot write safetensors: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The writer's error.
        source: safetensors::SafeTensorError,
    },
}

impl ConvertError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn malformed(path: &Path, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The conversion a manifest asset needs (`converter` in `models/manifest.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Converter {
    /// CTranslate2 Whisper `model.bin` (+ `config.json`, `tokenizer.json`) to the Hugging
    /// Face `WhisperForConditionalGeneration` layout.
    Ct2Whisper,
    /// A numpy `.npz` (compressed or stored): one tensor per `.npy` entry.
    Npz,
    /// The Silero VAD ONNX graph's weights, both sample-rate branches.
    OnnxSilero,
    /// A torch zip checkpoint (torch >= 1.6), optionally under a key.
    TorchZip,
    /// A legacy (pre-1.6, not zip) torch checkpoint, optionally under a key.
    TorchLegacy,
}

/// The file name every converter writes its weights to.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Converts the extracted package files in `input` into `output` (an existing empty dir).
///
/// `key` picks the entry of a torch checkpoint that holds the state dict (`converter_key`
/// in the manifest); the other converters ignore it. `input` may also be the one input
/// file itself.
pub fn convert(
    converter: Converter,
    key: Option<&str>,
    input: &Path,
    output: &Path,
) -> Result<(), ConvertError> {
    if key.is_some() && !matches!(converter, Converter::TorchZip | Converter::TorchLegacy) {
        tracing::warn!(?converter, ?key, "converter takes no key; ignoring it");
    }
    match converter {
        Converter::Ct2Whisper => ct2::convert(input, output),
        Converter::Npz => npz::convert(find_input(input, &["npz"], "numpy .npz file")?, output),
        Converter::OnnxSilero => {
            onnx::convert_silero(&find_input(input, &["onnx"], "ONNX model")?, output)
        }
        Converter::TorchZip => torch::convert_zip(
            &find_input(input, &["pt", "pth", "bin", "ckpt"], "torch checkpoint")?,
            key,
            output,
        ),
        Converter::TorchLegacy => torch::convert_legacy(
            &find_input(input, &["pt", "pth", "bin", "ckpt"], "torch checkpoint")?,
            key,
            output,
        ),
    }
}

/// The one file in `input` with one of `exts`, or `input` itself when it is a file.
fn find_input(input: &Path, exts: &[&str], what: &str) -> Result<PathBuf, ConvertError> {
    if input.is_file() {
        return Ok(input.to_path_buf());
    }
    let entries = std::fs::read_dir(input).map_err(|e| ConvertError::io(input, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ConvertError::io(input, e))?.path();
        let matches = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)));
        if matches && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ConvertError::MissingInput {
            dir: input.to_path_buf(),
            what: format!("{what} (*.{})", exts.join(", *.")),
        }),
        _ => Err(ConvertError::AmbiguousInput {
            dir: input.to_path_buf(),
            what: what.to_string(),
            names: found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect(),
        }),
    }
}

/// Reads a whole input file.
fn read_file(path: &Path) -> Result<Vec<u8>, ConvertError> {
    std::fs::read(path).map_err(|e| ConvertError::io(path, e))
}

/// The file name of `path` for metadata and log lines.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
