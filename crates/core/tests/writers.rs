//! Writer tests: golden files for every format, JSON round trips, odd inputs and
//! property-style checks of the subtitle rules.
//!
//! Golden files live in `tests/golden/`; run with `MICA_BLESS=1` to rewrite them after an
//! intended change, and review the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mica_core::document::{
    Analysis, AudioInfo, MediaInfo, Segment, Shot, Shots, SpeakerTurn, Timings, Transcript,
    VideoInfo, Word,
};
use mica_core::time::{
    FrameRate, TimeError, TimeRange, format_srt, format_timecode, format_vtt, to_millis,
};
use mica_core::writers::{
    self, Format, Part, WriteError, WriterOptions, subtitle, write_to_string,
};

// ---------------------------------------------------------------------------------------
// Fixtures

const NTSC: f64 = 30_000.0 / 1001.0;

fn seg(start: f64, end: f64, text: &str, speaker: Option<&str>) -> Segment {
    Segment {
        start,
        end,
        text: text.into(),
        speaker: speaker.map(Into::into),
        words: Vec::new(),
        avg_logprob: -0.25,
        no_speech_prob: 0.01,
    }
}

/// Whisper-style words (leading spaces) spread evenly over `[start, end]`.
fn with_words(mut s: Segment) -> Segment {
    let words: Vec<String> = s.text.split_whitespace().map(|w| format!(" {w}")).collect();
    let step = (s.end - s.start) / words.len() as f64;
    s.words = words
        .into_iter()
        .enumerate()
        .map(|(i, text)| Word {
            start: s.start + step * i as f64,
            end: s.start + step * (i as f64 + 0.9),
            text,
            probability: 0.5 + i as f64 / 100.0,
        })
        .collect();
    s
}

fn turn(start: f64, end: f64, speaker: &str) -> SpeakerTurn {
    SpeakerTurn {
        start,
        end,
        speaker: speaker.into(),
    }
}

fn shot(start_frame: u64, end_frame: u64, fps: f64) -> Shot {
    Shot {
        start_frame,
        end_frame,
        start: start_frame as f64 / fps,
        end: end_frame as f64 / fps,
    }
}

/// A news clip touching every part and most odd inputs.
fn sample() -> Analysis {
    let segments = vec![
        with_words(seg(
            0.0,
            4.2,
            " Good evening, and welcome to the six o'clock news from the studio.",
            Some("SPEAKER_00"),
        )),
        seg(
            4.5,
            12.8,
            " Tonight: flooding in the north, a new budget & what it means for you, and <b>sport</b> --> later.",
            Some("SPEAKER_00"),
        ),
        seg(13.0, 15.0, "   ", Some("SPEAKER_00")),
        seg(
            15.0,
            19.5,
            " Thank you. It's been a long day here in Kyoto: 京都では朝から雨が降り続いています。",
            Some("SPEAKER 01"),
        ),
        seg(20.0, 20.0, " Zero-length.", Some("SPEAKER_00")),
        seg(
            20.5,
            23.0,
            " Cafe\u{301} cre\u{300}me, nai\u{308}ve re\u{301}sume\u{301} 👍🏽",
            None,
        ),
    ];
    Analysis {
        media: MediaInfo {
            source: "/media/Evening News.mp4".into(),
            duration: 62.5,
            audio: Some(AudioInfo {
                sample_rate: 48_000,
                channels: 2,
            }),
            video: Some(VideoInfo {
                width: 1920,
                height: 1080,
                fps: NTSC,
                frames: Some(1873),
            }),
        },
        transcript: Some(Transcript {
            language: "en".into(),
            duration: 62.5,
            segments,
        }),
        speech: Some(vec![
            TimeRange::new(0.0, 4.3),
            TimeRange::new(4.5, 12.9),
            TimeRange::new(15.0, 23.1),
        ]),
        speakers: Some(vec![
            turn(0.0, 4.3, "SPEAKER_00"),
            turn(4.5, 12.8, "SPEAKER_00"),
            turn(15.0, 19.5, "SPEAKER 01"),
            turn(19.9, 23.1, "SPEAKER_00"),
            turn(30.0, 30.0, "SPEAKER_00"),
        ]),
        shots: Some(Shots {
            fps: NTSC,
            frames: 1873,
            shots: vec![
                shot(0, 150, NTSC),
                shot(150, 1798, NTSC),
                shot(1798, 1873, NTSC),
            ],
        }),
        parts: Vec::new(),
        timings: Timings {
            stages: BTreeMap::from([
                ("asr".to_owned(), 3.25),
                ("decode".to_owned(), 0.5),
                ("vad".to_owned(), 0.125),
            ]),
            total: 3.9,
        },
        warnings: Vec::new(),
    }
}

