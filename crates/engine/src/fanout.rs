//! The fan-out contract: [`Analyzer::plan`] cuts a recording into parts once,
//! [`Analyzer::run_part`] analyses one part anywhere (another process, machine or job
//! index), [`Analyzer::merge`] joins the parts' results into the document `analyze` gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mica_core::document::{Analysis, MediaInfo, Shots, SpeechRegions, Transcript};
use mica_diarize::DiarizedPart;
use mica_media::{AudioOptions, AudioStream, Tools};
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, MIN_PART_SECONDS};
use crate::builder::Task;
use crate::control::RunControl;
use crate::parts::{AsrProgress, Part, Schedule};
use crate::{Error, Stage};

/// How many parts [`Analyzer::plan`] cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartSize {
    /// About this many parts of equal length (fewer when they would be shorter than
    /// [`MIN_PART_SECONDS`]).
    Count(usize),
    /// Parts of about this many seconds (at least [`MIN_PART_SECONDS`]).
    Seconds(f64),
}

/// What one index of a plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// The audio tasks over samples `start..end` (16 kHz).
    Audio,
    /// Shot detection over the whole video (its frames are not cut).
    Shots,
}

/// One index of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPart {
    /// Its index: what `run-part --index` takes.
    pub index: usize,
    /// What it runs.
    pub kind: PartKind,
    /// First sample (16 kHz) of an audio part.
    pub start: u64,
    /// End sample (exclusive) of an audio part.
    pub end: u64,
}

/// A recording cut into parts, to run anywhere and [`Analyzer::merge`] after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Names this plan: every part's result carries it, and merge takes no other plan's.
    pub id: String,
    /// The input, as the planner opened it.
    pub input: PathBuf,
    /// The input's size in bytes when planned: a part refuses a file that changed since.
    pub input_bytes: u64,
    /// The input, as probed.
    pub media: MediaInfo,
    /// The tasks of the analyzer that planned; the one that runs a part must have the same.
    pub tasks: Vec<Task>,
    /// Samples of audio (16 kHz).
    pub samples: u64,
    /// Every index to run, audio parts back to back first.
    pub parts: Vec<PlannedPart>,
    /// Voice activity over the whole recording (the planner cuts in its pauses).
    pub speech: SpeechRegions,
    /// What the planning found worth telling (media damage, a task that cannot run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The caller's own settings, kept for the runs of the parts (the CLI keeps its model
    /// options here so every part uses the same).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

/// What one index of a plan produced: the part's transcript and unclustered speaker
/// windows (with their embeddings, for one clustering over all parts), or the shots.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartResult {
    /// The plan's id.
    pub plan: String,
    /// The part's index in the plan.
    pub index: usize,
    /// First sample of an audio part.
    pub start: u64,
    /// Samples in an audio part.
    pub samples: u64,
    /// The part's transcript, times relative to the part's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Transcript>,
    /// The part's speaker windows, not yet clustered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diarized: Option<DiarizedPart>,
    /// The shots, for the shots index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shots: Option<Shots>,
    /// What running the part found worth telling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Seconds of speech recognition.
    #[serde(default)]
    pub asr_seconds: f64,
    /// Seconds of the diarization's networks.
    #[serde(default)]
    pub diarize_seconds: f64,
    /// Seconds of shot detection.
    #[serde(default)]
    pub shots_seconds: f64,
}

