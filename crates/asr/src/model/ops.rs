//! CPU kernels for the hot spots candle leaves scalar: softmax (a vectorised `exp`), GELU
//! (a vectorised `erf`), and the small-row matmul of a decoder step.
//!
//! candle's CPU softmax and `gelu_erf` call libm per element, which costs as much as the
//! encoder's attention GEMMs; and its GEMM packs the whole weight matrix even when only a
//! few rows (beams) multiply it, which made a 5-row step of the 51k-token output
//! projection 8x slower than one row. These kernels are plain loops that LLVM vectorises;
//! on x86-64 they are compiled a second time with AVX2 + FMA and picked at run time, so
//! the default (SSE2) build still gets 8-wide code. Any other device or dtype goes to
//! candle's own ops.

use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Shape, Tensor};
use mica_kernels::math::exp_neg;
use rayon::prelude::*;

/// Rows at or below which a linear layer uses [`small_matmul`] instead of candle's GEMM.
pub const SMALL_M: usize = 16;

/// Whether the AVX2 + FMA versions run here (the CPU's tier, `MICA_CPU_TIER` lowers it).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2_fma() -> bool {
    mica_kernels::Tier::current().has(mica_kernels::Tier::Avx2)
}

/// `erf(x)`, absolute error < 5e-7 (Abramowitz & Stegun 7.1.26 on `|x|`, sign restored).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_neg(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn softmax_rows_impl(src: &[f32], dst: &mut [f32], dim: usize) {
    dst.copy_from_slice(src);
    softmax_in_place_impl(dst, dim)
}

#[inline(always)]
fn softmax_in_place_impl(buf: &mut [f32], dim: usize) {
    for d in buf.chunks_exact_mut(dim) {
        let mut m = [f32::NEG_INFINITY; 8];
        let mut it = d.chunks_exact(8);
        for c in &mut it {
            for i in 0..8 {
                m[i] = m[i].max(c[i]);
            }
        }
        let mut max = it
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for v in m {
            max = max.max(v);
        }
        if max == f32::NEG_INFINITY {
            // A fully masked row: uniform, as torch gives NaN and that helps nobody.
            d.fill(1.0 / dim as f32);
            continue;
        }
        let mut acc = [0.0f32; 8];
        let mut dc = d.chunks_exact_mut(8);
        for o in &mut dc {
            for k in 0..8 {
                o[k] = exp_neg(o[k] - max);
                acc[k] += o[k];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for o in dc.into_remainder() {
            *o = exp_neg(*o - max);
            sum += *o;
        }
        let inv = 1.0 / sum;
        for o in d.iter_mut() {
            *o *= inv;
        }
    }
}

#[inline(always)]
fn sum_exp_impl(x: &[f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] += exp_neg(c[k] - max);
        }
    }
    let tail: f32 = it.remainder().iter().map(|&v| exp_neg(v - max)).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn gelu_impl(src: &[f32], dst: &mut [f32]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `out[r] = x[r0 + r] . wj` for `R` consecutive rows of `x`: each `W`-wide chunk of the
/// weight row is loaded once for all `R` rows, with `R * W / 8` independent accumulators
/// so the FMA latency is hidden.
#[inline(always)]
fn dot_rows<const R: usize, const W: usize, const FMA: bool>(
    x: &[f32],
    r0: usize,
    k: usize,
    wj: &[f32],
    out: &mut [f32],
) {
    let mut acc = [[0.0f32; W]; R];
    let full = k / W * W;
    for c in (0..full).step_by(W) {
        let wc = &wj[c..c + W];
        for (r, a) in acc.iter_mut().enumerate() {
            let xc = &x[(r0 + r) * k + c..(r0 + r) * k + c + W];
            for i in 0..W {
                a[i] = if FMA {
                    xc[i].mul_add(wc[i], a[i])
                } else {
                    a[i] + xc[i] * wc[i]
                };
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let mut s: f32 = a.iter().sum();
        let xr = &x[(r0 + r) * k..(r0 + r + 1) * k];
        for i in full..k {
            s += xr[i] * wj[i];
        }
        out[r] = s;
    }
}

/// `out[j * m + r] = x[r] . w[j]` for the columns `j` of one chunk (`out` is transposed).
#[inline(always)]
fn small_matmul_impl<const FMA: bool>(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize) {
    for (wj, oj) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        let mut r0 = 0;
        while r0 < m {
            let o = &mut oj[r0..];
            match m - r0 {
                1 => dot_rows::<1, 64, FMA>(x, r0, k, wj, o),
                2 => dot_rows::<2, 32, FMA>(x, r0, k, wj, o),
                3 => dot_rows::<3, 16, FMA>(x, r0, k, wj, o),
                _ => dot_rows::<4, 16, FMA>(x, r0, k, wj, o),
            }
            r0 += 4;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    // SAFETY (all of them): callers check `has_avx2_fma()` first; the bodies are safe code.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_rows(src: &[f32], dst: &mut [f32], dim: usize) {
        super::softmax_rows_impl(src, dst, dim)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_in_place(buf: &mut [f32], dim: usize) {
        super::softmax_in_place_impl(buf, dim)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_exp(x: &[f32], max: f32) -> f32 {
        super::sum_exp_impl(x, max)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu(src: &[f32], dst: &mut [f32]) {
        super::gelu_impl(src, dst)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn small_matmul(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize) {
        super::small_matmul_impl::<true>(x, w, out, m, k)
    }
}

/// `Σ exp(x - max)` for `max >= x` (the vocabulary-wide sums of the logit filters and
/// log-softmax of every decode step), vectorised; terms below `exp(-87)` count as that.
pub fn sum_exp(x: &[f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::sum_exp(x, max) };
    }
    sum_exp_impl(x, max)
}

/// Softmax over each `dim`-wide row of `buf`, in place.
pub fn softmax_rows_in_place(buf: &mut [f32], dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::softmax_in_place(buf, dim) };
        return;
    }
    softmax_in_place_impl(buf, dim)
}

fn softmax_rows(src: &[f32], dst: &mut [f32], dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::softmax_rows(src, dst, dim) };
        return;
    }
    softmax_rows_impl(src, dst, dim)
}

fn gelu_slice(src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::gelu(src, dst) };
        return;
    }
    gelu_impl(src, dst)
}

/// `out[j * m + r] = x[r] . w[j]` for `x` `[m, k]` and `w` `[n, k]` (output transposed).
pub(super) fn small_matmul_chunk(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::small_matmul(x, w, out, m, k) };
        return;
    }
    small_matmul_impl::<false>(x, w, out, m, k)
}

