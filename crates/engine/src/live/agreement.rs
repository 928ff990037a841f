//! Which words of a re-decoded buffer are settled: the local agreement of two consecutive
//! hypotheses (LocalAgreement-2, as whisper_streaming decides it). A word is settled once
//! two passes in a row put it in the same place after the settled text; settled words are
//! never revised.

use mica_core::document::Word;

/// Words of the settled tail remembered to drop a repeat at the head of a new hypothesis.
const TAIL_WORDS: usize = 5;
/// A hypothesis word starting this long before the last settled word's end is a re-hearing
/// of settled audio, not new speech (seconds).
const SETTLED_SLACK: f64 = 0.1;
/// Only a hypothesis that starts within this of the settled end can repeat settled words.
const REPEAT_REACH: f64 = 1.0;

/// The settled frontier and the previous pass's unsettled words.
#[derive(Debug, Default)]
pub(crate) struct Agreement {
    settled_end: f64,
    /// Normalised text of the latest settled words, oldest first.
    tail: Vec<String>,
    /// The previous hypothesis beyond the settled words.
    pending: Vec<Word>,
}

impl Agreement {
    /// Takes a new hypothesis (words in stream time) and returns the words it settles: the
    /// longest run at its head that the previous hypothesis also had.
    pub(crate) fn insert(&mut self, words: Vec<Word>) -> Vec<Word> {
        let mut new: Vec<Word> = words
            .into_iter()
            .filter(|w| w.start > self.settled_end - SETTLED_SLACK && !norm(&w.text).is_empty())
            .collect();
        self.drop_repeat(&mut new);
        let agreed = new
            .iter()
            .zip(&self.pending)
            .take_while(|(a, b)| norm(&a.text) == norm(&b.text))
            .count();
        let settled: Vec<Word> = new.drain(..agreed).collect();
        self.settle(&settled);
        self.pending = new;
        settled
    }

    /// Settles every pending word (the speech ended: no later pass can confirm them).
    pub(crate) fn flush(&mut self) -> Vec<Word> {
        let settled = std::mem::take(&mut self.pending);
        self.settle(&settled);
        settled
    }

    /// The previous hypothesis beyond the settled words.
    pub(crate) fn pending(&self) -> &[Word] {
        &self.pending
    }

    /// Forgets the pending words (they were shown as a partial and are dropped).
    pub(crate) fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// The end of the last settled word (0 before any).
    #[cfg(test)]
    pub(crate) fn settled_end(&self) -> f64 {
        self.settled_end
    }

    fn settle(&mut self, words: &[Word]) {
        for w in words {
            self.settled_end = self.settled_end.max(w.end);
            self.tail.push(norm(&w.text));
        }
        let extra = self.tail.len().saturating_sub(TAIL_WORDS);
        self.tail.drain(..extra);
    }

    /// Whisper, prompted with the settled text, sometimes hears its last words again at the
    /// head of the next window: drop the longest such repeat (1 to 5 words).
    fn drop_repeat(&self, new: &mut Vec<Word>) {
        let Some(first) = new.first() else { return };
        if (first.start - self.settled_end).abs() >= REPEAT_REACH {
            return;
        }
        let most = TAIL_WORDS.min(self.tail.len()).min(new.len());
        for n in (1..=most).rev() {
            let head = new[..n].iter().map(|w| norm(&w.text));
            if head.eq(self.tail[self.tail.len() - n..].iter().cloned()) {
                new.drain(..n);
                return;
            }
        }
    }
}

/// Cuts a hypothesis where it starts looping: a run of 1 to 8 words said a third time in a
/// row ("the conference is muted. the conference is muted. the conference is ..."), after
/// its first round. Whisper loops like this on short or cut-off audio. A phrase said
/// twice is left alone: people do say things twice.
pub(crate) fn cut_repeats(words: &mut Vec<Word>) {
    let n: Vec<String> = words.iter().map(|w| norm(&w.text)).collect();
    for i in 0..n.len() {
        if i + 2 < n.len() && n[i] == n[i + 1] && n[i] == n[i + 2] {
            words.truncate(i + 1);
            return;
        }
        for len in 2..=8 {
            if i + 3 * len <= n.len()
                && n[i..i + len] == n[i + len..i + 2 * len]
                && n[i..i + len] == n[i + 2 * len..i + 3 * len]
            {
                words.truncate(i + len);
                return;
            }
        }
    }
}

