//! Word timestamps: dynamic time warping over the cross-attention of the checkpoint's
//! alignment heads, as openai-whisper's `find_alignment` / `add_word_timestamps` do
//! (softmax over the window's frames, per-head standardisation over tokens, median filter
//! of width 7 over time, mean of heads, DTW, words cut at token boundaries, punctuation
//! merged into neighbours, long first / last words clipped).

use candle_core::{D, Tensor};
use mica_core::document::Word;

use crate::AsrError;
use crate::model::Whisper;
use crate::segment::RawSegment;
use crate::tokenizer::WhisperTokenizer;

/// Audio positions (encoder frames) per second.
const TOKENS_PER_SECOND: f64 = 50.0;
/// Median filter width over time.
const MEDFILT_WIDTH: usize = 7;

/// One aligned word before it is placed in a segment.
#[derive(Debug, Clone, PartialEq)]
struct Timing {
    word: String,
    tokens: Vec<u32>,
    start: f64,
    end: f64,
    probability: f64,
}

/// Aligns the words of one window's segments.
#[derive(Debug)]
pub struct WordAligner<'a> {
    /// The network.
    pub model: &'a Whisper,
    /// Its tokenizer.
    pub tokenizer: &'a WhisperTokenizer,
    /// Punctuation merged into the following word.
    pub prepend_punctuations: &'a str,
    /// Punctuation merged into the preceding word.
    pub append_punctuations: &'a str,
}

