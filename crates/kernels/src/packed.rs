//! Products against weight matrices packed once at load in panels of 64 columns, for
//! products of a few rows (an LSTM step, a convolution's pixels): one register-blocked
//! kernel, written once over [`Simd`] and run at every tier.
//!
//! A general GEMM packs its operands on every call, which costs more than the arithmetic
//! when only a few rows multiply the matrix; here the weights are packed once, and each
//! call streams one panel per block of rows while the partial sums stay in registers.

use crate::Tier;
use crate::simd::{Kernel, Simd, dispatch};

/// Columns per packed panel (four AVX-512 registers, eight AVX2 ones).
pub const PANEL: usize = 64;

/// Most rows one product call takes (the register block's height).
pub const MAX_ROWS: usize = 6;

/// A `[rows, cols]` matrix in panels of [`PANEL`] columns, each panel row after row, so a
/// product streams one panel while its partial sums stay in registers. Columns past
/// `cols` are zero.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    panels: usize,
}

impl PackedMatrix {
    /// Packs `w`, `[rows, cols]` row-major.
    ///
    /// # Panics
    /// When `w` does not hold `rows * cols` values.
    pub fn new(w: &[f32], rows: usize, cols: usize) -> PackedMatrix {
        assert_eq!(w.len(), rows * cols, "matrix size");
        let panels = cols.div_ceil(PANEL);
        let mut data = vec![0.0f32; panels * rows * PANEL];
        for p in 0..panels {
            let live = PANEL.min(cols - p * PANEL);
            for k in 0..rows {
                let dst = (p * rows + k) * PANEL;
                data[dst..dst + live].copy_from_slice(&w[k * cols + p * PANEL..][..live]);
            }
        }
        PackedMatrix {
            data,
            rows,
            cols,
            panels,
        }
    }

    /// Rows of the matrix (the length of an input row).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix (the length of an output row).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Panels of [`PANEL`] columns.
    pub fn panels(&self) -> usize {
        self.panels
    }

    /// Every panel, for a product over all columns.
    pub fn all(&self) -> std::ops::Range<usize> {
        0..self.panels
    }

    /// `out[j] = init[j] + x[j] · W` in the columns of `panels` (the rest of `out` is left
    /// alone) for `n` (1 to [`MAX_ROWS`]) rows, row `j` of each slice starting at `j` times
    /// its stride; an `init_stride` of 0 adds the same row (a bias) to all. Runs at
    /// [`Tier::current`]. Callers with many row blocks can loop panel by panel, so one
    /// panel serves them all while it is in cache; [`PackedMatrix::all`] is every column.
    ///
    /// # Panics
    /// When `n` is out of range or a slice is too short for `n` rows at its stride.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        panels: std::ops::Range<usize>,
        n: usize,
        x: &[f32],
        x_stride: usize,
        init: &[f32],
        init_stride: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        self.product_at(
            Tier::current(),
            panels,
            n,
            (x, x_stride),
            (init, init_stride),
            (out, out_stride),
        );
    }

    /// [`PackedMatrix::product`] at `tier` (lowered to what the CPU has).
    ///
    /// # Panics
    /// As [`PackedMatrix::product`].
    pub fn product_at(
        &self,
        tier: Tier,
        panels: std::ops::Range<usize>,
        n: usize,
        (x, x_stride): (&[f32], usize),
        (init, init_stride): (&[f32], usize),
        (out, out_stride): (&mut [f32], usize),
    ) {
        assert!((1..=MAX_ROWS).contains(&n), "1 to {MAX_ROWS} rows, not {n}");
        assert!(x.len() >= (n - 1) * x_stride + self.rows, "x too short");
        assert!(
            init.len() >= (n - 1) * init_stride + self.cols,
            "init too short"
        );
        assert!(
            out.len() >= (n - 1) * out_stride + self.cols,
            "out too short"
        );
        assert!(out_stride >= self.cols || n == 1, "output rows overlap");
        assert!(
            panels.end <= self.panels,
            "panels {panels:?} of {}",
            self.panels
        );
        dispatch(
            tier,
            Product {
                w: self,
                panels,
                n,
                x,
                x_stride,
                init,
                init_stride,
                out,
                out_stride,
            },
        );
    }
}

