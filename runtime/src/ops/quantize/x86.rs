//! x86_64 AVX2 fast paths, bit-exact to the reference.
//!
//! Quantize: `_mm256_div_ps` is the same correctly rounded division as the scalar `/` (a
//! multiply by the reciprocal would not be). `_mm256_round_ps` has no ties-away-from-zero mode,
//! so the rounding is built from truncation: `x - trunc(x)` is exact in binary floating point,
//! and adding `±1` when that fraction reaches one half is exact too (a fraction is only
//! non-zero below 2^23), which is `roundf` exactly. NaN lanes are zeroed and the rest clamped
//! to ±2^20 before the integer conversion; past that bound the reference saturates to the
//! storage range anyway, so the clamp changes no result.
//!
//! Dequantize: `q - zero_point` is exact in f32 (at most 17 bits), and one multiplication (no
//! FMA) rounds the product exactly as the reference does.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::reference;
use crate::isa::Isa;
use crate::quant::QuantParams;

/// `roundf` on eight lanes (ties away from zero), NaN lanes replaced by zero, the result
/// clamped to `±2^20`, converted to i32.
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round_to_i32(v: __m256) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let sign_bit = _mm256_set1_ps(-0.0);
        let truncated = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let fraction = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(v, truncated));
        let away = _mm256_cmp_ps::<_CMP_GE_OQ>(fraction, _mm256_set1_ps(0.5));
        let step = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, sign_bit));
        let rounded = _mm256_add_ps(truncated, _mm256_and_ps(away, step));
        let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(v, v);
        let rounded = _mm256_and_ps(rounded, ordered);
        let bound = 1_048_576.0;
        let clamped = _mm256_min_ps(
            _mm256_max_ps(rounded, _mm256_set1_ps(-bound)),
            _mm256_set1_ps(bound),
        );
        _mm256_cvttps_epi32(clamped)
    }
}

/// Quantizes the eight floats at `p`: divide, round, add the zero point, clamp.
///
/// # Safety
/// AVX2 must be available and eight floats readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn quantize8(
    p: *const f32,
    scale: __m256,
    zp: __m256i,
    lo: __m256i,
    hi: __m256i,
) -> __m256i {
    // SAFETY: the caller guarantees AVX2 and eight readable floats at `p`.
    unsafe {
        let x = _mm256_loadu_ps(p);
        let q = _mm256_add_epi32(round_to_i32(_mm256_div_ps(x, scale)), zp);
        _mm256_min_epi32(_mm256_max_epi32(q, lo), hi)
    }
}

/// The AVX2 int8 quantizer; falls back to the reference where AVX2 is missing.
pub(super) fn quantize_i8(params: QuantParams, input: &[f32], output: &mut [i8]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { quantize_i8_avx2(params, input, output) }
    } else {
        reference::quantize_i8(params, input, output)
    }
}

/// The AVX2 int16 quantizer; falls back to the reference where AVX2 is missing.
pub(super) fn quantize_i16(params: QuantParams, input: &[f32], output: &mut [i16]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { quantize_i16_avx2(params, input, output) }
    } else {
        reference::quantize_i16(params, input, output)
    }
}

/// The AVX2 int8 dequantizer; falls back to the reference where AVX2 is missing.
pub(super) fn dequantize_i8(params: QuantParams, input: &[i8], output: &mut [f32]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { dequantize_i8_avx2(params, input, output) }
    } else {
        reference::dequantize_i8(params, input, output)
    }
}

/// The AVX2 int16 dequantizer; falls back to the reference where AVX2 is missing.
pub(super) fn dequantize_i16(params: QuantParams, input: &[i16], output: &mut [f32]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { dequantize_i16_avx2(params, input, output) }
    } else {
        reference::dequantize_i16(params, input, output)
    }
}

#[target_feature(enable = "avx2")]
unsafe fn quantize_i8_avx2(params: QuantParams, input: &[f32], output: &mut [i8]) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let n = input.len().min(output.len());
        let scale = _mm256_set1_ps(params.scale);
        let zp = _mm256_set1_epi32(params.zero_point);
        let lo = _mm256_set1_epi32(i8::MIN.into());
        let hi = _mm256_set1_epi32(i8::MAX.into());
        // `packs` interleaves 128-bit lanes; this gathers the 32-bit groups back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: `i + 32 <= n`, so 32 floats are readable and 32 bytes writable at `i`.
            unsafe {
                let p = input.as_ptr().add(i);
                let a = quantize8(p, scale, zp, lo, hi);
                let b = quantize8(p.add(8), scale, zp, lo, hi);
                let c = quantize8(p.add(16), scale, zp, lo, hi);
                let d = quantize8(p.add(24), scale, zp, lo, hi);
                // Every lane is already in int8 range, so the saturating packs only narrow.
                let packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
                let packed = _mm256_permutevar8x32_epi32(packed, order);
                _mm256_storeu_si256(output.as_mut_ptr().add(i).cast(), packed);
            }
            i += 32;
        }
        reference::quantize_i8(params, &input[i..n], &mut output[i..n]);
    }
}

#[target_feature(enable = "avx2")]
unsafe fn quantize_i16_avx2(params: QuantParams, input: &[f32], output: &mut [i16]) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let n = input.len().min(output.len());
        let scale = _mm256_set1_ps(params.scale);
        let zp = _mm256_set1_epi32(params.zero_point);
        let lo = _mm256_set1_epi32(i16::MIN.into());
        let hi = _mm256_set1_epi32(i16::MAX.into());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`, so 16 floats are readable and 16 i16 writable at `i`.
            unsafe {
                let p = input.as_ptr().add(i);
                let a = quantize8(p, scale, zp, lo, hi);
                let b = quantize8(p.add(8), scale, zp, lo, hi);
                let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
                _mm256_storeu_si256(output.as_mut_ptr().add(i).cast(), packed);
            }
            i += 16;
        }
        reference::quantize_i16(params, &input[i..n], &mut output[i..n]);
    }
}

#[target_feature(enable = "avx2")]
unsafe fn dequantize_i8_avx2(params: QuantParams, input: &[i8], output: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let n = input.len().min(output.len());
        let scale = _mm256_set1_ps(params.scale);
        let zp = _mm256_set1_epi32(params.zero_point);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so 8 bytes are readable and 8 floats writable at `i`.
            unsafe {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(input.as_ptr().add(i).cast()));
                let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(q, zp));
                _mm256_storeu_ps(output.as_mut_ptr().add(i), _mm256_mul_ps(scale, x));
            }
            i += 8;
        }
        reference::dequantize_i8(params, &input[i..n], &mut output[i..n]);
    }
}

#[target_feature(enable = "avx2")]
unsafe fn dequantize_i16_avx2(params: QuantParams, input: &[i16], output: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let n = input.len().min(output.len());
        let scale = _mm256_set1_ps(params.scale);
        let zp = _mm256_set1_epi32(params.zero_point);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so 8 i16 are readable and 8 floats writable at `i`.
            unsafe {
                let q = _mm256_cvtepi16_epi32(_mm_loadu_si128(input.as_ptr().add(i).cast()));
                let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(q, zp));
                _mm256_storeu_ps(output.as_mut_ptr().add(i), _mm256_mul_ps(scale, x));
            }
            i += 8;
        }
        reference::dequantize_i16(params, &input[i..n], &mut output[i..n]);
    }
}
