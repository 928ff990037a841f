//! Image-sequence input: a directory of numbered images, or a printf pattern.

mod common;

use std::process::Command;

use common::*;
use mica_media::{FrameOptions, Rational};
use mica_scenes::{ShotDetector, ShotOptions};

#[test]
fn numbered_images_as_a_directory_and_as_a_pattern() -> TestResult {
    // 40 frames of one source then 40 of another: one cut after frame 39.
    let dir = tempfile::tempdir()?;
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=s=96x54:r=25:d=1.6"])
        .args(["-f", "lavfi", "-i", "mandelbrot=s=96x54:r=25"])
        .args([
            "-filter_complex",
            "[1]trim=duration=1.6,setpts=PTS-STARTPTS[m];[0][m]concat=n=2:v=1:a=0[v]",
        ])
        .args(["-map", "[v]", "-start_number", "7"])
        .arg(dir.path().join("img_%04d.png"))
        .status()?;
    assert!(status.success());
    let detector = ShotDetector::new(model()?, ShotOptions::default())?;

    let list = detector.detect_path(dir.path())?;
    assert_eq!(list.frames, 80);
    assert_eq!(list.rate, Rational::new(25, 1));
    let peaks: Vec<u64> = list.transitions.iter().map(|t| t.peak_frame).collect();
    assert_eq!(peaks.len(), 1, "{:?}", list.transitions);
    assert!(peaks[0].abs_diff(39) <= 1, "{peaks:?}");
    assert!((list.shots[1].start - 1.6).abs() < 0.05, "{:?}", list.shots);

    // The same files by pattern, at 10 fps.
    let options = FrameOptions {
        sequence_rate: Rational::new(10, 1),
        constant_rate: true,
        ..FrameOptions::new(48, 27)
    };
    let source = mica_media::FrameSource::open(dir.path().join("img_%04d.png"), &options)?;
    let list = detector.detect_source(source, dir.path())?;
    assert_eq!(list.frames, 80);
    assert_eq!(list.fps, 10.0);
    assert!((list.duration - 8.0).abs() < 1e-6, "{}", list.duration);

    // A directory without numbered images is still an error.
    let empty = tempfile::tempdir()?;
    let err = detector
        .detect_path(empty.path())
        .err()
        .ok_or("an empty directory gave shots")?;
    assert!(matches!(err, mica_scenes::ScenesError::Media(_)), "{err}");
    assert_eq!(err.kind(), mica_core::error::ErrorKind::Media);
    Ok(())
}

/// One network shared by several threads at once gives each the scores it gives alone.
#[test]
fn one_model_shared_by_threads_gives_the_same_scores() -> TestResult {
    let frames = frames(&video("Megamind.avi")?)?;
    let frames = &frames[..frames.len().min(300)];
    let detector = ShotDetector::new(model()?, ShotOptions::default())?;
    let score = |detector: &ShotDetector| -> Res<mica_scenes::FrameScores> {
        let mut stream = detector.stream();
        for f in frames {
            stream.push(f)?;
        }
        Ok(stream.finish()?)
    };
    let alone = score(&detector)?;
    let shared: Vec<mica_scenes::FrameScores> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| score(&detector).map_err(|e| e.to_string())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scoring thread").map_err(Into::into))
            .collect::<Res<_>>()
    })?;
    for scores in shared {
        assert_eq!(scores, alone);
    }
    Ok(())
}
