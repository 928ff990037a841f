//! Live captions: a [`LiveSession`] takes 16 kHz samples as they arrive and returns caption
//! events as the text settles.
//!
//! Streaming VAD opens an utterance when speech starts. While it goes on, Whisper decodes
//! the utterance's buffer again every [`LiveOptions::step_seconds`] of new audio, prompted
//! with the settled text before the buffer; words two passes in a row agree on are settled
//! ([`LiveEvent::Final`]), the rest is shown as a [`LiveEvent::Partial`]. When the VAD sees
//! the speech end, one last pass settles the whole utterance. A long utterance's buffer is
//! trimmed at a settled sentence end, so each pass stays short and memory stays flat.

mod agreement;
mod feed;
mod hls;
mod speakers;

use mica_asr::{TranscribeOptions, Transcriber};
use mica_core::document::{Segment, SpeakerTurn, Transcript, Word};
use mica_diarize::OnlineOptions;
use mica_vad::{SampleRate, SpeechOptions, VadEvent, VadStream};
use serde::{Deserialize, Serialize};

use crate::{Analyzer, Error, Task};
use agreement::Agreement;
pub use feed::{FeedOptions, LiveInbox, LiveSender, live_channel};
pub use hls::{HlsOptions, HlsSubtitles};
use speakers::{Label, LiveSpeakers};

const RATE: f64 = 16_000.0;
/// Characters of settled text given as the prompt (whisper_streaming's 200).
const PROMPT_CHARS: usize = 200;
/// A buffer this much longer than [`LiveOptions::max_buffer_seconds`] is cut at the last
/// settled word even without a sentence end.
const HARD_BUFFER_FACTOR: f64 = 1.6;
/// Most tokens a pass decodes per second of audio (beyond a base of 16).
const TOKENS_PER_SECOND: f64 = 10.0;
/// The shortest audio context a pass encodes, in seconds.
///
/// Measured on the first 150 s of the long English set (tiny.en, greedy): settled text
/// 4.4% from the offline transcript at 15 s, 6.0% at 30 s, 14% at 8 s, where Whisper
/// starts repeating phrases.
const DEFAULT_AUDIO_CONTEXT: f64 = 15.0;

/// How a live session decodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveOptions {
    /// Seconds of new audio after which the utterance is decoded again (the partial
    /// captions' cadence; each pass costs one Whisper window).
    pub step_seconds: f64,
    /// Seconds of audio after which the buffer is cut at a settled sentence end.
    pub max_buffer_seconds: f64,
    /// Seconds of audio kept before a detected speech start.
    pub lead_seconds: f64,
    /// Speech detection: its silence length ends an utterance (and settles it).
    pub speech: SpeechOptions,
    /// Each pass encodes the buffer padded to its next whole second and at least this
    /// long, not to 30 s (see `TranscribeOptions::min_audio_context`): a pass over a few
    /// seconds costs a fraction of a full window. `None` pads to 30 s.
    pub min_audio_context: Option<f64>,
    /// Label who speaks (`speaker` events) against the speakers heard so far in the
    /// session; needs an analyzer with the diarize task. `None`: no labels.
    pub speakers: Option<OnlineOptions>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            step_seconds: 0.5,
            max_buffer_seconds: 15.0,
            lead_seconds: 0.3,
            speech: SpeechOptions {
                min_silence_duration_ms: 500,
                speech_pad_ms: 100,
                ..SpeechOptions::default()
            },
            min_audio_context: Some(DEFAULT_AUDIO_CONTEXT),
            speakers: None,
        }
    }
}

impl LiveOptions {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Options(what.to_string()));
        if !(0.1..=10.0).contains(&self.step_seconds) {
            return bad("the live step must be 0.1 to 10 seconds");
        }
        if !(2.0..=25.0).contains(&self.max_buffer_seconds) {
            return bad("the live buffer must be 2 to 25 seconds (Whisper hears 30 s at once)");
        }
        if !(0.0..=2.0).contains(&self.lead_seconds) {
            return bad("the live lead must be 0 to 2 seconds");
        }
        if let Some(s) = self.min_audio_context
            && !(1.0..=30.0).contains(&s)
        {
            return bad("the live audio context must be 1 to 30 seconds");
        }
        self.speech.validate()?;
        if let Some(speakers) = &self.speakers {
            speakers.validate()?;
        }
        Ok(())
    }
}

