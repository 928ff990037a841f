//! [`AnalyzerBuilder`]: which tasks, which models, which device; every option has a default.

use std::str::FromStr;
use std::sync::Arc;

use mica_asr::{Precision, TranscribeOptions, Transcriber};
use mica_core::device::DeviceSpec;
use mica_diarize::{DiarizeOptions, Diarizer, Segmentation, SpeakerEncoder};
use mica_models::ModelSpec;
use mica_scenes::{ShotDetector, ShotOptions, TransNetV2};
use mica_vad::{SileroVad, SpeechOptions, Vad};

use crate::Error;
use crate::analyzer::{Analyzer, MIN_PART_SECONDS, Models, Settings};

/// Most workers an analyzer runs.
const MAX_WORKERS: usize = 1024;
/// Most Whisper windows in one cross-call batch (activations grow with it: about 75 MB per
/// tiny window in the encoder, 4x that for base).
const MAX_BATCH_WINDOWS: usize = 64;

/// One kind of analysis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Where speech is (Silero VAD).
    Vad,
    /// What was said, with word times (Whisper).
    Asr,
    /// Who spoke when (segmentation, speaker embeddings, clustering).
    Diarize,
    /// Where the picture cuts (TransNetV2).
    Shots,
}

impl Task {
    /// Every task.
    pub const ALL: [Task; 4] = [Task::Vad, Task::Asr, Task::Diarize, Task::Shots];

    /// The task's name (`vad`, `asr`, `diarize`, `shots`).
    pub fn name(self) -> &'static str {
        match self {
            Task::Vad => "vad",
            Task::Asr => "asr",
            Task::Diarize => "diarize",
            Task::Shots => "shots",
        }
    }
}

impl FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Task, Error> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| Error::UnknownTask(s.to_string()))
    }
}

/// Builds an [`Analyzer`]: the defaults analyse speech, words and speakers with tiny.en,
/// Silero VAD v6, pyannote segmentation and resemblyzer embeddings on the best device.
#[derive(Debug, Clone)]
pub struct AnalyzerBuilder {
    tasks: Vec<Task>,
    device: DeviceSpec,
    opened: Option<candle_core::Device>,
    asr_model: String,
    precision: Precision,
    vad_model: String,
    segmentation_model: String,
    embedding_model: String,
    shots_model: String,
    transcribe: TranscribeOptions,
    speech: SpeechOptions,
    diarize: DiarizeOptions,
    shots: ShotOptions,
    workers: usize,
    part_seconds: f64,
    batch_windows: usize,
}

/// Longest part by default (seconds): long enough that cuts are rare, short enough that
/// the last part does not leave the other workers idle for long.
pub const DEFAULT_PART_SECONDS: f64 = 300.0;

impl Default for AnalyzerBuilder {
    fn default() -> AnalyzerBuilder {
        AnalyzerBuilder {
            tasks: vec![Task::Vad, Task::Asr, Task::Diarize],
            device: DeviceSpec::Auto,
            opened: None,
            asr_model: "tiny.en".into(),
            precision: Precision::F32,
            vad_model: SileroVad::ASSET.into(),
            segmentation_model: Segmentation::ASSET.into(),
            embedding_model: SpeakerEncoder::ASSET.into(),
            shots_model: TransNetV2::ASSET.into(),
            transcribe: TranscribeOptions {
                word_timestamps: true,
                ..TranscribeOptions::default()
            },
            speech: SpeechOptions::default(),
            diarize: DiarizeOptions::default(),
            shots: ShotOptions::default(),
            workers: 0,
            part_seconds: DEFAULT_PART_SECONDS,
            batch_windows: 0,
        }
    }
}

impl AnalyzerBuilder {
    /// The tasks to run (any order; repeats are ignored).
    pub fn tasks(mut self, tasks: impl IntoIterator<Item = Task>) -> Self {
        let mut tasks: Vec<Task> = tasks.into_iter().collect();
        tasks.sort();
        tasks.dedup();
        self.tasks = tasks;
        self
    }

    /// Where the models run (default: CUDA, then Metal, then the CPU).
    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    /// Runs the models on an already opened candle device (instead of [`Self::device`]).
    pub fn on_device(mut self, device: candle_core::Device) -> Self {
        self.opened = Some(device);
        self
    }

    /// The Whisper checkpoint: a name (`tiny.en`, `base`), a directory, or `hf:owner/repo`.
    pub fn asr_model(mut self, spec: impl Into<String>) -> Self {
        self.asr_model = spec.into();
        self
    }

    /// Whisper's weight precision (default f32).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The Silero VAD model (a name or a directory).
    pub fn vad_model(mut self, spec: impl Into<String>) -> Self {
        self.vad_model = spec.into();
        self
    }

    /// The diarization models: segmentation and speaker embedding (names or directories).
    pub fn diarization_models(
        mut self,
        segmentation: impl Into<String>,
        embedding: impl Into<String>,
    ) -> Self {
        self.segmentation_model = segmentation.into();
        self.embedding_model = embedding.into();
        self
    }

    /// The TransNetV2 model (a name or a directory).
    pub fn shots_model(mut self, spec: impl Into<String>) -> Self {
        self.shots_model = spec.into();
        self
    }

