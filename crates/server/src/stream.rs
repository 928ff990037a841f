//! `POST /invocations-response-stream` (InvokeEndpointWithResponseStream): JSON lines as
//! the analysis runs (each transcript segment as Whisper decodes it, progress at most
//! once a second per stage), then the whole document or the error as the last line.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use mica::{CancelToken, Progress, Stage};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::routes::{Request, answered};
use crate::state::AppState;

/// Content type of the stream: one JSON document per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Shortest time between two progress lines of one stage.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One line of the stream, or the failure that ends it.
enum Event {
    Line(String),
    /// The analysis failed: the last line (or the whole answer, when nothing was sent).
    Failed(ApiError),
}

/// Cancels the analysis when the stream is dropped (the client went away).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The handler.
pub async fn invocations_stream(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = match stream(&state, query.as_deref(), &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    answered(&state, &headers, started, response)
}

async fn stream(
    state: &Arc<AppState>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = Request::read(state, query, headers, body).await?;
    let cancel = request.cancel_token();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let progress: mica::ProgressFn = {
        let tx = tx.clone();
        let last = Mutex::new(Vec::<(Stage, Instant)>::new());
        Arc::new(move |p: Progress| {
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match last.iter_mut().find(|(s, _)| *s == p.stage) {
                Some((_, at)) if now.duration_since(*at) < PROGRESS_EVERY => return,
                Some((_, at)) => *at = now,
                None => last.push((p.stage, now)),
            }
            let line = serde_json::json!({
                "event": "progress",
                "stage": format!("{:?}", p.stage).to_lowercase(),
                "media_seconds": p.media_seconds,
                "duration": p.duration,
            });
            let _ = tx.send(Event::Line(line.to_string()));
        })
    };
    let segments: mica::SegmentFn = {
        let tx = tx.clone();
        Arc::new(move |segment: &mica_core::document::Segment| {
            let line = serde_json::json!({"event": "segment", "segment": segment});
            let _ = tx.send(Event::Line(line.to_string()));
        })
    };
    let worker = {
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let event = match request
                .run_with(&state, Some(progress), Some(segments))
                .await
            {
                Ok(analysis) => match serde_json::to_string(&analysis) {
                    Ok(json) => {
                        Event::Line(format!("{{\"event\":\"analysis\",\"analysis\":{json}}}"))
                    }
                    Err(e) => {
                        Event::Failed(ApiError::internal(format!("writing the document: {e}")))
                    }
                },
                Err(e) => Event::Failed(e),
            };
            let _ = tx.send(event);
        })
    };
    // A failure before anything was produced (bad media, say) is a plain error answer.
    let guard = CancelOnDrop(cancel);
    let first = match rx.recv().await {
        Some(Event::Failed(e)) => return Err(e),
        Some(Event::Line(line)) => line,
        None => {
            let reason = match worker.await {
                Err(e) => format!("the analysis task failed: {e}"),
                Ok(()) => "the analysis ended without a result".into(),
            };
            return Err(ApiError::internal(reason));
        }
    };
    let lines = futures_util::stream::unfold(
        (Some(first), rx, guard),
        |(first, mut rx, guard)| async move {
            let line = match first {
                Some(line) => line,
                None => match rx.recv().await? {
                    Event::Line(line) => line,
                    Event::Failed(e) => {
                        format!("{{\"event\":\"error\",{}", e.body().trim_start_matches('{'))
                    }
                },
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(line + "\n")),
                (None, rx, guard),
            ))
        },
    );
    Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response())
}
