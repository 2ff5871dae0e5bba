//! aarch64 NEON fast paths, vectorized across channels (contiguous in NHWC). Each lane does
//! exactly what the reference does for its channel, in the same order, so every kernel here
//! is bit-exact:
//!
//! - max: `smax` / `fmaxnm`, which is what `f32::max` compiles to on aarch64 (a NaN operand
//!   yields the other one);
//! - float sums: the window is still added in row-major order, then divided;
//! - int8 averages: the i32 sums are exact, and TFLite's truncating `(sum ± count/2) / count`
//!   is done in f64 with a truncating conversion, exact for the reasons the x86 module gives.
//!
//! NEON is part of every aarch64 target, so these need no run-time check. Channel tails
//! narrower than a vector run the reference's per-output code.

use core::arch::aarch64::*;

use super::reference;
use super::{GlobalAveragePoolI8Params, GlobalPoolShape, Pool2dGeometry, channel, pixel};

/// NEON int8 max pooling.
pub(super) fn max_pool2d_i8(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    let ch = g.channels;
    // SAFETY: NEON is part of every aarch64 target; every load and store covers `c..c + 16`
    // with `c + 16 <= ch`, the length of each pixel's slice and of `out`.
    unsafe {
        let (lo, hi) = (vdupq_n_s8(activation.0), vdupq_n_s8(activation.1));
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let mut c = 0;
            while c + 16 <= ch {
                let mut max = vdupq_n_s8(i8::MIN);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        max = vmaxq_s8(max, vld1q_s8(p.as_ptr().add(c)));
                    }
                }
                vst1q_s8(out.as_mut_ptr().add(c), vminq_s8(vmaxq_s8(max, lo), hi));
                c += 16;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::max_i8(g, input, channel(w, k), activation);
            }
        });
    }
}

/// TFLite's `(sum ± count/2) / count` (truncating) on four lanes.
#[inline(always)]
unsafe fn rounded_average4(sum: int32x4_t, half: int32x4_t, count: float64x2_t) -> int32x4_t {
    // SAFETY: register-only NEON, part of every aarch64 target.
    unsafe {
        let positive = vcgtq_s32(sum, vdupq_n_s32(0));
        let n = vbslq_s32(positive, vaddq_s32(sum, half), vsubq_s32(sum, half));
        let lo = vdivq_f64(vcvtq_f64_s64(vmovl_s32(vget_low_s32(n))), count);
        let hi = vdivq_f64(vcvtq_f64_s64(vmovl_high_s32(n)), count);
        vcombine_s32(vmovn_s64(vcvtq_s64_f64(lo)), vmovn_s64(vcvtq_s64_f64(hi)))
    }
}

/// NEON int8 average pooling.
pub(super) fn average_pool2d_i8(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    let ch = g.channels;
    // SAFETY: NEON is part of every aarch64 target; loads read eight bytes at `c` with
    // `c + 8 <= ch` from pixel slices of `ch` bytes, stores write eight inside `out`.
    unsafe {
        let lo = vdupq_n_s32(activation.0.into());
        let hi = vdupq_n_s32(activation.1.into());
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            // At most MAX_WINDOW elements (validated).
            let count = ((y1 - y0) * (x1 - x0)) as i32;
            let half = vdupq_n_s32(count / 2);
            let divisor = vdupq_n_f64(f64::from(count));
            let mut c = 0;
            while c + 8 <= ch {
                let (mut sum_lo, mut sum_hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        let v = vmovl_s8(vld1_s8(p.as_ptr().add(c)));
                        sum_lo = vaddw_s16(sum_lo, vget_low_s16(v));
                        sum_hi = vaddw_high_s16(sum_hi, v);
                    }
                }
                let avg_lo = rounded_average4(sum_lo, half, divisor);
                let avg_hi = rounded_average4(sum_hi, half, divisor);
                let avg_lo = vminq_s32(vmaxq_s32(avg_lo, lo), hi);
                let avg_hi = vminq_s32(vmaxq_s32(avg_hi, lo), hi);
                // In int8 range after the clamp, so the narrowing is exact.
                let words = vcombine_s16(vmovn_s32(avg_lo), vmovn_s32(avg_hi));
                vst1_s8(out.as_mut_ptr().add(c), vmovn_s16(words));
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::average_i8(g, input, channel(w, k), activation);
            }
        });
    }
}

