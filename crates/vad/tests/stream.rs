//! Streaming: chunks of any size give the offline probabilities and regions, events come
//! in order and regions come out before the end of the stream.

mod common;

use common::*;
use mica_vad::{SampleRate, SpeechOptions, SpeechSegment, Vad, VadEvent};

/// A small deterministic generator (no test dependency needed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn run_chunked(
    vad: &Vad,
    x: &[f32],
    rate: SampleRate,
    rng: &mut Lcg,
    max_chunk: u64,
) -> Res<(Vec<f32>, Vec<VadEvent>, usize)> {
    let mut stream = vad.stream(rate)?;
    let mut probs = Vec::new();
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < x.len() {
        let n = (rng.below(max_chunk) as usize).min(x.len() - pos);
        let out = stream.push(&x[pos..pos + n])?;
        assert_eq!(out.first_window as usize, probs.len());
        probs.extend_from_slice(&out.probabilities);
        events.extend_from_slice(&out.events);
        pos += n;
    }
    let before_finish = events.len();
    let out = stream.finish()?;
    probs.extend_from_slice(&out.probabilities);
    events.extend_from_slice(&out.events);
    Ok((probs, events, before_finish))
}

fn segments(events: &[VadEvent]) -> Vec<SpeechSegment> {
    events
        .iter()
        .filter_map(|e| match e {
            VadEvent::Segment(s) => Some(*s),
            _ => None,
        })
        .collect()
}

#[test]
fn random_chunks_match_offline() -> TestResult {
    let mut rng = Lcg(7);
    let opts = [
        SpeechOptions::default(),
        SpeechOptions {
            max_speech_duration_s: Some(2.0),
            ..SpeechOptions::default()
        },
        SpeechOptions {
            speech_pad_ms: 200,
            threshold: 0.3,
            ..SpeechOptions::default()
        },
    ];
    for (name, _, _) in FILES {
        for rate in [SampleRate::Hz16000, SampleRate::Hz8000] {
            let x = audio(name, rate)?;
            for o in &opts {
                let vad = Vad::new(model()?, o.clone())?;
                let offline = vad.detect(&x, rate)?;
                // Mostly sub-window chunks, and some spanning many windows.
                for max_chunk in [700, 20_000] {
                    let (probs, events, _) = run_chunked(&vad, &x, rate, &mut rng, max_chunk)?;
                    let what = format!("{name} @ {}", rate.hz());
                    assert_probs_match(&probs, &offline.probabilities, &what);
                    assert_eq!(
                        segments(&events),
                        offline.segments,
                        "{name} @ {}",
                        rate.hz()
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn one_sample_at_a_time() -> TestResult {
    let x = audio("librivox-0880", SampleRate::Hz8000)?;
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let offline = vad.detect(&x, SampleRate::Hz8000)?;
    let mut stream = vad.stream(SampleRate::Hz8000)?;
    let mut probs = Vec::new();
    for s in x.chunks(1) {
        probs.extend_from_slice(&stream.push(s)?.probabilities);
    }
    probs.extend_from_slice(&stream.finish()?.probabilities);
    assert_probs_match(&probs, &offline.probabilities, "one sample at a time");
    Ok(())
}

#[test]
fn events_are_ordered_and_regions_come_early() -> TestResult {
    let x = audio("pyannote-sample", SampleRate::Hz16000)?;
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let (_, events, before_finish) = run_chunked(&vad, &x, SampleRate::Hz16000, &mut Lcg(1), 4000)?;
    let regions = segments(&events);
    assert!(regions.len() >= 4, "{regions:?}");
    let early = segments(&events[..before_finish]).len();
    assert!(
        early + 1 >= regions.len(),
        "only {early} of {} regions before finish",
        regions.len()
    );
    let mut in_speech = false;
    let mut last = 0;
    for e in &events {
        match *e {
            VadEvent::SpeechStart { sample } => {
                assert!(!in_speech, "start while in speech");
                assert!(sample >= last);
                in_speech = true;
                last = sample;
            }
            VadEvent::SpeechEnd { sample, .. } => {
                assert!(in_speech, "end while not in speech");
                assert!(sample >= last);
                in_speech = false;
                last = sample;
            }
            VadEvent::Segment(s) => assert!(s.start < s.end),
        }
    }
    assert!(!in_speech);
    for w in regions.windows(2) {
        assert!(w[0].end <= w[1].start, "{w:?}");
    }
    Ok(())
}

#[test]
fn reset_starts_a_new_recording() -> TestResult {
    let x = audio("jfk", SampleRate::Hz16000)?;
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let offline = vad.detect(&x, SampleRate::Hz16000)?;
    let mut stream = vad.stream(SampleRate::Hz16000)?;
    stream.push(&x[..50_000])?;
    stream.finish()?;
    assert!(
        matches!(stream.push(&x), Err(mica_vad::VadError::Finished)),
        "push after finish"
    );
    stream.reset()?;
    let mut probs = stream.push(&x)?.probabilities.clone();
    probs.extend_from_slice(&stream.finish()?.probabilities);
    assert_probs_match(&probs, &offline.probabilities, "one sample at a time");
    Ok(())
}

/// One model shared by several threads at once gives each the result it gives alone.
#[test]
fn one_model_shared_by_threads_gives_the_same_result() -> TestResult {
    let audio = audio16("jfk")?;
    let vad = Vad::new(model()?, SpeechOptions::default())?;
    let alone = vad.detect(&audio, SampleRate::Hz16000)?;
    let shared: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| vad.detect(&audio, SampleRate::Hz16000)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("detecting thread"))
            .collect::<Result<_, _>>()
    })?;
    for out in shared {
        assert_eq!(out.probabilities, alone.probabilities);
        assert_eq!(out.segments, alone.segments);
    }
    Ok(())
}
