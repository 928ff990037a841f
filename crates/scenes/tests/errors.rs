//! Bad input: each case gives a defined result, never a panic or a hang.

mod common;

use std::process::Command;

use common::*;
use mica_core::error::RunError;
use mica_media::MediaError;
use mica_scenes::{ScenesError, ShotDetector, ShotOptions};

fn detector() -> Res<ShotDetector> {
    Ok(ShotDetector::new(model()?, ShotOptions::default())?)
}

#[test]
fn megamind_bugy_is_read_with_its_own_frame_rate() -> TestResult {
    // Megamind_bugy.avi is Megamind with a wrong header (30 fps, 9 s) and packed B-frames:
    // ffmpeg decodes every picture, so the same cuts come out, timed at the stated 30 fps.
    let list = detector()?.detect_path(video("Megamind_bugy.avi")?)?;
    assert_eq!(list.fps, 30.0);
    assert!(list.frames.abs_diff(271) <= 1, "{} frames", list.frames);
    let peaks: Vec<u64> = list
        .transitions
        .iter()
        .map(|t| t.peak_frame)
        .filter(|&p| p > 1)
        .collect();
    assert_eq!(peaks.len(), 3, "{:?}", list.transitions);
    for (p, w) in peaks.iter().zip([98u64, 154, 200]) {
        assert!(p.abs_diff(w) <= 1, "cut at {p}, expected {w}");
    }
    let cut = &list.shots[list.shots.len() - 1];
    assert!(
        (cut.start - cut.start_frame as f64 / 30.0).abs() < 1e-6,
        "{cut:?}"
    );
    assert_eq!(list.shots.last().map(|s| s.end_frame), Some(list.frames));
    Ok(())
}

#[test]
fn audio_only_empty_and_missing_inputs_are_errors() -> TestResult {
    let d = detector()?;
    let jfk = mica_models::ensure("jfk")?.join("jfk.wav");
    match d.detect_path(&jfk) {
        Err(ScenesError::Media(MediaError::NoVideoStream { .. })) => {}
        other => panic!("audio-only: {other:?}"),
    }
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"")?;
    match d.detect_path(&empty) {
        Err(ScenesError::Media(MediaError::Empty { .. })) => {}
        other => panic!("0-byte file: {other:?}"),
    }
    let text = dir.path().join("notes.avi");
    std::fs::write(&text, b"not a video\n".repeat(50))?;
    let err = d
        .detect_path(&text)
        .expect_err("a text file is not a video");
    assert!(err.to_string().contains("notes.avi"), "{err}");
    Ok(())
}

#[test]
fn one_frame_video_is_one_shot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("one.mkv");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x48:r=25:d=1",
        ])
        .args(["-frames:v", "1", "-c:v", "mpeg4"])
        .arg(&clip)
        .status()?;
    assert!(status.success());
    let list = detector()?.detect_path(&clip)?;
    assert_eq!(list.frames, 1);
    assert!(list.transitions.is_empty(), "{:?}", list.transitions);
    assert_eq!(list.shots.len(), 1);
    assert_eq!((list.shots[0].start_frame, list.shots[0].end_frame), (0, 1));
    assert!(
        (list.shots[0].end - 0.04).abs() < 1e-6,
        "{:?}",
        list.shots[0]
    );
    Ok(())
}

#[test]
fn options_are_checked() -> TestResult {
    for bad in [
        ShotOptions {
            threshold: 1.0,
            ..ShotOptions::default()
        },
        ShotOptions {
            threshold: f32::NAN,
            ..ShotOptions::default()
        },
        ShotOptions {
            batch_windows: 1000,
            ..ShotOptions::default()
        },
        ShotOptions {
            queue_frames: 0,
            ..ShotOptions::default()
        },
    ] {
        match ShotDetector::new(model()?, bad.clone()) {
            Err(ScenesError::Run(RunError::InvalidOption { .. })) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A frame of the wrong size is refused with its index.
    let mut stream = detector()?.stream();
    match stream.push_rgb(&[0u8; 10], 0.0) {
        Err(ScenesError::FrameSize {
            index: 0,
            bytes: 10,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    Ok(())
}
