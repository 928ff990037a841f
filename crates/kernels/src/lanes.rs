//! Products whose right operand holds a batch in vector lanes: `out = W · Z` with `Z`
//! `[k, LANES]` (one column per sequence), for recurrences run over many sequences at once.
//!
//! [`crate::PackedMatrix`] keeps a few input rows in registers and streams the weights once
//! per row block; a recurrence over 16 sequences then reads every weight four times per
//! step. Here the batch lies across the vector lanes instead: each weight is loaded once
//! per step as a broadcast and used for every sequence, and the weights are read in one
//! sequential stream (rows packed in blocks of [`LANE_ROWS`], value `k` of each row of a
//! block side by side). The state stays in the same `[k, LANES]` layout from step to step,
//! so the LSTM cell ([`crate::lstm_cell`]) runs on it unchanged.

use crate::Tier;
use crate::simd::{Kernel, Simd, dispatch};

/// Sequences (columns of `Z`) one product takes: the lanes of one AVX-512 register, two
/// AVX2 ones.
pub const LANES: usize = 16;

/// Rows per packed block (the register block's height at the AVX-512 tier; two blocks of
/// six at the 8-lane tiers).
pub const LANE_ROWS: usize = 12;

/// A `[rows, k]` matrix packed for [`LaneMatrix::product`]: rows in blocks of
/// [`LANE_ROWS`] (rows past `rows` are zero), each block as `k` groups of its rows' values.
#[derive(Debug, Clone)]
pub struct LaneMatrix {
    data: Vec<f32>,
    rows: usize,
    k: usize,
}

impl LaneMatrix {
    /// Packs the column blocks `parts` side by side: part `p` is `[rows, k_p]` row-major
    /// (torch's `weight` layout), and the packed matrix is `[rows, Σ k_p]`, so an LSTM's
    /// `weight_ih` and `weight_hh` become one product over `[x; h]`.
    ///
    /// # Panics
    /// When a part does not hold `rows * k_p` values.
    pub fn new(parts: &[(&[f32], usize)], rows: usize) -> LaneMatrix {
        let k: usize = parts.iter().map(|&(_, kp)| kp).sum();
        let blocks = rows.div_ceil(LANE_ROWS);
        let mut data = vec![0.0f32; blocks * k * LANE_ROWS];
        let mut k0 = 0;
        for &(w, kp) in parts {
            assert_eq!(w.len(), rows * kp, "part of {rows} x {kp}");
            for r in 0..rows {
                let (b, rr) = (r / LANE_ROWS, r % LANE_ROWS);
                for i in 0..kp {
                    data[(b * k + k0 + i) * LANE_ROWS + rr] = w[r * kp + i];
                }
            }
            k0 += kp;
        }
        LaneMatrix { data, rows, k }
    }

    /// Rows (outputs per sequence).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs per sequence).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `out[r][j] = bias[r] + Σ_i W[r][i] z[i][j]` for every row `r` and lane `j <
    /// LANES`, with `z` `[k, LANES]` and `out` `[rows, LANES]` row-major. Lanes of
    /// sequences that do not exist should hold zeros in `z` (they are computed anyway).
    /// Runs at `tier` (lowered to what the CPU has).
    ///
    /// # Panics
    /// When `z`, `bias` or `out` is shorter than the matrix needs.
    pub fn product(&self, tier: Tier, z: &[f32], bias: &[f32], out: &mut [f32]) {
        assert!(z.len() >= self.k * LANES, "z holds {} values", z.len());
        assert!(bias.len() >= self.rows, "bias holds {} values", bias.len());
        assert!(
            out.len() >= self.rows * LANES,
            "out holds {} values",
            out.len()
        );
        dispatch(
            tier,
            Product {
                w: self,
                z,
                bias,
                out,
            },
        );
    }
}

struct Product<'a> {
    w: &'a LaneMatrix,
    z: &'a [f32],
    bias: &'a [f32],
    out: &'a mut [f32],
}

