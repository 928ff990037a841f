//! The diarization pipeline: sliding windows, local segmentation, per-speaker embeddings,
//! global clustering and reconstruction of an overlap-aware speaker timeline.
//!
//! 1. 5 s windows every [`DiarizeOptions::step`] seconds (the last one zero-padded) go
//!    through the segmentation network in batches.
//! 2. Each local speaker of each window gets one embedding: the mel frames where it is
//!    the only active speaker (all its active frames when it has too few of those), cut
//!    into partials of at most 1.6 s, embedded in one batch and averaged.
//! 3. Embeddings with enough single-speaker speech are clustered; every active local
//!    speaker is then assigned to the nearest centroid, distinct speakers of one window to
//!    distinct clusters when there are enough.
//! 4. Per output frame (about 17 ms), the number of speakers is the rounded mean over the
//!    windows covering it of the number of active local speakers, and the speakers are
//!    the clusters with the highest mean activation: overlapped speech is kept.
//!
//! Audio is consumed as a stream: only the samples of the window being filled are kept,
//! and each window leaves about 1 KB behind (quantised activations and its embeddings),
//! so an hour costs a few MB whatever its length in samples.

use std::collections::VecDeque;
use std::sync::Arc;

use candle_core::Tensor;
use mica_core::document::{SpeakerTurn, SpeakerTurns};
#[cfg(feature = "media")]
use mica_media::AudioStream;
use serde::{Deserialize, Serialize};

use mica_core::error::RunError;

use crate::clustering::{self, Method, SpeakerCount};
use crate::embedding::{EMBEDDING_DIM, HOP, MEL_BANDS, MelFrontEnd, PARTIAL_FRAMES};
use crate::segmentation::{
    FRAME_STEP, LOCAL_SPEAKERS, RECEPTIVE_FIELD, SAMPLE_RATE, WINDOW_SAMPLES, frames_for,
};
use crate::{DiarizeError, Segmentation, SpeakerEncoder};

/// Options of the pipeline. Every field has a tuned default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiarizeOptions {
    /// Seconds between window starts (rounded to whole output frames of 270 samples).
    pub step: f64,
    /// A local speaker is active in a frame when its probability exceeds this.
    pub onset: f32,
    /// How embeddings are grouped into speakers.
    pub method: Method,
    /// Agglomerative clustering stops merging at this cosine distance.
    pub threshold: f32,
    /// The exact number of speakers, when known.
    pub num_speakers: Option<usize>,
    /// At least this many speakers.
    pub min_speakers: Option<usize>,
    /// At most this many speakers.
    pub max_speakers: Option<usize>,
    /// Most speakers spectral clustering may find when no bound is given.
    pub max_auto_speakers: usize,
    /// Compare embeddings after removing their mean over the recording.
    pub center: bool,
    /// One speaker when the raw (uncentred) embeddings' last average-linkage merge is
    /// below this cosine distance (unless more speakers are required).
    pub single_speaker_below: f32,
    /// Speakers whose raw (uncentred) centroids are closer than this cosine distance are
    /// one speaker. Centring (see `center`) spreads a voice that fills most of a recording
    /// into several clusters; their centroids stay far closer to each other than to any
    /// other voice's. 0 turns the check off.
    pub same_speaker_below: f32,
    /// Clusters with fewer embeddings than this are not speakers of their own: their
    /// members join the nearest speaker (capped at a tenth of the embeddings, at least 2).
    pub min_cluster_size: usize,
    /// Seconds of single-speaker speech a (window, speaker) needs for its embedding to
    /// take part in clustering; shorter ones are only assigned to the nearest centroid.
    pub min_clean: f64,
    /// Gaps shorter than this (seconds) inside one speaker's speech are filled.
    pub min_duration_off: f64,
    /// Turns shorter than this (seconds) are dropped.
    pub min_duration_on: f64,
    /// Windows per segmentation forward; 0 picks by device: 16 on the CPU (enough to keep
    /// every core busy), 128 on GPUs (the LSTMs run step by step there, so fewer, larger
    /// batches mean fewer kernel launches per hour of audio); at most [`MAX_BATCH`].
    pub batch: usize,
    /// Most embeddings clustered directly; beyond it an evenly spaced subset is clustered
    /// and the rest assigned to the nearest centroid (bounds time and memory on long input).
    /// Spectral clustering takes at most [`SPECTRAL_MAX_POINTS`] whatever this says.
    pub max_cluster_points: usize,
}

/// Most windows per segmentation forward (pending windows wait as samples: 320 MB at
/// this size).
pub const MAX_BATCH: usize = 1024;

/// Most embeddings spectral clustering decomposes: its Jacobi eigendecomposition grows with
/// the cube of the count (criterion: 300 in 0.41 s, 500 in 2.2 s on one core; by the cube
/// law 1,500 would need about a minute).
pub const SPECTRAL_MAX_POINTS: usize = 500;

