//! [`serve`]: binds, loads the models beside the listener, serves until shutdown, and
//! drains: no new invocation after the signal, in-flight ones get the configured time
//! to finish, then are cancelled.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mica::Analyzer;
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::routes::router;
use crate::state::AppState;

/// How long cancelled analyses get to stop after the drain time, before the server
/// returns without them (they stop at their next check, within a Whisper window).
const CANCEL_GRACE: Duration = Duration::from_secs(4);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The models could not be loaded.
    #[error("loading the models: {0}")]
    Load(#[from] mica::Error),
    /// Accepting connections failed.
    #[error("serving: {0}")]
    Io(std::io::Error),
}

/// Serves until `shutdown` completes (SIGTERM, say), then drains. `load` builds the
/// analyzer on a blocking thread after the port is bound; `/ping` answers 503 until it
/// returns. A failed load stops the server with [`ServeError::Load`].
pub async fn serve<L, S>(mut config: ServerConfig, load: L, shutdown: S) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Analyzer, mica::Error> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let threads = mica_core::device::threads();
    if config.workers == 0 {
        config.workers = threads;
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
    let local = listener.local_addr().map_err(ServeError::Io)?;
    tracing::info!(
        workers = config.workers,
        queue = config.queue,
        "listening on {local}"
    );
    let drain = config.drain;
    let state = Arc::new(AppState::new(config, threads));

    let load_failed = Arc::new(Notify::new());
    let loading = {
        let state = Arc::clone(&state);
        let load_failed = Arc::clone(&load_failed);
        tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            match load() {
                Ok(analyzer) => {
                    tracing::info!(
                        tasks = ?analyzer.tasks(),
                        "models loaded in {:.1} s; ready",
                        t.elapsed().as_secs_f64()
                    );
                    state.set_analyzer(Arc::new(analyzer));
                    Ok(())
                }
                Err(e) => {
                    load_failed.notify_one();
                    Err(e)
                }
            }
        })
    };

    let stopping = Arc::new(Notify::new());
    let graceful = {
        let (state, stopping, load_failed) = (
            Arc::clone(&state),
            Arc::clone(&stopping),
            Arc::clone(&load_failed),
        );
        async move {
            tokio::select! {
                () = shutdown => tracing::info!(
                    in_flight = state.in_flight(),
                    "shutting down: no new invocations; in-flight ones get {} s",
                    drain.as_secs_f64()
                ),
                () = load_failed.notified() => {}
            }
            state.start_draining();
            stopping.notify_one();
        }
    };
    let deadline = {
        let state = Arc::clone(&state);
        async move {
            stopping.notified().await;
            tokio::time::sleep(drain).await;
            let cancelled = state.cancel_all();
            if cancelled > 0 {
                tracing::warn!(
                    "cancelled {cancelled} analyses still running at the drain deadline"
                );
            }
            tokio::time::sleep(CANCEL_GRACE).await;
        }
    };
    let server = axum::serve(listener, router(Arc::clone(&state))).with_graceful_shutdown(graceful);
    tokio::select! {
        served = server.into_future() => served.map_err(ServeError::Io)?,
        () = deadline => tracing::warn!("connections still open past the drain deadline; stopping"),
    }
    // Live sessions run on upgraded connections, which the HTTP server does not wait
    // for: give them a moment to send their last events and close.
    let live_grace = std::time::Instant::now();
    while state.live_sessions() > 0 && live_grace.elapsed() < CANCEL_GRACE {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = state.remove_uploads();
    if left > 0 {
        tracing::warn!("removed {left} uploads of analyses abandoned at shutdown");
    }
    if loading.is_finished() {
        match loading.await {
            Ok(Err(e)) => return Err(ServeError::Load(e)),
            Ok(Ok(())) => {}
            Err(e) => tracing::error!("the model loader failed: {e}"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM (what SageMaker and container runtimes send) or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
