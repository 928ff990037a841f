//! The Silero VAD v6.2 network in candle, both sample-rate branches.
//!
//! Per window of [`SampleRate::window`] samples with the previous [`SampleRate::context`]
//! samples prepended, and an LSTM state `(h, c)`:
//! 1. reflect-pad the right side by `context` samples;
//! 2. STFT as a strided convolution with the stored basis (real rows, then imaginary), and
//!    the magnitude;
//! 3. four 3-tap convolutions with ReLU (strides 1, 2, 2, 1), which leave one frame;
//! 4. one `LSTMCell` step (gates i, f, g, o);
//! 5. ReLU, a 1x1 convolution, sigmoid and the mean over the (single) frame.
//!
//! Steps 1-3 and the LSTM's input projection do not depend on the state, so they run for
//! many windows at once ([`RateNet::encode`], [`RateNet::input_gates`]); only the cell's
//! recurrence ([`RateNet::cell`]) is sequential within one stream. Convolutions are written
//! as gathers plus one matrix product over every window and frame in the batch (channels
//! last), so a batch of N windows costs one GEMM per layer rather than N small ones.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;

use crate::VadError;
use crate::error::MODEL;

/// The store asset that provides the weights.
const ASSET: &str = "silero-v6";
use mica_core::error::RunError;

/// LSTM hidden size (and the encoder's output channels).
pub const HIDDEN: usize = 128;

/// The two rates the network has weights for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SampleRate {
    /// 16 kHz: 512-sample windows (32 ms) with 64 samples of context.
    #[serde(rename = "16000")]
    Hz16000,
    /// 8 kHz: 256-sample windows (32 ms) with 32 samples of context.
    #[serde(rename = "8000")]
    Hz8000,
}

impl SampleRate {
    /// The rate for `hz`, or [`VadError::UnsupportedRate`].
    pub fn from_hz(hz: u32) -> Result<SampleRate, VadError> {
        match hz {
            16_000 => Ok(SampleRate::Hz16000),
            8_000 => Ok(SampleRate::Hz8000),
            other => Err(VadError::UnsupportedRate(other)),
        }
    }

    /// Samples per second.
    pub fn hz(self) -> u32 {
        match self {
            SampleRate::Hz16000 => 16_000,
            SampleRate::Hz8000 => 8_000,
        }
    }

    /// New samples per window: 512 at 16 kHz, 256 at 8 kHz.
    pub fn window(self) -> usize {
        match self {
            SampleRate::Hz16000 => 512,
            SampleRate::Hz8000 => 256,
        }
    }

    /// Samples of the previous window prepended to each window: 64 at 16 kHz, 32 at 8 kHz.
    pub fn context(self) -> usize {
        self.window() / 8
    }

    /// Samples per network input row: `context + window`.
    pub fn input_len(self) -> usize {
        self.context() + self.window()
    }

    /// Appends the network input row of window `index` of one stream's `audio`: the
    /// `context` samples before the window (zeros before the stream's start), then the
    /// window, zero-padded past the end. Rows of many streams appended in turn make the
    /// `[B, input_len]` batch of [`SileroVad::forward`].
    pub fn push_row(self, rows: &mut Vec<f32>, audio: &[f32], index: usize) {
        let (win, ctx) = (self.window(), self.context());
        let start = index.saturating_mul(win);
        let from = start.saturating_sub(ctx);
        let lead = ctx - (start - from);
        let end = start.saturating_add(win);
        let have = &audio[from.min(audio.len())..end.min(audio.len())];
        rows.extend(std::iter::repeat_n(0.0, lead));
        rows.extend_from_slice(have);
        rows.extend(std::iter::repeat_n(0.0, ctx + win - lead - have.len()));
    }

    /// STFT length: 256 at 16 kHz, 128 at 8 kHz (hop is half of it).
    pub fn n_fft(self) -> usize {
        self.window() / 2
    }