impl Default for DiarizeOptions {
    fn default() -> Self {
        DiarizeOptions {
            step: 1.0,
            onset: 0.5,
            method: Method::Agglomerative,
            threshold: 0.9,
            num_speakers: None,
            min_speakers: None,
            max_speakers: None,
            max_auto_speakers: 10,
            center: true,
            single_speaker_below: 0.2,
            same_speaker_below: 0.07,
            min_cluster_size: 12,
            min_clean: 0.5,
            min_duration_off: 0.0,
            min_duration_on: 0.0,
            batch: 0,
            max_cluster_points: 1500,
        }
    }
}

impl DiarizeOptions {
    /// Checks ranges and that the speaker-count options agree.
    pub fn validate(&self) -> Result<(), DiarizeError> {
        let bad = |m: String| Err(RunError::option("diarization", m).into());
        if !(self.step.is_finite() && self.step >= 0.1 && self.step <= 5.0) {
            return bad(format!("step must be 0.1 to 5 seconds, not {}", self.step));
        }
        if !(self.onset > 0.0 && self.onset < 1.0) {
            return bad(format!("onset must be between 0 and 1, not {}", self.onset));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold <= 2.0) {
            return bad(format!(
                "threshold is a cosine distance in (0, 2], not {}",
                self.threshold
            ));
        }
        if !(self.same_speaker_below.is_finite() && (0.0..=2.0).contains(&self.same_speaker_below))
        {
            return bad(format!(
                "same_speaker_below is a cosine distance in [0, 2], not {}",
                self.same_speaker_below
            ));
        }
        for (name, v) in [
            ("min_clean", self.min_clean),
            ("min_duration_off", self.min_duration_off),
            ("min_duration_on", self.min_duration_on),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!(
                    "{name} must be a non-negative number of seconds, not {v}"
                ));
            }
        }
        // Pending windows are held as samples until a batch fills: 5 s each, 320 kB.
        if self.batch > MAX_BATCH {
            return bad(format!(
                "batch is at most {MAX_BATCH} windows (0 picks by device), not {}",
                self.batch
            ));
        }
        if self.max_cluster_points < 2 || self.max_auto_speakers == 0 {
            return bad("max_cluster_points and max_auto_speakers must be positive".into());
        }
        if self.num_speakers == Some(0)
            || self.min_speakers == Some(0)
            || self.max_speakers == Some(0)
        {
            return bad("speaker counts start at 1".into());
        }
        if self.num_speakers.is_some()
            && (self.min_speakers.is_some() || self.max_speakers.is_some())
        {
            return bad("give either num_speakers or min/max_speakers, not both".into());
        }
        if let (Some(lo), Some(hi)) = (self.min_speakers, self.max_speakers)
            && lo > hi
        {
            return bad(format!("min_speakers {lo} is more than max_speakers {hi}"));
        }
        Ok(())
    }

    /// The speaker-count constraint the options describe.
    pub fn count(&self) -> SpeakerCount {
        match self.num_speakers {
            Some(n) => SpeakerCount { min: n, max: n },
            None => SpeakerCount {
                min: self.min_speakers.unwrap_or(1),
                max: self.max_speakers.unwrap_or(usize::MAX),
            },
        }
    }

    /// Samples between window starts: a whole number of output frames, at least one.
    fn step_samples(&self) -> usize {
        let frames = (self.step * SAMPLE_RATE as f64 / FRAME_STEP as f64).round() as usize;
        frames.max(1) * FRAME_STEP
    }
}

/// Who spoke when, with what the engine needs to merge parts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Diarization {
    /// Speaker turns in time order (they may overlap).
    pub turns: SpeakerTurns,
    /// The speaker labels, `SPEAKER_00` upwards, in order of first speech.
    pub speakers: Vec<String>,
    /// One unit-length embedding per speaker (same order as `speakers`): the mean of its
    /// raw d-vectors, comparable across recordings.
    pub centroids: Vec<Vec<f32>>,
    /// Seconds of audio diarized.
    pub duration: f64,
    /// Windows that went through the networks (digital silence skips them).
    pub windows: usize,
}

/// The pipeline, holding both networks (shared, loaded once) and its options.
#[derive(Debug, Clone)]
pub struct Diarizer {
    segmentation: Arc<Segmentation>,
    encoder: Arc<SpeakerEncoder>,
    options: DiarizeOptions,
    /// Windows per segmentation forward ([`DiarizeOptions::batch`] resolved).
    batch: usize,
    /// Partial utterances per embedding forward.
    embed_batch: usize,
}

