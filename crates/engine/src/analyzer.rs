//! [`Analyzer`]: the models loaded once, and one analysis of an input through all of them.
//!
//! The audio is decoded once. Voice activity and diarization consume it chunk by chunk as
//! it is decoded; Whisper runs on the whole recording once it is decoded (its sequential
//! mode needs the global mel maximum), while the diarization finishes beside it. Shot
//! detection decodes the video frames in its own thread from the start.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mica_asr::{BatchStats, TranscribeOptions, Transcriber};
use mica_core::document::{Analysis, MediaInfo, SpeechRegions};
use mica_core::time::TimeRange;
use mica_diarize::{AttachOptions, DiarizeOptions, Diarizer, attach_speakers};
use mica_media::{AudioOptions, AudioStream, FrameOptions, FrameSource, Tools};
use mica_scenes::{ShotDetector, ShotOptions};
use mica_vad::Vad;

use crate::Error;
use crate::builder::Task;
use crate::control::{RunControl, Stage};
use crate::fanout::PartResult;
use crate::parts::Schedule;
use crate::stitch::stitch;

/// The loaded models of the tasks asked for (each shares its weights when cloned).
#[derive(Clone)]
pub(crate) struct Models {
    /// Loaded for every audio task: the planner cuts parts in its pauses.
    pub(crate) vad: Option<Vad>,
    pub(crate) transcriber: Option<Transcriber>,
    pub(crate) diarizer: Option<Diarizer>,
    pub(crate) shots: Option<ShotDetector>,
}

/// What to analyse.
pub enum Input<'a> {
    /// A media file (any container and codec symphonia or ffmpeg reads).
    Path(&'a Path),
    /// Media bytes (a request body, a pipe): spooled to a temporary file, which is removed
    /// on every path out.
    Reader(Box<dyn Read + Send + 'a>),
    /// 16 kHz mono samples (audio tasks only).
    Samples(&'a [f32]),
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Input::Reader(_) => f.write_str("Reader(..)"),
            Input::Samples(s) => write!(f, "Samples({} samples)", s.len()),
        }
    }
}

impl<'a> From<&'a Path> for Input<'a> {
    fn from(path: &'a Path) -> Input<'a> {
        Input::Path(path)
    }
}

impl<'a> From<&'a PathBuf> for Input<'a> {
    fn from(path: &'a PathBuf) -> Input<'a> {
        Input::Path(path)
    }
}

impl<'a> From<&'a [f32]> for Input<'a> {
    fn from(samples: &'a [f32]) -> Input<'a> {
        Input::Samples(samples)
    }
}

/// Every model of the tasks asked for, loaded once. `Send + Sync`: share one through an
/// `Arc` between threads or requests; each call keeps its own state. `Clone` is cheap (the
/// clones share the weights), and so are the views [`Analyzer::with_tasks`],
/// [`Analyzer::with_transcribe_options`], [`Analyzer::with_diarize_options`] and
/// [`Analyzer::with_threads`] give for one request's choices.
#[derive(Clone)]
pub struct Analyzer {
    pub(crate) models: Models,
    tasks: Vec<Task>,
    pub(crate) transcribe: TranscribeOptions,
    shot_options: ShotOptions,
    /// Workers (0: one per CPU thread, or 2 on a GPU).
    workers: usize,
    /// Longest part (seconds).
    part_seconds: f64,
    /// The models run on the CPU.
    cpu: bool,
    /// Most CPU threads one call uses (None: every thread of the process).
    threads: Option<usize>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

/// The options an analyzer keeps beside its models.
pub(crate) struct Settings {
    pub(crate) transcribe: TranscribeOptions,
    pub(crate) shots: ShotOptions,
    pub(crate) workers: usize,
    pub(crate) part_seconds: f64,
    pub(crate) cpu: bool,
}

/// The audio side's results.
#[derive(Default)]
pub(crate) struct AudioResults {
    samples: u64,
    speech: Option<mica_core::document::SpeechRegions>,
    transcript: Option<mica_core::document::Transcript>,
    turns: Option<mica_core::document::SpeakerTurns>,
}

impl Analyzer {
    /// An analyzer with the defaults (see [`crate::AnalyzerBuilder`]).
    pub fn builder() -> crate::AnalyzerBuilder {
        crate::AnalyzerBuilder::default()
    }

