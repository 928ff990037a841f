//! The VAD-batched mode (faster-whisper's `BatchedInferencePipeline`): Silero VAD finds the
//! speech, regions are merged into chunks of at most 30 s that end on silences, the
//! chunks are encoded and decoded many at a time, and every timestamp is shifted back by
//! its chunk's start, so times are exact on the input's timeline.
//!
//! With `condition_on_previous_text` the chunks are dealt out to lanes of consecutive
//! chunks; a batch takes the next window of every lane, and each window is prompted with
//! its lane's text so far, as the sequential mode prompts with the text before it. Without
//! it every window gets the same prompt (faster-whisper's batched pipeline).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use mica_core::time::TimeRange;

use crate::AsrError;
use crate::context::DecodeContext;
use crate::decode::Rng;
use crate::mel::{
    FRAMES_PER_SECOND, HOP, LogMel, Mel, SAMPLE_RATE, WINDOW_FRAMES, mel_windows, silent_frames,
};
use crate::segment::RawSegment;

/// A chunk of audio decoded as one window: `[start, end)` in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

/// A silence between (padded) speech regions at least this long ends a chunk: Whisper
/// skips short utterances and its word alignment drifts across long silences inside a
/// window, and a chunk boundary there cuts no speech.
pub const SPLIT_SILENCE_SECONDS: f64 = 1.0;

/// Merges speech regions (seconds, in order) into chunks no longer than `max_seconds`.
/// A region joins the current chunk unless the silence before it is at least
/// `split_silence_seconds`; a chunk that would grow past the limit is cut at the longest
/// silence between its regions (never inside a region), so chunks end on pauses, not in
/// sentences. A region longer than the limit becomes chunks of the limit.
pub fn merge_regions(
    regions: &[TimeRange],
    max_seconds: f64,
    split_silence_seconds: f64,
    total_samples: usize,
) -> Vec<Chunk> {
    let max = ((max_seconds * SAMPLE_RATE as f64) as usize).max(1);
    let split = (split_silence_seconds.max(0.0) * SAMPLE_RATE as f64) as usize;
    let to_sample =
        |s: f64| ((s * SAMPLE_RATE as f64).round().max(0.0) as usize).min(total_samples);
    let mut pieces: Vec<Chunk> = Vec::new();
    for r in regions {
        let (mut start, end) = (to_sample(r.start), to_sample(r.end));
        while end > start {
            let stop = end.min(start + max);
            pieces.push(Chunk { start, end: stop });
            start = stop;
        }
    }
    let mut chunks = Vec::new();
    let mut group: Vec<Chunk> = Vec::new();
    for piece in pieces {
        if let Some(last) = group.last()
            && piece.start.saturating_sub(last.end) >= split
        {
            chunks.push(span(&group));
            group.clear();
        }
        group.push(piece);
        while group.len() > 1 && span(&group).end.saturating_sub(span(&group).start) > max {
            // Cut at the longest silence; the later one of equals keeps chunks full.
            let cut = (1..group.len())
                .max_by_key(|&k| (group[k].start.saturating_sub(group[k - 1].end), k))
                .unwrap_or(group.len() - 1);
            chunks.push(span(&group[..cut]));
            group.drain(..cut);
        }
    }
    if !group.is_empty() {
        chunks.push(span(&group));
    }
    chunks
}

fn span(group: &[Chunk]) -> Chunk {
    Chunk {
        start: group.first().map_or(0, |c| c.start),
        end: group.last().map_or(0, |c| c.end),
    }
}

/// Lanes for `chunks` chunks decoded `batch_size` at a time with previous-text
/// conditioning: a lane's first window has no text before it, so lanes are kept at
/// least [`MIN_LANE_CHUNKS`] long, and there is at most one lane per batch row.
pub fn lane_count(chunks: usize, batch_size: usize) -> usize {
    chunks.div_ceil(MIN_LANE_CHUNKS).clamp(1, batch_size.max(1))
}

/// Shortest lane (in chunks) when conditioning on previous text.
pub const MIN_LANE_CHUNKS: usize = 8;

