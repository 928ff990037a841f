//! TransNetV2 shot boundary detection in candle, streaming over any video ffmpeg reads.
//!
//! - [`TransNetV2`]: the network, loaded once and shared (`Arc`); [`TransNetV2::forward`]
//!   runs a batch of 100-frame windows and gives both heads' per-frame probabilities.
//! - [`windows`]: the reference's windowing (100 frames, 25 of context each side, step 50,
//!   edge padding) over a stream.
//! - [`ShotDetector`]: decoding (ffmpeg through `mica-media`, 48x27 rgb24, constant
//!   memory), batched windows, and shots and transitions ([`ShotList`]) from the
//!   probabilities.
//!
//! The network loads from a file or directory; the crate never downloads (`mica-models`
//! installs [`TransNetV2::ASSET`]).
//!
//! ```no_run
//! # fn main() -> Result<(), mica_scenes::ScenesError> {
//! use mica_scenes::{ShotDetector, ShotOptions, TransNetV2};
//! // The directory `mica models fetch transnetv2` installs (`mica_models::ensure`).
//! let model = TransNetV2::from_path("models/transnetv2", &candle_core::Device::Cpu)?;
//! let detector = ShotDetector::new(model, ShotOptions::default())?;
//! let list = detector.detect_path("film.mp4")?;
//! for shot in &list.shots {
//!     println!("{} - {}", shot.start_timecode, shot.end_timecode);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod detect;
mod error;
mod fused;
pub mod model;
pub mod windows;

pub use detect::{
    FrameScores, ShotDetector, ShotList, ShotOptions, ShotSpan, ShotStream, Transition,
};
pub use error::ScenesError;
pub use model::{Config, Predictions, TransNetV2};
