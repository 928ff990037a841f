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
use mica_kernels::{LANES, LaneMatrix, MAX_ROWS, PackedMatrix, SharedMut};
use rayon::prelude::*;

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
    /// `[weight_ih | weight_hh]` for the batch-in-lanes recurrence (many sequences).
    lanes: LaneMatrix,
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
        let ih = get(
            vb,
            model,
            &format!("weight_ih_{suffix}"),
            &[4 * hidden, input],
        )?;
        let hh = get(
            vb,
            model,
            &format!("weight_hh_{suffix}"),
            &[4 * hidden, hidden],
        )?;
        let (w_ih, w_hh) = (ih.t()?.contiguous()?, hh.t()?.contiguous()?);
        let bias = (get(vb, model, &format!("bias_ih_{suffix}"), &[4 * hidden])?
            + get(vb, model, &format!("bias_hh_{suffix}"), &[4 * hidden])?)?;
        let host = match vb.device() {
            Device::Cpu => Some(HostWeights {
                w_ih: PackedMatrix::new(&w_ih.flatten_all()?.to_vec1()?, input, 4 * hidden),
                w_hh: PackedMatrix::new(&w_hh.flatten_all()?.to_vec1()?, hidden, 4 * hidden),
                lanes: LaneMatrix::new(
                    &[
                        (&ih.flatten_all()?.to_vec1()?, input),
                        (&hh.flatten_all()?.to_vec1()?, hidden),
                    ],
                    4 * hidden,
                ),
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

    /// The last layer's state at step `lengths[j] - 1` of each sequence of `x` (`[B, T,
    /// input]` in host memory), `[B, hidden]`, through `layers` stacked (each one's input
    /// is the previous one's hidden state): on the CPU kernels with the sequences across
    /// vector lanes, every layer advancing one step at a time, so no layer's sequence
    /// output is stored. `None` when a layer has no CPU kernels or the batch is too small
    /// to fill the lanes (the caller then runs the layers one by one).
    pub(crate) fn last_states(
        layers: &[LstmLayer],
        x: &[f32],
        t: usize,
        lengths: &[usize],
    ) -> Option<Vec<f32>> {
        let hosts: Vec<&HostWeights> = layers
            .iter()
            .map(|l| l.host.as_ref())
            .collect::<Option<_>>()?;
        let last = layers.last()?.hidden;
        let stacked = hosts
            .windows(2)
            .all(|p| p[1].lanes.k() - p[1].w_hh.rows() == p[0].w_hh.rows());
        let b = lengths.len();
        if !stacked || b == 0 || x.len() < b * t * (hosts[0].lanes.k() - hosts[0].w_hh.rows()) {
            return None;
        }
        let per_thread = b.div_ceil(rayon::current_num_threads().clamp(1, b.max(1)));
        if !fills_lanes(per_thread) {
            return None;
        }
        let mut out = vec![0.0f32; b * last];
        par_granules(&mut out, last, |at, run| {
            let first = at / last;
            stack_lanes(
                &hosts,
                x,
                t,
                &lengths[first..first + run.len() / last],
                first,
                run,
            );
        });
        Some(out)
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
                run_directions(&[(host, false, 0)], &x, t, &mut out, self.hidden);
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
                let both = [(fwd, false, 0), (bwd, true, self.hidden)];
                run_directions(&both, &x, t, &mut out, stride);
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

/// Runs directions of a layer over `x` (`[B, T, input]`) into `out` (`[B, T, stride]`):
/// each `(weights, reverse, offset)` writes its states at `offset` of each row. The
/// directions run at once, each on its share of the threads over all sequences (so a
/// bidirectional layer on two threads gives each direction the whole batch, enough to
/// fill the vector lanes), and each share takes the lane or the row recurrence by how
/// many sequences it holds.
fn run_directions(
    directions: &[(&HostWeights, bool, usize)],
    x: &[f32],
    t: usize,
    out: &mut [f32],
    stride: usize,
) {
    let b = out.len() / (t * stride).max(1);
    if b == 0 {
        return;
    }
    let parts = (rayon::current_num_threads() / directions.len()).clamp(1, b);
    let per_part = b.div_ceil(parts);
    let tasks: Vec<(usize, usize)> = (0..directions.len())
        .flat_map(|d| (0..b).step_by(per_part).map(move |first| (d, first)))
        .collect();
    let shared = SharedMut::new(out);
    let len = out.len();
    let task = |&(d, first): &(usize, usize)| {
        let (w, reverse, offset) = directions[d];
        let hidden = w.w_hh.rows();
        assert!(offset + hidden <= stride, "direction {d} overflows its row");
        let mut seqs = Seqs {
            first,
            count: per_part.min(b - first),
            t,
            reverse,
            out: shared,
            len,
            stride,
            offset,
        };
        if fills_lanes(seqs.count) {
            recur_lanes(&w.lanes, &w.bias, x, hidden, &mut seqs);
        } else {
            let inputs = Inputs {
                x,
                w: &w.w_ih,
                bias: &w.bias,
            };
            recur_rows(&inputs, &w.w_hh, CHUNK_FLOATS, &mut seqs);
        }
    };
    if tasks.len() == 1 {
        task(&tasks[0]);
    } else {
        tasks.par_iter().for_each(task);
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

/// Whether `seqs` sequences fill enough of their lane blocks (three quarters) for the
/// lane recurrence to beat the row one: at half full it is slower (segmentation's 8
/// windows a thread ran 40% slower on lanes).
fn fills_lanes(seqs: usize) -> bool {
    seqs >= 3 * LANES / 4 * seqs.div_ceil(LANES)
}

/// One task's sequences of one direction of a layer: sequences `first..first + count` of
/// the input, each `t` steps; step `i` of sequence `first + j` goes to `out[((first + j) *
/// t + i) * stride + offset..][..hidden]`. Directions write the same rows at different
/// offsets at once, so `out` is shared: each task writes only its sequences' rows, at its
/// direction's offset.
struct Seqs {
    first: usize,
    count: usize,
    t: usize,
    reverse: bool,
    out: SharedMut<f32>,
    /// Floats in `out`.
    len: usize,
    stride: usize,
    offset: usize,
}

impl Seqs {
    /// Time steps in the order the recurrence visits them.
    fn step(&self, i: usize) -> usize {
        if self.reverse { self.t - 1 - i } else { i }
    }

    /// The `hidden` values of this task's sequence `j` at step `at`.
    fn state(&mut self, j: usize, at: usize, hidden: usize) -> &mut [f32] {
        assert!(j < self.count && at < self.t, "sequence {j} step {at}");
        let start = ((self.first + j) * self.t + at) * self.stride + self.offset;
        assert!(start + hidden <= self.len, "state outside the output");
        // SAFETY: inside `out` (checked above); the task owns sequence `first + j`'s rows
        // at this direction's offset, which no other task writes, and the slice is
        // dropped before the next one is made.
        unsafe { self.out.slice(start, hidden) }
    }
}

/// The recurrence with the sequences across vector lanes, [`LANES`] at a time: each step
/// is one product of the stacked weights with `[x_t; h]` (`[input + hidden, LANES]`), so
/// every weight is read once per step for all of them and no input projection is stored.
fn recur_lanes(w: &LaneMatrix, bias: &[f32], x: &[f32], hidden: usize, seqs: &mut Seqs) {
    let input = w.k() - hidden;
    let tier = mica_kernels::Tier::current();
    // `z` is `[x_t; h]`, one lane per sequence; the cell updates `h` in place.
    let mut z = vec![0.0f32; w.k() * LANES];
    let mut c = vec![0.0f32; hidden * LANES];
    let mut g = vec![0.0f32; w.rows() * LANES];
    for j0 in (0..seqs.count).step_by(LANES) {
        let n = LANES.min(seqs.count - j0);
        z.fill(0.0);
        c.fill(0.0);
        for i in 0..seqs.t {
            let at = seqs.step(i);
            for j in 0..n {
                let xs = &x[((seqs.first + j0 + j) * seqs.t + at) * input..][..input];
                for (k, &v) in xs.iter().enumerate() {
                    z[k * LANES + j] = v;
                }
            }
            w.product(tier, &z, bias, &mut g);
            mica_kernels::lstm_cell(tier, &g, &mut c, &mut z[input * LANES..]);
            for j in 0..n {
                let o = seqs.state(j0 + j, at, hidden);
                for (u, o) in o.iter_mut().enumerate() {
                    *o = z[(input + u) * LANES + j];
                }
            }
        }
    }
}

/// [`LstmLayer::last_states`] for sequences `first..first + lengths.len()` of `x`, into
/// `out` (`[lengths.len(), hidden]`), [`LANES`] sequences at a time.
fn stack_lanes(
    layers: &[&HostWeights],
    x: &[f32],
    t: usize,
    lengths: &[usize],
    first: usize,
    out: &mut [f32],
) {
    let tier = mica_kernels::Tier::current();
    let input = layers[0].lanes.k() - layers[0].w_hh.rows();
    let last = layers[layers.len() - 1].w_hh.rows();
    // Per layer `z = [input; h]` in lanes; the cell updates `h` in place, and the next
    // layer's input is a copy of it.
    let mut z: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| vec![0.0; l.lanes.k() * LANES])
        .collect();
    let mut c: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| vec![0.0; l.w_hh.rows() * LANES])
        .collect();
    let rows = layers.iter().map(|l| l.lanes.rows()).max().unwrap_or(0);
    let mut g = vec![0.0f32; rows * LANES];
    for j0 in (0..lengths.len()).step_by(LANES) {
        let block = &lengths[j0..lengths.len().min(j0 + LANES)];
        z.iter_mut().chain(c.iter_mut()).for_each(|v| v.fill(0.0));
        let steps = block.iter().copied().max().unwrap_or(0).min(t);
        for step in 0..steps {
            for (j, _) in block.iter().enumerate() {
                let xs = &x[((first + j0 + j) * t + step) * input..][..input];
                for (k, &v) in xs.iter().enumerate() {
                    z[0][k * LANES + j] = v;
                }
            }
            for (l, w) in layers.iter().enumerate() {
                let k_in = w.lanes.k() - w.w_hh.rows();
                let (done, rest) = z.split_at_mut(l + 1);
                let zl = &mut done[l];
                w.lanes.product(tier, zl, &w.bias, &mut g);
                mica_kernels::lstm_cell(tier, &g, &mut c[l], &mut zl[k_in * LANES..]);
                if let Some(next) = rest.first_mut() {
                    let h = &zl[k_in * LANES..];
                    next[..h.len()].copy_from_slice(h);
                }
            }
            for (j, &len) in block.iter().enumerate() {
                if len == step + 1 {
                    let top = &z[layers.len() - 1];
                    let h = &top[top.len() - last * LANES..];
                    for (u, o) in out[(j0 + j) * last..][..last].iter_mut().enumerate() {
                        *o = h[u * LANES + j];
                    }
                }
            }
        }
    }
}

/// The recurrence with a few sequences per product (too few to fill the lanes): the
/// sequences advance together in groups of [`GROUP`], panel by panel; the input projection
/// runs a chunk of steps ahead (about `chunk_floats` gate values).
fn recur_rows(inputs: &Inputs<'_>, w: &PackedMatrix, chunk_floats: usize, seqs: &mut Seqs) {
    let hidden = w.rows();
    let h4 = w.cols();
    let input = inputs.w.rows();
    let tier = mica_kernels::Tier::current();
    let (first, count, t, reverse) = (seqs.first, seqs.count, seqs.t, seqs.reverse);
    // One panel of the recurrent weights serves every group while it is in cache (the
    // 256-unit layers' weights, 1 MB, do not stay in L2 across a whole step).
    let chunk = (chunk_floats / (count * h4).max(1)).clamp(1, t.max(1));
    let (mut h, mut c) = (vec![0.0; count * hidden], vec![0.0; count * hidden]);
    let mut g = vec![0.0; count * h4];
    let mut xg = vec![0.0; count * chunk * h4];
    for k in 0..t.div_ceil(chunk) {
        // Steps `a..a + len` in time order; the backward direction takes the chunks from
        // the end.
        let a = if reverse {
            t.saturating_sub((k + 1) * chunk)
        } else {
            k * chunk
        };
        let len = chunk
            .min(t - a)
            .min(if reverse { t - k * chunk } else { t });
        // Panel by panel, so each panel of the input weights is read from memory once per
        // chunk and serves every row of it from cache.
        for p in inputs.w.all() {
            for s in 0..count {
                let xs = &inputs.x[((first + s) * t + a) * input..];
                for r in (0..len).step_by(MAX_ROWS) {
                    let n = MAX_ROWS.min(len - r);
                    let o = &mut xg[(s * chunk + r) * h4..];
                    let x = &xs[r * input..];
                    inputs
                        .w
                        .product(p..p + 1, n, x, input, inputs.bias, 0, o, h4);
                }
            }
        }
        for i in 0..len {
            let i = if reverse { len - 1 - i } else { i };
            for p in 0..w.panels() {
                for g0 in (0..count).step_by(GROUP) {
                    let n = GROUP.min(count - g0);
                    let (hs, gs) = (&h[g0 * hidden..], &mut g[g0 * h4..]);
                    let init = &xg[(g0 * chunk + i) * h4..];
                    w.product(p..p + 1, n, hs, hidden, init, chunk * h4, gs, h4);
                }
            }
            for j in 0..count {
                let hj = &mut h[j * hidden..(j + 1) * hidden];
                mica_kernels::lstm_cell(tier, &g[j * h4..(j + 1) * h4], &mut c[j * hidden..], hj);
                seqs.state(j, a + i, hidden).copy_from_slice(hj);
            }
        }
    }
}

/// A tensor of `vb` with its shape checked, so a wrong file fails with a named tensor.
pub(crate) fn get(
    vb: &VarBuilder,
    model: &'static str,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, DiarizeError> {
    Ok(mica_core::error::weight(vb, model, name, shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both host recurrences (written at a stride and offset) against a plain recurrence
    /// in f64: the row path for group sizes that are not whole groups and widths that are
    /// not whole panels, the lane path for batches that are not whole lane blocks.
    #[test]
    fn host_recurrence_matches_reference() {
        let mut seed = 0x2545_f491_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2000) as f32 / 1000.0 - 1.0
        };
        for (hidden, b, t) in [
            (24, 3, 7),
            (128, 6, 5),
            (40, 1, 3),
            (32, 1, 10),
            (20, 19, 6),
        ] {
            let h4 = 4 * hidden;
            let w: Vec<f32> = (0..hidden * h4).map(|_| rand() * 0.3).collect();
            let xg: Vec<f32> = (0..b * t * h4).map(|_| rand()).collect();
            let packed = PackedMatrix::new(&w, hidden, h4);
            // An identity projection, so the inputs are the gates themselves.
            let eye: Vec<f32> = (0..h4 * h4)
                .map(|i| f32::from(u8::from(i / h4 == i % h4)))
                .collect();
            let wt: Vec<f32> = (0..h4 * hidden)
                .map(|i| w[(i % hidden) * h4 + i / hidden])
                .collect();
            let lanes = LaneMatrix::new(&[(&eye, h4), (&wt, hidden)], h4);
            let bias = vec![0.0; h4];
            for (reverse, by_lanes) in [(false, false), (true, false), (false, true), (true, true)]
            {
                let (stride, offset) = (2 * hidden + 3, hidden + 1);
                let mut got = vec![f32::NAN; b * t * stride];
                let mut seqs = Seqs {
                    first: 0,
                    count: b,
                    t,
                    reverse,
                    out: SharedMut::new(&mut got),
                    len: b * t * stride,
                    stride,
                    offset,
                };
                if by_lanes {
                    recur_lanes(&lanes, &bias, &xg, hidden, &mut seqs);
                } else {
                    let inputs = Inputs {
                        x: &xg,
                        w: &PackedMatrix::new(&eye, h4, h4),
                        bias: &bias,
                    };
                    // Whole sequences in one chunk, and chunks of 1 to 3 steps.
                    let chunk_floats = [CHUNK_FLOATS, h4, 2 * h4, 3 * h4][(t + b) % 4];
                    recur_rows(&inputs, &packed, chunk_floats, &mut seqs);
                }
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
                            let d = (got[i] as f64 - h[u]).abs();
                            assert!(d < 1e-5, "{hidden} {b} {t} {i} lanes {by_lanes}");
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
        for (input, hidden, b, t) in [(20, 32, 5, 9), (20, 32, 21, 4)] {
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
        }
        Ok(())
    }

    /// The lane stack's last states equal the layers run one by one and gathered at each
    /// sequence's length, for lengths that differ within a lane block and batches that
    /// are not whole blocks; a batch too small to fill the lanes is left to the caller.
    #[test]
    fn stacked_last_states_match_layer_by_layer() -> candle_core::Result<()> {
        use std::collections::HashMap;
        let dev = Device::Cpu;
        let (input, hidden, t) = (12, 24, 7);
        let mut tensors = HashMap::new();
        let r = |shape: &[usize]| Tensor::rand(-0.4f32, 0.4, shape, &dev);
        for l in 0..3 {
            let k = if l == 0 { input } else { hidden };
            tensors.insert(format!("weight_ih_l{l}"), r(&[4 * hidden, k])?);
            tensors.insert(format!("weight_hh_l{l}"), r(&[4 * hidden, hidden])?);
            tensors.insert(format!("bias_ih_l{l}"), r(&[4 * hidden])?);
            tensors.insert(format!("bias_hh_l{l}"), r(&[4 * hidden])?);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let layers: Vec<LstmLayer> = (0..3)
            .map(|l| {
                let k = if l == 0 { input } else { hidden };
                LstmLayer::load(&vb, "test", &format!("l{l}"), k, hidden).unwrap()
            })
            .collect();
        let threads = rayon::current_num_threads();
        for b in [LANES * threads, 37 * threads, 2] {
            let xs = Tensor::rand(-1f32, 1.0, (b, t, input), &dev)?;
            let lengths: Vec<usize> = (0..b).map(|i| 1 + (i * 5) % t).collect();
            let x = xs.flatten_all()?.to_vec1::<f32>()?;
            let got = LstmLayer::last_states(&layers, &x, t, &lengths);
            if b == 2 {
                assert!(got.is_none(), "two sequences cannot fill the lanes");
                continue;
            }
            let got = got.expect("lanes filled");
            let mut ys = xs;
            for layer in &layers {
                ys = layer.forward_ops(&ys, false)?;
            }
            let ys = ys.flatten_all()?.to_vec1::<f32>()?;
            for (j, &len) in lengths.iter().enumerate() {
                for u in 0..hidden {
                    let want = ys[(j * t + len - 1) * hidden + u];
                    let d = (got[j * hidden + u] - want).abs();
                    assert!(d < 1e-5, "b {b} seq {j} unit {u}: {d}");
                }
            }
        }
        Ok(())
    }
}
