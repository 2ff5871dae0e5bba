//! The portable reference kernels: plain loops over output pixels, channels and the kernel
//! window, skipping taps that fall in the padding. They define the results every fast path
//! must reproduce.

use super::{Conv2dF32, Conv2dI8, Conv2dI16};

/// TFLite's `reference_integer_ops::ConvPerChannel` (with groups): taps in the padding add
/// nothing, which is the same as padding with the input's zero point.
///
/// The operands must have passed [`Conv2dI8::validate`]; the scratch is unused.
pub fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], _scratch: &mut [i16]) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let patch = g.patch_len();
    let zp = op.params.input_zero_point;
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let group = oc / og;
                    let filter = &op.filter[oc * patch..(oc + 1) * patch];
                    let mut acc: i32 = 0;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let pixel = ((b * g.in_height + iy) * g.in_width + ix) * g.in_channels;
                            let x = &op.input[pixel + group * cg..][..cg];
                            let w = &filter[(ky * g.kernel_width + kx) * cg..][..cg];
                            for (&x, &w) in x.iter().zip(w) {
                                acc = acc.wrapping_add((i32::from(x) - zp) * i32::from(w));
                            }
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

/// TFLite's reference 16x8 `ConvPerChannel` (with groups): int16 activations without a zero
/// point, so taps in the padding add nothing; a 64-bit accumulator and the 64-bit multiplier.
///
/// The operands must have passed [`Conv2dI16::validate`].
pub fn conv2d_i16(op: &Conv2dI16<'_>, output: &mut [i16]) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let patch = g.patch_len();
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let group = oc / og;
                    let filter = &op.filter[oc * patch..(oc + 1) * patch];
                    let mut acc: i64 = 0;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let pixel = ((b * g.in_height + iy) * g.in_width + ix) * g.in_channels;
                            let x = &op.input[pixel + group * cg..][..cg];
                            let w = &filter[(ky * g.kernel_width + kx) * cg..][..cg];
                            for (&x, &w) in x.iter().zip(w) {
                                acc = acc.wrapping_add(i64::from(x) * i64::from(w));
                            }
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

/// The float reference: taps in index order (ky, kx, channel), each weight widened to f32,
/// then bias, then the clamp.
pub fn conv2d_f32<W: crate::ops::FloatWeight>(
    op: &Conv2dF32<'_, W>,
    output: &mut [f32],
    _scratch: &mut [f32],
) {
    let g = &op.geometry;
    debug_assert!(op.validate(output).is_ok());
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let patch = g.patch_len();
    let (lo, hi) = op.activation;
    let mut out_index = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                for oc in 0..g.out_channels {
                    let group = oc / og;
                    let filter = &op.filter[oc * patch..(oc + 1) * patch];
                    let mut acc = 0.0f32;
                    for ky in 0..g.kernel_height {
                        let Some(iy) = g.input_row(oy, ky) else {
                            continue;
                        };
                        for kx in 0..g.kernel_width {
                            let Some(ix) = g.input_col(ox, kx) else {
                                continue;
                            };
                            let pixel = ((b * g.in_height + iy) * g.in_width + ix) * g.in_channels;
                            let x = &op.input[pixel + group * cg..][..cg];
                            let w = &filter[(ky * g.kernel_width + kx) * cg..][..cg];
                            for (&x, &w) in x.iter().zip(w) {
                                acc += x * w.widen();
                            }
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
