//! Local segmentation: pyannote's PyanNet (the `pyannote/segmentation` checkpoint) in candle.
//!
//! Per 5 s window of 16 kHz audio:
//! 1. instance norm of the waveform;
//! 2. SincNet: 80 parametric sinc band-pass filters of 251 taps at stride 10 (the filters
//!    are computed once from their cut-off parameters at load), absolute value; then two
//!    5-tap convolutions (80 -> 60 -> 60); each of the three followed by max-pool 3, instance
//!    norm and leaky ReLU;
//! 3. four bidirectional LSTM layers of 128;
//! 4. two linear layers of 128 with leaky ReLU, a 3-way classifier and a sigmoid: one
//!    activity probability per local speaker and output frame (293 frames per 5 s, one per
//!    270 samples).
//!
//! On accelerators the convolutions run channels first through candle's conv1d (im2col and
//! one matrix product per layer); on the CPU the front end runs channels last on packed
//! weights with no im2col. The LSTM and linear layers run channels last.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use mica_core::error::RunError;

use crate::DiarizeError;
use crate::lstm::{LstmLayer, get};
use crate::threads::par_granules;
use mica_kernels::{MAX_ROWS, PackedMatrix};

/// Samples per second the network runs at.
pub const SAMPLE_RATE: usize = 16_000;
/// Samples per window the checkpoint was trained on (5 s).
pub const WINDOW_SAMPLES: usize = 80_000;
/// Samples between two output frames (the product of the strides: 10 x 3 x 3 x 3).
pub const FRAME_STEP: usize = 270;
/// Samples one output frame sees.
pub const RECEPTIVE_FIELD: usize = 991;
/// Local speakers per window.
pub const LOCAL_SPEAKERS: usize = 3;

const MODEL: &str = "segmentation";
const ASSET: &str = "pyannote-segmentation";
const SINC_FILTERS: usize = 80;
const SINC_TAPS: usize = 251;
const SINC_STRIDE: usize = 10;
const HIDDEN: usize = 128;
const LAYERS: usize = 4;
const EPS: f64 = 1e-5;
const LEAKY: f64 = 0.01;
/// Windows whose front end runs in one go: bounds the sinc stage's im2col buffer
/// (`[n, 7975, 251]` floats, 8 MB per window).
const FRONT_BATCH: usize = 2;

/// Output frames for `samples` input samples (0 when shorter than the receptive field).
pub fn frames_for(samples: usize) -> usize {
    if samples < RECEPTIVE_FIELD {
        return 0;
    }
    let sinc = (samples - SINC_TAPS) / SINC_STRIDE + 1;
    let a = sinc / 3;
    let b = a.saturating_sub(4) / 3;
    b.saturating_sub(4) / 3
}

/// Start sample of output frame `i` of a window; the frame covers
/// [`RECEPTIVE_FIELD`] samples from there, its centre is `RECEPTIVE_FIELD / 2` later.
pub fn frame_start(i: usize) -> usize {
    i * FRAME_STEP
}

/// A 5-tap convolution with bias, channels first (candle's conv1d: im2col + one GEMM).
#[derive(Debug, Clone)]
struct Conv5 {
    /// `[c_out, c_in, 5]`.
    weight: Tensor,
    /// `[1, c_out, 1]`.
    bias: Tensor,
}

impl Conv5 {
    fn load(vb: &VarBuilder, name: &str, c_in: usize, c_out: usize) -> Result<Conv5, DiarizeError> {
        let weight = get(vb, MODEL, &format!("{name}.weight"), &[c_out, c_in, 5])?;
        let bias = get(vb, MODEL, &format!("{name}.bias"), &[c_out])?.reshape((1, c_out, 1))?;
        Ok(Conv5 { weight, bias })
    }

    /// `[B, c_in, T]` to `[B, c_out, T - 4]`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.conv1d(&self.weight, 0, 1, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// Instance norm over time with a per-channel affine, channels first.
#[derive(Debug, Clone)]
struct InstanceNorm {
    /// `[1, C, 1]`.
    weight: Tensor,
    bias: Tensor,
}

impl InstanceNorm {
    fn load(vb: &VarBuilder, name: &str, c: usize) -> Result<InstanceNorm, DiarizeError> {
        Ok(InstanceNorm {
            weight: get(vb, MODEL, &format!("{name}.weight"), &[c])?.reshape((1, c, 1))?,
            bias: get(vb, MODEL, &format!("{name}.bias"), &[c])?.reshape((1, c, 1))?,
        })
    }

