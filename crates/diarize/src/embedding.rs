//! Speaker embeddings: resemblyzer's GE2E d-vector network and its mel front end in candle.
//!
//! - [`MelFrontEnd`]: librosa's `melspectrogram(sr=16000, n_fft=400, hop_length=160,
//!   n_mels=40)` as resemblyzer calls it: centred frames (200 zeros each side), periodic
//!   Hann window, power spectrum, Slaney mel filters with area normalisation. The DFT is a
//!   matrix product, so the front end runs on any device.
//! - [`SpeakerEncoder`]: three LSTM layers of 256 over mel frames; the last layer's final
//!   hidden state through linear + ReLU, L2-normalised to a 256-d unit vector.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use mica_core::error::RunError;

use crate::DiarizeError;
use crate::lstm::{LstmLayer, get};
use crate::segmentation::{open_weights, with_path};
use crate::threads::par_granules;

/// Mel bands.
pub const MEL_BANDS: usize = 40;
/// FFT length (25 ms).
pub const N_FFT: usize = 400;
/// Samples between mel frames (10 ms).
pub const HOP: usize = 160;
/// Frames of one partial utterance in resemblyzer (1.6 s).
pub const PARTIAL_FRAMES: usize = 160;
/// Embedding dimension.
pub const EMBEDDING_DIM: usize = 256;

const MODEL: &str = "speaker embedding";
const ASSET: &str = "resemblyzer";
const HIDDEN: usize = 256;
const LAYERS: usize = 3;
const BINS: usize = N_FFT / 2 + 1;

/// The mel spectrogram front end.
#[derive(Clone)]
pub struct MelFrontEnd {
    /// Windowed DFT basis `[N_FFT, 2 * BINS]`: cosine columns, then sine.
    dft: Tensor,
    /// Mel filters `[BINS, MEL_BANDS]`.
    mel: Tensor,
    /// The FFT path, on the CPU only: a product with the DFT basis costs 20 times the
    /// arithmetic of an FFT, which only pays on accelerators.
    host: Option<HostMel>,
}

impl std::fmt::Debug for MelFrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontEnd")
            .field("dft", &self.dft)
            .field("mel", &self.mel)
            .field("host", &self.host.is_some())
            .finish()
    }
}

/// [`MelFrontEnd`] on the CPU: a planned FFT, the window, and each mel filter as its
/// non-zero span of bins.
#[derive(Clone)]
struct HostMel {
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    /// Per band: the first bin and the weights from there.
    filters: Vec<(usize, Vec<f32>)>,
}

