//! Requantizing a run of int32 accumulators to int8, the last step of every int8 layer:
//! `clamp(MultiplyByQuantizedMultiplier(acc + bias[c], m[c]) + zero_point)` for consecutive
//! output channels `c`.
//!
//! The scalar form is [`RequantizeParams::output`](crate::ops::RequantizeParams::output); the vector forms here reproduce it bit for
//! bit (TFLite's double rounding, the `i32::MIN * i32::MIN` saturation, the saturating zero
//! point add), so kernels accumulate a row of channels and requantize it in one pass.

#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;
