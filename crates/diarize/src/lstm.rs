//! One LSTM layer (torch `nn.LSTM` gate order i, f, g, o), shared by both networks.
//!
//! The input projection of every time step runs as one matrix product. The recurrence runs
//! as candle ops per step on accelerators; on the CPU it runs in host memory, one thread
//! per group of sequences (sequences are independent), because a chain of small candle ops
//! per step costs more than the arithmetic.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::DiarizeError;
use crate::packed::{MAX_ROWS, PackedMatrix, par_granules};

/// Sequences whose recurrences are updated together on the CPU: each panel of the
/// recurrent weights is loaded once for all of them.
const GROUP: usize = 4;

/// One direction of one LSTM layer.
#[derive(Debug, Clone)]
pub(crate) struct LstmLayer {
    /// `weight_ih^T`, `[input, 4 * hidden]`.
    w_ih: Tensor,
    /// `weight_hh^T`, `[hidden, 4 * hidden]`.
    w_hh: Tensor,
    /// `bias_ih + bias_hh`, `[4 * hidden]`.
    bias: Tensor,
    /// The same weights packed in host memory, on the CPU device only.
    host: Option<HostWeights>,
    hidden: usize,
}

/// [`LstmLayer`]'s weights for the CPU kernels.
#[derive(Debug, Clone)]
struct HostWeights {
    w_ih: PackedMatrix,
    w_hh: PackedMatrix,
    bias: Vec<f32>,
}

impl LstmLayer {
    /// Loads `weight_ih_{suffix}`, `weight_hh_{suffix}`, `bias_ih_{suffix}`, `bias_hh_{suffix}`.
    pub(crate) fn load(
        vb: &VarBuilder,
        model: &'static str,
        suffix: &str,
        input: usize,
        hidden: usize,
    ) -> Result<LstmLayer, DiarizeError> {
        let w_ih = get(
            vb,
            model,
            &format!("weight_ih_{suffix}"),
            &[4 * hidden, input],
        )?
        .t()?
        .contiguous()?;
        let w_hh = get(
            vb,
            model,
            &format!("weight_hh_{suffix}"),
            &[4 * hidden, hidden],
        )?
        .t()?
        .contiguous()?;
        let bias = (get(vb, model, &format!("bias_ih_{suffix}"), &[4 * hidden])?
            + get(vb, model, &format!("bias_hh_{suffix}"), &[4 * hidden])?)?;
        let host = match vb.device() {
            Device::Cpu => Some(HostWeights {
                w_ih: PackedMatrix::new(&w_ih.flatten_all()?.to_vec1()?, input, 4 * hidden),
                w_hh: PackedMatrix::new(&w_hh.flatten_all()?.to_vec1()?, hidden, 4 * hidden),
                bias: bias.to_vec1()?,
            }),
            _ => None,
        };
        Ok(LstmLayer {
            w_ih,
            w_hh,
            bias,
            host,
            hidden,
        })
    }

    /// The same layer without its CPU kernels: candle ops on any device.
    pub(crate) fn generic(&self) -> LstmLayer {
        LstmLayer {
            host: None,
            ..self.clone()
        }
    }

