//! A 2-hour film in flat memory. Alone in its own test binary so the process's peak RSS is
//! this test's.
//!
//! ffmpeg's lavfi makes a 2-hour clip at 25 fps (180,000 frames; a 96x54 picture, so it is
//! made in about 40 s and decoded in about 20 s on 2 cores). The frame source decodes all
//! of it to 48x27 with the stream's timestamps and the windower cuts every window of it,
//! in flat memory. The network at ~190 frames/s on 2 cores would need 16 minutes for the
//! whole film, too long for CI, so the shot stream scores its first 6,000 frames (4
//! minutes) and must stay flat after the first 1,000: windows are dropped once scored
//! and only 16 bytes of scores per frame are kept (under 3 MB for 2 hours).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;
use mica_media::{FrameOptions, FrameSource};
use mica_scenes::windows::Windower;
use mica_scenes::{ShotDetector, ShotOptions};

const SECONDS: u64 = 2 * 3600;
const FPS: u64 = 25;
const SCORED_FRAMES: u64 = 6_000;
const MAX_GROWTH_MB: f64 = 40.0;

/// Deletes the clip however the test ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn two_hour_clip(dir: &Path) -> Res<TempFile> {
    let path = dir.join(format!("mica-two-hours-{}.mp4", std::process::id()));
    let file = TempFile(path.clone());
    let status = Command::new(mica_media::Tools::from_env().ffmpeg)
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=96x54:rate={FPS}:duration={SECONDS}"))
        .args(["-c:v", "mpeg4", "-q:v", "10", "-g", "250"])
        .arg(&path)
        .status()?;
    if !status.success() {
        return Err(format!("ffmpeg could not make the clip: {status}").into());
    }
    Ok(file)
}

#[test]
fn two_hour_film_in_flat_memory() -> TestResult {
    let started = Instant::now();
    let clip = two_hour_clip(&std::env::temp_dir())?;
    let made = started.elapsed().as_secs_f64();
    let options = FrameOptions::new(48, 27);

    // The frame source and the windower over the whole film.
    let mut source = FrameSource::open(&clip.0, &options)?;
    let mut windower = Windower::new();
    let (mut frames, mut windows, mut last_pts) = (0u64, 0u64, -1.0f64);
    let mut before = None;
    while let Some(frame) = source.next_frame()? {
        assert!(
            frame.pts > last_pts,
            "timestamps go forward: {} then {}",
            last_pts,
            frame.pts
        );
        last_pts = frame.pts;
        windows += u64::from(windower.push(&frame.data).is_some());
        frames += 1;
        if frames == 60 * FPS {
            mica_core::process::reset_peak_rss();
            before = Some(mica_core::process::peak_rss_mb()?);
        }
    }
    windows += windower.finish().len() as u64;
    let before = before.ok_or("the clip is shorter than a minute")?;
    let after = mica_core::process::peak_rss_mb()?;
    eprintln!(
        "decoded {frames} frames ({windows} windows) in {:.1} s after {made:.1} s making the \
         clip; peak RSS {before:.1} MB after a minute, {after:.1} MB after 2 hours",
        started.elapsed().as_secs_f64() - made
    );
    assert_eq!(frames, SECONDS * FPS);
    assert!(
        (last_pts - (SECONDS * FPS - 1) as f64 / FPS as f64).abs() < 1e-3,
        "{last_pts}"
    );
    // The reference pads to a multiple of 50 frames and cuts one window per 50.
    assert_eq!(windows, frames.div_ceil(50));
    assert!(
        after - before < MAX_GROWTH_MB,
        "decoding 2 hours grew the peak RSS by {:.1} MB",
        after - before
    );

    // The network over the first frames of the same film.
    let detector = ShotDetector::new(model()?, ShotOptions::default())?;
    let mut stream = detector.stream();
    let mut source = FrameSource::open(&clip.0, &options)?;
    let clock = Instant::now();
    let mut before = 0.0;
    while stream.frames() < SCORED_FRAMES {
        let frame = source.next_frame()?.ok_or("the clip ended early")?;
        stream.push(&frame)?;
        if stream.frames() == 1_000 {
            mica_core::process::reset_peak_rss();
            before = mica_core::process::peak_rss_mb()?;
        }
    }
    drop(source);
    let scores = stream.finish()?;
    let after = mica_core::process::peak_rss_mb()?;
    eprintln!(
        "scored {} frames in {:.1} s; peak RSS {before:.1} MB after 1,000 frames, {after:.1} MB \
         after {SCORED_FRAMES}",
        scores.len(),
        clock.elapsed().as_secs_f64()
    );
    assert_eq!(scores.len() as u64, SCORED_FRAMES);
    assert!(
        after - before < MAX_GROWTH_MB,
        "scoring grew the peak RSS by {:.1} MB",
        after - before
    );
    Ok(())
}
