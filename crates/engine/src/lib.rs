//! mica: broadcast audio and video to time-coded data in one pass: where speech is, what
//! was said (with word times), who spoke when, and where the picture cuts.
//!
//! An [`Analyzer`] loads every model of the tasks asked for once; it is `Send + Sync`, so
//! one is shared (through an `Arc`) by every thread or request of a service.
//!
//! ```no_run
//! # fn main() -> Result<(), mica::Error> {
//! let analyzer = mica::Analyzer::builder().build()?;
//! let analysis = analyzer.analyze(std::path::Path::new("news.mp4"))?;
//! println!("{}", serde_json::to_string_pretty(&analysis).unwrap());
//! # Ok(()) }
//! ```
//!
//! [`AnalyzerBuilder`] picks the tasks ([`Task`]), models, precision, device and each
//! model's options; [`Analyzer::analyze_with`] reports [`Progress`] and stops on a
//! [`CancelToken`]. The result is the [`Analysis`] document that [`writers`] turn into JSON,
//! SRT, WebVTT, RTTM, text, CSV or EDL. Every error has an [`ErrorKind`].
#![deny(missing_docs)]

mod analyzer;
mod builder;
mod control;
mod error;
mod fanout;
mod live;
mod parts;
mod plan;
mod stitch;

pub use analyzer::{Analyzer, Input, MIN_PART_SECONDS};
pub use builder::{AnalyzerBuilder, DEFAULT_PART_SECONDS, Task};
pub use control::{CancelToken, Progress, ProgressFn, RunControl, SegmentFn, Stage};
pub use error::Error;
pub use fanout::{PartKind, PartResult, PartSize, Plan, PlannedPart};
pub use live::{
    Caption, FeedOptions, HlsOptions, HlsSubtitles, LiveEvent, LiveInbox, LiveOptions, LiveSender,
    LiveSession, SpeakerLabel, live_channel, settled_transcript,
};
pub use mica_asr::{BatchStats, Precision, TranscribeOptions};
pub use mica_core::device::DeviceSpec;
pub use mica_core::document::{self, Analysis};
pub use mica_core::error::ErrorKind;
pub use mica_core::writers;
pub use mica_diarize::{DiarizeOptions, OnlineOptions};
pub use mica_scenes::ShotOptions;
pub use mica_vad::SpeechOptions;
pub use plan::{Planner, VAD_WINDOW};
