//! 3x3 convolution (stride 1, zero padding 1) by Winograd's F(2x2, 3x3) algorithm for the
//! CPU, on channels-last frames: 16 multiplies per 2x2 outputs instead of 36, the products
//! done as 16 matrix multiplications (gemm), the transforms as adds over channel vectors.
//!
//! The portable CPU path (the `avx512` module's kernels replace it where the CPU has
//! AVX-512), with the fused temporal convolution and the residual + pooling pass that both
//! paths use. F(2x2, 3x3) only adds and halves, so its rounding stays at f32 level. GPUs
//! keep candle's `conv2d` (cuDNN).
//!
//! With `d` a 4x4 input tile and `g` a 3x3 kernel: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::ScenesError;

/// Bytes of transformed tiles (input and products) per round: about what the L2 caches and
/// a slice of L3 hold, while keeping the matrix products large.
const ROUND_BYTES: usize = 6 << 20;

/// `G` of F(2x2, 3x3).
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Kernel transform `G g Gᵀ` of `[C_out, C_in, 3, 3]` weights: `[16, C_in, C_out]` as a
/// flat vector (the right-hand sides of the 16 products).
pub fn transform_kernel(weight: &Tensor) -> Result<Vec<f32>, ScenesError> {
    let (c_out, c_in, kh, kw) = weight.dims4()?;
    if (kh, kw) != (3, 3) {
        return Err(ScenesError::InvalidOption(format!(
            "Winograd needs 3x3 kernels, not {kh}x{kw}"
        )));
    }
    let g = weight
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut u = vec![0f32; 16 * c_in * c_out];
    for o in 0..c_out {
        for i in 0..c_in {
            let k = &g[(o * c_in + i) * 9..][..9];
            // t = G g (4x3), then t Gᵀ (4x4).
            let mut t = [[0f32; 3]; 4];
            for (r, row) in G.iter().enumerate() {
                for c in 0..3 {
                    t[r][c] = row[0] * k[c] + row[1] * k[3 + c] + row[2] * k[6 + c];
                }
            }
            for (r, tr) in t.iter().enumerate() {
                for (c, col) in G.iter().enumerate() {
                    let v = tr[0] * col[0] + tr[1] * col[1] + tr[2] * col[2];
                    u[((r * 4 + c) * c_in + i) * c_out + o] = v;
                }
            }
        }
    }
    Ok(u)
}

