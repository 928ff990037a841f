//! What both long-form modes ([`crate::longform`] and [`crate::vad_batch`]) decode with,
//! and the per-window steps they share: the prompt, the decoding, the cut into segments
//! and the word timings.

use candle_core::Tensor;

use crate::AsrError;
use crate::batcher::WindowBatcher;
use crate::decode::{Rng, WindowDecoder, WindowResult};
use crate::mel::FRAMES_PER_SECOND;
use crate::model::Whisper;
use crate::options::TranscribeOptions;
use crate::segment::{RawSegment, split_by_timestamps, window_segments};
use crate::tokenizer::WhisperTokenizer;
use crate::words::{WordAligner, last_word_end};

/// Called with the seconds of audio done before each window; `false` cancels.
pub type Observer<'a> = &'a (dyn Fn(f64) -> bool + Sync);

/// Called with each segment as soon as its window is decoded (before the transcription
/// ends): the times are the input's, the speaker is not set. In the VAD-batched mode
/// segments come in the order their chunks finish, not in time order.
pub type SegmentSink<'a> = &'a (dyn Fn(&mica_core::document::Segment) + Sync);

/// The network, tokenizer, options and language one transcription decodes with.
#[derive(Clone, Copy)]
pub struct DecodeContext<'a> {
    /// The network.
    pub model: &'a Whisper,
    /// Its tokenizer.
    pub tokenizer: &'a WhisperTokenizer,
    /// Options.
    pub options: &'a TranscribeOptions,
    /// Language token for the prompt (multilingual models).
    pub language: Option<u32>,
    /// Language code, for word splitting.
    pub language_code: &'a str,
    /// Progress and cancellation.
    pub observer: Observer<'a>,
    /// Each segment as it is decoded.
    pub on_segment: SegmentSink<'a>,
    /// Batches this transcription's windows with those of concurrent ones, when set.
    pub batcher: Option<&'a WindowBatcher>,
}

impl std::fmt::Debug for DecodeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeContext")
            .field("options", self.options)
            .field("language", &self.language)
            .field("language_code", &self.language_code)
            .finish_non_exhaustive()
    }
}

/// One window's segments and how far it moved through its audio.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOutcome {
    /// Its segments on the input's timeline (empty ones included; callers drop them).
    pub segments: Vec<RawSegment>,
    /// Mel frames of the window consumed by complete segments (openai's seek advance).
    pub advance: usize,
    /// The window ended on a single timestamp: all of it was consumed.
    pub single_timestamp_ending: bool,
    /// End of the last timed word as the alignment gave it (before any snapping to
    /// sound): openai's seek rule resumes there.
    pub last_word_end: Option<f64>,
}

impl<'a> DecodeContext<'a> {
    /// Reports `seconds` done to the observer; [`AsrError::Cancelled`] when it says stop.
    pub fn progress(&self, seconds: f64) -> Result<(), AsrError> {
        if (self.observer)(seconds) {
            Ok(())
        } else {
            Err(AsrError::Cancelled)
        }
    }

    /// Hands a kept segment to the sink.
    pub fn emit(&self, segment: &RawSegment) {
        (self.on_segment)(&segment.to_segment());
    }

