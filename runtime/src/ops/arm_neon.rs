//! 32-bit Arm (Armv7-A) Advanced SIMD micro-kernels, written as inline assembly.
//!
//! Why assembly: on 32-bit Arm both the `core::arch::arm` NEON intrinsics and
//! `#[target_feature(enable = "neon")]` are unstable in every Rust loam supports, and the
//! Armv7 Linux targets are built without NEON because Armv7-A makes it optional. So each
//! block switches the assembler to NEON with `.fpu neon`, and callers run these only after
//! [`Isa::Neon32`](crate::isa::Isa::Neon32) found NEON in the kernel's HWCAP.
//!
//! Register discipline: the blocks use d0-d15 (q0-q7) only, each named as an operand or a
//! clobber, so the compiler saves the callee-saved d8-d15 itself. d16-d31 are never touched:
//! a build with 32 double registers may keep its own values there.
//!
//! Integer kernels are exact: `x - zp` and the int8 weights are widened to i16 (`vsubl`,
//! `vmovl`), and `vmlal.s16` accumulates their products into i32 lanes, wrapping like the
//! reference's accumulator. Float kernels use `vmla.f32` (a product rounded, then a sum
//! rounded, as the scalar code does) in a different summation order, within the ops' named
//! tolerance. Advanced SIMD on Armv7 flushes subnormals to zero, which that tolerance covers.

use core::arch::asm;

/// Four-row dot products: one row of activations against four weight rows, over the first
/// `chunks` groups of eight (i8 and i16 activations) or four (f32) elements. `$load_x`
/// leaves eight i16 activations in q1 (d2-d3), or four floats; `$rows` multiplies them into
/// the accumulators q4-q7 with q2 and q3 free; `$padd` is the pairwise add that reduces the
/// accumulators to the four sums stored at `out`. `rows: i8_weights` is the integer body.
macro_rules! rows4 {
    // The integer loop body: each weight row's eight bytes widened and multiplied with the
    // i16 activations in q1.
    (
        setup: [$($setup:literal),*],
        load_x: [$($load_x:literal),*],
        rows: i8_weights,
        $($operands:tt)*
    ) => {
        rows4!(
            setup: [$($setup),*],
            load_x: [$($load_x),*],
            rows: [
                "vld1.8 {{d4}}, [{w0}]!",
                "vld1.8 {{d6}}, [{w1}]!",
                "vmovl.s8 q2, d4",
                "vmovl.s8 q3, d6",
                "vmlal.s16 q4, d2, d4",
                "vmlal.s16 q4, d3, d5",
                "vmlal.s16 q5, d2, d6",
                "vmlal.s16 q5, d3, d7",
                "vld1.8 {{d4}}, [{w2}]!",
                "vld1.8 {{d6}}, [{w3}]!",
                "vmovl.s8 q2, d4",
                "vmovl.s8 q3, d6",
                "vmlal.s16 q6, d2, d4",
                "vmlal.s16 q6, d3, d5",
                "vmlal.s16 q7, d2, d6",
                "vmlal.s16 q7, d3, d7"
            ],
            padd: "vpadd.i32",
            $($operands)*
        )
    };
    (
        setup: [$($setup:literal),*],
        load_x: [$($load_x:literal),*],
        rows: [$($rows:literal),*],
        padd: $padd:literal,
        $($operands:tt)*
    ) => {
        asm!(
            ".fpu neon",
            $($setup,)*
            "vmov.i32 q4, #0",
            "vmov.i32 q5, #0",
            "vmov.i32 q6, #0",
            "vmov.i32 q7, #0",
            "2:",
            $($load_x,)*
            $($rows,)*
            "subs {n}, {n}, #1",
            "bne 2b",
            concat!($padd, " d8, d8, d9"),
            concat!($padd, " d10, d10, d11"),
            concat!($padd, " d12, d12, d13"),
            concat!($padd, " d14, d14, d15"),
            concat!($padd, " d8, d8, d10"),
            concat!($padd, " d9, d12, d14"),
            "vst1.32 {{d8, d9}}, [{out}]",
            $($operands)*
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            options(nostack),
        )
    };
}

