//! Decoding 30-second windows: prompt construction, logit filters, greedy / sampling /
//! beam search, temperature fallback and language detection.
//!
//! [`WindowDecoder::decode`] runs a batch of encoded windows, each with its prompt, and
//! retries, at the next temperature, only the windows whose result fails the compression
//! ratio or log-probability checks (openai's `decode_with_fallback`, with faster-whisper's
//! choice among failed attempts).

mod filters;
mod search;

use candle_core::{IndexOp, Tensor};
use serde::{Deserialize, Serialize};

pub(crate) use filters::LogitFilters;
pub(crate) use search::{Rng, Search, Strategy, WindowTokens};

use crate::AsrError;
use crate::model::Whisper;
use crate::text::{compression_ratio, repeated_tail};
use crate::tokenizer::WhisperTokenizer;

/// Transcribe in the spoken language, or translate to English (multilingual models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Text in the language spoken.
    #[default]
    Transcribe,
    /// English text whatever the language spoken.
    Translate,
}

impl std::str::FromStr for Task {
    type Err = AsrError;
    fn from_str(s: &str) -> Result<Task, AsrError> {
        match s {
            "transcribe" => Ok(Task::Transcribe),
            "translate" => Ok(Task::Translate),
            _ => Err(crate::error::invalid_option(format!(
                "task {s:?}: use transcribe or translate"
            ))),
        }
    }
}

/// How each window is decoded; the defaults are faster-whisper's (and openai's CLI's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// Beams at temperature 0; 1 is greedy decoding.
    pub beam_size: usize,
    /// Samples per window at temperatures above 0.
    pub best_of: usize,
    /// Beam search stops after `round(beam_size * patience)` finished sequences.
    pub patience: f32,
    /// `None`: rank candidates by log-probability / length; `Some(a)`: Google NMT penalty.
    pub length_penalty: Option<f32>,
    /// Temperatures tried in order until a result passes the checks below.
    pub temperatures: Vec<f32>,
    /// Retry when the text's zlib compression ratio is above this (repetition loops).
    pub compression_ratio_threshold: Option<f64>,
    /// Retry when the mean token log-probability is below this.
    pub log_prob_threshold: Option<f64>,
    /// A window whose no-speech probability is above this (and whose log-probability is
    /// below `log_prob_threshold`) is silence: no text.
    pub no_speech_threshold: Option<f64>,
    /// Suppress a blank / end token as the first sampled token.
    pub suppress_blank: bool,
    /// Token ids suppressed at every step; `None` takes the checkpoint's config list.
    pub suppress_tokens: Option<Vec<u32>>,
    /// Decode without timestamp tokens (one segment per window).
    pub without_timestamps: bool,
    /// Latest start of the first timestamp in a window, in seconds.
    pub max_initial_timestamp: f64,
    /// Most tokens sampled per window (at most half the decoder context, 224).
    pub sample_len: Option<usize>,
    /// Seed of the sampler used at temperatures above 0 (runs are reproducible).
    pub seed: u64,
    /// Hallucination guard: a window whose no-speech probability is above this holds no
    /// speech whatever its log-probability (Whisper's " You" / " Thank you." on silence).
    pub confident_no_speech_threshold: Option<f64>,
    /// Hallucination guard: a window that failed the checks at every temperature holds no
    /// speech when its no-speech probability is above this (tones, music, noise). Off by
    /// default, as in faster-whisper: speech that repeats itself (telephone prompts, lists)
    /// fails the compression check at every temperature, and beside digital silence its
    /// no-speech probability passes 0.3, so at 0.3 whole windows of real speech were
    /// dropped (24 of the 189 utterances of the long-english set with silent pauses).
    pub failed_no_speech_threshold: Option<f64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: None,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            suppress_blank: true,
            suppress_tokens: None,
            without_timestamps: false,
            max_initial_timestamp: 1.0,
            sample_len: None,
            seed: 0,
            confident_no_speech_threshold: Some(0.9),
            failed_no_speech_threshold: None,
        }
    }
}