impl MelFrontEnd {
    /// Builds the DFT basis and mel filters on `device`.
    pub fn new(device: &Device) -> Result<MelFrontEnd, DiarizeError> {
        let window: Vec<f64> = (0..N_FFT)
            .map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64).cos())
            .collect();
        let mut dft = vec![0.0f32; N_FFT * 2 * BINS];
        for (k, w) in window.iter().enumerate() {
            for f in 0..BINS {
                // k * f mod N_FFT keeps the angle small, so cos/sin stay exact for large k * f.
                let angle = 2.0 * std::f64::consts::PI * ((k * f) % N_FFT) as f64 / N_FFT as f64;
                dft[k * 2 * BINS + f] = (w * angle.cos()) as f32;
                dft[k * 2 * BINS + BINS + f] = (w * angle.sin()) as f32;
            }
        }
        let dft = Tensor::from_vec(dft, (N_FFT, 2 * BINS), device)?;
        let filters = mel_filters();
        let host = device.is_cpu().then(|| HostMel {
            fft: FftPlanner::new().plan_fft_forward(N_FFT),
            window: window.iter().map(|&w| w as f32).collect(),
            filters: filters
                .chunks(BINS)
                .map(|band| {
                    let first = band.iter().position(|&w| w != 0.0).unwrap_or(0);
                    let last = band
                        .iter()
                        .rposition(|&w| w != 0.0)
                        .map_or(first, |l| l + 1);
                    (first, band[first..last].to_vec())
                })
                .collect(),
        });
        let mel = Tensor::from_vec(filters, (MEL_BANDS, BINS), device)?
            .t()?
            .contiguous()?;
        Ok(MelFrontEnd { dft, mel, host })
    }

    /// Frames for `samples` samples: `1 + samples / HOP` (centred framing).
    pub fn frames_for(samples: usize) -> usize {
        1 + samples / HOP
    }

    /// Mel power spectrogram `[B, frames_for(n), MEL_BANDS]` of audio rows `[B, n]`.
    pub fn forward(&self, audio: &Tensor) -> Result<Tensor, DiarizeError> {
        let (b, n) = audio.dims2().map_err(|_| RunError::InputShape {
            what: "mel input",
            found: audio.dims().to_vec(),
            expected: "[batch, samples]".into(),
        })?;
        let frames = Self::frames_for(n);
        if let Some(host) = &self.host {
            let samples = audio.flatten_all()?.to_vec1::<f32>()?;
            let out = host.forward(&samples, b, n);
            return Ok(Tensor::from_vec(
                out,
                (b, frames, MEL_BANDS),
                audio.device(),
            )?);
        }
        // Frame m is padded samples [160 m, 160 m + 400): pairs of hops m and m + 1 of 160
        // samples and the first half of hop m + 2. Pad to whole hops past the last frame.
        let hops = frames + 2;
        let half = N_FFT / 2;
        let padded = audio.pad_with_zeros(1, half, hops * HOP - n - half)?;
        let p = padded.reshape((b, hops, HOP))?;
        let rows = Tensor::cat(
            &[
                p.narrow(1, 0, frames)?,
                p.narrow(1, 1, frames)?,
                p.narrow(1, 2, frames)?.narrow(2, 0, N_FFT - 2 * HOP)?,
            ],
            2,
        )?
        .reshape((b * frames, N_FFT))?;
        let spec = rows.matmul(&self.dft)?;
        let power = (spec.narrow(1, 0, BINS)?.sqr()? + spec.narrow(1, BINS, BINS)?.sqr()?)?;
        Ok(power.matmul(&self.mel)?.reshape((b, frames, MEL_BANDS))?)
    }
}

impl HostMel {
    /// `[B * frames * MEL_BANDS]` for `b` rows of `n` samples, rows spread over threads.
    fn forward(&self, audio: &[f32], b: usize, n: usize) -> Vec<f32> {
        let frames = MelFrontEnd::frames_for(n);
        let mut out = vec![0.0f32; b * frames * MEL_BANDS];
        par_granules(&mut out, frames * MEL_BANDS, |offset, run| {
            let mut buf = vec![Complex::default(); frames * N_FFT];
            let mut scratch = vec![Complex::default(); self.fft.get_inplace_scratch_len()];
            let first = offset / (frames * MEL_BANDS);
            for (r, row_out) in run.chunks_mut(frames * MEL_BANDS).enumerate() {
                let row = &audio[(first + r) * n..][..n];
                self.row(row, &mut buf, &mut scratch, row_out);
            }
        });
        out
    }

    /// One row: centred frames (zeros past both ends), windowed, one batched FFT, power,
    /// then the mel filters over their spans.
    fn row(
        &self,
        x: &[f32],
        buf: &mut [Complex<f32>],
        scratch: &mut [Complex<f32>],
        out: &mut [f32],
    ) {
        let half = N_FFT / 2;
        for (m, frame) in buf.chunks_exact_mut(N_FFT).enumerate() {
            let start = (m * HOP) as isize - half as isize;
            for (k, (v, &w)) in frame.iter_mut().zip(&self.window).enumerate() {
                let i = start + k as isize;
                let s = if i >= 0 && (i as usize) < x.len() {
                    x[i as usize]
                } else {
                    0.0
                };
                *v = Complex::new(s * w, 0.0);
            }
        }
        self.fft.process_with_scratch(buf, scratch);
        let mut power = [0.0f32; BINS];
        for (frame, mel) in buf.chunks_exact(N_FFT).zip(out.chunks_exact_mut(MEL_BANDS)) {
            for (p, v) in power.iter_mut().zip(frame) {
                *p = v.norm_sqr();
            }
            for (m, (first, w)) in mel.iter_mut().zip(&self.filters) {
                *m = w.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
            }
        }
    }
}

/// librosa's Slaney mel scale.
fn hz_to_mel(f: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() / logstep
    } else {
        f / (200.0 / 3.0)
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if m >= 15.0 {
        1000.0 * (logstep * (m - 15.0)).exp()
    } else {
        (200.0 / 3.0) * m
    }
}

