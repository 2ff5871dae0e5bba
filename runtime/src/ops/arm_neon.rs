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

/// `acc[l] += (x[l] - zp) * w[l]` for eight channels. `zero_points` holds the input zero
/// point in each of its eight bytes.
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn mla_i8x8(acc: &mut Lanes8, x: &[i8; 8], w: &[i8; 8], zero_points: u64) {
    let [a0, a1, a2, a3] = &mut acc.0;
    // SAFETY: NEON is present (caller); the block reads eight bytes from each array.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.8 {{d0}}, [{x}]",
            "vld1.8 {{d1}}, [{w}]",
            "vsubl.s8 q1, d0, d8",
            "vmovl.s8 q0, d1",
            "vmlal.s16 q2, d2, d0",
            "vmlal.s16 q3, d3, d1",
            x = in(reg) x.as_ptr(),
            w = in(reg) w.as_ptr(),
            inout("d4") *a0,
            inout("d5") *a1,
            inout("d6") *a2,
            inout("d7") *a3,
            in("d8") zero_points,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            options(nostack, readonly, preserves_flags),
        );
    }
}

/// `acc[l] += x[l] * w[l]` in f32 for eight channels.
///
/// # Safety
/// The CPU must have NEON.
#[inline(always)]
pub(crate) unsafe fn mla_f32x8(acc: &mut Lanes8, x: &[f32; 8], w: &[f32; 8]) {
    let [a0, a1, a2, a3] = &mut acc.0;
    // SAFETY: NEON is present (caller); the block reads eight floats from each array.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d0, d1, d2, d3}}, [{x}]",
            "vld1.32 {{d8, d9, d10, d11}}, [{w}]",
            "vmla.f32 q2, q0, q4",
            "vmla.f32 q3, q1, q5",
            x = in(reg) x.as_ptr(),
            w = in(reg) w.as_ptr(),
            inout("d4") *a0,
            inout("d5") *a1,
            inout("d6") *a2,
            inout("d7") *a3,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _,
            options(nostack, readonly, preserves_flags),
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

        /// The depthwise tap kernels against plain per-lane sums over several taps.
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
        }
    }
}