impl Kernel for Product<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let (w, k) = (self.w, self.w.k);
        let (z, out) = (self.z.as_ptr(), self.out.as_mut_ptr());
        for b in 0..w.rows.div_ceil(LANE_ROWS) {
            let panel = w.data[b * k * LANE_ROWS..][..k * LANE_ROWS].as_ptr();
            let r0 = b * LANE_ROWS;
            // SAFETY: the panel holds k groups of LANE_ROWS; z holds k rows of LANES and
            // out `rows` rows of LANES (`product` checked); rows past `rows` are skipped.
            unsafe {
                if S::LANES == LANES {
                    block::<S, LANE_ROWS, 1>(panel, k, 0, z, self.bias, out, r0, w.rows);
                } else {
                    let half = LANE_ROWS / 2;
                    block::<S, { LANE_ROWS / 2 }, 2>(panel, k, 0, z, self.bias, out, r0, w.rows);
                    block::<S, { LANE_ROWS / 2 }, 2>(
                        panel,
                        k,
                        half,
                        z,
                        self.bias,
                        out,
                        r0 + half,
                        w.rows,
                    );
                }
            }
        }
    }
}

/// Rows `r0..r0 + R` (those below `rows`) of the product, `NV` registers of lanes each;
/// the block's rows start at position `skip` of each group of [`LANE_ROWS`] in `panel`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block<S: Simd, const R: usize, const NV: usize>(
    panel: *const f32,
    k: usize,
    skip: usize,
    z: *const f32,
    bias: &[f32],
    out: *mut f32,
    r0: usize,
    rows: usize,
) {
    if r0 >= rows {
        return;
    }
    // SAFETY: the caller's bounds; rows at or past `rows` read the panel's zero padding
    // and are neither biased nor stored.
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            if r0 + r < rows {
                *a = [S::splat(bias[r0 + r]); NV];
            }
        }
        for i in 0..k {
            let zi = z.add(i * LANES);
            let mut zv = [S::zero(); NV];
            for (v, zj) in zv.iter_mut().enumerate() {
                *zj = S::load(zi.add(v * S::LANES));
            }
            let wi = panel.add(i * LANE_ROWS + skip);
            for (r, a) in acc.iter_mut().enumerate() {
                let wb = S::splat(*wi.add(r));
                for (av, zj) in a.iter_mut().zip(zv) {
                    *av = S::fmadd(wb, zj, *av);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            if r0 + r < rows {
                for (v, av) in a.iter().enumerate() {
                    S::store(out.add((r0 + r) * LANES + v * S::LANES), *av);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tier against a plain loop in f64, for row counts that are not whole blocks
    /// and a matrix made of two parts.
    #[test]
    fn every_tier_matches_a_plain_loop() {
        let mut seed = 0x9e37_79b9_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2000) as f32 / 1000.0 - 1.0
        };
        for (rows, k1, k2) in [
            (1, 1, 0),
            (7, 3, 5),
            (12, 16, 16),
            (29, 40, 24),
            (100, 5, 1),
        ] {
            let a: Vec<f32> = (0..rows * k1).map(|_| rand()).collect();
            let b: Vec<f32> = (0..rows * k2).map(|_| rand()).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rand()).collect();
            let z: Vec<f32> = (0..(k1 + k2) * LANES).map(|_| rand()).collect();
            let m = LaneMatrix::new(&[(&a, k1), (&b, k2)], rows);
            assert_eq!((m.rows(), m.k()), (rows, k1 + k2));
            for tier in Tier::supported() {
                let mut out = vec![f32::NAN; rows * LANES + 3];
                m.product(tier, &z, &bias, &mut out);
                for r in 0..rows {
                    for j in 0..LANES {
                        let want = bias[r] as f64
                            + (0..k1)
                                .map(|i| a[r * k1 + i] as f64 * z[i * LANES + j] as f64)
                                .sum::<f64>()
                            + (0..k2)
                                .map(|i| b[r * k2 + i] as f64 * z[(k1 + i) * LANES + j] as f64)
                                .sum::<f64>();
                        let got = out[r * LANES + j] as f64;
                        assert!((got - want).abs() < 1e-4, "{tier:?} {rows} {r} {j}");
                    }
                }
                assert!(out[rows * LANES..].iter().all(|v| v.is_nan()), "{tier:?}");
            }
        }
    }
}
