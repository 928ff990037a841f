//! Long-form transcription by openai's sequential seek algorithm (whisper `transcribe()`,
//! faster-whisper `generate_segments`): decode the 30 s window at `seek`, cut its tokens
//! into segments at timestamp pairs, move `seek` to the last complete segment's end (or
//! the window's end), carry the text as the next window's prompt, repeat.

use candle_core::{Device, Tensor};

use crate::AsrError;
use crate::context::{DecodeContext, silent_frames};
use crate::decode::{Rng, WindowResult};
use crate::mel::{HOP, Mel, SAMPLE_RATE, WINDOW_FRAMES};
use crate::tokenizer::WhisperTokenizer;

/// Mel frames per second (100).
pub const FRAMES_PER_SECOND: f64 = SAMPLE_RATE as f64 / HOP as f64;

/// Audio frames per output position of the encoder (its second convolution has stride 2).
const INPUT_STRIDE: usize = 2;

/// A decoded segment before it becomes a document segment.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    /// Start, seconds on the input's timeline.
    pub start: f64,
    /// End, seconds on the input's timeline.
    pub end: f64,
    /// Its tokens, timestamps included.
    pub tokens: Vec<u32>,
    /// Its text.
    pub text: String,
    /// Mean log-probability of the window it came from.
    pub avg_logprob: f64,
    /// No-speech probability of the window it came from.
    pub no_speech_prob: f64,
    /// Temperature the window was decoded at.
    pub temperature: f32,
    /// Compression ratio of the window's text.
    pub compression_ratio: f64,
    /// Word timings, when asked for.
    pub words: Vec<mica_core::document::Word>,
}

/// `[B, n_mels, 3000]` windows of `mel`: `(start frame, frames)` each; frames past `frames`
/// are zeros, as openai pads a short last window (`pad_or_trim` of the cut mel).
pub fn mel_windows(
    mel: &Mel,
    windows: &[(usize, usize)],
    device: &Device,
) -> Result<Tensor, AsrError> {
    let n_mels = mel.n_mels();
    let mut out = vec![0.0f32; windows.len() * n_mels * WINDOW_FRAMES];
    for (b, &(start, frames)) in windows.iter().enumerate() {
        let from = start.min(mel.total_frames());
        let to = (start + frames.min(WINDOW_FRAMES)).min(mel.total_frames());
        for m in 0..n_mels {
            out[(b * n_mels + m) * WINDOW_FRAMES..][..to - from]
                .copy_from_slice(&mel.row(m)[from..to]);
        }
    }
    Ok(
        Tensor::from_vec(out, (windows.len(), n_mels, WINDOW_FRAMES), &Device::Cpu)?
            .to_device(device)?,
    )
}

/// A window-relative segment: start s, end s, its tokens.
pub type WindowPart = (f64, f64, Vec<u32>);

/// Splits a window's tokens into segments at consecutive timestamp pairs (openai's rule).
/// Returns the segments as `(start s, end s, tokens)` relative to the window and how many
/// frames `seek` advances.
pub fn split_by_timestamps(
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
pub fn window_segments(
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

/// The sequential long-form transcription of one input.
#[derive(Debug)]
pub struct SeekTranscriber<'a> {
    /// What it decodes with.
    pub context: DecodeContext<'a>,
}

impl SeekTranscriber<'_> {
    /// Segments of the audio behind `mel`, in time order.
    pub fn run(&self, mel: &Mel) -> Result<Vec<RawSegment>, AsrError> {
        let ctx = &self.context;
        let o = ctx.options;
        let mut rng = Rng::new(o.decode.seed);
        let content_frames = mel.n_frames();
        let mut all_tokens = ctx.initial_prompt_tokens()?;
        let hotwords = ctx.hotword_tokens()?;
        let mut prompt_reset_since = 0;
        let mut last_speech_timestamp = 0.0;
        let mut segments: Vec<RawSegment> = Vec::new();
        let silent = if o.word_timestamps {
            silent_frames(mel)
        } else {
            Vec::new()
        };
        let mut seek = 0usize;
        while seek < content_frames {
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            let segment_size = WINDOW_FRAMES.min(content_frames - seek);
            let mel_window = mel_windows(mel, &[(seek, segment_size)], ctx.model.device())?;
            let features = ctx.model.encode(&mel_window)?;
            let mut previous = hotwords.clone();
            previous.extend_from_slice(&all_tokens[prompt_reset_since..]);
            let Some(result) = ctx
                .decode_rows(&features, &[previous], &mut rng)?
                .into_iter()
                .next()
            else {
                return Err(AsrError::State("the decoder returned no result".into()));
            };
            if o.decode.is_no_speech(&result) {
                tracing::debug!(
                    time_offset,
                    no_speech = result.no_speech_prob,
                    avg_logprob = result.avg_logprob,
                    "no speech; skipping window"
                );
                seek += segment_size;
                continue;
            }
            let outcome = ctx.window_outcome(
                &result,
                &features,
                time_offset,
                segment_size,
                silent.get(seek..seek + segment_size).unwrap_or_default(),
                &mut last_speech_timestamp,
            )?;
            let previous_seek = seek;
            seek += outcome.advance;
            if o.word_timestamps
                && !outcome.single_timestamp_ending
                && let Some(end) = outcome.last_word_end
                && end > time_offset
            {
                seek = (end * FRAMES_PER_SECOND).round() as usize;
            }
            // Never stall: a window must move the seek forward.
            if seek <= previous_seek {
                seek = previous_seek + segment_size;
            }
            for s in outcome.segments {
                if s.start == s.end || s.text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&s.tokens);
                segments.push(s);
            }
            if !o.condition_on_previous_text || result.temperature > o.prompt_reset_on_temperature {
                prompt_reset_since = all_tokens.len();
            }
            tracing::debug!(
                time_offset,
                temperature = result.temperature,
                text = %result.text,
                "window decoded"
            );
        }
        Ok(segments)
    }
}
