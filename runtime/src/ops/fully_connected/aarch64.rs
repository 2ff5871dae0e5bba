//! aarch64 fast paths. Four output rows share each load of the input.
//!
//! - NEON (every aarch64 core): `(x - zp)` and the weights widened to i16, multiplied and
//!   accumulated into i32 lanes with `smlal`; exact, as in the x86 kernel.
//! - SDOT (Armv8.2 dot product): raw int8 products summed four at a time into i32 lanes, with
//!   the zero point folded out afterwards: `sum((x - zp) w) = sum(x w) - zp sum(w)`, where
//!   `sum(w)` comes from a second SDOT against ones. Both sides are exact modulo 2^32, so the
//!   result equals the reference's wrapping accumulator.
//! - f32: `fmla` over four lanes, four rows at a time.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use super::{
    FullyConnectedF32, FullyConnectedI8, FullyConnectedI16, finish_rows_f32, finish_rows_i8,
};
use crate::isa::Isa;
use crate::ops::FloatWeight;
use half::f16;

/// `acc + sum of four-byte groups of a * b` per lane: the SDOT instruction. Written with
/// `asm!` because the `vdotq_s32` intrinsic is not stable in the Rust versions loam supports.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: SDOT only reads and writes the named vector registers; the caller guarantees
    // the dot-product extension is present.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// The NEON int8 kernel.
pub(crate) fn fully_connected_i8_neon(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { i8_neon(op, output) }
}

/// The SDOT int8 kernel; the NEON kernel where SDOT is missing.
pub(crate) fn fully_connected_i8_dotprod(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    if Isa::DotProd.available() {
        // SAFETY: the dot-product extension is available (checked just above).
        unsafe { i8_dotprod(op, output) }
    } else {
        fully_connected_i8_neon(op, output)
    }
}

/// The NEON 16x8 kernel: int16 activations times int8 weights widened to i16 (`smull`), the
/// i32 products (each at most 2^22 in magnitude) added pairwise into i64 lanes (`sadalp`), so
/// no lane can overflow and the sum is the reference's exactly.
pub(crate) fn fully_connected_i16_neon(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { i16_neon(op, output) }
}

/// `op` must have passed `validate(output)`.
#[target_feature(enable = "neon")]
unsafe fn i16_neon(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    let s = op.shape;
    let n = s.in_features;
    let whole = n / 8 * 8;
    for b in 0..s.batch {
        let row = &op.input[b * n..(b + 1) * n];
        for o in 0..s.out_features {
            let weights = &op.weights[o * n..(o + 1) * n];
            // SAFETY: NEON is available; each load reads 8 elements at `i` with
            // `i + 8 <= whole <= n`, inside rows of exactly `n` elements.
            let mut acc = unsafe {
                let mut total = vdupq_n_s64(0);
                let mut i = 0;
                while i < whole {
                    let x = vld1q_s16(row.as_ptr().add(i));
                    let w = vmovl_s8(vld1_s8(weights.as_ptr().add(i)));
                    total = vpadalq_s32(total, vmull_s16(vget_low_s16(x), vget_low_s16(w)));
                    total = vpadalq_s32(total, vmull_high_s16(x, w));
                    i += 8;
                }
                vgetq_lane_s64::<0>(total).wrapping_add(vgetq_lane_s64::<1>(total))
            };
            for (&x, &w) in row[whole..].iter().zip(&weights[whole..]) {
                acc = acc.wrapping_add(i64::from(x) * i64::from(w));
            }
            if let Some(bias) = op.bias {
                acc = acc.wrapping_add(i64::from(bias[o]));
            }
            output[b * s.out_features + o] = op.params.output(acc, o);
        }
    }
}

/// The NEON float kernel, for f32 or f16 weights (widened with `fcvtl` as they load).
pub(crate) fn fully_connected_f32_neon<W: FloatWeight>(
    op: &FullyConnectedF32<'_, W>,
    output: &mut [f32],
) {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { f32_neon(op, output) }
}

