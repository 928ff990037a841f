//! `mica analyze INPUT...`: every task in one pass over each input (the engine's
//! Analyzer, loaded once for all of them), to standard output, a file, or a sidecar set per
//! input in a directory.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mica::{Analysis, Analyzer, DiarizeOptions, Precision, RunControl, Task, TranscribeOptions};
use mica_core::writers::{self, Format, WriterOptions};

/// Arguments of `mica analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The media files (any container and codec symphonia or ffmpeg reads).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// Parts worked on at once (0: one per CPU thread, each single-threaded; 2 on a GPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Longest part in seconds: the audio is cut in pauses into parts of about this
    /// length (shorter when that gives every worker one), at least 30.
    #[arg(long, default_value_t = mica::DEFAULT_PART_SECONDS)]
    part_seconds: f64,
    /// Output format: json, srt, vtt, txt, rttm, csv or edl (csv and edl list shots).
    #[arg(long, default_value = "json")]
    format: Format,
    /// Write to FILE instead of standard output (one input only).
    #[arg(short, long, value_name = "FILE", conflicts_with = "out_dir")]
    output: Option<PathBuf>,
    /// Write each input's sidecar set into DIR: NAME.analysis.json and, where the tasks
    /// give them, NAME.srt, NAME.vtt, NAME.txt, NAME.rttm, NAME.shots.csv, NAME.edl.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// What to analyse and with which models: `analyze` and `plan` take these, and a plan
/// keeps them for its parts.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
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
}

impl ModelArgs {
    /// The tasks named.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        Ok(self
            .tasks
            .iter()
            .map(|t| t.parse::<Task>())
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The Whisper model named.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// An analyzer builder with these tasks, models and options.
    pub fn builder(&self) -> Result<mica::AnalyzerBuilder> {
        let transcribe = TranscribeOptions {
            language: (self.language != "auto").then(|| self.language.clone()),
            word_timestamps: true,
            decode: mica_asr::DecodeOptions {
                beam_size: self.beam_size,
                ..mica_asr::DecodeOptions::default()
            },
            ..TranscribeOptions::default()
        };
        let diarize = DiarizeOptions {
            num_speakers: self.num_speakers,
            ..DiarizeOptions::default()
        };
        Ok(Analyzer::builder()
            .tasks(self.tasks()?)
            .asr_model(&self.model)
            .precision(self.precision)
            .transcribe_options(transcribe)
            .diarize_options(diarize))
    }

    /// These options as a plan keeps them.
    pub fn to_settings(&self) -> BTreeMap<String, String> {
        let mut s = BTreeMap::new();
        s.insert("tasks".into(), self.tasks.join(","));
        s.insert("model".into(), self.model.clone());
        s.insert("precision".into(), self.precision.to_string());
        s.insert("language".into(), self.language.clone());
        s.insert("beam_size".into(), self.beam_size.to_string());
        if let Some(n) = self.num_speakers {
            s.insert("num_speakers".into(), n.to_string());
        }
        s
    }

    /// The options a plan kept.
    pub fn from_settings(s: &BTreeMap<String, String>) -> Result<ModelArgs> {
        let get = |k: &str| {
            s.get(k)
                .cloned()
                .with_context(|| format!("the plan has no {k} setting"))
        };
        Ok(ModelArgs {
            tasks: get("tasks")?.split(',').map(str::to_string).collect(),
            model: get("model")?,
            precision: get("precision")?
                .parse()
                .map_err(|e| anyhow::anyhow!("the plan's precision: {e}"))?,
            language: get("language")?,
            beam_size: get("beam_size")?.parse().context("the plan's beam size")?,
            num_speakers: match s.get("num_speakers") {
                Some(n) => Some(n.parse().context("the plan's speaker count")?),
                None => None,
            },
        })
    }
}

/// Runs `mica analyze`.
pub fn run(args: AnalyzeArgs, quiet: bool) -> Result<()> {
    // Every argument is checked before any model is loaded or media opened.
    if args.inputs.len() > 1 && args.out_dir.is_none() {
        anyhow::bail!(
            "{} inputs need --out-dir DIR (one sidecar set per input); -o and standard \
             output take one",
            args.inputs.len()
        );
    }
    let tasks = args.models.tasks()?;
    let needs = args.format.needs();
    if !needs.is_empty()
        && !needs
            .iter()
            .any(|p| tasks.iter().any(|t| t.name() == p.task()))
    {
        let names: Vec<&str> = needs.iter().map(|p| p.task()).collect();
        anyhow::bail!(
            "--format {} needs the {} task; add it to --tasks",
            args.format.name(),
            names.join(" or ")
        );
    }
    let device = args.compute.apply()?;
    let analyzer = args
        .models
        .builder()?
        .on_device(device)
        .workers(args.workers)
        .part_seconds(args.part_seconds)
        .build()?;
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let [input] = args.inputs.as_slice() else {
        let dir = args
            .out_dir
            .as_deref()
            .expect("checked above: many inputs need a directory");
        return analyze_many(&analyzer, &args.inputs, dir, quiet);
    };
    let analysis = analyze_one(&analyzer, input, quiet)
        .with_context(|| format!("{}: analysis", input.display()))?;
    match &args.out_dir {
        Some(dir) => {
            let written = write_sidecars(&analysis, input, dir)?;
            tracing::info!(
                "{}: wrote {} into {}",
                input.display(),
                written.join(", "),
                dir.display()
            );
        }
        None => {
            let mut sink = crate::open_output(args.output.as_deref())?;
            writers::write(&analysis, args.format, &WriterOptions::default(), &mut sink)?;
            sink.flush()?;
        }
    }
    Ok(())
}

