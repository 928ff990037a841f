//! `mica diarize INPUT`: who spoke when (pyannote segmentation + resemblyzer d-vectors +
//! clustering), overlapped speech kept.

use anyhow::{Context, Result};
use clap::Args;
use mica::{Analyzer, Task};
use mica_core::writers::{self, Format, WriterOptions};
use mica_diarize::{DiarizeOptions, Method};

use crate::job::{Job, JobArgs};

/// Arguments of `mica diarize`.
#[derive(Debug, Args)]
pub struct DiarizeArgs {
    #[command(flatten)]
    job: JobArgs,
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
pub fn run(args: DiarizeArgs, quiet: bool) -> Result<()> {
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
    let writes = [Format::Json, Format::Rttm];
    let job = Job::start("diarize", &args.job, args.format, &writes, || {
        Ok(options.validate()?)
    })?;
    let builder = Analyzer::builder()
        .tasks([Task::Diarize])
        .diarization_models(&args.segmentation_model, &args.embedding_model)
        .diarize_options(options);
    let analysis = job
        .analyze(builder, quiet)
        .with_context(|| format!("{}: diarization", args.job.input.display()))?;
    if let Some(turns) = &analysis.speakers {
        let seconds = analysis
            .timings
            .stages
            .get("diarize")
            .copied()
            .unwrap_or(0.0);
        let speakers: std::collections::BTreeSet<&str> =
            turns.iter().map(|t| t.speaker.as_str()).collect();
        tracing::info!(
            "{}: {} speakers, {} turns in {:.1} s of audio ({:.0}x real time)",
            args.job.input.display(),
            speakers.len(),
            turns.len(),
            analysis.media.duration,
            analysis.media.duration / seconds.max(1e-9)
        );
    }
    job.finish_with(analysis, |analysis, format, sink| {
        let opts = WriterOptions::default();
        match format {
            // Turns only (no fallback to speech regions); silence gives an empty file.
            Format::Rttm => writers::rttm::write_turns(
                &writers::rttm::file_id(analysis, &opts),
                analysis.speakers.as_deref().unwrap_or_default(),
                sink,
            )?,
            _ => writers::write(analysis, format, &opts, sink)?,
        }
        Ok(())
    })
}
