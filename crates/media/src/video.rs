//! Video input over ffmpeg: stream facts from ffprobe, and rgb24 frames at a chosen size with
//! the stream's own timestamps.
//!
//! Timestamps come from the `showinfo` filter that ffmpeg runs on each output frame (read from
//! its stderr), not from `index / fps`, so variable-frame-rate sources and streams with gaps
//! keep true times. ffmpeg runs with `-vsync passthrough`, so every decoded frame is output
//! once: no duplicates or drops to fake a constant rate. [`FrameOptions::constant_rate`]
//! asks for ffmpeg's constant-rate output instead (what TransNetV2 was trained on).

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
    /// The stream's base rate (ffprobe's `r_frame_rate`, else [`VideoInfo::fps`]): the rate
    /// of ffmpeg's default constant-rate output, which [`FrameOptions::constant_rate`] copies.
    pub base_rate: Rational,
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
///
/// `path` may also name an image sequence: a directory of numbered images
/// (`frame_0001.png`, ...) or a printf pattern (`frames/%05d.jpg`), read at 25 fps (see
/// [`FrameOptions::sequence_rate`]).
pub fn probe_with(path: impl AsRef<Path>, tools: &Tools) -> Result<VideoInfo, MediaError> {
    probe_input(path.as_ref(), tools, DEFAULT_SEQUENCE_RATE)
}

/// ffmpeg demuxers that draw arbitrary bytes as text (binary text, ANSI art): a file they
/// take is not a video.
const TEXT_ART_FORMATS: [&str; 5] = ["bin", "tty", "xbin", "adf", "idf"];

/// The frame rate image sequences are read at unless told otherwise.
const DEFAULT_SEQUENCE_RATE: Rational = Rational { num: 25, den: 1 };

/// Image file extensions a directory is scanned for.
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm"];

/// Numbered image files read through ffmpeg's image2 demuxer.
#[derive(Debug, Clone)]
struct Sequence {
    /// printf pattern of the file names (`dir/frame_%04d.png`).
    pattern: PathBuf,
    /// The first number.
    start: u64,
}

impl Sequence {
    /// ffmpeg input arguments (`-f image2 ... -i file:PATTERN`).
    fn input_args(&self, rate: Rational) -> Vec<OsString> {
        let mut pattern = OsString::from("file:");
        pattern.push(self.pattern.as_os_str());
        vec![
            "-f".into(),
            "image2".into(),
            "-framerate".into(),
            rate.to_string().into(),
            "-start_number".into(),
            self.start.to_string().into(),
            "-i".into(),
            pattern,
        ]
    }
}

/// Splits `name` into (prefix, digits, extension) when its stem ends in digits and its
/// extension is an image's.
fn numbered(name: &str) -> Option<(&str, &str, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    if !IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
        return None;
    }
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    (digits > 0).then(|| {
        (
            &stem[..stem.len() - digits],
            &stem[stem.len() - digits..],
            ext,
        )
    })
}

/// The image sequence `path` names, if it names one: a directory holding numbered images, or
/// a file pattern with a `%d` / `%0Nd` field.
fn image_sequence(path: &Path) -> Result<Option<Sequence>, MediaError> {
    let text = path.to_string_lossy();
    if path.is_dir() {
        let mut first: Option<(String, String, String, u64)> = None;
        let entries = std::fs::read_dir(path).map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((prefix, digits, ext)) = numbered(&name) {
                let n: u64 = digits.parse().unwrap_or(u64::MAX);
                let better = first
                    .as_ref()
                    .is_none_or(|f| (prefix, n) < (f.0.as_str(), f.3));
                if better {
                    let width = if digits.starts_with('0') {
                        digits.len()
                    } else {
                        0
                    };
                    first = Some((prefix.to_string(), width.to_string(), ext.to_string(), n));
                }
            }
        }
        return match first {
            Some((prefix, width, ext, start)) => {
                let field = if width == "0" {
                    "%d".to_string()
                } else {
                    format!("%0{width}d")
                };
                Ok(Some(Sequence {
                    pattern: path.join(format!("{prefix}{field}.{ext}")),
                    start,
                }))
            }
            None => Err(MediaError::IsDirectory {
                path: path.to_path_buf(),
            }),
        };
    }
    if !text.contains('%') || path.exists() {
        return Ok(None);
    }
    // A pattern: find the lowest number that exists.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let field = name.find('%').and_then(|i| {
        let end = name[i..].find('d')? + i;
        Some((i, end))
    });
    let Some((i, end)) = field else {
        return Ok(None);
    };
    let (prefix, suffix) = (&name[..i], &name[end + 1..]);
    let mut start = None;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(digits) = file
                .strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && let Ok(n) = digits.parse::<u64>()
            {
                start = Some(start.map_or(n, |s: u64| s.min(n)));
            }
        }
    }
    match start {
        Some(start) => Ok(Some(Sequence {
            pattern: path.to_path_buf(),
            start,
        })),
        None => Err(MediaError::NotFound {
            path: path.to_path_buf(),
        }),
    }
}