/// Many inputs in one batch on the shared pool, each input's sidecar set written as it
/// finishes; a failed input is reported and the others go on.
fn analyze_many(analyzer: &Analyzer, inputs: &[PathBuf], dir: &Path, quiet: bool) -> Result<()> {
    // Two inputs with one file stem would write the same sidecar names.
    let mut stems = BTreeMap::new();
    for input in inputs {
        let stem = sidecar_stem(input);
        if let Some(other) = stems.insert(stem.clone(), input) {
            anyhow::bail!(
                "{} and {} would both write {stem}.* into {}",
                other.display(),
                input.display(),
                dir.display()
            );
        }
    }
    let bar = progress_bar(quiet);
    bar.set_length(inputs.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("[{bar:40}] {pos}/{len} inputs ({eta}) {msg}") {
        bar.set_style(style);
    }
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let done = |i: usize, result: Result<Analysis, mica::Error>| {
        let input = &inputs[i];
        let written = result
            .map_err(anyhow::Error::from)
            .and_then(|analysis| write_sidecars(&analysis, input, dir));
        match written {
            Ok(files) => tracing::info!(
                "{}: wrote {} into {}",
                input.display(),
                files.join(", "),
                dir.display()
            ),
            Err(e) => {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                bar.suspend(|| {
                    tracing::error!("{}: {}", input.display(), crate::one_line(&e));
                });
            }
        }
        bar.inc(1);
    };
    analyzer.analyze_batch(inputs, &RunControl::default(), &done);
    bar.finish_and_clear();
    match failed.into_inner() {
        0 => Ok(()),
        n => anyhow::bail!("{n} of {} inputs failed (see above)", inputs.len()),
    }
}

/// The name a sidecar set is written under: the input's file stem.
fn sidecar_stem(input: &Path) -> String {
    input
        .file_stem()
        .map_or_else(|| "input".into(), |s| s.to_string_lossy().into_owned())
}

/// One input, with a progress bar on a terminal.
pub(crate) fn analyze_one(analyzer: &Analyzer, input: &Path, quiet: bool) -> Result<Analysis> {
    let bar = progress_bar(quiet);
    let control = bar_control(&bar);
    let analysis = analyzer.analyze_with(input, &control);
    bar.finish_and_clear();
    Ok(analysis?)
}

/// A run control that moves `bar`.
pub(crate) fn bar_control(bar: &ProgressBar) -> RunControl {
    RunControl {
        progress: Some({
            let bar = bar.clone();
            // Stages run side by side (decode, the workers' Whisper, shots): the bar shows
            // the one furthest behind, the message each stage's share.
            let stages = std::sync::Mutex::new(Vec::<(mica::Stage, f64)>::new());
            Arc::new(move |p: mica::Progress| {
                let mut stages = stages.lock().unwrap_or_else(|e| e.into_inner());
                match stages.iter_mut().find(|(s, _)| *s == p.stage) {
                    Some(entry) => entry.1 = p.media_seconds,
                    None => stages.push((p.stage, p.media_seconds)),
                }
                let behind = stages.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
                let whole = p.duration.max(p.media_seconds).max(1e-9);
                bar.set_length(whole.ceil() as u64);
                bar.set_position(behind as u64);
                let shares: Vec<String> = stages
                    .iter()
                    .map(|(s, done)| {
                        let name = format!("{s:?}").to_lowercase();
                        format!("{name} {:.0}%", (done / whole * 100.0).min(100.0))
                    })
                    .collect();
                bar.set_message(shares.join(" "));
            })
        }),
        ..RunControl::default()
    }
}

/// A progress bar in media seconds on standard error, hidden when it is not a terminal
/// or `quiet` is set.
pub(crate) fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        None,
        if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("[{bar:40}] {pos}/{len} s ({eta}) {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Writes `analysis`'s sidecar set for `input` into `dir`: every file is written into a
/// temporary directory there first and moved into place only when all are written, so a
/// failure leaves none of them. Returns the file names.
fn write_sidecars(analysis: &Analysis, input: &Path, dir: &Path) -> Result<Vec<String>> {
    let stem = sidecar_stem(input);
    let mut files = vec![(format!("{stem}.analysis.json"), Format::Json)];
    if analysis.transcript.is_some() {
        for format in [Format::Srt, Format::Vtt, Format::Txt] {
            files.push((format!("{stem}.{}", format.extension()), format));
        }
    }
    if analysis.speakers.is_some() || analysis.speech.is_some() {
        files.push((format!("{stem}.rttm"), Format::Rttm));
    }
    if analysis.shots.is_some() {
        files.push((format!("{stem}.shots.csv"), Format::Csv));
        files.push((format!("{stem}.edl"), Format::Edl));
    }
    let work = tempfile::Builder::new()
        .prefix(".mica-sidecars-")
        .tempdir_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    for (name, format) in &files {
        let path = work.path().join(name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {name}"))?,
        );
        writers::write(analysis, *format, &WriterOptions::default(), &mut file)
            .with_context(|| format!("writing {name}"))?;
        file.flush()?;
    }
    for (name, _) in &files {
        std::fs::rename(work.path().join(name), dir.join(name))
            .with_context(|| format!("moving {name} into {}", dir.display()))?;
    }
    Ok(files.into_iter().map(|(name, _)| name).collect())
}
