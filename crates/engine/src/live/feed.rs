//! Feeding a [`LiveSession`] from a [`LiveAudio`] source: the source is read on its own
//! thread so decoding never stops the reading (a network source would drop packets), and
//! whatever queued up while Whisper ran goes into the next push at once.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use mica_media::{LiveAudio, LiveRead, MediaError};

use super::{LiveEvent, LiveSession};
use crate::{CancelToken, Error};

/// What the reading thread sends.
enum Msg {
    Samples(Vec<f32>),
    /// The source ended; ffmpeg's last words, if any.
    End(String),
    Failed(MediaError),
}

/// How [`LiveSession::run`] watches its source.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// No audio for this long is reported as a stall (and its return as `resumed`).
    pub stall_after: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            stall_after: Duration::from_secs(3),
        }
    }
}

impl LiveSession {
    /// Captions `audio` until it ends, `cancel` is set, or `on_event` returns false (its
    /// reader went away), handing every event to `on_event` as it happens: `listening`
    /// first, `stalled`/`resumed` when the audio stops coming and comes back, the captions,
    /// and `ended` last. A source that fails before sending any audio is an error; one that
    /// fails later ends the session with what it had, saying why in `ended`.
    pub fn run(
        &mut self,
        audio: LiveAudio,
        options: &FeedOptions,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(&LiveEvent) -> bool,
    ) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("mica-live-source".to_string())
            .spawn(move || read_source(audio, &tx))?;
        let status =
            |session: &LiveSession, state: &str, message: Option<String>| LiveEvent::Status {
                state: state.to_string(),
                at: session.received_seconds(),
                message,
            };
        if !on_event(&status(self, "listening", None)) {
            return Ok(());
        }
        let mut stalled = false;
        let mut last_arrival = Instant::now();
        let mut ended = None;
        let mut samples = Vec::new();
        while ended.is_none() {
            if cancel.is_cancelled() {
                ended = Some("cancelled".to_string());
                break;
            }
            let first = match rx.recv_timeout(options.stall_after.min(Duration::from_millis(250))) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    if !stalled && last_arrival.elapsed() >= options.stall_after {
                        stalled = true;
                        let message =
                            format!("no audio for {:.1} s", options.stall_after.as_secs_f64());
                        if !on_event(&status(self, "stalled", Some(message))) {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            samples.clear();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Samples(s) => samples.extend_from_slice(&s),
                    Msg::End(why) => ended = Some(why),
                    Msg::Failed(e) if self.received_seconds() == 0.0 && samples.is_empty() => {
                        return Err(e.into());
                    }
                    Msg::Failed(e) => ended = Some(e.to_string()),
                }
                if ended.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            if samples.is_empty() {
                continue;
            }
            last_arrival = Instant::now();
            if stalled {
                stalled = false;
                if !on_event(&status(self, "resumed", None)) {
                    return Ok(());
                }
            }
            for event in self.push(&samples)? {
                if !on_event(&event) {
                    return Ok(());
                }
            }
        }
        for event in self.finish()? {
            if !on_event(&event) {
                return Ok(());
            }
        }
        let message = ended.filter(|m| !m.is_empty());
        on_event(&status(self, "ended", message));
        // The reader is done once the source ended; after a cancel it may still be blocked
        // on a silent source, and goes when the process does.
        if reader.is_finished() {
            let _ = reader.join();
        }
        Ok(())
    }
}

fn read_source(mut audio: LiveAudio, tx: &mpsc::Sender<Msg>) {
    loop {
        let mut samples = Vec::with_capacity(4096);
        let msg = match audio.read(&mut samples) {
            Ok(LiveRead::Samples(_)) => Msg::Samples(samples),
            Ok(LiveRead::End) => Msg::End(audio.last_errors()),
            Err(e) => Msg::Failed(e),
        };
        let last = !matches!(msg, Msg::Samples(_));
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}
