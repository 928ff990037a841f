//! The HTTP routes of SageMaker's bring-your-own-container contract, and `/metrics`.
//! Handlers parse the request, hand the analysis to a blocking worker and write the
//! document; nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mica::{Analysis, Analyzer, RunControl};
use mica_core::writers::{self, Format, WriterOptions};
use tempfile::NamedTempFile;

use crate::accept;
use crate::error::ApiError;
use crate::options::RequestOptions;
use crate::state::{Admission, AppState};
use crate::upload;

/// SageMaker's custom-attributes header, echoed back on every invocation's answer.
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// The app: every route over the shared state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .route(
            "/invocations-response-stream",
            post(crate::stream::invocations_stream),
        )
        .route("/execution-parameters", get(execution_parameters))
        .route("/live", get(crate::live::live))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are bounded by the server's own limit as they stream to disk.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// 200 with an empty body once the models are loaded, 503 before. Never waits on work.
async fn ping(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.analyzer().is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// What batch transform asks the container before it sends records.
async fn execution_parameters(State(state): State<Arc<AppState>>) -> Response {
    // Batch transform takes payloads of at most 100 MB.
    let mb = (state.config.max_payload >> 20).clamp(1, 100);
    let body = serde_json::json!({
        "MaxConcurrentTransforms": state.config.workers,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": mb,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(state.analyzer().and_then(|a| a.window_batches())),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the routes are GET /ping, POST /invocations, POST /invocations-response-stream, GET /execution-parameters, GET /live (WebSocket) and GET /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// `POST /invocations`: the analysis document in the format asked for.
async fn invocations(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = match invoke(&state, query.as_deref(), &headers, body).await {
        Ok(response) => response,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(code = e.code, "invocation failed: {}", e.message);
            } else {
                tracing::info!(status = e.status.as_u16(), code = e.code, "{}", e.message);
            }
            e.into_response()
        }
    };
    answered(&state, &headers, started, response)
}

/// What every invocation's answer gets: the custom attributes echoed, and its count in
/// the metrics.
pub(crate) fn answered(
    state: &AppState,
    headers: &HeaderMap,
    started: Instant,
    mut response: Response,
) -> Response {
    if let Some(attributes) = headers.get(CUSTOM_ATTRIBUTES) {
        response
            .headers_mut()
            .insert(CUSTOM_ATTRIBUTES, attributes.clone());
    }
    state
        .metrics
        .answered(response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn invoke(
    state: &Arc<AppState>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = Request::read(state, query, headers, body).await?;
    let format = request.format;
    let analysis = request.run(state).await?;
    let mut out = Vec::new();
    writers::write(&analysis, format, &WriterOptions::default(), &mut out)
        .map_err(|e| ApiError::internal(format!("writing the document: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(accept::content_type(format)),
        )],
        out,
    )
        .into_response())
}

/// Where an invocation's media is.
enum Source {
    // The document names an upload `upload`, and a file the path the client gave, never
    // a server-side path.
    /// The body, spooled to a temporary file (removed when this drops).
    Upload(Spooled),
    /// A file under the server's input root, and the path the client asked for.
    File(PathBuf, PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Upload(spooled) => spooled.file.path(),
            Source::File(path, _) => path,
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Upload(_) => "upload".into(),
            Source::File(_, asked) => asked.display().to_string(),
        }
    }
}

/// What a request body holds, by its content type.
enum BodyKind {
    /// Media bytes.
    Media,
    /// JSON naming a file under the input root.
    Json,
}

/// An upload's temporary file, removed when dropped; the server also knows it, so one
/// still held by an analysis abandoned at shutdown is removed when the server stops.
struct Spooled {
    file: NamedTempFile,
    state: Arc<AppState>,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        self.state.untrack_upload(self.file.path());
    }
}

/// One admitted invocation, read and checked, not yet analysed.
pub(crate) struct Request {
    admission: Admission,
    analyzer: Analyzer,
    source: Source,
    /// The document format asked for.
    pub(crate) format: Format,
}

impl Request {
    /// Parses the options, admits the request (429 when full), and reads its media. A
    /// request refused before its body is read has the body read and dropped first (up
    /// to a bound), so a client that sends the whole body before reading sees the answer
    /// instead of a broken connection.
    pub(crate) async fn read(
        state: &Arc<AppState>,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Request, ApiError> {
        let checked = Request::check(state, query, headers);
        let (admission, analyzer, format, kind) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                if e.status != StatusCode::PAYLOAD_TOO_LARGE {
                    upload::discard(body, state.config.upload_stall).await;
                }
                return Err(e);
            }
        };
        let source = match kind {
            BodyKind::Json => {
                let (resolved, asked) = read_path(state, body).await?;
                Source::File(resolved, asked)
            }
            BodyKind::Media => spool(state, body).await?,
        };
        Ok(Request {
            admission,
            analyzer,
            source,
            format,
        })
    }

    /// Everything about a request that its headers decide.
    fn check(
        state: &Arc<AppState>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(Admission, Analyzer, Format, BodyKind), ApiError> {
        let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str());
        let attributes = text(header::HeaderName::from_static(CUSTOM_ATTRIBUTES))
            .transpose()
            .map_err(|_| {
                ApiError::options("X-Amzn-SageMaker-Custom-Attributes is not ASCII text")
            })?;
        let options = RequestOptions::parse(query, attributes)?;
        let format = match options.format {
            Some(format) => format,
            None => accept::negotiate(text(header::ACCEPT).and_then(Result::ok))?,
        };
        let content_type = text(header::CONTENT_TYPE).and_then(Result::ok).map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let kind = match content_type.as_deref() {
            Some("application/json") => BodyKind::Json,
            None | Some("application/octet-stream") => BodyKind::Media,
            Some(m) if m.starts_with("audio/") || m.starts_with("video/") => BodyKind::Media,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type {other} is not taken; send media as audio/*, video/* or \
                         application/octet-stream, or JSON {{\"path\": ...}} as application/json"
                    ),
                ));
            }
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > state.config.max_payload) {
            return Err(upload::too_large(state.config.max_payload));
        }
        let admission = state.admit()?;
        let loaded = state.analyzer().expect("admitted only once loaded");
        let analyzer = options.apply(loaded, &state.config.model)?;
        RequestOptions::check_format(format, analyzer.tasks())?;
        Ok((admission, analyzer, format, kind))
    }

    /// The token that cancels this request's analysis.
    pub(crate) fn cancel_token(&self) -> mica::CancelToken {
        self.admission.cancel.clone()
    }

    /// Waits for a worker and analyses the media there, within the server's time limit;
    /// the callbacks (if any) are called from the worker.
    pub(crate) async fn run_with(
        self,
        state: &Arc<AppState>,
        progress: Option<mica::ProgressFn>,
        segments: Option<mica::SegmentFn>,
    ) -> Result<Analysis, ApiError> {
        let Request {
            admission,
            analyzer,
            source,
            ..
        } = self;
        // Messages name the input as the client knows it, not by the server's paths.
        let (server_path, client_name) = (source.path().display().to_string(), source.name());
        let lane = admission.lane().await;
        let analyzer = analyzer.with_threads(lane.threads);
        let control = RunControl {
            progress,
            segments,
            cancel: admission.cancel.clone(),
        };
        let mut work = tokio::task::spawn_blocking(move || {
            // The worker and the upload are held until the analysis ends, whoever waits.
            let _lane = lane;
            let mut result = analyzer.analyze_with(source.path(), &control);
            if let Ok(analysis) = &mut result {
                analysis.media.source = source.name();
            }
            drop(source);
            result
        });
        let limit = async {
            match state.config.time_limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        // A cancelled analysis stops at its next check (within a Whisper window); the
        // client is answered now, not then.
        let joined = tokio::select! {
            joined = &mut work => joined,
            () = limit => {
                admission.cancel.cancel();
                let limit = state.config.time_limit.unwrap_or_default();
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "time_limit",
                    format!(
                        "the analysis took longer than this server's limit of {} s and was cancelled",
                        limit.as_secs_f64()
                    ),
                ));
            }
            () = state.past_deadline() => return Err(shutting_down()),
        };
        let result =
            joined.map_err(|e| ApiError::internal(format!("the analysis worker failed: {e}")))?;
        match result {
            Ok(analysis) => {
                state.metrics.analysed(analysis.media.duration);
                Ok(analysis)
            }
            Err(mica::Error::Cancelled) if state.draining() => Err(shutting_down()),
            Err(e) => {
                let mut e = ApiError::from(e);
                e.message = e.message.replace(&server_path, &client_name);
                Err(e)
            }
        }
    }

    /// [`Request::run_with`] without callbacks.
    pub(crate) async fn run(self, state: &Arc<AppState>) -> Result<Analysis, ApiError> {
        self.run_with(state, None, None).await
    }
}

/// The answer to a request whose analysis the shutdown cancelled.
fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server shut down before the analysis finished; send it again",
    )
}

async fn spool(state: &Arc<AppState>, body: Body) -> Result<Source, ApiError> {
    let config = &state.config;
    let file = upload::spool(
        body,
        config.max_payload,
        config.upload_stall,
        config.temp_dir.as_deref(),
    )
    .await?;
    state.track_upload(file.path());
    Ok(Source::Upload(Spooled {
        file,
        state: Arc::clone(state),
    }))
}

/// The file a JSON `{"path": ...}` body names, which must lie under the input root, and
/// the path as asked.
async fn read_path(state: &AppState, body: Body) -> Result<(PathBuf, PathBuf), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PathBody {
        path: PathBuf,
    }
    let Some(root) = &state.config.input_root else {
        return Err(ApiError::input(
            "this server takes no {\"path\": ...} invocations (no input root is set); send the media bytes",
        ));
    };
    let bytes = upload::read_small(body, state.config.upload_stall).await?;
    let asked: PathBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::input(format!(
            "the JSON body: {e}; expected {{\"path\": \"...\"}}"
        ))
    })?;
    // Only plain names below the root: no `..`, no absolute path, so a client cannot learn
    // what exists elsewhere.
    let outside = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "outside_input_root",
            format!("{} is outside the input root", asked.path.display()),
        )
    };
    if !asked.path.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(outside());
    }
    let root = root
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("the input root {}: {e}", root.display())))?;
    // Symbolic links and `..` are resolved before the check, so nothing outside is opened.
    let resolved = root.join(&asked.path).canonicalize().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{} does not exist under the input root",
                asked.path.display()
            ),
        )
    })?;
    if !resolved.starts_with(&root) {
        return Err(outside());
    }
    if !resolved.is_file() {
        return Err(ApiError::input(format!(
            "{} is not a file",
            asked.path.display()
        )));
    }
    Ok((resolved, asked.path))
}
