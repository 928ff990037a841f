//! The public entry point: [`Transcriber`] (shared weights, tokenizer, mel front end) and
//! [`TranscribeOptions`], from samples or a decoding [`AudioStream`] to a [`Transcript`].

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use mica_core::document::Transcript;
#[cfg(feature = "media")]
use mica_media::AudioStream;
use mica_vad::{SileroVad, Vad};

use crate::AsrError;
use crate::batcher::{BatchStats, WindowBatcher};
use crate::context::{DecodeContext, Observer, SegmentSink};
use crate::decode::{Task, detect_language};
use crate::longform::SeekTranscriber;
use crate::mel::{LogMel, SAMPLE_RATE, WINDOW_FRAMES, mel_windows};
use crate::model::{Precision, Whisper};
use crate::options::TranscribeOptions;
use crate::segment::RawSegment;
use crate::tokenizer::WhisperTokenizer;
use crate::vad_batch::{BatchedTranscriber, SPLIT_SILENCE_SECONDS, merge_regions};

/// Whisper loaded once with its tokenizer and front end; `Clone` is cheap and clones
/// share the weights.
#[derive(Debug, Clone)]
pub struct Transcriber {
    model: Arc<Whisper>,
    tokenizer: Arc<WhisperTokenizer>,
    mel: Arc<LogMel>,
    vad: Option<Arc<SileroVad>>,
    batcher: Option<Arc<WindowBatcher>>,
}

impl Transcriber {
    /// Loads a checkpoint directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`).
    pub fn load(
        dir: &Path,
        device: &Device,
        precision: Precision,
    ) -> Result<Transcriber, AsrError> {
        let model = Whisper::load(dir, device, precision)?;
        Self::new(Arc::new(model), &dir.join("tokenizer.json"))
    }

    /// A transcriber over already loaded weights and the checkpoint's `tokenizer.json`.
    pub fn new(model: Arc<Whisper>, tokenizer_json: &Path) -> Result<Transcriber, AsrError> {
        let multilingual = !model.config().is_english_only();
        let tokenizer = WhisperTokenizer::from_file(tokenizer_json, multilingual)?;
        let mel = LogMel::new(model.config().num_mel_bins)?;
        Ok(Transcriber {
            model,
            tokenizer: Arc::new(tokenizer),
            mel: Arc::new(mel),
            vad: None,
            batcher: None,
        })
    }

    /// Uses these Silero weights for the VAD-batched mode (`TranscribeOptions::vad`),
    /// which fails with an option error without them: nothing is fetched behind the
    /// caller's back.
    pub fn with_vad(mut self, vad: Arc<SileroVad>) -> Transcriber {
        self.vad = Some(vad);
        self
    }

    /// Decodes the windows of concurrent sequential transcriptions by this transcriber
    /// and its clones together, up to `max_rows` per batch (see [`WindowBatcher`]): what
    /// a server running many requests at once wants. Each transcription's text is what it
    /// would be alone. On the CPU up to one batch per thread of the process runs at once,
    /// each on its leader's threads; on a GPU one.
    pub fn with_window_batching(mut self, max_rows: usize) -> Transcriber {
        let leaders = if self.model.device().is_cpu() {
            rayon::current_num_threads()
        } else {
            1
        };
        self.batcher = Some(Arc::new(WindowBatcher::new(max_rows, leaders)));
        self
    }

    /// Batches and windows decoded by the window batcher, when there is one.
    pub fn batch_stats(&self) -> Option<BatchStats> {
        self.batcher.as_ref().map(|b| b.stats())
    }

    /// The network.
    pub fn model(&self) -> &Arc<Whisper> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WhisperTokenizer {
        &self.tokenizer
    }

    /// Language probabilities of the first 30 s of `samples` (16 kHz mono), likeliest
    /// first. English-only checkpoints give an error.
    pub fn detect_language(&self, samples: &[f32]) -> Result<Vec<(String, f64)>, AsrError> {
        let mel = self.mel.compute(samples)?;
        let frames = mel.n_frames().min(WINDOW_FRAMES);
        let features =
            self.model
                .encode(&mel_windows(&mel, &[(0, frames)], self.model.device())?)?;
        detect_language(&self.model, &self.tokenizer, &features)?
            .into_iter()
            .next()
            .ok_or_else(|| AsrError::State("language detection returned nothing".into()))
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        self.transcribe_observed(samples, options, &|_| true)
    }

    /// [`Transcriber::transcribe`], calling `observer` with the seconds of audio done
    /// before each window is decoded: it reports progress, and returning `false` stops the
    /// transcription with [`AsrError::Cancelled`] (within one window's decoding).
    pub fn transcribe_observed(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        observer: Observer<'_>,
    ) -> Result<Transcript, AsrError> {
        self.transcribe_streamed(samples, options, observer, &|_| {})
    }

