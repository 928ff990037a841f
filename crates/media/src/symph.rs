//! In-process audio decoding with symphonia: one audio track, downmixed to mono at the
//! source rate, a packet at a time.

use std::path::Path;

use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{CODEC_TYPE_NULL, Decoder, DecoderOptions};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::sample::Sample;
use symphonia::core::units::TimeBase;

use super::mp4::EditTrim;
use super::{WarningKind, Warnings};

/// Why symphonia could not open an input; every case is worth an ffmpeg attempt.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No format reader recognised the bytes.
    Probe(String),
    /// The container has no track symphonia can treat as audio.
    NoTrack,
    /// The codec has no symphonia decoder.
    NoDecoder { codec: String, reason: String },
}

impl OpenError {
    pub(crate) fn describe(&self) -> String {
        match self {
            OpenError::Probe(reason) => format!("symphonia does not recognise it: {reason}"),
            OpenError::NoTrack => "symphonia found no audio track".to_string(),
            OpenError::NoDecoder { codec, reason } => {
                format!("symphonia has no decoder for {codec}: {reason}")
            }
        }
    }
}

/// A symphonia format reader and decoder for the chosen track.
pub(crate) struct SymphDecoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    /// Sample rate of the last decoded block (the container's until one decodes).
    pub(crate) rate: Option<u32>,
    pub(crate) channels: Option<usize>,
    pub(crate) codec: String,
    /// Frames the container says the track has (after gapless trimming).
    pub(crate) n_frames: Option<u64>,
    max_frames_per_packet: Option<u64>,
    /// Frames decoded so far, at the source rate.
    pub(crate) decoded: u64,
    /// Whether the rate changed mid-stream (the header's length no longer applies).
    rate_changed: bool,
    /// Whether any packet decoded yet.
    decoded_any: bool,
    /// Consecutive packets that failed to decode.
    bad_run: u64,
    /// Time-base units of failed packets not yet replaced by silence.
    lost_dur: u64,
    /// The error of the packet just tried, if it failed.
    pending_error: Option<String>,
    /// Packet timestamps' unit, to size the silence for a lost packet.
    time_base: Option<TimeBase>,
    /// Priming frames still to drop (MP4 edit list).
    skip_left: u64,
    /// Frames the edit list plays, at most.
    limit: Option<u64>,
}

/// Undecodable packets tolerated at the very start before symphonia gives the file up
/// (to ffmpeg, when allowed); about 4 s of AAC, 5 s of MP3.
const MAX_LEADING_BAD: u64 = 200;

/// Result of asking for the next block.
pub(crate) enum Block {
    /// Samples were appended.
    Samples,
    /// The stream ended normally.
    End,
}

/// Probes `source` and prepares a decoder for its first audio track. `trims` are the MP4
/// edit lists per track index, when the input is MP4.
pub(crate) fn open(
    source: Box<dyn MediaSource>,
    ext: Option<&str>,
    trims: Option<Vec<Option<EditTrim>>>,
) -> Result<SymphDecoder, OpenError> {
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        // Trims encoder delay and padding (mp3, aac) so durations match the source.
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| OpenError::Probe(e.to_string()))?;
    let format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| {
            t.codec_params.codec != CODEC_TYPE_NULL
                && (t.codec_params.sample_rate.is_some() || t.codec_params.channels.is_some())
        })
        .ok_or(OpenError::NoTrack)?;
    let params = &track.codec_params;
    let codec = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name.to_string())
        .unwrap_or_else(|| format!("codec {}", params.codec));
    let decoder = symphonia::default::get_codecs()
        .make(params, &DecoderOptions::default())
        .map_err(|e| OpenError::NoDecoder {
            codec: codec.clone(),
            reason: e.to_string(),
        })?;
    let trim = trims
        .and_then(|t| t.get(track.id as usize).copied().flatten())
        .zip(params.sample_rate);
    let (skip_left, limit) = match trim {
        Some((trim, rate)) => (trim.skip_frames(rate), trim.play_frames(rate)),
        None => (0, None),
    };
    let n_frames = match limit {
        Some(limit) => Some(limit),
        None => params.n_frames.map(|n| n.saturating_sub(skip_left)),
    };
    Ok(SymphDecoder {
        skip_left,
        limit,
        time_base: params.time_base,
        decoded_any: false,
        bad_run: 0,
        lost_dur: 0,
        pending_error: None,
        track_id: track.id,
        rate: params.sample_rate,
        channels: params.channels.map(|c| c.count()),
        n_frames,
        max_frames_per_packet: params.max_frames_per_packet,
        codec,
        decoder,
        format,
        decoded: 0,
        rate_changed: false,
    })
}

