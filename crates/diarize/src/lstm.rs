//! One LSTM layer (torch `nn.LSTM` gate order i, f, g, o), shared by both networks.
//!
//! The input projection of every time step runs as one matrix product. The recurrence runs
//! as candle ops per step on accelerators; on the CPU it runs in host memory, one thread
//! per group of sequences (sequences are independent), because a chain of small candle ops
//! per step costs more than the arithmetic.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::DiarizeError;
use crate::threads::par_granules;
use mica_kernels::{MAX_ROWS, PackedMatrix};

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
    let tier = mica_kernels::Tier::current();
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
                    mica_kernels::lstm_cell(
                        tier,
                        &g[j * h4..(j + 1) * h4],
                        &mut c[j * hidden..],
                        hj,
                    );
                    run[(j * t + a + i) * stride + offset..][..hidden].copy_from_slice(hj);
                }
            }
        }
    });
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
