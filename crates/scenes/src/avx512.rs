//! AVX-512 kernels for a DDCNN block on x86-64 CPUs that have it (detected at run time;
//! elsewhere the portable `winograd` path runs).
//!
//! - Spatial 3x3 convolutions as Winograd F(4x4, 3x3) (2.25 multiplies per output; points
//!   0, ±1, ±2, ∞) or F(2x2, 3x3) (4 per output, for the layers whose 36 transformed kernels
//!   would not stay in cache), or directly for the 3-channel input layer. Input transform,
//!   products and output transform are fused per block of tiles, so the transformed tiles
//!   stay in the core's L2; the products use a 6 x 64 register-blocked microkernel over
//!   kernels packed once at load time.
//! - Temporal (3,1,1) convolutions (batch norm folded in) with bias and ReLU, as a
//!   register-blocked kernel reading the three taps' frames in place.
//! - Both halves run a few frames at a time, the spatial outputs in a small ring of frames
//!   that stays in cache until the temporal taps have read it.
//!
//! The threads split the tiles, output rows or frames of each step. The arithmetic is the
//! PyTorch module's, rounded differently: F(4x4, 3x3) stays within ~1e-5 of the largest
//! output (the tests here check it against a direct convolution in f64).

use rayon::prelude::*;

/// Tiles per microkernel call (rows of the product).
const MR: usize = 6;
/// Output channels per microkernel call (four 16-lane registers).
const NR: usize = 64;
/// Bytes of transformed input tiles per block: with the products' buffer they stay in a
/// 1 MiB L2.
const V_BYTES: usize = 512 << 10;
/// Most tiles per block (bounds the products' buffer when there are few input channels).
const MAX_BLOCK: usize = 96;
/// [`MAX_BLOCK`] for F(4x4, 3x3) tiles (36 products each instead of 16).
const MAX_BLOCK_4: usize = 36;

/// Whether this CPU runs the kernels here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A Winograd-transformed kernel packed for the microkernel: `[16][C_out / 64][C_in][64]`.
#[derive(Debug, Clone)]
pub struct PackedKernel {
    data: Vec<f32>,
    c_in: usize,
    c_out: usize,
    /// Outputs per tile side: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)).
    tile: usize,
}

impl PackedKernel {
    /// Packs `weight` (`[C_out, C_in, 3, 3]` flat) transformed for F(`tile` x `tile`, 3x3),
    /// `tile` 2 or 4, or as it is for the direct convolution, `tile` 1; `None` when `c_out`
    /// is not a multiple of 64, `tile` is none of those or the CPU lacks AVX-512 (the caller
    /// keeps the portable path).
    pub fn new(weight: &[f32], c_in: usize, c_out: usize, tile: usize) -> Option<PackedKernel> {
        if !available()
            || c_out == 0
            || !c_out.is_multiple_of(NR)
            || weight.len() != 9 * c_in * c_out
            || !(1..=4).contains(&tile)
            || tile == 3
        {
            return None;
        }
        let blocks = c_out / NR;
        if tile == 1 {
            // [C_out / 64][3 * 3 * C_in][64]: row (dr * 3 + ds) * C_in + i.
            let mut data = vec![0f32; weight.len()];
            for o in 0..c_out {
                for i in 0..c_in {
                    for tap in 0..9 {
                        let row = (o / NR) * 9 * c_in + tap * c_in + i;
                        data[row * NR + o % NR] = weight[(o * c_in + i) * 9 + tap];
                    }
                }
            }
            return Some(PackedKernel {
                data,
                c_in,
                c_out,
                tile,
            });
        }
        // G of F(2x2, 3x3) and of F(4x4, 3x3) (points 0, ±1, ±2, ∞), in f64 so that the
        // transformed kernel is the exact one rounded once.
        const G2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const G4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let g: &[[f64; 3]] = if tile == 2 { &G2 } else { &G4 };
        let side = tile + 2;
        let mut data = vec![0f32; side * side * c_in * c_out];
        for o in 0..c_out {
            for i in 0..c_in {
                let k = &weight[(o * c_in + i) * 9..][..9];
                for (a, ga) in g.iter().enumerate() {
                    for (b, gb) in g.iter().enumerate() {
                        let mut sum = 0f64;
                        for r in 0..3 {
                            for c in 0..3 {
                                sum += ga[r] * f64::from(k[r * 3 + c]) * gb[c];
                            }
                        }
                        let idx = (a * side + b) * blocks + o / NR;
                        data[(idx * c_in + i) * NR + o % NR] = sum as f32;
                    }
                }
            }
        }
        Some(PackedKernel {
            data,
            c_in,
            c_out,
            tile,
        })
    }
}

