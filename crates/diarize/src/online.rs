//! [`OnlineSpeakers`]: speaker labels given as a stream goes. Each clip of one speaker's
//! speech is compared with the speakers heard so far and given the closest one's label,
//! or a new label when none is close; a label once given never changes.
//!
//! Offline clustering sees every embedding before it decides; online, a decision is final
//! when it is made, so the rules lean towards joining: a clip too short to embed reliably
//! never opens a new speaker, and only clips long enough move a speaker's centroid.

use serde::{Deserialize, Serialize};

use mica_core::error::RunError;

use crate::DiarizeError;

/// How [`OnlineSpeakers`] decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OnlineOptions {
    /// A clip joins the closest speaker when their cosine similarity is at least this
    /// (embedding against the speaker's length-weighted mean embedding).
    pub threshold: f32,
    /// Clips shorter than this (seconds) join the closest speaker whatever the
    /// similarity, and leave its centroid as it is.
    pub min_new_seconds: f64,
    /// Most speakers a session holds; past it every clip joins the closest one.
    pub max_speakers: usize,
}

impl Default for OnlineOptions {
    fn default() -> Self {
        OnlineOptions {
            threshold: 0.80,
            min_new_seconds: 3.0,
            max_speakers: 32,
        }
    }
}

impl OnlineOptions {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), DiarizeError> {
        let bad = |m: String| Err(RunError::option("online speakers", m).into());
        if !(self.threshold.is_finite() && (-1.0..=1.0).contains(&self.threshold)) {
            return bad(format!(
                "the online speaker threshold is a cosine similarity in [-1, 1], not {}",
                self.threshold
            ));
        }
        if !(self.min_new_seconds.is_finite() && (0.0..=30.0).contains(&self.min_new_seconds)) {
            return bad("the shortest clip that opens a speaker must be 0 to 30 s".into());
        }
        if self.max_speakers == 0 {
            return bad("an online session needs room for at least one speaker".into());
        }
        Ok(())
    }
}

/// One speaker heard so far.
#[derive(Debug, Clone)]
struct Speaker {
    /// Sum of its clips' embeddings, each weighted by its seconds.
    sum: Vec<f32>,
    /// The sum, unit length.
    centroid: Vec<f32>,
}

/// The speakers of one stream so far.
#[derive(Debug, Clone)]
pub struct OnlineSpeakers {
    options: OnlineOptions,
    speakers: Vec<Speaker>,
}

/// Longest a single clip weighs in a centroid (seconds): a long monologue does not drown
/// the speaker's other clips.
const MAX_WEIGHT: f64 = 10.0;

impl OnlineSpeakers {
    /// No speaker yet.
    pub fn new(options: OnlineOptions) -> Result<OnlineSpeakers, DiarizeError> {
        options.validate()?;
        Ok(OnlineSpeakers {
            options,
            speakers: Vec::new(),
        })
    }

    /// Speakers heard so far.
    pub fn count(&self) -> usize {
        self.speakers.len()
    }

    /// The speaker (counted from 0) of a clip of `seconds` whose unit embedding is
    /// `embedding`.
    pub fn assign(&mut self, embedding: &[f32], seconds: f64) -> usize {
        let best = self
            .speakers
            .iter()
            .enumerate()
            .map(|(i, s)| (i, dot(&s.centroid, embedding)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let long = seconds >= self.options.min_new_seconds;
        let chosen = match best {
            Some((i, similarity))
                if similarity >= self.options.threshold
                    || !long
                    || self.speakers.len() >= self.options.max_speakers =>
            {
                i
            }
            _ => {
                self.speakers.push(Speaker {
                    sum: vec![0.0; embedding.len()],
                    centroid: embedding.to_vec(),
                });
                self.speakers.len() - 1
            }
        };
        if long {
            let speaker = &mut self.speakers[chosen];
            let weight = seconds.min(MAX_WEIGHT) as f32;
            speaker
                .sum
                .iter_mut()
                .zip(embedding)
                .for_each(|(s, e)| *s += e * weight);
            let norm = speaker.sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 1e-12 {
                speaker.centroid = speaker.sum.iter().map(|x| x / norm).collect();
            }
        }
        chosen
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn close_clips_join_far_ones_open_a_speaker_and_short_ones_never_do() {
        let mut s = OnlineSpeakers::new(OnlineOptions {
            threshold: 0.8,
            min_new_seconds: 1.0,
            ..OnlineOptions::default()
        })
        .unwrap();
        assert_eq!(s.assign(&unit(&[1.0, 0.0, 0.0]), 3.0), 0);
        assert_eq!(s.assign(&unit(&[0.9, 0.1, 0.0]), 2.0), 0);
        assert_eq!(s.assign(&unit(&[0.0, 1.0, 0.0]), 2.0), 1);
        // Far from both, but too short to be trusted: the closest.
        assert_eq!(s.assign(&unit(&[0.0, 0.2, 1.0]), 0.5), 1);
        assert_eq!(s.count(), 2);
        assert_eq!(s.assign(&unit(&[0.0, 0.0, 1.0]), 1.5), 2);
        assert_eq!(s.assign(&unit(&[1.0, 0.05, 0.0]), 1.5), 0);
    }

    #[test]
    fn the_speaker_limit_holds() {
        let mut s = OnlineSpeakers::new(OnlineOptions {
            threshold: 0.99,
            max_speakers: 2,
            ..OnlineOptions::default()
        })
        .unwrap();
        for v in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] {
            s.assign(&v, 5.0);
        }
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn bad_options_are_refused() {
        for o in [
            OnlineOptions {
                threshold: f32::NAN,
                ..OnlineOptions::default()
            },
            OnlineOptions {
                min_new_seconds: -1.0,
                ..OnlineOptions::default()
            },
            OnlineOptions {
                max_speakers: 0,
                ..OnlineOptions::default()
            },
        ] {
            assert!(OnlineSpeakers::new(o).is_err());
        }
    }
}
