//! Token search over a batch of windows: greedy, sampling (best of N) and beam search, as
//! openai's `DecodingTask` runs them, with the decoder's KV cache carried between steps.
//!
//! Every item (window) of the batch has its own prompt, all of one length, so the prefill is
//! one `[items, T]` call; items finish independently and are dropped from the decoder state
//! as they do.
//! Logits come to the host once per step (`[rows, vocab]` f32): the filters and the beam
//! bookkeeping are sequential per row and cheap next to the network.

use candle_core::Tensor;

use super::filters::{LogitFilters, log_softmax};
use crate::AsrError;
use crate::model::{DecoderState, Whisper};

/// How tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// The most likely token (temperature 0, one row per item).
    Greedy,
    /// `best_of` independent samples at `temperature`; the best-ranked one wins.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Samples per item.
        best_of: usize,
    },
    /// Beam search with `beam_size` beams, stopping once `round(beam_size * patience)`
    /// sequences have finished.
    Beam {
        /// Beams per item.
        beam_size: usize,
        /// openai's patience factor (1.0 = stop at `beam_size` finished sequences).
        patience: f32,
    },
}

impl Strategy {
    fn rows_per_item(self) -> usize {
        match self {
            Strategy::Greedy => 1,
            Strategy::Sample { best_of, .. } => best_of.max(1),
            Strategy::Beam { beam_size, .. } => beam_size.max(1),
        }
    }
}

/// What one window decoded to (the best-ranked candidate).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTokens {
    /// Sampled tokens after the prompt, `<|endoftext|>` left out.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities (the end token's included).
    pub sum_logprob: f64,
    /// `sum_logprob / (tokens + 1)`, as openai reports it.
    pub avg_logprob: f64,
    /// Probability of `<|nospeech|>` at the `<|startoftranscript|>` position.
    pub no_speech_prob: f64,
}

/// A small deterministic generator for temperature sampling (splitmix64): runs are
/// reproducible for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The search of one batch.
#[derive(Debug, Clone)]
pub struct Search<'a> {
    /// The network.
    pub model: &'a Whisper,
    /// The prompt of each item, fed before sampling:
    /// `[<|startofprev|> text...] sot_sequence [<|notimestamps|>]`; all of one length.
    pub prompts: &'a [Vec<u32>],
    /// Index of `<|startoftranscript|>` in every prompt.
    pub sot_index: usize,
    /// `<|nospeech|>`.
    pub no_speech: u32,
    /// The logit filters.
    pub filters: &'a LogitFilters,
    /// How tokens are chosen.
    pub strategy: Strategy,
    /// `None`: rank by log-probability / length; `Some(a)`: by the Google NMT penalty
    /// `((5 + length) / 6) ^ a`.
    pub length_penalty: Option<f32>,
    /// Most tokens sampled per window.
    pub sample_len: usize,
}

/// One hypothesis of a row.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    sum_logprob: f64,
    done: bool,
}

/// Per-item search state.
#[derive(Debug)]
struct Item {
    /// Index of the item in the caller's batch.
    index: usize,
    rows: Vec<Hyp>,
    /// Finished beam-search sequences (tokens without `<|endoftext|>`, score).
    finished: Vec<(Vec<u32>, f64)>,
    no_speech_prob: f64,
    complete: bool,
}

