//! Where a recording is cut into parts: in a pause near the target part length, decided
//! from the voice-activity probabilities as the audio streams in.

/// Samples per voice-activity window (Silero at 16 kHz).
pub const VAD_WINDOW: u64 = 512;

/// A window is a pause when its speech probability is below this (Silero's own
/// end-of-speech threshold for its default onset of 0.5).
const PAUSE_BELOW: f32 = 0.35;

/// Windows of pause (320 ms) that make a pause good enough to cut in wherever it lies in
/// the reach: keeping parts near their target matters more than a longer pause.
const GOOD_PAUSE: u64 = 10;

/// Decides the cuts of one recording. Feed it every voice-activity probability in order;
/// after each feed, [`Planner::next_cut`] gives the cuts that are now decided.
///
/// Each part ends in a pause within `reach` of `target` samples after the part's start,
/// cut in the pause's middle, so no word is split: the pause nearest the target among
/// those of at least ten windows, 320 ms (a breath between sentences), else the longest
/// (a gap between words). Where the reach holds no pause at all (music, crosstalk), the
/// cut goes to the window least likely to be speech. When the recording's length is known,
/// a remainder that fits in one part within reach is not cut again (no short last part).
#[derive(Debug, Clone)]
pub struct Planner {
    target: u64,
    reach: u64,
    /// Start of the part being planned.
    start: u64,
    /// Window index of `probs[0]`.
    first_window: u64,
    probs: Vec<f32>,
    /// The recording's length in samples, when known.
    total: Option<u64>,
}

impl Planner {
    /// Parts of about `target` samples (16 kHz), each cut within `reach` samples of it
    /// (at most half the target); `total`, the recording's length when known, spares the
    /// last part from being cut short.
    pub fn new(target: u64, reach: u64, total: Option<u64>) -> Planner {
        let reach = reach.min(target / 2);
        Planner {
            target,
            reach,
            start: 0,
            first_window: 0,
            probs: Vec::new(),
            total,
        }
    }

    /// The speech probabilities of the [`VAD_WINDOW`]-sample windows from index
    /// `first_window` on, as a streaming VAD gives them (the next ones in order; a gap is
    /// filled as speech, so no cut lands where nothing was seen).
    pub fn push(&mut self, first_window: u64, probs: &[f32]) {
        let known = self.first_window + self.probs.len() as u64;
        if first_window > known {
            self.probs
                .extend(std::iter::repeat_n(1.0, (first_window - known) as usize));
        }
        let skip = known.saturating_sub(first_window) as usize;
        self.probs.extend(probs.iter().skip(skip));
    }

    /// The next cut (a sample index) once the whole reach beyond the target has been seen.
    pub fn next_cut(&mut self) -> Option<u64> {
        let seen = (self.first_window + self.probs.len() as u64) * VAD_WINDOW;
        let last = self.start + self.target + self.reach;
        if seen < last || self.total.is_some_and(|t| t <= last) {
            return None;
        }
        let from = (self.start + self.target - self.reach).div_ceil(VAD_WINDOW);
        let to = last / VAD_WINDOW;
        let cut = self.choose(from, to);
        self.start = cut;
        // Keep the windows from the cut's on: the next part is chosen among them.
        let keep_from = (cut / VAD_WINDOW).max(self.first_window);
        self.probs.drain(..(keep_from - self.first_window) as usize);
        self.first_window = keep_from;
        Some(cut)
    }

