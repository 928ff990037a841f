//! `mica vad` as scripts call it: JSON and RTTM on stdout, one-line errors, exit codes.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{json, mica, sample};

fn jfk() -> String {
    sample("jfk", "jfk.wav")
}

/// `[start, end]` of each speech region of a JSON report.
fn regions(report: &serde_json::Value) -> Vec<(f64, f64)> {
    report["speech"]
        .as_array()
        .expect("a speech array")
        .iter()
        .map(|r| (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap()))
        .collect()
}

/// Fails with exactly one stderr line, `error: ...`, containing every needle.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    common::assert_error_line(out, needles);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A valid 16 kHz mono 16-bit wav with no samples.
fn empty_wav(path: &Path) {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&36u32.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&16_000u32.to_le_bytes());
    h.extend_from_slice(&32_000u32.to_le_bytes()); // bytes per second
    h.extend_from_slice(&2u16.to_le_bytes()); // block align
    h.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    h.extend_from_slice(b"data");
    h.extend_from_slice(&0u32.to_le_bytes());
    std::fs::write(path, h).unwrap();
}

#[test]
fn json_on_jfk_finds_speech_inside_the_recording() {
    let report = json(&mica(&["vad", &jfk()]));
    assert_eq!(report["media"]["duration"], 11.0);
    let speech = regions(&report);
    assert!(!speech.is_empty());
    let total: f64 = speech.iter().map(|(s, e)| e - s).sum();
    // JFK speaks for most of the 11 s.
    assert!(total > 5.0, "{speech:?}");
    let mut last = 0.0;
    for &(s, e) in &speech {
        assert!(s >= last && s < e && e <= 11.0, "{speech:?}");
        last = e;
    }
}

#[test]
fn rttm_has_one_speech_line_per_region() {
    let input = jfk();
    let expected = regions(&json(&mica(&["vad", &input])));
    let out = mica(&["vad", &input, "--format", "rttm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, (start, end)) in lines.iter().zip(&expected) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 10, "{line}");
        assert_eq!(f[0], "SPEAKER");
        assert_eq!(f[1], "jfk");
        let onset: f64 = f[3].parse().unwrap();
        let duration: f64 = f[4].parse().unwrap();
        assert!((onset - start).abs() < 1e-3, "{line} vs {start}");
        assert!((onset + duration - end).abs() < 2e-3, "{line} vs {end}");
        assert_eq!(f[7], "speech", "{line}");
    }
}

#[test]
fn output_file_gets_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vad.json");
    let out = mica(&["vad", &jfk(), "-o", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!regions(&report).is_empty());
}

#[test]
fn empty_wav_has_no_regions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wav");
    empty_wav(&path);
    let report = json(&mica(&["vad", path.to_str().unwrap()]));
    assert!(regions(&report).is_empty(), "{report}");
    let out = mica(&["vad", path.to_str().unwrap(), "--format", "rttm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_is_a_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.wav");
    let p = path.to_str().unwrap();
    assert_one_line_error(&mica(&["vad", p]), &[p, "no such file"]);
}

#[test]
fn bad_options_are_one_line_errors() {
    let input = jfk();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--threshold", "1.5"], &["threshold 1.5", "[0, 1]"]),
        (&["--threshold", "-0.2"], &["threshold -0.2", "[0, 1]"]),
        (&["--speech-pad-ms", "-5"], &["--speech-pad-ms", "negative"]),
        (
            &["--min-silence-ms=-100"],
            &["--min-silence-ms", "negative"],
        ),
        (
            &["--max-speech-s", "0"],
            &["max_speech_duration_s", "above 0"],
        ),
    ];
    for (options, needles) in cases {
        let mut args = vec!["vad", input.as_str()];
        args.extend_from_slice(options);
        let out = mica(&args);
        assert_one_line_error(&out, needles);
    }
    // A usage error exits 2, like clap; an option out of range exits 1.
    assert_eq!(
        mica(&["vad", &input, "--speech-pad-ms", "-5"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn subtitle_formats_are_rejected_clearly() {
    let out = mica(&["vad", &jfk(), "--format", "srt"]);
    assert_one_line_error(&out, &["srt", "json or rttm"]);
    let out = mica(&["vad", &jfk(), "--format", "xml"]);
    assert_one_line_error(&out, &["xml", "--format"]);
}

/// `MICA_CPU_TIER` lowers the CPU kernels' tier: every tier gives the same regions, and a
/// name that is no tier, or a tier above the CPU's, runs the CPU's tier with a warning
/// naming the variable (never an error, never instructions the CPU lacks).
#[test]
fn cpu_tier_variable_is_honoured_or_warned_about() {
    let run = |tier: &str| {
        Command::new(env!("CARGO_BIN_EXE_mica"))
            .args(["vad", &jfk()])
            .env("MICA_LOG", "warn")
            .env("MICA_CPU_TIER", tier)
            .output()
            .expect("the mica binary runs")
    };
    let want = regions(&json(&mica(&["vad", &jfk()])));
    for tier in ["portable", "avx2", "avx512", "vnni", "sse9", ""] {
        let out = run(tier);
        let got = regions(&json(&out));
        assert_eq!(got.len(), want.len(), "{tier}: {got:?} vs {want:?}");
        for ((s, e), (ws, we)) in got.iter().zip(&want) {
            assert!(
                (s - ws).abs() < 0.01 && (e - we).abs() < 0.01,
                "{tier}: {got:?} vs {want:?}"
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let known = tier
            .parse::<mica_kernels::Tier>()
            .is_ok_and(|t| t <= mica_kernels::Tier::hardware());
        assert_eq!(stderr.contains("MICA_CPU_TIER"), !known, "{tier}: {stderr}");
    }
}
