//! 32-bit Arm NEON depthwise convolution for multiplier 1 (Armv7-A): eight channels per
//! step, their accumulators held in q2-q3 across the window's taps by the tap kernels of
//! [`crate::ops::arm_neon`]; the last `channels % 8` channels are summed one at a time.
//! Other multipliers and windows of more than `MAX_STACK_TAPS` taps use the reference (int8:
//! the DSP kernel).

use super::{
    DepthwiseConv2dF32, DepthwiseConv2dI8, DepthwiseConv2dI16, MAX_STACK_TAPS,
    depthwise_i16_by_eights, for_each_window, lanes,
};
use crate::isa::Isa;
use crate::ops::arm_neon::{Lanes8, mla_f32x8, mla_i8x8, mla_i16x8};

/// The NEON int8 kernel (multiplier 1); the DSP kernel where the CPU lacks NEON.
pub(super) fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels
        || g.kernel_height * g.kernel_width > MAX_STACK_TAPS
        || !Isa::Neon32.available()
    {
        return super::arm::depthwise_conv2d_i8_dsp(op, output);
    }
    let c = g.in_channels;
    let zp = op.params.input_zero_point;
    let zero_points = u64::from_le_bytes([zp as u8; 8]);
    let store = |output: &mut [i8], at: usize, o: usize, acc: i32| {
        let acc = acc.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
        output[at + o] = op.params.output(acc, o);
    };
    let mut offsets = [(0usize, 0usize); MAX_STACK_TAPS];
    for_each_window(g, |pixel, window| {
        let taps = window.offsets(c, &mut offsets);
        let base = pixel * c;
        let mut c0 = 0;
        while c0 + 8 <= c {
            let mut acc = Lanes8::default();
            for &(x, w) in taps {
                let (x, w) = (lanes(op.input, x + c0), lanes(op.filter, w + c0));
                // SAFETY: NEON is available (checked above).
                unsafe { mla_i8x8(&mut acc, x, w, zero_points) };
            }
            for (l, sum) in acc.i32s().into_iter().enumerate() {
                store(output, base, c0 + l, sum);
            }
            c0 += 8;
        }
        for o in c0..c {
            let acc = taps.iter().fold(0i32, |acc, &(x, w)| {
                let x = i32::from(op.input[x + o]) - zp;
                acc.wrapping_add(x * i32::from(op.filter[w + o]))
            });
            store(output, base, o, acc);
        }
    });
}

/// The NEON float kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_f32(op: &DepthwiseConv2dF32<'_>, output: &mut [f32]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels
        || g.kernel_height * g.kernel_width > MAX_STACK_TAPS
        || !Isa::Neon32.available()
    {
        return super::reference::depthwise_conv2d_f32(op, output);
    }
    let c = g.in_channels;
    let (lo, hi) = op.activation;
    let store = |output: &mut [f32], at: usize, o: usize, acc: f32| {
        let v = acc + op.bias.map_or(0.0, |bias| bias[o]);
        output[at + o] = v.max(lo).min(hi);
    };
    let mut offsets = [(0usize, 0usize); MAX_STACK_TAPS];
    for_each_window(g, |pixel, window| {
        let taps = window.offsets(c, &mut offsets);
        let base = pixel * c;
        let mut c0 = 0;
        while c0 + 8 <= c {
            let mut acc = Lanes8::default();
            for &(x, w) in taps {
                let (x, w) = (lanes(op.input, x + c0), lanes(op.filter, w + c0));
                // SAFETY: NEON is available (checked above).
                unsafe { mla_f32x8(&mut acc, x, w) };
            }
            for (l, sum) in acc.f32s().into_iter().enumerate() {
                store(output, base, c0 + l, sum);
            }
            c0 += 8;
        }
        for o in c0..c {
            // The window's taps in the reference's (ky, kx) order.
            let acc = taps.iter().fold(0.0f32, |acc, &(x, w)| {
                acc + op.input[x + o] * op.filter[w + o]
            });
            store(output, base, o, acc);
        }
    });
}

/// The NEON 16x8 kernel (multiplier 1, windows of at most `MAX_STACK_TAPS`); the reference
/// otherwise.
pub(super) fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    if !Isa::Neon32.available() {
        return super::reference::depthwise_conv2d_i16(op, output);
    }
    depthwise_i16_by_eights(
        op,
        output,
        Lanes8::default(),
        |mut acc, x, w| {
            // SAFETY: NEON is available (checked above).
            unsafe { mla_i16x8(&mut acc, x, w) };
            acc
        },
        Lanes8::i32s,
    );
}
