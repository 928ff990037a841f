//! The CPU kernels of a DDCNN block, written once over `mica_kernels::simd` vectors and run
//! at the CPU's tier (AVX-512, AVX2 + FMA, or portable arrays; `MICA_CPU_TIER` lowers it).
//!
//! - Spatial 3x3 convolutions as Winograd F(4x4, 3x3) (2.25 multiplies per output; points
//!   0, ±1, ±2, ∞) or F(2x2, 3x3) (4 per output, for the layers whose 36 transformed kernels
//!   would not stay in cache), or directly for the 3-channel input layer. Input transform,
//!   products and output transform are fused per block of tiles, so the transformed tiles
//!   stay in the core's L2; the products are `mica_kernels::panel_product`'s 6-row
//!   register blocks over kernels packed once at load time in panels of 64 output channels.
//! - Temporal (3,1,1) convolutions (batch norm folded in) with bias and ReLU, as a
//!   register-blocked kernel reading the three taps' frames in place.
//! - Both halves run a few frames at a time, the spatial outputs in a small ring of frames
//!   that stays in cache until the temporal taps have read it; the working buffers are
//!   recycled, so memory stays flat however long the video.
//!
//! The threads split the tiles, output rows or frames of each step. The arithmetic is the
//! PyTorch module's, rounded differently: F(4x4, 3x3) stays within ~1e-5 of the largest
//! output (the tests here check every tier against a direct convolution in f64).

use mica_kernels::simd::{Kernel, Simd, dispatch};
use mica_kernels::{SharedMut, Tier, panel_product};
use rayon::prelude::*;

/// Tiles per microkernel call (rows of the product).
const MR: usize = mica_kernels::MAX_ROWS;
/// Output channels per packed panel.
const NR: usize = mica_kernels::PANEL;
/// The products' initial values (they start from zero).
static ZEROS: [f32; NR] = [0.0; NR];
/// Bytes of transformed input tiles per block: with the products' buffer they stay in a
/// 1 MiB L2.
const V_BYTES: usize = 512 << 10;
/// Most tiles per block (bounds the products' buffer when there are few input channels).
const MAX_BLOCK: usize = 96;
/// [`MAX_BLOCK`] for F(4x4, 3x3) tiles (36 products each instead of 16).
const MAX_BLOCK_4: usize = 36;

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
    /// is not a multiple of 64 or `tile` is none of those (the caller keeps candle's ops).
    pub fn new(weight: &[f32], c_in: usize, c_out: usize, tile: usize) -> Option<PackedKernel> {
        if c_out == 0
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

/// A DDCNN block's convolutions at `tier`: `x` `[B * T, H, W, C_in]` (channels-last, flat)
/// through the four branches' spatial 3x3 convolutions (`spatial`, C_in -> 4 * 2F) and
/// their temporal ones with batch norm folded in (`temporal`, 4 * 2F -> 4F), then ReLU when
/// `relu`. The spatial outputs go to `y` and the block's `[B * T, H, W, 4F]` to `out`
/// (recycled allocations, returned in that order, possibly longer than their contents).
/// Frames go a few at a time through both halves, while the spatial outputs the temporal
/// taps read are still in the cache. `None` if the shapes do not fit.
#[allow(clippy::too_many_arguments)]
pub fn ddcnn(
    tier: Tier,
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
    if n == 0 || x.len() < n * p * c_in || c_mid != groups * 2 * f {
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
                tier,
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
        temporal_frames(
            tier,
            &y,
            ring,
            temporal,
            relu,
            time,
            p,
            done..ready,
            &mut out,
        );
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
/// `kernel` into `out` `[N, H, W, C_out]`, at `tier`.
fn conv3x3(
    tier: Tier,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    kernel: &PackedKernel,
    out: &mut [f32],
) {
    let (c_in, c_out) = (kernel.c_in, kernel.c_out);
    debug_assert_eq!(x.len(), n * h * w * c_in);
    debug_assert_eq!(out.len(), n * h * w * c_out);
    let side = kernel.tile;
    if side == 1 {
        direct(tier, x, h, w, kernel, out);
        return;
    }
    let products = (side + 2) * (side + 2);
    let (th, tw) = (h.div_ceil(side), w.div_ceil(side));
    let tiles = n * th * tw;
    let most = if side == 2 { MAX_BLOCK } else { MAX_BLOCK_4 };
    let block = (V_BYTES / (4 * products * c_in.max(1))).clamp(MR, most) / MR * MR;
    let dst = SharedMut::new(out);
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
            dispatch(
                tier,
                TileBlock {
                    x,
                    u: &kernel.data,
                    dst,
                    v,
                    m,
                    shape: &shape,
                    t0: b * block,
                    side,
                },
            );
        })
    });
}

