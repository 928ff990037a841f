//! The Hugging Face Whisper `config.json`, plus what mica derives from it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::AsrError;

/// A Hugging Face Whisper `config.json` (the fields mica reads; unknown ones are ignored).
///
/// Converted CTranslate2 checkpoints also carry `suppress_ids`, `suppress_ids_begin` and
/// `lang_ids`; [`WhisperConfig::from_json`] fills [`WhisperConfig::suppress_tokens`] /
/// [`WhisperConfig::begin_suppress_tokens`] from them when the Hugging Face names are
/// absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhisperConfig {
    /// Output vocabulary size (51864 for `.en` models, 51865/51866 multilingual).
    pub vocab_size: usize,
    /// Mel bins of the input features (80, or 128 for large-v3 and turbo).
    pub num_mel_bins: usize,
    /// Model width.
    pub d_model: usize,
    /// Encoder blocks.
    pub encoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Encoder MLP width.
    #[serde(default)]
    pub encoder_ffn_dim: Option<usize>,
    /// Decoder blocks.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Decoder MLP width.
    #[serde(default)]
    pub decoder_ffn_dim: Option<usize>,
    /// Encoder positions (1500 = 30 s after the stride-2 convolution).
    #[serde(default = "default_source_positions")]
    pub max_source_positions: usize,
    /// Decoder positions (448).
    #[serde(default = "default_target_positions")]
    pub max_target_positions: usize,
    /// `[decoder layer, head]` pairs whose cross-attention follows the audio in time;
    /// absent in many configs (see [`WhisperConfig::alignment_heads`]).
    #[serde(default)]
    pub alignment_heads: Option<Vec<[usize; 2]>>,
    /// Tokens suppressed at every step (`suppress_tokens`, or CTranslate2's `suppress_ids`
    /// when that is all the file has).
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    /// Tokens suppressed at the first sampled position (or `suppress_ids_begin`).
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
    /// CTranslate2's name of `suppress_tokens` (read, then merged by [`WhisperConfig::from_json`]).
    #[serde(default, skip_serializing)]
    suppress_ids: Vec<u32>,
    /// CTranslate2's name of `begin_suppress_tokens`.
    #[serde(default, skip_serializing)]
    suppress_ids_begin: Vec<u32>,
    /// Language token ids, in the checkpoint's language order (CTranslate2 configs only;
    /// otherwise derive them from the tokenizer).
    #[serde(default)]
    pub lang_ids: Vec<u32>,
    /// `<|endoftext|>`.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// `<|startoftranscript|>`.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// Activation of the MLPs (`gelu` for every released checkpoint).
    #[serde(default = "default_activation")]
    pub activation_function: String,
}

fn default_source_positions() -> usize {
    1500
}
fn default_target_positions() -> usize {
    448
}
fn default_activation() -> String {
    "gelu".to_string()
}

impl WhisperConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<WhisperConfig, AsrError> {
        let err = |reason: String| AsrError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::from_json(&text).map_err(err)
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<WhisperConfig, String> {
        let mut cfg: WhisperConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if cfg.suppress_tokens.is_empty() {
            cfg.suppress_tokens = std::mem::take(&mut cfg.suppress_ids);
        }
        if cfg.begin_suppress_tokens.is_empty() {
            cfg.begin_suppress_tokens = std::mem::take(&mut cfg.suppress_ids_begin);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the sizes are usable (heads divide the width, alignment heads exist).
    pub fn validate(&self) -> Result<(), String> {
        if self.d_model == 0 || self.vocab_size == 0 || self.num_mel_bins == 0 {
            return Err("d_model, vocab_size and num_mel_bins must be positive".into());
        }
        for (what, heads) in [
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_attention_heads", self.decoder_attention_heads),
        ] {
            if heads == 0 || !self.d_model.is_multiple_of(heads) {
                return Err(format!(
                    "{what} = {heads} does not divide d_model = {}",
                    self.d_model
                ));
            }
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 {
            return Err("encoder_layers and decoder_layers must be positive".into());
        }
        if self.activation_function != "gelu" {
            return Err(format!(
                "activation_function {:?} is not supported (Whisper uses \"gelu\")",
                self.activation_function
            ));
        }
        if let Some(heads) = &self.alignment_heads {
            for &[l, h] in heads {
                if l >= self.decoder_layers || h >= self.decoder_attention_heads {
                    return Err(format!(
                        "alignment head [{l}, {h}] outside {} layers x {} heads",
                        self.decoder_layers, self.decoder_attention_heads
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the checkpoint is English-only (`.en`: 51864 tokens).
    pub fn is_english_only(&self) -> bool {
        self.vocab_size < 51865
    }

    /// Encoder MLP width (`4 * d_model` when absent).
    pub fn encoder_ffn(&self) -> usize {
        self.encoder_ffn_dim.unwrap_or(4 * self.d_model)
    }

    /// Decoder MLP width (`4 * d_model` when absent).
    pub fn decoder_ffn(&self) -> usize {
        self.decoder_ffn_dim.unwrap_or(4 * self.d_model)
    }

    /// The alignment heads as `(layer, head)`, sorted: the config's, or openai's default
    /// when absent (every head of the second half of the decoder layers).
    pub fn alignment_heads(&self) -> Vec<(usize, usize)> {
        let mut heads: Vec<(usize, usize)> = match &self.alignment_heads {
            Some(h) if !h.is_empty() => h.iter().map(|&[l, h]| (l, h)).collect(),
            _ => (self.decoder_layers / 2..self.decoder_layers)
                .flat_map(|l| (0..self.decoder_attention_heads).map(move |h| (l, h)))
                .collect(),
        };
        heads.sort_unstable();
        heads.dedup();
        heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WhisperConfig {
        WhisperConfig::from_json(
            r#"{"vocab_size": 51864, "num_mel_bins": 80, "d_model": 384,
                "encoder_layers": 4, "encoder_attention_heads": 6,
                "decoder_layers": 4, "decoder_attention_heads": 6,
                "suppress_ids": [1, 2], "suppress_ids_begin": [220, 50256]}"#,
        )
        .expect("parses")
    }

    #[test]
    fn aliases_and_defaults() {
        let c = tiny();
        assert_eq!(c.suppress_tokens, vec![1, 2]);
        assert_eq!(c.begin_suppress_tokens, vec![220, 50256]);
        assert_eq!(c.max_target_positions, 448);
        assert_eq!(c.decoder_ffn(), 1536);
        assert!(c.is_english_only());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn default_alignment_heads_are_second_half() {
        let c = tiny();
        let h = c.alignment_heads();
        assert_eq!(h.len(), 12);
        assert_eq!(h[0], (2, 0));
        assert_eq!(h[11], (3, 5));
    }

    #[test]
    fn bad_heads_rejected() {
        let mut c = tiny();
        c.decoder_attention_heads = 5;
        assert!(c.validate().is_err());
        let mut c = tiny();
        c.alignment_heads = Some(vec![[4, 0]]);
        assert!(c.validate().is_err());
    }
}
