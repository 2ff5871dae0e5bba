//! x86_64 AVX2 fast paths. The output is walked as rows ([`super::BinaryShape::rows`]): the
//! same-shape case is one long row, and an operand that is a scalar or repeats along the
//! last dimension becomes a value splatted across the row or a run reused for every row.
//!
//! int8 is pure i32 arithmetic, eight lanes at a time. The fixed-point multiply
//! (`SaturatingRoundingDoublingHighMul`) forms exact i64 products of the even and odd lanes
//! with `vpmuldq` and takes bits 31..62 of `product + 2^30`, which is `floor((a*b + 2^30) /
//! 2^31)`, the scalar's round-half-up; its one overflowing case, `i32::MIN * i32::MIN`,
//! cannot occur, since multipliers are never negative. `RoundingDivideByPOT` uses the
//! scalar's own mask-and-threshold formulation. Both are the requantization's
//! ([`crate::ops::requantize::x86`]), so every lane equals the reference bit for bit.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{Arg, BinaryF32, BinaryI8, BinaryI8Params, BinaryOp, reference};
use crate::fixed_point::QuantizedMultiplier;
use crate::isa::Isa;
use crate::ops::requantize::x86::{doubling_high_mul, rounding_divide_by_pot};

/// The AVX2 int8 kernel; falls back to the reference where AVX2 is missing.
pub(super) fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { binary_i8_avx2(op, output) }
    } else {
        reference::binary_i8(op, output)
    }
}

/// The AVX2 float kernel; falls back to the reference where AVX2 is missing.
pub(super) fn binary_f32(op: &BinaryF32<'_>, output: &mut [f32]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { binary_f32_avx2(op, output) }
    } else {
        reference::binary_f32(op, output)
    }
}

/// A [`QuantizedMultiplier`] splatted for [`apply`].
#[derive(Clone, Copy)]
struct VecMultiplier {
    left: __m128i,
    multiplier: __m256i,
    /// `multiplier` in the odd lanes' low halves, for [`doubling_high_mul`].
    odd_multiplier: __m256i,
    right: __m256i,
    /// `2^right - 1` and half of it, for [`rounding_divide_by_pot`].
    masks: (__m256i, __m256i),
}

impl VecMultiplier {
    #[target_feature(enable = "avx2")]
    unsafe fn new(m: QuantizedMultiplier) -> VecMultiplier {
        // SAFETY: the caller guarantees the target features are available; memory is
        // accessed only through bounds-checked slices.
        unsafe {
            let (left, right) = m.exponents();
            let mask = ((1i64 << right) - 1) as i32;
            VecMultiplier {
                left: _mm_cvtsi32_si128(left as i32),
                multiplier: _mm256_set1_epi32(m.multiplier()),
                odd_multiplier: _mm256_set1_epi64x(i64::from(m.multiplier())),
                right: _mm256_set1_epi32(right as i32),
                masks: (_mm256_set1_epi32(mask), _mm256_set1_epi32(mask >> 1)),
            }
        }
    }
}

/// [`QuantizedMultiplier::apply`] on eight lanes: wrapping left shift, high multiply,
/// rounding right shift.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn apply(x: __m256i, m: &VecMultiplier) -> __m256i {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let x = _mm256_sll_epi32(x, m.left);
        // Multipliers are never negative, so `i32::MIN * i32::MIN` cannot occur.
        let high = doubling_high_mul(x, m.multiplier, m.odd_multiplier);
        rounding_divide_by_pot(high, m.right, m.masks)
    }
}

/// Eight int8 at `s[i..i + 8]`, sign-extended to i32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_i8x8(s: &[i8], i: usize) -> __m256i {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &s[i..i + 8];
        // SAFETY: `chunk` has exactly the eight bytes the load reads.
        _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(chunk.as_ptr().cast()) })
    }
}

/// Stores eight i32 lanes already inside the int8 range to `s[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_i8x8(s: &mut [i8], i: usize, v: __m256i) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &mut s[i..i + 8];
        // The saturating packs are exact here; they leave lanes 0..4 in the low dword of each
        // 128-bit half, which the unpack brings together.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(v, v), _mm256_packs_epi32(v, v));
        let bytes = _mm_unpacklo_epi32(
            _mm256_castsi256_si128(packed),
            _mm256_extracti128_si256::<1>(packed),
        );
        // SAFETY: `chunk` has exactly the eight bytes the store writes.
        unsafe { _mm_storel_epi64(chunk.as_mut_ptr().cast(), bytes) }
    }
}