/// Pointer that rayon tasks write disjoint ranges through.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes the output pixels of its own tiles only.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// `buf` with at least `len` values, what it held left there (the kernels write every value
/// they read back).
fn sized(mut buf: Vec<f32>, len: usize) -> Vec<f32> {
    // Longer buffers keep their length: shortening and growing again would zero the tail.
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    buf
}

/// Bytes of spatial output computed per step of [`ddcnn`] (see `ring`).
const CHUNK_BYTES: usize = 4 << 20;

thread_local! {
    /// Each thread's transformed tiles and products (`tile_block`'s `v` and `m`).
    static TILES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A DDCNN block's convolutions: `x` `[B * T, H, W, C_in]` (channels-last, flat) through
/// the four branches' spatial 3x3 convolutions (`spatial`, C_in -> 4 * 2F) and their
/// temporal ones with batch norm folded in (`temporal`, 4 * 2F -> 4F), then ReLU when
/// `relu`. The spatial outputs go to `y` and the block's `[B * T, H, W, 4F]` to `out`
/// (recycled allocations, returned in that order, possibly longer than their contents). Frames go a few at a time through both
/// halves, while the spatial outputs the temporal taps read are still in the cache. `None`
/// if the shapes do not fit.
#[allow(clippy::too_many_arguments)]
pub fn ddcnn(
    x: &[f32],
    (h, w): (usize, usize),
    spatial: &PackedKernel,
    temporal: &PackedTemporal,
    relu: bool,
    batch: usize,
    time: usize,
    (y, out): (Vec<f32>, Vec<f32>),
) -> Option<(Vec<f32>, Vec<f32>)> {
    let n = batch * time;
    let p = h * w;
    let f = temporal.filters;
    let groups = temporal.dilations.len();
    let (c_in, c_mid) = (spatial.c_in, spatial.c_out);
    if !available() || n == 0 || x.len() < n * p * c_in || c_mid != groups * 2 * f {
        return None;
    }
    let x = &x[..n * p * c_in];
    let width = groups * f;
    let (chunk, ring) = ring(temporal, n, p, c_mid);
    let reach = temporal.dilations.iter().copied().max().unwrap_or(0);
    let mut y = sized(y, ring * p * c_mid);
    let mut out = sized(out, n * p * width);
    let mut done = 0;
    let mut start = 0;
    while done < n {
        if start < n {
            let end = (start + chunk).min(n);
            conv3x3(
                &x[start * p * c_in..end * p * c_in],
                end - start,
                h,
                w,
                spatial,
                &mut y[(start % ring) * p * c_mid..][..(end - start) * p * c_mid],
            );
            start = end;
        }
        // Frames whose last tap (reach frames on, or the end of its window) is computed.
        let mut ready = done;
        while ready < start && (ready + reach < start || (ready / time + 1) * time <= start) {
            ready += 1;
        }
        if start == n {
            ready = n;
        }
        temporal_frames(&y, ring, temporal, relu, time, p, done..ready, &mut out);
        done = ready;
    }
    Some((y, out))
}

/// Values of [`ddcnn`]'s spatial outputs (its `y`) for `n` frames of `p` pixels.
pub fn spatial_len(spatial: &PackedKernel, temporal: &PackedTemporal, n: usize, p: usize) -> usize {
    ring(temporal, n, p, spatial.c_out).1 * p * spatial.c_out
}

/// Frames of spatial output per step of [`ddcnn`] (at most `CHUNK_BYTES` of them, at least
/// 4), and frames in its ring of spatial outputs (frame i in slot i % ring): the chunk being
/// computed and the `reach` frames each side that the pending temporal taps read, a multiple
/// of the chunk so that a chunk's slots are contiguous. A few MiB used over and over stay in
/// the cache, where the whole window's outputs would not.
fn ring(temporal: &PackedTemporal, n: usize, p: usize, c_mid: usize) -> (usize, usize) {
    let chunk = (CHUNK_BYTES / (4 * p * c_mid).max(1)).max(4).min(n.max(1));
    let reach = temporal.dilations.iter().copied().max().unwrap_or(0);
    let ring = (chunk + 2 * reach + 1).div_ceil(chunk) * chunk;
    (chunk, ring.min(n.div_ceil(chunk) * chunk))
}

/// `x` `[N, H, W, C_in]` (channels-last, flat) convolved (3x3, stride 1, zero padding 1) with
/// `kernel` into `out` `[N, H, W, C_out]`.
fn conv3x3(x: &[f32], n: usize, h: usize, w: usize, kernel: &PackedKernel, out: &mut [f32]) {
    let (c_in, c_out) = (kernel.c_in, kernel.c_out);
    debug_assert_eq!(x.len(), n * h * w * c_in);
    debug_assert_eq!(out.len(), n * h * w * c_out);
    let side = kernel.tile;
    if side == 1 {
        direct(x, n, h, w, kernel, out);
        return;
    }
    let products = (side + 2) * (side + 2);
    let (th, tw) = (h.div_ceil(side), w.div_ceil(side));
    let tiles = n * th * tw;
    let most = if side == 2 { MAX_BLOCK } else { MAX_BLOCK_4 };
    let block = (V_BYTES / (4 * products * c_in.max(1))).clamp(MR, most) / MR * MR;
    let dst = Out(out.as_mut_ptr());
    let shape = Shape {
        h,
        w,
        th,
        tw,
        c_in,
        c_out,
        tiles,
        block,
    };
    (0..tiles.div_ceil(block)).into_par_iter().for_each(|b| {
        TILES.with_borrow_mut(|(v, m)| {
            v.resize(v.len().max(products * block * c_in), 0.0);
            m.resize(m.len().max(products * block * NR), 0.0);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected (`ddcnn`); `dst` holds n * h * w * c_out values
            // and this task writes only the pixels of tiles b * block.. (b + 1) * block; the
            // buffers are at least the sizes `tile_block` reads and writes.
            unsafe {
                if side == 2 {
                    tile_block::<2, 16>(x, &kernel.data, dst.get(), v, m, &shape, b * block);
                } else {
                    tile_block::<4, 36>(x, &kernel.data, dst.get(), v, m, &shape, b * block);
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (v, m, b, &dst, &shape);
        })
    });
}

/// The 3x3 convolution computed directly (27 multiplies per output and input channel, no
/// transforms): for few input channels, where Winograd's transforms and products' stores
/// outweigh its multiplies. One output row of one frame per task.
fn direct(x: &[f32], n: usize, h: usize, w: usize, kernel: &PackedKernel, out: &mut [f32]) {
    let c_in = kernel.c_in;
    let c_out = kernel.c_out;
    out.par_chunks_mut(w * c_out)
        .enumerate()
        .for_each(|(row, dst)| {
            let (f, r) = (row / h, row % h);
            // The three input rows, zero-padded by one pixel each side.
            let mut rows = vec![0f32; 3 * (w + 2) * c_in];
            for dr in 0..3 {
                let rr = r as isize + dr as isize - 1;
                if rr < 0 || rr >= h as isize {
                    continue;
                }
                let src = &x[(f * h + rr as usize) * w * c_in..][..w * c_in];
                rows[(dr * (w + 2) + 1) * c_in..][..w * c_in].copy_from_slice(src);
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected (`ddcnn`); `direct_row` reads `rows` (3 rows of
            // w + 2 pixels) and writes the w * c_out values of `dst`.
            unsafe {
                direct_row(&rows, w, c_in, c_out, &kernel.data, dst);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, dst, n);
        });
    debug_assert_eq!(out.len(), n * h * w * c_out);
}

/// One output row of [`direct`]: `rows` the three padded input rows, `u` the packed kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn direct_row(
    rows: &[f32],
    w: usize,
    c_in: usize,
    c_out: usize,
    u: &[f32],
    dst: &mut [f32],
) {
    let k = 9 * c_in;
    let rp = rows.as_ptr();
    for nb in 0..c_out / NR {
        let panel = u[nb * k * NR..][..k * NR].as_ptr();
        let mut s0 = 0;
        while s0 < w {
            let count = (w - s0).min(MR);
            let mut acc = [[_mm512_setzero_ps(); 4]; MR];
            for dr in 0..3 {
                for ds in 0..3 {
                    for i in 0..c_in {
                        let tap = (dr * 3 + ds) * c_in + i;
                        // SAFETY: tap < 9 * c_in rows of 64 in the panel; pixels s0 + r + ds
                        // < w + 2 of padded row dr (rows past `count` repeat the last one).
                        unsafe {
                            let bp = panel.add(tap * NR);
                            let bv: [__m512; 4] =
                                std::array::from_fn(|j| _mm512_loadu_ps(bp.add(16 * j)));
                            for (r, accr) in acc.iter_mut().enumerate() {
                                let px = s0 + r.min(count - 1) + ds;
                                let av = _mm512_set1_ps(*rp.add((dr * (w + 2) + px) * c_in + i));
                                for (cell, b) in accr.iter_mut().zip(bv) {
                                    *cell = _mm512_fmadd_ps(av, b, *cell);
                                }
                            }
                        }
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate().take(count) {
                for (j, cell) in accr.iter().enumerate() {
                    let off = (s0 + r) * c_out + nb * NR + 16 * j;
                    // SAFETY: pixel s0 + r < w of this row, channels inside c_out.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(off), *cell) };
                }
            }
            s0 += MR;
        }
    }
}

/// Sizes shared by the tasks of one convolution.
struct Shape {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    c_in: usize,
    c_out: usize,
    tiles: usize,
    block: usize,
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Input transform, products and output transform of tiles `t0 .. t0 + block`, Winograd
/// F(N x N, 3x3) (N = 2 or 4, `T` = (N + 2)² products).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
// The transforms index across rows (`q[b][a]` for every b): a range loop says it plainest.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_block<const N: usize, const T: usize>(
    x: &[f32],
    u: &[f32],
    dst: *mut f32,
    v: &mut [f32],
    m: &mut [f32],
    s: &Shape,
    t0: usize,
) {
    const { assert!((N == 2 && T == 16) || (N == 4 && T == 36)) };
    let (h, w, c_in, c_out, block) = (s.h, s.w, s.c_in, s.c_out, s.block);
    let rows = block.min(s.tiles - t0);
    let padded = rows.div_ceil(MR) * MR;
    let per_frame = s.th * s.tw;
    let xp = x.as_ptr();
    let vp = v.as_mut_ptr();
    let mp = m.as_mut_ptr();
    let at = |tile: usize| {
        let (f, rest) = (tile / per_frame, tile % per_frame);
        (f, N * (rest / s.tw), N * (rest % s.tw))
    };
    // Input transform: V[k][r][c] = (Bᵀ d B)[k] of tile t0 + r, 16 channels at a time. The
    // rows past `rows` (up to a multiple of MR) keep stale values whose products are never
    // stored.
    for r in 0..rows {
        let (f, r0, s0) = at(t0 + r);
        let mut c0 = 0;
        while c0 < c_in {
            let lanes = (c_in - c0).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            let load = |a: usize, b: usize| {
                let (rr, ss) = ((r0 + a) as isize - 1, (s0 + b) as isize - 1);
                if rr < 0 || ss < 0 || rr >= h as isize || ss >= w as isize {
                    _mm512_setzero_ps()
                } else {
                    let off = ((f * h + rr as usize) * w + ss as usize) * c_in + c0;
                    // SAFETY: an in-bounds pixel; masked lanes are not read.
                    unsafe { _mm512_maskz_loadu_ps(mask, xp.add(off)) }
                }
            };
            let store = |k: usize, val: __m512| {
                // SAFETY: row r < block of matrix k, channels c0 .. c0 + lanes <= c_in.
                unsafe { _mm512_mask_storeu_ps(vp.add((k * block + r) * c_in + c0), mask, val) };
            };
            if N == 2 {
                let d: [[__m512; 4]; 4] =
                    std::array::from_fn(|a| std::array::from_fn(|b| load(a, b)));
                let q: [[__m512; 4]; 4] =
                    std::array::from_fn(|b| input2([d[0][b], d[1][b], d[2][b], d[3][b]]));
                // q[b][a] = (Bᵀ d)[a][b]; rows a of Bᵀ d times B.
                for a in 0..4 {
                    let vals = input2([q[0][a], q[1][a], q[2][a], q[3][a]]);
                    for (b, val) in vals.into_iter().enumerate() {
                        store(a * 4 + b, val);
                    }
                }
            } else {
                let mut q = [[_mm512_setzero_ps(); 6]; 6];
                for (b, qb) in q.iter_mut().enumerate() {
                    *qb = input4(std::array::from_fn(|a| load(a, b)));
                }
                for a in 0..6 {
                    let vals = input4(std::array::from_fn(|b| q[b][a]));
                    for (b, val) in vals.into_iter().enumerate() {
                        store(a * 6 + b, val);
                    }
                }
            }
            c0 += 16;
        }
    }
    let blocks = c_out / NR;
    for nb in 0..blocks {
        for k in 0..T {
            let mut r = 0;
            while r < padded {
                // SAFETY: rows r .. r + MR <= block of matrix k in `v` and `m`, and panel
                // (k, nb) of the packed kernel (c_in rows of 64).
                unsafe {
                    micro(
                        c_in,
                        vp.add((k * block + r) * c_in),
                        c_in,
                        u.as_ptr().add((k * blocks + nb) * c_in * NR),
                        mp.add((k * block + r) * NR),
                    );
                }
                r += MR;
            }
        }
        // Output transform: Y = Aᵀ M A per tile, 16 channels at a time.
        for r in 0..rows {
            let (f, r0, s0) = at(t0 + r);
            for j in 0..NR / 16 {
                // SAFETY: row r < block of each matrix k in `m`.
                let q =
                    |k: usize| unsafe { _mm512_loadu_ps(mp.add((k * block + r) * NR + 16 * j)) };
                let put = |a: usize, b: usize, y: __m512| {
                    let (rr, ss) = (r0 + a, s0 + b);
                    if rr < h && ss < w {
                        let off = ((f * h + rr) * w + ss) * c_out + nb * NR + 16 * j;
                        // SAFETY: pixel (f, rr, ss) is inside the output and belongs to this
                        // tile alone.
                        unsafe { _mm512_storeu_ps(dst.add(off), y) };
                    }
                };
                if N == 2 {
                    // Columns of Aᵀ M, then each row of that times A.
                    let cols: [[__m512; 2]; 4] =
                        std::array::from_fn(|b| output2([q(b), q(4 + b), q(8 + b), q(12 + b)]));
                    for a in 0..2 {
                        let ys = output2([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
                        for (b, y) in ys.into_iter().enumerate() {
                            put(a, b, y);
                        }
                    }
                } else {
                    let cols: [[__m512; 4]; 6] =
                        std::array::from_fn(|b| output4(std::array::from_fn(|a| q(a * 6 + b))));
                    for a in 0..4 {
                        let ys = output4(std::array::from_fn(|b| cols[b][a]));
                        for (b, y) in ys.into_iter().enumerate() {
                            put(a, b, y);
                        }
                    }
                }
            }
        }
    }
}

/// `Bᵀ d` of F(2x2, 3x3) for one column `d` of a 4x4 tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn input2(d: [__m512; 4]) -> [__m512; 4] {
    [
        _mm512_sub_ps(d[0], d[2]),
        _mm512_add_ps(d[1], d[2]),
        _mm512_sub_ps(d[2], d[1]),
        _mm512_sub_ps(d[1], d[3]),
    ]
}

/// `Aᵀ m` of F(2x2, 3x3) for one column `m` of 4 products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn output2(m: [__m512; 4]) -> [__m512; 2] {
    [
        _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]),
        _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]),
    ]
}

/// `Bᵀ d` of F(4x4, 3x3) (interpolation points 0, ±1, ±2, ∞) for one column `d` of a 6x6
/// tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn input4(d: [__m512; 6]) -> [__m512; 6] {
    let c = |v: f32| _mm512_set1_ps(v);
    let d12 = _mm512_add_ps(d[1], d[2]);
    let d34 = _mm512_add_ps(d[3], d[4]);
    let d1m2 = _mm512_sub_ps(d[1], d[2]);
    let d4m3 = _mm512_sub_ps(d[4], d[3]);
    let d4m2 = _mm512_sub_ps(d[4], d[2]);
    let d3m1 = _mm512_sub_ps(d[3], d[1]);
    [
        _mm512_fmadd_ps(c(4.0), d[0], _mm512_fmadd_ps(c(-5.0), d[2], d[4])),
        _mm512_fmadd_ps(c(-4.0), d12, d34),
        _mm512_fmadd_ps(c(4.0), d1m2, d4m3),
        _mm512_fmadd_ps(c(2.0), d3m1, d4m2),
        _mm512_fmadd_ps(c(-2.0), d3m1, d4m2),
        _mm512_fmadd_ps(c(4.0), d[1], _mm512_fmadd_ps(c(-5.0), d[3], d[5])),
    ]
}

/// `Aᵀ m` of F(4x4, 3x3) for one column `m` of 6 products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn output4(m: [__m512; 6]) -> [__m512; 4] {
    let c = |v: f32| _mm512_set1_ps(v);
    let s12 = _mm512_add_ps(m[1], m[2]);
    let d12 = _mm512_sub_ps(m[1], m[2]);
    let s34 = _mm512_add_ps(m[3], m[4]);
    let d34 = _mm512_sub_ps(m[3], m[4]);
    [
        _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
        _mm512_fmadd_ps(c(2.0), d34, d12),
        _mm512_fmadd_ps(c(4.0), s34, s12),
        _mm512_add_ps(_mm512_fmadd_ps(c(8.0), d34, d12), m[5]),
    ]
}

/// `c[0..6][0..64] = Σ_i a[r * lda + i] * b[i * 64 + 0..64]`, `i < k`; `c` row stride 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn micro(k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32) {
    let mut acc = [[_mm512_setzero_ps(); 4]; MR];
    for i in 0..k {
        // SAFETY: the caller passes MR rows of at least k values and k rows of 64 in b.
        unsafe {
            let bp = b.add(i * NR);
            let bv = [
                _mm512_loadu_ps(bp),
                _mm512_loadu_ps(bp.add(16)),
                _mm512_loadu_ps(bp.add(32)),
                _mm512_loadu_ps(bp.add(48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + i));
                for (j, cell) in row.iter_mut().enumerate() {
                    *cell = _mm512_fmadd_ps(av, bv[j], *cell);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            // SAFETY: c holds MR rows of 64.
            unsafe { _mm512_storeu_ps(c.add(r * NR + 16 * j), *cell) };
        }
    }
}

/// The temporal (3,1,1) convolutions of a DDCNN block's branches with batch norm folded in,
/// packed for [`ddcnn`]: weights `[G][3][2F][F]` (branch, tap, input, output) and bias
/// `[G * F]`.
#[derive(Debug, Clone)]
pub struct PackedTemporal {
    weights: Vec<f32>,
    bias: Vec<f32>,
    filters: usize,
    dilations: Vec<usize>,
}

impl PackedTemporal {
    /// From per-branch `[2F, 3F]` weights (column `tap * F + o`) and the `[G * F]` bias;
    /// `None` when `filters` is not 16, 32 or 64 or the CPU lacks AVX-512.
    pub fn new(
        weights: &[Vec<f32>],
        bias: &[f32],
        dilations: &[usize],
        filters: usize,
    ) -> Option<PackedTemporal> {
        let f = filters;
        let groups = weights.len();
        // The kernels' strides are constants for four branches of 16, 32 or 64 filters.
        if !available()
            || ![16, 32, 64].contains(&f)
            || groups != 4
            || dilations.len() != groups
            || bias.len() != groups * f
            || weights.iter().any(|w| w.len() != 6 * f * f)
        {
            return None;
        }
        let mut packed = vec![0f32; groups * 6 * f * f];
        for (g, wt) in weights.iter().enumerate() {
            for tap in 0..3 {
                for i in 0..2 * f {
                    let src = &wt[i * 3 * f + tap * f..][..f];
                    packed[((g * 3 + tap) * 2 * f + i) * f..][..f].copy_from_slice(src);
                }
            }
        }
        Some(PackedTemporal {
            weights: packed,
            bias: bias.to_vec(),
            filters,
            dilations: dilations.to_vec(),
        })
    }
}

/// The temporal half of a DDCNN block for output frames `frames`: `y` `[ring, P, G * 2F]`
/// (the branches' spatial outputs side by side, frame i in slot i % ring) -> `out`
/// `[B * T, P, G * F]`, `out[t] = bias + W0 y[t - d] + W1 y[t] + W2 y[t + d]` per branch
/// (taps outside the window are zero), then ReLU when `relu`.
#[allow(clippy::too_many_arguments)]
fn temporal_frames(
    y: &[f32],
    ring: usize,
    kernel: &PackedTemporal,
    relu: bool,
    time: usize,
    p: usize,
    frames: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let width = kernel.dilations.len() * kernel.filters;
    let first = frames.start;
    out[frames.start * p * width..frames.end * p * width]
        .par_chunks_mut(p * width)
        .enumerate()
        .for_each(|(i, dst)| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected (`ddcnn`); `temporal_frame` reads frames of `y`
            // inside the window and writes `dst` (this frame's p * width outputs) only.
            unsafe {
                temporal_frame(y, ring, kernel, relu, first + i, time, p, dst);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (y, relu, first, i, time, p, dst);
        });
}

/// One frame of [`temporal_frames`], every branch, `MR` pixels at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn temporal_frame(
    y: &[f32],
    ring: usize,
    kernel: &PackedTemporal,
    relu: bool,
    frame: usize,
    time: usize,
    p: usize,
    dst: &mut [f32],
) {
    let f = kernel.filters;
    let groups = kernel.dilations.len();
    let c = groups * 2 * f;
    let width = groups * f;
    let t = frame % time;
    // Per branch: (first value of the branch's input at pixel 0 of each tap's frame, the
    // tap's weights), the taps inside the window only.
    let mut taps = [[(std::ptr::null::<f32>(), std::ptr::null::<f32>()); 3]; 4];
    let mut counts = [0; 4];
    for (g, &d) in kernel.dilations.iter().enumerate() {
        for (tap, src) in [(0, t.checked_sub(d)), (1, Some(t)), (2, Some(t + d))] {
            let Some(st) = src.filter(|&st| st < time) else {
                continue;
            };
            let fr = frame - t + st;
            taps[g][counts[g]] = (
                y[((fr % ring) * p) * c + g * 2 * f..].as_ptr(),
                kernel.weights[((g * 3 + tap) * 2 * f) * f..].as_ptr(),
            );
            counts[g] += 1;
        }
    }
    let out = dst.as_mut_ptr();
    let bias = kernel.bias.as_ptr();
    let taps: [&[(*const f32, *const f32)]; 4] = std::array::from_fn(|g| &taps[g][..counts[g]]);
    // SAFETY (all three): inputs 2F wide at stride c for pixels < p, weights 2F x F, outputs
    // F wide at stride `width` (four branches: `PackedTemporal::new`).
    unsafe {
        match f {
            16 => temporal_rows::<1, 24, 32, 128>(&taps, p, out, width, bias, relu),
            32 => temporal_rows::<2, 12, 64, 256>(&taps, p, out, width, bias, relu),
            _ => temporal_rows::<4, 6, 128, 512>(&taps, p, out, width, bias, relu),
        }
    }
}

/// `out[px][g F + 0 .. 16 NV] = relu?(bias[g F ..] + Σ_taps Σ_{i < K} a_tap[px * LDA + i]
/// w_tap[i][..])` for every branch `g` (its `taps`) and pixel `px < p`, `MR` pixels per
/// register block, all branches of a block in turn while its inputs are in the L1 cache
/// (the strides are constants so the rows' addresses are immediate offsets).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn temporal_rows<const NV: usize, const MR: usize, const K: usize, const LDA: usize>(
    taps: &[&[(*const f32, *const f32)]; 4],
    p: usize,
    out: *mut f32,
    ldo: usize,
    bias: *const f32,
    relu: bool,
) {
    let f = 16 * NV;
    // SAFETY: the caller's bounds (see `temporal_frame`).
    unsafe {
        let mut px = 0;
        while px + MR <= p {
            for (g, taps) in taps.iter().enumerate() {
                temporal_block::<NV, MR, K, LDA>(
                    taps,
                    px,
                    out.add(g * f),
                    ldo,
                    bias.add(g * f),
                    relu,
                );
            }
            px += MR;
        }
        while px < p {
            for (g, taps) in taps.iter().enumerate() {
                temporal_block::<NV, 1, K, LDA>(
                    taps,
                    px,
                    out.add(g * f),
                    ldo,
                    bias.add(g * f),
                    relu,
                );
            }
            px += 1;
        }
    }
}

