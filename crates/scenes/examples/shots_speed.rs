//! Times shot detection on one video, for benches/compare_scenes.py:
//! `cargo run --release -p mica-scenes --example shots_speed -- VIDEO [REPEATS] [COPIES]`
//! (`MICA_DEVICE=cuda` runs it on the GPU).
//!
//! Prints one JSON line: frames, the seconds of each run of the network alone (frames
//! decoded beforehand, windows and batches as `ShotStream` runs them) and of each run end to
//! end (`ShotDetector::detect_path`, decoding included), and the transitions found.

use std::time::Instant;

use candle_core::Device;
use mica_media::{FrameOptions, FrameSource};
use mica_scenes::{ShotDetector, ShotOptions, TransNetV2};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let video = args
        .get(1)
        .ok_or("usage: shots_speed VIDEO [REPEATS] [COPIES]")?;
    let repeats: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let copies: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let model = TransNetV2::from_path(mica_models::ensure(TransNetV2::ASSET)?, &device()?)?;
    let detector = ShotDetector::new(model, ShotOptions::default())?;
    let options = FrameOptions {
        constant_rate: true,
        ..FrameOptions::new(48, 27)
    };
    let once = FrameSource::open(video, &options)?.collect::<Result<Vec<_>, _>>()?;
    // COPIES > 1 plays the clip that many times in a row (a longer input for GPU throughput).
    let frames: Vec<_> = (0..copies).flat_map(|_| once.iter().cloned()).collect();
    let mut network = Vec::new();
    let mut cuts = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        let mut stream = detector.stream();
        for f in &frames {
            stream.push(f)?;
        }
        let scores = stream.finish()?;
        network.push(started.elapsed().as_secs_f64());
        cuts = scores
            .single
            .iter()
            .enumerate()
            .filter(|(_, p)| **p > 0.5)
            .map(|(i, _)| i)
            .collect();
    }
    let mut end_to_end = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        detector.detect_path(video)?;
        end_to_end.push(started.elapsed().as_secs_f64());
    }
    println!(
        "{{\"frames\": {}, \"network_s\": {network:?}, \"end_to_end_s\": {end_to_end:?}, \"cuts\": {cuts:?}}}",
        frames.len()
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
