//! Audio input: any file to 16 kHz mono f32, as a stream of bounded chunks.
//!
//! symphonia decodes in-process; rubato resamples; channels are averaged. Inputs symphonia
//! cannot open go through `ffmpeg -i IN -ac C -ar 16000 -f f32le -`, read from its stdout as
//! it runs. Either way the stream holds at most a chunk plus a decoder packet or two, so a
//! multi-hour file costs the same memory as a short one.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::ffmpeg::{self, Subprocess, Tool, Tools, Want};
use super::mp4::{self, EditTrim};
use super::resample::{Resampler, expected_len};
use super::symph::{self, Block, OpenError, SymphDecoder};
use super::{MediaError, MediaWarning, WarningKind, Warnings, check_file};

/// The sample rate of every decoded stream, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

/// Which decoder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// symphonia, falling back to ffmpeg when symphonia cannot open or decode the input.
    #[default]
    Auto,
    /// symphonia only; inputs it cannot open are an error.
    Symphonia,
    /// ffmpeg only.
    Ffmpeg,
}

/// The decoder a stream ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process symphonia + rubato.
    Symphonia,
    /// An ffmpeg subprocess.
    Ffmpeg,
}

/// How to open audio.
#[derive(Debug, Clone)]
pub struct AudioOptions {
    /// Samples per chunk (at 16 kHz); every chunk but the last has exactly this many.
    pub chunk_samples: usize,
    /// Which decoder to use.
    pub backend: BackendChoice,
    /// Where ffmpeg and ffprobe are.
    pub tools: Tools,
}

impl Default for AudioOptions {
    fn default() -> Self {
        AudioOptions {
            chunk_samples: SAMPLE_RATE as usize,
            backend: BackendChoice::Auto,
            tools: Tools::from_env(),
        }
    }
}

/// What is known about the source before decoding it all.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// The decoder in use.
    pub backend: Backend,
    /// Codec short name (`pcm_s16le`, `mp3`, `aac`, ...), when known.
    pub codec: Option<String>,
    /// The source sample rate in Hz, when known.
    pub sample_rate: Option<u32>,
    /// The source channel count, when known.
    pub channels: Option<usize>,
    /// The duration in seconds the container states, when it does.
    pub duration: Option<f64>,
    /// The 16 kHz sample count that duration implies, when known.
    pub expected_samples: Option<u64>,
}

/// A run of consecutive 16 kHz mono samples.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// Index of the first sample from the start of the stream.
    pub start: u64,
    /// The samples, finite, nominally in [-1, 1].
    pub samples: Vec<f32>,
}

impl AudioChunk {
    /// Start time in seconds.
    pub fn start_seconds(&self) -> f64 {
        self.start as f64 / f64::from(SAMPLE_RATE)
    }

    /// Index one past the last sample.
    pub fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }
}

/// A whole decoded file.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// Always [`SAMPLE_RATE`].
    pub sample_rate: u32,
    /// Duration of `samples` in seconds.
    pub duration: f64,
    /// What was skipped or repaired while decoding.
    pub warnings: Vec<MediaWarning>,
    /// What the source said about itself.
    pub info: SourceInfo,
}

/// Decodes a whole file to 16 kHz mono. For long inputs prefer [`AudioStream`].
pub fn load_all(path: impl AsRef<Path>) -> Result<Audio, MediaError> {
    load_all_with(path, &AudioOptions::default())
}

/// [`load_all`] with options.
pub fn load_all_with(path: impl AsRef<Path>, options: &AudioOptions) -> Result<Audio, MediaError> {
    AudioStream::open_with(path, options)?.collect_all()
}

/// Cap on the samples reserved up front from a header's claimed length, so a lying header
/// cannot trigger a huge allocation (the vector still grows to the real length).
const MAX_RESERVE: u64 = SAMPLE_RATE as u64 * 3600;

/// Where the decoded samples come from.
enum Source {
    Symphonia(SymphDecoder),
    Ffmpeg(FfmpegAudio),
}

