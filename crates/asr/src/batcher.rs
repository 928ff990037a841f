//! [`WindowBatcher`]: the Whisper windows of concurrent transcriptions (the requests of a
//! server, the parts of several files) encoded and decoded together.
//!
//! A window's decoding is dominated by reading the decoder's weights once per token
//! step, whatever the number of rows; batching the windows of several callers shares
//! those reads (and on a GPU, the launches). There is no batching thread: the first
//! caller to find a lead free leads a batch. It waits a moment for the other callers
//! that are transcribing to bring their windows, takes every waiting window that can
//! share its batch, runs the encoder and the first decoding attempt on all of them on
//! its own threads, and hands each caller its rows. Each caller then goes on alone:
//! temperature fallback (with its own sampler, so its text does not depend on who else
//! was in the batch), word timings and the seek.
//!
//! On a CPU as many batches run at once as there are threads, each on its leader's
//! threads (all of them for a lone request in a server; one each under load, where
//! independent single-threaded batches beat one batch split over the threads); on a
//! GPU, one at a time.
//!
//! Windows share a batch only when their decoding options, prompt length and
//! start-of-transcript position are equal, so a window decodes the same prompt it would
//! alone: a long file's windows reach the prompt's 224-token cap within a few windows
//! and batch from then on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::AsrError;
use crate::decode::{DecodeOptions, Rng, WindowDecoder, WindowResult};
use crate::model::Whisper;
use crate::tokenizer::WhisperTokenizer;

/// Longest a leader waits for the other transcribing callers to bring their windows: a
/// small part of one window's encoding (hundreds of milliseconds on a CPU).
const GATHER: Duration = Duration::from_millis(15);

/// One window waiting for a batch.
struct Job {
    id: u64,
    /// Log-mel `[1, n_mels, 3000]`.
    mel: Tensor,
    prompt: Vec<u32>,
    sot_index: usize,
    options: DecodeOptions,
}

impl Job {
    fn fits(&self, other: &Job) -> bool {
        self.prompt.len() == other.prompt.len()
            && self.sot_index == other.sot_index
            && self.options == other.options
    }
}

/// What a caller gets back: its window's encoder output `[1, 1500, d]` and its first
/// attempt; `None` when the batch failed (the caller then decodes alone and meets the
/// error itself).
type Outcome = Option<(Tensor, WindowResult)>;

#[derive(Default)]
struct Queue {
    waiting: Vec<Job>,
    done: HashMap<u64, Outcome>,
    /// Batches being gathered or run.
    leading: usize,
    /// Windows in the batches being run.
    in_batches: usize,
}

/// Batches the windows of concurrent transcriptions with one model (see the module
/// docs). Shared by [`crate::Transcriber`] clones; counters for monitoring.
pub struct WindowBatcher {
    queue: Mutex<Queue>,
    changed: Condvar,
    max_rows: usize,
    max_leaders: usize,
    next_id: AtomicU64,
    /// Transcriptions running now (they may bring a window soon).
    transcribing: AtomicUsize,
    batches: AtomicU64,
    windows: AtomicU64,
}

impl std::fmt::Debug for WindowBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowBatcher")
            .field("max_rows", &self.max_rows)
            .field("max_leaders", &self.max_leaders)
            .field("batches", &self.batches.load(Ordering::Relaxed))
            .field("windows", &self.windows.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Batches run and windows decoded by a [`WindowBatcher`] since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Batches run.
    pub batches: u64,
    /// Windows decoded in them (windows / batches is the mean batch size).
    pub windows: u64,
}

/// Marks one transcription as running while it lives.
pub(crate) struct Transcribing<'a>(&'a WindowBatcher);

impl Drop for Transcribing<'_> {
    fn drop(&mut self) {
        self.0.transcribing.fetch_sub(1, Ordering::Relaxed);
        // A leader may be waiting for this transcription's window.
        self.0.changed.notify_all();
    }
}

/// Frees a lead when its batch ends, whatever happened in it: rows not handed out yet
/// are given back to their callers to decode alone.
struct Lead<'a> {
    batcher: &'a WindowBatcher,
    ids: Vec<u64>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut q = self.batcher.lock();
        q.in_batches = q.in_batches.saturating_sub(self.ids.len());
        for id in self.ids.drain(..) {
            q.done.entry(id).or_insert(None);
        }
        q.leading = q.leading.saturating_sub(1);
        drop(q);
        self.batcher.changed.notify_all();
    }
}

