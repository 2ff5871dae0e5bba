//! aarch64 convolution: two output pixels' patches gathered into the scratch, then dotted
//! with four filter rows at a time; pointwise convolutions run as fully-connected layers.
//!
//! - NEON: patches as `x - zp` in i16 (0 in the padding), `smlal` into i32 lanes.
//! - SDOT: patches as raw int8 with the zero point written into the padding, so every tap is
//!   `(x - zp) w` once the filter's full sum times `zp` is subtracted; the filter sums come
//!   from SDOT against ones. Exact modulo 2^32, like the reference's wrapping accumulator.
//! - f32: `fmla`, patches as floats (0 in the padding).

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use super::{Conv2dF32, Conv2dI8, drive, gather_patch};
use crate::isa::Isa;
use crate::ops::FloatWeight;
use crate::ops::fully_connected::aarch64::{
    fully_connected_f32_neon, fully_connected_i8_dotprod, fully_connected_i8_neon, sdot,
};

/// The NEON int8 kernel.
pub(super) fn conv2d_i8_neon(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if op.geometry.is_pointwise() {
        return fully_connected_i8_neon(&op.as_fully_connected(), output);
    }
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { i8_neon(op, output, scratch) }
}

/// The SDOT int8 kernel; NEON where SDOT is missing.
pub(super) fn conv2d_i8_dotprod(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if !Isa::DotProd.available() {
        return conv2d_i8_neon(op, output, scratch);
    }
    if op.geometry.is_pointwise() {
        return fully_connected_i8_dotprod(&op.as_fully_connected(), output);
    }
    // The int8 patches take half the i16 scratch.
    let bytes: &mut [i8] = bytemuck::cast_slice_mut(scratch);
    // SAFETY: SDOT is available (checked above).
    unsafe { i8_dotprod(op, output, bytes) }
}

/// The NEON float kernel, for f32 or f16 filters (widened with `fcvtl` as they load).
pub(super) fn conv2d_f32_neon<W: FloatWeight>(
    op: &Conv2dF32<'_, W>,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let g = &op.geometry;
    if g.is_pointwise() {
        return fully_connected_f32_neon(&op.as_fully_connected(), output);
    }
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { f32_neon(op, output, scratch) }
}

