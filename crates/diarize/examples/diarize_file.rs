//! Diarizes one file and prints the turns as RTTM lines on stdout; with a reference RTTM,
//! also the DER (collar 0 and 0.25 s) on stderr. Options as JSON in `MICA_DIARIZE_OPTIONS`.
//!
//! `cargo run --release -p mica-diarize --example diarize_file -- AUDIO [REFERENCE.rttm]`

use std::time::Instant;

use candle_core::Device;
use mica_core::document::SpeakerTurn;
use mica_diarize::{DiarizeOptions, Diarizer, der::der};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MICA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let audio = args
        .first()
        .ok_or("usage: diarize_file AUDIO [REFERENCE.rttm]")?;
    let options: DiarizeOptions = match std::env::var("MICA_DIARIZE_OPTIONS") {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => DiarizeOptions::default(),
    };
    let diarizer = Diarizer::new(
        mica_diarize::Segmentation::from_path(
            mica_models::ensure(mica_diarize::Segmentation::ASSET)?,
            &Device::Cpu,
        )?,
        mica_diarize::SpeakerEncoder::from_path(
            mica_models::ensure(mica_diarize::SpeakerEncoder::ASSET)?,
            &Device::Cpu,
        )?,
        options,
    )?;
    let started = Instant::now();
    let mut stream = mica_media::AudioStream::open(audio)?;
    let out = diarizer.diarize_stream(&mut stream)?;
    let secs = started.elapsed().as_secs_f64();
    for t in &out.turns {
        println!(
            "SPEAKER file 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            t.start,
            t.end - t.start,
            t.speaker
        );
    }
    eprintln!(
        "{:.1} s of audio in {secs:.2} s (RTF {:.4}, {:.0}x real time): {} speakers, {} turns",
        out.duration,
        secs / out.duration.max(1e-9),
        out.duration / secs.max(1e-9),
        out.speakers.len(),
        out.turns.len()
    );
    if let Some(reference) = args.get(1) {
        let reference: Vec<SpeakerTurn> = std::fs::read_to_string(reference)?
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let start: f64 = f.get(3)?.parse().ok()?;
                let dur: f64 = f.get(4)?.parse().ok()?;
                Some(SpeakerTurn {
                    start,
                    end: start + dur,
                    speaker: f.get(7)?.to_string(),
                })
            })
            .collect();
        for collar in [0.0, 0.25] {
            let d = der(&reference, &out.turns, collar);
            eprintln!(
                "DER collar {collar}: {:.2}% (missed {:.2} s, false alarm {:.2} s, confusion {:.2} s of {:.2} s)",
                100.0 * d.der,
                d.missed,
                d.false_alarm,
                d.confusion,
                d.total
            );
        }
    }
    Ok(())
}