/// Pixels `px .. px + MR` of [`temporal_rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn temporal_block<const NV: usize, const MR: usize, const K: usize, const LDA: usize>(
    taps: &[(*const f32, *const f32)],
    px: usize,
    out: *mut f32,
    ldo: usize,
    bias: *const f32,
    relu: bool,
) {
    let ldw = 16 * NV;
    // SAFETY: the caller's bounds (see `temporal_frame`).
    unsafe {
        let b0: [__m512; NV] = std::array::from_fn(|j| _mm512_loadu_ps(bias.add(16 * j)));
        let mut acc = [b0; MR];
        for &(a, w) in taps {
            let a = a.add(px * LDA);
            for i in 0..K {
                let wv: [__m512; NV] =
                    std::array::from_fn(|j| _mm512_loadu_ps(w.add(i * ldw + 16 * j)));
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * LDA + i));
                    for (cell, wj) in accr.iter_mut().zip(wv) {
                        *cell = _mm512_fmadd_ps(av, wj, *cell);
                    }
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (j, cell) in accr.iter().enumerate() {
                let v = if relu {
                    _mm512_max_ps(*cell, _mm512_setzero_ps())
                } else {
                    *cell
                };
                _mm512_storeu_ps(out.add((px + r) * ldo + 16 * j), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in -1..1.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Direct 3x3 convolution (zero padding 1) in f64, channels-last.
    fn direct(
        x: &[f32],
        (n, h, w, c_in): (usize, usize, usize, usize),
        k: &[f32],
        c_out: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; n * h * w * c_out];
        for f in 0..n {
            for r in 0..h {
                for s in 0..w {
                    for o in 0..c_out {
                        let mut sum = 0f64;
                        for dr in 0..3 {
                            for ds in 0..3 {
                                let (rr, ss) = ((r + dr) as isize - 1, (s + ds) as isize - 1);
                                if rr < 0 || ss < 0 || rr >= h as isize || ss >= w as isize {
                                    continue;
                                }
                                let px = ((f * h + rr as usize) * w + ss as usize) * c_in;
                                for i in 0..c_in {
                                    sum += f64::from(x[px + i])
                                        * f64::from(k[((o * c_in + i) * 3 + dr) * 3 + ds]);
                                }
                            }
                        }
                        out[((f * h + r) * w + s) * c_out + o] = sum;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn winograd_tiles_match_direct_convolution() {
        if !available() {
            return;
        }
        for (n, h, w, c_in, c_out) in [
            (2, 27, 48, 3, 64),
            (2, 7, 11, 2, 64),
            (3, 13, 24, 20, 128),
            (5, 6, 12, 64, 64),
        ] {
            let x = values(n * h * w * c_in, 1);
            let k = values(c_out * c_in * 9, 2);
            let want = direct(&x, (n, h, w, c_in), &k, c_out);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for tile in [1, 2, 4] {
                let kernel = PackedKernel::new(&k, c_in, c_out, tile).expect("packs");
                let mut got = vec![f32::NAN; want.len()];
                conv3x3(&x, n, h, w, &kernel, &mut got);
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
                eprintln!(
                    "F({tile}x{tile}, 3x3), {n}x{h}x{w}x{c_in}: max error {:.1e} of max |y|",
                    worst / scale
                );
                // F(4x4, 3x3) rounds more than F(2x2, 3x3); both stay near f32 precision.
                assert!(
                    worst <= 1e-5 * scale,
                    "tile {tile}, {n}x{h}x{w}x{c_in}: {worst} of {scale}"
                );
            }
        }
    }

    #[test]
    fn temporal_matches_reference() {
        if !available() {
            return;
        }
        let dilations = [1, 2, 4, 8];
        for (f, p, time) in [(16, 30, 12), (32, 13, 10), (64, 7, 9)] {
            let batch = 2;
            let n = batch * time;
            let c = 8 * f;
            let y = values(n * p * c, 3);
            let weights: Vec<Vec<f32>> = (0..4).map(|g| values(6 * f * f, 10 + g)).collect();
            let bias = values(4 * f, 4);
            let kernel = PackedTemporal::new(&weights, &bias, &dilations, f).expect("packs");
            for relu in [false, true] {
                let mut got = vec![f32::NAN; n * p * 4 * f];
                temporal_frames(&y, n, &kernel, relu, time, p, 0..n, &mut got);
                for frame in 0..n {
                    let t = frame % time;
                    for px in 0..p {
                        for g in 0..4 {
                            for o in 0..f {
                                let mut sum = f64::from(bias[g * f + o]);
                                let d = dilations[g];
                                for (tap, st) in
                                    [(0, t.checked_sub(d)), (1, Some(t)), (2, Some(t + d))]
                                {
                                    let Some(st) = st.filter(|&st| st < time) else {
                                        continue;
                                    };
                                    let row = ((frame - t + st) * p + px) * c + g * 2 * f;
                                    for i in 0..2 * f {
                                        sum += f64::from(y[row + i])
                                            * f64::from(weights[g][i * 3 * f + tap * f + o]);
                                    }
                                }
                                if relu {
                                    sum = sum.max(0.0);
                                }
                                let g_val = got[(frame * p + px) * 4 * f + g * f + o];
                                assert!((f64::from(g_val) - sum).abs() <= 1e-4, "{g_val} vs {sum}");
                            }
                        }
                    }
                }
            }
        }
    }
}