/// The operands of one [`PackedMatrix::product`].
struct Product<'a> {
    w: &'a PackedMatrix,
    panels: std::ops::Range<usize>,
    n: usize,
    x: &'a [f32],
    x_stride: usize,
    init: &'a [f32],
    init_stride: usize,
    out: &'a mut [f32],
    out_stride: usize,
}

impl Kernel for Product<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        // Registers per row: four 16-lane (AVX-512, 24 accumulators of 32 registers) or two
        // 8-lane (AVX2: 12 of 16).
        if S::LANES >= 16 {
            // SAFETY: the caller's checks (`product_at`), S supported (the contract).
            unsafe { rows::<S, 4>(self) }
        } else {
            // SAFETY: as above.
            unsafe { rows::<S, 2>(self) }
        }
    }
}

/// [`Product`] with `NV` registers per row, dispatched on the row count so that each
/// block keeps its accumulators in registers.
#[inline(always)]
unsafe fn rows<S: Simd, const NV: usize>(p: Product) {
    let w = p.w;
    let (x, init, out) = (p.x.as_ptr(), p.init.as_ptr(), p.out.as_mut_ptr());
    let strides = (p.x_stride, p.init_stride, p.out_stride);
    for panel in p.panels {
        let data = w.data[panel * w.rows * PANEL..][..w.rows * PANEL].as_ptr();
        let col0 = panel * PANEL;
        let live = w.cols - col0;
        // SAFETY: panel holds `rows` rows of 64; the rows of x, init and out are inside
        // their slices and columns past `live` are masked (`product_at` checked).
        unsafe {
            let block = Block {
                k: w.rows,
                x,
                init: init.add(col0),
                out: out.add(col0),
                strides,
                live,
            };
            match p.n {
                1 => panel_rows::<S, 1, NV>(data, &block),
                2 => panel_rows::<S, 2, NV>(data, &block),
                3 => panel_rows::<S, 3, NV>(data, &block),
                4 => panel_rows::<S, 4, NV>(data, &block),
                5 => panel_rows::<S, 5, NV>(data, &block),
                _ => panel_rows::<S, 6, NV>(data, &block),
            }
        }
    }
}

/// The row pointers of one panel's product: `x` at its first value, `init` and `out` at
/// the panel's first column, row strides `(x, init, out)`, `live` columns of the panel
/// that exist (the rest are neither read from `init` nor written).
struct Block {
    k: usize,
    x: *const f32,
    init: *const f32,
    out: *mut f32,
    strides: (usize, usize, usize),
    live: usize,
}

/// One panel's product inside a kernel that already runs at `S` (a tier's entry point,
/// see [`crate::simd::Kernel`]): `out[r][c] = init[r][c] + Σ_{i < k} x[r * x_stride + i]
/// panel[i * 64 + c]` for `R` (1 to [`MAX_ROWS`]) rows and columns `c < live` (at most
/// 64), with `init` and `out` at the panel's first column and rows at their strides (an
/// `init_stride` of 0 adds one row to all).
///
/// # Safety
/// The CPU supports `S`; `panel` holds `k` rows of 64 values, `x` `R` rows of `k` at its
/// stride, `init` and `out` `R` rows of `live` values at theirs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn panel_product<S: Simd, const R: usize>(
    panel: *const f32,
    k: usize,
    (x, x_stride): (*const f32, usize),
    (init, init_stride): (*const f32, usize),
    (out, out_stride): (*mut f32, usize),
    live: usize,
) {
    let block = Block {
        k,
        x,
        init,
        out,
        strides: (x_stride, init_stride, out_stride),
        live,
    };
    // SAFETY: the caller's contract.
    unsafe {
        if S::LANES >= 16 {
            panel_rows::<S, R, 4>(panel, &block)
        } else {
            panel_rows::<S, R, 2>(panel, &block)
        }
    }
}

