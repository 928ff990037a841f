//! Media input: audio decoded to 16 kHz mono f32 chunks, video frames over ffmpeg.

/// Errors from media input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The file does not exist.
    #[error("{path}: no such file")]
    NotFound {
        /// The path given.
        path: std::path::PathBuf,
    },
}
