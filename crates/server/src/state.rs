//! [`AppState`]: what every request shares: the analyzer once loaded, the admission and
//! worker semaphores, the in-flight analyses (so shutdown can cancel them) and the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use mica::{Analyzer, CancelToken};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// State shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// The configuration, with `workers` resolved.
    pub config: ServerConfig,
    /// Set once the models are loaded; `/ping` answers 200 from then on.
    analyzer: OnceLock<Arc<Analyzer>>,
    /// Admitted invocations (running, queued or uploading): `workers + queue` permits.
    admission: Arc<Semaphore>,
    /// Invocations analysing: `workers` permits.
    lanes: Arc<Semaphore>,
    /// How many analyses hold a lane now (for each one's share of the threads).
    running: AtomicUsize,
    /// The CPU threads the analyses share.
    threads: usize,
    /// Cancel tokens of the analyses in flight, by request number.
    inflight: Mutex<HashMap<u64, CancelToken>>,
    /// Those of them that are live sessions, which never end on their own: SIGTERM ends
    /// them at once instead of waiting out the drain.
    live: Mutex<std::collections::HashSet<u64>>,
    next_id: AtomicU64,
    /// Uploads spooled to temporary files and not yet removed.
    uploads: Mutex<std::collections::HashSet<std::path::PathBuf>>,
    /// SIGTERM arrived: no new invocation is admitted.
    draining: AtomicBool,
    /// Set at the drain deadline: requests still waiting on an analysis answer at once.
    deadline: tokio::sync::watch::Sender<bool>,
    /// The counters `/metrics` shows.
    pub metrics: Metrics,
}

impl AppState {
    /// State for `config` (whose `workers` must be resolved, at least 1) sharing `threads`.
    pub fn new(config: ServerConfig, threads: usize) -> AppState {
        let workers = config.workers.max(1);
        AppState {
            admission: Arc::new(Semaphore::new(workers + config.queue)),
            lanes: Arc::new(Semaphore::new(workers)),
            config,
            analyzer: OnceLock::new(),
            running: AtomicUsize::new(0),
            threads: threads.max(1),
            inflight: Mutex::new(HashMap::new()),
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            uploads: Mutex::default(),
            draining: AtomicBool::new(false),
            deadline: tokio::sync::watch::Sender::new(false),
            metrics: Metrics::default(),
        }
    }

    /// Makes the loaded analyzer available (once).
    pub fn set_analyzer(&self, analyzer: Arc<Analyzer>) {
        let _ = self.analyzer.set(analyzer);
    }

    /// The analyzer, once loaded.
    pub fn analyzer(&self) -> Option<&Arc<Analyzer>> {
        self.analyzer.get()
    }

    /// Whether SIGTERM arrived.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops admitting invocations, and ends the live sessions.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        for id in live.iter() {
            if let Some(token) = inflight.get(id) {
                token.cancel();
            }
        }
    }

    /// Cancels every analysis in flight; requests waiting on one answer at once.
    pub fn cancel_all(&self) -> usize {
        self.deadline.send_replace(true);
        let inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        for token in inflight.values() {
            token.cancel();
        }
        inflight.len()
    }

    /// Notes an upload's temporary file.
    pub fn track_upload(&self, path: &std::path::Path) {
        self.uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf());
    }

    /// Forgets an upload's temporary file (removed by its owner).
    pub fn untrack_upload(&self, path: &std::path::Path) {
        self.uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
    }

    /// Removes the temporary files of uploads still held (by analyses abandoned at
    /// shutdown); returns how many.
    pub fn remove_uploads(&self) -> usize {
        let mut uploads = self.uploads.lock().unwrap_or_else(PoisonError::into_inner);
        let n = uploads.len();
        for path in uploads.drain() {
            let _ = std::fs::remove_file(path);
        }
        n
    }

    /// Completes once the drain deadline has passed.
    pub async fn past_deadline(&self) {
        let mut deadline = self.deadline.subscribe();
        // The sender lives as long as the state, which outlives every request.
        let _ = deadline.wait_for(|past| *past).await;
    }

    /// Live sessions open now.
    pub fn live_sessions(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Analyses in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Admits one invocation, or answers 429 at once when the server is full (503 while
    /// loading or draining).
    pub fn admit(self: &Arc<Self>) -> Result<Admission, ApiError> {
        use axum::http::StatusCode;
        if self.draining() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ));
        }
        if self.analyzer().is_none() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                "the models are still loading; retry once /ping answers 200",
            ));
        }
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    format!(
                        "the server is full ({} analysing, {} waiting); retry later",
                        self.config.workers, self.config.queue
                    ),
                )
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancelToken::new();
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, cancel.clone());
        Ok(Admission {
            state: Arc::clone(self),
            id,
            cancel,
            _admitted: permit,
        })
    }
}

/// One admitted invocation: its place in the server until dropped. Dropping it (the
/// analysis done, or the client gone while waiting) cancels its analysis and frees its place.
#[derive(Debug)]
pub struct Admission {
    state: Arc<AppState>,
    id: u64,
    /// Stops this invocation's analysis.
    pub cancel: CancelToken,
    _admitted: OwnedSemaphorePermit,
}

impl Admission {
    /// Marks this admission as a live session (ended at once by SIGTERM).
    pub fn mark_live(&self) {
        self.state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.id);
    }

    /// Waits for a worker; returns it with the CPU threads this analysis may use.
    pub async fn lane(&self) -> Lane {
        let metrics = &self.state.metrics;
        metrics.queued().inc();
        let permit = Arc::clone(&self.state.lanes).acquire_owned().await;
        metrics.queued().dec();
        let permit = permit.expect("the worker semaphore is never closed");
        let running = self.state.running.fetch_add(1, Ordering::Relaxed) + 1;
        metrics.running().inc();
        Lane {
            state: Arc::clone(&self.state),
            threads: (self.state.threads / running).max(1),
            _permit: permit,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.state
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.state
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A worker held by one analysis.
#[derive(Debug)]
pub struct Lane {
    state: Arc<AppState>,
    /// The CPU threads this analysis may use.
    pub threads: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.state.running.fetch_sub(1, Ordering::Relaxed);
        self.state.metrics.running().dec();
    }
}
