//! Subtitle cues from a transcript, and the SRT and WebVTT writers over them.
//!
//! Rules, in order:
//! - A segment whose text is empty or whitespace gives no cue; cues never span segments.
//! - With word timestamps, cues are cut between words and show the words' text; otherwise
//!   the segment's time is shared out in proportion to character counts.
//! - A cue holds at most `max_lines` lines of at most `max_line_chars` chars (the SRT
//!   speaker label counts; the VTT voice tag is markup and does not) and spans at most
//!   `max_cue_seconds`; a word too long for a line is hard-wrapped, never dropped.
//! - A segment takes the fewest cues those limits allow, with the text spread evenly over
//!   them and cuts drawn to sentence ends, pauses and commas; lines within a cue are
//!   balanced the same way.
//! - Cues are then sorted by start and made sequential: each is stretched to
//!   `min_cue_seconds` where the next cue leaves room, cut where it would overlap the next,
//!   and pushed later when two start together (each keeps at least 0.25 s), so times never
//!   overlap or run backwards.

use std::io::Write;
use std::ops::Range;

use crate::document::{Segment, SpeakerTurn, Transcript};
use crate::time::{TimeRange, format_srt, format_vtt};

use super::wrap::{Atom, LineFill, atoms, ends_clause, ends_sentence, normalize, truncate, wrap};
use super::{WriteError, WriterOptions};

/// The shortest time a cue is shown when the next cue would otherwise hide it sooner.
const MIN_VISIBLE_SECONDS: f64 = 0.25;

/// One subtitle cue, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    /// Start in seconds.
    pub start: f64,
    /// End in seconds (`>= start`, `<=` the next cue's start).
    pub end: f64,
    /// Speaker of the segment the cue came from, when known and labels are on.
    pub speaker: Option<String>,
    /// The text lines, unescaped and without the speaker label.
    pub lines: Vec<String>,
}

/// An atom with the time it is spoken.
struct Timed {
    atom: Atom,
    start: f64,
    end: f64,
}

/// How a speaker label takes part in line fitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    /// Visible text on the first line (`[SPEAKER_00] `): it counts toward the width.
    Inline,
    /// Markup outside the text (`<v SPEAKER_00>`): it does not.
    Markup,
}

/// Cues for `transcript`, labels as WebVTT voice tags would carry them (not in `lines`).
///
/// `turns` names speakers for segments that have none, by largest overlap.
pub fn cues(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
) -> Result<Vec<Cue>, WriteError> {
    checked_build(transcript, turns, opts, Label::Markup)
}

/// [`build`] after checking `opts` and the transcript's times.
fn checked_build(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    label: Label,
) -> Result<Vec<Cue>, WriteError> {
    opts.validate()?;
    super::check::transcript_times(transcript)?;
    Ok(build(transcript, turns, opts, label))
}

/// The segments of `transcript` whose text is not empty once normalized, each with that
/// text and, when `opts.speaker_labels` is on, its speaker (see [`resolve_speaker`]).
pub(crate) fn spoken_segments<'t>(
    transcript: &'t Transcript,
    turns: Option<&'t [SpeakerTurn]>,
    opts: &WriterOptions,
) -> impl Iterator<Item = (&'t Segment, String, Option<String>)> {
    let labels = opts.speaker_labels;
    transcript.segments.iter().filter_map(move |seg| {
        let text = normalize(&seg.text);
        if text.is_empty() {
            return None;
        }
        let speaker = if labels {
            resolve_speaker(seg, turns)
        } else {
            None
        };
        Some((seg, text, speaker))
    })
}

/// The speaker of `seg`: its own, else the turn overlapping it most.
fn resolve_speaker(seg: &Segment, turns: Option<&[SpeakerTurn]>) -> Option<String> {
    if let Some(s) = &seg.speaker {
        let s = normalize(s);
        return (!s.is_empty()).then_some(s);
    }
    let range = seg.range();
    let mut best: Option<(&SpeakerTurn, f64)> = None;
    for t in turns.unwrap_or_default() {
        let o = range.overlap(&t.range());
        if o > 0.0 && best.is_none_or(|(_, b)| o > b) {
            best = Some((t, o));
        }
    }
    best.map(|(t, _)| normalize(&t.speaker))
        .filter(|s| !s.is_empty())
}

/// Word texts of `seg` as atoms timed by the words, or `None` when it has no usable words.
fn word_atoms(seg: &Segment, width: usize) -> Option<Vec<Timed>> {
    let words: Vec<_> = seg
        .words
        .iter()
        .filter(|w| !normalize(&w.text).is_empty())
        .collect();
    if words.is_empty() {
        return None;
    }
    // Whisper words carry their own leading space; producers that strip it leave no
    // space anywhere, so join with spaces unless the text itself has none (CJK).
    let own_spaces = words
        .iter()
        .any(|w| w.text.starts_with(|c: char| c.is_whitespace()));
    let join_with_spaces = !own_spaces && normalize(&seg.text).contains(' ');
    let mut out = Vec::new();
    let mut floor = seg.start.max(0.0);
    for (i, w) in words.into_iter().enumerate() {
        let space = i > 0 && (join_with_spaces || w.text.starts_with(|c: char| c.is_whitespace()));
        // Word times can be out of order or reversed; keep them monotonic.
        let start = w.start.max(floor);
        let end = w.end.max(start);
        floor = start;
        let text = normalize(&w.text);
        out.extend(spread(atoms(&text, width, space), start, end));
    }
    Some(out)
}

