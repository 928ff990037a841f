//! Silero VAD v6.2 in candle: batched and streaming speech probabilities, and speech
//! timestamps with the semantics of silero's `get_speech_timestamps`.
//!
//! - [`SileroVad`]: the network (both the 16 kHz and the 8 kHz branch), loaded once and
//!   shared through an `Arc`. [`SileroVad::forward`] runs one window for each of many
//!   independent streams in one call (state `[2, B, 128]` per call).
//! - [`VadStream`]: one live stream; push chunks of any size, get probabilities and
//!   speech start/end/region events.
//! - [`Vad`]: offline detection over samples or (feature `media`, on by default) a
//!   decoding `mica_media::AudioStream`, on the same path as the stream.
//!
//! The crate loads weights from a file or directory ([`SileroVad::from_path`]); it never
//! downloads. `mica-models` (feature `fetch`) installs them:
//! `mica_models::ensure("silero-v6")` gives the directory.
//! - [`speech_segments`]: regions from probabilities alone.
//!
//! ```no_run
//! # fn main() -> Result<(), mica_vad::VadError> {
//! use mica_vad::{SampleRate, SileroVad, SpeechOptions, Vad};
//! let model = SileroVad::from_path("models/silero-v6", &candle_core::Device::Cpu)?;
//! let vad = Vad::new(model, SpeechOptions::default())?;
//! let samples = vec![0.0f32; 16_000];
//! let out = vad.detect(&samples, SampleRate::Hz16000)?;
//! for r in out.regions() {
//!     println!("{:.2}-{:.2}", r.start, r.end);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
pub mod model;
mod stream;
mod timestamps;

pub use error::VadError;
pub use model::{HIDDEN, RateNet, SampleRate, SileroVad};
pub use stream::{StreamOutput, Vad, VadEvent, VadOutput, VadStream};
pub use timestamps::{SpeechOptions, SpeechSegment, speech_segments};
