//! The VAD-batched mode (faster-whisper's `BatchedInferencePipeline`): Silero VAD finds the
//! speech, regions are merged into chunks of at most 30 s, the chunks are encoded and
//! decoded many at a time with the same prompt (no previous-text conditioning), and every
//! timestamp is shifted back by its chunk's start, so times are exact on the input's
//! timeline.

use mica_core::time::TimeRange;

use crate::AsrError;
use crate::decode::{Rng, WindowDecoder};
use crate::longform::{RawSegment, mel_windows, split_by_timestamps, window_segments};
use crate::mel::{HOP, LogMel, SAMPLE_RATE, WINDOW_FRAMES};
use crate::model::Whisper;
use crate::tokenizer::WhisperTokenizer;
use crate::transcribe::TranscribeOptions;
use crate::words::WordAligner;

/// A chunk of audio decoded as one window: `[start, end)` in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

/// Merges speech regions (seconds) into chunks no longer than `max_seconds`
/// (faster-whisper's `merge_segments`): a region joins the current chunk while the chunk
/// stays within the limit; a region longer than the limit becomes chunks of the limit.
pub fn merge_regions(regions: &[TimeRange], max_seconds: f64, total_samples: usize) -> Vec<Chunk> {
    let max = (max_seconds * SAMPLE_RATE as f64) as usize;
    let to_sample =
        |s: f64| ((s * SAMPLE_RATE as f64).round().max(0.0) as usize).min(total_samples);
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current: Option<Chunk> = None;
    for r in regions {
        let (mut start, end) = (to_sample(r.start), to_sample(r.end));
        if end <= start {
            continue;
        }
        // Split a region longer than a window.
        while end - start > max {
            if let Some(c) = current.take() {
                chunks.push(c);
            }
            chunks.push(Chunk {
                start,
                end: start + max,
            });
            start += max;
        }
        current = match current {
            Some(c) if end - c.start <= max => Some(Chunk {
                start: c.start,
                end,
            }),
            Some(c) => {
                chunks.push(c);
                Some(Chunk { start, end })
            }
            None => Some(Chunk { start, end }),
        };
    }
    chunks.extend(current);
    chunks
}

/// Decodes `chunks` of `samples` in batches; segments in time order.
#[derive(Debug)]
pub struct BatchedTranscriber<'a> {
    /// The network.
    pub model: &'a Whisper,
    /// Its tokenizer.
    pub tokenizer: &'a WhisperTokenizer,
    /// The log-mel front end.
    pub mel: &'a LogMel,
    /// Options.
    pub options: &'a TranscribeOptions,
    /// Language token for the prompt (multilingual models).
    pub language: Option<u32>,
    /// Language code, for word splitting.
    pub language_code: String,
}

impl BatchedTranscriber<'_> {
    /// Segments of all chunks, in time order.
    pub fn run(&self, samples: &[f32], chunks: &[Chunk]) -> Result<Vec<RawSegment>, AsrError> {
        let o = self.options;
        let decoder = WindowDecoder {
            model: self.model,
            tokenizer: self.tokenizer,
            options: &o.decode,
        };
        let aligner = WordAligner {
            model: self.model,
            tokenizer: self.tokenizer,
            prepend_punctuations: &o.prepend_punctuations,
            append_punctuations: &o.append_punctuations,
        };
        let mut previous = Vec::new();
        if let Some(p) = o.initial_prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            previous = self.tokenizer.encode(&format!(" {}", p.trim()))?;
        }
        if let Some(h) = o.hotwords.as_deref().filter(|h| !h.trim().is_empty()) {
            let mut hot = self.tokenizer.encode(&format!(" {}", h.trim()))?;
            hot.extend(previous);
            previous = hot;
        }
        let (prompt, sot_index) = decoder.prompt(&previous, self.language, o.task);
        let mut rng = Rng::new(o.decode.seed);
        let mut segments = Vec::new();
        let mut last_speech = 0.0;
        // A chunk may hold several utterances; when the decoder stops before the chunk's
        // end, the rest goes back into the queue from where it stopped (the seek rule,
        // per chunk), so nothing is lost and batches stay full.
        let mels = chunks
            .iter()
            .map(|c| self.mel.compute(&samples[c.start..c.end]))
            .collect::<Result<Vec<_>, _>>()?;
        let mut queue: std::collections::VecDeque<(usize, usize)> =
            (0..chunks.len()).map(|i| (i, 0)).collect();
        while !queue.is_empty() {
            let take = queue.len().min(o.batch_size.max(1));
            let batch: Vec<(usize, usize)> = queue.drain(..take).collect();
            let frames: Vec<usize> = batch
                .iter()
                .map(|&(c, seek)| mels[c].n_frames().saturating_sub(seek).min(WINDOW_FRAMES))
                .collect();
            let tensors = batch
                .iter()
                .zip(&frames)
                .map(|(&(c, seek), &f)| mel_windows(&mels[c], &[(seek, f)], self.model.device()))
                .collect::<Result<Vec<_>, _>>()?;
            let mel_batch = candle_core::Tensor::cat(&tensors, 0)?;
            let features = self.model.encode(&mel_batch)?;
            let results = decoder.decode(&features, &prompt, sot_index, &mut rng)?;
            for (k, (&(c, seek), result)) in batch.iter().zip(results).enumerate() {
                let chunk = chunks[c];
                let content = mels[c].n_frames();
                if o.decode.is_no_speech(&result) {
                    continue;
                }
                let offset = (chunk.start as f64 + (seek * HOP) as f64) / SAMPLE_RATE as f64;
                let (parts, advance, _) =
                    split_by_timestamps(self.tokenizer, &result.tokens, frames[k]);
                let chunk_end = chunk.end as f64 / SAMPLE_RATE as f64;
                let mut current = window_segments(self.tokenizer, &result, parts, offset)?;
                for s in &mut current {
                    // Timestamps past the chunk's audio are padding: clamp to the chunk.
                    s.end = s.end.min(chunk_end);
                    s.start = s.start.min(s.end);
                }
                if o.word_timestamps {
                    let f = features.narrow(0, k, 1)?;
                    aligner.add_word_timestamps(
                        &f,
                        &mut current,
                        &self.language_code,
                        offset,
                        frames[k],
                        &mut last_speech,
                    )?;
                }
                let next = seek + advance.max(1);
                if next + MIN_REST_FRAMES < content {
                    queue.push_back((c, next));
                }
                segments.extend(
                    current
                        .into_iter()
                        .filter(|s| s.start < s.end && !s.text.trim().is_empty()),
                );
            }
        }
        segments.sort_by(|a, b| a.start.total_cmp(&b.start));
        Ok(segments)
    }
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
    fn regions_merge_up_to_the_limit() {
        let sr = SAMPLE_RATE;
        let chunks = merge_regions(&[r(0.0, 10.0), r(12.0, 25.0), r(26.0, 40.0)], 30.0, 50 * sr);
        assert_eq!(
            chunks,
            vec![
                Chunk {
                    start: 0,
                    end: 25 * sr
                },
                Chunk {
                    start: 26 * sr,
                    end: 40 * sr
                },
            ]
        );
        let long = merge_regions(&[r(1.0, 70.0)], 30.0, 80 * sr);
        assert_eq!(long.len(), 3);
        assert_eq!(
            long[2],
            Chunk {
                start: 61 * sr,
                end: 70 * sr
            }
        );
        assert!(merge_regions(&[], 30.0, 10).is_empty());
    }
}
