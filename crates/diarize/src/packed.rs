//! Products against weight matrices packed once at load, for the networks on the CPU
//! (LSTM input projections and recurrences, SincNet and its 5-tap convolutions).
//!
//! candle's CPU matmul (the `gemm` crate on stable Rust) stops at AVX2, while the CPUs we
//! serve on (Zen 4/5, recent Xeons) do twice the work per instruction with AVX-512; and
//! the recurrence needs a product of a few rows per time step, where a general GEMM's
//! setup costs more than the arithmetic. One register-blocked kernel serves both.

use rayon::prelude::*;

/// Columns per packed panel: four AVX-512 registers.
const PANEL: usize = 64;

/// Most rows one kernel call takes: `4 * MAX_ROWS` accumulators stay in registers.
pub(crate) const MAX_ROWS: usize = 6;

/// Runs `f(offset, run)` on rayon's pool (the process's CPU thread count, which
/// `--threads` sets) over runs of `out` made of whole granules of `granule` floats (the
/// last may be short), one run per thread, `offset` being where the run starts.
pub(crate) fn par_granules(out: &mut [f32], granule: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let granules = out.len().div_ceil(granule.max(1));
    let threads = rayon::current_num_threads().min(granules).max(1);
    if threads == 1 {
        f(0, out);
        return;
    }
    let run = granules.div_ceil(threads) * granule;
    out.par_chunks_mut(run)
        .enumerate()
        .for_each(|(i, chunk)| f(i * run, chunk));
}

/// The operands of one product (see [`PackedMatrix::product`]).
struct Operands<'a> {
    panels: std::ops::Range<usize>,
    x: &'a [f32],
    x_stride: usize,
    init: &'a [f32],
    init_stride: usize,
    out: &'a mut [f32],
    out_stride: usize,
}

/// A `[rows, cols]` matrix in panels of [`PANEL`] columns, each panel row after row, so a
/// product streams one panel while its partial sums stay in registers. Columns past
/// `cols` are zero.
#[derive(Debug, Clone)]
pub(crate) struct PackedMatrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    panels: usize,
}

impl PackedMatrix {
    /// Packs `w`, `[rows, cols]` row-major.
    pub(crate) fn new(w: &[f32], rows: usize, cols: usize) -> PackedMatrix {
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
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix (the length of an output row).
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Panels of [`PANEL`] columns.
    pub(crate) fn panels(&self) -> usize {
        self.panels
    }

    /// Every panel, for a product over all columns.
    pub(crate) fn all(&self) -> std::ops::Range<usize> {
        0..self.panels
    }

    /// `out[j] = init[j] + x[j] · W` in the columns of `panels` (the rest of `out` is left
    /// alone) for `n` (1 to [`MAX_ROWS`]) rows, row `j` of each slice starting at `j` times
    /// its stride; an `init_stride` of 0 adds the same row (a bias) to all. Callers with
    /// many row blocks can loop panel by panel, so one panel serves them all while it is in
    /// cache; [`PackedMatrix::all`] is every column.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn product(
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
        let args = Operands {
            panels,
            x,
            x_stride,
            init,
            init_stride,
            out,
            out_stride,
        };
        #[cfg(target_arch = "x86_64")]
        {
            use mica_kernels::Tier;
            let tier = Tier::current();
            if tier.has(Tier::Avx512) {
                // SAFETY: the CPU has AVX-512F (its tier, checked just above); the slices'
                // lengths were checked against the strides just before.
                unsafe {
                    match n {
                        1 => self.product_avx512::<1>(args),
                        2 => self.product_avx512::<2>(args),
                        3 => self.product_avx512::<3>(args),
                        4 => self.product_avx512::<4>(args),
                        5 => self.product_avx512::<5>(args),
                        _ => self.product_avx512::<MAX_ROWS>(args),
                    }
                }
                return;
            }
            if tier.has(Tier::Avx2) {
                // SAFETY: the CPU has AVX2 and FMA (its tier, checked just above).
                unsafe { self.product_fma(n, args) };
                return;
            }
        }
        self.product_rows(n, args);
    }

