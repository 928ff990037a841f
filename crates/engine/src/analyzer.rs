//! [`Analyzer`]: the models loaded once, and one analysis of an input through all of them.
//!
//! The audio is decoded once. Voice activity and diarization consume it chunk by chunk as
//! it is decoded; Whisper runs on the whole recording once it is decoded (its sequential
//! mode needs the global mel maximum), while the diarization finishes beside it. Shot
//! detection decodes the video frames in its own thread from the start.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mica_asr::{TranscribeOptions, Transcriber};
use mica_core::document::{Analysis, MediaInfo};
use mica_diarize::{AttachOptions, Diarizer, attach_speakers};
use mica_media::{AudioOptions, AudioStream, FrameOptions, FrameSource, Tools};
use mica_scenes::{ShotDetector, ShotOptions};
use mica_vad::{SampleRate, StreamOutput, Vad, VadEvent};

use crate::Error;
use crate::builder::Task;
use crate::control::{RunControl, Stage};

/// The loaded models of the tasks asked for.
pub(crate) struct Models {
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
/// `Arc` between threads or requests; each call keeps its own state.
pub struct Analyzer {
    models: Models,
    tasks: Vec<Task>,
    transcribe: TranscribeOptions,
    shot_options: ShotOptions,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

/// The audio side's results.
#[derive(Default)]
struct AudioResults {
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

    pub(crate) fn new(
        models: Models,
        tasks: Vec<Task>,
        transcribe: TranscribeOptions,
        shot_options: ShotOptions,
    ) -> Analyzer {
        Analyzer {
            models,
            tasks,
            transcribe,
            shot_options,
        }
    }

    /// The tasks this analyzer runs.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
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
        let started = Instant::now();
        let mut analysis = match input.into() {
            Input::Path(path) => self.analyze_path(path, control)?,
            Input::Reader(mut reader) => {
                // The temporary file is removed when it drops, whatever happens below.
                let mut spool = tempfile::Builder::new().prefix("mica-input-").tempfile()?;
                std::io::copy(&mut reader, &mut spool)?;
                let mut analysis = self.analyze_path(spool.path(), control)?;
                analysis.media.source = "-".into();
                analysis
            }
            Input::Samples(samples) => self.analyze_samples(samples, control)?,
        };
        analysis.timings.total = started.elapsed().as_secs_f64();
        Ok(analysis)
    }

    fn wants(&self, task: Task) -> bool {
        self.tasks.contains(&task)
    }

    fn wants_audio(&self) -> bool {
        self.wants(Task::Vad) || self.wants(Task::Asr) || self.wants(Task::Diarize)
    }

    fn analyze_samples(&self, samples: &[f32], control: &RunControl) -> Result<Analysis, Error> {
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
            let audio = self.run_audio(chunks, Some(samples), duration, control, &mut analysis)?;
            self.put_audio(audio, &mut analysis);
        }
        Ok(analysis)
    }

    fn analyze_path(&self, path: &Path, control: &RunControl) -> Result<Analysis, Error> {
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
                let audio = self.run_audio(chunks, None, duration, control, &mut analysis);
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
    fn detect_shots(
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

    /// Voice activity and diarization over the chunks as they come, then Whisper over the
    /// whole recording (`whole` when the caller holds it already, else the chunks kept)
    /// while the diarization finishes.
    fn run_audio<C: AsRef<[f32]>>(
        &self,
        chunks: impl Iterator<Item = Result<C, Error>>,
        whole: Option<&[f32]>,
        duration: f64,
        control: &RunControl,
        analysis: &mut Analysis,
    ) -> Result<AudioResults, Error> {
        let decode_started = Instant::now();
        let mut vad = match &self.models.vad {
            Some(v) => Some(v.stream(SampleRate::Hz16000)?),
            None => None,
        };
        let mut speech = Vec::new();
        let mut diarize = self.models.diarizer.as_ref().map(Diarizer::session);
        let keep = self.models.transcriber.is_some() && whole.is_none();
        let mut samples: Vec<f32> = Vec::new();
        let mut total = 0u64;
        let (mut vad_seconds, mut diarize_seconds) = (0.0, 0.0);
        control.report(Stage::Decode, 0.0, duration)?;
        for chunk in chunks {
            let chunk = chunk?;
            let chunk = chunk.as_ref();
            total += chunk.len() as u64;
            if let Some(stream) = &mut vad {
                let t = Instant::now();
                speech.extend(regions(stream.push(chunk)?));
                vad_seconds += t.elapsed().as_secs_f64();
            }
            if let Some(session) = &mut diarize {
                let t = Instant::now();
                session.push(chunk)?;
                diarize_seconds += t.elapsed().as_secs_f64();
            }
            if keep {
                samples.extend_from_slice(chunk);
            }
            let done = total as f64 / f64::from(mica_media::SAMPLE_RATE);
            control.report(Stage::Decode, done, duration)?;
        }
        if let Some(stream) = &mut vad {
            let t = Instant::now();
            speech.extend(regions(stream.finish()?));
            vad_seconds += t.elapsed().as_secs_f64();
        }
        let decode_seconds = decode_started.elapsed().as_secs_f64() - vad_seconds - diarize_seconds;
        analysis.timings.add("decode", decode_seconds.max(0.0));
        if vad.is_some() {
            analysis.timings.add("vad", vad_seconds);
        }
        let seconds = total as f64 / f64::from(mica_media::SAMPLE_RATE);
        let (transcript, turns) = std::thread::scope(|s| {
            let diarized = diarize.map(|session| {
                s.spawn(move || {
                    let t = Instant::now();
                    session.finish().map(|d| (d, t.elapsed().as_secs_f64()))
                })
            });
            let transcript = self.models.transcriber.as_ref().map(|t| {
                let started = Instant::now();
                let observer = |done: f64| control.report(Stage::Asr, done, seconds).is_ok();
                let audio = whole.unwrap_or(&samples);
                let result = t.transcribe_observed(audio, &self.transcribe, &observer);
                (result, started.elapsed().as_secs_f64())
            });
            let diarized = diarized.map(|h| h.join().expect("the diarization thread panicked"));
            (transcript, diarized)
        });
        let transcript = match transcript {
            Some((Err(mica_asr::AsrError::Cancelled), _)) => return Err(Error::Cancelled),
            Some((result, asr_seconds)) => {
                analysis.timings.add("asr", asr_seconds);
                Some(result?)
            }
            None => None,
        };
        let turns = match turns {
            Some(result) => {
                let (d, finish_seconds) = result?;
                analysis
                    .timings
                    .add("diarize", diarize_seconds + finish_seconds);
                Some(d.turns)
            }
            None => None,
        };
        Ok(AudioResults {
            samples: total,
            speech: vad.is_some().then_some(speech),
            transcript,
            turns,
        })
    }

    /// The audio results into the document, speakers attached to words and segments.
    fn put_audio(&self, audio: AudioResults, analysis: &mut Analysis) {
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

/// Samples handed to the streaming models at a time when the input is samples (1 s).
const CHUNK_SAMPLES: usize = 16_000;

/// The finished speech regions among a stream output's events.
fn regions(out: &StreamOutput) -> impl Iterator<Item = mica_core::time::TimeRange> + '_ {
    out.events.iter().filter_map(|e| match e {
        VadEvent::Segment(s) => Some(s.range()),
        _ => None,
    })
}