/// A sequence of chunks decoded in order, each window prompted with the lane's text.
#[derive(Debug, Default)]
struct Lane {
    /// Windows still to decode: `(chunk, first mel frame of the chunk)`.
    queue: VecDeque<(usize, usize)>,
    /// Tokens of the lane's text so far (the initial prompt first).
    tokens: Vec<u32>,
    /// Prompts take `tokens` from here (moved on when the prompt is reset).
    reset_since: usize,
    /// End of the lane's last speech, for the word-timing rules.
    last_speech: f64,
}

/// Decodes `chunks` of `samples` in batches; segments in time order.
#[derive(Debug)]
pub struct BatchedTranscriber<'a> {
    /// What it decodes with.
    pub context: DecodeContext<'a>,
    /// The log-mel front end.
    pub mel: &'a LogMel,
}

impl BatchedTranscriber<'_> {
    /// Segments of all chunks, in time order.
    pub fn run(&self, samples: &[f32], chunks: &[Chunk]) -> Result<Vec<RawSegment>, AsrError> {
        let ctx = &self.context;
        let o = ctx.options;
        let hotwords = ctx.hotword_tokens()?;
        let initial = ctx.initial_prompt_tokens()?;
        let conditioned = o.condition_on_previous_text;
        // Unconditioned windows do not depend on each other: one lane per chunk.
        let n_lanes = if conditioned {
            lane_count(chunks.len(), o.batch_size)
        } else {
            chunks.len()
        };
        let mut lanes: Vec<Lane> = (0..n_lanes)
            .map(|_| Lane {
                tokens: initial.clone(),
                ..Lane::default()
            })
            .collect();
        for c in 0..chunks.len() {
            lanes[c * n_lanes / chunks.len()].queue.push_back((c, 0));
        }
        // Features of the chunks being decoded (a chunk's mel holds 30 s of padding: all
        // of them at once would not fit a long input's memory), with their silent frames.
        let mut mels: HashMap<usize, (Mel, Vec<bool>)> = HashMap::new();
        let mut rng = Rng::new(o.decode.seed);
        let mut segments = Vec::new();
        loop {
            // The next window of each lane, lanes in order, up to a batch.
            let batch: Vec<(usize, usize, usize)> = lanes
                .iter()
                .enumerate()
                .filter_map(|(l, lane)| lane.queue.front().map(|&(c, seek)| (l, c, seek)))
                .take(o.batch_size.max(1))
                .collect();
            if batch.is_empty() {
                break;
            }
            // Progress: the earliest audio still being decoded.
            let done = batch
                .iter()
                .map(|&(_, c, _)| chunks[c].start)
                .min()
                .unwrap_or(0);
            ctx.progress(done as f64 / SAMPLE_RATE as f64)?;
            for &(_, c, _) in &batch {
                if let Entry::Vacant(slot) = mels.entry(c) {
                    let mel = self.mel.compute(&samples[chunks[c].start..chunks[c].end])?;
                    let silent = if o.word_timestamps {
                        silent_frames(&mel)
                    } else {
                        Vec::new()
                    };
                    slot.insert((mel, silent));
                }
            }
            let frames = batch
                .iter()
                .map(|&(_, c, seek)| {
                    Ok(features_of(&mels, c)?
                        .0
                        .n_frames()
                        .saturating_sub(seek)
                        .min(WINDOW_FRAMES))
                })
                .collect::<Result<Vec<usize>, AsrError>>()?;
            let tensors = batch
                .iter()
                .zip(&frames)
                .map(|(&(_, c, seek), &f)| {
                    mel_windows(&features_of(&mels, c)?.0, &[(seek, f)], ctx.model.device())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let features = ctx.model.encode(&candle_core::Tensor::cat(&tensors, 0)?)?;
            let previous: Vec<Vec<u32>> = batch
                .iter()
                .map(|&(l, _, _)| {
                    let lane = &lanes[l];
                    let mut p = hotwords.clone();
                    p.extend_from_slice(&lane.tokens[lane.reset_since..]);
                    p
                })
                .collect();
            let results = ctx.decode_rows(&features, &previous, &mut rng)?;
            for (k, (&(l, c, seek), result)) in batch.iter().zip(results).enumerate() {
                let lane = &mut lanes[l];
                lane.queue.pop_front();
                let (mel, silent) = features_of(&mels, c)?;
                let content = mel.n_frames();
                if o.decode.is_no_speech(&result) {
                    mels.remove(&c);
                    tracing::debug!(
                        chunk = c,
                        seek,
                        no_speech = result.no_speech_prob,
                        avg_logprob = result.avg_logprob,
                        "no speech; skipping the rest of the chunk"
                    );
                    continue;
                }
                let chunk = chunks[c];
                let offset = (chunk.start + seek * HOP) as f64 / SAMPLE_RATE as f64;
                let outcome = ctx.window_outcome(
                    &result,
                    &features.narrow(0, k, 1)?,
                    offset,
                    frames[k],
                    silent.get(seek..seek + frames[k]).unwrap_or_default(),
                    &mut lane.last_speech,
                )?;
                // openai's seek rule within the chunk: resume after the last complete
                // segment, or after the last word when words are timed.
                let mut next = seek + outcome.advance;
                if o.word_timestamps
                    && !outcome.single_timestamp_ending
                    && let Some(end) = outcome.last_word_end
                    && end > offset
                {
                    next = seek + ((end - offset) * FRAMES_PER_SECOND).round() as usize;
                }
                let next = next.max(seek + 1);
                if next + MIN_REST_FRAMES < content {
                    lane.queue.push_front((c, next));
                } else {
                    mels.remove(&c);
                }
                for s in outcome.segments {
                    if s.start >= s.end || s.text.trim().is_empty() {
                        continue;
                    }
                    if conditioned {
                        lane.tokens.extend_from_slice(&s.tokens);
                    }
                    self.context.emit(&s);
                    segments.push(s);
                }
                if conditioned && result.temperature > o.prompt_reset_on_temperature {
                    lane.reset_since = lane.tokens.len();
                }
            }
        }
        segments.sort_by(|a, b| a.start.total_cmp(&b.start));
        Ok(segments)
    }
}

/// The features of chunk `c` (computed before its window is decoded).
fn features_of(
    mels: &HashMap<usize, (Mel, Vec<bool>)>,
    c: usize,
) -> Result<&(Mel, Vec<bool>), AsrError> {
    mels.get(&c)
        .ok_or_else(|| AsrError::State(format!("chunk {c} has no features")))
}

/// A chunk's undecoded rest shorter than this (1 s of frames) is left alone: it is the
/// VAD's padding, where decoding would only invent text.
const MIN_REST_FRAMES: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: f64, b: f64) -> TimeRange {
        TimeRange::new(a, b)
    }

    #[test]
    fn regions_merge_up_to_the_limit_and_cut_at_the_longest_silence() {
        let sr = SAMPLE_RATE;
        let c = |a: usize, b: usize| Chunk {
            start: a * sr,
            end: b * sr,
        };
        let regions = [r(0.0, 10.0), r(12.0, 25.0), r(26.0, 40.0)];
        // 0..40 does not fit: the 2 s silence is the cut, not the 1 s one.
        assert_eq!(
            merge_regions(&regions, 30.0, 5.0, 50 * sr),
            vec![c(0, 10), c(12, 40)]
        );
        // Silences of a second or more end chunks whatever their length.
        assert_eq!(
            merge_regions(&regions, 30.0, 1.0, 50 * sr),
            vec![c(0, 10), c(12, 25), c(26, 40)]
        );
        let long = merge_regions(&[r(1.0, 70.0)], 30.0, 1.0, 80 * sr);
        assert_eq!(long, vec![c(1, 31), c(31, 61), c(61, 70)]);
        // A short region is kept, on its own or merged.
        assert_eq!(
            merge_regions(&[r(3.0, 3.5), r(3.6, 4.0)], 30.0, 1.0, 10 * sr),
            vec![Chunk {
                start: 3 * sr,
                end: 4 * sr
            }]
        );
        assert!(merge_regions(&[], 30.0, 1.0, 10).is_empty());
    }

    #[test]
    fn lanes_are_long_enough_and_fill_the_batch() {
        assert_eq!(lane_count(0, 8), 1);
        assert_eq!(lane_count(5, 8), 1);
        assert_eq!(lane_count(17, 8), 3);
        assert_eq!(lane_count(1000, 8), 8);
        assert_eq!(lane_count(1000, 0), 1);
    }
}