impl Source {
    fn next_block(
        &mut self,
        out: &mut Vec<f32>,
        warnings: &mut Warnings,
        path: &Path,
    ) -> Result<Block, MediaError> {
        match self {
            Source::Symphonia(d) => {
                d.next_block(out, warnings, path)
                    .map_err(|reason| MediaError::Damaged {
                        path: path.to_path_buf(),
                        reason,
                    })
            }
            Source::Ffmpeg(f) => f.next_block(out, warnings),
        }
    }

    /// The sample rate of the block last decoded.
    fn rate(&self) -> u32 {
        match self {
            Source::Symphonia(d) => d.rate.unwrap_or(SAMPLE_RATE),
            Source::Ffmpeg(_) => SAMPLE_RATE,
        }
    }

    /// Source samples decoded so far.
    fn decoded(&self) -> u64 {
        match self {
            Source::Symphonia(d) => d.decoded,
            Source::Ffmpeg(f) => f.decoded,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Decoding,
    /// Decoding is over and the resampler flushed; the queue drains.
    Flushed,
    /// Everything handed out (or a fatal error returned).
    Done,
}

/// A decoding audio stream: 16 kHz mono f32 in chunks of [`AudioOptions::chunk_samples`].
///
/// Open from a path ([`AudioStream::open`]) when you can: ffmpeg, when needed, reads it in
/// place. [`AudioStream::from_reader`] and [`AudioStream::from_bytes`] decode with symphonia
/// directly and copy the data to a temporary file only if they have to fall back to ffmpeg.
///
/// Errors that stop decoding after some audio came out do not fail the stream: it ends
/// there, with a [`MediaWarning`] in [`AudioStream::warnings`]. `next_chunk` returns an
/// error only when nothing at all could be decoded.
pub struct AudioStream {
    path: PathBuf,
    source: Source,
    info: SourceInfo,
    resampler: Resampler,
    /// Output of resamplers replaced after a mid-stream rate change.
    resampled_before: u64,
    /// Scratch for one decoded block at the source rate.
    block: Vec<f32>,
    /// Resampled samples not yet handed out.
    queue: VecDeque<f32>,
    chunk: usize,
    emitted: u64,
    warnings: Warnings,
    state: State,
    non_finite: u64,
    first_non_finite: Option<f64>,
    /// A reader's data copied to disk for ffmpeg; deleted on drop.
    _spill: Option<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for AudioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioStream")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("position", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl AudioStream {
    /// Opens `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<AudioStream, MediaError> {
        AudioStream::open_with(path, &AudioOptions::default())
    }

    /// Opens `path`. Fails fast on missing, empty, non-media and undecodable files; the
    /// first block is decoded here so a usable stream is known to produce audio (or to be
    /// a valid empty recording).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: &AudioOptions,
    ) -> Result<AudioStream, MediaError> {
        let path = path.as_ref();
        validate(options)?;
        check_file(path)?;
        let why = match options.backend {
            BackendChoice::Ffmpeg => "the ffmpeg backend was requested".to_string(),
            BackendChoice::Auto | BackendChoice::Symphonia => {
                let mut file = File::open(path).map_err(|source| MediaError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let trims = mp4::edit_trims(&mut file);
                let ext = path.extension().and_then(|e| e.to_str());
                match try_symphonia(Box::new(file), ext, trims, path, options)? {
                    Ok(stream) => return Ok(stream),
                    Err(why) => why,
                }
            }
        };
        open_ffmpeg(path, path, options, &why, None)
    }

    /// Opens encoded media held by any seekable reader (an open file, a `Cursor` over bytes).
    /// `name` labels errors and its extension hints the format (`upload.mp3`). If symphonia
    /// cannot decode it and ffmpeg is allowed, the data is copied to a temporary file that
    /// lives as long as the stream.
    pub fn from_reader<R>(
        reader: R,
        name: impl AsRef<Path>,
        options: &AudioOptions,
    ) -> Result<AudioStream, MediaError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        let name = name.as_ref();
        validate(options)?;
        let shared = SharedReader::new(reader).map_err(|source| MediaError::Io {
            path: name.to_path_buf(),
            source,
        })?;
        if shared.len == 0 {
            return Err(MediaError::Empty {
                path: name.to_path_buf(),
            });
        }
        let why = match options.backend {
            BackendChoice::Ffmpeg => "the ffmpeg backend was requested".to_string(),
            BackendChoice::Auto | BackendChoice::Symphonia => {
                let ext = name.extension().and_then(|e| e.to_str());
                let trims = mp4::edit_trims(&mut *shared.lock());
                match try_symphonia(Box::new(shared.clone()), ext, trims, name, options)? {
                    Ok(stream) => return Ok(stream),
                    Err(why) => why,
                }
            }
        };
        let spill = shared.spill().map_err(|source| MediaError::Io {
            path: name.to_path_buf(),
            source,
        })?;
        let spill_path = spill.path().to_path_buf();
        open_ffmpeg(&spill_path, name, options, &why, Some(spill))
    }

