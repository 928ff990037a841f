//! Long-form transcription by openai's sequential seek algorithm (whisper `transcribe()`,
//! faster-whisper `generate_segments`): decode the 30 s window at `seek`, cut its tokens
//! into segments at timestamp pairs, move `seek` to the last complete segment's end (or
//! the window's end), carry the text as the next window's prompt, repeat.

use crate::AsrError;
use crate::context::DecodeContext;
use crate::decode::Rng;
use crate::mel::{
    FRAMES_PER_SECOND, Mel, WINDOW_FRAMES, mel_windows_of, silent_frames, window_width,
};
use crate::segment::RawSegment;

/// The sequential long-form transcription of one input.
#[derive(Debug)]
pub struct SeekTranscriber<'a> {
    /// What it decodes with.
    pub context: DecodeContext<'a>,
    /// Decode the first window only (live passes over a buffer of at most 30 s).
    pub one_window: bool,
}

/// Shortest run of silent frames (0.2 s) a window is moved past.
const MIN_LEADING_SILENCE_FRAMES: usize = 20;

impl SeekTranscriber<'_> {
    /// Segments of the audio behind `mel`, in time order.
    pub fn run(&self, mel: &Mel) -> Result<Vec<RawSegment>, AsrError> {
        let ctx = &self.context;
        let o = ctx.options;
        let mut rng = Rng::new(o.decode.seed);
        let content_frames = mel.n_frames();
        let mut all_tokens = ctx.initial_prompt_tokens()?;
        let hotwords = ctx.hotword_tokens()?;
        let mut prompt_reset_since = 0;
        let mut last_speech_timestamp = 0.0;
        let mut segments: Vec<RawSegment> = Vec::new();
        let silent = silent_frames(mel);
        let mut seek = 0usize;
        // A batcher's leader waits a moment for the windows of running transcriptions.
        let _transcribing = ctx.batcher.map(|b| b.transcribing());
        while seek < content_frames {
            // A window opening on digital silence gets an inflated no-speech probability
            // and can be skipped whole with the speech after the pause (the windows of
            // short prompts between silent gaps): it opens on the first sounding frame.
            // A few frames at the floor (a breath before the first word) leave the window
            // where faster-whisper puts it.
            let quiet = silent[seek.min(silent.len())..]
                .iter()
                .take_while(|&&s| s)
                .count();
            if quiet >= MIN_LEADING_SILENCE_FRAMES {
                seek += quiet;
            }
            if seek >= content_frames {
                break;
            }
            let time_offset = seek as f64 / FRAMES_PER_SECOND;
            ctx.progress(time_offset)?;
            let segment_size = WINDOW_FRAMES.min(content_frames - seek);
            let width = window_width(segment_size, o.min_audio_context);
            let mel_window =
                mel_windows_of(mel, &[(seek, segment_size)], width, ctx.model.device())?;
            let mut previous = hotwords.clone();
            previous.extend_from_slice(&all_tokens[prompt_reset_since..]);
            let (features, result) = ctx.encode_and_decode(mel_window, previous, &mut rng)?;
            if o.decode.is_no_speech(&result) {
                tracing::debug!(
                    time_offset,
                    no_speech = result.no_speech_prob,
                    avg_logprob = result.avg_logprob,
                    "no speech; skipping window"
                );
                seek += segment_size;
                if self.one_window {
                    break;
                }
                continue;
            }
            let outcome = ctx.window_outcome(
                &result,
                &features,
                time_offset,
                segment_size,
                silent.get(seek..seek + segment_size).unwrap_or_default(),
                &mut last_speech_timestamp,
            )?;
            let previous_seek = seek;
            seek += outcome.advance;
            if o.word_timestamps
                && !outcome.single_timestamp_ending
                && let Some(end) = outcome.last_word_end
                && end > time_offset
            {
                seek = (end * FRAMES_PER_SECOND).round() as usize;
            }
            // Never stall: a window must move the seek forward.
            if seek <= previous_seek {
                seek = previous_seek + segment_size;
            }
            for s in outcome.segments {
                if s.start == s.end || s.text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&s.tokens);
                ctx.emit(&s);
                segments.push(s);
            }
            if !o.condition_on_previous_text || result.temperature > o.prompt_reset_on_temperature {
                prompt_reset_since = all_tokens.len();
            }
            tracing::debug!(
                time_offset,
                temperature = result.temperature,
                text = %result.text,
                "window decoded"
            );
            if self.one_window {
                break;
            }
        }
        Ok(segments)
    }
}
