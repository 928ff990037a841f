//! A decoded window cut into segments: openai's split at consecutive timestamp pairs, and
//! the segments before they become document segments ([`RawSegment`]).

use crate::AsrError;
use crate::decode::WindowResult;
use crate::mel::FRAMES_PER_SECOND;
use crate::tokenizer::WhisperTokenizer;

/// Audio frames per output position of the encoder (its second convolution has stride 2).
const INPUT_STRIDE: usize = 2;

/// A decoded segment before it becomes a document segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawSegment {
    /// Start, seconds on the input's timeline.
    pub(crate) start: f64,
    /// End, seconds on the input's timeline.
    pub(crate) end: f64,
    /// Its tokens, timestamps included.
    pub(crate) tokens: Vec<u32>,
    /// Its text.
    pub(crate) text: String,
    /// Mean log-probability of the window it came from.
    pub(crate) avg_logprob: f64,
    /// No-speech probability of the window it came from.
    pub(crate) no_speech_prob: f64,
    /// Temperature the window was decoded at.
    pub(crate) temperature: f32,
    /// Compression ratio of the window's text.
    pub(crate) compression_ratio: f64,
    /// Word timings, when asked for.
    pub(crate) words: Vec<mica_core::document::Word>,
}

/// A window-relative segment: start s, end s, its tokens.
pub(crate) type WindowPart = (f64, f64, Vec<u32>);

/// Splits a window's tokens into segments at consecutive timestamp pairs (openai's rule).
/// Returns the segments as `(start s, end s, tokens)` relative to the window and how many
/// frames `seek` advances.
pub(crate) fn split_by_timestamps(
    tokenizer: &WhisperTokenizer,
    tokens: &[u32],
    segment_frames: usize,
) -> (Vec<WindowPart>, usize, bool) {
    let is_ts = |t: u32| tokenizer.is_timestamp(t);
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
        .collect();
    let mut segments = Vec::new();
    let advance;
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &cut in &slices {
            let sliced = &tokens[last..cut];
            if let (Some(&first), Some(&end)) = (sliced.first(), sliced.last()) {
                segments.push((
                    tokenizer.timestamp_seconds(first),
                    tokenizer.timestamp_seconds(end),
                    sliced.to_vec(),
                ));
            }
            last = cut;
        }
        advance = if single_timestamp_ending {
            segment_frames
        } else {
            // Resume at the last complete segment's end timestamp.
            let last_ts = tokens[last - 1];
            let pos = (last_ts - tokenizer.specials().timestamp_begin) as usize;
            pos * INPUT_STRIDE
        };
    } else {
        let mut duration = segment_frames as f64 / FRAMES_PER_SECOND;
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| is_ts(t))
            && last_ts != tokenizer.specials().timestamp_begin
        {
            duration = tokenizer.timestamp_seconds(last_ts);
        }
        segments.push((0.0, duration, tokens.to_vec()));
        advance = segment_frames;
    }
    (segments, advance, single_timestamp_ending)
}

/// Turns a window's split segments into [`RawSegment`]s at `time_offset`, dropping empty
/// ones.
pub(crate) fn window_segments(
    tokenizer: &WhisperTokenizer,
    result: &WindowResult,
    parts: Vec<WindowPart>,
    time_offset: f64,
) -> Result<Vec<RawSegment>, AsrError> {
    let mut out = Vec::with_capacity(parts.len());
    for (start, end, tokens) in parts {
        let text = tokenizer.decode(&tokens)?;
        out.push(RawSegment {
            start: round3(time_offset + start),
            end: round3(time_offset + end),
            tokens,
            text,
            avg_logprob: result.avg_logprob,
            no_speech_prob: result.no_speech_prob,
            temperature: result.temperature,
            compression_ratio: result.compression_ratio,
            words: Vec::new(),
        });
    }
    Ok(out)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl RawSegment {
    /// The document's segment (no speaker yet).
    pub fn to_segment(&self) -> mica_core::document::Segment {
        mica_core::document::Segment {
            start: self.start,
            end: self.end,
            text: self.text.clone(),
            speaker: None,
            words: self.words.clone(),
            avg_logprob: self.avg_logprob,
            no_speech_prob: self.no_speech_prob,
        }
    }
}
