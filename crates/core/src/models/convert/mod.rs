//! Converters from the packaged formats (CTranslate2, ONNX, torch pickles, npz) to
//! safetensors that candle loads.

/// Errors from converting a packaged model file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An input file could not be read or an output written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
