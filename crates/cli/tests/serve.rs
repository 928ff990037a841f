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
    let cases: Vec<(&str, Vec<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
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
}
