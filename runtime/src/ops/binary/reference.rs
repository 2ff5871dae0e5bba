//! The portable reference kernels: one output element at a time over the full broadcast index
//! space, the definition every fast path must reproduce bit for bit. Kept simple on purpose.

use super::{BinaryF32, BinaryI8, BinaryI8Params, BinaryOp, BinaryShape, Source};
use crate::tensor::MAX_RANK;

/// One int8 output element, exactly as TFLite's reference kernels compute it:
/// `reference_integer_ops::AddElementwise` and `reference_ops::SubElementwise` (offset inputs
/// shifted left by `left_shift`, each scaled by
/// `MultiplyByQuantizedMultiplierSmallerThanOneExp`, summed or subtracted, scaled to the
/// output) and `reference_integer_ops::MulElementwise` (product of the offset inputs scaled by
/// `MultiplyByQuantizedMultiplier`); then the zero point and the activation clamp.
///
/// Overflow wraps, as the C++ does on every real compiler; validated parameters never
/// overflow (`|x - zp| <= 255`, `left_shift <= 23`).
#[inline]
pub fn element_i8(p: &BinaryI8Params, x1: i8, x2: i8) -> i8 {
    let v1 = i32::from(x1).wrapping_sub(p.input1_zero_point);
    let v2 = i32::from(x2).wrapping_sub(p.input2_zero_point);
    let raw = match p.op {
        BinaryOp::Add | BinaryOp::Sub => {
            let s1 = p.input1_multiplier.apply(v1.wrapping_shl(p.left_shift));
            let s2 = p.input2_multiplier.apply(v2.wrapping_shl(p.left_shift));
            let combined = if p.op == BinaryOp::Add {
                s1.wrapping_add(s2)
            } else {
                s1.wrapping_sub(s2)
            };
            p.output_multiplier.apply(combined)
        }
        BinaryOp::Mul => p.output_multiplier.apply(v1.wrapping_mul(v2)),
    };
    raw.saturating_add(p.output_zero_point)
        .clamp(i32::from(p.activation_min), i32::from(p.activation_max)) as i8
}

/// One float output element: the IEEE operation, then the clamp. NaN passes the clamp
/// unchanged.
#[inline]
pub fn element_f32(op: BinaryOp, x1: f32, x2: f32, activation: (f32, f32)) -> f32 {
    let r = match op {
        BinaryOp::Add => x1 + x2,
        BinaryOp::Sub => x1 - x2,
        BinaryOp::Mul => x1 * x2,
    };
    clamp(r, activation.0, activation.1)
}

/// `min(max(x, lo), hi)` written so that NaN stays NaN.
#[inline]
pub(crate) fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// Visits every output element in order with its broadcast operands. An operand read from
/// [`Source::Output`] covers the output (validated), so its element is the output's own.
fn broadcast<T: Copy>(
    shape: &BinaryShape,
    a: Source<'_, T>,
    b: Source<'_, T>,
    out: &mut [T],
    f: impl Fn(T, T) -> T,
) {
    let dims = shape.out;
    let sa = shape.strides(&shape.a);
    let sb = shape.strides(&shape.b);
    let inner = dims[MAX_RANK - 1];
    let rows = shape.out_elements / inner;
    let mut index = [0usize; MAX_RANK - 1];
    let mut o = 0usize;
    for _ in 0..rows {
        let a_base: usize = index.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let b_base: usize = index.iter().zip(&sb).map(|(i, s)| i * s).sum();
        for k in 0..inner {
            let x1 = match a {
                Source::Slice(s) => s[a_base + k * sa[MAX_RANK - 1]],
                Source::Output => out[o],
            };
            let x2 = match b {
                Source::Slice(s) => s[b_base + k * sb[MAX_RANK - 1]],
                Source::Output => out[o],
            };
            out[o] = f(x1, x2);
            o += 1;
        }
        for j in (0..MAX_RANK - 1).rev() {
            index[j] += 1;
            if index[j] < dims[j] {
                break;
            }
            index[j] = 0;
        }
    }
}

/// The int8 reference: [`element_i8`] over the broadcast index space.
///
/// The operands must have passed [`BinaryI8::validate`]; lengths are not rechecked.
pub fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) {
    debug_assert!(op.validate(output).is_ok());
    let p = op.params;
    broadcast(&op.shape, op.a, op.b, output, |x1, x2| {
        element_i8(&p, x1, x2)
    });
}

/// The float reference: [`element_f32`] over the broadcast index space.
///
/// The operands must have passed [`BinaryF32::validate`]; lengths are not rechecked.
pub fn binary_f32(op: &BinaryF32<'_>, output: &mut [f32]) {
    debug_assert!(op.validate(output).is_ok());
    let (kind, activation) = (op.op, op.activation);
    broadcast(&op.shape, op.a, op.b, output, |x1, x2| {
        element_f32(kind, x1, x2, activation)
    });
}
