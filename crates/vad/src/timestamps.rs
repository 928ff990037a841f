//! Speech regions from per-window probabilities, with the semantics of silero's
//! `get_speech_timestamps` (silero-vad 6.2.3, `get_speech_timestamps_from_probs`).
//!
//! The reference is a loop over the probabilities followed by a padding pass over the list
//! it built. Here the loop is [`Segmenter`], fed one probability at a time, and the padding
//! pass is [`Padder`], which finalises each region as soon as nothing later can change it.
//! The offline function is the same two stages fed the whole file, so streaming and
//! offline results are identical by construction. Sample arithmetic mirrors Python's: the
//! option-derived thresholds are floats, positions are integers, `//` floors.

use mica_core::time::TimeRange;

use crate::VadError;
use crate::error::MODEL;
use crate::model::SampleRate;
use mica_core::error::RunError;

/// How probabilities become speech regions; the defaults are silero's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeechOptions {
    /// A window with probability at or above this is speech.
    pub threshold: f32,
    /// While in speech, a window below this is silence; `None` gives
    /// `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f32>,
    /// Regions this short or shorter (before padding) are dropped.
    pub min_speech_duration_ms: u32,
    /// Regions longer than this are split, at the longest silence inside them when there is
    /// one of more than `min_silence_at_max_speech_ms`, else just before the limit.
    /// `None` means no limit.
    pub max_speech_duration_s: Option<f64>,
    /// Silence needed to end a region.
    pub min_silence_duration_ms: u32,
    /// Padding added to each side of a region (halved gaps where regions would overlap).
    pub speech_pad_ms: u32,
    /// Shortest silence considered as a split point for `max_speech_duration_s`.
    pub min_silence_at_max_speech_ms: u32,
    /// Split long regions at the longest silence (true, silero's default) or at the last
    /// one (false).
    pub use_max_poss_sil_at_max_speech: bool,
}

impl Default for SpeechOptions {
    fn default() -> Self {
        SpeechOptions {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 250,
            max_speech_duration_s: None,
            min_silence_duration_ms: 100,
            speech_pad_ms: 30,
            min_silence_at_max_speech_ms: 98,
            use_max_poss_sil_at_max_speech: true,
        }
    }
}

impl SpeechOptions {
    /// Checks ranges; called by every entry point that takes options.
    pub fn validate(&self) -> Result<(), VadError> {
        let bad = |what: String| Err(RunError::option(MODEL, what).into());
        if !(self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold)) {
            return bad(format!("threshold {} must be in [0, 1]", self.threshold));
        }
        if let Some(n) = self.neg_threshold
            && !(n.is_finite() && (0.0..=1.0).contains(&n))
        {
            return bad(format!("neg_threshold {n} must be in [0, 1]"));
        }
        if let Some(m) = self.max_speech_duration_s
            && (m.is_nan() || m <= 0.0)
        {
            return bad(format!(
                "max_speech_duration_s {m} must be above 0 (leave it unset for no limit)"
            ));
        }
        Ok(())
    }
}

/// A speech region in samples at the stream's rate, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpeechSegment {
    /// First sample.
    pub start: u64,
    /// One past the last sample.
    pub end: u64,
    /// The sample rate the indices count at.
    pub sample_rate: u32,
}

impl SpeechSegment {
    /// The region in seconds.
    pub fn range(&self) -> TimeRange {
        let hz = f64::from(self.sample_rate);
        TimeRange::new(self.start as f64 / hz, self.end as f64 / hz)
    }
}

/// A raw (unpadded) region the segmenter closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub start: i64,
    pub end: i64,
}

/// Transitions of the segmenter, for streaming events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The window at this sample started speech.
    Start(i64),
    /// Speech ended at this sample; `kept` is false when the region was too short.
    End { at: i64, kept: bool },
}

/// The reference's main loop, one probability at a time.
#[derive(Debug, Clone)]
pub(crate) struct Segmenter {
    window: i64,
    threshold: f64,
    neg_threshold: f64,
    min_speech_samples: f64,
    max_speech_samples: f64,
    min_silence_samples: f64,
    min_silence_samples_at_max_speech: f64,
    use_max_poss_sil: bool,
    index: i64,
    triggered: bool,
    /// `current_speech['start']`, when the dict holds one.
    current: Option<i64>,
    temp_end: i64,
    prev_end: i64,
    next_start: i64,
    possible_ends: Vec<(i64, i64)>,
}