/// The 3x3 convolution computed directly (27 multiplies per output and input channel, no
/// transforms): for few input channels, where Winograd's transforms and products' stores
/// outweigh its multiplies. One output row of one frame per task.
fn direct(tier: Tier, x: &[f32], h: usize, w: usize, kernel: &PackedKernel, out: &mut [f32]) {
    let c_in = kernel.c_in;
    let c_out = kernel.c_out;
    out.par_chunks_mut(w * c_out)
        .enumerate()
        .for_each_init(Vec::new, |rows, (row, dst)| {
            let (f, r) = (row / h, row % h);
            // The three input rows, zero-padded by one pixel each side.
            rows.clear();
            rows.resize(3 * (w + 2) * c_in, 0.0);
            for dr in 0..3 {
                let rr = r as isize + dr as isize - 1;
                if rr < 0 || rr >= h as isize {
                    continue;
                }
                let src = &x[(f * h + rr as usize) * w * c_in..][..w * c_in];
                rows[(dr * (w + 2) + 1) * c_in..][..w * c_in].copy_from_slice(src);
            }
            dispatch(
                tier,
                DirectRow {
                    rows,
                    w,
                    c_in,
                    c_out,
                    u: &kernel.data,
                    dst,
                },
            );
        });
}

/// One output row of [`direct`]: `rows` the three padded input rows, `u` the packed kernel.
struct DirectRow<'a> {
    rows: &'a [f32],
    w: usize,
    c_in: usize,
    c_out: usize,
    u: &'a [f32],
    dst: &'a mut [f32],
}

impl Kernel for DirectRow<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        assert!(self.rows.len() >= 3 * (self.w + 2) * self.c_in);
        assert!(
            self.u.len() >= 9 * self.c_in * self.c_out && self.dst.len() >= self.w * self.c_out
        );
        // SAFETY: the CPU supports S (the trait's contract); the slices' lengths were
        // checked just above.
        unsafe {
            if S::LANES >= 16 {
                direct_row::<S, 4>(self)
            } else {
                direct_row::<S, 2>(self)
            }
        }
    }
}