impl DecodeOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), AsrError> {
        let bad = |m: String| Err(crate::error::invalid_option(m));
        if self.beam_size == 0 || self.beam_size > 64 {
            return bad(format!("beam_size {} must be 1 to 64", self.beam_size));
        }
        if self.best_of == 0 || self.best_of > 64 {
            return bad(format!("best_of {} must be 1 to 64", self.best_of));
        }
        if !(self.patience.is_finite() && self.patience > 0.0) {
            return bad(format!("patience {} must be above 0", self.patience));
        }
        if self.temperatures.is_empty() {
            return bad("give at least one temperature (0 for deterministic decoding)".into());
        }
        if let Some(t) = self
            .temperatures
            .iter()
            .find(|t| !(t.is_finite() && **t >= 0.0))
        {
            return bad(format!("temperature {t} must be 0 or more"));
        }
        if let Some(lp) = self.length_penalty
            && !(lp.is_finite() && (0.0..=1.0).contains(&lp))
        {
            return bad(format!("length_penalty {lp} must be in [0, 1]"));
        }
        if !(self.max_initial_timestamp.is_finite() && self.max_initial_timestamp >= 0.0) {
            return bad(format!(
                "max_initial_timestamp {} must be 0 or more seconds",
                self.max_initial_timestamp
            ));
        }
        if let Some(0) = self.sample_len {
            return bad("sample_len must be at least 1".into());
        }
        Ok(())
    }
}

/// One decoded window after temperature fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// Sampled tokens (text and timestamps), `<|endoftext|>` left out.
    pub tokens: Vec<u32>,
    /// The text tokens decoded.
    pub text: String,
    /// Mean log-probability per token.
    pub avg_logprob: f64,
    /// Probability that the window holds no speech.
    pub no_speech_prob: f64,
    /// Temperature of the accepted attempt.
    pub temperature: f32,
    /// zlib compression ratio of the text.
    pub compression_ratio: f64,
    /// No temperature gave a result that passed the checks (this is the best failure).
    pub failed: bool,
}

impl DecodeOptions {
    /// Whether a decoded window is to be treated as holding no speech: openai's rule
    /// (no-speech probability above `no_speech_threshold` and log-probability below
    /// `log_prob_threshold`) plus the two hallucination guards.
    pub fn is_no_speech(&self, r: &WindowResult) -> bool {
        if let Some(ns) = self.no_speech_threshold
            && r.no_speech_prob > ns
            && self.log_prob_threshold.is_none_or(|lp| r.avg_logprob <= lp)
        {
            return true;
        }
        if self
            .confident_no_speech_threshold
            .is_some_and(|t| r.no_speech_prob > t)
        {
            return true;
        }
        r.failed
            && self
                .failed_no_speech_threshold
                .is_some_and(|t| r.no_speech_prob > t)
    }
}

/// Decodes batches of windows with one model, tokenizer and option set.
#[derive(Debug)]
pub struct WindowDecoder<'a> {
    /// The network.
    pub model: &'a Whisper,
    /// Its tokenizer.
    pub tokenizer: &'a WhisperTokenizer,
    /// Decoding options.
    pub options: &'a DecodeOptions,
}

