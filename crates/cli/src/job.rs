//! What every model command shares: the input, output and compute arguments, and the run
//! skeleton around the engine (format check, options checked before any work, device, the
//! analysis with its progress bar, timings, writing the document).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use mica_core::document::Analysis;
use mica_core::writers::{self, Format, WriterOptions};

/// The input, the output file and where models run: every model command takes these.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The media file (any container and codec symphonia or ffmpeg reads).
    pub input: PathBuf,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub compute: crate::ComputeArgs,
}

/// One run of a model command, from its checks to its document.
pub struct Job<'a> {
    args: &'a JobArgs,
    format: Format,
    started: Instant,
    /// Where the models run.
    pub device: Device,
}

impl<'a> Job<'a> {
    /// Refuses a `format` that `command` does not write and options that `validate`
    /// rejects, before any model or media work; then fixes the threads and opens the
    /// device.
    pub fn start(
        command: &str,
        args: &'a JobArgs,
        format: Format,
        writes: &[Format],
        validate: impl FnOnce() -> Result<()>,
    ) -> Result<Job<'a>> {
        if !writes.contains(&format) {
            let names: Vec<&str> = writes.iter().map(|f| f.name()).collect();
            let list = match names.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => "nothing".into(),
            };
            anyhow::bail!(
                "mica {command} writes {list}, not {}; pick one of those",
                format.name()
            );
        }
        validate()?;
        let started = Instant::now();
        let device = args.compute.apply()?;
        Ok(Job {
            args,
            format,
            started,
            device,
        })
    }

    /// The directory of the model `spec` (a name, a directory or `hf:owner/repo`), fetched
    /// when missing, holding `files`.
    pub fn model_dir(&self, spec: &str, files: &[&str]) -> Result<PathBuf> {
        Ok(mica_models::ModelSpec::parse(spec)?.resolve(files)?)
    }

    /// Runs `builder`'s analyzer on the job's device over the input, with the engine's
    /// progress bar on a terminal.
    pub fn analyze(&self, builder: mica::AnalyzerBuilder, quiet: bool) -> Result<Analysis> {
        let analyzer = builder.on_device(self.device.clone()).build()?;
        crate::analyze::analyze_one(&analyzer, &self.args.input, quiet)
    }

    /// Seconds since the job started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Sets the total time and writes `analysis` in the job's format.
    pub fn finish(self, analysis: Analysis) -> Result<()> {
        self.finish_with(analysis, |analysis, format, sink| {
            Ok(writers::write(
                analysis,
                format,
                &WriterOptions::default(),
                sink,
            )?)
        })
    }

    /// Sets the total time and writes `analysis` with `write` (for a command whose
    /// document differs from the shared writers').
    pub fn finish_with(
        self,
        mut analysis: Analysis,
        write: impl FnOnce(&Analysis, Format, &mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        analysis.timings.total = self.elapsed();
        let mut sink = crate::open_output(self.args.output.as_deref())?;
        write(&analysis, self.format, &mut sink)?;
        sink.flush()?;
        Ok(())
    }
}
