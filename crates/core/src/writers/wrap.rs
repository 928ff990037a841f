//! Line breaking for subtitles: text into atoms (unbreakable pieces), atoms into lines.
//!
//! Width is counted in `char`s. Breaks fall at spaces and, for CJK scripts that do not use
//! spaces, between characters (not before closing or after opening punctuation). A piece
//! longer than a line is hard-wrapped at grapheme boundaries, so an accent never leaves its
//! letter and an emoji sequence never splits.

use unicode_segmentation::UnicodeSegmentation;

/// A piece of text no line break may fall inside.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Atom {
    /// The text, without surrounding spaces.
    pub text: String,
    /// Whether a space separates this atom from the previous one on the same line.
    pub space_before: bool,
    /// `text.chars().count()`, cached because wrapping sums it a lot.
    pub chars: usize,
}

impl Atom {
    fn new(text: String, space_before: bool) -> Self {
        let chars = text.chars().count();
        Self {
            text,
            space_before,
            chars,
        }
    }

    /// Characters this atom adds to a line after another atom.
    pub fn weight(&self) -> usize {
        self.chars + usize::from(self.space_before)
    }
}

/// Whitespace and control characters collapsed to single spaces, ends trimmed.
///
/// Subtitle and text formats end a cue or record at a newline, so none may survive.
pub(crate) fn normalize(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// True for scripts written without spaces, where a line may break between characters.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FFF      // radicals, Kangxi
        | 0x3000..=0x303F    // CJK symbols and punctuation
        | 0x3040..=0x30FF    // hiragana, katakana
        | 0x3100..=0x312F    // bopomofo
        | 0x31A0..=0x31FF    // bopomofo ext, katakana ext
        | 0x3400..=0x4DBF    // ext A
        | 0x4E00..=0x9FFF    // unified ideographs
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0xFF00..=0xFFEF    // halfwidth and fullwidth forms
        | 0x20000..=0x3FFFF) // ext B and later
}

/// Characters a line must not start with (kinsoku: closing punctuation, small kana).
fn no_break_before(c: char) -> bool {
    "、。，．：；？！）」』】〕〉》〗〙〛”’ヽヾーァィゥェォッャュョヮヵヶぁぃぅぇぉっゃゅょゎゕゖ々…‥,.!?:;)]}%"
        .contains(c)
}

/// Characters a line must not end with (opening punctuation).
fn no_break_after(c: char) -> bool {
    "（「『【〔〈《〖〘〚“‘([{".contains(c)
}