impl WindowDecoder<'_> {
    /// The prompt for a window: `<|startofprev|>` and the last `previous` tokens (when any)
    /// then the start-of-transcript sequence and, without timestamps, `<|notimestamps|>`.
    /// Returns the prompt and the index of `<|startoftranscript|>` in it.
    pub fn prompt(&self, previous: &[u32], language: Option<u32>, task: Task) -> (Vec<u32>, usize) {
        let s = self.tokenizer.specials();
        let mut prompt = Vec::new();
        if !previous.is_empty() {
            let n_ctx = self.model.config().max_target_positions;
            let keep = (n_ctx / 2).saturating_sub(1);
            prompt.push(s.sot_prev);
            prompt.extend_from_slice(&previous[previous.len().saturating_sub(keep)..]);
        }
        let sot_index = prompt.len();
        prompt.extend(
            self.tokenizer
                .sot_sequence(language, task == Task::Translate),
        );
        if self.options.without_timestamps {
            prompt.push(s.no_timestamps);
        }
        (prompt, sot_index)
    }

    fn filters(&self) -> Result<LogitFilters, AsrError> {
        let s = self.tokenizer.specials();
        let cfg = self.model.config();
        let mut suppress = match &self.options.suppress_tokens {
            Some(list) => list.clone(),
            None => cfg.suppress_tokens.clone(),
        };
        suppress.extend(self.tokenizer.never_sampled());
        suppress.sort_unstable();
        suppress.dedup();
        let blank = if self.options.suppress_blank {
            Some(self.tokenizer.blank_ids()?)
        } else {
            None
        };
        Ok(LogitFilters {
            eot: s.eot,
            no_timestamps: s.no_timestamps,
            timestamp_begin: s.timestamp_begin,
            blank,
            suppress,
            timestamps: !self.options.without_timestamps,
            max_initial_timestamp_index: Some(
                (self.options.max_initial_timestamp / crate::tokenizer::TIMESTAMP_STEP).round()
                    as u32,
            ),
        })
    }

    /// Decodes every window of `features` `[B, 1500, d]`, window `i` with `prompts[i]` (all
    /// of one length, `<|startoftranscript|>` at `sot_index`), retrying failed windows at
    /// higher temperatures. `rng` drives sampling.
    pub fn decode(
        &self,
        features: &Tensor,
        prompts: &[Vec<u32>],
        sot_index: usize,
        rng: &mut Rng,
    ) -> Result<Vec<WindowResult>, AsrError> {
        self.decode_after(features, prompts, sot_index, rng, None)
    }

    /// The attempts at the first temperature, before any check: what a batch of windows
    /// from several callers shares, each caller then going on with
    /// [`WindowDecoder::decode_after`].
    pub(crate) fn first_attempts(
        &self,
        features: &Tensor,
        prompts: &[Vec<u32>],
        sot_index: usize,
        rng: &mut Rng,
    ) -> Result<Vec<WindowResult>, AsrError> {
        let temperature = self.options.temperatures.first().copied().unwrap_or(0.0);
        self.attempt(features, prompts, sot_index, temperature, rng)
    }

    /// One attempt at `temperature` for every window of `features`.
    fn attempt(
        &self,
        features: &Tensor,
        prompts: &[Vec<u32>],
        sot_index: usize,
        temperature: f32,
        rng: &mut Rng,
    ) -> Result<Vec<WindowResult>, AsrError> {
        let o = self.options;
        let filters = self.filters()?;
        let n_ctx = self.model.config().max_target_positions;
        let sample_len = o.sample_len.unwrap_or(n_ctx / 2).min(n_ctx / 2);
        let strategy = if temperature > 0.0 {
            Strategy::Sample {
                temperature,
                best_of: o.best_of,
            }
        } else if o.beam_size > 1 {
            Strategy::Beam {
                beam_size: o.beam_size,
                patience: o.patience,
            }
        } else {
            Strategy::Greedy
        };
        let search = Search {
            model: self.model,
            prompts,
            sot_index,
            no_speech: self.tokenizer.specials().no_speech,
            filters: &filters,
            strategy,
            length_penalty: o.length_penalty,
            sample_len,
        };
        search
            .run(features, rng)?
            .into_iter()
            .map(|w| self.result(w, temperature))
            .collect()
    }

    /// [`WindowDecoder::decode`] where the first temperature's attempts are `first` when
    /// given (decoded already, in a batch with other callers' windows).
    pub(crate) fn decode_after(
        &self,
        features: &Tensor,
        prompts: &[Vec<u32>],
        sot_index: usize,
        rng: &mut Rng,
        mut first: Option<Vec<WindowResult>>,
    ) -> Result<Vec<WindowResult>, AsrError> {
        let o = self.options;
        let n = features.dim(0)?;
        if prompts.len() != n {
            return Err(AsrError::State(format!(
                "{} prompts for {n} windows",
                prompts.len()
            )));
        }
        if first.as_ref().is_some_and(|f| f.len() != n) {
            return Err(AsrError::State(format!(
                "first attempts for {n} windows do not match"
            )));
        }
        let mut best: Vec<Option<WindowResult>> = vec![None; n];
        // Failed attempts per window, for faster-whisper's choice when all fail.
        let mut attempts: Vec<Vec<WindowResult>> = vec![Vec::new(); n];
        let mut pending: Vec<usize> = (0..n).collect();
        for &temperature in &o.temperatures {
            if pending.is_empty() {
                break;
            }
            let out = match first.take() {
                Some(done) => done,
                None => {
                    let batch = if pending.len() == n {
                        features.clone()
                    } else {
                        let idx: Vec<u32> = pending.iter().map(|&i| i as u32).collect();
                        let idx = Tensor::from_vec(idx, pending.len(), features.device())?;
                        features.index_select(&idx, 0)?
                    };
                    let pending_prompts: Vec<Vec<u32>> =
                        pending.iter().map(|&i| prompts[i].clone()).collect();
                    self.attempt(&batch, &pending_prompts, sot_index, temperature, rng)?
                }
            };
            let mut still = Vec::new();
            for (&i, result) in pending.iter().zip(out) {
                let mut fallback = false;
                if let Some(t) = o.compression_ratio_threshold
                    && result.compression_ratio > t
                {
                    fallback = true;
                }
                if let Some(t) = o.log_prob_threshold
                    && result.avg_logprob < t
                {
                    fallback = true;
                }
                if let (Some(ns), Some(lp)) = (o.no_speech_threshold, o.log_prob_threshold)
                    && result.no_speech_prob > ns
                    && result.avg_logprob < lp
                {
                    // Silence: no point retrying, the window will be skipped.
                    fallback = false;
                }
                if fallback {
                    tracing::debug!(
                        window = i,
                        temperature,
                        compression_ratio = result.compression_ratio,
                        avg_logprob = result.avg_logprob,
                        "window fails the checks; retrying at a higher temperature"
                    );
                    attempts[i].push(result);
                    still.push(i);
                } else {
                    best[i] = Some(result);
                }
            }
            pending = still;
        }
        for i in pending {
            best[i] = Some(self.pick_failed(std::mem::take(&mut attempts[i]))?);
        }
        Ok(best.into_iter().flatten().collect())
    }

    /// faster-whisper's choice when every temperature failed: the likeliest attempt among
    /// those under the compression threshold, else among all; a repetition loop left at
    /// the end is cut.
    fn pick_failed(&self, attempts: Vec<WindowResult>) -> Result<WindowResult, AsrError> {
        let threshold = self.options.compression_ratio_threshold;
        let under: Vec<&WindowResult> = attempts
            .iter()
            .filter(|r| threshold.is_none_or(|t| r.compression_ratio <= t))
            .collect();
        let pool: Vec<&WindowResult> = if under.is_empty() {
            attempts.iter().collect()
        } else {
            under
        };
        let Some(best) = pool
            .into_iter()
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        else {
            return Err(AsrError::State("no decoding attempt was made".into()));
        };
        let mut best = best.clone();
        best.failed = true;
        if threshold.is_some_and(|t| best.compression_ratio > t)
            && let Some(keep) = repeated_tail(&best.tokens, 12, 3)
        {
            tracing::debug!(
                cut = best.tokens.len() - keep,
                "cutting a repeated loop at the end of a window"
            );
            best.tokens.truncate(keep);
            best.text = self.tokenizer.decode(&best.tokens)?;
            best.compression_ratio = compression_ratio(&best.text);
        }
        Ok(best)
    }

    fn result(&self, w: WindowTokens, temperature: f32) -> Result<WindowResult, AsrError> {
        let text = self.tokenizer.decode(&w.tokens)?;
        Ok(WindowResult {
            compression_ratio: compression_ratio(&text),
            text,
            tokens: w.tokens,
            avg_logprob: w.avg_logprob,
            no_speech_prob: w.no_speech_prob,
            temperature,
            failed: false,
        })
    }
}

