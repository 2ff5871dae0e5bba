//! 32-bit Arm NEON fully-connected kernels (Armv7-A): four output rows share each load of the
//! input row, through the four-row micro-kernels of [`crate::ops::arm_neon`].

use super::{
    FullyConnectedF32, FullyConnectedI8, FullyConnectedI16, finish_rows_f32, finish_rows_i8,
};
use crate::isa::Isa;
use crate::ops::arm_neon::{dot_f32_rows4, dot_i8_rows4, dot_i16_wide_rows4};

/// Walks every input row and block of up to four output rows, handing `block(row, o, rows,
/// weights)` four weight rows (the last repeated where fewer remain).
fn for_each_block<X, W>(
    batch: usize,
    in_features: usize,
    out_features: usize,
    input: &[X],
    weights: &[W],
    mut block: impl FnMut(usize, &[X], usize, usize, [&[W]; 4]),
) {
    let n = in_features;
    for b in 0..batch {
        let row = &input[b * n..(b + 1) * n];
        let mut o = 0;
        while o < out_features {
            let rows = (out_features - o).min(4);
            let w: [&[W]; 4] = core::array::from_fn(|r| &weights[(o + r.min(rows - 1)) * n..][..n]);
            block(b, row, o, rows, w);
            o += rows;
        }
    }
}

/// The NEON int8 kernel; the DSP kernel where the CPU lacks NEON.
pub(crate) fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    if !Isa::Neon32.available() {
        return super::arm::fully_connected_i8_dsp(op, output);
    }
    let s = op.shape;
    let zp = op.params.input_zero_point;
    for_each_block(
        s.batch,
        s.in_features,
        s.out_features,
        op.input,
        op.weights,
        |b, row, o, rows, w| {
            // SAFETY: NEON is available (checked above).
            let sums = unsafe { dot_i8_rows4(row, zp, w) };
            let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
            finish_rows_i8(op, row, o, rows, s.in_features / 8 * 8, sums, out);
        },
    );
}

/// The NEON float kernel; the reference where the CPU lacks NEON.
pub(crate) fn fully_connected_f32(op: &FullyConnectedF32<'_>, output: &mut [f32]) {
    if !Isa::Neon32.available() {
        return super::reference::fully_connected_f32(op, output);
    }
    let s = op.shape;
    for_each_block(
        s.batch,
        s.in_features,
        s.out_features,
        op.input,
        op.weights,
        |b, row, o, rows, w| {
            // SAFETY: NEON is available (checked above).
            let sums = unsafe { dot_f32_rows4(row, w) };
            let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
            finish_rows_f32(op, row, o, rows, s.in_features / 4 * 4, sums, out);
        },
    );
}

/// The NEON 16x8 kernel; the reference where the CPU lacks NEON.
pub(crate) fn fully_connected_i16(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    if !Isa::Neon32.available() {
        return super::reference::fully_connected_i16(op, output);
    }
    let s = op.shape;
    let n = s.in_features;
    for_each_block(
        s.batch,
        n,
        s.out_features,
        op.input,
        op.weights,
        |b, row, o, rows, w| {
            // SAFETY: NEON is available (checked above).
            let sums = unsafe { dot_i16_wide_rows4(row, w) };
            for (r, &sum) in sums.iter().enumerate().take(rows) {
                let weights = w[r];
                let mut acc = sum;
                for i in n / 8 * 8..n {
                    acc = acc.wrapping_add(i64::from(row[i]) * i64::from(weights[i]));
                }
                if let Some(bias) = op.bias {
                    acc = acc.wrapping_add(i64::from(bias[o + r]));
                }
                output[b * s.out_features + o + r] = op.params.output(acc, o + r);
            }
        },
    );
}
