//! Shared helpers: the models, the test recordings as the decoder gives them, the goldens.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use candle_core::Device;
use mica_diarize::{Segmentation, SpeakerEncoder};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Test recordings: (name, store asset, file).
pub const FILES: &[(&str, &str, &str)] = &[
    ("pyannote-sample", "pyannote-sample", "sample.wav"),
    ("jfk", "jfk", "jfk.wav"),
    ("librivox-0870", "librivox", "0870.wav"),
    ("librivox-0880", "librivox", "0880.wav"),
    ("librivox-0890", "librivox", "0890.wav"),
    ("librivox-0920", "librivox", "0920.wav"),
    ("librivox-0930", "librivox", "0930.wav"),
    ("cards-001", "cards", "001.wav"),
    ("cards-002", "cards", "002.wav"),
    ("cards-003", "cards", "003.wav"),
    ("cards-004", "cards", "004.wav"),
    ("cards-005", "cards", "005.wav"),
];

/// The device the model tests run on: `MICA_TEST_DEVICE` (`cpu` when unset; `cuda` on a GPU
/// machine, where the same goldens and tolerances must hold).
pub fn device() -> Res<Device> {
    Ok(mica_core::device::test_device()?)
}

pub fn segmentation() -> Res<Arc<Segmentation>> {
    static MODEL: OnceLock<Arc<Segmentation>> = OnceLock::new();
    if let Some(m) = MODEL.get() {
        return Ok(Arc::clone(m));
    }
    let m = Segmentation::from_path(mica_models::ensure(Segmentation::ASSET)?, &device()?)?;
    Ok(Arc::clone(MODEL.get_or_init(|| m)))
}

pub fn encoder() -> Res<Arc<SpeakerEncoder>> {
    static MODEL: OnceLock<Arc<SpeakerEncoder>> = OnceLock::new();
    if let Some(m) = MODEL.get() {
        return Ok(Arc::clone(m));
    }
    let m = SpeakerEncoder::from_path(mica_models::ensure(SpeakerEncoder::ASSET)?, &device()?)?;
    Ok(Arc::clone(MODEL.get_or_init(|| m)))
}

/// The path of a test recording.
pub fn path(name: &str) -> Res<std::path::PathBuf> {
    let (_, asset, file) = FILES
        .iter()
        .find(|f| f.0 == name)
        .ok_or_else(|| format!("unknown test file {name}"))?;
    Ok(mica_models::ensure(asset)?.join(file))
}

/// A recording decoded by mica (16 kHz mono).
pub fn audio16(name: &str) -> Res<Vec<f32>> {
    Ok(mica_media::load_all(path(name)?)?.samples)
}

/// A golden JSON file of tests/golden.
pub fn golden(name: &str) -> Res<serde_json::Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// Largest absolute difference and where.
pub fn max_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold(
            (0.0, 0),
            |(m, at), (i, d)| if d > m { (d, i) } else { (m, at) },
        )
}

/// Checks a slice of decoded audio against the golden's input sum.
pub fn check_sum(what: &str, x: &[f32], want: f64) {
    let sum: f64 = x.iter().map(|&s| f64::from(s)).sum();
    assert!(
        (sum - want).abs() < 1e-6,
        "{what}: decoded samples differ from the golden input (sum {sum} vs {want})"
    );
}
