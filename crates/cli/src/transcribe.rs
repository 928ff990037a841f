//! `mica transcribe INPUT`: speech to text with Whisper.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mica_asr::{Precision, Task, TranscribeOptions, Transcriber};
use mica_core::document::Analysis;
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
pub fn run(args: TranscribeArgs) -> Result<()> {
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
    let dir = job.model_dir(
        &args.model,
        &["config.json", "model.safetensors", "tokenizer.json"],
    )?;
    let mut transcriber = Transcriber::load(&dir, &job.device, args.precision)
        .with_context(|| format!("loading {}", args.model))?;
    if args.vad {
        let vad_dir = job.model_dir(mica_vad::SileroVad::ASSET, &[mica_vad::SileroVad::FILE])?;
        let vad = mica_vad::SileroVad::from_path(&vad_dir, &job.device)?;
        transcriber = transcriber.with_vad(vad);
    }
    let media = job.describe()?;
    let stream = job.audio()?;
    let asr_started = Instant::now();
    let transcript = transcriber
        .transcribe_stream(stream, &options)
        .with_context(|| format!("{}: transcription", args.job.input.display()))?;
    let asr_seconds = asr_started.elapsed().as_secs_f64();
    tracing::info!(
        "{}: {} segments from {:.1} s of audio in {:.1} s ({:.1}x real time)",
        args.job.input.display(),
        transcript.segments.len(),
        transcript.duration,
        asr_seconds,
        transcript.duration / asr_seconds.max(1e-9)
    );
    let mut analysis = Analysis {
        media,
        transcript: Some(transcript),
        ..Analysis::default()
    };
    analysis.timings.add("asr", asr_seconds);
    job.finish(analysis)
}
