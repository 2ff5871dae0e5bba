//! 32-bit Arm NEON convolution (Armv7-A): two output pixels' patches gathered into the
//! scratch, each dotted with four filter rows at a time by the four-row micro-kernels of
//! [`crate::ops::arm_neon`]; pointwise convolutions run as fully-connected layers.
//!
//! - int8: patches as `x - zp` in i16 (0 in the padding), exact like the reference.
//! - f32: patches as floats (0 in the padding).

use super::{Conv2dF32, Conv2dI8, drive, gather_patch};
use crate::isa::Isa;
use crate::ops::arm_neon::{dot_f32_rows4, dot_i16_rows4};
use crate::ops::fully_connected::arm_neon as fc;

/// Both patches' sums over four filter rows: the SIMD body from `dot`, then the scalar tail
/// from `lanes` on.
fn dot_pair<P: Copy, W: Copy, A: Copy>(
    patches: [&[P]; 2],
    w: [&[W]; 4],
    lanes: usize,
    dot: impl Fn(&[P], [&[W]; 4]) -> [A; 4],
    tail: impl Fn(A, P, W) -> A,
) -> [[A; 2]; 4] {
    let k = patches[0].len();
    let sums = patches.map(|patch| {
        let mut s = dot(patch, w);
        for (r, s) in s.iter_mut().enumerate() {
            for i in k / lanes * lanes..k {
                *s = tail(*s, patch[i], w[r][i]);
            }
        }
        s
    });
    core::array::from_fn(|r| [sums[0][r], sums[1][r]])
}

/// The NEON int8 kernel; the DSP kernel where the CPU lacks NEON.
pub(super) fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if !Isa::Neon32.available() {
        return super::arm::conv2d_i8_dsp(op, output, scratch);
    }
    let g = &op.geometry;
    if g.is_pointwise() {
        return fc::fully_connected_i8(&op.as_fully_connected(), output);
    }
    let k = g.patch_len();
    let mut gather = |p: usize, group: usize, dst: &mut [i16]| op.gather_centered(p, group, dst);
    let mut dot = |p0: &[i16], p1: &[i16], oc: usize, rows: usize| {
        let w: [&[i8]; 4] = core::array::from_fn(|r| &op.filter[(oc + r.min(rows - 1)) * k..][..k]);
        dot_pair(
            [&p0[..k], &p1[..k]],
            w,
            8,
            // SAFETY: NEON is available (checked above).
            |x, w| unsafe { dot_i16_rows4(x, w) },
            |s: i32, x: i16, w: i8| s.wrapping_add(i32::from(x) * i32::from(w)),
        )
    };
    let mut emit = |p: usize, o: usize, acc: i32| op.store(output, p, o, acc);
    drive(g, scratch, &mut gather, &mut dot, &mut emit);
}

/// The NEON float kernel; the reference where the CPU lacks NEON.
pub(super) fn conv2d_f32(op: &Conv2dF32<'_>, output: &mut [f32], scratch: &mut [f32]) {
    if !Isa::Neon32.available() {
        return super::reference::conv2d_f32(op, output, scratch);
    }
    let g = &op.geometry;
    if g.is_pointwise() {
        return fc::fully_connected_f32(&op.as_fully_connected(), output);
    }
    let k = g.patch_len();
    let mut gather = |p: usize, group: usize, dst: &mut [f32]| {
        gather_patch(g, op.input, p, group, dst, 0.0, |x: f32| x)
    };
    let mut dot = |p0: &[f32], p1: &[f32], oc: usize, rows: usize| {
        let w: [&[f32]; 4] =
            core::array::from_fn(|r| &op.filter[(oc + r.min(rows - 1)) * k..][..k]);
        dot_pair(
            [&p0[..k], &p1[..k]],
            w,
            4,
            // SAFETY: NEON is available (checked above).
            |x, w| unsafe { dot_f32_rows4(x, w) },
            |s: f32, x: f32, w: f32| s + x * w,
        )
    };
    let mut emit = |p: usize, o: usize, acc: f32| op.store(output, p, o, acc);
    drive(g, scratch, &mut gather, &mut dot, &mut emit);
}
