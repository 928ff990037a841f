//! `GET /live` (WebSocket): live captions over a socket, as the JSON events `mica live`
//! prints (`partial`, `final`, `status`), one text message each.
//!
//! The audio comes either from a source URL the server reads (`?source=srt://...`, only
//! when the server allows it: a server that opens any URL it is given can be made to reach
//! inside its own network), or from the client as binary messages of 16 kHz mono PCM
//! (`encoding=s16le`, the default, or `f32le`). A client sending audio ends it with the
//! text message `{"type":"end"}`: the session settles what it heard, sends `ended` and
//! closes. A client that goes away (or closes first) ends its session at once, and the
//! source's ffmpeg with it. A session holds one worker for as long as it runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use mica::{FeedOptions, LiveEvent, LiveOptions, LiveSession, live_channel};
use mica_media::{LiveAudio, LiveOptions as SourceOptions};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::routes::answered;
use crate::state::{Admission, AppState};

/// URL schemes a `source=` may use: network streams only (no `file:`, `pipe:`, `concat:`
/// and the like, which would read the server's own files).
pub const SOURCE_SCHEMES: [&str; 9] = [
    "srt", "udp", "rtp", "rtmp", "rtmps", "rtsp", "tcp", "http", "https",
];

/// Client audio queued beyond this many seconds stops the socket being read (the client's
/// sends then wait): memory stays bounded whatever a client sends.
const MAX_QUEUED_SECONDS: f64 = 30.0;

/// Largest binary message taken (16 s of f32 samples).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How client audio is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// Signed 16-bit little-endian.
    S16le,
    /// 32-bit float little-endian.
    F32le,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::S16le => 2,
            Encoding::F32le => 4,
        }
    }
}

/// What `/live`'s query string may set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveQuery {
    /// A stream URL the server reads; without it the client sends the audio.
    source: Option<String>,
    encoding: Option<Encoding>,
    sample_rate: Option<u32>,
    tasks: Option<String>,
    model: Option<String>,
    language: Option<String>,
    beam_size: Option<usize>,
    initial_prompt: Option<String>,
    /// Seconds of new audio between two decodes.
    step: Option<f64>,
    /// Silence that ends an utterance, in ms.
    min_silence_ms: Option<u32>,
    /// Seconds a source URL that went away is tried again.
    reconnect_seconds: Option<f64>,
}

/// Where a session's audio comes from.
enum Audio {
    Url(Box<LiveAudio>),
    Client(Encoding),
}

/// The handler: checks everything it can before the upgrade, so a bad request is an
/// ordinary HTTP error.
pub async fn live(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let started = Instant::now();
    let response = match start(&state, query.as_deref(), upgrade) {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), code = e.code, "{}", e.message);
            e.into_response()
        }
    };
    answered(&state, &headers, started, response)
}

fn start(
    state: &Arc<AppState>,
    query: Option<&str>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let query: LiveQuery = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| ApiError::options(format!("the query string: {e}")))?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            format!("GET /live is a WebSocket: connect with a WebSocket client ({e})"),
        )
    })?;
    let (session, feed) = session(state, &query)?;
    let audio = match &query.source {
        Some(source) => {
            if query.encoding.is_some() || query.sample_rate.is_some() {
                return Err(ApiError::options(
                    "encoding and sample_rate describe audio the client sends; a source= is decoded by the server",
                ));
            }
            Audio::Url(Box::new(open_source(state, source)?))
        }
        None => {
            if query.reconnect_seconds.is_some() {
                return Err(ApiError::options("reconnect_seconds needs a source="));
            }
            if let Some(rate) = query.sample_rate
                && rate != 16_000
            {
                return Err(ApiError::options(format!(
                    "sample_rate={rate}: the client sends 16000 Hz mono audio"
                )));
            }
            Audio::Client(query.encoding.unwrap_or(Encoding::S16le))
        }
    };
    let admission = state.admit()?;
    admission.mark_live();
    let state = Arc::clone(state);
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(state, admission, session, feed, audio, socket)))
}

