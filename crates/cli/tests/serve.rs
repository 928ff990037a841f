//! `mica serve` against the real binary on 127.0.0.1: SageMaker's contract, every output
//! format, every bad input (and /ping still 200 after each), a bounded load of mixed
//! traffic, and SIGTERM in the middle of a request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::sample;

/// A `mica serve` process on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    base: String,
    /// The server's temporary directory (uploads are spooled there).
    tmp: tempfile::TempDir,
}

impl Server {
    /// Starts `mica serve ARGS` and waits until /ping answers 200.
    fn start(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mica"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("MICA_LOG", "info")
            .env("TMPDIR", tmp.path())
            .env_remove("SAGEMAKER_BIND_TO_PORT")
            .stderr(Stdio::piped())
            .spawn()
            .expect("mica serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let addr: String = line[at + 13..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("MICA_TEST_SERVER_LOG").is_some() {
                    eprintln!("server: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        let server = Server {
            child,
            base: format!("http://{addr}"),
            tmp,
        };
        let t = Instant::now();
        loop {
            if let Ok(r) = ureq::get(&server.url("/ping")).call()
                && r.status() == 200
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "/ping never answered 200"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to `path` with `headers`; the status and the body as text.
    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = ureq::post(&self.url(path)).timeout(Duration::from_secs(300));
        for (k, v) in headers {
            request = request.set(k, v);
        }
        answer(request.send_bytes(body))
    }

    fn get(&self, path: &str) -> Answer {
        answer(ureq::get(&self.url(path)).call())
    }

    fn ping_ok(&self) {
        assert_eq!(self.get("/ping").status, 200, "/ping after a bad request");
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The server's peak resident memory in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Files left in the server's temporary directory.
    fn temp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, content type, custom attributes echoed, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    attributes: Option<String>,
    body: String,
}

impl Answer {
    /// The JSON error code of a failed request.
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("error body is not JSON: {}", self.body));
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        v["error"]["code"].as_str().unwrap().to_string()
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{}", self.body);
        serde_json::from_str(&self.body).unwrap()
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("no answer: {e}"),
    };
    Answer {
        status: response.status(),
        content_type: response.content_type().to_string(),
        attributes: response
            .header("x-amzn-sagemaker-custom-attributes")
            .map(str::to_string),
        body: response.into_string().unwrap(),
    }
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn contract_formats_and_attributes() {
    let jfk = sample("jfk", "jfk.wav");
    let video = sample("opencv-video", "Megamind.avi");
    let root = Path::new(&jfk)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let server = Server::start(&["--tasks", "vad,asr,diarize,shots", "--input-root", &root]);

    let ping = server.get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, ""));
    let params: serde_json::Value =
        serde_json::from_str(&server.get("/execution-parameters").body).unwrap();
    assert_eq!(params["BatchStrategy"], "SINGLE_RECORD");
    assert!(params["MaxConcurrentTransforms"].as_u64().unwrap() >= 1);
    assert!((1..=100).contains(&params["MaxPayloadInMB"].as_u64().unwrap()));