impl Diarizer {
    /// A pipeline over loaded networks; fails on invalid options.
    pub fn new(
        segmentation: Arc<Segmentation>,
        encoder: Arc<SpeakerEncoder>,
        options: DiarizeOptions,
    ) -> Result<Diarizer, DiarizeError> {
        options.validate()?;
        let cpu = segmentation.device().is_cpu();
        let batch = match options.batch {
            0 if cpu => 16,
            0 => 128,
            n => n,
        };
        let embed_batch = if encoder.device().is_cpu() { 64 } else { 512 };
        Ok(Diarizer {
            segmentation,
            encoder,
            options,
            batch,
            embed_batch,
        })
    }

    /// The options in use.
    pub fn options(&self) -> &DiarizeOptions {
        &self.options
    }

    /// The speaker embedding network (shared).
    pub fn encoder(&self) -> &Arc<SpeakerEncoder> {
        &self.encoder
    }

    /// The same networks with other options (checked here).
    pub fn with_options(&self, options: DiarizeOptions) -> Result<Diarizer, DiarizeError> {
        Diarizer::new(
            Arc::clone(&self.segmentation),
            Arc::clone(&self.encoder),
            options,
        )
    }

    /// A streaming session: push samples as they come, then finish.
    pub fn session(&self) -> Session<'_> {
        self.session_at(0)
    }

    /// A session over one part of a longer recording, starting at sample `offset` of it:
    /// [`Session::finish_part`] keeps its windows unclustered for [`Diarizer::merge`].
    pub fn session_at(&self, offset: u64) -> Session<'_> {
        Session {
            diarizer: self,
            offset: offset as usize,
            step: self.options.step_samples(),
            buf: Vec::with_capacity(WINDOW_SAMPLES + SAMPLE_RATE),
            buf_start: 0,
            total: 0,
            pending: Vec::new(),
            pending_starts: Vec::new(),
            windows: Vec::new(),
            last_end: 0,
            frame_map: mel_to_frame(),
        }
    }

    /// Clusters the windows of a recording's parts together (one speaker set across all
    /// of them) and rebuilds the speaker turns in the recording's time base. Parts may
    /// come in any order; they must not overlap.
    pub fn merge(&self, parts: Vec<DiarizedPart>) -> Result<Diarization, DiarizeError> {
        let mut parts = parts;
        parts.sort_by_key(|p| p.start);
        for pair in parts.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.start + a.samples > b.start {
                return Err(DiarizeError::Run(RunError::option(
                    "diarization",
                    format!(
                        "diarized parts overlap: samples {}..{} and {}..{}",
                        a.start,
                        a.start + a.samples,
                        b.start,
                        b.start + b.samples
                    ),
                )));
            }
        }
        let total = parts.last().map_or(0, |p| (p.start + p.samples) as usize);
        let windows: Vec<WindowResult> = parts.into_iter().flat_map(|p| p.windows).collect();
        Ok(conclude(windows, total, &self.options))
    }

    /// Diarizes 16 kHz mono samples.
    pub fn diarize(&self, samples: &[f32]) -> Result<Diarization, DiarizeError> {
        let mut s = self.session();
        s.push(samples)?;
        s.finish()
    }

    /// Diarizes a decoding stream to its end, holding only a window of samples at a time.
    #[cfg(feature = "media")]
    pub fn diarize_stream(&self, stream: &mut AudioStream) -> Result<Diarization, DiarizeError> {
        let mut s = self.session();
        while let Some(chunk) = stream.next_chunk()? {
            s.push(&chunk.samples)?;
        }
        s.finish()
    }
}

/// One local speaker's embedding in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LocalEmbedding {
    vector: Vec<f32>,
    /// Enough single-speaker speech to take part in clustering.
    clean: bool,
}

/// What one window leaves behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WindowResult {
    /// First sample (of the recording, once its part's offset is added).
    start: usize,
    /// End of the audio the window saw: its own end, or the end of its part's samples
    /// when it was zero-padded. Frames past it say nothing about the recording.
    end: usize,
    /// Activations quantised to 0..=255, `[frames, LOCAL_SPEAKERS]`.
    probs: Vec<u8>,
    embeddings: [Option<LocalEmbedding>; LOCAL_SPEAKERS],
}

/// For each mel frame of a window, the segmentation frame whose centre is nearest.
fn mel_to_frame() -> Vec<usize> {
    let frames = frames_for(WINDOW_SAMPLES);
    (0..MelFrontEnd::frames_for(WINDOW_SAMPLES))
        .map(|m| {
            let centre = (m * HOP) as f64 - (RECEPTIVE_FIELD / 2) as f64;
            ((centre / FRAME_STEP as f64).round().max(0.0) as usize).min(frames - 1)
        })
        .collect()
}

