//! Inputs with defined outcomes: empty, shorter than a window, non-finite samples, other
//! sample rates, bad weights, and detection over a decoding stream.

mod common;

use std::io::Write;

use candle_core::{Device, Tensor};
use common::*;
use mica_core::error::{ErrorKind, RunError};
use mica_media::{AudioOptions, AudioStream};
use mica_vad::{SampleRate, SileroVad, SpeechOptions, Vad, VadError};

fn vad() -> Res<Vad> {
    Ok(Vad::new(model()?, SpeechOptions::default())?)
}

#[test]
fn empty_audio_has_no_windows_and_no_regions() -> TestResult {
    for rate in [SampleRate::Hz16000, SampleRate::Hz8000] {
        let out = vad()?.detect(&[], rate)?;
        assert!(out.probabilities.is_empty());
        assert!(out.segments.is_empty());
        assert_eq!(out.duration(), 0.0);
    }
    Ok(())
}

#[test]
fn audio_shorter_than_a_window_gives_one_padded_window() -> TestResult {
    let x = audio("jfk", SampleRate::Hz16000)?;
    // Loud speech, but far shorter than min_speech_duration_ms: one window, no region.
    let out = vad()?.detect(&x[20_000..20_300], SampleRate::Hz16000)?;
    assert_eq!(out.probabilities.len(), 1);
    assert!(out.segments.is_empty());
    // A region may not run past the audio.
    let out = vad()?.detect(&x[..16_000 + 100], SampleRate::Hz16000)?;
    assert!(out.segments.iter().all(|s| s.end <= 16_100));
    Ok(())
}

#[test]
fn silence_has_no_regions() -> TestResult {
    let out = vad()?.detect(&vec![0.0; 16_000 * 5], SampleRate::Hz16000)?;
    assert_eq!(out.probabilities.len(), 157);
    assert!(out.segments.is_empty());
    assert!(out.probabilities.iter().all(|&p| p < 0.1));
    Ok(())
}

#[test]
fn non_finite_samples_are_an_error() -> TestResult {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.0f32; 2000];
        x[1234] = bad;
        match vad()?.detect(&x, SampleRate::Hz16000) {
            Err(VadError::Run(RunError::NonFinite { index: 1234, .. })) => {}
            other => panic!("expected NonFinite at 1234, got {other:?}"),
        }
        // In a stream the index counts from the stream's start and the chunk is not used.
        let mut stream = vad()?.stream(SampleRate::Hz8000)?;
        stream.push(&[0.1; 300])?;
        let err = stream.push(&x).err().ok_or("expected an error")?;
        assert!(
            matches!(err, VadError::Run(RunError::NonFinite { index: 1534, .. })),
            "{err}"
        );
        assert!(err.to_string().contains("sample 1534"), "{err}");
        assert_eq!(stream.samples(), 300);
    }
    Ok(())
}

#[test]
fn only_16k_and_8k_are_accepted() {
    assert_eq!(SampleRate::from_hz(16_000).ok(), Some(SampleRate::Hz16000));
    assert_eq!(SampleRate::from_hz(8_000).ok(), Some(SampleRate::Hz8000));
    for hz in [0, 11_025, 22_050, 44_100, 48_000] {
        let err = SampleRate::from_hz(hz).err();
        assert!(matches!(err, Some(VadError::UnsupportedRate(h)) if h == hz));
    }
}

#[test]
fn batched_forward_checks_shapes() -> TestResult {
    let m = model()?;
    let input = Tensor::zeros((3, 576), candle_core::DType::F32, &Device::Cpu)?;
    let wrong_rate = m.forward(SampleRate::Hz8000, &input, &m.zero_state(3)?);
    assert!(
        matches!(
            wrong_rate,
            Err(VadError::Run(RunError::InputShape { what: "input", .. }))
        ),
        "{wrong_rate:?}"
    );
    let wrong_state = m.forward(SampleRate::Hz16000, &input, &m.zero_state(2)?);
    assert!(
        matches!(
            wrong_state,
            Err(VadError::Run(RunError::InputShape { what: "state", .. }))
        ),
        "{wrong_state:?}"
    );
    assert_eq!(wrong_state.err().map(|e| e.kind()), Some(ErrorKind::Input));
    let (p, s) = m.forward(SampleRate::Hz16000, &input, &m.zero_state(3)?)?;
    assert_eq!(p.dims(), [3]);
    assert_eq!(s.dims(), [2, 3, 128]);
    Ok(())
}

#[test]
fn bad_weights_are_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nothing.safetensors");
    let err = SileroVad::from_path(&missing, &Device::Cpu)
        .err()
        .ok_or("loaded nothing")?;
    assert!(
        matches!(err, VadError::Run(RunError::Weights { .. })),
        "{err}"
    );
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::File::create(&garbage)?.write_all(b"not a safetensors file")?;
    let err = SileroVad::from_path(&garbage, &Device::Cpu)
        .err()
        .ok_or("loaded garbage")?;
    assert!(
        matches!(err, VadError::Run(RunError::Weights { .. })),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Model);
    // A valid file without the network's tensors names what is missing.
    let partial = dir.path().join("partial.safetensors");
    let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?;
    candle_core::safetensors::save(&[("16k.conv1.bias", t)].into_iter().collect(), &partial)?;
    let err = SileroVad::from_path(&partial, &Device::Cpu)
        .err()
        .ok_or("loaded partial")?;
    let msg = err.to_string();
    assert!(
        msg.contains("stft_conv.weight") && msg.contains("partial"),
        "{msg}"
    );
    Ok(())
}

/// The decoding stream path (small chunks, flat memory) equals detection over the whole
/// decoded file.
#[test]
fn detect_audio_equals_detect() -> TestResult {
    let path = mica_models::ensure("pyannote-sample")?.join("sample.wav");
    let options = AudioOptions {
        chunk_samples: 1000,
        ..AudioOptions::default()
    };
    let mut stream = AudioStream::open_with(&path, &options)?;
    let vad = vad()?;
    let streamed = vad.detect_audio(&mut stream, true)?;
    let whole = vad.detect(&mica_media::load_all(&path)?.samples, SampleRate::Hz16000)?;
    assert_eq!(streamed, whole);
    let mut stream = AudioStream::open_with(&path, &options)?;
    let lean = vad.detect_audio(&mut stream, false)?;
    assert!(lean.probabilities.is_empty());
    assert_eq!(lean.segments, whole.segments);
    Ok(())
}

/// Input at another rate goes through the decoder's resampler: 8 kHz JFK, decoded to
/// 16 kHz, finds nearly the same speech as the original.
#[test]
fn other_rates_are_resampled_by_the_decoder() -> TestResult {
    let x = audio("jfk", SampleRate::Hz8000)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("jfk8k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec)?;
    for s in &x {
        w.write_sample((s * 32767.0).round() as i16)?;
    }
    w.finalize()?;
    let vad = vad()?;
    let resampled = vad.detect_audio(&mut AudioStream::open(&path)?, false)?;
    let original = vad.detect(&audio("jfk", SampleRate::Hz16000)?, SampleRate::Hz16000)?;
    assert_eq!(resampled.sample_rate, 16_000);
    // Band-limited audio is not the same input, so compare speech coverage, not regions.
    let (a, b) = (resampled.regions(), original.regions());
    let shared: f64 = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| x.overlap(y)))
        .sum();
    let total = |r: &[mica_core::time::TimeRange]| r.iter().map(|x| x.duration()).sum::<f64>();
    assert!(
        shared > 0.9 * total(&b) && shared > 0.9 * total(&a),
        "{a:?} vs {b:?}"
    );
    Ok(())
}