    /// `[B, C, T]`, normalised over T (biased variance, eps 1e-5 as torch).
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mean = xs.mean_keepdim(2)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(2)?;
        centred
            .broadcast_div(&(var + EPS)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Max-pool of 3 with stride 3 over time, channels first (the tail that does not fill a
/// pool is dropped).
fn pool3(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, t) = xs.dims3()?;
    let l = t / 3;
    xs.narrow(2, 0, 3 * l)?.reshape((b, c, l, 3))?.max(3)
}

fn leaky_relu(xs: &Tensor) -> candle_core::Result<Tensor> {
    xs.maximum(&(xs * LEAKY)?)
}

/// A linear layer as `[in, out]` plus bias.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(
        vb: &VarBuilder,
        name: &str,
        c_in: usize,
        c_out: usize,
    ) -> Result<Linear, DiarizeError> {
        Ok(Linear {
            weight: get(vb, MODEL, &format!("{name}.weight"), &[c_out, c_in])?
                .t()?
                .contiguous()?,
            bias: get(vb, MODEL, &format!("{name}.bias"), &[c_out])?,
        })
    }

    /// `[B, T, in]` to `[B, T, out]`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        xs.reshape((b * t, c))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((b, t, ()))
    }
}

/// The segmentation network, loaded once and shared (`Arc`) by every worker.
#[derive(Debug, Clone)]
pub struct Segmentation {
    wav_weight: f64,
    wav_bias: f64,
    /// Sinc filters as conv1d weights `[80, 1, 251]`.
    sinc: Tensor,
    norms: [InstanceNorm; 3],
    convs: [Conv5; 2],
    /// `(forward, backward)` per layer.
    lstm: Vec<(LstmLayer, LstmLayer)>,
    linear: [Linear; 2],
    classifier: Linear,
    /// The same front end for the CPU kernels, on the CPU device only.
    host_front: Option<HostFrontEnd>,
    device: Device,
}

impl Segmentation {
    /// The file name inside a model directory.
    pub const FILE: &'static str = "model.safetensors";
    /// The model store asset.
    pub const ASSET: &'static str = ASSET;

