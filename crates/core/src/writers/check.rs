//! Finite-number checks: NaN or infinity would print as garbage timestamps or as JSON
//! `null` that cannot be read back, so writers refuse them and name the field.

use crate::document::{Analysis, Shots, SpeakerTurn, Transcript};
use crate::time::TimeRange;

use super::WriteError;

fn finite(value: f64, field: impl FnOnce() -> String) -> Result<(), WriteError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(WriteError::NonFinite {
            field: field(),
            value,
        })
    }
}

/// Segment and word times (what subtitle and text writers read).
pub(crate) fn transcript_times(t: &Transcript) -> Result<(), WriteError> {
    for (i, s) in t.segments.iter().enumerate() {
        finite(s.start, || format!("transcript.segments[{i}].start"))?;
        finite(s.end, || format!("transcript.segments[{i}].end"))?;
        for (j, w) in s.words.iter().enumerate() {
            finite(w.start, || {
                format!("transcript.segments[{i}].words[{j}].start")
            })?;
            finite(w.end, || format!("transcript.segments[{i}].words[{j}].end"))?;
        }
    }
    Ok(())
}

/// Every number in the transcript.
pub(crate) fn transcript(t: &Transcript) -> Result<(), WriteError> {
    transcript_times(t)?;
    finite(t.duration, || "transcript.duration".into())?;
    for (i, s) in t.segments.iter().enumerate() {
        finite(s.avg_logprob, || {
            format!("transcript.segments[{i}].avg_logprob")
        })?;
        finite(s.no_speech_prob, || {
            format!("transcript.segments[{i}].no_speech_prob")
        })?;
        for (j, w) in s.words.iter().enumerate() {
            finite(w.probability, || {
                format!("transcript.segments[{i}].words[{j}].probability")
            })?;
        }
    }
    Ok(())
}

/// Speech region times.
pub(crate) fn speech(r: &[TimeRange]) -> Result<(), WriteError> {
    for (i, r) in r.iter().enumerate() {
        finite(r.start, || format!("speech[{i}].start"))?;
        finite(r.end, || format!("speech[{i}].end"))?;
    }
    Ok(())
}

/// Speaker turn times.
pub(crate) fn speakers(t: &[SpeakerTurn]) -> Result<(), WriteError> {
    for (i, t) in t.iter().enumerate() {
        finite(t.start, || format!("speakers[{i}].start"))?;
        finite(t.end, || format!("speakers[{i}].end"))?;
    }
    Ok(())
}

/// Shot rate and times.
pub(crate) fn shots(s: &Shots) -> Result<(), WriteError> {
    finite(s.fps, || "shots.fps".into())?;
    for (i, sh) in s.shots.iter().enumerate() {
        finite(sh.start, || format!("shots.shots[{i}].start"))?;
        finite(sh.end, || format!("shots.shots[{i}].end"))?;
    }
    Ok(())
}

/// Every number in the analysis.
pub(crate) fn analysis(a: &Analysis) -> Result<(), WriteError> {
    finite(a.media.duration, || "media.duration".into())?;
    if let Some(v) = &a.media.video {
        finite(v.fps, || "media.video.fps".into())?;
    }
    if let Some(t) = &a.transcript {
        transcript(t)?;
    }
    if let Some(r) = &a.speech {
        speech(r)?;
    }
    if let Some(t) = &a.speakers {
        speakers(t)?;
    }
    if let Some(s) = &a.shots {
        shots(s)?;
    }
    for (name, v) in &a.timings.stages {
        finite(*v, || format!("timings.stages.{name}"))?;
    }
    finite(a.timings.total, || "timings.total".into())
}
