//! AVX2 requantization of eight channels at a time.
//!
//! `SaturatingRoundingDoublingHighMul(a, b)` is `floor((a * b + 2^30) / 2^31)` for every input
//! but `i32::MIN * i32::MIN` (gemmlowp's nudge-and-truncate rounds ties upwards on both
//! signs). `vpmuldq` forms the exact 64-bit products of the even lanes (and, after a shift, of
//! the odd ones); a logical 64-bit shift by 31 leaves bits 31..62 of `ab + 2^30` in the low
//! dword, which are the arithmetic shift's low 32 bits. `RoundingDivideByPOT` is the masked
//! remainder test with per-lane variable shifts. The zero point's saturating add and the
//! clamp are one clamp against shifted bounds, then a plain add (see [`requantize8`]).

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use crate::ops::RequantizeParams;

/// `SaturatingRoundingDoublingHighMul(a, b)` on eight lanes for a non-negative `b`, such as
/// every [`QuantizedMultiplier`](crate::fixed_point::QuantizedMultiplier)'s mantissa: then
/// `i32::MIN * i32::MIN`, the one input the plain formula gets wrong, cannot occur, and its
/// check is left out.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn doubling_high_mul(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let nudge = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_srli_epi64::<31>(_mm256_add_epi64(_mm256_mul_epi32(a, b), nudge));
        let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(b));
        let odd = _mm256_srli_epi64::<31>(_mm256_add_epi64(odd, nudge));
        _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd))
    }
}

/// `RoundingDivideByPOT` on eight lanes with per-lane exponents in `0..=31`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rounding_divide_by_pot(x: __m256i, exponent: __m256i) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, exponent), one);
        let remainder = _mm256_and_si256(x, mask);
        let threshold = _mm256_add_epi32(_mm256_srli_epi32::<1>(mask), _mm256_srli_epi32::<31>(x));
        let above = _mm256_cmpgt_epi32(remainder, threshold);
        _mm256_sub_epi32(_mm256_srav_epi32(x, exponent), above)
    }
}

/// The multipliers and shifts of channels `c..c + 8` as two vectors (`mantissas`, `shifts`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn channel_multipliers(params: &RequantizeParams<'_>, c: usize) -> (__m256i, __m256i) {
    // SAFETY: AVX2 is available (caller); with per-channel multipliers the caller guarantees
    // `c + 8 <= multipliers.len()`, so the two 32-byte loads stay inside the slice of
    // `[mantissa, shift]` pairs.
    unsafe {
        if params.multipliers.len() == 1 {
            let m = params.multipliers[0];
            return (
                _mm256_set1_epi32(m.multiplier()),
                _mm256_set1_epi32(m.shift()),
            );
        }
        let pairs = params.multipliers[c..c + 8].as_ptr().cast::<__m256i>();
        let lo = _mm256_loadu_si256(pairs);
        let hi = _mm256_loadu_si256(pairs.add(1));
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let lo = _mm256_permutevar8x32_epi32(lo, split);
        let hi = _mm256_permutevar8x32_epi32(hi, split);
        (
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }
}

/// Requantizes eight accumulators of channels `c..c + 8` (bias already added) to eight
/// int8, returned in the low 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requantize8(params: &RequantizeParams<'_>, acc: __m256i, c: usize) -> i64 {
    // SAFETY: AVX2 is available (caller); `channel_multipliers`' contract is passed on.
    unsafe {
        let (m, shift) = channel_multipliers(params, c);
        let zero = _mm256_setzero_si256();
        let left = _mm256_max_epi32(shift, zero);
        let right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
        let x = doubling_high_mul(_mm256_sllv_epi32(acc, left), m);
        let x = rounding_divide_by_pot(x, right);
        // `clamp(x.saturating_add(zp), lo, hi)` is `clamp(x, lo - zp, hi - zp) + zp`: where the
        // add would saturate, both sides give the nearer bound, and with every term in int8
        // range nothing here can overflow.
        let zp = params.output_zero_point;
        let lo = _mm256_set1_epi32(i32::from(params.activation_min) - zp);
        let hi = _mm256_set1_epi32(i32::from(params.activation_max) - zp);
        let sum = _mm256_add_epi32(
            _mm256_min_epi32(_mm256_max_epi32(x, lo), hi),
            _mm256_set1_epi32(zp),
        );
        let words = _mm256_packs_epi32(sum, zero);
        let bytes = _mm256_packs_epi16(words, zero);
        let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes)) as u32;
        let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes)) as u32;
        (u64::from(lo) | (u64::from(hi) << 32)) as i64
    }
}

/// The vector form of [`super::requantize_row_scalar`].
///
/// # Safety
/// AVX2 must be available; `acc.len() <= out.len()`, and with per-channel multipliers (and a
/// bias) they must cover channels `first..first + acc.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requantize_row(
    params: &RequantizeParams<'_>,
    acc: &[i32],
    bias: Option<&[i32]>,
    first: usize,
    out: &mut [i8],
) {
    // SAFETY: AVX2 is available (caller); loads and stores cover `i..i + 8` with
    // `i + 8 <= acc.len()`, inside `acc`, `out`, the bias and the multipliers by the
    // caller's contract.
    unsafe {
        let n = acc.len();
        let mut i = 0;
        while i + 8 <= n {
            let mut v = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
            if let Some(b) = bias {
                v = _mm256_add_epi32(
                    v,
                    _mm256_loadu_si256(b[first + i..first + i + 8].as_ptr().cast()),
                );
            }
            let bytes = requantize8(params, v, first + i);
            core::ptr::write_unaligned(out.as_mut_ptr().add(i).cast::<i64>(), bytes);
            i += 8;
        }
        super::requantize_row_scalar(params, &acc[i..n], bias, first + i, &mut out[i..n]);
    }
}
