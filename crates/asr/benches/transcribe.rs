//! End-to-end transcription speed: 60 s of real speech (the JFK, LibriVox and cards
//! fixtures with 1 s silences, cycled) with tiny.en on the CPU, greedy and beam 5, f32
//! and q8_0. Throughput is in seconds of audio per second (criterion's "elements" are
//! audio seconds, so `elem/s` reads as x real time).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica_asr::{DecodeOptions, Precision, TranscribeOptions, Transcriber};

const SR: usize = 16_000;

fn sixty_seconds() -> Vec<f32> {
    let mut files = vec![
        mica_models::ensure("jfk")
            .expect("jfk sample")
            .join("jfk.wav"),
    ];
    for (asset, names) in [
        ("librivox", ["0870", "0880", "0890", "0920", "0930"]),
        ("cards", ["001", "002", "003", "004", "005"]),
    ] {
        let dir = mica_models::ensure(asset).expect("sample");
        files.extend(names.iter().map(|n| dir.join(format!("{n}.wav"))));
    }
    let mut audio = Vec::with_capacity(60 * SR);
    'fill: loop {
        for f in &files {
            let x = mica_media::load_all(f).expect("fixture decodes").samples;
            audio.extend_from_slice(&x);
            audio.resize(audio.len() + SR, 0.0);
            if audio.len() >= 60 * SR {
                break 'fill;
            }
        }
    }
    audio.truncate(60 * SR);
    audio
}

fn bench(c: &mut Criterion) {
    let audio = sixty_seconds();
    let dir = mica_models::ensure("tiny.en").expect("tiny.en model");
    let device = mica_core::device::from_env("MICA_BENCH_DEVICE").expect("MICA_BENCH_DEVICE");
    let mut group = c.benchmark_group("transcribe_60s_tiny_en");
    group.sample_size(10);
    group.throughput(Throughput::Elements(60));
    for precision in [Precision::F32, Precision::Q8_0] {
        let t = Transcriber::load(&dir, &device, precision).expect("model loads");
        for beam in [1usize, 5] {
            let options = TranscribeOptions {
                language: Some("en".into()),
                decode: DecodeOptions {
                    beam_size: beam,
                    ..DecodeOptions::default()
                },
                ..TranscribeOptions::default()
            };
            group.bench_function(format!("{precision}_beam{beam}"), |b| {
                b.iter(|| black_box(t.transcribe(&audio, &options).expect("transcribes")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
