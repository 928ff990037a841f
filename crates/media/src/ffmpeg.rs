//! ffmpeg and ffprobe subprocesses: locating them, spawning with stderr drained on a thread,
//! killing on drop, and turning their failures into typed errors.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::MediaError;

/// Environment variable naming the ffmpeg binary.
const FFMPEG_ENV: &str = "MICA_FFMPEG";
/// Environment variable naming the ffprobe binary.
const FFPROBE_ENV: &str = "MICA_FFPROBE";

/// Where the ffmpeg and ffprobe binaries are.
///
/// Defaults come from `MICA_FFMPEG` / `MICA_FFPROBE`, else `ffmpeg` / `ffprobe` on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The ffmpeg binary (a path or a name looked up on `PATH`).
    pub ffmpeg: PathBuf,
    /// The ffprobe binary (a path or a name looked up on `PATH`).
    pub ffprobe: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Tools::from_env()
    }
}

impl Tools {
    /// Reads `MICA_FFMPEG` and `MICA_FFPROBE`, defaulting to `ffmpeg` and `ffprobe` on `PATH`.
    pub fn from_env() -> Tools {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Tools {
            ffmpeg: var(FFMPEG_ENV, "ffmpeg"),
            ffprobe: var(FFPROBE_ENV, "ffprobe"),
        }
    }
}

/// Which tool a subprocess runs; carries the names used in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Ffmpeg,
    Ffprobe,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Tool::Ffmpeg => FFMPEG_ENV,
            Tool::Ffprobe => FFPROBE_ENV,
        }
    }

    pub(crate) fn path(self, tools: &Tools) -> &Path {
        match self {
            Tool::Ffmpeg => &tools.ffmpeg,
            Tool::Ffprobe => &tools.ffprobe,
        }
    }
}

/// The input argument for a local file. The `file:` prefix stops ffmpeg reading a name
/// such as `a:b.wav` as protocol `a`, or `-x.wav` as an option.
pub(crate) fn input_arg(path: &Path) -> OsString {
    let mut arg = OsString::from("file:");
    arg.push(path.as_os_str());
    arg
}

fn spawn_error(
    tool: Tool,
    tools: &Tools,
    input: &Path,
    why: &str,
    e: std::io::Error,
) -> MediaError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            MediaError::ToolMissing {
                path: input.to_path_buf(),
                tool: tool.name(),
                tool_path: tool.path(tools).to_path_buf(),
                env: tool.env(),
                why: why.to_string(),
            }
        }
        _ => MediaError::ToolFailed {
            path: input.to_path_buf(),
            tool: tool.name(),
            status: "could not start".to_string(),
            stderr: e.to_string(),
        },
    }
}

/// Longest stderr line kept; a broken file can make ffmpeg print very long lines.
const MAX_LINE: usize = 1024;
/// stderr lines kept for error messages (the latest ones).
const MAX_LINES: usize = 48;

/// What the stderr thread keeps: the latest diagnostic lines.
#[derive(Debug, Default)]
pub(crate) struct StderrLog {
    /// The latest lines, oldest first.
    pub(crate) lines: std::collections::VecDeque<String>,
    /// Lines the caller has already turned into warnings.
    pub(crate) reported: usize,
    /// Total lines seen.
    pub(crate) total: usize,
}

impl StderrLog {
    pub(crate) fn push(&mut self, line: &str) {
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
            self.reported = self.reported.saturating_sub(1);
        }
        self.lines.push_back(line.to_string());
        self.total += 1;
    }

    /// The last few lines joined, for an error message.
    pub(crate) fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let lines: Vec<&str> = self.lines.iter().skip(skip).map(String::as_str).collect();
        if lines.is_empty() {
            "no diagnostic output".to_string()
        } else {
            lines.join(" | ")
        }
    }

    /// Lines not yet handed out by an earlier call.
    pub(crate) fn unreported(&mut self) -> Vec<String> {
        let new: Vec<String> = self.lines.iter().skip(self.reported).cloned().collect();
        self.reported = self.lines.len();
        new
    }
}