    /// The cut among windows `from..to` (indices): the middle of the longest pause, the
    /// nearest to the target among equals; else the least speech-like window's middle.
    fn choose(&self, from: u64, to: u64) -> u64 {
        let prob = |w: u64| self.probs[(w - self.first_window) as usize];
        let target = self.start + self.target;
        let distance = |sample: u64| sample.abs_diff(target);
        // The pause to beat: (good, length, middle sample).
        let mut best: Option<(bool, u64, u64)> = None;
        let mut run_start = None;
        for w in from..=to {
            let pause = w < to && prob(w) < PAUSE_BELOW;
            match (pause, run_start) {
                (true, None) => run_start = Some(w),
                (false, Some(s)) => {
                    let len = w - s;
                    let good = len >= GOOD_PAUSE;
                    let middle = (s + w) * VAD_WINDOW / 2;
                    let better = match best {
                        None => true,
                        Some((g, _, m)) if good && g => distance(middle) < distance(m),
                        Some((g, l, m)) => {
                            (good && !g)
                                || (!good && !g)
                                    && (len > l || (len == l && distance(middle) < distance(m)))
                        }
                    };
                    if better {
                        best = Some((good, len, middle));
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some((_, _, middle)) = best {
            return middle;
        }
        let quietest = (from..to)
            .min_by(|&a, &b| {
                prob(a)
                    .total_cmp(&prob(b))
                    .then(distance(a * VAD_WINDOW).cmp(&distance(b * VAD_WINDOW)))
            })
            .unwrap_or(from);
        quietest * VAD_WINDOW + VAD_WINDOW / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows of speech (0.9) with pauses (0.05) at the given window ranges.
    fn probs(len: usize, pauses: &[(usize, usize)]) -> Vec<f32> {
        let mut p = vec![0.9; len];
        for &(a, b) in pauses {
            p[a..b].iter_mut().for_each(|x| *x = 0.05);
        }
        p
    }

    /// Every cut the planner makes when fed `p` in pieces of `piece` windows.
    fn cuts(p: &[f32], target: u64, reach: u64, piece: usize) -> Vec<u64> {
        let mut planner = Planner::new(target, reach, None);
        let mut out = Vec::new();
        for (i, chunk) in p.chunks(piece).enumerate() {
            planner.push((i * piece) as u64, chunk);
            while let Some(c) = planner.next_cut() {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn cuts_in_the_longest_pause_within_reach() {
        // Target 100 windows, reach 20: pauses at 85..88 (3), 110..116 (6) and 130..150
        // (out of reach) for the first part.
        let p = probs(400, &[(85, 88), (110, 116), (130, 150)]);
        let got = cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 7);
        assert_eq!(got[0], 113 * VAD_WINDOW);
        // However the probabilities arrive, the cuts are the same.
        assert_eq!(cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 1), got);
        assert_eq!(cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 400), got);
    }

    #[test]
    fn a_good_pause_near_the_target_beats_a_longer_one_further() {
        let p = probs(300, &[(84, 114), (101, 111)]);
        // 84..114 holds 101..111: make them two pauses with speech between.
        let mut p = p;
        p[100] = 0.9;
        p[111] = 0.9;
        // Pauses 84..100 (16 windows) and 101..111 (10): the second is nearer the target.
        assert_eq!(
            cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 5)[0],
            106 * VAD_WINDOW
        );
    }

    #[test]
    fn a_known_end_leaves_no_short_last_part() {
        // A pause every 10 windows, target 100, reach 20. With the end known at 210
        // windows, the ~110 left after the first cut fit in one part within reach, so
        // there is no second cut; without the end, a second cut near 200 leaves a tail.
        let pauses: Vec<(usize, usize)> = (0..25).map(|i| (i * 10, i * 10 + 1)).collect();
        let p = probs(260, &pauses);
        let mut planner = Planner::new(100 * VAD_WINDOW, 20 * VAD_WINDOW, Some(210 * VAD_WINDOW));
        planner.push(0, &p);
        let first = planner.next_cut().expect("a first cut");
        assert!(first.abs_diff(100 * VAD_WINDOW) <= 20 * VAD_WINDOW);
        assert_eq!(planner.next_cut(), None);
        assert_eq!(cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 7).len(), 2);
    }

    #[test]
    fn equal_pauses_go_to_the_one_nearest_the_target() {
        let p = probs(300, &[(82, 84), (97, 99), (115, 117)]);
        assert_eq!(
            cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 5)[0],
            98 * VAD_WINDOW
        );
    }

    #[test]
    fn without_a_pause_the_least_speechlike_window() {
        let mut p = vec![0.95f32; 300];
        p[91] = 0.6;
        p[107] = 0.5;
        let got = cuts(&p, 100 * VAD_WINDOW, 20 * VAD_WINDOW, 9);
        assert_eq!(got[0], 107 * VAD_WINDOW + VAD_WINDOW / 2);
    }

    #[test]
    fn parts_stay_within_reach_of_the_target_all_along() {
        // Regular pauses every 37 windows: every part is target +- reach, cuts increase.
        let pauses: Vec<(usize, usize)> = (0..100).map(|i| (i * 37, i * 37 + 2)).collect();
        let p = probs(3700, &pauses);
        let (target, reach) = (200u64, 40u64);
        let got = cuts(&p, target * VAD_WINDOW, reach * VAD_WINDOW, 13);
        assert!(got.len() >= 15, "{} cuts", got.len());
        let mut prev = 0;
        for c in got {
            let len = c - prev;
            assert!(
                len.abs_diff(target * VAD_WINDOW) <= reach * VAD_WINDOW,
                "{len}"
            );
            assert_eq!(
                p[(c / VAD_WINDOW) as usize],
                0.05,
                "cut at {c} is not in a pause"
            );
            prev = c;
        }
    }

    #[test]
    fn short_input_has_no_cut_and_gaps_count_as_speech() {
        assert!(
            cuts(
                &probs(100, &[(50, 60)]),
                100 * VAD_WINDOW,
                20 * VAD_WINDOW,
                10
            )
            .is_empty()
        );
        // Windows 100..104 missing between two pauses: they are not taken as a pause,
        // so the longer pause seen wins.
        let mut planner = Planner::new(100 * VAD_WINDOW, 20 * VAD_WINDOW, None);
        planner.push(0, &probs(100, &[(96, 100)]));
        planner.push(104, &probs(100, &[(0, 3)])[..]);
        assert_eq!(planner.next_cut(), Some(98 * VAD_WINDOW));
    }
}
