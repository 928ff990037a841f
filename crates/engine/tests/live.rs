//! Live captions on real speech: the first minutes of the long English set pushed in
//! 0.1 s chunks, against the offline transcript of the same audio, the set's own text and
//! its speaker turns.
//! The delays checked here are in audio time (how much audio had to arrive before a word
//! settled), so they do not depend on this machine's speed; wall-clock latency is measured
//! by `benches/live_latency.py`.

use std::sync::OnceLock;

use mica::{Analyzer, Error, LiveEvent, LiveOptions, OnlineOptions, Task, TranscribeOptions};
use mica_asr::wer::wer_english;
use mica_core::document::{SpeakerTurn, Word};
use mica_testdata::LongSet;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Seconds of the long English set used (the first prompts, the reader, the cards).
const SECONDS: f64 = 100.0;

fn analyzer() -> Res<&'static Analyzer> {
    static A: OnceLock<Analyzer> = OnceLock::new();
    if let Some(a) = A.get() {
        return Ok(a);
    }
    let options = TranscribeOptions {
        decode: mica_asr::DecodeOptions {
            beam_size: 1,
            ..Default::default()
        },
        ..TranscribeOptions::default()
    };
    let a = Analyzer::builder()
        .device(mica_core::device::test_device_spec()?)
        .tasks([Task::Asr, Task::Diarize])
        .transcribe_options(options)
        .build()?;
    Ok(A.get_or_init(|| a))
}

/// The set cut at the last pause before [`SECONDS`], with the utterances inside.
fn recording() -> Res<&'static LongSet> {
    static S: OnceLock<LongSet> = OnceLock::new();
    if let Some(s) = S.get() {
        return Ok(s);
    }
    let mut set = mica_testdata::long_english()?;
    set.utterances.retain(|u| u.end < SECONDS);
    let end = set.utterances.last().map_or(0.0, |u| u.end) + 0.5;
    set.samples.truncate((end * 16_000.0) as usize);
    Ok(S.get_or_init(|| set))
}

/// Every event of a session fed `samples` in chunks of `chunk` samples.
fn run(samples: &[f32], chunk: usize, options: LiveOptions) -> Res<Vec<LiveEvent>> {
    let mut session = analyzer()?.live(options)?;
    let mut events = Vec::new();
    for c in samples.chunks(chunk) {
        events.extend(session.push(c)?);
    }
    events.extend(session.finish()?);
    Ok(events)
}

fn finals(events: &[LiveEvent]) -> Vec<(Word, f64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Final(c) => Some(c),
            _ => None,
        })
        .flat_map(|c| c.words.iter().map(|w| (w.clone(), c.at, c.utterance)))
        .collect()
}

fn norm(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn settled_text_matches_the_offline_transcript_and_settles_soon_with_its_speakers() -> Res<()> {
    let set = recording()?;
    let options = LiveOptions {
        speakers: Some(OnlineOptions::default()),
        ..LiveOptions::default()
    };
    let events = run(&set.samples, 1600, options)?;
    let settled = finals(&events);
    let live_text: String = settled.iter().map(|(w, _, _)| w.text.as_str()).collect();

    let offline = analyzer()?
        .with_tasks([Task::Asr])?
        .analyze(set.samples.as_slice())?;
    let offline_text: String = offline
        .transcript
        .as_ref()
        .ok_or("no transcript")?
        .segments
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    let reference = set.english_text();
    let vs_offline = wer_english(&offline_text, &live_text).wer();
    let live_wer = wer_english(&reference, &live_text).wer();
    let offline_wer = wer_english(&reference, &offline_text).wer();
    eprintln!(
        "live vs offline {:.2}%, live WER {:.2}%, offline WER {:.2}% ({} words settled)",
        vs_offline * 100.0,
        live_wer * 100.0,
        offline_wer * 100.0,
        settled.len()
    );
    assert!(vs_offline <= 0.05, "live text {vs_offline} from offline");
    assert!(
        live_wer <= offline_wer + 0.03,
        "live {live_wer} offline {offline_wer}"
    );

    // Settled words come in time order, never twice, each after its audio arrived.
    for pair in settled.windows(2) {
        let (a, b) = (&pair[0].0, &pair[1].0);
        assert!(b.start >= a.start - 0.05, "{a:?} then {b:?}");
    }
    for (w, at, _) in &settled {
        assert!(
            *at + 1e-6 >= w.end.min(set.duration()),
            "{w:?} settled at {at}"
        );
    }
    // How much audio had to arrive before a word settled (compute time aside).
    let delays: Vec<f64> = settled.iter().map(|(w, at, _)| at - w.end).collect();
    let p50 = percentile(delays.clone(), 0.5);
    let p95 = percentile(delays, 0.95);
    eprintln!("settle delay in audio time: p50 {p50:.2} s, p95 {p95:.2} s");
    assert!(p95 <= 1.6, "p95 settle delay {p95} s");

    // Every utterance of the set has most of its words settled.
    let mut lost = Vec::new();
    for u in &set.utterances {
        let heard: String = settled
            .iter()
            .filter(|(w, _, _)| w.end > u.start - 0.3 && w.start < u.end + 0.3)
            .map(|(w, _, _)| w.text.as_str())
            .collect();
        let stats = wer_english(&u.text, &heard);
        if stats.wer() > 0.5 {
            lost.push(format!(
                "{:.1}-{:.1} {:?} heard {heard:?}",
                u.start, u.end, u.text
            ));
        }
    }
    assert!(lost.is_empty(), "utterances lost live: {lost:#?}");

    // Speakers: labelled stretches in order, as many speakers as the set has (within one),
    // and the labels scored against the set's turns.
    let labels: Vec<SpeakerTurn> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Speaker(l) => Some(l.turn()),
            _ => None,
        })
        .collect();
    for pair in labels.windows(2) {
        assert!(pair[1].start >= pair[0].end - 1e-6, "{pair:?}");
    }
    let mut found: Vec<&str> = labels.iter().map(|t| t.speaker.as_str()).collect();
    found.sort_unstable();
    found.dedup();
    let report = mica_diarize::der::der(&set.turns(), &labels, 0.25);
    eprintln!(
        "live speakers: {} found of {}, DER {:.1}% (missed {:.1} s, confusion {:.1} s of {:.1} s)",
        found.len(),
        set.speakers(),
        100.0 * report.der,
        report.missed,
        report.confusion,
        report.total
    );
    assert!(found.len().abs_diff(set.speakers()) <= 1, "{found:?}");
    assert!(report.der <= 0.10, "live speaker DER {}", report.der);
    Ok(())
}

