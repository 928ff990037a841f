//! Three hours through one streaming session in flat memory. Alone in its own test binary
//! so the process's peak RSS is this test's.
//!
//! The audio is generated on the fly in 1 s chunks (never held whole): silence with the
//! pyannote sample (30 s, two speakers) every hour. Digital silence skips the
//! networks, which keeps the test within the CI budget while the session still walks
//! 3 hours of windows, frames and turns.

mod common;

use std::time::Instant;

use common::*;
use mica_diarize::{DiarizeOptions, Diarizer};

const HOURS: usize = 3;
const EVERY: usize = 60 * 60 * 16_000;
const MAX_GROWTH_MB: f64 = 100.0;

#[test]
fn three_hours_in_flat_memory() -> TestResult {
    let started = Instant::now();
    let d = Diarizer::new(segmentation()?, encoder()?, DiarizeOptions::default())?;
    let sample = audio16("pyannote-sample")?;
    let total = HOURS * 3600 * 16_000;
    // Warm up (allocator pools, weights paged in, the largest batch buffers) before
    // measuring: the sample, then the sample plus 5 minutes of silence.
    d.diarize(&sample)?;
    let mut warm = sample.clone();
    warm.resize(5 * 60 * 16_000, 0.0);
    d.diarize(&warm)?;
    let before = mica_core::process::peak_rss_mb()?;
    let mut s = d.session();
    let mut chunk = vec![0.0f32; 16_000];
    let mut pos = 0;
    while pos < total {
        for (i, c) in chunk.iter_mut().enumerate() {
            let t = (pos + i) % EVERY;
            *c = sample.get(t).copied().unwrap_or(0.0);
        }
        let n = chunk.len().min(total - pos);
        s.push(&chunk[..n])?;
        pos += n;
    }
    let out = s.finish()?;
    let after = mica_core::process::peak_rss_mb()?;
    let growth = after - before;
    eprintln!(
        "{HOURS} h: {} windows through the networks, {} speakers, {} turns; peak RSS \
         {before:.1} MB before, {after:.1} MB after (growth {growth:.1} MB); {:.1} s",
        out.windows,
        out.speakers.len(),
        out.turns.len(),
        started.elapsed().as_secs_f64()
    );
    assert!((out.duration - (HOURS * 3600) as f64).abs() < 1e-6);
    assert!(
        growth < MAX_GROWTH_MB,
        "peak RSS grew by {growth:.1} MB over {HOURS} h (limit {MAX_GROWTH_MB} MB)"
    );
    // Speech only where the bursts are, in each of them, by 2-3 speakers overall.
    let bursts = HOURS;
    for t in &out.turns {
        let offset = t.start % (EVERY as f64 / 16_000.0);
        assert!(offset < 31.0, "turn outside a burst: {t:?}");
    }
    for b in 0..bursts {
        let at = (b * EVERY) as f64 / 16_000.0;
        assert!(
            out.turns
                .iter()
                .any(|t| t.start >= at && t.end <= at + 31.0),
            "no turn in the burst at {at} s"
        );
    }
    // The same two voices come back every hour; more embeddings let small groups of
    // them reach the minimum cluster size, so up to 5 labels are accepted here.
    assert!((2..=5).contains(&out.speakers.len()), "{:?}", out.speakers);
    Ok(())
}
