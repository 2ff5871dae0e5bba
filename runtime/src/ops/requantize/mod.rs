//! Requantizing a run of int32 accumulators to int8, the last step of every int8 layer:
//! `clamp(MultiplyByQuantizedMultiplier(acc + bias[c], m[c]) + zero_point)` for consecutive
//! output channels `c`.
//!
//! The scalar form is [`RequantizeParams::output`]; the vector forms here reproduce it bit for
//! bit (TFLite's double rounding, the `i32::MIN * i32::MIN` saturation, the saturating zero
//! point add), so kernels accumulate a row of channels and requantize it in one pass.

#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use crate::ops::RequantizeParams;

/// Writes `out[i] = params.output(acc[i] + bias[first + i], first + i)`: the portable form
/// (the vector forms' tail and their test oracle).
#[cfg_attr(not(any(target_arch = "x86_64", test)), allow(dead_code))]
pub(crate) fn requantize_row_scalar(
    params: &RequantizeParams<'_>,
    acc: &[i32],
    bias: Option<&[i32]>,
    first: usize,
    out: &mut [i8],
) {
    for (i, (&a, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let c = first + i;
        let a = a.wrapping_add(bias.map_or(0, |b| b[c]));
        *o = params.output(a, c);
    }
}
