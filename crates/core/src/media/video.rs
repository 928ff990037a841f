//! Video input over ffmpeg: stream facts from ffprobe, and rgb24 frames at a chosen size with
//! the stream's own timestamps.
//!
//! Timestamps come from the `showinfo` filter that ffmpeg runs on each output frame (read from
//! its stderr), not from `index / fps`, so variable-frame-rate sources and streams with gaps
//! keep true times. ffmpeg runs with `-vsync passthrough`, so every decoded frame is output
//! once: no duplicates or drops to fake a constant rate.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use super::ffmpeg::{self, Subprocess, Tool, Tools, Want};
use super::{MediaError, MediaWarning, WarningKind, Warnings, check_file};

/// A frame rate or other exact ratio, as ffprobe reports it (`30000/1001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rational {
    /// Numerator.
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Rational {
    /// `num / den`.
    pub fn new(num: u32, den: u32) -> Rational {
        Rational { num, den }
    }

    /// The value as a float; 0 when the denominator is 0.
    pub fn as_f64(&self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }

    /// Parses `N/D` or `N`; `None` for malformed text or a zero value.
    pub fn parse(text: &str) -> Option<Rational> {
        let (num, den) = match text.trim().split_once('/') {
            Some((n, d)) => (n.trim().parse().ok()?, d.trim().parse().ok()?),
            None => (text.trim().parse().ok()?, 1),
        };
        (num > 0 && den > 0).then_some(Rational { num, den })
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// What ffprobe says about the first video stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoInfo {
    /// Coded width in pixels.
    pub width: u32,
    /// Coded height in pixels.
    pub height: u32,
    /// Frame rate as an exact ratio (average rate, else the base rate).
    pub fps: Rational,
    /// [`VideoInfo::fps`] as a float.
    pub fps_f64: f64,
    /// Frames in the stream: from the container when it says, else `duration * fps`.
    pub frame_count: u64,
    /// Whether `frame_count` came from the container rather than an estimate.
    pub frame_count_exact: bool,
    /// Duration in seconds, when known.
    pub duration: Option<f64>,
    /// Codec short name (`h264`, `mpeg4`, ...).
    pub codec: String,
    /// Whether the file also has an audio stream.
    pub has_audio: bool,
}

/// Reads the first video stream's facts with ffprobe (from `$MICA_FFPROBE` or `PATH`).
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo, MediaError> {
    probe_with(path, &Tools::from_env())
}

/// [`probe`] with explicit tool paths.
pub fn probe_with(path: impl AsRef<Path>, tools: &Tools) -> Result<VideoInfo, MediaError> {
    let path = path.as_ref();
    check_file(path)?;
    let json = ffmpeg::ffprobe_json(
        tools,
        path,
        "to read the video stream's format",
        Want::Video,
    )?;
    let stream =
        ffmpeg::streams(&json, "video")
            .next()
            .ok_or_else(|| MediaError::NoVideoStream {
                path: path.to_path_buf(),
            })?;
    let field = |name: &str| stream.get(name);
    let dim = |name: &str| {
        field(name)
            .and_then(ffmpeg::json_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    };
    let rate = |name: &str| {
        field(name)
            .and_then(|v| v.as_str())
            .and_then(Rational::parse)
    };
    let fps = rate("avg_frame_rate")
        .or_else(|| rate("r_frame_rate"))
        .unwrap_or(Rational::new(25, 1));
    if rate("avg_frame_rate").is_none() && rate("r_frame_rate").is_none() {
        tracing::warn!(
            "{}: no frame rate in the stream; assuming 25 fps",
            path.display()
        );
    }
    let duration = field("duration")
        .and_then(ffmpeg::json_f64)
        .or_else(|| {
            json.get("format")
                .and_then(|f| f.get("duration"))
                .and_then(ffmpeg::json_f64)
        })
        .filter(|d| *d >= 0.0);
    let counted = field("nb_frames")
        .and_then(ffmpeg::json_u64)
        .filter(|&n| n > 0);
    let (frame_count, frame_count_exact) = match counted {
        Some(n) => (n, true),
        None => (
            duration.map_or(0, |d| (d * fps.as_f64()).round().max(0.0) as u64),
            false,
        ),
    };
    Ok(VideoInfo {
        width: dim("width"),
        height: dim("height"),
        fps,
        fps_f64: fps.as_f64(),
        frame_count,
        frame_count_exact,
        duration,
        codec: field("codec_name")
            .and_then(|c| c.as_str())
            .unwrap_or("unknown")
            .to_string(),
        has_audio: ffmpeg::streams(&json, "audio").next().is_some(),
    })
}

/// SMPTE timecode `HH:MM:SS:FF` of frame `frame` at `fps`; NTSC rates (29.97, 59.94) use
/// drop-frame counting and a `;` separator, as editors expect. A rate that is not positive
/// gives `00:00:00:00`.
pub fn smpte_timecode(frame: u64, fps: Rational) -> String {
    crate::time::FrameRate::broadcast(fps.as_f64())
        .map(|rate| rate.timecode(frame).to_string())
        .unwrap_or_else(|_| "00:00:00:00".to_string())
}

/// How to decode frames.
#[derive(Debug, Clone)]
pub struct FrameOptions {
    /// Output width in pixels (the picture is scaled, not cropped).
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output one frame per slot of the probed frame rate (ffmpeg's `fps` filter repeats
    /// or drops pictures), as ffmpeg's default constant-rate output and TransNetV2's reference
    /// pipeline do. Off by default: each decoded picture comes once, with its own timestamp,
    /// so a variable-rate or sparse stream (an AVI with repeat-frame markers) yields fewer
    /// frames than the container's count.
    pub constant_rate: bool,
    /// Where ffmpeg and ffprobe are.
    pub tools: Tools,
}

impl Default for FrameOptions {
    /// 48x27, the TransNetV2 input size.
    fn default() -> Self {
        FrameOptions::new(48, 27)
    }
}

impl FrameOptions {
    /// Frames scaled to `width` x `height`, tools from the environment.
    pub fn new(width: u32, height: u32) -> FrameOptions {
        FrameOptions {
            width,
            height,
            constant_rate: false,
            tools: Tools::from_env(),
        }
    }
}

/// One decoded picture.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrame {
    /// 0-based position in decode output order.
    pub index: u64,
    /// Presentation time in seconds from the start of the file, from the stream.
    pub pts: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Packed RGB, 3 bytes per pixel, rows top to bottom: `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl VideoFrame {
    /// SMPTE timecode of this frame at `fps` (see [`smpte_timecode`]).
    pub fn timecode(&self, fps: Rational) -> String {
        smpte_timecode(self.index, fps)
    }
}

/// How long to wait for a frame's timestamp after its pixels arrived. ffmpeg logs it before
/// writing the frame, so this only trips if the log line went missing.
const PTS_WAIT: Duration = Duration::from_secs(10);

/// Frames from ffmpeg, one at a time, with bounded memory (ffmpeg blocks on the pipe until
/// the next frame is asked for).
///
/// A damaged stream yields the frames that decode, with warnings in
/// [`FrameSource::warnings`]; an input where no frame decodes gives an error on the first
/// [`FrameSource::next_frame`]. Dropping the source stops ffmpeg.
pub struct FrameSource {
    path: PathBuf,
    info: VideoInfo,
    proc: Subprocess,
    width: u32,
    height: u32,
    frame_bytes: usize,
    pts: Receiver<Option<f64>>,
    index: u64,
    last_pts: Option<f64>,
    estimated: u64,
    warnings: Warnings,
    done: bool,
}

impl std::fmt::Debug for FrameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSource")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl FrameSource {
    /// Probes `path` and starts decoding its first video stream to rgb24 frames of the
    /// requested size.
    pub fn open(path: impl AsRef<Path>, options: &FrameOptions) -> Result<FrameSource, MediaError> {
        let path = path.as_ref();
        if options.width == 0
            || options.height == 0
            || options.width > 16384
            || options.height > 16384
        {
            return Err(MediaError::InvalidOption(format!(
                "frame size {}x{} must be between 1x1 and 16384x16384",
                options.width, options.height
            )));
        }
        let info = probe_with(path, &options.tools)?;
        let (tx, rx) = mpsc::channel();
        // showinfo goes last so it logs exactly the frames written to the pipe.
        let rate = if options.constant_rate {
            format!("fps={},", info.fps)
        } else {
            String::new()
        };
        let filter = format!(
            "{rate}scale={}:{},format=rgb24,showinfo",
            options.width, options.height
        );
        let mut args: Vec<OsString> = [
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-v",
            "level+info",
            "-i",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(ffmpeg::input_arg(path));
        args.extend(
            [
                "-map",
                "0:V:0",
                "-an",
                "-sn",
                "-dn",
                "-vsync",
                "passthrough",
                "-vf",
                &filter,
                "-pix_fmt",
                "rgb24",
                "-f",
                "rawvideo",
                "pipe:1",
            ]
            .iter()
            .map(OsString::from),
        );
        let proc = Subprocess::spawn(
            Tool::Ffmpeg,
            &options.tools,
            &args,
            path,
            "to decode video frames",
            move |line| {
                if line.contains("Parsed_showinfo") {
                    if line.contains(" n:") && line.contains("pts_time:") {
                        // The receiver may be gone (source dropped); ffmpeg is being stopped.
                        let _ = tx.send(parse_pts_time(line));
                    }
                    return false;
                }
                is_problem(line)
            },
        )?;
        let frame_bytes = options.width as usize * options.height as usize * 3;
        Ok(FrameSource {
            path: path.to_path_buf(),
            info,
            proc,
            width: options.width,
            height: options.height,
            frame_bytes,
            pts: rx,
            index: 0,
            last_pts: None,
            estimated: 0,
            warnings: Warnings::default(),
            done: false,
        })
    }

    /// The stream's facts from ffprobe.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Problems met so far (decoder errors, estimated timestamps, truncation).
    pub fn warnings(&self) -> &[MediaWarning] {
        self.warnings.as_slice()
    }

    /// Frames returned so far.
    pub fn frames_read(&self) -> u64 {
        self.index
    }

    /// The next frame, or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        if self.done {
            return Ok(None);
        }
        let mut data = vec![0u8; self.frame_bytes];
        let n = match self.proc.read_full(&mut data) {
            Ok(n) => n,
            Err(source) => {
                self.done = true;
                return Err(MediaError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if n < self.frame_bytes {
            if n > 0 {
                self.warnings.push(
                    &self.path,
                    WarningKind::Truncated,
                    self.last_pts,
                    format!(
                        "the last frame was incomplete ({n} of {} bytes) and was dropped",
                        self.frame_bytes
                    ),
                );
            }
            return self.end();
        }
        let pts = match self.pts.recv_timeout(PTS_WAIT) {
            Ok(Some(pts)) => pts,
            Ok(None) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                self.estimate_pts()
            }
        };
        self.last_pts = Some(pts);
        self.report();
        let frame = VideoFrame {
            index: self.index,
            pts,
            width: self.width,
            height: self.height,
            data,
        };
        self.index += 1;
        Ok(Some(frame))
    }

    /// A timestamp for a frame the stream gave none: one frame after the previous one.
    fn estimate_pts(&mut self) -> f64 {
        if self.estimated == 0 {
            self.warnings.push(
                &self.path,
                WarningKind::Timestamps,
                self.last_pts,
                format!(
                    "frame {} has no timestamp; estimating from the frame rate",
                    self.index
                ),
            );
        }
        self.estimated += 1;
        let step = if self.info.fps_f64 > 0.0 {
            1.0 / self.info.fps_f64
        } else {
            0.04
        };
        match self.last_pts {
            Some(last) => last + step,
            None => self.index as f64 * step,
        }
    }

    /// Turns ffmpeg's warning and error lines into warnings.
    fn report(&mut self) {
        let lines = ffmpeg::lock(&self.proc.log).unreported();
        for line in lines {
            self.warnings.push(
                &self.path,
                WarningKind::Decoder,
                self.last_pts,
                format!("ffmpeg: {line}"),
            );
        }
    }

    fn end(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        self.done = true;
        let status = self.proc.finish().map_err(|source| MediaError::Io {
            path: self.path.clone(),
            source,
        })?;
        if self.index == 0 {
            let tail = ffmpeg::lock(&self.proc.log).tail(6);
            return Err(if status.success() {
                MediaError::Damaged {
                    path: self.path.clone(),
                    reason: format!("no video frame could be decoded ({tail})"),
                }
            } else {
                match ffmpeg::classify_failure(
                    &self.path,
                    Tool::Ffmpeg,
                    &status.to_string(),
                    &tail,
                    Want::Video,
                ) {
                    MediaError::ToolFailed { stderr, .. } => MediaError::Damaged {
                        path: self.path.clone(),
                        reason: format!(
                            "no video frame could be decoded: ffmpeg {status}: {stderr}"
                        ),
                    },
                    other => other,
                }
            });
        }
        self.report();
        if !status.success() {
            let tail = ffmpeg::lock(&self.proc.log).tail(3);
            self.warnings.push(
                &self.path,
                WarningKind::Damaged,
                self.last_pts,
                format!(
                    "ffmpeg stopped with {status} after {} frames: {tail}",
                    self.index
                ),
            );
        }
        self.warnings.finish(&self.path);
        Ok(None)
    }
}

impl Iterator for FrameSource {
    type Item = Result<VideoFrame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// The `pts_time:` value of a showinfo frame line; `None` for `NOPTS` or garbage.
fn parse_pts_time(line: &str) -> Option<f64> {
    let rest = &line[line.find("pts_time:")? + "pts_time:".len()..];
    let value = rest.split_whitespace().next()?;
    value.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Whether an ffmpeg log line (with `-v level+...` tags) reports a problem worth a warning.
fn is_problem(line: &str) -> bool {
    let problem = line.contains("[warning]")
        || line.contains("[error]")
        || line.contains("[fatal]")
        || line.contains("[panic]");
    // Our own command line's deprecation notice is not about the media.
    problem && !line.contains("-vsync is deprecated")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rationals() {
        assert_eq!(Rational::parse("2997/125"), Some(Rational::new(2997, 125)));
        assert_eq!(Rational::parse("25"), Some(Rational::new(25, 1)));
        assert_eq!(Rational::parse("0/0"), None);
        assert_eq!(Rational::parse("x/1"), None);
        assert!((Rational::new(30000, 1001).as_f64() - 29.97).abs() < 0.001);
    }

    #[test]
    fn timecodes() {
        let pal = Rational::new(25, 1);
        assert_eq!(smpte_timecode(0, pal), "00:00:00:00");
        assert_eq!(smpte_timecode(25 * 3661 + 7, pal), "01:01:01:07");
        let film = Rational::new(24000, 1001);
        assert_eq!(smpte_timecode(24, film), "00:00:01:00");
        let ntsc = Rational::new(30000, 1001);
        // Drop-frame: 00:00:59;29 is followed by 00:01:00;02.
        assert_eq!(smpte_timecode(1799, ntsc), "00:00:59;29");
        assert_eq!(smpte_timecode(1800, ntsc), "00:01:00;02");
        // Every tenth minute keeps its frames 0 and 1.
        assert_eq!(smpte_timecode(17982, ntsc), "00:10:00;00");
    }

    #[test]
    fn showinfo_lines() {
        let line =
            "[Parsed_showinfo_2 @ 0x5633] [info] n:   2 pts:      3 pts_time:0.125125 pos: 55360";
        assert_eq!(parse_pts_time(line), Some(0.125125));
        assert_eq!(
            parse_pts_time("n: 1 pts: NOPTS pts_time:NOPTS pos: 1"),
            None
        );
        assert!(is_problem("[mpeg4 @ 0x1] [error] ac-tex damaged at 3 4"));
        assert!(!is_problem("[warning] -vsync is deprecated. Use -fps_mode"));
        assert!(!is_problem("[info] Stream mapping:"));
    }
}