/// A diarization in progress; see [`Diarizer::session`].
#[derive(Debug)]
pub struct Session<'a> {
    diarizer: &'a Diarizer,
    /// Where this session's first sample lies in the recording (a part's start).
    offset: usize,
    step: usize,
    /// Samples from `buf_start` on.
    buf: Vec<f32>,
    buf_start: usize,
    total: usize,
    /// Windows waiting for a batch, back to back.
    pending: Vec<f32>,
    pending_starts: Vec<usize>,
    windows: Vec<WindowResult>,
    /// End of the last window queued.
    last_end: usize,
    frame_map: Vec<usize>,
}

impl Session<'_> {
    /// Adds samples (16 kHz mono, finite).
    pub fn push(&mut self, samples: &[f32]) -> Result<(), DiarizeError> {
        RunError::check_finite("audio sample", samples, self.total as u64)?;
        self.buf.extend_from_slice(samples);
        self.total += samples.len();
        // Whole windows from the next start on.
        let mut next = self.buf_start;
        while next + WINDOW_SAMPLES <= self.total {
            let from = next - self.buf_start;
            let window = &self.buf[from..from + WINDOW_SAMPLES];
            // Digital silence has no speaker (the network agrees: tests/edge.rs), so such
            // windows skip the networks: long silent stretches cost nothing.
            if window.iter().any(|&x| x != 0.0) {
                self.pending.extend_from_slice(window);
                self.pending_starts.push(next);
            }
            self.last_end = next + WINDOW_SAMPLES;
            next += self.step;
            if self.pending_starts.len() == self.diarizer.batch {
                self.run_batch()?;
            }
        }
        let drop = (next - self.buf_start).min(self.buf.len());
        self.buf.drain(..drop);
        self.buf_start = next;
        Ok(())
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> usize {
        self.total
    }

    /// Runs what is left, clusters and returns the speaker turns.
    pub fn finish(self) -> Result<Diarization, DiarizeError> {
        let options = &self.diarizer.options;
        let part = self.finish_part()?;
        let total = (part.start + part.samples) as usize;
        Ok(conclude(part.windows, total, options))
    }

    /// Runs what is left and returns the windows unclustered, for [`Diarizer::merge`] with
    /// the recording's other parts.
    pub fn finish_part(mut self) -> Result<DiarizedPart, DiarizeError> {
        // A last zero-padded window when the audio runs past the last full one (or is
        // shorter than one window).
        if self.total > 0 && (self.last_end == 0 || self.last_end < self.total) {
            let mut w = self.buf.clone();
            w.resize(WINDOW_SAMPLES, 0.0);
            if w.iter().any(|&x| x != 0.0) {
                self.pending.extend_from_slice(&w);
                self.pending_starts.push(self.buf_start);
            }
            self.last_end = self.buf_start + WINDOW_SAMPLES;
        }
        if !self.pending_starts.is_empty() {
            self.run_batch()?;
        }
        let offset = self.offset;
        let total = self.total;
        let mut windows = std::mem::take(&mut self.windows);
        for w in &mut windows {
            w.end = (w.start + WINDOW_SAMPLES).min(total) + offset;
            w.start += offset;
        }
        Ok(DiarizedPart {
            start: offset as u64,
            samples: total as u64,
            windows,
        })
    }

    /// Segmentation and embeddings for the pending windows.
    fn run_batch(&mut self) -> Result<(), DiarizeError> {
        let b = self.pending_starts.len();
        let seg = &self.diarizer.segmentation;
        let enc = &self.diarizer.encoder;
        let opts = &self.diarizer.options;
        let clock = std::time::Instant::now();
        let input = Tensor::from_slice(&self.pending, (b, WINDOW_SAMPLES), seg.device())?;
        let probs = seg.forward(&input)?.flatten_all()?.to_vec1::<f32>()?;
        let seg_time = clock.elapsed();
        let mels = enc
            .mel()
            .forward(&input.to_device(enc.device())?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let frames = frames_for(WINDOW_SAMPLES);
        let mel_frames = self.frame_map.len();
        let min_clean = (opts.min_clean * SAMPLE_RATE as f64 / HOP as f64).round() as usize;

        // Sequences to embed: (window, speaker, mel frame indices of the window).
        let mut partials: Vec<(usize, usize, Vec<usize>)> = Vec::new();
        let mut clean_flags = vec![[false; LOCAL_SPEAKERS]; b];
        for w in 0..b {
            let p = &probs[w * frames * LOCAL_SPEAKERS..(w + 1) * frames * LOCAL_SPEAKERS];
            let active = |f: usize, s: usize| p[f * LOCAL_SPEAKERS + s] > opts.onset;
            for (s, flag) in clean_flags[w].iter_mut().enumerate() {
                let mut clean = Vec::new();
                let mut any = Vec::new();
                for (m, &f) in self.frame_map.iter().enumerate() {
                    if active(f, s) {
                        any.push(m);
                        if (0..LOCAL_SPEAKERS).all(|o| o == s || !active(f, o)) {
                            clean.push(m);
                        }
                    }
                }
                let is_clean = clean.len() >= min_clean.max(1);
                *flag = is_clean;
                let frames_used = if is_clean { clean } else { any };
                if frames_used.is_empty() {
                    continue;
                }
                // Equal partials of at most PARTIAL_FRAMES frames.
                let parts = frames_used.len().div_ceil(PARTIAL_FRAMES);
                let size = frames_used.len().div_ceil(parts);
                for chunk in frames_used.chunks(size) {
                    partials.push((w, s, chunk.to_vec()));
                }
            }
        }
        // Longest first, so sequences of similar length share a batch.
        let mut order: Vec<usize> = (0..partials.len()).collect();
        order.sort_by(|&x, &y| partials[y].2.len().cmp(&partials[x].2.len()));
        let mut sums = vec![[None::<(Vec<f32>, usize)>, None, None]; b];
        for group in order.chunks(self.diarizer.embed_batch) {
            let t = partials[group[0]].2.len();
            let mut data = vec![0.0f32; group.len() * t * MEL_BANDS];
            let mut lengths = Vec::with_capacity(group.len());
            for (row, &pi) in group.iter().enumerate() {
                let (w, _, ref idx) = partials[pi];
                for (j, &m) in idx.iter().enumerate() {
                    let src = (w * mel_frames + m) * MEL_BANDS;
                    let dst = (row * t + j) * MEL_BANDS;
                    data[dst..dst + MEL_BANDS].copy_from_slice(&mels[src..src + MEL_BANDS]);
                }
                lengths.push(idx.len());
            }
            let batch = Tensor::from_vec(data, (group.len(), t, MEL_BANDS), enc.device())?;
            let emb = enc
                .embed(&batch, &lengths)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (row, &pi) in group.iter().enumerate() {
                let (w, s, ref idx) = partials[pi];
                let e = &emb[row * EMBEDDING_DIM..(row + 1) * EMBEDDING_DIM];
                let weight = idx.len();
                let slot = &mut sums[w][s];
                match slot {
                    Some((acc, n)) => {
                        acc.iter_mut()
                            .zip(e)
                            .for_each(|(a, x)| *a += x * weight as f32);
                        *n += weight;
                    }
                    None => *slot = Some((e.iter().map(|x| x * weight as f32).collect(), weight)),
                }
            }
        }
        tracing::debug!(
            "batch of {b} windows: segmentation {seg_time:.2?}, mel + {} partials {:.2?}",
            partials.len(),
            clock.elapsed() - seg_time
        );
        for (w, start) in self.pending_starts.iter().enumerate() {
            let p = &probs[w * frames * LOCAL_SPEAKERS..(w + 1) * frames * LOCAL_SPEAKERS];
            let embeddings = std::array::from_fn(|s| {
                sums[w][s].take().map(|(mut v, _)| {
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x /= norm);
                    LocalEmbedding {
                        vector: v,
                        clean: clean_flags[w][s],
                    }
                })
            });
            self.windows.push(WindowResult {
                start: *start,
                end: *start + WINDOW_SAMPLES,
                probs: p
                    .iter()
                    .map(|&x| (x.clamp(0.0, 1.0) * 255.0).round() as u8)
                    .collect(),
                embeddings,
            });
        }
        self.pending.clear();
        self.pending_starts.clear();
        Ok(())
    }
}

