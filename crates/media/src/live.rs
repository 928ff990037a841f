//! [`LiveAudio`]: 16 kHz mono samples from a live source (an SRT, RTMP, HLS, UDP or RTP URL,
//! or a file played at its native speed), handed out as soon as ffmpeg decodes them.
//!
//! Unlike [`crate::AudioStream`] nothing is probed first (ffprobe would consume or wait on a
//! live stream) and reads return whatever has arrived instead of filling fixed chunks, so
//! the delay added here is ffmpeg's own packet size (tens of milliseconds).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::audio::{SAMPLE_RATE, f32_output_args};
use crate::ffmpeg::{self, Subprocess, Tool, Tools, Want};
use crate::{MediaError, check_file};

/// Bytes read from ffmpeg at most at once (0.25 s of f32 samples).
const READ_BYTES: usize = 4 * SAMPLE_RATE as usize / 4;

/// How to open a live source.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    /// Read a file at its native speed (ffmpeg `-re`), as if it were broadcast. Network
    /// sources arrive at their own pace and ignore this.
    pub realtime: bool,
    /// Where ffmpeg is.
    pub tools: Tools,
    /// Also keep the stream as it arrives (stream copy) in this recorder, for clips.
    pub record: Option<std::sync::Arc<crate::LiveRecorder>>,
}

/// What one [`LiveAudio::read`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRead {
    /// This many samples were appended.
    Samples(usize),
    /// The source ended (a file's end, or the sender stopped and ffmpeg gave up).
    End,
}

/// Stops a [`LiveAudio`] from another thread: a reader blocked on a silent source returns.
#[derive(Clone)]
pub struct LiveStopper(ffmpeg::Killer);

impl LiveStopper {
    /// Stops the source's ffmpeg (nothing happens if it already ended).
    pub fn stop(&self) {
        self.0.kill();
    }
}

impl std::fmt::Debug for LiveStopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveStopper")
    }
}

/// A running decode of a live source. Dropping it stops ffmpeg.
pub struct LiveAudio {
    proc: Subprocess,
    /// The source as given, and how it was opened (for [`LiveAudio::reopen`]).
    source: String,
    options: LiveOptions,
    label: PathBuf,
    buf: Vec<u8>,
    /// Bytes of an incomplete sample kept at the front of `buf`.
    carry: usize,
    received: u64,
    done: bool,
}

impl std::fmt::Debug for LiveAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAudio")
            .field("source", &self.label)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Whether `source` names a network protocol (`srt://`, `udp://`, `rtmp://`, `https://`...)
/// rather than a local file.
pub fn is_url(source: &str) -> bool {
    match source.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
        }
        None => false,
    }
}

impl LiveAudio {
    /// Starts decoding `source`: a URL ffmpeg reads, or a local file (checked to exist and
    /// be non-empty here). Errors that need the stream's data (not media, no audio) come
    /// from the first [`LiveAudio::read`], since a live source may send nothing for a while.
    pub fn open(source: &str, options: &LiveOptions) -> Result<LiveAudio, MediaError> {
        LiveAudio::start(source, options, None)
    }

    /// [`LiveAudio::open`]; a recording continues after `received` samples of the
    /// previous run.
    fn start(
        source: &str,
        options: &LiveOptions,
        received: Option<u64>,
    ) -> Result<LiveAudio, MediaError> {
        let label = PathBuf::from(source);
        let url = is_url(source);
        let input = if url {
            OsString::from(source)
        } else {
            check_file(&label)?;
            ffmpeg::input_arg(&label)
        };
        let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-nostats", "-v", "error"]
            .iter()
            .map(OsString::from)
            .collect();
        if options.realtime && !url {
            args.push("-re".into());
        }
        // A short probe, so a network stream starts within about half a second. Not
        // `-fflags nobuffer`: it drops the packets read while probing (half of a short
        // file, the first moments of a stream).
        args.extend(["-flags", "low_delay"].iter().map(OsString::from));
        if url {
            args.extend(
                ["-probesize", "65536", "-analyzeduration", "500000"]
                    .iter()
                    .map(OsString::from),
            );
        }
        args.push("-i".into());
        args.push(input);
        // Each packet is written as soon as it is decoded.
        args.extend(["-flush_packets", "1"].map(OsString::from));
        args.extend(f32_output_args(1));
        if let Some(recorder) = &options.record {
            args.extend(recorder.output_args(received));
        }
        let proc = Subprocess::spawn(
            Tool::Ffmpeg,
            &options.tools,
            &args,
            &label,
            "live sources are read by ffmpeg",
            |_| true,
        )?;
        Ok(LiveAudio {
            proc,
            source: source.to_string(),
            options: options.clone(),
            label,
            buf: vec![0; READ_BYTES],
            carry: 0,
            received: 0,
            done: false,
        })
    }

