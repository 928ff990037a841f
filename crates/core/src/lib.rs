//! mica core: time types, documents, writers, media input, devices and model files.
//!
//! Everything the model crates, the engine, the server and the CLI share lives here. Model
//! crates know nothing of files or HTTP; they take samples and frames from [`media`] and
//! produce the [`document`] types that [`writers`] serialise.

pub mod device;
pub mod document;
pub mod error;
pub mod media;
pub mod models;
pub mod process;
pub mod time;
pub mod writers;

pub use error::{Error, Result};