/// Share `[start, end]` among `atoms` in proportion to their characters.
fn spread(atoms: Vec<Atom>, start: f64, end: f64) -> Vec<Timed> {
    let total: usize = atoms.iter().map(Atom::weight).sum();
    let dur = end - start;
    let mut done = 0usize;
    atoms
        .into_iter()
        .map(|atom| {
            let s = start + dur * done as f64 / total.max(1) as f64;
            done += atom.weight();
            let e = start + dur * done as f64 / total.max(1) as f64;
            Timed {
                atom,
                start: s,
                end: e,
            }
        })
        .collect()
}

/// The atoms one cue sets: the label (if any), then its words, the first word starting
/// the cue's text (so it takes a space only after a label).
fn cue_atoms(label: Option<&Atom>, part: &[Timed]) -> Vec<Atom> {
    let mut line: Vec<Atom> = label.cloned().into_iter().collect();
    for (i, t) in part.iter().enumerate() {
        let mut a = t.atom.clone();
        if i == 0 {
            a.space_before = label.is_some();
        }
        line.push(a);
    }
    line
}

/// Worth of ending a cue at a sentence end or a pause, in squared chars: about a 15-char
/// imbalance between two cues.
const SENTENCE_BONUS: i64 = 450;
/// Worth of ending a cue after a comma or other clause mark: about 8 chars of imbalance.
const CLAUSE_BONUS: i64 = 128;
/// A silence between words at least this long (seconds) is as good a cut as a full stop.
const PAUSE_SECONDS: f64 = 0.4;

/// Cut one segment's timed atoms into cues.
///
/// Uses the fewest cues that keep every cue within the line and time limits, and among
/// those cuttings the one with the most even text (least sum of squared lengths), with
/// bonuses for cutting at sentence ends, pauses and clause marks. Linear in the atoms
/// times the atoms one cue can hold.
fn plan(timed: &[Timed], label: Option<&Atom>, opts: &WriterOptions) -> Vec<Range<usize>> {
    let n = timed.len();
    // reach[j]: one past the last atom a cue starting at j can hold. One atom always makes
    // a cue (its time is clipped later); a valid cue stays valid when shortened, so every
    // end in j+1..=reach[j] is valid.
    let reach: Vec<usize> = (0..n)
        .map(|j| {
            let mut fill = LineFill::new(opts.max_line_chars);
            if let Some(l) = label {
                fill.push(l.chars, false);
            }
            fill.push(timed[j].atom.chars, label.is_some());
            let mut i = j + 1;
            while i < n
                && timed[i].end - timed[j].start <= opts.max_cue_seconds
                && fill.push(timed[i].atom.chars, timed[i].atom.space_before)
                && fill.lines() <= opts.max_lines
            {
                i += 1;
            }
            i
        })
        .collect();
    let mut prefix = vec![0i64; n + 1];
    for (k, t) in timed.iter().enumerate() {
        prefix[k + 1] = prefix[k] + i64::try_from(t.atom.weight()).unwrap_or(i64::MAX / 4);
    }
    let bonus = |i: usize| {
        if i >= n {
            0
        } else if ends_sentence(&timed[i - 1].atom)
            || timed[i].start - timed[i - 1].end >= PAUSE_SECONDS
        {
            SENTENCE_BONUS
        } else if ends_clause(&timed[i - 1].atom) {
            CLAUSE_BONUS
        } else {
            0
        }
    };
    // best[i]: the (cue count, cost) of the best cutting of timed[..i], lexicographically
    // (so fewest cues first), and where its last cue began. Optimal prefixes compose.
    let mut best: Vec<Option<((usize, i64), usize)>> = vec![None; n + 1];
    best[0] = Some(((0, 0), 0));
    for j in 0..n {
        let Some(((count, cost), _)) = best[j] else {
            continue;
        };
        for i in j + 1..=reach[j] {
            let w = prefix[i] - prefix[j];
            let cand = (count + 1, cost + w * w - bonus(i));
            if best[i].is_none_or(|(c, _)| cand < c) {
                best[i] = Some((cand, j));
            }
        }
    }
    let mut cuts = Vec::new();
    let mut i = n;
    while i > 0 {
        // Every i is reachable (each atom alone is a valid cue), so this always holds.
        let Some((_, j)) = best[i] else {
            break;
        };
        cuts.push(j..i);
        i = j;
    }
    cuts.reverse();
    cuts
}

