//! The segment-parallel scheduler and one-pass pipeline that combine the model crates.
//!
//! Not built yet; this crate holds only its place in the workspace.
#![deny(missing_docs)]