/// One part of a recording, segmented and embedded but not yet clustered: what a worker
/// hands back for [`Diarizer::merge`]. About 4 KB per window (one window per
/// [`DiarizeOptions::step`]); it serialises, so parts can run in other processes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DiarizedPart {
    /// The part's first sample in the recording.
    pub start: u64,
    /// Samples in the part.
    pub samples: u64,
    windows: Vec<WindowResult>,
}

impl DiarizedPart {
    /// Windows that went through the networks.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }
}

/// Clusters the windows of a whole recording (`total` samples) and names the speakers.
fn conclude(windows: Vec<WindowResult>, total: usize, opts: &DiarizeOptions) -> Diarization {
    let duration = total as f64 / SAMPLE_RATE as f64;
    let (centroids, assignment) = cluster(&windows, opts);
    let mut turns = reconstruct(&windows, &assignment, centroids.len(), total, opts);
    // Labels by first speech; drop clusters that never won a frame.
    let mut order: Vec<usize> = Vec::new();
    for t in &turns {
        if !order.contains(&t.1) {
            order.push(t.1);
        }
    }
    let speakers: Vec<String> = (0..order.len())
        .map(|i| format!("SPEAKER_{i:02}"))
        .collect();
    turns.sort_by(|a, b| a.0.start.total_cmp(&b.0.start).then(a.1.cmp(&b.1)));
    let turns = turns
        .into_iter()
        .map(|(mut t, k)| {
            let idx = order.iter().position(|&o| o == k).unwrap_or(0);
            t.speaker = speakers[idx].clone();
            t
        })
        .collect();
    let centroids = order.iter().map(|&k| centroids[k].clone()).collect();
    tracing::debug!(
        "diarized {duration:.1} s: {} windows, {} speakers",
        windows.len(),
        speakers.len()
    );
    Diarization {
        turns,
        speakers,
        centroids,
        duration,
        windows: windows.len(),
    }
}