pub(crate) fn lock(log: &Mutex<StderrLog>) -> MutexGuard<'_, StderrLog> {
    // A panic on the stderr thread leaves only a partial log behind: still usable.
    log.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A running ffmpeg with stdout piped to us and stderr drained by a thread.
///
/// Dropping it kills and reaps the child and joins the thread: no zombies, and no hang when
/// the consumer stops early.
pub(crate) struct Subprocess {
    /// Shared with [`Killer`]s, which stop the child from another thread while this one
    /// is blocked reading its stdout (a separate handle, so no lock is held by a read).
    child: Arc<Mutex<Child>>,
    stdout: Option<ChildStdout>,
    stderr_thread: Option<JoinHandle<()>>,
    pub(crate) log: Arc<Mutex<StderrLog>>,
    pub(crate) input: PathBuf,
}

impl Subprocess {
    /// Starts `tool args...`. Each stderr line goes to `on_line` on the drain thread; lines
    /// for which it returns true are kept in the log.
    pub(crate) fn spawn<F>(
        tool: Tool,
        tools: &Tools,
        args: &[OsString],
        input: &Path,
        why: &str,
        mut on_line: F,
    ) -> Result<Subprocess, MediaError>
    where
        F: FnMut(&str) -> bool + Send + 'static,
    {
        tracing::debug!("running {} {:?}", tool.path(tools).display(), args);
        let mut child = Command::new(tool.path(tools))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(tool, tools, input, why, e))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let log = Arc::new(Mutex::new(StderrLog::default()));
        let thread_log = Arc::clone(&log);
        let stderr_thread = match stderr.map(|stderr| {
            std::thread::Builder::new()
                .name("mica-ffmpeg-stderr".to_string())
                .spawn(move || {
                    drain_lines(stderr, |line| {
                        if on_line(line) {
                            lock(&thread_log).push(line);
                        }
                    })
                })
        }) {
            Some(Ok(thread)) => Some(thread),
            None => None,
            Some(Err(e)) => {
                // Without a drain thread the child would block or die on a full stderr pipe.
                let _ = child.kill();
                let _ = child.wait();
                return Err(MediaError::ToolFailed {
                    path: input.to_path_buf(),
                    tool: tool.name(),
                    status: "not started".to_string(),
                    stderr: format!("cannot start a thread to read its output: {e}"),
                });
            }
        };
        Ok(Subprocess {
            child: Arc::new(Mutex::new(child)),
            stdout,
            stderr_thread,
            log,
            input: input.to_path_buf(),
        })
    }

    /// Reads from the child's stdout; 0 means end of stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stdout.as_mut() {
            Some(out) => loop {
                match out.read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            },
            None => Ok(0),
        }
    }

    /// Fills `buf` unless stdout ends first; returns how many bytes were read.
    pub(crate) fn read_full(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    /// After stdout ended: waits for the child and the stderr thread.
    pub(crate) fn finish(&mut self) -> std::io::Result<ExitStatus> {
        self.stdout = None;
        let status = lock_child(&self.child).wait();
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        status
    }

    /// A handle that kills the child from any thread.
    pub(crate) fn killer(&self) -> Killer {
        Killer(Arc::clone(&self.child))
    }
}

/// Kills a [`Subprocess`]'s child from another thread: its reader then sees the end of
/// stdout and returns.
#[derive(Clone)]
pub(crate) struct Killer(Arc<Mutex<Child>>);

impl Killer {
    /// Kills the child unless it already exited.
    pub(crate) fn kill(&self) {
        let mut child = lock_child(&self.0);
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
    }
}

