//! The portable reference kernel: plain loops, the definition every fast path must reproduce
//! bit for bit. Kept simple on purpose.

use super::{FullyConnectedI8, FullyConnectedI16};
use crate::ops::FloatWeight;

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

/// Whether every element of `row` rounds to a finite binary16 or is not finite itself
/// (infinities and NaNs carry over): the rows [`fully_connected_f16_half_inputs`] rounds.
pub(crate) fn fits_f16(row: &[f32]) -> bool {
    // 65520 is the first magnitude that rounds to infinity.
    row.iter().all(|x| !(x.is_finite() && x.abs() >= 65520.0))
}

/// f16 weights with the inputs rounded to f16 as well (to nearest, ties to even): each
/// product of two binary16 values is exact in f32, and the products are summed in f32 in
/// index order, then bias, then the clamp. This is what `fmlal` computes (FEAT_FHM), up to
/// summation order. A row with a finite input beyond f16's range runs as
/// [`fully_connected_f32`] instead, so that no input becomes infinite.
///
/// Against [`fully_connected_f32`] each output moves by at most `2^-11 * sum |x * w|` plus
/// the f32 summation error.
pub fn fully_connected_f16_half_inputs(
    op: &super::FullyConnectedF32<'_, half::f16>,
    output: &mut [f32],
) {
    let s = op.shape;
    debug_assert!(op.validate(output).is_ok());
    let (lo, hi) = op.activation;
    for b in 0..s.batch {
        let row = &op.input[b * s.in_features..(b + 1) * s.in_features];
        let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
        if !fits_f16(row) {
            let one = super::FullyConnectedF32 {
                shape: super::FullyConnectedShape { batch: 1, ..s },
                input: row,
                ..*op
            };
            fully_connected_f32(&one, out);
            continue;
        }
        for (o, out) in out.iter_mut().enumerate() {
            let weights = &op.weights[o * s.in_features..(o + 1) * s.in_features];
            let mut acc = 0.0f32;
            for (&x, &w) in row.iter().zip(weights) {
                acc += half::f16::from_f32(x).to_f32() * w.widen();
            }
            if let Some(bias) = op.bias {
                acc += bias[o];
            }
            *out = acc.max(lo).min(hi);
        }
    }
}
