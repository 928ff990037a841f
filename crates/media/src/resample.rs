//! Streaming mono resampling to 16 kHz with an exact output length.
//!
//! rubato works on fixed input blocks and delays its output by a few dozen samples, so a
//! naive stream loses the tail and gains a lead-in. We drop the first `output_delay()` samples,
//! and at the end flush with zeros until exactly `round(n_in * 16000 / rate_in)` samples have
//! come out, so sample positions line up with the source timeline.

use std::collections::VecDeque;

use rubato::{
    FftFixedIn, SincFixedIn, SincInterpolationParameters, SincInterpolationType, VecResampler,
    WindowFunction,
};

use super::audio::SAMPLE_RATE;

/// Input block size handed to rubato: small enough to keep latency and buffers tiny.
const BLOCK: usize = 1024;
/// Above this reduced input/output ratio the FFT resampler's block gets too large; a sinc
/// resampler handles such odd rates instead.
const MAX_FFT_RATIO_TERM: u32 = 2048;

/// Converts a mono stream at `rate_in` to [`SAMPLE_RATE`].
pub(crate) struct Resampler {
    rate_in: u32,
    /// `None` when the input is already at the target rate.
    inner: Option<Box<dyn VecResampler<f32>>>,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    /// Delay samples still to drop from the front of the output.
    skip: usize,
    n_in: u64,
    n_out: u64,
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The number of output samples for `n_in` input samples at `rate_in`.
pub(crate) fn expected_len(n_in: u64, rate_in: u32) -> u64 {
    if rate_in == 0 {
        return 0;
    }
    let num = u128::from(n_in) * u128::from(SAMPLE_RATE);
    let den = u128::from(rate_in);
    u64::try_from((num + den / 2) / den).unwrap_or(u64::MAX)
}

impl Resampler {
    /// A resampler from `rate_in` Hz; `Err` carries rubato's reason.
    pub(crate) fn new(rate_in: u32) -> Result<Resampler, String> {
        if rate_in == 0 {
            return Err("the sample rate is 0".to_string());
        }
        let inner: Option<Box<dyn VecResampler<f32>>> = if rate_in == SAMPLE_RATE {
            None
        } else if rate_in / gcd(rate_in, SAMPLE_RATE) <= MAX_FFT_RATIO_TERM {
            Some(Box::new(
                FftFixedIn::<f32>::new(rate_in as usize, SAMPLE_RATE as usize, BLOCK, 2, 1)
                    .map_err(|e| e.to_string())?,
            ))
        } else {
            let params = SincInterpolationParameters {
                sinc_len: 256,
                f_cutoff: rubato::calculate_cutoff(256, WindowFunction::BlackmanHarris2),
                oversampling_factor: 256,
                interpolation: SincInterpolationType::Cubic,
                window: WindowFunction::BlackmanHarris2,
            };
            Some(Box::new(
                SincFixedIn::<f32>::new(
                    f64::from(SAMPLE_RATE) / f64::from(rate_in),
                    1.0,
                    params,
                    BLOCK,
                    1,
                )
                .map_err(|e| e.to_string())?,
            ))
        };
        let (input, output, skip) = match &inner {
            Some(r) => (
                vec![Vec::with_capacity(r.input_frames_max())],
                r.output_buffer_allocate(true),
                r.output_delay(),
            ),
            None => (vec![Vec::new()], vec![Vec::new()], 0),
        };
        Ok(Resampler {
            rate_in,
            inner,
            input,
            output,
            skip,
            n_in: 0,
            n_out: 0,
        })
    }

    /// The input rate in Hz.
    pub(crate) fn rate_in(&self) -> u32 {
        self.rate_in
    }

    /// Samples produced so far.
    pub(crate) fn produced(&self) -> u64 {
        self.n_out
    }