/// Hard cases for the subtitle splitter.
fn long_text() -> Analysis {
    let thirty = "This segment runs for thirty seconds without any word timestamps, so the \
                  writer must share its time out in proportion to the characters and cut it \
                  into cues that each last seven seconds or less, keeping every word.";
    let long_word = format!(
        "Pneumono{}osis is long.",
        "ultramicroscopicsilicovolcano".repeat(3)
    );
    let cjk = "東京の天気は晴れのち曇り、午後からは所により雨が降るでしょう。最高気温は二十五度、最低気温は十八度の予想です。";
    Analysis {
        media: MediaInfo {
            source: "long.wav".into(),
            duration: 60.0,
            ..Default::default()
        },
        transcript: Some(Transcript {
            language: "en".into(),
            duration: 60.0,
            segments: vec![
                seg(0.0, 30.0, thirty, None),
                seg(30.0, 36.0, &long_word, None),
                with_words(seg(36.0, 40.0, &long_word, None)),
                seg(40.0, 50.0, cjk, None),
            ],
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("MICA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with MICA_BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the writer's output (MICA_BLESS=1 regenerates):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn out(a: &Analysis, f: Format, o: &WriterOptions) -> String {
    write_to_string(a, f, o).unwrap_or_else(|e| panic!("writing {f}: {e}"))
}

fn transcript_only(segments: Vec<Segment>) -> Analysis {
    Analysis {
        transcript: Some(Transcript {
            language: "en".into(),
            duration: 0.0,
            segments,
        }),
        ..Default::default()
    }
}

/// A parsed cue: (start ms, end ms, lines).
type ParsedCue = (u64, u64, Vec<String>);

fn parse_ts(s: &str) -> u64 {
    let s = s.replace(',', ".");
    let (hms, ms) = s.split_once('.').unwrap();
    let p: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    assert_eq!(p.len(), 3, "timestamp {s}");
    assert_eq!(ms.len(), 3, "timestamp {s}");
    let ms: u64 = ms.parse().unwrap();
    assert!(ms < 1000 && p[1] < 60 && p[2] < 60, "timestamp {s}");
    ((p[0] * 60 + p[1]) * 60 + p[2]) * 1000 + ms
}

fn parse_timing(line: &str) -> (u64, u64) {
    let (a, b) = line
        .split_once(" --> ")
        .unwrap_or_else(|| panic!("timing line {line:?}"));
    (parse_ts(a), parse_ts(b))
}

fn parse_srt(s: &str) -> Vec<ParsedCue> {
    if s.is_empty() {
        return Vec::new();
    }
    assert!(s.ends_with("\n\n"), "SRT ends with a blank line");
    s.trim_end_matches('\n')
        .split("\n\n")
        .enumerate()
        .map(|(i, block)| {
            let mut lines = block.lines();
            assert_eq!(lines.next().unwrap(), (i + 1).to_string());
            let (a, b) = parse_timing(lines.next().unwrap());
            let text: Vec<String> = lines.map(str::to_owned).collect();
            assert!(!text.is_empty(), "cue {} has text", i + 1);
            assert!(
                text.iter()
                    .all(|l| !l.contains("-->") && !l.trim().is_empty())
            );
            (a, b, text)
        })
        .collect()
}

fn vtt_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Cues with voice tags stripped and entities decoded: the text a viewer sees.
fn parse_vtt(s: &str) -> Vec<ParsedCue> {
    let body = s.strip_prefix("WEBVTT\n\n").expect("VTT header");
    if body.is_empty() {
        return Vec::new();
    }
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|block| {
            let mut lines = block.lines();
            let (a, b) = parse_timing(lines.next().unwrap());
            let text: Vec<String> = lines
                .enumerate()
                .map(|(i, l)| {
                    assert!(!l.contains("-->"));
                    // Raw `<` only opens the voice tag; everything else is escaped.
                    let l = if i == 0 && l.starts_with("<v ") {
                        &l[l.find('>').unwrap() + 1..]
                    } else {
                        l
                    };
                    assert!(
                        !l.contains('<') && !l.contains('>'),
                        "unescaped markup in {l:?}"
                    );
                    vtt_unescape(l)
                })
                .collect();
            (a, b, text)
        })
        .collect()
}

/// The subtitle rules every output must keep.
fn check_rules(cues: &[ParsedCue], o: &WriterOptions, what: &str) {
    let mut prev_end = 0;
    for (i, (a, b, lines)) in cues.iter().enumerate() {
        assert!(
            *a >= prev_end,
            "{what}: cue {i} starts before the previous ends: {cues:?}"
        );
        assert!(a <= b, "{what}: cue {i} runs backwards");
        assert!(
            b - a <= (o.max_cue_seconds * 1000.0).round() as u64,
            "{what}: cue {i} too long"
        );
        assert!(
            (1..=o.max_lines).contains(&lines.len()),
            "{what}: cue {i} has {} lines",
            lines.len()
        );
        for l in lines {
            assert!(
                l.chars().count() <= o.max_line_chars,
                "{what}: line {l:?} is {} chars",
                l.chars().count()
            );
            assert_eq!(l.trim(), l, "{what}: line {l:?} has edge spaces");
        }
        prev_end = *b;
    }
}

fn non_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

// ---------------------------------------------------------------------------------------
// Golden files

#[test]
fn golden_every_format() {
    let a = sample();
    let o = WriterOptions::default();
    for f in Format::ALL {
        golden(&format!("sample.{}", f.extension()), &out(&a, f, &o));
    }
    let off = WriterOptions {
        speaker_labels: false,
        ..Default::default()
    };
    golden("sample_nolabels.srt", &out(&a, Format::Srt, &off));
    golden("sample_nolabels.vtt", &out(&a, Format::Vtt, &off));
    golden("sample_nolabels.txt", &out(&a, Format::Txt, &off));
    let shots_only = WriterOptions {
        json_part: Some(Part::Shots),
        ..Default::default()
    };
    golden("sample_shots.json", &out(&a, Format::Json, &shots_only));

    let mut pal = a.clone();
    pal.shots = Some(Shots {
        fps: 25.0,
        frames: 2000,
        shots: vec![
            shot(0, 125, 25.0),
            shot(125, 1510, 25.0),
            shot(1600, 2000, 25.0),
        ],
    });
    let zero_start = WriterOptions {
        edl_record_start_hour: 0,
        edl_title: Some("Evening News\ncut 1".into()),
        ..Default::default()
    };
    golden("pal.edl", &out(&pal, Format::Edl, &zero_start));
    golden("pal.csv", &out(&pal, Format::Csv, &o));

    let mut speech_only = a.clone();
    speech_only.speakers = None;
    golden("speech_only.rttm", &out(&speech_only, Format::Rttm, &o));

    let l = long_text();
    golden("long.srt", &out(&l, Format::Srt, &o));
    golden("long.vtt", &out(&l, Format::Vtt, &o));
}

#[test]
fn golden_outputs_keep_the_rules() {
    let o = WriterOptions::default();
    for a in [sample(), long_text()] {
        check_rules(&parse_srt(&out(&a, Format::Srt, &o)), &o, "srt");
        check_rules(&parse_vtt(&out(&a, Format::Vtt, &o)), &o, "vtt");
    }
}

// ---------------------------------------------------------------------------------------
// JSON

#[test]
fn json_round_trips_exactly() {
    let a = sample();
    let json = out(&a, Format::Json, &WriterOptions::default());
    let back: Analysis = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    assert_eq!(out(&back, Format::Json, &WriterOptions::default()), json);
}

#[test]
fn json_round_trips_awkward_floats() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let x = f64::from_bits(rng.next() >> 2) * if rng.next() & 1 == 0 { 1.0 } else { -1.0 };
        let y = rng.unit() * 10_000.0;
        let a = Analysis {
            media: MediaInfo {
                duration: x,
                ..Default::default()
            },
            speech: Some(vec![TimeRange::new(y, y + 0.1)]),
            ..Default::default()
        };
        if !x.is_finite() {
            continue;
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: Analysis = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a, "{json}");
    }
}

#[test]
fn json_omits_absent_parts_and_reads_minimal_documents() {
    let json = out(
        &Analysis::default(),
        Format::Json,
        &WriterOptions::default(),
    );
    for key in [
        "transcript",
        "speech",
        "speakers",
        "shots",
        "speaker",
        "audio",
        "video",
    ] {
        assert!(!json.contains(&format!("\"{key}\"")), "{key} in {json}");
    }
    let a: Analysis = serde_json::from_str(r#"{"media":{"source":"x","duration":1.5}}"#).unwrap();
    assert_eq!(a.media.duration, 1.5);
    assert!(a.transcript.is_none() && a.timings.stages.is_empty());
    let s: Segment = serde_json::from_str(
        r#"{"start":0,"end":1,"text":"hi","avg_logprob":-0.1,"no_speech_prob":0.0}"#,
    )
    .unwrap();
    assert!(s.words.is_empty() && s.speaker.is_none());
    // Speech regions are a plain array of ranges.
    let j = serde_json::to_string(&sample().speech).unwrap();
    assert!(j.starts_with(r#"[{"start":0.0,"end":4.3}"#), "{j}");
}

#[test]
fn json_parts_and_missing_parts() {
    let a = sample();
    for (part, key) in [
        (Part::Transcript, "\"segments\""),
        (Part::Speech, "\"start\""),
        (Part::Speakers, "\"speaker\""),
        (Part::Shots, "\"start_frame\""),
    ] {
        let o = WriterOptions {
            json_part: Some(part),
            ..Default::default()
        };
        assert!(out(&a, Format::Json, &o).contains(key));
        let err = write_to_string(&Analysis::default(), Format::Json, &o).unwrap_err();
        assert!(
            matches!(err, WriteError::Missing { format: Format::Json, part: p } if p == part),
            "{err}"
        );
    }
}

#[test]
fn non_finite_values_are_refused_with_their_field() {
    let mut a = sample();
    if let Some(t) = a.transcript.as_mut() {
        t.segments[3].start = f64::NAN;
    }
    for f in [Format::Json, Format::Srt, Format::Vtt] {
        let err = write_to_string(&a, f, &WriterOptions::default()).unwrap_err();
        match err {
            WriteError::NonFinite { field, .. } => {
                assert_eq!(field, "transcript.segments[3].start")
            }
            e => panic!("{f}: {e}"),
        }
    }
    let mut a = sample();
    a.timings.total = f64::INFINITY;
    let err = write_to_string(&a, Format::Json, &WriterOptions::default()).unwrap_err();
    assert!(err.to_string().contains("timings.total"), "{err}");
    // SRT does not read timings, so it is unaffected.
    assert!(write_to_string(&a, Format::Srt, &WriterOptions::default()).is_ok());
}

// ---------------------------------------------------------------------------------------
// Formats, options, missing parts

#[test]
fn format_names_parse_display_and_serde() {
    for f in Format::ALL {
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        assert_eq!(
            serde_json::from_str::<Format>(&format!("\"{f}\"")).unwrap(),
            f
        );
    }
    assert_eq!(" VTT ".parse::<Format>().unwrap(), Format::Vtt);
    let err = "docx".parse::<Format>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown format \"docx\"; valid formats: json, srt, vtt, rttm, txt, csv, edl"
    );
    assert_eq!(Format::Vtt.content_type(), "text/vtt");
}

#[test]
fn options_default_serde_and_validation() {
    let o: WriterOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(o, WriterOptions::default());
    assert_eq!((o.max_line_chars, o.max_lines), (42, 2));
    assert_eq!((o.min_cue_seconds, o.max_cue_seconds), (1.0, 7.0));
    let o: WriterOptions =
        serde_json::from_str(r#"{"speaker_labels":false,"json_part":"shots"}"#).unwrap();
    assert!(!o.speaker_labels && o.json_part == Some(Part::Shots) && o.max_lines == 2);
    let back: WriterOptions = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(back, o);

    for bad in [
        WriterOptions {
            max_lines: 0,
            ..Default::default()
        },
        WriterOptions {
            max_line_chars: 3,
            ..Default::default()
        },
        WriterOptions {
            min_cue_seconds: 8.0,
            ..Default::default()
        },
        WriterOptions {
            max_cue_seconds: f64::NAN,
            ..Default::default()
        },
    ] {
        let err = write_to_string(&sample(), Format::Srt, &bad).unwrap_err();
        assert!(matches!(err, WriteError::InvalidOption { .. }), "{err}");
    }
}

#[test]
fn missing_parts_are_typed_errors() {
    let empty = Analysis::default();
    let o = WriterOptions::default();
    for (f, part) in [
        (Format::Srt, Part::Transcript),
        (Format::Vtt, Part::Transcript),
        (Format::Txt, Part::Transcript),
        (Format::Csv, Part::Shots),
        (Format::Edl, Part::Shots),
        (Format::Rttm, Part::Speakers),
    ] {
        let err = write_to_string(&empty, f, &o).unwrap_err();
        assert!(
            matches!(err, WriteError::Missing { format, part: p } if format == f && p == part),
            "{f}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&f.to_string()) && msg.contains(part.task()),
            "{msg}"
        );
    }
    // JSON of the whole analysis never misses anything.
    assert!(write_to_string(&empty, Format::Json, &o).is_ok());
}

#[test]
fn empty_parts_give_empty_valid_files() {
    let o = WriterOptions::default();
    let a = transcript_only(Vec::new());
    assert_eq!(out(&a, Format::Srt, &o), "");
    assert_eq!(out(&a, Format::Vtt, &o), "WEBVTT\n\n");
    assert_eq!(out(&a, Format::Txt, &o), "");
    let blank = transcript_only(vec![seg(0.0, 2.0, "", None), seg(2.0, 3.0, " \n\t ", None)]);
    assert_eq!(out(&blank, Format::Srt, &o), "");
    assert_eq!(out(&blank, Format::Vtt, &o), "WEBVTT\n\n");
    assert_eq!(out(&blank, Format::Txt, &o), "");

    let mut a = Analysis {
        speakers: Some(Vec::new()),
        ..Default::default()
    };
    assert_eq!(out(&a, Format::Rttm, &o), "");
    a.shots = Some(Shots {
        fps: 25.0,
        frames: 0,
        shots: Vec::new(),
    });
    assert_eq!(
        out(&a, Format::Csv, &o),
        format!("{}\n", writers::shots::CSV_HEADER)
    );
    assert_eq!(
        out(&a, Format::Edl, &o),
        "TITLE: mica\nFCM: NON-DROP FRAME\n"
    );
}

// ---------------------------------------------------------------------------------------
// Subtitle rules on odd inputs

#[test]
fn escapes_arrows_markup_and_ampersands() {
    let a = transcript_only(vec![seg(
        0.0,
        3.0,
        "a --> b ---> c <b>bold</b> & co",
        Some("A<B>"),
    )]);
    let o = WriterOptions::default();
    let srt = out(&a, Format::Srt, &o);
    let body: Vec<&str> = srt.lines().skip(2).filter(|l| !l.is_empty()).collect();
    assert_eq!(body.join(" "), "[A<B>] a -> b -> c <b>bold</b> & co");
    let vtt = out(&a, Format::Vtt, &o);
    assert!(
        vtt.contains("<v A&lt;B&gt;>a --&gt; b ---&gt; c &lt;b&gt;bold&lt;/b&gt; &amp; co"),
        "{vtt}"
    );
    check_rules(&parse_vtt(&vtt), &o, "vtt");
    check_rules(&parse_srt(&srt), &o, "srt");
}

#[test]
fn speaker_labels_on_and_off() {
    let a = transcript_only(vec![
        seg(0.0, 2.0, "Hello there.", Some("SPEAKER_00")),
        seg(2.0, 4.0, "Hi.", None),
    ]);
    let on = WriterOptions::default();
    let off = WriterOptions {
        speaker_labels: false,
        ..Default::default()
    };
    assert!(out(&a, Format::Srt, &on).contains("[SPEAKER_00] Hello there.\n"));
    assert!(out(&a, Format::Vtt, &on).contains("<v SPEAKER_00>Hello there.\n"));
    assert_eq!(out(&a, Format::Txt, &on), "SPEAKER_00: Hello there.\nHi.\n");
    for f in [Format::Srt, Format::Vtt, Format::Txt] {
        let s = out(&a, f, &off);
        assert!(!s.contains("SPEAKER"), "{f}: {s}");
    }
    // Segments without a speaker take the turn they overlap most.
    let mut b = a.clone();
    b.speakers = Some(vec![turn(0.0, 2.5, "X"), turn(2.5, 4.0, "Y")]);
    assert_eq!(
        out(&b, Format::Txt, &on),
        "SPEAKER_00: Hello there.\nY: Hi.\n"
    );
}

#[test]
fn long_speaker_names_still_leave_room() {
    let name = "Her Excellency the Permanent Representative of Somewhere";
    let a = transcript_only(vec![seg(
        0.0,
        5.0,
        "Thank you, Madam President.",
        Some(name),
    )]);
    let o = WriterOptions::default();
    let srt = out(&a, Format::Srt, &o);
    check_rules(&parse_srt(&srt), &o, "srt");
    assert!(
        srt.contains("…]") && srt.contains("Madam President."),
        "{srt}"
    );
}

#[test]
fn thirty_seconds_without_words_splits_into_short_cues() {
    let text = "one two three four five six seven eight nine ten eleven twelve thirteen \
                fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let a = transcript_only(vec![seg(10.0, 40.0, text, None)]);
    let o = WriterOptions::default();
    let cues = parse_srt(&out(&a, Format::Srt, &o));
    check_rules(&cues, &o, "srt");
    assert!(cues.len() >= 5, "{cues:?}");
    assert!(cues.iter().all(|c| c.1 - c.0 <= 7000));
    assert_eq!(cues[0].0, 10_000);
    let words: Vec<String> = cues.iter().flat_map(|c| c.2.clone()).collect();
    assert_eq!(
        words.join(" "),
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    );

    // Sparse text: fewer words than 7-second slots; each word still gets a cue.
    let a = transcript_only(vec![seg(0.0, 30.0, "Hello world", None)]);
    let cues = parse_srt(&out(&a, Format::Srt, &o));
    check_rules(&cues, &o, "srt");
    assert_eq!(cues.len(), 2, "{cues:?}");
}

#[test]
fn word_timestamps_drive_cue_times() {
    let mut s = seg(0.0, 12.0, "", None);
    let words = [
        (0.5, 0.9, " First"),
        (1.0, 1.4, " cue"),
        (1.5, 2.0, " here."),
        (9.0, 9.5, " Much"),
        (9.6, 10.2, " later."),
    ];
    s.text = words.iter().map(|w| w.2).collect();
    s.words = words
        .iter()
        .map(|&(start, end, text)| Word {
            start,
            end,
            text: text.into(),
            probability: 0.9,
        })
        .collect();
    let a = transcript_only(vec![s]);
    let o = WriterOptions::default();
    let cues = parse_srt(&out(&a, Format::Srt, &o));
    check_rules(&cues, &o, "srt");
    assert_eq!(
        cues,
        vec![
            (500, 2000, vec!["First cue here.".to_owned()]),
            (9000, 10200, vec!["Much later.".to_owned()]),
        ]
    );
}

#[test]
fn words_without_leading_spaces_are_joined_sensibly() {
    let mk = |text: &str, words: &[&str]| {
        let mut s = seg(0.0, 2.0, text, None);
        s.words = words
            .iter()
            .enumerate()
            .map(|(i, w)| Word {
                start: i as f64 * 0.5,
                end: i as f64 * 0.5 + 0.4,
                text: (*w).into(),
                probability: 1.0,
            })
            .collect();
        transcript_only(vec![s])
    };
    let o = WriterOptions::default();
    let s = out(
        &mk("Hello big world", &["Hello", "big", "world"]),
        Format::Txt,
        &o,
    );
    assert_eq!(s, "Hello big world\n");
    let s = out(
        &mk("Hello big world", &["Hello", "big", "world"]),
        Format::Srt,
        &o,
    );
    assert!(s.contains("\nHello big world\n"), "{s}");
    let s = out(&mk("你好世界", &["你好", "世界"]), Format::Srt, &o);
    assert!(s.contains("\n你好世界\n"), "{s}");
}

#[test]
fn long_words_are_hard_wrapped_not_dropped() {
    let word = "x".repeat(100);
    let o = WriterOptions::default();
    for words in [false, true] {
        let mut s = seg(0.0, 6.0, &format!("before {word} after"), None);
        if words {
            s = with_words(s);
        }
        let a = transcript_only(vec![s]);
        let srt = out(&a, Format::Srt, &o);
        let cues = parse_srt(&srt);
        check_rules(&cues, &o, "srt");
        let all: String = cues
            .iter()
            .flat_map(|c| c.2.clone())
            .collect::<Vec<_>>()
            .join("");
        assert_eq!(
            non_space(&all),
            non_space(&format!("before{word}after")),
            "{srt}"
        );
    }
}

#[test]
fn unicode_is_counted_in_chars_and_never_split_inside_a_grapheme() {
    let o = WriterOptions::default();
    // 30 accented letters written as base + combining mark: 60 chars, 30 graphemes.
    let accents = "e\u{301}".repeat(30);
    let emoji = "👩‍👩‍👧‍👦🏳️‍🌈👍🏽".repeat(6);
    let cjk = "日本語の字幕は一行あたりの文字数を数える必要があり、句読点の前では改行しません。"
        .repeat(2);
    let a = transcript_only(vec![
        seg(0.0, 4.0, &accents, None),
        seg(4.0, 8.0, &emoji, None),
        seg(8.0, 14.0, &cjk, None),
    ]);
    for (f, cues) in [
        (Format::Srt, parse_srt(&out(&a, Format::Srt, &o))),
        (Format::Vtt, parse_vtt(&out(&a, Format::Vtt, &o))),
    ] {
        check_rules(&cues, &o, f.name());
        for (_, _, lines) in &cues {
            for l in lines {
                let first = l.chars().next().unwrap();
                assert!(
                    !matches!(first, '\u{300}'..='\u{36f}' | '\u{200d}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}'),
                    "{f}: line starts mid-grapheme: {l:?}"
                );
                assert!(!l.starts_with(['、', '。']), "{f}: kinsoku broken: {l:?}");
            }
        }
        let all: String = cues.iter().flat_map(|c| c.2.clone()).collect();
        assert_eq!(
            non_space(&all),
            non_space(&format!("{accents}{emoji}{cjk}"))
        );
    }
    // The accented line is 60 chars (not 30 graphemes) so it needs two lines.
    let cues = parse_srt(&out(&a, Format::Srt, &o));
    assert_eq!(cues[0].2.len(), 2, "{:?}", cues[0]);
}

#[test]
fn zero_length_and_overlapping_segments_stay_sequential() {
    let a = transcript_only(vec![
        seg(5.0, 5.0, "Zero one.", None),
        seg(5.0, 5.0, "Zero two.", None),
        seg(
            0.0,
            10.0,
            "Long overlapping segment that started earlier.",
            None,
        ),
        seg(2.0, 4.0, "Inside the long one.", None),
        seg(9.0, 8.0, "Reversed times.", None),
    ]);
    let o = WriterOptions::default();
    for cues in [
        parse_srt(&out(&a, Format::Srt, &o)),
        parse_vtt(&out(&a, Format::Vtt, &o)),
    ] {
        check_rules(&cues, &o, "overlap");
        // The 10 s segment becomes two cues (7 s limit), the rest one each.
        assert_eq!(cues.len(), 6, "{cues:?}");
        assert!(
            cues.iter().all(|c| c.1 > c.0),
            "every cue is visible: {cues:?}"
        );
    }
}

#[test]
fn short_cues_are_stretched_only_into_free_time() {
    let a = transcript_only(vec![
        seg(1.0, 1.2, "Hi.", None),
        seg(1.5, 2.0, "Yes.", None),
        seg(10.0, 10.3, "Bye.", None),
    ]);
    let cues = parse_srt(&out(&a, Format::Srt, &WriterOptions::default()));
    let times: Vec<(u64, u64)> = cues.iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(times, [(1000, 1500), (1500, 2500), (10_000, 11_000)]);
}

#[test]
fn cue_api_matches_the_vtt_writer() {
    let a = sample();
    let o = WriterOptions::default();
    let t = a.transcript.as_ref().unwrap();
    let cues = subtitle::cues(t, a.speakers.as_deref(), &o).unwrap();
    let parsed = parse_vtt(&out(&a, Format::Vtt, &o));
    assert_eq!(cues.len(), parsed.len());
    for (c, p) in cues.iter().zip(&parsed) {
        assert_eq!((to_millis(c.start), to_millis(c.end)), (p.0, p.1));
        assert_eq!(c.lines, p.2);
    }
    assert_eq!(cues[0].speaker.as_deref(), Some("SPEAKER_00"));
}

#[test]
fn three_hours_of_transcript_write_in_reasonable_time() {
    let en = "and that is the latest from the newsroom, where the editors are still working on \
              tonight's lead story about the budget.";
    let ja = "東京の天気は晴れのち曇り、午後からは所により雨が降るでしょう。最高気温は二十五度の予想です。";
    let segments: Vec<Segment> = (0..2700)
        .map(|k| {
            let t = k as f64 * 4.0;
            if k % 2 == 0 {
                with_words(seg(t, t + 3.9, en, Some("SPEAKER_00")))
            } else {
                seg(t, t + 3.9, ja, None)
            }
        })
        .collect();
    let a = transcript_only(segments);
    let o = WriterOptions::default();
    let started = std::time::Instant::now();
    let srt = out(&a, Format::Srt, &o);
    let vtt = out(&a, Format::Vtt, &o);
    let elapsed = started.elapsed();
    check_rules(&parse_srt(&srt), &o, "srt");
    check_rules(&parse_vtt(&vtt), &o, "vtt");
    // Generous: this takes well under a second in release; it guards against blow-ups.
    assert!(elapsed.as_secs_f64() < 20.0, "took {elapsed:?}");
}

// ---------------------------------------------------------------------------------------
// Property-style checks

/// xorshift64*: enough randomness for generated inputs without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const PIECES: &[&str] = &[
    "the",
    "news",
    "tonight",
    "a",
    "weather",
    "forecast,",
    "said.",
    "Hello!",
    "-->",
    "<b>",
    "&",
    "&amp;",
    "café",
    "cafe\u{301}",
    "naïve",
    "日本語",
    "東京の天気は晴れ",
    "。",
    "👍🏽",
    "👩‍👩‍👧",
    "Ελληνικά",
    "русский",
    "عربي",
    "supercalifragilisticexpialidocious-and-then-some-more-text",
    "x",
    "I'm",
    "(aside)",
    "\t",
    "\n",
];

fn random_text(rng: &mut Rng, max_words: usize) -> String {
    let n = rng.below(max_words + 1);
    (0..n)
        .map(|_| PIECES[rng.below(PIECES.len())])
        .collect::<Vec<_>>()
        .join(if rng.below(4) == 0 { "" } else { " " })
}

fn random_transcript(rng: &mut Rng) -> Transcript {
    let mut t = 0.0;
    let segments = (0..rng.below(12))
        .map(|_| {
            // Mostly forward, sometimes overlapping, zero-length or reversed.
            let start = (t + rng.unit() * 4.0 - 1.0).max(0.0);
            let len = match rng.below(6) {
                0 => 0.0,
                1 => -rng.unit(),
                2 => rng.unit() * 40.0,
                _ => rng.unit() * 8.0,
            };
            t = start + len.max(0.0);
            let mut s = seg(start, start + len, &random_text(rng, 30), None);
            if rng.below(3) == 0 {
                s.speaker = Some(format!("SPEAKER_{:02}", rng.below(3)));
            }
            if rng.below(2) == 0 && !s.text.trim().is_empty() {
                s = with_words(s);
                // Jitter word times, sometimes out of order.
                for w in &mut s.words {
                    w.start += rng.unit() - 0.5;
                    w.end += rng.unit() - 0.5;
                }
            }
            s
        })
        .collect();
    Transcript {
        language: "en".into(),
        duration: t,
        segments,
    }
}

#[test]
fn property_cues_keep_line_and_time_rules() {
    let mut rng = Rng(0x5eed);
    let opts = [
        WriterOptions::default(),
        WriterOptions {
            speaker_labels: false,
            ..Default::default()
        },
        WriterOptions {
            max_line_chars: 16,
            max_lines: 1,
            min_cue_seconds: 0.5,
            max_cue_seconds: 3.0,
            ..Default::default()
        },
        WriterOptions {
            max_line_chars: 32,
            max_lines: 3,
            min_cue_seconds: 2.0,
            max_cue_seconds: 2.0,
            ..Default::default()
        },
    ];
    for case in 0..400 {
        let t = random_transcript(&mut rng);
        let a = Analysis {
            transcript: Some(t.clone()),
            ..Default::default()
        };
        for o in &opts {
            let what = format!("case {case} {o:?}\n{t:#?}");
            let srt = out(&a, Format::Srt, o);
            let vtt = out(&a, Format::Vtt, o);
            check_rules(&parse_srt(&srt), o, &format!("srt {what}"));
            let vcues = parse_vtt(&vtt);
            check_rules(&vcues, o, &format!("vtt {what}"));
            // No text is lost: every non-space char of the input reaches the cues.
            let expected: String = t
                .segments
                .iter()
                .map(|s| {
                    if s.words.is_empty() {
                        non_space(&s.text)
                    } else {
                        s.words.iter().map(|w| non_space(&w.text)).collect()
                    }
                })
                .collect();
            let mut got: Vec<char> = vcues
                .iter()
                .flat_map(|c| c.2.concat().chars().collect::<Vec<_>>())
                .filter(|c| !c.is_whitespace())
                .collect();
            let mut want: Vec<char> = expected.chars().collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "text lost: {what}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// RTTM, text, shots

#[test]
fn rttm_sanitises_names_and_falls_back_to_speech() {
    let o = WriterOptions::default();
    let a = sample();
    let rttm = out(&a, Format::Rttm, &o);
    assert!(
        rttm.starts_with("SPEAKER Evening_News 1 0.000 4.300 <NA> <NA> SPEAKER_00 <NA> <NA>\n")
    );
    assert!(rttm.contains(" SPEAKER_01 "), "{rttm}");
    assert_eq!(rttm.lines().count(), 4, "zero-length turn dropped: {rttm}");
    for line in rttm.lines() {
        assert_eq!(line.split(' ').count(), 10, "{line}");
    }
    let mut b = a.clone();
    b.speakers = Some(Vec::new());
    let speech = out(&b, Format::Rttm, &o);
    assert_eq!(speech.lines().count(), 3);
    assert!(speech.lines().all(|l| l.contains(" speech ")));
    let named = WriterOptions {
        file_id: Some("my file".into()),
        ..Default::default()
    };
    assert!(out(&a, Format::Rttm, &named).starts_with("SPEAKER my_file 1 "));
}

#[test]
fn csv_and_edl_use_frames() {
    let a = sample();
    let o = WriterOptions::default();
    let csv = out(&a, Format::Csv, &o);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].split(',').count(), 10);
    assert_eq!(
        rows[1],
        "1,1,00:00:00.000,0.000,150,00:00:05.005,5.005,150,00:00:05.005,5.005"
    );
    let edl = out(&a, Format::Edl, &o);
    assert!(edl.starts_with("TITLE: Evening News\nFCM: DROP FRAME\n\n001  AX       V     C        00:00:00;00 00:00:05;00 01:00:00;00 01:00:05;00\n* FROM CLIP NAME: Evening News.mp4\n"), "{edl}");
    let ndf = WriterOptions {
        drop_frame: false,
        ..Default::default()
    };
    assert!(out(&a, Format::Edl, &ndf).contains("FCM: NON-DROP FRAME"));
    let mut bad = a.clone();
    if let Some(s) = bad.shots.as_mut() {
        s.fps = 0.0;
    }
    let err = write_to_string(&bad, Format::Edl, &o).unwrap_err();
    assert!(
        matches!(err, WriteError::Time(TimeError::InvalidFps(_))),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Time

#[test]
fn timestamps_round_and_clamp() {
    assert_eq!(format_srt(0.0), "00:00:00,000");
    assert_eq!(format_srt(59.9996), "00:01:00,000");
    assert_eq!(format_srt(3599.9999), "01:00:00,000");
    assert_eq!(format_vtt(3723.004), "01:02:03.004");
    assert_eq!(format_srt(-1.5), "00:00:00,000");
    assert_eq!(format_srt(f64::NAN), "00:00:00,000");
    assert_eq!(format_srt(f64::INFINITY), "99:59:59,999");
    assert_eq!(format_vtt(1e12), "99:59:59.999");
    let mut rng = Rng(3);
    for _ in 0..10_000 {
        let s = rng.unit() * 400_000.0;
        let f = format_srt(s);
        assert!(!f.contains(",1000") && f.len() == 12, "{s} -> {f}");
        assert_eq!(parse_ts(&f), to_millis(s));
    }
}

#[test]
fn timecodes_drop_and_non_drop() {
    assert_eq!(format_timecode(0, 25.0, false).unwrap(), "00:00:00:00");
    assert_eq!(format_timecode(90_000, 25.0, false).unwrap(), "01:00:00:00");
    assert_eq!(format_timecode(1439, 23.976, false).unwrap(), "00:00:59:23");
    assert_eq!(format_timecode(1799, NTSC, true).unwrap(), "00:00:59;29");
    assert_eq!(format_timecode(1800, NTSC, true).unwrap(), "00:01:00;02");
    assert_eq!(format_timecode(17_982, NTSC, true).unwrap(), "00:10:00;00");
    assert_eq!(format_timecode(107_892, NTSC, true).unwrap(), "01:00:00;00");
    assert_eq!(
        format_timecode(3600, 60_000.0 / 1001.0, true).unwrap(),
        "00:01:00;04"
    );
    assert_eq!(format_timecode(1800, NTSC, false).unwrap(), "00:01:00:00");
    assert_eq!(
        format_timecode(0, 25.0, true).unwrap_err(),
        TimeError::NoDropFrame(25.0)
    );
    assert!(matches!(
        format_timecode(0, 0.0, false),
        Err(TimeError::InvalidFps(_))
    ));
    assert!(FrameRate::new(f64::NAN, false).is_err());
    assert!(FrameRate::new(1e9, false).is_err());
    // Drop-frame labels never skip or repeat: every frame maps to a distinct, increasing,
    // legal label across an hour.
    let r = FrameRate::new(NTSC, true).unwrap();
    assert_eq!(r.frames_per_hour(), 107_892);
    let mut prev = None;
    for f in 0..r.frames_per_hour() + 10 {
        let tc = r.timecode(f);
        let key = (tc.hours, tc.minutes, tc.seconds, tc.frames);
        assert!(tc.frames < 30 && tc.seconds < 60 && tc.minutes < 60);
        if tc.seconds == 0 && !tc.minutes.is_multiple_of(10) {
            assert!(tc.frames >= 2, "dropped label used at frame {f}: {tc}");
        }
        assert!(prev.is_none_or(|p| p < key), "labels not increasing at {f}");
        prev = Some(key);
    }
    assert_eq!(r.frame_at(60.0), 1798);
}

#[test]
fn time_range_helpers() {
    let a = TimeRange::new(1.0, 3.0);
    let b = TimeRange::new(2.0, 5.0);
    assert_eq!(a.duration(), 2.0);
    assert_eq!(a.overlap(&b), 1.0);
    assert!(a.overlaps(&b));
    assert!(!a.overlaps(&TimeRange::new(3.0, 4.0)));
    assert_eq!(a.intersection(&b), Some(TimeRange::new(2.0, 3.0)));
    assert_eq!(a.union_span(&b), TimeRange::new(1.0, 5.0));
    assert!(a.contains(1.0) && !a.contains(3.0));
    assert_eq!(TimeRange::new(3.0, 1.0).duration(), 0.0);
    assert!(!TimeRange::new(f64::NAN, 1.0).is_valid());
    assert!(!TimeRange::new(-1.0, 1.0).is_valid());
    assert!(TimeRange::new(0.0, 0.0).is_empty());
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        r#"{"start":1.0,"end":3.0}"#
    );
}
