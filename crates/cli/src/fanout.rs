//! `mica plan`, `mica run-part` and `mica merge`: one recording's analysis fanned out to
//! any engine that runs a command per index (Ray, Kubernetes indexed jobs, SageMaker batch
//! transform, Step Functions distributed map) and joined back.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use mica::{PartResult, PartSize, Plan};
use mica_core::writers::{self, Format, WriterOptions};

use crate::analyze::ModelArgs;

/// Arguments of `mica plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The media file to plan (the parts read it again: keep it where they can).
    input: PathBuf,
    /// About this many parts of equal length (none shorter than 30 s).
    #[arg(long, conflicts_with = "part_seconds")]
    parts: Option<usize>,
    /// Parts of about this many seconds (at least 30).
    #[arg(long)]
    part_seconds: Option<f64>,
    #[command(flatten)]
    models: ModelArgs,
    /// Write the plan to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// Arguments of `mica run-part`.
#[derive(Debug, Args)]
pub struct RunPartArgs {
    /// The plan `mica plan` wrote.
    plan: PathBuf,
    /// Which part to run (0 to the plan's last).
    #[arg(long)]
    index: usize,
    /// Write the part's result to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// Arguments of `mica merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The plan `mica plan` wrote.
    plan: PathBuf,
    /// Every part's result, each once.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// Output format: json, srt, vtt, txt, rttm, csv or edl.
    #[arg(long, default_value = "json")]
    format: Format,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `mica plan`: the VAD only, over the whole input.
pub fn plan(args: PlanArgs) -> Result<()> {
    let size = match (args.parts, args.part_seconds) {
        (Some(n), _) => PartSize::Count(n),
        (None, Some(s)) => PartSize::Seconds(s),
        (None, None) => PartSize::Seconds(mica::DEFAULT_PART_SECONDS),
    };
    let device = args.compute.apply()?;
    let analyzer = args.models.builder()?.on_device(device).build()?;
    let mut plan = analyzer
        .plan(&args.input, size)
        .with_context(|| format!("{}: planning", args.input.display()))?;
    plan.settings = args.models.to_settings();
    tracing::info!(
        "{}: {} parts, plan {}",
        args.input.display(),
        plan.parts.len(),
        plan.id
    );
    write_json(&plan, args.output.as_deref())
}

/// Runs `mica run-part`: one index of a plan, with the plan's own settings.
pub fn run_part(args: RunPartArgs, quiet: bool) -> Result<()> {
    let plan = read_plan(&args.plan)?;
    let device = args.compute.apply()?;
    let analyzer = analyzer_of(&plan)?.on_device(device).build()?;
    let bar = crate::analyze::progress_bar(quiet);
    let control = crate::analyze::bar_control(&bar);
    let result = analyzer.run_part_with(&plan, args.index, &control);
    bar.finish_and_clear();
    let result = result.with_context(|| format!("part {} of plan {}", args.index, plan.id))?;
    write_json(&result, args.output.as_deref())
}

/// Runs `mica merge`: the parts' results into the analysis document.
pub fn merge(args: MergeArgs) -> Result<()> {
    let plan = read_plan(&args.plan)?;
    // Clustering and stitching need no network: only the tasks' settings matter, so no
    // model is loaded beyond what the analyzer of these tasks holds.
    let analyzer = analyzer_of(&plan)?.device(mica::DeviceSpec::Cpu).build()?;
    let mut results = Vec::with_capacity(args.parts.len());
    for path in &args.parts {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let part: PartResult = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a part's result", path.display()))?;
        results.push(part);
    }
    let analysis = analyzer
        .merge(&plan, results)
        .with_context(|| format!("merging plan {}", plan.id))?;
    let mut sink = crate::open_output(args.output.as_deref())?;
    writers::write(&analysis, args.format, &WriterOptions::default(), &mut sink)?;
    sink.flush()?;
    Ok(())
}

fn read_plan(path: &Path) -> Result<Plan> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a plan", path.display()))
}

/// The builder of the analyzer the plan was made with.
fn analyzer_of(plan: &Plan) -> Result<mica::AnalyzerBuilder> {
    ModelArgs::from_settings(&plan.settings)?.builder()
}

fn write_json<T: serde::Serialize>(value: &T, output: Option<&Path>) -> Result<()> {
    let mut sink = crate::open_output(output)?;
    serde_json::to_writer(&mut sink, value)?;
    writeln!(sink)?;
    sink.flush()?;
    Ok(())
}
