//! `mica shots`: real videos through the binary, every output format, bad input.

mod common;

use common::{assert_error_line, json, mica, sample};

#[test]
fn megamind_shots_json_with_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let thumbs = dir.path().join("thumbs");
    let video = sample("opencv-video", "Megamind.avi");
    let out = mica(&[
        "shots",
        &video,
        "--thumbnails",
        thumbs.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let doc = json(&out);
    assert_eq!(doc["frames"], 271);
    assert_eq!(doc["media"]["video"]["width"], 720);
    let transitions = doc["transitions"].as_array().unwrap();
    // Cuts at 98, 154 and 200 (+-1); one at frame 1 is allowed (frame 0 is black).
    let peaks: Vec<u64> = transitions
        .iter()
        .map(|t| t["peak_frame"].as_u64().unwrap())
        .filter(|&p| p > 1)
        .collect();
    assert_eq!(peaks.len(), 3, "{transitions:?}");
    for (got, want) in peaks.iter().zip([98u64, 154, 200]) {
        assert!(got.abs_diff(want) <= 1, "cut at {got}, expected {want}");
    }
    for t in transitions {
        let p = t["probability"].as_f64().unwrap();
        assert!(p > 0.5 && p <= 1.0, "{t}");
    }
    let shots = doc["shots"].as_array().unwrap();
    assert!(shots.len() == 4 || shots.len() == 5, "{shots:?}");
    let last = shots.last().unwrap();
    assert_eq!(last["end_frame"], 271);
    assert_eq!(last["end_timecode"], "00:00:11:07");
    for shot in shots {
        let jpeg = std::fs::read(shot["thumbnail"].as_str().unwrap()).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "not a JPEG");
    }
}

/// A 4 s, 25 fps clip with one hard cut after frame 49 (two lavfi sources).
fn two_shot_clip(dir: &std::path::Path) -> String {
    let clip = dir.join("two shots.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=2"])
        .args(["-f", "lavfi", "-i", "mandelbrot=s=160x120:r=25"])
        .args([
            "-filter_complex",
            "[1]trim=duration=2,setpts=PTS-STARTPTS[m];[0][m]concat=n=2:v=1:a=0[v]",
        ])
        .args(["-map", "[v]", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    clip.display().to_string()
}

#[test]
fn csv_and_edl_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let video = two_shot_clip(dir.path());
    let out = mica(&["shots", &video, "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Scene Number,Start Frame,Start Timecode"));
    // Shot 1 ends on frame 50 (1-based, the cut frame), shot 2 runs to the end.
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("1,1,00:00:00.000,0.000,50,00:00:02.000,2.000,50,"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2,51,00:00:02.000,2.000,100,00:00:04.000,4.000,50,"),
        "{text}"
    );

    let edl = dir.path().join("out.edl");
    let out = mica(&[
        "shots",
        &video,
        "--format",
        "edl",
        "-o",
        edl.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&edl).unwrap();
    assert!(
        text.starts_with("TITLE: two shots\nFCM: NON-DROP FRAME\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "001  AX       V     C        00:00:00:00 00:00:02:00 01:00:00:00 01:00:02:00"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "002  AX       V     C        00:00:02:00 00:00:04:00 01:00:02:00 01:00:04:00"
        ),
        "{text}"
    );
    assert!(text.contains("* FROM CLIP NAME: two shots.mp4"), "{text}");
}

#[test]
fn bad_input_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert_error_line(
        &mica(&["shots", empty.to_str().unwrap()]),
        &["empty", "0 bytes"],
    );

    let audio = sample("jfk", "jfk.wav");
    assert_error_line(&mica(&["shots", &audio]), &["no video stream"]);

    let missing = dir.path().join("missing.avi");
    assert_error_line(
        &mica(&["shots", missing.to_str().unwrap()]),
        &["no such file"],
    );

    let video = sample("opencv-video", "tree.avi");
    assert_error_line(
        &mica(&["shots", &video, "--threshold", "1.5"]),
        &["threshold"],
    );
    assert_error_line(
        &mica(&["shots", &video, "--format", "srt"]),
        &["json, csv or edl"],
    );
}
