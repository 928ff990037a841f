//! Memory stays flat while streaming a 3-hour file. One test in this file so the process
//! (and its peak RSS) belongs to it alone.

use std::path::Path;
use std::time::Instant;

use mica_core::process::reset_peak_rss as reset_peak;
use mica_media::{AudioOptions, AudioStream, Backend, BackendChoice, SAMPLE_RATE};

const RATE: u32 = 22_050;
const HOURS: u64 = 3;
const MB: f64 = 1024.0 * 1024.0;
/// The most peak RSS may grow while decoding the whole file.
const BUDGET: u64 = 64 << 20;

/// Streams a sine to a 16-bit mono wav without holding it in memory.
fn write_long_wav(path: &Path, frames: u64) -> Result<(), Box<dyn std::error::Error>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec)?;
    let step = 2.0 * std::f64::consts::PI * 440.0 / f64::from(RATE);
    let block = 1u64 << 20;
    let mut written = 0u64;
    while written < frames {
        let n = block.min(frames - written) as u32;
        let mut out = writer.get_i16_writer(n);
        for i in 0..u64::from(n) {
            let phase = ((written + i) as f64 * step) % (2.0 * std::f64::consts::PI);
            out.write_sample((phase.sin() * 10_000.0) as i16);
        }
        out.flush()?;
        written += u64::from(n);
    }
    writer.finalize()?;
    Ok(())
}

/// Decodes the whole file chunk by chunk; returns (samples, peak chunk length).
fn drain(
    path: &Path,
    backend: BackendChoice,
) -> Result<(u64, usize, Backend), Box<dyn std::error::Error>> {
    let options = AudioOptions {
        backend,
        ..AudioOptions::default()
    };
    let mut stream = AudioStream::open_with(path, &options)?;
    let used = stream.info().backend;
    let mut total = 0u64;
    let mut longest = 0;
    let mut energy = 0.0f64;
    while let Some(chunk) = stream.next_chunk()? {
        assert_eq!(chunk.start, total);
        longest = longest.max(chunk.samples.len());
        energy += chunk.samples.iter().map(|&v| f64::from(v * v)).sum::<f64>();
        total += chunk.samples.len() as u64;
    }
    assert!(stream.warnings().is_empty(), "{:?}", stream.warnings());
    let rms = (energy / total.max(1) as f64).sqrt();
    assert!((0.2..0.25).contains(&rms), "rms {rms}");
    Ok((total, longest, used))
}

#[test]
fn three_hour_file_streams_in_flat_memory() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("three-hours.wav");
    let frames = HOURS * 3600 * u64::from(RATE);
    let started = Instant::now();
    write_long_wav(&path, frames)?;
    let size = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {:.0} MB ({HOURS} h at {RATE} Hz) in {:.1} s",
        size as f64 / MB,
        started.elapsed().as_secs_f64()
    );
    let expected = frames * u64::from(SAMPLE_RATE) / u64::from(RATE);

    for backend in [BackendChoice::Symphonia, BackendChoice::Ffmpeg] {
        let can_reset = reset_peak();
        let before = (mica_core::process::peak_rss_mb()? * MB) as u64;
        let started = Instant::now();
        let (total, longest, used) = drain(&path, backend)?;
        let secs = started.elapsed().as_secs_f64();
        let after = (mica_core::process::peak_rss_mb()? * MB) as u64;
        let growth = after.saturating_sub(before);
        eprintln!(
            "{used:?}: {total} samples ({:.1} h) in {secs:.1} s ({:.0}x real time); chunk <= {longest}; \
             peak RSS {:.1} MB -> {:.1} MB (+{:.1} MB){}",
            total as f64 / f64::from(SAMPLE_RATE) / 3600.0,
            (HOURS * 3600) as f64 / secs,
            before as f64 / MB,
            after as f64 / MB,
            growth as f64 / MB,
            if can_reset {
                ""
            } else {
                " [peak not resettable: cumulative]"
            }
        );
        match used {
            // The resampler's flush makes the length exact.
            Backend::Symphonia => assert_eq!(total, expected),
            Backend::Ffmpeg => assert!(total.abs_diff(expected) <= 2, "{total} vs {expected}"),
        }
        assert!(longest <= SAMPLE_RATE as usize);
        assert!(
            growth < BUDGET,
            "{used:?}: peak RSS grew by {:.1} MB decoding {HOURS} h",
            growth as f64 / MB
        );
    }
    Ok(())
}
