//! Feeding a [`LiveSession`] from another thread: a [`LiveAudio`] source read on its own
//! thread (so decoding never stops the reading: a network source would drop packets), or
//! samples a caller sends through a [`LiveSender`] (a socket's frames). Whatever queued up
//! while Whisper ran goes into the next push at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mica_media::{LiveAudio, LiveRead, LiveStopper, MediaError};

use super::{LiveEvent, LiveSession, RATE};
use crate::{CancelToken, Error};

/// What the feeding side sends.
enum Msg {
    Samples(Vec<f32>),
    /// The source went away and is being reopened; why.
    Lost(String),
    /// The source ended; its last words, if any.
    End(String),
    Failed(MediaError),
}

/// How [`LiveSession::run`] watches its source.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// No audio for this long is reported as a stall (and its return as `resumed`).
    pub stall_after: Duration,
    /// A network source that ends after it sent audio is opened again, for up to this long
    /// (a `reconnecting` event, then `resumed` when audio comes back, or `ended`). Zero:
    /// the session ends with the source. Files are never reopened.
    pub reconnect_for: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            stall_after: Duration::from_secs(3),
            reconnect_for: Duration::ZERO,
        }
    }
}

/// Sends audio to a session running [`LiveSession::run_fed`] on another thread. Dropping
/// it ends the session's input, as [`LiveSender::end`] does.
#[derive(Debug)]
pub struct LiveSender {
    tx: mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
}

/// The receiving end of a [`LiveSender`], given to [`LiveSession::run_fed`].
#[derive(Debug)]
pub struct LiveInbox {
    rx: mpsc::Receiver<Msg>,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Samples(s) => write!(f, "Samples({})", s.len()),
            Msg::Lost(why) => write!(f, "Lost({why})"),
            Msg::End(why) => write!(f, "End({why})"),
            Msg::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// A channel of 16 kHz mono samples into a live session.
pub fn live_channel() -> (LiveSender, LiveInbox) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        LiveSender {
            tx,
            queued: Arc::clone(&queued),
        },
        LiveInbox { rx, queued },
    )
}

impl LiveSender {
    /// Sends samples (16 kHz mono; non-finite ones are taken as silence). False once the
    /// session is gone.
    pub fn send(&self, samples: Vec<f32>) -> bool {
        let n = samples.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        let sent = self.tx.send(Msg::Samples(samples)).is_ok();
        if !sent {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
        sent
    }

    /// Seconds of audio sent and not yet taken by the session: a sender faster than the
    /// session waits while this is high, so memory stays bounded.
    pub fn queued_seconds(&self) -> f64 {
        self.queued.load(Ordering::Relaxed) as f64 / RATE
    }

    /// Ends the input, saying why (empty: nothing to say); the session settles what it has
    /// and ends.
    pub fn end(self, message: impl Into<String>) {
        let _ = self.tx.send(Msg::End(message.into()));
    }

    fn lost(&self, why: String) -> bool {
        self.tx.send(Msg::Lost(why)).is_ok()
    }

    fn failed(self, e: MediaError) {
        let _ = self.tx.send(Msg::Failed(e));
    }
}

impl LiveInbox {
    fn take(&self, msg: Msg) -> Msg {
        if let Msg::Samples(s) = &msg {
            self.queued.fetch_sub(s.len(), Ordering::Relaxed);
        }
        msg
    }
}

/// The source the reading thread holds now, so the session can stop it from its own
/// thread (a silent source would otherwise hold the reader, and ffmpeg, forever).
#[derive(Default)]
struct SourceSlot {
    stopped: AtomicBool,
    current: Mutex<Option<LiveStopper>>,
}

impl SourceSlot {
    fn hold(&self, stopper: LiveStopper) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // A stop that came before this source was held stops it now.
        if self.stopped.load(Ordering::Relaxed) {
            stopper.stop();
        }
        *current = Some(stopper);
    }

    fn stop(&self) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(stopper) = current.as_ref() {
            stopper.stop();
        }
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early when stopped; false if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }
}

impl LiveSession {
    /// Captions `audio` until it ends, `cancel` is set, or `on_event` returns false (its
    /// reader went away), handing every event to `on_event` as it happens: `listening`
    /// first, `stalled`/`resumed` when the audio stops coming and comes back,
    /// `reconnecting` when a network source went away (see [`FeedOptions::reconnect_for`]),
    /// the captions, and `ended` last. A source that fails before sending any audio is an
    /// error; one that fails later ends the session with what it had, saying why in
    /// `ended`. The source's ffmpeg is stopped before this returns.
    pub fn run(
        &mut self,
        audio: LiveAudio,
        options: &FeedOptions,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(&LiveEvent) -> bool,
    ) -> Result<(), Error> {
        let (tx, inbox) = live_channel();
        let slot = Arc::new(SourceSlot::default());
        let reader = {
            let slot = Arc::clone(&slot);
            let reconnect_for = options.reconnect_for;
            std::thread::Builder::new()
                .name("mica-live-source".to_string())
                .spawn(move || read_source(audio, tx, &slot, reconnect_for))?
        };
        let result = self.run_fed(inbox, options, cancel, on_event);
        slot.stop();
        let _ = reader.join();
        result
    }

