//! aarch64 NEON fast paths over the rows of [`super::BinaryShape::rows`], like the AVX2 ones.
//!
//! int8 is i32 arithmetic, eight lanes at a time, with gemmlowp's own NEON fixed point:
//! `sqrdmulh` is `SaturatingRoundingDoublingHighMul` exactly (round half up, `MIN * MIN`
//! saturating to `MAX`), and `RoundingDivideByPOT` is a rounding shift `srshl` by the negated
//! exponent after subtracting one from negative values (the `fixup`), which makes ties round
//! away from zero as the scalar does. The left shift wraps like the scalar's
//! `wrapping_shl`, and the zero point is added with saturation before the clamp. So every
//! lane equals the reference bit for bit.
//!
//! Floats are the IEEE operation in each lane, then the reference's clamp by compare and
//! select, which lets a NaN through unchanged as the reference does.
//!
//! NEON is part of every aarch64 target, so these need no run-time check.

use core::arch::aarch64::*;

use super::{Arg, BinaryF32, BinaryI8, BinaryI8Params, BinaryOp, reference};
use crate::fixed_point::QuantizedMultiplier;

/// A [`QuantizedMultiplier`] splatted for [`apply`].
#[derive(Clone, Copy)]
struct VecMultiplier {
    left: int32x4_t,
    multiplier: int32x4_t,
    /// The negated right shift, for `srshl`.
    right: int32x4_t,
}

impl VecMultiplier {
    fn new(m: QuantizedMultiplier) -> VecMultiplier {
        let shift = m.shift();
        // SAFETY: register-only NEON, part of every aarch64 target.
        unsafe {
            VecMultiplier {
                left: vdupq_n_s32(shift.max(0)),
                multiplier: vdupq_n_s32(m.multiplier()),
                right: vdupq_n_s32(-((-shift).clamp(0, 31))),
            }
        }
    }
}

/// [`QuantizedMultiplier::apply`] on four lanes: wrapping left shift, `sqrdmulh`, rounding
/// right shift with ties away from zero.
#[inline(always)]
fn apply(x: int32x4_t, m: &VecMultiplier) -> int32x4_t {
    // SAFETY: register-only NEON, part of every aarch64 target.
    unsafe {
        let high = vqrdmulhq_s32(vshlq_s32(x, m.left), m.multiplier);
        // -1 for negative values when shifting right at all (`right` is then negative, so
        // the AND keeps `high`'s sign bit); 0 otherwise.
        let fixup = vshrq_n_s32::<31>(vandq_s32(high, m.right));
        vrshlq_s32(vqaddq_s32(high, fixup), m.right)
    }
}

/// The int8 parameters splatted for the row kernels.
struct I8Consts {
    p: BinaryI8Params,
    zp1: int32x4_t,
    zp2: int32x4_t,
    left_shift: int32x4_t,
    m1: VecMultiplier,
    m2: VecMultiplier,
    mo: VecMultiplier,
    lo: int32x4_t,
    hi: int32x4_t,
    ozp: int32x4_t,
}

impl I8Consts {
    fn new(p: &BinaryI8Params) -> I8Consts {
        // SAFETY: register-only NEON, part of every aarch64 target.
        unsafe {
            I8Consts {
                p: *p,
                zp1: vdupq_n_s32(p.input1_zero_point),
                zp2: vdupq_n_s32(p.input2_zero_point),
                left_shift: vdupq_n_s32(p.left_shift as i32),
                m1: VecMultiplier::new(p.input1_multiplier),
                m2: VecMultiplier::new(p.input2_multiplier),
                mo: VecMultiplier::new(p.output_multiplier),
                lo: vdupq_n_s32(p.activation_min.into()),
                hi: vdupq_n_s32(p.activation_max.into()),
                ozp: vdupq_n_s32(p.output_zero_point),
            }
        }
    }

    /// The final requantization of four raw results: multiplier, saturating zero point,
    /// clamp, as the reference.
    #[inline(always)]
    fn finish(&self, raw: int32x4_t) -> int32x4_t {
        // SAFETY: register-only NEON, part of every aarch64 target.
        unsafe {
            let r = vqaddq_s32(apply(raw, &self.mo), self.ozp);
            vminq_s32(vmaxq_s32(r, self.lo), self.hi)
        }
    }