#[target_feature(enable = "neon")]
unsafe fn i8_neon(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    // SAFETY: NEON is present (caller); loads read 8 elements at `i` with `i + 8 <= k` from
    // slices of exactly `k` elements.
    unsafe {
        let g = &op.geometry;
        let k = g.patch_len();
        let chunks = k / 8;
        let mut gather_patch =
            |p: usize, group: usize, dst: &mut [i16]| op.gather_centered(p, group, dst);
        let mut dot = |p0: &[i16], p1: &[i16], oc: usize, rows: usize| -> [[i32; 2]; 4] {
            let w: [&[i8]; 4] =
                core::array::from_fn(|r| &op.filter[(oc + r.min(rows - 1)) * k..][..k]);
            let mut acc = [[vdupq_n_s32(0); 2]; 4];
            for c in 0..chunks {
                let i = c * 8;
                let x0 = vld1q_s16(p0.as_ptr().add(i));
                let x1 = vld1q_s16(p1.as_ptr().add(i));
                for r in 0..4 {
                    let wv = vmovl_s8(vld1_s8(w[r].as_ptr().add(i)));
                    acc[r][0] = vmlal_s16(acc[r][0], vget_low_s16(x0), vget_low_s16(wv));
                    acc[r][0] = vmlal_high_s16(acc[r][0], x0, wv);
                    acc[r][1] = vmlal_s16(acc[r][1], vget_low_s16(x1), vget_low_s16(wv));
                    acc[r][1] = vmlal_high_s16(acc[r][1], x1, wv);
                }
            }
            let mut out = [[0i32; 2]; 4];
            for r in 0..4 {
                let mut s = [vaddvq_s32(acc[r][0]), vaddvq_s32(acc[r][1])];
                for i in chunks * 8..k {
                    let w = i32::from(w[r][i]);
                    s[0] = s[0].wrapping_add(i32::from(p0[i]) * w);
                    s[1] = s[1].wrapping_add(i32::from(p1[i]) * w);
                }
                out[r] = s;
            }
            out
        };
        let mut emit = |p: usize, o: usize, acc: i32| op.store(output, p, o, acc);
        drive(g, scratch, &mut gather_patch, &mut dot, &mut emit);
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_dotprod(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i8]) {
    // SAFETY: SDOT is present (caller); loads read 16 bytes at `i` with `i + 16 <= k` from
    // slices of exactly `k` elements.
    unsafe {
        let g = &op.geometry;
        let k = g.patch_len();
        let zp = op.params.input_zero_point;
        let chunks = k / 16;
        let ones = vdupq_n_s8(1);
        let mut gather_patch = |p: usize, group: usize, dst: &mut [i8]| {
            gather_patch(g, op.input, p, group, dst, zp as i8, |x: i8| x)
        };
        let mut dot = |p0: &[i8], p1: &[i8], oc: usize, rows: usize| -> [[i32; 2]; 4] {
            let w: [&[i8]; 4] =
                core::array::from_fn(|r| &op.filter[(oc + r.min(rows - 1)) * k..][..k]);
            let mut acc = [[vdupq_n_s32(0); 2]; 4];
            let mut wsum = [vdupq_n_s32(0); 4];
            for c in 0..chunks {
                let i = c * 16;
                let x0 = vld1q_s8(p0.as_ptr().add(i));
                let x1 = vld1q_s8(p1.as_ptr().add(i));
                for r in 0..4 {
                    let wv = vld1q_s8(w[r].as_ptr().add(i));
                    acc[r][0] = sdot(acc[r][0], x0, wv);
                    acc[r][1] = sdot(acc[r][1], x1, wv);
                    wsum[r] = sdot(wsum[r], ones, wv);
                }
            }
            let mut out = [[0i32; 2]; 4];
            for r in 0..4 {
                let mut ws = vaddvq_s32(wsum[r]);
                let mut s = [vaddvq_s32(acc[r][0]), vaddvq_s32(acc[r][1])];
                for i in chunks * 16..k {
                    let w = i32::from(w[r][i]);
                    ws = ws.wrapping_add(w);
                    s[0] = s[0].wrapping_add(i32::from(p0[i]) * w);
                    s[1] = s[1].wrapping_add(i32::from(p1[i]) * w);
                }
                let correction = zp.wrapping_mul(ws);
                out[r] = [s[0].wrapping_sub(correction), s[1].wrapping_sub(correction)];
            }
            out
        };
        let mut emit = |p: usize, o: usize, acc: i32| op.store(output, p, o, acc);
        drive(g, scratch, &mut gather_patch, &mut dot, &mut emit);
    }
}

#[target_feature(enable = "neon")]
unsafe fn f32_neon<W: FloatWeight>(op: &Conv2dF32<'_, W>, output: &mut [f32], scratch: &mut [f32]) {
    // SAFETY: NEON is present (caller); loads read 4 floats at `i` with `i + 4 <= k` from
    // slices of exactly `k` elements.
    unsafe {
        let g = &op.geometry;
        let k = g.patch_len();
        let chunks = k / 4;
        let mut gather_patch = |p: usize, group: usize, dst: &mut [f32]| {
            gather_patch(g, op.input, p, group, dst, 0.0f32, |x: f32| x)
        };
        let mut dot = |p0: &[f32], p1: &[f32], oc: usize, rows: usize| -> [[f32; 2]; 4] {
            let w: [&[W]; 4] =
                core::array::from_fn(|r| &op.filter[(oc + r.min(rows - 1)) * k..][..k]);
            let mut acc = [[vdupq_n_f32(0.0); 2]; 4];
            for c in 0..chunks {
                let i = c * 4;
                let x0 = vld1q_f32(p0.as_ptr().add(i));
                let x1 = vld1q_f32(p1.as_ptr().add(i));
                for r in 0..4 {
                    let wv = W::load4_neon(w[r].as_ptr().add(i));
                    acc[r][0] = vfmaq_f32(acc[r][0], x0, wv);
                    acc[r][1] = vfmaq_f32(acc[r][1], x1, wv);
                }
            }
            let mut out = [[0f32; 2]; 4];
            for r in 0..4 {
                let mut s = [vaddvq_f32(acc[r][0]), vaddvq_f32(acc[r][1])];
                for i in chunks * 4..k {
                    s[0] += p0[i] * w[r][i].widen();
                    s[1] += p1[i] * w[r][i].widen();
                }
                out[r] = s;
            }
            out
        };
        let mut emit = |p: usize, o: usize, acc: f32| op.store(output, p, o, acc);
        drive(g, scratch, &mut gather_patch, &mut dot, &mut emit);
    }
}
