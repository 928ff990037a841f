//! `mica live`: a file read as a stream, a UDP stream sent in real time by ffmpeg with a
//! stall before it, a TCP stream that goes away and comes back, every output format, and
//! bad input and arguments.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_error_line, mica, sample};

fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
        .collect()
}

fn settled_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "final")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect::<String>()
        .to_lowercase()
}

#[test]
fn a_file_gives_settled_captions_in_every_format() {
    let jfk = sample("jfk", "jfk.wav");
    let out = mica(&["live", &jfk]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert_eq!(ev[0]["event"], "status");
    assert_eq!(ev[0]["state"], "listening");
    assert_eq!(ev.last().unwrap()["state"], "ended");
    let text = settled_text(&ev);
    for words in [
        "fellow americans",
        "your country can do for you",
        "for your country",
    ] {
        assert!(text.contains(words), "{text:?}");
    }
    // Every final's words lie inside the 11 s and in time order.
    let mut last = 0.0;
    for e in ev.iter().filter(|e| e["event"] == "final") {
        for w in e["words"].as_array().unwrap() {
            let (s, end) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(s >= last - 0.05 && end <= 11.0 + 1e-6 && s <= end, "{w}");
            last = s;
        }
    }

    // With speakers: one voice, one label, over the settled words.
    let out = mica(&["live", &jfk, "--tasks", "asr,diarize"]);
    assert!(out.status.success());
    let ev = events(&out.stdout);
    let labels: Vec<&serde_json::Value> = ev.iter().filter(|e| e["event"] == "speaker").collect();
    assert!(!labels.is_empty(), "{ev:?}");
    for l in &labels {
        assert_eq!(l["speaker"], "SPEAKER_00", "{l}");
        assert!(l["start"].as_f64().unwrap() < l["end"].as_f64().unwrap());
    }

    // A rolling HLS subtitle playlist beside the events: every segment listed, closed at
    // the end, the words in the cues once each.
    let hls = tempfile::tempdir().unwrap();
    let dir = hls.path().join("subs");
    let out = mica(&[
        "live",
        &jfk,
        "--hls",
        dir.to_str().unwrap(),
        "--hls-segment-seconds",
        "2",
    ]);
    assert!(out.status.success());
    let playlist = std::fs::read_to_string(dir.join("subtitles.m3u8")).unwrap();
    assert!(playlist.starts_with("#EXTM3U\n"), "{playlist}");
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let names: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".vtt")).collect();
    assert!(names.len() >= 5, "{playlist}");
    let cues: String = names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .inspect(|vtt| assert!(vtt.starts_with("WEBVTT\nX-TIMESTAMP-MAP="), "{vtt}"))
        .collect::<String>()
        .to_lowercase();
    assert_eq!(cues.matches("fellow americans").count(), 1, "{cues}");
    assert!(cues.contains("your country"), "{cues}");

    let txt = mica(&["live", &jfk, "--format", "txt"]);
    let txt = String::from_utf8(txt.stdout).unwrap().to_lowercase();
    assert!(
        txt.contains("fellow americans") && txt.ends_with('\n'),
        "{txt:?}"
    );

    let vtt = mica(&["live", &jfk, "--format", "vtt"]);
    let vtt = String::from_utf8(vtt.stdout).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    assert!(vtt.matches(" --> ").count() >= 3, "{vtt}");
    assert!(vtt.to_lowercase().contains("your country"), "{vtt}");
}

#[test]
fn a_udp_stream_in_real_time_stalls_then_is_captioned() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // ffmpeg ends the input after 3 s without packets, once the sender is done.
    let url = format!("udp://127.0.0.1:{port}?timeout=3000000");
    let mut live = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["live", &url, "--stall-seconds", "1"])
        .env("MICA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening"), "{first}");
    // Nothing comes for 2 s (a stall), then JFK in real time.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let sender = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i", &sample("jfk", "jfk.wav")])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .status()
        .unwrap();
    assert!(sender.success());
    let mut ev = vec![serde_json::from_str::<serde_json::Value>(&first).unwrap()];
    ev.extend(lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()));
    assert!(live.wait().unwrap().success());
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "played in real time"
    );
    let states: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "status")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states[..3],
        ["listening", "stalled", "resumed"],
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&"ended"));
    let text = settled_text(&ev);
    assert!(text.contains("your country"), "{text:?}");
    assert!(ev.iter().any(|e| e["event"] == "partial"));
}

