//! `mica serve`: the HTTP server of SageMaker's bring-your-own-container contract, over
//! one analyzer loaded once (the `serve` container argument runs it).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mica_server::ServerConfig;

use crate::analyze::ModelArgs;

/// Most Whisper windows in one batch (the engine's own limit).
const MAX_BATCH: u64 = 64;

/// Arguments of `mica serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (SageMaker sets SAGEMAKER_BIND_TO_PORT; 0 picks a free one).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    #[command(flatten)]
    models: ModelArgs,
    /// Invocations analysed at once (0: one per CPU thread, 2 on a GPU; with --batch, as
    /// many as a batch holds); each runs on its share of the threads.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Whisper windows of concurrent invocations decoded together, at most N per batch
    /// (0 or 1: each invocation decodes alone). Each invocation's text is the same as
    /// alone; throughput rises with concurrency.
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = clap::value_parser!(u64).range(..=MAX_BATCH))]
    batch: u64,
    /// Invocations admitted beyond the running ones (waiting or uploading); past that a
    /// request gets 429 at once. Default: as many as the workers.
    #[arg(long)]
    queue: Option<usize>,
    /// Largest request body in MB (SageMaker sets SAGEMAKER_MAX_PAYLOAD_IN_MB).
    #[arg(long, env = "SAGEMAKER_MAX_PAYLOAD_IN_MB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_payload_mb: u64,
    /// Seconds an analysis may run before it is cancelled and answered 504 (0: no
    /// limit). Default: 0 under batch transform (SAGEMAKER_BATCH=true), else 3600.
    #[arg(long, env = "MICA_TIME_LIMIT")]
    time_limit: Option<u64>,
    /// Seconds an upload may send nothing before it is dropped with 408.
    #[arg(long, default_value_t = 30)]
    upload_stall: u64,
    /// Let JSON {"path": ...} invocations read files under DIR (off by default).
    #[arg(long, value_name = "DIR")]
    input_root: Option<PathBuf>,
    /// Let GET /live sessions read stream URLs their clients name (srt, udp, rtp, rtmp,
    /// rtsp, tcp, http/HLS). Off by default: the server would fetch any address it is given.
    #[arg(long, env = "MICA_LIVE_URLS")]
    live_urls: bool,
    /// Seconds in-flight analyses get to finish after SIGTERM before they are cancelled,
    /// at most 20 (SageMaker kills the container 30 s after SIGTERM).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(..=20))]
    drain: u64,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// Runs `mica serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    // Every argument is checked before the port is bound.
    let tasks = args.models.tasks()?;
    anyhow::ensure!(!tasks.is_empty(), "--tasks names no task");
    // --drain is at most 20: then a few seconds for cancelled analyses to stop, inside
    // SageMaker's 30 s. Its range, --batch's and --max-payload-mb's are clap's (exit 2).
    let batch_rows = args.batch as usize;
    if let Some(root) = &args.input_root {
        anyhow::ensure!(
            root.is_dir(),
            "--input-root {} is not a directory",
            root.display()
        );
    }
    let batch = std::env::var("SAGEMAKER_BATCH").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let time_limit = args.time_limit.unwrap_or(if batch { 0 } else { 3600 });
    let device = args.compute.apply()?;
    let workers = match args.workers {
        0 if batch_rows > 1 => batch_rows,
        0 if !device.is_cpu() => 2,
        n => n,
    };
    let config = ServerConfig {
        bind: SocketAddr::new(args.host, args.port),
        workers,
        queue: args.queue.unwrap_or(if workers == 0 {
            mica_core::device::threads()
        } else {
            workers
        }),
        max_payload: args.max_payload_mb << 20,
        time_limit: (time_limit > 0).then(|| Duration::from_secs(time_limit)),
        upload_stall: Duration::from_secs(args.upload_stall.max(1)),
        input_root: args.input_root,
        drain: Duration::from_secs(args.drain),
        model: args.models.model().to_string(),
        temp_dir: None,
        live_urls: args.live_urls,
    };
    let builder = args
        .models
        .builder()?
        .on_device(device)
        .batch_windows(batch_rows);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("mica-http")
        .build()
        .context("starting the server's runtime")?;
    let served = runtime.block_on(mica_server::serve(
        config,
        move || builder.build(),
        mica_server::termination(),
    ));
    // Analyses cancelled at shutdown stop within a Whisper window; do not wait on one for
    // ever (their uploads are already removed).
    runtime.shutdown_timeout(Duration::from_secs(3));
    Ok(served?)
}
