//! A 10-minute recording of real speech analysed in one part and in eight: the parts are
//! cut in pauses, and the stitched transcript and the speakers clustered over every part
//! agree with the single pass.

use std::collections::BTreeSet;

use mica::{Analysis, Analyzer, Precision, Task};
use mica_core::document::SpeakerTurn;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn audio(asset: &str, file: &str) -> Res<Vec<f32>> {
    let path = mica_models::ensure(asset)?.join(file);
    Ok(mica_media::load_all(&path)?.samples)
}

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, \
                   ask what you can do for your country.";

/// A clip of real speech and what is said in it.
struct Clip {
    samples: Vec<f32>,
    text: String,
    speaker: &'static str,
}

/// The test recordings whose words are known: JFK, the LibriVox reader's five sentences
/// and the card-game speaker's five commands.
fn clips() -> Res<Vec<Clip>> {
    let mut clips = vec![Clip {
        samples: audio("jfk", "jfk.wav")?,
        text: JFK.into(),
        speaker: "jfk",
    }];
    let lists = [
        ("librivox", "transcription", "reader"),
        ("cards", "cards.transcription", "cards"),
    ];
    for (asset, list, speaker) in lists {
        let dir = mica_models::ensure(asset)?;
        for line in std::fs::read_to_string(dir.join(list))?.lines() {
            // `<s> words </s> (name_ending_in_file_stem)`
            let (words, id) = line.rsplit_once('(').ok_or("a transcription line")?;
            let words = words.replace("<s>", "").replace("</s>", "");
            let stem = id
                .trim_end_matches(')')
                .rsplit(['-', '_'])
                .next()
                .unwrap_or("");
            clips.push(Clip {
                samples: audio(asset, &format!("{stem}.wav"))?,
                text: words.trim().to_string(),
                speaker,
            });
        }
    }
    Ok(clips)
}

/// Ten minutes of those clips in a different order each round, with pauses of 0.3 to
/// 1.1 s of faint noise between them (room tone at about -70 dBFS, not digital silence):
/// the words said, in order, and who said them when.
struct Recording {
    samples: Vec<f32>,
    said: String,
    turns: Vec<SpeakerTurn>,
}