    /// STFT bins: `n_fft / 2 + 1`.
    pub fn bins(self) -> usize {
        self.n_fft() / 2 + 1
    }

    /// Prefix of this rate's tensors in the converted weights file.
    pub fn prefix(self) -> &'static str {
        match self {
            SampleRate::Hz16000 => "16k",
            SampleRate::Hz8000 => "8k",
        }
    }
}

/// One 3-tap convolution (padding 1) with bias and ReLU, channels last.
#[derive(Debug, Clone)]
struct Conv3 {
    /// `[3 * c_in, c_out]`, rows ordered (tap, input channel).
    weight: Tensor,
    bias: Tensor,
    /// Frame indices into the zero-padded input, three per output frame.
    gather: Tensor,
    l_out: usize,
    c_in: usize,
}

impl Conv3 {
    fn load(
        vb: &VarBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
        l_in: usize,
    ) -> Result<Conv3, VadError> {
        let w = get(vb, &format!("{name}.weight"), &[c_out, c_in, 3])?;
        let bias = get(vb, &format!("{name}.bias"), &[c_out])?;
        // torch's [c_out, c_in, k] to the im2col layout [(k, c_in), c_out].
        let weight = w.permute((2, 1, 0))?.reshape((3 * c_in, c_out))?;
        let l_out = (l_in + 2 - 3) / stride + 1;
        let idx: Vec<u32> = (0..l_out)
            .flat_map(|t| (0..3).map(move |k| (t * stride + k) as u32))
            .collect();
        let gather = Tensor::from_vec(idx, 3 * l_out, vb.device())?;
        Ok(Conv3 {
            weight,
            bias,
            gather,
            l_out,
            c_in,
        })
    }

    /// `[B, l_in, c_in]` to `[B, l_out, c_out]`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let b = xs.dim(0)?;
        let cols = xs
            .pad_with_zeros(1, 1, 1)?
            .index_select(&self.gather, 1)?
            .reshape((b * self.l_out, 3 * self.c_in))?;
        let ys = cols
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .relu()?;
        ys.reshape((b, self.l_out, ()))
    }
}

/// The network for one sample rate.
#[derive(Debug, Clone)]
pub struct RateNet {
    rate: SampleRate,
    /// Indices of the reflect-padded input into the raw input row.
    reflect: Tensor,
    /// STFT basis as `[n_fft, 2 * bins]`: real columns, then imaginary.
    stft: Tensor,
    convs: [Conv3; 4],
    /// `weight_ih^T`, `[HIDDEN, 4 * HIDDEN]`.
    w_ih: Tensor,
    /// `weight_hh^T`, `[HIDDEN, 4 * HIDDEN]`.
    w_hh: Tensor,
    /// `weight_hh^T` in host memory, row-major, on the CPU device only: the recurrence of a
    /// single stream is a 128 x 512 matrix-vector product per window, which is much
    /// cheaper as a plain loop than as a chain of small candle ops.
    w_hh_host: Option<Vec<f32>>,
    /// `bias_ih + bias_hh`.
    bias: Tensor,
    /// `[1, HIDDEN]`.
    final_w: Tensor,
    final_b: Tensor,
}

/// STFT frames per window: `(input_len + context - n_fft) / hop + 1` = 4 at both rates.
const FRAMES: usize = 4;