    /// Decodes the first 30 s of `samples` as one window (from its first sounding frame),
    /// without the sequential seek past its last segment: what a live caption pass over a
    /// short buffer needs. Segments are those of [`Transcriber::transcribe`]'s first window.
    pub fn transcribe_window(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        self.run(samples, options, &|_| true, &|_| {}, true)
    }

    /// [`Transcriber::transcribe_observed`], also handing each segment to `on_segment`
    /// as soon as its window is decoded, so a caller can show text long before the end.
    pub fn transcribe_streamed(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        observer: Observer<'_>,
        on_segment: SegmentSink<'_>,
    ) -> Result<Transcript, AsrError> {
        self.run(samples, options, observer, on_segment, false)
    }

    fn run(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        observer: Observer<'_>,
        on_segment: SegmentSink<'_>,
        one_window: bool,
    ) -> Result<Transcript, AsrError> {
        options.validate()?;
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let (language, language_token) = self.language(samples, options)?;
        let context = DecodeContext {
            model: &self.model,
            tokenizer: &self.tokenizer,
            options,
            language: language_token,
            language_code: &language,
            observer,
            on_segment,
            batcher: self.batcher.as_deref(),
        };
        let segments = if samples.len() < crate::mel::HOP {
            Vec::new()
        } else if options.vad && !one_window {
            self.run_vad_batched(samples, context)?
        } else {
            let mel = self.mel.compute(samples)?;
            SeekTranscriber {
                context,
                one_window,
            }
            .run(&mel)?
        };
        Ok(Transcript {
            language,
            duration,
            segments: segments.iter().map(RawSegment::to_segment).collect(),
        })
    }

    /// Transcribes a decoding stream (read to the end first: the sequential algorithm
    /// needs the global mel maximum, as openai computes it).
    #[cfg(feature = "media")]
    pub fn transcribe_stream(
        &self,
        stream: AudioStream,
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        options.validate()?;
        let audio = stream.collect_all()?;
        for w in &audio.warnings {
            tracing::warn!("{w}");
        }
        self.transcribe(&audio.samples, options)
    }

    /// The language code and prompt token: given, detected, or `en` on English-only
    /// checkpoints.
    fn language(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(String, Option<u32>), AsrError> {
        if !self.tokenizer.is_multilingual() {
            if let Some(l) = options.language.as_deref()
                && l != "en"
            {
                return Err(AsrError::Language(format!(
                    "language {l:?} asked of an English-only checkpoint; use a multilingual one (e.g. base) or set the language to en"
                )));
            }
            if options.task == Task::Translate {
                return Err(AsrError::Language(
                    "translate needs a multilingual checkpoint (e.g. base); English-only ones only transcribe".into(),
                ));
            }
            return Ok(("en".into(), None));
        }
        let code = match &options.language {
            Some(l) => l.clone(),
            None if samples.len() < crate::mel::HOP => "en".into(),
            None => {
                let probs = self.detect_language(samples)?;
                let (code, p) = probs
                    .first()
                    .cloned()
                    .ok_or_else(|| AsrError::State("no language probabilities".into()))?;
                tracing::info!("detected language {code} (p = {p:.2})");
                code
            }
        };
        let token = self.tokenizer.language_token(&code).ok_or_else(|| {
            AsrError::Language(format!(
                "language {code:?} is not one this checkpoint knows; known: {}",
                self.tokenizer
                    .languages()
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })?;
        Ok((code, Some(token)))
    }

    fn run_vad_batched(
        &self,
        samples: &[f32],
        context: DecodeContext<'_>,
    ) -> Result<Vec<RawSegment>, AsrError> {
        let options = context.options;
        let vad_model = self.vad.clone().ok_or_else(|| {
            crate::error::invalid_option(
                "the VAD-batched mode needs the Silero VAD weights: load them with \
                 mica_vad::SileroVad::from_path and pass them to Transcriber::with_vad",
            )
        })?;
        let vad = Vad::new(vad_model, options.vad_options.clone())?;
        let out = vad.detect(samples, mica_vad::SampleRate::from_hz(SAMPLE_RATE as u32)?)?;
        let chunks = merge_regions(&out.regions(), 30.0, SPLIT_SILENCE_SECONDS, samples.len());
        tracing::debug!(
            regions = out.segments.len(),
            chunks = chunks.len(),
            "speech regions merged into chunks"
        );
        BatchedTranscriber {
            context,
            mel: &self.mel,
        }
        .run(samples, &chunks)
    }
}