    /// Loads the network from tensors with pyannote's state_dict names.
    pub fn load(vb: VarBuilder) -> Result<Segmentation, DiarizeError> {
        let device = vb.device().clone();
        let wav_weight = scalar(&get(&vb, MODEL, "sincnet.wav_norm1d.weight", &[1])?)?;
        let wav_bias = scalar(&get(&vb, MODEL, "sincnet.wav_norm1d.bias", &[1])?)?;
        let sinc = sinc_filters(&vb, &device)?;
        let norms = [
            InstanceNorm::load(&vb, "sincnet.norm1d.0", SINC_FILTERS)?,
            InstanceNorm::load(&vb, "sincnet.norm1d.1", 60)?,
            InstanceNorm::load(&vb, "sincnet.norm1d.2", 60)?,
        ];
        let convs = [
            Conv5::load(&vb, "sincnet.conv1d.1", SINC_FILTERS, 60)?,
            Conv5::load(&vb, "sincnet.conv1d.2", 60, 60)?,
        ];
        let lstm_vb = vb.pp("lstm");
        let mut lstm = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let input = if l == 0 { 60 } else { 2 * HIDDEN };
            lstm.push((
                LstmLayer::load(&lstm_vb, MODEL, &format!("l{l}"), input, HIDDEN)?,
                LstmLayer::load(&lstm_vb, MODEL, &format!("l{l}_reverse"), input, HIDDEN)?,
            ));
        }
        let linear = [
            Linear::load(&vb, "linear.0", 2 * HIDDEN, HIDDEN)?,
            Linear::load(&vb, "linear.1", HIDDEN, HIDDEN)?,
        ];
        let classifier = Linear::load(&vb, "classifier", HIDDEN, LOCAL_SPEAKERS)?;
        let host_front = if device.is_cpu() {
            Some(HostFrontEnd::new(
                wav_weight, wav_bias, &sinc, &norms, &convs,
            )?)
        } else {
            None
        };
        Ok(Segmentation {
            wav_weight,
            wav_bias,
            sinc,
            norms,
            convs,
            lstm,
            linear,
            classifier,
            host_front,
            device,
        })
    }

    /// Loads a converted safetensors file (or a directory holding [`Self::FILE`]).
    pub fn from_path(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Arc<Segmentation>, DiarizeError> {
        let (vb, path) = open_weights(path.as_ref(), device, MODEL, ASSET)?;
        let model = Segmentation::load(vb).map_err(|e| with_path(e, &path, ASSET))?;
        tracing::debug!("loaded the segmentation model from {}", path.display());
        Ok(Arc::new(model))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The same network without its CPU kernels: candle ops only, as accelerators run it
    /// (for checking the kernels against it; slower on the CPU).
    pub fn generic(&self) -> Segmentation {
        Segmentation {
            host_front: None,
            lstm: self
                .lstm
                .iter()
                .map(|(f, b)| (f.generic(), b.generic()))
                .collect(),
            ..self.clone()
        }
    }

    /// Activity probabilities `[B, frames_for(n), 3]` for windows `[B, n]` (any `n` of at
    /// least [`RECEPTIVE_FIELD`] samples; the checkpoint was trained on
    /// [`WINDOW_SAMPLES`]).
    pub fn forward(&self, windows: &Tensor) -> Result<Tensor, DiarizeError> {
        let shape_err = || RunError::InputShape {
            what: "segmentation input",
            found: windows.dims().to_vec(),
            expected: format!("[batch, samples >= {RECEPTIVE_FIELD}]"),
        };
        let (b, n) = windows.dims2().map_err(|_| shape_err())?;
        if n < RECEPTIVE_FIELD || b == 0 {
            return Err(shape_err().into());
        }
        let mut xs = match &self.host_front {
            Some(front) => {
                let samples = windows.flatten_all()?.to_vec1::<f32>()?;
                let (frames, feats) = front.forward(&samples, b, n);
                Tensor::from_vec(feats, (b, frames, 60), windows.device())?
            }
            None => {
                let mut feats = Vec::with_capacity(b.div_ceil(FRONT_BATCH));
                for first in (0..b).step_by(FRONT_BATCH) {
                    let take = FRONT_BATCH.min(b - first);
                    feats.push(self.sincnet(&windows.narrow(0, first, take)?)?);
                }
                Tensor::cat(&feats, 0)?
            }
        };
        for (fwd, bwd) in &self.lstm {
            xs = fwd.bidirectional(bwd, &xs)?;
        }
        for lin in &self.linear {
            xs = leaky_relu(&lin.forward(&xs)?)?;
        }
        Ok(candle_nn::ops::sigmoid(&self.classifier.forward(&xs)?)?)
    }

    /// SincNet: `[B, n]` samples to `[B, frames, 60]` features.
    fn sincnet(&self, windows: &Tensor) -> candle_core::Result<Tensor> {
        let mean = windows.mean_keepdim(1)?;
        let centred = windows.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let xs = ((centred.broadcast_div(&(var + EPS)?.sqrt()?)? * self.wav_weight)?
            + self.wav_bias)?
            .unsqueeze(1)?;
        let xs = xs.conv1d(&self.sinc, 0, SINC_STRIDE, 1, 1)?.abs()?;
        let mut xs = leaky_relu(&self.norms[0].forward(&pool3(&xs)?)?)?;
        for (conv, norm) in self.convs.iter().zip(&self.norms[1..]) {
            xs = leaky_relu(&norm.forward(&pool3(&conv.forward(&xs)?)?)?)?;
        }
        xs.transpose(1, 2)?.contiguous()
    }
}

/// SincNet on the CPU, channels last, every convolution one packed product per block of
/// output rows read straight from the input (a row of the sinc stage is 251 samples at a
/// stride of 10; of a 5-tap stage, 5 consecutive frames of all channels): no im2col
/// buffer, no transposes, and the output is already the LSTM's `[frames, 60]`.
#[derive(Debug, Clone)]
struct HostFrontEnd {
    wav_weight: f32,
    wav_bias: f32,
    /// The 40 cosine filters folded on their symmetry: `[SINC_TAPS / 2 + 1, 40]`, applied to
    /// `x[k] + x[250 - k]` (and the middle tap alone).
    sinc_even: PackedMatrix,
    /// The 40 sine filters folded on their antisymmetry: `[SINC_TAPS / 2, 40]`, applied to
    /// `x[k] - x[250 - k]`. Folding halves the sinc stage's arithmetic.
    sinc_odd: PackedMatrix,
    /// `[5 * c_in, 60]`, row `d * c_in + c` for tap `d` of input channel `c`, and biases.
    convs: [(PackedMatrix, Vec<f32>); 2],
    /// Per-channel `(weight, bias)` of the three instance norms.
    norms: [(Vec<f32>, Vec<f32>); 3],
}

impl HostFrontEnd {
    fn new(
        wav_weight: f64,
        wav_bias: f64,
        sinc: &Tensor,
        norms: &[InstanceNorm; 3],
        convs: &[Conv5; 2],
    ) -> candle_core::Result<HostFrontEnd> {
        let w = sinc.flatten_all()?.to_vec1::<f32>()?;
        let (half, pairs) = (SINC_FILTERS / 2, SINC_TAPS / 2);
        let tap = |f: usize, k: usize| w[f * SINC_TAPS + k];
        for f in 0..half {
            for k in 0..pairs {
                let mirror = SINC_TAPS - 1 - k;
                debug_assert!(
                    tap(f, k) == tap(f, mirror) && tap(half + f, k) == -tap(half + f, mirror)
                );
            }
        }
        let even: Vec<f32> = (0..=pairs)
            .flat_map(|k| (0..half).map(move |f| (f, k)))
            .map(|(f, k)| tap(f, k))
            .collect();
        let odd: Vec<f32> = (0..pairs)
            .flat_map(|k| (0..half).map(move |f| (f, k)))
            .map(|(f, k)| tap(half + f, k))
            .collect();
        let sinc_even = PackedMatrix::new(&even, pairs + 1, half);
        let sinc_odd = PackedMatrix::new(&odd, pairs, half);
        let conv = |c: &Conv5| -> candle_core::Result<(PackedMatrix, Vec<f32>)> {
            let (c_out, c_in, taps) = c.weight.dims3()?;
            // [c_out, c_in, taps] -> [taps, c_in, c_out] -> [taps * c_in, c_out].
            let w = c
                .weight
                .permute((2, 1, 0))?
                .contiguous()?
                .flatten_all()?
                .to_vec1()?;
            Ok((
                PackedMatrix::new(&w, taps * c_in, c_out),
                c.bias.flatten_all()?.to_vec1()?,
            ))
        };
        let norm = |n: &InstanceNorm| -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                n.weight.flatten_all()?.to_vec1()?,
                n.bias.flatten_all()?.to_vec1()?,
            ))
        };
        Ok(HostFrontEnd {
            wav_weight: wav_weight as f32,
            wav_bias: wav_bias as f32,
            sinc_even,
            sinc_odd,
            convs: [conv(&convs[0])?, conv(&convs[1])?],
            norms: [norm(&norms[0])?, norm(&norms[1])?, norm(&norms[2])?],
        })
    }

    /// `b` windows of `n` samples to `(frames, [b, frames, 60])`, windows spread over
    /// threads.
    fn forward(&self, windows: &[f32], b: usize, n: usize) -> (usize, Vec<f32>) {
        let frames = frames_for(n);
        let per = frames * self.convs[1].0.cols();
        let mut out = vec![0.0f32; b * per];
        par_granules(&mut out, per, |offset, run| {
            for (r, dst) in run.chunks_mut(per).enumerate() {
                let w = offset / per + r;
                dst.copy_from_slice(&self.window(&windows[w * n..(w + 1) * n]));
            }
        });
        (frames, out)
    }

    /// One window (at least [`RECEPTIVE_FIELD`] samples) to `[frames_for(n), 60]`.
    fn window(&self, x: &[f32]) -> Vec<f32> {
        let len = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / len;
        let scale = (1.0 / (var + EPS).sqrt()) as f32;
        let mean = mean as f32;
        let xn: Vec<f32> = x
            .iter()
            .map(|&v| (v - mean) * scale * self.wav_weight + self.wav_bias)
            .collect();
        let rows = (x.len() - SINC_TAPS) / SINC_STRIDE + 1;
        let mut y = self.sinc(&xn, rows);
        y.iter_mut().for_each(|v| *v = v.abs());
        let mut y = pool_norm_relu(&y, SINC_FILTERS, &self.norms[0]);
        for ((conv, bias), norm) in self.convs.iter().zip(&self.norms[1..]) {
            let c_in = conv.rows() / 5;
            let rows = (y.len() / c_in).saturating_sub(4);
            y = convolve(conv, &y, c_in, rows, bias, 0);
            y = pool_norm_relu(&y, conv.cols(), norm);
        }
        y
    }
}