/// How many whole groups of `lanes` elements every slice holds: the most a kernel may read.
fn whole_chunks(x: usize, w: &[usize; 4], lanes: usize) -> usize {
    w.iter().fold(x, |len, &l| len.min(l)) / lanes
}

/// `sum((x[i] - zero_point) * w[r][i])` for each of the four rows, over the first
/// `x.len() / 8 * 8` elements (the caller adds the rest). Reads no further than the shortest
/// slice.
///
/// # Safety
/// The CPU must have NEON ([`Isa::Neon32`](crate::isa::Isa::Neon32) available).
pub(crate) unsafe fn dot_i8_rows4(x: &[i8], zero_point: i32, w: [&[i8]; 4]) -> [i32; 4] {
    let chunks = whole_chunks(x.len(), &w.map(<[i8]>::len), 8);
    let mut sums = [0i32; 4];
    if chunks == 0 {
        return sums;
    }
    // SAFETY: NEON is present (caller). Each pointer advances by 8 bytes per chunk, for
    // `chunks` chunks that every slice holds; the four sums are stored into `sums`.
    unsafe {
        rows4!(
            setup: ["vdup.8 d1, {zp}"],
            load_x: ["vld1.8 {{d0}}, [{x}]!", "vsubl.s8 q1, d0, d1"],
            rows: i8_weights,
            x = inout(reg) x.as_ptr() => _,
            w0 = inout(reg) w[0].as_ptr() => _,
            w1 = inout(reg) w[1].as_ptr() => _,
            w2 = inout(reg) w[2].as_ptr() => _,
            w3 = inout(reg) w[3].as_ptr() => _,
            n = inout(reg) chunks => _,
            zp = in(reg) zero_point,
            out = in(reg) sums.as_mut_ptr(),
        );
    }
    sums
}

/// `sum(x[i] * w[r][i])` for i16 activations (a patch already holding `x - zp`), over the
/// first `x.len() / 8 * 8` elements.
///
/// # Safety
/// The CPU must have NEON.
pub(crate) unsafe fn dot_i16_rows4(x: &[i16], w: [&[i8]; 4]) -> [i32; 4] {
    let chunks = whole_chunks(x.len(), &w.map(<[i8]>::len), 8);
    let mut sums = [0i32; 4];
    if chunks == 0 {
        return sums;
    }
    // SAFETY: as in `dot_i8_rows4`; `x` advances by eight i16 per chunk.
    unsafe {
        rows4!(
            setup: [],
            load_x: ["vld1.16 {{d2, d3}}, [{x}]!"],
            rows: i8_weights,
            x = inout(reg) x.as_ptr() => _,
            w0 = inout(reg) w[0].as_ptr() => _,
            w1 = inout(reg) w[1].as_ptr() => _,
            w2 = inout(reg) w[2].as_ptr() => _,
            w3 = inout(reg) w[3].as_ptr() => _,
            n = inout(reg) chunks => _,
            out = in(reg) sums.as_mut_ptr(),
        );
    }
    sums
}

/// `sum(x[i] * w[r][i])` in f32 over the first `x.len() / 4 * 4` elements.
///
/// # Safety
/// The CPU must have NEON.
pub(crate) unsafe fn dot_f32_rows4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let chunks = whole_chunks(x.len(), &w.map(<[f32]>::len), 4);
    let mut sums = [0f32; 4];
    if chunks == 0 {
        return sums;
    }
    // SAFETY: as in `dot_i8_rows4`; each pointer advances by four floats per chunk.
    unsafe {
        rows4!(
            setup: [],
            load_x: ["vld1.32 {{d2, d3}}, [{x}]!"],
            rows: [
                "vld1.32 {{d4, d5}}, [{w0}]!",
                "vld1.32 {{d6, d7}}, [{w1}]!",
                "vmla.f32 q4, q1, q2",
                "vmla.f32 q5, q1, q3",
                "vld1.32 {{d4, d5}}, [{w2}]!",
                "vld1.32 {{d6, d7}}, [{w3}]!",
                "vmla.f32 q6, q1, q2",
                "vmla.f32 q7, q1, q3"
            ],
            padd: "vpadd.f32",
            x = inout(reg) x.as_ptr() => _,
            w0 = inout(reg) w[0].as_ptr() => _,
            w1 = inout(reg) w[1].as_ptr() => _,
            w2 = inout(reg) w[2].as_ptr() => _,
            w3 = inout(reg) w[3].as_ptr() => _,
            n = inout(reg) chunks => _,
            out = in(reg) sums.as_mut_ptr(),
        );
    }
    sums
}