/// The label atom for `speaker`, shortened to at most half a line so text still fits.
fn label_atom(speaker: &str, opts: &WriterOptions) -> Atom {
    let max = (opts.max_line_chars / 2).max(3);
    let name = truncate(speaker, max - 2);
    let text = format!("[{name}]");
    let chars = text.chars().count();
    Atom {
        text,
        space_before: false,
        chars,
    }
}

/// All cues of `transcript`, timed and made sequential.
pub(crate) fn build(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    label: Label,
) -> Vec<Cue> {
    let width = opts.max_line_chars;
    let mut out = Vec::new();
    for (seg, text, speaker) in spoken_segments(transcript, turns, opts) {
        let label_atom = match (label, &speaker) {
            (Label::Inline, Some(s)) => Some(label_atom(s, opts)),
            _ => None,
        };
        let start = seg.start.max(0.0);
        let end = seg.end.max(start);
        // On a single line the label shares the line with every piece of text, so pieces
        // must be cut short enough to sit beside it.
        let piece_width = match &label_atom {
            Some(l) if opts.max_lines == 1 => width.saturating_sub(l.chars + 1).max(1),
            _ => width,
        };
        let timed = word_atoms(seg, piece_width)
            .unwrap_or_else(|| spread(atoms(&text, piece_width, false), start, end));
        let groups = plan(&timed, label_atom.as_ref(), opts);
        for g in groups {
            let part = &timed[g];
            let (Some(first), Some(last)) = (part.first(), part.last()) else {
                continue;
            };
            let line_atoms = cue_atoms(label_atom.as_ref(), part);
            let lines = match wrap(&line_atoms, width, opts.max_lines) {
                Some(lines) => lines,
                None => {
                    // Unreachable by construction (groups are built to fit); keep the text
                    // rather than lose it.
                    tracing::warn!("subtitle cue did not fit its lines; writing it unwrapped");
                    vec![super::wrap::join(&line_atoms)]
                }
            };
            out.push(Cue {
                start: first.start,
                end: last.end,
                speaker: speaker.clone(),
                lines,
            });
        }
    }
    sequence(&mut out, opts);
    out
}

/// Sort cues and make them sequential within the duration limits (see the module docs).
fn sequence(cues: &mut [Cue], opts: &WriterOptions) {
    cues.sort_by(|a, b| a.start.total_cmp(&b.start));
    let min_visible = MIN_VISIBLE_SECONDS.min(opts.min_cue_seconds);
    let natural: Vec<TimeRange> = cues
        .iter()
        .map(|c| TimeRange::new(c.start, c.end))
        .collect();
    let mut prev_end = 0.0f64;
    for (i, cue) in cues.iter_mut().enumerate() {
        let start = cue.start.max(prev_end);
        let mut end = cue
            .end
            .max(start + opts.min_cue_seconds)
            .min(start + opts.max_cue_seconds);
        if let Some(next) = natural.get(i + 1)
            && next.start < end
        {
            end = next.start.max(start + min_visible);
        }
        cue.start = start;
        cue.end = end;
        prev_end = end;
    }
}

/// SubRip has no escapes; `-->` would read as a timing line, so it loses a dash.
fn srt_text(s: &str) -> String {
    let mut s = s.to_owned();
    while s.contains("-->") {
        s = s.replace("-->", "->");
    }
    s
}

/// WebVTT character references for the three characters cue text may not hold raw.
fn vtt_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Write `transcript` as SubRip (`.srt`).
pub fn write_srt(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    for (i, cue) in checked_build(transcript, turns, opts, Label::Inline)?
        .iter()
        .enumerate()
    {
        writeln!(out, "{}", i + 1)?;
        writeln!(out, "{} --> {}", format_srt(cue.start), format_srt(cue.end))?;
        for line in &cue.lines {
            writeln!(out, "{}", srt_text(line))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Write `transcript` as WebVTT (`.vtt`), speakers as `<v NAME>` voice spans.
pub fn write_vtt(
    transcript: &Transcript,
    turns: Option<&[SpeakerTurn]>,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    let cues = cues(transcript, turns, opts)?;
    writeln!(out, "WEBVTT")?;
    writeln!(out)?;
    write_vtt_cues(&cues, out)
}

/// Write WebVTT cue blocks without the file header: a live writer prints the header once,
/// then cues as they are decided.
pub fn write_vtt_cues(cues: &[Cue], out: &mut dyn Write) -> Result<(), WriteError> {
    for cue in cues {
        writeln!(out, "{} --> {}", format_vtt(cue.start), format_vtt(cue.end))?;
        for (i, line) in cue.lines.iter().enumerate() {
            match (&cue.speaker, i) {
                (Some(s), 0) => writeln!(out, "<v {}>{}", vtt_escape(s), vtt_escape(line))?,
                _ => writeln!(out, "{}", vtt_escape(line))?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}
