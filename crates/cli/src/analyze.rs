//! `mica analyze INPUT`: every task in one pass over the input (the engine's Analyzer).

use anyhow::{Context, Result};
use clap::Args;
use mica::{Analyzer, DiarizeOptions, Precision, Task, TranscribeOptions};
use mica_core::writers::Format;

use crate::job::{Job, JobArgs};

/// Arguments of `mica analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Tasks, comma separated: vad, asr, diarize, shots.
    #[arg(long, value_delimiter = ',', default_value = "vad,asr,diarize")]
    tasks: Vec<String>,
    /// Whisper model: a name (tiny.en, base), a directory, or hf:owner/repo.
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Whisper weights precision: f32, f16, bf16, q8 or q4k.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Spoken language code (en, es, ...), or auto to detect it.
    #[arg(long, default_value = "auto")]
    language: String,
    /// Beams at temperature 0 (1 = greedy).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// The exact number of speakers, when known.
    #[arg(long)]
    num_speakers: Option<usize>,
    /// Output format: json, srt, vtt, txt, rttm, csv or edl (csv and edl list shots).
    #[arg(long, default_value = "json")]
    format: Format,
}

/// Runs `mica analyze`.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let writes = [
        Format::Json,
        Format::Srt,
        Format::Vtt,
        Format::Txt,
        Format::Rttm,
        Format::Csv,
        Format::Edl,
    ];
    let mut tasks = Vec::new();
    let mut transcribe = TranscribeOptions::default();
    let mut diarize = DiarizeOptions::default();
    let job = Job::start("analyze", &args.job, args.format, &writes, || {
        for t in &args.tasks {
            tasks.push(t.parse::<Task>()?);
        }
        transcribe = TranscribeOptions {
            language: (args.language != "auto").then(|| args.language.clone()),
            word_timestamps: true,
            decode: mica_asr::DecodeOptions {
                beam_size: args.beam_size,
                ..mica_asr::DecodeOptions::default()
            },
            ..TranscribeOptions::default()
        };
        transcribe.validate()?;
        diarize = DiarizeOptions {
            num_speakers: args.num_speakers,
            ..DiarizeOptions::default()
        };
        Ok(diarize.validate()?)
    })?;
    let analyzer = Analyzer::builder()
        .tasks(tasks)
        .on_device(job.device.clone())
        .asr_model(&args.model)
        .precision(args.precision)
        .transcribe_options(transcribe)
        .diarize_options(diarize)
        .build()?;
    let analysis = analyzer
        .analyze(&args.job.input)
        .with_context(|| format!("{}: analysis", args.job.input.display()))?;
    job.finish(analysis)
}