impl WordAligner<'_> {
    /// Fills `words` of `segments` (all from the window whose features are `features`
    /// `[1, 1500, d]`, starting at `time_offset` s and holding `num_frames` mel frames of
    /// audio) and tightens the segments' bounds to their words.
    pub fn add_word_timestamps(
        &self,
        features: &Tensor,
        segments: &mut [RawSegment],
        language: &str,
        time_offset: f64,
        num_frames: usize,
        last_speech_timestamp: &mut f64,
    ) -> Result<(), AsrError> {
        let eot = self.tokenizer.specials().eot;
        let per_segment: Vec<Vec<u32>> = segments
            .iter()
            .map(|s| s.tokens.iter().copied().filter(|&t| t < eot).collect())
            .collect();
        let text_tokens: Vec<u32> = per_segment.iter().flatten().copied().collect();
        if text_tokens.is_empty() {
            return Ok(());
        }
        let mut alignment = self.find_alignment(features, &text_tokens, language, num_frames)?;
        let mut durations: Vec<f64> = alignment
            .iter()
            .map(|t| t.end - t.start)
            .filter(|d| *d != 0.0)
            .collect();
        durations.sort_by(f64::total_cmp);
        let median = median_of_sorted(&durations).min(0.7);
        let max_duration = median * 2.0;
        if !durations.is_empty() {
            // Long words at sentence boundaries are the alignment swallowing a pause.
            let marks = ".。!！?？";
            for i in 1..alignment.len() {
                if alignment[i].end - alignment[i].start > max_duration {
                    if marks.contains(alignment[i].word.as_str()) && !alignment[i].word.is_empty() {
                        alignment[i].end = alignment[i].start + max_duration;
                    } else if !alignment[i - 1].word.is_empty()
                        && marks.contains(alignment[i - 1].word.as_str())
                    {
                        alignment[i].start = alignment[i].end - max_duration;
                    }
                }
            }
        }
        merge_punctuations(
            &mut alignment,
            self.prepend_punctuations,
            self.append_punctuations,
        );
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        let mut word_index = 0;
        for (segment, tokens) in segments.iter_mut().zip(&per_segment) {
            let mut saved = 0;
            let mut words: Vec<Word> = Vec::new();
            while word_index < alignment.len() && saved < tokens.len() {
                let t = &alignment[word_index];
                if !t.word.is_empty() {
                    words.push(Word {
                        text: t.word.clone(),
                        start: round2(time_offset + t.start),
                        end: round2(time_offset + t.end),
                        probability: t.probability,
                    });
                }
                saved += t.tokens.len();
                word_index += 1;
            }
            if let (Some(_), Some(_)) = (words.first(), words.last()) {
                let n = words.len();
                // The first word after a pause is no longer than the median allows.
                if words[0].end - *last_speech_timestamp > median * 4.0
                    && (words[0].end - words[0].start > max_duration
                        || (n > 1 && words[1].end - words[0].start > max_duration * 2.0))
                {
                    if n > 1 && words[1].end - words[1].start > max_duration {
                        let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                        words[0].end = boundary;
                        words[1].start = boundary;
                    }
                    words[0].start = (words[0].end - max_duration).max(0.0);
                }
                // Prefer the segment's own bounds when the edge words are too long.
                if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                    words[0].start = (words[0].end - median).min(segment.start).max(0.0);
                } else {
                    segment.start = words[0].start;
                }
                if segment.end > words[n - 1].start && segment.end + 0.5 < words[n - 1].end {
                    words[n - 1].end = (words[n - 1].start + median).max(segment.end);
                } else {
                    segment.end = words[n - 1].end;
                }
                // Keep the invariants exact: monotonic words inside their segment.
                let mut floor = segment.start;
                for w in &mut words {
                    w.start = w.start.max(floor).min(segment.end);
                    w.end = w.end.max(w.start).min(segment.end);
                    floor = w.end;
                }
                *last_speech_timestamp = segment.end;
            }
            segment.words = words;
        }
        Ok(())
    }

    /// openai's `find_alignment` for one window.
    fn find_alignment(
        &self,
        features: &Tensor,
        text_tokens: &[u32],
        language: &str,
        num_frames: usize,
    ) -> Result<Vec<Timing>, AsrError> {
        let s = *self.tokenizer.specials();
        let lang = self.tokenizer.language_token(language);
        let sot_seq = self.tokenizer.sot_sequence(lang, false);
        let mut tokens = sot_seq.clone();
        tokens.push(s.no_timestamps);
        tokens.extend_from_slice(text_tokens);
        tokens.push(s.eot);
        let n = text_tokens.len();

        // One decoder pass: the token probabilities (text tokens only, over the text
        // vocabulary) and the alignment heads' attention over the window's frames.
        let (logits, att) = self.model.alignment_pass(features, &tokens)?;
        let sampled = logits
            .narrow(0, sot_seq.len(), n)?
            .narrow(1, 0, s.eot as usize)?;
        let log_probs = candle_nn::ops::log_softmax(&sampled, D::Minus1)?;
        let idx = Tensor::from_slice(text_tokens, (n, 1), self.model.device())?;
        let probs: Vec<f32> = log_probs.gather(&idx, 1)?.exp()?.flatten_all()?.to_vec1()?;

        let (heads, rows, _) = att.dims3()?;
        let frames = (num_frames / 2).max(1).min(att.dim(2)?);
        let att: Vec<f32> = att.narrow(2, 0, frames)?.flatten_all()?.to_vec1()?;
        let mut matrix = vec![0.0f64; rows * frames];
        for h in 0..heads {
            let head = &att[h * rows * frames..(h + 1) * rows * frames];
            let mut w: Vec<f64> = head.iter().map(|&v| f64::from(v)).collect();
            for r in 0..rows {
                let row = &mut w[r * frames..(r + 1) * frames];
                let sum: f64 = row.iter().sum();
                if sum > 0.0 {
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
            // Standardise each frame over tokens.
            for f in 0..frames {
                let mean = (0..rows).map(|r| w[r * frames + f]).sum::<f64>() / rows as f64;
                let var = (0..rows)
                    .map(|r| (w[r * frames + f] - mean).powi(2))
                    .sum::<f64>()
                    / rows as f64;
                let std = var.sqrt();
                for r in 0..rows {
                    let v = &mut w[r * frames + f];
                    *v = if std > 0.0 { (*v - mean) / std } else { 0.0 };
                }
            }
            for r in 0..rows {
                let filtered = median_filter(&w[r * frames..(r + 1) * frames], MEDFILT_WIDTH);
                for (m, v) in matrix[r * frames..(r + 1) * frames]
                    .iter_mut()
                    .zip(filtered)
                {
                    *m += v / heads as f64;
                }
            }
        }
        // Rows from <|notimestamps|> to the last text token.
        let first = sot_seq.len();
        let used = rows - 1 - first;
        let cost: Vec<f64> = matrix[first * frames..(first + used) * frames]
            .iter()
            .map(|v| -v)
            .collect();
        let (text_indices, time_indices) = dtw(&cost, used, frames);

        let mut with_eot = text_tokens.to_vec();
        with_eot.push(s.eot);
        let words = self.tokenizer.split_to_words(&with_eot, language)?;
        if words.len() <= 1 {
            return Ok(Vec::new());
        }
        let mut boundaries = vec![0usize];
        for (_, toks) in &words[..words.len() - 1] {
            let last = *boundaries.last().unwrap_or(&0);
            boundaries.push(last + toks.len());
        }
        let jump_times: Vec<f64> = (0..text_indices.len())
            .filter(|&i| i == 0 || text_indices[i] != text_indices[i - 1])
            .map(|i| time_indices[i] as f64 / TOKENS_PER_SECOND)
            .collect();
        let at = |i: usize| {
            jump_times
                .get(i)
                .or(jump_times.last())
                .copied()
                .unwrap_or(0.0)
        };
        let mut out = Vec::with_capacity(words.len() - 1);
        for (k, (word, toks)) in words.iter().take(words.len() - 1).enumerate() {
            let (i, j) = (boundaries[k], boundaries[k + 1]);
            let p = &probs[i.min(n)..j.min(n)];
            let probability = if p.is_empty() {
                0.0
            } else {
                p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64
            };
            out.push(Timing {
                word: word.clone(),
                tokens: toks.clone(),
                start: at(i),
                end: at(j),
                probability,
            });
        }
        Ok(out)
    }
}

/// End of the last word of the last segment that has words.
pub(crate) fn last_word_end(segments: &[RawSegment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.last())
        .map(|w| w.end)
}

fn median_of_sorted(x: &[f64]) -> f64 {
    match x.len() {
        0 => 0.0,
        n if n % 2 == 1 => x[n / 2],
        n => (x[n / 2 - 1] + x[n / 2]) / 2.0,
    }
}

/// Median over a sliding window of `width` with reflect padding (openai's
/// `median_filter`); rows no longer than half the width are returned as they are.
pub fn median_filter(x: &[f64], width: usize) -> Vec<f64> {
    let pad = width / 2;
    let n = x.len();
    if n <= pad {
        return x.to_vec();
    }
    let reflect = |i: isize| -> f64 {
        let mut i = i;
        if i < 0 {
            i = -i;
        }
        if i >= n as isize {
            i = 2 * (n as isize - 1) - i;
        }
        x[i.clamp(0, n as isize - 1) as usize]
    };
    let mut window = vec![0.0; width];
    (0..n)
        .map(|c| {
            for (k, w) in window.iter_mut().enumerate() {
                *w = reflect(c as isize + k as isize - pad as isize);
            }
            window.sort_by(f64::total_cmp);
            window[pad]
        })
        .collect()
}

/// Dynamic time warping over a `rows x cols` cost matrix (openai's `dtw_cpu`): the
/// cheapest monotonic path from the top-left to the bottom-right corner, as (row, col)
/// index lists.
pub fn dtw(cost: &[f64], rows: usize, cols: usize) -> (Vec<usize>, Vec<usize>) {
    if rows == 0 || cols == 0 {
        return (Vec::new(), Vec::new());
    }
    let w = cols + 1;
    let mut acc = vec![f64::INFINITY; (rows + 1) * w];
    let mut trace = vec![-1i8; (rows + 1) * w];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * cols + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    trace[..=cols].fill(2);
    for i in 0..=rows {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 || j > 0 {
        path.push((i - 1, j.wrapping_sub(1)));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    // openai's backtrace can emit (-1, j) entries at the top edge; they never occur for
    // i >= 1 paths that start at (0, 0), which trace[0][0] guarantees.
    path.into_iter()
        .filter(|&(i, j)| i < rows && j < cols)
        .unzip()
}

/// Merges punctuation into neighbouring words (openai's `merge_punctuations`).
fn merge_punctuations(alignment: &mut [Timing], prepended: &str, appended: &str) {
    if alignment.len() < 2 {
        return;
    }
    let mut i = alignment.len() as isize - 2;
    let mut j = alignment.len() - 1;
    while i >= 0 {
        let iu = i as usize;
        let prev = alignment[iu].clone();
        let trimmed = prev.word.trim();
        if prev.word.starts_with(' ') && !trimmed.is_empty() && prepended.contains(trimmed) {
            let f = &mut alignment[j];
            f.word = format!("{}{}", prev.word, f.word);
            let mut toks = prev.tokens.clone();
            toks.extend_from_slice(&f.tokens);
            f.tokens = toks;
            alignment[iu].word.clear();
            alignment[iu].tokens.clear();
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0usize, 1usize);
    while j < alignment.len() {
        let follow = alignment[j].clone();
        if !alignment[i].word.ends_with(' ')
            && !follow.word.is_empty()
            && appended.contains(follow.word.as_str())
        {
            let p = &mut alignment[i];
            p.word.push_str(&follow.word);
            p.tokens.extend_from_slice(&follow.tokens);
            alignment[j].word.clear();
            alignment[j].tokens.clear();
        } else {
            i = j;
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS};

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // 3 tokens x 6 frames, cheap cells on a staircase.
        let mut cost = vec![1.0; 18];
        for (r, cs) in [(0, [0, 1]), (1, [2, 3]), (2, [4, 5])] {
            for c in cs {
                cost[r * 6 + c] = -1.0;
            }
        }
        let (ti, fi) = dtw(&cost, 3, 6);
        assert_eq!(ti, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(fi, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn median_filter_reflects() {
        let x = [1.0, 5.0, 2.0, 8.0, 3.0];
        assert_eq!(median_filter(&x, 3), vec![5.0, 2.0, 5.0, 3.0, 8.0]);
        assert_eq!(median_filter(&[1.0], 7), vec![1.0]);
    }

    fn timing(word: &str) -> Timing {
        Timing {
            word: word.into(),
            tokens: vec![1],
            start: 0.0,
            end: 0.0,
            probability: 1.0,
        }
    }

    #[test]
    fn punctuation_merges() {
        let mut a = vec![
            timing(" \""),
            timing(" Hello"),
            timing(","),
            timing(" world"),
            timing("."),
        ];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|t| t.word.as_str()).collect();
        assert_eq!(words, vec!["", " \" Hello,", "", " world.", ""]);
        assert_eq!(a[1].tokens.len(), 3);
    }
}
