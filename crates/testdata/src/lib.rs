//! Long evaluation recordings made of real voices, with exact speaker turns and words.
//!
//! Short clips score well and hide what goes wrong on a broadcaster's daily material:
//! minutes of speech where speakers come back, many short turns, and voices recorded on
//! different channels. Each set here is built deterministically from registry-shipped
//! recordings (see `models/manifest.toml`): utterances are trimmed of their leading and
//! trailing silence and laid end to end with short pauses of faint room tone, so every
//! speaker turn and every word is known exactly.
//!
//! - [`long_english`]: about 10 minutes, 4 English voices: Allison's telephone prompts
//!   (8 kHz recordings, 154 of them), the LibriVox reader, the card-game speaker and JFK.
//!   For word error rates and for diarization where one voice dominates.
//! - [`long_voices`]: about 15 minutes, 6 voices in 4 languages in turns of one to three
//!   utterances, every speaker coming back across the file. For diarization only.
//!
//! `cargo run --release -p mica-testdata --example write -- DIR` writes both as wav, rttm
//! and text for the peers' benches.

#![deny(missing_docs)]

use std::io::Read;
use std::path::Path;

use mica_core::document::SpeakerTurn;

/// Samples per second of every set.
pub const SAMPLE_RATE: u32 = 16_000;

/// What can stop a set from being built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recording could not be fetched.
    #[error(transparent)]
    Model(#[from] mica_models::ModelError),
    /// A recording could not be decoded.
    #[error(transparent)]
    Media(#[from] mica_media::MediaError),
    /// A transcript file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A transcript line did not have the expected shape.
    #[error("{0}")]
    Transcript(String),
}

/// One utterance of a set: where it lies, who says it and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Start in seconds (the first sample of speech after trimming).
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The speaker's name.
    pub speaker: &'static str,
    /// What is said, as the source's transcript writes it.
    pub text: String,
    /// Whether it is English (English-only models are scored on these).
    pub english: bool,
}

/// A built recording and what is in it.
#[derive(Debug, Clone)]
pub struct LongSet {
    /// The set's name (`long-english`, `long-voices`).
    pub name: &'static str,
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// Every utterance in time order.
    pub utterances: Vec<Utterance>,
}

impl LongSet {
    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }

    /// The reference speaker turns, one per utterance.
    pub fn turns(&self) -> Vec<SpeakerTurn> {
        self.utterances
            .iter()
            .map(|u| SpeakerTurn {
                start: u.start,
                end: u.end,
                speaker: u.speaker.to_string(),
            })
            .collect()
    }

    /// How many different speakers talk.
    pub fn speakers(&self) -> usize {
        let mut names: Vec<&str> = self.utterances.iter().map(|u| u.speaker).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Every English utterance's words in order, one utterance per line.
    pub fn english_text(&self) -> String {
        let lines: Vec<&str> = self
            .utterances
            .iter()
            .filter(|u| u.english)
            .map(|u| u.text.as_str())
            .collect();
        lines.join("\n")
    }

    /// The reference turns as RTTM lines (NIST's format, file id = the set's name).
    pub fn rttm(&self) -> String {
        self.utterances
            .iter()
            .map(|u| {
                format!(
                    "SPEAKER {} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                    self.name,
                    u.start,
                    u.end - u.start,
                    u.speaker
                )
            })
            .collect()
    }

    /// The same recording with digital silence (exact zeros) in every pause instead of
    /// room tone: what an edited file or a muted line sounds like, and what drives Whisper's
    /// no-speech probability up (`NAME-silent`).
    pub fn with_silent_pauses(&self) -> LongSet {
        let mut samples = vec![0.0f32; self.samples.len()];
        for u in &self.utterances {
            let a = (u.start * SAMPLE_RATE as f64).round() as usize;
            let b = ((u.end * SAMPLE_RATE as f64).round() as usize).min(samples.len());
            samples[a..b].copy_from_slice(&self.samples[a..b]);
        }
        LongSet {
            name: match self.name {
                "long-english" => "long-english-silent",
                "long-voices" => "long-voices-silent",
                other => other,
            },
            samples,
            utterances: self.utterances.clone(),
        }
    }

    /// Writes the samples as a 16-bit wav file.
    pub fn write_wav(&self, path: &Path) -> Result<(), Error> {
        let io = |e: hound::Error| Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        };
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).map_err(io)?;
        for &s in &self.samples {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
                .map_err(io)?;
        }
        w.finalize().map_err(io)
    }
}

/// A trimmed recording of one utterance.
#[derive(Debug, Clone)]
struct Clip {
    samples: Vec<f32>,
    text: String,
    speaker: &'static str,
    english: bool,
}

/// Shortest and longest prompt kept (seconds, after trimming): long enough to be a turn,
/// short enough that a set holds many of them.
const PROMPT_SECONDS: (f64, f64) = (1.5, 9.0);

