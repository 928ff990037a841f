//! Branch-free scalar math that loops vectorise: `exp` (and `exp_neg` for `x <= 0`) to about
//! 2e-7, where libm's calls (one per element) cost more than the products around them.

/// `e^x` to about 2e-7 relative error for `x` in -87..88 (clamped outside: 0-ish below,
/// `e^88` above). Cody-Waite reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, a degree-6
/// Taylor polynomial for `e^r`, and `2^n` built from its bits. `n` is rounded with the
/// `1.5 * 2^23` trick, since `f32::round` and `floor` are library calls on the baseline
/// x86-64 target and would stop the loop vectorising.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_clamped(x.clamp(-87.0, 88.0))
}

/// [`exp`] for `x <= 0` (a softmax after subtracting the maximum): one bound fewer to
/// check per value, which the encoder's 1500-key softmax rows notice (about 5% of a
/// Whisper encoder window with the upper clamp in).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    exp_clamped(x.max(-87.0))
}

/// `e^x` for `x` in -87..88.
#[inline(always)]
fn exp_clamped(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * ln 2 is exact enough.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accurate_over_the_range_and_saturating_outside() {
        let mut worst = 0.0f32;
        for i in -86_999..=87_999 {
            let x = i as f32 * 1e-3;
            worst = worst.max((exp(x) - x.exp()).abs() / x.exp());
        }
        assert!(worst < 1e-6, "{worst}");
        for i in -100_000..=0 {
            let x = i as f32 * 1e-3;
            assert_eq!(exp_neg(x), exp(x), "{x}");
        }
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite());
    }
}
