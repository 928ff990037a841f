//! Speech timestamps against silero's own `get_speech_timestamps_from_probs` (what its
//! `get_speech_timestamps` runs) over the onnxruntime probabilities: every recording, both
//! rates, nine option sets (tests/golden/timestamps.json, from scripts/golden.py).

mod common;

use common::*;
use mica_core::error::ErrorKind;
use mica_vad::{SampleRate, SpeechOptions, Vad, speech_segments};

fn options(golden: &Timestamps, name: &str) -> Res<SpeechOptions> {
    let value = golden
        .option_sets
        .get(name)
        .ok_or_else(|| format!("option set {name} missing"))?;
    // The goldens use get_speech_timestamps' argument names, which are the field names.
    Ok(serde_json::from_value(value.clone())?)
}

fn pairs(segments: &[mica_vad::SpeechSegment]) -> Vec<[u64; 2]> {
    segments.iter().map(|s| [s.start, s.end]).collect()
}

/// The algorithm alone: the reference's probabilities in, the reference's regions out.
#[test]
fn same_regions_as_silero_from_the_same_probabilities() -> TestResult {
    let probs = golden_probabilities()?;
    let golden = golden_timestamps()?;
    let mut regions = 0;
    for case in &golden.cases {
        let p = probs
            .files
            .iter()
            .find(|f| f.name == case.name && f.sample_rate == case.sample_rate)
            .ok_or("probabilities missing")?;
        let rate = SampleRate::from_hz(case.sample_rate)?;
        let opts = options(&golden, &case.options)?;
        let got = speech_segments(&p.probabilities, case.samples, rate, &opts)?;
        assert_eq!(
            pairs(&got),
            case.segments,
            "{} @ {} with {}",
            case.name,
            case.sample_rate,
            case.options
        );
        regions += got.len();
    }
    eprintln!("{} cases, {regions} regions identical", golden.cases.len());
    assert!(regions > 100, "the goldens should exercise many regions");
    Ok(())
}

/// End to end: our network's probabilities give the reference's regions too.
#[test]
fn same_regions_as_silero_end_to_end() -> TestResult {
    let golden = golden_timestamps()?;
    let model = model()?;
    for case in &golden.cases {
        let rate = SampleRate::from_hz(case.sample_rate)?;
        let vad = Vad::new(model.clone(), options(&golden, &case.options)?)?;
        let out = vad.detect(&audio(&case.name, rate)?, rate)?;
        assert_eq!(
            pairs(&out.segments),
            case.segments,
            "{} @ {} with {}",
            case.name,
            case.sample_rate,
            case.options
        );
        for (s, r) in out.segments.iter().zip(out.regions()) {
            assert_eq!(r.start, s.start as f64 / f64::from(case.sample_rate));
            assert_eq!(r.end, s.end as f64 / f64::from(case.sample_rate));
        }
    }
    Ok(())
}

#[test]
fn options_round_trip_and_validate() -> TestResult {
    let d = SpeechOptions::default();
    assert_eq!(serde_json::from_str::<SpeechOptions>("{}")?, d);
    let json = serde_json::to_string(&d)?;
    assert_eq!(serde_json::from_str::<SpeechOptions>(&json)?, d);
    assert!(serde_json::from_str::<SpeechOptions>(r#"{"treshold": 0.5}"#).is_err());
    for bad in [
        SpeechOptions {
            threshold: 1.5,
            ..d.clone()
        },
        SpeechOptions {
            threshold: f32::NAN,
            ..d.clone()
        },
        SpeechOptions {
            neg_threshold: Some(-0.1),
            ..d.clone()
        },
        SpeechOptions {
            max_speech_duration_s: Some(0.0),
            ..d.clone()
        },
    ] {
        let kind = |r: Result<_, mica_vad::VadError>| r.err().map(|e| e.kind());
        assert_eq!(kind(bad.validate()), Some(ErrorKind::Options), "{bad:?}");
        let segments = speech_segments(&[0.9; 10], 5120, SampleRate::Hz16000, &bad);
        assert_eq!(
            kind(segments.map(|_| ())),
            Some(ErrorKind::Options),
            "{bad:?}"
        );
    }
    Ok(())
}
