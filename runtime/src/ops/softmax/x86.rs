//! x86_64 AVX2/FMA fast path for float softmax and log-softmax: the row maximum eight lanes
//! at a time (exact), a polynomial `exp` (Cephes' `expf`: range reduction by `ln 2` in two
//! parts, a degree-6 polynomial, the power of two built in the exponent bits; a few ulps),
//! the sum of exponentials in four f64 lanes, and the division (or the log subtraction)
//! eight lanes at a time. Agrees with the reference within [`super::F32_TOLERANCE`].

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{SoftmaxF32, reference};
use crate::isa::Isa;

/// The AVX2 float kernel; falls back to the reference where AVX2 is missing.
pub(super) fn softmax_f32(op: &SoftmaxF32<'_>, output: &mut [f32]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { softmax_f32_avx2(op, output) }
    } else {
        reference::softmax_f32(op, output)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(s: &[f32], i: usize) -> __m256 {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &s[i..i + 8];
        // SAFETY: `chunk` has exactly the eight floats the load reads.
        unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(s: &mut [f32], i: usize, v: __m256) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &mut s[i..i + 8];
        // SAFETY: `chunk` has exactly the eight floats the store writes.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) }
    }
}

/// `exp(x)` on eight lanes for `x <= 88`: Cephes' `expf`. Inputs below `ln(2^-126)` give 0
/// (libm gives subnormals there, below 1.2e-38), NaN gives NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp(x: __m256) -> __m256 {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        const LOG2_E: f32 = core::f32::consts::LOG2_E;
        // ln 2 split so that `n * LN2_HI` is exact for the n that occur: LN2_HI is 355/512.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const MIN_X: f32 = -87.336_55;
        const MAX_X: f32 = 88.376_26;
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_X));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(MIN_X)),
            _mm256_set1_ps(MAX_X),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        // 2^n from the exponent bits; n is in -126..=128 after the clamp.
        let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        let e = _mm256_andnot_ps(underflow, _mm256_mul_ps(y, pow2n));
        // All-ones lanes are a NaN.
        _mm256_or_ps(e, nan)
    }
}

/// The row maximum, NaN ignored as the reference's `if x > max` ignores it.
#[target_feature(enable = "avx2,fma")]
unsafe fn row_max(row: &[f32]) -> f32 {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let n = row.len();
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + 8 <= n {
            // `max_ps(x, m)` is `x > m ? x : m`: a NaN `x` leaves `m`.
            m = _mm256_max_ps(load(row, i), m);
            i += 8;
        }
        let mut lanes = [f32::NEG_INFINITY; 8];
        store(&mut lanes, 0, m);
        let mut max = f32::NEG_INFINITY;
        for &x in lanes.iter().chain(&row[i..]) {
            if x > max {
                max = x;
            }
        }
        max
    }
}

/// `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_f32_avx2(op: &SoftmaxF32<'_>, output: &mut [f32]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let depth = op.shape.depth;
        let beta = op.beta;
        let vbeta = _mm256_set1_ps(beta);
        for (row, out) in op
            .input
            .chunks_exact(depth)
            .zip(output.chunks_exact_mut(depth))
        {
            let max = row_max(row);
            let vmax = _mm256_set1_ps(max);
            let mut acc_lo = _mm256_setzero_pd();
            let mut acc_hi = _mm256_setzero_pd();
            let mut i = 0;
            while i + 8 <= depth {
                // `(x - max) * beta` rounded twice, as the reference rounds it.
                let e = exp(_mm256_mul_ps(_mm256_sub_ps(load(row, i), vmax), vbeta));
                store(out, i, e);
                acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
                i += 8;
            }
            let mut lanes = [0f64; 4];
            // SAFETY: `lanes` holds the four doubles the store writes.
            unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(acc_lo, acc_hi)) };
            let mut sum: f64 = lanes.iter().sum();
            for j in i..depth {
                let e = libm::expf((row[j] - max) * beta);
                out[j] = e;
                sum += f64::from(e);
            }
            i = 0;
            if op.log {
                let log_sum = libm::log(sum) as f32;
                let vlog = _mm256_set1_ps(log_sum);
                while i + 8 <= depth {
                    let d = _mm256_mul_ps(_mm256_sub_ps(load(row, i), vmax), vbeta);
                    store(out, i, _mm256_sub_ps(d, vlog));
                    i += 8;
                }
                for j in i..depth {
                    out[j] = (row[j] - max) * beta - log_sum;
                }
            } else {
                let sum = sum as f32;
                let vsum = _mm256_set1_ps(sum);
                while i + 8 <= depth {
                    store(out, i, _mm256_div_ps(load(out, i), vsum));
                    i += 8;
                }
                for o in &mut out[i..] {
                    *o /= sum;
                }
            }
        }
    }
}

/// The vector `exp` lane by lane, for the tests; `None` without AVX2.
#[cfg(test)]
pub(super) fn exp_lanes(x: [f32; 8]) -> Option<[f32; 8]> {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lanes(x: [f32; 8]) -> [f32; 8] {
        // SAFETY: the caller guarantees the target features are available; memory is
        // accessed only through bounds-checked slices.
        unsafe {
            let mut out = [0f32; 8];
            store(&mut out, 0, exp(load(&x, 0)));
            out
        }
    }
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        Some(unsafe { lanes(x) })
    } else {
        None
    }
}
