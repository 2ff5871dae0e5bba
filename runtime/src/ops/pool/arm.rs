//! 32-bit Arm DSP-extension int8 max pooling (Cortex-M4/M7, Armv7-A): four channels per
//! 32-bit word, the per-byte maximum by `ssub8` and `sel`, as CMSIS-NN's max pooling does.
//! Exact: a maximum of bytes is the reference's maximum in any order.

use super::reference;
use super::{Pool2dGeometry, channel, pixel};
use crate::ops::arm_dsp::{max_i8x4, min_i8x4, word_i8};

/// The DSP int8 max pooling kernel.
pub(super) fn max_pool2d_i8_dsp(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    let ch = g.channels;
    let splat = |v: i8| u32::from_le_bytes([v as u8; 4]);
    let (lo, hi) = (splat(activation.0), splat(activation.1));
    for_each_pixel!(g, output, |w, out| {
        let (b, (y0, y1), (x0, x1), _) = w;
        let mut c = 0;
        while c + 4 <= ch {
            let mut max = splat(i8::MIN);
            for y in y0..y1 {
                for x in x0..x1 {
                    max = max_i8x4(max, word_i8(pixel(g, input, b, y, x), c));
                }
            }
            let v = min_i8x4(max_i8x4(max, lo), hi).to_le_bytes();
            for (o, &byte) in out[c..c + 4].iter_mut().zip(&v) {
                *o = byte as i8;
            }
            c += 4;
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::max_i8(g, input, channel(w, k), activation);
        }
    });
}
