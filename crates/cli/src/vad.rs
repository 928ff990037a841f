//! `mica vad INPUT`: where speech is, with Silero VAD v6.

use anyhow::{Context, Result};
use clap::Args;
use mica::{Analyzer, SpeechOptions, Task};
use mica_core::writers::Format;

use crate::job::{Job, JobArgs};

/// Arguments of `mica vad`.
#[derive(Debug, Args)]
pub struct VadArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Speech probability at or above which a window is speech.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    threshold: f32,
    /// Silence that ends a speech region, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = milliseconds, allow_negative_numbers = true)]
    min_silence_ms: u32,
    /// Padding added to each side of a region, in milliseconds.
    #[arg(long, default_value_t = 30, value_parser = milliseconds, allow_negative_numbers = true)]
    speech_pad_ms: u32,
    /// Regions shorter than this are dropped, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = milliseconds, allow_negative_numbers = true)]
    min_speech_ms: u32,
    /// Split regions longer than this many seconds (default: no limit).
    #[arg(long, allow_negative_numbers = true)]
    max_speech_s: Option<f64>,
    /// Model name or directory.
    #[arg(long, default_value = "silero-v6")]
    model: String,
    /// Output format: json or rttm.
    #[arg(long, default_value = "json")]
    format: Format,
}

/// Runs `mica vad`.
pub fn run(args: VadArgs, quiet: bool) -> Result<()> {
    let options = SpeechOptions {
        threshold: args.threshold,
        min_silence_duration_ms: args.min_silence_ms,
        speech_pad_ms: args.speech_pad_ms,
        min_speech_duration_ms: args.min_speech_ms,
        max_speech_duration_s: args.max_speech_s,
        ..SpeechOptions::default()
    };
    let job = Job::start(
        "vad",
        &args.job,
        args.format,
        &[Format::Json, Format::Rttm],
        || Ok(options.validate()?),
    )?;
    let builder = Analyzer::builder()
        .tasks([Task::Vad])
        .vad_model(&args.model)
        .speech_options(options);
    let analysis = job
        .analyze(builder, quiet)
        .with_context(|| format!("{}: voice activity detection", args.job.input.display()))?;
    tracing::info!(
        "{}: {} speech regions in {:.1} s of audio",
        args.job.input.display(),
        analysis.speech.as_ref().map_or(0, Vec::len),
        analysis.media.duration
    );
    job.finish(analysis)
}

/// A duration in whole milliseconds, 0 or more.
fn milliseconds(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(ms) if ms < 0 => Err(format!("{ms} ms is negative; give 0 or more milliseconds")),
        Ok(ms) => u32::try_from(ms).map_err(|_| format!("{ms} ms is too large")),
        Err(_) => Err(format!("{s:?} is not a whole number of milliseconds")),
    }
}