    /// [`LiveSession::run`] over samples sent through the [`LiveSender`] of `inbox`'s
    /// [`live_channel`]: the session ends when the sender ends or is dropped.
    pub fn run_fed(
        &mut self,
        inbox: LiveInbox,
        options: &FeedOptions,
        cancel: &CancelToken,
        on_event: &mut dyn FnMut(&LiveEvent) -> bool,
    ) -> Result<(), Error> {
        let status =
            |session: &LiveSession, state: &str, message: Option<String>| LiveEvent::Status {
                state: state.to_string(),
                at: session.received_seconds(),
                message,
            };
        if !on_event(&status(self, "listening", None)) {
            return Ok(());
        }
        // Stalled or reconnecting: the next audio is reported as `resumed`.
        let mut away = false;
        let mut last_arrival = Instant::now();
        let mut ended = None;
        let mut samples = Vec::new();
        while ended.is_none() {
            if cancel.is_cancelled() {
                ended = Some("cancelled".to_string());
                break;
            }
            let wait = options.stall_after.min(Duration::from_millis(250));
            let first = match inbox.rx.recv_timeout(wait) {
                Ok(msg) => inbox.take(msg),
                Err(RecvTimeoutError::Timeout) => {
                    if !away && last_arrival.elapsed() >= options.stall_after {
                        away = true;
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
            // The source went away after the samples taken so far (which go in first).
            let mut lost = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Samples(s) => samples.extend_from_slice(&s),
                    Msg::Lost(why) => lost = Some(why),
                    Msg::End(why) => ended = Some(why),
                    Msg::Failed(e) if self.received_seconds() == 0.0 && samples.is_empty() => {
                        return Err(e.into());
                    }
                    Msg::Failed(e) => ended = Some(e.to_string()),
                }
                if ended.is_none() && lost.is_none() {
                    next = inbox.rx.try_recv().ok().map(|m| inbox.take(m));
                }
            }
            if !samples.is_empty() {
                last_arrival = Instant::now();
                if !self.take_samples(&mut samples, &mut away, on_event)? {
                    return Ok(());
                }
            }
            if let Some(why) = lost {
                away = true;
                if !on_event(&status(self, "reconnecting", Some(why))) {
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
        Ok(())
    }

    /// Pushes arrived samples (non-finite ones as silence), saying `resumed` first if the
    /// audio had gone away; false when `on_event`'s reader went away.
    fn take_samples(
        &mut self,
        samples: &mut [f32],
        away: &mut bool,
        on_event: &mut dyn FnMut(&LiveEvent) -> bool,
    ) -> Result<bool, Error> {
        for s in samples.iter_mut() {
            if !s.is_finite() {
                *s = 0.0;
            }
        }
        if *away {
            *away = false;
            let resumed = LiveEvent::Status {
                state: "resumed".to_string(),
                at: self.received_seconds(),
                message: None,
            };
            if !on_event(&resumed) {
                return Ok(false);
            }
        }
        for event in self.push(samples)? {
            if !on_event(&event) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads `audio` into `tx` until it ends or the slot is stopped; a network source that
/// ended after sending audio is reopened for up to `reconnect_for`.
fn read_source(mut audio: LiveAudio, tx: LiveSender, slot: &SourceSlot, reconnect_for: Duration) {
    let mut had_audio = false;
    // When the source went away, and why.
    let mut lost: Option<(Instant, String)> = None;
    let mut wait = Duration::from_millis(250);
    let mut pruned = Instant::now();
    loop {
        slot.hold(audio.stopper());
        let outcome = loop {
            let mut samples = Vec::with_capacity(4096);
            match audio.read(&mut samples) {
                Ok(LiveRead::Samples(_)) => {
                    had_audio = true;
                    lost = None;
                    wait = Duration::from_millis(250);
                    if !tx.send(samples) {
                        return;
                    }
                    // The recording keeps its length (a few file removals, now and then).
                    if let Some(recorder) = audio.recorder()
                        && pruned.elapsed() >= Duration::from_secs(5)
                    {
                        recorder.prune();
                        pruned = Instant::now();
                    }
                }
                Ok(LiveRead::End) => break Ok(audio.last_errors()),
                Err(e) => break Err(e),
            }
        };
        if slot.stopped() {
            return;
        }
        if reconnect_for.is_zero() || !audio.is_network() || !had_audio {
            match outcome {
                Ok(why) => tx.end(why),
                Err(e) => tx.failed(e),
            }
            return;
        }
        let why = match outcome {
            Ok(why) if why.is_empty() => "the source ended".to_string(),
            Ok(why) => why,
            Err(e) => e.to_string(),
        };
        // Reopen until audio comes back (then `lost` is cleared) or the time is up.
        let since = match &lost {
            Some((since, _)) => *since,
            None => {
                if !tx.lost(why.clone()) {
                    return;
                }
                Instant::now()
            }
        };
        lost = Some((since, why));
        audio = loop {
            let left = reconnect_for.saturating_sub(since.elapsed());
            if left.is_zero() {
                let why = lost.map(|(_, why)| why).unwrap_or_default();
                tx.end(format!(
                    "the source went away and did not come back within {:.0} s: {why}",
                    reconnect_for.as_secs_f64()
                ));
                return;
            }
            if !slot.sleep(wait.min(left)) {
                return;
            }
            wait = (wait * 2).min(Duration::from_secs(2));
            match audio.reopen() {
                Ok(next) => break next,
                Err(e) => lost = Some((since, e.to_string())),
            }
        };
    }
}
