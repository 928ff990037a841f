//! Running the `mica` binary as scripts do, shared by the CLI test files.
#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Output};

/// Runs `mica ARGS` with warnings-only logging.
pub fn mica(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(args)
        .env("MICA_LOG", "warn")
        .output()
        .expect("the mica binary runs")
}

/// The path of `file` in the fetched sample `asset`.
pub fn sample(asset: &str, file: &str) -> String {
    mica_models::ensure(asset)
        .unwrap()
        .join(file)
        .display()
        .to_string()
}

/// Stdout parsed as JSON, after checking the run succeeded.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// Fails with nothing on stdout and a last stderr line `error: ...` holding every needle.
pub fn assert_error_line(out: &Output, needles: &[&str]) {
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(last.contains(needle), "{last:?} lacks {needle:?}");
    }
}
