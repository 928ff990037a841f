//! Compute device selection.

/// Errors from device selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device string could not be parsed.
    #[error("invalid device {0:?}: expected auto, cpu, cuda, cuda:N, metal or metal:N")]
    Parse(String),
}
