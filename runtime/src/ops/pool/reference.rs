//! The portable reference kernels: TFLite's loops (batch, row, column, channel, then the
//! window), the definition every fast path reproduces.
//!
//! Operands must have passed validation ([`Pool2dGeometry::validate`],
//! [`GlobalPoolShape::validate`]); lengths are not rechecked.

use super::{GlobalAveragePoolI8Params, GlobalPoolShape, Pool2dGeometry};

/// TFLite's rounded integer average, `(sum ± count / 2) / count` with C's truncating
/// division: round to nearest, ties away from zero. `count` must be positive.
///
/// TFLite's additions overflow (undefined in C) only for sums within `count / 2` of the i32
/// limits, which the pooling kernels cannot reach; here they saturate.
#[inline]
pub fn rounded_average(sum: i32, count: i32) -> i32 {
    let count = count.max(1);
    if sum > 0 {
        sum.saturating_add(count / 2) / count
    } else {
        sum.saturating_sub(count / 2) / count
    }
}

/// One output's window: image, input rows `start..end`, input columns `start..end`, channel.
pub(super) type Window = (usize, (usize, usize), (usize, usize), usize);

/// Index of element `(b, y, x, c)` of an NHWC image.
#[inline]
pub(super) fn at(g: &Pool2dGeometry, b: usize, y: usize, x: usize, c: usize) -> usize {
    ((b * g.height + y) * g.width + x) * g.channels + c
}

/// Visits every output element in order with its window's rows and columns.
#[inline]
fn for_each_window(g: &Pool2dGeometry, mut f: impl FnMut(Window)) {
    let Ok((oh, ow)) = g.output_size() else {
        return;
    };
    for b in 0..g.batch {
        for oy in 0..oh {
            let rows = g.rows(oy);
            for ox in 0..ow {
                let cols = g.cols(ox);
                for c in 0..g.channels {
                    f((b, rows, cols, c));
                }
            }
        }
    }
}

/// One output of [`max_pool2d_i8`]: channel `c` of image `b` over `rows` x `cols`.
#[inline]
pub(super) fn max_i8(
    g: &Pool2dGeometry,
    input: &[i8],
    (b, (y0, y1), (x0, x1), c): Window,
    activation: (i8, i8),
) -> i8 {
    let mut max = i8::MIN;
    for y in y0..y1 {
        for x in x0..x1 {
            max = max.max(input[at(g, b, y, x, c)]);
        }
    }
    max.max(activation.0).min(activation.1)
}

/// One output of [`average_pool2d_i8`].
#[inline]
pub(super) fn average_i8(
    g: &Pool2dGeometry,
    input: &[i8],
    (b, (y0, y1), (x0, x1), c): Window,
    activation: (i8, i8),
) -> i8 {
    let mut acc: i32 = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            acc += i32::from(input[at(g, b, y, x, c)]);
        }
    }
    // At most MAX_WINDOW elements, so the count and the sum fit.
    let count = ((y1 - y0) * (x1 - x0)) as i32;
    rounded_average(acc, count).clamp(i32::from(activation.0), i32::from(activation.1)) as i8
}

/// One output of [`max_pool2d_f32`].
#[inline]
pub(super) fn max_f32(
    g: &Pool2dGeometry,
    input: &[f32],
    (b, (y0, y1), (x0, x1), c): Window,
    activation: (f32, f32),
) -> f32 {
    let mut max = f32::MIN;
    for y in y0..y1 {
        for x in x0..x1 {
            max = max.max(input[at(g, b, y, x, c)]);
        }
    }
    max.max(activation.0).min(activation.1)
}

/// One output of [`average_pool2d_f32`].
#[inline]
pub(super) fn average_f32(
    g: &Pool2dGeometry,
    input: &[f32],
    (b, (y0, y1), (x0, x1), c): Window,
    activation: (f32, f32),
) -> f32 {
    let mut total = 0.0f32;
    for y in y0..y1 {
        for x in x0..x1 {
            total += input[at(g, b, y, x, c)];
        }
    }
    let count = ((y1 - y0) * (x1 - x0)) as f32;
    (total / count).max(activation.0).min(activation.1)
}

/// TFLite's `reference_integer_ops::MaxPool`: the window's largest value, then the clamp.
pub fn max_pool2d_i8(g: &Pool2dGeometry, activation: (i8, i8), input: &[i8], output: &mut [i8]) {
    let mut out = output.iter_mut();
    for_each_window(g, |w| {
        if let Some(o) = out.next() {
            *o = max_i8(g, input, w, activation);
        }
    });
}

/// TFLite's `reference_integer_ops::AveragePool`: the sum of the window's real elements in
/// i32, [`rounded_average`] over their count, then the clamp. Input and output share their
/// quantization, so no rescaling is needed.
pub fn average_pool2d_i8(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    let mut out = output.iter_mut();
    for_each_window(g, |w| {
        if let Some(o) = out.next() {
            *o = average_i8(g, input, w, activation);
        }
    });
}

