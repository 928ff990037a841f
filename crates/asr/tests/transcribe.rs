//! Transcription accuracy on real recordings against the ground truth and against
//! faster-whisper on the same weights (tests/golden/decode.json from
//! scripts/golden_decode.py), plus the hallucination guards and word timings.
//!
//! Each model is loaded once per binary; each expensive transcription runs once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use mica_asr::wer::{WerStats, wer_english};
use mica_asr::{Precision, TranscribeOptions, Transcriber};
use mica_core::document::Transcript;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

fn device() -> Res<Device> {
    Ok(mica_core::device::test_device()?)
}

fn transcriber(name: &'static str) -> Res<&'static Transcriber> {
    transcriber_in(name, Precision::F32)
}

fn transcriber_in(name: &'static str, precision: Precision) -> Res<&'static Transcriber> {
    static TINY: OnceLock<Transcriber> = OnceLock::new();
    static BASE: OnceLock<Transcriber> = OnceLock::new();
    static TINY_Q8: OnceLock<Transcriber> = OnceLock::new();
    let cell = match (name, precision) {
        ("tiny.en", Precision::Q8_0) => &TINY_Q8,
        ("tiny.en", _) => &TINY,
        _ => &BASE,
    };
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let dir = mica_models::ensure(name)?;
    let t = Transcriber::load(&dir, &device()?, precision)?;
    Ok(cell.get_or_init(|| t))
}

fn sample(rel: &str) -> Res<PathBuf> {
    let (asset, file) = rel.split_once('/').ok_or("bad sample path")?;
    Ok(mica_models::ensure(asset)?.join(file))
}

fn audio(rel: &str) -> Res<Vec<f32>> {
    Ok(mica_media::load_all(sample(rel)?)?.samples)
}

fn text(t: &Transcript) -> String {
    t.segments.iter().map(|s| s.text.as_str()).collect()
}

fn english() -> TranscribeOptions {
    TranscribeOptions {
        language: Some("en".into()),
        ..TranscribeOptions::default()
    }
}

#[derive(serde::Deserialize)]
struct Golden {
    models: BTreeMap<String, GoldenModel>,
}
#[derive(serde::Deserialize)]
struct GoldenModel {
    files: BTreeMap<String, GoldenFile>,
    #[serde(default)]
    language: Option<GoldenLanguage>,
}
#[derive(serde::Deserialize)]
struct GoldenFile {
    text: String,
}
#[derive(serde::Deserialize)]
struct GoldenLanguage {
    code: String,
    probability: f64,
}

fn golden() -> Res<Golden> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/decode.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// `(file, reference text)` of a fixture set from its transcription file.
fn references(set: &str) -> Res<Vec<(String, String)>> {
    let (asset, list) = match set {
        "librivox" => ("librivox", "transcription"),
        _ => ("cards", "cards.transcription"),
    };
    let dir = mica_models::ensure(asset)?;
    let mut out = Vec::new();
    for line in std::fs::read_to_string(dir.join(list))?.lines() {
        let Some((body, id)) = line.rsplit_once('(') else {
            continue;
        };
        let id = id.trim_end_matches(')').trim();
        let number = id.rsplit('-').next().unwrap_or(id);
        let words = body.replace("<s>", "").replace("</s>", "");
        out.push((format!("{asset}/{number}.wav"), words.trim().to_string()));
    }
    Ok(out)
}

#[test]
fn jfk_exact_tiny_en() -> Res<()> {
    let t = transcriber("tiny.en")?.transcribe(&audio("jfk/jfk.wav")?, &english())?;
    let got = text(&t);
    println!("tiny.en jfk: {got}");
    assert_eq!(wer_english(JFK, &got).errors(), 0, "{got}");
    assert_eq!(t.language, "en");
    assert!((t.duration - 11.0).abs() < 1e-6);
    let first = &t.segments[0];
    assert!(first.start < 0.5 && t.segments.last().ok_or("no segment")?.end > 9.0);
    assert!(first.avg_logprob < 0.0 && first.avg_logprob > -1.0);
    assert!(first.no_speech_prob < 0.2);
    Ok(())
}

#[test]
fn jfk_exact_base_with_detected_language() -> Res<()> {
    let tr = transcriber("base")?;
    let samples = audio("jfk/jfk.wav")?;
    let probs = tr.detect_language(&samples)?;
    let g = golden()?;
    let lang = g.models["base"]
        .language
        .as_ref()
        .ok_or("no language golden")?;
    println!(
        "base language: {:?} (faster-whisper {} {:.4})",
        &probs[..3],
        lang.code,
        lang.probability
    );
    assert_eq!(probs[0].0, lang.code);
    assert!((probs[0].1 - lang.probability).abs() < 0.02);
    let t = tr.transcribe(&samples, &TranscribeOptions::default())?;
    let got = text(&t);
    println!("base jfk: {got}");
    assert_eq!(t.language, "en");
    assert_eq!(wer_english(JFK, &got).errors(), 0, "{got}");
    Ok(())
}

/// WER of mica and of faster-whisper (same weights, same options) on a fixture set.
fn wer_vs_reference(model: &'static str, set: &str) -> Res<(WerStats, WerStats)> {
    wer_vs_reference_in(model, Precision::F32, set)
}

fn wer_vs_reference_in(
    model: &'static str,
    precision: Precision,
    set: &str,
) -> Res<(WerStats, WerStats)> {
    let tr = transcriber_in(model, precision)?;
    let g = golden()?;
    let gm = &g.models[model];
    let (mut ours, mut theirs) = (WerStats::default(), WerStats::default());
    for (file, reference) in references(set)? {
        let t = tr.transcribe(&audio(&file)?, &english())?;
        let got = text(&t);
        let fw = &gm.files[&file].text;
        println!("{model} {file}\n  ref  {reference}\n  mica {got}\n  fw   {fw}");
        ours = ours + wer_english(&reference, &got);
        theirs = theirs + wer_english(&reference, fw);
    }
    println!(
        "{model} {precision} {set}: WER mica {:.1}% vs faster-whisper {:.1}% ({} words)",
        100.0 * ours.wer(),
        100.0 * theirs.wer(),
        ours.reference_words
    );
    Ok((ours, theirs))
}

#[test]
fn librivox_and_cards_wer_tiny_en() -> Res<()> {
    for set in ["librivox", "cards"] {
        let (ours, theirs) = wer_vs_reference("tiny.en", set)?;
        // Same weights and options: at most one error more than faster-whisper.
        assert!(
            ours.errors() <= theirs.errors() + 1,
            "{set}: {} errors vs {}",
            ours.errors(),
            theirs.errors()
        );
    }
    Ok(())
}

/// The int8 path (weights and activations, as CTranslate2's int8) keeps the accuracy:
/// within one error of faster-whisper on each set.
#[test]
fn librivox_and_cards_wer_tiny_en_q8() -> Res<()> {
    for set in ["librivox", "cards"] {
        let (ours, theirs) = wer_vs_reference_in("tiny.en", Precision::Q8_0, set)?;
        assert!(
            ours.errors() <= theirs.errors() + 1,
            "q8_0 {set}: {} errors vs {}",
            ours.errors(),
            theirs.errors()
        );
    }
    Ok(())
}

/// Silence, white noise and a pure tone carry no speech: no text.
#[test]
fn no_text_from_non_speech() -> Res<()> {
    let tr = transcriber("tiny.en")?;
    // 6 s each: the fallback runs every temperature on noise, so keep them short.
    let n = 16_000 * 6;
    let silence = vec![0.0f32; n];
    // A fixed linear congruential generator: reproducible noise without a dependency.
    let mut state = 12345u32;
    let noise: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
        })
        .collect();
    let tone: Vec<f32> = (0..n)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
        .collect();
    for (name, x) in [("silence", silence), ("noise", noise), ("tone", tone)] {
        let t = tr.transcribe(&x, &english())?;
        let got = text(&t);
        println!(
            "{name}: {got:?} {:?}",
            t.segments
                .iter()
                .map(|s| (s.avg_logprob, s.no_speech_prob))
                .collect::<Vec<_>>()
        );
        assert!(got.trim().is_empty(), "{name} gave text {got:?}");
    }
    assert!(tr.transcribe(&[], &english())?.segments.is_empty());
    Ok(())
}

