//! `mica`: broadcast audio and video to time-coded data. A thin shell over the library
//! crates: it parses arguments, calls them, and writes what they return.

mod analyze;
mod clips;
mod diarize;
mod fanout;
mod job;
mod live;
mod models;
mod probe;
mod serve;
mod shots;
mod transcribe;
mod vad;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Speech, speakers and shots from broadcast audio and video.
#[derive(Debug, Parser)]
#[command(
    name = "mica",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  mica models fetch
  mica analyze news.mp4 --tasks vad,asr,diarize,shots --out-dir out/
  mica transcribe interview.wav --model base --format srt -o interview.srt
  mica serve --port 8080

Exit codes:
  0  success
  1  the job failed: bad media, unknown model, a failed model or device (the last line
     of standard error, `error: ...`, says what)
  2  bad arguments (unknown flag, missing input, invalid value)

Environment: MICA_MODELS, MICA_SAMPLES, MICA_PACKAGES (where models and media are kept),
MICA_LOG (log filter, e.g. debug), MICA_CPU_TIER (portable, avx2, avx512, vnni)."
)]
struct Cli {
    /// Only print errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch, list and verify models and test media.
    #[command(after_help = "Examples:
  mica models list
  mica models fetch              (every model and test recording)
  mica models fetch tiny.en base
  mica models verify")]
    Models(models::ModelsArgs),
    /// Describe an input and check that every sample and frame decodes.
    #[command(after_help = "Examples:
  mica probe news.mp4
  mica probe archive.mxf --no-decode -o probe.json")]
    Probe(probe::ProbeArgs),
    /// Find where speech is (Silero VAD v6).
    #[command(after_help = "Examples:
  mica vad interview.wav
  mica vad news.mp4 --threshold 0.6 --format rttm -o speech.rttm")]
    Vad(vad::VadArgs),
    /// Find shot boundaries and transitions (TransNetV2).
    #[command(after_help = "Examples:
  mica shots film.mp4 --format csv -o shots.csv
  mica shots film.mp4 --format edl --thumbnails thumbs/")]
    Shots(shots::ShotsArgs),
    /// Find who spoke when (speaker diarization, overlap-aware).
    #[command(after_help = "Examples:
  mica diarize debate.wav --format rttm -o debate.rttm
  mica diarize panel.mp4 --min-speakers 2 --max-speakers 6")]
    Diarize(diarize::DiarizeArgs),
    /// Every task in one pass: speech, words, speakers and shots (the engine's Analyzer).
    #[command(after_help = "Examples:
  mica analyze news.mp4 --format srt -o news.srt
  mica analyze news.mp4 --tasks vad,asr,diarize,shots --out-dir out/
  mica analyze a.mp4 b.mp4 c.wav --model base --precision q8 --out-dir out/")]
    Analyze(analyze::AnalyzeArgs),
    /// Speech to text with Whisper (tiny.en, base, any Hugging Face Whisper checkpoint).
    #[command(after_help = "Examples:
  mica transcribe jfk.wav
  mica transcribe show.mp4 --model base --language fr --format vtt -o show.vtt
  mica transcribe long.wav --vad --precision q8 --format txt")]
    Transcribe(transcribe::TranscribeArgs),
    /// Cut one input into parts for `run-part` elsewhere (writes plan.json).
    #[command(after_help = "Examples:
  mica plan film.mp4 --parts 8 -o plan.json
  mica run-part plan.json --index 3 -o part-3.json    (on any machine, any order)
  mica merge plan.json part-*.json --format srt -o film.srt")]
    Plan(fanout::PlanArgs),
    /// Analyse one part of a plan (writes its result for `merge`).
    #[command(after_help = "Examples:
  mica run-part plan.json --index 0 -o part-0.json
  mica run-part plan.json --index \"$JOB_COMPLETION_INDEX\" -o \"part-$JOB_COMPLETION_INDEX.json\"")]
    RunPart(fanout::RunPartArgs),
    /// Join every part's result of a plan into the analysis document.
    #[command(after_help = "Examples:
  mica merge plan.json part-*.json -o film.analysis.json
  mica merge plan.json part-*.json --format rttm -o film.rttm")]
    Merge(fanout::MergeArgs),
    /// Serve the analysis over HTTP: SageMaker's bring-your-own-container contract
    /// (/ping, /invocations, /execution-parameters) and /metrics.
    #[command(after_help = "Examples:
  mica serve                                  (0.0.0.0:8080, or SAGEMAKER_BIND_TO_PORT)
  mica serve --tasks vad,asr,diarize,shots --model base --workers 2
  curl -H 'Content-Type: audio/wav' -H 'Accept: text/vtt' --data-binary @jfk.wav \\
    localhost:8080/invocations")]
    Serve(serve::ServeArgs),
    /// Captions of a live stream as they settle (JSON lines of partial and final captions).
    #[command(after_help = "Examples:
  mica live srt://0.0.0.0:9000?mode=listener
  mica live udp://127.0.0.1:5000 --format vtt -o live.vtt
  mica live news.mp4 --realtime --format txt      (a file played at its own speed)")]
    Live(live::LiveArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(cli.quiet, matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Models(args) => models::run(args),
        Command::Probe(args) => probe::run(args, cli.quiet),
        Command::Vad(args) => vad::run(args, cli.quiet),
        Command::Shots(args) => shots::run(args, cli.quiet),
        Command::Diarize(args) => diarize::run(args, cli.quiet),
        Command::Transcribe(args) => transcribe::run(args, cli.quiet),
        Command::Analyze(args) => analyze::run(args, cli.quiet),
        Command::Plan(args) => fanout::plan(args),
        Command::RunPart(args) => fanout::run_part(args, cli.quiet),
        Command::Merge(args) => fanout::merge(args),
        Command::Serve(args) => serve::run(args),
        Command::Live(args) => live::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: scripts read the last line of stderr.
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap writes them; a usage error is one `error: ...` line
/// (what was wrong, without clap's usage block), exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The first paragraph is the error (a list of missing arguments continues on indented
    // lines); the usage block and tips follow a blank line.
    let text = e.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    eprintln!("error: {first} (see --help)");
    ExitCode::from(2)
}

/// Where models run; every command that runs one takes these.
#[derive(Debug, clap::Args)]
struct ComputeArgs {
    /// Device: auto, cpu, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: mica_core::device::DeviceSpec,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

impl ComputeArgs {
    /// Fixes the thread count and opens the device.
    fn apply(&self) -> anyhow::Result<candle_core::Device> {
        Ok(mica_core::device::ComputeOptions {
            device: self.device,
            threads: self.threads,
        }
        .apply()?)
    }
}

/// Standard output, or FILE when `-o FILE` was given.
fn open_output(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    use anyhow::Context;
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    })
}

fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// Logs to standard error; a server not writing to a terminal logs JSON lines with
/// times, as log collectors (CloudWatch) read them.
fn init_logging(quiet: bool, server: bool) {
    // symphonia logs probe misses (an AVI is "not a WAVE") as errors; mica reports what it
    // does about them itself.
    let default = if quiet {
        "warn,symphonia=off"
    } else {
        "info,symphonia=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MICA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let terminal = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if server && !terminal {
        logs.json().init();
    } else if server {
        logs.init();
    } else {
        logs.with_ansi(terminal).without_time().init();
    }
}
