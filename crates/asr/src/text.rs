//! Text measures used by decoding and evaluation: zlib compression ratio (the repetition
//! guard of temperature fallback), repeated n-gram loops, and an English normaliser for WER.

use std::io::Write;

/// `len(text) / len(zlib(text))` over UTF-8 bytes, as openai computes it: long repeated
/// loops compress well and score high (openai's fallback threshold is 2.4).
pub fn compression_ratio(text: &str) -> f64 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail; a failure would leave the ratio at "no compression".
    let compressed = encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map(|c| c.len())
        .unwrap_or(bytes.len());
    bytes.len() as f64 / compressed.max(1) as f64
}

/// Where a token sequence starts looping: the index after which the last `n`-gram
/// (for any `n` in `1..=max_n`) repeats back to back at least `min_repeats` times.
/// Returns the length to keep (the first occurrence of the loop stays), or `None` when
/// there is no such loop at the end. Used to cut hallucinated repetitions that the
/// compression ratio misses on short windows.
pub fn repeated_tail(tokens: &[u32], max_n: usize, min_repeats: usize) -> Option<usize> {
    for n in 1..=max_n {
        if tokens.len() < n * min_repeats {
            continue;
        }
        let tail = &tokens[tokens.len() - n..];
        let mut repeats = 1;
        let mut end = tokens.len() - n;
        while end >= n && &tokens[end - n..end] == tail {
            repeats += 1;
            end -= n;
        }
        if repeats >= min_repeats {
            return Some(end + n);
        }
    }
    None
}

/// Titles and abbreviations spelled out, as openai's English normaliser does.
const TITLES: [(&str, &str); 14] = [
    ("mr", "mister"),
    ("mrs", "missus"),
    ("st", "saint"),
    ("dr", "doctor"),
    ("prof", "professor"),
    ("capt", "captain"),
    ("gov", "governor"),
    ("sen", "senator"),
    ("rep", "representative"),
    ("pres", "president"),
    ("rev", "reverend"),
    ("jr", "junior"),
    ("sr", "senior"),
    ("lt", "lieutenant"),
];

const CONTRACTIONS: [(&str, &str); 10] = [
    ("won't", "will not"),
    ("can't", "can not"),
    ("let's", "let us"),
    ("ain't", "aint"),
    ("n't", " not"),
    ("'re", " are"),
    ("'ll", " will"),
    ("'ve", " have"),
    ("'m", " am"),
    ("'d", " would"),
];

const FILLERS: [&str; 6] = ["hmm", "mm", "mhm", "mmm", "uh", "um"];

const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// A normaliser for English WER in the spirit of openai's `EnglishTextNormalizer`:
/// lower case, bracketed asides and fillers removed, contractions and titles expanded,
/// spoken numbers as digits, punctuation and hyphens to spaces, whitespace collapsed.
/// Both sides of a comparison go through it, so WERs of different systems compare.
pub fn normalize_english(text: &str) -> String {
    let lower = text.to_lowercase().replace(['’', '‘'], "'");
    // Bracketed asides ([music], (laughs)) are not speech.
    let mut unbracketed = String::with_capacity(lower.len());
    let mut depth = 0usize;
    for c in lower.chars() {
        match c {
            '[' | '(' | '<' => depth += 1,
            ']' | ')' | '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => unbracketed.push(c),
            _ => {}
        }
    }
    // Everything but letters, digits and apostrophes separates words.
    let cleaned: String = unbracketed
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let mut expanded = String::with_capacity(cleaned.len());
    for word in cleaned.split_whitespace() {
        let mut w = word.trim_matches('\'').to_string();
        for (from, to) in CONTRACTIONS {
            if let Some(stem) = w.strip_suffix(from) {
                w = if from.starts_with('\'') || from == "n't" {
                    format!("{stem}{to}")
                } else {
                    to.to_string()
                };
                break;
            }
        }
        expanded.push_str(&w);
        expanded.push(' ');
    }
    let words: Vec<String> = expanded
        .split_whitespace()
        .map(|w| w.replace("'s", "s").replace('\'', ""))
        .filter(|w| !w.is_empty() && !FILLERS.contains(&w.as_str()))
        .map(|w| {
            TITLES
                .iter()
                .find(|(abbr, _)| *abbr == w)
                .map_or(w.clone(), |(_, full)| full.to_string())
        })
        .collect();
    numbers_to_digits(&words).join(" ")
}

/// Runs of spoken number words (`twenty five`, `three hundred`) become digits.
fn numbers_to_digits(words: &[String]) -> Vec<String> {
    let unit = |w: &str| UNITS.iter().position(|u| *u == w).map(|v| v as u64);
    let ten = |w: &str| {
        TENS.iter()
            .position(|t| *t == w)
            .map(|v| 20 + 10 * v as u64)
    };
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let mut total = 0u64;
        let mut current = 0u64;
        let mut used = 0;
        let mut j = i;
        while j < words.len() {
            let w = words[j].as_str();
            if let Some(t) = ten(w) {
                if !current.is_multiple_of(100) {
                    break;
                }
                current += t;
            } else if let Some(u) = unit(w) {
                if !current.is_multiple_of(10) || (!current.is_multiple_of(100) && u >= 10) {
                    break;
                }
                current += u;
            } else if w == "hundred" && used > 0 && !current.is_multiple_of(100) {
                current *= 100;
            } else if w == "thousand" && used > 0 {
                total += current.max(1) * 1000;
                current = 0;
            } else if w == "and" && used > 0 && j + 1 < words.len() && current >= 100 {
                // "one hundred and five"
            } else {
                break;
            }
            used += 1;
            j += 1;
        }
        if used == 0 {
            out.push(words[i].clone());
            i += 1;
        } else {
            out.push((total + current).to_string());
            i = j;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_grows_with_repetition() {
        let plain = "And so my fellow Americans, ask not what your country can do for you.";
        let looped = " I'm going to go to the store.".repeat(20);
        assert!(
            compression_ratio(plain) < 1.6,
            "{}",
            compression_ratio(plain)
        );
        assert!(
            compression_ratio(&looped) > 2.4,
            "{}",
            compression_ratio(&looped)
        );
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn repeated_tail_finds_loops() {
        assert_eq!(repeated_tail(&[1, 2, 3, 4, 5], 4, 3), None);
        assert_eq!(repeated_tail(&[9, 1, 2, 1, 2, 1, 2], 4, 3), Some(3));
        assert_eq!(repeated_tail(&[9, 7, 7, 7, 7], 4, 3), Some(2));
    }

    #[test]
    fn normalizer_matches_reference_style() {
        assert_eq!(
            normalize_english(" And Mr. John Dashwood had then leisure."),
            "and mister john dashwood had then leisure"
        );
        assert_eq!(
            normalize_english("He was not an ill-disposed young man [music]"),
            "he was not an ill disposed young man"
        );
        assert_eq!(normalize_english("Ten of clubs."), "10 of clubs");
        assert_eq!(normalize_english("10 of clubs"), "10 of clubs");
        assert_eq!(normalize_english("twenty five five"), "25 5");
        assert_eq!(normalize_english("five five"), "5 5");
        assert_eq!(normalize_english("one hundred and five"), "105");
        assert_eq!(normalize_english("I can't, um, don't"), "i can not do not");
        assert_eq!(
            normalize_english("What's your country's"),
            "whats your countrys"
        );
    }
}