impl RateNet {
    /// Loads one branch from `vb` (already under the rate's prefix).
    pub fn load(vb: VarBuilder, rate: SampleRate) -> Result<RateNet, VadError> {
        let n_fft = rate.n_fft();
        let bins = rate.bins();
        let stft = get(&vb, "stft_conv.weight", &[2 * bins, 1, n_fft])?
            .squeeze(1)?
            .t()?
            .contiguous()?;
        let len = rate.input_len();
        let pad = rate.context();
        // Reflect padding excludes the edge sample: x[len], x[len+1], ... = x[len-2], x[len-3], ...
        let reflect: Vec<u32> = (0..len)
            .chain((0..pad).map(|k| len - 2 - k))
            .map(|i| i as u32)
            .collect();
        let reflect = Tensor::from_vec(reflect, len + pad, vb.device())?;
        let convs = [
            Conv3::load(&vb, "conv1", bins, HIDDEN, 1, FRAMES)?,
            Conv3::load(&vb, "conv2", HIDDEN, 64, 2, FRAMES)?,
            Conv3::load(&vb, "conv3", 64, 64, 2, FRAMES / 2)?,
            Conv3::load(&vb, "conv4", 64, HIDDEN, 1, FRAMES / 4)?,
        ];
        let w_ih = get(&vb, "lstm_cell.weight_ih", &[4 * HIDDEN, HIDDEN])?
            .t()?
            .contiguous()?;
        let w_hh = get(&vb, "lstm_cell.weight_hh", &[4 * HIDDEN, HIDDEN])?
            .t()?
            .contiguous()?;
        let w_hh_host = match vb.device() {
            Device::Cpu => Some(w_hh.flatten_all()?.to_vec1::<f32>()?),
            _ => None,
        };
        let bias = (get(&vb, "lstm_cell.bias_ih", &[4 * HIDDEN])?
            + get(&vb, "lstm_cell.bias_hh", &[4 * HIDDEN])?)?;
        let final_w = get(&vb, "final_conv.weight", &[1, HIDDEN, 1])?.reshape((1, HIDDEN))?;
        let final_b = get(&vb, "final_conv.bias", &[1])?;
        Ok(RateNet {
            rate,
            reflect,
            stft,
            convs,
            w_ih,
            w_hh,
            w_hh_host,
            bias,
            final_w,
            final_b,
        })
    }

    /// The rate this branch runs at.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// State-free front end: `[N, context + window]` input rows to `[N, HIDDEN]` features.
    pub fn encode(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let n = input.dim(0)?;
        let hop = self.rate.n_fft() / 2;
        let bins = self.rate.bins();
        // The padded row is exactly FRAMES + 1 hops long and n_fft is two hops, so frame t is
        // hops t and t + 1 side by side.
        let hops = input
            .index_select(&self.reflect, 1)?
            .reshape((n, FRAMES + 1, hop))?;
        let frames = Tensor::cat(&[hops.narrow(1, 0, FRAMES)?, hops.narrow(1, 1, FRAMES)?], 2)?
            .reshape((n * FRAMES, 2 * hop))?;
        let spec = frames.matmul(&self.stft)?;
        let re = spec.narrow(1, 0, bins)?;
        let im = spec.narrow(1, bins, bins)?;
        let mut xs = (re.sqr()? + im.sqr()?)?
            .sqrt()?
            .reshape((n, FRAMES, bins))?;
        for conv in &self.convs {
            xs = conv.forward(&xs)?;
        }
        xs.reshape((n, HIDDEN))
    }

    /// The LSTM input projection plus both biases: `[N, HIDDEN]` to `[N, 4 * HIDDEN]`.
    pub fn input_gates(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        features.matmul(&self.w_ih)?.broadcast_add(&self.bias)
    }

    /// One `LSTMCell` step from precomputed input gates `[B, 4 * HIDDEN]` and state
    /// `h`, `c` `[B, HIDDEN]`; returns the new `(h, c)`.
    pub fn cell(
        &self,
        gates_in: &Tensor,
        h: &Tensor,
        c: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let gates = (gates_in + h.matmul(&self.w_hh)?)?;
        let sig = candle_nn::ops::sigmoid(&gates)?;
        let i = sig.narrow(1, 0, HIDDEN)?;
        let f = sig.narrow(1, HIDDEN, HIDDEN)?;
        let o = sig.narrow(1, 3 * HIDDEN, HIDDEN)?;
        let g = gates.narrow(1, 2 * HIDDEN, HIDDEN)?.tanh()?;
        let c = ((f * c)? + (i * g)?)?;
        let h = (o * c.tanh()?)?;
        Ok((h, c))
    }

