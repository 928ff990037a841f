//! openai's logit filters, applied to one row of logits on the host before sampling:
//! SuppressBlank, SuppressTokens and ApplyTimestampRules (whisper/decoding.py).

/// What the filters need to know about the vocabulary and the request.
#[derive(Debug, Clone)]
pub struct LogitFilters {
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`.
    pub timestamp_begin: u32,
    /// Suppressed at the first sampled position (a bare space and `<|endoftext|>`).
    pub blank: Option<Vec<u32>>,
    /// Suppressed at every position.
    pub suppress: Vec<u32>,
    /// Timestamp rules apply (false when decoding `<|notimestamps|>`).
    pub timestamps: bool,
    /// The first timestamp may be at most this many 0.02 s steps (openai: 1.0 s = 50).
    pub max_initial_timestamp_index: Option<u32>,
}

impl LogitFilters {
    /// Filters `logits` (one row, vocabulary wide) given the row's `sampled` tokens (those
    /// after the prompt).
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let vocab = logits.len();
        let kill = |logits: &mut [f32], range: std::ops::Range<usize>| {
            let end = range.end.min(vocab);
            if range.start < end {
                logits[range.start..end].fill(f32::NEG_INFINITY);
            }
        };
        if sampled.is_empty()
            && let Some(blank) = &self.blank
        {
            for &t in blank {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        for &t in &self.suppress {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if !self.timestamps {
            return;
        }
        let ts = self.timestamp_begin as usize;
        let eot = self.eot as usize;
        if let Some(l) = logits.get_mut(self.no_timestamps as usize) {
            *l = f32::NEG_INFINITY;
        }
        let is_ts = |t: u32| t >= self.timestamp_begin;
        let n = sampled.len();
        let last_was_timestamp = n >= 1 && is_ts(sampled[n - 1]);
        let penultimate_was_timestamp = n < 2 || is_ts(sampled[n - 2]);
        if last_was_timestamp {
            if penultimate_was_timestamp {
                // A pair closed a segment: text must follow.
                kill(logits, ts..vocab);
            } else {
                // A segment's end: another timestamp (the next start) or end of text.
                kill(logits, 0..eot);
            }
        }
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            // Timestamps never decrease; a single one may repeat only to open the next
            // segment at the time the previous ended.
            let floor = if last_was_timestamp && !penultimate_was_timestamp {
                last_ts
            } else {
                last_ts + 1
            };
            kill(logits, ts..floor as usize);
        }
        if n == 0 {
            // The first sampled token is a timestamp, at most max_initial_timestamp in.
            kill(logits, 0..ts);
            if let Some(max) = self.max_initial_timestamp_index {
                kill(logits, ts + max as usize + 1..vocab);
            }
        }
        // When the timestamps together are likelier than any text token, sample a timestamp.
        let max_all = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max_all == f32::NEG_INFINITY || ts >= vocab {
            return;
        }
        let lse_all = log_sum_exp(logits, max_all);
        let ts_max = logits[ts..]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let timestamp_logprob = log_sum_exp(&logits[ts..], ts_max) - lse_all;
        let text_max = logits[..ts]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let max_text_logprob = text_max - lse_all;
        if timestamp_logprob > max_text_logprob {
            kill(logits, 0..ts);
        }
    }
}

/// `log(sum(exp(x)))` given `max(x)`; `-inf` for an all `-inf` row.
pub fn log_sum_exp(x: &[f32], max: f32) -> f32 {
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    // Eight partial sums of terms <= 1 over at most a vocabulary keep f32 precision.
    max + crate::model::sum_exp(x, max).ln()
}

/// Log-softmax of one row, in place.
pub fn log_softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = log_sum_exp(x, max);
    for v in x.iter_mut() {
        *v -= lse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: u32 = 10;
    const NO_TS: u32 = 11;
    const TS: u32 = 12;

    fn filters() -> LogitFilters {
        LogitFilters {
            eot: EOT,
            no_timestamps: NO_TS,
            timestamp_begin: TS,
            blank: Some(vec![0, EOT]),
            suppress: vec![5],
            timestamps: true,
            max_initial_timestamp_index: Some(2),
        }
    }

    fn allowed(l: &[f32]) -> Vec<usize> {
        (0..l.len()).filter(|&i| l[i].is_finite()).collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut l = vec![0.0f32; 20];
        filters().apply(&mut l, &[]);
        assert_eq!(allowed(&l), vec![12, 13, 14]);
    }

    #[test]
    fn timestamp_pairs_and_order() {
        // After text then one timestamp: another timestamp (not earlier) or eot.
        let mut l = vec![0.0f32; 20];
        l[EOT as usize] = 5.0;
        filters().apply(&mut l, &[TS + 2, 1, TS + 4]);
        assert_eq!(allowed(&l), vec![10, 16, 17, 18, 19]);
        // After a pair: text only (no timestamps), suppressed tokens stay out.
        let mut l = vec![0.0f32; 20];
        filters().apply(&mut l, &[TS + 2, 1, TS + 4, TS + 4]);
        assert_eq!(allowed(&l), vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
        // Inside text: timestamps must be later than the last one.
        let mut l = vec![0.0f32; 20];
        l[1] = 5.0;
        filters().apply(&mut l, &[TS + 2, 1]);
        assert_eq!(
            allowed(&l),
            vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 15, 16, 17, 18, 19]
        );
    }

    #[test]
    fn likely_timestamps_win_over_text() {
        let mut l = vec![0.0f32; 20];
        for v in &mut l[TS as usize..] {
            *v = 3.0;
        }
        filters().apply(&mut l, &[TS, 1]);
        assert!(allowed(&l).iter().all(|&i| i >= TS as usize));
    }

    #[test]
    fn log_softmax_normalises() {
        let mut x = vec![1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        log_softmax(&mut x);
        let s: f32 = x.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
