//! The HTTP server over the engine: SageMaker's bring-your-own-container contract
//! (`/ping`, `/invocations`, `/invocations-response-stream`, `/execution-parameters`),
//! live captions over a WebSocket (`/live`), Prometheus `/metrics`, bounded admission and
//! a graceful SIGTERM.
//!
//! One [`mica::Analyzer`] is loaded once (after the port is bound, so `/ping` can say 503
//! until it is ready) and shared by every request; each request picks a subset of its
//! tasks and a few options, runs on a worker with its share of the CPU threads, and gets
//! the document in the format it asked for.
#![deny(missing_docs)]

mod accept;
mod config;
mod error;
mod live;
mod metrics;
mod options;
mod routes;
mod serve;
mod state;
mod stream;
mod upload;

pub use config::ServerConfig;
pub use error::ApiError;
pub use live::SOURCE_SCHEMES;
pub use options::{MAX_CUSTOM_ATTRIBUTES, RequestOptions};
pub use serve::{ServeError, serve, termination};