impl HostFrontEnd {
    /// The sinc stage: `rows` output rows of 80 filters (cosine, then sine), row `i` from
    /// samples `10 i .. 10 i + 251`, folded on the filters' symmetry.
    fn sinc(&self, x: &[f32], rows: usize) -> Vec<f32> {
        const PAIRS: usize = SINC_TAPS / 2;
        const HALF: usize = SINC_FILTERS / 2;
        let mut out = vec![0.0f32; rows * SINC_FILTERS];
        let mut sums = [0.0f32; MAX_ROWS * (PAIRS + 1)];
        let mut diffs = [0.0f32; MAX_ROWS * PAIRS];
        let zeros = [0.0f32; HALF];
        for r in (0..rows).step_by(MAX_ROWS) {
            let n = MAX_ROWS.min(rows - r);
            for j in 0..n {
                let s = &x[(r + j) * SINC_STRIDE..][..SINC_TAPS];
                let (sum, diff) = (&mut sums[j * (PAIRS + 1)..], &mut diffs[j * PAIRS..]);
                for k in 0..PAIRS {
                    let (a, b) = (s[k], s[SINC_TAPS - 1 - k]);
                    sum[k] = a + b;
                    diff[k] = a - b;
                }
                sum[PAIRS] = s[PAIRS];
            }
            let o = &mut out[r * SINC_FILTERS..];
            self.sinc_even.product(
                self.sinc_even.all(),
                n,
                &sums,
                PAIRS + 1,
                &zeros,
                0,
                o,
                SINC_FILTERS,
            );
            self.sinc_odd.product(
                self.sinc_odd.all(),
                n,
                &diffs,
                PAIRS,
                &zeros,
                0,
                &mut o[HALF..],
                SINC_FILTERS,
            );
        }
        out
    }
}

