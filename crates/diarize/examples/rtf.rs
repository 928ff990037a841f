//! Real-time factor of the whole pipeline on a 10-minute recording: real recordings (the
//! pyannote sample, JFK, LibriVox, the card-game prompts) with 1 s silences, repeated to
//! 600 s, streamed through one session as a decoder would feed it.
//!
//! `cargo run --release -p mica-diarize --example rtf [-- SECONDS]`

use std::time::Instant;

use candle_core::Device;
use mica_diarize::{DiarizeOptions, Diarizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: usize = std::env::args().nth(1).map_or(Ok(600), |s| s.parse())?;
    let files = [
        ("pyannote-sample", "sample.wav"),
        ("jfk", "jfk.wav"),
        ("librivox", "0870.wav"),
        ("cards", "001.wav"),
        ("librivox", "0880.wav"),
        ("cards", "005.wav"),
        ("librivox", "0920.wav"),
    ];
    let mut parts = Vec::new();
    for (asset, file) in files {
        let path = mica_models::ensure(asset)?.join(file);
        parts.push(mica_media::load_all(path)?.samples);
    }
    let want = seconds * 16_000;
    let mut audio = Vec::with_capacity(want);
    while audio.len() < want {
        for p in &parts {
            audio.extend_from_slice(p);
            audio.extend(std::iter::repeat_n(0.0f32, 16_000));
        }
    }
    audio.truncate(want);
    let options: DiarizeOptions = match std::env::var("MICA_DIARIZE_OPTIONS") {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => DiarizeOptions::default(),
    };
    let d = Diarizer::new(
        mica_diarize::Segmentation::from_path(
            mica_models::ensure(mica_diarize::Segmentation::ASSET)?,
            &device()?,
        )?,
        mica_diarize::SpeakerEncoder::from_path(
            mica_models::ensure(mica_diarize::SpeakerEncoder::ASSET)?,
            &device()?,
        )?,
        options,
    )?;
    let started = Instant::now();
    let mut s = d.session();
    for chunk in audio.chunks(16_000) {
        s.push(chunk)?;
    }
    let out = s.finish()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{seconds} s of audio in {secs:.1} s: RTF {:.4} ({:.1}x real time, {:.0} s per hour); \
         {} windows, {} speakers, {} turns",
        secs / seconds as f64,
        seconds as f64 / secs,
        3600.0 * secs / seconds as f64,
        out.windows,
        out.speakers.len(),
        out.turns.len()
    );
    Ok(())
}

/// `MICA_DEVICE` (auto, cpu, cuda:N; default cpu) picks the device.
fn device() -> Result<Device, Box<dyn std::error::Error>> {
    let spec: mica_core::device::DeviceSpec = std::env::var("MICA_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()?;
    Ok(spec.resolve()?)
}
