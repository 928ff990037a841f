//! `mica probe INPUT`: what an input holds, and whether every sample and frame decodes.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mica_media::{
    self as media, AudioOptions, AudioStream, FrameOptions, FrameSource, MediaWarning,
};
use serde::Serialize;

/// Arguments of `mica probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The media file.
    input: PathBuf,
    /// Only read the headers; do not decode every sample and frame.
    #[arg(long)]
    no_decode: bool,
    /// Write the JSON to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    media: mica_core::document::MediaInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    decoded: Option<Decoded>,
}

#[derive(Debug, Default, Serialize)]
struct Decoded {
    /// 16 kHz mono samples decoded.
    audio_samples: u64,
    /// Their duration in seconds.
    audio_seconds: f64,
    /// Frames decoded (at the network size 48x27).
    video_frames: u64,
    /// Wall-clock seconds spent decoding.
    seconds: f64,
    /// Media seconds decoded per wall-clock second.
    realtime_factor: f64,
    /// What was skipped or repaired.
    warnings: Vec<MediaWarning>,
}

/// Runs `mica probe`.
pub fn run(args: ProbeArgs, quiet: bool) -> Result<()> {
    let tools = media::Tools::from_env();
    let info = media::describe(&args.input, &tools)?;
    let decoded = if args.no_decode {
        None
    } else {
        Some(decode(&args, &info, &tools, quiet)?)
    };
    let report = Report {
        media: info,
        decoded,
    };
    let mut out = crate::open_output(args.output.as_deref())?;
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn decode(
    args: &ProbeArgs,
    info: &mica_core::document::MediaInfo,
    tools: &media::Tools,
    quiet: bool,
) -> Result<Decoded> {
    let started = Instant::now();
    let mut decoded = Decoded::default();
    let bar = progress(info.duration, quiet);
    if info.audio.is_some() {
        bar.set_message("audio");
        let options = AudioOptions {
            tools: tools.clone(),
            ..AudioOptions::default()
        };
        let mut stream = AudioStream::open_with(&args.input, &options)?;
        while let Some(chunk) = stream.next_chunk()? {
            decoded.audio_samples = chunk.end();
            bar.set_position((chunk.end() as f64 / f64::from(media::SAMPLE_RATE)) as u64);
        }
        decoded.audio_seconds = decoded.audio_samples as f64 / f64::from(media::SAMPLE_RATE);
        decoded.warnings.extend_from_slice(stream.warnings());
    }
    if info.video.is_some() {
        bar.set_message("video");
        bar.set_position(0);
        let mut options = FrameOptions::new(48, 27);
        options.tools = tools.clone();
        let mut frames = FrameSource::open(&args.input, &options)?;
        while let Some(frame) = frames.next_frame()? {
            decoded.video_frames = frame.index + 1;
            bar.set_position(frame.pts.max(0.0) as u64);
        }
        decoded.warnings.extend_from_slice(frames.warnings());
    }
    bar.finish_and_clear();
    decoded.seconds = started.elapsed().as_secs_f64();
    if decoded.seconds > 0.0 {
        decoded.realtime_factor = info.duration / decoded.seconds;
    }
    Ok(decoded)
}

/// A bar over media seconds on stderr; hidden when stderr is not a terminal or with --quiet.
fn progress(total_seconds: f64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total_seconds.max(0.0).ceil() as u64),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{msg:>6} [{bar:40}] {pos}/{len} s ({eta})") {
        bar.set_style(style);
    }
    bar
}