/// `out[r][..] = init[r][..] + Σ_i x[r][i] panel[i][..]` for `R` rows and the panel's live
/// columns, `NV * LANES` columns at a time.
#[inline(always)]
unsafe fn panel_rows<S: Simd, const R: usize, const NV: usize>(panel: *const f32, b: &Block) {
    let width = NV * S::LANES;
    let (xs, is, os) = b.strides;
    let mut col = 0;
    // SAFETY: the caller's bounds (see `rows`); masked lanes past `live` are neither read
    // nor written, and their addresses are formed with `wrapping_add`.
    unsafe {
        while col < PANEL.min(b.live) {
            let lanes = |v: usize| b.live.saturating_sub(col + v * S::LANES).min(S::LANES);
            let mut acc = [[S::zero(); NV]; R];
            for (r, accr) in acc.iter_mut().enumerate() {
                for (v, a) in accr.iter_mut().enumerate() {
                    let at = b.init.wrapping_add(r * is + col + v * S::LANES);
                    *a = match lanes(v) {
                        n if n == S::LANES => S::load(at),
                        n => S::load_partial(at, n),
                    };
                }
            }
            for i in 0..b.k {
                let wp = panel.add(i * PANEL + col);
                let mut wv = [S::zero(); NV];
                for (v, wj) in wv.iter_mut().enumerate() {
                    *wj = S::load(wp.add(v * S::LANES));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let xb = S::splat(*b.x.add(r * xs + i));
                    for (a, wj) in accr.iter_mut().zip(wv) {
                        *a = S::fmadd(xb, wj, *a);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (v, a) in accr.iter().enumerate() {
                    let at = b.out.wrapping_add(r * os + col + v * S::LANES);
                    match lanes(v) {
                        n if n == S::LANES => S::store(at, *a),
                        n => S::store_partial(at, *a, n),
                    }
                }
            }
            col += width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every tier against a plain triple loop in f64, for widths that are not whole panels
    /// or registers and row counts that are not whole blocks, at strides and with a bias
    /// row or a full init matrix; columns outside the panels asked for stay untouched.
    #[test]
    fn every_tier_matches_a_plain_loop() {
        let mut seed = 0x9e37_79b9_u64;
        for (m, k, c) in [
            (1, 3, 5),
            (7, 60, 512),
            (29, 40, 100),
            (130, 17, 64),
            (3, 70, 130),
            (6, 9, 72),
        ] {
            let w = rand_vec(k * c, &mut seed);
            let x = rand_vec(m * k, &mut seed);
            let init = rand_vec(m * c, &mut seed);
            let packed = PackedMatrix::new(&w, k, c);
            for (init_stride, tier) in [0, c]
                .into_iter()
                .flat_map(|s| Tier::supported().map(move |t| (s, t)))
            {
                let want = |r: usize, col: usize| {
                    f64::from(init[r * init_stride + col])
                        + (0..k)
                            .map(|i| f64::from(x[r * k + i]) * f64::from(w[i * c + col]))
                            .sum::<f64>()
                };
                let out_stride = c + 3;
                let mut got = vec![f32::NAN; m * out_stride];
                for r in (0..m).step_by(MAX_ROWS) {
                    let n = MAX_ROWS.min(m - r);
                    packed.product_at(
                        tier,
                        packed.all(),
                        n,
                        (&x[r * k..], k),
                        (&init[r * init_stride..], init_stride),
                        (&mut got[r * out_stride..], out_stride),
                    );
                }
                for r in 0..m {
                    for col in 0..out_stride {
                        let g = got[r * out_stride + col];
                        if col >= c {
                            assert!(g.is_nan(), "{tier} {m}x{k}x{c}: wrote column {col}");
                        } else {
                            let e = want(r, col);
                            assert!(
                                (f64::from(g) - e).abs() < 1e-4,
                                "{tier} {m}x{k}x{c} {r},{col}: {g} vs {e}"
                            );
                        }
                    }
                }
                // One panel only: the others are left alone.
                if packed.panels() > 1 {
                    let mut one = vec![f32::NAN; c];
                    packed.product_at(tier, 1..2, 1, (&x, k), (&init, 0), (&mut one, c));
                    for (col, g) in one.iter().enumerate() {
                        assert_eq!(
                            g.is_nan(),
                            !(PANEL..2 * PANEL).contains(&col),
                            "{tier} column {col}"
                        );
                    }
                }
            }
        }
    }
}