/// A session for the query's options over the shared models.
fn session(state: &AppState, query: &LiveQuery) -> Result<(LiveSession, FeedOptions), ApiError> {
    let mut speakers = false;
    if let Some(tasks) = &query.tasks {
        for task in tasks.split(',').map(str::trim) {
            match task {
                "asr" => {}
                "diarize" => speakers = true,
                _ => {
                    return Err(ApiError::options(format!(
                        "tasks={tasks}: live sessions do asr, and diarize for speaker labels (shot cuts are not live yet)"
                    )));
                }
            }
        }
    }
    let analyzer = state.analyzer().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "loading",
            "the models are still loading; retry once /ping answers 200",
        )
    })?;
    let options = crate::options::RequestOptions {
        model: query.model.clone(),
        language: query.language.clone(),
        beam_size: query.beam_size,
        ..Default::default()
    };
    let mut analyzer = options.apply(analyzer, &state.config.model)?;
    if query.initial_prompt.is_some() {
        let mut transcribe = analyzer.transcribe_options().clone();
        transcribe.initial_prompt = query.initial_prompt.clone();
        analyzer = analyzer.with_transcribe_options(transcribe)?;
    }
    let mut live = LiveOptions {
        speakers: speakers.then(mica::OnlineOptions::default),
        ..LiveOptions::default()
    };
    if let Some(step) = query.step {
        live.step_seconds = step;
    }
    if let Some(ms) = query.min_silence_ms {
        live.speech.min_silence_duration_ms = ms;
    }
    let session = analyzer.live(live)?;
    let reconnect = query.reconnect_seconds.unwrap_or(30.0);
    if !(0.0..=3600.0).contains(&reconnect) {
        return Err(ApiError::options("reconnect_seconds must be 0 to 3600"));
    }
    let feed = FeedOptions {
        reconnect_for: Duration::from_secs_f64(reconnect),
        ..FeedOptions::default()
    };
    Ok((session, feed))
}

/// Starts reading `source`, if this server reads source URLs and it is a network one.
fn open_source(state: &AppState, source: &str) -> Result<LiveAudio, ApiError> {
    if !state.config.live_urls {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "live_urls_off",
            "this server reads no source URLs (start it with --live-urls); send the audio over the socket instead",
        ));
    }
    let scheme = source
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .filter(|_| mica_media::is_url(source));
    if !scheme.is_some_and(|s| SOURCE_SCHEMES.contains(&s.as_str())) {
        return Err(ApiError::options(format!(
            "source={source:?} is not a stream URL; the schemes taken are {}",
            SOURCE_SCHEMES.join(", ")
        )));
    }
    LiveAudio::open(source, &SourceOptions::default())
        .map_err(|e| ApiError::from(mica::Error::from(e)))
}

/// Runs one session over an upgraded socket until the audio ends, the client goes away,
/// or the server shuts down.
async fn serve_socket(
    state: Arc<AppState>,
    admission: Admission,
    session: LiveSession,
    feed: FeedOptions,
    audio: Audio,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let cancel = admission.cancel.clone();
    // The session waits for a worker like any invocation. What the client sends meanwhile
    // is kept (up to the queue bound) and a client gone frees its place.
    let mut early = Vec::new();
    let mut early_bytes = 0;
    let lane = loop {
        tokio::select! {
            lane = admission.lane() => break lane,
            message = stream.next(), if early_bytes < MAX_MESSAGE_BYTES * 4 => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(message)) => {
                    early_bytes += match &message {
                        Message::Binary(b) => b.len(),
                        Message::Text(t) => t.len(),
                        _ => 0,
                    };
                    early.push(message);
                }
            },
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel::<String>();
    let mut client = Client {
        sender: None,
        encoding: None,
        pcm: Pcm::default(),
        last_audio: Instant::now(),
        close: None,
        cancel: cancel.clone(),
    };
    match audio {
        Audio::Url(source) => {
            let cancel = cancel.clone();
            spawn_session(lane, events_tx, session, move |session, on_event| {
                session.run(*source, &feed, &cancel, on_event)
            });
        }
        Audio::Client(encoding) => {
            let (sender, inbox) = live_channel();
            let cancel = cancel.clone();
            spawn_session(lane, events_tx, session, move |session, on_event| {
                session.run_fed(inbox, &feed, &cancel, on_event)
            });
            client.sender = Some(sender);
            client.encoding = Some(encoding);
        }
    }
    for message in early {
        if !client.take(message) {
            return;
        }
    }
    let idle = state.config.upload_stall;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let room = client
            .sender
            .as_ref()
            .is_none_or(|s| s.queued_seconds() < MAX_QUEUED_SECONDS);
        tokio::select! {
            event = events.recv() => match event {
                Some(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        cancel.cancel();
                        return;
                    }
                }
                // The session ended (and said so): close the socket.
                None => break,
            },
            message = stream.next(), if room => match message {
                Some(Ok(message)) => {
                    if !client.take(message) {
                        return;
                    }
                }
                Some(Err(_)) | None => {
                    cancel.cancel();
                    return;
                }
            },
            _ = tick.tick() => {
                if client.sender.is_some() && client.last_audio.elapsed() > idle
                    && let Some(s) = client.sender.take()
                {
                    s.end(format!("the client sent no audio for {} s", idle.as_secs()));
                }
            }
        }
    }
    let (code, reason) = client.close.unwrap_or((close_code::NORMAL, ""));
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    drop(admission);
}

