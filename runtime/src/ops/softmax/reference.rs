//! The portable reference kernels: the float definition the fast paths approximate within
//! [`super::F32_TOLERANCE`], and TFLite's int8 arithmetic. Kept simple on purpose.

use super::gemmlowp::{
    exp_on_negative_values, get_reciprocal, log_x_for_x_greater_than_or_equal_to_1, mul, rescale,
};
use super::{SoftmaxF32, SoftmaxI8, SoftmaxQuant};
use crate::fixed_point::{QuantizedMultiplier, rounding_divide_by_pot};

/// Float softmax or log-softmax, row by row: the maximum (NaN ignored), `exp((x - max) *
/// beta)` with libm, their sum in double precision, then `e / sum` or
/// `(x - max) * beta - ln(sum)`.
///
/// The operands must have passed [`SoftmaxF32::validate`]; lengths are not rechecked.
pub fn softmax_f32(op: &SoftmaxF32<'_>, output: &mut [f32]) {
    debug_assert!(op.validate(output).is_ok());
    let depth = op.shape.depth;
    let beta = op.beta;
    for (row, out) in op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let max = f32_row_max(row);
        let mut sum = 0f64;
        for (o, &x) in out.iter_mut().zip(row) {
            let e = libm::expf((x - max) * beta);
            *o = e;
            sum += f64::from(e);
        }
        finish_f32_row(op.log, row, out, (max, beta), sum);
    }
}

/// The row maximum, NaN ignored (`x > max` is false for it).
pub(super) fn f32_row_max(row: &[f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for &x in row {
        if x > max {
            max = x;
        }
    }
    max
}

/// The end of a float row once `out` holds its exponentials and `sum` their f64 sum:
/// `e / sum`, or `(x - max) * beta - ln(sum)` for log-softmax.
pub(super) fn finish_f32_row(
    log: bool,
    row: &[f32],
    out: &mut [f32],
    (max, beta): (f32, f32),
    sum: f64,
) {
    if log {
        let log_sum = libm::log(sum) as f32;
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - max) * beta - log_sum;
        }
    } else {
        let sum = sum as f32;
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

/// `MultiplyByQuantizedMultiplierGreaterThanOne`: an input difference to Q5.26. The
/// validated `diff_min` keeps `diff << left_shift` inside an `i32` for every difference the
/// kernels scale.
#[inline]
fn scale_diff(diff: i32, input: QuantizedMultiplier) -> i32 {
    mul(
        diff.wrapping_shl(input.shift().clamp(0, 31) as u32),
        input.multiplier(),
    )
}

fn row_max(row: &[i8]) -> i32 {
    i32::from(row.iter().copied().max().unwrap_or(i8::MIN))
}

/// The sum in Q12.19 of `exp(x - max)` over the row's elements at least `diff_min` below
/// its maximum, as both int8 kernels form it (wrapping like TFLite's).
fn sum_of_exps(p: &SoftmaxQuant, row: &[i8], max: i32, exp: &mut impl FnMut(i32) -> i32) -> i32 {
    let accumulation = SoftmaxQuant::ACCUMULATION_INTEGER_BITS;
    let mut sum = 0i32;
    for &x in row {
        let diff = i32::from(x) - max;
        if diff >= p.diff_min {
            sum = sum.wrapping_add(rescale(exp(diff), 0, accumulation));
        }
    }
    sum
}

/// The exponential int8 softmax takes of a difference from the row maximum (`diff <= 0`,
/// at least `diff_min`), in Q0.31: gemmlowp's `exp_on_negative_values` of the difference
/// scaled to Q5.26.
#[inline]
pub(super) fn softmax_exp(diff: i32, input: QuantizedMultiplier) -> i32 {
    exp_on_negative_values(
        scale_diff(diff, input),
        SoftmaxQuant::SCALED_DIFF_INTEGER_BITS,
    )
}

/// The exponential int8 log-softmax takes (`MultiplyByQuantizedMultiplier` with a
/// non-negative shift, then the same `exp_on_negative_values`).
#[inline]
pub(super) fn log_softmax_exp(diff: i32, input: QuantizedMultiplier) -> i32 {
    exp_on_negative_values(input.apply(diff), SoftmaxQuant::SCALED_DIFF_INTEGER_BITS)
}

/// int8 softmax exactly as TFLite's `reference_ops::Softmax` with int8 input and output:
/// per row, the sum of gemmlowp `exp_on_negative_values` of the scaled differences in Q12.19,
/// its reciprocal (`GetReciprocal`), and each output
/// `RoundingDivideByPOT(reciprocal * exp, num_bits_over_unit + 23) - 128`, clamped.
/// Differences below `diff_min` give -128.
///
/// The operands must have passed [`SoftmaxI8::validate`]; lengths are not rechecked.
pub fn softmax_i8(op: &SoftmaxI8<'_>, output: &mut [i8]) {
    debug_assert!(op.validate(output).is_ok());
    let Some(input) = op.params.input() else {
        return;
    };
    let depth = op.shape.depth;
    for (row, out) in op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        softmax_row(&op.params, row, out, |diff| softmax_exp(diff, input));
    }
}

