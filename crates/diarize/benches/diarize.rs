//! mica-diarize speed per stage, on real speech (the pyannote sample):
//! - segmentation: a batch of 16 five-second windows (throughput in audio seconds seen);
//! - mel front end: the same batch;
//! - embedding: 32 partials of 160 mel frames (1.6 s each);
//! - clustering: 1,000 embeddings of real speech (agglomerative; spectral on the 500 it
//!   takes at most);
//! - pipeline: the whole 30 s recording.
//!
//! `cargo bench -p mica-diarize` (a few minutes); `MICA_BENCH_DEVICE=cuda` for a GPU (the
//! network stages end with `device.synchronize()`). The whole-pipeline real-time factor on a
//! 10-minute recording comes from `cargo run --release -p mica-diarize --example rtf`.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica_diarize::clustering::{self, SpeakerCount};
use mica_diarize::segmentation::WINDOW_SAMPLES;
use mica_diarize::{DiarizeOptions, Diarizer, Segmentation, SpeakerEncoder};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const BATCH: usize = 16;

fn device() -> Device {
    mica_core::device::from_env("MICA_BENCH_DEVICE").expect("MICA_BENCH_DEVICE")
}

/// Waits for queued GPU work, so that a timed call includes it.
fn sync(device: &Device) {
    if let Err(e) = device.synchronize() {
        panic!("synchronize failed: {e}");
    }
}

fn setup() -> Res<(Vec<f32>, Tensor, Diarizer)> {
    let dev = device();
    let path = mica_models::ensure("pyannote-sample")?.join("sample.wav");
    let audio = mica_media::load_all(path)?.samples;
    let mut rows = Vec::with_capacity(BATCH * WINDOW_SAMPLES);
    for i in 0..BATCH {
        let s = (i * 16_000) % (audio.len() - WINDOW_SAMPLES);
        rows.extend_from_slice(&audio[s..s + WINDOW_SAMPLES]);
    }
    let windows = Tensor::from_vec(rows, (BATCH, WINDOW_SAMPLES), &dev)?;
    let diarizer = Diarizer::new(
        Segmentation::from_path(mica_models::ensure(Segmentation::ASSET)?, &dev)?,
        SpeakerEncoder::from_path(mica_models::ensure(SpeakerEncoder::ASSET)?, &dev)?,
        DiarizeOptions::default(),
    )?;
    Ok((audio, windows, diarizer))
}

fn stages(c: &mut Criterion) {
    let (audio, windows, diarizer) = match setup() {
        Ok(s) => s,
        Err(e) => panic!("benchmark set-up failed: {e}"),
    };
    let dev = device();
    let seg = Segmentation::from_path(
        mica_models::ensure(Segmentation::ASSET).expect("segmentation model"),
        &dev,
    )
    .expect("segmentation model");
    let enc = SpeakerEncoder::from_path(
        mica_models::ensure(SpeakerEncoder::ASSET).expect("embedding model"),
        &dev,
    )
    .expect("embedding model");

    let mut g = c.benchmark_group("diarize");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    // Audio seconds per iteration, so criterion's "elem/s" is x real time.
    g.throughput(Throughput::Elements((BATCH * 5) as u64));
    g.bench_function("segmentation_16x5s", |b| {
        b.iter(|| {
            let y = seg.forward(&windows).expect("forward");
            sync(&dev);
            black_box(y)
        })
    });
    g.bench_function("mel_16x5s", |b| {
        b.iter(|| {
            let y = enc.mel().forward(&windows).expect("mel");
            sync(&dev);
            black_box(y)
        })
    });
    let mels = enc.mel().forward(&windows).expect("mel");
    let partials = Tensor::cat(
        &[
            mels.narrow(1, 0, 160).expect("narrow"),
            mels.narrow(1, 200, 160).expect("narrow"),
        ],
        0,
    )
    .expect("cat");
    let lengths = vec![160; 2 * BATCH];
    g.throughput(Throughput::Elements((2 * BATCH) as u64 * 16 / 10));
    g.bench_function("embedding_32x1.6s", |b| {
        b.iter(|| {
            let y = enc.embed(&partials, &lengths).expect("embed");
            sync(&dev);
            black_box(y)
        })
    });

    // Real embeddings: every 160-frame partial of the sample, perturbed copies to 1,000.
    let emb = enc.embed(&partials, &lengths).expect("embed");
    let base: Vec<Vec<f32>> = (0..2 * BATCH)
        .map(|i| emb.get(i).and_then(|e| e.to_vec1::<f32>()).expect("row"))
        .collect();
    let points: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            let mut v = base[i % base.len()].clone();
            v[i % 256] += 0.01 * (i % 7) as f32;
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        })
        .collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("agglomerative_1000", |b| {
        b.iter(|| {
            black_box(clustering::agglomerative(
                &points,
                0.9,
                12,
                SpeakerCount::FREE,
            ))
        })
    });
    // Spectral at the most points the pipeline gives it (its worst case).
    let most = mica_diarize::SPECTRAL_MAX_POINTS;
    g.throughput(Throughput::Elements(most as u64));
    g.bench_function(format!("spectral_{most}"), |b| {
        b.iter(|| {
            black_box(clustering::spectral(
                &points[..most],
                SpeakerCount::FREE,
                10,
            ))
        })
    });
    g.throughput(Throughput::Elements(30));
    g.bench_function("pipeline_30s", |b| {
        b.iter(|| black_box(diarizer.diarize(&audio).expect("diarize")))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
