//! Word error rate: word-level Levenshtein alignment of a hypothesis against a reference.

use serde::{Deserialize, Serialize};

use crate::text::normalize_english;

/// Edit counts of one or more aligned utterances; add them up for a corpus WER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WerStats {
    /// Words in the reference.
    pub reference_words: usize,
    /// Substituted words.
    pub substitutions: usize,
    /// Reference words missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis words not in the reference.
    pub insertions: usize,
}

impl WerStats {
    /// Substitutions + deletions + insertions.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Errors per reference word (0 for an empty reference with an empty hypothesis,
    /// 1 per inserted word when the reference is empty).
    pub fn wer(&self) -> f64 {
        if self.reference_words == 0 {
            return self.insertions as f64;
        }
        self.errors() as f64 / self.reference_words as f64
    }
}

impl std::ops::Add for WerStats {
    type Output = WerStats;
    fn add(self, o: WerStats) -> WerStats {
        WerStats {
            reference_words: self.reference_words + o.reference_words,
            substitutions: self.substitutions + o.substitutions,
            deletions: self.deletions + o.deletions,
            insertions: self.insertions + o.insertions,
        }
    }
}

impl std::iter::Sum for WerStats {
    fn sum<I: Iterator<Item = WerStats>>(iter: I) -> WerStats {
        iter.fold(WerStats::default(), |a, b| a + b)
    }
}

/// Aligns already-split word sequences.
pub fn word_errors<S: AsRef<str>>(reference: &[S], hypothesis: &[S]) -> WerStats {
    let (n, m) = (reference.len(), hypothesis.len());
    // cost[j] and the edit counts behind it, one row at a time.
    #[derive(Clone, Copy, Default)]
    struct Cell {
        cost: usize,
        s: usize,
        d: usize,
        i: usize,
    }
    let mut prev: Vec<Cell> = (0..=m)
        .map(|j| Cell {
            cost: j,
            i: j,
            ..Cell::default()
        })
        .collect();
    let mut row = vec![Cell::default(); m + 1];
    for r in 1..=n {
        row[0] = Cell {
            cost: r,
            d: r,
            ..Cell::default()
        };
        for h in 1..=m {
            let same = reference[r - 1].as_ref() == hypothesis[h - 1].as_ref();
            let diag = prev[h - 1];
            let mut best = Cell {
                cost: diag.cost + usize::from(!same),
                s: diag.s + usize::from(!same),
                ..diag
            };
            let up = prev[h];
            if up.cost + 1 < best.cost {
                best = Cell {
                    cost: up.cost + 1,
                    d: up.d + 1,
                    ..up
                };
            }
            let left = row[h - 1];
            if left.cost + 1 < best.cost {
                best = Cell {
                    cost: left.cost + 1,
                    i: left.i + 1,
                    ..left
                };
            }
            row[h] = best;
        }
        std::mem::swap(&mut prev, &mut row);
    }
    let last = prev[m];
    WerStats {
        reference_words: n,
        substitutions: last.s,
        deletions: last.d,
        insertions: last.i,
    }
}

/// WER statistics of `hypothesis` against `reference` after English normalisation
/// ([`normalize_english`]) of both.
pub fn wer_english(reference: &str, hypothesis: &str) -> WerStats {
    let r = normalize_english(reference);
    let h = normalize_english(hypothesis);
    let r: Vec<&str> = r.split_whitespace().collect();
    let h: Vec<&str> = h.split_whitespace().collect();
    word_errors(&r, &h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_kind_of_edit() {
        let r = ["a", "b", "c", "d"];
        assert_eq!(word_errors(&r, &r).errors(), 0);
        let s = word_errors(&r, &["a", "x", "c", "d"]);
        assert_eq!((s.substitutions, s.deletions, s.insertions), (1, 0, 0));
        let s = word_errors(&r, &["a", "c", "d"]);
        assert_eq!((s.substitutions, s.deletions, s.insertions), (0, 1, 0));
        let s = word_errors(&r, &["a", "b", "y", "c", "d"]);
        assert_eq!((s.substitutions, s.deletions, s.insertions), (0, 0, 1));
        assert!((word_errors(&r, &[] as &[&str]).wer() - 1.0).abs() < 1e-12);
        let total: WerStats = [word_errors(&r, &r), word_errors(&r, &["a"])]
            .into_iter()
            .sum();
        assert_eq!((total.reference_words, total.errors()), (8, 3));
    }

    #[test]
    fn english_wer_ignores_case_and_punctuation() {
        let s = wer_english(
            "and so my fellow americans",
            " And so, my fellow Americans.",
        );
        assert_eq!(s.errors(), 0);
    }
}
