//! Attention on the CPU, fused per head: the encoder's self-attention and the
//! cross-attention of a decoder step.
//!
//! Done with whole-tensor ops, one layer of tiny.en writes, reads and rewrites a
//! `[heads, 1500, 1500]` score tensor (54 MB) three times, each a fresh allocation the
//! kernel must fault in. Here each task takes 128 queries of one head: their scores
//! (`128 x 1500`, 768 KB) stay in L2 from the `Q Kᵀ` product through the softmax to the
//! product with `V`, and q, k and v are read in place from the fused projection's output,
//! with no head split copies.
//!
//! A decoder step has a handful of query rows (the beams) per head against 1500 audio
//! positions. A GEMM would pack all of K and V for each head at every step; here K is
//! stored transposed (`[dh, 1500]`, once per window) so that both products are broadcasts
//! of one row's values times contiguous vectors of K or V, with no sums across lanes.

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use mica_kernels::SharedMut;

use super::ops;

/// Queries per task.
const QUERY_BLOCK: usize = 128;

thread_local! {
    /// Score scratch per rayon worker, reused across tasks and calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Scores of the step kernels, per worker.
    static STEP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One head's query and output rows in the cross-attention step, per worker.
    static STEP_ROWS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether these kernels apply (CPU, f32).
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The contiguous f32 data of a CPU tensor.
fn cpu_data<'a>(
    g: &'a candle_core::Storage,
    l: &candle_core::Layout,
    len: usize,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::Storage::Cpu(c) = g else {
        candle_core::bail!("attention: CPU tensors only")
    };
    Ok(&c.as_slice::<f32>()?[l.start_offset()..l.start_offset() + len])
}

/// Cross-attention of a decoder step: `q` `[items * n, 1, H * dh]` (the `n` rows of each
/// item, heads side by side, as the projection gives them), `kt` `[items, H, dh, T]` (keys
/// transposed) and `v` `[items, H, T, dh]`, to `[items * n, 1, H * dh]`.
pub fn cross_attention_step(q: &Tensor, kt: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let (items, heads, dh, t) = kt.dims4()?;
    let (rows, one, d) = q.dims3()?;
    if items == 0
        || one != 1
        || d != heads * dh
        || rows % items != 0
        || v.dims4()? != (items, heads, t, dh)
    {
        candle_core::bail!(
            "cross attention: q {:?}, kt {:?}, v {:?}",
            q.dims(),
            kt.dims(),
            v.dims()
        );
    }
    let n = rows / items;
    let (q, kt, v) = (q.contiguous()?, kt.contiguous()?, v.contiguous()?);
    let mut out = vec![0.0f32; rows * d];
    {
        let (qg, ql) = q.storage_and_layout();
        let (kg, kl) = kt.storage_and_layout();
        let (vg, vl) = v.storage_and_layout();
        let qs = cpu_data(&qg, ql, rows * d)?;
        let ks = cpu_data(&kg, kl, items * heads * dh * t)?;
        let vs = cpu_data(&vg, vl, items * heads * t * dh)?;
        let dst = SharedMut::new(&mut out);
        ks.par_chunks(dh * t)
            .zip(vs.par_chunks(t * dh))
            .enumerate()
            .for_each(|(task, (kh, vh))| {
                let (item, h) = (task / heads, task % heads);
                STEP_ROWS.with_borrow_mut(|(qh, oh)| {
                    // This head's columns of the item's rows, gathered and scattered back.
                    qh.clear();
                    for r in 0..n {
                        let at = (item * n + r) * d + h * dh;
                        qh.extend_from_slice(&qs[at..at + dh]);
                    }
                    oh.resize(n * dh, 0.0);
                    STEP.with_borrow_mut(|s| {
                        s.resize(n * t, 0.0);
                        let head = Head {
                            q: qh,
                            kt: kh,
                            v: vh,
                            n,
                            dh,
                            t,
                        };
                        step_head(&head, s, oh);
                    });
                    for (r, o) in oh.chunks_exact(dh).enumerate() {
                        // SAFETY: task (item, h) alone writes columns h*dh..(h+1)*dh of the
                        // item's rows, inside `out` ([rows, d]).
                        unsafe {
                            let at = dst.at((item * n + r) * d + h * dh);
                            std::ptr::copy_nonoverlapping(o.as_ptr(), at, dh);
                        }
                    }
                });
            });
    }
    Tensor::from_vec(out, (rows, 1, d), q.device())
}