fn lock_child(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Subprocess {
    fn drop(&mut self) {
        // Closing stdout first makes a child blocked on writing exit with EPIPE even if the
        // kill below races with its exit.
        self.stdout = None;
        let mut child = lock_child(&self.child);
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
        drop(child);
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Calls `emit` for each line of `source` (split on `\n` or `\r`), keeping at most
/// [`MAX_LINE`] bytes of each so a line without an end cannot grow memory.
fn drain_lines(source: impl Read, mut emit: impl FnMut(&str)) {
    let mut reader = BufReader::new(source);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let end = chunk.iter().position(|&b| b == b'\n' || b == b'\r');
        let take = end.map_or(chunk.len(), |i| i + 1);
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        if end.is_some() {
            emit_line(&mut line, &mut emit);
        }
    }
    emit_line(&mut line, &mut emit);
}

fn emit_line(line: &mut Vec<u8>, emit: &mut impl FnMut(&str)) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if !text.trim().is_empty() {
        emit(truncate(text, MAX_LINE));
    }
    line.clear();
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Which stream the caller wanted, to word "no stream" errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Audio,
    Video,
}

/// Maps a failed ffmpeg/ffprobe run to the most specific error its stderr supports.
pub(crate) fn classify_failure(
    input: &Path,
    tool: Tool,
    status: &str,
    stderr: &str,
    want: Want,
) -> MediaError {
    let path = input.to_path_buf();
    let lower = stderr.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("invalid data found when processing input") || has("could not find codec parameters") {
        if has("moov atom not found") || has("truncat") {
            return MediaError::Damaged {
                path,
                reason: stderr.to_string(),
            };
        }
        return MediaError::NotMedia {
            path,
            reason: stderr.to_string(),
        };
    }
    if has("does not contain any stream")
        || has("matches no streams")
        || has("output file does not contain any stream")
        || has("stream specifier")
    {
        return match want {
            Want::Audio => MediaError::NoAudioStream {
                path,
                reason: stderr.to_string(),
            },
            Want::Video => MediaError::NoVideoStream { path },
        };
    }
    if has("decoder") && (has("not found") || has("unknown")) || has("unsupported codec") {
        return MediaError::UnsupportedCodec {
            path,
            codec: "unknown".to_string(),
            reason: stderr.to_string(),
        };
    }
    if has("moov atom not found") || has("error while decoding") || has("invalid nal") {
        return MediaError::Damaged {
            path,
            reason: stderr.to_string(),
        };
    }
    MediaError::ToolFailed {
        path,
        tool: tool.name(),
        status: status.to_string(),
        stderr: stderr.to_string(),
    }
}

/// Runs `ffprobe -show_format -show_streams` and returns its JSON.
pub(crate) fn ffprobe_json(
    tools: &Tools,
    input: &Path,
    why: &str,
    want: Want,
) -> Result<serde_json::Value, MediaError> {
    let output = Command::new(&tools.ffprobe)
        .arg("-v")
        .arg("error")
        .arg("-print_format")
        .arg("json")
        .arg("-show_format")
        .arg("-show_streams")
        .arg(input_arg(input))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(Tool::Ffprobe, tools, input, why, e))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(classify_failure(
            input,
            Tool::Ffprobe,
            &output.status.to_string(),
            &tail.join(" | "),
            want,
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| MediaError::ToolFailed {
            path: input.to_path_buf(),
            tool: "ffprobe",
            status: output.status.to_string(),
            stderr: format!("unreadable JSON output: {e}"),
        })?;
    // ffmpeg's tty demuxer renders any text file as ANSI art "video"; that is not media.
    let format = json
        .get("format")
        .and_then(|f| f.get("format_name"))
        .and_then(|f| f.as_str());
    if format == Some("tty") {
        return Err(MediaError::NotMedia {
            path: input.to_path_buf(),
            reason: "it is a text file (ffmpeg reads it only as ANSI art)".to_string(),
        });
    }
    Ok(json)
}

/// Reads a JSON field that ffprobe writes either as a number or as a string.
pub(crate) fn json_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// Reads an unsigned JSON field written as a number or a string.
pub(crate) fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The streams of ffprobe output that are real audio/video (cover art excluded).
pub(crate) fn streams<'a>(
    json: &'a serde_json::Value,
    codec_type: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    json.get("streams")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter(move |s| s.get("codec_type").and_then(|t| t.as_str()) == Some(codec_type))
        .filter(|s| {
            let attached = s
                .get("disposition")
                .and_then(|d| d.get("attached_pic"))
                .and_then(json_u64)
                .unwrap_or(0);
            attached == 0
        })
}
