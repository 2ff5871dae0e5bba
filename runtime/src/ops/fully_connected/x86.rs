//! x86_64 AVX2/FMA fast paths. Four output rows share each load of the input, so the
//! input is widened once per four dot products.
//!
//! int8: `(x - zp)` fits in i16 (|x - zp| <= 255) and so does each weight, so `vpmaddwd`
//! forms exact i32 pair sums that can never saturate; integer addition is associative mod
//! 2^32, so any summation order gives the reference's exact accumulator.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{FullyConnectedF32, FullyConnectedI8};
use crate::isa::Isa;

/// Horizontal sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let lo = _mm256_castsi256_si128(v);
        let hi = _mm256_extracti128_si256::<1>(v);
        let s = _mm_add_epi32(lo, hi);
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Horizontal sum of eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// Sixteen int8 at `p`, sign-extended to i16.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_i8x16(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(p.cast()) })
    }
}

/// The AVX2 int8 kernel; falls back to the reference where AVX2 is missing.
pub(crate) fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { fully_connected_i8_avx2(op, output) }
    } else {
        super::reference::fully_connected_i8(op, output)
    }
}

/// The AVX2/FMA float kernel; falls back to the reference where AVX2 is missing.
pub(crate) fn fully_connected_f32(op: &FullyConnectedF32<'_>, output: &mut [f32]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { fully_connected_f32_avx2(op, output) }
    } else {
        super::reference::fully_connected_f32(op, output)
    }
}

/// `op` must have passed `validate(output)`; the slices are indexed with checks, and raw
/// loads stay inside rows whose length was checked.
#[target_feature(enable = "avx2,fma")]
unsafe fn fully_connected_i8_avx2(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let p = &op.params;
        let chunks = n / 16;
        let zp = _mm256_set1_epi16(p.input_zero_point as i16);
        let mut accs = [0i32; 4];
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out_row = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w = |r: usize| &op.weights[(o + r.min(rows - 1)) * n..][..n];
                let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
                let mut a0 = _mm256_setzero_si256();
                let mut a1 = _mm256_setzero_si256();
                let mut a2 = _mm256_setzero_si256();
                let mut a3 = _mm256_setzero_si256();
                for c in 0..chunks {
                    let i = c * 16;
                    // SAFETY: `i + 16 <= n` for every full chunk, and every row has `n` elements.
                    unsafe {
                        let x = _mm256_sub_epi16(load_i8x16(row.as_ptr().add(i)), zp);
                        a0 = _mm256_add_epi32(
                            a0,
                            _mm256_madd_epi16(x, load_i8x16(w0.as_ptr().add(i))),
                        );
                        a1 = _mm256_add_epi32(
                            a1,
                            _mm256_madd_epi16(x, load_i8x16(w1.as_ptr().add(i))),
                        );
                        a2 = _mm256_add_epi32(
                            a2,
                            _mm256_madd_epi16(x, load_i8x16(w2.as_ptr().add(i))),
                        );
                        a3 = _mm256_add_epi32(
                            a3,
                            _mm256_madd_epi16(x, load_i8x16(w3.as_ptr().add(i))),
                        );
                    }
                }
                accs[0] = hsum_epi32(a0);
                accs[1] = hsum_epi32(a1);
                accs[2] = hsum_epi32(a2);
                accs[3] = hsum_epi32(a3);
                for (r, acc) in accs.iter_mut().enumerate().take(rows) {
                    let w = w(r);
                    for i in chunks * 16..n {
                        *acc = acc.wrapping_add(
                            (i32::from(row[i]) - p.input_zero_point) * i32::from(w[i]),
                        );
                    }
                    if let Some(bias) = op.bias {
                        *acc = acc.wrapping_add(bias[o + r]);
                    }
                    let scaled = p
                        .multiplier(o + r)
                        .apply(*acc)
                        .saturating_add(p.output_zero_point);
                    out_row[o + r] = scaled
                        .clamp(i32::from(p.activation_min), i32::from(p.activation_max))
                        as i8;
                }
                o += rows;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fully_connected_f32_avx2(op: &FullyConnectedF32<'_>, output: &mut [f32]) {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let chunks = n / 8;
        let (lo, hi) = op.activation;
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out_row = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w = |r: usize| &op.weights[(o + r.min(rows - 1)) * n..][..n];
                let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
                let mut a0 = _mm256_setzero_ps();
                let mut a1 = _mm256_setzero_ps();
                let mut a2 = _mm256_setzero_ps();
                let mut a3 = _mm256_setzero_ps();
                for c in 0..chunks {
                    let i = c * 8;
                    // SAFETY: `i + 8 <= n` for every full chunk, and every row has `n` elements.
                    unsafe {
                        let x = _mm256_loadu_ps(row.as_ptr().add(i));
                        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0.as_ptr().add(i)), a0);
                        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w1.as_ptr().add(i)), a1);
                        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w2.as_ptr().add(i)), a2);
                        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w3.as_ptr().add(i)), a3);
                    }
                }
                let sums = [hsum_ps(a0), hsum_ps(a1), hsum_ps(a2), hsum_ps(a3)];
                for (r, &sum) in sums.iter().enumerate().take(rows) {
                    let w = w(r);
                    let mut acc = sum;
                    for i in chunks * 8..n {
                        acc += row[i] * w[i];
                    }
                    if let Some(bias) = op.bias {
                        acc += bias[o + r];
                    }
                    out_row[o + r] = acc.max(lo).min(hi);
                }
                o += rows;
            }
        }
    }
}
