//! Int8 matrix products for the CPU path of [`super::Precision::Q8_0`], in the manner of
//! CTranslate2's int8: weights quantized once per output row (symmetric), activations per
//! input row at run time, products summed exactly in i32, one f32 rescale at the end.
//!
//! On CPUs with AVX-512 VNNI the products are `vpdpbusd`: 64 multiply-adds per instruction,
//! four times the f32 FMA rate, and a quarter of the weight bytes to read in a decoder step.
//! `vpdpbusd` multiplies unsigned by signed bytes, so a row of activations is stored as
//! `q + 128` and `128 * Σ w` is taken off each column afterwards. With AVX2 (no VNNI) the
//! products are `vpmaddubsw` + `vpmaddwd` on `|q|` and the weights signed by `q`, as
//! CTranslate2 and oneDNN do there: `|q| <= 127` keeps each pair's sum under `vpmaddubsw`'s
//! i16 saturation. Other CPUs run the same integer arithmetic in portable code; every tier
//! gives identical results.
//!
//! Weights are packed in the order `vpdpbusd` consumes them: `[n / 16][k / 4][16][4]`, one
//! 64-byte vector holding 4 consecutive inputs of 16 output columns, so a broadcast of 4
//! activation bytes times one vector accumulates 16 outputs and no horizontal sums are
//! needed.

use candle_core::{DType, Tensor};
use mica_kernels::{SharedMut, Tier};
use rayon::prelude::*;

/// Output columns per packed panel (one 512-bit vector of i32).
const LANES: usize = 16;
/// Panels a micro-tile spans (64 output columns).
const PANELS: usize = 4;
/// Rows a micro-tile spans: 6 rows x 4 panels = 24 accumulators of the 32 vector registers.
const TILE_ROWS: usize = 6;
/// Rows per task when the product is large (the encoder): a task streams its rows past one
/// 64-column slice of the weights, which stays in L2.
const TASK_ROWS: usize = 96;

/// Whether int8 products beat the f32 GEMM on a compute-bound product at the current tier
/// (AVX2 and above: tiny.en's encoder window took 287-326 ms in int8 against 423 ms in f32
/// with the tier forced to AVX2, 284 ms with VNNI; `examples/model_speed`). The portable
/// tile is exact but no faster than f32 there, so it serves decoder steps only.
pub fn fast_int8() -> bool {
    Tier::current().has(Tier::Avx2)
}

/// `[n, k]` linear weights in int8 with one scale per output row, packed for the kernel,
/// plus an optional f32 bias applied in the same pass.
#[derive(Debug)]
pub struct Int8Weight {
    /// `[np / 16][kp / 4][16][4]`.
    packed: Vec<i8>,
    /// `[np]` per-row scales (zero past `n`).
    scale: Vec<f32>,
    /// `[np]` `128 * Σ_k w`: the offset of the unsigned activations.
    comp: Vec<i32>,
    /// `[np]` bias (zero when absent or past `n`).
    bias: Vec<f32>,
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4.
    kp: usize,
    /// `n` rounded up to a multiple of 16.
    np: usize,
}