/// Self-attention of a decoder step (one new position per row): `qkv` `[rows, 1, 3d]`
/// (the new position's fused projection, already appended to the caches), caches `[rows,
/// H, cap, dh]` with the first `len` positions valid, to `[rows, 1, d]`.
///
/// Replaces the head split and merge copies and two batched GEMMs of `rows x H` tiny
/// products per layer and step.
pub fn self_attention_step(
    qkv: &Tensor,
    kbuf: &Tensor,
    vbuf: &Tensor,
    len: usize,
) -> candle_core::Result<Tensor> {
    let (rows, t, d3) = qkv.dims3()?;
    let (kr, heads, cap, dh) = kbuf.dims4()?;
    let d = d3 / 3;
    if t != 1
        || kr != rows
        || heads * dh != d
        || len > cap
        || len == 0
        || vbuf.dims() != kbuf.dims()
    {
        candle_core::bail!(
            "self attention step: qkv {:?}, caches {:?} / {:?}, len {len}",
            qkv.dims(),
            kbuf.dims(),
            vbuf.dims()
        );
    }
    let qkv = qkv.contiguous()?;
    let mut out = vec![0.0f32; rows * d];
    {
        let (qg, ql) = qkv.storage_and_layout();
        let (kg, kl) = kbuf.storage_and_layout();
        let (vg, vl) = vbuf.storage_and_layout();
        if !kl.is_contiguous() || !vl.is_contiguous() {
            candle_core::bail!("self attention step: caches must be contiguous");
        }
        let qs = cpu_data(&qg, ql, rows * d3)?;
        let ks = cpu_data(&kg, kl, rows * heads * cap * dh)?;
        let vs = cpu_data(&vg, vl, rows * heads * cap * dh)?;
        out.par_chunks_mut(dh).enumerate().for_each(|(task, o)| {
            let (r, h) = (task / heads, task % heads);
            let q = &qs[r * d3 + h * dh..r * d3 + (h + 1) * dh];
            let base = (r * heads + h) * cap * dh;
            let k = &ks[base..base + len * dh];
            let v = &vs[base..base + len * dh];
            STEP.with_borrow_mut(|s| {
                s.resize(len, 0.0);
                // Scores come out as [len, 1]: one row, so no transpose is needed.
                ops::small_matmul_chunk(q, k, s, 1, dh);
                ops::softmax_rows_in_place(s, len);
                self_values(s, v, o, dh);
            });
        });
    }
    Tensor::from_vec(out, (rows, 1, d), qkv.device())
}

/// `o = Σ_j p[j] v[j]` over rows `v[j]` of `dh`.
fn self_values(p: &[f32], v: &[f32], o: &mut [f32], dh: usize) {
    #[cfg(target_arch = "x86_64")]
    if ops::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::self_values(p, v, o, dh) };
        return;
    }
    self_values_impl(p, v, o, dh)
}

#[inline(always)]
fn self_values_impl(p: &[f32], v: &[f32], o: &mut [f32], dh: usize) {
    if dh == 64 {
        // Every Whisper size: 8 independent vectors of accumulators.
        let mut acc = [0.0f32; 64];
        for (&pj, vj) in p.iter().zip(v.chunks_exact(64)) {
            for i in 0..64 {
                acc[i] = pj.mul_add(vj[i], acc[i]);
            }
        }
        o.copy_from_slice(&acc);
        return;
    }
    o.fill(0.0);
    for (&pj, vj) in p.iter().zip(v.chunks_exact(dh)) {
        for (a, &x) in o.iter_mut().zip(vj) {
            *a = pj.mul_add(x, *a);
        }
    }
}

/// One head's inputs to the step kernel: `q` `[n, dh]`, `kt` `[dh, t]`, `v` `[t, dh]`.
struct Head<'a> {
    q: &'a [f32],
    kt: &'a [f32],
    v: &'a [f32],
    n: usize,
    dh: usize,
    t: usize,
}

/// One head of [`cross_attention_step`]; `s` is `[n, t]` scratch, `o` `[n, dh]`.
fn step_head(h: &Head, s: &mut [f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if ops::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::step_head(h, s, o) };
        return;
    }
    step_head_impl(h, s, o)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    /// # Safety
    /// The CPU must have AVX2 and FMA (the body is safe code, compiled for them).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn step_head(h: &super::Head, s: &mut [f32], o: &mut [f32]) {
        super::step_head_impl(h, s, o)
    }

    /// # Safety
    /// As [`step_head`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn self_values(p: &[f32], v: &[f32], o: &mut [f32], dh: usize) {
        super::self_values_impl(p, v, o, dh)
    }
}

