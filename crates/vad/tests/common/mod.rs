//! Shared helpers: the model, the test recordings as the decoder gives them, the goldens.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use candle_core::Device;
use mica_vad::{SampleRate, SileroVad};
use serde::Deserialize;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

mod files;
pub use files::FILES;

pub fn model() -> Res<Arc<SileroVad>> {
    static MODEL: OnceLock<Arc<SileroVad>> = OnceLock::new();
    if let Some(m) = MODEL.get() {
        return Ok(Arc::clone(m));
    }
    let m = SileroVad::from_path(mica_models::ensure("silero-v6")?, &device()?)?;
    Ok(Arc::clone(MODEL.get_or_init(|| m)))
}

/// The device the model tests run on: `MICA_TEST_DEVICE` (`cpu` when unset; `cuda` on a GPU
/// machine, where the same goldens and tolerances must hold).
pub fn device() -> Res<Device> {
    Ok(mica_core::device::test_device()?)
}

/// A recording decoded by mica (16 kHz mono).
pub fn audio16(name: &str) -> Res<Vec<f32>> {
    let (_, asset, file) = FILES
        .iter()
        .find(|f| f.0 == name)
        .ok_or_else(|| format!("unknown test file {name}"))?;
    let path = mica_models::ensure(asset)?.join(file);
    Ok(mica_media::load_all(path)?.samples)
}

/// The 8 kHz input of the goldens: float32 pair averages, an odd last sample dropped
/// (golden.py's `to_8k`, bit for bit).
pub fn to_8k(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(2).map(|p| (p[0] + p[1]) * 0.5).collect()
}

/// The recording at `rate`.
pub fn audio(name: &str, rate: SampleRate) -> Res<Vec<f32>> {
    let x = audio16(name)?;
    Ok(match rate {
        SampleRate::Hz16000 => x,
        SampleRate::Hz8000 => to_8k(&x),
    })
}

#[derive(Debug, Deserialize)]
pub struct ProbFile {
    pub name: String,
    pub sample_rate: u32,
    pub samples: u64,
    pub input_sum: f64,
    pub probabilities: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct Probabilities {
    pub files: Vec<ProbFile>,
}

#[derive(Debug, Deserialize)]
pub struct TimestampCase {
    pub name: String,
    pub sample_rate: u32,
    pub options: String,
    pub samples: u64,
    pub segments: Vec<[u64; 2]>,
}

#[derive(Debug, Deserialize)]
pub struct Timestamps {
    pub option_sets: std::collections::BTreeMap<String, serde_json::Value>,
    pub cases: Vec<TimestampCase>,
}

pub fn golden_probabilities() -> Res<Probabilities> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/probabilities.json"),
    )?;
    Ok(serde_json::from_str(&text)?)
}

pub fn golden_timestamps() -> Res<Timestamps> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/timestamps.json"),
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// Largest absolute difference, and where.
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold(
            (0.0, 0),
            |best, (i, d)| if d > best.0 { (d, i) } else { best },
        )
}

/// Streaming and offline runs must agree: bit for bit on the CPU (same kernels in the same
/// order); on a GPU the GEMM tiling follows the batch shape, so within 1e-5.
pub fn assert_probs_match(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: window count");
    if model().map(|m| m.device().is_cpu()).unwrap_or(true) {
        assert_eq!(got, want, "{what}");
    } else {
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{what}: max abs difference {worst:e}");
    }
}