fn ten_minutes() -> Res<Recording> {
    let clips = clips()?;
    assert_eq!(clips.len(), 11);
    let total = 600 * 16_000;
    let mut out = Vec::new();
    let mut words = Vec::new();
    let mut turns = Vec::new();
    let mut noise = 12345u32;
    let mut room = |n: usize, out: &mut Vec<f32>| {
        for _ in 0..n {
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            out.push(((noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 6e-4);
        }
    };
    for k in 0.. {
        let clip = &clips[(k * 4 + k / clips.len()) % clips.len()];
        let pause = ((0.3 + 0.1 * (k % 9) as f64) * 16_000.0) as usize;
        if out.len() + clip.samples.len() + pause > total {
            break;
        }
        turns.push(SpeakerTurn {
            start: out.len() as f64 / 16_000.0,
            end: (out.len() + clip.samples.len()) as f64 / 16_000.0,
            speaker: clip.speaker.into(),
        });
        out.extend_from_slice(&clip.samples);
        words.push(clip.text.as_str());
        room(pause, &mut out);
    }
    let rest = total - out.len();
    room(rest, &mut out);
    Ok(Recording {
        samples: out,
        said: words.join(" "),
        turns,
    })
}

fn analyze(samples: &[f32], workers: usize, part_seconds: f64) -> Res<Analysis> {
    let analyzer = Analyzer::builder()
        .device(mica_core::device::test_device_spec()?)
        .tasks([Task::Vad, Task::Asr, Task::Diarize])
        .precision(Precision::Q8_0)
        .workers(workers)
        .part_seconds(part_seconds)
        .build()?;
    Ok(analyzer.analyze(samples)?)
}

fn text(a: &Analysis) -> String {
    let t = a.transcript.as_ref().expect("a transcript");
    t.segments.iter().map(|s| s.text.as_str()).collect()
}

fn turns(a: &Analysis) -> &[SpeakerTurn] {
    a.speakers.as_deref().expect("speaker turns")
}

fn speakers(a: &Analysis) -> BTreeSet<&str> {
    turns(a).iter().map(|t| t.speaker.as_str()).collect()
}

#[test]
fn eight_parts_agree_with_one() -> Res<()> {
    let Recording {
        samples,
        said,
        turns: truth,
    } = ten_minutes()?;
    let one = analyze(&samples, 1, 900.0)?;
    // Two workers, parts of at most 75 s: eight of them.
    let eight = analyze(&samples, 2, 75.0)?;
    assert_eq!(one.parts.len(), 1);
    assert_eq!(eight.parts.len(), 8, "{:?}", eight.parts);
    // Back to back over the whole recording, each within the planner's reach of 75 s.
    let mut end = 0.0;
    for p in &eight.parts {
        assert_eq!(p.start, end);
        end = p.end;
    }
    assert_eq!(end, 600.0);
    for p in &eight.parts[..7] {
        assert!((p.end - p.start - 75.0).abs() <= 15.0, "{p:?}");
    }
    // The voice activity runs over the whole stream either way.
    assert_eq!(one.speech, eight.speech);

    let (a, b) = (text(&one), text(&eight));
    if let Ok(dir) = std::env::var("MICA_DUMP_PARTS") {
        std::fs::write(
            format!("{dir}/one.json"),
            serde_json::to_string_pretty(&one)?,
        )?;
        std::fs::write(
            format!("{dir}/eight.json"),
            serde_json::to_string_pretty(&eight)?,
        )?;
    }
    let wer = |r: &str, h: &str| mica_asr::wer::wer_english(r, h).wer();
    let (wer_one, wer_eight, between) = (wer(&said, &a), wer(&said, &b), wer(&a, &b));
    println!(
        "WER against the words said: {:.2}% in 1 part, {:.2}% in 8; between them {:.2}% \
         ({} words)",
        wer_one * 100.0,
        wer_eight * 100.0,
        between * 100.0,
        said.split_whitespace().count()
    );
    // Each part starts Whisper afresh (its own 30 s windows, no previous text, its own
    // level for the log-mel floor), so the two texts differ where tiny.en is unsure;
    // the accuracy must not.
    assert!(
        wer_eight <= wer_one + 0.01,
        "{wer_eight} in 8 parts, {wer_one} in 1"
    );
    assert!(
        wer_one <= 0.12 && wer_eight <= 0.12,
        "{wer_one} {wer_eight}"
    );
    // Words in order, inside the recording, none across a cut, each with a speaker.
    let transcript = eight.transcript.as_ref().expect("a transcript");
    let mut last = 0.0;
    for w in transcript.segments.iter().flat_map(|s| &s.words) {
        assert!(
            w.start >= last - 1e-9 && w.end >= w.start && w.end <= 600.0,
            "{w:?}"
        );
        assert!(
            eight
                .parts
                .iter()
                .any(|p| p.start <= w.start && w.end <= p.end),
            "{w:?} spans a cut"
        );
        last = w.start;
    }
    assert!(transcript.segments.iter().all(|s| s.speaker.is_some()));

    // One clustering over every part: the speakers found as well as in one pass.
    let der = |r: &[SpeakerTurn], h: &[SpeakerTurn]| mica_diarize::der::der(r, h, 0.25).der;
    let (der_one, der_eight) = (der(&truth, turns(&one)), der(&truth, turns(&eight)));
    let between = mica_diarize::der::der(turns(&one), turns(&eight), 0.0).der;
    println!(
        "speakers: 3 said, {} found in 1 part, {} in 8; DER (collar 0.25 s) {:.2}% in 1 \
         part, {:.2}% in 8; between them (collar 0) {:.2}%",
        speakers(&one).len(),
        speakers(&eight).len(),
        der_one * 100.0,
        der_eight * 100.0,
        between * 100.0
    );
    assert!(
        der_eight <= der_one + 0.02,
        "DER {der_eight} in 8 parts, {der_one} in 1"
    );
    assert!(der_eight <= 0.15, "DER {der_eight} in 8 parts");
    assert!((3..=4).contains(&speakers(&eight).len()));
    Ok(())
}

/// plan / run-part / merge give what `analyze` gives with the same cuts, and merge refuses
/// a missing part, a duplicate and another plan's part, naming the index.
#[test]
fn plan_run_part_merge_equals_analyze() -> Res<()> {
    let recording = ten_minutes()?;
    let samples = &recording.samples[..100 * 16_000];
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("talk.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&path, spec)?;
    for &x in samples {
        w.write_sample(x)?;
    }
    w.finalize()?;
    let analyzer = Analyzer::builder()
        .device(mica_core::device::test_device_spec()?)
        .tasks([Task::Vad, Task::Asr, Task::Diarize])
        .precision(Precision::Q8_0)
        .workers(3)
        .part_seconds(40.0)
        .build()?;
    let plan = analyzer.plan(&path, mica::PartSize::Count(3))?;
    assert_eq!(plan.parts.len(), 3);
    // The plan survives JSON, as it travels between processes.
    let plan: mica::Plan = serde_json::from_str(&serde_json::to_string(&plan)?)?;
    let mut results = Vec::new();
    for i in (0..3).rev() {
        let r = analyzer.run_part(&plan, i)?;
        results.push(serde_json::from_str::<mica::PartResult>(
            &serde_json::to_string(&r)?,
        )?);
    }
    let merged = analyzer.merge(&plan, results.clone())?;
    let direct = analyzer.analyze(path.as_path())?;
    assert_eq!(merged.parts, direct.parts);
    assert_eq!(merged.transcript, direct.transcript);
    assert_eq!(merged.speech, direct.speech);
    assert_eq!(merged.speakers, direct.speakers);

    let refused = |results: Vec<mica::PartResult>| -> String {
        let e = analyzer
            .merge(&plan, results)
            .expect_err("merge must refuse");
        assert_eq!(e.kind(), mica::ErrorKind::Input);
        e.to_string()
    };
    assert_eq!(refused(results[..2].to_vec()), "part 0 is missing");
    let mut twice = results.clone();
    twice.push(results[1].clone());
    assert_eq!(refused(twice), "part 1 is given twice");
    let mut other = results.clone();
    other[0].plan = "0123456789abcdef".into();
    assert!(refused(other).starts_with("part 2 belongs to plan 0123456789abcdef"));
    let e = analyzer.run_part(&plan, 3).expect_err("no part 3");
    assert_eq!(e.to_string(), "the plan has parts 0 to 2, not 3");
    let vad_only = Analyzer::builder().tasks([Task::Vad]).build()?;
    let e = vad_only.run_part(&plan, 0).expect_err("other tasks");
    assert!(
        e.to_string()
            .contains("the plan's tasks are vad, asr, diarize"),
        "{e}"
    );
    Ok(())
}
