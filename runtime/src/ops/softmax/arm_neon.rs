//! 32-bit Arm NEON float softmax and log-softmax (Armv7-A): the exponentials four lanes at
//! a time by [`crate::ops::arm_neon::exp_shifted_quads`] (Cephes' `expf`, as the AVX2 and
//! aarch64 paths), the row maximum, the f64 sum and the division or log subtraction in VFP
//! scalar code as the reference does them. Agrees with the reference within
//! [`super::F32_TOLERANCE`].

use super::SoftmaxF32;
use super::reference::{f32_row_max, finish_f32_row};
use crate::isa::Isa;
use crate::ops::arm_neon::exp_shifted_quads;

/// The NEON float kernel; the reference where the CPU lacks NEON. `op` must have passed
/// `validate(output)`.
pub(super) fn softmax_f32(op: &SoftmaxF32<'_>, output: &mut [f32]) {
    if !Isa::Neon32.available() {
        return super::reference::softmax_f32(op, output);
    }
    let depth = op.shape.depth;
    let beta = op.beta;
    for (row, out) in op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let max = f32_row_max(row);
        let quads = depth / 4;
        // SAFETY: NEON is available (checked above); `row` and `out` hold `depth >= 4 *
        // quads` floats.
        unsafe { exp_shifted_quads(row.as_ptr(), out.as_mut_ptr(), quads, max, beta) };
        for (o, &x) in out.iter_mut().zip(row).skip(quads * 4) {
            *o = libm::expf((x - max) * beta);
        }
        let sum: f64 = out.iter().map(|&e| f64::from(e)).sum();
        finish_f32_row(op.log, row, out, (max, beta), sum);
    }
}

/// The vector `exp` lane by lane, for the tests.
#[cfg(test)]
pub(super) fn exp_lanes(x: [f32; 8]) -> Option<[f32; 8]> {
    if !Isa::Neon32.available() {
        return None;
    }
    let mut out = [0f32; 8];
    // SAFETY: NEON is available (checked above); both arrays hold eight floats.
    unsafe { exp_shifted_quads(x.as_ptr(), out.as_mut_ptr(), 2, 0.0, 1.0) };
    Some(out)
}
