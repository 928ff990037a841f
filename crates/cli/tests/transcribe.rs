//! `mica transcribe` as scripts call it: every output format, the VAD-batched mode, word
//! timestamps, one-line errors.

mod common;

use common::{assert_error_line, json, mica, sample};

fn jfk() -> String {
    sample("jfk", "jfk.wav")
}

/// The transcript's text, lower case, letters and spaces only.
fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const JFK: &str = "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

#[test]
fn json_with_words_and_vad() {
    let input = jfk();
    let out = mica(&[
        "transcribe",
        &input,
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--vad",
        "--word-timestamps",
        "--beam-size",
        "1",
    ]);
    let report = json(&out);
    let t = &report["transcript"];
    assert_eq!(t["language"], "en");
    let segments = t["segments"].as_array().expect("segments");
    let text: String = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(words(&text), JFK);
    let mut last = 0.0;
    for s in segments {
        for w in s["words"].as_array().expect("words") {
            let (a, b) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(a >= last && a <= b && b <= 11.0, "{w}");
            last = b;
        }
    }
    assert!(report["timings"]["stages"]["asr"].as_f64().unwrap() > 0.0);
}

#[test]
fn subtitle_and_text_formats() {
    let input = jfk();
    let dir = tempfile::tempdir().unwrap();
    for format in ["srt", "vtt", "txt"] {
        let path = dir.path().join(format!("jfk.{format}"));
        let out = mica(&[
            "transcribe",
            &input,
            "--language",
            "en",
            "--beam-size",
            "1",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(
            words(&body).contains("fellow americans ask not"),
            "{format}: {body}"
        );
        match format {
            "srt" => assert!(body.contains("00:00:00,000 --> "), "{body}"),
            "vtt" => assert!(body.starts_with("WEBVTT"), "{body}"),
            _ => assert!(!body.contains("-->")),
        }
    }
}

#[test]
fn bad_arguments_give_one_error_line() {
    let input = jfk();
    let out = mica(&["transcribe", &input, "--task", "summarise"]);
    assert_error_line(&out, &["summarise", "transcribe or translate"]);
    let out = mica(&["transcribe", &input, "--format", "rttm"]);
    assert_error_line(&out, &["json, srt, vtt or txt"]);
    let out = mica(&["transcribe", &input, "--language", "fr"]);
    assert_error_line(&out, &["English-only"]);
    let out = mica(&["transcribe", &input, "--beam-size", "0"]);
    assert_error_line(&out, &["beam_size"]);
    let out = mica(&["transcribe", "/nonexistent/x.wav", "--language", "en"]);
    assert_error_line(&out, &["/nonexistent/x.wav"]);
}