    /// `xs` `[B, T, input]` to the hidden states `[B, T, hidden]`, from a zero state.
    pub(crate) fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        match &self.host {
            Some(host) => {
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0.0f32; b * t * self.hidden];
                host.run(&x, t, false, &mut out, self.hidden, 0);
                Tensor::from_vec(out, (b, t, self.hidden), xs.device())
            }
            None => self.forward_ops(xs, false),
        }
    }

    /// Both directions of a bidirectional layer, `self` forward and `backward` from the
    /// last step to the first: `[B, T, input]` to `[B, T, 2 * hidden]` (forward states
    /// first, as torch concatenates them).
    pub(crate) fn bidirectional(
        &self,
        backward: &LstmLayer,
        xs: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        match (&self.host, &backward.host) {
            (Some(fwd), Some(bwd)) if self.hidden == backward.hidden => {
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                let stride = 2 * self.hidden;
                let mut out = vec![0.0f32; b * t * stride];
                fwd.run(&x, t, false, &mut out, stride, 0);
                bwd.run(&x, t, true, &mut out, stride, self.hidden);
                Tensor::from_vec(out, (b, t, stride), xs.device())
            }
            _ => self.bidirectional_ops(backward, xs),
        }
    }

    /// Both directions as candle ops in one recurrence (accelerators): the backward
    /// direction's inputs are reversed in time, so each step is one batched product and
    /// one set of gate ops for both, half the kernel launches of two recurrences.
    fn bidirectional_ops(&self, backward: &LstmLayer, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, input) = xs.dims3()?;
        let (hidden, h4) = (self.hidden, 4 * self.hidden);
        let rev = Tensor::from_vec((0..t as u32).rev().collect::<Vec<u32>>(), t, xs.device())?;
        let project = |layer: &LstmLayer| -> candle_core::Result<Tensor> {
            xs.reshape((b * t, input))?
                .matmul(&layer.w_ih)?
                .broadcast_add(&layer.bias)?
                .reshape((b, t, h4))
        };
        let xg = Tensor::stack(
            &[project(self)?, project(backward)?.index_select(&rev, 1)?],
            0,
        )?;
        let w_hh = Tensor::stack(&[&self.w_hh, &backward.w_hh], 0)?;
        let mut h = Tensor::zeros((2, b, hidden), DType::F32, xs.device())?;
        let mut c = h.clone();
        let mut outs = Vec::with_capacity(t);
        for step in 0..t {
            let gates = (xg.narrow(2, step, 1)?.squeeze(2)? + h.matmul(&w_hh)?)?;
            (h, c) = cell(&gates, &c, hidden)?;
            outs.push(h.clone());
        }
        let out = Tensor::stack(&outs, 2)?;
        let fwd = out.get(0)?;
        let bwd = out.get(1)?.index_select(&rev, 1)?;
        Tensor::cat(&[fwd, bwd], 2)
    }

    /// The layer as candle ops, one step at a time (accelerators); `reverse` runs from
    /// the last step to the first, still writing step t's state at index t.
    fn forward_ops(&self, xs: &Tensor, reverse: bool) -> candle_core::Result<Tensor> {
        let (b, t, input) = xs.dims3()?;
        let h4 = 4 * self.hidden;
        let xg = xs
            .reshape((b * t, input))?
            .matmul(&self.w_ih)?
            .broadcast_add(&self.bias)?
            .reshape((b, t, h4))?;
        let mut h = Tensor::zeros((b, self.hidden), DType::F32, xs.device())?;
        let mut c = h.clone();
        let mut outs = vec![None; t];
        for step in 0..t {
            let at = if reverse { t - 1 - step } else { step };
            let gates = (xg.narrow(1, at, 1)?.squeeze(1)? + h.matmul(&self.w_hh)?)?;
            (h, c) = cell(&gates, &c, self.hidden)?;
            outs[at] = Some(h.clone());
        }
        let outs: Vec<Tensor> = outs.into_iter().flatten().collect();
        Tensor::stack(&outs, 1)
    }
}

impl HostWeights {
    /// `x` `[B, T, input]` through this direction, into `out` at `stride` and `offset`
    /// (see [`recur_host`]).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &[f32],
        t: usize,
        reverse: bool,
        out: &mut [f32],
        stride: usize,
        offset: usize,
    ) {
        let inputs = Inputs {
            x,
            w: &self.w_ih,
            bias: &self.bias,
        };
        let chunk = CHUNK_FLOATS;
        recur_host(&inputs, &self.w_hh, t, reverse, chunk, out, stride, offset);
    }
}

