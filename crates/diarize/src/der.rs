//! Diarization error rate: optimal one-to-one speaker mapping, a forgiveness collar around
//! reference boundaries, overlapped speech scored.
//!
//! Same definition as pyannote.metrics' `DiarizationErrorRate(collar=2c, skip_overlap=False)`
//! and NIST md-eval: `(missed + false alarm + confusion) / total`, where at every instant
//! with `R` reference and `H` hypothesis speakers, of which `C` reference speakers are
//! mapped to an active hypothesis speaker, missed = max(0, R - H), false alarm =
//! max(0, H - R), confusion = min(R, H) - C, and total = R, all integrated over time
//! outside the collars. The mapping maximises the total time reference and hypothesis
//! speakers are active together (Hungarian algorithm).

use std::collections::BTreeMap;

use mica_core::document::SpeakerTurn;
use serde::{Deserialize, Serialize};

/// DER and its parts, in seconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DerReport {
    /// `(missed + false_alarm + confusion) / total` (0 when there is no reference speech
    /// and no hypothesis speech; infinite when there is only hypothesis speech).
    pub der: f64,
    /// Reference speech, overlap counted once per speaker.
    pub total: f64,
    /// Reference speech with too few hypothesis speakers.
    pub missed: f64,
    /// Hypothesis speech with too few reference speakers.
    pub false_alarm: f64,
    /// Speech attributed to the wrong speaker.
    pub confusion: f64,
    /// Reference label to hypothesis label, for the mapped pairs.
    pub mapping: BTreeMap<String, String>,
}

/// DER of `hypothesis` against `reference`, ignoring `collar` seconds either side of every
/// reference turn boundary (0 for none; 0.25 is the usual NIST setting).
pub fn der(reference: &[SpeakerTurn], hypothesis: &[SpeakerTurn], collar: f64) -> DerReport {
    let (ref_labels, ref_idx) = labels(reference);
    let (hyp_labels, hyp_idx) = labels(hypothesis);
    // Breakpoints: every turn edge and every collar edge.
    let mut cuts: Vec<f64> = Vec::new();
    let mut collars: Vec<(f64, f64)> = Vec::new();
    for t in reference.iter().chain(hypothesis) {
        cuts.push(t.start);
        cuts.push(t.end);
    }
    if collar > 0.0 {
        for t in reference {
            for b in [t.start, t.end] {
                collars.push((b - collar, b + collar));
                cuts.push(b - collar);
                cuts.push(b + collar);
            }
        }
    }
    cuts.retain(|c| c.is_finite());
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    collars.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Elementary intervals with their active speaker sets.
    let mut pieces: Vec<(f64, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut overlap = vec![vec![0.0f64; hyp_labels.len()]; ref_labels.len()];
    let active = |turns: &[SpeakerTurn], idx: &[usize], t: f64| -> Vec<usize> {
        let mut v: Vec<usize> = turns
            .iter()
            .zip(idx)
            .filter(|(x, _)| x.start <= t && t < x.end)
            .map(|(_, &i)| i)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut ci = 0;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dur = b - a;
        if dur <= 0.0 {
            continue;
        }
        let mid = 0.5 * (a + b);
        while ci < collars.len() && collars[ci].1 <= mid {
            ci += 1;
        }
        if collars[ci..]
            .iter()
            .take_while(|c| c.0 <= mid)
            .any(|c| c.0 <= mid && mid < c.1)
        {
            continue;
        }
        let r = active(reference, &ref_idx, mid);
        let h = active(hypothesis, &hyp_idx, mid);
        if r.is_empty() && h.is_empty() {
            continue;
        }
        for &i in &r {
            for &j in &h {
                overlap[i][j] += dur;
            }
        }
        pieces.push((dur, r, h));
    }

    let assignment = hungarian_max(&overlap);
    let mut report = DerReport::default();
    for (i, j) in assignment.iter().enumerate() {
        if let Some(j) = j
            && overlap[i][*j] > 0.0
        {
            report
                .mapping
                .insert(ref_labels[i].clone(), hyp_labels[*j].clone());
        }
    }
    for (dur, r, h) in &pieces {
        let (nr, nh) = (r.len() as f64, h.len() as f64);
        let correct = r
            .iter()
            .filter(|&&i| assignment[i].is_some_and(|j| h.contains(&j)))
            .count() as f64;
        report.total += nr * dur;
        report.missed += (nr - nh).max(0.0) * dur;
        report.false_alarm += (nh - nr).max(0.0) * dur;
        report.confusion += (nr.min(nh) - correct) * dur;
    }
    let errors = report.missed + report.false_alarm + report.confusion;
    report.der = if report.total > 0.0 {
        errors / report.total
    } else if errors > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    report
}

/// Distinct labels in order of first appearance, and each turn's label index.
fn labels(turns: &[SpeakerTurn]) -> (Vec<String>, Vec<usize>) {
    let mut names: Vec<String> = Vec::new();
    let idx = turns
        .iter()
        .map(|t| match names.iter().position(|n| *n == t.speaker) {
            Some(i) => i,
            None => {
                names.push(t.speaker.clone());
                names.len() - 1
            }
        })
        .collect();
    (names, idx)
}

/// Maximum-weight assignment of rows to columns (each used at most once): for each row,
/// its column or `None`. Kuhn-Munkres with potentials on the square padded cost matrix.
pub fn hungarian_max(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    let n = rows.max(cols);
    if n == 0 {
        return vec![None; rows];
    }
    let big = weights.iter().flatten().fold(0.0f64, |m, &w| m.max(w));
    // Minimise big - w; padding costs big (weight 0).
    let cost = |i: usize, j: usize| -> f64 {
        if i < rows && j < cols {
            big - weights[i][j]
        } else {
            big
        }
    };
    let inf = f64::INFINITY;
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; n + 1];
    let mut p = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![None; rows];
    for (j, &i) in p.iter().enumerate().skip(1) {
        if i >= 1 && i <= rows && j <= cols {
            out[i - 1] = Some(j - 1);
        }
    }
    out
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

    #[test]
    fn hungarian_picks_the_best_pairs() {
        let w = vec![vec![1.0, 5.0, 0.0], vec![4.0, 6.0, 0.0]];
        assert_eq!(hungarian_max(&w), vec![Some(1), Some(0)]);
        let tall = vec![vec![1.0], vec![3.0], vec![2.0]];
        assert_eq!(hungarian_max(&tall), vec![None, Some(0), None]);
    }

    #[test]
    fn parts_add_up() {
        let r = vec![turn(0.0, 10.0, "a"), turn(5.0, 15.0, "b")];
        let h = vec![turn(0.0, 8.0, "x"), turn(8.0, 20.0, "y")];
        let d = der(&r, &h, 0.0);
        // Reference 20 s. 0-5: a/x ok. 5-8: a,b vs x: 1 missed (b). 8-10: a,b vs y: y maps
        // to b, so 1 missed (a). 10-15: b/y ok. 15-20: y alone: false alarm.
        assert!((d.total - 20.0).abs() < 1e-9);
        assert!((d.missed - 5.0).abs() < 1e-9, "{d:?}");
        assert!((d.false_alarm - 5.0).abs() < 1e-9, "{d:?}");
        assert!(d.confusion.abs() < 1e-9, "{d:?}");
        assert_eq!(d.mapping.get("a").map(String::as_str), Some("x"));
        assert!(der(&[], &[], 0.25).der == 0.0);
        assert!(der(&[], &h, 0.0).der.is_infinite());
    }
}