/// `rows` output rows of `w`'s width, row `i` the product of `x[i * stride..]` (its first
/// `w.rows()` values) with `w`, plus `bias` (`bias_stride` 0: one row for all).
fn convolve(
    w: &PackedMatrix,
    x: &[f32],
    stride: usize,
    rows: usize,
    bias: &[f32],
    bias_stride: usize,
) -> Vec<f32> {
    let c = w.cols();
    let mut out = vec![0.0f32; rows * c];
    for r in (0..rows).step_by(MAX_ROWS) {
        let n = MAX_ROWS.min(rows - r);
        w.product(
            w.all(),
            n,
            &x[r * stride..],
            stride,
            bias,
            bias_stride,
            &mut out[r * c..],
            c,
        );
    }
    out
}

/// Max-pool 3 over time (the tail that does not fill a pool is dropped), instance norm over
/// time per channel (biased variance, eps 1e-5) with its affine, leaky ReLU; channels last.
fn pool_norm_relu(x: &[f32], c: usize, (weight, bias): &(Vec<f32>, Vec<f32>)) -> Vec<f32> {
    let l = x.len() / c / 3;
    let mut y = vec![0.0f32; l * c];
    for (t, row) in y.chunks_exact_mut(c).enumerate() {
        let a = &x[3 * t * c..];
        for (ch, v) in row.iter_mut().enumerate() {
            *v = a[ch].max(a[c + ch]).max(a[2 * c + ch]);
        }
    }
    let mut mean = vec![0.0f64; c];
    for row in y.chunks_exact(c) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= l as f64);
    let mut var = vec![0.0f64; c];
    for row in y.chunks_exact(c) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|ch| {
            let s = weight[ch] as f64 / (var[ch] / l as f64 + EPS).sqrt();
            (s as f32, (bias[ch] as f64 - mean[ch] * s) as f32)
        })
        .unzip();
    for row in y.chunks_exact_mut(c) {
        for ((v, &s), &b) in row.iter_mut().zip(&scale).zip(&shift) {
            let z = *v * s + b;
            *v = z.max(z * LEAKY as f32);
        }
    }
    y
}