    /// The source as given.
    pub fn source(&self) -> &Path {
        &self.label
    }

    /// Whether the source is a network stream (which may come back after it ended), not a
    /// file.
    pub fn is_network(&self) -> bool {
        is_url(&self.source)
    }

    /// Opens the same source again, as it was opened (to reconnect to a stream that went
    /// away).
    pub fn reopen(&self) -> Result<LiveAudio, MediaError> {
        LiveAudio::start(&self.source, &self.options, Some(self.received))
    }

    /// A handle that stops this source from another thread (while this one is blocked in
    /// [`LiveAudio::read`], which then reports the end).
    pub fn stopper(&self) -> LiveStopper {
        LiveStopper(self.proc.killer())
    }

    /// The recorder keeping the stream, if any.
    pub fn recorder(&self) -> Option<&std::sync::Arc<crate::LiveRecorder>> {
        self.options.record.as_ref()
    }

    /// Samples received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Blocks until some samples arrive and appends them to `out`, or reports the end.
    /// Non-finite samples are replaced by silence. An ffmpeg that fails before any audio
    /// came gives its error; one that fails later ends the stream (the caller keeps what
    /// it has), with ffmpeg's last lines in [`LiveAudio::last_errors`].
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<LiveRead, MediaError> {
        if self.done {
            return Ok(LiveRead::End);
        }
        loop {
            let n = self
                .proc
                .read(&mut self.buf[self.carry..])
                .map_err(|source| MediaError::Io {
                    path: self.label.clone(),
                    source,
                })?;
            if n == 0 {
                return self.end();
            }
            let total = self.carry + n;
            let whole = total - total % 4;
            let before = out.len();
            out.extend(self.buf[..whole].chunks_exact(4).map(|b| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if v.is_finite() { v } else { 0.0 }
            }));
            self.buf.copy_within(whole..total, 0);
            self.carry = total - whole;
            let got = out.len() - before;
            self.received += got as u64;
            if got > 0 {
                return Ok(LiveRead::Samples(got));
            }
        }
    }

    /// ffmpeg's latest diagnostic lines (empty when it said nothing).
    pub fn last_errors(&self) -> String {
        let log = ffmpeg::lock(&self.proc.log);
        if log.lines.is_empty() {
            return String::new();
        }
        log.tail(4)
    }

    fn end(&mut self) -> Result<LiveRead, MediaError> {
        self.done = true;
        let status = self.proc.finish().map_err(|source| MediaError::Io {
            path: self.label.clone(),
            source,
        })?;
        if !status.success() && self.received == 0 {
            let tail = ffmpeg::lock(&self.proc.log).tail(6);
            return Err(ffmpeg::classify_failure(
                &self.label,
                Tool::Ffmpeg,
                &status.to_string(),
                &tail,
                Want::Audio,
            ));
        }
        Ok(LiveRead::End)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        for url in [
            "srt://host:9000",
            "udp://127.0.0.1:5000",
            "rtmp://a/b",
            "https://x/y.m3u8",
            "rtp://h:1",
        ] {
            assert!(is_url(url), "{url}");
        }
        for path in [
            "news.wav",
            "/tmp/a.mp4",
            "a:b.wav",
            "://x",
            "1x://y",
            "dir/x://y",
        ] {
            assert!(!is_url(path), "{path}");
        }
    }

    #[test]
    fn a_missing_file_fails_at_open() {
        let e = LiveAudio::open("/no/such/live.wav", &LiveOptions::default()).unwrap_err();
        assert!(matches!(e, MediaError::NotFound { .. }), "{e}");
    }
}
