//! Writers: every output format reads an [`crate::document::Analysis`] or one of its parts.

/// Errors from writers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The output could not be written.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}