/// Clusters the embeddings; returns the (uncentred) centroids and, per window and local
/// speaker, its cluster.
fn cluster(
    windows: &[WindowResult],
    opts: &DiarizeOptions,
) -> (Vec<Vec<f32>>, Vec<[Option<usize>; LOCAL_SPEAKERS]>) {
    let all: Vec<&LocalEmbedding> = windows
        .iter()
        .flat_map(|w| w.embeddings.iter().flatten())
        .collect();
    let mut train: Vec<Vec<f32>> = all
        .iter()
        .filter(|e| e.clean)
        .map(|e| e.vector.clone())
        .collect();
    if train.is_empty() {
        train = all.iter().map(|e| e.vector.clone()).collect();
    }
    if train.is_empty() {
        return (Vec::new(), vec![[None; LOCAL_SPEAKERS]; windows.len()]);
    }
    let cap = match opts.method {
        Method::Spectral => opts.max_cluster_points.min(SPECTRAL_MAX_POINTS),
        _ => opts.max_cluster_points,
    };
    if train.len() > cap {
        let n = train.len();
        let k = cap;
        train = (0..k).map(|i| train[i * n / k].clone()).collect();
    }
    // Centring (below) spreads one speaker's embeddings as widely as many speakers'
    // ones, so whether there is more than one speaker is decided first, on the raw
    // vectors: the last merge of average linkage is the mean distance between the two
    // most different groups.
    let count = opts.count();
    let single = count.min <= 1 && {
        let top = clustering::Dendrogram::average(&train)
            .heights()
            .last()
            .unwrap_or(0.0);
        tracing::debug!("raw embeddings: last average-linkage merge at {top:.3}");
        top < opts.single_speaker_below
    };
    // d-vectors are non-negative and share a large common component (the channel, the
    // recording); removing the mean of this recording's embeddings before comparing them
    // leaves what tells its speakers apart.
    let raw = train;
    let first_mean: Vec<f32> = if opts.center {
        mean_of(&raw)
    } else {
        vec![0.0; EMBEDDING_DIM]
    };
    let mut labels = if single {
        vec![0; raw.len()]
    } else {
        group(&raw, &first_mean, count, opts)
    };
    let mut mean = first_mean;
    let sizes = cluster_sizes(&labels);
    let dominant = sizes.iter().max().copied().unwrap_or(0) * 2 > raw.len();
    if opts.center && sizes.len() >= 2 && dominant {
        // The recording's mean leans to whoever speaks most: one voice filling most of a
        // long recording becomes the centre, and centring then spreads that voice into
        // several clusters while the others crowd together. When one speaker holds most
        // of the embeddings, centre again on the mean of the speakers found, each counting
        // once, and group again.
        let balanced = mean_of(&clustering::centroids(&raw, &labels));
        labels = group(&raw, &balanced, count, opts);
        mean = balanced;
    }
    let centre = |v: &[f32]| centred(v, &mean);
    let train: Vec<Vec<f32>> = raw.iter().map(|v| centre(v)).collect();
    let centroids = clustering::centroids(&train, &labels);
    let k = centroids.len();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let rawc = clustering::centroids(&raw, &labels);
        let sizes = cluster_sizes(&labels);
        for a in 0..k {
            let d: Vec<String> = (0..k)
                .map(|b| format!("{:.3}", clustering::cosine_distance(&rawc[a], &rawc[b])))
                .collect();
            tracing::debug!(
                "cluster {a} ({} pts): raw centroid distances {}",
                sizes[a],
                d.join(" ")
            );
        }
    }
    let assignment = windows
        .iter()
        .map(|w| {
            let sim: Vec<Option<Vec<f32>>> = w
                .embeddings
                .iter()
                .map(|e| {
                    e.as_ref().map(|e| {
                        let v = centre(&e.vector);
                        centroids
                            .iter()
                            .map(|c| c.iter().zip(&v).map(|(a, b)| a * b).sum())
                            .collect()
                    })
                })
                .collect();
            assign_window(&sim, k)
        })
        .collect();
    // The speakers' centroids go out uncentred, comparable across recordings (the engine
    // re-clusters parts from them).
    (clustering::centroids(&raw, &labels), assignment)
}

/// Members of each cluster `0..k`.
fn cluster_sizes(labels: &[usize]) -> Vec<usize> {
    let mut sizes = vec![0usize; labels.iter().max().map_or(0, |m| m + 1)];
    labels.iter().for_each(|&l| sizes[l] += 1);
    sizes
}