/// The 80 sinc filters from their learned cut-offs, as asteroid's `ParamSincFB.filters()`
/// computes them (in f32, the same order of operations): 40 cosine (even) filters, then 40
/// sine (odd) ones; returned as conv1d weights `[80, 1, 251]`.
fn sinc_filters(vb: &VarBuilder, device: &Device) -> Result<Tensor, DiarizeError> {
    const MIN_LOW: f32 = 50.0;
    const MIN_BAND: f32 = 50.0;
    let half = SINC_TAPS / 2;
    let pre = "sincnet.conv1d.0.filterbank";
    let vec = |name: &str, shape: &[usize]| -> Result<Vec<f32>, DiarizeError> {
        Ok(get(vb, MODEL, &format!("{pre}.{name}"), shape)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let low_hz = vec("low_hz_", &[SINC_FILTERS / 2, 1])?;
    let band_hz = vec("band_hz_", &[SINC_FILTERS / 2, 1])?;
    let window = vec("window_", &[half])?;
    let n = vec("n_", &[1, half])?;
    let nyquist = SAMPLE_RATE as f32 / 2.0;
    let mut w = vec![0.0f32; SINC_FILTERS * SINC_TAPS];
    for f in 0..SINC_FILTERS / 2 {
        let low = MIN_LOW + low_hz[f].abs();
        let high = (low + MIN_BAND + band_hz[f].abs()).clamp(MIN_LOW, nyquist);
        let band = high - low;
        let scale = 2.0 * band;
        for k in 0..half {
            let (ft_low, ft_high) = (low * n[k], high * n[k]);
            let cos_left = ((ft_high.sin() - ft_low.sin()) / (n[k] / 2.0)) * window[k];
            let sin_left = ((ft_low.cos() - ft_high.cos()) / (n[k] / 2.0)) * window[k];
            let mirror = SINC_TAPS - 1 - k;
            let (cos, sin) = (f * SINC_TAPS, (SINC_FILTERS / 2 + f) * SINC_TAPS);
            w[cos + k] = cos_left / scale;
            w[cos + mirror] = cos_left / scale;
            w[sin + k] = sin_left / scale;
            w[sin + mirror] = -sin_left / scale;
        }
        w[f * SINC_TAPS + half] = (2.0 * band) / scale;
    }
    Ok(Tensor::from_vec(w, (SINC_FILTERS, 1, SINC_TAPS), device)?)
}

fn scalar(t: &Tensor) -> Result<f64, DiarizeError> {
    Ok(f64::from(t.flatten_all()?.to_vec1::<f32>()?[0]))
}

/// Reads a safetensors file (or `DIR/model.safetensors`) into a var builder.
pub(crate) fn open_weights<'a>(
    path: &Path,
    device: &Device,
    model: &'static str,
    asset: &'static str,
) -> Result<(VarBuilder<'a>, std::path::PathBuf), DiarizeError> {
    let mut path = path.to_path_buf();
    if path.is_dir() {
        path = path.join(Segmentation::FILE);
    }
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| RunError::Weights {
        model,
        asset,
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((VarBuilder::from_tensors(tensors, DType::F32, device), path))
}

/// Names the file in a load error that happened after it was read.
pub(crate) fn with_path(e: DiarizeError, path: &Path, asset: &'static str) -> DiarizeError {
    match e {
        DiarizeError::Run(e) => DiarizeError::Run(e.in_file(asset, path)),
        #[cfg(feature = "media")]
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_strides() {
        assert_eq!(frames_for(WINDOW_SAMPLES), 293);
        assert_eq!(frames_for(RECEPTIVE_FIELD), 1);
        assert_eq!(frames_for(RECEPTIVE_FIELD - 1), 0);
        assert_eq!(frames_for(RECEPTIVE_FIELD + FRAME_STEP), 2);
    }
}
