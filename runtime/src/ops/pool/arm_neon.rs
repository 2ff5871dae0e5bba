//! 32-bit Arm NEON int8 pooling (Armv7-A), vectorized across channels like the aarch64 path:
//!
//! - max: sixteen channels per `vmax.s8`; a maximum of bytes is the reference's in any order;
//! - averages: eight channels' exact i32 window sums (`x - zp` by the depthwise tap kernel with
//!   unit weights), each finished by the reference's own rounding.
//!
//! Float pooling stays on the scalar VFP code: the float kernels are defined to be exact,
//! and Armv7's Advanced SIMD flushes subnormals to zero, which VFP does not.

use super::reference;
use super::{GlobalAveragePoolI8Params, GlobalPoolShape, Pool2dGeometry, channel, pixel};
use crate::isa::Isa;
use crate::ops::arm_neon::{Lanes8, max_i8x16, mla_i8x8};
use crate::ops::lanes;

const ONES: [i8; 8] = [1; 8];

/// The NEON int8 max pooling kernel; the DSP kernel where the CPU lacks NEON.
pub(super) fn max_pool2d_i8(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    if !Isa::Neon32.available() {
        return super::arm::max_pool2d_i8_dsp(g, activation, input, output);
    }
    let ch = g.channels;
    for_each_pixel!(g, output, |w, out| {
        let (b, (y0, y1), (x0, x1), _) = w;
        let mut c = 0;
        while c + 16 <= ch {
            let mut max = [u64::from_le_bytes([i8::MIN as u8; 8]); 2];
            for y in y0..y1 {
                for x in x0..x1 {
                    // SAFETY: NEON is available (checked above).
                    unsafe { max_i8x16(&mut max, lanes(pixel(g, input, b, y, x), c)) };
                }
            }
            let bytes = [max[0].to_le_bytes(), max[1].to_le_bytes()];
            for (l, o) in out[c..c + 16].iter_mut().enumerate() {
                *o = (bytes[l / 8][l % 8] as i8)
                    .max(activation.0)
                    .min(activation.1);
            }
            c += 16;
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::max_i8(g, input, channel(w, k), activation);
        }
    });
}

/// The NEON int8 average pooling kernel; the reference where the CPU lacks NEON.
pub(super) fn average_pool2d_i8(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    if !Isa::Neon32.available() {
        return reference::average_pool2d_i8(g, activation, input, output);
    }
    let ch = g.channels;
    for_each_pixel!(g, output, |w, out| {
        let (b, (y0, y1), (x0, x1), _) = w;
        // At most MAX_WINDOW elements (validated).
        let count = ((y1 - y0) * (x1 - x0)) as i32;
        let mut c = 0;
        while c + 8 <= ch {
            let mut sums = Lanes8::default();
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = lanes(pixel(g, input, b, y, x), c);
                    // SAFETY: NEON is available (checked above).
                    unsafe { mla_i8x8(&mut sums, p, &ONES, 0) };
                }
            }
            for (o, sum) in out[c..c + 8].iter_mut().zip(sums.i32s()) {
                let average = reference::rounded_average(sum, count);
                *o = average.clamp(activation.0.into(), activation.1.into()) as i8;
            }
            c += 8;
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::average_i8(g, input, channel(w, k), activation);
        }
    });
}

/// The NEON int8 global average: the sums of `x - zp` vectorized, each finished like the
/// reference; the reference where the CPU lacks NEON.
pub(super) fn global_average_pool_i8(
    s: &GlobalPoolShape,
    params: &GlobalAveragePoolI8Params,
    input: &[i8],
    output: &mut [i8],
) {
    if !Isa::Neon32.available() {
        return reference::global_average_pool_i8(s, params, input, output);
    }
    let ch = s.channels;
    let area = s.count();
    let zero_points = u64::from_le_bytes([params.input_zero_point as u8; 8]);
    let images = input.chunks_exact(area * ch);
    for (image, out) in images.zip(output.chunks_exact_mut(ch)) {
        let mut c = 0;
        while c + 8 <= ch {
            let mut sums = Lanes8::default();
            for p in image.chunks_exact(ch) {
                // SAFETY: NEON is available (checked above).
                unsafe { mla_i8x8(&mut sums, lanes(p, c), &ONES, zero_points) };
            }
            for (o, sum) in out[c..c + 8].iter_mut().zip(sums.i32s()) {
                // At most MAX_WINDOW elements (validated).
                *o = reference::finish_mean(sum, area as i32, params);
            }
            c += 8;
        }
        for (k, o) in out.iter_mut().enumerate().skip(c) {
            *o = reference::mean_i8(s, image, k, params);
        }
    }
}
