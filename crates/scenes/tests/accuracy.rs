//! Accuracy on real and synthetic videos: cuts found where they are, none where there are
//! none, with precision, recall and F1 printed.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use mica_scenes::{ShotDetector, ShotList, ShotOptions};

fn detect(path: &Path) -> Res<ShotList> {
    let detector = ShotDetector::new(model()?, ShotOptions::default())?;
    Ok(detector.detect_path(path)?)
}

/// Matches detected transitions to true ones (`[start, end)` frame ranges, widened by one
/// frame each side); prints and returns (precision, recall, F1).
fn score(name: &str, list: &ShotList, truth: &[(u64, u64)]) -> (f64, f64, f64) {
    let found: Vec<(u64, u64)> = list
        .transitions
        .iter()
        .map(|t| (t.start_frame, t.end_frame))
        .collect();
    let hit = |d: &(u64, u64), t: &(u64, u64)| d.0 < t.1 + 1 && t.0.saturating_sub(1) < d.1;
    let tp_truth = truth
        .iter()
        .filter(|t| found.iter().any(|d| hit(d, t)))
        .count();
    let tp_found = found
        .iter()
        .filter(|d| truth.iter().any(|t| hit(d, t)))
        .count();
    let precision = if found.is_empty() {
        1.0
    } else {
        tp_found as f64 / found.len() as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        tp_truth as f64 / truth.len() as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    eprintln!(
        "{name}: found {found:?}, truth {truth:?}: precision {precision:.3} recall {recall:.3} F1 {f1:.3}"
    );
    (precision, recall, f1)
}

#[test]
fn tree_has_no_cuts() -> TestResult {
    let list = detect(&video("tree.avi")?)?;
    assert!(list.frames > 400, "{} frames", list.frames);
    let (_, _, f1) = score("tree.avi", &list, &[]);
    assert!(list.transitions.is_empty(), "{:?}", list.transitions);
    assert_eq!(list.shots.len(), 1);
    assert_eq!(
        (list.shots[0].start_frame, list.shots[0].end_frame),
        (0, list.frames)
    );
    assert_eq!(f1, 1.0);
    Ok(())
}

#[test]
fn synthetic_hard_cuts_and_a_dissolve_are_all_found() -> TestResult {
    // Four 3 s sources at 25 fps: hard cuts after frames 74 and 149, then a 1 s dissolve
    // (xfade) over frames 200..225. 275 frames.
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("cuts.mp4");
    let sources = [
        "mandelbrot=s=320x240:r=25",
        "testsrc2=s=320x240:r=25",
        "life=s=320x240:r=25:mold=10:ratio=0.2:life_color=#ffcc00:death_color=#202080",
        "smptehdbars=s=320x240:r=25",
    ];
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"]);
    for s in sources {
        cmd.args(["-f", "lavfi", "-i", s]);
    }
    let cut = |i: usize| format!("[{i}]trim=duration=3,setpts=PTS-STARTPTS,format=yuv420p");
    let graph = format!(
        "{}[a];{}[b];{}[c];{},hue=H=2*PI*t/3[d];[c][d]xfade=transition=fade:duration=1:offset=2[cd];\
         [a][b][cd]concat=n=3:v=1:a=0[v]",
        cut(0),
        cut(1),
        cut(2),
        cut(3)
    );
    cmd.args([
        "-filter_complex",
        &graph,
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
    ]);
    let status = cmd.arg(&clip).status()?;
    assert!(status.success(), "ffmpeg could not make the clip");

    let list = detect(&clip)?;
    assert_eq!(list.frames, 275);
    let truth = [(74, 76), (149, 151), (200, 225)];
    let (precision, recall, f1) = score("synthetic", &list, &truth);
    assert_eq!((precision, recall, f1), (1.0, 1.0, 1.0));
    // The dissolve's shots do not overlap it by more than the reference's one frame.
    assert_eq!(list.shots.len(), 4, "{:?}", list.shots);
    assert!((list.fps - 25.0).abs() < 1e-9);
    assert_eq!(list.shots[1].start_timecode, "00:00:03:00");
    Ok(())
}