#[test]
fn partials_come_before_their_words_settle() -> Res<()> {
    let set = recording()?;
    let samples = &set.samples[..(40.0 * 16_000.0) as usize];
    let events = run(samples, 1600, LiveOptions::default())?;
    let mut partial_first = 0;
    let mut settled = 0;
    let mut shown: Vec<(String, f64)> = Vec::new();
    for e in &events {
        match e {
            LiveEvent::Partial(c) => {
                shown.extend(c.words.iter().map(|w| (w.text.clone(), w.start)));
            }
            LiveEvent::Final(c) if !c.end_of_utterance => {
                for w in &c.words {
                    settled += 1;
                    if shown
                        .iter()
                        .any(|(t, s)| norm(t) == norm(&w.text) && (s - w.start).abs() < 0.5)
                    {
                        partial_first += 1;
                    }
                }
            }
            _ => {}
        }
    }
    // Words settled mid-utterance were all shown as a partial first (two passes agreed).
    assert!(settled > 20, "{settled} words settled mid-utterance");
    assert_eq!(partial_first, settled);
    // Every utterance is closed by an end-of-utterance final, once.
    let opened: std::collections::BTreeSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Final(c) | LiveEvent::Partial(c) => Some(c.utterance),
            _ => None,
        })
        .collect();
    let closed: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Final(c) if c.end_of_utterance => Some(c.utterance),
            _ => None,
        })
        .collect();
    assert_eq!(closed, opened.into_iter().collect::<Vec<_>>());
    Ok(())
}

#[test]
fn chunking_changes_nothing_but_cadence() -> Res<()> {
    // One push of 2 s against pushes of 20 ms: the same words settle (the passes differ,
    // but the final pass of each utterance hears all of it).
    let set = recording()?;
    let samples = &set.samples[..(25.0 * 16_000.0) as usize];
    let text = |events: &[LiveEvent]| -> String {
        finals(events)
            .iter()
            .map(|(w, _, _)| w.text.clone())
            .collect()
    };
    let small = text(&run(samples, 320, LiveOptions::default())?);
    let large = text(&run(samples, 32_000, LiveOptions::default())?);
    let stats = wer_english(&small, &large);
    assert!(stats.wer() <= 0.05, "{small:?}\n{large:?}");
    Ok(())
}

#[test]
fn silence_and_nothing_say_nothing() -> Res<()> {
    assert!(run(&[], 1600, LiveOptions::default())?.is_empty());
    assert!(run(&vec![0.0; 16_000 * 5], 1600, LiveOptions::default())?.is_empty());
    // Faint noise is not speech either.
    let noise: Vec<f32> = (0..16_000 * 3)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 1e-3)
        .collect();
    assert!(run(&noise, 1600, LiveOptions::default())?.is_empty());
    Ok(())
}

#[test]
fn bad_options_and_missing_tasks_are_typed_errors() -> Res<()> {
    let a = analyzer()?;
    for bad in [
        LiveOptions {
            step_seconds: 0.0,
            ..LiveOptions::default()
        },
        LiveOptions {
            max_buffer_seconds: 40.0,
            ..LiveOptions::default()
        },
        LiveOptions {
            lead_seconds: f64::NAN,
            ..LiveOptions::default()
        },
    ] {
        let e = a.live(bad).unwrap_err();
        assert!(matches!(e, Error::Options(_)), "{e}");
    }
    let mut speech = LiveOptions::default();
    speech.speech.threshold = 2.0;
    assert!(matches!(a.live(speech).unwrap_err(), Error::Vad(_)));
    let vad_only = Analyzer::builder()
        .device(mica_core::device::test_device_spec()?)
        .tasks([Task::Vad])
        .build()?;
    let e = vad_only.live(LiveOptions::default()).unwrap_err();
    assert!(matches!(e, Error::TaskNotLoaded { .. }), "{e}");
    // Speaker labels need the diarize task's embedding network.
    let speakers = LiveOptions {
        speakers: Some(OnlineOptions::default()),
        ..LiveOptions::default()
    };
    let e = a.with_tasks([Task::Asr])?.live(speakers).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TaskNotLoaded {
                task: Task::Diarize,
                ..
            }
        ),
        "{e}"
    );
    let bad = LiveOptions {
        speakers: Some(OnlineOptions {
            threshold: 3.0,
            ..OnlineOptions::default()
        }),
        ..LiveOptions::default()
    };
    assert!(a.live(bad).is_err());
    Ok(())
}