/// The utterance without its leading and trailing silence: 10 ms frames whose RMS is under
/// -50 dBFS at either end are cut, keeping 50 ms of margin so no onset is clipped.
fn trim(samples: &[f32]) -> &[f32] {
    const FRAME: usize = 160;
    const MARGIN: usize = 800;
    let loud = |f: &[f32]| {
        let energy = f.iter().map(|x| x * x).sum::<f32>() / f.len().max(1) as f32;
        energy.sqrt() > 0.003_16
    };
    let frames: Vec<&[f32]> = samples.chunks(FRAME).collect();
    let Some(first) = frames.iter().position(|f| loud(f)) else {
        return &samples[..0];
    };
    let last = frames.iter().rposition(|f| loud(f)).unwrap_or(first);
    let start = (first * FRAME).saturating_sub(MARGIN);
    let end = ((last + 1) * FRAME + MARGIN).min(samples.len());
    &samples[start..end]
}

fn load(path: &Path) -> Result<Vec<f32>, Error> {
    Ok(mica_media::load_all(path)?.samples)
}

/// The prompts of one Asterisk voice whose transcript is plain speech (no bracketed tone
/// descriptions, no digits that a reader could say two ways) and whose length fits
/// [`PROMPT_SECONDS`], sorted by name.
fn prompts(asset: &str, speaker: &'static str, english: bool) -> Result<Vec<Clip>, Error> {
    let dir = mica_models::ensure(asset)?;
    let list = dir.join("transcripts.txt.gz");
    let io = |source| Error::Io {
        path: list.display().to_string(),
        source,
    };
    let file = std::fs::File::open(&list).map_err(io)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(io)?;
    let mut lines: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, v)| {
            !k.contains('/')
                && !v.is_empty()
                && !v.contains(['[', '/'])
                && !v.chars().any(|c| c.is_ascii_digit())
        })
        .collect();
    lines.sort_unstable();
    lines.dedup_by_key(|(k, _)| *k);
    let mut clips = Vec::new();
    let mut said = std::collections::HashSet::new();
    for (key, words) in lines {
        // Spelled acronyms ("MGCP", "M I S D N") have no one right spelling to score, and a
        // prompt recorded twice under two names would be said twice in a row.
        let capitals = |w: &str| w.chars().filter(|c| c.is_uppercase()).count();
        let spelled = words.split_whitespace().any(|w| capitals(w) >= 2)
            || words
                .split_whitespace()
                .filter(|w| w.len() == 1 && capitals(w) == 1 && *w != "I")
                .count()
                >= 2;
        let plain: String = words
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        if spelled || !said.insert(plain.split_whitespace().collect::<Vec<_>>().join(" ")) {
            continue;
        }
        let path = dir.join(format!("{key}.wav"));
        if !path.is_file() {
            continue;
        }
        let samples = load(&path)?;
        let kept = trim(&samples);
        let seconds = kept.len() as f64 / SAMPLE_RATE as f64;
        if (PROMPT_SECONDS.0..=PROMPT_SECONDS.1).contains(&seconds) {
            clips.push(Clip {
                samples: kept.to_vec(),
                text: words.to_string(),
                speaker,
                english,
            });
        }
    }
    Ok(clips)
}

/// A pocketsphinx test set: `<s> words </s> (id_ending_in_the_file_stem)` per line.
fn sphinx_set(asset: &str, list: &str, speaker: &'static str) -> Result<Vec<Clip>, Error> {
    let dir = mica_models::ensure(asset)?;
    let path = dir.join(list);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut clips = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (words, id) = line
            .rsplit_once('(')
            .ok_or_else(|| Error::Transcript(format!("{list}: no id in {line:?}")))?;
        let words = words.replace("<s>", "").replace("</s>", "");
        let stem = id
            .trim_end_matches(')')
            .rsplit(['-', '_'])
            .next()
            .unwrap_or("");
        let samples = load(&dir.join(format!("{stem}.wav")))?;
        clips.push(Clip {
            samples: trim(&samples).to_vec(),
            text: words.split_whitespace().collect::<Vec<_>>().join(" "),
            speaker,
            english: true,
        });
    }
    Ok(clips)
}

fn jfk() -> Result<Clip, Error> {
    let samples = load(&mica_models::ensure("jfk")?.join("jfk.wav"))?;
    Ok(Clip {
        samples: trim(&samples).to_vec(),
        text: "And so my fellow Americans, ask not what your country can do for you, ask what \
               you can do for your country."
            .into(),
        speaker: "jfk",
        english: true,
    })
}

/// Lays clips end to end with pauses of faint room tone (about -70 dBFS of white noise, not
/// digital silence, which would make speech detection trivial).
struct Builder {
    samples: Vec<f32>,
    utterances: Vec<Utterance>,
    noise: u32,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            samples: Vec::new(),
            utterances: Vec::new(),
            noise: 12_345,
        }
    }

    fn pause(&mut self, seconds: f64) {
        let n = (seconds * SAMPLE_RATE as f64) as usize;
        for _ in 0..n {
            self.noise = self
                .noise
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let x = (self.noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            self.samples.push(x * 6e-4);
        }
    }

    fn say(&mut self, clip: &Clip) {
        let start = self.samples.len() as f64 / SAMPLE_RATE as f64;
        self.samples.extend_from_slice(&clip.samples);
        self.utterances.push(Utterance {
            start,
            end: self.samples.len() as f64 / SAMPLE_RATE as f64,
            speaker: clip.speaker,
            text: clip.text.clone(),
            english: clip.english,
        });
    }

    fn finish(mut self, name: &'static str) -> LongSet {
        self.pause(1.0);
        LongSet {
            name,
            samples: self.samples,
            utterances: self.utterances,
        }
    }
}

