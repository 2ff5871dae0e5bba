//! 32-bit Arm NEON depthwise convolution for multiplier 1 (Armv7-A): eight channels per
//! step, their accumulators held in q2-q3 across the window's taps by the tap kernels of
//! [`crate::ops::arm_neon`], through the shared [`depthwise_by_eights`] loop. Other
//! multipliers and windows of more than `MAX_STACK_TAPS` taps use the reference (int8: the
//! DSP kernel).

use super::{
    DepthwiseConv2dF32, DepthwiseConv2dI8, DepthwiseConv2dI16, Eights, by_eights_applies,
    depthwise_by_eights, depthwise_i16_by_eights,
};
use crate::isa::Isa;
use crate::ops::arm_neon::{Lanes8, mla_f32x8, mla_i8x8, mla_i16x8};

/// The NEON int8 kernel; the DSP kernel where it does not apply or the CPU lacks NEON.
pub(super) fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    if !by_eights_applies(&op.geometry) || !Isa::Neon32.available() {
        return super::arm::depthwise_conv2d_i8_dsp(op, output);
    }
    let zp = op.params.input_zero_point;
    let zero_points = u64::from_le_bytes([zp as u8; 8]);
    depthwise_by_eights(
        &op.geometry,
        (op.input, op.filter),
        output,
        Eights::new(
            Lanes8::default(),
            |mut acc, x, w| {
                // SAFETY: NEON is available (checked above).
                unsafe { mla_i8x8(&mut acc, x, w, zero_points) };
                acc
            },
            Lanes8::i32s,
        ),
        |taps, o| {
            taps.iter().fold(0i32, |acc, &(x, w)| {
                let x = i32::from(op.input[x + o]) - zp;
                acc.wrapping_add(x * i32::from(op.filter[w + o]))
            })
        },
        |sum, o| {
            op.params
                .output(sum.wrapping_add(op.bias.map_or(0, |b| b[o])), o)
        },
    );
}

/// The NEON float kernel; the reference where it does not apply or the CPU lacks NEON.
pub(super) fn depthwise_conv2d_f32(op: &DepthwiseConv2dF32<'_>, output: &mut [f32]) {
    if !by_eights_applies(&op.geometry) || !Isa::Neon32.available() {
        return super::reference::depthwise_conv2d_f32(op, output);
    }
    let (lo, hi) = op.activation;
    depthwise_by_eights(
        &op.geometry,
        (op.input, op.filter),
        output,
        Eights::new(
            Lanes8::default(),
            |mut acc, x, w| {
                // SAFETY: NEON is available (checked above).
                unsafe { mla_f32x8(&mut acc, x, w) };
                acc
            },
            Lanes8::f32s,
        ),
        |taps, o| {
            taps.iter().fold(0.0f32, |acc, &(x, w)| {
                acc + op.input[x + o] * op.filter[w + o]
            })
        },
        |sum, o| (sum + op.bias.map_or(0.0, |b| b[o])).max(lo).min(hi),
    );
}

/// The NEON 16x8 kernel; the reference where it does not apply or the CPU lacks NEON.
pub(super) fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    if !Isa::Neon32.available() {
        return super::reference::depthwise_conv2d_i16(op, output);
    }
    depthwise_i16_by_eights(
        op,
        output,
        Eights::new(
            Lanes8::default(),
            |mut acc, x, w| {
                // SAFETY: NEON is available (checked above).
                unsafe { mla_i16x8(&mut acc, x, w) };
                acc
            },
            Lanes8::i32s,
        ),
    );
}