/// [`DirectRow`] with `NV` registers per row of the register block (`MR` pixels x
/// `NV * LANES` channels), the panel's 64 channels in as many passes as that takes.
#[inline(always)]
unsafe fn direct_row<S: Simd, const NV: usize>(job: DirectRow) {
    let DirectRow {
        rows,
        w,
        c_in,
        c_out,
        u,
        dst,
    } = job;
    let k = 9 * c_in;
    let rp = rows.as_ptr();
    let width = NV * S::LANES;
    // SAFETY: tap < 9 * c_in rows of 64 in the panel; pixels s0 + r + ds < w + 2 of padded
    // row dr (rows past `count` repeat the last one); stores to pixels s0 + r < w, channels
    // inside c_out (the caller checked the lengths); S is supported (the caller).
    unsafe {
        for nb in 0..c_out / NR {
            let panel = u.as_ptr().add(nb * k * NR);
            let mut col = 0;
            while col < NR {
                let mut s0 = 0;
                while s0 < w {
                    let count = (w - s0).min(MR);
                    let mut acc = [[S::zero(); NV]; MR];
                    for dr in 0..3 {
                        for ds in 0..3 {
                            for i in 0..c_in {
                                let tap = (dr * 3 + ds) * c_in + i;
                                let bp = panel.add(tap * NR + col);
                                let mut bv = [S::zero(); NV];
                                for (j, b) in bv.iter_mut().enumerate() {
                                    *b = S::load(bp.add(j * S::LANES));
                                }
                                for (r, accr) in acc.iter_mut().enumerate() {
                                    let px = s0 + r.min(count - 1) + ds;
                                    let av = S::splat(*rp.add((dr * (w + 2) + px) * c_in + i));
                                    for (cell, b) in accr.iter_mut().zip(bv) {
                                        *cell = S::fmadd(av, b, *cell);
                                    }
                                }
                            }
                        }
                    }
                    for (r, accr) in acc.iter().enumerate().take(count) {
                        for (j, cell) in accr.iter().enumerate() {
                            let off = (s0 + r) * c_out + nb * NR + col + j * S::LANES;
                            S::store(dst.as_mut_ptr().add(off), *cell);
                        }
                    }
                    s0 += MR;
                }
                col += width;
            }
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

/// Input transform, products and output transform of tiles `t0 .. t0 + block` of one
/// Winograd convolution (F(`side` x `side`, 3x3)), into the shared output `dst`.
struct TileBlock<'a> {
    x: &'a [f32],
    u: &'a [f32],
    dst: SharedMut<f32>,
    v: &'a mut [f32],
    m: &'a mut [f32],
    shape: &'a Shape,
    t0: usize,
    side: usize,
}

impl Kernel for TileBlock<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let s = self.shape;
        let products = (self.side + 2) * (self.side + 2);
        assert!(self.v.len() >= products * s.block * s.c_in);
        assert!(self.m.len() >= products * s.block * NR);
        assert!(self.u.len() >= products * s.c_in * s.c_out);
        assert!(self.x.len() >= s.tiles / (s.th * s.tw) * s.h * s.w * s.c_in);
        // SAFETY: S is supported (the trait's contract); the buffers hold what
        // `tile_block` reads and writes (checked above), and `dst` holds the output of
        // every frame of the tiles, whose pixels this task alone writes (`conv3x3` gives
        // each task its own tiles).
        unsafe {
            if self.side == 2 {
                tile_block::<S, 2, 16>(self)
            } else {
                tile_block::<S, 4, 36>(self)
            }
        }
    }
}

/// Pixel `(r, s)` of frame `f`, channels `c0 .. c0 + lanes`, or zeros outside the frame.
#[inline(always)]
unsafe fn load_pixel<S: Simd>(
    x: *const f32,
    s: &Shape,
    (f, r, c): (usize, isize, isize),
    c0: usize,
    lanes: usize,
) -> S::V {
    // SAFETY: an in-bounds pixel (checked here) of the caller's input; S is supported.
    unsafe {
        if r < 0 || c < 0 || r >= s.h as isize || c >= s.w as isize {
            return S::zero();
        }
        let p = x.add(((f * s.h + r as usize) * s.w + c as usize) * s.c_in + c0);
        if lanes == S::LANES {
            S::load(p)
        } else {
            S::load_partial(p, lanes)
        }
    }
}