/// `sum(x[i] * w[r][i])` in i64 for 16x8 layers (int16 activations, int8 weights) over the
/// first `x.len() / 8 * 8` elements: `vmull.s16` forms exact i32 products and `vpadal.s32`
/// adds them pairwise into i64 lanes, so no lane can overflow and the totals wrap exactly
/// like the reference's i64.
///
/// # Safety
/// The CPU must have NEON.
pub(crate) unsafe fn dot_i16_wide_rows4(x: &[i16], w: [&[i8]; 4]) -> [i64; 4] {
    let chunks = whole_chunks(x.len(), &w.map(<[i8]>::len), 8);
    let mut sums = [0i64; 4];
    if chunks == 0 {
        return sums;
    }
    // SAFETY: NEON is present (caller). `x` advances by eight i16 and each weight row by
    // eight bytes per chunk, for `chunks` chunks that every slice holds; the four i64 sums
    // are stored into `sums`.
    unsafe {
        asm!(
            ".fpu neon",
            "vmov.i32 q4, #0",
            "vmov.i32 q5, #0",
            "vmov.i32 q6, #0",
            "vmov.i32 q7, #0",
            "2:",
            "vld1.16 {{d2, d3}}, [{x}]!",
            "vld1.8 {{d0}}, [{w0}]!",
            "vmovl.s8 q2, d0",
            "vmull.s16 q3, d2, d4",
            "vpadal.s32 q4, q3",
            "vmull.s16 q3, d3, d5",
            "vpadal.s32 q4, q3",
            "vld1.8 {{d0}}, [{w1}]!",
            "vmovl.s8 q2, d0",
            "vmull.s16 q3, d2, d4",
            "vpadal.s32 q5, q3",
            "vmull.s16 q3, d3, d5",
            "vpadal.s32 q5, q3",
            "vld1.8 {{d0}}, [{w2}]!",
            "vmovl.s8 q2, d0",
            "vmull.s16 q3, d2, d4",
            "vpadal.s32 q6, q3",
            "vmull.s16 q3, d3, d5",
            "vpadal.s32 q6, q3",
            "vld1.8 {{d0}}, [{w3}]!",
            "vmovl.s8 q2, d0",
            "vmull.s16 q3, d2, d4",
            "vpadal.s32 q7, q3",
            "vmull.s16 q3, d3, d5",
            "vpadal.s32 q7, q3",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vadd.i64 d8, d8, d9",
            "vadd.i64 d9, d10, d11",
            "vadd.i64 d10, d12, d13",
            "vadd.i64 d11, d14, d15",
            "vst1.64 {{d8, d9, d10, d11}}, [{out}]",
            x = inout(reg) x.as_ptr() => _,
            w0 = inout(reg) w[0].as_ptr() => _,
            w1 = inout(reg) w[1].as_ptr() => _,
            w2 = inout(reg) w[2].as_ptr() => _,
            w3 = inout(reg) w[3].as_ptr() => _,
            n = inout(reg) chunks => _,
            out = in(reg) sums.as_mut_ptr(),
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            options(nostack),
        );
    }
    sums
}

/// Eight channels' accumulators (i32 or f32 lanes), held in q2-q3 (d4-d7) across the taps of
/// a depthwise window: each tap is its own block, and binding the same registers every time
/// lets the compiler leave them in place.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lanes8([u64; 4]);

impl Lanes8 {
    /// The eight lanes as i32.
    pub(crate) fn i32s(self) -> [i32; 8] {
        core::array::from_fn(|l| (self.0[l / 2] >> (32 * (l % 2))) as u32 as i32)
    }