    /// [`RateNet::cell`] for one stream in host memory (CPU device only): `gates_in` is
    /// `4 * HIDDEN` precomputed input gates, `h` and `c` are updated in place, `scratch`
    /// holds `4 * HIDDEN` values. Returns false when the weights are not in host memory.
    pub fn cell_host(
        &self,
        gates_in: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        scratch: &mut [f32],
    ) -> bool {
        let Some(w) = self.w_hh_host.as_deref() else {
            return false;
        };
        let g = &mut scratch[..4 * HIDDEN];
        g.copy_from_slice(&gates_in[..4 * HIDDEN]);
        // Row by row (axpy), which vectorises; the order is fixed, so results are too.
        for (k, &hk) in h.iter().enumerate() {
            let row = &w[k * 4 * HIDDEN..(k + 1) * 4 * HIDDEN];
            for (gj, &wj) in g.iter_mut().zip(row) {
                *gj += hk * wj;
            }
        }
        mica_kernels::lstm_cell(
            mica_kernels::Tier::current(),
            g,
            &mut c[..HIDDEN],
            &mut h[..HIDDEN],
        );
        true
    }

    /// Speech probabilities `[N]` from LSTM outputs `[N, HIDDEN]`.
    pub fn decode(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        // A row-wise product and sum rather than an [N, 128] x [128, 1] GEMM: the GEMM's
        // summation order depends on N, and a window's probability must not depend on how
        // many windows were decoded with it (streaming must equal offline bit for bit).
        let logits = h
            .relu()?
            .broadcast_mul(&self.final_w)?
            .sum_keepdim(1)?
            .broadcast_add(&self.final_b)?;
        // The mean over frames is over a single frame here.
        candle_nn::ops::sigmoid(&logits)?.squeeze(1)
    }

    /// One window for each of `B` independent streams: `input` `[B, context + window]`,
    /// `state` `[2, B, HIDDEN]` (h then c). Returns the probabilities `[B]` and the new state.
    pub fn forward(&self, input: &Tensor, state: &Tensor) -> Result<(Tensor, Tensor), VadError> {
        let (b, len) = input.dims2().map_err(|_| RunError::InputShape {
            what: "input",
            found: input.dims().to_vec(),
            expected: format!("[batch, {}]", self.rate.input_len()),
        })?;
        if len != self.rate.input_len() {
            return Err(RunError::InputShape {
                what: "input",
                found: input.dims().to_vec(),
                expected: format!("[batch, {}]", self.rate.input_len()),
            }
            .into());
        }
        if state.dims() != [2, b, HIDDEN] {
            return Err(RunError::InputShape {
                what: "state",
                found: state.dims().to_vec(),
                expected: format!("[2, {b}, {HIDDEN}]"),
            }
            .into());
        }
        let gates = self.input_gates(&self.encode(input)?)?;
        let (h, c) = self.cell(&gates, &state.i(0)?, &state.i(1)?)?;
        let probs = self.decode(&h)?;
        let state = Tensor::stack(&[h, c], 0)?;
        Ok((probs, state))
    }
}

impl Module for RateNet {
    /// Probabilities for rows `[B, context + window]` from a zero state.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let b = xs.dim(0)?;
        let zeros = Tensor::zeros((b, HIDDEN), DType::F32, xs.device())?;
        let gates = self.input_gates(&self.encode(xs)?)?;
        let (h, _) = self.cell(&gates, &zeros, &zeros)?;
        self.decode(&h)
    }
}

/// Silero VAD v6.2 with both branches, loaded once and shared (`Arc`) by every stream.
#[derive(Debug, Clone)]
pub struct SileroVad {
    hz16000: RateNet,
    hz8000: RateNet,
    device: Device,
}

