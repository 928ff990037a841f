//! The long-english evaluation set (crates/testdata: 10 minutes of Allison's telephone
//! prompts with three other voices among them) in both long-form modes, tiny.en q8_0 with
//! faster-whisper's defaults (beam 5, temperature fallback, conditioning on previous text):
//! no window of utterances may go missing (at most one short prompt, the model's own miss)
//! and the WER stays near faster-whisper's on the same weights
//! (`benches/compare_long.py`: 3.06% sequential and 14.3% VAD-batched with digital silence
//! in the pauses; 7.4% and 10.3% with room tone).
//!
//! With digital silence in the pauses this set once lost 24 of its utterances in runs of
//! whole 30-s windows: prompts that repeat their own phrases fail the compression check at
//! every temperature, and a guard that dropped such windows when their no-speech
//! probability passed 0.3 dropped real speech. The guard is now off by default.

use std::sync::OnceLock;

use mica_asr::text::normalize_english;
use mica_asr::wer::wer_english;
use mica_asr::{Precision, TranscribeOptions, Transcriber};
use mica_core::document::Transcript;
use mica_testdata::LongSet;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn transcriber() -> Res<&'static Transcriber> {
    static T: OnceLock<Transcriber> = OnceLock::new();
    if let Some(t) = T.get() {
        return Ok(t);
    }
    let device = candle_core::Device::Cpu;
    let vad = mica_vad::SileroVad::from_path(mica_models::ensure("silero-v6")?, &device)?;
    let dir = mica_models::ensure("tiny.en")?;
    let t = Transcriber::load(&dir, &device, Precision::Q8_0)?.with_vad(vad);
    Ok(T.get_or_init(|| t))
}

fn silent_set() -> Res<&'static LongSet> {
    static SET: OnceLock<LongSet> = OnceLock::new();
    if let Some(s) = SET.get() {
        return Ok(s);
    }
    let set = mica_testdata::long_english()?.with_silent_pauses();
    Ok(SET.get_or_init(|| set))
}

/// Utterances fewer than half of whose words appear in the segments overlapping them
/// (with 1 s of slack either side).
fn lost(set: &LongSet, t: &Transcript) -> Vec<String> {
    set.utterances
        .iter()
        .filter(|u| {
            let near: Vec<&str> = t
                .segments
                .iter()
                .filter(|s| s.start < u.end + 1.0 && s.end > u.start - 1.0)
                .map(|s| s.text.as_str())
                .collect();
            let have = normalize_english(&near.join(" "));
            let have: Vec<&str> = have.split_whitespace().collect();
            let want = normalize_english(&u.text);
            let want: Vec<&str> = want.split_whitespace().collect();
            let found = want.iter().filter(|w| have.contains(w)).count();
            found * 2 < want.len()
        })
        .map(|u| format!("{:.2} s: {}", u.start, u.text))
        .collect()
}

fn check(set: &LongSet, vad: bool, max_wer: f64) -> Res<()> {
    let options = TranscribeOptions {
        language: Some("en".into()),
        vad,
        ..TranscribeOptions::default()
    };
    let t = transcriber()?.transcribe(&set.samples, &options)?;
    let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    let wer = wer_english(&set.english_text(), &text.join(" ")).wer();
    let missing = lost(set, &t);
    let mode = if vad { "VAD-batched" } else { "sequential" };
    println!(
        "{} {mode}: WER {:.2}%, {} of {} utterances lost: {missing:?}",
        set.name,
        wer * 100.0,
        missing.len(),
        set.utterances.len()
    );
    // Whole windows lost (the failure this guards against) cost 5 to 28 utterances; a
    // single short prompt that Whisper folds into its neighbour is the model's own miss
    // (tiny.en drops "four queen of clubs" on one CPU's numerics and not on another's).
    assert!(missing.len() <= 1, "{mode}: lost {missing:?}");
    assert!(wer <= max_wer, "{mode}: WER {wer}");
    Ok(())
}

#[test]
fn silent_pauses_sequential_loses_no_utterance() -> Res<()> {
    check(silent_set()?, false, 0.04)
}

#[test]
fn silent_pauses_vad_batched_loses_no_utterance() -> Res<()> {
    check(silent_set()?, true, 0.045)
}
