//! The scheduler's own overhead, without inference in the timed code:
//! - planner: cutting three hours of voice-activity probabilities (1 s pushes) into
//!   300 s parts;
//! - merge: joining 4 parts of a 2-minute recording of real speech (stitching the
//!   transcripts, clustering the speaker windows of every part once, attaching speakers).
//!   The parts are analysed once in the setup.
//!
//! `cargo bench -p mica --bench scheduler`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mica::{Analyzer, PartSize, Planner, Precision, Task, VAD_WINDOW};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn planner(c: &mut Criterion) {
    // Speech with a pause of 0.1 to 1.3 s every 3 to 9 s, as in talk.
    let windows = (3 * 3600 * 16_000) / VAD_WINDOW as usize;
    let mut probs = vec![0.9f32; windows];
    let mut w = 0;
    let mut k = 0usize;
    while w < windows {
        w += 94 + (k * 37) % 188;
        let pause = 3 + (k * 11) % 38;
        for p in probs.iter_mut().skip(w).take(pause) {
            *p = 0.05;
        }
        w += pause;
        k += 1;
    }
    let per_push = (16_000 / VAD_WINDOW) as usize;
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(3));
    g.bench_function("3 hours into 300 s parts (elements: hours)", |b| {
        b.iter(|| {
            let mut planner = Planner::new(300 * 16_000, 60 * 16_000, None);
            let mut cuts = 0;
            for (i, chunk) in probs.chunks(per_push).enumerate() {
                planner.push((i * per_push) as u64, chunk);
                while planner.next_cut().is_some() {
                    cuts += 1;
                }
            }
            black_box(cuts)
        })
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    let setup = || -> Res<_> {
        let mut samples = Vec::new();
        for (asset, file) in [("pyannote-sample", "sample.wav"), ("jfk", "jfk.wav")] {
            let path = mica_models::ensure(asset)?.join(file);
            let clip = mica_media::load_all(&path)?.samples;
            samples.extend_from_slice(&clip);
            samples.extend(std::iter::repeat_n(0.0f32, 8_000));
        }
        let once = samples.clone();
        while samples.len() < 120 * 16_000 {
            samples.extend_from_slice(&once);
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("talk.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec)?;
        for &x in &samples {
            w.write_sample(x)?;
        }
        w.finalize()?;
        let analyzer = Analyzer::builder()
            .tasks([Task::Vad, Task::Asr, Task::Diarize])
            .precision(Precision::Q8_0)
            .build()?;
        let plan = analyzer.plan(&path, PartSize::Count(4))?;
        let parts = (0..plan.parts.len())
            .map(|i| analyzer.run_part(&plan, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((analyzer, plan, parts, dir))
    };
    let (analyzer, plan, parts, _dir) = setup().expect("the merge bench's setup");
    let mut g = c.benchmark_group("merge");
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("4 parts of a 2-minute recording", |b| {
        b.iter(|| black_box(analyzer.merge(&plan, parts.clone()).expect("merge")))
    });
    g.finish();
}

criterion_group!(benches, planner, merge);
criterion_main!(benches);