    /// The eight lanes as f32.
    pub(crate) fn f32s(self) -> [f32; 8] {
        self.i32s().map(|v| f32::from_bits(v as u32))
    }
}

/// One tap of a depthwise window on eight channels: `$body` reads `x` and `w` and adds into
/// the accumulators q2-q3, which stay bound to d4-d7 from block to block. `$clobbers` names
/// the other registers the body writes.
macro_rules! tap8 {
    ($acc:expr, $x:expr, $w:expr, [$($body:literal),*], $($clobbers:tt)*) => {{
        let [a0, a1, a2, a3] = &mut $acc.0;
        asm!(
            ".fpu neon",
            $($body,)*
            x = in(reg) $x.as_ptr(),
            w = in(reg) $w.as_ptr(),
            inout("d4") *a0,
            inout("d5") *a1,
            inout("d6") *a2,
            inout("d7") *a3,
            $($clobbers)*
            options(nostack, readonly, preserves_flags),
        )
    }};
}

/// `acc[l] += (x[l] - zp) * w[l]` for eight channels. `zero_points` holds the input zero
/// point in each of its eight bytes.
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn mla_i8x8(acc: &mut Lanes8, x: &[i8; 8], w: &[i8; 8], zero_points: u64) {
    // SAFETY: NEON is present (caller); the block reads eight bytes from each array.
    unsafe {
        tap8!(
            acc, x, w,
            [
                "vld1.8 {{d0}}, [{x}]",
                "vld1.8 {{d1}}, [{w}]",
                "vsubl.s8 q1, d0, d8",
                "vmovl.s8 q0, d1",
                "vmlal.s16 q2, d2, d0",
                "vmlal.s16 q3, d3, d1"
            ],
            in("d8") zero_points,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
        );
    }
}

/// `acc[l] += x[l] * w[l]` for eight channels of int16 activations and int8 weights (16x8
/// layers), each product exact in i32.
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn mla_i16x8(acc: &mut Lanes8, x: &[i16; 8], w: &[i8; 8]) {
    // SAFETY: NEON is present (caller); the block reads eight elements from each array.
    unsafe {
        tap8!(
            acc, x, w,
            [
                "vld1.16 {{d0, d1}}, [{x}]",
                "vld1.8 {{d2}}, [{w}]",
                "vmovl.s8 q1, d2",
                "vmlal.s16 q2, d0, d2",
                "vmlal.s16 q3, d1, d3"
            ],
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
        );
    }
}

/// `acc[l] += x[l] * w[l]` in f32 for eight channels.
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn mla_f32x8(acc: &mut Lanes8, x: &[f32; 8], w: &[f32; 8]) {
    // SAFETY: NEON is present (caller); the block reads eight floats from each array.
    unsafe {
        tap8!(
            acc, x, w,
            [
                "vld1.32 {{d0, d1, d2, d3}}, [{x}]",
                "vld1.32 {{d8, d9, d10, d11}}, [{w}]",
                "vmla.f32 q2, q0, q4",
                "vmla.f32 q3, q1, q5"
            ],
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
        );
    }
}

/// `acc[l] = max(acc[l], x[l])` for sixteen int8 channels, `acc` held in q2 (d4-d5).
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn max_i8x16(acc: &mut [u64; 2], x: &[i8; 16]) {
    let [a0, a1] = acc;
    // SAFETY: NEON is present (caller); the block reads sixteen bytes from `x`.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.8 {{d0, d1}}, [{x}]",
            "vmax.s8 q2, q2, q0",
            x = in(reg) x.as_ptr(),
            inout("d4") *a0,
            inout("d5") *a1,
            out("d0") _, out("d1") _,
            options(nostack, readonly, preserves_flags),
        );
    }
}

/// The parameters of an int8 Add/Sub/Mul as the lanes of d8-d15, where [`binary_i8_quads`]
/// keeps them: a vector of one lane is one `vdup.32` away, and the multipliers are used as
/// `vqrdmulh` scalars.
#[repr(C, align(8))]
pub(crate) struct BinaryConsts([i32; 16]);