/// Mean of the vectors (not normalised).
fn mean_of(vectors: &[Vec<f32>]) -> Vec<f32> {
    let mut m = vec![0.0f32; EMBEDDING_DIM];
    for v in vectors {
        m.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    m.iter_mut().for_each(|a| *a /= vectors.len().max(1) as f32);
    m
}

/// `v` less `mean`, at unit length.
fn centred(v: &[f32], mean: &[f32]) -> Vec<f32> {
    let mut c: Vec<f32> = v.iter().zip(mean).map(|(a, b)| a - b).collect();
    let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    c.iter_mut().for_each(|x| *x /= norm);
    c
}

/// Groups the raw embeddings into speakers: clustered after centring on `mean`, then
/// clusters whose raw centroids are one voice joined.
fn group(raw: &[Vec<f32>], mean: &[f32], count: SpeakerCount, opts: &DiarizeOptions) -> Vec<usize> {
    let train: Vec<Vec<f32>> = raw.iter().map(|v| centred(v, mean)).collect();
    if tracing::enabled!(tracing::Level::TRACE) {
        let tree = clustering::Dendrogram::average(&train);
        let h: Vec<String> = tree.heights().map(|h| format!("{h:.3}")).collect();
        tracing::trace!("{} embeddings; merge heights {}", train.len(), h.join(" "));
    }
    let labels = match opts.method {
        Method::Spectral => clustering::spectral(&train, count, opts.max_auto_speakers),
        _ => {
            let min_size = opts.min_cluster_size.min(train.len() / 10).max(2);
            clustering::agglomerative(&train, opts.threshold, min_size, count)
        }
    };
    if opts.same_speaker_below > 0.0 {
        clustering::merge_close_centroids(raw, &labels, opts.same_speaker_below, count.min)
    } else {
        labels
    }
}

/// Best clusters for a window's local speakers (similarities to each centroid): distinct
/// clusters when there are at least as many clusters as speakers, maximising the summed
/// similarity; otherwise each speaker's nearest.
fn assign_window(sim: &[Option<Vec<f32>>], k: usize) -> [Option<usize>; LOCAL_SPEAKERS] {
    let mut out = [None; LOCAL_SPEAKERS];
    let present: Vec<usize> = (0..sim.len()).filter(|&s| sim[s].is_some()).collect();
    if k == 0 || present.is_empty() {
        return out;
    }
    let nearest = |s: usize| -> Option<usize> {
        sim[s]
            .as_ref()
            .and_then(|v| (0..k).max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a))))
    };
    if present.len() > k {
        for &s in &present {
            out[s] = nearest(s);
        }
        return out;
    }
    let m = present.len();
    if k.saturating_pow(m as u32) > 50_000 {
        // Very many clusters (a large forced count): greedy, best pairs first.
        let mut pairs: Vec<(f32, usize, usize)> = present
            .iter()
            .flat_map(|&s| (0..k).map(move |c| (s, c)))
            .filter_map(|(s, c)| sim[s].as_ref().map(|v| (v[c], s, c)))
            .collect();
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used = Vec::new();
        for (_, s, c) in pairs {
            if out[s].is_none() && !used.contains(&c) {
                out[s] = Some(c);
                used.push(c);
            }
        }
        return out;
    }
    // Exhaustive search over injective maps: at most 3 speakers, so at most k^3 tuples.
    let mut best = f32::NEG_INFINITY;
    let mut choice = vec![0usize; m];
    let mut cur = vec![0usize; m];
    let combos = k.pow(m as u32);
    for code in 0..combos {
        let mut c = code;
        for slot in cur.iter_mut() {
            *slot = c % k;
            c /= k;
        }
        if (1..m).any(|i| cur[..i].contains(&cur[i])) {
            continue;
        }
        let score: f32 = present
            .iter()
            .zip(&cur)
            .map(|(&s, &c)| sim[s].as_ref().map_or(0.0, |v| v[c]))
            .sum();
        if score > best {
            best = score;
            choice.clone_from(&cur);
        }
    }
    for (i, &s) in present.iter().enumerate() {
        out[s] = Some(choice[i]);
    }
    out
}

/// Output frames (one per [`FRAME_STEP`] samples) whose centre lies in the first `total`
/// samples: of the recording, or of one window.
fn global_frames(total: usize) -> usize {
    let half = RECEPTIVE_FIELD / 2;
    if total <= half {
        0
    } else {
        (total - half).div_ceil(FRAME_STEP)
    }
}

/// Frame g's span in seconds: its centre +- half a frame step.
fn frame_bounds(g: usize) -> (f64, f64) {
    let centre = (g * FRAME_STEP + RECEPTIVE_FIELD / 2) as f64;
    let half = FRAME_STEP as f64 / 2.0;
    (
        (centre - half) / SAMPLE_RATE as f64,
        (centre + half) / SAMPLE_RATE as f64,
    )
}