/// Gate nonlinearities on `[B, 4 * hidden]` pre-activations; returns the new `(h, c)`.
fn cell(gates: &Tensor, c: &Tensor, hidden: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let sig = candle_nn::ops::sigmoid(gates)?;
    let i = sig.narrow(D::Minus1, 0, hidden)?;
    let f = sig.narrow(D::Minus1, hidden, hidden)?;
    let o = sig.narrow(D::Minus1, 3 * hidden, hidden)?;
    let g = gates.narrow(D::Minus1, 2 * hidden, hidden)?.tanh()?;
    let c = ((f * c)? + (i * g)?)?;
    let h = (o * c.tanh()?)?;
    Ok((h, c))
}

/// A layer's inputs `[B, T, input]` and their projection to gate pre-activations
/// (`x · w + bias`).
struct Inputs<'a> {
    x: &'a [f32],
    w: &'a PackedMatrix,
    bias: &'a [f32],
}

/// Floats of input gates a thread keeps per chunk of time steps: the projection runs a
/// chunk ahead of the recurrence so its output is read back from cache (the whole
/// `[B, T, 4H]` buffer is tens of MB, and per-item time grew with the batch without this).
const CHUNK_FLOATS: usize = 96 * 1024;

/// The recurrence in host memory: step t of sequence j goes to
/// `out[(j * t_len + t) * stride + offset..][..H]` (`out` holds the `B` sequences).
/// Sequences are split evenly over threads, then in groups of [`GROUP`]; each thread
/// projects its inputs a chunk of steps at a time (about `chunk_floats` gate values), just
/// ahead of the recurrence.
#[allow(clippy::too_many_arguments)]
fn recur_host(
    inputs: &Inputs<'_>,
    w: &PackedMatrix,
    t: usize,
    reverse: bool,
    chunk_floats: usize,
    out: &mut [f32],
    stride: usize,
    offset: usize,
) {
    let hidden = w.rows();
    let h4 = w.cols();
    let input = inputs.w.rows();
    let per_seq = t * stride;
    par_granules(out, per_seq, |at_float, run| {
        // All of this thread's sequences advance together, panel by panel: one panel of
        // the recurrent weights serves every group while it is in cache (the 256-unit
        // layers' weights, 1 MB, do not stay in L2 across a whole step).
        let (first, seqs) = (at_float / per_seq, run.len() / per_seq);
        let chunk = (chunk_floats / (seqs * h4).max(1)).clamp(1, t.max(1));
        let (mut h, mut c) = (vec![0.0; seqs * hidden], vec![0.0; seqs * hidden]);
        let mut g = vec![0.0; seqs * h4];
        let mut xg = vec![0.0; seqs * chunk * h4];
        for k in 0..t.div_ceil(chunk) {
            // Steps `a..a + len` in time order; the backward direction takes the chunks
            // from the end.
            let a = if reverse {
                t.saturating_sub((k + 1) * chunk)
            } else {
                k * chunk
            };
            let len = chunk
                .min(t - a)
                .min(if reverse { t - k * chunk } else { t });
            for s in 0..seqs {
                let xs = &inputs.x[((first + s) * t + a) * input..];
                for r in (0..len).step_by(MAX_ROWS) {
                    let n = MAX_ROWS.min(len - r);
                    let o = &mut xg[(s * chunk + r) * h4..];
                    let all = inputs.w.all();
                    inputs
                        .w
                        .product(all, n, &xs[r * input..], input, inputs.bias, 0, o, h4);
                }
            }
            for i in 0..len {
                let i = if reverse { len - 1 - i } else { i };
                for p in 0..w.panels() {
                    for g0 in (0..seqs).step_by(GROUP) {
                        let n = GROUP.min(seqs - g0);
                        let (hs, gs) = (&h[g0 * hidden..], &mut g[g0 * h4..]);
                        let init = &xg[(g0 * chunk + i) * h4..];
                        w.product(p..p + 1, n, hs, hidden, init, chunk * h4, gs, h4);
                    }
                }
                for j in 0..seqs {
                    let hj = &mut h[j * hidden..(j + 1) * hidden];
                    cell_host(&g[j * h4..(j + 1) * h4], &mut c[j * hidden..], hj);
                    run[(j * t + a + i) * stride + offset..][..hidden].copy_from_slice(hj);
                }
            }
        }
    });
}

