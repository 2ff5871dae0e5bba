//! The portable reference kernel: plain loops, the definition every fast path must reproduce
//! bit for bit. Kept simple on purpose.

use super::{FullyConnectedI8, FullyConnectedI16};

/// TFLite's reference int8 fully-connected (`reference_integer_ops::FullyConnected`, with the
/// per-channel multipliers of its per-channel variant).
///
/// The operands must have passed [`FullyConnectedI8::validate`]; lengths are not rechecked.
pub fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    let s = op.shape;
    let p = &op.params;
    debug_assert!(op.validate(output).is_ok());
    for b in 0..s.batch {
        let row = &op.input[b * s.in_features..(b + 1) * s.in_features];
        for o in 0..s.out_features {
            let weights = &op.weights[o * s.in_features..(o + 1) * s.in_features];
            let mut acc: i32 = 0;
            for (&x, &w) in row.iter().zip(weights) {
                // Weights are symmetric (zero point 0), so only the input is offset.
                acc = acc.wrapping_add((i32::from(x) - p.input_zero_point) * i32::from(w));
            }
            if let Some(bias) = op.bias {
                acc = acc.wrapping_add(bias[o]);
            }
            let scaled = p
                .multiplier(o)
                .apply(acc)
                .saturating_add(p.output_zero_point);
            output[b * s.out_features + o] =
                scaled.clamp(i32::from(p.activation_min), i32::from(p.activation_max)) as i8;
        }
    }
}

/// TFLite's reference 16x8 fully-connected (`reference_integer_ops::FullyConnected` for int16
/// activations): no zero points, a 64-bit accumulator, the 64-bit multiplier.
///
/// The operands must have passed [`FullyConnectedI16::validate`]; lengths are not rechecked.
pub fn fully_connected_i16(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    let s = op.shape;
    debug_assert!(op.validate(output).is_ok());
    for b in 0..s.batch {
        let row = &op.input[b * s.in_features..(b + 1) * s.in_features];
        for o in 0..s.out_features {
            let weights = &op.weights[o * s.in_features..(o + 1) * s.in_features];
            let mut acc: i64 = 0;
            for (&x, &w) in row.iter().zip(weights) {
                acc = acc.wrapping_add(i64::from(x) * i64::from(w));
            }
            if let Some(bias) = op.bias {
                acc = acc.wrapping_add(i64::from(bias[o]));
            }
            output[b * s.out_features + o] = op.params.output(acc, o);
        }
    }
}

/// The float reference: plain dot products in index order (each weight widened to f32), then
/// bias, then the clamp.
pub fn fully_connected_f32<W: crate::ops::FloatWeight>(
    op: &super::FullyConnectedF32<'_, W>,
    output: &mut [f32],
) {
    let s = op.shape;
    debug_assert!(op.validate(output).is_ok());
    let (lo, hi) = op.activation;
    for b in 0..s.batch {
        let row = &op.input[b * s.in_features..(b + 1) * s.in_features];
        for o in 0..s.out_features {
            let weights = &op.weights[o * s.in_features..(o + 1) * s.in_features];
            let mut acc = 0.0f32;
            for (&x, &w) in row.iter().zip(weights) {
                acc += x * w.widen();
            }
            if let Some(bias) = op.bias {
                acc += bias[o];
            }
            output[b * s.out_features + o] = acc.max(lo).min(hi);
        }
    }
}
