//! A 3-hour recording through `Vad::detect_audio` in flat memory. Alone in its own test
//! binary so the process's peak RSS is this test's.
//!
//! The wav (about 330 MB) is stream-written with hound into a temporary directory: a real
//! recording sequence (JFK, LibriVox) with 1 s silences, repeated to 3 hours, so the
//! detector keeps opening and closing regions. On the 2-core CI machine, in release, the
//! whole test takes well under the 3-minute budget (it prints its run time).

mod common;

use std::time::Instant;

use common::*;
use mica_media::AudioStream;
use mica_vad::{SpeechOptions, Vad};

/// Length of the recording.
const HOURS: u64 = 3;
/// Allowed growth of the peak resident set while detecting.
const MAX_GROWTH_MB: f64 = 100.0;

#[test]
fn three_hours_in_flat_memory() -> TestResult {
    let started = Instant::now();
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let mut parts = Vec::new();
    for name in [
        "jfk",
        "librivox-0870",
        "librivox-0880",
        "librivox-0890",
        "librivox-0920",
        "librivox-0930",
    ] {
        parts.push(audio16(name)?);
    }

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("three-hours.wav");
    let total = HOURS * 3600 * 16_000;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec)?;
    let mut written = 0u64;
    'fill: loop {
        for part in &parts {
            let silence = std::iter::repeat_n(0.0f32, 16_000);
            for s in part.iter().copied().chain(silence) {
                if written == total {
                    break 'fill;
                }
                writer.write_sample((s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)?;
                written += 1;
            }
        }
    }
    writer.finalize()?;
    drop(parts);
    let wrote = started.elapsed().as_secs_f64();

    let before = mica_core::process::peak_rss_mb()?;
    let mut stream = AudioStream::open(&path)?;
    let out = vad.detect_audio(&mut stream, false)?;
    let after = mica_core::process::peak_rss_mb()?;
    let growth = after - before;
    eprintln!(
        "{HOURS} h: {} samples, {} speech regions; peak RSS {before:.1} MB before detection, \
         {after:.1} MB after (growth {growth:.1} MB); wav written in {wrote:.1} s, total {:.1} s",
        out.samples,
        out.segments.len(),
        started.elapsed().as_secs_f64()
    );

    assert_eq!(out.samples, total);
    assert!(out.probabilities.is_empty());
    assert!(
        growth < MAX_GROWTH_MB,
        "peak RSS grew by {growth:.1} MB over {HOURS} h of audio (limit {MAX_GROWTH_MB} MB)"
    );
    // Plausible regions: many (the 42 s sequence repeats about 260 times, 6 recordings each),
    // non-empty, sorted, disjoint and inside the audio.
    assert!(out.segments.len() > 1000, "{} regions", out.segments.len());
    let mut last_end = 0;
    for s in &out.segments {
        assert!(s.start < s.end, "{s:?}");
        assert!(
            s.start >= last_end,
            "{s:?} starts before the previous end {last_end}"
        );
        assert!(s.end <= total, "{s:?} ends after the audio");
        last_end = s.end;
    }
    Ok(())
}