impl SileroVad {
    /// The file name inside a model directory.
    pub const FILE: &'static str = "model.safetensors";
    /// The `mica-models` asset that provides the weights (`mica models fetch` installs it).
    pub const ASSET: &'static str = ASSET;

    /// Loads both branches from tensors named `16k.*` and `8k.*`.
    pub fn load(vb: VarBuilder) -> Result<SileroVad, VadError> {
        Ok(SileroVad {
            hz16000: RateNet::load(vb.pp(SampleRate::Hz16000.prefix()), SampleRate::Hz16000)?,
            hz8000: RateNet::load(vb.pp(SampleRate::Hz8000.prefix()), SampleRate::Hz8000)?,
            device: vb.device().clone(),
        })
    }

    /// Loads a converted safetensors file (or a directory holding [`Self::FILE`]).
    pub fn from_path(path: impl AsRef<Path>, device: &Device) -> Result<Arc<SileroVad>, VadError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join(Self::FILE);
        }
        let weights = |reason: String| RunError::Weights {
            model: MODEL,
            asset: ASSET,
            path: path.clone(),
            reason,
        };
        let tensors =
            candle_core::safetensors::load(&path, device).map_err(|e| weights(e.to_string()))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        // Whatever is wrong with the file is reported with its path.
        let model = SileroVad::load(vb).map_err(|e| match e {
            VadError::Run(e) => VadError::Run(e.in_file(ASSET, &path)),
            other => other,
        })?;
        tracing::debug!("loaded Silero VAD from {}", path.display());
        Ok(Arc::new(model))
    }

    /// The branch for `rate`.
    pub fn net(&self, rate: SampleRate) -> &RateNet {
        match rate {
            SampleRate::Hz16000 => &self.hz16000,
            SampleRate::Hz8000 => &self.hz8000,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A zero state for `batch` streams: `[2, batch, HIDDEN]`.
    pub fn zero_state(&self, batch: usize) -> Result<Tensor, VadError> {
        Ok(Tensor::zeros((2, batch, HIDDEN), DType::F32, &self.device)?)
    }

    /// One window for each of `B` independent streams at `rate`; see [`RateNet::forward`].
    pub fn forward(
        &self,
        rate: SampleRate,
        input: &Tensor,
        state: &Tensor,
    ) -> Result<(Tensor, Tensor), VadError> {
        self.net(rate).forward(input, state)
    }
}

/// A tensor of `vb` with its shape checked, so a wrong file fails with a named tensor.
fn get(vb: &VarBuilder, name: &str, shape: &[usize]) -> Result<Tensor, VadError> {
    Ok(mica_core::error::weight(vb, MODEL, name, shape)?)
}

#[cfg(test)]
mod tests {
    use super::SampleRate;

    #[test]
    fn push_row_pads_context_and_tail() {
        let rate = SampleRate::Hz8000; // window 256, context 32
        let audio: Vec<f32> = (1..=600).map(|i| i as f32).collect();
        let mut rows = Vec::new();
        rate.push_row(&mut rows, &audio, 0);
        assert_eq!(rows.len(), 288);
        assert!(rows[..32].iter().all(|&x| x == 0.0));
        assert_eq!(&rows[32..], &audio[..256]);

        rows.clear();
        rate.push_row(&mut rows, &audio, 1);
        assert_eq!(&rows[..], &audio[224..512]);

        // The last window runs past the end: zeros after the 88 samples left.
        rows.clear();
        rate.push_row(&mut rows, &audio, 2);
        assert_eq!(&rows[..120], &audio[480..600]);
        assert!(rows[120..].iter().all(|&x| x == 0.0));
        assert_eq!(rows.len(), 288);

        // Wholly past the end, or no audio at all: a row of zeros.
        for (audio, index) in [(&audio[..], 9), (&[][..], 0)] {
            rows.clear();
            rate.push_row(&mut rows, audio, index);
            assert_eq!(rows, vec![0.0; 288]);
        }
    }
}