    /// The window decoder of these options.
    pub fn decoder(&self) -> WindowDecoder<'a> {
        WindowDecoder {
            model: self.model,
            tokenizer: self.tokenizer,
            options: &self.options.decode,
        }
    }

    /// The word aligner of these options.
    pub fn aligner(&self) -> WordAligner<'a> {
        WordAligner {
            model: self.model,
            tokenizer: self.tokenizer,
            prepend_punctuations: &self.options.prepend_punctuations,
            append_punctuations: &self.options.append_punctuations,
        }
    }

    /// Tokens of the initial prompt (the text taken as preceding the audio), if any.
    pub fn initial_prompt_tokens(&self) -> Result<Vec<u32>, AsrError> {
        self.encode_option(self.options.initial_prompt.as_deref())
    }

    /// Tokens of the hotwords put before every window's previous text, if any.
    pub fn hotword_tokens(&self) -> Result<Vec<u32>, AsrError> {
        self.encode_option(self.options.hotwords.as_deref())
    }

    fn encode_option(&self, text: Option<&str>) -> Result<Vec<u32>, AsrError> {
        match text.filter(|t| !t.trim().is_empty()) {
            Some(t) => self.tokenizer.encode(&format!(" {}", t.trim())),
            None => Ok(Vec::new()),
        }
    }

    /// Encodes one window `mel` `[1, n_mels, 3000]` and decodes it with `previous` as its
    /// previous text: in a batch with concurrent transcriptions' windows when a batcher
    /// is set (the same prompt, the fallback and its sampler this transcription's own),
    /// else alone. Returns the encoder output `[1, 1500, d]` and the result.
    pub fn encode_and_decode(
        &self,
        mel: Tensor,
        previous: Vec<u32>,
        rng: &mut Rng,
    ) -> Result<(Tensor, WindowResult), AsrError> {
        // Batches stack full 30 s windows only.
        if let Some(batcher) = self.batcher
            && self.options.decode.temperatures.first() == Some(&0.0)
            && mel.dim(2)? == crate::mel::WINDOW_FRAMES
        {
            let decoder = self.decoder();
            let (prompt, sot_index) = decoder.prompt(&previous, self.language, self.options.task);
            if let Some((features, first)) =
                batcher.window(&decoder, mel.clone(), prompt.clone(), sot_index)
            {
                let results = decoder.decode_after(
                    &features,
                    &[prompt],
                    sot_index,
                    rng,
                    Some(vec![first]),
                )?;
                return Ok((features, only(results)?));
            }
        }
        let features = self.model.encode(&mel)?;
        let results = self.decode_rows(&features, &[previous], rng)?;
        Ok((features, only(results)?))
    }

    /// Decodes windows `features` `[B, 1500, d]`, row `i` with `previous[i]` as its
    /// previous text, in one batch per kind of prompt: rows without previous text, and rows
    /// with it. The decoder takes prompts of one length, so the previous texts of a batch
    /// are cut to the shortest among them (the most recent tokens kept); lanes decoded
    /// side by side reach the prompt's 223-token cap within a few windows.
    pub fn decode_rows(
        &self,
        features: &Tensor,
        previous: &[Vec<u32>],
        rng: &mut Rng,
    ) -> Result<Vec<WindowResult>, AsrError> {
        let decoder = self.decoder();
        let o = self.options;
        let mut out: Vec<Option<WindowResult>> = vec![None; previous.len()];
        for with_text in [false, true] {
            let group: Vec<usize> = (0..previous.len())
                .filter(|&j| previous[j].is_empty() != with_text)
                .collect();
            if group.is_empty() {
                continue;
            }
            // Text tokens each prompt keeps: the shortest of the group (within the cap).
            let common = group
                .iter()
                .map(|&j| {
                    decoder
                        .prompt(&previous[j], self.language, o.task)
                        .1
                        .saturating_sub(1)
                })
                .min()
                .unwrap_or(0);
            let mut sot_index = 0;
            let prompts: Vec<Vec<u32>> = group
                .iter()
                .map(|&j| {
                    let p = &previous[j];
                    let (prompt, sot) =
                        decoder.prompt(&p[p.len().saturating_sub(common)..], self.language, o.task);
                    sot_index = sot;
                    prompt
                })
                .collect();
            let rows = if group.len() == previous.len() {
                features.clone()
            } else {
                let idx: Vec<u32> = group.iter().map(|&j| j as u32).collect();
                let idx = Tensor::from_vec(idx, group.len(), features.device())?;
                features.index_select(&idx, 0)?
            };
            let results = decoder.decode(&rows, &prompts, sot_index, rng)?;
            if results.len() != group.len() {
                return Err(AsrError::State(format!(
                    "the decoder returned {} results for {} windows",
                    results.len(),
                    group.len()
                )));
            }
            for (&j, r) in group.iter().zip(results) {
                out[j] = Some(r);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Cuts a decoded window (`frames` mel frames of audio from `time_offset` s, its
    /// encoder output `features` `[1, 1500, d]`) into segments, with word timings when
    /// asked for. `last_speech` is the end of the speech before it (word-timing rules);
    /// `silent` marks the window's frames of digital silence (see [`silent_frames`]).
    pub fn window_outcome(
        &self,
        result: &WindowResult,
        features: &Tensor,
        time_offset: f64,
        frames: usize,
        silent: &[bool],
        last_speech: &mut f64,
    ) -> Result<WindowOutcome, AsrError> {
        let (parts, advance, single_timestamp_ending) =
            split_by_timestamps(self.tokenizer, &result.tokens, frames);
        let mut segments = window_segments(self.tokenizer, result, parts, time_offset)?;
        // Timestamps past the window's audio point into its zero padding.
        let end = time_offset + frames as f64 / FRAMES_PER_SECOND;
        for s in &mut segments {
            s.end = s.end.min(end);
            s.start = s.start.min(s.end);
        }
        if self.options.word_timestamps {
            self.aligner().add_word_timestamps(
                features,
                &mut segments,
                self.language_code,
                time_offset,
                frames,
                last_speech,
            )?;
        }
        let last_word_end = last_word_end(&segments);
        if self.options.word_timestamps {
            snap_words_to_sound(&mut segments, silent, time_offset);
        }
        Ok(WindowOutcome {
            segments,
            advance,
            single_timestamp_ending,
            last_word_end,
        })
    }
}

/// The result of a one-window decode.
fn only(results: Vec<WindowResult>) -> Result<WindowResult, AsrError> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| AsrError::State("the decoder returned no result".into()))
}

/// Moves word starts (ends) that the attention alignment put in digital silence forward
/// (back) to the word's first (last) sounding frame: no word is spoken in silence, and
/// Whisper's alignment lets the first word after a pause begin too early. Words wholly in
/// silence are left alone; segments are tightened to their words. `silent` holds the
/// window's frames from `time_offset` s.
fn snap_words_to_sound(segments: &mut [RawSegment], silent: &[bool], time_offset: f64) {
    let frame = |t: f64| {
        (((t - time_offset) * FRAMES_PER_SECOND).round().max(0.0) as usize).min(silent.len())
    };
    let time = |f: usize| ((time_offset + f as f64 / FRAMES_PER_SECOND) * 100.0).round() / 100.0;
    for s in segments {
        for w in &mut s.words {
            let (a, b) = (frame(w.start), frame(w.end));
            let Some(first) = (a..b).find(|&f| !silent[f]) else {
                continue;
            };
            let last = (first..b).rev().find(|&f| !silent[f]).unwrap_or(first);
            if first > a {
                w.start = time(first).min(w.end);
            }
            if last + 1 < b {
                w.end = time(last + 1).max(w.start);
            }
        }
        if let (Some(first), Some(last)) = (s.words.first(), s.words.last()) {
            s.start = first.start;
            s.end = last.end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mel::{LogMel, silent_frames};
    use mica_core::document::Word;

    fn word(start: f64, end: f64) -> Word {
        Word {
            text: " w".into(),
            start,
            end,
            probability: 1.0,
        }
    }

    #[test]
    fn words_leave_digital_silence() -> Result<(), AsrError> {
        // 1 s of zeros, 0.5 s of a tone, 1 s of zeros.
        let mut samples = vec![0.0f32; 16_000];
        samples.extend((0..8_000).map(|i| 0.3 * (i as f32 * 0.17).sin()));
        samples.extend(std::iter::repeat_n(0.0, 16_000));
        let mel = LogMel::new(80)?.compute(&samples)?;
        let silent = silent_frames(&mel);
        assert!(silent[..95].iter().all(|&s| s));
        assert!(silent[102..148].iter().all(|&s| !s));
        assert!(silent[156..].iter().all(|&s| s));
        let mut segments = vec![RawSegment {
            start: 0.4,
            end: 2.2,
            tokens: Vec::new(),
            text: " w w w".into(),
            avg_logprob: 0.0,
            no_speech_prob: 0.0,
            temperature: 0.0,
            compression_ratio: 1.0,
            // Early into the silence, inside the tone, late into the silence, and wholly
            // in the silence after it.
            words: vec![
                word(0.4, 1.2),
                word(1.2, 1.3),
                word(1.3, 1.8),
                word(2.0, 2.2),
            ],
        }];
        // The window starts at 0.2 s: frames are counted from there.
        snap_words_to_sound(&mut segments, &silent[20..], 0.2);
        let w = &segments[0].words;
        assert!((w[0].start - 1.0).abs() <= 0.03, "{:?}", w[0]);
        assert_eq!((w[0].end, w[1].start, w[1].end), (1.2, 1.2, 1.3));
        assert!((w[2].end - 1.5).abs() <= 0.03, "{:?}", w[2]);
        assert_eq!((w[3].start, w[3].end), (2.0, 2.2));
        assert_eq!(segments[0].start, w[0].start);
        assert_eq!(segments[0].end, 2.2);
        Ok(())
    }
}
