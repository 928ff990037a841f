//! Cross-call window batching: N transcriptions of JFK's 11 s (one window each, word
//! timings on, tiny.en f32, beam 5) one after another on every thread, against the same N
//! run at once by N threads through a `WindowBatcher` on every thread. Criterion's
//! "elements" are transcriptions, so `elem/s` is transcriptions per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica_asr::{Precision, TranscribeOptions, Transcriber};

fn bench(c: &mut Criterion) {
    let jfk = mica_media::load_all(mica_models::ensure("jfk").expect("jfk").join("jfk.wav"))
        .expect("jfk decodes")
        .samples;
    let dir = mica_models::ensure("tiny.en").expect("tiny.en model");
    let device = mica_core::device::from_env("MICA_BENCH_DEVICE").expect("MICA_BENCH_DEVICE");
    let alone = Transcriber::load(&dir, &device, Precision::F32).expect("model loads");
    let batched = alone.clone().with_window_batching(8);
    let options = TranscribeOptions {
        language: Some("en".into()),
        word_timestamps: true,
        ..TranscribeOptions::default()
    };
    let mut group = c.benchmark_group("jfk_tiny_en_f32_beam5");
    group.sample_size(10);
    for n in [1usize, 2, 4, 8] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("alone_x{n}"), |b| {
            b.iter(|| {
                for _ in 0..n {
                    black_box(alone.transcribe(&jfk, &options).expect("transcribes"));
                }
            })
        });
        group.bench_function(format!("batched_x{n}"), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for _ in 0..n {
                        s.spawn(|| {
                            black_box(batched.transcribe(&jfk, &options).expect("transcribes"))
                        });
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
