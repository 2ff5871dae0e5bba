//! 32-bit Arm NEON depthwise convolution for multiplier 1 (Armv7-A): eight channels per
//! step, their accumulators held in q2-q3 across the window's taps by the tap kernels of
//! [`crate::ops::arm_neon`]; the last `channels % 8` channels are summed one at a time.
//! Other multipliers use the reference (int8: the DSP kernel's fallback).

use super::{DepthwiseConv2dF32, DepthwiseConv2dI8, for_each_window};
use crate::isa::Isa;
use crate::ops::arm_neon::{Lanes8, mla_f32x8, mla_i8x8};

/// The eight elements of `s` from `at`.
fn eight<T>(s: &[T], at: usize) -> &[T; 8] {
    s[at..at + 8].try_into().expect("a slice of eight")
}

/// The NEON int8 kernel (multiplier 1); the DSP kernel where the CPU lacks NEON.
pub(super) fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels || !Isa::Neon32.available() {
        return super::arm::depthwise_conv2d_i8_dsp(op, output);
    }
    let c = g.in_channels;
    let zp = op.params.input_zero_point;
    let zero_points = u64::from_le_bytes([zp as u8; 8]);
    let store = |output: &mut [i8], at: usize, o: usize, acc: i32| {
        let acc = acc.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
        output[at + o] = op.params.output(acc, o);
    };
    for_each_window(g, |pixel, window| {
        let base = pixel * c;
        let mut c0 = 0;
        while c0 + 8 <= c {
            let mut acc = Lanes8::default();
            window.taps(|x, tap| {
                let (x, w) = (eight(op.input, x * c + c0), eight(op.filter, tap * c + c0));
                // SAFETY: NEON is available (checked above).
                unsafe { mla_i8x8(&mut acc, x, w, zero_points) };
            });
            for (l, sum) in acc.i32s().into_iter().enumerate() {
                store(output, base, c0 + l, sum);
            }
            c0 += 8;
        }
        for o in c0..c {
            let mut acc = 0i32;
            window.taps(|x, tap| {
                let x = i32::from(op.input[x * c + o]) - zp;
                acc = acc.wrapping_add(x * i32::from(op.filter[tap * c + o]));
            });
            store(output, base, o, acc);
        }
    });
}

/// The NEON float kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_f32(op: &DepthwiseConv2dF32<'_>, output: &mut [f32]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels || !Isa::Neon32.available() {
        return super::reference::depthwise_conv2d_f32(op, output);
    }
    let c = g.in_channels;
    let (lo, hi) = op.activation;
    let store = |output: &mut [f32], at: usize, o: usize, acc: f32| {
        let v = acc + op.bias.map_or(0.0, |bias| bias[o]);
        output[at + o] = v.max(lo).min(hi);
    };
    for_each_window(g, |pixel, window| {
        let base = pixel * c;
        let mut c0 = 0;
        while c0 + 8 <= c {
            let mut acc = Lanes8::default();
            window.taps(|x, tap| {
                let (x, w) = (eight(op.input, x * c + c0), eight(op.filter, tap * c + c0));
                // SAFETY: NEON is available (checked above).
                unsafe { mla_f32x8(&mut acc, x, w) };
            });
            for (l, sum) in acc.f32s().into_iter().enumerate() {
                store(output, base, c0 + l, sum);
            }
            c0 += 8;
        }
        for o in c0..c {
            let mut acc = 0.0f32;
            window.taps(|x, tap| acc += op.input[x * c + o] * op.filter[tap * c + o]);
            store(output, base, o, acc);
        }
    });
}
