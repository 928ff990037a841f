//! Criterion benches: the TransNetV2 network alone (one 100-frame window of real frames, 50
//! frames predicted) and shot detection end to end with decoding (Megamind.avi, 271
//! frames). Throughput is reported in predicted frames per second.
//!
//! `cargo bench -p mica-scenes --bench scenes`

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica_media::{FrameOptions, FrameSource};
use mica_scenes::windows::{CONTEXT, STEP, WINDOW, Windower};
use mica_scenes::{ShotDetector, ShotOptions, TransNetV2};

fn benches(c: &mut Criterion) {
    let model = TransNetV2::from_path(
        mica_models::ensure(TransNetV2::ASSET).expect("transnetv2 in the model store"),
        &Device::Cpu,
    )
    .expect("transnetv2 loads");
    let video = mica_models::ensure("opencv-video")
        .expect("opencv-video samples")
        .join("Megamind.avi");
    let options = FrameOptions {
        constant_rate: true,
        ..FrameOptions::new(48, 27)
    };
    let mut windower = Windower::new();
    let mut windows = Vec::new();
    for frame in FrameSource::open(&video, &options).expect("Megamind.avi opens") {
        windows.extend(windower.push(&frame.expect("frame decodes").data));
    }
    windows.extend(windower.finish());
    let window = &windows[2];
    let input = Tensor::from_vec(window.frames.clone(), (1, WINDOW, 27, 48, 3), &Device::Cpu)
        .expect("window tensor");

    let mut group = c.benchmark_group("transnetv2");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(STEP as u64));
    group.bench_function("network_window", |b| {
        b.iter(|| {
            model
                .forward_frames(&input, CONTEXT, STEP)
                .expect("forward")
        })
    });
    let detector =
        ShotDetector::new(model.clone(), ShotOptions::default()).expect("default options");
    group.throughput(Throughput::Elements(271));
    group.bench_function("megamind_end_to_end", |b| {
        b.iter(|| detector.detect_path(&video).expect("detect"))
    });
    group.finish();
}

criterion_group!(scenes, benches);
criterion_main!(scenes);
