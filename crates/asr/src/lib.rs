//! Whisper speech recognition in candle: the network, its log-mel front end, decoding,
//! long-form transcription and word timestamps.
//!
//! The model half:
//! - [`LogMel`] / [`mel_batch`]: openai's log-mel features (filters computed, not loaded);
//!   [`LogMel::compute_on`] / [`mel_window`] keep them on the device;
//! - [`Whisper`]: any Hugging Face Whisper checkpoint (tiny ... large-v3-turbo) in
//!   f32/f16/bf16, or with quantized linear layers ([`Precision::Q8_0`], [`Precision::Q4K`])
//!   on the CPU; [`Whisper::encode`] batches 30 s windows, [`DecoderState`] holds a
//!   self-attention KV cache for many rows (beams) of many audio items and cross-attention
//!   K/V computed once per item.
//!
//! The decoding half:
//! - [`Transcriber`] / [`TranscribeOptions`]: samples or an audio stream to a
//!   [`mica_core::document::Transcript`], in openai's sequential seek mode or the
//!   VAD-batched mode (faster-whisper's batched pipeline; Silero weights passed with
//!   [`Transcriber::with_vad`]), with word timestamps (DTW over the alignment heads'
//!   cross-attention);
//! - [`DecodeOptions`]: openai's logit filters, greedy / sampling / beam search batched
//!   over windows on the KV cache, temperature fallback, language detection;
//! - [`WhisperTokenizer`]: special tokens derived from `tokenizer.json`;
//! - [`text`] and [`wer`]: compression ratio, loop cutting, English normaliser, WER.
//!
//! ```no_run
//! # fn main() -> Result<(), mica_asr::AsrError> {
//! use candle_core::{Device, Tensor};
//! use mica_asr::{LogMel, Precision, Whisper, mel_batch};
//! let dir = std::path::Path::new("models/tiny.en"); // config.json, model.safetensors, tokenizer.json
//! let model = Whisper::load(dir, &Device::Cpu, Precision::F32)?;
//! let mel = LogMel::new(model.config().num_mel_bins)?.compute(&vec![0.0f32; 16_000])?;
//! let features = model.encode(&mel_batch(&[(&mel, 0)], model.device())?)?;
//! let mut state = model.decoder_state(&features, 1)?;
//! let sot = Tensor::new(&[[50257u32, 50362]], model.device())?;
//! let logits = model.decode(&mut state, &sot, false)?; // [1, vocab]
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod batcher;
mod config;
mod context;
mod decode;
mod error;
mod longform;
pub mod mel;
mod model;
mod options;
mod segment;
pub mod text;
mod tokenizer;
mod transcribe;
mod vad_batch;
pub mod wer;
mod words;

pub use batcher::{BatchStats, WindowBatcher};
pub use config::WhisperConfig;
pub use context::{Observer, SegmentSink};
pub use decode::{DecodeOptions, Task};
pub use error::AsrError;
pub use mel::{LogMel, Mel, mel_batch, mel_window};
pub use model::{DecoderState, Precision, Whisper};
pub use options::{APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, TranscribeOptions};
pub use tokenizer::{SpecialTokens, WhisperTokenizer};
pub use transcribe::Transcriber;