/// The int8 parameters splatted for the row kernels.
struct I8Consts {
    p: BinaryI8Params,
    zp1: __m256i,
    zp2: __m256i,
    left_shift: __m128i,
    m1: VecMultiplier,
    m2: VecMultiplier,
    mo: VecMultiplier,
    /// The clamp range less the output zero point: clamping before adding the zero point
    /// equals the reference's saturating add then clamp, without an i32 saturating add.
    lo: __m256i,
    hi: __m256i,
    ozp: __m256i,
}

impl I8Consts {
    #[target_feature(enable = "avx2")]
    unsafe fn new(p: &BinaryI8Params) -> I8Consts {
        // SAFETY: the caller guarantees the target features are available; memory is
        // accessed only through bounds-checked slices.
        unsafe {
            let ozp = p.output_zero_point;
            I8Consts {
                p: *p,
                zp1: _mm256_set1_epi32(p.input1_zero_point),
                zp2: _mm256_set1_epi32(p.input2_zero_point),
                left_shift: _mm_cvtsi32_si128(p.left_shift as i32),
                m1: VecMultiplier::new(p.input1_multiplier),
                m2: VecMultiplier::new(p.input2_multiplier),
                mo: VecMultiplier::new(p.output_multiplier),
                lo: _mm256_set1_epi32(i32::from(p.activation_min) - ozp),
                hi: _mm256_set1_epi32(i32::from(p.activation_max) - ozp),
                ozp: _mm256_set1_epi32(ozp),
            }
        }
    }

    /// The final requantization of eight raw results.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn finish(&self, raw: __m256i) -> __m256i {
        // SAFETY: the caller guarantees the target features are available; memory is
        // accessed only through bounds-checked slices.
        unsafe {
            let r = apply(raw, &self.mo);
            _mm256_add_epi32(
                _mm256_min_epi32(_mm256_max_epi32(r, self.lo), self.hi),
                self.ozp,
            )
        }
    }
}

/// Input `x` of Add/Sub brought to the common scale: `m.apply((x - zp) << left_shift)`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scale_input(c: &I8Consts, x: __m256i, zp: __m256i, m: &VecMultiplier) -> __m256i {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe { apply(_mm256_sll_epi32(_mm256_sub_epi32(x, zp), c.left_shift), m) }
}

/// The scalar form of [`scale_input`], for an operand repeated along a row.
fn scale_scalar(p: &BinaryI8Params, x: i8, zp: i32, m: QuantizedMultiplier) -> i32 {
    m.apply(i32::from(x).wrapping_sub(zp).wrapping_shl(p.left_shift))
}

/// Eight elements of operand `arg` at `i`, before any arithmetic.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn operand(arg: Arg<'_, i8>, i: usize, out: &[i8]) -> Option<__m256i> {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        match arg {
            Arg::Slice(s) => Some(load_i8x8(s, i)),
            Arg::Out => Some(load_i8x8(out, i)),
            Arg::Scalar(_) => None,
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn add_sub_row(c: &I8Consts, a: Arg<'_, i8>, b: Arg<'_, i8>, out: &mut [i8]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let p = &c.p;
        let n = out.len();
        // A repeated operand is scaled once for the whole row.
        let splat = |arg: Arg<'_, i8>, zp: i32, m: QuantizedMultiplier| match arg {
            Arg::Scalar(x) => scale_scalar(p, x, zp, m),
            _ => 0,
        };
        let a_splat = _mm256_set1_epi32(splat(a, p.input1_zero_point, p.input1_multiplier));
        let b_splat = _mm256_set1_epi32(splat(b, p.input2_zero_point, p.input2_multiplier));
        let subtract = p.op == BinaryOp::Sub;
        let mut i = 0;
        while i + 8 <= n {
            let s1 = match operand(a, i, out) {
                Some(x) => scale_input(c, x, c.zp1, &c.m1),
                None => a_splat,
            };
            let s2 = match operand(b, i, out) {
                Some(x) => scale_input(c, x, c.zp2, &c.m2),
                None => b_splat,
            };
            let raw = if subtract {
                _mm256_sub_epi32(s1, s2)
            } else {
                _mm256_add_epi32(s1, s2)
            };
            store_i8x8(out, i, c.finish(raw));
            i += 8;
        }
        for j in i..n {
            out[j] = reference::element_i8(p, a.get(j, out), b.get(j, out));
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn mul_row(c: &I8Consts, a: Arg<'_, i8>, b: Arg<'_, i8>, out: &mut [i8]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let p = &c.p;
        let n = out.len();
        let splat = |arg: Arg<'_, i8>, zp: i32| match arg {
            Arg::Scalar(x) => i32::from(x).wrapping_sub(zp),
            _ => 0,
        };
        let a_splat = _mm256_set1_epi32(splat(a, p.input1_zero_point));
        let b_splat = _mm256_set1_epi32(splat(b, p.input2_zero_point));
        let mut i = 0;
        while i + 8 <= n {
            let v1 = match operand(a, i, out) {
                Some(x) => _mm256_sub_epi32(x, c.zp1),
                None => a_splat,
            };
            let v2 = match operand(b, i, out) {
                Some(x) => _mm256_sub_epi32(x, c.zp2),
                None => b_splat,
            };
            store_i8x8(out, i, c.finish(_mm256_mullo_epi32(v1, v2)));
            i += 8;
        }
        for j in i..n {
            out[j] = reference::element_i8(p, a.get(j, out), b.get(j, out));
        }
    }
}

