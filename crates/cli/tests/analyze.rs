//! `mica analyze`: every task in one pass, each output format, bad arguments.

mod common;

use common::*;

#[test]
fn one_pass_gives_every_task_and_format() {
    let video = sample("opencv-video", "Megamind.avi");
    let report = json(&mica(&[
        "analyze",
        &video,
        "--tasks",
        "vad,asr,diarize,shots",
    ]));
    for key in [
        "media",
        "transcript",
        "speech",
        "speakers",
        "shots",
        "timings",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    let stages = report["timings"]["stages"].as_object().unwrap();
    for stage in ["decode", "vad", "asr", "diarize", "shots"] {
        assert!(stages.contains_key(stage), "{stage} not timed");
    }

    // Subtitles with speakers from the same pass, and shots as an EDL.
    let jfk = sample("jfk", "jfk.wav");
    let out = mica(&["analyze", &jfk, "--tasks", "asr,diarize", "--format", "srt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srt = String::from_utf8_lossy(&out.stdout);
    assert!(
        srt.contains("[SPEAKER_00]") && srt.contains("ask not"),
        "{srt}"
    );
    let out = mica(&["analyze", &video, "--tasks", "shots", "--format", "edl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FCM:"));

    // Audio only with shots asked for: a result, and a warning in the document.
    let report = json(&mica(&["analyze", &jfk, "--tasks", "vad,shots"]));
    assert!(report.get("shots").is_none());
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("no video"))
    );
}

#[test]
fn many_inputs_write_one_sidecar_set_each() {
    let jfk = sample("jfk", "jfk.wav");
    let video = sample("opencv-video", "Megamind.avi");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = mica(&[
        "analyze",
        &jfk,
        &video,
        "--tasks",
        "asr,diarize,shots",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Megamind.analysis.json",
            "Megamind.edl",
            "Megamind.rttm",
            "Megamind.shots.csv",
            "Megamind.srt",
            "Megamind.txt",
            "Megamind.vtt",
            "jfk.analysis.json",
            "jfk.rttm",
            "jfk.srt",
            "jfk.txt",
            "jfk.vtt",
        ]
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("jfk.analysis.json")).unwrap()).unwrap();
    assert!(
        report["transcript"]["segments"][0]["text"]
            .as_str()
            .unwrap()
            .contains("ask not")
    );
    let srt = std::fs::read_to_string(out_dir.join("jfk.srt")).unwrap();
    assert!(srt.contains("[SPEAKER_00]"), "{srt}");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let jfk = sample("jfk", "jfk.wav");
    let out = mica(&["analyze", &jfk, "--tasks", "speech"]);
    assert_error_line(
        &out,
        &["unknown task", "speech", "vad, asr, diarize and shots"],
    );
    let out = mica(&["analyze", &jfk, "--format", "xml"]);
    assert!(!out.status.success());
    let out = mica(&["analyze", &jfk, "--num-speakers", "0"]);
    assert_error_line(&out, &["invalid diarization option"]);
    let out = mica(&["analyze", "/no/such/file.wav"]);
    assert_error_line(&out, &["no such file"]);
    let out = mica(&["analyze", &jfk, &jfk]);
    assert_error_line(&out, &["2 inputs need --out-dir"]);
    let out = mica(&["analyze", &jfk, "--tasks", "vad", "--format", "srt"]);
    assert_error_line(&out, &["--format srt needs the asr task"]);
}