/// [`TileBlock`] for F(N x N, 3x3) (N = 2 or 4, `T` = (N + 2)² products).
#[inline(always)]
// The transforms index across rows (`q[b][a]` for every b): a range loop says it plainest.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_block<S: Simd, const N: usize, const T: usize>(job: TileBlock) {
    const { assert!((N == 2 && T == 16) || (N == 4 && T == 36)) };
    let TileBlock {
        x,
        u,
        dst,
        v,
        m,
        shape: s,
        t0,
        ..
    } = job;
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
    // SAFETY (the whole body): S is supported; rows r < block of each matrix k in `v` and
    // `m`, channels below c_in, panels (k, nb) of the packed kernel and the output pixels
    // of this block's tiles are inside the buffers (`TileBlock::run` checked their sizes).
    unsafe {
        // Input transform: V[k][r][c] = (Bᵀ d B)[k] of tile t0 + r, LANES channels at a
        // time. The rows past `rows` (up to a multiple of MR) keep stale values whose
        // products are never stored.
        for r in 0..rows {
            let (f, r0, s0) = at(t0 + r);
            let mut c0 = 0;
            while c0 < c_in {
                let lanes = (c_in - c0).min(S::LANES);
                let px = |a: usize, b: usize| (f, (r0 + a) as isize - 1, (s0 + b) as isize - 1);
                let store = |k: usize, val: S::V| {
                    let p = vp.add((k * block + r) * c_in + c0);
                    if lanes == S::LANES {
                        S::store(p, val)
                    } else {
                        S::store_partial(p, val, lanes)
                    }
                };
                if N == 2 {
                    let mut d = [[S::zero(); 4]; 4];
                    for a in 0..4 {
                        for b in 0..4 {
                            d[a][b] = load_pixel::<S>(xp, s, px(a, b), c0, lanes);
                        }
                    }
                    let mut q = [[S::zero(); 4]; 4];
                    for b in 0..4 {
                        q[b] = input2::<S>([d[0][b], d[1][b], d[2][b], d[3][b]]);
                    }
                    // q[b][a] = (Bᵀ d)[a][b]; rows a of Bᵀ d times B.
                    for a in 0..4 {
                        let vals = input2::<S>([q[0][a], q[1][a], q[2][a], q[3][a]]);
                        for b in 0..4 {
                            store(a * 4 + b, vals[b]);
                        }
                    }
                } else {
                    let mut q = [[S::zero(); 6]; 6];
                    for b in 0..6 {
                        let mut col = [S::zero(); 6];
                        for a in 0..6 {
                            col[a] = load_pixel::<S>(xp, s, px(a, b), c0, lanes);
                        }
                        q[b] = input4::<S>(col);
                    }
                    for a in 0..6 {
                        let vals =
                            input4::<S>([q[0][a], q[1][a], q[2][a], q[3][a], q[4][a], q[5][a]]);
                        for b in 0..6 {
                            store(a * 6 + b, vals[b]);
                        }
                    }
                }
                c0 += S::LANES;
            }
        }
        let blocks = c_out / NR;
        for nb in 0..blocks {
            for k in 0..T {
                let mut r = 0;
                while r < padded {
                    let (a, b, c) = (
                        vp.add((k * block + r) * c_in),
                        u.as_ptr().add((k * blocks + nb) * c_in * NR),
                        mp.add((k * block + r) * NR),
                    );
                    panel_product::<S, MR>(b, c_in, (a, c_in), (ZEROS.as_ptr(), 0), (c, NR), NR);
                    r += MR;
                }
            }
            // Output transform: Y = Aᵀ M A per tile, LANES channels at a time.
            for r in 0..rows {
                let (f, r0, s0) = at(t0 + r);
                for j in 0..NR / S::LANES {
                    let q = |k: usize| S::load(mp.add((k * block + r) * NR + S::LANES * j));
                    let put = |a: usize, b: usize, y: S::V| {
                        let (rr, ss) = (r0 + a, s0 + b);
                        if rr < h && ss < w {
                            let off = ((f * h + rr) * w + ss) * c_out + nb * NR + S::LANES * j;
                            // Pixel (f, rr, ss) belongs to this tile alone.
                            S::store(dst.at(off), y);
                        }
                    };
                    if N == 2 {
                        // Columns of Aᵀ M, then each row of that times A.
                        let mut cols = [[S::zero(); 2]; 4];
                        for b in 0..4 {
                            cols[b] = output2::<S>([q(b), q(4 + b), q(8 + b), q(12 + b)]);
                        }
                        for a in 0..2 {
                            let ys = output2::<S>([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
                            for b in 0..2 {
                                put(a, b, ys[b]);
                            }
                        }
                    } else {
                        let mut cols = [[S::zero(); 4]; 6];
                        for b in 0..6 {
                            cols[b] = output4::<S>([
                                q(b),
                                q(6 + b),
                                q(12 + b),
                                q(18 + b),
                                q(24 + b),
                                q(30 + b),
                            ]);
                        }
                        for a in 0..4 {
                            let ys = output4::<S>([
                                cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a],
                                cols[5][a],
                            ]);
                            for b in 0..4 {
                                put(a, b, ys[b]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `Bᵀ d` of F(2x2, 3x3) for one column `d` of a 4x4 tile.
#[inline(always)]
unsafe fn input2<S: Simd>(d: [S::V; 4]) -> [S::V; 4] {
    // SAFETY: S is supported (the caller).
    unsafe {
        [
            S::sub(d[0], d[2]),
            S::add(d[1], d[2]),
            S::sub(d[2], d[1]),
            S::sub(d[1], d[3]),
        ]
    }
}

/// `Aᵀ m` of F(2x2, 3x3) for one column `m` of 4 products.
#[inline(always)]
unsafe fn output2<S: Simd>(m: [S::V; 4]) -> [S::V; 2] {
    // SAFETY: S is supported (the caller).
    unsafe {
        [
            S::add(S::add(m[0], m[1]), m[2]),
            S::sub(S::sub(m[1], m[2]), m[3]),
        ]
    }
}

/// `Bᵀ d` of F(4x4, 3x3) (interpolation points 0, ±1, ±2, ∞) for one column `d` of a 6x6
/// tile.
#[inline(always)]
unsafe fn input4<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    // SAFETY: S is supported (the caller).
    unsafe {
        let c = |v: f32| S::splat(v);
        let d12 = S::add(d[1], d[2]);
        let d34 = S::add(d[3], d[4]);
        let d1m2 = S::sub(d[1], d[2]);
        let d4m3 = S::sub(d[4], d[3]);
        let d4m2 = S::sub(d[4], d[2]);
        let d3m1 = S::sub(d[3], d[1]);
        [
            S::fmadd(c(4.0), d[0], S::fmadd(c(-5.0), d[2], d[4])),
            S::fmadd(c(-4.0), d12, d34),
            S::fmadd(c(4.0), d1m2, d4m3),
            S::fmadd(c(2.0), d3m1, d4m2),
            S::fmadd(c(-2.0), d3m1, d4m2),
            S::fmadd(c(4.0), d[1], S::fmadd(c(-5.0), d[3], d[5])),
        ]
    }
}

/// `Aᵀ m` of F(4x4, 3x3) for one column `m` of 6 products.
#[inline(always)]
unsafe fn output4<S: Simd>(m: [S::V; 6]) -> [S::V; 4] {
    // SAFETY: S is supported (the caller).
    unsafe {
        let c = |v: f32| S::splat(v);
        let s12 = S::add(m[1], m[2]);
        let d12 = S::sub(m[1], m[2]);
        let s34 = S::add(m[3], m[4]);
        let d34 = S::sub(m[3], m[4]);
        [
            S::add(S::add(m[0], s12), s34),
            S::fmadd(c(2.0), d34, d12),
            S::fmadd(c(4.0), s34, s12),
            S::add(S::fmadd(c(8.0), d34, d12), m[5]),
        ]
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
    /// `None` when `filters` is not 16, 32 or 64 or there are not four branches.
    pub fn new(
        weights: &[Vec<f32>],
        bias: &[f32],
        dilations: &[usize],
        filters: usize,
    ) -> Option<PackedTemporal> {
        let f = filters;
        let groups = weights.len();
        // The kernels' strides are constants for four branches of 16, 32 or 64 filters.
        if ![16, 32, 64].contains(&f)
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

/// The temporal half of a DDCNN block for output frames `frames`, at `tier`: `y`
/// `[ring, P, G * 2F]` (the branches' spatial outputs side by side, frame i in slot
/// i % ring) -> `out` `[B * T, P, G * F]`, `out[t] = bias + W0 y[t - d] + W1 y[t] + W2
/// y[t + d]` per branch (taps outside the window are zero), then ReLU when `relu`.
#[allow(clippy::too_many_arguments)]
fn temporal_frames(
    tier: Tier,
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
            let frame = first + i;
            dispatch(
                tier,
                TemporalFrame {
                    taps: Taps::new(y, ring, kernel, frame, time, p),
                    kernel,
                    relu,
                    p,
                    dst,
                },
            );
        });
}

/// Per branch, the taps of one output frame that fall inside its window: the first input
/// value of the branch at pixel 0 of the tap's frame, and the tap's weights.
struct Taps {
    taps: [[(*const f32, *const f32); 3]; 4],
    counts: [usize; 4],
}

impl Taps {
    fn new(
        y: &[f32],
        ring: usize,
        kernel: &PackedTemporal,
        frame: usize,
        time: usize,
        p: usize,
    ) -> Taps {
        let f = kernel.filters;
        let c = kernel.dilations.len() * 2 * f;
        let t = frame % time;
        let mut taps = [[(std::ptr::null::<f32>(), std::ptr::null::<f32>()); 3]; 4];
        let mut counts = [0; 4];
        for (g, &d) in kernel.dilations.iter().enumerate() {
            for (tap, src) in [(0, t.checked_sub(d)), (1, Some(t)), (2, Some(t + d))] {
                let Some(st) = src.filter(|&st| st < time) else {
                    continue;
                };
                let fr = frame - t + st;
                taps[g][counts[g]] = (
                    y[(fr % ring) * p * c + g * 2 * f..][..p * c - g * 2 * f].as_ptr(),
                    kernel.weights[((g * 3 + tap) * 2 * f) * f..][..2 * f * f].as_ptr(),
                );
                counts[g] += 1;
            }
        }
        Taps { taps, counts }
    }

    /// Branch `g`'s taps.
    fn of(&self, g: usize) -> &[(*const f32, *const f32)] {
        &self.taps[g][..self.counts[g]]
    }
}

/// One frame of [`temporal_frames`], every branch.
struct TemporalFrame<'a> {
    taps: Taps,
    kernel: &'a PackedTemporal,
    relu: bool,
    p: usize,
    dst: &'a mut [f32],
}

impl Kernel for TemporalFrame<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn run<S: Simd>(self) {
        let f = self.kernel.filters;
        assert!(self.dst.len() >= self.p * 4 * f && self.kernel.bias.len() >= 4 * f);
        // SAFETY: S is supported (the trait's contract); the taps point at inputs 2F wide
        // at stride 8F for pixels < p and at 2F x F weights (`Taps::new` sliced both), the
        // outputs are F wide at stride 4F (four branches: `PackedTemporal::new`), checked
        // above.
        unsafe {
            match (f, S::LANES >= 16) {
                (16, true) => temporal_rows::<S, 1, 24, 16>(self),
                (32, true) => temporal_rows::<S, 2, 12, 32>(self),
                (_, true) => temporal_rows::<S, 4, 6, 64>(self),
                (16, false) => temporal_rows::<S, 2, 6, 16>(self),
                (32, false) => temporal_rows::<S, 2, 6, 32>(self),
                (_, false) => temporal_rows::<S, 2, 6, 64>(self),
            }
        }
    }
}

/// `out[px][g F + o] = relu?(bias[g F + o] + Σ_taps Σ_{i < 2F} a_tap[px * 8F + i]
/// w_tap[i][o])` for every branch `g` and pixel `px < p`, `MR` pixels x `NV` registers of
/// outputs per register block, all branches of a block in turn while its inputs are in
/// the L1 cache (`F` a constant, so the rows' addresses are immediate offsets).
#[inline(always)]
unsafe fn temporal_rows<S: Simd, const NV: usize, const MR: usize, const F: usize>(
    job: TemporalFrame,
) {
    let TemporalFrame {
        taps,
        relu,
        p,
        dst,
        kernel,
    } = job;
    let out = dst.as_mut_ptr();
    let bias = kernel.bias.as_ptr();
    let width = NV * S::LANES;
    // SAFETY: the caller's bounds (see `TemporalFrame::run`).
    unsafe {
        let mut px = 0;
        while px < p {
            let whole = px + MR <= p;
            for g in 0..4 {
                let mut col = 0;
                while col < F {
                    let (o, b) = (out.add(g * F + col), bias.add(g * F + col));
                    if whole {
                        temporal_block::<S, NV, MR, F>(taps.of(g), px, col, o, b, relu);
                    } else {
                        temporal_block::<S, NV, 1, F>(taps.of(g), px, col, o, b, relu);
                    }
                    col += width;
                }
            }
            px += if whole { MR } else { 1 };
        }
    }
}

/// Pixels `px .. px + MR`, outputs `col .. col + NV * LANES` of one branch of
/// [`temporal_rows`] (`out` and `bias` already at the branch's column `col`).
#[inline(always)]
unsafe fn temporal_block<S: Simd, const NV: usize, const MR: usize, const F: usize>(
    taps: &[(*const f32, *const f32)],
    px: usize,
    col: usize,
    out: *mut f32,
    bias: *const f32,
    relu: bool,
) {
    let lda = 8 * F;
    let ldo = 4 * F;
    // SAFETY: the caller's bounds (see `TemporalFrame::run`).
    unsafe {
        let mut b0 = [S::zero(); NV];
        for (j, b) in b0.iter_mut().enumerate() {
            *b = S::load(bias.add(j * S::LANES));
        }
        let mut acc = [b0; MR];
        for &(a, w) in taps {
            let a = a.add(px * lda);
            let w = w.add(col);
            for i in 0..2 * F {
                let mut wv = [S::zero(); NV];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = S::load(w.add(i * F + j * S::LANES));
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av = S::splat(*a.add(r * lda + i));
                    for (cell, wj) in accr.iter_mut().zip(wv) {
                        *cell = S::fmadd(av, wj, *cell);
                    }
                }
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            for (j, cell) in accr.iter().enumerate() {
                let v = if relu {
                    S::max(*cell, S::zero())
                } else {
                    *cell
                };
                S::store(out.add((px + r) * ldo + j * S::LANES), v);
            }
        }
    }
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
            for (tile, tier) in [1, 2, 4]
                .into_iter()
                .flat_map(|tile| Tier::supported().map(move |tier| (tile, tier)))
            {
                let kernel = PackedKernel::new(&k, c_in, c_out, tile).expect("packs");
                let mut got = vec![f32::NAN; want.len()];
                conv3x3(tier, &x, n, h, w, &kernel, &mut got);
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
                eprintln!(
                    "{tier}: F({tile}x{tile}, 3x3), {n}x{h}x{w}x{c_in}: max error {:.1e} of max |y|",
                    worst / scale
                );
                // F(4x4, 3x3) rounds more than F(2x2, 3x3); both stay near f32 precision.
                assert!(
                    worst <= 1e-5 * scale,
                    "{tier}: tile {tile}, {n}x{h}x{w}x{c_in}: {worst} of {scale}"
                );
            }
        }
    }

    #[test]
    fn temporal_matches_reference() {
        let dilations = [1, 2, 4, 8];
        for (f, p, time) in [(16, 30, 12), (32, 13, 10), (64, 7, 9)] {
            let batch = 2;
            let n = batch * time;
            let c = 8 * f;
            let y = values(n * p * c, 3);
            let weights: Vec<Vec<f32>> = (0..4).map(|g| values(6 * f * f, 10 + g)).collect();
            let bias = values(4 * f, 4);
            let kernel = PackedTemporal::new(&weights, &bias, &dilations, f).expect("packs");
            for (relu, tier) in [false, true]
                .into_iter()
                .flat_map(|relu| Tier::supported().map(move |tier| (relu, tier)))
            {
                let mut got = vec![f32::NAN; n * p * 4 * f];
                temporal_frames(tier, &y, n, &kernel, relu, time, p, 0..n, &mut got);
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
                                assert!(
                                    (f64::from(g_val) - sum).abs() <= 1e-4,
                                    "{tier}: {g_val} vs {sum}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