/// `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2")]
unsafe fn binary_i8_avx2(op: &BinaryI8<'_>, output: &mut [i8]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
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
}

const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_f32x8(s: &[f32], i: usize) -> __m256 {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let chunk = &s[i..i + 8];
        // SAFETY: `chunk` has exactly the eight floats the load reads.
        unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn f32_row<const OP: u8>(
    a: Arg<'_, f32>,
    b: Arg<'_, f32>,
    activation: (f32, f32),
    out: &mut [f32],
) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let n = out.len();
        let lo = _mm256_set1_ps(activation.0);
        let hi = _mm256_set1_ps(activation.1);
        let scalar = |arg: Arg<'_, f32>| match arg {
            Arg::Scalar(x) => x,
            _ => 0.0,
        };
        let a_splat = _mm256_set1_ps(scalar(a));
        let b_splat = _mm256_set1_ps(scalar(b));
        let kind = match OP {
            ADD => BinaryOp::Add,
            SUB => BinaryOp::Sub,
            _ => BinaryOp::Mul,
        };
        let mut i = 0;
        while i + 8 <= n {
            let x1 = match a {
                Arg::Slice(s) => load_f32x8(s, i),
                Arg::Out => load_f32x8(out, i),
                Arg::Scalar(_) => a_splat,
            };
            let x2 = match b {
                Arg::Slice(s) => load_f32x8(s, i),
                Arg::Out => load_f32x8(out, i),
                Arg::Scalar(_) => b_splat,
            };
            let r = match OP {
                ADD => _mm256_add_ps(x1, x2),
                SUB => _mm256_sub_ps(x1, x2),
                _ => _mm256_mul_ps(x1, x2),
            };
            // `max_ps(lo, r)` is `lo > r ? lo : r` and keeps a NaN `r`, as does `min_ps(hi, _)`:
            // exactly the reference's clamp.
            let r = _mm256_min_ps(hi, _mm256_max_ps(lo, r));
            let chunk = &mut out[i..i + 8];
            // SAFETY: `chunk` has exactly the eight floats the store writes.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), r) };
            i += 8;
        }
        for j in i..n {
            out[j] = reference::element_f32(kind, a.get(j, out), b.get(j, out), activation);
        }
    }
}

/// `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2")]
unsafe fn binary_f32_avx2(op: &BinaryF32<'_>, output: &mut [f32]) {
    // SAFETY: the caller guarantees the target features are available; memory is
    // accessed only through bounds-checked slices.
    unsafe {
        let rows = op.shape.rows();
        for (a_offset, b_offset, o) in rows.iter() {
            let a = Arg::new(op.a, a_offset, rows.a_advances, rows.len);
            let b = Arg::new(op.b, b_offset, rows.b_advances, rows.len);
            let out = &mut output[o..o + rows.len];
            match op.op {
                BinaryOp::Add => f32_row::<ADD>(a, b, op.activation, out),
                BinaryOp::Sub => f32_row::<SUB>(a, b, op.activation, out),
                BinaryOp::Mul => f32_row::<MUL>(a, b, op.activation, out),
            }
        }
    }
}

/// [`apply`] lane by lane, for the tests; `None` without AVX2.
#[cfg(test)]
pub(super) fn applied_lanes(a: [i32; 8], m: QuantizedMultiplier) -> Option<[i32; 8]> {
    #[target_feature(enable = "avx2")]
    unsafe fn lanes(a: [i32; 8], m: QuantizedMultiplier) -> [i32; 8] {
        // SAFETY: AVX2 is available (caller); `[i32; 8]` and `__m256i` have the same size,
        // loaded and stored unaligned.
        unsafe {
            let mut applied = [0i32; 8];
            let va = _mm256_loadu_si256(a.as_ptr().cast());
            let vm = VecMultiplier::new(m);
            _mm256_storeu_si256(applied.as_mut_ptr().cast(), apply(va, &vm));
            applied
        }
    }
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        Some(unsafe { lanes(a, m) })
    } else {
        None
    }
}
