//! The LSTM cell update shared by the VAD and diarization LSTMs, at every tier.

use crate::Tier;
use crate::simd::{Kernel, Simd, dispatch};

/// The LSTM cell update from gate pre-activations `g` (`[4 * H]`, PyTorch's order i, f,
/// g, o): `c = σ(f) c + σ(i) tanh(g)`, `h = σ(o) tanh(c)`, `c` and `h` (`H` each) in place,
/// at `tier` (lowered to what the CPU has). `σ` and `tanh` are built on [`crate::math::exp`]'s
/// polynomial, to about 1e-6; every tier agrees with the others to that.
///
/// # Panics
/// When `g` holds fewer than `4 * h.len()` values or `c` fewer than `h.len()`.
pub fn lstm_cell(tier: Tier, g: &[f32], c: &mut [f32], h: &mut [f32]) {
    let hidden = h.len();
    assert!(
        g.len() >= 4 * hidden && c.len() >= hidden,
        "lstm_cell: {} gates and {} cells for {hidden} units",
        g.len(),
        c.len()
    );
    dispatch(tier, Cell { g, c, h });
}

struct Cell<'a> {
    g: &'a [f32],
    c: &'a mut [f32],
    h: &'a mut [f32],
}

impl Kernel for Cell<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let hidden = self.h.len();
        let (g, c, h) = (self.g.as_ptr(), self.c.as_mut_ptr(), self.h.as_mut_ptr());
        let mut u = 0;
        // SAFETY: S is supported (the trait's contract); every access is `lanes` values from
        // unit u < hidden of a gate block or of `c` / `h`, inside the slices (`lstm_cell`
        // checked their lengths).
        unsafe {
            while u < hidden {
                let lanes = (hidden - u).min(S::LANES);
                let load = |p: *const f32| {
                    if lanes == S::LANES {
                        S::load(p)
                    } else {
                        S::load_partial(p, lanes)
                    }
                };
                let store = |p: *mut f32, v: S::V| {
                    if lanes == S::LANES {
                        S::store(p, v)
                    } else {
                        S::store_partial(p, v, lanes)
                    }
                };
                let i = sigmoid::<S>(load(g.add(u)));
                let f = sigmoid::<S>(load(g.add(hidden + u)));
                let gg = tanh::<S>(load(g.add(2 * hidden + u)));
                let o = sigmoid::<S>(load(g.add(3 * hidden + u)));
                let cu = S::fmadd(f, load(c.add(u)), S::mul(i, gg));
                store(c.add(u), cu);
                store(h.add(u), S::mul(o, tanh::<S>(cu)));
                u += S::LANES;
            }
        }
    }
}

/// [`crate::math::exp`] on a vector.
#[inline(always)]
unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    // SAFETY: S is supported (the caller).
    unsafe {
        let c = |v: f32| S::splat(v);
        let x = S::min(S::max(x, c(-87.0)), c(88.0));
        let n = S::sub(
            S::fmadd(x, c(std::f32::consts::LOG2_E), c(12_582_912.0)),
            c(12_582_912.0),
        );
        let r = S::fmadd(n, c(-0.693_145_75), x);
        let r = S::fmadd(n, c(-1.428_606_8e-6), r);
        let mut p = c(1.0 / 720.0);
        for k in [120.0f32, 24.0, 6.0, 2.0, 1.0, 1.0] {
            p = S::fmadd(p, r, c(1.0 / k));
        }
        S::mul(p, S::pow2i(n))
    }
}

/// `1 / (1 + e^-x)` on a vector.
#[inline(always)]
unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: S is supported (the caller).
    unsafe {
        let one = S::splat(1.0);
        S::div(one, S::add(one, exp::<S>(S::sub(S::zero(), x))))
    }
}

/// `2 σ(2x) - 1` on a vector.
#[inline(always)]
unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: S is supported (the caller).
    unsafe {
        S::sub(
            S::mul(S::splat(2.0), sigmoid::<S>(S::add(x, x))),
            S::splat(1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tier against the cell in f64, over saturating gates and widths that are not
    /// whole vectors.
    #[test]
    fn every_tier_matches_the_f64_cell() {
        for hidden in [1, 7, 16, 37, 64] {
            let g: Vec<f32> = (0..4 * hidden)
                .map(|i| (i as f32 * 0.77).sin() * 12.0)
                .collect();
            let c0: Vec<f32> = (0..hidden).map(|i| (i as f32 * 0.31).cos() * 3.0).collect();
            let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
            for tier in Tier::supported() {
                let (mut c, mut h) = (c0.clone(), vec![f32::NAN; hidden]);
                lstm_cell(tier, &g, &mut c, &mut h);
                for u in 0..hidden {
                    let gate = |k: usize| f64::from(g[k * hidden + u]);
                    let cu = sig(gate(1)) * f64::from(c0[u]) + sig(gate(0)) * gate(2).tanh();
                    let hu = sig(gate(3)) * cu.tanh();
                    assert!(
                        (f64::from(c[u]) - cu).abs() < 4e-6,
                        "{tier} c[{u}] {} {cu}",
                        c[u]
                    );
                    assert!(
                        (f64::from(h[u]) - hu).abs() < 4e-6,
                        "{tier} h[{u}] {} {hu}",
                        h[u]
                    );
                }
            }
        }
    }

    /// Gates far past the exponent's range saturate instead of overflowing: σ to 0 or 1,
    /// tanh to ±1.
    #[test]
    fn extreme_gates_saturate() {
        for tier in Tier::supported() {
            for (x, want_c, want_h) in [(200.0f32, 1.5, 1.5f32.tanh()), (-200.0, 0.0, 0.0)] {
                let (mut c, mut h) = (vec![0.5f32; 9], vec![f32::NAN; 9]);
                lstm_cell(tier, &[x; 36], &mut c, &mut h);
                // c = σ(f) 0.5 + σ(i) tanh(g): 0.5 + 1 or 0 + 0.
                assert!(
                    c.iter().all(|&v| (v - want_c).abs() < 1e-6),
                    "{tier} {x}: {c:?}"
                );
                assert!(
                    h.iter().all(|&v| (v - want_h).abs() < 1e-6),
                    "{tier} {x}: {h:?}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "lstm_cell")]
    fn short_gates_panic_with_a_message() {
        lstm_cell(Tier::Portable, &[0.0; 7], &mut [0.0; 2], &mut [0.0; 2]);
    }
}
