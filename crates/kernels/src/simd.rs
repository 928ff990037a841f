//! One vector interface over the tiers' f32 registers, so a kernel is written once as a
//! generic `#[inline(always)]` function and compiled per tier.
//!
//! A tier's entry point is a `#[target_feature]` function that calls the generic kernel
//! with that tier's type ([`Avx512`], [`Avx2`], [`Portable`]); every method here is
//! `#[inline(always)]`, so the whole kernel is inlined into the entry point and compiled
//! with its features. Calling a method of [`Avx512`] or [`Avx2`] on a CPU without those
//! features is undefined behaviour: [`dispatch`] picks the type from a [`Tier`].

use crate::Tier;

/// f32 vectors of one tier.
///
/// # Safety
/// Every method may only run on a CPU with the implementing tier's features; the pointer
/// methods read or write `LANES` values (or `n` for the partial ones) at the pointer.
pub trait Simd: Copy + 'static {
    /// One register of `LANES` f32 values.
    type V: Copy;
    /// Values per register.
    const LANES: usize;

    /// All lanes zero.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` values from `p` (unaligned).
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn load(p: *const f32) -> Self::V;
    /// `LANES` values to `p` (unaligned).
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n <= LANES` values from `p`, the other lanes zero; reads nothing past them.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// The first `n <= LANES` lanes of `v` to `p`; writes nothing past them.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a + b`.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the tier has FMA).
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `2^n` for lanes holding whole numbers in -126..=127.
    ///
    /// # Safety
    /// The CPU supports the tier; see [`Simd`].
    unsafe fn pow2i(n: Self::V) -> Self::V;
}

/// Portable 8-lane vectors as arrays: the compiler maps them to the build's baseline
/// vectors (two SSE2 or NEON registers). Multiply and add stay separate, since a fused
/// multiply-add without hardware support is a library call.
#[derive(Debug, Clone, Copy)]
pub struct Portable;

impl Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller provides 8 readable values.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller provides 8 writable values.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> [f32; 8] {
        let mut v = [0.0; 8];
        // SAFETY: the caller provides n <= 8 readable values.
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n.min(8)) };
        v
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: [f32; 8], n: usize) {
        // SAFETY: the caller provides n <= 8 writable values.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n.min(8)) };
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn sub(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn fmadd(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn max(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        // NaN-free inputs; `if` instead of f32::max keeps the loop a plain vector max.
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    unsafe fn min(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| if a[i] < b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    unsafe fn div(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] / b[i])
    }
    #[inline(always)]
    unsafe fn pow2i(n: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| f32::from_bits(((n[i] as i32 + 127) << 23) as u32))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX2 + FMA: 8-lane `__m256` registers, masked loads for tails.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2;

    /// Lanes below `n` set (all bits), the others clear.
    #[inline(always)]
    unsafe fn mask8(n: usize) -> __m256i {
        // SAFETY: AVX2 (the caller's tier).
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n.min(8) as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    // SAFETY (every method): the caller runs on a CPU with AVX2 and FMA and passes
    // pointers to as many values as the method reads or writes (the trait's contract).
    impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
            unsafe { _mm256_maskload_ps(p, mask8(n)) }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
            unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            unsafe {
                let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            }
        }
    }

    /// AVX-512F: 16-lane `__m512` registers, mask registers for tails.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512;

    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    // SAFETY (every method): the caller runs on a CPU with AVX-512F and passes pointers to
    // as many values as the method reads or writes (the trait's contract).
    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
            unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            unsafe { _mm512_scalef_ps(_mm512_set1_ps(1.0), n) }
        }
    }
}

/// A kernel written once over [`Simd`], run by [`dispatch`] at a tier's vector type.
pub trait Kernel {
    /// What the kernel returns.
    type Output;

    /// Runs the kernel with `S`'s vectors. Implementations are `#[inline(always)]`, so that
    /// the body is compiled inside [`dispatch`]'s per-tier entry points, with their features.
    ///
    /// # Safety
    /// The CPU supports `S` (what [`dispatch`] guarantees).
    unsafe fn run<S: Simd>(self) -> Self::Output;
}

/// Runs `kernel` at `tier` (lowered to what the CPU has): AVX-512 registers for
/// [`Tier::Avx512`] and above, AVX2 for [`Tier::Avx2`], [`Portable`] arrays otherwise.
pub fn dispatch<K: Kernel>(tier: Tier, kernel: K) -> K::Output {
    let tier = tier.min(Tier::hardware());
    #[cfg(target_arch = "x86_64")]
    {
        if tier.has(Tier::Avx512) {
            // SAFETY: the CPU has AVX-512F (the tier is at most the hardware's).
            return unsafe { run_avx512(kernel) };
        }
        if tier.has(Tier::Avx2) {
            // SAFETY: the CPU has AVX2 and FMA (as above).
            return unsafe { run_avx2(kernel) };
        }
    }
    // SAFETY: portable code runs anywhere.
    unsafe { kernel.run::<Portable>() }
}

/// [`Kernel::run`] compiled with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    // SAFETY: the caller checked the CPU.
    unsafe { kernel.run::<Avx512>() }
}

/// [`Kernel::run`] compiled with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    // SAFETY: the caller checked the CPU.
    unsafe { kernel.run::<Avx2>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each tier's methods on the same values, tails included.
    fn check<S: Simd>() {
        let a: Vec<f32> = (0..S::LANES).map(|i| i as f32 - 3.5).collect();
        let b: Vec<f32> = (0..S::LANES).map(|i| 2.0 - i as f32 * 0.25).collect();
        // SAFETY: the callers below check the tier.
        unsafe {
            let (va, vb) = (S::load(a.as_ptr()), S::load(b.as_ptr()));
            let mut out = vec![f32::NAN; S::LANES];
            S::store(out.as_mut_ptr(), S::fmadd(va, vb, S::splat(1.0)));
            for i in 0..S::LANES {
                assert_eq!(out[i], a[i] * b[i] + 1.0);
            }
            S::store(out.as_mut_ptr(), S::max(S::sub(va, vb), S::zero()));
            for i in 0..S::LANES {
                assert_eq!(out[i], (a[i] - b[i]).max(0.0));
            }
            S::store(out.as_mut_ptr(), S::div(S::min(va, vb), S::splat(2.0)));
            for i in 0..S::LANES {
                assert_eq!(out[i], a[i].min(b[i]) / 2.0);
            }
            for n in [-126.0f32, -3.0, 0.0, 5.0, 127.0] {
                S::store(out.as_mut_ptr(), S::pow2i(S::splat(n)));
                assert_eq!(out[0], 2f32.powi(n as i32), "2^{n}");
            }
            for n in 0..=S::LANES {
                let mut dst = vec![-9.0f32; S::LANES + 1];
                let part = S::load_partial(a.as_ptr(), n);
                S::store_partial(dst.as_mut_ptr(), S::add(part, S::mul(part, S::zero())), n);
                for i in 0..=S::LANES {
                    assert_eq!(dst[i], if i < n { a[i] } else { -9.0 }, "n {n} lane {i}");
                }
            }
        }
    }

    #[test]
    fn every_available_tier_computes_the_same() {
        check::<Portable>();
        #[cfg(target_arch = "x86_64")]
        {
            if Tier::hardware().has(Tier::Avx2) {
                check::<Avx2>();
            }
            if Tier::hardware().has(Tier::Avx512) {
                check::<Avx512>();
            }
        }
        assert_eq!(Tier::supported().next(), Some(Tier::Portable));
        assert_eq!(Tier::supported().last(), Some(Tier::hardware()));
    }
}