    /// Opens encoded media held in memory; see [`AudioStream::from_reader`].
    pub fn from_bytes(
        bytes: impl Into<Vec<u8>>,
        name: impl AsRef<Path>,
        options: &AudioOptions,
    ) -> Result<AudioStream, MediaError> {
        AudioStream::from_reader(std::io::Cursor::new(bytes.into()), name, options)
    }

    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<AudioChunk>, MediaError> {
        while self.state == State::Decoding && self.queue.len() < self.chunk {
            if let Err(e) = self.decode_more() {
                self.state = State::Done;
                return Err(e);
            }
        }
        if self.queue.is_empty() {
            if self.state != State::Done {
                self.state = State::Done;
                self.warnings.finish(&self.path);
            }
            return Ok(None);
        }
        let n = self.chunk.min(self.queue.len());
        let samples: Vec<f32> = self.queue.drain(..n).collect();
        let start = self.emitted;
        self.emitted += n as u64;
        Ok(Some(AudioChunk { start, samples }))
    }

    /// Decodes one block and resamples it into the queue; at the end, flushes.
    fn decode_more(&mut self) -> Result<(), MediaError> {
        self.block.clear();
        let ended = match self
            .source
            .next_block(&mut self.block, &mut self.warnings, &self.path)
        {
            Ok(Block::Samples) => false,
            Ok(Block::End) => true,
            Err(e) if self.source.decoded() == 0 => return Err(e),
            Err(e) => {
                let at = self.position_seconds_decoded();
                self.warnings.push(
                    &self.path,
                    WarningKind::Damaged,
                    Some(at),
                    format!(
                        "decoding stopped early, keeping the audio before it: {}",
                        reason_of(&e)
                    ),
                );
                true
            }
        };
        self.sanitize_block();
        let rate = self.source.rate();
        if rate != self.resampler.rate_in() && !self.block.is_empty() {
            // A chained stream at a new rate: close the old segment at its exact length and
            // resample the rest from the new rate.
            tracing::info!(
                "{}: sample rate changes from {} Hz to {rate} Hz at {:.3} s",
                self.path.display(),
                self.resampler.rate_in(),
                self.position_seconds_decoded()
            );
            self.resampler
                .finish(&mut self.queue)
                .map_err(|reason| self.resample_error(reason))?;
            self.resampled_before += self.resampler.produced();
            self.resampler = Resampler::new(rate).map_err(|reason| self.resample_error(reason))?;
        }
        self.resampler
            .push(&self.block, &mut self.queue)
            .map_err(|reason| self.resample_error(reason))?;
        if ended {
            self.resampler
                .finish(&mut self.queue)
                .map_err(|reason| self.resample_error(reason))?;
            self.state = State::Flushed;
            if self.non_finite > 0 {
                let message = format!(
                    "{} NaN or infinite samples were replaced with silence",
                    self.non_finite
                );
                self.warnings.push(
                    &self.path,
                    WarningKind::NonFinite,
                    self.first_non_finite,
                    message,
                );
            }
        }
        Ok(())
    }

