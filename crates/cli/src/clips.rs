//! Clips of `mica live --record DIR`: commands read from standard input (`clip 30` for the
//! last 30 s, `clip 120 150` for stream seconds 120 to 150), each answered with a clip cut
//! from the recording by stream copy, its subtitles from the settled words, and one line
//! saying where they are.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, bail};
use mica_core::document::{Transcript, Word};
use mica_core::writers::{WriterOptions, subtitle};
use mica_media::{LiveRecorder, Tools};

/// Where answers go: the event output (shared with the captions) or standard error.
pub type Shared = Arc<Mutex<Box<dyn Write + Send>>>;

/// The settled words of the kept stretch, for clips' subtitles.
#[derive(Debug, Default)]
pub struct Words {
    words: VecDeque<(Word, u64)>,
}

impl Words {
    /// Keeps settled `words` of `utterance`, forgetting those older than `keep` seconds
    /// before the newest.
    pub fn push(&mut self, words: &[Word], utterance: u64, keep: f64) {
        self.words
            .extend(words.iter().map(|w| (w.clone(), utterance)));
        let newest = self.words.back().map_or(0.0, |(w, _)| w.end);
        while self
            .words
            .front()
            .is_some_and(|(w, _)| w.end < newest - keep)
        {
            self.words.pop_front();
        }
    }

    /// The words inside `start..end`, in clip time, a segment per utterance.
    fn transcript(&self, start: f64, end: f64) -> Transcript {
        let inside: Vec<(Word, u64)> = self
            .words
            .iter()
            .filter(|(w, _)| w.start >= start - 0.05 && w.end <= end + 0.05)
            .map(|(w, u)| {
                let w = Word {
                    start: (w.start - start).max(0.0),
                    end: (w.end - start).max(0.0),
                    ..w.clone()
                };
                (w, *u)
            })
            .collect();
        mica::settled_transcript(&inside, end - start)
    }
}

/// What one command asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ask {
    Last(f64),
    Range(f64, f64),
}

fn parse(line: &str) -> Result<Ask> {
    let mut parts = line.split_whitespace();
    let (Some("clip"), Some(a)) = (parts.next(), parts.next()) else {
        bail!(
            "commands are `clip SECONDS` (the last seconds) or `clip START END` (stream seconds)"
        );
    };
    let number = |s: &str| -> Result<f64> {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("{s:?} is not a number of seconds"))
    };
    let ask = match (parts.next(), parts.next()) {
        (None, _) => Ask::Last(number(a)?),
        (Some(b), None) => Ask::Range(number(a)?, number(b)?),
        _ => bail!("`clip` takes one or two numbers"),
    };
    Ok(ask)
}

/// Answers clip commands from standard input until it ends; runs on its own thread.
pub fn serve(recorder: Arc<LiveRecorder>, words: Arc<Mutex<Words>>, dir: PathBuf, out: Shared) {
    let mut count = 0u32;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        let answer = match cut(&recorder, &words, &dir, count, &line) {
            Ok(answer) => answer,
            Err(e) => serde_json::json!({
                "event": "clip",
                "command": line.trim(),
                "error": format!("{e:#}"),
            }),
        };
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

fn cut(
    recorder: &LiveRecorder,
    words: &Mutex<Words>,
    dir: &Path,
    count: u32,
    line: &str,
) -> Result<serde_json::Value> {
    let (start, end) = match parse(line)? {
        Ask::Range(a, b) => (a, b),
        Ask::Last(n) => {
            let now = recorder
                .segments()
                .last()
                .map(|s| s.end)
                .context("nothing has been recorded yet")?;
            ((now - n).max(0.0), now)
        }
    };
    let path = dir.join(format!("clip-{count:04}.ts"));
    let clip = recorder.clip(start, end, &path, &Tools::from_env())?;
    let transcript = words
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .transcript(clip.start, clip.end);
    let srt = path.with_extension("srt");
    let vtt = path.with_extension("vtt");
    let options = WriterOptions::default();
    let mut file = std::fs::File::create(&srt).with_context(|| srt.display().to_string())?;
    subtitle::write_srt(&transcript, None, &options, &mut file)?;
    let mut file = std::fs::File::create(&vtt).with_context(|| vtt.display().to_string())?;
    subtitle::write_vtt(&transcript, None, &options, &mut file)?;
    Ok(serde_json::json!({
        "event": "clip",
        "command": line.trim(),
        "path": clip.path,
        "start": clip.start,
        "end": clip.end,
        "srt": srt,
        "vtt": vtt,
        "text": transcript.segments.iter().map(|s| s.text.as_str()).collect::<String>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_what_is_wrong() {
        assert_eq!(parse("clip 30").unwrap(), Ask::Last(30.0));
        assert_eq!(parse(" clip 1.5  9 ").unwrap(), Ask::Range(1.5, 9.0));
        for bad in [
            "clap 3",
            "clip",
            "clip x",
            "clip 1 2 3",
            "clip -4",
            "clip NaN",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clip_subtitles_hold_the_words_inside_in_clip_time() {
        let mut words = Words::default();
        let w = |t: &str, s: f64, e: f64| Word {
            text: t.into(),
            start: s,
            end: e,
            probability: 1.0,
        };
        words.push(&[w(" a", 1.0, 1.5), w(" b", 5.0, 5.5)], 1, 600.0);
        words.push(&[w(" c", 9.0, 9.5)], 2, 600.0);
        let t = words.transcript(4.0, 10.0);
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[0].text, " b");
        assert!((t.segments[0].start - 1.0).abs() < 1e-9);
        words.push(&[w(" d", 700.0, 700.5)], 3, 600.0);
        assert_eq!(words.words.len(), 1);
    }
}
