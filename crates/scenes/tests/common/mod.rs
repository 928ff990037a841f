//! Shared helpers: the model, the sample videos, the goldens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use mica_media::{FrameOptions, FrameSource, VideoFrame};
use mica_scenes::TransNetV2;
use serde::Deserialize;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The device the tests run on (`MICA_TEST_DEVICE`, `cpu` when unset).
pub fn device() -> Res<Device> {
    Ok(mica_core::device::test_device()?)
}

/// The network, loaded once per test binary.
pub fn model() -> Res<Arc<TransNetV2>> {
    static MODEL: OnceLock<Arc<TransNetV2>> = OnceLock::new();
    if let Some(m) = MODEL.get() {
        return Ok(Arc::clone(m));
    }
    let m = TransNetV2::from_path(mica_models::ensure(TransNetV2::ASSET)?, &device()?)?;
    Ok(Arc::clone(MODEL.get_or_init(|| m)))
}

/// A file of the `opencv-video` samples.
pub fn video(name: &str) -> Res<PathBuf> {
    Ok(mica_models::ensure("opencv-video")?.join(name))
}

/// Every 48x27 frame of `path`, decoded as the reference pipeline does (constant rate).
pub fn frames(path: &std::path::Path) -> Res<Vec<VideoFrame>> {
    let options = FrameOptions {
        constant_rate: true,
        ..FrameOptions::new(48, 27)
    };
    Ok(FrameSource::open(path, &options)?.collect::<Result<Vec<_>, _>>()?)
}

#[derive(Debug, Deserialize)]
pub struct Golden {
    pub source: String,
    pub files: Vec<GoldenFile>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenFile {
    pub name: String,
    pub asset: String,
    pub frames: usize,
    pub sha256: String,
    pub single: Vec<f32>,
    pub many: Vec<f32>,
    pub cuts: Vec<u64>,
}

/// scripts/golden.py's output.
pub fn golden() -> Res<Golden> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/transnetv2.json"
    ))?;
    Ok(serde_json::from_str(&text)?)
}
