//! The HTTP server (SageMaker bring-your-own-container contract) over the engine.
//!
//! Not built yet; this crate holds only its place in the workspace.
#![deny(missing_docs)]
