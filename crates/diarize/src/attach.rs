//! Speaker labels onto a transcript: each word gets the speaker whose turns overlap it
//! most, and segments are split where the speaker changes between words.

use mica_core::document::{Segment, SpeakerTurn, Transcript, Word};
use serde::{Deserialize, Serialize};

/// How labels are attached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachOptions {
    /// A word (or segment without words) that no turn overlaps takes the nearest turn's
    /// speaker when that turn is at most this many seconds away; otherwise it has none.
    pub max_gap: f64,
    /// Split segments at speaker changes between words.
    pub split_segments: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            max_gap: 1.0,
            split_segments: true,
        }
    }
}

/// The speaker of `[start, end)`: most overlap with `turns`, else the nearest turn within
/// `max_gap` seconds.
pub fn speaker_of(turns: &[SpeakerTurn], start: f64, end: f64, max_gap: f64) -> Option<String> {
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for t in turns {
        let o = t.end.min(end) - t.start.max(start);
        if o > 0.0 {
            match totals.iter_mut().find(|(s, _)| *s == t.speaker) {
                Some((_, v)) => *v += o,
                None => totals.push((&t.speaker, o)),
            }
        }
    }
    if let Some((s, _)) = totals.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        return Some((*s).to_string());
    }
    turns
        .iter()
        .map(|t| {
            let gap = if t.end <= start {
                start - t.end
            } else {
                t.start - end
            };
            (gap.max(0.0), t)
        })
        .filter(|(g, _)| *g <= max_gap)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, t)| t.speaker.clone())
}

/// Labels `transcript`'s segments (and splits them at speaker changes) from `turns`.
pub fn attach_speakers(
    transcript: &mut Transcript,
    turns: &[SpeakerTurn],
    options: &AttachOptions,
) {
    let segments = std::mem::take(&mut transcript.segments);
    for seg in segments {
        if seg.words.is_empty() {
            let speaker = speaker_of(turns, seg.start, seg.end, options.max_gap);
            transcript.segments.push(Segment { speaker, ..seg });
            continue;
        }
        let labels: Vec<Option<String>> = seg
            .words
            .iter()
            .map(|w| speaker_of(turns, w.start, w.end, options.max_gap))
            .collect();
        // Runs of words with one speaker; an unlabelled word joins the run it is in.
        let mut runs: Vec<(Option<String>, Vec<Word>)> = Vec::new();
        for (w, l) in seg.words.iter().zip(labels) {
            match runs.last_mut() {
                Some((cur, words))
                    if !options.split_segments || l.is_none() || *cur == l || cur.is_none() =>
                {
                    if cur.is_none() {
                        *cur = l;
                    }
                    words.push(w.clone());
                }
                _ => runs.push((l, vec![w.clone()])),
            }
        }
        if !options.split_segments || runs.len() == 1 {
            // One speaker for the segment: the one speaking most of its words' time.
            let speaker = speaker_of(turns, seg.start, seg.end, options.max_gap)
                .or_else(|| runs.first().and_then(|r| r.0.clone()));
            let words = seg.words.clone();
            let speaker = if runs.len() == 1 {
                runs[0].0.clone().or(speaker)
            } else {
                speaker
            };
            transcript.segments.push(Segment {
                speaker,
                words,
                ..seg
            });
            continue;
        }
        let n = runs.len();
        for (i, (speaker, words)) in runs.into_iter().enumerate() {
            let start = if i == 0 { seg.start } else { words[0].start };
            let end = if i + 1 == n {
                seg.end
            } else {
                words.last().map_or(seg.end, |w| w.end)
            };
            let text: String = words.iter().map(|w| w.text.as_str()).collect();
            transcript.segments.push(Segment {
                start,
                end,
                text,
                speaker,
                words,
                avg_logprob: seg.avg_logprob,
                no_speech_prob: seg.no_speech_prob,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(start: f64, end: f64, s: &str) -> SpeakerTurn {
        SpeakerTurn {
            start,
            end,
            speaker: s.into(),
        }
    }

    fn word(start: f64, end: f64, text: &str) -> Word {
        Word {
            start,
            end,
            text: text.into(),
            probability: 0.9,
        }
    }

    #[test]
    fn splits_at_speaker_changes() {
        let turns = vec![
            turn(0.0, 2.0, "A"),
            turn(2.0, 4.0, "B"),
            turn(6.0, 7.0, "A"),
        ];
        let mut t = Transcript {
            language: "en".into(),
            duration: 8.0,
            segments: vec![
                Segment {
                    start: 0.0,
                    end: 4.0,
                    text: " Hello there. Hi you.".into(),
                    words: vec![
                        word(0.1, 0.8, " Hello"),
                        word(0.9, 1.9, " there."),
                        word(2.1, 2.6, " Hi"),
                        // Mostly inside B's turn.
                        word(1.9, 3.5, " you."),
                    ],
                    ..Default::default()
                },
                // No words: the majority speaker of its span.
                Segment {
                    start: 5.8,
                    end: 7.5,
                    text: " Bye.".into(),
                    ..Default::default()
                },
                // Far from every turn: no speaker.
                Segment {
                    start: 20.0,
                    end: 21.0,
                    text: " Echo.".into(),
                    ..Default::default()
                },
            ],
        };
        attach_speakers(&mut t, &turns, &AttachOptions::default());
        let got: Vec<(f64, f64, &str, Option<&str>)> = t
            .segments
            .iter()
            .map(|s| (s.start, s.end, s.text.as_str(), s.speaker.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.0, 1.9, " Hello there.", Some("A")),
                (2.1, 4.0, " Hi you.", Some("B")),
                (5.8, 7.5, " Bye.", Some("A")),
                (20.0, 21.0, " Echo.", None),
            ]
        );
        assert_eq!(t.segments[1].words.len(), 2);
    }
}