    pub(crate) fn new(models: Models, tasks: Vec<Task>, settings: Settings) -> Analyzer {
        Analyzer {
            models,
            tasks,
            transcribe: settings.transcribe,
            shot_options: settings.shots,
            workers: settings.workers,
            part_seconds: settings.part_seconds,
            cpu: settings.cpu,
            threads: None,
        }
    }

    /// The tasks this analyzer runs.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Cross-call batches of Whisper windows run so far and the windows in them, when
    /// [`crate::AnalyzerBuilder::batch_windows`] turned batching on.
    pub fn window_batches(&self) -> Option<BatchStats> {
        self.models.transcriber.as_ref()?.batch_stats()
    }

    /// This analyzer running only `tasks`, each of which it must have loaded (a service
    /// loads every task once and lets each request pick some). Shares the weights.
    pub fn with_tasks(&self, tasks: impl IntoIterator<Item = Task>) -> Result<Analyzer, Error> {
        let mut tasks: Vec<Task> = tasks.into_iter().collect();
        tasks.sort();
        tasks.dedup();
        if tasks.is_empty() {
            return Err(Error::NoTasks);
        }
        if let Some(&missing) = tasks.iter().find(|t| !self.tasks.contains(t)) {
            return Err(Error::TaskNotLoaded {
                task: missing,
                loaded: self.tasks.clone(),
            });
        }
        let mut view = self.clone();
        let keep = |t: Task| tasks.contains(&t);
        if !keep(Task::Asr) {
            view.models.transcriber = None;
        }
        if !keep(Task::Diarize) {
            view.models.diarizer = None;
        }
        if !keep(Task::Shots) {
            view.models.shots = None;
        }
        // The VAD stays for every audio task: the planner cuts parts in its pauses.
        if !(keep(Task::Vad) || keep(Task::Asr) || keep(Task::Diarize)) {
            view.models.vad = None;
        }
        view.tasks = tasks;
        Ok(view)
    }

    /// The transcription options in use.
    pub fn transcribe_options(&self) -> &TranscribeOptions {
        &self.transcribe
    }

    /// This analyzer transcribing with `options` (checked here). Shares the weights.
    pub fn with_transcribe_options(&self, options: TranscribeOptions) -> Result<Analyzer, Error> {
        options.validate()?;
        let mut view = self.clone();
        view.transcribe = options;
        Ok(view)
    }

    /// The diarization options in use (None without the diarize task).
    pub fn diarize_options(&self) -> Option<&DiarizeOptions> {
        self.models.diarizer.as_ref().map(Diarizer::options)
    }

    /// This analyzer diarizing with `options` (checked here; it must have loaded the
    /// diarize task). Shares the weights.
    pub fn with_diarize_options(&self, options: DiarizeOptions) -> Result<Analyzer, Error> {
        let Some(diarizer) = &self.models.diarizer else {
            return Err(Error::TaskNotLoaded {
                task: Task::Diarize,
                loaded: self.tasks.clone(),
            });
        };
        let mut view = self.clone();
        view.models.diarizer = Some(diarizer.with_options(options)?);
        Ok(view)
    }

    /// This analyzer using at most `threads` CPU threads per call (at least 1; default
    /// every thread of the process): a service running several calls at once gives each
    /// its share instead of letting them all contend for every core.
    pub fn with_threads(&self, threads: usize) -> Analyzer {
        let mut view = self.clone();
        view.threads = Some(threads.max(1));
        view
    }

    /// The CPU threads one call uses.
    pub(crate) fn call_threads(&self) -> usize {
        self.threads.unwrap_or_else(mica_core::device::threads)
    }

    /// Analyses `input` with every task.
    pub fn analyze<'a>(&self, input: impl Into<Input<'a>>) -> Result<Analysis, Error> {
        self.analyze_with(input, &RunControl::default())
    }

