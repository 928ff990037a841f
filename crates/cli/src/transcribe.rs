//! `mica transcribe INPUT`: speech to text with Whisper.

use anyhow::{Context, Result};
use clap::Args;
use mica::Analyzer;
use mica_asr::{Precision, Task, TranscribeOptions};
use mica_core::writers::Format;

use crate::job::{Job, JobArgs};

/// Arguments of `mica transcribe`.
#[derive(Debug, Args)]
pub struct TranscribeArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Model: a name (tiny.en, base), a directory, or hf:owner/repo.
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Spoken language code (en, es, ...), or auto to detect it.
    #[arg(long, default_value = "auto")]
    language: String,
    /// transcribe, or translate into English (multilingual models).
    #[arg(long, default_value = "transcribe")]
    task: String,
    /// VAD-batched mode: decode the speech regions found by Silero VAD in batches.
    #[arg(long)]
    vad: bool,
    /// Chunks decoded together in the VAD-batched mode.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Per-word timings.
    #[arg(long)]
    word_timestamps: bool,
    /// Beams at temperature 0 (1 = greedy).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Temperatures tried in turn, comma separated (a single 0 disables the fallback).
    #[arg(
        long,
        default_value = "0,0.2,0.4,0.6,0.8,1.0",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    temperature: Vec<f32>,
    /// Text that precedes the audio (names, spelling, style).
    #[arg(long)]
    initial_prompt: Option<String>,
    /// Do not prompt each window with the previous text.
    #[arg(long)]
    no_condition_on_previous_text: bool,
    /// Weights precision: f32, f16, bf16, q8 or q4k.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Output format: json, srt, vtt or txt.
    #[arg(long, default_value = "json")]
    format: Format,
}

/// Runs `mica transcribe`.
pub fn run(args: TranscribeArgs, quiet: bool) -> Result<()> {
    let writes = [Format::Json, Format::Srt, Format::Vtt, Format::Txt];
    // The task parses inside the checks, so a bad one fails before any work too.
    let mut options = TranscribeOptions::default();
    let job = Job::start("transcribe", &args.job, args.format, &writes, || {
        options = TranscribeOptions {
            language: match args.language.as_str() {
                "auto" => None,
                code => Some(code.to_string()),
            },
            task: args.task.parse::<Task>()?,
            vad: args.vad,
            batch_size: args.batch_size,
            word_timestamps: args.word_timestamps,
            initial_prompt: args.initial_prompt.clone(),
            condition_on_previous_text: !args.no_condition_on_previous_text,
            decode: mica_asr::DecodeOptions {
                beam_size: args.beam_size,
                temperatures: args.temperature.clone(),
                ..mica_asr::DecodeOptions::default()
            },
            ..TranscribeOptions::default()
        };
        Ok(options.validate()?)
    })?;
    let builder = Analyzer::builder()
        .tasks([mica::Task::Asr])
        .asr_model(&args.model)
        .precision(args.precision)
        .transcribe_options(options);
    let analysis = job
        .analyze(builder, quiet)
        .with_context(|| format!("{}: transcription", args.job.input.display()))?;
    if let Some(transcript) = &analysis.transcript {
        let asr_seconds = analysis.timings.stages.get("asr").copied().unwrap_or(0.0);
        tracing::info!(
            "{}: {} segments from {:.1} s of audio in {:.1} s ({:.1}x real time)",
            args.job.input.display(),
            transcript.segments.len(),
            transcript.duration,
            asr_seconds,
            transcript.duration / asr_seconds.max(1e-9)
        );
    }
    job.finish(analysis)
}