/// One row of [`softmax_i8`], with `exp(diff)` (called only for `diff >= diff_min`) given:
/// the fast paths differ from the reference only in where that value comes from.
#[inline]
pub(super) fn softmax_row(
    p: &SoftmaxQuant,
    row: &[i8],
    out: &mut [i8],
    mut exp: impl FnMut(i32) -> i32,
) {
    let accumulation = SoftmaxQuant::ACCUMULATION_INTEGER_BITS;
    let max = row_max(row);
    let sum_of_exps = sum_of_exps(p, row, max, &mut exp);
    let (shifted_scale, num_bits_over_unit) = get_reciprocal(sum_of_exps, accumulation);
    // `num_bits_over_unit + 31 - 8`; a real sum (at least exp(0) = 1) keeps it in range.
    let exponent = (num_bits_over_unit + 31 - 8).clamp(0, 31) as u32;
    for (o, &x) in out.iter_mut().zip(row) {
        let diff = i32::from(x) - max;
        *o = if diff >= p.diff_min {
            let unsat = rounding_divide_by_pot(mul(shifted_scale, exp(diff)), exponent);
            unsat.wrapping_add(-128).clamp(-128, 127) as i8
        } else {
            -128
        };
    }
}

/// int8 log-softmax exactly as TFLite's `reference_integer_ops::LogSoftmax`: per row, the
/// sum of exponentials in Q12.19, its log in Q5.26
/// (`log_x_for_x_greater_than_or_equal_to_1`), a tightened `diff_min` from the reverse
/// scaling, and each output `RoundingDivideByPOT(diff_q5 - log_sum, 22) + 127`, clamped.
///
/// The operands must have passed [`SoftmaxI8::validate`]; lengths are not rechecked.
pub fn log_softmax_i8(op: &SoftmaxI8<'_>, output: &mut [i8]) {
    debug_assert!(op.validate(output).is_ok());
    let Some(input) = op.params.input() else {
        return;
    };
    let depth = op.shape.depth;
    for (row, out) in op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        log_softmax_row(&op.params, row, out, |diff| log_softmax_exp(diff, input));
    }
}

/// One row of [`log_softmax_i8`], with `exp(diff)` (called only for `diff >= diff_min`)
/// given, as in [`softmax_row`].
#[inline]
pub(super) fn log_softmax_row(
    p: &SoftmaxQuant,
    row: &[i8],
    out: &mut [i8],
    mut exp: impl FnMut(i32) -> i32,
) {
    const OUTPUT_ZERO_POINT: i32 = 127;
    const OUTPUT_INTEGER_BITS: i32 = 4;
    let (Some(input), Some(reverse)) = (p.input(), p.reverse()) else {
        return;
    };
    let bits = SoftmaxQuant::SCALED_DIFF_INTEGER_BITS;
    let accumulation = SoftmaxQuant::ACCUMULATION_INTEGER_BITS;
    let max = row_max(row);
    let sum_of_exps = sum_of_exps(p, row, max, &mut exp);
    let log_sum_of_exps = log_x_for_x_greater_than_or_equal_to_1(sum_of_exps, bits, accumulation);
    // The smallest Q5.26 value plus the log of the sum, scaled back to input steps.
    let shifted_log_sum_of_exps = log_sum_of_exps.wrapping_add(i32::MIN);
    let adjusted_diff_min = p
        .diff_min
        .wrapping_sub(1)
        .max(reverse.apply(shifted_log_sum_of_exps));
    for (o, &x) in out.iter_mut().zip(row) {
        let diff = i32::from(x) - max;
        // `>` here where the sum used `>=`, as TFLite has it.
        *o = if diff > adjusted_diff_min {
            let diff_q5 = input.apply(diff);
            let shifted = rounding_divide_by_pot(
                diff_q5.wrapping_sub(log_sum_of_exps),
                (31 - bits - OUTPUT_INTEGER_BITS) as u32,
            );
            shifted.wrapping_add(OUTPUT_ZERO_POINT).clamp(-128, 127) as i8
        } else {
            -128
        };
    }
}
