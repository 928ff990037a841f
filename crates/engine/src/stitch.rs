//! The parts' transcripts joined into the recording's: times moved to the recording's
//! time base, segments in order, one language.

use std::collections::BTreeMap;

use mica_core::document::Transcript;

/// One part's transcript, its times relative to the part's start.
#[derive(Debug, Clone)]
pub(crate) struct PartTranscript {
    /// The part's start in the recording (seconds).
    pub(crate) start: f64,
    /// The part's length (seconds).
    pub(crate) duration: f64,
    pub(crate) transcript: Transcript,
}

/// Joins the parts' transcripts (any order; parts do not overlap, cuts lie in pauses so
/// no word spans two parts) into one over `duration` seconds.
///
/// Each segment and word moves by its part's start, and stays within its part (a decoder
/// timestamp past the part's end is clamped to it, so the order of times holds across the
/// cut). The language is the one of the most transcribed seconds (parts of a multilingual
/// model detect their own; ties go to the earliest part).
pub(crate) fn stitch(mut parts: Vec<PartTranscript>, duration: f64) -> Transcript {
    parts.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut seconds: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for (i, p) in parts.iter().enumerate() {
        let said: f64 = p.transcript.segments.iter().map(|s| s.end - s.start).sum();
        let entry = seconds
            .entry(p.transcript.language.as_str())
            .or_insert((0.0, i));
        entry.0 += said;
    }
    let language = seconds
        .iter()
        .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
        .map(|(l, _)| l.to_string())
        .unwrap_or_default();
    let mut segments = Vec::new();
    for p in parts {
        let (from, to) = (p.start, p.start + p.duration);
        let at = |t: f64| (t + from).clamp(from, to);
        for mut s in p.transcript.segments {
            s.start = at(s.start);
            s.end = at(s.end);
            for w in &mut s.words {
                w.start = at(w.start);
                w.end = at(w.end);
            }
            segments.push(s);
        }
    }
    Transcript {
        language,
        duration,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mica_core::document::{Segment, Word};

    fn segment(start: f64, end: f64, words: &[(f64, f64, &str)]) -> Segment {
        Segment {
            start,
            end,
            text: words.iter().map(|w| w.2).collect(),
            words: words
                .iter()
                .map(|&(start, end, text)| Word {
                    start,
                    end,
                    text: text.into(),
                    probability: 0.9,
                })
                .collect(),
            ..Segment::default()
        }
    }

    fn part(start: f64, duration: f64, language: &str, segments: Vec<Segment>) -> PartTranscript {
        PartTranscript {
            start,
            duration,
            transcript: Transcript {
                language: language.into(),
                duration,
                segments,
            },
        }
    }

    #[test]
    fn parts_join_in_the_recording_time_base() {
        let a = part(
            0.0,
            10.0,
            "en",
            vec![segment(
                1.0,
                4.0,
                &[(1.0, 2.0, " Hello"), (2.5, 4.0, " there")],
            )],
        );
        // The second part's decoder put its last word past the part's end.
        let b = part(
            10.0,
            5.0,
            "en",
            vec![segment(
                0.5,
                5.4,
                &[(0.5, 1.0, " Good"), (4.0, 5.4, " day")],
            )],
        );
        let got = stitch(vec![b, a], 15.0);
        assert_eq!(got.duration, 15.0);
        assert_eq!(got.language, "en");
        let times: Vec<(f64, f64)> = got
            .segments
            .iter()
            .flat_map(|s| s.words.iter().map(|w| (w.start, w.end)))
            .collect();
        assert_eq!(
            times,
            vec![(1.0, 2.0), (2.5, 4.0), (10.5, 11.0), (14.0, 15.0)]
        );
        assert_eq!((got.segments[1].start, got.segments[1].end), (10.5, 15.0));
        let text: String = got.segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(text, " Hello there Good day");
    }

    #[test]
    fn language_of_the_most_speech_and_empty_parts() {
        let a = part(0.0, 30.0, "de", vec![segment(0.0, 3.0, &[])]);
        let b = part(30.0, 30.0, "en", vec![segment(0.0, 20.0, &[])]);
        let c = part(60.0, 30.0, "de", vec![]);
        assert_eq!(stitch(vec![a, b, c], 90.0).language, "en");
        let empty = stitch(Vec::new(), 0.0);
        assert!(empty.segments.is_empty());
        assert_eq!(empty.language, "");
    }
}