#[test]
fn word_timestamps_are_monotonic_and_inside_segments() -> Res<()> {
    let tr = transcriber("tiny.en")?;
    let options = TranscribeOptions {
        word_timestamps: true,
        ..english()
    };
    let t = tr.transcribe(&audio("jfk/jfk.wav")?, &options)?;
    let mut last = 0.0;
    let mut words = Vec::new();
    for s in &t.segments {
        assert!(!s.words.is_empty(), "segment without words: {s:?}");
        let joined: String = s.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(joined.trim(), s.text.trim());
        for w in &s.words {
            assert!(
                w.start >= s.start && w.end <= s.end,
                "{w:?} outside {}..{}",
                s.start,
                s.end
            );
            assert!(w.start <= w.end && w.start >= last, "{w:?} not monotonic");
            assert!((0.0..=1.0).contains(&w.probability));
            last = w.end;
            words.push(w.clone());
        }
    }
    println!(
        "{:?}",
        words
            .iter()
            .map(|w| (w.text.as_str(), w.start, w.end))
            .collect::<Vec<_>>()
    );
    // Known landmarks of the recording: "Americans" ends before 4 s, "country." near the end.
    let americans = words
        .iter()
        .find(|w| w.text.contains("Americans"))
        .ok_or("no Americans")?;
    assert!(
        americans.start > 1.5 && americans.end < 4.0,
        "{americans:?}"
    );
    let last_word = words.last().ok_or("no words")?;
    assert!(
        last_word.end > 9.0 && last_word.end <= 11.0,
        "{last_word:?}"
    );
    Ok(())
}

/// An 8 kHz mp3 goes through the media decoder (resampled to 16 kHz) and transcribes.
#[test]
fn mp3_at_8khz() -> Res<()> {
    let dir = tempfile::tempdir()?;
    let mp3 = dir.path().join("jfk8k.mp3");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(sample("jfk/jfk.wav")?)
        .args(["-ar", "8000", "-ac", "1", "-b:a", "32k"])
        .arg(&mp3)
        .status()?;
    assert!(status.success(), "ffmpeg failed");
    let stream = mica_media::AudioStream::open(&mp3)?;
    let t = transcriber("tiny.en")?.transcribe_stream(stream, &english())?;
    let got = text(&t);
    println!("8 kHz mp3: {got}");
    assert!(wer_english(JFK, &got).wer() <= 0.1, "{got}");
    Ok(())
}

/// One model shared by several threads at once gives each the transcript it gives alone.
#[test]
fn one_model_shared_by_threads_gives_the_same_transcript() -> Res<()> {
    let t = transcriber("tiny.en")?;
    let audio = audio("jfk/jfk.wav")?;
    let alone = t.transcribe(&audio, &english())?;
    let shared: Vec<Transcript> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| t.transcribe(&audio, &english())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("transcribing thread"))
            .collect::<Result<_, _>>()
    })?;
    for transcript in shared {
        assert_eq!(transcript, alone);
    }
    Ok(())
}
