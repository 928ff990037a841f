//! Silero VAD speed: one stream over about 60 s of real speech at 16 kHz and 8 kHz, and 32
//! independent streams batched through [`SileroVad::forward`] with their state carried.
//!
//! Throughput is in windows (512 samples at 16 kHz, 256 at 8 kHz; 32 ms either way), so
//! `x real time = windows/s * 0.032` and the figures compare directly with the
//! onnxruntime windows/s printed by `benches/compare_vad.py` (see `benches/RESULTS.md`).
//!
//! `cargo bench -p mica-vad` (about a minute once built). The clock stops after
//! `device.synchronize()`, so the figures are also right on CUDA.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica_vad::{SampleRate, SileroVad, SpeechOptions, Vad};

/// Recordings concatenated into the benchmark audio: (asset, file).
const FILES: [(&str, &str); 6] = [
    ("jfk", "jfk.wav"),
    ("librivox", "0870.wav"),
    ("librivox", "0880.wav"),
    ("librivox", "0890.wav"),
    ("librivox", "0920.wav"),
    ("librivox", "0930.wav"),
];

/// Length of the benchmark audio.
const SECONDS: usize = 60;
/// Streams in the batched benchmark.
const STREAMS: usize = 32;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// About [`SECONDS`] of real speech at 16 kHz: the recordings repeated, in order.
fn audio16() -> Res<Vec<f32>> {
    let mut parts = Vec::new();
    for (asset, file) in FILES {
        let path = mica_models::ensure(asset)?.join(file);
        parts.push(mica_media::load_all(path)?.samples);
    }
    let want = SECONDS * 16_000;
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        for p in &parts {
            out.extend_from_slice(p);
        }
    }
    out.truncate(want);
    Ok(out)
}

/// Pair averages: the 8 kHz input the parity tests use.
fn to_8k(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(2).map(|p| (p[0] + p[1]) * 0.5).collect()
}

/// Input rows for `STREAMS` streams over consecutive parts of `audio`: one
/// `[STREAMS, context + window]` tensor per step, each row its stream's window with the
/// previous `context` samples prepended (zeros at a stream's start), as a live server would
/// assemble them.
fn batched_inputs(audio: &[f32], rate: SampleRate, device: &Device) -> Res<Vec<Tensor>> {
    let steps = audio.len() / STREAMS / rate.window();
    let part = steps * rate.window();
    let mut inputs = Vec::with_capacity(steps);
    let mut rows = Vec::with_capacity(STREAMS * rate.input_len());
    for step in 0..steps {
        rows.clear();
        for stream in audio.chunks(part.max(1)).take(STREAMS) {
            rate.push_row(&mut rows, stream, step);
        }
        inputs.push(Tensor::from_slice(
            &rows,
            (STREAMS, rate.input_len()),
            device,
        )?);
    }
    Ok(inputs)
}

/// Runs every step of `inputs` with the state carried; returns the last probabilities.
fn run_batched(
    model: &SileroVad,
    rate: SampleRate,
    inputs: &[Tensor],
) -> Result<Option<Tensor>, mica_vad::VadError> {
    let mut state = model.zero_state(STREAMS)?;
    let mut last = None;
    for input in inputs {
        let (probs, next) = model.forward(rate, input, &state)?;
        state = next;
        last = Some(probs);
    }
    Ok(last)
}

fn setup() -> Res<(Arc<SileroVad>, Vec<f32>)> {
    let device = Device::Cpu;
    Ok((
        SileroVad::from_path(mica_models::ensure("silero-v6")?, &device)?,
        audio16()?,
    ))
}

fn benches(c: &mut Criterion) {
    let (model, audio) = match setup() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vad bench: cannot load the model or the audio: {e}");
            return;
        }
    };
    let device = model.device().clone();
    let vad = match Vad::new(Arc::clone(&model), SpeechOptions::default()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vad bench: {e}");
            return;
        }
    };

    let mut group = c.benchmark_group("vad");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    let audio8 = to_8k(&audio);
    for (name, rate, samples) in [
        ("single_stream_16k_60s", SampleRate::Hz16000, &audio),
        ("single_stream_8k_60s", SampleRate::Hz8000, &audio8),
    ] {
        let windows = samples.len().div_ceil(rate.window());
        group.throughput(Throughput::Elements(windows as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    match vad.detect(black_box(samples), rate) {
                        Ok(out) => {
                            black_box(out);
                        }
                        Err(e) => panic!("vad bench: detect failed: {e}"),
                    }
                }
                if let Err(e) = device.synchronize() {
                    panic!("vad bench: synchronize failed: {e}");
                }
                start.elapsed()
            })
        });
    }

    let rate = SampleRate::Hz16000;
    let inputs = match batched_inputs(&audio, rate, &device) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vad bench: {e}");
            return;
        }
    };
    group.throughput(Throughput::Elements((inputs.len() * STREAMS) as u64));
    group.bench_function("batch_32_streams_16k_60s", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                match run_batched(&model, rate, black_box(&inputs)) {
                    Ok(out) => {
                        black_box(out);
                    }
                    Err(e) => panic!("vad bench: forward failed: {e}"),
                }
            }
            if let Err(e) = device.synchronize() {
                panic!("vad bench: synchronize failed: {e}");
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(vad, benches);
criterion_main!(vad);