impl BinaryConsts {
    /// The lanes for `p`. A multiplier is its left shift, its negated right shift (for
    /// `vrshl`) and its Q31 value.
    pub(crate) fn new(p: &crate::ops::binary::BinaryI8Params) -> BinaryConsts {
        let shifts = |m: crate::fixed_point::QuantizedMultiplier| {
            [m.shift().max(0), -((-m.shift()).clamp(0, 31))]
        };
        let [l1, r1] = shifts(p.input1_multiplier);
        let [l2, r2] = shifts(p.input2_multiplier);
        let [lout, rout] = shifts(p.output_multiplier);
        BinaryConsts([
            p.input1_zero_point,              // d8[0]
            p.input2_zero_point,              // d8[1]
            p.left_shift as i32,              // d9[0]
            p.output_zero_point,              // d9[1]
            l1,                               // d10[0]
            r1,                               // d10[1]
            l2,                               // d11[0]
            r2,                               // d11[1]
            lout,                             // d12[0]
            rout,                             // d12[1]
            p.input1_multiplier.multiplier(), // d13[0]
            p.input2_multiplier.multiplier(), // d13[1]
            p.output_multiplier.multiplier(), // d14[0]
            p.activation_min.into(),          // d14[1]
            p.activation_max.into(),          // d15[0]
            0,                                // d15[1]
        ])
    }
}

/// One int8 binary row, four elements per iteration: both operands loaded (a stride of 0
/// repeats a four-byte splat), widened to i32, `$inputs` brings them to the combining scale
/// in q0 and q1, `$combine` leaves the raw result in q0, and the output requantization
/// (multiplier, saturating zero point, clamp) narrows it back to four bytes.
///
/// `QuantizedMultiplier::apply` on q0 (or q1) is `vshl` by the left shift, `vqrdmulh`
/// (gemmlowp's `SaturatingRoundingDoublingHighMul` exactly), then the rounding right shift
/// `vrshl` after subtracting one from negative values (the fixup that makes ties round away
/// from zero, as the scalar does). So every lane equals the reference bit for bit.
macro_rules! binary_i8_loop {
    (inputs: [$($inputs:literal),*], combine: $combine:literal, $($operands:tt)*) => {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8, d9, d10, d11}}, [{consts}]!",
            "vld1.32 {{d12, d13, d14, d15}}, [{consts}]",
            "2:",
            "vld1.32 {{d0[0]}}, [{a}], {a_stride}",
            "vld1.32 {{d2[0]}}, [{b}], {b_stride}",
            "vmovl.s8 q0, d0",
            "vmovl.s8 q1, d2",
            "vmovl.s16 q0, d0",
            "vmovl.s16 q1, d2",
            "vdup.32 q2, d8[0]",
            "vsub.i32 q0, q0, q2",
            "vdup.32 q2, d8[1]",
            "vsub.i32 q1, q1, q2",
            $($inputs,)*
            $combine,
            // The output multiplier.
            "vdup.32 q2, d12[0]",
            "vshl.s32 q0, q0, q2",
            "vqrdmulh.s32 q0, q0, d14[0]",
            "vdup.32 q2, d12[1]",
            "vand q3, q0, q2",
            "vshr.s32 q3, q3, #31",
            "vqadd.s32 q0, q0, q3",
            "vrshl.s32 q0, q0, q2",
            "vdup.32 q2, d9[1]",
            "vqadd.s32 q0, q0, q2",
            "vdup.32 q2, d14[1]",
            "vmax.s32 q0, q0, q2",
            "vdup.32 q2, d15[0]",
            "vmin.s32 q0, q0, q2",
            // In int8 range after the clamp, so both narrowings are exact.
            "vmovn.i32 d0, q0",
            "vmovn.i16 d0, q0",
            "vst1.32 {{d0[0]}}, [{out}]!",
            "subs {n}, {n}, #1",
            "bne 2b",
            $($operands)*
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            options(nostack),
        )
    };
}