impl Segmenter {
    pub(crate) fn new(options: &SpeechOptions, rate: SampleRate) -> Segmenter {
        let sr = f64::from(rate.hz());
        let window = rate.window() as i64;
        let pad = sr * f64::from(options.speech_pad_ms) / 1000.0;
        let threshold = f64::from(options.threshold);
        Segmenter {
            window,
            threshold,
            neg_threshold: options
                .neg_threshold
                .map(f64::from)
                .unwrap_or_else(|| (threshold - 0.15).max(0.01)),
            min_speech_samples: sr * f64::from(options.min_speech_duration_ms) / 1000.0,
            max_speech_samples: options
                .max_speech_duration_s
                .map_or(f64::INFINITY, |s| sr * s - window as f64 - 2.0 * pad),
            min_silence_samples: sr * f64::from(options.min_silence_duration_ms) / 1000.0,
            min_silence_samples_at_max_speech: sr * f64::from(options.min_silence_at_max_speech_ms)
                / 1000.0,
            use_max_poss_sil: options.use_max_poss_sil_at_max_speech,
            index: 0,
            triggered: false,
            current: None,
            temp_end: 0,
            prev_end: 0,
            next_start: 0,
            possible_ends: Vec::new(),
        }
    }

    /// The start of the open region, when there is one.
    pub(crate) fn open_start(&self) -> Option<i64> {
        self.current
    }

    /// Feeds the next window's probability; closed regions go to `closed`.
    pub(crate) fn push(
        &mut self,
        prob: f32,
        closed: &mut impl FnMut(Raw),
        events: &mut impl FnMut(Transition),
    ) {
        let p = f64::from(prob);
        let cur = self.window * self.index;
        self.index += 1;
        let speech = p >= self.threshold;

        if speech && self.temp_end != 0 {
            let sil_dur = cur - self.temp_end;
            if sil_dur as f64 > self.min_silence_samples_at_max_speech {
                self.possible_ends.push((self.temp_end, sil_dur));
            }
            self.temp_end = 0;
            if self.next_start < self.prev_end {
                self.next_start = cur;
            }
        }

        if speech && !self.triggered {
            self.triggered = true;
            self.current = Some(cur);
            events(Transition::Start(cur));
            return;
        }

        if self.triggered
            && let Some(start) = self.current
            && (cur - start) as f64 > self.max_speech_samples
        {
            if self.use_max_poss_sil && !self.possible_ends.is_empty() {
                // The longest silence; on ties Python's max() keeps the first.
                let mut best = self.possible_ends[0];
                for &pe in &self.possible_ends[1..] {
                    if pe.1 > best.1 {
                        best = pe;
                    }
                }
                let (prev_end, dur) = best;
                self.prev_end = prev_end;
                closed(Raw {
                    start,
                    end: prev_end,
                });
                events(Transition::End {
                    at: prev_end,
                    kept: true,
                });
                self.current = None;
                self.next_start = self.prev_end + dur;
                if self.next_start < self.prev_end + cur {
                    self.current = Some(self.next_start);
                    events(Transition::Start(self.next_start));
                } else {
                    self.triggered = false;
                }
                self.prev_end = 0;
                self.next_start = 0;
                self.temp_end = 0;
                self.possible_ends.clear();
            } else if self.prev_end != 0 {
                closed(Raw {
                    start,
                    end: self.prev_end,
                });
                events(Transition::End {
                    at: self.prev_end,
                    kept: true,
                });
                self.current = None;
                if self.next_start < self.prev_end {
                    self.triggered = false;
                } else {
                    self.current = Some(self.next_start);
                    events(Transition::Start(self.next_start));
                }
                self.prev_end = 0;
                self.next_start = 0;
                self.temp_end = 0;
                self.possible_ends.clear();
            } else {
                closed(Raw { start, end: cur });
                events(Transition::End {
                    at: cur,
                    kept: true,
                });
                self.current = None;
                self.prev_end = 0;
                self.next_start = 0;
                self.temp_end = 0;
                self.triggered = false;
                self.possible_ends.clear();
                return;
            }
        }

        if p < self.neg_threshold && self.triggered {
            if self.temp_end == 0 {
                self.temp_end = cur;
            }
            let sil_dur_now = cur - self.temp_end;
            if !self.use_max_poss_sil && sil_dur_now as f64 > self.min_silence_samples_at_max_speech
            {
                self.prev_end = self.temp_end;
            }
            if (sil_dur_now as f64) < self.min_silence_samples {
                return;
            }
            let end = self.temp_end;
            // The reference indexes current_speech['start'] here; with the state machine as
            // written it is always set while triggered.
            let start = self.current.unwrap_or(end);
            let kept = (end - start) as f64 > self.min_speech_samples;
            if kept {
                closed(Raw { start, end });
            }
            events(Transition::End { at: end, kept });
            self.current = None;
            self.prev_end = 0;
            self.next_start = 0;
            self.temp_end = 0;
            self.triggered = false;
            self.possible_ends.clear();
        }
    }

