//! 32-bit Arm DSP-extension int8 kernel (Cortex-M4/M7, Armv7-A), CMSIS-NN's approach: four
//! input bytes per load, `(x - zp)` formed in two 16-bit lanes by `sxtab16`, weights widened
//! by `sxtb16`, and two products per `smlad`. Both operands take bytes (0, 2) and (1, 3), so the
//! lane pairs match without reordering. Two output rows share each input load. Exact: every
//! product fits in 16 x 16 bits and the accumulator wraps like the reference's.

use super::FullyConnectedI8;
use crate::ops::arm_dsp::{
    offset_pair, smlad, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8, word_i8,
};

/// The DSP int8 kernel.
pub(crate) fn fully_connected_i8_dsp(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    let s = op.shape;
    let n = s.in_features;
    let p = &op.params;
    let offset = offset_pair(p.input_zero_point);
    let body = n / 4 * 4;
    for b in 0..s.batch {
        let row = &op.input[b * n..(b + 1) * n];
        let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
        let mut o = 0;
        while o < s.out_features {
            let pair = o + 1 < s.out_features;
            let w0 = &op.weights[o * n..(o + 1) * n];
            let w1 = if pair {
                &op.weights[(o + 1) * n..(o + 2) * n]
            } else {
                w0
            };
            let (mut a0, mut a1) = (0i32, 0i32);
            let mut i = 0;
            while i < body {
                let x = word_i8(row, i);
                let (xe, xo) = (sxtab16(offset, x), sxtab16_ror8(offset, x));
                let w = word_i8(w0, i);
                a0 = smlad(xe, sxtb16(w), a0);
                a0 = smlad(xo, sxtb16_ror8(w), a0);
                let w = word_i8(w1, i);
                a1 = smlad(xe, sxtb16(w), a1);
                a1 = smlad(xo, sxtb16_ror8(w), a1);
                i += 4;
            }
            for i in body..n {
                let x = i32::from(row[i]) - p.input_zero_point;
                a0 = a0.wrapping_add(x * i32::from(w0[i]));
                a1 = a1.wrapping_add(x * i32::from(w1[i]));
            }
            if let Some(bias) = op.bias {
                a0 = a0.wrapping_add(bias[o]);
                if pair {
                    a1 = a1.wrapping_add(bias[o + 1]);
                }
            }
            out[o] = p.output(a0, o);
            if pair {
                out[o + 1] = p.output(a1, o + 1);
            }
            o += 2;
        }
    }
}
