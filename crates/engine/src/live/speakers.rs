//! Speaker labels of a live session: settled words are grouped into stretches (split at
//! pauses, and every few seconds of continuous speech), and each stretch's audio is
//! embedded and labelled against the speakers heard so far ([`OnlineSpeakers`]). A label,
//! once sent, never changes.

use std::sync::Arc;

use mica_core::document::Word;
use mica_diarize::{OnlineOptions, OnlineSpeakers, SpeakerEncoder};

use super::{LiveEvent, RATE, SpeakerLabel};
use crate::Error;

/// A pause this long between settled words may be a change of speaker: the stretch
/// before it is labelled on its own.
const PAUSE: f64 = 0.3;
/// A stretch shorter than this is not closed at a pause: it joins the next words, as an
/// embedding of a few syllables says little about who spoke.
const MIN_STRETCH: f64 = 0.5;
/// Continuous speech is labelled every this many seconds, so labels follow the captions.
const MAX_STRETCH: f64 = 4.0;
/// Audio taken beyond a stretch's first and last word times (word times are approximate).
const MARGIN: f64 = 0.05;

/// Who spoke the settled words of one live session.
pub(super) struct LiveSpeakers {
    encoder: Arc<SpeakerEncoder>,
    online: OnlineSpeakers,
    /// Settled words not yet labelled: (start, end) in stream seconds.
    stretch: Option<(f64, f64)>,
}

impl LiveSpeakers {
    pub(super) fn new(
        encoder: Arc<SpeakerEncoder>,
        options: OnlineOptions,
    ) -> Result<LiveSpeakers, Error> {
        Ok(LiveSpeakers {
            encoder,
            online: OnlineSpeakers::new(options)?,
            stretch: None,
        })
    }

    /// Takes newly settled words; labels the stretches they close. `audio` holds the
    /// session's buffer, whose first sample is at `offset` seconds.
    pub(super) fn settled(
        &mut self,
        words: &[Word],
        audio: &[f32],
        offset: f64,
        label: &mut Label<'_>,
    ) -> Result<(), Error> {
        for w in words {
            match self.stretch {
                Some((start, end)) if w.start - end >= PAUSE && end - start >= MIN_STRETCH => {
                    self.label(audio, offset, label)?;
                    self.stretch = Some((w.start, w.end));
                }
                Some((start, end)) => self.stretch = Some((start, end.max(w.end))),
                None => self.stretch = Some((w.start, w.end)),
            }
            if let Some((start, end)) = self.stretch
                && end - start >= MAX_STRETCH
            {
                self.label(audio, offset, label)?;
            }
        }
        Ok(())
    }

    /// Labels what is left (the utterance ended, or the buffer is about to be cut).
    pub(super) fn flush(
        &mut self,
        audio: &[f32],
        offset: f64,
        label: &mut Label<'_>,
    ) -> Result<(), Error> {
        if self.stretch.is_some() {
            self.label(audio, offset, label)?;
        }
        Ok(())
    }

    fn label(&mut self, audio: &[f32], offset: f64, label: &mut Label<'_>) -> Result<(), Error> {
        let Some((start, end)) = self.stretch.take() else {
            return Ok(());
        };
        let at = |t: f64| (((t - offset) * RATE).max(0.0) as usize).min(audio.len());
        let clip = &audio[at(start - MARGIN)..at(end + MARGIN)];
        // A clip shorter than one mel frame cannot be embedded: its words stay unlabelled.
        if clip.len() < mica_diarize::embedding::N_FFT {
            return Ok(());
        }
        let embedding = self.encoder.embed_clip(clip)?;
        let speaker = self.online.assign(&embedding, end - start);
        label.events.push(LiveEvent::Speaker(SpeakerLabel {
            utterance: label.utterance,
            start,
            end,
            speaker: format!("SPEAKER_{speaker:02}"),
            at: label.at,
        }));
        Ok(())
    }
}

/// Where labels go, and what they carry.
pub(super) struct Label<'a> {
    pub(super) events: &'a mut Vec<LiveEvent>,
    pub(super) utterance: u64,
    pub(super) at: f64,
}
