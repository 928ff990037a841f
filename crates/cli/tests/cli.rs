//! The `mica` binary as scripts call it: JSON on stdout, one-line errors, exit codes.

mod common;

use std::process::Output;

use common::{json, mica, sample};

/// The last stderr line is one `error: ...` line naming the input.
fn assert_one_line_error(out: &Output, needle: &str) {
    common::assert_error_line(out, &[needle]);
}

#[test]
fn models_list_json_names_every_asset() {
    let rows = json(&mica(&["models", "list", "--format", "json"]));
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in [
        "tiny.en",
        "base",
        "silero-v6",
        "transnetv2",
        "jfk",
        "opencv-video",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
}

#[test]
fn fetch_of_an_unknown_name_fails_cleanly() {
    let out = mica(&["models", "fetch", "large-v9"]);
    assert_one_line_error(&out, "large-v9");
}

#[test]
fn probe_describes_and_decodes_audio() {
    let report = json(&mica(&["probe", &sample("jfk", "jfk.wav")]));
    assert_eq!(report["media"]["duration"], 11.0);
    assert_eq!(report["media"]["audio"]["sample_rate"], 16000);
    assert_eq!(report["decoded"]["audio_samples"], 176_000);
    assert!(report["media"].get("video").is_none());
}

#[test]
fn probe_describes_and_decodes_video() {
    let report = json(&mica(&["probe", &sample("opencv-video", "Megamind.avi")]));
    assert_eq!(report["media"]["video"]["width"], 720);
    assert_eq!(report["decoded"]["video_frames"], 270);
    let headers_only = json(&mica(&[
        "probe",
        "--no-decode",
        &sample("opencv-video", "Megamind.avi"),
    ]));
    assert!(headers_only.get("decoded").is_none());
}

#[test]
fn probe_writes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let out = mica(&[
        "probe",
        "--no-decode",
        "-o",
        path.to_str().unwrap(),
        &sample("jfk", "jfk.wav"),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report["media"]["audio"]["channels"], 1);
}

#[test]
fn probe_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not media at all\n".repeat(100)).unwrap();
    for (path, reason) in [
        (dir.path().join("missing.wav"), "no such file"),
        (dir.path().to_path_buf(), "directory"),
        (empty, "empty"),
        (text, "not a media file"),
    ] {
        let p = path.to_str().unwrap();
        let out = mica(&["probe", p]);
        assert_one_line_error(&out, p);
        assert_one_line_error(&out, reason);
    }
}

#[test]
fn bad_arguments_exit_non_zero() {
    let out = mica(&["probe"]);
    assert!(!out.status.success());
    let out = mica(&["no-such-command"]);
    assert!(!out.status.success());
}