impl Analyzer {
    /// Decodes `path`'s audio once through the voice activity and cuts it into parts in its
    /// pauses. No model but the VAD runs.
    pub fn plan(&self, path: &Path, size: PartSize) -> Result<Plan, Error> {
        let media = mica_media::describe(path, &Tools::from_env())?;
        let input_bytes = std::fs::metadata(path)?.len();
        let duration = media.duration;
        let seconds = match size {
            PartSize::Count(0) => {
                return Err(Error::Options("a plan needs at least one part".into()));
            }
            PartSize::Count(n) => (duration / n as f64).max(MIN_PART_SECONDS),
            PartSize::Seconds(s) if s.is_finite() && s >= MIN_PART_SECONDS => s,
            PartSize::Seconds(s) => {
                return Err(Error::Options(format!(
                    "the part length must be at least {MIN_PART_SECONDS} seconds, not {s}"
                )));
            }
        };
        // Evened out as `analyze` does (no short tail part), so a plan of parts of S
        // seconds cuts where `analyze` with one worker and parts of S seconds cuts.
        let seconds = if duration > 0.0 {
            duration / (duration / seconds).round().max(1.0)
        } else {
            seconds
        };
        let mut warnings = Vec::new();
        let mut parts = Vec::new();
        let (mut samples, mut speech) = (0, Vec::new());
        if self.wants_audio() && media.audio.is_some() {
            let schedule = Schedule {
                target: (seconds * f64::from(mica_media::SAMPLE_RATE)) as u64,
                workers: 1,
                threads: 1,
            };
            let mut stream = AudioStream::open_with(path, &AudioOptions::default())?;
            let chunks = std::iter::from_fn(|| match stream.next_chunk() {
                Ok(Some(chunk)) => Some(Ok(chunk.samples)),
                Ok(None) => None,
                Err(e) => Some(Err(Error::from(e))),
            });
            let mut sink = |part: Part<'_>| {
                parts.push((part.start, part.index));
                Ok(())
            };
            let abort = AtomicBool::new(false);
            let control = RunControl::default();
            let decoded = self.feed(
                chunks, None, false, &schedule, &mut sink, &abort, duration, &control,
            )?;
            warnings.extend(stream.warnings().iter().map(|w| format!("media: {w}")));
            samples = decoded.samples;
            speech = decoded.speech;
        } else if self.wants_audio() {
            warnings.push(
                "the input has no audio stream; voice activity, speech recognition and \
                 diarization did not run"
                    .into(),
            );
        }
        let mut planned: Vec<PlannedPart> = parts
            .iter()
            .enumerate()
            .map(|(i, &(start, _))| PlannedPart {
                index: i,
                kind: PartKind::Audio,
                start,
                end: parts.get(i + 1).map_or(samples, |p| p.0),
            })
            .collect();
        if self.wants(Task::Shots) {
            if media.video.is_some() {
                planned.push(PlannedPart {
                    index: planned.len(),
                    kind: PartKind::Shots,
                    start: 0,
                    end: 0,
                });
            } else {
                warnings.push(
                    "shots: the input has no video stream; shot detection did not run".into(),
                );
            }
        }
        Ok(Plan {
            id: plan_id(path, input_bytes),
            input: path.to_path_buf(),
            input_bytes,
            media,
            tasks: self.tasks().to_vec(),
            samples,
            parts: planned,
            speech,
            warnings,
            settings: BTreeMap::new(),
        })
    }

    /// Runs index `index` of `plan` on this analyzer (which must run the plan's tasks),
    /// decoding only as far as the part's end.
    pub fn run_part(&self, plan: &Plan, index: usize) -> Result<PartResult, Error> {
        self.run_part_with(plan, index, &RunControl::default())
    }

    /// [`Analyzer::run_part`] with progress and cancellation.
    pub fn run_part_with(
        &self,
        plan: &Plan,
        index: usize,
        control: &RunControl,
    ) -> Result<PartResult, Error> {
        if self.tasks() != plan.tasks.as_slice() {
            return Err(Error::Plan(format!(
                "the plan's tasks are {}, this analyzer's {}",
                names(&plan.tasks),
                names(self.tasks())
            )));
        }
        let Some(planned) = plan.parts.get(index) else {
            return Err(Error::Plan(format!(
                "the plan has parts 0 to {}, not {index}",
                plan.parts.len().saturating_sub(1)
            )));
        };
        let bytes = std::fs::metadata(&plan.input)?.len();
        if bytes != plan.input_bytes {
            return Err(Error::Plan(format!(
                "{} changed since it was planned ({} bytes then, {bytes} now)",
                plan.input.display(),
                plan.input_bytes
            )));
        }
        let mut result = match planned.kind {
            PartKind::Shots => {
                let t = Instant::now();
                let list = self.detect_shots(&plan.input, plan.media.duration, control)?;
                PartResult {
                    shots: Some(list.to_shots()),
                    warnings: list
                        .warnings
                        .iter()
                        .map(|w| format!("video: {w}"))
                        .collect(),
                    shots_seconds: t.elapsed().as_secs_f64(),
                    ..PartResult::default()
                }
            }
            PartKind::Audio => self.run_audio_part(plan, planned, control)?,
        };
        result.plan = plan.id.clone();
        result.index = index;
        Ok(result)
    }

    /// Decodes samples `planned.start..planned.end` and runs the audio tasks on them.
    fn run_audio_part(
        &self,
        plan: &Plan,
        planned: &PlannedPart,
        control: &RunControl,
    ) -> Result<PartResult, Error> {
        let mut stream = AudioStream::open_with(&plan.input, &AudioOptions::default())?;
        let (start, end) = (planned.start, planned.end);
        let mut samples = Vec::with_capacity((end - start) as usize);
        let mut at = 0u64;
        let rate = f64::from(mica_media::SAMPLE_RATE);
        while at < end {
            let Some(chunk) = stream.next_chunk()? else {
                break;
            };
            let n = chunk.samples.len() as u64;
            let from = start.saturating_sub(at).min(n) as usize;
            let to = (end - at).min(n) as usize;
            samples.extend_from_slice(&chunk.samples[from..to.max(from)]);
            at += n;
            control.report(Stage::Decode, at.min(end) as f64 / rate, end as f64 / rate)?;
        }
        if (samples.len() as u64) < end - start {
            return Err(Error::Plan(format!(
                "{} holds fewer samples than when it was planned (part {} ends at {end}, \
                 the audio at {at})",
                plan.input.display(),
                planned.index
            )));
        }
        let part = Part {
            index: planned.index,
            start,
            samples: samples.into(),
        };
        let abort = AtomicBool::new(false);
        let progress = Mutex::new(AsrProgress {
            finished: 0.0,
            running: vec![0.0],
        });
        // On this analyzer's threads (see `Analyzer::with_threads`), not the whole process's:
        // a fan-out runs one part per CPU side by side.
        let threads = self.call_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mica-part-{i}"))
            .build()
            .map_err(|e| {
                Error::Device(mica_core::device::DeviceError::Threads {
                    requested: threads,
                    reason: format!("a part's thread pool: {e}"),
                })
            })?;
        let mut result = pool.install(|| {
            self.analyze_part(&part, 0, &abort, &progress, plan.media.duration, control)
        })?;
        result.warnings = stream
            .warnings()
            .iter()
            .map(|w| format!("media: {w}"))
            .collect();
        Ok(result)
    }

    /// Joins every part's result of `plan` into the document: the same as `analyze` on a
    /// recording cut the same way. Refuses a missing part, a duplicate, or a part of another
    /// plan, naming its index.
    pub fn merge(&self, plan: &Plan, results: Vec<PartResult>) -> Result<Analysis, Error> {
        let started = Instant::now();
        if self.tasks() != plan.tasks.as_slice() {
            return Err(Error::Plan(format!(
                "the plan's tasks are {}, this analyzer's {}",
                names(&plan.tasks),
                names(self.tasks())
            )));
        }
        let mut slots: Vec<Option<PartResult>> = vec![None; plan.parts.len()];
        for r in results {
            if r.plan != plan.id {
                return Err(Error::Plan(format!(
                    "part {} belongs to plan {}, not to this plan ({})",
                    r.index, r.plan, plan.id
                )));
            }
            let Some(slot) = slots.get_mut(r.index) else {
                return Err(Error::Plan(format!(
                    "part {} is not in the plan (it has parts 0 to {})",
                    r.index,
                    plan.parts.len().saturating_sub(1)
                )));
            };
            if slot.is_some() {
                return Err(Error::Plan(format!("part {} is given twice", r.index)));
            }
            let planned = &plan.parts[r.index];
            if planned.kind == PartKind::Audio
                && (r.start != planned.start || r.start + r.samples != planned.end)
            {
                return Err(Error::Plan(format!(
                    "part {} covers samples {}..{}, the plan {}..{}",
                    r.index,
                    r.start,
                    r.start + r.samples,
                    planned.start,
                    planned.end
                )));
            }
            *slot = Some(r);
        }
        let missing: Vec<String> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| i.to_string())
            .collect();
        match missing.len() {
            0 => {}
            1 => return Err(Error::Plan(format!("part {} is missing", missing[0]))),
            _ => {
                let list = missing.join(", ");
                return Err(Error::Plan(format!("parts {list} are missing")));
            }
        }
        let mut analysis = Analysis {
            media: plan.media.clone(),
            warnings: plan.warnings.clone(),
            ..Analysis::default()
        };
        let mut audio = Vec::new();
        for r in slots.into_iter().flatten() {
            analysis.warnings.extend(r.warnings.iter().cloned());
            match plan.parts[r.index].kind {
                PartKind::Shots => {
                    analysis.timings.add("shots", r.shots_seconds);
                    analysis.shots = r.shots;
                }
                PartKind::Audio => audio.push(r),
            }
        }
        if self.wants_audio() && plan.media.audio.is_some() {
            let joined =
                self.join_parts(audio, plan.samples, plan.speech.clone(), &mut analysis)?;
            self.put_audio(joined, &mut analysis);
        }
        analysis
            .timings
            .add("merge", started.elapsed().as_secs_f64());
        Ok(analysis)
    }
}

/// `vad, asr` for messages.
fn names(tasks: &[Task]) -> String {
    let names: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
    names.join(", ")
}

/// An id no other plan shares: the input, its size, the time and the process, hashed.
fn plan_id(path: &Path, bytes: u64) -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    path.hash(&mut h);
    bytes.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{:016x}", h.finish())
}