/// Pointer that rayon tasks write disjoint ranges through.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a range of indices no other task writes (see the callers).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the allocation the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// `x` `[N, H, W, C_in]` (f32, CPU) convolved with the kernel transformed by
/// [`transform_kernel`] (`c_out` outputs), the output channels split into `groups` equal
/// channels-last tensors `[N, H * W, C_out / groups]`.
pub fn conv3x3(
    x: &Tensor,
    u: &[f32],
    c_out: usize,
    groups: usize,
) -> Result<Vec<Tensor>, ScenesError> {
    let (n, h, w, c_in) = x.dims4()?;
    if u.len() != 16 * c_in * c_out || groups == 0 || !c_out.is_multiple_of(groups) {
        return Err(ScenesError::InvalidOption(format!(
            "Winograd kernel of {} values does not fit {c_in} -> {c_out} channels in {groups} \
             groups",
            u.len()
        )));
    }
    let gw = c_out / groups;
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles_per_frame = th * tw;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    let mut outs: Vec<Vec<f32>> = (0..groups).map(|_| vec![0f32; n * plane * gw]).collect();
    let per_frame = tiles_per_frame * 16 * (c_in + c_out) * 4;
    let round = (ROUND_BYTES / per_frame.max(1)).clamp(1, n.max(1));
    let mut v = vec![0f32; 16 * round * tiles_per_frame * c_in];
    let mut m = vec![0f32; 16 * round * tiles_per_frame * c_out];
    let threads = rayon::current_num_threads();
    let zeros = vec![0f32; c_in];
    for start in (0..n).step_by(round) {
        let frames = round.min(n - start);
        let t = frames * tiles_per_frame;
        // Input transform: V[k, tile, :] = (Bᵀ d B)[k], one tile row of one frame per task.
        let vp = Out(v.as_mut_ptr());
        (0..frames * th).into_par_iter().for_each(|job| {
            let (f, i) = (job / th, job % th);
            let frame = &xs[(start + f) * plane * c_in..][..plane * c_in];
            let px = |r: isize, s: isize| -> &[f32] {
                if r < 0 || s < 0 || r >= h as isize || s >= w as isize {
                    &zeros
                } else {
                    &frame[(r as usize * w + s as usize) * c_in..][..c_in]
                }
            };
            for j in 0..tw {
                let (r0, s0) = (2 * i as isize - 1, 2 * j as isize - 1);
                let d: [[&[f32]; 4]; 4] = std::array::from_fn(|a| {
                    std::array::from_fn(|b| px(r0 + a as isize, s0 + b as isize))
                });
                let tile = f * tiles_per_frame + i * tw + j;
                // SAFETY: rows (k, tile) for this task's tiles are written by it alone, and
                // lie inside `v` (tile < t <= round * tiles_per_frame).
                let row = |k: usize| unsafe {
                    std::slice::from_raw_parts_mut(vp.at((k * t + tile) * c_in), c_in)
                };
                let rows: [&mut [f32]; 16] = std::array::from_fn(row);
                for c in 0..c_in {
                    // Bᵀ d: m[a][b].
                    let mut q = [[0f32; 4]; 4];
                    for b in 0..4 {
                        q[0][b] = d[0][b][c] - d[2][b][c];
                        q[1][b] = d[1][b][c] + d[2][b][c];
                        q[2][b] = d[2][b][c] - d[1][b][c];
                        q[3][b] = d[1][b][c] - d[3][b][c];
                    }
                    for a in 0..4 {
                        let r = q[a];
                        rows[a * 4][c] = r[0] - r[2];
                        rows[a * 4 + 1][c] = r[1] + r[2];
                        rows[a * 4 + 2][c] = r[2] - r[1];
                        rows[a * 4 + 3][c] = r[1] - r[3];
                    }
                }
            }
        });
        // Products: M[k] = V[k] (t x C_in) U[k] (C_in x C_out).
        for k in 0..16 {
            // SAFETY: the slices are in bounds: V[k] is t x c_in, U[k] c_in x c_out, M[k]
            // t x c_out, all row-major with the strides given.
            unsafe {
                gemm::gemm(
                    t,
                    c_out,
                    c_in,
                    m.as_mut_ptr().add(k * t * c_out),
                    1,
                    c_out as isize,
                    false,
                    v.as_ptr().add(k * t * c_in),
                    1,
                    c_in as isize,
                    u.as_ptr().add(k * c_in * c_out),
                    1,
                    c_out as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
            }
        }
        // Output transform: Y = Aᵀ M A, one tile row of one frame per task.
        let outp: Vec<Out> = outs.iter_mut().map(|o| Out(o.as_mut_ptr())).collect();
        let m = &m;
        (0..frames * th).into_par_iter().for_each(|job| {
            let (f, i) = (job / th, job % th);
            let mut acc = vec![0f32; 4 * c_out];
            for j in 0..tw {
                let tile = f * tiles_per_frame + i * tw + j;
                let q: [&[f32]; 16] =
                    std::array::from_fn(|k| &m[(k * t + tile) * c_out..][..c_out]);
                let (y00, rest) = acc.split_at_mut(c_out);
                let (y01, rest) = rest.split_at_mut(c_out);
                let (y10, y11) = rest.split_at_mut(c_out);
                for o in 0..c_out {
                    // Aᵀ q: two rows of four.
                    let r0 = [
                        q[0][o] + q[4][o] + q[8][o],
                        q[1][o] + q[5][o] + q[9][o],
                        q[2][o] + q[6][o] + q[10][o],
                        q[3][o] + q[7][o] + q[11][o],
                    ];
                    let r1 = [
                        q[4][o] - q[8][o] - q[12][o],
                        q[5][o] - q[9][o] - q[13][o],
                        q[6][o] - q[10][o] - q[14][o],
                        q[7][o] - q[11][o] - q[15][o],
                    ];
                    y00[o] = r0[0] + r0[1] + r0[2];
                    y01[o] = r0[1] - r0[2] - r0[3];
                    y10[o] = r1[0] + r1[1] + r1[2];
                    y11[o] = r1[1] - r1[2] - r1[3];
                }
                for (a, b, src) in [(0, 0, &*y00), (0, 1, &*y01), (1, 0, &*y10), (1, 1, &*y11)] {
                    let (r, s) = (2 * i + a, 2 * j + b);
                    if r >= h || s >= w {
                        continue;
                    }
                    let pixel = (start + f) * plane + r * w + s;
                    for (g, dst) in outp.iter().enumerate() {
                        // SAFETY: output pixel (frame, r, s) belongs to this task's tile row
                        // alone; the range is inside the group's n * plane * gw buffer.
                        let dst = unsafe { std::slice::from_raw_parts_mut(dst.at(pixel * gw), gw) };
                        dst.copy_from_slice(&src[g * gw..][..gw]);
                    }
                }
            }
        });
    }
    outs.into_iter()
        .map(|o| Ok(Tensor::from_vec(o, (n, plane, gw), &Device::Cpu)?))
        .collect()
}

/// The temporal half of a DDCNN block on the CPU, fused: for each branch `b` (dilation
/// `d_b`), `out[.., b*F + o] = bias + W0 y[t - d] + W1 y[t] + W2 y[t + d]` (zero outside the
/// window), then ReLU when `relu`. `y`: `[N, P, G * 2F]` flat (N = batch * time, P pixels,
/// the G branches' spatial outputs side by side), `weights`: G `[2F, 3F]`; returns
/// `[N, P, G * F]` as a flat vector.
#[allow(clippy::too_many_arguments)]
pub fn temporal(
    y: &[f32],
    weights: &[Vec<f32>],
    dilations: &[usize],
    bias: &[f32],
    relu: bool,
    batch: usize,
    time: usize,
    filters: usize,
) -> Result<Vec<f32>, ScenesError> {
    let f = filters;
    let groups = weights.len();
    let n = batch * time;
    let c = groups * 2 * f;
    if n == 0
        || c == 0
        || !y.len().is_multiple_of(n * c)
        || bias.len() != groups * f
        || dilations.len() != groups
        || weights.iter().any(|w| w.len() != 6 * f * f)
    {
        return Err(ScenesError::InvalidOption(format!(
            "temporal convolution shapes do not fit: {} values, {n} frames, {groups} groups \
             of {f}",
            y.len()
        )));
    }
    let p = y.len() / (n * c);
    let threads = rayon::current_num_threads();
    let rows = n * p;
    let mut zs = Vec::with_capacity(groups);
    for (g, wt) in weights.iter().enumerate() {
        let mut z = vec![0f32; rows * 3 * f];
        // SAFETY: y read as rows x 2F with row stride c from offset g * 2F (inside y), wt
        // 2F x 3F, z rows x 3F, row-major, all in bounds.
        unsafe {
            gemm::gemm(
                rows,
                3 * f,
                2 * f,
                z.as_mut_ptr(),
                1,
                3 * f as isize,
                false,
                y.as_ptr().add(g * 2 * f),
                1,
                c as isize,
                wt.as_ptr(),
                1,
                3 * f as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
        zs.push(z);
    }
    let width = groups * f;
    let mut out = vec![0f32; n * p * width];
    out.par_chunks_mut(p * width)
        .enumerate()
        .for_each(|(frame, dst)| {
            let t = frame % time;
            for (g, z) in zs.iter().enumerate() {
                let d = dilations[g];
                let row =
                    |fr: usize, px: usize, tap: usize| &z[((fr * p + px) * 3 + tap) * f..][..f];
                for px in 0..p {
                    let o = &mut dst[px * width + g * f..][..f];
                    let mid = row(frame, px, 1);
                    let b = &bias[g * f..][..f];
                    for k in 0..f {
                        o[k] = b[k] + mid[k];
                    }
                    if t >= d {
                        let past = row(frame - d, px, 0);
                        for k in 0..f {
                            o[k] += past[k];
                        }
                    }
                    if t + d < time {
                        let future = row(frame + d, px, 2);
                        for k in 0..f {
                            o[k] += future[k];
                        }
                    }
                    if relu {
                        for v in o.iter_mut() {
                            *v = v.max(0.0);
                        }
                    }
                }
            }
        });
    Ok(out)
}

/// The end of a stack on the CPU, fused: `relu(x) + shortcut`, then 2x2 average pooling
/// (odd last rows and columns dropped). `x`, `shortcut`: `[N, H, W, C]` flat.
pub fn residual_pool(
    x: &[f32],
    shortcut: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
) -> Vec<f32> {
    let (ph, pw) = (h / 2, w / 2);
    let mut out = vec![0f32; n * ph * pw * c];
    out.par_chunks_mut(ph * pw * c)
        .enumerate()
        .for_each(|(frame, dst)| {
            let base = frame * h * w * c;
            for i in 0..ph {
                for j in 0..pw {
                    let o = &mut dst[(i * pw + j) * c..][..c];
                    let at = |r: usize, s: usize| base + (r * w + s) * c;
                    let idx = [
                        at(2 * i, 2 * j),
                        at(2 * i, 2 * j + 1),
                        at(2 * i + 1, 2 * j),
                        at(2 * i + 1, 2 * j + 1),
                    ];
                    let v: [(&[f32], &[f32]); 4] = idx.map(|q| (&x[q..q + c], &shortcut[q..q + c]));
                    for (k, out) in o.iter_mut().enumerate() {
                        let e = |m: usize| v[m].0[k].max(0.0) + v[m].1[k];
                        *out = (((e(0) + e(1)) + e(2)) + e(3)) * 0.25;
                    }
                }
            }
        });
    out
}