    /// Resamples `samples`, appending whatever output is ready to `out`.
    pub(crate) fn push(
        &mut self,
        mut samples: &[f32],
        out: &mut VecDeque<f32>,
    ) -> Result<(), String> {
        self.n_in += samples.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            out.extend(samples);
            self.n_out += samples.len() as u64;
            return Ok(());
        };
        while !samples.is_empty() {
            let need = inner.input_frames_next();
            let pending = &mut self.input[0];
            let take = need.saturating_sub(pending.len()).min(samples.len());
            pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if pending.len() >= need {
                let (_, produced) = inner
                    .process_into_buffer(&self.input, &mut self.output, None)
                    .map_err(|e| e.to_string())?;
                self.input[0].clear();
                emit(
                    &self.output[0][..produced],
                    &mut self.skip,
                    &mut self.n_out,
                    None,
                    out,
                );
            }
        }
        Ok(())
    }

    /// Flushes the tail: after this `out` has received exactly `expected_len(n_in)` samples
    /// in total (unless more had already been pushed out, which the delay prevents).
    pub(crate) fn finish(&mut self, out: &mut VecDeque<f32>) -> Result<(), String> {
        let target = expected_len(self.n_in, self.rate_in);
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        if !self.input[0].is_empty() {
            let (_, produced) = inner
                .process_partial_into_buffer(Some(&self.input), &mut self.output, None)
                .map_err(|e| e.to_string())?;
            self.input[0].clear();
            emit(
                &self.output[0][..produced],
                &mut self.skip,
                &mut self.n_out,
                Some(target),
                out,
            );
        }
        // Each zero block yields at least one output sample, so this ends; the bound is a
        // guard against a resampler that reports zero output forever.
        let mut guard = 0;
        while self.n_out < target && guard < 1_000 {
            let (_, produced) = inner
                .process_partial_into_buffer(None, &mut self.output, None)
                .map_err(|e| e.to_string())?;
            emit(
                &self.output[0][..produced],
                &mut self.skip,
                &mut self.n_out,
                Some(target),
                out,
            );
            guard += 1;
        }
        Ok(())
    }
}

/// Appends `block` to `out` after dropping the remaining delay and stopping at `limit`.
fn emit(
    block: &[f32],
    skip: &mut usize,
    n_out: &mut u64,
    limit: Option<u64>,
    out: &mut VecDeque<f32>,
) {
    let dropped = (*skip).min(block.len());
    *skip -= dropped;
    let mut block = &block[dropped..];
    if let Some(limit) = limit {
        let room = usize::try_from(limit.saturating_sub(*n_out)).unwrap_or(usize::MAX);
        block = &block[..block.len().min(room)];
    }
    out.extend(block);
    *n_out += block.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: u32, n: usize, push_size: usize) -> Result<Vec<f32>, String> {
        let freq = 440.0;
        let input: Vec<f32> = (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect();
        let mut r = Resampler::new(rate)?;
        let mut out = VecDeque::new();
        for block in input.chunks(push_size.max(1)) {
            r.push(block, &mut out)?;
        }
        r.finish(&mut out)?;
        Ok(out.into_iter().collect())
    }

    #[test]
    fn exact_lengths() -> Result<(), String> {
        for rate in [8000, 11025, 16000, 22050, 44100, 48000, 96000, 44101] {
            for n in [0, 1, 100, 1023, 1024, 44_100, 123_457] {
                let out = run(rate, n, 777)?;
                assert_eq!(
                    out.len() as u64,
                    expected_len(n as u64, rate),
                    "rate {rate} n {n}"
                );
                assert!(out.iter().all(|x| x.is_finite()));
            }
        }
        Ok(())
    }

    #[test]
    fn aligned_with_the_source() -> Result<(), String> {
        // A delay left in would shift the sine's phase; compare against the ideal 16 kHz sine.
        let out = run(44_100, 44_100, 4096)?;
        let ideal =
            |i: usize| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.5;
        let err = (2000..14000)
            .map(|i| (out[i] - ideal(i)).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.01, "max error {err}");
        Ok(())
    }
}
