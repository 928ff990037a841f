//! mica core: time types, documents, writers and devices.
//!
//! The types every other mica crate shares: [`time`] (samples, frames and timecodes),
//! the [`document`] a run produces, the [`writers`] that serialise it (JSON, SRT, VTT,
//! RTTM, CSV, EDL, text), the compute [`device`], and the errors of running a model
//! ([`error::RunError`]). Media input lives in `mica-media`, model files in `mica-models`.
#![deny(missing_docs)]

pub mod device;
pub mod document;
pub mod error;
pub mod process;
pub mod time;
pub mod writers;

pub use error::{Error, Result};