/// What an int8 binary row computes, for [`binary_i8_quads`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    /// Both inputs rescaled, then added.
    Add,
    /// Both inputs rescaled, then subtracted.
    Sub,
    /// The centered inputs multiplied.
    Mul,
}

/// Computes `quads` groups of four int8 outputs at `out`, reading four bytes of each operand
/// per group and advancing it by its stride (4, or 0 for a repeated four-byte splat).
///
/// # Safety
/// The CPU must have NEON; `a` and `b` must be readable for `4 + stride * (quads - 1)` bytes
/// and `out` writable for `4 * quads`. An operand may be `out` itself (an in-place op): each
/// group is read before it is written.
pub(crate) unsafe fn binary_i8_quads(
    consts: &BinaryConsts,
    kind: BinaryKind,
    (a, a_stride): (*const i8, usize),
    (b, b_stride): (*const i8, usize),
    out: *mut i8,
    quads: usize,
) {
    if quads == 0 {
        return;
    }
    // Rescaling of Add and Sub: the left shift of both inputs, then each one's multiplier.
    macro_rules! rescaled {
        ($combine:literal) => {
            binary_i8_loop!(
                inputs: [
                    "vdup.32 q2, d9[0]",
                    "vshl.s32 q0, q0, q2",
                    "vshl.s32 q1, q1, q2",
                    "vdup.32 q2, d10[0]",
                    "vshl.s32 q0, q0, q2",
                    "vqrdmulh.s32 q0, q0, d13[0]",
                    "vdup.32 q2, d10[1]",
                    "vand q3, q0, q2",
                    "vshr.s32 q3, q3, #31",
                    "vqadd.s32 q0, q0, q3",
                    "vrshl.s32 q0, q0, q2",
                    "vdup.32 q2, d11[0]",
                    "vshl.s32 q1, q1, q2",
                    "vqrdmulh.s32 q1, q1, d13[1]",
                    "vdup.32 q2, d11[1]",
                    "vand q3, q1, q2",
                    "vshr.s32 q3, q3, #31",
                    "vqadd.s32 q1, q1, q3",
                    "vrshl.s32 q1, q1, q2"
                ],
                combine: $combine,
                consts = inout(reg) consts.0.as_ptr() => _,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                a_stride = in(reg) a_stride,
                b_stride = in(reg) b_stride,
                out = inout(reg) out => _,
                n = inout(reg) quads => _,
            )
        };
    }
    // SAFETY: NEON is present and the pointers cover what the loop reads and writes
    // (caller); the constants are the 64 bytes of `consts`.
    unsafe {
        match kind {
            BinaryKind::Add => rescaled!("vadd.i32 q0, q0, q1"),
            BinaryKind::Sub => rescaled!("vsub.i32 q0, q0, q1"),
            BinaryKind::Mul => binary_i8_loop!(
                inputs: [],
                combine: "vmul.i32 q0, q0, q1",
                consts = inout(reg) consts.0.as_ptr() => _,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                a_stride = in(reg) a_stride,
                b_stride = in(reg) b_stride,
                out = inout(reg) out => _,
                n = inout(reg) quads => _,
            ),
        }
    }
}

