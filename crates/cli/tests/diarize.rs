//! `mica diarize` as scripts call it: JSON and RTTM on stdout, speaker options, one-line
//! errors, exit codes.

mod common;

use common::{assert_error_line, json, mica, sample};

fn pyannote_sample() -> String {
    sample("pyannote-sample", "sample.wav")
}

/// `(start, end, speaker)` of each turn of a JSON report.
fn turns(report: &serde_json::Value) -> Vec<(f64, f64, String)> {
    report["speakers"]
        .as_array()
        .expect("a speakers array")
        .iter()
        .map(|t| {
            (
                t["start"].as_f64().unwrap(),
                t["end"].as_f64().unwrap(),
                t["speaker"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn labels(turns: &[(f64, f64, String)]) -> std::collections::BTreeSet<String> {
    turns.iter().map(|t| t.2.clone()).collect()
}

#[test]
fn json_rttm_and_speaker_counts() {
    let input = pyannote_sample();
    let report = json(&mica(&["diarize", &input, "--num-speakers", "2"]));
    assert_eq!(report["media"]["duration"].as_f64(), Some(30.0));
    assert!(report["timings"]["stages"]["diarize"].as_f64().unwrap() > 0.0);
    let t = turns(&report);
    assert_eq!(
        labels(&t),
        ["SPEAKER_00", "SPEAKER_01"].map(String::from).into()
    );
    // Speech starts at 6.69 s in the reference, and nothing lies outside the audio.
    assert!(
        t.iter().all(|(s, e, _)| *s >= 6.0 && s < e && *e <= 30.0),
        "{t:?}"
    );

    // The same turns as RTTM, into a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.rttm");
    let out = mica(&[
        "diarize",
        &input,
        "--num-speakers",
        "2",
        "--format",
        "rttm",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rttm = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = rttm.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 10, "{l}");
        assert_eq!((f[0], f[1], f[2]), ("SPEAKER", "sample", "1"));
        assert!(f[7].starts_with("SPEAKER_0"), "{l}");
    }

    // A range of speaker counts, and the spectral method.
    let report = json(&mica(&[
        "diarize",
        &input,
        "--min-speakers",
        "1",
        "--max-speakers",
        "2",
        "--method",
        "spectral",
    ]));
    let n = labels(&turns(&report)).len();
    assert!((1..=2).contains(&n), "{n} speakers");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let input = pyannote_sample();
    let out = mica(&[
        "diarize",
        &input,
        "--num-speakers",
        "2",
        "--max-speakers",
        "3",
    ]);
    assert_error_line(&out, &["--num-speakers", "--max-speakers"]);
    assert_eq!(out.status.code(), Some(2));
    let out = mica(&[
        "diarize",
        &input,
        "--min-speakers",
        "3",
        "--max-speakers",
        "2",
    ]);
    assert_error_line(&out, &["min_speakers 3", "max_speakers 2"]);
    let out = mica(&["diarize", &input, "--num-speakers", "0"]);
    assert_error_line(&out, &["speaker counts start at 1"]);
    let out = mica(&["diarize", &input, "--format", "srt"]);
    assert_error_line(&out, &["json or rttm"]);
    let out = mica(&["diarize", &input, "--method", "kmeans"]);
    assert_error_line(&out, &["agglomerative or spectral"]);
    let out = mica(&["diarize", "/no/such/file.wav"]);
    assert_error_line(&out, &["/no/such/file.wav", "no such file"]);
    let dir = tempfile::tempdir().unwrap();
    let out = mica(&[
        "diarize",
        &input,
        "--segmentation-model",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap()
            .starts_with("error: ")
    );
}

#[test]
fn silence_gives_no_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silence.wav");
    // 3 s of 16-bit zeros.
    let n = 3 * 16_000u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&16_000u32.to_le_bytes());
    w.extend_from_slice(&32_000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(2 * n).to_le_bytes());
    w.resize(w.len() + 2 * n as usize, 0);
    std::fs::write(&path, w).unwrap();
    let p = path.to_str().unwrap();
    let report = json(&mica(&["diarize", p]));
    assert!(turns(&report).is_empty());
    let out = mica(&["diarize", p, "--format", "rttm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
