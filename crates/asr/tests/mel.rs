//! The log-mel front end against a numpy port of openai's `log_mel_spectrogram`
//! (tests/golden/model_mel.json from scripts/golden_model.py), and the computed filters
//! against openai's mel_filters.npz.

use candle_core::Device;
use mica_asr::mel::{N_BINS, mel_filters};
use mica_asr::{LogMel, mel_batch};
use serde::Deserialize;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct Case {
    name: String,
    n_mels: usize,
    total_frames: usize,
    frames: Vec<usize>,
    values: Vec<f32>,
    row_sums: Vec<f64>,
    samples: usize,
    sum: f64,
}

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

/// golden_model.py's `lcg_noise`, bit for bit.
fn lcg_noise(n: usize) -> Vec<f32> {
    let mut s: u32 = 12345;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = (s >> 16) as i32 - 32768;
            v as f32 / 32768.0 * 0.25
        })
        .collect()
}

fn audio(name: &str, n: usize) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    Ok(match name {
        "jfk" => {
            let dir = mica_models::ensure("jfk")?;
            mica_media::load_all(dir.join("jfk.wav"))?.samples
        }
        "noise" => lcg_noise(n),
        other => return Err(format!("unknown case {other}").into()),
    })
}

#[test]
fn filters_match_openai_npz() -> TestResult {
    let dir = mica_models::ensure("mel-filters")?;
    let npz = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    for n_mels in [80, 128] {
        let want = npz[&format!("mel_{n_mels}")]
            .flatten_all()?
            .to_vec1::<f32>()?;
        let got = mel_filters(n_mels)?;
        assert_eq!(got.len(), n_mels * N_BINS);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("mel_{n_mels}: max abs diff {worst:.2e} (filter peak ~0.03)");
        assert!(worst < 1e-6, "mel_{n_mels}: max abs diff {worst}");
    }
    Ok(())
}

#[test]
fn log_mel_matches_openai() -> TestResult {
    let g: Golden = serde_json::from_str(include_str!("golden/model_mel.json"))?;
    for c in &g.cases {
        let x = audio(&c.name, c.samples)?;
        assert_eq!(x.len(), c.samples, "{}: sample count", c.name);
        let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - c.sum).abs() < 1e-6, "{}: input differs", c.name);
        let mel = LogMel::new(c.n_mels)?.compute(&x)?;
        assert_eq!(mel.total_frames(), c.total_frames);
        assert_eq!(mel.n_frames() + 3000, c.total_frames);
        let mut worst = 0.0f32;
        for (i, &f) in c.frames.iter().enumerate() {
            for m in 0..c.n_mels {
                let want = c.values[i * c.n_mels + m];
                let d = (mel.row(m)[f] - want).abs();
                worst = worst.max(d);
            }
        }
        let mut worst_sum = 0.0f64;
        for (m, &want) in c.row_sums.iter().enumerate() {
            let got: f64 = mel.row(m).iter().map(|&v| f64::from(v)).sum();
            worst_sum = worst_sum.max((got - want).abs() / c.total_frames as f64);
        }
        eprintln!(
            "{} ({} mels): max abs diff {worst:.2e}, mean row diff {worst_sum:.2e}",
            c.name, c.n_mels
        );
        assert!(worst < 2e-5, "{}: max abs diff {worst}", c.name);
        assert!(
            worst_sum < 1e-5,
            "{}: row sums differ by {worst_sum}",
            c.name
        );
    }
    Ok(())
}

/// A window cut from a whole-file mel equals the same frames of the file.
#[test]
fn batch_windows_slice_the_file() -> TestResult {
    let x = lcg_noise(16000 * 40);
    let mel = LogMel::new(80)?.compute(&x)?;
    let t = mel_batch(&[(&mel, 0), (&mel, 2500)], &Device::Cpu)?;
    assert_eq!(t.dims(), &[2, 80, 3000]);
    let w = t.get(1)?.to_vec2::<f32>()?;
    for m in [0, 40, 79] {
        assert_eq!(w[m][..], mel.row(m)[2500..5500]);
    }
    Ok(())
}
