//! Whisper's log-mel front end, as openai's `log_mel_spectrogram` computes it.
//!
//! 16 kHz audio, `n_fft` 400 (25 ms), hop 160 (10 ms), periodic Hann window, centred frames
//! (reflect padding of 200 samples), power spectrum, Slaney-normalised mel filters computed
//! here (the same numbers as librosa's `filters.mel`, which openai ships as
//! `mel_filters.npz`), `log10(max(x, 1e-10))`, floored at the global maximum minus 8, then
//! `(x + 4) / 4`.
//!
//! As in openai's `transcribe`, the audio is padded with 30 s of zeros before the STFT, so
//! every window of 3000 frames that starts inside the audio is complete, and the global
//! maximum is that of the whole (padded) input.

use mica_core::error::RunError;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::AsrError;

/// Sample rate of the features.
pub const SAMPLE_RATE: usize = 16_000;
/// FFT length (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms).
pub const HOP: usize = 160;
/// Frames per 30 s window.
pub const WINDOW_FRAMES: usize = 3000;
/// Samples of zeros appended before the STFT (30 s).
pub const PAD_SAMPLES: usize = WINDOW_FRAMES * HOP;
/// Frequency bins of the power spectrum.
pub const N_BINS: usize = N_FFT / 2 + 1;

/// A log-mel spectrogram: `n_mels` rows of `total_frames` frames, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    n_mels: usize,
    n_frames: usize,
    total_frames: usize,
    data: Vec<f32>,
}

impl Mel {
    /// Mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Frames of the audio itself: `samples / 160`.
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// Frames stored: the audio's plus the 3000 frames of the 30 s zero padding.
    pub fn total_frames(&self) -> usize {
        self.total_frames
    }

    /// All values, `[n_mels, total_frames]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mel row `m` (all stored frames).
    pub fn row(&self, m: usize) -> &[f32] {
        &self.data[m * self.total_frames..(m + 1) * self.total_frames]
    }
}

/// The log-mel front end for one mel size (80 or 128 bins).
#[derive(Clone)]
pub struct LogMel {
    n_mels: usize,
    /// `[n_mels, N_BINS]` row-major.
    filters: Vec<f32>,
    /// `[N_BINS, n_mels]`, for the filter-bank GEMM.
    filters_t: Tensor,
    window: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// The front end for `n_mels` bins (80 for every checkpoint but large-v3/turbo's 128).
    pub fn new(n_mels: usize) -> Result<LogMel, AsrError> {
        let filters = mel_filters(n_mels)?;
        let filters_t = Tensor::from_slice(&filters, (n_mels, N_BINS), &Device::Cpu)?
            .t()?
            .contiguous()?;
        let window = (0..N_FFT)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        Ok(LogMel {
            n_mels,
            filters,
            filters_t,
            window,
            fft,
        })
    }

    /// Mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The filter bank, `[n_mels, 201]` row-major.
    pub fn filters(&self) -> &[f32] {
        &self.filters
    }

    /// The log-mel spectrogram of 16 kHz mono `samples` followed by 30 s of zeros, with
    /// the global maximum over all of it (openai's `log_mel_spectrogram(audio,
    /// padding=N_SAMPLES)`).
    pub fn compute(&self, samples: &[f32]) -> Result<Mel, AsrError> {
        RunError::check_finite("audio sample", samples, 0)?;
        let _span = tracing::trace_span!("log_mel", samples = samples.len()).entered();
        let n = samples.len();
        let n_frames = n / HOP;
        let total = n_frames + WINDOW_FRAMES;
        // Frames past `live` see only zeros: their power is 0.
        let live = (n + N_FFT / 2).div_ceil(HOP).min(total);
        let power = self.power(samples, live);
        let mel = Tensor::from_vec(power, (live, N_BINS), &Device::Cpu)?
            .matmul(&self.filters_t)?
            .t()?
            .contiguous()?;
        let mut data = vec![0.0f32; self.n_mels * total];
        let mel = mel.flatten_all()?.to_vec1::<f32>()?;
        let floor = 1e-10f32.log10();
        let mut max = f32::NEG_INFINITY;
        for m in 0..self.n_mels {
            let row = &mut data[m * total..(m + 1) * total];
            for (dst, &v) in row.iter_mut().zip(&mel[m * live..(m + 1) * live]) {
                *dst = v.max(1e-10).log10();
            }
            row[live..].fill(floor);
            max = row.iter().fold(max, |a, &b| a.max(b));
        }
        let min = max - 8.0;
        for v in &mut data {
            *v = (v.max(min) + 4.0) / 4.0;
        }
        Ok(Mel {
            n_mels: self.n_mels,
            n_frames,
            total_frames: total,
            data,
        })
    }