    /// Input `x` of Add/Sub brought to the common scale: `m.apply((x - zp) << left_shift)`.
    #[inline(always)]
    fn scale(&self, x: int32x4_t, zp: int32x4_t, m: &VecMultiplier) -> int32x4_t {
        // SAFETY: register-only NEON, part of every aarch64 target.
        unsafe { apply(vshlq_s32(vsubq_s32(x, zp), self.left_shift), m) }
    }
}

/// Eight elements of `arg` at `i` as two i32 vectors, or `None` for a repeated value.
#[inline(always)]
fn operand(arg: Arg<'_, i8>, i: usize, out: &[i8]) -> Option<[int32x4_t; 2]> {
    let s = match arg {
        Arg::Slice(s) => &s[i..i + 8],
        Arg::Out => &out[i..i + 8],
        Arg::Scalar(_) => return None,
    };
    // SAFETY: NEON is part of every aarch64 target; `s` holds exactly the eight bytes the
    // load reads.
    unsafe {
        let v = vmovl_s8(vld1_s8(s.as_ptr()));
        Some([vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)])
    }
}

/// Stores two vectors of four values already in int8 range at `out[i..i + 8]`.
#[inline(always)]
fn store8(out: &mut [i8], i: usize, v: [int32x4_t; 2]) {
    let chunk = &mut out[i..i + 8];
    // SAFETY: NEON is part of every aarch64 target; `chunk` holds exactly the eight bytes
    // the store writes, and the narrowing is exact for values in int8 range.
    unsafe {
        let words = vcombine_s16(vmovn_s32(v[0]), vmovn_s32(v[1]));
        vst1_s8(chunk.as_mut_ptr(), vmovn_s16(words));
    }
}

fn add_sub_row(c: &I8Consts, a: Arg<'_, i8>, b: Arg<'_, i8>, out: &mut [i8]) {
    let p = &c.p;
    let n = out.len();
    // A repeated operand is scaled once for the whole row.
    let splat = |arg: Arg<'_, i8>, zp: i32, m: QuantizedMultiplier| match arg {
        Arg::Scalar(x) => m.apply(i32::from(x).wrapping_sub(zp).wrapping_shl(p.left_shift)),
        _ => 0,
    };
    // SAFETY: register-only NEON, part of every aarch64 target.
    let (a_splat, b_splat) = unsafe {
        (
            vdupq_n_s32(splat(a, p.input1_zero_point, p.input1_multiplier)),
            vdupq_n_s32(splat(b, p.input2_zero_point, p.input2_multiplier)),
        )
    };
    let subtract = p.op == BinaryOp::Sub;
    let mut i = 0;
    while i + 8 <= n {
        let s1 = operand(a, i, out).map_or([a_splat; 2], |x| x.map(|x| c.scale(x, c.zp1, &c.m1)));
        let s2 = operand(b, i, out).map_or([b_splat; 2], |x| x.map(|x| c.scale(x, c.zp2, &c.m2)));
        // SAFETY: register-only NEON, part of every aarch64 target.
        let raw: [int32x4_t; 2] = core::array::from_fn(|h| unsafe {
            if subtract {
                vsubq_s32(s1[h], s2[h])
            } else {
                vaddq_s32(s1[h], s2[h])
            }
        });
        store8(out, i, raw.map(|r| c.finish(r)));
        i += 8;
    }
    for j in i..n {
        out[j] = reference::element_i8(p, a.get(j, out), b.get(j, out));
    }
}