/// NEON float max pooling.
pub(super) fn max_pool2d_f32(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    let ch = g.channels;
    // SAFETY: NEON is part of every aarch64 target; loads and stores cover `c..c + 4` with
    // `c + 4 <= ch`, inside each pixel's slice and `out`.
    unsafe {
        let (lo, hi) = (vdupq_n_f32(activation.0), vdupq_n_f32(activation.1));
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let mut c = 0;
            while c + 4 <= ch {
                let mut max = vdupq_n_f32(f32::MIN);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        max = vmaxnmq_f32(vld1q_f32(p.as_ptr().add(c)), max);
                    }
                }
                let v = vminnmq_f32(vmaxnmq_f32(max, lo), hi);
                vst1q_f32(out.as_mut_ptr().add(c), v);
                c += 4;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::max_f32(g, input, channel(w, k), activation);
            }
        });
    }
}

/// NEON float average pooling.
pub(super) fn average_pool2d_f32(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    let ch = g.channels;
    // SAFETY: NEON is part of every aarch64 target; loads and stores cover `c..c + 4` with
    // `c + 4 <= ch`, inside each pixel's slice and `out`.
    unsafe {
        let (lo, hi) = (vdupq_n_f32(activation.0), vdupq_n_f32(activation.1));
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let count = vdupq_n_f32(((y1 - y0) * (x1 - x0)) as f32);
            let mut c = 0;
            while c + 4 <= ch {
                let mut total = vdupq_n_f32(0.0);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        total = vaddq_f32(total, vld1q_f32(p.as_ptr().add(c)));
                    }
                }
                let v = vminnmq_f32(vmaxnmq_f32(vdivq_f32(total, count), lo), hi);
                vst1q_f32(out.as_mut_ptr().add(c), v);
                c += 4;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::average_f32(g, input, channel(w, k), activation);
            }
        });
    }
}

/// NEON int8 global average: the sums vectorized, each finished like the reference.
pub(super) fn global_average_pool_i8(
    s: &GlobalPoolShape,
    params: &GlobalAveragePoolI8Params,
    input: &[i8],
    output: &mut [i8],
) {
    let ch = s.channels;
    let area = s.count();
    let images = input.chunks_exact(area * ch);
    for (image, out) in images.zip(output.chunks_exact_mut(ch)) {
        let mut c = 0;
        while c + 8 <= ch {
            let mut sums = [0i32; 8];
            // SAFETY: NEON is part of every aarch64 target; loads read eight bytes at `c`
            // with `c + 8 <= ch` from pixels of `ch` bytes; the stores fill `sums`.
            unsafe {
                let zp = vdupq_n_s32(params.input_zero_point);
                let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
                for p in image.chunks_exact(ch) {
                    let v = vmovl_s8(vld1_s8(p.as_ptr().add(c)));
                    lo = vaddq_s32(lo, vsubq_s32(vmovl_s16(vget_low_s16(v)), zp));
                    hi = vaddq_s32(hi, vsubq_s32(vmovl_high_s16(v), zp));
                }
                vst1q_s32(sums.as_mut_ptr(), lo);
                vst1q_s32(sums.as_mut_ptr().add(4), hi);
            }
            for (o, &acc) in out[c..c + 8].iter_mut().zip(&sums) {
                // At most MAX_WINDOW elements (validated).
                *o = reference::finish_mean(acc, area as i32, params);
            }
            c += 8;
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::mean_i8(s, image, k, params);
        }
    }
}

/// NEON float global average.
pub(super) fn global_average_pool_f32(s: &GlobalPoolShape, input: &[f32], output: &mut [f32]) {
    let ch = s.channels;
    let area = s.count();
    let images = input.chunks_exact(area * ch);
    for (image, out) in images.zip(output.chunks_exact_mut(ch)) {
        let mut c = 0;
        // SAFETY: NEON is part of every aarch64 target; loads and stores cover `c..c + 4`
        // with `c + 4 <= ch`, inside each pixel and `out`.
        unsafe {
            let count = vdupq_n_f32(area as f32);
            while c + 4 <= ch {
                let mut total = vdupq_n_f32(0.0);
                for p in image.chunks_exact(ch) {
                    total = vaddq_f32(total, vld1q_f32(p.as_ptr().add(c)));
                }
                vst1q_f32(out.as_mut_ptr().add(c), vdivq_f32(total, count));
                c += 4;
            }
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::mean_f32(s, image, k);
        }
    }
}