impl Int8Weight {
    /// Quantizes `[n, k]` weights and an optional `[n]` bias.
    pub fn quantize(w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Int8Weight> {
        let (n, k) = w.dims2()?;
        if n == 0 || k == 0 {
            // A malformed checkpoint: no layer of a real one is empty.
            candle_core::bail!("int8 weight: empty [{n}, {k}] matrix");
        }
        let kp = k.div_ceil(4) * 4;
        let np = n.div_ceil(LANES) * LANES;
        let v = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut scale = vec![0.0f32; np];
        let mut comp = vec![0i32; np];
        let mut bias_v = vec![0.0f32; np];
        if let Some(b) = bias {
            let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if b.len() != n {
                candle_core::bail!("int8 weight: bias of {} for {n} outputs", b.len());
            }
            bias_v[..n].copy_from_slice(&b);
        }
        let mut packed = vec![0i8; np * kp];
        let mut q = vec![0i8; k];
        for (j, row) in v.chunks_exact(k).enumerate().take(n) {
            let amax = row.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            let inv = 1.0 / s;
            let mut sum = 0i32;
            for (d, &x) in q.iter_mut().zip(row) {
                *d = (x * inv).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(*d);
            }
            scale[j] = s;
            comp[j] = 128 * sum;
            let (panel, lane) = (j / LANES, j % LANES);
            let base = panel * kp * LANES;
            for (i, &qv) in q.iter().enumerate() {
                packed[base + (i / 4) * LANES * 4 + lane * 4 + i % 4] = qv;
            }
        }
        Ok(Int8Weight {
            packed,
            scale,
            comp,
            bias: bias_v,
            n,
            k,
            kp,
            np,
        })
    }

    /// The weights widened back to f32, `[n, k]`.
    #[cfg(test)]
    fn dequantize(&self) -> candle_core::Result<Tensor> {
        let mut v = vec![0.0f32; self.n * self.k];
        for (j, row) in v.chunks_exact_mut(self.k).enumerate().take(self.n) {
            let base = (j / LANES) * self.kp * LANES;
            for (i, d) in row.iter_mut().enumerate() {
                let q = self.packed[base + (i / 4) * LANES * 4 + (j % LANES) * 4 + i % 4];
                *d = f32::from(q) * self.scale[j];
            }
        }
        Tensor::from_vec(v, (self.n, self.k), &candle_core::Device::Cpu)
    }

    /// `x [m, k] @ w^T + bias`, `[m, n]` f32 (CPU `x`).
    pub fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!(
                "int8 matmul: x is [{m}, {k}], w is [{}, {}]",
                self.n,
                self.k
            );
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (xq, sx) = {
            let (g, l) = x.storage_and_layout();
            let candle_core::Storage::Cpu(c) = &*g else {
                candle_core::bail!("int8 matmul: CPU tensors only")
            };
            let xv = &c.as_slice::<f32>()?[l.start_offset()..l.start_offset() + m * k];
            quantize_rows(xv, m, k, self.kp)
        };
        let mut out = vec![0.0f32; m * self.n];
        self.product(&xq, &sx, m, &mut out);
        Tensor::from_vec(out, (m, self.n), x.device())
    }

    /// `out [m, n] = dequant(xq [m, kp] · w^T) + bias`, split over column slices (and row
    /// ranges when `m` is large) across the rayon pool.
    fn product(&self, xq: &[u8], sx: &[f32], m: usize, out: &mut [f32]) {
        let cols = LANES * PANELS;
        let col_tasks = self.np.div_ceil(cols);
        let row_tasks = m.div_ceil(TASK_ROWS);
        let out_ptr = SharedMut::new(out);
        let tier = Tier::current();
        (0..col_tasks * row_tasks).into_par_iter().for_each(|t| {
            let (rt, ct) = (t / col_tasks, t % col_tasks);
            let r0 = rt * TASK_ROWS;
            let r1 = (r0 + TASK_ROWS).min(m);
            let p0 = ct * PANELS;
            let p1 = (p0 + PANELS).min(self.np / LANES);
            let mut r = r0;
            while r < r1 {
                let rows = (r1 - r).min(TILE_ROWS);
                // SAFETY: tasks cover disjoint (row range, column slice) blocks of `out`,
                // and `tile` writes only rows r..r+rows, columns of panels p0..p1 below n.
                unsafe { self.tile(xq, sx, r, rows, p0, p1, out_ptr, tier) };
                r += rows;
            }
        });
    }