    /// A stream over `source` (labelled `label` in errors) whose first decoded `block`,
    /// with the `warnings` decoding it raised, is sanitized and resampled into the queue.
    fn primed(
        label: &Path,
        source: Source,
        info: SourceInfo,
        resampler: Resampler,
        block: Vec<f32>,
        warnings: Warnings,
        options: &AudioOptions,
    ) -> Result<AudioStream, MediaError> {
        let mut stream = AudioStream {
            path: label.to_path_buf(),
            source,
            info,
            resampler,
            resampled_before: 0,
            block,
            queue: VecDeque::with_capacity(options.chunk_samples.saturating_mul(2).min(1 << 22)),
            chunk: options.chunk_samples,
            emitted: 0,
            warnings,
            state: State::Decoding,
            non_finite: 0,
            first_non_finite: None,
            _spill: None,
        };
        stream.sanitize_block();
        stream
            .resampler
            .push(&stream.block, &mut stream.queue)
            .map_err(|reason| stream.resample_error(reason))?;
        Ok(stream)
    }

    fn resample_error(&self, reason: String) -> MediaError {
        MediaError::Damaged {
            path: self.path.clone(),
            reason: format!("resampling failed: {reason}"),
        }
    }

    fn position_seconds_decoded(&self) -> f64 {
        (self.resampled_before + self.resampler.produced()) as f64 / f64::from(SAMPLE_RATE)
    }

    /// Decoders can emit NaN/inf from corrupt float data; they would poison every model
    /// downstream, so they become silence here (and are counted for one warning).
    fn sanitize_block(&mut self) {
        let at = self.position_seconds_decoded();
        let mut bad = 0;
        for s in self.block.iter_mut() {
            if !s.is_finite() {
                bad += 1;
                *s = 0.0;
            }
        }
        if bad > 0 {
            self.first_non_finite.get_or_insert(at);
            self.non_finite += bad;
        }
    }

    /// Decodes the rest into one [`Audio`].
    pub fn collect_all(mut self) -> Result<Audio, MediaError> {
        let reserve = self.info.expected_samples.unwrap_or(0).min(MAX_RESERVE);
        let mut samples = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(chunk) = self.next_chunk()? {
            samples.extend_from_slice(&chunk.samples);
        }
        Ok(Audio {
            duration: samples.len() as f64 / f64::from(SAMPLE_RATE),
            samples,
            sample_rate: SAMPLE_RATE,
            warnings: self.warnings.take(),
            info: self.info,
        })
    }

    /// What the source said about itself, and which decoder is in use.
    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// The duration in seconds the container states, when it does.
    pub fn duration(&self) -> Option<f64> {
        self.info.duration
    }

    /// The 16 kHz sample count the container's length implies, when known.
    pub fn expected_samples(&self) -> Option<u64> {
        self.info.expected_samples
    }

    /// Samples handed out so far: the index of the next chunk's first sample.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    /// [`AudioStream::position`] in seconds.
    pub fn position_seconds(&self) -> f64 {
        self.emitted as f64 / f64::from(SAMPLE_RATE)
    }

    /// Problems met so far (skipped packets, truncation, ...).
    pub fn warnings(&self) -> &[MediaWarning] {
        self.warnings.as_slice()
    }

