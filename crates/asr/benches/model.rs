//! Whisper network speed on the CPU: log-mel of 30 s, the encoder on one 30 s window
//! (tiny.en and base, f32 and q8_0), and one decoder step with 1 and 5 rows (a beam of 5)
//! after a 30-token context.
//!
//! `cargo bench -p mica-asr --bench model`. x real time of the encoder = 30 s / time per
//! window. `MICA_BENCH_MODELS=tiny.en` limits the models; `MICA_BENCH_DEVICE=cuda` runs
//! them on a GPU (each timed call ends with `device.synchronize()`).

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use mica_asr::{LogMel, Precision, Whisper, mel_batch};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// 30 s of real speech (JFK repeated).
fn audio30() -> Res<Vec<f32>> {
    let path = mica_models::ensure("jfk")?.join("jfk.wav");
    let jfk = mica_media::load_all(path)?.samples;
    Ok(jfk.iter().copied().cycle().take(30 * 16_000).collect())
}

fn models() -> Vec<String> {
    std::env::var("MICA_BENCH_MODELS")
        .unwrap_or_else(|_| "tiny.en,base".into())
        .split(',')
        .map(str::to_string)
        .collect()
}

fn bench(c: &mut Criterion) -> Res<()> {
    let audio = audio30()?;
    let lm = LogMel::new(80)?;
    c.bench_function("mel/30s", |b| b.iter(|| lm.compute(black_box(&audio))));
    let mel = lm.compute(&audio)?;
    let device = mica_core::device::from_env("MICA_BENCH_DEVICE")?;
    let window = mel_batch(&[(&mel, 0)], &device)?;

    for name in models() {
        let dir = mica_models::ensure(&name)?;
        for precision in [Precision::F32, Precision::Q8_0] {
            let m = Whisper::load(&dir, &device, precision)?;
            let mut g = c.benchmark_group(format!("{name}/{precision}"));
            g.sample_size(10).measurement_time(Duration::from_secs(8));
            g.bench_function("encoder_30s", |b| {
                b.iter(|| {
                    let f = m.encode(black_box(&window)).expect("encode");
                    sync(&device);
                    f
                })
            });
            let features = m.encode(&window)?;
            let sot = m.config().decoder_start_token_id.unwrap_or(50257);
            // A 30-token context (the prompt and some text) before the timed step.
            let ctx: Vec<u32> = (0..30).map(|i| [sot, 440, 1110, 286, 262][i % 5]).collect();
            for rows in [1usize, 5] {
                let ctx_rows: Vec<u32> = (0..rows).flat_map(|_| ctx.iter().copied()).collect();
                let ctx = Tensor::from_vec(ctx_rows, (rows, 30), m.device())?;
                let step = Tensor::from_vec(vec![440u32; rows], (rows, 1), m.device())?;
                g.bench_function(format!("decode_step_rows{rows}"), |b| {
                    b.iter_batched_ref(
                        || {
                            let mut s = m.decoder_state(&features, rows).expect("state");
                            m.decode(&mut s, &ctx, false).expect("prefill");
                            s
                        },
                        |s| {
                            let l = m.decode(s, black_box(&step), false).expect("step");
                            sync(&device);
                            l
                        },
                        criterion::BatchSize::LargeInput,
                    )
                });
            }
            g.finish();
        }
    }
    Ok(())
}

/// Waits for queued GPU work, so that a timed call includes it.
fn sync(device: &Device) {
    if let Err(e) = device.synchronize() {
        panic!("synchronize failed: {e}");
    }
}

fn benches(c: &mut Criterion) {
    if let Err(e) = bench(c) {
        eprintln!("benchmark setup failed: {e}");
    }
}

criterion_group!(model, benches);
criterion_main!(model);