/// `out[i] = exp((x[i] - max) * beta)` for the first `4 * quads` elements: Cephes' `expf`,
/// the algorithm of the AVX2 and aarch64 paths, with Armv7's unfused multiply-adds. The
/// argument is clamped to `[ln(2^-126), 88.38]`, `n = round(t log2 e)` by the `1.5 * 2^23`
/// trick (round to nearest even, as `vrndn` is on aarch64), the remainder `r = t - n ln 2`
/// (with ln 2 split so `n * LN2_HI` is exact) goes through the degree-5 polynomial, and
/// `2^n` is built in the exponent bits. A NaN stays NaN. Below the clamp the result is 0
/// without a mask: the clamped argument gives `n = -126` and a remainder just below zero, so
/// `2^-126 e^r` is subnormal, which Armv7's Advanced SIMD flushes to zero (a core that kept
/// it would give 1.2e-38, still inside the ops' tolerance).
///
/// # Safety
/// The CPU must have NEON; `x` and `out` must hold `4 * quads` floats.
pub(crate) unsafe fn exp_shifted_quads(
    x: *const f32,
    out: *mut f32,
    quads: usize,
    max: f32,
    beta: f32,
) {
    if quads == 0 {
        return;
    }
    let consts: [f32; 16] = [
        core::f32::consts::LOG2_E, // d8[0]
        12_582_912.0,              // d8[1]: 1.5 * 2^23
        0.693_359_4,               // d9[0]: LN2_HI = 355/512
        -2.121_944_4e-4,           // d9[1]: LN2_LO
        -87.336_55,                // d10[0]: MIN_X
        88.376_26,                 // d10[1]: MAX_X
        1.987_569_1e-4,            // d11: the polynomial, highest degree first
        1.398_199_9e-3,
        8.333_452e-3, // d12
        4.166_579_6e-2,
        1.666_666_5e-1, // d13
        0.5,
        1.0,  // d14[0]
        max,  // d14[1]
        beta, // d15[0]
        0.0,
    ];
    // SAFETY: NEON is present and `x`/`out` hold `4 * quads` floats (caller); the constants
    // are the 64 bytes of `consts`.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8, d9, d10, d11}}, [{consts}]!",
            "vld1.32 {{d12, d13, d14, d15}}, [{consts}]",
            "2:",
            "vld1.32 {{d0, d1}}, [{x}]!",
            "vdup.32 q1, d14[1]",
            "vsub.f32 q0, q0, q1",
            "vmul.f32 q0, q0, d15[0]",
            "vdup.32 q1, d10[0]",
            "vmax.f32 q0, q0, q1",
            "vdup.32 q1, d10[1]",
            "vmin.f32 q0, q0, q1",
            "vmul.f32 q1, q0, d8[0]",
            "vdup.32 q2, d8[1]",
            "vadd.f32 q1, q1, q2",
            "vsub.f32 q1, q1, q2",
            "vmls.f32 q0, q1, d9[0]",
            "vmls.f32 q0, q1, d9[1]",
            "vcvt.s32.f32 q2, q1",
            "vmov.i32 q1, #127",
            "vadd.i32 q2, q2, q1",
            "vshl.i32 q2, q2, #23",
            "vdup.32 q1, d11[0]",
            "vdup.32 q3, d11[1]",
            "vmla.f32 q3, q1, q0",
            "vdup.32 q1, d12[0]",
            "vmla.f32 q1, q3, q0",
            "vdup.32 q3, d12[1]",
            "vmla.f32 q3, q1, q0",
            "vdup.32 q1, d13[0]",
            "vmla.f32 q1, q3, q0",
            "vdup.32 q3, d13[1]",
            "vmla.f32 q3, q1, q0",
            // (r + 1) + y r^2, then times 2^n.
            "vdup.32 q1, d14[0]",
            "vadd.f32 q1, q1, q0",
            "vmul.f32 q0, q0, q0",
            "vmla.f32 q1, q3, q0",
            "vmul.f32 q1, q1, q2",
            "vst1.32 {{d2, d3}}, [{out}]!",
            "subs {n}, {n}, #1",
            "bne 2b",
            consts = inout(reg) consts.as_ptr() => _,
            x = inout(reg) x => _,
            out = inout(reg) out => _,
            n = inout(reg) quads => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::isa::Isa;

    fn neon() -> bool {
        Isa::Neon32.available()
    }

    proptest! {
        /// The four-row kernels against plain sums, over lengths from empty to several
        /// chunks with a ragged end (which they must leave to the caller).
        #[test]
        fn rows4_kernels_match_plain_sums(
            x in proptest::collection::vec(any::<i8>(), 0..70),
            w in proptest::collection::vec(any::<i8>(), 4 * 70),
            zp in -128i32..=127,
        ) {
            if !neon() {
                return Ok(());
            }
            let n = x.len();
            let rows: [&[i8]; 4] = core::array::from_fn(|r| &w[r * 70..r * 70 + n]);
            let whole = n / 8 * 8;
            let want: [i32; 4] = rows.map(|row| {
                x[..whole].iter().zip(row).fold(0i32, |a, (&x, &w)| {
                    a.wrapping_add((i32::from(x) - zp) * i32::from(w))
                })
            });
            // SAFETY: NEON is available (assumed above).
            prop_assert_eq!(unsafe { dot_i8_rows4(&x, zp, rows) }, want);
            let centered: Vec<i16> = x.iter().map(|&x| i16::from(x) - zp as i16).collect();
            // SAFETY: as above.
            prop_assert_eq!(unsafe { dot_i16_rows4(&centered, rows) }, want);
            let wide: Vec<i16> = x.iter().map(|&v| i16::from(v) * 255).collect();
            let want_wide: [i64; 4] = rows.map(|row| {
                wide[..whole].iter().zip(row).map(|(&x, &w)| i64::from(x) * i64::from(w)).sum()
            });
            // SAFETY: as above.
            prop_assert_eq!(unsafe { dot_i16_wide_rows4(&wide, rows) }, want_wide);
            let xf: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
            let wf: Vec<f32> = w.iter().map(|&v| f32::from(v)).collect();
            let rows_f: [&[f32]; 4] = core::array::from_fn(|r| &wf[r * 70..r * 70 + n]);
            let whole = n / 4 * 4;
            // Small integers: every float sum is exact, whatever the order.
            let want_f: [f32; 4] = rows_f.map(|row| {
                xf[..whole].iter().zip(row).map(|(a, b)| a * b).sum()
            });
            // SAFETY: as above.
            prop_assert_eq!(unsafe { dot_f32_rows4(&xf, rows_f) }, want_f);
        }

        /// The window kernels (depthwise taps, pooling maxima) against plain per-lane sums and
        /// maxima over several taps.
        #[test]
        fn tap_kernels_match_plain_sums(
            taps in proptest::collection::vec((any::<[i8; 8]>(), any::<[i8; 8]>()), 1..12),
            zp in -128i32..=127,
        ) {
            if !neon() {
                return Ok(());
            }
            let zero_points = u64::from_le_bytes([zp as u8; 8]);
            let (mut acc, mut acc_f) = (Lanes8::default(), Lanes8::default());
            let (mut want, mut want_f) = ([0i32; 8], [0f32; 8]);
            for (x, w) in &taps {
                // SAFETY: NEON is available (assumed above).
                unsafe {
                    mla_i8x8(&mut acc, x, w, zero_points);
                    mla_f32x8(&mut acc_f, &x.map(f32::from), &w.map(f32::from));
                }
                for l in 0..8 {
                    want[l] = want[l].wrapping_add((i32::from(x[l]) - zp) * i32::from(w[l]));
                    want_f[l] += f32::from(x[l]) * f32::from(w[l]);
                }
            }
            prop_assert_eq!(acc.i32s(), want);
            prop_assert_eq!(acc_f.f32s(), want_f);
            let mut acc16 = Lanes8::default();
            let mut want16 = [0i32; 8];
            for (x, w) in &taps {
                let wide = x.map(|v| i16::from(v) * 255);
                // SAFETY: as above.
                unsafe { mla_i16x8(&mut acc16, &wide, w) };
                for l in 0..8 {
                    want16[l] += i32::from(wide[l]) * i32::from(w[l]);
                }
            }
            prop_assert_eq!(acc16.i32s(), want16);
            let mut max = [u64::from_le_bytes([0x80; 8]); 2];
            let mut want_max = [i8::MIN; 16];
            for pair in taps.chunks_exact(2) {
                let x: [i8; 16] = core::array::from_fn(|l| pair[l / 8].0[l % 8]);
                // SAFETY: as above.
                unsafe { max_i8x16(&mut max, &x) };
                for l in 0..16 {
                    want_max[l] = want_max[l].max(x[l]);
                }
            }
            let got: [i8; 16] = core::array::from_fn(|l| (max[l / 8] >> (8 * (l % 8))) as u8 as i8);
            prop_assert_eq!(got, want_max);
        }
    }
}