#[derive(Debug, Clone)]
struct FrameAcc {
    windows: f32,
    count: f32,
    scores: Vec<f32>,
}

/// Overlap-add of the clustered window activations into speaker turns (cluster indices),
/// sweeping the windows in order so only one window span of frames is held.
fn reconstruct(
    windows: &[WindowResult],
    assignment: &[[Option<usize>; LOCAL_SPEAKERS]],
    k: usize,
    total: usize,
    opts: &DiarizeOptions,
) -> Vec<(SpeakerTurn, usize)> {
    let frames_total = global_frames(total);
    let duration = total as f64 / SAMPLE_RATE as f64;
    let frames = frames_for(WINDOW_SAMPLES);
    let onset = (opts.onset * 255.0).round() as u8;
    let mut acc: VecDeque<FrameAcc> = VecDeque::new();
    let mut base = 0usize; // global frame of acc[0]
    let mut open: Vec<Option<usize>> = vec![None; k];
    let mut turns: Vec<Vec<(usize, usize)>> = vec![Vec::new(); k];
    let empty = FrameAcc {
        windows: 0.0,
        count: 0.0,
        scores: vec![0.0; k],
    };

    let mut finalize = |g: usize, a: &FrameAcc, open: &mut Vec<Option<usize>>| {
        let mut chosen = vec![false; k];
        if a.windows > 0.0 {
            let n = ((a.count / a.windows).round() as usize).min(k);
            let mut order: Vec<usize> = (0..k).filter(|&c| a.scores[c] > 0.0).collect();
            order.sort_by(|&x, &y| a.scores[y].total_cmp(&a.scores[x]).then(x.cmp(&y)));
            for &c in order.iter().take(n) {
                chosen[c] = true;
            }
        }
        for c in 0..k {
            match (chosen[c], open[c]) {
                (true, None) => open[c] = Some(g),
                (false, Some(s)) => {
                    turns[c].push((s, g - 1));
                    open[c] = None;
                }
                _ => {}
            }
        }
    };

    for (w, assign) in windows.iter().zip(assignment) {
        // Parts start anywhere; their windows go to the nearest whole frame.
        let first = (w.start + FRAME_STEP / 2) / FRAME_STEP;
        // Frames whose centre lies past the audio the window saw (a zero-padded tail).
        let seen = global_frames(w.end - w.start).min(frames);
        // Frames before this window are complete.
        while base < first.min(frames_total) {
            let a = acc.pop_front().unwrap_or_else(|| empty.clone());
            finalize(base, &a, &mut open);
            base += 1;
        }
        for i in 0..seen {
            let g = first + i;
            if g >= frames_total {
                break;
            }
            while acc.len() <= g - base {
                acc.push_back(empty.clone());
            }
            let a = &mut acc[g - base];
            a.windows += 1.0;
            let row = &w.probs[i * LOCAL_SPEAKERS..(i + 1) * LOCAL_SPEAKERS];
            a.count += row.iter().filter(|&&p| p > onset).count() as f32;
            // Two local speakers on one cluster: the stronger one counts.
            let mut best = [None::<(usize, u8)>; LOCAL_SPEAKERS];
            for (s, &p) in row.iter().enumerate() {
                if let Some(c) = assign[s] {
                    match best.iter_mut().find(|b| b.is_some_and(|(bc, _)| bc == c)) {
                        Some(Some((_, bp))) => *bp = (*bp).max(p),
                        _ => best[s] = Some((c, p)),
                    }
                }
            }
            for (c, p) in best.into_iter().flatten() {
                a.scores[c] += f32::from(p) / 255.0;
            }
        }
    }
    while base < frames_total {
        let a = acc.pop_front().unwrap_or_else(|| empty.clone());
        finalize(base, &a, &mut open);
        base += 1;
    }
    for c in 0..k {
        if let Some(s) = open[c] {
            turns[c].push((s, frames_total - 1));
        }
    }

    let mut out = Vec::new();
    for (c, runs) in turns.into_iter().enumerate() {
        let mut spans: Vec<(f64, f64)> = runs
            .into_iter()
            .map(|(a, b)| (frame_bounds(a).0.max(0.0), frame_bounds(b).1.min(duration)))
            .collect();
        // Fill short gaps, then drop short turns.
        let mut merged: Vec<(f64, f64)> = Vec::with_capacity(spans.len());
        for (s, e) in spans.drain(..) {
            match merged.last_mut() {
                Some(last) if s - last.1 < opts.min_duration_off => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        for (s, e) in merged {
            if e - s >= opts.min_duration_on && e > s {
                out.push((
                    SpeakerTurn {
                        start: s,
                        end: e,
                        speaker: String::new(),
                    },
                    c,
                ));
            }
        }
    }
    out
}
