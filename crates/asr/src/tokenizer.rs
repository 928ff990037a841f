//! Whisper's tokenizer: byte-level BPE from `tokenizer.json` plus the special tokens the
//! decoder is steered with.
//!
//! English-only (`*.en`) and multilingual vocabularies put the specials at different ids
//! (`<|endoftext|>` is 50256 in one and 50257 in the other), so every id is looked up by
//! name in the tokenizer, never assumed. Timestamp tokens (`<|0.00|>` ... `<|30.00|>`) are
//! not in older `tokenizer.json` files at all: like openai's tokenizer they start right
//! after `<|notimestamps|>` and step 0.02 s.

use std::path::Path;

use crate::error::AsrError;

/// Seconds per timestamp token step.
pub const TIMESTAMP_STEP: f64 = 0.02;

/// The ids of Whisper's special tokens in one vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: ends a transcript.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|startofprev|>`: precedes the prompt (previous text).
    pub sot_prev: u32,
    /// `<|startoflm|>`.
    pub sot_lm: Option<u32>,
    /// `<|transcribe|>`.
    pub transcribe: u32,
    /// `<|translate|>`.
    pub translate: u32,
    /// `<|nospeech|>` (newer vocabularies) or `<|nocaptions|>` (older ones).
    pub no_speech: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`, the first timestamp token.
    pub timestamp_begin: u32,
}

/// Whisper's tokenizer with its special tokens and language table.
#[derive(Clone)]
pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    specials: SpecialTokens,
    /// `(code, token id)` of every language token, in id order.
    languages: Vec<(String, u32)>,
    multilingual: bool,
}

impl std::fmt::Debug for WhisperTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTokenizer")
            .field("specials", &self.specials)
            .field("languages", &self.languages.len())
            .field("multilingual", &self.multilingual)
            .finish()
    }
}

impl WhisperTokenizer {
    /// Loads `tokenizer.json`. `multilingual` is openai's rule `vocab_size >= 51865`
    /// (English-only checkpoints have one token less).
    pub fn from_file(path: &Path, multilingual: bool) -> Result<WhisperTokenizer, AsrError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| AsrError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::new(inner, multilingual).map_err(|reason| AsrError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        })
    }

    fn new(inner: tokenizers::Tokenizer, multilingual: bool) -> Result<WhisperTokenizer, String> {
        let id = |name: &str| inner.token_to_id(name);
        let need = |name: &str| {
            id(name).ok_or_else(|| {
                format!("no {name} token: not a Whisper tokenizer.json (use the one shipped with the checkpoint)")
            })
        };
        let no_timestamps = need("<|notimestamps|>")?;
        let specials = SpecialTokens {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            sot_lm: id("<|startoflm|>"),
            transcribe: need("<|transcribe|>")?,
            translate: need("<|translate|>")?,
            no_speech: id("<|nospeech|>")
                .or_else(|| id("<|nocaptions|>"))
                .ok_or("no <|nospeech|> or <|nocaptions|> token: not a Whisper tokenizer.json")?,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
        };
        // Language tokens sit between <|startoftranscript|> and <|translate|>.
        let mut languages: Vec<(String, u32)> = inner
            .get_added_vocabulary()
            .get_vocab()
            .iter()
            .filter(|(_, id)| **id > specials.sot && **id < specials.translate)
            .filter_map(|(content, id)| {
                let code = content.strip_prefix("<|")?.strip_suffix("|>")?;
                code.chars()
                    .all(|c| c.is_ascii_lowercase())
                    .then(|| (code.to_string(), *id))
            })
            .collect();
        languages.sort_by_key(|(_, id)| *id);
        if languages.is_empty() {
            return Err(
                "no language tokens between <|startoftranscript|> and <|translate|>".into(),
            );
        }
        Ok(WhisperTokenizer {
            inner,
            specials,
            languages,
            multilingual,
        })
    }

    /// The special token ids.
    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// Whether the checkpoint is multilingual (language and task tokens in the prompt).
    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// `(code, id)` of every language token.
    pub fn languages(&self) -> &[(String, u32)] {
        &self.languages
    }

    /// The token of language `code` (`en`, `es`, ...).
    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
    }

    /// The code of a language token id.
    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(c, _)| c.as_str())
    }

    /// The start-of-transcript sequence: `<|startoftranscript|>` then, on multilingual
    /// models, the language and task tokens (English-only models take neither).
    pub fn sot_sequence(&self, language: Option<u32>, translate: bool) -> Vec<u32> {
        let mut seq = vec![self.specials.sot];
        if self.multilingual {
            if let Some(lang) = language {
                seq.push(lang);
            }
            seq.push(if translate {
                self.specials.translate
            } else {
                self.specials.transcribe
            });
        }
        seq
    }

    /// Text to token ids, no specials added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| AsrError::Tokenize(e.to_string()))
    }

    /// Text of the text tokens among `tokens` (specials and timestamps are left out).
    pub fn decode(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.specials.eot)
            .collect();
        self.inner
            .decode(&text, false)
            .map_err(|e| AsrError::Tokenize(e.to_string()))
    }

    /// Whether `token` is a timestamp token.
    pub fn is_timestamp(&self, token: u32) -> bool {
        token >= self.specials.timestamp_begin
    }

    /// Seconds of a timestamp token (relative to its window).
    pub fn timestamp_seconds(&self, token: u32) -> f64 {
        f64::from(token.saturating_sub(self.specials.timestamp_begin)) * TIMESTAMP_STEP
    }

    /// The timestamp token nearest to `seconds`.
    pub fn timestamp_token(&self, seconds: f64) -> u32 {
        self.specials.timestamp_begin + (seconds / TIMESTAMP_STEP).round().max(0.0) as u32
    }

    /// Ids that are a bare space, suppressed at the first sampled position (openai's
    /// SuppressBlank, together with `<|endoftext|>`).
    pub fn blank_ids(&self) -> Result<Vec<u32>, AsrError> {
        let mut ids = self.encode(" ")?;
        ids.push(self.specials.eot);
        Ok(ids)
    }

    /// The specials that are never sampled (openai adds them to any suppress list).
    pub fn never_sampled(&self) -> Vec<u32> {
        let s = &self.specials;
        let mut ids = vec![s.transcribe, s.translate, s.sot, s.sot_prev, s.no_speech];
        ids.extend(s.sot_lm);
        ids
    }

    /// Splits text tokens into words the way openai does for word timestamps: at spaces
    /// and punctuation for space-separated languages, at unicode characters for the others
    /// (`zh ja th lo my yue`). Returns `(word text, its tokens)`.
    pub fn split_to_words(
        &self,
        tokens: &[u32],
        language: &str,
    ) -> Result<Vec<(String, Vec<u32>)>, AsrError> {
        let unicode = self.split_on_unicode(tokens)?;
        if matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue") {
            return Ok(unicode);
        }
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (sub, toks) in unicode {
            let special = toks.first().is_some_and(|&t| t >= self.specials.eot);
            let with_space = sub.starts_with(' ');
            let trimmed = sub.trim();
            let punctuation =
                trimmed.chars().count() == 1 && trimmed.chars().all(|c| c.is_ascii_punctuation());
            if special || with_space || punctuation || words.is_empty() {
                words.push((sub, toks));
            } else if let Some(last) = words.last_mut() {
                last.0.push_str(&sub);
                last.1.extend(toks);
            }
        }
        Ok(words)
    }

    /// Groups tokens so each group decodes to whole characters (a character may span
    /// tokens in byte-level BPE).
    fn split_on_unicode(&self, tokens: &[u32]) -> Result<Vec<(String, Vec<u32>)>, AsrError> {
        let full: Vec<char> = self.decode_raw(tokens)?.chars().collect();
        let mut out = Vec::new();
        let mut current: Vec<u32> = Vec::new();
        let mut offset = 0usize;
        for &t in tokens {
            current.push(t);
            let decoded = self.decode_raw(&current)?;
            let chars: Vec<char> = decoded.chars().collect();
            // A replacement character is an incomplete multi-byte character unless the
            // full text has one at the same place too.
            let complete = match chars.iter().position(|&c| c == '\u{fffd}') {
                None => true,
                Some(i) => full.get(offset + i) == Some(&'\u{fffd}'),
            };
            if complete {
                offset += chars.len();
                out.push((decoded, std::mem::take(&mut current)));
            }
        }
        if !current.is_empty() {
            out.push((self.decode_raw(&current)?, current));
        }
        Ok(out)
    }

    /// Decodes any tokens, specials included as their names.
    fn decode_raw(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let mut text = String::new();
        let mut run: Vec<u32> = Vec::new();
        let flush = |run: &mut Vec<u32>, text: &mut String| -> Result<(), AsrError> {
            if !run.is_empty() {
                text.push_str(
                    &self
                        .inner
                        .decode(run, false)
                        .map_err(|e| AsrError::Tokenize(e.to_string()))?,
                );
                run.clear();
            }
            Ok(())
        };
        for &t in tokens {
            if t >= self.specials.eot {
                flush(&mut run, &mut text)?;
                if t >= self.specials.timestamp_begin {
                    text.push_str(&format!("<|{:.2}|>", self.timestamp_seconds(t)));
                } else if let Some(name) = self.inner.id_to_token(t) {
                    text.push_str(&name);
                }
            } else {
                run.push(t);
            }
        }
        flush(&mut run, &mut text)?;
        Ok(text)
    }

    /// Text with timestamps shown as `<|1.08|>`, for logs and debugging.
    pub fn decode_with_timestamps(&self, tokens: &[u32]) -> Result<String, AsrError> {
        self.decode_raw(tokens)
    }
}
