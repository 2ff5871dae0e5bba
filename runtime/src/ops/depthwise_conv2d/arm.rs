//! 32-bit Arm DSP-extension int8 depthwise convolution for multiplier 1: four channels per
//! step, one 32-bit load of input and filter bytes each, lanes (0, 2) and (1, 3) widened with
//! `sxtab16`/`sxtb16` and accumulated per channel with `smlabb`/`smlatt` (one product each,
//! since SMLAD's pair sums would mix channels). Exact, like the reference.

use super::DepthwiseConv2dI8;
use crate::ops::arm_dsp::{
    offset_pair, smlabb, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8, word_i8,
};

/// The DSP int8 kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_i8_dsp(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    if g.out_channels != g.in_channels {
        return super::reference::depthwise_conv2d_i8(op, output);
    }
    let c = g.in_channels;
    let body = c / 4 * 4;
    let zp = op.params.input_zero_point;
    let offset = offset_pair(zp);
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                let out_base = ((b * g.out_height + oy) * g.out_width + ox) * c;
                let mut c0 = 0;
                while c0 < c {
                    let quad = c0 < body;
                    let mut acc = [0i32; 4];
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let xi = ((b * g.in_height + iy) * g.in_width + ix) * c + c0;
                            let wi = (ky * g.kernel_width + kx) * c + c0;
                            if quad {
                                let x = word_i8(op.input, xi);
                                let w = word_i8(op.filter, wi);
                                let (xe, xo) = (sxtab16(offset, x), sxtab16_ror8(offset, x));
                                let (we, wo) = (sxtb16(w), sxtb16_ror8(w));
                                acc[0] = smlabb(xe, we, acc[0]);
                                acc[2] = smlatt(xe, we, acc[2]);
                                acc[1] = smlabb(xo, wo, acc[1]);
                                acc[3] = smlatt(xo, wo, acc[3]);
                            } else {
                                let x = i32::from(op.input[xi]) - zp;
                                acc[0] = acc[0].wrapping_add(x * i32::from(op.filter[wi]));
                            }
                        }
                    }
                    let lanes = if quad { 4 } else { 1 };
                    for (l, &sum) in acc.iter().enumerate().take(lanes) {
                        let o = c0 + l;
                        let sum = sum.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
                        output[out_base + o] = op.params.output(sum, o);
                    }
                    c0 += lanes;
                }
            }
        }
    }
}
