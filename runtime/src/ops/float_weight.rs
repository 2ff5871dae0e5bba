//! The weights of float layers: `f32`, or IEEE binary16 ([`half::f16`]) kept at half the
//! flash and widened to `f32` as a kernel loads them. Widening is exact (every binary16 value
//! is a binary32 value), so an f16-weight layer computes exactly what the f32 layer with the
//! widened weights computes, and its fast paths share the f32 tolerance.
//!
//! The per-ISA loads live here so that one generic kernel body serves both weight types.

use half::f16;

use crate::tensor::Element;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

/// A float layer's weight element.
pub trait FloatWeight: Element + Copy + sealed::Sealed {
    /// Whether the weights are `f32` already (nothing to widen).
    const IS_F32: bool;

    /// The weight as `f32` (exact).
    fn widen(self) -> f32;

    /// Eight weights at `p`, widened.
    ///
    /// # Safety
    /// Eight elements must be readable at `p`, and the CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8_avx2(p: *const Self) -> core::arch::x86_64::__m256;

    /// Four weights at `p`, widened.
    ///
    /// # Safety
    /// Four elements must be readable at `p`, and the CPU must have NEON.
    #[cfg(target_arch = "aarch64")]
    unsafe fn load4_neon(p: *const Self) -> core::arch::aarch64::float32x4_t;
}

impl FloatWeight for f32 {
    const IS_F32: bool = true;

    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const f32) -> core::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees eight readable floats at `p`.
        unsafe { core::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4_neon(p: *const f32) -> core::arch::aarch64::float32x4_t {
        // SAFETY: the caller guarantees four readable floats at `p`.
        unsafe { core::arch::aarch64::vld1q_f32(p) }
    }
}

/// binary16 to binary32 in integer operations, for cores without a converter. Written here
/// because `half`'s portable conversion (what it uses without `std` or a target feature)
/// normalizes subnormals with a leading-zeros count on every call and made the reference
/// kernels 4x slower than with f32 weights (`cargo bench --bench kernels -- float_weights`);
/// here a normal weight is one shift and one add, and subnormals (rare in weights) take a
/// conversion and an exact multiply.
#[inline(always)]
fn widen_bits(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7fff;
    let bits = if magnitude >= 0x7c00 {
        // Infinity, or NaN made quiet as the hardware converters do.
        let payload = (magnitude & 0x3ff) << 13;
        0x7f80_0000 | payload | if payload != 0 { 0x0040_0000 } else { 0 }
    } else if magnitude >= 0x0400 {
        // Normal: the exponent's bias goes from 15 to 127.
        (magnitude << 13) + ((127 - 15) << 23)
    } else {
        // Zero or subnormal: mantissa x 2^-24, exact in f32.
        (magnitude as f32 * (1.0 / 16_777_216.0)).to_bits()
    };
    f32::from_bits(sign | bits)
}

impl FloatWeight for f16 {
    const IS_F32: bool = false;

    #[inline(always)]
    fn widen(self) -> f32 {
        widen_bits(self.to_bits())
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8_avx2(p: *const f16) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        // SAFETY: the caller guarantees eight readable halves (16 bytes) at `p` and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    #[cfg(target_arch = "aarch64")]
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4_neon(p: *const f16) -> core::arch::aarch64::float32x4_t {
        use core::arch::aarch64::*;
        // `fcvtl` is base Armv8 Advanced SIMD; Rust 1.85 has no stable intrinsic for it (the
        // binary16 vector types are unstable), hence the one instruction of assembly.
        // SAFETY: the caller guarantees four readable halves (8 bytes) at `p`.
        unsafe {
            let bits = vreinterpretq_f32_u16(vcombine_u16(vld1_u16(p.cast()), vdup_n_u16(0)));
            let wide: float32x4_t;
            core::arch::asm!(
                "fcvtl {out:v}.4s, {bits:v}.4h",
                out = lateout(vreg) wide,
                bits = in(vreg) bits,
                options(pure, nomem, nostack, preserves_flags),
            );
            wide
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every binary16 bit pattern except NaNs (whose payload widening may quiet).
    fn halves() -> impl Iterator<Item = f16> {
        (0..=u16::MAX).map(f16::from_bits).filter(|h| !h.is_nan())
    }

    #[test]
    fn widening_is_exact_and_round_trips() {
        for h in halves() {
            assert_eq!(h.widen().to_bits(), h.to_f32().to_bits(), "{h:?}");
            assert_eq!(f16::from_f32(h.widen()).to_bits(), h.to_bits());
        }
        for nan in (0x7c01..=0x7fff).chain(0xfc01..=0xffff).map(f16::from_bits) {
            let w = nan.widen();
            assert!(w.is_nan() && w.is_sign_negative() == nan.is_sign_negative());
            // Quiet, payload kept.
            assert_eq!(w.to_bits() & 0x0040_0000, 0x0040_0000);
            assert_eq!(
                (w.to_bits() >> 13) & 0x1ff,
                u32::from(nan.to_bits()) & 0x1ff
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_load_widens_every_half_like_the_reference() {
        if !crate::isa::Isa::Avx2.available() {
            panic!("this x86_64 CPU lacks AVX2/FMA/F16C: the f16 fast path cannot be tested");
        }
        // Every bit pattern, NaNs too: the hardware quiets them as `widen` does.
        let all: std::vec::Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for chunk in all.chunks_exact(8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2/FMA/F16C checked above; `chunk` holds eight halves.
            unsafe {
                core::arch::x86_64::_mm256_storeu_ps(
                    got.as_mut_ptr(),
                    f16::load8_avx2(chunk.as_ptr()),
                );
            }
            for (g, h) in got.iter().zip(chunk) {
                assert_eq!(g.to_bits(), h.widen().to_bits(), "{h:?}");
            }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_load_widens_every_half_like_the_reference() {
        // Every bit pattern, NaNs too: the hardware quiets them as `widen` does.
        let all: std::vec::Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for chunk in all.chunks_exact(4) {
            let mut got = [0f32; 4];
            // SAFETY: NEON is baseline on aarch64; `chunk` holds four halves.
            unsafe {
                core::arch::aarch64::vst1q_f32(got.as_mut_ptr(), f16::load4_neon(chunk.as_ptr()));
            }
            for (g, h) in got.iter().zip(chunk) {
                assert_eq!(g.to_bits(), h.widen().to_bits(), "{h:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn f32_widening_is_the_identity(x in any::<f32>()) {
            prop_assert_eq!(x.widen().to_bits(), x.to_bits());
        }
    }
}
