//! Bad and unusual input: one speaker, no speech, 200 ms, nothing, more speakers asked
//! than present, damaged samples, bad options, odd chunking, bad weights.

mod common;

use candle_core::Tensor;
use common::*;
use mica_core::error::{ErrorKind, RunError};
use mica_diarize::segmentation::WINDOW_SAMPLES;
use mica_diarize::{DiarizeError, DiarizeOptions, Diarizer, Segmentation, SpeakerEncoder};

fn diarizer(options: DiarizeOptions) -> Res<Diarizer> {
    Ok(Diarizer::new(segmentation()?, encoder()?, options)?)
}

fn speakers(turns: &[mica_core::document::SpeakerTurn]) -> usize {
    turns
        .iter()
        .map(|t| t.speaker.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn check_turns(turns: &[mica_core::document::SpeakerTurn], duration: f64) {
    for t in turns {
        assert!(t.start < t.end, "{t:?}");
        assert!(
            t.start >= 0.0 && t.end <= duration + 1e-9,
            "{t:?} outside 0..{duration}"
        );
    }
    assert!(
        turns.windows(2).all(|w| w[0].start <= w[1].start),
        "not sorted"
    );
}

#[test]
fn one_speaker_is_one_speaker() -> TestResult {
    let jfk = audio16("jfk")?;
    let out = diarizer(DiarizeOptions::default())?.diarize(&jfk)?;
    check_turns(&out.turns, out.duration);
    assert_eq!(out.speakers, vec!["SPEAKER_00".to_string()]);
    let speech: f64 = out.turns.iter().map(|t| t.end - t.start).sum();
    assert!(speech > 7.0, "{speech} s of speech in JFK's 11 s");
    Ok(())
}

#[test]
fn more_speakers_asked_than_present() -> TestResult {
    // JFK alone, told there are 4: defined output, at most 4 speakers, JFK's speech covered.
    let jfk = audio16("jfk")?;
    let out = diarizer(DiarizeOptions {
        num_speakers: Some(4),
        ..Default::default()
    })?
    .diarize(&jfk)?;
    check_turns(&out.turns, out.duration);
    let n = speakers(&out.turns);
    assert!((1..=4).contains(&n), "{n} speakers");
    assert_eq!(out.centroids.len(), n);
    // min_speakers above what is there behaves the same way.
    let out = diarizer(DiarizeOptions {
        min_speakers: Some(3),
        max_speakers: Some(6),
        ..Default::default()
    })?
    .diarize(&jfk)?;
    assert!((1..=6).contains(&speakers(&out.turns)));
    Ok(())
}

#[test]
fn silence_has_no_speakers() -> TestResult {
    let d = diarizer(DiarizeOptions::default())?;
    // Digital silence skips the networks; the network agrees it holds no speaker.
    let out = d.diarize(&vec![0.0; 10 * 16_000])?;
    assert!(out.turns.is_empty() && out.speakers.is_empty(), "{out:?}");
    assert_eq!(out.windows, 0);
    let zeros = Tensor::zeros((1, WINDOW_SAMPLES), candle_core::DType::F32, &device()?)?;
    let p = segmentation()?
        .forward(&zeros)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let max = p.iter().fold(0.0f32, |m, &x| m.max(x));
    assert!(max < 0.5, "speaker probability {max} on digital silence");
    // Quiet noise (no speech) through the networks: no speakers either.
    let mut seed = 12345u32;
    let noise: Vec<f32> = (0..8 * 16_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 1e-3
        })
        .collect();
    let out = d.diarize(&noise)?;
    assert!(out.windows > 0);
    let speech: f64 = out.turns.iter().map(|t| t.end - t.start).sum();
    assert!(
        speech < 0.5,
        "{speech} s of speech found in noise: {:?}",
        out.turns
    );
    Ok(())
}

#[test]
fn tiny_and_empty_inputs() -> TestResult {
    let d = diarizer(DiarizeOptions::default())?;
    let empty = d.diarize(&[])?;
    assert!(empty.turns.is_empty() && empty.duration == 0.0);
    // 200 ms of speech: one zero-padded window; whatever is found lies inside the audio.
    let jfk = audio16("jfk")?;
    let short = &jfk[16_000..16_000 + 3_200];
    let out = d.diarize(short)?;
    assert!((out.duration - 0.2).abs() < 1e-9);
    assert_eq!(out.windows, 1);
    check_turns(&out.turns, 0.2);
    assert!(speakers(&out.turns) <= 1);
    // A single sample.
    let out = d.diarize(&[0.1])?;
    assert!(out.turns.is_empty());
    Ok(())
}

#[test]
fn chunking_does_not_change_the_result() -> TestResult {
    let audio = audio16("pyannote-sample")?;
    let d = diarizer(DiarizeOptions::default())?;
    let whole = d.diarize(&audio)?;
    let mut s = d.session();
    for chunk in audio.chunks(12_345) {
        s.push(chunk)?;
    }
    assert_eq!(s.samples(), audio.len());
    assert_eq!(s.finish()?.turns, whole.turns);
    // Nor does the batch size (GPUs take 128 windows per forward by default, the CPU 16).
    for batch in [3, 128] {
        let other = diarizer(DiarizeOptions {
            batch,
            ..Default::default()
        })?
        .diarize(&audio)?;
        assert_eq!(other.turns, whole.turns, "batch {batch}");
    }
    Ok(())
}

#[test]
fn damaged_samples_and_bad_options_are_errors() -> TestResult {
    let d = diarizer(DiarizeOptions::default())?;
    let mut x = vec![0.1f32; 20_000];
    x[17_000] = f32::NAN;
    match d.diarize(&x) {
        Err(DiarizeError::Run(RunError::NonFinite { index: 17_000, .. })) => {}
        other => panic!("expected NonFinite at 17000, got {other:?}"),
    }
    for bad in [
        DiarizeOptions {
            num_speakers: Some(0),
            ..Default::default()
        },
        DiarizeOptions {
            num_speakers: Some(2),
            max_speakers: Some(3),
            ..Default::default()
        },
        DiarizeOptions {
            min_speakers: Some(4),
            max_speakers: Some(2),
            ..Default::default()
        },
        DiarizeOptions {
            step: 0.0,
            ..Default::default()
        },
        DiarizeOptions {
            onset: 1.5,
            ..Default::default()
        },
        DiarizeOptions {
            threshold: f32::NAN,
            ..Default::default()
        },
        DiarizeOptions {
            same_speaker_below: -0.1,
            ..Default::default()
        },
        DiarizeOptions {
            batch: mica_diarize::MAX_BATCH + 1,
            ..Default::default()
        },
    ] {
        let e = Diarizer::new(segmentation()?, encoder()?, bad.clone())
            .err()
            .ok_or_else(|| format!("{bad:?} accepted"))?;
        assert!(
            matches!(e, DiarizeError::Run(RunError::InvalidOption { .. })),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Options);
        assert!(
            e.to_string().starts_with("invalid diarization option"),
            "{e}"
        );
    }
    // Options round-trip through JSON with defaults for missing fields.
    let o: DiarizeOptions = serde_json::from_str(r#"{"num_speakers": 3}"#)?;
    assert_eq!(o.num_speakers, Some(3));
    assert_eq!(o.step, DiarizeOptions::default().step);
    Ok(())
}

#[test]
fn wrong_weights_name_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let dev = device()?;
    // The embedding model's file is not a segmentation model, and vice versa.
    let emb = mica_models::ensure("resemblyzer")?.join(SpeakerEncoder::FILE);
    let e = Segmentation::from_path(&emb, &dev).err().ok_or("loaded")?;
    assert!(
        matches!(e, DiarizeError::Run(RunError::Weights { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("missing"),
        "{msg}"
    );
    let seg = mica_models::ensure("pyannote-segmentation")?;
    let e = SpeakerEncoder::from_path(&seg, &dev)
        .err()
        .ok_or("loaded")?;
    assert!(
        matches!(e, DiarizeError::Run(RunError::Weights { .. })),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Model);
    // Not a safetensors file at all.
    let junk = dir.path().join("model.safetensors");
    std::fs::write(&junk, b"not weights")?;
    let e = Segmentation::from_path(dir.path(), &dev)
        .err()
        .ok_or("loaded")?;
    assert!(
        e.to_string()
            .contains("mica models fetch pyannote-segmentation"),
        "{e}"
    );
    Ok(())
}

/// Both networks shared by several threads at once give each the turns they give alone.
#[test]
fn one_model_shared_by_threads_gives_the_same_turns() -> TestResult {
    let audio = audio16("pyannote-sample")?;
    let d = diarizer(DiarizeOptions::default())?;
    let alone = d.diarize(&audio)?;
    let shared: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| d.diarize(&audio))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("diarizing thread"))
            .collect::<Result<_, _>>()
    })?;
    for out in shared {
        assert_eq!(out.turns, alone.turns);
    }
    Ok(())
}
