//! The portable reference kernels: for each output pixel and channel, the taps of the
//! window that fall inside the image.

use super::{DepthwiseConv2dF32, DepthwiseConv2dI8, DepthwiseConv2dI16};

/// TFLite's `reference_integer_ops::DepthwiseConvPerChannel`.
///
/// The operands must have passed [`DepthwiseConv2dI8::validate`].
pub fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let multiplier = g.out_channels / g.in_channels;
    let zp = op.params.input_zero_point;
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let ic = oc / multiplier;
                    let mut acc: i32 = 0;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let x = op.input
                                [((b * g.in_height + iy) * g.in_width + ix) * g.in_channels + ic];
                            let w = op.filter[(ky * g.kernel_width + kx) * g.out_channels + oc];
                            acc = acc.wrapping_add((i32::from(x) - zp) * i32::from(w));
                        }
                    }
                    if let Some(bias) = op.bias {
                        acc = acc.wrapping_add(bias[oc]);
                    }
                    output[out_index] = op.params.output(acc, oc);
                    out_index += 1;
                }
            }
        }
    }
}

/// TFLite's reference 16x8 `DepthwiseConvPerChannel`: no zero points, a 64-bit accumulator,
/// the 64-bit multiplier.
///
/// The operands must have passed [`DepthwiseConv2dI16::validate`].
pub fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let multiplier = g.out_channels / g.in_channels;
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let ic = oc / multiplier;
                    let mut acc: i64 = 0;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let x = op.input
                                [((b * g.in_height + iy) * g.in_width + ix) * g.in_channels + ic];
                            let w = op.filter[(ky * g.kernel_width + kx) * g.out_channels + oc];
                            acc = acc.wrapping_add(i64::from(x) * i64::from(w));
                        }
                    }
                    if let Some(bias) = op.bias {
                        acc = acc.wrapping_add(i64::from(bias[oc]));
                    }
                    output[out_index] = op.params.output(acc, oc);
                    out_index += 1;
                }
            }
        }
    }
}

/// The float reference: taps in (ky, kx) order, then bias, then the clamp.
pub fn depthwise_conv2d_f32<W: crate::ops::FloatWeight>(
    op: &DepthwiseConv2dF32<'_, W>,
    output: &mut [f32],
) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let multiplier = g.out_channels / g.in_channels;
    let (lo, hi) = op.activation;
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let ic = oc / multiplier;
                    let mut acc = 0.0f32;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let x = op.input
                                [((b * g.in_height + iy) * g.in_width + ix) * g.in_channels + ic];
                            acc += x * op.filter[(ky * g.kernel_width + kx) * g.out_channels + oc]
                                .widen();
                        }
                    }
                    if let Some(bias) = op.bias {
                        acc += bias[oc];
                    }
                    output[out_index] = acc.max(lo).min(hi);
                    out_index += 1;
                }
            }
        }
    }
}
