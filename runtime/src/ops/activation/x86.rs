//! x86_64 AVX2 fast paths for the piecewise-linear float activations (Relu, Clip,
//! LeakyRelu): each is one compare-and-select (or one multiply and a select), which gives
//! the reference's value exactly, NaN and signed zeros included. The transcendental functions
//! stay with the reference.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{Source, Unary, reference};
use crate::isa::Isa;

/// The AVX2 float kernel; the reference for the functions it does not vectorize or where
/// AVX2 is missing.
pub(super) fn unary_f32(f: Unary, input: Source<'_, f32>, output: &mut [f32]) {
    let vectorized = matches!(
        f,
        Unary::Relu | Unary::Clip { .. } | Unary::LeakyRelu { .. }
    );
    if vectorized && Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { unary_f32_avx2(f, input, output) }
    } else {
        reference::unary_f32(f, input, output)
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(s: &[f32], i: usize) -> __m256 {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &s[i..i + 8];
        // SAFETY: `chunk` has exactly the eight floats the load reads.
        unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
    }
}

/// `input` must have the output's length (validated by the caller).
#[target_feature(enable = "avx2")]
unsafe fn unary_f32_avx2(f: Unary, input: Source<'_, f32>, output: &mut [f32]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        // Relu is Clip(0, inf); LeakyRelu selects `alpha * x` below zero.
        let (lo, hi, alpha) = match f {
            Unary::Relu => (0.0, f32::INFINITY, None),
            Unary::Clip { min, max } => (min, max, None),
            Unary::LeakyRelu { alpha } => (f32::NEG_INFINITY, f32::INFINITY, Some(alpha)),
            _ => return reference::unary_f32(f, input, output),
        };
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let valpha = _mm256_set1_ps(alpha.unwrap_or(1.0));
        let zero = _mm256_setzero_ps();
        let n = output.len();
        let mut i = 0;
        while i + 8 <= n {
            let x = match input {
                Source::Slice(s) => load(s, i),
                Source::Output => load(output, i),
            };
            let y = if alpha.is_some() {
                // `x < 0` is false for NaN, which then passes unchanged, as in the reference.
                let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero);
                _mm256_blendv_ps(x, _mm256_mul_ps(valpha, x), negative)
            } else {
                // `max_ps(lo, x)` is `lo > x ? lo : x` (x when NaN), `min_ps(hi, _)` likewise:
                // the reference's `x < lo ? lo : x > hi ? hi : x`.
                _mm256_min_ps(vhi, _mm256_max_ps(vlo, x))
            };
            let chunk = &mut output[i..i + 8];
            // SAFETY: `chunk` has exactly the eight floats the store writes.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
            i += 8;
        }
        for j in i..n {
            let x = match input {
                Source::Slice(s) => s[j],
                Source::Output => output[j],
            };
            output[j] = reference::unary(f, x);
        }
    }
}
