//! 32-bit Arm DSP-extension int8 convolution (Cortex-M4/M7, Armv7-A), as CMSIS-NN's
//! `arm_convolve_s8`: two output pixels' patches gathered as q15 `(x - zp)` (0 in the padding)
//! into the scratch, then each pair of filter rows dotted with both patches, two products per
//! `smlad`. Each group of four patch values is stored in the order (0, 2, 1, 3) so that a
//! 32-bit load lines up with the (0, 2) and (1, 3) lanes `sxtb16` makes of four filter bytes.
//! Pointwise convolutions run as fully-connected layers.

use super::{Conv2dI8, ConvGeometry};
use crate::ops::arm_dsp::{smlad, sxtb16, sxtb16_ror8, word_i8, word_i16};
use crate::ops::fully_connected::arm::fully_connected_i8_dsp;

/// The DSP int8 kernel.
pub(super) fn conv2d_i8_dsp(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    let g = &op.geometry;
    if g.is_pointwise() {
        return fully_connected_i8_dsp(&op.as_fully_connected(), output);
    }
    let k = g.patch_len();
    let body = k / 4 * 4;
    let cg_out = g.group_out_channels();
    let pixels = g.batch * g.out_height * g.out_width;
    let (patch0, rest) = scratch.split_at_mut(k);
    let patch1 = &mut rest[..k];
    let mut p = 0;
    while p < pixels {
        let pair = p + 1 < pixels;
        for group in 0..g.groups {
            gather(op, g, p, group, patch0);
            if pair {
                gather(op, g, p + 1, group, patch1);
            } else {
                patch1.copy_from_slice(patch0);
            }
            for o in group * cg_out..(group + 1) * cg_out {
                let w = &op.filter[o * k..(o + 1) * k];
                let (mut a0, mut a1) = (0i32, 0i32);
                let mut i = 0;
                while i < body {
                    let word = word_i8(w, i);
                    let (we, wo) = (sxtb16(word), sxtb16_ror8(word));
                    a0 = smlad(word_i16(patch0, i), we, a0);
                    a0 = smlad(word_i16(patch0, i + 2), wo, a0);
                    a1 = smlad(word_i16(patch1, i), we, a1);
                    a1 = smlad(word_i16(patch1, i + 2), wo, a1);
                    i += 4;
                }
                for i in body..k {
                    a0 = a0.wrapping_add(i32::from(patch0[i]) * i32::from(w[i]));
                    a1 = a1.wrapping_add(i32::from(patch1[i]) * i32::from(w[i]));
                }
                let bias = op.bias.map_or(0, |b| b[o]);
                output[p * g.out_channels + o] = op.params.output(a0.wrapping_add(bias), o);
                if pair {
                    output[(p + 1) * g.out_channels + o] =
                        op.params.output(a1.wrapping_add(bias), o);
                }
            }
        }
        p += 2;
    }
}

/// Gathers pixel `p`'s patch for `group` as `x - zp`, each full group of four reordered to
/// (0, 2, 1, 3).
fn gather(op: &Conv2dI8<'_>, g: &ConvGeometry, p: usize, group: usize, dst: &mut [i16]) {
    op.gather_centered(p, group, dst);
    let k = g.patch_len();
    for quad in dst[..k / 4 * 4].chunks_exact_mut(4) {
        quad.swap(1, 2);
    }
}