/// Language probabilities of each window of `features` `[B, 1500, d]`: the decoder's
/// distribution over language tokens after `<|startoftranscript|>`, sorted likeliest
/// first as `(code, probability)`.
pub fn detect_language(
    model: &Whisper,
    tokenizer: &WhisperTokenizer,
    features: &Tensor,
) -> Result<Vec<Vec<(String, f64)>>, AsrError> {
    if !tokenizer.is_multilingual() {
        return Err(AsrError::Language(
            "this checkpoint is English-only: it cannot detect languages (set the language to en)"
                .into(),
        ));
    }
    let mut state = model.decoder_state(features, 1)?;
    let b = features.dim(0)?;
    let sot = tokenizer.specials().sot;
    let t = Tensor::from_vec(vec![sot; b], (b, 1), model.device())?;
    let logits = model.decode(&mut state, &t, false)?;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let row = logits.i(i)?.to_vec1::<f32>()?;
        let langs = tokenizer.languages();
        let vals: Vec<f32> = langs
            .iter()
            .map(|(_, id)| row.get(*id as usize).copied().unwrap_or(f32::NEG_INFINITY))
            .collect();
        let max = vals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = vals.iter().map(|&v| f64::from(v - max).exp()).sum();
        let mut probs: Vec<(String, f64)> = langs
            .iter()
            .zip(&vals)
            .map(|((code, _), &v)| (code.clone(), f64::from(v - max).exp() / sum))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.push(probs);
    }
    Ok(out)
}