/// TFLite's 16-bit `reference_integer_ops::MaxPool16`: as [`max_pool2d_i8`] on int16 values.
pub fn max_pool2d_i16(
    g: &Pool2dGeometry,
    activation: (i16, i16),
    input: &[i16],
    output: &mut [i16],
) {
    let mut out = output.iter_mut();
    for_each_window(g, |(b, (y0, y1), (x0, x1), c)| {
        if let Some(o) = out.next() {
            let mut max = i16::MIN;
            for y in y0..y1 {
                for x in x0..x1 {
                    max = max.max(input[at(g, b, y, x, c)]);
                }
            }
            *o = max.max(activation.0).min(activation.1);
        }
    });
}

/// TFLite's 16-bit `reference_integer_ops::AveragePool16`: the window's sum (in i64, which a
/// window of up to 2^23 int16 values cannot overflow), the rounded average, the clamp.
pub fn average_pool2d_i16(
    g: &Pool2dGeometry,
    activation: (i16, i16),
    input: &[i16],
    output: &mut [i16],
) {
    let mut out = output.iter_mut();
    for_each_window(g, |(b, (y0, y1), (x0, x1), c)| {
        if let Some(o) = out.next() {
            let mut sum: i64 = 0;
            for y in y0..y1 {
                for x in x0..x1 {
                    sum += i64::from(input[at(g, b, y, x, c)]);
                }
            }
            let count = ((y1 - y0) * (x1 - x0)).max(1) as i64;
            let average = if sum > 0 {
                (sum + count / 2) / count
            } else {
                (sum - count / 2) / count
            };
            *o = average.clamp(i64::from(activation.0), i64::from(activation.1)) as i16;
        }
    });
}

/// TFLite's float `reference_ops::MaxPool`: the largest value (NaN inputs are skipped, as
/// `std::max` skips them), then the clamp.
pub fn max_pool2d_f32(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    let mut out = output.iter_mut();
    for_each_window(g, |w| {
        if let Some(o) = out.next() {
            *o = max_f32(g, input, w, activation);
        }
    });
}

/// TFLite's float `reference_ops::AveragePool`: the window's real elements summed in row-major
/// order, divided by their count, then the clamp.
pub fn average_pool2d_f32(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    let mut out = output.iter_mut();
    for_each_window(g, |w| {
        if let Some(o) = out.next() {
            *o = average_f32(g, input, w, activation);
        }
    });
}

/// The end of TFLite's int8 `Mean` for one output: requantize the zero-point-corrected sum,
/// take the [`rounded_average`], add the output zero point, clamp to int8.
#[inline]
pub fn finish_mean(sum: i32, count: i32, params: &GlobalAveragePoolI8Params) -> i8 {
    let scaled = params.multiplier.apply(sum);
    rounded_average(scaled, count)
        .saturating_add(params.output_zero_point)
        .clamp(-128, 127) as i8
}

/// TFLite's `reference_integer_ops::Mean` over H and W: `sum(q - input_zero_point)` per
/// channel, then [`finish_mean`].
pub fn global_average_pool_i8(
    s: &GlobalPoolShape,
    params: &GlobalAveragePoolI8Params,
    input: &[i8],
    output: &mut [i8],
) {
    let per_image = s.count() * s.channels;
    for b in 0..s.batch {
        let image = &input[b * per_image..(b + 1) * per_image];
        for c in 0..s.channels {
            output[b * s.channels + c] = mean_i8(s, image, c, params);
        }
    }
}

/// One output of [`global_average_pool_i8`]: channel `c` of `image`.
#[inline]
pub(super) fn mean_i8(
    s: &GlobalPoolShape,
    image: &[i8],
    c: usize,
    params: &GlobalAveragePoolI8Params,
) -> i8 {
    let mut acc: i32 = 0;
    for p in 0..s.count() {
        // At most 2^23 terms of magnitude <= 255: no overflow.
        acc += i32::from(image[p * s.channels + c]) - params.input_zero_point;
    }
    finish_mean(acc, s.count() as i32, params)
}

/// TFLite's float `reference_ops::Mean` over H and W: the sum in row-major order divided by
/// `H * W`.
pub fn global_average_pool_f32(s: &GlobalPoolShape, input: &[f32], output: &mut [f32]) {
    let per_image = s.count() * s.channels;
    for b in 0..s.batch {
        let image = &input[b * per_image..(b + 1) * per_image];
        for c in 0..s.channels {
            output[b * s.channels + c] = mean_f32(s, image, c);
        }
    }
}

/// One output of [`global_average_pool_f32`].
#[inline]
pub(super) fn mean_f32(s: &GlobalPoolShape, image: &[f32], c: usize) -> f32 {
    let mut total = 0.0f32;
    for p in 0..s.count() {
        total += image[p * s.channels + c];
    }
    total / s.count() as f32
}
