//! `mica shots INPUT`: shot boundaries with TransNetV2.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mica_core::document::{Analysis, MediaInfo, Timings};
use mica_core::writers::{self, Format, WriterOptions};
use mica_media::{FrameOptions, FrameSource, Tools};
use mica_scenes::{ShotDetector, ShotList, ShotOptions, TransNetV2};

use crate::job::{Job, JobArgs};

/// Arguments of `mica shots`.
#[derive(Debug, Args)]
pub struct ShotsArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Boundary probability above which a frame is a transition frame.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    threshold: f32,
    /// Write one JPEG per shot (its middle frame, source resolution) into DIR.
    #[arg(long, value_name = "DIR")]
    thumbnails: Option<PathBuf>,
    /// Decode each picture once at its own timestamp instead of at the stream's constant
    /// rate (the model's reference pipeline); for variable-frame-rate sources.
    #[arg(long)]
    vfr: bool,
    /// Windows of 100 frames per forward pass (0: 1 on the CPU, 32 on GPUs).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Model name or directory.
    #[arg(long, default_value = "transnetv2")]
    model: String,
    /// Output format: json, csv (PySceneDetect columns) or edl (CMX3600).
    #[arg(long, default_value = "json")]
    format: Format,
}

/// The JSON document: the input, its shots and transitions, timings.
#[derive(Debug, serde::Serialize)]
struct ShotsDocument<'a> {
    media: &'a MediaInfo,
    #[serde(flatten)]
    shots: &'a ShotList,
    timings: &'a Timings,
}

/// Runs `mica shots`.
pub fn run(args: ShotsArgs, quiet: bool) -> Result<()> {
    let options = ShotOptions {
        threshold: args.threshold,
        batch_windows: args.batch,
        constant_rate: !args.vfr,
        ..ShotOptions::default()
    };
    let writes = [Format::Json, Format::Csv, Format::Edl];
    let job = Job::start("shots", &args.job, args.format, &writes, || {
        Ok(options.validate()?)
    })?;
    let input = &args.job.input;
    let tools = Tools::from_env();
    // The video stream alone: opening the audio too would only cost time (and warn about
    // damaged sound that shot detection never reads).
    let video = mica_media::probe_with(input, &tools)?;
    let media = MediaInfo {
        source: input.display().to_string(),
        duration: video
            .duration
            .unwrap_or(video.frame_count as f64 / video.fps_f64.max(1e-9)),
        audio: None,
        video: Some(mica_core::document::VideoInfo {
            width: video.width,
            height: video.height,
            fps: video.fps_f64,
            frames: video.frame_count_exact.then_some(video.frame_count),
        }),
    };
    let dir = job.model_dir(&args.model, &[TransNetV2::FILE])?;
    let detector = ShotDetector::new(TransNetV2::from_path(&dir, &job.device)?, options)?;
    let shots_started = Instant::now();
    let bar = crate::analyze::progress_bar(quiet);
    bar.set_length(media.duration.ceil() as u64);
    bar.set_message("shots");
    let frames = FrameOptions {
        constant_rate: !args.vfr,
        ..FrameOptions::new(48, 27)
    };
    let observer = |pts: f64| {
        bar.set_position(pts as u64);
        true
    };
    let detected = FrameSource::open(input, &frames)
        .map_err(mica_scenes::ScenesError::from)
        .and_then(|source| detector.detect_source_observed(source, input, &observer));
    bar.finish_and_clear();
    let mut list = detected.with_context(|| format!("{}: shot detection", input.display()))?;
    let mut timings = Timings::default();
    timings.add("shots", shots_started.elapsed().as_secs_f64());
    if let Some(dir) = &args.thumbnails {
        let thumbs = Instant::now();
        list.write_thumbnails(input, dir, &tools)?;
        timings.add("thumbnails", thumbs.elapsed().as_secs_f64());
    }
    tracing::info!(
        "{}: {} shots, {} transitions in {} frames ({:.0} frames/s)",
        input.display(),
        list.shots.len(),
        list.transitions.len(),
        list.frames,
        list.frames as f64 / shots_started.elapsed().as_secs_f64().max(1e-9)
    );
    let analysis = Analysis {
        media,
        shots: Some(list.to_shots()),
        timings,
        ..Analysis::default()
    };
    job.finish_with(analysis, |analysis, format, sink| {
        match format {
            // The shot list itself, transitions and per-shot timecodes included.
            Format::Json => {
                let doc = ShotsDocument {
                    media: &analysis.media,
                    shots: &list,
                    timings: &analysis.timings,
                };
                serde_json::to_writer_pretty(&mut *sink, &doc)?;
                writeln!(sink)?;
            }
            format => writers::write(analysis, format, &WriterOptions::default(), sink)?,
        }
        Ok(())
    })
}
