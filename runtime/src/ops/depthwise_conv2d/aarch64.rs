//! aarch64 NEON depthwise convolution for multiplier 1: eight channels per step, `(x - zp)`
//! and the filter widened to i16 and multiplied into two i32x4 accumulators with `smlal`
//! (exact, like the reference). Other multipliers use the reference.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use super::{
    DepthwiseConv2dF32, DepthwiseConv2dI8, DepthwiseConv2dI16, Eights, depthwise_i16_by_eights,
};
use crate::ops::FloatWeight;

/// The NEON int8 kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_i8_neon(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels {
        return super::reference::depthwise_conv2d_i8(op, output);
    }
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { i8_neon(op, output) }
}

/// The NEON float kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_f32_neon<W: FloatWeight>(
    op: &DepthwiseConv2dF32<'_, W>,
    output: &mut [f32],
) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels {
        return super::reference::depthwise_conv2d_f32(op, output);
    }
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { f32_neon(op, output) }
}

/// The NEON 16x8 kernel (multiplier 1, windows of at most `MAX_STACK_TAPS`); the reference
/// otherwise: eight channels per step, the weights widened and `smlal` into two i32x4.
pub(super) fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { i16_neon(op, output) }
}

#[target_feature(enable = "neon")]
unsafe fn i16_neon(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    depthwise_i16_by_eights(
        op,
        output,
        Eights::new(
            // SAFETY: NEON is present (caller), here and in the closures below.
            unsafe { [vdupq_n_s32(0); 2] },
            |[lo, hi], x: &[i16; 8], w: &[i8; 8]| {
                // SAFETY: NEON is present; the loads read the eight elements of `x` and `w`.
                unsafe {
                    let x = vld1q_s16(x.as_ptr());
                    let w = vmovl_s8(vld1_s8(w.as_ptr()));
                    [
                        vmlal_s16(lo, vget_low_s16(x), vget_low_s16(w)),
                        vmlal_high_s16(hi, x, w),
                    ]
                }
            },
            |[lo, hi]| {
                let mut lanes = [0i32; 8];
                // SAFETY: NEON is present; the stores write the eight lanes of `lanes`.
                unsafe {
                    vst1q_s32(lanes.as_mut_ptr(), lo);
                    vst1q_s32(lanes.as_mut_ptr().add(4), hi);
                }
                lanes
            },
        ),
    );
}

#[target_feature(enable = "neon")]
unsafe fn i8_neon(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    // SAFETY: NEON is present (caller); each load reads 8 bytes from a slice of exactly 8.
    unsafe {
        let g = &op.geometry;
        let c = g.in_channels;
        let chunks = c / 8;
        let zp = vdupq_n_s16(op.params.input_zero_point as i16);
        let mut lanes = [0i32; 8];
        for b in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let out_base = ((b * g.out_height + oy) * g.out_width + ox) * c;
                    for chunk in 0..=chunks {
                        let c0 = chunk * 8;
                        let width = (c - c0).min(8);
                        if width == 0 {
                            break;
                        }
                        let mut lo = vdupq_n_s32(0);
                        let mut hi = vdupq_n_s32(0);
                        let mut tail = [0i32; 8];
                        for ky in 0..g.kernel_height {
                            let Some(iy) = g.input_row(oy, ky) else {
                                continue;
                            };
                            for kx in 0..g.kernel_width {
                                let Some(ix) = g.input_col(ox, kx) else {
                                    continue;
                                };
                                let x = &op.input
                                    [((b * g.in_height + iy) * g.in_width + ix) * c + c0..]
                                    [..width];
                                let w = &op.filter[(ky * g.kernel_width + kx) * c + c0..][..width];
                                if width == 8 {
                                    let xv = vsubq_s16(vmovl_s8(vld1_s8(x.as_ptr())), zp);
                                    let wv = vmovl_s8(vld1_s8(w.as_ptr()));
                                    lo = vmlal_s16(lo, vget_low_s16(xv), vget_low_s16(wv));
                                    hi = vmlal_high_s16(hi, xv, wv);
                                } else {
                                    for l in 0..width {
                                        tail[l] = tail[l].wrapping_add(
                                            (i32::from(x[l]) - op.params.input_zero_point)
                                                * i32::from(w[l]),
                                        );
                                    }
                                }
                            }
                        }
                        if width == 8 {
                            vst1q_s32(lanes.as_mut_ptr(), lo);
                            vst1q_s32(lanes.as_mut_ptr().add(4), hi);
                        } else {
                            lanes = tail;
                        }
                        for (l, &sum) in lanes.iter().enumerate().take(width) {
                            let o = c0 + l;
                            let acc = sum.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
                            output[out_base + o] = op.params.output(acc, o);
                        }
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn f32_neon<W: FloatWeight>(op: &DepthwiseConv2dF32<'_, W>, output: &mut [f32]) {
    // SAFETY: NEON is present (caller); each load reads 4 floats from a slice of exactly 4.
    unsafe {
        let g = &op.geometry;
        let c = g.in_channels;
        let chunks = c / 4;
        let (lo, hi) = op.activation;
        for b in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let out_base = ((b * g.out_height + oy) * g.out_width + ox) * c;
                    for chunk in 0..chunks {
                        let c0 = chunk * 4;
                        let mut acc = vdupq_n_f32(0.0);
                        for ky in 0..g.kernel_height {
                            let Some(iy) = g.input_row(oy, ky) else {
                                continue;
                            };
                            for kx in 0..g.kernel_width {
                                let Some(ix) = g.input_col(ox, kx) else {
                                    continue;
                                };
                                let x = &op.input
                                    [((b * g.in_height + iy) * g.in_width + ix) * c + c0..][..4];
                                let w = &op.filter[(ky * g.kernel_width + kx) * c + c0..][..4];
                                acc = vfmaq_f32(
                                    acc,
                                    vld1q_f32(x.as_ptr()),
                                    W::load4_neon(w.as_ptr()),
                                );
                            }
                        }
                        let mut lanes = [0f32; 4];
                        vst1q_f32(lanes.as_mut_ptr(), acc);
                        for (l, &sum) in lanes.iter().enumerate() {
                            let o = c0 + l;
                            let v = sum + op.bias.map_or(0.0, |bias| bias[o]);
                            output[out_base + o] = v.max(lo).min(hi);
                        }
                    }
                    for o in chunks * 4..c {
                        let mut acc = 0.0f32;
                        for ky in 0..g.kernel_height {
                            let Some(iy) = g.input_row(oy, ky) else {
                                continue;
                            };
                            for kx in 0..g.kernel_width {
                                let Some(ix) = g.input_col(ox, kx) else {
                                    continue;
                                };
                                acc += op.input[((b * g.in_height + iy) * g.in_width + ix) * c + o]
                                    * op.filter[(ky * g.kernel_width + kx) * c + o].widen();
                            }
                        }
                        let v = acc + op.bias.map_or(0.0, |bias| bias[o]);
                        output[out_base + o] = v.max(lo).min(hi);
                    }
                }
            }
        }
    }
}