/// The contiguous f32 data of a CPU tensor's storage.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(&v[a..b])
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "mica-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, self.name())?;
        let dim = l.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0.0f32; src.len()];
        // About 32k elements per task: enough to amortise rayon, many tasks for balance.
        let rows = (32_768 / dim).max(1);
        dst.par_chunks_mut(rows * dim)
            .zip(src.par_chunks(rows * dim))
            .for_each(|(d, s)| softmax_rows(s, d, dim));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "mica-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, self.name())?;
        let mut dst = vec![0.0f32; src.len()];
        dst.par_chunks_mut(32_768)
            .zip(src.par_chunks(32_768))
            .for_each(|(d, s)| gelu_slice(s, d));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }
}

fn fast_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous()
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if fast_cpu(x) {
        x.apply_op1_no_bwd(&Softmax)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Exact (erf) GELU, as Whisper's MLPs use.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if fast_cpu(x) {
        x.apply_op1_no_bwd(&Gelu)
    } else {
        x.gelu_erf()
    }
}

/// `x [m, k] @ w[n, k]^T` for small `m` on the CPU: reads each weight row once for all `m`
/// rows (memory-bound, as a decoder step is), split over the output columns.
pub fn small_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if k != k2 {
        candle_core::bail!("small_matmul: x is [{m}, {k}], w is [{n}, {k2}]");
    }
    let x = x.contiguous()?;
    let xs = x.flatten_all()?;
    let (xg, xl) = xs.storage_and_layout();
    let (wg, wl) = w.storage_and_layout();
    let (candle_core::Storage::Cpu(xc), candle_core::Storage::Cpu(wc)) = (&*xg, &*wg) else {
        candle_core::bail!("small_matmul: CPU tensors only")
    };
    let xv = f32_slice(xc, xl, "small_matmul")?;
    let wv = f32_slice(wc, wl, "small_matmul")?;
    let mut out_t = vec![0.0f32; n * m];
    // 64 output columns per task (a 100 KB slice of a 384-wide weight).
    const COLS: usize = 64;
    out_t
        .par_chunks_mut(COLS * m)
        .zip(wv.par_chunks(COLS * k))
        .for_each(|(o, wchunk)| small_matmul_chunk(xv, wchunk, o, m, k));
    drop((xg, wg));
    let t = Tensor::from_vec(out_t, (n, m), x.device())?;
    if m == 1 {
        t.reshape((1, n))
    } else {
        t.t()?.contiguous()
    }
}

/// Whether [`small_matmul`] applies: CPU f32, few rows, contiguous `[n, k]` weights.
pub fn use_small_matmul(x: &Tensor, w: &Tensor, m: usize) -> bool {
    m <= SMALL_M
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && w.is_contiguous()
}

