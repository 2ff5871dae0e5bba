//! aarch64 NEON fast path for float softmax and log-softmax, the AVX2 path's algorithm four
//! lanes at a time: the row maximum (exact), Cephes' `expf` (a few ulps), the sum of
//! exponentials in f64 lanes, and the division (or the log subtraction). Agrees with the
//! reference within [`super::F32_TOLERANCE`]. NEON is part of every aarch64 target.

use core::arch::aarch64::*;

use super::SoftmaxF32;

#[inline(always)]
fn load(s: &[f32], i: usize) -> float32x4_t {
    let chunk = &s[i..i + 4];
    // SAFETY: NEON is part of every aarch64 target; `chunk` has the four floats read.
    unsafe { vld1q_f32(chunk.as_ptr()) }
}

#[inline(always)]
fn store(s: &mut [f32], i: usize, v: float32x4_t) {
    let chunk = &mut s[i..i + 4];
    // SAFETY: NEON is part of every aarch64 target; `chunk` has the four floats written.
    unsafe { vst1q_f32(chunk.as_mut_ptr(), v) }
}

/// `exp(x)` on four lanes for `x <= 88`: Cephes' `expf`, as the AVX2 path. Inputs below
/// `ln(2^-126)` give 0, NaN gives NaN.
#[inline(always)]
fn exp(x: float32x4_t) -> float32x4_t {
    // ln 2 split so that `n * LN2_HI` is exact for the n that occur: LN2_HI is 355/512.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MIN_X: f32 = -87.336_55;
    const MAX_X: f32 = 88.376_26;
    // SAFETY: register-only NEON, part of every aarch64 target.
    unsafe {
        let nan = vmvnq_u32(vceqq_f32(x, x));
        let underflow = vcltq_f32(x, vdupq_n_f32(MIN_X));
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(MIN_X)), vdupq_n_f32(MAX_X));
        let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(core::f32::consts::LOG2_E)));
        let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
        let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
        let mut y = vdupq_n_f32(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            y = vfmaq_f32(vdupq_n_f32(c), y, r);
        }
        let y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), y, vmulq_f32(r, r));
        // 2^n from the exponent bits; n is in -126..=128 after the clamp (a NaN lane's
        // garbage is replaced below).
        let pow2n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127),
        )));
        let e = vbicq_u32(vreinterpretq_u32_f32(vmulq_f32(y, pow2n)), underflow);
        // All-ones lanes are a NaN.
        vreinterpretq_f32_u32(vorrq_u32(e, nan))
    }
}

/// The row maximum, NaN ignored as the reference's `if x > max` ignores it.
fn row_max(row: &[f32]) -> f32 {
    let n = row.len();
    let mut lanes = [f32::NEG_INFINITY; 4];
    let mut i = 0;
    // SAFETY: register-only NEON, part of every aarch64 target.
    unsafe {
        let mut m = vdupq_n_f32(f32::NEG_INFINITY);
        while i + 4 <= n {
            let x = load(row, i);
            m = vbslq_f32(vcgtq_f32(x, m), x, m);
            i += 4;
        }
        vst1q_f32(lanes.as_mut_ptr(), m);
    }
    let mut max = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(&row[i..]) {
        if x > max {
            max = x;
        }
    }
    max
}

/// The NEON float kernel. `op` must have passed `validate(output)`.
pub(super) fn softmax_f32(op: &SoftmaxF32<'_>, output: &mut [f32]) {
    let depth = op.shape.depth;
    let beta = op.beta;
    for (row, out) in op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let max = row_max(row);
        // SAFETY: register-only NEON, part of every aarch64 target.
        let (vmax, vbeta) = unsafe { (vdupq_n_f32(max), vdupq_n_f32(beta)) };
        let mut sum = 0f64;
        let mut i = 0;
        // SAFETY: register-only NEON, part of every aarch64 target.
        unsafe {
            let mut acc = [vdupq_n_f64(0.0); 2];
            while i + 4 <= depth {
                // `(x - max) * beta` rounded twice, as the reference rounds it.
                let e = exp(vmulq_f32(vsubq_f32(load(row, i), vmax), vbeta));
                store(out, i, e);
                acc[0] = vaddq_f64(acc[0], vcvt_f64_f32(vget_low_f32(e)));
                acc[1] = vaddq_f64(acc[1], vcvt_high_f64_f32(e));
                i += 4;
            }
            sum += vaddvq_f64(vaddq_f64(acc[0], acc[1]));
        }
        for j in i..depth {
            let e = libm::expf((row[j] - max) * beta);
            out[j] = e;
            sum += f64::from(e);
        }
        i = 0;
        if op.log {
            let log_sum = libm::log(sum) as f32;
            // SAFETY: register-only NEON, part of every aarch64 target.
            let vlog = unsafe { vdupq_n_f32(log_sum) };
            while i + 4 <= depth {
                // SAFETY: register-only NEON, part of every aarch64 target.
                let d = unsafe { vsubq_f32(vmulq_f32(vsubq_f32(load(row, i), vmax), vbeta), vlog) };
                store(out, i, d);
                i += 4;
            }
            for j in i..depth {
                out[j] = (row[j] - max) * beta - log_sum;
            }
        } else {
            let sum = sum as f32;
            // SAFETY: register-only NEON, part of every aarch64 target.
            let vsum = unsafe { vdupq_n_f32(sum) };
            while i + 4 <= depth {
                // SAFETY: register-only NEON, part of every aarch64 target.
                let q = unsafe { vdivq_f32(load(out, i), vsum) };
                store(out, i, q);
                i += 4;
            }
            for o in &mut out[i..] {
                *o /= sum;
            }
        }
    }
}

/// The vector `exp` lane by lane, for the tests.
#[cfg(test)]
pub(super) fn exp_lanes(x: [f32; 8]) -> Option<[f32; 8]> {
    let mut out = [0f32; 8];
    store(&mut out, 0, exp(load(&x, 0)));
    store(&mut out, 4, exp(load(&x, 4)));
    Some(out)
}
