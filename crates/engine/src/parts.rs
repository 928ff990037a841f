//! The segment-parallel audio scheduler: one decode feeds the voice activity and the cut
//! planner; each part, cut in a pause, goes through a bounded queue to a pool of workers
//! that run the diarization's networks and Whisper on it; the parts are joined at the end.
//!
//! Memory stays flat whatever the input's length: the queue holds at most one part per
//! worker, each worker one part, and the decode side one part being filled.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mica_core::document::SpeechRegions;
use mica_core::time::TimeRange;
use mica_vad::{SampleRate, VadEvent};

use crate::Error;
use crate::analyzer::Analyzer;
use crate::control::{RunControl, Stage};
use crate::fanout::PartResult;
use crate::plan::Planner;
use crate::stitch::PartTranscript;

const SAMPLE_RATE: f64 = mica_media::SAMPLE_RATE as f64;

/// Seconds of audio a part may be cut short of (or past) its target to land in a pause:
/// a fifth of the target.
const REACH: f64 = 0.2;

/// One part of the recording, on its way to a worker.
pub(crate) struct Part<'a> {
    pub(crate) index: usize,
    /// First sample, in the recording.
    pub(crate) start: u64,
    /// Its samples (none when only the cuts are wanted).
    pub(crate) samples: Cow<'a, [f32]>,
}

/// How the recording is split and worked on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Target part length in samples.
    pub(crate) target: u64,
    /// Workers running at once.
    pub(crate) workers: usize,
    /// CPU threads each worker's kernels spread over.
    pub(crate) threads: usize,
}

impl Schedule {
    /// The split for `duration` seconds (0 when unknown): parts of `part_seconds`, or
    /// shorter (down to `min_part` seconds) so every worker gets one; CPU threads shared
    /// out between the workers that will have work.
    pub(crate) fn new(
        duration: f64,
        part_seconds: f64,
        min_part: f64,
        workers: usize,
        threads: usize,
    ) -> Schedule {
        let workers = workers.max(1);
        let (seconds, parts) = if duration > 0.0 {
            let seconds = (duration / workers as f64).clamp(min_part, part_seconds.max(min_part));
            let parts = (duration / seconds).round().max(1.0);
            // Evenly: the planner then leaves no short tail for a worker of its own.
            (duration / parts, parts as usize)
        } else {
            (part_seconds, workers)
        };
        let busy = workers.min(parts);
        Schedule {
            target: (seconds * SAMPLE_RATE) as u64,
            workers: busy,
            threads: (threads / busy).max(1),
        }
    }
}

/// What the decode side gathered beside the parts.
pub(crate) struct Decoded {
    pub(crate) samples: u64,
    pub(crate) speech: Vec<TimeRange>,
    pub(crate) decode_seconds: f64,
    pub(crate) vad_seconds: f64,
}

/// Progress of Whisper over all parts: seconds of finished parts plus each running one's.
pub(crate) struct AsrProgress {
    pub(crate) finished: f64,
    pub(crate) running: Vec<f64>,
}

/// Everything the audio tasks made of the recording.
pub(crate) struct AudioOutcome {
    pub(crate) samples: u64,
    pub(crate) speech: SpeechRegions,
    pub(crate) parts: Vec<PartResult>,
    pub(crate) decode_seconds: f64,
    pub(crate) vad_seconds: f64,
}