impl WindowBatcher {
    /// A batcher of at most `max_rows` windows per batch, with at most `max_leaders`
    /// batches running at once (each at least 1).
    pub fn new(max_rows: usize, max_leaders: usize) -> WindowBatcher {
        WindowBatcher {
            queue: Mutex::default(),
            changed: Condvar::new(),
            max_rows: max_rows.max(1),
            max_leaders: max_leaders.max(1),
            next_id: AtomicU64::new(0),
            transcribing: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
            windows: AtomicU64::new(0),
        }
    }

    /// Batches run and windows decoded so far.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            windows: self.windows.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a transcription as running until the guard drops.
    pub(crate) fn transcribing(&self) -> Transcribing<'_> {
        self.transcribing.fetch_add(1, Ordering::Relaxed);
        Transcribing(self)
    }

    /// Encodes `mel` `[1, n_mels, 3000]` and decodes its first attempt with `prompt`, in a
    /// batch with other callers' windows. `None`: the batch failed; decode alone.
    pub(crate) fn window(
        &self,
        decoder: &WindowDecoder<'_>,
        mel: Tensor,
        prompt: Vec<u32>,
        sot_index: usize,
    ) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        q.waiting.push(Job {
            id,
            mel,
            prompt,
            sot_index,
            options: decoder.options.clone(),
        });
        self.changed.notify_all();
        loop {
            if let Some(outcome) = q.done.remove(&id) {
                return outcome;
            }
            if q.leading >= self.max_leaders || q.waiting.is_empty() {
                q = self.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            q.leading += 1;
            let (batch, gathered) = self.gather(q);
            let lead = Lead {
                batcher: self,
                ids: batch.iter().map(|j| j.id).collect(),
            };
            drop(gathered);
            if !batch.is_empty() {
                // On the leader's own threads: a lone request's batch gets all of them.
                match run_batch(decoder.model, decoder.tokenizer, &batch) {
                    Ok(rows) => {
                        self.batches.fetch_add(1, Ordering::Relaxed);
                        self.windows
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        let mut q = self.lock();
                        for (job, row) in batch.iter().zip(rows) {
                            q.done.insert(job.id, Some(row));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            windows = batch.len(),
                            "a batch of windows failed ({e}); each is decoded alone"
                        );
                    }
                }
            }
            // Gives back what was not handed out and frees the lead.
            drop(lead);
            q = self.lock();
        }
    }

    /// Waits (a moment at most) for the windows of the transcribing callers that are not
    /// in a running batch, then takes the first waiting window and every one that fits
    /// its batch (none when another leader took them meanwhile).
    fn gather<'q>(&self, mut q: MutexGuard<'q, Queue>) -> (Vec<Job>, MutexGuard<'q, Queue>) {
        let deadline = Instant::now() + GATHER;
        loop {
            let expected = self
                .transcribing
                .load(Ordering::Relaxed)
                .saturating_sub(q.in_batches)
                .clamp(1, self.max_rows);
            let fitting = match q.waiting.first() {
                Some(first) => q.waiting.iter().filter(|j| j.fits(first)).count(),
                None => 0,
            };
            let now = Instant::now();
            if fitting >= expected || now >= deadline {
                break;
            }
            q = self
                .changed
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut batch: Vec<Job> = Vec::new();
        let mut rest = Vec::new();
        for job in q.waiting.drain(..) {
            if batch.len() < self.max_rows && batch.first().is_none_or(|f| f.fits(&job)) {
                batch.push(job);
            } else {
                rest.push(job);
            }
        }
        q.waiting = rest;
        q.in_batches += batch.len();
        (batch, q)
    }
}

/// The encoder on every window of `batch` at once, then the first attempt of each.
fn run_batch(
    model: &Whisper,
    tokenizer: &WhisperTokenizer,
    batch: &[Job],
) -> Result<Vec<(Tensor, WindowResult)>, AsrError> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let mels: Vec<&Tensor> = batch.iter().map(|j| &j.mel).collect();
    let features = model.encode(&Tensor::cat(&mels, 0)?)?;
    let prompts: Vec<Vec<u32>> = batch.iter().map(|j| j.prompt.clone()).collect();
    let decoder = WindowDecoder {
        model,
        tokenizer,
        options: &first.options,
    };
    // Callers batch only a first temperature of 0 (no sampling): the sampler is unused.
    let mut rng = Rng::new(first.options.seed);
    let results = decoder.first_attempts(&features, &prompts, first.sot_index, &mut rng)?;
    tracing::debug!(windows = batch.len(), "batch of windows decoded");
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| Ok((features.narrow(0, i, 1)?, r)))
        .collect()
}