/// Words heard in one utterance, as shown at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    /// The utterance (counted from 1): finals and partials of one utterance share it.
    pub utterance: u64,
    /// Start of the first word, in seconds of stream time.
    pub start: f64,
    /// End of the last word.
    pub end: f64,
    /// The words' text.
    pub text: String,
    /// The words, with stream times.
    pub words: Vec<Word>,
    /// Seconds of audio received when this was decided: its delay behind the audio is
    /// `at - end` plus the time the decoding took.
    pub at: f64,
    /// The utterance ended: its text is complete and no partial of it follows.
    pub end_of_utterance: bool,
}

/// Who spoke a stretch of settled speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerLabel {
    /// The utterance the stretch is part of.
    pub utterance: u64,
    /// Start of the stretch (its first settled word), in seconds of stream time.
    pub start: f64,
    /// End of the stretch (its last settled word): the finals' words between `start` and
    /// `end` are this speaker's.
    pub end: f64,
    /// `SPEAKER_00` upwards, in order of first speech; never changed once given.
    pub speaker: String,
    /// Seconds of audio received when this was decided.
    pub at: f64,
}

impl SpeakerLabel {
    /// The label as a speaker turn (for scoring, or for subtitle writers' voices).
    pub fn turn(&self) -> SpeakerTurn {
        SpeakerTurn {
            start: self.start,
            end: self.end,
            speaker: self.speaker.clone(),
        }
    }
}

/// Settled words, each with its utterance, as a transcript of one segment per utterance
/// lasting at least `duration`: what the subtitle writers take (live HLS segments, clips).
pub fn settled_transcript(words: &[(Word, u64)], duration: f64) -> Transcript {
    let mut segments: Vec<Segment> = Vec::new();
    let mut utterance = None;
    for (w, u) in words {
        if utterance != Some(*u) {
            utterance = Some(*u);
            segments.push(Segment {
                start: w.start,
                end: w.end,
                ..Segment::default()
            });
        }
        let s = segments.last_mut().expect("a segment was opened");
        s.end = s.end.max(w.end);
        s.text.push_str(&w.text);
        s.words.push(w.clone());
    }
    Transcript {
        language: String::new(),
        duration: segments.last().map_or(duration, |s| s.end.max(duration)),
        segments,
    }
}