    /// One micro-tile: `rows` (<= 6) rows from `r`, panels `p0..p1` (<= 4), at `tier`.
    ///
    /// # Safety
    /// `out` is `[m, n]` with `r + rows <= m`, and no other task writes this tile's block.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        xq: &[u8],
        sx: &[f32],
        r: usize,
        rows: usize,
        p0: usize,
        p1: usize,
        out: SharedMut<f32>,
        tier: Tier,
    ) {
        let mut acc = [[0i32; LANES * PANELS]; TILE_ROWS];
        let x = &xq[r * self.kp..(r + rows) * self.kp];
        let w = &self.packed[p0 * self.kp * LANES..p1 * self.kp * LANES];
        let panels = p1 - p0;
        let comp = &self.comp[p0 * LANES..p1 * LANES];
        int8_tile(tier, x, w, comp, self.kp, rows, panels, &mut acc);
        let c0 = p0 * LANES;
        let c1 = (p1 * LANES).min(self.n);
        for (i, a) in acc.iter().enumerate().take(rows) {
            let s = sx[r + i];
            // SAFETY: row r + i < m and columns c0..c1 < n lie inside `out` ([m, n]).
            let dst = unsafe { out.slice((r + i) * self.n + c0, c1 - c0) };
            for (jj, d) in dst.iter_mut().enumerate() {
                let j = c0 + jj;
                *d = (a[jj] - self.comp[j]) as f32 * (self.scale[j] * s) + self.bias[j];
            }
        }
    }
}

/// Rows of `x [m, k]` to unsigned bytes `q + 128` (`[m, kp]`, padding at 128, i.e. zero)
/// with one scale per row.
fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![128u8; m * kp];
    let mut s = vec![0.0f32; m];
    let work = |(row, (qr, sr)): (&[f32], (&mut [u8], &mut f32))| {
        let amax = row.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
        let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        let inv = 1.0 / scale;
        for (d, &v) in qr.iter_mut().zip(row) {
            // Round to nearest with the 1.5 * 2^23 trick (vectorises, where f32::round
            // is a libm call on the baseline target), then shift into 1..=255.
            let r = ((v * inv).clamp(-127.0, 127.0) + 12_582_912.0) - 12_582_912.0;
            *d = (r as i32 + 128) as u8;
        }
        *sr = scale;
    };
    if m * k >= 1 << 16 {
        x.par_chunks(k)
            .zip(q.par_chunks_mut(kp).zip(s.par_iter_mut()))
            .for_each(work);
    } else {
        x.chunks(k)
            .zip(q.chunks_mut(kp).zip(s.iter_mut()))
            .for_each(work);
    }
    (q, s)
}

/// `acc[r][c] = Σ_i x[r][i] w[c][i]` (`x` the stored `q + 128` bytes, so each sum carries
/// the column's `comp` offset, which every tier reproduces) for `rows` rows and `panels`
/// panels of 16 columns, with the kernel of `tier` (lowered to what the CPU has).
#[allow(clippy::too_many_arguments)]
fn int8_tile(
    tier: Tier,
    x: &[u8],
    w: &[i8],
    comp: &[i32],
    kp: usize,
    rows: usize,
    panels: usize,
    acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
) {
    assert!(rows <= TILE_ROWS && panels <= PANELS);
    assert!(x.len() >= rows * kp && w.len() >= panels * kp * LANES && comp.len() >= panels * LANES);
    let tier = tier.min(Tier::hardware());
    #[cfg(target_arch = "x86_64")]
    {
        if tier.has(Tier::Vnni) {
            // SAFETY: the CPU has AVX-512F and VNNI; the slices' sizes were checked above.
            unsafe { vnni::tile(x, w, kp, rows, panels, acc) };
            return;
        }
        if tier.has(Tier::Avx2) {
            // SAFETY: the CPU has AVX2; the slices' sizes were checked above.
            unsafe { avx2::tile(x, w, comp, kp, rows, panels, acc) };
            return;
        }
    }
    let _ = (tier, comp);
    portable_tile(x, w, kp, rows, panels, acc);
}