/// Split one space-free word at CJK break opportunities.
fn split_cjk(word: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut prev: Option<char> = None;
    for g in word.graphemes(true) {
        let first = g.chars().next();
        if let (Some(p), Some(f)) = (prev, first)
            && (is_cjk(p) || is_cjk(f))
            && !no_break_before(f)
            && !no_break_after(p)
        {
            parts.push(std::mem::take(&mut cur));
        }
        cur.push_str(g);
        prev = g.chars().last();
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Cut `piece` into chunks of at most `width` chars, at grapheme boundaries when possible.
fn hard_wrap(piece: &str, width: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut cur_chars = 0;
    for g in piece.graphemes(true) {
        let n = g.chars().count();
        if n > width {
            // A single grapheme wider than a line (pathological stacks of combining
            // marks): fall back to chars, the only way to honour the width.
            for c in g.chars() {
                if cur_chars == width {
                    chunks.push(std::mem::take(&mut cur));
                    cur_chars = 0;
                }
                cur.push(c);
                cur_chars += 1;
            }
            continue;
        }
        if cur_chars + n > width {
            chunks.push(std::mem::take(&mut cur));
            cur_chars = 0;
        }
        cur.push_str(g);
        cur_chars += n;
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    chunks
}

/// Atoms of already-normalised `text`; none is wider than `width` chars.
///
/// `space_before_first` says whether the first atom follows a space (a new word).
pub(crate) fn atoms(text: &str, width: usize, space_before_first: bool) -> Vec<Atom> {
    let width = width.max(1);
    let mut out = Vec::new();
    for (wi, word) in text.split(' ').filter(|w| !w.is_empty()).enumerate() {
        let mut space = if wi == 0 { space_before_first } else { true };
        for part in split_cjk(word) {
            for chunk in hard_wrap(&part, width) {
                out.push(Atom::new(chunk, space));
                space = false;
            }
        }
    }
    out
}

/// Greedy line filling, one atom at a time: the line count after each atom is the fewest
/// lines the atoms so far can take (greedy is optimal for the count).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineFill {
    width: usize,
    lines: usize,
    cur: usize,
}

impl LineFill {
    /// An empty fill at `width` chars per line.
    pub fn new(width: usize) -> Self {
        Self {
            width,
            lines: 0,
            cur: 0,
        }
    }

    /// Add an atom of `chars` chars, after a space if `space`; false if it is wider than
    /// a line on its own.
    pub fn push(&mut self, chars: usize, space: bool) -> bool {
        let with_space = self.cur + chars + usize::from(space);
        if self.lines == 0 || with_space > self.width {
            self.lines += 1;
            self.cur = chars;
        } else {
            self.cur = with_space;
        }
        chars <= self.width
    }

    /// Lines used so far.
    pub fn lines(&self) -> usize {
        self.lines
    }
}

/// The fewest lines `atoms` fit in at `width`.
fn min_lines(atoms: &[Atom], width: usize) -> usize {
    let mut fill = LineFill::new(width);
    for a in atoms {
        fill.push(a.chars, a.space_before);
    }
    fill.lines()
}

/// True when `atoms` fit in `max_lines` lines of `width` chars.
pub(crate) fn fits(atoms: &[Atom], width: usize, max_lines: usize) -> bool {
    atoms.iter().all(|a| a.chars <= width) && min_lines(atoms, width) <= max_lines
}

/// How much squared-width imbalance a break after punctuation is worth: about a 6-char
/// difference between two lines, so text splits at clauses when that stays near balanced.
const CLAUSE_BONUS: i64 = 72;

/// True when `atom` ends a clause or sentence (closing quotes and brackets looked through).
pub(crate) fn ends_clause(atom: &Atom) -> bool {
    atom.text
        .trim_end_matches(['"', '\'', ')', ']', '»', '”', '’', '」', '』', '）'])
        .ends_with([
            ',', '.', ';', ':', '!', '?', '…', '、', '。', '，', '！', '？', '；', '：',
        ])
}

/// True when `atom` ends a sentence.
pub(crate) fn ends_sentence(atom: &Atom) -> bool {
    atom.text
        .trim_end_matches(['"', '\'', ')', ']', '»', '”', '’', '」', '』', '）'])
        .ends_with(['.', '!', '?', '…', '。', '！', '？'])
}

/// Set `atoms` on the fewest lines possible, balanced; `None` when more than `max_lines`.
///
/// Among layouts with the fewest lines it minimises the sum of squared line widths (which
/// balances them) less a bonus for breaking after punctuation, and on ties prefers shorter
/// upper lines (the usual bottom-heavy shape).
pub(crate) fn wrap(atoms: &[Atom], width: usize, max_lines: usize) -> Option<Vec<String>> {
    if atoms.is_empty() {
        return Some(Vec::new());
    }
    if !fits(atoms, width, max_lines) {
        return None;
    }
    let k = min_lines(atoms, width);
    let n = atoms.len();
    // prefix[i]: summed weights of atoms[..i]; a line j..i drops its first atom's space.
    let mut prefix = vec![0usize; n + 1];
    for (i, a) in atoms.iter().enumerate() {
        prefix[i + 1] = prefix[i] + a.weight();
    }
    let line_width =
        |j: usize, i: usize| prefix[i] - prefix[j] - usize::from(atoms[j].space_before);
    // best[l][i]: lowest cost setting atoms[..i] on l lines, and where that last line began.
    let mut best: Vec<Vec<Option<(i64, usize)>>> = vec![vec![None; n + 1]; k + 1];
    best[0][0] = Some((0, 0));
    for l in 1..=k {
        for i in 1..=n {
            for j in (l - 1)..i {
                let Some((prev, _)) = best[l - 1][j] else {
                    continue;
                };
                let w = line_width(j, i);
                if w > width {
                    continue;
                }
                let w = i64::try_from(w).unwrap_or(i64::MAX / 4);
                let bonus = if i < n && ends_clause(&atoms[i - 1]) {
                    CLAUSE_BONUS
                } else {
                    0
                };
                let cost = prev + w * w - bonus;
                // `<` keeps the earliest break on ties: shorter upper lines.
                if best[l][i].is_none_or(|(c, _)| cost < c) {
                    best[l][i] = Some((cost, j));
                }
            }
        }
    }
    let mut breaks = Vec::with_capacity(k);
    let mut i = n;
    for l in (1..=k).rev() {
        let (_, j) = best[l][i]?;
        breaks.push((j, i));
        i = j;
    }
    breaks.reverse();
    Some(
        breaks
            .into_iter()
            .map(|(j, i)| join(&atoms[j..i]))
            .collect(),
    )
}

/// The atoms as one line of text.
pub(crate) fn join(atoms: &[Atom]) -> String {
    let mut s = String::new();
    for (i, a) in atoms.iter().enumerate() {
        if i > 0 && a.space_before {
            s.push(' ');
        }
        s.push_str(&a.text);
    }
    s
}

/// `s` cut to at most `max` chars (grapheme-safe), with `…` marking a cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut n = 0;
    for g in s.graphemes(true) {
        let c = g.chars().count();
        if n + c + 1 > max {
            break;
        }
        out.push_str(g);
        n += c;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_breaks_between_ideographs_not_before_punctuation() {
        let a = atoms("你好。世界", 42, false);
        let texts: Vec<_> = a.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(texts, ["你", "好。", "世", "界"]);
        assert!(a.iter().all(|a| !a.space_before));
    }

    #[test]
    fn hard_wrap_keeps_combining_marks() {
        let word = "e\u{301}".repeat(30); // 60 chars, 30 graphemes
        let a = atoms(&word, 42, false);
        assert!(
            a.iter()
                .all(|a| a.chars <= 42 && !a.text.starts_with('\u{301}'))
        );
        assert_eq!(join(&a), word);
    }

    #[test]
    fn balanced_two_lines() {
        let a = atoms(
            "the quick brown fox jumps over the lazy dog again and again",
            42,
            false,
        );
        let lines = wrap(&a, 42, 2).unwrap_or_default();
        assert_eq!(lines.len(), 2);
        let (l0, l1) = (lines[0].chars().count(), lines[1].chars().count());
        assert!(l0.abs_diff(l1) <= 8, "{lines:?}");
    }
}