    /// The product with AVX2 and FMA (CPUs without AVX-512): blocks of up to 4 rows.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and the slices are long enough for `n` rows at their
    /// strides (as [`PackedMatrix::product`] checks).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn product_fma(&self, n: usize, ops: Operands<'_>) {
        let Operands {
            panels,
            x,
            x_stride,
            init,
            init_stride,
            out,
            out_stride,
        } = ops;
        let mut r0 = 0;
        while r0 < n {
            let m = (n - r0).min(4);
            let block = Operands {
                panels: panels.clone(),
                x: &x[r0 * x_stride..],
                x_stride,
                init: &init[r0 * init_stride..],
                init_stride,
                out: &mut out[r0 * out_stride..],
                out_stride,
            };
            // SAFETY: AVX2 and FMA are enabled here; `block` holds `m` rows.
            unsafe {
                match m {
                    1 => self.product_avx2::<1>(block),
                    2 => self.product_avx2::<2>(block),
                    3 => self.product_avx2::<3>(block),
                    _ => self.product_avx2::<4>(block),
                }
            }
            r0 += m;
        }
    }

    /// `N` (up to 4) rows with AVX2: per 16 columns of a panel, `2 * N` accumulators over
    /// the whole reduction (11 of the 16 registers), each weight load feeding `N` FMAs.
    ///
    /// # Safety
    /// As [`PackedMatrix::product_fma`], for `N` rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn product_avx2<const N: usize>(&self, ops: Operands<'_>) {
        use std::arch::x86_64::*;
        let (k, c) = (self.rows, self.cols);
        let (x, init, out) = (ops.x.as_ptr(), ops.init.as_ptr(), ops.out.as_mut_ptr());
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for p in ops.panels {
            for sub in 0..PANEL / 16 {
                let col0 = p * PANEL + sub * 16;
                if col0 >= c {
                    break;
                }
                let masks: [__m256i; 2] = std::array::from_fn(|v| {
                    let live = c.saturating_sub(col0 + 8 * v).min(8) as i32;
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(live), lanes)
                });
                let mut acc = [[_mm256_setzero_ps(); 2]; N];
                for (j, accj) in acc.iter_mut().enumerate() {
                    for (v, a) in accj.iter_mut().enumerate() {
                        let at = init.wrapping_add(j * ops.init_stride + col0 + 8 * v);
                        // SAFETY: the mask limits the load to the `c` columns of row `j`;
                        // `wrapping_add` because a fully masked address may lie past the end.
                        *a = unsafe { _mm256_maskload_ps(at, masks[v]) };
                    }
                }
                // SAFETY: panel `p` holds `k` rows of PANEL floats; `sub * 16 + 16 <= PANEL`.
                let panel = unsafe { self.data.as_ptr().add(p * k * PANEL + sub * 16) };
                for kk in 0..k {
                    // SAFETY: `kk < k`, inside the panel.
                    let (w0, w1) = unsafe {
                        (
                            _mm256_loadu_ps(panel.add(kk * PANEL)),
                            _mm256_loadu_ps(panel.add(kk * PANEL + 8)),
                        )
                    };
                    for (j, accj) in acc.iter_mut().enumerate() {
                        // SAFETY: `j < N` and `kk < k`: inside `x` (the caller's contract).
                        let xb = _mm256_set1_ps(unsafe { *x.add(j * ops.x_stride + kk) });
                        accj[0] = _mm256_fmadd_ps(xb, w0, accj[0]);
                        accj[1] = _mm256_fmadd_ps(xb, w1, accj[1]);
                    }
                }
                for (j, accj) in acc.iter().enumerate() {
                    for (v, a) in accj.iter().enumerate() {
                        let at = out.wrapping_add(j * ops.out_stride + col0 + 8 * v);
                        // SAFETY: the mask limits the store to the `c` columns of row `j`.
                        unsafe { _mm256_maskstore_ps(at, masks[v], *a) };
                    }
                }
            }
        }
    }

    /// The product in plain loops, a row at a time (CPUs with neither AVX-512 nor AVX2):
    /// a panel row's 64 partial sums stay in registers and the compiler vectorises them.
    fn product_rows(&self, n: usize, ops: Operands<'_>) {
        let Operands {
            panels,
            x,
            x_stride,
            init,
            init_stride,
            out,
            out_stride,
        } = ops;
        let (k, c) = (self.rows, self.cols);
        for j in 0..n {
            let xj = &x[j * x_stride..][..k];
            for p in panels.clone() {
                let live = PANEL.min(c - p * PANEL);
                let mut acc = [0.0f32; PANEL];
                acc[..live].copy_from_slice(&init[j * init_stride + p * PANEL..][..live]);
                let panel = &self.data[p * k * PANEL..(p + 1) * k * PANEL];
                for (&xv, wrow) in xj.iter().zip(panel.chunks_exact(PANEL)) {
                    for (a, &wv) in acc.iter_mut().zip(wrow) {
                        *a += xv * wv;
                    }
                }
                out[j * out_stride + p * PANEL..][..live].copy_from_slice(&acc[..live]);
            }
        }
    }

    /// The product for `N` rows: per panel, `4 * N` accumulators over the whole
    /// reduction, each weight load feeding `N` FMAs.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and the slices are long enough for `N` rows at their strides
    /// (as [`PackedMatrix::product`] checks).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn product_avx512<const N: usize>(
        &self,
        Operands {
            panels,
            x,
            x_stride,
            init,
            init_stride,
            out,
            out_stride,
        }: Operands<'_>,
    ) {
        use std::arch::x86_64::*;
        const V: usize = PANEL / 16;
        let (k, c) = (self.rows, self.cols);
        let (x, init, out) = (x.as_ptr(), init.as_ptr(), out.as_mut_ptr());
        for p in panels {
            let col0 = p * PANEL;
            let masks: [__mmask16; V] = std::array::from_fn(|v| {
                let live = c.saturating_sub(col0 + v * 16).min(16);
                ((1u32 << live) - 1) as __mmask16
            });
            let mut acc = [[_mm512_setzero_ps(); V]; N];
            for (j, accj) in acc.iter_mut().enumerate() {
                for (v, a) in accj.iter_mut().enumerate() {
                    // SAFETY: the mask limits the load to the `c` columns of row `j`;
                    // `wrapping_add` because a fully masked address may lie past the end.
                    *a = unsafe {
                        _mm512_maskz_loadu_ps(
                            masks[v],
                            init.wrapping_add(j * init_stride + col0 + v * 16),
                        )
                    };
                }
            }
            // SAFETY: panel `p` holds `k` rows of PANEL floats.
            let panel = unsafe { self.data.as_ptr().add(p * k * PANEL) };
            for kk in 0..k {
                // SAFETY: `kk < k`, inside the panel.
                let wv: [__m512; V] = std::array::from_fn(|v| unsafe {
                    _mm512_loadu_ps(panel.add(kk * PANEL + v * 16))
                });
                for (j, accj) in acc.iter_mut().enumerate() {
                    // SAFETY: `j < N` and `kk < k`: inside `x` (the caller's contract).
                    let xb = _mm512_set1_ps(unsafe { *x.add(j * x_stride + kk) });
                    for v in 0..V {
                        accj[v] = _mm512_fmadd_ps(xb, wv[v], accj[v]);
                    }
                }
            }
            for (j, accj) in acc.iter().enumerate() {
                for (v, a) in accj.iter().enumerate() {
                    // SAFETY: the mask limits the store to the `c` columns of row `j`.
                    unsafe {
                        _mm512_mask_storeu_ps(
                            out.wrapping_add(j * out_stride + col0 + v * 16),
                            masks[v],
                            *a,
                        )
                    };
                }
            }
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

    /// Every kernel (the dispatched one and the fallbacks) against a plain triple loop in f64, for
    /// widths that are not whole panels and row counts that are not whole blocks.
    #[test]
    fn products_match_a_plain_loop() {
        let mut seed = 0x9e37_79b9_u64;
        for (m, k, c) in [
            (1, 3, 5),
            (7, 60, 512),
            (29, 40, 100),
            (130, 17, 64),
            (3, 70, 130),
        ] {
            let w = rand_vec(k * c, &mut seed);
            let x = rand_vec(m * k, &mut seed);
            let bias = rand_vec(c, &mut seed);
            let packed = PackedMatrix::new(&w, k, c);
            let expected: Vec<f64> = (0..m * c)
                .map(|i| {
                    let (r, col) = (i / c, i % c);
                    bias[col] as f64
                        + (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[kk * c + col] as f64)
                            .sum::<f64>()
                })
                .collect();
            let mut got = vec![0.0f32; m * c];
            for r in (0..m).step_by(MAX_ROWS) {
                let n = MAX_ROWS.min(m - r);
                let o = &mut got[r * c..];
                packed.product(packed.all(), n, &x[r * k..], k, &bias, 0, o, c);
            }
            let mut paths = vec![("portable", vec![0.0f32; m * c])];
            #[cfg(target_arch = "x86_64")]
            let fma = mica_kernels::Tier::hardware().has(mica_kernels::Tier::Avx2);
            #[cfg(not(target_arch = "x86_64"))]
            let fma = false;
            if fma {
                paths.push(("avx2", vec![0.0f32; m * c]));
            }
            for (name, buf) in &mut paths {
                for r in (0..m).step_by(MAX_ROWS) {
                    let n = MAX_ROWS.min(m - r);
                    let ops = Operands {
                        panels: 0..packed.panels,
                        x: &x[r * k..],
                        x_stride: k,
                        init: &bias,
                        init_stride: 0,
                        out: &mut buf[r * c..],
                        out_stride: c,
                    };
                    match *name {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: only pushed when the CPU has AVX2 and FMA.
                        "avx2" => unsafe { packed.product_fma(n, ops) },
                        _ => packed.product_rows(n, ops),
                    }
                }
            }
            for i in 0..m * c {
                assert!(
                    (got[i] as f64 - expected[i]).abs() < 1e-4,
                    "{m}x{k}x{c} at {i}"
                );
                for (name, buf) in &paths {
                    let d = (buf[i] as f64 - expected[i]).abs();
                    assert!(d < 1e-4, "{name} {m}x{k}x{c} at {i}");
                }
            }
        }
    }
}