    /// [`Analyzer::analyze`], reporting progress and stopping when `control`'s token is
    /// cancelled (then [`Error::Cancelled`]; nothing half-finished is returned).
    pub fn analyze_with<'a>(
        &self,
        input: impl Into<Input<'a>>,
        control: &RunControl,
    ) -> Result<Analysis, Error> {
        self.analyze_within(input.into(), control, self.call_threads())
    }

    /// [`Analyzer::analyze_with`] on at most `threads` CPU threads.
    pub(crate) fn analyze_within(
        &self,
        input: Input<'_>,
        control: &RunControl,
        threads: usize,
    ) -> Result<Analysis, Error> {
        let started = Instant::now();
        let mut analysis = match input {
            Input::Path(path) => self.analyze_path(path, control, threads)?,
            Input::Reader(mut reader) => {
                // The temporary file is removed when it drops, whatever happens below.
                let mut spool = tempfile::Builder::new().prefix("mica-input-").tempfile()?;
                std::io::copy(&mut reader, &mut spool)?;
                // Errors name the input as the caller gave it, not by the spool's path.
                let mut analysis =
                    self.analyze_path(spool.path(), control, threads)
                        .map_err(|e| match e {
                            Error::Media(m) => {
                                Error::Media(Box::new(m.renamed(spool.path(), BYTES_INPUT)))
                            }
                            e => e,
                        })?;
                analysis.media.source = "-".into();
                analysis
            }
            Input::Samples(samples) => self.analyze_samples(samples, control, threads)?,
        };
        analysis.timings.total = started.elapsed().as_secs_f64();
        Ok(analysis)
    }

    pub(crate) fn wants(&self, task: Task) -> bool {
        self.tasks.contains(&task)
    }

    pub(crate) fn wants_audio(&self) -> bool {
        self.wants(Task::Vad) || self.wants(Task::Asr) || self.wants(Task::Diarize)
    }

    fn analyze_samples(
        &self,
        samples: &[f32],
        control: &RunControl,
        threads: usize,
    ) -> Result<Analysis, Error> {
        let duration = samples.len() as f64 / f64::from(mica_media::SAMPLE_RATE);
        let mut analysis = Analysis {
            media: MediaInfo {
                source: "samples".into(),
                duration,
                audio: Some(mica_core::document::AudioInfo {
                    sample_rate: mica_media::SAMPLE_RATE,
                    channels: 1,
                }),
                video: None,
            },
            ..Analysis::default()
        };
        if self.wants(Task::Shots) {
            analysis
                .warnings
                .push("shots: samples have no pictures; shot detection did not run".into());
        }
        if self.wants_audio() {
            let chunks = samples.chunks(CHUNK_SAMPLES).map(Ok::<_, Error>);
            let audio = self.run_audio(
                chunks,
                Some(samples),
                duration,
                control,
                threads,
                &mut analysis,
            )?;
            self.put_audio(audio, &mut analysis);
        }
        Ok(analysis)
    }

    fn analyze_path(
        &self,
        path: &Path,
        control: &RunControl,
        threads: usize,
    ) -> Result<Analysis, Error> {
        let tools = Tools::from_env();
        let media = mica_media::describe(path, &tools)?;
        let duration = media.duration;
        let has_video = media.video.is_some();
        let has_audio = media.audio.is_some();
        let mut analysis = Analysis {
            media,
            ..Analysis::default()
        };
        let shots = self.wants(Task::Shots) && has_video;
        if self.wants(Task::Shots) && !has_video {
            analysis
                .warnings
                .push("shots: the input has no video stream; shot detection did not run".into());
        }
        if self.wants_audio() && !has_audio {
            analysis.warnings.push(
                "the input has no audio stream; voice activity, speech recognition and \
                 diarization did not run"
                    .into(),
            );
        }
        std::thread::scope(|s| -> Result<(), Error> {
            let shots = shots.then(|| {
                s.spawn(|| -> Result<_, Error> {
                    let t = Instant::now();
                    let list = self.detect_shots(path, duration, control)?;
                    Ok((list, t.elapsed().as_secs_f64()))
                })
            });
            let audio = if self.wants_audio() && has_audio {
                let mut stream = AudioStream::open_with(path, &AudioOptions::default())?;
                let chunks = std::iter::from_fn(|| match stream.next_chunk() {
                    Ok(Some(chunk)) => Some(Ok(chunk.samples)),
                    Ok(None) => None,
                    Err(e) => Some(Err(Error::from(e))),
                });
                let audio = self.run_audio(chunks, None, duration, control, threads, &mut analysis);
                let warnings = stream.warnings().iter().map(|w| format!("media: {w}"));
                analysis.warnings.extend(warnings);
                Some(audio)
            } else {
                None
            };
            // Wait for the shots whatever the audio gave, so no thread outlives the call.
            let shots = shots.map(|h| h.join().expect("the shot detection thread panicked"));
            if let Some(audio) = audio {
                self.put_audio(audio?, &mut analysis);
            }
            if let Some(shots) = shots {
                let (list, seconds) = shots?;
                analysis.timings.add("shots", seconds);
                let warnings = list.warnings.iter().map(|w| format!("video: {w}"));
                analysis.warnings.extend(warnings);
                analysis.shots = Some(list.to_shots());
            }
            Ok(())
        })?;
        Ok(analysis)
    }

    /// Shot detection over the video frames, reporting each frame and stopping on cancel.
    pub(crate) fn detect_shots(
        &self,
        path: &Path,
        duration: f64,
        control: &RunControl,
    ) -> Result<mica_scenes::ShotList, Error> {
        let detector = self.models.shots.as_ref().expect("shots asked for");
        let options = FrameOptions {
            constant_rate: self.shot_options.constant_rate,
            ..FrameOptions::new(48, 27)
        };
        let source = FrameSource::open(path, &options)?;
        let observer = |pts: f64| control.report(Stage::Shots, pts, duration).is_ok();
        match detector.detect_source_observed(source, path, &observer) {
            Err(mica_scenes::ScenesError::Cancelled) => Err(Error::Cancelled),
            other => Ok(other?),
        }
    }

    /// The split of a recording of `duration` seconds between the workers, on at most
    /// `threads` CPU threads.
    pub(crate) fn schedule(&self, duration: f64, threads: usize) -> Schedule {
        let threads = threads.max(1);
        let workers = match self.workers {
            0 if self.cpu => threads,
            // A GPU runs one part at a time; a second worker prepares the next meanwhile.
            0 => 2,
            n => n,
        };
        // On a GPU the threads only feed it: each worker keeps them all.
        let schedule = Schedule::new(
            duration,
            self.part_seconds,
            MIN_PART_SECONDS,
            workers,
            threads,
        );
        if self.cpu {
            schedule
        } else {
            Schedule {
                threads,
                ..schedule
            }
        }
    }

    /// Voice activity over the chunks as they come; the diarization's networks and Whisper
    /// over each part on the workers; the parts joined, the speakers clustered once.
    fn run_audio<C: AsRef<[f32]>>(
        &self,
        chunks: impl Iterator<Item = Result<C, Error>>,
        whole: Option<&[f32]>,
        duration: f64,
        control: &RunControl,
        threads: usize,
        analysis: &mut Analysis,
    ) -> Result<AudioResults, Error> {
        let outcome = self.run_parts(chunks, whole, duration, control, threads)?;
        analysis.timings.add("decode", outcome.decode_seconds);
        analysis.timings.add("vad", outcome.vad_seconds);
        self.join_parts(outcome.parts, outcome.samples, outcome.speech, analysis)
    }

    /// The parts' results joined into the recording's (`samples` long): transcripts
    /// stitched, speakers clustered once over every part; the cuts and the stage times
    /// into `analysis`.
    pub(crate) fn join_parts(
        &self,
        mut parts: Vec<PartResult>,
        samples: u64,
        speech: SpeechRegions,
        analysis: &mut Analysis,
    ) -> Result<AudioResults, Error> {
        parts.sort_by_key(|p| p.index);
        let rate = f64::from(mica_media::SAMPLE_RATE);
        let seconds = samples as f64 / rate;
        analysis.parts = parts
            .iter()
            .map(|p| TimeRange::new(p.start as f64 / rate, (p.start + p.samples) as f64 / rate))
            .collect();
        let transcript = match &self.models.transcriber {
            Some(transcriber) => {
                analysis
                    .timings
                    .add("asr", parts.iter().map(|p| p.asr_seconds).sum::<f64>());
                if parts.is_empty() {
                    // No samples: the transcript is what Whisper makes of nothing.
                    Some(transcriber.transcribe(&[], &self.transcribe)?)
                } else {
                    let pieces = parts.iter_mut().filter_map(|p| p.take_transcript());
                    Some(stitch(pieces.collect(), seconds))
                }
            }
            None => None,
        };
        let turns = match &self.models.diarizer {
            Some(diarizer) => {
                let t = Instant::now();
                let pieces = parts.iter_mut().filter_map(|p| p.diarized.take());
                let diarization = diarizer.merge(pieces.collect())?;
                let clustering = t.elapsed().as_secs_f64();
                let networks = parts.iter().map(|p| p.diarize_seconds).sum::<f64>();
                analysis.timings.add("diarize", networks + clustering);
                Some(diarization.turns)
            }
            None => None,
        };
        Ok(AudioResults {
            samples,
            speech: self.wants(Task::Vad).then_some(speech),
            transcript,
            turns,
        })
    }

    /// The audio results into the document, speakers attached to words and segments.
    pub(crate) fn put_audio(&self, audio: AudioResults, analysis: &mut Analysis) {
        let AudioResults {
            samples,
            speech,
            mut transcript,
            turns,
        } = audio;
        if samples == 0 {
            analysis
                .warnings
                .push("the audio stream holds no samples; nothing was heard".into());
        }
        if let (Some(transcript), Some(turns)) = (&mut transcript, &turns) {
            attach_speakers(transcript, turns, &AttachOptions::default());
        }
        analysis.speech = speech;
        analysis.transcript = transcript;
        analysis.speakers = turns;
    }
}