impl Search<'_> {
    /// Decodes a batch of encoded windows `[B, 1500, d_model]`; one result per window.
    pub fn run(&self, features: &Tensor, rng: &mut Rng) -> Result<Vec<WindowTokens>, AsrError> {
        let n_items = features.dim(0)?;
        if n_items == 0 {
            return Ok(Vec::new());
        }
        let prompt_len = self.prompts.first().map_or(0, Vec::len);
        if self.prompts.len() != n_items || self.prompts.iter().any(|p| p.len() != prompt_len) {
            return Err(AsrError::State(format!(
                "{} prompts (of one length) needed for {n_items} windows",
                self.prompts.len()
            )));
        }
        if self.sot_index >= prompt_len {
            return Err(AsrError::State(format!(
                "sot index {} outside a prompt of {prompt_len} tokens",
                self.sot_index
            )));
        }
        let rpi = self.strategy.rows_per_item();
        let max_positions = self.model.config().max_target_positions;
        let sample_len = self
            .sample_len
            .min(max_positions.saturating_sub(prompt_len));
        // The prompt is the same for every row of an item: prefill one row per item, then
        // copy its cache to the item's other rows (beam search would otherwise run the
        // whole prompt once per beam).
        let mut state = self.model.decoder_state(features, 1)?;
        let eot = self.filters.eot;

        // Prefill up to <|startoftranscript|>: its logits give the no-speech probability.
        let mut logits = self.feed(&mut state, 0..self.sot_index + 1)?;
        let mut items: Vec<Item> = (0..n_items)
            .map(|i| {
                let mut row = logits[i].clone();
                log_softmax(&mut row);
                Item {
                    index: i,
                    rows: vec![
                        Hyp {
                            tokens: Vec::new(),
                            sum_logprob: 0.0,
                            done: false,
                        };
                        rpi
                    ],
                    finished: Vec::new(),
                    no_speech_prob: row
                        .get(self.no_speech as usize)
                        .map_or(0.0, |l| f64::from(l.exp())),
                    complete: false,
                }
            })
            .collect();
        if self.sot_index + 1 < prompt_len {
            logits = self.feed(&mut state, self.sot_index + 1..prompt_len)?;
        }
        if rpi > 1 {
            state.expand_rows(rpi)?;
            logits = logits
                .into_iter()
                .flat_map(|row| std::iter::repeat_n(row, rpi))
                .collect();
        }

        let mut active: Vec<usize> = (0..n_items).collect();
        for step in 0..sample_len {
            let last_step = step + 1 == sample_len;
            let mut src: Vec<u32> = Vec::with_capacity(active.len() * rpi);
            let mut next: Vec<u32> = Vec::with_capacity(active.len() * rpi);
            for (pos, &item_index) in active.iter().enumerate() {
                let item = &mut items[item_index];
                let rows = &logits[pos * rpi..(pos + 1) * rpi];
                let base = (pos * rpi) as u32;
                match self.strategy {
                    Strategy::Greedy | Strategy::Sample { .. } => {
                        for (j, hyp) in item.rows.iter_mut().enumerate() {
                            src.push(base + j as u32);
                            if hyp.done {
                                next.push(eot);
                                continue;
                            }
                            let mut l = rows[j].clone();
                            self.filters.apply(&mut l, &hyp.tokens);
                            let token = match self.strategy {
                                Strategy::Sample { temperature, .. } if temperature > 0.0 => {
                                    sample(&l, temperature, rng)
                                }
                                _ => argmax(&l),
                            };
                            log_softmax(&mut l);
                            hyp.sum_logprob += f64::from(l[token as usize]);
                            if token == eot {
                                hyp.done = true;
                            } else {
                                hyp.tokens.push(token);
                            }
                            next.push(token);
                        }
                        item.complete = item.rows.iter().all(|h| h.done);
                    }
                    Strategy::Beam {
                        beam_size,
                        patience,
                    } => {
                        let (sources, tokens) =
                            self.beam_step(item, rows, beam_size, patience, eot)?;
                        src.extend(sources.iter().map(|&s| base + s as u32));
                        next.extend(tokens);
                    }
                }
                if last_step {
                    item.complete = true;
                }
            }
            if matches!(self.strategy, Strategy::Beam { .. }) {
                state.reorder(&src)?;
            }
            let keep: Vec<usize> = (0..active.len())
                .filter(|&p| !items[active[p]].complete)
                .collect();
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                state.keep_items(&keep)?;
                next = keep
                    .iter()
                    .flat_map(|&p| next[p * rpi..(p + 1) * rpi].to_vec())
                    .collect();
                active = keep.iter().map(|&p| active[p]).collect();
            }
            let t = Tensor::from_vec(next, (active.len() * rpi, 1), self.model.device())?;
            logits = self.model.decode(&mut state, &t, false)?.to_vec2::<f32>()?;
        }
        Ok(items.into_iter().map(|item| self.finish(item)).collect())
    }

    /// Feeds positions `range` of each item's prompt to its (single) row; returns the last
    /// position's logits per row.
    fn feed(
        &self,
        state: &mut DecoderState,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<Vec<f32>>, AsrError> {
        let len = range.len();
        let data: Vec<u32> = self
            .prompts
            .iter()
            .flat_map(|p| p[range.clone()].iter().copied())
            .collect();
        let t = Tensor::from_vec(data, (self.prompts.len(), len), self.model.device())?;
        Ok(self.model.decode(state, &t, false)?.to_vec2::<f32>()?)
    }

    /// One beam-search step of one item (openai's `BeamSearchDecoder.update`): returns the
    /// source row (within the item) and next token of each new beam.
    fn beam_step(
        &self,
        item: &mut Item,
        rows: &[Vec<f32>],
        beam_size: usize,
        patience: f32,
        eot: u32,
    ) -> Result<(Vec<usize>, Vec<u32>), AsrError> {
        let max_candidates = ((beam_size as f32 * patience).round() as usize).max(1);
        if item.complete {
            // Finished items wait for removal: keep rows as they are, feed end tokens.
            return Ok(((0..rows.len()).collect(), vec![eot; rows.len()]));
        }
        // (source row, token, score); identical sequences (all rows are identical at the
        // first step) count once.
        let mut scored: Vec<(usize, u32, f64)> = Vec::with_capacity(rows.len() * (beam_size + 1));
        for (j, hyp) in item.rows.iter().enumerate() {
            let mut l = rows[j].clone();
            self.filters.apply(&mut l, &hyp.tokens);
            log_softmax(&mut l);
            for (token, lp) in top_k(&l, beam_size + 1) {
                if lp == f32::NEG_INFINITY {
                    continue;
                }
                let duplicate = scored
                    .iter()
                    .any(|&(s, t, _)| t == token && item.rows[s].tokens == hyp.tokens);
                if !duplicate {
                    scored.push((j, token, hyp.sum_logprob + f64::from(lp)));
                }
            }
        }
        scored.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut new_rows = Vec::with_capacity(beam_size);
        let mut sources = Vec::with_capacity(beam_size);
        let mut tokens = Vec::with_capacity(beam_size);
        let mut newly_finished = Vec::new();
        for (j, token, score) in scored {
            if token == eot {
                newly_finished.push((item.rows[j].tokens.clone(), score));
            } else {
                let mut t = item.rows[j].tokens.clone();
                t.push(token);
                new_rows.push(Hyp {
                    tokens: t,
                    sum_logprob: score,
                    done: false,
                });
                sources.push(j);
                tokens.push(token);
                if new_rows.len() == beam_size {
                    break;
                }
            }
        }
        for f in newly_finished {
            if item.finished.len() >= max_candidates {
                break;
            }
            item.finished.push(f);
        }
        if new_rows.is_empty() {
            // Every candidate ended: nothing left to extend.
            item.complete = true;
            return Ok(((0..rows.len()).collect(), vec![eot; rows.len()]));
        }
        // Keep the row count: repeat the last beam if fewer survived (its duplicate never
        // wins over the original since scores tie and the original sorts first).
        while new_rows.len() < beam_size {
            let last = new_rows.len() - 1;
            new_rows.push(new_rows[last].clone());
            sources.push(sources[last]);
            tokens.push(tokens[last]);
        }
        item.rows = new_rows;
        item.complete = item.finished.len() >= max_candidates;
        Ok((sources, tokens))
    }

    /// The best-ranked candidate of a finished item.
    fn finish(&self, item: Item) -> WindowTokens {
        let mut candidates: Vec<(Vec<u32>, f64)> = match self.strategy {
            Strategy::Beam { beam_size, .. } => {
                let mut c = item.finished;
                if c.len() < beam_size {
                    let mut open: Vec<&Hyp> = item.rows.iter().collect();
                    open.sort_by(|a, b| b.sum_logprob.total_cmp(&a.sum_logprob));
                    for h in open {
                        if c.len() >= beam_size {
                            break;
                        }
                        if !c.iter().any(|(t, _)| *t == h.tokens) {
                            c.push((h.tokens.clone(), h.sum_logprob));
                        }
                    }
                }
                c
            }
            _ => item
                .rows
                .into_iter()
                .map(|h| (h.tokens, h.sum_logprob))
                .collect(),
        };
        let penalty = |len: usize| match self.length_penalty {
            None => len.max(1) as f64,
            Some(a) => ((5.0 + len as f64) / 6.0).powf(f64::from(a)),
        };
        let mut best = 0;
        let mut best_score = f64::NEG_INFINITY;
        for (i, (tokens, lp)) in candidates.iter().enumerate() {
            let score = lp / penalty(tokens.len());
            if score > best_score {
                best = i;
                best_score = score;
            }
        }
        let (tokens, sum_logprob) = if candidates.is_empty() {
            (Vec::new(), f64::NEG_INFINITY)
        } else {
            candidates.swap_remove(best)
        };
        tracing::trace!(
            item = item.index,
            tokens = tokens.len(),
            sum_logprob,
            "window decoded"
        );
        WindowTokens {
            avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
            tokens,
            sum_logprob,
            no_speech_prob: item.no_speech_prob,
        }
    }
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in l.iter().enumerate() {
        if v > l[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest entries as `(index, value)`, largest first.
fn top_k(l: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in l.iter().enumerate() {
        if top.len() < k || v > top[top.len() - 1].1 {
            let at = top.partition_point(|&(_, t)| t >= v);
            top.insert(at, (i as u32, v));
            top.truncate(k);
        }
    }
    top
}

/// Samples from `softmax(l / temperature)`.
fn sample(l: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = l
        .iter()
        .map(|&v| f64::from((v - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    argmax(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted() {
        let l = [0.1f32, 5.0, -1.0, 3.0, 4.0];
        assert_eq!(top_k(&l, 3), vec![(1, 5.0), (4, 4.0), (3, 3.0)]);
    }

    #[test]
    fn sampling_follows_temperature() {
        let l = [0.0f32, 2.0, f32::NEG_INFINITY];
        let mut rng = Rng::new(7);
        let n = 4000;
        let ones = (0..n).filter(|_| sample(&l, 1.0, &mut rng) == 1).count();
        // p(1) = e^2 / (1 + e^2) = 0.881
        let p = ones as f64 / n as f64;
        assert!((p - 0.881).abs() < 0.03, "{p}");
        assert!((0..200).all(|_| sample(&l, 1.0, &mut rng) != 2));
    }
}
