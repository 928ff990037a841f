//! [`ServerConfig`]: where the server listens and the limits it holds to. The CLI fills it
//! from its flags and SageMaker's environment variables; the library reads no environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the server listens and what it admits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (SageMaker: 0.0.0.0:8080, or `SAGEMAKER_BIND_TO_PORT`).
    pub bind: SocketAddr,
    /// Invocations analysed at once (0: one per CPU thread on the CPU, 2 on a GPU). Each
    /// runs on its share of the CPU threads.
    pub workers: usize,
    /// Invocations admitted beyond the running ones, waiting (or uploading) for a worker;
    /// past `workers + queue` a request is answered 429 at once.
    pub queue: usize,
    /// Largest request body in bytes (413 beyond it).
    pub max_payload: u64,
    /// Longest an analysis may run before it is cancelled and answered 504 (None: no
    /// limit, as batch transform wants).
    pub time_limit: Option<Duration>,
    /// An upload that sends nothing for this long is dropped with 408.
    pub upload_stall: Duration,
    /// JSON `{"path": ...}` invocations may read files under this directory only (None:
    /// such invocations are refused).
    pub input_root: Option<PathBuf>,
    /// After SIGTERM, in-flight analyses get this long to finish before they are cancelled.
    pub drain: Duration,
    /// The Whisper model's name, which a request's `model=` must match.
    pub model: String,
    /// Where uploads are spooled (None: the system's temporary directory).
    pub temp_dir: Option<PathBuf>,
    /// `GET /live` may read stream URLs clients name (`source=srt://...`). Off by default:
    /// such a server fetches whatever network address it is given.
    pub live_urls: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
            workers: 0,
            queue: 0,
            max_payload: 1 << 30,
            time_limit: None,
            upload_stall: Duration::from_secs(30),
            input_root: None,
            drain: Duration::from_secs(20),
            model: "tiny.en".into(),
            temp_dir: None,
            live_urls: false,
        }
    }
}
