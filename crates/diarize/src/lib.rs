//! Speaker diarization: who spoke when, overlap-aware, in the manner of pyannote 3.x, all
//! native in candle.
//!
//! - [`Segmentation`]: pyannote's PyanNet (`pyannote/segmentation`: SincNet, 4
//!   bidirectional LSTM layers, 3 local speakers, sigmoid) over 5 s windows.
//! - [`SpeakerEncoder`]: resemblyzer's GE2E d-vector network and its mel front end, one
//!   embedding per (window, local speaker) from the frames where that speaker talks alone.
//! - [`clustering`]: agglomerative (average linkage, cosine) and spectral clustering,
//!   honouring a speaker count or bounds.
//! - [`Diarizer`] / [`Session`]: the streaming pipeline (bounded memory) from samples or
//!   (feature `media`, on by default) a decoding `mica_media::AudioStream` to
//!   [`SpeakerTurns`](mica_core::document::SpeakerTurns), overlapped speech kept.
//! - [`attach_speakers`]: speaker labels onto a transcript's words and segments.
//! - [`der`]: the diarization error rate (optimal mapping, collar, overlap scored).
//!
//! Both networks equal their PyTorch references within 1e-4 (tests/parity.rs). They load
//! from a file or directory; the crate never downloads (`mica-models` installs
//! [`Segmentation::ASSET`] and [`SpeakerEncoder::ASSET`]).
//!
//! ```no_run
//! # fn main() -> Result<(), mica_diarize::DiarizeError> {
//! use mica_diarize::{DiarizeOptions, Diarizer};
//! use mica_diarize::{Segmentation, SpeakerEncoder};
//! let device = candle_core::Device::Cpu;
//! let diarizer = Diarizer::new(
//!     Segmentation::from_path("models/pyannote-segmentation", &device)?,
//!     SpeakerEncoder::from_path("models/resemblyzer", &device)?,
//!     DiarizeOptions::default(),
//! )?;
//! let mut audio = mica_media::AudioStream::open("meeting.wav")?;
//! for t in diarizer.diarize_stream(&mut audio)?.turns {
//!     println!("{:.2}-{:.2} {}", t.start, t.end, t.speaker);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod attach;
pub mod clustering;
pub mod der;
pub mod embedding;
mod error;
mod lstm;
pub mod online;
pub mod pipeline;
pub mod segmentation;
mod threads;

pub use attach::{AttachOptions, attach_speakers};
pub use clustering::Method;
pub use embedding::{MelFrontEnd, SpeakerEncoder};
pub use error::DiarizeError;
pub use online::{OnlineOptions, OnlineSpeakers};
pub use pipeline::{
    Diarization, DiarizeOptions, DiarizedPart, Diarizer, MAX_BATCH, SPECTRAL_MAX_POINTS, Session,
};
pub use segmentation::Segmentation;