/// Keys per block of the score product: 8 AVX2 vectors, enough independent FMA chains to
/// cover the FMA latency.
const KEYS: usize = 64;
/// Output columns per block of the value product, done for two rows at once (8 chains).
const COLS: usize = 32;

/// Both products as broadcasts times contiguous vectors, so nothing is summed across
/// lanes: scores `s[r][j..j+64] += q[r][c] * kt[c][j..j+64]`, then
/// `o[r][c..c+32] += s[r][j] * v[j][c..c+32]` for two rows `r` at a time.
#[inline(always)]
fn step_head_impl(h: &Head, s: &mut [f32], o: &mut [f32]) {
    let &Head { q, kt, v, n, dh, t } = h;
    let full = t / KEYS * KEYS;
    for r in 0..n {
        let qr = &q[r * dh..(r + 1) * dh];
        let sr = &mut s[r * t..(r + 1) * t];
        for j0 in (0..full).step_by(KEYS) {
            let mut acc = [0.0f32; KEYS];
            for (c, &qc) in qr.iter().enumerate() {
                let k = &kt[c * t + j0..c * t + j0 + KEYS];
                for i in 0..KEYS {
                    acc[i] = qc.mul_add(k[i], acc[i]);
                }
            }
            sr[j0..j0 + KEYS].copy_from_slice(&acc);
        }
        for (j, sj) in sr.iter_mut().enumerate().skip(full) {
            *sj = qr
                .iter()
                .enumerate()
                .fold(0.0, |a, (c, &qc)| qc.mul_add(kt[c * t + j], a));
        }
    }
    ops::softmax_rows_in_place(s, t);
    let cfull = dh / COLS * COLS;
    let mut r = 0;
    while r < n {
        if r + 1 < n {
            values::<2>(s, v, o, r, dh, t, cfull);
            r += 2;
        } else {
            values::<1>(s, v, o, r, dh, t, cfull);
            r += 1;
        }
    }
    for r in 0..n {
        let sr = &s[r * t..(r + 1) * t];
        for c in cfull..dh {
            o[r * dh + c] = sr
                .iter()
                .enumerate()
                .fold(0.0, |a, (j, &p)| p.mul_add(v[j * dh + c], a));
        }
    }
}