/// The cell update from gate pre-activations `g` (`[4 * H]`, order i, f, g, o): `c` and
/// `h` (`H` each) in place.
fn cell_host(g: &[f32], c: &mut [f32], h: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { cell_avx512(g, c, h) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { cell_avx2(g, c, h) };
            return;
        }
    }
    cell_body(g, c, h);
}

/// [`cell_body`] compiled for AVX2 and FMA (CPUs without AVX-512).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn cell_avx2(g: &[f32], c: &mut [f32], h: &mut [f32]) {
    cell_body(g, c, h);
}

/// [`cell_body`] in AVX-512 intrinsics, 16 units at a time (the compiler's version of the
/// scalar code keeps parts scalar: `as i32` saturation and NaN-aware clamps).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn cell_avx512(g: &[f32], c: &mut [f32], h: &mut [f32]) {
    use std::arch::x86_64::*;
    let hidden = h.len();
    assert!(g.len() >= 4 * hidden && c.len() >= hidden);
    // e^x as 2^n * p(r) (the same polynomial as `fast_exp`), scaled by `vscalefps`.
    let exp = |x: __m512| {
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(88.0)),
            _mm512_set1_ps(-87.0),
        );
        let n =
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
                x,
                _mm512_set1_ps(std::f32::consts::LOG2_E),
                _mm512_set1_ps(0.5),
            ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for k in [720.0f32, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / k));
        }
        _mm512_scalef_ps(p, n)
    };
    let one = _mm512_set1_ps(1.0);
    let sigmoid = |x: __m512| {
        _mm512_div_ps(
            one,
            _mm512_add_ps(one, exp(_mm512_sub_ps(_mm512_setzero_ps(), x))),
        )
    };
    let tanh = |x: __m512| _mm512_fmsub_ps(_mm512_set1_ps(2.0), sigmoid(_mm512_add_ps(x, x)), one);
    for u in (0..hidden).step_by(16) {
        let live = (hidden - u).min(16);
        let m: __mmask16 = ((1u32 << live) - 1) as __mmask16;
        // SAFETY: every access is masked to `live` lanes from `u`, inside the slices
        // (asserted above).
        unsafe {
            let at = |s: &[f32], k: usize| _mm512_maskz_loadu_ps(m, s.as_ptr().add(k * hidden + u));
            let i = sigmoid(at(g, 0));
            let f = sigmoid(at(g, 1));
            let gg = tanh(at(g, 2));
            let o = sigmoid(at(g, 3));
            let cu = _mm512_fmadd_ps(
                f,
                _mm512_maskz_loadu_ps(m, c.as_ptr().add(u)),
                _mm512_mul_ps(i, gg),
            );
            _mm512_mask_storeu_ps(c.as_mut_ptr().add(u), m, cu);
            _mm512_mask_storeu_ps(h.as_mut_ptr().add(u), m, _mm512_mul_ps(o, tanh(cu)));
        }
    }
}

#[inline(always)]
fn cell_body(g: &[f32], c: &mut [f32], h: &mut [f32]) {
    let hidden = h.len();
    let (gi, rest) = g.split_at(hidden);
    let (gf, rest) = rest.split_at(hidden);
    let (gg, go) = rest.split_at(hidden);
    // Branch-free gate math over slices, so it vectorises.
    for u in 0..hidden {
        let i = fast_sigmoid(gi[u]);
        let f = fast_sigmoid(gf[u]);
        let g = fast_tanh(gg[u]);
        let o = fast_sigmoid(go[u]);
        let cu = f * c[u] + i * g;
        c[u] = cu;
        h[u] = o * fast_tanh(cu);
    }
}

