//! `mica vad INPUT`: where speech is, with Silero VAD v6.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mica_core::document::Analysis;
use mica_core::writers::{self, Format, WriterOptions};
use mica_media::{self as media, AudioOptions, AudioStream};
use mica_vad::{SileroVad, SpeechOptions, Vad};

/// Arguments of `mica vad`.
#[derive(Debug, Args)]
pub struct VadArgs {
    /// The media file.
    input: PathBuf,
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
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// Runs `mica vad`.
pub fn run(args: VadArgs) -> Result<()> {
    if !matches!(args.format, Format::Json | Format::Rttm) {
        anyhow::bail!(
            "mica vad writes json or rttm, not {}; pick one of those",
            args.format.name()
        );
    }
    let options = SpeechOptions {
        threshold: args.threshold,
        min_silence_duration_ms: args.min_silence_ms,
        speech_pad_ms: args.speech_pad_ms,
        min_speech_duration_ms: args.min_speech_ms,
        max_speech_duration_s: args.max_speech_s,
        ..SpeechOptions::default()
    };
    // Bad options fail before any model or media work.
    options.validate()?;
    let started = Instant::now();
    let device = args.compute.apply()?;
    let dir = mica_models::ModelSpec::parse(&args.model)?.resolve(&[SileroVad::FILE])?;
    let model = SileroVad::from_path(&dir, &device)?;
    let vad = Vad::new(model, options)?;
    let media_info = media::describe(&args.input, &media::Tools::from_env())?;
    let mut stream = AudioStream::open_with(&args.input, &AudioOptions::default())?;
    let vad_started = Instant::now();
    let out = vad
        .detect_audio(&mut stream, false)
        .with_context(|| format!("{}: voice activity detection", args.input.display()))?;
    let mut analysis = Analysis {
        media: media_info,
        speech: Some(out.regions()),
        ..Analysis::default()
    };
    analysis
        .timings
        .add("vad", vad_started.elapsed().as_secs_f64());
    analysis.timings.total = started.elapsed().as_secs_f64();
    tracing::info!(
        "{}: {} speech regions in {:.1} s of audio",
        args.input.display(),
        out.segments.len(),
        out.duration()
    );
    let mut sink = crate::open_output(args.output.as_deref())?;
    writers::write(&analysis, args.format, &WriterOptions::default(), &mut sink)?;
    sink.flush()?;
    Ok(())
}

/// A duration in whole milliseconds, 0 or more.
fn milliseconds(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(ms) if ms < 0 => Err(format!("{ms} ms is negative; give 0 or more milliseconds")),
        Ok(ms) => u32::try_from(ms).map_err(|_| format!("{ms} ms is too large")),
        Err(_) => Err(format!("{s:?} is not a whole number of milliseconds")),
    }
}