/// About 10 minutes of English: Allison's telephone prompts in order, with the LibriVox
/// reader's five sentences, the card-game speaker's five commands and JFK spread among
/// them; pauses of 0.4 to 1.2 s. Four speakers, one of them most of the time.
pub fn long_english() -> Result<LongSet, Error> {
    let allison = prompts("asterisk-en", "allison", true)?;
    let reader = sphinx_set("librivox", "transcription", "reader")?;
    let cards = sphinx_set("cards", "cards.transcription", "cards")?;
    let jfk = jfk()?;
    let n = allison.len();
    let mut b = Builder::new();
    b.pause(0.5);
    for (i, clip) in allison.iter().enumerate() {
        b.say(clip);
        b.pause(0.4 + 0.1 * (i % 9) as f64);
        // The other voices come in at evenly spread places, each a few times.
        let slot = |k: usize, of: usize, shift: usize| (k * n + shift * n / 2) / of;
        for k in 0..reader.len() {
            if i + 1 == slot(k, reader.len(), 1).max(1) {
                b.say(&reader[k]);
                b.pause(0.7);
            }
        }
        for k in 0..cards.len() {
            if i + 1 == slot(k, cards.len(), 0).max(3) {
                b.say(&cards[k]);
                b.pause(0.6);
            }
        }
        if i + 1 == n * 2 / 3 {
            b.say(&jfk);
            b.pause(0.8);
        }
    }
    Ok(b.finish("long-english"))
}

/// Longest [`long_voices`] recording, in seconds.
const VOICES_SECONDS: f64 = 900.0;

/// About 15 minutes of six voices in four languages (Allison in English, June in French,
/// Carlo in Italian, Maxim in Russian, the LibriVox reader and JFK): turns of one to three
/// utterances, the next speaker drawn from a fixed pseudo-random sequence, so every
/// speaker comes back across the file; 0.2-0.4 s inside a turn, 0.4-1.0 s between turns.
pub fn long_voices() -> Result<LongSet, Error> {
    let mut voices = vec![
        prompts("asterisk-en", "allison", true)?,
        prompts("asterisk-fr", "june", false)?,
        prompts("asterisk-it", "carlo", false)?,
        prompts("asterisk-ru", "maxim", false)?,
        sphinx_set("librivox", "transcription", "reader")?,
        vec![jfk()?],
    ];
    // Each voice is read from its end backwards, so `pop` takes the next one.
    for v in &mut voices {
        // Spread each voice's prompts over the alphabet rather than taking its first ones.
        let stride = (v.len() / 60).max(1);
        let picked: Vec<Clip> = v.iter().step_by(stride).cloned().collect();
        *v = picked.into_iter().rev().collect();
    }
    let mut b = Builder::new();
    b.pause(0.5);
    let mut state = 2_463_534_242u32;
    let mut next = |m: usize| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize % m
    };
    let mut last = usize::MAX;
    let mut turn = 0usize;
    loop {
        let left: Vec<usize> = (0..voices.len())
            .filter(|&v| !voices[v].is_empty() && v != last)
            .collect();
        if left.is_empty() || b.samples.len() as f64 / SAMPLE_RATE as f64 > VOICES_SECONDS {
            break;
        }
        // The four prompt voices are drawn six times as often as the two short ones (the
        // reader, JFK), which join after the first minutes, as guests do.
        let weighted: Vec<usize> = left
            .iter()
            .filter(|&&v| v < 4 || turn >= 10)
            .flat_map(|&v| std::iter::repeat_n(v, if v < 4 { 6 } else { 1 }))
            .collect();
        if weighted.is_empty() {
            break;
        }
        let v = weighted[next(weighted.len())];
        let count = 1 + next(3);
        for k in 0..count {
            let Some(clip) = voices[v].pop() else { break };
            if k > 0 {
                b.pause(0.2 + 0.1 * next(3) as f64);
            }
            b.say(&clip);
        }
        b.pause(0.4 + 0.2 * next(4) as f64);
        last = v;
        turn += 1;
    }
    Ok(b.finish("long-voices"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_speech_and_a_margin() {
        let mut s = vec![0.0f32; 3200];
        s.extend(std::iter::repeat_n(0.1f32, 1600));
        s.extend(vec![0.0f32; 3200]);
        let t = trim(&s);
        assert_eq!(t.len(), 1600 + 2 * 800);
        assert!(trim(&[0.0; 1000]).is_empty());
    }
}