/// The tile in portable code: the same sums as `vpdpbusd`, exactly.
#[inline(always)]
fn portable_tile(
    x: &[u8],
    w: &[i8],
    kp: usize,
    rows: usize,
    panels: usize,
    acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
) {
    for (r, a) in acc.iter_mut().enumerate().take(rows) {
        let xr = &x[r * kp..(r + 1) * kp];
        for p in 0..panels {
            let wp = &w[p * kp * LANES..(p + 1) * kp * LANES];
            let a = &mut a[p * LANES..(p + 1) * LANES];
            for (g, xs) in xr.chunks_exact(4).enumerate() {
                let wg = &wp[g * LANES * 4..(g + 1) * LANES * 4];
                for (l, al) in a.iter_mut().enumerate() {
                    let wl = &wg[l * 4..l * 4 + 4];
                    *al += xs
                        .iter()
                        .zip(wl)
                        .map(|(&u, &v)| i32::from(u) * i32::from(v))
                        .sum::<i32>();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, PANELS, TILE_ROWS};

    /// Rows of one register block: 4 rows x 2 registers (a panel's 16 columns) of i32
    /// accumulators, with the two weight registers, the activations and the constants,
    /// within AVX2's 16 registers.
    const BLOCK_ROWS: usize = 4;

    /// The tile panel by panel, `BLOCK_ROWS` rows at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2; `x` holds `rows` rows of `kp` bytes, `w` `panels` panels of
    /// `kp * 16` bytes and `comp` `panels * 16` offsets; `rows <= 6`, `panels <= 4`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile(
        x: &[u8],
        w: &[i8],
        comp: &[i32],
        kp: usize,
        rows: usize,
        panels: usize,
        acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
    ) {
        debug_assert!(x.len() >= rows * kp && w.len() >= panels * kp * LANES);
        for p in 0..panels {
            let mut r = 0;
            while r < rows {
                let n = (rows - r).min(BLOCK_ROWS);
                let (xr, wp) = (&x[r * kp..], &w[p * kp * LANES..]);
                let (cp, col) = (&comp[p * LANES..], p * LANES);
                // SAFETY (every arm): the caller's guarantees, for rows r.. and panel p.
                unsafe {
                    match n {
                        4 => block::<4>(xr, wp, cp, kp, &mut acc[r..], col),
                        3 => block::<3>(xr, wp, cp, kp, &mut acc[r..], col),
                        2 => block::<2>(xr, wp, cp, kp, &mut acc[r..], col),
                        _ => block::<1>(xr, wp, cp, kp, &mut acc[r..], col),
                    }
                }
                r += n;
            }
        }
    }

    /// `R` rows of one panel: per group of 4 inputs, two weight loads and per row a
    /// broadcast, `|q|`, and per register `vpsignb`, `vpmaddubsw`, `vpmaddwd`, `vpaddd`.
    /// The accumulators start at the columns' `comp` so the sums match `vpdpbusd`'s.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn block<const R: usize>(
        x: &[u8],
        w: &[i8],
        comp: &[i32],
        kp: usize,
        acc: &mut [[i32; LANES * PANELS]],
        col: usize,
    ) {
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let ones = _mm256_set1_epi16(1);
        // SAFETY: comp holds the panel's 16 offsets (the caller).
        let c = unsafe {
            [
                _mm256_loadu_si256(comp.as_ptr().cast()),
                _mm256_loadu_si256(comp.as_ptr().add(8).cast()),
            ]
        };
        let mut a = [c; R];
        for g in 0..kp / 4 {
            // SAFETY: group g of the panel lies inside `w` (kp / 4 groups of 64 bytes).
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(wp.add(g * 64).cast()),
                    _mm256_loadu_si256(wp.add(g * 64 + 32).cast()),
                )
            };
            for (r, ar) in a.iter_mut().enumerate() {
                // SAFETY: row r, bytes 4g..4g+4 lie inside `x` (r < R rows of kp).
                let xv = unsafe { (xp.add(r * kp + g * 4) as *const i32).read_unaligned() };
                // q + 128 back to q, four bytes broadcast to every column.
                let q = _mm256_set1_epi32(xv ^ 0x8080_8080_u32 as i32);
                let aq = _mm256_abs_epi8(q);
                let p0 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(w0, q));
                let p1 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(w1, q));
                ar[0] = _mm256_add_epi32(ar[0], _mm256_madd_epi16(p0, ones));
                ar[1] = _mm256_add_epi32(ar[1], _mm256_madd_epi16(p1, ones));
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (j, &v) in ar.iter().enumerate() {
                // SAFETY: 8 i32 at col + 8j lie inside the accumulator row of 64.
                unsafe { _mm256_storeu_si256(acc[r][col + 8 * j..].as_mut_ptr().cast(), v) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{LANES, PANELS, TILE_ROWS};

    /// Dispatches on the tile's shape so that each variant keeps its accumulators in
    /// registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 VNNI; `x` holds `rows` rows of `kp` bytes and
    /// `w` `panels` panels of `kp * 16` bytes.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn tile(
        x: &[u8],
        w: &[i8],
        kp: usize,
        rows: usize,
        panels: usize,
        acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
    ) {
        debug_assert!(x.len() >= rows * kp && w.len() >= panels * kp * LANES);
        // SAFETY (every arm): the caller's guarantees, passed on.
        unsafe {
            match (rows, panels) {
                (6, 4) => kernel::<6, 4>(x, w, kp, acc),
                (5, 4) => kernel::<5, 4>(x, w, kp, acc),
                (4, 4) => kernel::<4, 4>(x, w, kp, acc),
                (3, 4) => kernel::<3, 4>(x, w, kp, acc),
                (2, 4) => kernel::<2, 4>(x, w, kp, acc),
                (1, 4) => kernel::<1, 4>(x, w, kp, acc),
                (r, 3) => rows_dispatch::<3>(r, x, w, kp, acc),
                (r, 2) => rows_dispatch::<2>(r, x, w, kp, acc),
                (r, _) => rows_dispatch::<1>(r, x, w, kp, acc),
            }
        }
    }

    /// The row count dispatch of the edge panels.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn rows_dispatch<const P: usize>(
        rows: usize,
        x: &[u8],
        w: &[i8],
        kp: usize,
        acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
    ) {
        // SAFETY (every arm): the caller's guarantees, passed on.
        unsafe {
            match rows {
                6 => kernel::<6, P>(x, w, kp, acc),
                5 => kernel::<5, P>(x, w, kp, acc),
                4 => kernel::<4, P>(x, w, kp, acc),
                3 => kernel::<3, P>(x, w, kp, acc),
                2 => kernel::<2, P>(x, w, kp, acc),
                _ => kernel::<1, P>(x, w, kp, acc),
            }
        }
    }

    /// `R` rows by `P` panels: per group of 4 inputs, `P` weight loads, `R` broadcasts and
    /// `R * P` `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn kernel<const R: usize, const P: usize>(
        x: &[u8],
        w: &[i8],
        kp: usize,
        acc: &mut [[i32; LANES * PANELS]; TILE_ROWS],
    ) {
        let mut a = [[_mm512_setzero_si512(); P]; R];
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let panel = kp * LANES;
        for g in 0..kp / 4 {
            let mut wv = [_mm512_setzero_si512(); P];
            for (p, v) in wv.iter_mut().enumerate() {
                // SAFETY: panel p, group g lies inside `w` (p < P panels of kp * 16).
                *v = unsafe { _mm512_loadu_si512(wp.add(p * panel + g * LANES * 4).cast()) };
            }
            for (r, ar) in a.iter_mut().enumerate() {
                // SAFETY: row r, bytes 4g..4g+4 lie inside `x` (r < R rows of kp).
                let xv = unsafe { (xp.add(r * kp + g * 4) as *const i32).read_unaligned() };
                let xb = _mm512_set1_epi32(xv);
                for (ap, &v) in ar.iter_mut().zip(&wv) {
                    *ap = _mm512_dpbusd_epi32(*ap, xb, v);
                }
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (p, &v) in ar.iter().enumerate() {
                // SAFETY: 16 i32 at p * 16 lie inside the accumulator row of 64.
                unsafe { _mm512_storeu_si512(acc[r][p * LANES..].as_mut_ptr().cast(), v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic values in [-1, 1) (no RNG dependency, reproducible failures).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The exact integer result the kernels must give, from the unpacked quantized values.
    fn reference(w: &Int8Weight, x: &[f32], m: usize) -> Vec<f32> {
        let (xq, sx) = quantize_rows(x, m, w.k, w.kp);
        let deq = w.dequantize().unwrap().flatten_all().unwrap();
        let deq = deq.to_vec1::<f32>().unwrap();
        let mut out = vec![0.0f32; m * w.n];
        for r in 0..m {
            for j in 0..w.n {
                let mut acc = 0i64;
                for i in 0..w.k {
                    let q = (deq[j * w.k + i] / w.scale[j]).round() as i64;
                    acc += (i64::from(xq[r * w.kp + i]) - 128) * q;
                }
                out[r * w.n + j] = acc as f32 * (w.scale[j] * sx[r]) + w.bias[j];
            }
        }
        out
    }

    #[test]
    fn kernels_give_the_exact_integer_products() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Odd sizes: a partial panel (n % 16), a partial tile of panels, k % 4 != 0.
        for (n, k) in [(37usize, 389usize), (200, 64), (16, 7)] {
            let w = Tensor::from_vec(values(n * k, n as u64), (n, k), &dev)?;
            let b = Tensor::from_vec(values(n, 7), n, &dev)?;
            let q = Int8Weight::quantize(&w, Some(&b))?;
            for m in [1usize, 5, 7, 130] {
                let xv = values(m * k, m as u64 + 11);
                let x = Tensor::from_vec(xv.clone(), (m, k), &dev)?;
                let got = q.matmul(&x)?.flatten_all()?.to_vec1::<f32>()?;
                let want = reference(&q, &xv, m);
                for (g, w) in got.iter().zip(&want) {
                    // Same integers; only the final f32 rescale may round differently.
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
                }
                // And the quantized product stays close to the f32 one.
                let f = (x.matmul(&w.t()?)?.broadcast_add(&b))?;
                let err = (q.matmul(&x)? - f)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(err < 0.02 * (k as f32).sqrt(), "n={n} k={k} m={m}: {err}");
            }
        }
        Ok(())
    }

    /// Every tier this CPU runs gives the portable tile's integers, for every tile shape,
    /// on extreme values (weights and activations at ±127, where `vpmaddubsw` would
    /// saturate without the sign trick).
    #[test]
    fn every_tier_gives_the_same_integers() {
        let (n, k, m) = (70usize, 100usize, 9usize);
        let dev = Device::Cpu;
        let mut wv = values(n * k, 3);
        let mut xv = values(m * k, 5);
        for (i, v) in wv.iter_mut().enumerate().step_by(3) {
            *v = if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        for (i, v) in xv.iter_mut().enumerate().step_by(2) {
            *v = if i % 4 == 0 { 1.0 } else { -1.0 };
        }
        let w = Tensor::from_vec(wv, (n, k), &dev).unwrap();
        let q = Int8Weight::quantize(&w, None).unwrap();
        let (xq, _) = quantize_rows(&xv, m, k, q.kp);
        let tiers: Vec<Tier> = Tier::supported().collect();
        for rows in 1..=TILE_ROWS {
            for panels in 1..=PANELS.min(q.np / LANES) {
                let mut want = [[0i32; LANES * PANELS]; TILE_ROWS];
                let wv = &q.packed[..panels * q.kp * LANES];
                let comp = &q.comp[..panels * LANES];
                portable_tile(&xq, wv, q.kp, rows, panels, &mut want);
                for &tier in &tiers {
                    let mut got = [[0i32; LANES * PANELS]; TILE_ROWS];
                    int8_tile(tier, &xq, wv, comp, q.kp, rows, panels, &mut got);
                    assert_eq!(want, got, "{tier}: rows {rows} panels {panels}");
                }
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_weights() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::zeros((20, 33), DType::F32, &dev)?;
        let q = Int8Weight::quantize(&w, None)?;
        let x = Tensor::zeros((3, 33), DType::F32, &dev)?;
        let y = q.matmul(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(y.iter().all(|&v| v == 0.0));
        let empty = Tensor::zeros((0, 33), DType::F32, &dev)?;
        assert_eq!(q.matmul(&empty)?.dims(), &[0, 20]);
        assert!(Int8Weight::quantize(&Tensor::zeros((3, 0), DType::F32, &dev)?, None).is_err());
        assert!(Int8Weight::quantize(&Tensor::zeros((0, 3), DType::F32, &dev)?, None).is_err());
        Ok(())
    }
}
