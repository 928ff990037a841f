//! Cross-call window batching (`Transcriber::with_window_batching`): transcriptions run
//! at once by several threads share batches, and each one's transcript is the one it
//! gets alone.

use std::sync::Barrier;

use candle_core::Device;
use mica_asr::{Precision, TranscribeOptions, Transcriber};
use mica_core::document::Transcript;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn audio(asset: &str, file: &str) -> Res<Vec<f32>> {
    Ok(mica_media::load_all(mica_models::ensure(asset)?.join(file))?.samples)
}

/// Four inputs of one to three windows: JFK, the pyannote sample, and two joins.
fn inputs() -> Res<Vec<Vec<f32>>> {
    let jfk = audio("jfk", "jfk.wav")?;
    let talk = audio("pyannote-sample", "sample.wav")?;
    let pause = vec![0.0f32; 16_000];
    Ok(vec![
        jfk.clone(),
        talk.clone(),
        [talk.as_slice(), &jfk, &talk].concat(),
        [jfk.as_slice(), &pause, &jfk, &pause, &jfk].concat(),
    ])
}

fn options() -> TranscribeOptions {
    TranscribeOptions {
        word_timestamps: true,
        ..TranscribeOptions::default()
    }
}

fn same(a: &Transcript, b: &Transcript) -> bool {
    a.segments.len() == b.segments.len()
        && a.segments.iter().zip(&b.segments).all(|(x, y)| {
            x.text == y.text
                && (x.start - y.start).abs() <= 0.021
                && (x.end - y.end).abs() <= 0.021
                && x.words.len() == y.words.len()
        })
}

#[test]
fn batched_transcripts_equal_lone_ones() -> Res<()> {
    let device = Device::Cpu;
    let dir = mica_models::ensure("tiny.en")?;
    let alone = Transcriber::load(&dir, &device, Precision::F32)?;
    let batched = alone.clone().with_window_batching(8);
    let inputs = inputs()?;
    let o = options();
    let expected: Vec<Transcript> = inputs
        .iter()
        .map(|x| alone.transcribe(x, &o))
        .collect::<Result<_, _>>()?;
    assert!(alone.batch_stats().is_none());

    let start = Barrier::new(inputs.len());
    let got: Vec<Transcript> = std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .iter()
            .map(|x| {
                let (t, o, start) = (&batched, &o, &start);
                s.spawn(move || {
                    start.wait();
                    t.transcribe(x, o)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a transcription thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert!(
            same(e, g),
            "input {i}: batched\n{:#?}\nalone\n{:#?}",
            g.segments,
            e.segments
        );
    }
    // Seven windows in all; four threads starting together share at least one batch.
    let stats = batched.batch_stats().ok_or("no batcher")?;
    assert!(
        stats.windows >= 7 && stats.batches < stats.windows,
        "{stats:?}"
    );
    Ok(())
}