impl SymphDecoder {
    /// Decodes until one buffer of samples is appended to `out` (mono, source rate) or the
    /// stream ends. Undecodable packets are skipped with a warning; an error that stops the
    /// demuxer is returned as `Err(reason)` for the caller to weigh against what it has.
    pub(crate) fn next_block(
        &mut self,
        out: &mut Vec<f32>,
        warnings: &mut Warnings,
        path: &Path,
    ) -> Result<Block, String> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(packet) => packet,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.check_length(warnings, path);
                    return Ok(Block::End);
                }
                Err(SymError::ResetRequired) => {
                    // A chained stream (e.g. concatenated Ogg): carry on with its new track.
                    match self.switch_track() {
                        Ok(()) => continue,
                        Err(reason) => {
                            warnings.push(
                                path,
                                WarningKind::Damaged,
                                Some(self.seconds()),
                                format!(
                                    "the stream changes format here; decoding stopped: {reason}"
                                ),
                            );
                            return Ok(Block::End);
                        }
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let at = self.seconds();
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    let frames = buf.frames();
                    if frames == 0 {
                        continue;
                    }
                    let rate = buf.spec().rate;
                    // The stream resamples each block at its own rate (see `rate`).
                    if self.rate != Some(rate) {
                        self.rate_changed |= self.rate.is_some();
                        self.rate = Some(rate);
                    }
                    if self.channels.is_none() {
                        self.channels = Some(buf.spec().channels.count());
                    }
                    let start = out.len();
                    if !self.decoded_any && self.lost_dur > 0 {
                        // Undecodable packets at the start: silence in their place.
                        fill_gap(self.time_base, self.rate, self.lost_dur, out);
                    }
                    self.decoded_any = true;
                    self.bad_run = 0;
                    self.lost_dur = 0;
                    mix_ref(&buf, out);
                    if let Some(block) = self.account(out, start) {
                        return Ok(block);
                    }
                }
                Err(SymError::ResetRequired) => self.decoder.reset(),
                // Malformed data in one packet, not the end of the stream. After audio has
                // decoded, "unsupported" is almost always corruption read as a rare feature.
                Err(SymError::DecodeError(msg)) => self.bad_packet(msg.to_string(), packet.dur),
                Err(SymError::IoError(e)) => self.bad_packet(e.to_string(), packet.dur),
                Err(SymError::Unsupported(msg)) if self.decoded_any => {
                    self.bad_packet(msg.to_string(), packet.dur)
                }
                Err(e) => return Err(e.to_string()),
            }
            if let Some(msg) = self.pending_error.take() {
                if !self.decoded_any {
                    // Nothing decoded yet: remember the gap and keep looking, so a file
                    // symphonia cannot really decode fails here (and can go to ffmpeg)
                    // instead of turning into silence.
                    if self.bad_run > MAX_LEADING_BAD {
                        return Err(format!(
                            "the first {} packets could not be decoded: {msg}",
                            self.bad_run
                        ));
                    }
                    let message = format!("skipped an undecodable packet: {msg}");
                    warnings.push(path, WarningKind::DecodeError, Some(at), message);
                    continue;
                }
                // Its length in silence keeps everything after it at the right time.
                let start = out.len();
                let gap = fill_gap(self.time_base, self.rate, self.lost_dur, out);
                self.lost_dur = 0;
                warnings.push(
                    path,
                    WarningKind::DecodeError,
                    Some(at),
                    format!("replaced an undecodable packet with {gap:.3} s of silence: {msg}"),
                );
                if let Some(block) = self.account(out, start) {
                    return Ok(block);
                }
            }
        }
    }

    /// After the demuxer's track list changed: a decoder for its first audio track.
    fn switch_track(&mut self) -> Result<(), String> {
        let track = self
            .format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| "no audio track follows".to_string())?;
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| e.to_string())?;
        self.track_id = track.id;
        self.time_base = track.codec_params.time_base;
        self.decoder = decoder;
        // Edit-list trims belong to the first stream only.
        self.skip_left = 0;
        self.limit = None;
        Ok(())
    }

    /// Records a packet that failed to decode.
    fn bad_packet(&mut self, msg: String, dur: u64) {
        self.bad_run += 1;
        self.lost_dur = self.lost_dur.saturating_add(dur);
        self.pending_error = Some(msg);
    }

    /// Applies the edit-list trim to the frames appended to `out` since `start` and counts
    /// them; `None` when nothing is left to hand out from this packet.
    fn account(&mut self, out: &mut Vec<f32>, start: usize) -> Option<Block> {
        let mut produced = (out.len() - start) as u64;
        if self.skip_left > 0 {
            let drop = self.skip_left.min(produced);
            out.drain(start..start + drop as usize);
            self.skip_left -= drop;
            produced -= drop;
        }
        if let Some(limit) = self.limit {
            let room = limit.saturating_sub(self.decoded);
            if produced >= room {
                out.truncate(start + room as usize);
                self.decoded += room;
                return Some(if room > 0 { Block::Samples } else { Block::End });
            }
        }
        self.decoded += produced;
        (produced > 0).then_some(Block::Samples)
    }

    fn seconds(&self) -> f64 {
        self.decoded as f64 / f64::from(self.rate.unwrap_or(1).max(1))
    }

    /// At a normal end: warns when the data stopped short of the header's length.
    fn check_length(&self, warnings: &mut Warnings, path: &Path) {
        let (Some(expected), Some(rate)) = (self.n_frames, self.rate) else {
            return;
        };
        if self.rate_changed {
            return;
        }
        // Packet-granular codecs can end a packet early; a real cut is far more than this.
        let slack = self
            .max_frames_per_packet
            .unwrap_or(4096)
            .max(u64::from(rate) / 20)
            .saturating_mul(2);
        if self.decoded + slack < expected {
            let rate = f64::from(rate.max(1));
            warnings.push(
                path,
                WarningKind::Truncated,
                Some(self.decoded as f64 / rate),
                format!(
                    "audio ends at {:.3} s but the header says {:.3} s: the file is truncated \
                     or damaged parts were skipped",
                    self.decoded as f64 / rate,
                    expected as f64 / rate
                ),
            );
        }
    }
}