#[target_feature(enable = "neon")]
unsafe fn i8_neon(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    // SAFETY: NEON is present (caller); every load below reads 8 bytes at an index `i` with
    // `i + 8 <= n` inside a row of exactly `n` elements.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let chunks = n / 8;
        let zp = vdupq_n_s16(op.params.input_zero_point as i16);
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w: [&[i8]; 4] =
                    core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
                let mut acc = [vdupq_n_s32(0); 4];
                for c in 0..chunks {
                    let i = c * 8;
                    let x = vsubq_s16(vmovl_s8(vld1_s8(row.as_ptr().add(i))), zp);
                    for r in 0..4 {
                        let wv = vmovl_s8(vld1_s8(w[r].as_ptr().add(i)));
                        acc[r] = vmlal_s16(acc[r], vget_low_s16(x), vget_low_s16(wv));
                        acc[r] = vmlal_high_s16(acc[r], x, wv);
                    }
                }
                let sums = acc.map(|a| vaddvq_s32(a));
                finish_rows_i8(op, row, o, rows, chunks * 8, sums, out);
                o += rows;
            }
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_dotprod(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    // SAFETY: SDOT is present (caller); every load reads 16 bytes at `i` with `i + 16 <= n`
    // inside a row of exactly `n` elements.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let chunks = n / 16;
        let zp = op.params.input_zero_point;
        let ones = vdupq_n_s8(1);
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w: [&[i8]; 4] =
                    core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
                let mut dot = [vdupq_n_s32(0); 4];
                let mut wsum = [vdupq_n_s32(0); 4];
                for c in 0..chunks {
                    let i = c * 16;
                    let x = vld1q_s8(row.as_ptr().add(i));
                    for r in 0..4 {
                        let wv = vld1q_s8(w[r].as_ptr().add(i));
                        dot[r] = sdot(dot[r], x, wv);
                        wsum[r] = sdot(wsum[r], ones, wv);
                    }
                }
                let sums: [i32; 4] = core::array::from_fn(|r| {
                    vaddvq_s32(dot[r]).wrapping_sub(zp.wrapping_mul(vaddvq_s32(wsum[r])))
                });
                finish_rows_i8(op, row, o, rows, chunks * 16, sums, out);
                o += rows;
            }
        }
    }
}

/// The FEAT_FHM kernel for f16 weights with inputs rounded to f16: eight inputs at a time
/// are narrowed (`fcvtn`) once and multiplied with four weight rows by `fmlal`/`fmlal2`
/// (binary16 products accumulated in binary32). The reference where FHM is missing.
pub(crate) fn fully_connected_f16_fhm(op: &FullyConnectedF32<'_, f16>, output: &mut [f32]) {
    if !Isa::Fhm.available() {
        return super::reference::fully_connected_f16_half_inputs(op, output);
    }
    // SAFETY: FHM is available (checked above); NEON is part of every aarch64 target.
    unsafe { f16_fhm(op, output) }
}