/// What the client of one session sent, and how its socket is to be closed.
struct Client {
    /// Into the session, while the client sends the audio and has not ended it.
    sender: Option<mica::LiveSender>,
    encoding: Option<Encoding>,
    pcm: Pcm,
    last_audio: Instant,
    /// A close code and reason other than a normal close.
    close: Option<(u16, &'static str)>,
    cancel: mica::CancelToken,
}

impl Client {
    /// Takes one message; false when the client closed (the session is cancelled).
    fn take(&mut self, message: Message) -> bool {
        match message {
            Message::Binary(bytes) => match (&self.sender, self.encoding) {
                (Some(s), Some(encoding)) => {
                    self.last_audio = Instant::now();
                    let samples = self.pcm.decode(&bytes, encoding);
                    if !samples.is_empty() {
                        s.send(samples);
                    }
                }
                (None, Some(_)) => {}
                _ => self.refuse("this session reads its source URL; send no audio"),
            },
            Message::Text(text) if is_end(&text) => match self.sender.take() {
                Some(s) => s.end(""),
                None if self.encoding.is_none() => self.cancel.cancel(),
                None => {}
            },
            Message::Text(_) => self.refuse("the only text message taken is {\"type\":\"end\"}"),
            Message::Ping(_) | Message::Pong(_) => {}
            // Nobody reads the captions any more.
            Message::Close(_) => {
                self.cancel.cancel();
                return false;
            }
        }
        true
    }

    /// Ends the session; the socket is closed with a policy error once it ended.
    fn refuse(&mut self, why: &'static str) {
        self.close = Some((close_code::POLICY, why));
        self.sender = None;
        self.cancel.cancel();
    }
}

/// Runs the session on a blocking worker, sending each event as a JSON text; an error
/// becomes the last event, `{"event":"error","error":{...}}`.
fn spawn_session<F>(
    lane: crate::state::Lane,
    events: mpsc::UnboundedSender<String>,
    mut session: LiveSession,
    run: F,
) where
    F: FnOnce(&mut LiveSession, &mut dyn FnMut(&LiveEvent) -> bool) -> Result<(), mica::Error>
        + Send
        + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _lane = lane;
        let result = run(
            &mut session,
            &mut |event| match serde_json::to_string(event) {
                Ok(text) => events.send(text).is_ok(),
                Err(_) => false,
            },
        );
        if let Err(e) = result {
            let e = ApiError::from(e);
            let body = format!("{{\"event\":\"error\",{}", e.body().trim_start_matches('{'));
            let _ = events.send(body);
        }
    });
}

fn is_end(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Control {
        r#type: String,
    }
    serde_json::from_str::<Control>(text).is_ok_and(|c| c.r#type == "end")
}

/// Client PCM bytes to samples, keeping a sample split across two messages.
#[derive(Default)]
struct Pcm {
    carry: Vec<u8>,
}

impl Pcm {
    fn decode(&mut self, bytes: &[u8], encoding: Encoding) -> Vec<f32> {
        let width = encoding.bytes();
        self.carry.extend_from_slice(bytes);
        let whole = self.carry.len() - self.carry.len() % width;
        let samples = self.carry[..whole]
            .chunks_exact(width)
            .map(|b| match encoding {
                Encoding::S16le => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
                Encoding::F32le => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            })
            .collect();
        self.carry.drain(..whole);
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_keeps_a_sample_split_across_messages() {
        let mut pcm = Pcm::default();
        let bytes: Vec<u8> = [0i16, 16384, -32768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = pcm.decode(&bytes[..3], Encoding::S16le);
        let b = pcm.decode(&bytes[3..], Encoding::S16le);
        assert_eq!(a, vec![0.0]);
        assert_eq!(b, vec![0.5, -1.0]);
        let f: Vec<u8> = 0.25f32.to_le_bytes().to_vec();
        assert_eq!(pcm.decode(&f, Encoding::F32le), vec![0.25]);
    }

    #[test]
    fn only_the_end_message_ends() {
        assert!(is_end(r#"{"type":"end"}"#));
        assert!(!is_end(r#"{"type":"stop"}"#));
        assert!(!is_end("end"));
    }
}