    /// Closes the open region at the end of the audio (`len` samples).
    pub(crate) fn finish(
        &mut self,
        len: i64,
        closed: &mut impl FnMut(Raw),
        events: &mut impl FnMut(Transition),
    ) {
        if let Some(start) = self.current.take() {
            let kept = (len - start) as f64 > self.min_speech_samples;
            if kept {
                closed(Raw { start, end: len });
            }
            events(Transition::End { at: len, kept });
        }
        self.triggered = false;
    }
}

/// The reference's padding pass, run online: a region is emitted once the gap to the next
/// one (or the end of the audio) is known, or as soon as no later region can be close
/// enough to change its end.
#[derive(Debug, Clone)]
pub(crate) struct Padder {
    pad: f64,
    sample_rate: u32,
    /// The last closed region, its start already padded.
    pending: Option<Raw>,
    first: bool,
    /// The previous region went out early from [`Padder::settle`], so the gap to the next
    /// one is at least `2 * pad`.
    settled: bool,
}

impl Padder {
    pub(crate) fn new(options: &SpeechOptions, rate: SampleRate) -> Padder {
        Padder {
            pad: f64::from(rate.hz()) * f64::from(options.speech_pad_ms) / 1000.0,
            sample_rate: rate.hz(),
            pending: None,
            first: true,
            settled: false,
        }
    }

    fn segment(&self, r: Raw) -> SpeechSegment {
        SpeechSegment {
            start: r.start.max(0) as u64,
            end: r.end.max(0) as u64,
            sample_rate: self.sample_rate,
        }
    }

    /// A region the segmenter closed.
    pub(crate) fn push(&mut self, mut raw: Raw, out: &mut impl FnMut(SpeechSegment)) {
        if self.first || self.settled {
            raw.start = (raw.start as f64 - self.pad).max(0.0) as i64;
            self.first = false;
            self.settled = false;
        }
        if let Some(mut prev) = self.pending.take() {
            let gap = raw.start - prev.end;
            if (gap as f64) < 2.0 * self.pad {
                let half = gap.div_euclid(2);
                prev.end += half;
                raw.start = (raw.start - half).max(0);
            } else {
                // min(len, end + pad) cannot clip: the next region starts after end + 2 pad.
                prev.end = (prev.end as f64 + self.pad) as i64;
                raw.start = (raw.start as f64 - self.pad).max(0.0) as i64;
            }
            out(self.segment(prev));
        }
        self.pending = Some(raw);
    }

    /// Emits the pending region early when no region can start before `earliest`.
    pub(crate) fn settle(&mut self, earliest: i64, out: &mut impl FnMut(SpeechSegment)) {
        if let Some(prev) = self.pending
            && (earliest - prev.end) as f64 >= 2.0 * self.pad
        {
            // Every later start is at or after `earliest`, so the reference pads this end and
            // the next start by the full amount; `earliest` is within the audio, so the end
            // is not clipped either.
            self.pending = None;
            let end = (prev.end as f64 + self.pad) as i64;
            out(self.segment(Raw { end, ..prev }));
            self.settled = true;
        }
    }

    /// The end of the audio at `len` samples.
    pub(crate) fn finish(&mut self, len: i64, out: &mut impl FnMut(SpeechSegment)) {
        if let Some(mut prev) = self.pending.take() {
            prev.end = (len as f64).min(prev.end as f64 + self.pad) as i64;
            out(self.segment(prev));
        }
    }
}

/// Speech regions for per-window probabilities `probs` of `len` samples at `rate`:
/// silero's `get_speech_timestamps` given the same probabilities.
pub fn speech_segments(
    probs: &[f32],
    len: u64,
    rate: SampleRate,
    options: &SpeechOptions,
) -> Result<Vec<SpeechSegment>, VadError> {
    options.validate()?;
    let mut seg = Segmenter::new(options, rate);
    let mut pad = Padder::new(options, rate);
    let mut out = Vec::new();
    let mut raws = Vec::new();
    for &p in probs {
        seg.push(p, &mut |r| raws.push(r), &mut |_| {});
        for r in raws.drain(..) {
            pad.push(r, &mut |s| out.push(s));
        }
    }
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    seg.finish(len, &mut |r| raws.push(r), &mut |_| {});
    for r in raws.drain(..) {
        pad.push(r, &mut |s| out.push(s));
    }
    pad.finish(len, &mut |s| out.push(s));
    Ok(out)
}