/// `o[r..r+R][c..c+32] = Σ_j s[r..r+R][j] v[j][c..c+32]` for the column blocks below `cfull`.
#[inline(always)]
fn values<const R: usize>(
    s: &[f32],
    v: &[f32],
    o: &mut [f32],
    r: usize,
    dh: usize,
    t: usize,
    cfull: usize,
) {
    for c0 in (0..cfull).step_by(COLS) {
        let mut acc = [[0.0f32; COLS]; R];
        for j in 0..t {
            let vj = &v[j * dh + c0..j * dh + c0 + COLS];
            for (i, a) in acc.iter_mut().enumerate() {
                let p = s[(r + i) * t + j];
                for l in 0..COLS {
                    a[l] = p.mul_add(vj[l], a[l]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            o[(r + i) * dh + c0..(r + i) * dh + c0 + COLS].copy_from_slice(a);
        }
    }
}

/// `softmax(q kᵀ) v` per head from fused `qkv` `[B, T, 3d]` (the scale is already in q),
/// as `[B, T, d]`.
pub fn encoder_attention(qkv: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, d3) = qkv.dims3()?;
    let d = d3 / 3;
    if heads == 0 || d % heads != 0 || d3 != 3 * d {
        candle_core::bail!("encoder attention: width {d3} does not split into {heads} heads");
    }
    let dh = d / heads;
    let qkv = qkv.contiguous()?;
    let mut out = vec![0.0f32; b * t * d];
    {
        let (g, l) = qkv.storage_and_layout();
        let candle_core::Storage::Cpu(c) = &*g else {
            candle_core::bail!("encoder attention: CPU tensors only")
        };
        let src = &c.as_slice::<f32>()?[l.start_offset()..l.start_offset() + b * t * d3];
        let blocks = t.div_ceil(QUERY_BLOCK);
        let dst = SharedMut::new(&mut out);
        (0..b * heads * blocks).into_par_iter().for_each(|task| {
            let (item, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (h, blk) = (rest / blocks, rest % blocks);
            let q0 = blk * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(t - q0);
            let base = item * t * d3 + h * dh;
            SCORES.with_borrow_mut(|s| {
                s.resize(QUERY_BLOCK * t, 0.0);
                let s = &mut s[..rows * t];
                let (ld, ldo) = (d3 as isize, d as isize);
                // SAFETY: every pointer and stride below addresses `src` (rows q0..q0+rows
                // of q, all t rows of k and v, head h's dh columns), `s` (rows x t) or
                // this task's block of `out`; gemm reads and writes nothing else.
                unsafe {
                    // s = q kᵀ: q rows at stride 3d; kᵀ (dh x t) is k read by column.
                    gemm::gemm(
                        rows,
                        t,
                        dh,
                        s.as_mut_ptr(),
                        1,
                        t as isize,
                        false,
                        src.as_ptr().add(base + q0 * d3),
                        1,
                        ld,
                        src.as_ptr().add(base + d),
                        ld,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                ops::softmax_rows_in_place(s, t);
                // SAFETY: as above.
                unsafe {
                    gemm::gemm(
                        rows,
                        dh,
                        t,
                        dst.at((item * t + q0) * d + h * dh),
                        1,
                        ldo,
                        false,
                        s.as_ptr(),
                        1,
                        t as isize,
                        src.as_ptr().add(base + 2 * d),
                        1,
                        ld,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        });
    }
    Tensor::from_vec(out, (b, t, d), qkv.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// The inputs are unseeded unit normals with unscaled logits (|q.k| reaches ~40 at
    /// dh 64), and the two sides sum in different orders: f32 rounding of such logits
    /// moves outputs of magnitude ~4 by a few 1e-5 on unlucky draws. A wrong index or a
    /// missed key moves them by ~0.1 or more.
    const TOL: f32 = 1e-4;

    #[test]
    fn step_matches_whole_tensor_attention() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (items, heads, n, t, dh) = (3usize, 2usize, 5usize, 301usize, 40usize);
        let q = Tensor::randn(0f32, 1.0, (items, heads, n, dh), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (items, heads, t, dh), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (items, heads, t, dh), &dev)?;
        let kt = k.transpose(2, 3)?.contiguous()?;
        // The rows as the projection gives them: [items * n, 1, heads * dh].
        let q_rows = q
            .permute((0, 2, 1, 3))?
            .reshape((items * n, 1, heads * dh))?;
        let got = cross_attention_step(&q_rows, &kt, &v)?;
        let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let want = p
            .matmul(&v)?
            .permute((0, 2, 1, 3))?
            .reshape((items * n, 1, heads * dh))?;
        let err = max_abs(&got, &want)?;
        assert!(err < TOL, "max abs {err}");
        Ok(())
    }

    #[test]
    fn self_step_matches_whole_tensor_attention() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for dh in [64usize, 24] {
            let (rows, heads, cap, len) = (5usize, 3usize, 40usize, 17usize);
            let d = heads * dh;
            let qkv = Tensor::randn(0f32, 1.0, (rows, 1, 3 * d), &dev)?;
            let kbuf = Tensor::randn(0f32, 1.0, (rows, heads, cap, dh), &dev)?;
            let vbuf = Tensor::randn(0f32, 1.0, (rows, heads, cap, dh), &dev)?;
            let got = self_attention_step(&qkv, &kbuf, &vbuf, len)?;
            let q = qkv
                .narrow(2, 0, d)?
                .reshape((rows, 1, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = kbuf.narrow(2, 0, len)?.contiguous()?;
            let v = vbuf.narrow(2, 0, len)?.contiguous()?;
            let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
            let want = p.matmul(&v)?.transpose(1, 2)?.reshape((rows, 1, d))?;
            let err = max_abs(&got, &want)?;
            assert!(err < TOL, "dh {dh}: max abs {err}");
        }
        Ok(())
    }

    #[test]
    fn matches_whole_tensor_attention() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // 2 items, a partial last query block (150 = 128 + 22), 3 heads of 8.
        let (b, t, heads, dh) = (2usize, 150usize, 3usize, 8usize);
        let d = heads * dh;
        let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * d), &dev)?;
        let got = encoder_attention(&qkv, heads)?;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * d, d)?
                .reshape((b, t, heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let want = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let err = max_abs(&got, &want)?;
        assert!(err < TOL, "max abs {err}");
        Ok(())
    }
}