#[target_feature(enable = "neon,fhm")]
unsafe fn f16_fhm(op: &FullyConnectedF32<'_, f16>, output: &mut [f32]) {
    let s = op.shape;
    let n = s.in_features;
    let chunks = n / 8;
    let (lo, hi) = op.activation;
    for b in 0..s.batch {
        let row = &op.input[b * n..(b + 1) * n];
        let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
        if !super::reference::fits_f16(row) {
            // An input f16 cannot hold: the reference's definition runs this row in f32.
            let one = FullyConnectedF32 {
                shape: super::FullyConnectedShape { batch: 1, ..s },
                input: row,
                ..*op
            };
            // SAFETY: NEON is part of every aarch64 target.
            unsafe { f32_neon(&one, out) };
            continue;
        }
        let mut o = 0;
        while o < s.out_features {
            let rows = (s.out_features - o).min(4);
            let w: [&[f16]; 4] =
                core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
            let mut sums = [0f32; 4];
            // SAFETY: each of the `chunks` iterations reads 8 floats of `row` and 8 halves
            // of each weight row, all inside slices of `n >= 8 * chunks` elements; `sums`
            // holds the 16 bytes stored. Only caller-saved vector registers are written.
            unsafe {
                core::arch::asm!(
                    "movi v16.4s, #0",
                    "movi v17.4s, #0",
                    "movi v18.4s, #0",
                    "movi v19.4s, #0",
                    "movi v20.4s, #0",
                    "movi v21.4s, #0",
                    "movi v22.4s, #0",
                    "movi v23.4s, #0",
                    "cbz {count}, 2f",
                    "1:",
                    "ld1 {{v0.4s, v1.4s}}, [{x}], #32",
                    "fcvtn v2.4h, v0.4s",
                    "fcvtn2 v2.8h, v1.4s",
                    "ldr q3, [{w0}], #16",
                    "ldr q4, [{w1}], #16",
                    "ldr q5, [{w2}], #16",
                    "ldr q6, [{w3}], #16",
                    "fmlal v16.4s, v2.4h, v3.4h",
                    "fmlal2 v17.4s, v2.4h, v3.4h",
                    "fmlal v18.4s, v2.4h, v4.4h",
                    "fmlal2 v19.4s, v2.4h, v4.4h",
                    "fmlal v20.4s, v2.4h, v5.4h",
                    "fmlal2 v21.4s, v2.4h, v5.4h",
                    "fmlal v22.4s, v2.4h, v6.4h",
                    "fmlal2 v23.4s, v2.4h, v6.4h",
                    "subs {count}, {count}, #1",
                    "b.ne 1b",
                    "2:",
                    "fadd v16.4s, v16.4s, v17.4s",
                    "fadd v18.4s, v18.4s, v19.4s",
                    "fadd v20.4s, v20.4s, v21.4s",
                    "fadd v22.4s, v22.4s, v23.4s",
                    "faddp v16.4s, v16.4s, v18.4s",
                    "faddp v20.4s, v20.4s, v22.4s",
                    "faddp v16.4s, v16.4s, v20.4s",
                    "str q16, [{out}]",
                    x = inout(reg) row.as_ptr() => _,
                    w0 = inout(reg) w[0].as_ptr() => _,
                    w1 = inout(reg) w[1].as_ptr() => _,
                    w2 = inout(reg) w[2].as_ptr() => _,
                    w3 = inout(reg) w[3].as_ptr() => _,
                    count = inout(reg) chunks => _,
                    out = in(reg) sums.as_mut_ptr(),
                    out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                    out("v4") _, out("v5") _, out("v6") _,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                    out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                    options(nostack),
                );
            }
            for (r, &sum) in sums.iter().enumerate().take(rows) {
                let mut acc = sum;
                for i in chunks * 8..n {
                    acc += f16::from_f32(row[i]).to_f32() * w[r][i].widen();
                }
                if let Some(bias) = op.bias {
                    acc += bias[o + r];
                }
                out[o + r] = acc.max(lo).min(hi);
            }
            o += rows;
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn f32_neon<W: FloatWeight>(op: &FullyConnectedF32<'_, W>, output: &mut [f32]) {
    // SAFETY: NEON is present (caller); every load reads 4 floats at `i` with `i + 4 <= n`
    // inside a row of exactly `n` elements.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let chunks = n / 4;
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w: [&[W]; 4] =
                    core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
                let mut acc = [vdupq_n_f32(0.0); 4];
                for c in 0..chunks {
                    let i = c * 4;
                    let x = vld1q_f32(row.as_ptr().add(i));
                    for r in 0..4 {
                        acc[r] = vfmaq_f32(acc[r], x, W::load4_neon(w[r].as_ptr().add(i)));
                    }
                }
                let sums = acc.map(|a| vaddvq_f32(a));
                finish_rows_f32(op, row, o, rows, chunks * 4, sums, out);
                o += rows;
            }
        }
    }
}