    // A real recording as raw bytes: words, speakers, speech regions.
    let wav = read(&jfk);
    let doc = server
        .post("/invocations", &[("Content-Type", "audio/wav")], &wav)
        .json();
    let text = doc["transcript"]["segments"].to_string().to_lowercase();
    assert!(text.contains("ask not what your country"), "{text}");
    assert!(doc["speakers"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(doc["speech"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(doc.get("shots").is_none(), "audio has no shots");

    // Every text format through Accept.
    for (accept, starts) in [
        ("application/x-subrip", "1\n00:00:0"),
        ("text/vtt", "WEBVTT"),
        ("text/plain", "SPEAKER_00: "),
        ("text/x-rttm", "SPEAKER "),
    ] {
        let a = server.post(
            "/invocations?tasks=vad,asr,diarize",
            &[("Content-Type", "audio/wav"), ("Accept", accept)],
            &wav,
        );
        assert_eq!(a.status, 200, "{accept}: {}", a.body);
        assert!(
            a.content_type.starts_with(accept),
            "{accept}: {}",
            a.content_type
        );
        assert!(
            a.body.starts_with(starts),
            "{accept}: {:?}",
            &a.body[..a.body.len().min(80)]
        );
    }

    // Custom attributes pick tasks and format, and come back on the answer.
    let attributes = "tasks=asr;format=vtt";
    let a = server.post(
        "/invocations",
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Amzn-SageMaker-Custom-Attributes", attributes),
        ],
        &wav,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.starts_with("WEBVTT") && !a.body.contains("SPEAKER"),
        "{}",
        a.body
    );
    assert_eq!(a.attributes.as_deref(), Some(attributes));

    // A real video: shots as CSV and EDL, and the whole document.
    let avi = read(&video);
    let csv = server.post(
        "/invocations?tasks=shots",
        &[("Content-Type", "video/x-msvideo"), ("Accept", "text/csv")],
        &avi,
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.body.starts_with("Scene Number,"), "{}", csv.body);
    assert!(csv.body.lines().count() > 2, "{}", csv.body);
    let edl = server.post(
        "/invocations?tasks=shots&format=edl",
        &[("Content-Type", "video/x-msvideo")],
        &avi,
    );
    assert!(edl.body.contains("FCM:"), "{}", edl.body);
    let doc = server
        .post("/invocations", &[("Content-Type", "video/x-msvideo")], &avi)
        .json();
    assert!(
        doc["shots"]["shots"]
            .as_array()
            .is_some_and(|s| s.len() > 1),
        "{doc}"
    );
    assert_eq!(doc["media"]["source"], "upload");

    // A file under the input root, by path; nothing outside it.
    let by_path = server
        .post(
            "/invocations?tasks=asr",
            &[("Content-Type", "application/json")],
            br#"{"path": "jfk.wav"}"#,
        )
        .json();
    assert!(
        by_path["transcript"]
            .to_string()
            .to_lowercase()
            .contains("ask not")
    );
    assert_eq!(by_path["media"]["source"], "jfk.wav");
    for (body, status) in [
        (
            r#"{"path": "../../../../../../../../../../etc/passwd"}"#,
            403,
        ),
        (r#"{"path": "../jfk/jfk.wav"}"#, 403),
        (r#"{"path": "/etc/passwd"}"#, 403),
        (r#"{"path": "no-such.wav"}"#, 404),
        (r#"{"path": "."}"#, 400),
        (r#"{"file": "jfk.wav"}"#, 400),
    ] {
        let a = server.post(
            "/invocations",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(a.status, status, "{body}: {}", a.body);
        a.code();
    }

    // What was served shows in the metrics.
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("mica_requests_total{status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("mica_media_seconds_total"), "{metrics}");
    assert!(
        metrics.contains("mica_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}

/// Random bytes from a fixed seed (xorshift).
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bad request and its answer: path, headers, body, status, error code.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

/// Sends a POST /invocations by hand (`headers` end in CRLF each) with `body`, then
/// reads the reply; `close` shuts the sending side after the body.
fn raw(server: &Server, headers: &str, body: &[u8], close: bool) -> String {
    let addr = server.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        tcp,
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n{headers}\r\n"
    )
    .unwrap();
    // The server may answer and close before taking the whole body.
    let _ = tcp.write_all(body);
    if close {
        let _ = tcp.shutdown(std::net::Shutdown::Write);
    }
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn every_bad_input_is_a_client_error_and_the_server_stays_up() {
    let jfk = sample("jfk", "jfk.wav");
    let wav = read(&jfk);
    let server = Server::start(&[
        "--tasks",
        "vad,asr",
        "--max-payload-mb",
        "1",
        "--upload-stall",
        "2",
    ]);
    let octet = [("Content-Type", "application/octet-stream")];
    let text_art = "hello, this is not media at all\n".repeat(200);
    let cases: Vec<Case> = vec![
        (
            "/invocations",
            octet.to_vec(),
            Vec::new(),
            400,
            "empty_body",
        ),
        (
            "/invocations",
            octet.to_vec(),
            garbage(200_000, 7),
            400,
            "bad_media",
        ),
        (
            "/invocations",
            octet.to_vec(),
            garbage(3_000, 11),
            400,
            "bad_media",
        ),
        (
            "/invocations",
            octet.to_vec(),
            text_art.into_bytes(),
            400,
            "bad_media",
        ),
        (
            "/invocations",
            octet.to_vec(),
            wav[..40].to_vec(),
            400,
            "bad_media",
        ),
        (
            "/invocations",
            vec![("Content-Type", "image/png")],
            wav.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "/invocations",
            vec![("Content-Type", "audio/wav"), ("Accept", "image/png")],
            wav.clone(),
            406,
            "not_acceptable",
        ),
        (
            "/invocations?tasks=ocr",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?tasks=diarize",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?speed=fast",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?beam_size=0",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?language=fr",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?format=edl",
            octet.to_vec(),
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations?model=base",
            octet.to_vec(),
            wav.clone(),
            400,
            "unknown_model",
        ),
        (
            "/invocations",
            vec![
                ("Content-Type", "audio/wav"),
                ("X-Amzn-SageMaker-Custom-Attributes", "tasks"),
            ],
            wav.clone(),
            400,
            "bad_options",
        ),
        (
            "/invocations",
            vec![("Content-Type", "application/json")],
            br#"{"path": "#.to_vec(),
            400,
            "bad_input",
        ),
        (
            "/invocations",
            vec![("Content-Type", "application/json")],
            br#"{"path": "x.wav"}"#.to_vec(),
            400,
            "bad_input",
        ),
        ("/nowhere", octet.to_vec(), Vec::new(), 404, "not_found"),
    ];
    let long_attributes = format!("tasks=asr;{}", "x=1;".repeat(300));
    let mut cases = cases;
    cases.push((
        "/invocations",
        vec![
            ("Content-Type", "audio/wav"),
            ("X-Amzn-SageMaker-Custom-Attributes", &long_attributes),
        ],
        wav.clone(),
        400,
        "bad_options",
    ));
    for (path, headers, body, status, code) in &cases {
        let a = server.post(path, headers, body);
        assert_eq!(
            (a.status, a.code().as_str()),
            (*status, *code),
            "{path} {headers:?} ({} bytes): {}",
            body.len(),
            a.body
        );
        server.ping_ok();
    }
    assert_eq!(server.get("/invocations").status, 405);
    // Errors name the upload, not where the server spooled it.
    let a = server.post("/invocations", &octet, &garbage(5_000, 13));
    assert!(
        a.body.contains("upload") && !a.body.contains("mica-upload-"),
        "{}",
        a.body
    );

    // A body over the limit is refused from its declared length, before it is read; one
    // sent without a length is cut off where it passes the limit.
    let reply = raw(&server, "Content-Length: 2000000\r\n", &[], true);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let chunked = [
        format!("{:x}\r\n", 1_200_000).into_bytes(),
        garbage(1_200_000, 3),
        b"\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let reply = raw(&server, "Transfer-Encoding: chunked\r\n", &chunked, true);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    server.ping_ok();

    // A truncated recording decodes as far as it goes: an answer, not an error.
    let a = server.post("/invocations", &octet, &wav[..wav.len() / 2]);
    assert_eq!(a.status, 200, "{}", a.body);

    // An upload that stalls is dropped with 408 after the stall time.
    let t = Instant::now();
    let reply = raw(&server, "Content-Length: 100000\r\n", &wav[..1000], false);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(t.elapsed() < Duration::from_secs(10));
    server.ping_ok();
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());

    // A server not started with --live-urls reads no source URL.
    let source = encode("udp://127.0.0.1:9?timeout=1");
    assert_eq!(
        live_socket(&server, &format!("?source={source}")).err(),
        Some(403)
    );
}

/// Percentile `p` (0-100) of `values`.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
    values[i]
}

#[test]
fn mixed_load_gets_every_request_an_answer() {
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 500;
    // Peak resident memory allowed (KiB): the models (tiny.en f32, Silero) and two
    // analyses of short clips at a time, whatever the number of clients.
    const PEAK_RSS_KIB: u64 = 1_500_000;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let server = Server::start(&["--tasks", "vad,asr", "--workers", "2", "--queue", "2"]);
    let clips: Vec<Vec<u8>> = [
        "agent-alreadyon.wav",
        "agent-incorrect.wav",
        "auth-incorrect.wav",
        "at-tone-time-exactly.wav",
        "cannot-complete-as-dialed.wav",
        "check-number-dial-again.wav",
    ]
    .iter()
    .map(|f| read(&sample("asterisk-en", f)))
    .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    // (request number, status, seconds)
    let answers = Mutex::new(Vec::new());
    let mut pings = Vec::new();
    std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            let mut times = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let a = server.get("/ping");
                times.push(t.elapsed().as_secs_f64());
                assert_eq!(a.status, 200);
                std::thread::sleep(Duration::from_millis(50));
            }
            times
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= REQUESTS {
                            break;
                        }
                        let body = if i % 5 == 4 {
                            garbage(20_000 + i * 37, i as u64)
                        } else {
                            clips[i % clips.len()].clone()
                        };
                        let t = Instant::now();
                        let a =
                            server.post("/invocations", &[("Content-Type", "audio/wav")], &body);
                        let seconds = t.elapsed().as_secs_f64();
                        if a.status != 200 {
                            a.code();
                        }
                        answers.lock().unwrap().push((i, a.status, seconds));
                        if a.status == 429 {
                            // A client backs off before it tries its next request.
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        pings = pinger.join().unwrap();
    });
    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), REQUESTS, "every request answered");
    let mut busy = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for &(i, status, seconds) in &answers {
        *counts.entry(status).or_insert(0) += 1;
        match status {
            200 => assert!(i % 5 != 4, "garbage {i} passed as media"),
            400 => assert!(i % 5 == 4, "clip {i} refused"),
            429 => busy.push(seconds),
            other => panic!("request {i}: status {other}"),
        }
    }
    assert!(counts.get(&200).is_some_and(|&n| n > 0), "{counts:?}");
    assert!(counts.get(&400).is_some_and(|&n| n > 0), "{counts:?}");
    let ping_p99 = percentile(&mut pings, 99.0);
    eprintln!(
        "answers by status {counts:?}; /ping p99 {ping_p99:.3} s over {} pings; 429 p50 {:.3} s, p99 {:.3} s; peak RSS {} MiB",
        pings.len(),
        if busy.is_empty() {
            0.0
        } else {
            percentile(&mut busy, 50.0)
        },
        if busy.is_empty() {
            0.0
        } else {
            percentile(&mut busy, 99.0)
        },
        server.peak_rss_kib() / 1024
    );
    assert!(ping_p99 < 2.0, "/ping p99 {ping_p99} s");
    assert!(
        server.peak_rss_kib() < PEAK_RSS_KIB,
        "peak RSS {} KiB",
        server.peak_rss_kib()
    );
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    let metrics = server.get("/metrics").body;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("mica_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, REQUESTS as u64, "{metrics}");
}

/// A recording of `repeat` times the pyannote sample (30 s each), as WAV bytes.
fn long_recording(repeat: usize) -> Vec<u8> {
    let mut reader = hound::WavReader::open(sample("pyannote-sample", "sample.wav")).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    for _ in 0..repeat {
        for &s in &samples {
            writer.write_sample(s).unwrap();
        }
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// Waits until the server is analysing something.
fn wait_running(server: &Server) {
    let t = Instant::now();
    while !server.get("/metrics").body.contains("mica_running 1") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the request never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the server to exit; the seconds it took.
fn wait_exit(server: &mut Server, within: Duration) -> f64 {
    let t = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return t.elapsed().as_secs_f64();
        }
        assert!(
            t.elapsed() < within,
            "still running {} s after SIGTERM",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_or_cancels_the_request_in_flight_and_exits() {
    // 30 s: about 3 s of analysis on 2 threads (several times that while the other tests
    // load the CPU), inside the drain time.
    let short = long_recording(1);
    // Enough drain time: the request in flight finishes and is answered.
    let mut server = Server::start(&["--tasks", "vad,asr"]);
    std::thread::scope(|s| {
        let request =
            s.spawn(|| server.post("/invocations", &[("Content-Type", "audio/wav")], &short));
        wait_running(&server);
        server.terminate();
        let a = request.join().unwrap();
        let doc = a.json();
        assert!(
            doc["transcript"]["segments"]
                .as_array()
                .is_some_and(|s| s.len() > 3)
        );
    });
    let exit = wait_exit(&mut server, Duration::from_secs(25));
    eprintln!("drained and exited {exit:.1} s after the answer");
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());

    // A drain shorter than the analysis (90 s of audio): it is cancelled, answered 503,
    // and the server exits long before SageMaker's 30 s.
    let recording = long_recording(3);
    let mut server = Server::start(&["--tasks", "vad,asr", "--drain", "1"]);
    let t = Instant::now();
    std::thread::scope(|s| {
        let request =
            s.spawn(|| server.post("/invocations", &[("Content-Type", "audio/wav")], &recording));
        wait_running(&server);
        server.terminate();
        let a = request.join().unwrap();
        assert_eq!(
            (a.status, a.code().as_str()),
            (503, "shutting_down"),
            "{}",
            a.body
        );
    });
    let exit = wait_exit(&mut server, Duration::from_secs(25));
    eprintln!(
        "cancelled and exited {:.1} s after SIGTERM",
        t.elapsed().as_secs_f64()
    );
    assert!(exit < 10.0);
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}

#[test]
fn the_response_stream_sends_segments_before_the_document() {
    let server = Server::start(&["--tasks", "vad,asr,diarize"]);
    let recording = long_recording(3);
    let t = Instant::now();
    let response = ureq::post(&server.url("/invocations-response-stream"))
        .set("Content-Type", "audio/wav")
        .set("X-Amzn-SageMaker-Custom-Attributes", "tasks=asr,diarize")
        .send_bytes(&recording)
        .unwrap();
    assert_eq!(response.content_type(), "application/x-ndjson");
    assert_eq!(
        response.header("x-amzn-sagemaker-custom-attributes"),
        Some("tasks=asr,diarize")
    );
    let mut events = Vec::new();
    let mut first_segment = None;
    for line in BufReader::new(response.into_reader()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "segment" && first_segment.is_none() {
            first_segment = Some(t.elapsed().as_secs_f64());
        }
        events.push(event);
    }
    let total = t.elapsed().as_secs_f64();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    eprintln!(
        "{} lines; first segment after {:.1} s, document after {total:.1} s",
        kinds.len(),
        first_segment.unwrap_or(f64::NAN)
    );
    assert_eq!(kinds.last(), Some(&"analysis"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "segment").count() >= 10,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    let doc = &events.last().unwrap()["analysis"];
    let text = doc["transcript"]["segments"].as_array().unwrap();
    // Every word of the document was streamed before it (the document's segments are
    // split where the speaker changes).
    let streamed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "segment")
        .flat_map(|e| e["segment"]["words"].as_array().unwrap())
        .collect();
    for word in text.iter().flat_map(|s| s["words"].as_array().unwrap()) {
        let start = word["start"].as_f64().unwrap();
        assert!(
            streamed.iter().any(|w| w["text"] == word["text"]
                && (w["start"].as_f64().unwrap() - start).abs() < 0.05),
            "{word} not streamed"
        );
    }
    assert!(doc["speakers"].as_array().is_some_and(|s| !s.is_empty()));

    // Bad media is a plain error answer, not a stream.
    let a = server.post(
        "/invocations-response-stream",
        &[("Content-Type", "application/octet-stream")],
        &garbage(50_000, 5),
    );
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "bad_media"),
        "{}",
        a.body
    );
    server.ping_ok();
}

#[test]
fn a_request_past_the_time_limit_is_cancelled_and_a_client_gone_frees_its_place() {
    let server = Server::start(&[
        "--tasks",
        "vad,asr",
        "--time-limit",
        "1",
        "--workers",
        "1",
        "--queue",
        "0",
    ]);
    let recording = long_recording(3);
    let t = Instant::now();
    let a = server.post("/invocations", &[("Content-Type", "audio/wav")], &recording);
    assert_eq!(
        (a.status, a.code().as_str()),
        (504, "time_limit"),
        "{}",
        a.body
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    server.ping_ok();

    // A client that sends its request and goes away: the analysis is cancelled, its
    // upload removed, and its place (the only one) taken by the next request.
    let wait_idle = || {
        let t = Instant::now();
        while !(server.temp_files().is_empty()
            && server.get("/metrics").body.contains("mica_running 0"))
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{:?}",
                server.temp_files()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_idle();
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\n\r\n",
        recording.len()
    )
    .unwrap();
    tcp.write_all(&recording).unwrap();
    wait_running(&server);
    drop(tcp);
    wait_idle();
    let jfk = read(&sample("jfk", "jfk.wav"));
    let a = server.post(
        "/invocations?tasks=vad",
        &[("Content-Type", "audio/wav")],
        &jfk,
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

/// A reader of `len` bytes of random garbage, made as it is read.
struct Garbage {
    left: u64,
    block: Vec<u8>,
}

impl Read for Garbage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.left as usize).min(buf.len()).min(self.block.len());
        buf[..n].copy_from_slice(&self.block[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_gigabyte_upload_streams_to_disk_not_to_memory() {
    const GB: u64 = 1_000_000_000;
    let server = Server::start(&["--tasks", "vad"]);
    let before = server.peak_rss_kib();
    let t = Instant::now();
    let a = answer(
        ureq::post(&server.url("/invocations"))
            .timeout(Duration::from_secs(600))
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &GB.to_string())
            .send(Garbage {
                left: GB,
                block: garbage(1 << 20, 17),
            }),
    );
    eprintln!(
        "1 GB upload answered {} in {:.1} s; peak RSS {} MiB before, {} MiB after",
        a.status,
        t.elapsed().as_secs_f64(),
        before / 1024,
        server.peak_rss_kib() / 1024
    );
    assert_eq!(
        (a.status, a.code().as_str()),
        (400, "bad_media"),
        "{}",
        a.body
    );
    // The body went to a temporary file: memory grew by far less than the body.
    assert!(
        server.peak_rss_kib() < before + 200_000,
        "peak RSS {} KiB",
        server.peak_rss_kib()
    );
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    server.ping_ok();
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn concurrent_requests_share_whisper_batches_and_get_their_own_text() {
    // Four different clips at once through `--batch 4`: each answer is the one the clip
    // gets alone, and /metrics shows windows decoded together.
    let clips: Vec<Vec<u8>> = [
        ("jfk", "jfk.wav"),
        ("asterisk-en", "conf-adminmenu.wav"),
        ("asterisk-en", "call-forwarding.wav"),
        ("asterisk-en", "agent-newlocation.wav"),
    ]
    .iter()
    .map(|(asset, file)| read(&sample(asset, file)))
    .collect();
    let text = |a: &Answer| -> Vec<String> {
        a.json()["transcript"]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["text"].as_str().unwrap().to_string())
            .collect()
    };
    let server = Server::start(&["--tasks", "vad,asr", "--batch", "4"]);
    let alone: Vec<Vec<String>> = clips
        .iter()
        .map(|c| text(&server.post("/invocations", &[("Content-Type", "audio/wav")], c)))
        .collect();
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    let metrics = server.get("/metrics").body;
    let batches_alone = metric(&metrics, "mica_whisper_batches_total");
    let windows_alone = metric(&metrics, "mica_whisper_batched_windows_total");
    // One at a time, every batch holds one window.
    assert!(
        windows_alone >= 4 && batches_alone == windows_alone,
        "{metrics}"
    );
    for round in 0..3 {
        let start = std::sync::Barrier::new(clips.len());
        let together: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = clips
                .iter()
                .map(|c| {
                    let (server, start) = (&server, &start);
                    s.spawn(move || {
                        start.wait();
                        text(&server.post("/invocations", &[("Content-Type", "audio/wav")], c))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together, alone, "round {round}");
    }
    let metrics = server.get("/metrics").body;
    let batches = metric(&metrics, "mica_whisper_batches_total") - batches_alone;
    let windows = metric(&metrics, "mica_whisper_batched_windows_total") - windows_alone;
    assert_eq!(windows, 3 * windows_alone, "{metrics}");
    assert!(
        batches < windows,
        "no two windows shared a batch: {metrics}"
    );
}

#[test]
fn bad_serve_flags_fail_before_the_port_is_bound() {
    for (args, says) in [
        (&["--batch", "65"][..], "65 is not in 0..=64"),
        (&["--drain", "21"][..], "21 is not in 0..=20"),
        (&["--max-payload-mb", "0"][..], "0 is not in 1.."),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mica"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("SAGEMAKER_BIND_TO_PORT")
            .env_remove("SAGEMAKER_MAX_PAYLOAD_IN_MB")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit code 2: bad arguments (`mica --help`).
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
    }
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens `GET /live?QUERY` as a WebSocket, or returns the HTTP status it was refused with.
fn live_socket(server: &Server, query: &str) -> Result<Socket, u16> {
    let url = format!(
        "{}/live{query}",
        server.base.replacen("http://", "ws://", 1)
    );
    match tungstenite::connect(url) {
        Ok((socket, _)) => {
            if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                tcp.set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
            }
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("no WebSocket answer: {e}"),
    }
}

/// Every event until the server closes the socket, and the close code.
fn live_events(socket: &mut Socket) -> (Vec<serde_json::Value>, Option<u16>) {
    let mut events = Vec::new();
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                events.push(serde_json::from_str(text.as_str()).expect("events are JSON"));
            }
            Ok(tungstenite::Message::Close(frame)) => {
                return (events, frame.map(|f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return (events, None);
            }
            Err(e) => panic!("reading events: {e} after {events:?}"),
        }
    }
}

fn live_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "final")
        .map(|e| e["text"].as_str().unwrap())
        .collect::<String>()
        .to_lowercase()
}

fn states(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "status")
        .map(|e| e["state"].as_str().unwrap().to_string())
        .collect()
}

/// JFK as 16 kHz s16le bytes.
fn jfk_pcm() -> Vec<u8> {
    let mut reader = hound::WavReader::open(sample("jfk", "jfk.wav")).unwrap();
    assert_eq!(reader.spec().sample_rate, 16_000);
    reader
        .samples::<i16>()
        .flat_map(|s| s.unwrap().to_le_bytes())
        .collect()
}

#[test]
fn live_sockets_caption_client_audio_and_source_urls() {
    let mut server = Server::start(&[
        "--tasks",
        "vad,asr",
        "--live-urls",
        "--workers",
        "1",
        "--queue",
        "0",
        "--upload-stall",
        "2",
    ]);
    // Client audio in messages that split samples, then the end message.
    let mut socket = live_socket(&server, "?encoding=s16le&sample_rate=16000").unwrap();
    // The one worker is taken: a second session is refused at once.
    assert_eq!(live_socket(&server, "").err(), Some(429));
    for chunk in jfk_pcm().chunks(3201) {
        socket
            .send(tungstenite::Message::binary(chunk.to_vec()))
            .unwrap();
    }
    socket
        .send(tungstenite::Message::text(r#"{"type":"end"}"#))
        .unwrap();
    let (events, code) = live_events(&mut socket);
    assert_eq!(code, Some(1000), "{events:?}");
    let s = states(&events);
    assert_eq!(s.first().map(String::as_str), Some("listening"));
    assert_eq!(s.last().map(String::as_str), Some("ended"));
    let text = live_text(&events);
    assert!(
        text.contains("fellow americans") && text.contains("your country"),
        "{text:?}"
    );
    assert!(events.iter().any(|e| e["event"] == "partial"));

    // A source URL the server reads: JFK sent in real time over UDP.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = format!("udp://127.0.0.1:{port}?timeout=2000000");
    let query = format!("?source={}&reconnect_seconds=0", encode(&source));
    // The first session's place is freed as it closes.
    let mut socket = retry_socket(&server, &query);
    let sender = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i", &sample("jfk", "jfk.wav")])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .status()
        .unwrap();
    assert!(sender.success());
    let (events, code) = live_events(&mut socket);
    assert_eq!(code, Some(1000), "{events:?}");
    assert!(live_text(&events).contains("your country"), "{events:?}");
    assert_eq!(states(&events).last().map(String::as_str), Some("ended"));

    // A client that sends nothing is ended after the stall time; one that sends a text
    // other than the end message is closed with a policy error.
    let mut socket = retry_socket(&server, "");
    let t = Instant::now();
    let (events, code) = live_events(&mut socket);
    assert_eq!(code, Some(1000));
    let last = events.last().unwrap();
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("no audio")),
        "{events:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    let mut socket = retry_socket(&server, "");
    socket.send(tungstenite::Message::text("hello")).unwrap();
    let (_, code) = live_events(&mut socket);
    assert_eq!(code, Some(1008));

    // A client that goes away mid-stream frees its place at once.
    let mut socket = retry_socket(&server, "");
    socket
        .send(tungstenite::Message::binary(jfk_pcm()[..32_000].to_vec()))
        .unwrap();
    drop(socket);
    let mut socket = retry_socket(&server, "?encoding=f32le");
    let f32le: Vec<u8> = jfk_pcm()
        .chunks(2)
        .flat_map(|b| (f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).to_le_bytes())
        .collect();
    socket.send(tungstenite::Message::binary(f32le)).unwrap();
    socket
        .send(tungstenite::Message::text(r#"{"type":"end"}"#))
        .unwrap();
    let (events, _) = live_events(&mut socket);
    assert!(live_text(&events).contains("your country"), "{events:?}");

    // Refused before the upgrade, as HTTP errors.
    let fs = encode("file:///etc/passwd");
    for (query, status) in [
        (format!("?source={fs}"), 400),
        ("?source=%2Fetc%2Fpasswd".to_string(), 400),
        ("?speed=fast".to_string(), 400),
        ("?tasks=asr,shots".to_string(), 400),
        // Speaker labels need the diarize task, which this server did not load.
        ("?tasks=asr,diarize".to_string(), 400),
        ("?sample_rate=48000".to_string(), 400),
        ("?encoding=mp3".to_string(), 400),
        ("?model=base".to_string(), 400),
        ("?step=0.01".to_string(), 400),
        ("?reconnect_seconds=5".to_string(), 400),
    ] {
        assert_eq!(live_socket(&server, &query).err(), Some(status), "{query}");
    }
    let plain = server.get("/live");
    assert_eq!(
        (plain.status, plain.code().as_str()),
        (426, "upgrade_required")
    );
    server.ping_ok();

    // SIGTERM ends a live session at once (it would never end on its own), and the server
    // exits without waiting out the drain.
    let mut socket = retry_socket(&server, "");
    socket
        .send(tungstenite::Message::binary(jfk_pcm()[..64_000].to_vec()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.terminate();
    let (events, code) = live_events(&mut socket);
    assert_eq!(code, Some(1000), "{events:?}");
    assert_eq!(states(&events).last().map(String::as_str), Some("ended"));
    let took = wait_exit(&mut server, Duration::from_secs(15));
    assert!(took < 10.0, "exited {took} s after SIGTERM");
}

/// Opens a session once the previous one's place is free (within 10 s).
fn retry_socket(server: &Server, query: &str) -> Socket {
    let t = Instant::now();
    loop {
        match live_socket(server, query) {
            Ok(socket) => return socket,
            Err(429) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(status) => panic!("{query}: refused with {status}"),
        }
    }
}