fn mul_row(c: &I8Consts, a: Arg<'_, i8>, b: Arg<'_, i8>, out: &mut [i8]) {
    let p = &c.p;
    let n = out.len();
    let splat = |arg: Arg<'_, i8>, zp: i32| match arg {
        Arg::Scalar(x) => i32::from(x).wrapping_sub(zp),
        _ => 0,
    };
    // SAFETY: register-only NEON, part of every aarch64 target.
    let (a_splat, b_splat) = unsafe {
        (
            vdupq_n_s32(splat(a, p.input1_zero_point)),
            vdupq_n_s32(splat(b, p.input2_zero_point)),
        )
    };
    let mut i = 0;
    while i + 8 <= n {
        let centered = |x: int32x4_t, zp: int32x4_t| {
            // SAFETY: register-only NEON, part of every aarch64 target.
            unsafe { vsubq_s32(x, zp) }
        };
        let v1 = operand(a, i, out).map_or([a_splat; 2], |x| x.map(|x| centered(x, c.zp1)));
        let v2 = operand(b, i, out).map_or([b_splat; 2], |x| x.map(|x| centered(x, c.zp2)));
        // SAFETY: register-only NEON, part of every aarch64 target.
        let raw: [int32x4_t; 2] = core::array::from_fn(|h| unsafe { vmulq_s32(v1[h], v2[h]) });
        store8(out, i, raw.map(|r| c.finish(r)));
        i += 8;
    }
    for j in i..n {
        out[j] = reference::element_i8(p, a.get(j, out), b.get(j, out));
    }
}

/// The NEON int8 kernel. `op` must have passed `validate(output)`.
pub(super) fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) {
    let rows = op.shape.rows();
    let c = I8Consts::new(&op.params);
    for (a_offset, b_offset, o) in rows.iter() {
        let a = Arg::new(op.a, a_offset, rows.a_advances, rows.len);
        let b = Arg::new(op.b, b_offset, rows.b_advances, rows.len);
        let out = &mut output[o..o + rows.len];
        match op.params.op {
            BinaryOp::Add | BinaryOp::Sub => add_sub_row(&c, a, b, out),
            BinaryOp::Mul => mul_row(&c, a, b, out),
        }
    }
}

/// Four floats of `arg` at `i`, or the repeated value splatted.
#[inline(always)]
fn load_f32x4(arg: Arg<'_, f32>, i: usize, out: &[f32]) -> float32x4_t {
    let s = match arg {
        Arg::Slice(s) => &s[i..i + 4],
        Arg::Out => &out[i..i + 4],
        // SAFETY: register-only NEON, part of every aarch64 target.
        Arg::Scalar(x) => return unsafe { vdupq_n_f32(x) },
    };
    // SAFETY: NEON is part of every aarch64 target; `s` holds exactly the four floats read.
    unsafe { vld1q_f32(s.as_ptr()) }
}

fn f32_row(
    op: BinaryOp,
    a: Arg<'_, f32>,
    b: Arg<'_, f32>,
    activation: (f32, f32),
    out: &mut [f32],
) {
    let n = out.len();
    // SAFETY: register-only NEON, part of every aarch64 target.
    let (lo, hi) = unsafe { (vdupq_n_f32(activation.0), vdupq_n_f32(activation.1)) };
    let mut i = 0;
    while i + 4 <= n {
        let (x1, x2) = (load_f32x4(a, i, out), load_f32x4(b, i, out));
        let chunk = &mut out[i..i + 4];
        // SAFETY: NEON is part of every aarch64 target; `chunk` holds exactly the four
        // floats the store writes.
        unsafe {
            let r = match op {
                BinaryOp::Add => vaddq_f32(x1, x2),
                BinaryOp::Sub => vsubq_f32(x1, x2),
                BinaryOp::Mul => vmulq_f32(x1, x2),
            };
            // The reference's `x < lo ? lo : x > hi ? hi : x`: comparisons with NaN are
            // false, so a NaN passes unchanged.
            let r = vbslq_f32(vcltq_f32(r, lo), lo, r);
            let r = vbslq_f32(vcgtq_f32(r, hi), hi, r);
            vst1q_f32(chunk.as_mut_ptr(), r);
        }
        i += 4;
    }
    for j in i..n {
        out[j] = reference::element_f32(op, a.get(j, out), b.get(j, out), activation);
    }
}

/// The NEON float kernel. `op` must have passed `validate(output)`.
pub(super) fn binary_f32(op: &BinaryF32<'_>, output: &mut [f32]) {
    let rows = op.shape.rows();
    for (a_offset, b_offset, o) in rows.iter() {
        let a = Arg::new(op.a, a_offset, rows.a_advances, rows.len);
        let b = Arg::new(op.b, b_offset, rows.b_advances, rows.len);
        f32_row(op.op, a, b, op.activation, &mut output[o..o + rows.len]);
    }
}