    /// The same features as [`LogMel::compute`], `[n_mels, total_frames]` f32 on `device`:
    /// the STFT runs on the host, the filter bank, log and normalisation on the device (on
    /// a GPU the largest part of the work, and the features never come back to the host).
    /// Cut windows with [`mel_window`].
    pub fn compute_on(&self, samples: &[f32], device: &Device) -> Result<Tensor, AsrError> {
        RunError::check_finite("audio sample", samples, 0)?;
        let n = samples.len();
        let total = n / HOP + WINDOW_FRAMES;
        let live = (n + N_FFT / 2).div_ceil(HOP).min(total);
        let power = Tensor::from_vec(self.power(samples, live), (live, N_BINS), device)?;
        let mel = power.matmul(&self.filters_t.to_device(device)?)?.t()?;
        let log = (mel.clamp(1e-10f32, f32::MAX)?.log()? * std::f64::consts::LOG10_E)?;
        let log = if live < total {
            let floor = Tensor::full(1e-10f32.log10(), (self.n_mels, total - live), device)?;
            Tensor::cat(&[&log, &floor], 1)?
        } else {
            log.contiguous()?
        };
        let max = log.flatten_all()?.max_keepdim(0)?.reshape((1, 1))?;
        let floor = (max - 8.0)?;
        Ok(((log.broadcast_maximum(&floor)? + 4.0)? / 4.0)?)
    }

    /// Power spectra of the first `frames` centred frames, `[frames, N_BINS]` row-major.
    fn power(&self, samples: &[f32], frames: usize) -> Vec<f32> {
        let n = samples.len() as isize;
        let half = (N_FFT / 2) as isize;
        // Sample `i` of the reflect-padded signal (zeros past the end: the 30 s padding).
        let at = |i: isize| -> f32 {
            let mut j = i - half;
            if j < 0 {
                j = -j;
            }
            if j < n { samples[j as usize] } else { 0.0 }
        };
        let mut out = vec![0.0f32; frames * N_BINS];
        out.par_chunks_mut(N_BINS * 64)
            .enumerate()
            .for_each(|(chunk, rows)| {
                let mut buf = vec![Complex::new(0.0f32, 0.0); N_FFT];
                let mut scratch =
                    vec![Complex::new(0.0f32, 0.0); self.fft.get_inplace_scratch_len()];
                for (k, row) in rows.chunks_mut(N_BINS).enumerate() {
                    let start = ((chunk * 64 + k) * HOP) as isize;
                    for (i, c) in buf.iter_mut().enumerate() {
                        *c = Complex::new(at(start + i as isize) * self.window[i], 0.0);
                    }
                    self.fft.process_with_scratch(&mut buf, &mut scratch);
                    for (dst, c) in row.iter_mut().zip(&buf) {
                        *dst = c.norm_sqr();
                    }
                }
            });
        out
    }
}