/// [`probe_with`], image sequences read at `sequence_rate`.
fn probe_input(
    path: &Path,
    tools: &Tools,
    sequence_rate: Rational,
) -> Result<VideoInfo, MediaError> {
    let json = match image_sequence(path)? {
        Some(seq) => probe_sequence(path, &seq, tools, sequence_rate)?,
        None => {
            check_file(path)?;
            ffmpeg::ffprobe_json(
                tools,
                path,
                "to read the video stream's format",
                Want::Video,
            )?
        }
    };
    // ffmpeg renders any bytes as text art through these demuxers (random bytes in a file
    // named .bin become a 1280x50000 "video"); they are never media a user means.
    let format = json
        .get("format")
        .and_then(|f| f.get("format_name"))
        .and_then(|f| f.as_str())
        .unwrap_or_default();
    if TEXT_ART_FORMATS.contains(&format) {
        return Err(MediaError::NotMedia {
            path: path.to_path_buf(),
            reason: format!(
                "ffmpeg only reads it as text art (its {format:?} demuxer), not as video"
            ),
        });
    }
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
        base_rate: rate("r_frame_rate").unwrap_or(fps),
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

/// ffprobe's JSON for an image sequence.
fn probe_sequence(
    path: &Path,
    seq: &Sequence,
    tools: &Tools,
    rate: Rational,
) -> Result<serde_json::Value, MediaError> {
    let output = std::process::Command::new(&tools.ffprobe)
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .args(seq.input_args(rate))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| MediaError::ToolMissing {
            path: path.to_path_buf(),
            tool: "ffprobe",
            tool_path: tools.ffprobe.clone(),
            env: "MICA_FFPROBE",
            why: format!("to read the image sequence ({e})"),
        })?;
    if !output.status.success() {
        return Err(MediaError::NotMedia {
            path: path.to_path_buf(),
            reason: format!(
                "ffprobe cannot read the image sequence {}: {}",
                seq.pattern.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| MediaError::ToolFailed {
        path: path.to_path_buf(),
        tool: "ffprobe",
        status: output.status.to_string(),
        stderr: format!("unreadable JSON output: {e}"),
    })
}

/// SMPTE timecode `HH:MM:SS:FF` of frame `frame` at `fps`; NTSC rates (29.97, 59.94) use
/// drop-frame counting and a `;` separator, as editors expect. A rate that is not positive
/// gives `00:00:00:00`.
pub fn smpte_timecode(frame: u64, fps: Rational) -> String {
    mica_core::time::FrameRate::broadcast(fps.as_f64())
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
    /// Output one frame per slot of the stream's base rate from time 0: ffmpeg's default
    /// constant-rate output for raw video, which TransNetV2's reference pipeline reads (the
    /// same bytes). Pictures are repeated or dropped to fill the slots (a stream whose first
    /// picture comes late, as in an AVI with B-frames, starts with it twice; the last one is
    /// held for its duration), and a frame's time is its slot, `index / base_rate`. Off by
    /// default: each decoded picture comes once, with its own timestamp,
    /// so a variable-rate or sparse stream (an AVI with repeat-frame markers) yields fewer
    /// frames than the container's count.
    pub constant_rate: bool,
    /// Frame rate of image-sequence input (a directory of numbered images or a `%05d`
    /// pattern); 25 fps by default, as ffmpeg reads them.
    pub sequence_rate: Rational,
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
            sequence_rate: DEFAULT_SEQUENCE_RATE,
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
    /// Seconds per frame in constant-rate mode, where frame times are the rate's slots.
    slot: Option<f64>,
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
        let info = probe_input(path, &options.tools, options.sequence_rate)?;
        let sequence = image_sequence(path)?;
        let (tx, rx) = mpsc::channel();
        // showinfo goes last so it logs exactly the frames written to the pipe.
        // Constant rate: ffmpeg's default for raw output (no -vsync), which repeats or drops
        // pictures after the filters, so showinfo would not see the repeats; the slots'
        // times are index / rate instead.
        let info_filter = if options.constant_rate {
            ""
        } else {
            ",showinfo"
        };
        let filter = format!(
            "scale={}:{},format=rgb24{info_filter}",
            options.width, options.height
        );
        let sync: &[&str] = if options.constant_rate {
            &[]
        } else {
            &["-vsync", "passthrough"]
        };
        let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-nostats", "-v", "level+info"]
            .iter()
            .map(OsString::from)
            .collect();
        match &sequence {
            Some(seq) => args.extend(seq.input_args(options.sequence_rate)),
            None => args.extend(["-i".into(), ffmpeg::input_arg(path)]),
        }
        args.extend(
            ["-map", "0:V:0", "-an", "-sn", "-dn"]
                .iter()
                .chain(sync)
                .chain(
                    [
                        "-vf",
                        filter.as_str(),
                        "-pix_fmt",
                        "rgb24",
                        "-f",
                        "rawvideo",
                        "pipe:1",
                    ]
                    .iter(),
                )
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
        let info_rate = info.base_rate.as_f64();
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
            slot: (options.constant_rate && info_rate > 0.0).then(|| 1.0 / info_rate),
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
        let pts = match self.slot {
            Some(step) => Ok(Some(self.index as f64 * step)),
            None => self.pts.recv_timeout(PTS_WAIT),
        };
        let pts = match pts {
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

/// Writes the picture shown at `pts` seconds of `path`'s first video stream, at its own
/// resolution, as a JPEG (`quality` 2 best .. 31 worst, ffmpeg's `-q:v`). Seeks, so it costs
/// one short decode however long the video.
pub fn extract_jpeg(
    path: impl AsRef<Path>,
    pts: f64,
    out: impl AsRef<Path>,
    quality: u8,
    tools: &Tools,
) -> Result<(), MediaError> {
    let (path, out) = (path.as_ref(), out.as_ref());
    check_file(path)?;
    if !pts.is_finite() || pts < 0.0 || !(2..=31).contains(&quality) {
        return Err(MediaError::InvalidOption(format!(
            "thumbnail at {pts} s with quality {quality}: the time must be 0 or more and the \
             quality between 2 and 31"
        )));
    }
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-v", "error", "-ss"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(format!("{pts:.6}").into());
    args.push("-i".into());
    args.push(ffmpeg::input_arg(path));
    for a in ["-map", "0:V:0", "-frames:v", "1", "-q:v"] {
        args.push(a.into());
    }
    args.push(quality.to_string().into());
    args.push("-y".into());
    let mut target = OsString::from("file:");
    target.push(out.as_os_str());
    args.push(target);
    let output = std::process::Command::new(&tools.ffmpeg)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| MediaError::ToolMissing {
            path: path.to_path_buf(),
            tool: "ffmpeg",
            tool_path: tools.ffmpeg.clone(),
            env: "MICA_FFMPEG",
            why: format!("to write a thumbnail ({e})"),
        })?;
    let written = std::fs::metadata(out).map(|m| m.len() > 0).unwrap_or(false);
    if !output.status.success() || !written {
        return Err(MediaError::ToolFailed {
            path: path.to_path_buf(),
            tool: "ffmpeg",
            status: output.status.to_string(),
            stderr: format!(
                "no picture at {pts:.3} s written to {}: {}",
                out.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
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
