//! Analyse one file with every task and print its subtitles, speakers and shots.
//!
//! `cargo run --release -p mica --example analyze -- FILE`

use std::path::PathBuf;
use std::sync::Arc;

use mica::{Analyzer, RunControl, Task, writers};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: analyze FILE")?
        .into();

    // Load every model once; share the analyzer between threads through an Arc.
    let analyzer = Arc::new(Analyzer::builder().tasks(Task::ALL).build()?);

    // Watch progress (a cancel token is in the same control).
    let control = RunControl {
        progress: Some(Arc::new(|p: mica::Progress| {
            eprint!(
                "\r{:?}: {:.0} / {:.0} s   ",
                p.stage, p.media_seconds, p.duration
            );
        })),
        ..RunControl::default()
    };
    let analysis = analyzer.analyze_with(&path, &control)?;
    eprintln!();

    // The same document as subtitles with speaker labels, then a summary.
    let mut out = std::io::stdout().lock();
    let options = writers::WriterOptions::default();
    writers::write(&analysis, writers::Format::Vtt, &options, &mut out)?;
    let speakers = analysis.speakers.as_deref().unwrap_or_default();
    let shots = analysis.shots.as_ref().map_or(0, |s| s.shots.len());
    println!("{} speaker turns, {shots} shots", speakers.len());
    for warning in &analysis.warnings {
        println!("warning: {warning}");
    }
    Ok(())
}