/// A word as compared between passes: lowercase letters and digits only, so "country." and
/// " Country" agree.
pub(crate) fn norm(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[(&str, f64)]) -> Vec<Word> {
        list.iter()
            .map(|&(text, start)| Word {
                start,
                end: start + 0.3,
                text: format!(" {text}"),
                probability: 0.9,
            })
            .collect()
    }

    fn texts(w: &[Word]) -> Vec<String> {
        w.iter().map(|w| w.text.trim().to_string()).collect()
    }

    #[test]
    fn a_word_settles_when_two_passes_agree() {
        let mut a = Agreement::default();
        assert!(a.insert(words(&[("and", 0.0), ("so", 0.4)])).is_empty());
        let s = a.insert(words(&[("and", 0.0), ("so,", 0.4), ("my", 0.8)]));
        assert_eq!(texts(&s), ["and", "so,"]);
        assert_eq!(texts(a.pending()), ["my"]);
        // A changed guess settles nothing and replaces the pending words.
        assert!(a.insert(words(&[("mine", 0.8)])).is_empty());
        let s = a.insert(words(&[("mine", 0.8), ("fellow", 1.2)]));
        assert_eq!(texts(&s), ["mine"]);
        assert_eq!(texts(&a.flush()), ["fellow"]);
        assert!(a.pending().is_empty());
        assert!((a.settled_end() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn settled_audio_heard_again_is_not_settled_twice() {
        let mut a = Agreement::default();
        a.insert(words(&[("ask", 1.0), ("not", 1.4)]));
        assert_eq!(
            texts(&a.insert(words(&[("ask", 1.0), ("not", 1.4)]))),
            ["ask", "not"]
        );
        // The next pass still has the settled words (by time) and repeats "not" at a
        // slightly later time: both are dropped.
        let next = words(&[("ask", 1.0), ("not", 1.65), ("what", 2.0)]);
        assert!(a.insert(next.clone()).is_empty());
        assert_eq!(texts(a.pending()), ["what"]);
        assert_eq!(texts(&a.insert(next)), ["what"]);
    }

    #[test]
    fn repetition_loops_are_cut_after_their_first_round() {
        let mut w = words(&[
            ("the", 0.0),
            ("conference", 0.3),
            ("is", 0.6),
            ("muted.", 0.9),
            ("the", 1.2),
            ("conference", 1.5),
            ("is", 1.8),
            ("muted.", 2.1),
            ("the", 2.4),
            ("conference", 2.7),
            ("is", 3.0),
            ("muted.", 3.3),
            ("the", 3.6),
        ]);
        cut_repeats(&mut w);
        assert_eq!(texts(&w), ["the", "conference", "is", "muted."]);
        let mut w = words(&[
            ("please,", 0.0),
            ("please,", 0.3),
            ("please", 0.6),
            ("enter", 0.9),
        ]);
        cut_repeats(&mut w);
        assert_eq!(texts(&w), ["please,"]);
        // Speech that does not loop is left whole (a word or a phrase said twice too).
        let mut w = words(&[
            ("ten", 0.0),
            ("ten", 0.3),
            ("of", 0.6),
            ("clubs.", 0.9),
            ("ten", 1.2),
            ("of", 1.5),
            ("clubs.", 1.8),
        ]);
        cut_repeats(&mut w);
        assert_eq!(w.len(), 7);
    }

    #[test]
    fn punctuation_and_case_do_not_block_agreement() {
        assert_eq!(norm(" Country."), "country");
        assert_eq!(norm("—"), "");
        let mut a = Agreement::default();
        a.insert(words(&[("Country", 0.0)]));
        assert_eq!(texts(&a.insert(words(&[("country.", 0.0)]))), ["country."]);
    }
}