/// `e^x` to about 2e-7 relative error, branch-free (vectorises): `2^n * e^r` with
/// `|r| <= ln(2) / 2` and a degree-7 Taylor polynomial for `e^r`.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 split in two so n * ln 2 is exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

#[inline(always)]
fn fast_sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    2.0 / (1.0 + fast_exp(-2.0 * x)) - 1.0
}

/// A tensor of `vb` with its shape checked, so a wrong file fails with a named tensor.
pub(crate) fn get(
    vb: &VarBuilder,
    model: &'static str,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, DiarizeError> {
    let full = if vb.prefix().is_empty() {
        name.to_string()
    } else {
        format!("{}.{name}", vb.prefix())
    };
    if !vb.contains_tensor(name) {
        return Err(DiarizeError::MissingWeight { model, name: full });
    }
    let t = vb.get_unchecked_dtype(name, DType::F32)?;
    if t.dims() != shape {
        return Err(DiarizeError::WeightShape {
            model,
            name: full,
            found: t.dims().to_vec(),
            expected: shape.to_vec(),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_math_is_accurate() {
        let mut worst = (0.0f32, 0.0f32, 0.0f32);
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            let e = (fast_exp(x) - x.exp()).abs() / x.exp();
            let s = (fast_sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs();
            let t = (fast_tanh(x) - x.tanh()).abs();
            worst = (worst.0.max(e), worst.1.max(s), worst.2.max(t));
        }
        assert!(
            worst.0 < 1e-6 && worst.1 < 1e-6 && worst.2 < 1e-6,
            "{worst:?}"
        );
        assert!(fast_sigmoid(-200.0) < 1e-30);
        assert_eq!(fast_sigmoid(200.0), 1.0);
        assert!((fast_tanh(50.0) - 1.0).abs() < 1e-6 && (fast_tanh(-50.0) + 1.0).abs() < 1e-6);
    }

    /// The host recurrence (written at a stride and offset) against a plain recurrence in
    /// f64, for group sizes that are not whole groups and widths that are not whole panels.
    #[test]
    fn host_recurrence_matches_reference() {
        let mut seed = 0x2545_f491_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2000) as f32 / 1000.0 - 1.0
        };
        for (hidden, b, t) in [(24, 3, 7), (128, 6, 5), (40, 1, 3), (32, 1, 10)] {
            let h4 = 4 * hidden;
            let w: Vec<f32> = (0..hidden * h4).map(|_| rand() * 0.3).collect();
            let xg: Vec<f32> = (0..b * t * h4).map(|_| rand()).collect();
            let packed = PackedMatrix::new(&w, hidden, h4);
            for reverse in [false, true] {
                let (stride, offset) = (2 * hidden + 3, hidden + 1);
                let mut got = vec![f32::NAN; b * t * stride];
                // An identity projection, so the inputs are the gates themselves.
                let eye: Vec<f32> = (0..h4 * h4)
                    .map(|i| f32::from(u8::from(i / h4 == i % h4)))
                    .collect();
                let inputs = Inputs {
                    x: &xg,
                    w: &PackedMatrix::new(&eye, h4, h4),
                    bias: &vec![0.0; h4],
                };
                // Whole sequences in one chunk, and chunks of 1 to 3 steps.
                let chunk_floats = [CHUNK_FLOATS, h4, 2 * h4, 3 * h4][(t + b) % 4];
                recur_host(
                    &inputs,
                    &packed,
                    t,
                    reverse,
                    chunk_floats,
                    &mut got,
                    stride,
                    offset,
                );
                for seq in 0..b {
                    let (mut h, mut c) = (vec![0.0f64; hidden], vec![0.0f64; hidden]);
                    for step in 0..t {
                        let at = if reverse { t - 1 - step } else { step };
                        let g: Vec<f64> = (0..h4)
                            .map(|col| {
                                xg[(seq * t + at) * h4 + col] as f64
                                    + (0..hidden)
                                        .map(|k| h[k] * w[k * h4 + col] as f64)
                                        .sum::<f64>()
                            })
                            .collect();
                        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
                        for u in 0..hidden {
                            c[u] = sig(g[hidden + u]) * c[u] + sig(g[u]) * g[2 * hidden + u].tanh();
                            h[u] = sig(g[3 * hidden + u]) * c[u].tanh();
                            let i = (seq * t + at) * stride + offset + u;
                            assert!((got[i] as f64 - h[u]).abs() < 1e-5, "{hidden} {b} {t} {i}");
                        }
                    }
                }
            }
        }
    }

    /// The cell update as dispatched (AVX-512 here when present) equals the portable one,
    /// over saturating inputs and a width that is not a whole vector.
    #[test]
    fn cell_paths_agree() {
        let hidden = 37;
        let g: Vec<f32> = (0..4 * hidden)
            .map(|i| (i as f32 * 0.77).sin() * 12.0)
            .collect();
        let c0: Vec<f32> = (0..hidden).map(|i| (i as f32 * 0.31).cos() * 3.0).collect();
        let (mut c1, mut h1) = (c0.clone(), vec![0.0; hidden]);
        let (mut c2, mut h2) = (c0.clone(), vec![0.0; hidden]);
        cell_host(&g, &mut c1, &mut h1);
        cell_body(&g, &mut c2, &mut h2);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let (mut c3, mut h3) = (c0.clone(), vec![0.0; hidden]);
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { cell_avx2(&g, &mut c3, &mut h3) };
            assert!(c3.iter().zip(&c2).all(|(a, b)| (a - b).abs() < 1e-6));
            assert!(h3.iter().zip(&h2).all(|(a, b)| (a - b).abs() < 1e-6));
        }
        for u in 0..hidden {
            assert!(
                (c1[u] - c2[u]).abs() < 1e-6 && (h1[u] - h2[u]).abs() < 1e-6,
                "unit {u}"
            );
        }
    }

    /// A bidirectional layer on the host kernels equals the same layer as candle ops.
    #[test]
    fn host_layer_matches_candle_ops() -> candle_core::Result<()> {
        use std::collections::HashMap;
        let dev = Device::Cpu;
        let (input, hidden, b, t) = (20, 32, 5, 9);
        let mut tensors = HashMap::new();
        let r = |shape: &[usize]| Tensor::rand(-0.4f32, 0.4, shape, &dev);
        for suffix in ["l0", "l0_reverse"] {
            tensors.insert(format!("weight_ih_{suffix}"), r(&[4 * hidden, input])?);
            tensors.insert(format!("weight_hh_{suffix}"), r(&[4 * hidden, hidden])?);
            tensors.insert(format!("bias_ih_{suffix}"), r(&[4 * hidden])?);
            tensors.insert(format!("bias_hh_{suffix}"), r(&[4 * hidden])?);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let load = |s: &str| LstmLayer::load(&vb, "test", s, input, hidden).unwrap();
        let (fwd, bwd) = (load("l0"), load("l0_reverse"));
        let xs = Tensor::rand(-1f32, 1.0, (b, t, input), &dev)?;
        let host = fwd.bidirectional(&bwd, &xs)?;
        let ops = Tensor::cat(
            &[fwd.forward_ops(&xs, false)?, bwd.forward_ops(&xs, true)?],
            2,
        )?;
        let diff = (&host - &ops)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let both = fwd.bidirectional_ops(&bwd, &xs)?;
        let diff = (both - &ops)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "one recurrence for both directions: {diff}");
        let one = (fwd.forward(&xs)? - fwd.forward_ops(&xs, false)?)?;
        assert!(one.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        Ok(())
    }
}