/// librosa `filters.mel(sr=16000, n_fft=400, n_mels=40)`: triangles on the Slaney mel
/// scale from 0 to 8 kHz, area-normalised, computed in f64 and stored as f32, `[40, 201]`.
fn mel_filters() -> Vec<f32> {
    let sr = 16_000.0;
    let fft: Vec<f64> = (0..BINS)
        .map(|i| i as f64 * (sr / 2.0) / (BINS - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let pts: Vec<f64> = (0..MEL_BANDS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (MEL_BANDS + 1) as f64))
        .collect();
    let mut w = vec![0.0f32; MEL_BANDS * BINS];
    for m in 0..MEL_BANDS {
        let enorm = 2.0 / (pts[m + 2] - pts[m]);
        for (k, &f) in fft.iter().enumerate() {
            let lower = (f - pts[m]) / (pts[m + 1] - pts[m]);
            let upper = (pts[m + 2] - f) / (pts[m + 2] - pts[m + 1]);
            w[m * BINS + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

/// The d-vector network, loaded once and shared (`Arc`) by every worker.
#[derive(Debug, Clone)]
pub struct SpeakerEncoder {
    lstm: Vec<LstmLayer>,
    /// `[HIDDEN, EMBEDDING_DIM]`.
    linear_w: Tensor,
    linear_b: Tensor,
    mel: MelFrontEnd,
    device: Device,
}

impl SpeakerEncoder {
    /// The file name inside a model directory.
    pub const FILE: &'static str = "model.safetensors";
    /// The model store asset.
    pub const ASSET: &'static str = ASSET;

    /// Loads the network from tensors named as resemblyzer's `model_state`.
    pub fn load(vb: VarBuilder) -> Result<SpeakerEncoder, DiarizeError> {
        let lstm_vb = vb.pp("lstm");
        let mut lstm = Vec::with_capacity(LAYERS);
        for l in 0..LAYERS {
            let input = if l == 0 { MEL_BANDS } else { HIDDEN };
            lstm.push(LstmLayer::load(
                &lstm_vb,
                MODEL,
                &format!("l{l}"),
                input,
                HIDDEN,
            )?);
        }
        let linear_w = get(&vb, MODEL, "linear.weight", &[EMBEDDING_DIM, HIDDEN])?
            .t()?
            .contiguous()?;
        let linear_b = get(&vb, MODEL, "linear.bias", &[EMBEDDING_DIM])?;
        Ok(SpeakerEncoder {
            lstm,
            linear_w,
            linear_b,
            mel: MelFrontEnd::new(vb.device())?,
            device: vb.device().clone(),
        })
    }

    /// Loads a converted safetensors file (or a directory holding [`Self::FILE`]).
    pub fn from_path(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Arc<SpeakerEncoder>, DiarizeError> {
        let (vb, path) = open_weights(path.as_ref(), device, MODEL, ASSET)?;
        let model = SpeakerEncoder::load(vb).map_err(|e| with_path(e, &path, ASSET))?;
        tracing::debug!("loaded the speaker encoder from {}", path.display());
        Ok(Arc::new(model))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The mel front end.
    pub fn mel(&self) -> &MelFrontEnd {
        &self.mel
    }

    /// The same network without its CPU kernels: candle ops only, as accelerators run it
    /// (for checking the kernels against it; slower on the CPU).
    pub fn generic(&self) -> SpeakerEncoder {
        SpeakerEncoder {
            lstm: self.lstm.iter().map(LstmLayer::generic).collect(),
            mel: MelFrontEnd {
                host: None,
                ..self.mel.clone()
            },
            ..self.clone()
        }
    }

    /// Unit-length embeddings `[B, EMBEDDING_DIM]` of mel sequences `[B, T, MEL_BANDS]`;
    /// sequence b is its first `lengths[b]` frames (1 to T): the padding after it never
    /// reaches its final state, since the network only looks back.
    pub fn embed(&self, mels: &Tensor, lengths: &[usize]) -> Result<Tensor, DiarizeError> {
        let (b, t, bands) = mels.dims3().map_err(|_| RunError::InputShape {
            what: "mel sequences",
            found: mels.dims().to_vec(),
            expected: format!("[batch, frames, {MEL_BANDS}]"),
        })?;
        if bands != MEL_BANDS || lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            return Err(RunError::InputShape {
                what: "mel sequences",
                found: mels.dims().to_vec(),
                expected: format!(
                    "[batch, frames, {MEL_BANDS}] with one length in 1..=frames per sequence"
                ),
            }
            .into());
        }
        let host = match mels.device() {
            Device::Cpu => {
                let x = mels.flatten_all()?.to_vec1::<f32>()?;
                LstmLayer::last_states(&self.lstm, &x, t, lengths)
            }
            _ => None,
        };
        let states = match host {
            Some(states) => Tensor::from_vec(states, (b, HIDDEN), mels.device())?,
            None => {
                let mut xs = mels.clone();
                for layer in &self.lstm {
                    xs = layer.forward(&xs)?;
                }
                // Each sequence's last real step, gathered in one op (one launch on
                // accelerators).
                let last: Vec<u32> = lengths
                    .iter()
                    .enumerate()
                    .map(|(i, &len)| (i * t + len - 1) as u32)
                    .collect();
                let last = Tensor::from_vec(last, b, xs.device())?;
                xs.reshape((b * t, HIDDEN))?.index_select(&last, 0)?
            }
        };
        let raw = states
            .matmul(&self.linear_w)?
            .broadcast_add(&self.linear_b)?
            .relu()?;
        // A vector the ReLU zeroed entirely stays zero rather than becoming NaN.
        let norm = raw.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        Ok(raw.broadcast_div(&norm)?.to_dtype(DType::F32)?)
    }
}

impl SpeakerEncoder {
    /// The unit-length embedding of one speaker's clip of 16 kHz samples (at least 400,
    /// a mel frame's worth): its mel frames cut into equal partials of at most
    /// [`PARTIAL_FRAMES`], embedded in one batch and averaged by length, as the pipeline
    /// does for each local speaker.
    pub fn embed_clip(&self, samples: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        if samples.len() < N_FFT {
            return Err(RunError::InputShape {
                what: "speaker clip",
                found: vec![samples.len()],
                expected: format!("at least {N_FFT} samples"),
            }
            .into());
        }
        let input = Tensor::from_slice(samples, (1, samples.len()), &self.device)?;
        let mels = self.mel.forward(&input)?.flatten_all()?.to_vec1::<f32>()?;
        let frames = mels.len() / MEL_BANDS;
        let parts = frames.div_ceil(PARTIAL_FRAMES);
        let size = frames.div_ceil(parts);
        let lengths: Vec<usize> = (0..parts).map(|p| size.min(frames - p * size)).collect();
        let mut data = vec![0.0f32; parts * size * MEL_BANDS];
        for (p, &len) in lengths.iter().enumerate() {
            let src = &mels[p * size * MEL_BANDS..(p * size + len) * MEL_BANDS];
            data[p * size * MEL_BANDS..][..src.len()].copy_from_slice(src);
        }
        let batch = Tensor::from_vec(data, (parts, size, MEL_BANDS), &self.device)?;
        let emb = self
            .embed(&batch, &lengths)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut sum = vec![0.0f32; EMBEDDING_DIM];
        for (p, &len) in lengths.iter().enumerate() {
            let e = &emb[p * EMBEDDING_DIM..(p + 1) * EMBEDDING_DIM];
            sum.iter_mut()
                .zip(e)
                .for_each(|(a, x)| *a += x * len as f32);
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        sum.iter_mut().for_each(|x| *x /= norm);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU's FFT path and the accelerators' DFT-product path agree (both are checked
    /// against librosa through the CPU in tests/parity.rs; this covers the other one).
    #[test]
    fn fft_and_dft_paths_agree() -> Result<(), DiarizeError> {
        let dev = Device::Cpu;
        let x = (Tensor::rand(-1f32, 1.0, (3, 5_000), &dev)? * 0.3)?;
        let mut front = MelFrontEnd::new(&dev)?;
        let fft = front.forward(&x)?;
        front.host = None;
        let dft = front.forward(&x)?;
        assert_eq!(fft.dims(), &[3, MelFrontEnd::frames_for(5_000), MEL_BANDS]);
        let rel = ((&fft - &dft)?.abs()? / (dft.abs()? + 1e-6)?)?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(rel < 1e-4, "{rel}");
        Ok(())
    }
}
