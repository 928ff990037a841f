//! Per-window probabilities against onnxruntime running silero_vad.onnx on the same
//! samples (tests/golden/probabilities.json, from scripts/golden.py), at 16 and 8 kHz.

mod common;

use candle_core::Tensor;
use common::*;
use mica_vad::{SampleRate, SpeechOptions, Vad};

const TOLERANCE: f32 = 1e-4;

#[test]
fn offline_matches_onnxruntime() -> TestResult {
    let golden = golden_probabilities()?;
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let mut worst = 0.0f32;
    for g in &golden.files {
        let rate = SampleRate::from_hz(g.sample_rate)?;
        let x = audio(&g.name, rate)?;
        assert_eq!(
            x.len() as u64,
            g.samples,
            "{} @ {}: decoded length",
            g.name,
            g.sample_rate
        );
        let sum: f64 = x.iter().map(|&s| f64::from(s)).sum();
        assert!(
            (sum - g.input_sum).abs() < 1e-6,
            "{} @ {}: decoded samples differ from the golden input (sum {sum} vs {})",
            g.name,
            g.sample_rate,
            g.input_sum
        );
        let out = vad.detect(&x, rate)?;
        assert_eq!(out.probabilities.len(), g.probabilities.len());
        let (d, at) = max_diff(&out.probabilities, &g.probabilities);
        eprintln!(
            "{:>16} @ {:>5} Hz: {:>4} windows, max abs diff {d:.2e} (window {at})",
            g.name,
            g.sample_rate,
            g.probabilities.len()
        );
        assert!(
            d <= TOLERANCE,
            "{} @ {}: max abs diff {d} at window {at}",
            g.name,
            g.sample_rate
        );
        worst = worst.max(d);
    }
    eprintln!("worst max abs diff: {worst:.2e}");
    Ok(())
}

/// All recordings as independent streams of one batched forward per window.
#[test]
fn batched_streams_match_onnxruntime() -> TestResult {
    let golden = golden_probabilities()?;
    let model = model()?;
    for rate in [SampleRate::Hz16000, SampleRate::Hz8000] {
        let files: Vec<_> = golden
            .files
            .iter()
            .filter(|g| g.sample_rate == rate.hz())
            .collect();
        let inputs = files
            .iter()
            .map(|g| audio(&g.name, rate))
            .collect::<Result<Vec<_>, _>>()?;
        let b = files.len();
        let steps = files
            .iter()
            .map(|g| g.probabilities.len())
            .max()
            .unwrap_or(0);
        let mut state = model.zero_state(b)?;
        let mut rows = Vec::with_capacity(b * rate.input_len());
        let mut got: Vec<Vec<f32>> = vec![Vec::new(); b];
        for k in 0..steps {
            rows.clear();
            // Past a stream's end its row is zeros and its output ignored.
            for x in &inputs {
                rate.push_row(&mut rows, x, k);
            }
            let input = Tensor::from_slice(&rows, (b, rate.input_len()), model.device())?;
            let (probs, next) = model.forward(rate, &input, &state)?;
            state = next;
            let probs = probs.to_vec1::<f32>()?;
            for s in 0..b {
                if k < files[s].probabilities.len() {
                    got[s].push(probs[s]);
                }
            }
        }
        for (g, p) in files.iter().zip(&got) {
            let (d, at) = max_diff(p, &g.probabilities);
            eprintln!(
                "batched {:>16} @ {:>5} Hz: max abs diff {d:.2e}",
                g.name, g.sample_rate
            );
            assert!(
                d <= TOLERANCE,
                "{} @ {}: batched diff {d} at {at}",
                g.name,
                g.sample_rate
            );
        }
    }
    Ok(())
}
