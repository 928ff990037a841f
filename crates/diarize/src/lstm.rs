//! One LSTM layer (torch `nn.LSTM` gate order i, f, g, o), shared by both networks.
//!
//! The input projection of every time step runs as one matrix product. The recurrence runs
//! as candle ops per step on accelerators; on the CPU it runs in host memory, one thread
//! per group of sequences (sequences are independent), because a chain of small candle ops
//! per step costs more than the arithmetic.

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::DiarizeError;

/// Sequences whose recurrences are updated together on the CPU: each row of the recurrent
/// weights is loaded once for all of them.
const GROUP: usize = 4;

/// One direction of one LSTM layer.
#[derive(Debug, Clone)]
pub(crate) struct LstmLayer {
    /// `weight_ih^T`, `[input, 4 * hidden]`.
    w_ih: Tensor,
    /// `weight_hh^T`, `[hidden, 4 * hidden]`.
    w_hh: Tensor,
    /// `weight_hh^T` row-major in host memory, on the CPU device only.
    w_hh_host: Option<Vec<f32>>,
    /// `bias_ih + bias_hh`, `[4 * hidden]`.
    bias: Tensor,
    hidden: usize,
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
        let w_hh_host = match vb.device() {
            Device::Cpu => Some(w_hh.flatten_all()?.to_vec1::<f32>()?),
            _ => None,
        };
        Ok(LstmLayer {
            w_ih,
            w_hh,
            w_hh_host,
            bias,
            hidden,
        })
    }

    /// `xs` `[B, T, input]` to the hidden states `[B, T, hidden]`, from a zero state;
    /// `reverse` runs from the last step to the first (the backward half of a
    /// bidirectional layer), still writing step t's state at index t.
    pub(crate) fn forward(&self, xs: &Tensor, reverse: bool) -> candle_core::Result<Tensor> {
        let (b, t, input) = xs.dims3()?;
        let h4 = 4 * self.hidden;
        let xg = xs
            .reshape((b * t, input))?
            .matmul(&self.w_ih)?
            .broadcast_add(&self.bias)?;
        match &self.w_hh_host {
            Some(w) => {
                let xg = xg.flatten_all()?.to_vec1::<f32>()?;
                let out = recur_host(&xg, w, b, t, self.hidden, reverse);
                Tensor::from_vec(out, (b, t, self.hidden), xs.device())
            }
            None => {
                let xg = xg.reshape((b, t, h4))?;
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

/// The recurrence in host memory: `xg` `[B, T, 4H]` input gates, `w` `[H, 4H]` row-major.
/// Sequences are split over threads in groups of [`GROUP`].
fn recur_host(xg: &[f32], w: &[f32], b: usize, t: usize, hidden: usize, reverse: bool) -> Vec<f32> {
    let h4 = 4 * hidden;
    let mut out = vec![0.0f32; b * t * hidden];
    let groups: Vec<(usize, &mut [f32])> = out
        .chunks_mut(GROUP * t * hidden)
        .enumerate()
        .map(|(g, chunk)| (g * GROUP, chunk))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(groups.len().max(1));
    let per_thread = groups.len().div_ceil(threads.max(1)).max(1);
    let mut groups = groups;
    std::thread::scope(|scope| {
        while !groups.is_empty() {
            let take = per_thread.min(groups.len());
            let mine: Vec<(usize, &mut [f32])> = groups.drain(..take).collect();
            scope.spawn(move || {
                for (first, chunk) in mine {
                    let n = chunk.len() / (t * hidden).max(1);
                    let xg = &xg[first * t * h4..(first + n) * t * h4];
                    recur_group(xg, w, n, t, hidden, reverse, chunk);
                }
            });
        }
    });
    out
}

/// Up to [`GROUP`] sequences in lockstep, with AVX2 and FMA when the CPU has them.
fn recur_group(
    xg: &[f32],
    w: &[f32],
    n: usize,
    t: usize,
    hidden: usize,
    reverse: bool,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports these features (checked just above).
            unsafe { recur_group_avx512(xg, w, n, t, hidden, reverse, out) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports both features (checked just above).
            unsafe { recur_group_fma(xg, w, n, t, hidden, reverse, out) };
            return;
        }
    }
    recur_group_body::<false>(xg, w, n, t, hidden, reverse, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn recur_group_avx512(
    xg: &[f32],
    w: &[f32],
    n: usize,
    t: usize,
    hidden: usize,
    reverse: bool,
    out: &mut [f32],
) {
    recur_group_body::<true>(xg, w, n, t, hidden, reverse, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn recur_group_fma(
    xg: &[f32],
    w: &[f32],
    n: usize,
    t: usize,
    hidden: usize,
    reverse: bool,
    out: &mut [f32],
) {
    recur_group_body::<true>(xg, w, n, t, hidden, reverse, out);
}

#[inline(always)]
fn recur_group_body<const FMA: bool>(
    xg: &[f32],
    w: &[f32],
    n: usize,
    t: usize,
    hidden: usize,
    reverse: bool,
    out: &mut [f32],
) {
    let h4 = 4 * hidden;
    let mut h = vec![0.0f32; n * hidden];
    let mut c = vec![0.0f32; n * hidden];
    let mut g = vec![0.0f32; n * h4];
    for step in 0..t {
        let at = if reverse { t - 1 - step } else { step };
        for j in 0..n {
            g[j * h4..(j + 1) * h4].copy_from_slice(&xg[(j * t + at) * h4..(j * t + at + 1) * h4]);
        }
        // Row by row (axpy), which vectorises; each row serves every sequence of the group.
        for k in 0..hidden {
            let row = &w[k * h4..(k + 1) * h4];
            for j in 0..n {
                let hk = h[j * hidden + k];
                let gj = &mut g[j * h4..(j + 1) * h4];
                if FMA {
                    for (gv, &wv) in gj.iter_mut().zip(row) {
                        *gv = hk.mul_add(wv, *gv);
                    }
                } else {
                    for (gv, &wv) in gj.iter_mut().zip(row) {
                        *gv += hk * wv;
                    }
                }
            }
        }
        for j in 0..n {
            let gj = &g[j * h4..(j + 1) * h4];
            let hj = &mut h[j * hidden..(j + 1) * hidden];
            let cj = &mut c[j * hidden..(j + 1) * hidden];
            let (gi, rest) = gj.split_at(hidden);
            let (gf, rest) = rest.split_at(hidden);
            let (gg, go) = rest.split_at(hidden);
            // Branch-free gate math over slices, so it vectorises.
            for u in 0..hidden {
                let i = fast_sigmoid(gi[u]);
                let f = fast_sigmoid(gf[u]);
                let g = fast_tanh(gg[u]);
                let o = fast_sigmoid(go[u]);
                let c = f * cj[u] + i * g;
                cj[u] = c;
                hj[u] = o * fast_tanh(c);
            }
            out[(j * t + at) * hidden..(j * t + at + 1) * hidden].copy_from_slice(hj);
        }
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
}