    /// Transcription options (default: faster-whisper's, with word timestamps).
    pub fn transcribe_options(mut self, options: TranscribeOptions) -> Self {
        self.transcribe = options;
        self
    }

    /// Voice activity options.
    pub fn speech_options(mut self, options: SpeechOptions) -> Self {
        self.speech = options;
        self
    }

    /// Diarization options (speaker count or bounds, clustering).
    pub fn diarize_options(mut self, options: DiarizeOptions) -> Self {
        self.diarize = options;
        self
    }

    /// Shot detection options.
    pub fn shot_options(mut self, options: ShotOptions) -> Self {
        self.shots = options;
        self
    }

    /// Parts worked on at once (default 0: one per CPU thread, each single-threaded, or 2
    /// on a GPU). Fewer parts than workers leave the spare threads to the busy ones.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Longest part, in seconds (default [`DEFAULT_PART_SECONDS`], at least
    /// [`crate::MIN_PART_SECONDS`]). A recording is cut in pauses into parts of about this
    /// length, or shorter so every worker gets one.
    pub fn part_seconds(mut self, seconds: f64) -> Self {
        self.part_seconds = seconds;
        self
    }

    /// Decodes the Whisper windows of calls running at once (a server's requests, a
    /// batch job's files) together, up to `rows` windows per batch (default 0: each call
    /// decodes alone). Each call's text is what it would be alone; together they share
    /// the decoder's weight reads, so throughput rises with concurrency.
    pub fn batch_windows(mut self, rows: usize) -> Self {
        self.batch_windows = rows;
        self
    }

    /// Checks every option, resolves the models (installing missing ones with the `fetch`
    /// feature) and loads each once onto the device.
    pub fn build(self) -> Result<Analyzer, Error> {
        if self.tasks.is_empty() {
            return Err(Error::NoTasks);
        }
        let wants = |t: Task| self.tasks.contains(&t);
        let audio = wants(Task::Vad) || wants(Task::Asr) || wants(Task::Diarize);
        // Every option is checked before any model is read.
        if !(self.part_seconds.is_finite() && self.part_seconds >= MIN_PART_SECONDS) {
            return Err(Error::Options(format!(
                "the part length must be at least {MIN_PART_SECONDS} seconds, not {}",
                self.part_seconds
            )));
        }
        if self.batch_windows > MAX_BATCH_WINDOWS {
            return Err(Error::Options(format!(
                "at most {MAX_BATCH_WINDOWS} windows per batch, not {}",
                self.batch_windows
            )));
        }
        if self.workers > MAX_WORKERS {
            return Err(Error::Options(format!(
                "at most {MAX_WORKERS} workers, not {}",
                self.workers
            )));
        }
        if wants(Task::Asr) {
            self.transcribe.validate()?;
        }
        if audio {
            self.speech.validate()?;
        }
        if wants(Task::Diarize) {
            self.diarize.validate()?;
        }
        if wants(Task::Shots) {
            self.shots.validate()?;
        }
        let device = match &self.opened {
            Some(device) => device.clone(),
            None => self.device.resolve()?,
        };
        let dir = |spec: &str, files: &[&str]| ModelSpec::parse(spec)?.resolve(files);
        // Silero serves the VAD task, the planner's cuts and Whisper's VAD-batched mode.
        let silero = if audio {
            let path = dir(&self.vad_model, &[SileroVad::FILE])?;
            Some(SileroVad::from_path(path, &device)?)
        } else {
            None
        };
        let vad = match &silero {
            Some(model) => Some(Vad::new(Arc::clone(model), self.speech.clone())?),
            None => None,
        };
        let transcriber = if wants(Task::Asr) {
            let path = dir(
                &self.asr_model,
                &["config.json", "model.safetensors", "tokenizer.json"],
            )?;
            let mut t = Transcriber::load(&path, &device, self.precision)?;
            if self.batch_windows > 1 {
                t = t.with_window_batching(self.batch_windows);
            }
            Some(match &silero {
                Some(model) => t.with_vad(Arc::clone(model)),
                None => t,
            })
        } else {
            None
        };
        let diarizer = if wants(Task::Diarize) {
            let seg = dir(&self.segmentation_model, &[Segmentation::FILE])?;
            let emb = dir(&self.embedding_model, &[SpeakerEncoder::FILE])?;
            Some(Diarizer::new(
                Segmentation::from_path(seg, &device)?,
                SpeakerEncoder::from_path(emb, &device)?,
                self.diarize.clone(),
            )?)
        } else {
            None
        };
        let shots = if wants(Task::Shots) {
            let path = dir(&self.shots_model, &[TransNetV2::FILE])?;
            Some(ShotDetector::new(
                TransNetV2::from_path(path, &device)?,
                self.shots.clone(),
            )?)
        } else {
            None
        };
        Ok(Analyzer::new(
            Models {
                vad,
                transcriber,
                diarizer,
                shots,
            },
            self.tasks,
            Settings {
                transcribe: self.transcribe,
                shots: self.shots,
                workers: self.workers,
                part_seconds: self.part_seconds,
                cpu: device.is_cpu(),
            },
        ))
    }
}