/// Slaney-style mel filter bank for 16 kHz and `n_fft` 400 (librosa `filters.mel` with
/// `htk=False, norm="slaney"`, fmin 0, fmax 8000): `[n_mels, 201]` row-major.
pub fn mel_filters(n_mels: usize) -> Result<Vec<f32>, AsrError> {
    if !(1..=256).contains(&n_mels) {
        return Err(AsrError::MelFilters {
            n_mels,
            reason: "the bin count must be between 1 and 256".into(),
        });
    }
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= MIN_LOG_HZ {
            min_log_mel + (f / MIN_LOG_HZ).ln() / logstep
        } else {
            f / F_SP
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= min_log_mel {
            MIN_LOG_HZ * (logstep * (m - min_log_mel)).exp()
        } else {
            F_SP * m
        }
    };
    let fmax = SAMPLE_RATE as f64 / 2.0;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_f: Vec<f64> = (0..N_BINS)
        .map(|k| fmax * k as f64 / (N_BINS - 1) as f64)
        .collect();
    let mut out = vec![0.0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let (f0, f1, f2) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (f2 - f0);
        for (k, &f) in fft_f.iter().enumerate() {
            let lower = (f - f0) / (f1 - f0);
            let upper = (f2 - f) / (f2 - f1);
            out[m * N_BINS + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    Ok(out)
}

/// Windows of exactly 3000 frames, stacked for a batch: `[B, n_mels, 3000]` f32 on
/// `device`. Window `i` starts at frame `windows[i].1` of `windows[i].0`; frames past the
/// stored ones are zeros (openai's `pad_or_trim`).
pub fn mel_batch(windows: &[(&Mel, usize)], device: &Device) -> Result<Tensor, AsrError> {
    let Some((first, _)) = windows.first() else {
        return Err(RunError::InputShape {
            what: "mel windows",
            found: vec![0],
            expected: "at least one window".into(),
        }
        .into());
    };
    let n_mels = first.n_mels;
    let mut out = vec![0.0f32; windows.len() * n_mels * WINDOW_FRAMES];
    for (b, (mel, start)) in windows.iter().enumerate() {
        if mel.n_mels != n_mels {
            return Err(RunError::InputShape {
                what: "mel windows",
                found: vec![mel.n_mels],
                expected: format!("{n_mels} mel bins in every window"),
            }
            .into());
        }
        let from = (*start).min(mel.total_frames);
        let to = (start + WINDOW_FRAMES).min(mel.total_frames);
        for m in 0..n_mels {
            let dst = &mut out[(b * n_mels + m) * WINDOW_FRAMES..][..to - from];
            dst.copy_from_slice(&mel.row(m)[from..to]);
        }
    }
    Ok(
        Tensor::from_vec(out, (windows.len(), n_mels, WINDOW_FRAMES), &Device::Cpu)?
            .to_device(device)?
            .to_dtype(DType::F32)?,
    )
}

/// A window of exactly 3000 frames from a device mel of [`LogMel::compute_on`]
/// (`[n_mels, total_frames]`) starting at `start`, zero-padded past the end:
/// `[n_mels, 3000]`. Stack windows with `Tensor::stack(&windows, 0)` for
/// [`crate::Whisper::encode`].
pub fn mel_window(mel: &Tensor, start: usize) -> Result<Tensor, AsrError> {
    let (n_mels, total) = mel.dims2()?;
    let from = start.min(total);
    let len = (total - from).min(WINDOW_FRAMES);
    let part = mel.narrow(1, from, len)?;
    if len == WINDOW_FRAMES {
        return Ok(part.contiguous()?);
    }
    let pad = Tensor::zeros((n_mels, WINDOW_FRAMES - len), mel.dtype(), mel.device())?;
    Ok(Tensor::cat(&[&part, &pad], 1)?)
}

/// Mel frames per second (100).
pub(crate) const FRAMES_PER_SECOND: f64 = SAMPLE_RATE as f64 / HOP as f64;

/// `[B, n_mels, 3000]` windows of `mel`: `(start frame, frames)` each; frames past `frames`
/// are zeros, as openai pads a short last window (`pad_or_trim` of the cut mel).
pub(crate) fn mel_windows(
    mel: &Mel,
    windows: &[(usize, usize)],
    device: &Device,
) -> Result<Tensor, AsrError> {
    mel_windows_of(mel, windows, WINDOW_FRAMES, device)
}

/// [`mel_windows`] padded to `width` frames (at most [`WINDOW_FRAMES`]) instead of 3000.
pub(crate) fn mel_windows_of(
    mel: &Mel,
    windows: &[(usize, usize)],
    width: usize,
    device: &Device,
) -> Result<Tensor, AsrError> {
    let width = width.min(WINDOW_FRAMES);
    let n_mels = mel.n_mels();
    let mut out = vec![0.0f32; windows.len() * n_mels * width];
    for (b, &(start, frames)) in windows.iter().enumerate() {
        let from = start.min(mel.total_frames());
        let to = (start + frames.min(width)).min(mel.total_frames());
        for m in 0..n_mels {
            out[(b * n_mels + m) * width..][..to - from].copy_from_slice(&mel.row(m)[from..to]);
        }
    }
    Ok(Tensor::from_vec(out, (windows.len(), n_mels, width), &Device::Cpu)?.to_device(device)?)
}

/// The frames a window of `frames` mel frames is padded to: 3000, or with a reduced audio
/// context of at least `min_seconds`, the next whole second (even, as the encoder's
/// stride-2 convolution needs).
pub(crate) fn window_width(frames: usize, min_seconds: Option<f64>) -> usize {
    match min_seconds {
        None => WINDOW_FRAMES,
        Some(s) => {
            let second = FRAMES_PER_SECOND as usize;
            let least = (s * FRAMES_PER_SECOND).ceil() as usize;
            frames
                .div_ceil(second)
                .saturating_mul(second)
                .max(least)
                .clamp(2, WINDOW_FRAMES)
                .next_multiple_of(2)
                .min(WINDOW_FRAMES)
        }
    }
}

/// A frame whose loudest mel bin is within this much (log10 power) of the features' floor
/// is silent: the floor is 8 (80 dB) under the loudest value, so this is 60 dB under it,
/// well below any room noise or hum; only digital (or dithered) silence is this quiet.
const SILENCE_ABOVE_FLOOR: f32 = 2.0;

/// Which of `mel`'s first `n_frames` frames are digital silence.
pub(crate) fn silent_frames(mel: &Mel) -> Vec<bool> {
    let n = mel.n_frames();
    let mut loudest = vec![f32::NEG_INFINITY; n];
    let mut max = f32::NEG_INFINITY;
    for m in 0..mel.n_mels() {
        let row = mel.row(m);
        max = row.iter().fold(max, |a, &b| a.max(b));
        for (l, &v) in loudest.iter_mut().zip(&row[..n]) {
            *l = l.max(v);
        }
    }
    // The features are (log10 + 4) / 4, floored at the maximum minus 8 (2 after scaling).
    let threshold = max - 2.0 + SILENCE_ABOVE_FLOOR / 4.0;
    loudest.into_iter().map(|l| l <= threshold).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reduced_audio_context_pads_to_whole_seconds() {
        assert_eq!(window_width(250, None), WINDOW_FRAMES);
        assert_eq!(window_width(250, Some(15.0)), 1500);
        assert_eq!(window_width(1_601, Some(15.0)), 1700);
        assert_eq!(window_width(2_999, Some(1.0)), WINDOW_FRAMES);
        assert_eq!(window_width(0, Some(1.0)), 100);
        assert_eq!(window_width(5_000, Some(30.0)), WINDOW_FRAMES);
    }

    #[test]
    fn filters_are_triangles() -> Result<(), AsrError> {
        let f = mel_filters(80)?;
        // Every filter has some weight, and no bin has negative weight.
        for m in 0..80 {
            assert!(f[m * N_BINS..(m + 1) * N_BINS].iter().any(|&v| v > 0.0));
        }
        assert!(f.iter().all(|&v| v >= 0.0));
        assert!(mel_filters(0).is_err());
        Ok(())
    }

    #[test]
    fn silence_is_flat_and_shapes_add_up() -> Result<(), AsrError> {
        let lm = LogMel::new(80)?;
        let mel = lm.compute(&vec![0.0; 16_000])?;
        assert_eq!(mel.n_frames(), 100);
        assert_eq!(mel.total_frames(), 3100);
        // All zeros: log10(1e-10) everywhere, so (−10 + 4) / 4.
        assert!(mel.data().iter().all(|&v| (v + 1.5).abs() < 1e-6));
        let t = mel_batch(&[(&mel, 0), (&mel, 3000)], &Device::Cpu)?;
        assert_eq!(t.dims(), &[2, 80, 3000]);
        let second = t.get(1)?.flatten_all()?.to_vec1::<f32>()?;
        // Past the stored frames the window is zero-padded.
        assert_eq!(second[99], -1.5);
        assert_eq!(second[100], 0.0);
        Ok(())
    }

    #[test]
    fn device_mel_equals_host_mel() -> Result<(), AsrError> {
        let lm = LogMel::new(80)?;
        let x: Vec<f32> = (0..40_123)
            .map(|i| (i as f32 * 0.031).sin() * 0.3 + ((i * 7919) % 101) as f32 * 1e-3)
            .collect();
        let host = lm.compute(&x)?;
        let dev = lm.compute_on(&x, &Device::Cpu)?;
        assert_eq!(dev.dims(), &[80, host.total_frames()]);
        let want = mel_batch(&[(&host, 100)], &Device::Cpu)?.squeeze(0)?;
        let got = mel_window(&dev, 100)?;
        let d = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-5, "device mel differs by {d}");
        Ok(())
    }

    #[test]
    fn non_finite_rejected() -> Result<(), AsrError> {
        let lm = LogMel::new(80)?;
        assert!(matches!(
            lm.compute(&[0.0, f32::NAN]),
            Err(AsrError::Run(RunError::NonFinite { index: 1, .. }))
        ));
        Ok(())
    }
}