/// Beam reorder of a `[rows, H, cap, dh]` self-attention cache in place: row `i` takes
/// the first `len` positions of row `src[i]`. Copies only the rows that change and only
/// their filled positions, where `index_select` would allocate and copy the whole cache at
/// every step.
struct ReorderRows<'a> {
    src: &'a [u32],
    len: usize,
}

impl InplaceOp1 for ReorderRows<'_> {
    fn name(&self) -> &'static str {
        "mica-reorder-rows"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("reorder rows: f32 only")
        };
        let Some(off) = l.contiguous_offsets().map(|(a, _)| a) else {
            candle_core::bail!("reorder rows: contiguous cache only")
        };
        let (rows, heads, cap, dh) = l.shape().dims4()?;
        if self.src.len() != rows || self.len > cap {
            candle_core::bail!("reorder rows: {} sources for {rows} rows", self.src.len());
        }
        let (row, pos) = (heads * cap * dh, self.len * dh);
        // Sources are read before any row is written: keep copies of those that move.
        let mut saved: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, &from) in self.src.iter().enumerate() {
            let from = from as usize;
            if from != i && !saved.iter().any(|(r, _)| *r == from) {
                let mut copy = Vec::with_capacity(heads * pos);
                for h in 0..heads {
                    let at = off + from * row + h * cap * dh;
                    copy.extend_from_slice(&data[at..at + pos]);
                }
                saved.push((from, copy));
            }
        }
        for (i, &from) in self.src.iter().enumerate() {
            let from = from as usize;
            if from == i {
                continue;
            }
            let Some((_, copy)) = saved.iter().find(|(r, _)| *r == from) else {
                continue;
            };
            for h in 0..heads {
                let at = off + i * row + h * cap * dh;
                data[at..at + pos].copy_from_slice(&copy[h * pos..(h + 1) * pos]);
            }
        }
        Ok(())
    }
}

/// Reorders the rows of a `[rows, H, cap, dh]` cache (first `len` positions valid): in place
/// on the CPU (f32, contiguous), as a new tensor elsewhere.
pub fn reorder_rows(cache: &Tensor, src: &[u32], len: usize) -> candle_core::Result<Tensor> {
    if fast_cpu(cache) {
        cache.inplace_op1(&ReorderRows { src, len })?;
        return Ok(cache.clone());
    }
    let idx = Tensor::from_slice(src, src.len(), cache.device())?;
    cache.index_select(&idx, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst = 0.0f32;
        for i in 0..20_000 {
            let x = -87.0 * i as f32 / 20_000.0;
            let (a, b) = (exp_neg(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 5e-7, "exp relative error {worst}");
        let mut worst = 0.0f64;
        for i in -8000..8000 {
            let x = i as f64 / 1000.0;
            // erf via the libm-free complementary series is not in std: compare with
            // candle's gelu_erf through the identity erf(x) = 2 gelu(x sqrt2) / (x sqrt2) - 1.
            let e = erf(x as f32) as f64;
            worst = worst.max((e - erf_ref(x)).abs());
        }
        assert!(worst < 6e-7, "erf abs error {worst}");
    }

    /// erf by its Taylor series / continued fraction in f64 (reference only).
    fn erf_ref(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), accurate for |x| >= 3.
            let a = x.abs();
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / (f * std::f64::consts::PI.sqrt());
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn reorder_in_place_matches_index_select() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let cache = Tensor::randn(0f32, 1.0, (5, 2, 8, 3), &dev)?;
        let src = [1u32, 1, 0, 4, 2];
        let len = 6;
        let want = cache
            .index_select(&Tensor::new(&src, &dev)?, 0)?
            .narrow(2, 0, len)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let copy = cache.copy()?;
        let got = reorder_rows(&copy, &src, len)?
            .narrow(2, 0, len)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn ops_match_candle() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (7, 1500), &dev)? * 1.0)?;
        let d = (softmax_last_dim(&x)? - candle_nn::ops::softmax_last_dim(&x)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        // A few ulps: one ulp near 1.0 is 1.19e-7, and the inputs are unseeded.
        assert!(d < 5e-7, "softmax {d}");
        let g = (gelu(&x)? - x.gelu_erf()?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(g < 5e-6, "gelu {g}");
        for m in [1, 3, 5] {
            let a = Tensor::randn(0f32, 1.0, (m, 389), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (1000, 389), &dev)?;
            let d = (small_matmul(&a, &w)? - a.matmul(&w.t()?)?)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            // Sums of 389 products of magnitude ~20 in another order: f32 rounding alone
            // reaches ~1e-4 at the tail of 5,000 unseeded outputs.
            assert!(d < 1e-3, "small_matmul m={m}: {d}");
        }
        Ok(())
    }
}