#[test]
fn bad_input_and_arguments_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "not audio at all, just words\n".repeat(200)).unwrap();
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    for (input, needle) in [
        ("/no/such/stream.wav", "no such file"),
        (empty.to_str().unwrap(), "empty"),
        (text.to_str().unwrap(), "notes.wav"),
    ] {
        let out = mica(&["live", input]);
        assert_eq!(out.status.code(), Some(1));
        assert_error_line(&out, &[needle]);
    }
    let jfk = sample("jfk", "jfk.wav");
    for args in [
        vec!["live", &jfk, "--tasks", "asr,shots"],
        vec!["live", &jfk, "--step", "0"],
        vec!["live", &jfk, "--step", "fast"],
        vec!["live", &jfk, "--stall-seconds", "1000"],
        vec!["live", &jfk, "--min-silence-ms", "10"],
        vec!["live", &jfk, "--beam-size", "0"],
        vec!["live", &jfk, "--format", "srt"],
    ] {
        let out = mica(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = mica(&["live", &jfk, "--model", "large-v9"]);
    assert_error_line(&out, &["large-v9"]);
    let out = mica(&["live", &jfk, "--tasks", "diarize"]);
    assert_eq!(out.status.code(), Some(1));
    assert_error_line(&out, &["asr"]);
}

/// `ffmpeg -re` playing part of JFK to a TCP port it listens on, encoded as `out` says.
fn tcp_sender(port: u16, part: &[&str], out: &[&str]) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-v", "error", "-re"])
        .args(part)
        .args(["-i", &sample("jfk", "jfk.wav")])
        .args(out)
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(format!("tcp://127.0.0.1:{port}?listen=1"))
        .spawn()
        .unwrap()
}

#[test]
fn a_stream_that_goes_away_is_reconnected_then_given_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The first 5.5 s of JFK, then (once that sender is gone) the rest, restarted at
    // another sample rate and channel count, then nothing.
    let mut first = tcp_sender(port, &["-t", "5.5"], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let url = format!("tcp://127.0.0.1:{port}");
    let mut live = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args([
            "live",
            &url,
            "--reconnect-seconds",
            "4",
            "--stall-seconds",
            "20",
        ])
        .env("MICA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = live.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    assert!(first.wait().unwrap().success());
    let mut second = tcp_sender(port, &["-ss", "5.5"], &["-ar", "44100", "-ac", "2"]);
    assert!(second.wait().unwrap().success());
    let t = Instant::now();
    assert!(live.wait().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "gave up after its reconnect time"
    );
    let ev = reader.join().unwrap();
    let states: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "status")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "listening",
            "reconnecting",
            "resumed",
            "reconnecting",
            "ended"
        ],
        "{ev:?}"
    );
    let ended = ev.last().unwrap();
    assert!(
        ended["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not come back within 4 s")),
        "{ended}"
    );
    // Words from both connections, in one transcript.
    let text = settled_text(&ev);
    assert!(
        text.contains("fellow america") && text.contains("your country"),
        "{text:?}"
    );
}

#[test]
fn clips_are_cut_from_the_recording_by_stream_copy_with_their_subtitles() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // A broadcast-like source: JFK as AAC in MPEG-TS, played at its own speed.
    let ts = dir.path().join("jfk.ts");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &sample("jfk", "jfk.wav")])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&ts)
        .status()
        .unwrap();
    assert!(made.success());
    let rec = dir.path().join("rec");
    let mut live = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["live", ts.to_str().unwrap(), "--realtime", "--record"])
        .arg(&rec)
        .env("MICA_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = live.stdin.take().unwrap();
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    let mut ev: Vec<serde_json::Value> = Vec::new();
    // Once 9 s have been heard: the last 4 s, a range, one out of reach, and nonsense.
    for line in lines.by_ref() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let at = e["at"].as_f64().unwrap_or(0.0);
        ev.push(e);
        if at >= 9.0 {
            break;
        }
    }
    writeln!(stdin, "clip 4\nclip 1 5\nclip 100 200\nclip now").unwrap();
    drop(stdin);
    ev.extend(lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()));
    assert!(live.wait().unwrap().success());
    let clips: Vec<&serde_json::Value> = ev.iter().filter(|e| e["event"] == "clip").collect();
    assert_eq!(clips.len(), 4, "{ev:?}");
    for (clip, seconds) in clips[..2].iter().zip([4.0, 4.0]) {
        let path = clip["path"].as_str().unwrap_or_else(|| panic!("{clip}"));
        let probe = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .unwrap();
        let duration: f64 = String::from_utf8_lossy(&probe.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!((duration - seconds).abs() < 0.5, "{clip}: {duration} s");
        let srt = std::fs::read_to_string(clip["srt"].as_str().unwrap()).unwrap();
        assert!(srt.starts_with("1\n00:00:0"), "{srt}");
        let vtt = std::fs::read_to_string(clip["vtt"].as_str().unwrap()).unwrap();
        assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    }
    assert!(
        clips[1]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("fellow america"),
        "{}",
        clips[1]
    );
    assert!(
        clips[2]["error"].as_str().unwrap().contains("holds"),
        "{}",
        clips[2]
    );
    assert!(
        clips[3]["error"].as_str().unwrap().contains("seconds"),
        "{}",
        clips[3]
    );
    assert_eq!(ev.last().unwrap()["state"], "ended");
}