/// Appends silence as long as lost packets of `dur` time-base units; returns seconds.
fn fill_gap(time_base: Option<TimeBase>, rate: Option<u32>, dur: u64, out: &mut Vec<f32>) -> f64 {
    let (Some(tb), Some(rate)) = (time_base, rate) else {
        return 0.0;
    };
    let frames =
        u128::from(dur) * u128::from(rate) * u128::from(tb.numer) / u128::from(tb.denom.max(1));
    // A corrupt duration field must not allocate hours of silence.
    let frames = u64::try_from(frames)
        .unwrap_or(u64::MAX)
        .min(u64::from(rate) * 10);
    out.resize(out.len() + frames as usize, 0.0);
    frames as f64 / f64::from(rate.max(1))
}

/// Appends the channel average of `buf` to `out`.
fn mix_ref(buf: &AudioBufferRef<'_>, out: &mut Vec<f32>) {
    match buf {
        AudioBufferRef::U8(b) => mix(b, out),
        AudioBufferRef::U16(b) => mix(b, out),
        AudioBufferRef::U24(b) => mix(b, out),
        AudioBufferRef::U32(b) => mix(b, out),
        AudioBufferRef::S8(b) => mix(b, out),
        AudioBufferRef::S16(b) => mix(b, out),
        AudioBufferRef::S24(b) => mix(b, out),
        AudioBufferRef::S32(b) => mix(b, out),
        AudioBufferRef::F32(b) => mix(b, out),
        AudioBufferRef::F64(b) => mix(b, out),
    }
}

fn mix<S: Sample + IntoSample<f32>>(buf: &AudioBuffer<S>, out: &mut Vec<f32>) {
    let frames = buf.frames();
    let channels = buf.spec().channels.count();
    let start = out.len();
    out.resize(start + frames, 0.0);
    let dst = &mut out[start..];
    // Planar buffers: one pass per channel keeps the inner loop contiguous.
    for c in 0..channels {
        for (d, &s) in dst.iter_mut().zip(buf.chan(c)) {
            *d += s.into_sample();
        }
    }
    if channels > 1 {
        let scale = 1.0 / channels as f32;
        for d in dst.iter_mut() {
            *d *= scale;
        }
    }
}