/// What a live session reports, as JSON lines: `{"event":"final",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LiveEvent {
    /// Settled words, never revised; all finals in order are the settled transcript.
    Final(Caption),
    /// The words heard after the settled ones, as of now; the next partial or
    /// end-of-utterance final replaces it.
    Partial(Caption),
    /// Who spoke a stretch of settled words (sessions with speaker labels).
    Speaker(SpeakerLabel),
    /// The source's state (listening, stalled, resumed, ended), from whoever reads it.
    Status {
        /// `listening`, `stalled`, `resumed`, `ended`, ...
        state: String,
        /// Seconds of audio received.
        at: f64,
        /// What happened, when there is more to say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// One live stream's captioning state over an analyzer's shared models. Not shared
/// between streams: each stream opens its own with [`Analyzer::live`].
pub struct LiveSession {
    transcriber: Transcriber,
    decode: TranscribeOptions,
    /// The temperatures of the last pass of an utterance (the caller's fallback); the
    /// passes before it decode at the first one only, as a later pass redoes them anyway.
    temperatures: Vec<f32>,
    user_prompt: Option<String>,
    language_fixed: bool,
    vad: VadStream,
    options: LiveOptions,
    /// The audio not yet let go: the open utterance, or a short lead while silent.
    audio: Vec<f32>,
    /// Stream sample of `audio[0]`.
    buffer_start: u64,
    received: u64,
    speaking: bool,
    utterance: u64,
    /// Something of the open utterance was shown.
    shown: bool,
    /// `received` at the last pass.
    last_pass: u64,
    agreement: Agreement,
    /// Settled words still inside the buffer.
    settled_in_buffer: Vec<Word>,
    /// Settled text before the buffer (its tail is the prompt).
    before: String,
    last_partial: String,
    speakers: Option<LiveSpeakers>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("received", &self.received)
            .field("utterance", &self.utterance)
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// A live captioning session over this analyzer's Whisper and VAD (it must have the asr
    /// task), decoding with its transcription options (word times always on).
    pub fn live(&self, options: LiveOptions) -> Result<LiveSession, Error> {
        options.validate()?;
        let (Some(transcriber), Some(vad)) = (&self.models.transcriber, &self.models.vad) else {
            return Err(Error::TaskNotLoaded {
                task: Task::Asr,
                loaded: self.tasks().to_vec(),
            });
        };
        let mut decode = self.transcribe.clone();
        decode.word_timestamps = true;
        decode.vad = false;
        // The settled text is given as the prompt explicitly; one pass is one window.
        decode.condition_on_previous_text = false;
        decode.min_audio_context = options.min_audio_context;
        let user_prompt = decode.initial_prompt.take();
        let speakers = match (&options.speakers, &self.models.diarizer) {
            (None, _) => None,
            (Some(online), Some(diarizer)) => Some(LiveSpeakers::new(
                std::sync::Arc::clone(diarizer.encoder()),
                online.clone(),
            )?),
            (Some(_), None) => {
                return Err(Error::TaskNotLoaded {
                    task: Task::Diarize,
                    loaded: self.tasks().to_vec(),
                });
            }
        };
        let vad = VadStream::new(
            std::sync::Arc::clone(vad.model()),
            SampleRate::Hz16000,
            options.speech.clone(),
        )?;
        Ok(LiveSession {
            transcriber: transcriber.clone(),
            temperatures: decode.decode.temperatures.clone(),
            language_fixed: decode.language.is_some(),
            decode,
            user_prompt,
            vad,
            options,
            audio: Vec::new(),
            buffer_start: 0,
            received: 0,
            speaking: false,
            utterance: 0,
            shown: false,
            last_pass: 0,
            agreement: Agreement::default(),
            settled_in_buffer: Vec::new(),
            before: String::new(),
            last_partial: String::new(),
            speakers,
        })
    }
}

impl LiveSession {
    /// Seconds of audio received.
    pub fn received_seconds(&self) -> f64 {
        self.received as f64 / RATE
    }

    /// Takes the samples that arrived (16 kHz mono, any count) and returns what they
    /// settled or changed. Decodes at most once per call: a caller that fell behind passes
    /// everything that queued up at once.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<LiveEvent>, Error> {
        self.audio.extend_from_slice(samples);
        self.received += samples.len() as u64;
        let vad_events = self.vad.push(samples)?.events.clone();
        let mut events = self.on_vad(&vad_events)?;
        let step = (self.options.step_seconds * RATE) as u64;
        if self.speaking && self.received - self.last_pass >= step {
            events.extend(self.pass(self.audio.len(), false)?);
            self.trim_long_buffer(&mut events)?;
        }
        if !self.speaking {
            self.keep_lead();
        }
        Ok(events)
    }

    /// The stream ended: settles the open utterance.
    pub fn finish(&mut self) -> Result<Vec<LiveEvent>, Error> {
        let vad_events = self.vad.finish()?.events.clone();
        let mut events = self.on_vad(&vad_events)?;
        if self.speaking {
            events.extend(self.close(self.received)?);
        }
        Ok(events)
    }

    fn on_vad(&mut self, vad_events: &[VadEvent]) -> Result<Vec<LiveEvent>, Error> {
        let mut events = Vec::new();
        for event in vad_events {
            match *event {
                VadEvent::SpeechStart { sample } if !self.speaking => {
                    self.speaking = true;
                    self.utterance += 1;
                    self.shown = false;
                    let lead = (self.options.lead_seconds * RATE) as u64;
                    self.cut_buffer(sample.saturating_sub(lead));
                    self.last_pass = self.received.min(sample);
                }
                VadEvent::SpeechEnd { sample, kept } if self.speaking => {
                    if kept || self.shown {
                        let pad = u64::from(self.options.speech.speech_pad_ms) * 16;
                        events.extend(self.close(sample + pad)?);
                    } else {
                        // A blip shorter than the shortest speech: nothing to say.
                        self.speaking = false;
                        self.agreement.clear_pending();
                    }
                }
                _ => {}
            }
        }
        Ok(events)
    }

    /// Decodes the open utterance up to stream sample `end` for the last time and settles
    /// all of it.
    fn close(&mut self, end: u64) -> Result<Vec<LiveEvent>, Error> {
        let end = end.min(self.received);
        let upto = (end.saturating_sub(self.buffer_start) as usize).min(self.audio.len());
        let mut events = self.pass(upto, true)?;
        self.speaking = false;
        self.label_speakers(&[], true, &mut events)?;
        self.before_push_settled();
        self.cut_buffer(end);
        Ok(events)
    }

    /// One decode of `audio[..upto]`: settles what agrees with the previous pass (or
    /// everything, on the `last` pass) and shows the rest.
    fn pass(&mut self, upto: usize, last: bool) -> Result<Vec<LiveEvent>, Error> {
        self.last_pass = self.received;
        let offset = self.buffer_start as f64 / RATE;
        let mut heard = Vec::new();
        // Less than a tenth of a second holds no word; Whisper would invent one.
        if upto >= RATE as usize / 10 {
            self.decode.initial_prompt = self.prompt();
            // Speech holds a few tokens a second: a pass running far past that is in a
            // repetition loop, and each token costs a decoder step.
            let seconds = upto as f64 / RATE;
            self.decode.decode.temperatures = if last {
                self.temperatures.clone()
            } else {
                self.temperatures.iter().take(1).copied().collect()
            };
            self.decode.decode.sample_len =
                Some((16.0 + TOKENS_PER_SECOND * seconds).ceil().min(224.0) as usize);
            let started = std::time::Instant::now();
            let transcript = self
                .transcriber
                .transcribe_window(&self.audio[..upto], &self.decode)?;
            tracing::debug!(
                seconds = upto as f64 / RATE,
                took = started.elapsed().as_secs_f64(),
                "live pass"
            );
            if !self.language_fixed && upto as f64 >= 3.0 * RATE {
                self.decode.language = Some(transcript.language.clone());
                self.language_fixed = true;
            }
            heard = transcript
                .segments
                .into_iter()
                .flat_map(|s| s.words)
                // A word starting where the audio stops was not heard: Whisper guesses
                // how the sentence goes on.
                .filter(|w| w.start < seconds - 0.1)
                .map(|w| Word {
                    start: w.start + offset,
                    end: w.end + offset,
                    ..w
                })
                .collect();
            agreement::cut_repeats(&mut heard);
        }
        let mut settled = self.agreement.insert(heard);
        if last {
            settled.extend(self.agreement.flush());
        }
        let mut events = Vec::new();
        let at = self.received_seconds();
        if !settled.is_empty() || (last && self.shown) {
            self.settled_in_buffer.extend(settled.iter().cloned());
            let words = settled.clone();
            events.push(LiveEvent::Final(self.caption(settled, at, last)));
            self.shown = true;
            self.label_speakers(&words, false, &mut events)?;
        }
        if !last {
            let pending = self.agreement.pending().to_vec();
            let text: String = pending.iter().map(|w| w.text.as_str()).collect();
            // A final just replaced the partial: say what is left even when unchanged.
            if text != self.last_partial || !events.is_empty() {
                self.last_partial = text;
                self.shown |= !pending.is_empty();
                events.push(LiveEvent::Partial(self.caption(pending, at, false)));
            }
        } else {
            self.last_partial.clear();
        }
        Ok(events)
    }

    fn caption(&self, words: Vec<Word>, at: f64, end_of_utterance: bool) -> Caption {
        Caption {
            utterance: self.utterance,
            start: words.first().map_or(at, |w| w.start),
            end: words.last().map_or(at, |w| w.end),
            text: words.iter().map(|w| w.text.as_str()).collect(),
            words,
            at,
            end_of_utterance,
        }
    }

    /// The caller's prompt, then the tail of the settled text before the buffer.
    fn prompt(&self) -> Option<String> {
        let mut tail = self.before.trim_start();
        if tail.len() > PROMPT_CHARS {
            let mut cut = tail.len() - PROMPT_CHARS;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail = &tail[cut..];
        }
        match (&self.user_prompt, tail.is_empty()) {
            (None, true) => None,
            (None, false) => Some(tail.to_string()),
            (Some(p), true) => Some(p.clone()),
            (Some(p), false) => Some(format!("{p} {tail}")),
        }
    }

    /// Moves the settled words of the buffer into the text before it.
    fn before_push_settled(&mut self) {
        for w in self.settled_in_buffer.drain(..) {
            self.before.push_str(&w.text);
        }
        // Only the prompt's tail is ever read.
        if self.before.len() > 4 * PROMPT_CHARS {
            let mut cut = self.before.len() - 2 * PROMPT_CHARS;
            while !self.before.is_char_boundary(cut) {
                cut += 1;
            }
            self.before.drain(..cut);
        }
    }

    /// Lets go of the audio before stream sample `sample`.
    fn cut_buffer(&mut self, sample: u64) {
        let drop = (sample.saturating_sub(self.buffer_start) as usize).min(self.audio.len());
        self.audio.drain(..drop);
        self.buffer_start += drop as u64;
    }

    /// While silent, only a short lead before the next speech start is kept.
    fn keep_lead(&mut self) {
        let lead = (self.options.lead_seconds * RATE) as u64 + 512;
        self.cut_buffer(self.received.saturating_sub(lead));
    }

    /// A long utterance: cut the buffer at the last settled sentence end, or, far past the
    /// limit, at the last settled word (or settle what is pending and cut there).
    fn trim_long_buffer(&mut self, events: &mut Vec<LiveEvent>) -> Result<(), Error> {
        let seconds = self.audio.len() as f64 / RATE;
        if seconds <= self.options.max_buffer_seconds {
            return Ok(());
        }
        let sentence_end = self.settled_in_buffer.iter().rposition(|w| {
            w.text
                .trim_end()
                .ends_with(['.', '?', '!', '。', '？', '！'])
        });
        let hard = seconds > self.options.max_buffer_seconds * HARD_BUFFER_FACTOR;
        let keep_from = match (sentence_end, hard) {
            (Some(i), _) => i + 1,
            (None, true) if !self.settled_in_buffer.is_empty() => self.settled_in_buffer.len(),
            (None, true) => {
                let settled = self.agreement.flush();
                if settled.is_empty() {
                    // Nothing heard in all this audio: keep only the latest step's worth.
                    let keep = (self.options.step_seconds * RATE) as u64;
                    self.cut_buffer(self.received.saturating_sub(keep));
                    return Ok(());
                }
                let at = self.received_seconds();
                self.settled_in_buffer.extend(settled.iter().cloned());
                let words = settled.clone();
                events.push(LiveEvent::Final(self.caption(settled, at, false)));
                self.label_speakers(&words, false, events)?;
                self.settled_in_buffer.len()
            }
            (None, false) => return Ok(()),
        };
        let cut_at = self.settled_in_buffer[keep_from - 1].end;
        // The audio of words not yet labelled goes with the cut.
        self.label_speakers(&[], true, events)?;
        let rest = self.settled_in_buffer.split_off(keep_from);
        self.before_push_settled();
        self.settled_in_buffer = rest;
        self.cut_buffer((cut_at * RATE) as u64);
        Ok(())
    }

    /// Labels the speakers of newly settled `words` (and, with `flush`, of every settled
    /// word not yet labelled), while their audio is still in the buffer.
    fn label_speakers(
        &mut self,
        words: &[Word],
        flush: bool,
        events: &mut Vec<LiveEvent>,
    ) -> Result<(), Error> {
        let Some(speakers) = &mut self.speakers else {
            return Ok(());
        };
        let offset = self.buffer_start as f64 / RATE;
        let mut label = Label {
            events,
            utterance: self.utterance,
            at: self.received as f64 / RATE,
        };
        speakers.settled(words, &self.audio, offset, &mut label)?;
        if flush {
            speakers.flush(&self.audio, offset, &mut label)?;
        }
        Ok(())
    }
}