/// Shortest part the scheduler plans (seconds): shorter ones would cost more at their cuts
/// (a Whisper window and diarization windows without context) than a worker gains.
pub const MIN_PART_SECONDS: f64 = 30.0;

/// Samples handed to the streaming models at a time when the input is samples (1 s).
const CHUNK_SAMPLES: usize = 16_000;

/// How media errors name an input given as a reader of bytes.
const BYTES_INPUT: &str = "the media bytes";

impl Analyzer {
    /// Analyses many inputs in one call, sharing the CPU: as many inputs run at once as
    /// there are workers (default one per CPU thread), each on its share of the threads
    /// (more as the list runs out), so fifty short clips keep every core busy instead of
    /// queuing behind each other. `done` is called from the working threads as each input
    /// finishes, with the input's index and its result; a failed input does not stop the
    /// others. `control`'s token cancels every input; its progress and segment callbacks
    /// are not called (`done` is the progress of a batch).
    pub fn analyze_batch(
        &self,
        inputs: &[PathBuf],
        control: &RunControl,
        done: &(dyn Fn(usize, Result<Analysis, Error>) + Sync),
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let threads = self.call_threads();
        let lanes = match self.workers {
            0 if self.cpu => threads,
            0 => 2,
            n => n,
        }
        .clamp(1, inputs.len().max(1));
        let next = AtomicUsize::new(0);
        let running = AtomicUsize::new(0);
        let quiet = RunControl {
            progress: None,
            segments: None,
            cancel: control.cancel.clone(),
        };
        std::thread::scope(|s| {
            for _ in 0..lanes {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = inputs.get(i) else { break };
                        if control.cancel.is_cancelled() {
                            done(i, Err(Error::Cancelled));
                            continue;
                        }
                        // This input's share: the threads over the inputs running now.
                        let others = running.fetch_add(1, Ordering::Relaxed);
                        let active = (others + 1).max(lanes.min(inputs.len() - i + others));
                        let share = (threads / active.max(1)).max(1);
                        let result = self.analyze_within(Input::Path(path), &quiet, share);
                        running.fetch_sub(1, Ordering::Relaxed);
                        done(i, result);
                    }
                });
            }
        });
    }
}
