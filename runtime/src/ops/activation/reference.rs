//! The portable reference kernels: the definitions every fast path reproduces. Kept simple
//! on purpose.

use super::{BatchNormF32, PReluF32, PReluI8, Source, Unary, lut_index};
use crate::ops::binary::reference::clamp;

/// The float definition of each unary function. Comparisons are written so that NaN passes
/// through unchanged.
#[inline]
pub fn unary(f: Unary, x: f32) -> f32 {
    match f {
        Unary::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        Unary::Clip { min, max } => clamp(x, min, max),
        Unary::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        Unary::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
        Unary::Tanh => libm::tanhf(x),
        Unary::HardSigmoid { alpha, beta } => clamp(alpha * x + beta, 0.0, 1.0),
        // TFLite's float reference: `in * min(6, max(0, in + 3)) / 6`, in that order.
        Unary::HardSwish => x * clamp(x + 3.0, 0.0, 6.0) / 6.0,
    }
}

/// Applies `f(index, x)` to every element, reading the input from its own slice or, in
/// place, from the output.
#[inline]
fn map<T: Copy>(input: Source<'_, T>, output: &mut [T], mut f: impl FnMut(usize, T) -> T) {
    match input {
        Source::Slice(x) => {
            for (i, (o, &v)) in output.iter_mut().zip(x).enumerate() {
                *o = f(i, v);
            }
        }
        Source::Output => {
            for (i, o) in output.iter_mut().enumerate() {
                *o = f(i, *o);
            }
        }
    }
}

/// The float unary reference: [`unary`] on every element.
pub fn unary_f32(f: Unary, input: Source<'_, f32>, output: &mut [f32]) {
    map(input, output, |_, x| unary(f, x));
}

/// The int8 lookup: `table[x + 128]` for every element ([`super::lut_index`]). The table must
/// have 256 entries.
pub fn lookup_i8(table: &[i8], input: Source<'_, i8>, output: &mut [i8]) {
    map(input, output, |_, x| table[lut_index(x)]);
}

/// Float PRelu: `x` if `x >= 0`, else `slope[c] * x` with `c` the index along the last
/// dimension (or the single slope).
pub fn prelu_f32(op: &PReluF32<'_>, output: &mut [f32]) {
    debug_assert!(op.validate(output).is_ok());
    let (slope, channels) = (op.slope, op.channels);
    map(op.input, output, |i, x| {
        if x < 0.0 {
            slope[if slope.len() == 1 { 0 } else { i % channels }] * x
        } else {
            x
        }
    });
}

/// int8 PRelu exactly as TFLite's `reference_ops::BroadcastPrelu4DSlow`: an offset input
/// that is non-negative is scaled by the identity multiplier, a negative one is multiplied by
/// its offset slope and scaled by the alpha multiplier (`MultiplyByQuantizedMultiplier`
/// both); then the output zero point and the int8 clamp.
pub fn prelu_i8(op: &PReluI8<'_>, output: &mut [i8]) {
    debug_assert!(op.validate(output).is_ok());
    let p = op.params;
    let (slope, channels) = (op.slope, op.channels);
    map(op.input, output, |i, x| {
        let input_value = i32::from(x).wrapping_sub(p.input_zero_point);
        let value = if input_value >= 0 {
            p.identity.apply(input_value)
        } else {
            let a = slope[if slope.len() == 1 { 0 } else { i % channels }];
            let alpha_value = i32::from(a).wrapping_sub(p.alpha_zero_point);
            p.alpha.apply(input_value.wrapping_mul(alpha_value))
        };
        value.saturating_add(p.output_zero_point).clamp(-128, 127) as i8
    });
}

/// Inference-form batch normalization, computed as written with nothing folded:
/// `(x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + bias[c]`.
pub fn batch_norm_f32(op: &BatchNormF32<'_>, output: &mut [f32]) {
    debug_assert!(op.validate(output).is_ok());
    let channels = op.channels;
    map(op.input, output, |i, x| {
        let c = i % channels;
        (x - op.mean[c]) / libm::sqrtf(op.var[c] + op.epsilon) * op.scale[c] + op.bias[c]
    });
}
