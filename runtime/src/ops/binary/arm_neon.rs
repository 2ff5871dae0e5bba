//! 32-bit Arm NEON int8 Add/Sub/Mul (Armv7-A) over the rows of [`super::BinaryShape::rows`]:
//! four elements per iteration of one assembly loop per row
//! ([`crate::ops::arm_neon::binary_i8_quads`]), gemmlowp's NEON fixed point as on aarch64,
//! bit for bit the reference.
//!
//! Float Add/Sub/Mul stays on the scalar VFP code: it is defined to be exact, and Armv7's
//! Advanced SIMD flushes subnormals to zero, which VFP does not.

use super::{Arg, BinaryI8, BinaryOp, reference};
use crate::isa::Isa;
use crate::ops::arm_neon::{BinaryConsts, BinaryKind, binary_i8_quads};

/// The NEON int8 kernel; the reference where the CPU lacks NEON. `op` must have passed
/// `validate(output)`.
pub(super) fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) {
    if !Isa::Neon32.available() {
        return reference::binary_i8(op, output);
    }
    let p = &op.params;
    let consts = BinaryConsts::new(p);
    let kind = match p.op {
        BinaryOp::Add => BinaryKind::Add,
        BinaryOp::Sub => BinaryKind::Sub,
        BinaryOp::Mul => BinaryKind::Mul,
    };
    let rows = op.shape.rows();
    for (a_offset, b_offset, o) in rows.iter() {
        let a = Arg::new(op.a, a_offset, rows.a_advances, rows.len);
        let b = Arg::new(op.b, b_offset, rows.b_advances, rows.len);
        let out = &mut output[o..o + rows.len];
        let quads = out.len() / 4;
        let out_ptr = out.as_mut_ptr();
        // A repeated value is read as a four-byte splat that the loop never advances past.
        let splats = [a, b].map(|arg| match arg {
            Arg::Scalar(x) => [x; 4],
            _ => [0; 4],
        });
        let operand = |arg: Arg<'_, i8>, splat: &[i8; 4]| match arg {
            Arg::Slice(s) => (s.as_ptr(), 4),
            Arg::Out => (out_ptr.cast_const(), 4),
            Arg::Scalar(_) => (splat.as_ptr(), 0),
        };
        // SAFETY: NEON is available (checked above). A slice operand and the output row
        // both hold `rows.len >= 4 * quads` bytes; a splat is read in place; the in-place
        // operand is the output row, each group read before it is written.
        unsafe {
            binary_i8_quads(
                &consts,
                kind,
                operand(a, &splats[0]),
                operand(b, &splats[1]),
                out_ptr,
                quads,
            );
        }
        for j in quads * 4..out.len() {
            out[j] = reference::element_i8(p, a.get(j, out), b.get(j, out));
        }
    }
}
