//! Live speaker labels on a long evaluation set: the set is pushed in 0.1 s chunks into a
//! live session with speakers (as fast as it decodes), and the `speaker` events are scored
//! against the set's turns (DER, 0.25 s collar) with the speaker count.
//!
//! `cargo run --release -p mica --example live_speakers -- [english|voices] [SECONDS] [THRESHOLD]`

use mica::{Analyzer, LiveEvent, LiveOptions, OnlineOptions, Task, TranscribeOptions};
use mica_core::document::SpeakerTurn;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "english".into());
    let seconds: f64 = args.next().map_or(Ok(300.0), |s| s.parse())?;
    let threshold: f32 = args
        .next()
        .map_or(Ok(OnlineOptions::default().threshold), |s| s.parse())?;
    let mut set = match which.as_str() {
        "english" => mica_testdata::long_english()?,
        "voices" => mica_testdata::long_voices()?,
        other => return Err(format!("no set {other:?}: english or voices").into()),
    };
    set.utterances.retain(|u| u.end < seconds);
    let end = set.utterances.last().map_or(0.0, |u| u.end) + 0.5;
    set.samples.truncate((end * 16_000.0) as usize);
    let analyzer = Analyzer::builder()
        .tasks([Task::Asr, Task::Diarize])
        .transcribe_options(TranscribeOptions {
            decode: mica_asr::DecodeOptions {
                beam_size: 1,
                ..Default::default()
            },
            ..Default::default()
        })
        .build()?;
    let mut session = analyzer.live(LiveOptions {
        speakers: Some(OnlineOptions {
            threshold,
            ..OnlineOptions::default()
        }),
        ..LiveOptions::default()
    })?;
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    for chunk in set.samples.chunks(1600) {
        events.extend(session.push(chunk)?);
    }
    events.extend(session.finish()?);
    let labels: Vec<SpeakerTurn> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Speaker(l) => Some(l.turn()),
            _ => None,
        })
        .collect();
    let mut found: Vec<&str> = labels.iter().map(|t| t.speaker.as_str()).collect();
    found.sort_unstable();
    found.dedup();
    let r = mica_diarize::der::der(&set.turns(), &labels, 0.25);
    println!(
        "{which} {end:.0} s (decoded in {:.0} s), threshold {threshold}: {} speakers of {}, \
         {} labels, DER {:.1}% (missed {:.1} s, false alarm {:.1} s, confusion {:.1} s of {:.1} s)",
        started.elapsed().as_secs_f64(),
        found.len(),
        set.speakers(),
        labels.len(),
        100.0 * r.der,
        r.missed,
        r.false_alarm,
        r.confusion,
        r.total
    );
    Ok(())
}
