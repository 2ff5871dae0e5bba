//! The portable reference kernels: one element at a time, the definition every fast path
//! reproduces bit for bit.

use crate::quant::QuantParams;

/// One element of TFLite's `reference_ops::AffineQuantize`:
/// `clamp(round(x / scale) + zero_point, qmin, qmax)`.
///
/// `TfLiteRound` is `std::round` (ties away from zero), which `libm::roundf` is; the division
/// is an f32 division, as TFLite divides by `static_cast<float>(scale)`. Where the C cast to
/// `int32_t` is undefined (NaN, magnitudes past `i32`), Rust's saturating `as` decides: NaN
/// gives the zero point, and overflow saturates before the clamp.
#[inline]
pub fn quantize_one(x: f32, params: QuantParams, qmin: i32, qmax: i32) -> i32 {
    let rounded = libm::roundf(x / params.scale);
    (rounded as i32)
        .saturating_add(params.zero_point)
        .clamp(qmin, qmax)
}

/// One element of TFLite's `reference_ops::Dequantize`: `scale * (q - zero_point)`.
///
/// TFLite multiplies in double and rounds to float; the exact product of an f32 scale
/// (24-bit significand) and an integer of at most 17 bits fits in a double's 53, so that is
/// the correctly rounded product, which is what one f32 multiplication gives.
#[inline]
pub fn dequantize_one(q: i32, params: QuantParams) -> f32 {
    params.scale * (q - params.zero_point) as f32
}

/// f32 to int8 (`AffineQuantize<float, int8_t>`). Lengths must match (not rechecked).
pub fn quantize_i8(params: QuantParams, input: &[f32], output: &mut [i8]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = quantize_one(x, params, i8::MIN.into(), i8::MAX.into()) as i8;
    }
}

/// f32 to int16 (`AffineQuantize<float, int16_t>`). Lengths must match (not rechecked).
pub fn quantize_i16(params: QuantParams, input: &[f32], output: &mut [i16]) {
    for (y, &x) in output.iter_mut().zip(input) {
        *y = quantize_one(x, params, i16::MIN.into(), i16::MAX.into()) as i16;
    }
}

/// int8 to f32 (`Dequantize<int8_t, float>`). Lengths must match (not rechecked).
pub fn dequantize_i8(params: QuantParams, input: &[i8], output: &mut [f32]) {
    for (y, &q) in output.iter_mut().zip(input) {
        *y = dequantize_one(q.into(), params);
    }
}

/// int16 to f32 (`Dequantize<int16_t, float>`). Lengths must match (not rechecked).
pub fn dequantize_i16(params: QuantParams, input: &[i16], output: &mut [f32]) {
    for (y, &q) in output.iter_mut().zip(input) {
        *y = dequantize_one(q.into(), params);
    }
}
