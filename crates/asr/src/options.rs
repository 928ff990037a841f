//! [`TranscribeOptions`]: everything a transcription can be asked for.

use mica_vad::SpeechOptions;
use serde::{Deserialize, Serialize};

use crate::AsrError;
use crate::decode::{DecodeOptions, Task};

/// Default punctuation merged into the following word.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Default punctuation merged into the preceding word.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

/// Everything a transcription can be asked for; the defaults are faster-whisper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TranscribeOptions {
    /// Language code (`en`, `es`, ...); `None` detects it on the first 30 s
    /// (multilingual models; English-only ones are always `en`).
    pub language: Option<String>,
    /// Transcribe, or translate into English.
    pub task: Task,
    /// How each window is decoded.
    pub decode: DecodeOptions,
    /// Prompt each window with the text before it (sequential mode).
    pub condition_on_previous_text: bool,
    /// Stop conditioning after a window decoded above this temperature.
    pub prompt_reset_on_temperature: f32,
    /// Text given as if it preceded the audio (names, spelling, style).
    pub initial_prompt: Option<String>,
    /// Words to bias towards, put in the prompt of every window.
    pub hotwords: Option<String>,
    /// Per-word timings by cross-attention alignment.
    pub word_timestamps: bool,
    /// Punctuation merged into the following word.
    pub prepend_punctuations: String,
    /// Punctuation merged into the preceding word.
    pub append_punctuations: String,
    /// VAD-batched mode: decode speech regions merged into <= 30 s chunks, many at once,
    /// instead of the sequential seek over the whole input.
    pub vad: bool,
    /// Speech detection options of the VAD-batched mode.
    pub vad_options: SpeechOptions,
    /// Chunks decoded together in the VAD-batched mode.
    pub batch_size: usize,
    /// Encode a window shorter than 30 s padded only to its next whole second, and to at
    /// least this many seconds (whisper.cpp's `audio_ctx`), instead of to the 30 s Whisper
    /// was trained on. The encoder's cost falls in proportion, which live captions over
    /// a few seconds of audio need; the text may differ slightly from a full window's.
    /// `None` (the default) pads every window to 30 s, as openai and faster-whisper do.
    pub min_audio_context: Option<f64>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            language: None,
            task: Task::Transcribe,
            decode: DecodeOptions::default(),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            initial_prompt: None,
            hotwords: None,
            word_timestamps: false,
            prepend_punctuations: PREPEND_PUNCTUATIONS.to_string(),
            append_punctuations: APPEND_PUNCTUATIONS.to_string(),
            vad: false,
            // faster-whisper's batched pipeline: 160 ms silences split, 400 ms padding.
            vad_options: SpeechOptions {
                min_silence_duration_ms: 160,
                speech_pad_ms: 400,
                min_speech_duration_ms: 0,
                max_speech_duration_s: Some(30.0),
                ..SpeechOptions::default()
            },
            batch_size: 8,
            min_audio_context: None,
        }
    }
}

impl TranscribeOptions {
    /// Checks ranges (the decoding options included).
    pub fn validate(&self) -> Result<(), AsrError> {
        self.decode.validate()?;
        self.vad_options.validate()?;
        if self.batch_size == 0 {
            return Err(crate::error::invalid_option(
                "batch_size must be at least 1",
            ));
        }
        if let Some(s) = self.min_audio_context
            && !(1.0..=30.0).contains(&s)
        {
            return Err(crate::error::invalid_option(
                "min_audio_context must be 1 to 30 seconds",
            ));
        }
        if !(self.prompt_reset_on_temperature.is_finite()) {
            return Err(crate::error::invalid_option(
                "prompt_reset_on_temperature must be a number",
            ));
        }
        if let Some(l) = &self.language
            && (l.is_empty() || !l.chars().all(|c| c.is_ascii_lowercase()))
        {
            return Err(crate::error::invalid_option(format!(
                "language {l:?}: give a lower-case code such as en, es, fr (or leave it out to detect)"
            )));
        }
        Ok(())
    }
}