    /// The path (or reader name) being decoded.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Iterator for AudioStream {
    type Item = Result<AudioChunk, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

fn validate(options: &AudioOptions) -> Result<(), MediaError> {
    if options.chunk_samples == 0 {
        return Err(MediaError::InvalidOption(
            "chunk_samples must be at least 1".to_string(),
        ));
    }
    Ok(())
}

/// Tries symphonia. `Ok(Ok(stream))` on success; `Ok(Err(why))` when ffmpeg should be tried
/// (with the reason); `Err` when symphonia was the only allowed backend.
fn try_symphonia(
    source: Box<dyn symphonia::core::io::MediaSource>,
    ext: Option<&str>,
    trims: Option<Vec<Option<EditTrim>>>,
    label: &Path,
    options: &AudioOptions,
) -> Result<Result<AudioStream, String>, MediaError> {
    let only = options.backend == BackendChoice::Symphonia;
    let mut decoder = match symph::open(source, ext, trims) {
        Ok(decoder) => decoder,
        Err(e) if only => return Err(open_error(label, e)),
        Err(e) => return Ok(Err(e.describe())),
    };
    let mut warnings = Warnings::default();
    let mut block = Vec::new();
    let skipped = |w: &Warnings| {
        w.as_slice()
            .iter()
            .any(|w| matches!(w.kind, WarningKind::DecodeError | WarningKind::Damaged))
    };
    // A clean end with nothing decoded and nothing skipped is a valid empty recording; an
    // end after skipping every packet means symphonia cannot read this file.
    let failure = match decoder.next_block(&mut block, &mut warnings, label) {
        Ok(Block::Samples) => None,
        Ok(Block::End) if !skipped(&warnings) => None,
        Ok(Block::End) => Some(first_warning(&warnings)),
        Err(reason) => Some(reason),
    };
    if let Some(reason) = failure {
        if only {
            return Err(MediaError::Damaged {
                path: label.to_path_buf(),
                reason,
            });
        }
        return Ok(Err(format!(
            "symphonia could not decode any of it: {reason}"
        )));
    }
    let rate = decoder.rate.unwrap_or(SAMPLE_RATE);
    let resampler = Resampler::new(rate).map_err(|reason| MediaError::UnsupportedCodec {
        path: label.to_path_buf(),
        codec: decoder.codec.clone(),
        reason: format!("cannot resample from {rate} Hz: {reason}"),
    })?;
    let info = SourceInfo {
        backend: Backend::Symphonia,
        codec: Some(decoder.codec.clone()),
        sample_rate: decoder.rate,
        channels: decoder.channels,
        duration: decoder
            .n_frames
            .filter(|_| rate > 0)
            .map(|n| n as f64 / f64::from(rate)),
        expected_samples: decoder.n_frames.map(|n| expected_len(n, rate)),
    };
    tracing::debug!("{}: decoding with symphonia ({info:?})", label.display());
    let stream = AudioStream::primed(
        label,
        Source::Symphonia(decoder),
        info,
        resampler,
        block,
        warnings,
        options,
    )?;
    Ok(Ok(stream))
}

/// The cause inside an error, without the path and advice meant for a fatal error.
fn reason_of(e: &MediaError) -> String {
    match e {
        MediaError::Damaged { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn first_warning(warnings: &Warnings) -> String {
    warnings
        .as_slice()
        .first()
        .map(|w| w.message.clone())
        .unwrap_or_else(|| "no audio in the stream".to_string())
}

fn open_error(path: &Path, e: OpenError) -> MediaError {
    let path = path.to_path_buf();
    match e {
        OpenError::Probe(reason) => MediaError::NotMedia { path, reason },
        OpenError::NoTrack => MediaError::NoAudioStream {
            path,
            reason: "the container has no audio track".to_string(),
        },
        OpenError::NoDecoder { codec, reason } => MediaError::UnsupportedCodec {
            path,
            codec,
            reason,
        },
    }
}

/// Opens `file` through ffmpeg. `label` names it in errors (it differs from `file` for a
/// spilled reader); `why` says why ffmpeg is used.
fn open_ffmpeg(
    file: &Path,
    label: &Path,
    options: &AudioOptions,
    why: &str,
    spill: Option<tempfile::NamedTempFile>,
) -> Result<AudioStream, MediaError> {
    let relabel = |e: MediaError| relabel(e, file, label);
    tracing::info!("{}: decoding with ffmpeg ({why})", label.display());
    let (mut source, info) =
        FfmpegAudio::open(file, label, &options.tools, why).map_err(relabel)?;
    let mut warnings = Warnings::default();
    let mut block = Vec::new();
    // Prime like the symphonia path, so errors surface from open.
    source
        .next_block(&mut block, &mut warnings)
        .map_err(relabel)?;
    let resampler = Resampler::new(SAMPLE_RATE).map_err(|reason| MediaError::Damaged {
        path: label.to_path_buf(),
        reason,
    })?;
    let mut stream = AudioStream::primed(
        label,
        Source::Ffmpeg(source),
        info,
        resampler,
        block,
        warnings,
        options,
    )?;
    stream._spill = spill;
    Ok(stream)
}

/// Errors about a spilled temp file should name what the caller passed.
fn relabel(e: MediaError, file: &Path, label: &Path) -> MediaError {
    if file == label {
        return e;
    }
    let fix = |p: PathBuf| if p == file { label.to_path_buf() } else { p };
    match e {
        MediaError::NotMedia { path, reason } => MediaError::NotMedia {
            path: fix(path),
            reason,
        },
        MediaError::NoAudioStream { path, reason } => MediaError::NoAudioStream {
            path: fix(path),
            reason,
        },
        MediaError::UnsupportedCodec {
            path,
            codec,
            reason,
        } => MediaError::UnsupportedCodec {
            path: fix(path),
            codec,
            reason,
        },
        MediaError::Damaged { path, reason } => MediaError::Damaged {
            path: fix(path),
            reason,
        },
        MediaError::ToolMissing {
            path,
            tool,
            tool_path,
            env,
            why,
        } => MediaError::ToolMissing {
            path: fix(path),
            tool,
            tool_path,
            env,
            why,
        },
        MediaError::ToolFailed {
            path,
            tool,
            status,
            stderr,
        } => MediaError::ToolFailed {
            path: fix(path),
            tool,
            status,
            stderr,
        },
        other => other,
    }
}

/// Bytes read from ffmpeg's stdout per call.
const READ_BYTES: usize = 64 * 1024;

/// Audio decoded by an ffmpeg subprocess to interleaved f32 at 16 kHz.
struct FfmpegAudio {
    proc: Subprocess,
    channels: usize,
    label: PathBuf,
    buf: Vec<u8>,
    /// Bytes of an incomplete frame kept at the front of `buf`.
    carry: usize,
    decoded: u64,
    done: bool,
}

/// ffmpeg arguments writing the first audio stream to stdout as raw f32 samples at 16 kHz
/// in `channels` channels.
pub(crate) fn f32_output_args(channels: usize) -> impl Iterator<Item = OsString> {
    let (channels, rate) = (channels.to_string(), SAMPLE_RATE.to_string());
    [
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-ac",
        &channels,
        "-ar",
        &rate,
        "-c:a",
        "pcm_f32le",
        "-f",
        "f32le",
        "pipe:1",
    ]
    .map(OsString::from)
    .into_iter()
}

impl FfmpegAudio {
    fn open(
        file: &Path,
        label: &Path,
        tools: &Tools,
        why: &str,
    ) -> Result<(FfmpegAudio, SourceInfo), MediaError> {
        // ffprobe tells us the channel count (so we can average channels like the symphonia
        // path rather than take ffmpeg's downmix gains) and the duration. Without ffprobe
        // we let ffmpeg downmix.
        let probe = match ffmpeg::ffprobe_json(tools, file, why, Want::Audio) {
            Ok(json) => Some(json),
            Err(MediaError::ToolMissing { .. }) => {
                tracing::debug!("ffprobe not found; ffmpeg will downmix {}", label.display());
                None
            }
            Err(e) => return Err(e),
        };
        let mut info = SourceInfo {
            backend: Backend::Ffmpeg,
            codec: None,
            sample_rate: None,
            channels: None,
            duration: None,
            expected_samples: None,
        };
        let mut channels = 1;
        if let Some(json) = &probe {
            let Some(stream) = ffmpeg::streams(json, "audio").next() else {
                return Err(MediaError::NoAudioStream {
                    path: file.to_path_buf(),
                    reason: "ffprobe lists no audio stream".to_string(),
                });
            };
            info.codec = stream
                .get("codec_name")
                .and_then(|c| c.as_str())
                .map(str::to_string);
            info.sample_rate = stream
                .get("sample_rate")
                .and_then(ffmpeg::json_u64)
                .and_then(|r| u32::try_from(r).ok());
            info.channels = stream
                .get("channels")
                .and_then(ffmpeg::json_u64)
                .and_then(|c| usize::try_from(c).ok())
                .filter(|&c| (1..=64).contains(&c));
            channels = info.channels.unwrap_or(1);
            info.duration = stream
                .get("duration")
                .and_then(ffmpeg::json_f64)
                .or_else(|| {
                    json.get("format")
                        .and_then(|f| f.get("duration"))
                        .and_then(ffmpeg::json_f64)
                })
                .filter(|d| *d >= 0.0);
            info.expected_samples = info
                .duration
                .map(|d| (d * f64::from(SAMPLE_RATE)).round() as u64);
        }
        let args: Vec<OsString> = ["-nostdin", "-hide_banner", "-nostats", "-v", "error", "-i"]
            .iter()
            .map(OsString::from)
            .chain([ffmpeg::input_arg(file)])
            .chain(f32_output_args(channels))
            .collect();
        let proc = Subprocess::spawn(Tool::Ffmpeg, tools, &args, file, why, |_| true)?;
        Ok((
            FfmpegAudio {
                proc,
                channels,
                label: label.to_path_buf(),
                buf: vec![0; READ_BYTES],
                carry: 0,
                decoded: 0,
                done: false,
            },
            info,
        ))
    }

    fn next_block(
        &mut self,
        out: &mut Vec<f32>,
        warnings: &mut Warnings,
    ) -> Result<Block, MediaError> {
        if self.done {
            return Ok(Block::End);
        }
        let frame_bytes = 4 * self.channels;
        loop {
            let n = self
                .proc
                .read(&mut self.buf[self.carry..])
                .map_err(|e| MediaError::Io {
                    path: self.label.clone(),
                    source: e,
                })?;
            if n == 0 {
                return self.end(warnings);
            }
            let total = self.carry + n;
            let whole = total - total % frame_bytes;
            let scale = 1.0 / self.channels as f32;
            out.reserve(whole / frame_bytes);
            for frame in self.buf[..whole].chunks_exact(frame_bytes) {
                let mut sum = 0.0f32;
                for b in frame.chunks_exact(4) {
                    sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                out.push(sum * scale);
            }
            self.buf.copy_within(whole..total, 0);
            self.carry = total - whole;
            self.decoded += (whole / frame_bytes) as u64;
            self.report(warnings);
            if whole > 0 {
                return Ok(Block::Samples);
            }
        }
    }

    /// Turns ffmpeg's error lines into warnings as they arrive.
    fn report(&mut self, warnings: &mut Warnings) {
        let lines = ffmpeg::lock(&self.proc.log).unreported();
        let at = self.decoded as f64 / f64::from(SAMPLE_RATE);
        for line in lines {
            warnings.push(
                &self.label,
                WarningKind::Decoder,
                Some(at),
                format!("ffmpeg: {line}"),
            );
        }
    }

    fn end(&mut self, warnings: &mut Warnings) -> Result<Block, MediaError> {
        self.done = true;
        let status = self.proc.finish().map_err(|e| MediaError::Io {
            path: self.label.clone(),
            source: e,
        })?;
        if status.success() {
            self.report(warnings);
            return Ok(Block::End);
        }
        let tail = ffmpeg::lock(&self.proc.log).tail(6);
        if self.decoded == 0 {
            return Err(ffmpeg::classify_failure(
                &self.proc.input,
                Tool::Ffmpeg,
                &status.to_string(),
                &tail,
                Want::Audio,
            ));
        }
        self.report(warnings);
        warnings.push(
            &self.label,
            WarningKind::Damaged,
            Some(self.decoded as f64 / f64::from(SAMPLE_RATE)),
            format!("ffmpeg stopped with {status}; keeping the audio before it: {tail}"),
        );
        Ok(Block::End)
    }
}

/// A reader shared between symphonia and us, so we can still copy it out for ffmpeg after
/// symphonia gives up on it.
struct SharedReader<R> {
    inner: Arc<Mutex<R>>,
    len: u64,
}

impl<R> Clone for SharedReader<R> {
    fn clone(&self) -> Self {
        SharedReader {
            inner: Arc::clone(&self.inner),
            len: self.len,
        }
    }
}

impl<R: Read + Seek> SharedReader<R> {
    fn new(mut reader: R) -> std::io::Result<SharedReader<R>> {
        let len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        Ok(SharedReader {
            inner: Arc::new(Mutex::new(reader)),
            len,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, R> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Copies the whole reader to a new temporary file.
    fn spill(&self) -> std::io::Result<tempfile::NamedTempFile> {
        let mut reader = self.lock();
        reader.seek(SeekFrom::Start(0))?;
        let mut file = tempfile::Builder::new().prefix("mica-media-").tempfile()?;
        std::io::copy(&mut *reader, file.as_file_mut())?;
        Ok(file)
    }
}

impl<R: Read> Read for SharedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .read(buf)
    }
}

impl<R: Seek> Seek for SharedReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> symphonia::core::io::MediaSource for SharedReader<R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}
