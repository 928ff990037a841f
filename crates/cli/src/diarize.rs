//! `mica diarize INPUT`: who spoke when (pyannote segmentation + resemblyzer d-vectors +
//! clustering), overlapped speech kept.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mica_core::document::Analysis;
use mica_core::writers::{self, Format, WriterOptions};
use mica_diarize::{DiarizeOptions, Diarizer, Method, Segmentation, SpeakerEncoder};
use mica_media::{self as media, AudioOptions, AudioStream};

/// Arguments of `mica diarize`.
#[derive(Debug, Args)]
pub struct DiarizeArgs {
    /// The media file.
    input: PathBuf,
    /// The exact number of speakers, when known.
    #[arg(long, conflicts_with_all = ["min_speakers", "max_speakers"])]
    num_speakers: Option<usize>,
    /// At least this many speakers.
    #[arg(long)]
    min_speakers: Option<usize>,
    /// At most this many speakers.
    #[arg(long)]
    max_speakers: Option<usize>,
    /// Clustering: agglomerative or spectral.
    #[arg(long, default_value = "agglomerative", value_parser = method)]
    method: Method,
    /// Cosine distance at which agglomerative clustering stops merging (higher: fewer
    /// speakers).
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// Seconds between 5 s analysis windows (smaller: slower, finer).
    #[arg(long, allow_negative_numbers = true)]
    step: Option<f64>,
    /// Segmentation model name or directory.
    #[arg(long, default_value = "pyannote-segmentation")]
    segmentation_model: String,
    /// Speaker embedding model name or directory.
    #[arg(long, default_value = "resemblyzer")]
    embedding_model: String,
    /// Output format: json or rttm.
    #[arg(long, default_value = "json")]
    format: Format,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

fn method(s: &str) -> Result<Method, String> {
    match s {
        "agglomerative" | "ahc" => Ok(Method::Agglomerative),
        "spectral" => Ok(Method::Spectral),
        other => Err(format!(
            "{other:?} is not a clustering method; use agglomerative or spectral"
        )),
    }
}

/// Runs `mica diarize`.
pub fn run(args: DiarizeArgs) -> Result<()> {
    if !matches!(args.format, Format::Json | Format::Rttm) {
        anyhow::bail!(
            "mica diarize writes json or rttm, not {}; pick one of those",
            args.format.name()
        );
    }
    let defaults = DiarizeOptions::default();
    let options = DiarizeOptions {
        num_speakers: args.num_speakers,
        min_speakers: args.min_speakers,
        max_speakers: args.max_speakers,
        method: args.method,
        threshold: args.threshold.unwrap_or(defaults.threshold),
        step: args.step.unwrap_or(defaults.step),
        ..defaults
    };
    // Bad options fail before any model or media work.
    options.validate()?;
    let started = Instant::now();
    let device = args.compute.apply()?;
    let seg_dir =
        mica_models::ModelSpec::parse(&args.segmentation_model)?.resolve(&[Segmentation::FILE])?;
    let emb_dir =
        mica_models::ModelSpec::parse(&args.embedding_model)?.resolve(&[SpeakerEncoder::FILE])?;
    let diarizer = Diarizer::new(
        Segmentation::from_path(&seg_dir, &device)?,
        SpeakerEncoder::from_path(&emb_dir, &device)?,
        options,
    )?;
    let media_info = media::describe(&args.input, &media::Tools::from_env())?;
    let mut stream = AudioStream::open_with(&args.input, &AudioOptions::default())?;
    let run_started = Instant::now();
    let out = diarizer
        .diarize_stream(&mut stream)
        .with_context(|| format!("{}: diarization", args.input.display()))?;
    let seconds = run_started.elapsed().as_secs_f64();
    tracing::info!(
        "{}: {} speakers, {} turns in {:.1} s of audio ({:.0}x real time)",
        args.input.display(),
        out.speakers.len(),
        out.turns.len(),
        out.duration,
        out.duration / seconds.max(1e-9)
    );
    let mut analysis = Analysis {
        media: media_info,
        speakers: Some(out.turns),
        ..Analysis::default()
    };
    analysis.timings.add("diarize", seconds);
    analysis.timings.total = started.elapsed().as_secs_f64();
    let mut sink = crate::open_output(args.output.as_deref())?;
    let opts = WriterOptions::default();
    match args.format {
        // Turns only (no fallback to speech regions); silence gives an empty file.
        Format::Rttm => writers::rttm::write_turns(
            &writers::rttm::file_id(&analysis, &opts),
            analysis.speakers.as_deref().unwrap_or_default(),
            &mut sink,
        )?,
        _ => writers::write(&analysis, args.format, &opts, &mut sink)?,
    }
    sink.flush()?;
    Ok(())
}