impl Analyzer {
    /// Decodes `chunks` once (or reads `whole` in place when the caller holds every
    /// sample), cutting parts for the worker pool as the voice activity finds pauses.
    pub(crate) fn run_parts<'w, C: AsRef<[f32]>>(
        &self,
        chunks: impl Iterator<Item = Result<C, Error>>,
        whole: Option<&'w [f32]>,
        duration: f64,
        control: &RunControl,
        threads: usize,
    ) -> Result<AudioOutcome, Error> {
        let schedule = self.schedule(duration, threads);
        tracing::debug!(
            "parts of {:.0} s, {} workers x {} threads",
            schedule.target as f64 / SAMPLE_RATE,
            schedule.workers,
            schedule.threads
        );
        let (tx, rx) = sync_channel::<Part<'w>>(schedule.workers);
        let rx = Mutex::new(rx);
        let abort = AtomicBool::new(false);
        let progress = Mutex::new(AsrProgress {
            finished: 0.0,
            running: vec![0.0; schedule.workers],
        });
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..schedule.workers)
                .map(|w| {
                    let (rx, abort, progress) = (&rx, &abort, &progress);
                    s.spawn(move || {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(schedule.threads)
                            .thread_name(move |i| format!("mica-worker-{w}-{i}"))
                            .build()
                            .map_err(|e| {
                                Error::Device(mica_core::device::DeviceError::Threads {
                                    requested: schedule.threads,
                                    reason: format!("a worker's thread pool: {e}"),
                                })
                            })?;
                        pool.install(|| self.work(w, rx, abort, progress, duration, control))
                    })
                })
                .collect();
            // Workers that failed keep draining the queue, so a send never blocks for ever.
            let mut sink = |part: Part<'w>| tx.send(part).map_err(|_| Error::Cancelled);
            let decoded = self.feed(
                chunks, whole, true, &schedule, &mut sink, &abort, duration, control,
            );
            drop(tx);
            if decoded.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            let mut parts = Vec::new();
            let mut errors = Vec::new();
            for h in handles {
                match h.join().expect("an analysis worker panicked") {
                    Ok(done) => parts.extend(done),
                    Err(e) => errors.push(e),
                }
            }
            // One failure stops every side; the others then report `Cancelled`, an echo.
            // The cause is the error that is not one (or `Cancelled` when the caller asked).
            let decoded = match decoded {
                Err(e) if !matches!(e, Error::Cancelled) => return Err(e),
                other => other,
            };
            if let Some(i) = errors.iter().position(|e| !matches!(e, Error::Cancelled)) {
                return Err(errors.swap_remove(i));
            }
            let decoded = decoded?;
            if let Some(e) = errors.pop() {
                return Err(e);
            }
            parts.sort_by_key(|p| p.index);
            Ok(AudioOutcome {
                samples: decoded.samples,
                speech: decoded.speech,
                parts,
                decode_seconds: decoded.decode_seconds,
                vad_seconds: decoded.vad_seconds,
            })
        })
    }

    /// The decode side: every chunk through the voice activity and the planner; each part,
    /// once cut, to `sink` (the workers' queue, which blocks while they are busy). Parts carry
    /// their samples when `keep` is set (read in place from `whole` when given).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn feed<'w, C: AsRef<[f32]>>(
        &self,
        chunks: impl Iterator<Item = Result<C, Error>>,
        whole: Option<&'w [f32]>,
        keep: bool,
        schedule: &Schedule,
        sink: &mut dyn FnMut(Part<'w>) -> Result<(), Error>,
        abort: &AtomicBool,
        duration: f64,
        control: &RunControl,
    ) -> Result<Decoded, Error> {
        let started = Instant::now();
        let vad = self.models.vad.as_ref().expect("audio tasks load the VAD");
        let mut stream = vad.stream(SampleRate::Hz16000)?;
        let known = (duration > 0.0).then_some((duration * SAMPLE_RATE) as u64);
        let reach = (schedule.target as f64 * REACH) as u64;
        let mut planner = Planner::new(schedule.target, reach, known);
        let mut speech = Vec::new();
        let mut vad_seconds = 0.0;
        // The part being filled: its start, and (when decoding) its samples so far.
        let mut part_start = 0u64;
        let mut buf: Vec<f32> = Vec::new();
        let mut total = 0u64;
        let mut index = 0usize;
        // Time spent waiting for a free worker is backpressure, not decoding.
        let mut waited = 0.0;
        let mut send = |start: u64, end: u64, buf: &mut Vec<f32>| -> Result<(), Error> {
            let samples = match whole {
                _ if !keep => Cow::Borrowed(&[][..]),
                Some(all) => Cow::Borrowed(&all[start as usize..end as usize]),
                None => {
                    let rest = buf.split_off((end - start) as usize);
                    Cow::Owned(std::mem::replace(buf, rest))
                }
            };
            let part = Part {
                index,
                start,
                samples,
            };
            index += 1;
            let t = Instant::now();
            let sent = sink(part);
            waited += t.elapsed().as_secs_f64();
            sent
        };
        control.report(Stage::Decode, 0.0, duration)?;
        for chunk in chunks {
            let chunk = chunk?;
            let chunk = chunk.as_ref();
            if abort.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            total += chunk.len() as u64;
            if keep && whole.is_none() {
                buf.extend_from_slice(chunk);
            }
            let t = Instant::now();
            let out = stream.push(chunk)?;
            speech.extend(regions(&out.events));
            planner.push(out.first_window, &out.probabilities);
            vad_seconds += t.elapsed().as_secs_f64();
            while let Some(cut) = planner.next_cut() {
                send(part_start, cut, &mut buf)?;
                part_start = cut;
            }
            control.report(Stage::Decode, total as f64 / SAMPLE_RATE, duration)?;
        }
        let t = Instant::now();
        speech.extend(regions(&stream.finish()?.events));
        vad_seconds += t.elapsed().as_secs_f64();
        if total > part_start {
            send(part_start, total, &mut buf)?;
        }
        let busy = started.elapsed().as_secs_f64() - vad_seconds - waited;
        Ok(Decoded {
            samples: total,
            speech,
            decode_seconds: busy.max(0.0),
            vad_seconds,
        })
    }

    /// One worker: parts from the queue until it closes. After a failure (its own or
    /// another's) it drains the queue without working, so the decode side never waits on it.
    fn work(
        &self,
        worker: usize,
        rx: &Mutex<Receiver<Part<'_>>>,
        abort: &AtomicBool,
        progress: &Mutex<AsrProgress>,
        duration: f64,
        control: &RunControl,
    ) -> Result<Vec<PartResult>, Error> {
        let mut done = Vec::new();
        let mut failure = None;
        loop {
            let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(part) = next else { break };
            if failure.is_some() || abort.load(Ordering::Relaxed) {
                failure.get_or_insert(Error::Cancelled);
                continue;
            }
            match self.analyze_part(&part, worker, abort, progress, duration, control) {
                Ok(out) => done.push(out),
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// The diarization's networks and Whisper over one part, side by side on the
    /// worker's threads.
    pub(crate) fn analyze_part(
        &self,
        part: &Part<'_>,
        worker: usize,
        abort: &AtomicBool,
        progress: &Mutex<AsrProgress>,
        duration: f64,
        control: &RunControl,
    ) -> Result<PartResult, Error> {
        let samples: &[f32] = &part.samples;
        let seconds = samples.len() as f64 / SAMPLE_RATE;
        let diarize = || -> Result<_, Error> {
            let Some(diarizer) = &self.models.diarizer else {
                return Ok((None, 0.0));
            };
            let t = Instant::now();
            let mut session = diarizer.session_at(part.start);
            session.push(samples)?;
            Ok((Some(session.finish_part()?), t.elapsed().as_secs_f64()))
        };
        let asr = || -> Result<_, Error> {
            let Some(transcriber) = &self.models.transcriber else {
                return Ok((None, 0.0));
            };
            let t = Instant::now();
            let observer = |done: f64| {
                let total = {
                    let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
                    p.running[worker] = done;
                    p.finished + p.running.iter().sum::<f64>()
                };
                !abort.load(Ordering::Relaxed)
                    && control.report(Stage::Asr, total, duration).is_ok()
            };
            // Segments go out on the input's timeline as each window is decoded.
            let offset = part.start as f64 / SAMPLE_RATE;
            let on_segment = |segment: &mica_core::document::Segment| {
                if let Some(sink) = &control.segments {
                    let mut segment = segment.clone();
                    segment.start += offset;
                    segment.end += offset;
                    for word in &mut segment.words {
                        word.start += offset;
                        word.end += offset;
                    }
                    sink(&segment);
                }
            };
            let transcript = transcriber
                .transcribe_streamed(samples, &self.transcribe, &observer, &on_segment)
                .map_err(|e| match e {
                    mica_asr::AsrError::Cancelled => Error::Cancelled,
                    e => e.into(),
                })?;
            let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
            p.running[worker] = 0.0;
            p.finished += seconds;
            Ok((Some(transcript), t.elapsed().as_secs_f64()))
        };
        let (diarized, transcript) = rayon::join(diarize, asr);
        let ((diarized, diarize_seconds), (transcript, asr_seconds)) = (diarized?, transcript?);
        Ok(PartResult {
            plan: String::new(),
            index: part.index,
            start: part.start,
            samples: samples.len() as u64,
            transcript,
            diarized,
            shots: None,
            warnings: Vec::new(),
            asr_seconds,
            diarize_seconds,
            shots_seconds: 0.0,
        })
    }
}

impl PartResult {
    /// The part's transcript, for [`crate::stitch::stitch`].
    pub(crate) fn take_transcript(&mut self) -> Option<PartTranscript> {
        self.transcript.take().map(|transcript| PartTranscript {
            start: self.start as f64 / SAMPLE_RATE,
            duration: self.samples as f64 / SAMPLE_RATE,
            transcript,
        })
    }
}

/// The finished speech regions among a stream's events.
fn regions(events: &[VadEvent]) -> impl Iterator<Item = TimeRange> + '_ {
    events.iter().filter_map(|e| match e {
        VadEvent::Segment(s) => Some(s.range()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_gives_every_worker_a_part_and_shares_the_threads() {
        // 10 minutes, 2 workers, parts up to 300 s: two parts of 300 s, a thread each.
        let s = Schedule::new(600.0, 300.0, 30.0, 2, 2);
        assert_eq!((s.target, s.workers, s.threads), (300 * 16_000, 2, 1));
        // An hour: parts of 300 s.
        let s = Schedule::new(3600.0, 300.0, 30.0, 2, 2);
        assert_eq!(s.target, 300 * 16_000);
        // 40 s: one part of 40 s (not two of 20 s), so one worker with both threads.
        let s = Schedule::new(40.0, 300.0, 30.0, 2, 2);
        assert_eq!((s.target, s.workers, s.threads), (40 * 16_000, 1, 2));
        // 1000 s: three parts of 333 s rather than three of 300 and a short tail.
        let s = Schedule::new(1000.0, 300.0, 30.0, 2, 2);
        assert_eq!(s.target, (1000.0 / 3.0 * 16_000.0) as u64);
        // 70 s: two parts of 35 s.
        let s = Schedule::new(70.0, 300.0, 30.0, 2, 2);
        assert_eq!((s.target, s.workers, s.threads), (35 * 16_000, 2, 1));
        // Unknown length: parts of the target, every worker.
        let s = Schedule::new(0.0, 120.0, 30.0, 4, 16);
        assert_eq!((s.target, s.workers, s.threads), (120 * 16_000, 4, 4));
    }
}
