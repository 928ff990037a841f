//! Errors: [`RunError`], what every model crate can report the same way, with its
//! [`ErrorKind`]; and [`Error`], mica-core's own (writing documents, choosing devices).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

pub use crate::device::DeviceError;
pub use crate::writers::WriteError;

/// Any error mica-core itself returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A document could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The requested compute device is not usable.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an error, the same for every mica crate: the CLI's exit
/// codes, the server's status codes and the Python exceptions follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (samples, frames, tensors) is malformed: fix the input.
    Input,
    /// The media could not be opened or decoded: fix or convert the file.
    Media,
    /// An option is out of range or contradicts another: fix the options.
    Options,
    /// A model's files are missing, unreadable or not the model expected: fetch it again
    /// or point at the right directory.
    Model,
    /// The compute device failed (out of memory, an operation it lacks): try another device
    /// or smaller batches.
    Device,
    /// A call made in the wrong state (a stream used after it finished): a bug in the
    /// caller.
    State,
    /// The caller cancelled the work; nothing was written.
    Cancelled,
}

/// What goes wrong loading or running a model, the same shape in every model crate: each
/// crate's error holds it as its `Run` variant, beside the errors only that crate has.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A weights file could not be read, or is not a safetensors file.
    #[error(
        "{}: cannot load {model} weights: {reason}; run `mica models fetch {asset}` or pass a \
         directory holding the converted model",
        path.display()
    )]
    Weights {
        /// Which network.
        model: &'static str,
        /// The store asset that provides it.
        asset: &'static str,
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A weights file lacks a tensor the network needs.
    #[error("weight {name} is missing; the file is not the converted {model} model")]
    MissingWeight {
        /// Which network.
        model: &'static str,
        /// The tensor's full name.
        name: String,
    },
    /// A tensor of a weights file has a shape the network cannot use.
    #[error(
        "weight {name} has shape {found:?}, expected {expected:?}; the file is not the converted \
         {model} model (or belongs to another checkpoint than its config)"
    )]
    WeightShape {
        /// Which network.
        model: &'static str,
        /// The tensor's full name.
        name: String,
        /// Its shape in the file.
        found: Vec<usize>,
        /// The shape the network needs.
        expected: Vec<usize>,
    },
    /// A tensor or buffer passed in has the wrong shape.
    #[error("{what} has shape {found:?}, expected {expected}")]
    InputShape {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// An input value was NaN or infinite.
    #[error(
        "{what} {index} is {value} (not finite); the decoder output is damaged or the buffer \
         was not initialised"
    )]
    NonFinite {
        /// What holds it (`audio sample`, `frame pixel`).
        what: &'static str,
        /// Index of the first bad value, counted from the start of the stream.
        index: u64,
        /// The value found.
        value: f32,
    },
    /// An option is out of range or contradicts another.
    #[error("invalid {model} option: {reason}")]
    InvalidOption {
        /// Which model's options.
        model: &'static str,
        /// What is wrong, and what is allowed.
        reason: String,
    },
    /// A tensor operation failed (device out of memory, an operation the device lacks).
    #[error("{model} tensor operation failed: {source}")]
    Candle {
        /// Which network.
        model: &'static str,
        /// candle's error.
        source: candle_core::Error,
    },
}

impl RunError {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Weights { .. }
            | RunError::MissingWeight { .. }
            | RunError::WeightShape { .. } => ErrorKind::Model,
            RunError::InputShape { .. } | RunError::NonFinite { .. } => ErrorKind::Input,
            RunError::InvalidOption { .. } => ErrorKind::Options,
            RunError::Candle { .. } => ErrorKind::Device,
        }
    }

    /// This error as [`RunError::Weights`] of the file at `path` when it is about the
    /// file's contents (a missing or misshapen tensor, one candle could not read), so that
    /// the message names the file; any other error unchanged.
    pub fn in_file(self, asset: &'static str, path: &Path) -> RunError {
        match self {
            RunError::MissingWeight { model, .. }
            | RunError::WeightShape { model, .. }
            | RunError::Candle { model, .. } => RunError::Weights {
                model,
                asset,
                path: path.to_path_buf(),
                reason: match &self {
                    RunError::Candle { source, .. } => source.to_string(),
                    other => other.to_string(),
                },
            },
            other => other,
        }
    }

    /// [`RunError::InvalidOption`] of `model`.
    pub fn option(model: &'static str, reason: impl Into<String>) -> RunError {
        RunError::InvalidOption {
            model,
            reason: reason.into(),
        }
    }

    /// The first non-finite value of `samples` as [`RunError::NonFinite`] (`what` at
    /// `offset + i`), if there is one.
    pub fn check_finite(what: &'static str, samples: &[f32], offset: u64) -> Result<(), RunError> {
        match samples.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(RunError::NonFinite {
                what,
                index: offset + i as u64,
                value: samples[i],
            }),
            None => Ok(()),
        }
    }
}

/// Tensor `name` of a loaded `tensors` map, with its shape checked (for models that
/// transform their weights at load instead of reading them through a `VarBuilder`).
pub fn weight_in<'t>(
    tensors: &'t std::collections::HashMap<String, Tensor>,
    model: &'static str,
    name: &str,
    shape: &[usize],
) -> Result<&'t Tensor, RunError> {
    let t = tensors.get(name).ok_or_else(|| RunError::MissingWeight {
        model,
        name: name.to_string(),
    })?;
    if t.dims() != shape {
        return Err(RunError::WeightShape {
            model,
            name: name.to_string(),
            found: t.dims().to_vec(),
            expected: shape.to_vec(),
        });
    }
    Ok(t)
}

/// Tensor `name` of `vb` as f32 with its shape checked, so that a wrong file fails naming
/// the tensor (candle's own error names neither the model nor the file's shape).
pub fn weight(
    vb: &VarBuilder,
    model: &'static str,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, RunError> {
    let full = if vb.prefix().is_empty() {
        name.to_string()
    } else {
        format!("{}.{name}", vb.prefix())
    };
    if !vb.contains_tensor(name) {
        return Err(RunError::MissingWeight { model, name: full });
    }
    let t = vb
        .get_unchecked_dtype(name, DType::F32)
        .map_err(|source| RunError::Candle { model, source })?;
    if t.dims() != shape {
        return Err(RunError::WeightShape {
            model,
            name: full,
            found: t.dims().to_vec(),
            expected: shape.to_vec(),
        });
    }
    Ok(t)
}
