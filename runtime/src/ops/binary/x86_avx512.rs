//! AVX-512 int8 Add and Sub, sixteen elements per step, for rows where both operands
//! advance (same-shape inputs, a residual connection's Add); repeated operands and Mul go to
//! the AVX2 kernel. The arithmetic is the AVX2 kernel's (see [`super::x86`]): each input
//! offset, shifted and scaled by its multiplier, the two summed (or subtracted), the sum
//! scaled by the output multiplier, clamped and offset by the output zero point; each
//! multiplier is applied in the one-rounding form of
//! [`crate::ops::requantize::x86_avx512`] (the same results in fewer instructions), an
//! input's left exponent folded into its headroom shift.
//! What AVX-512 adds: sixteen lanes, the byte loads sign-extended in one `vpmovsxbd`, each
//! per-layer constant read from memory and broadcast by the instruction that uses it
//! (`{1to16}`), compare results in mask registers, masked loads and stores for the last
//! partial step, and `vpmovsdb`, which narrows to bytes in one instruction.
//!
//! Inline assembly, like [`crate::ops::x86_vnni`], because the AVX-512 intrinsics are stable
//! only from Rust 1.89 while the crate supports 1.85.

use core::arch::asm;

use super::{BinaryI8, BinaryI8Params, BinaryOp, Source};
use crate::isa::Isa;
use crate::ops::requantize::x86_avx512::INTERLEAVE;

/// The AVX-512 kernel for Add and Sub rows whose operands both advance; the AVX2 kernel for
/// the rest (and where AVX-512 is missing).
pub(super) fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) {
    let rows = op.shape.rows();
    if !Isa::Avx512Vnni.available()
        || op.params.op == BinaryOp::Mul
        || !(rows.a_advances && rows.b_advances)
    {
        return super::x86::binary_i8(op, output);
    }
    let constants = Constants::new(&op.params);
    let len = rows.len;
    for (a_offset, b_offset, o) in rows.iter() {
        // Each operand's row: its own run, or the output row itself (in place). Checked
        // here; the assembly reads and writes through the pointers.
        let out = output[o..o + len].as_mut_ptr();
        let row = |src: Source<'_, i8>, offset: usize| -> *const i8 {
            match src {
                Source::Slice(s) => s[offset..offset + len].as_ptr(),
                Source::Output => out.cast_const(),
            }
        };
        let (a, b) = (row(op.a, a_offset), row(op.b, b_offset));
        // SAFETY: AVX-512 F/BW and BMI2 are available (checked above); `a`, `b` and `out`
        // each cover `len` bytes (checked just above). An operand read in place is the
        // output row itself, and each step loads its sixteen bytes before storing them.
        unsafe { add_sub_row(&constants, a, b, out, len) };
    }
}

/// Byte offsets in a multiplier's block of [`Constants`]: its left exponent, then as 64-bit
/// values (`{1to8}` broadcasts) the mantissa and the one-rounding form's rounding term,
/// negative bound and shift (see [`crate::ops::requantize::x86_avx512`]).
const LEFT: usize = 0;
const MANTISSA: usize = 8;
const ROUNDING: usize = 16;
const NEGATIVE: usize = 24;
const SHIFT: usize = 32;

/// The layer's constants as the assembly reads them, each broadcast from here by the
/// instruction that uses it: three multipliers of 64 bytes, then the zero points, each
/// input's shift (the headroom plus its multiplier's left exponent), the clamp, the
/// negation mask and 2^31.
#[repr(C, align(64))]
struct Constants([i32; 58]);

impl Constants {
    const INPUT1: usize = 0;
    const INPUT2: usize = 64;
    const OUTPUT: usize = 128;
    const ZP1: usize = 192;
    const ZP2: usize = 196;
    const SHIFT1: usize = 200;
    const SHIFT2: usize = 204;
    /// The clamp bounds less the output zero point, then that zero point (see
    /// `crate::ops::requantize::x86::OutputRange`).
    const LO: usize = 208;
    const HI: usize = 212;
    const OUTPUT_ZP: usize = 216;
    /// -1 for Sub (`s1 + (s2 ^ -1) - (-1) = s1 - s2`), 0 for Add.
    const NEGATE: usize = 220;
    /// 2^31 as a 64-bit value: the one-rounding form's negative correction.
    const TWO_31: usize = 224;

    fn new(p: &BinaryI8Params) -> Constants {
        let mut c = Constants([0; 58]);
        let mut put = |at: usize, v: i32| c.0[at / 4] = v;
        let put64 = |at: usize, v: i64, put: &mut dyn FnMut(usize, i32)| {
            put(at, v as i32);
            put(at + 4, (v >> 32) as i32);
        };
        for (at, m) in [
            (Self::INPUT1, p.input1_multiplier),
            (Self::INPUT2, p.input2_multiplier),
            (Self::OUTPUT, p.output_multiplier),
        ] {
            let (left, right) = m.exponents();
            put(at + LEFT, left as i32);
            put64(at + MANTISSA, i64::from(m.multiplier()), &mut put);
            let (rounding, negative) = if right > 0 {
                ((1i64 << 30) + (1i64 << (30 + right)), 1i64 << (30 + right))
            } else {
                (1 << 30, i64::MIN)
            };
            put64(at + ROUNDING, rounding, &mut put);
            put64(at + NEGATIVE, negative, &mut put);
            put64(at + SHIFT, 31 + i64::from(right), &mut put);
        }
        let ozp = p.output_zero_point;
        put(Self::ZP1, p.input1_zero_point);
        put(Self::ZP2, p.input2_zero_point);
        put(
            Self::SHIFT1,
            p.left_shift as i32 + p.input1_multiplier.exponents().0 as i32,
        );
        put(
            Self::SHIFT2,
            p.left_shift as i32 + p.input2_multiplier.exponents().0 as i32,
        );
        put(Self::LO, i32::from(p.activation_min) - ozp);
        put(Self::HI, i32::from(p.activation_max) - ozp);
        put(Self::OUTPUT_ZP, ozp);
        put(Self::NEGATE, if p.op == BinaryOp::Sub { -1 } else { 0 });
        put64(Self::TWO_31, 1i64 << 31, &mut put);
        c
    }
}

/// `QuantizedMultiplier::apply` of the multiplier at byte offset `$m` of the constants
/// (r8) on the sixteen lanes of `$x` (already shifted left by its exponent), into `$x`, in
/// the one-rounding form of [`crate::ops::requantize::x86_avx512`]: the exact 64-bit
/// products of the even and the odd lanes, the rounding term added, the negative
/// correction, one arithmetic shift, the lanes interleaved back (zmm31). `$o`, k5 and k6
/// are clobbered.
macro_rules! apply {
    ($x:literal, $o:literal, $m:literal) => {
        concat!(
            "vpsrlq ", $o, ", ", $x, ", 32\n",
            "vpmuldq ", $x, ", ", $x, ", qword ptr [r8 + ", $m, " + 8]{{1to8}}\n",
            "vpmuldq ", $o, ", ", $o, ", qword ptr [r8 + ", $m, " + 8]{{1to8}}\n",
            "vpaddq ", $x, ", ", $x, ", qword ptr [r8 + ", $m, " + 16]{{1to8}}\n",
            "vpaddq ", $o, ", ", $o, ", qword ptr [r8 + ", $m, " + 16]{{1to8}}\n",
            "vpcmpq k5, ", $x, ", qword ptr [r8 + ", $m, " + 24]{{1to8}}, 1\n",
            "vpcmpq k6, ", $o, ", qword ptr [r8 + ", $m, " + 24]{{1to8}}, 1\n",
            "vpsubq ", $x, " {{k5}}, ", $x, ", qword ptr [r8 + 224]{{1to8}}\n",
            "vpsubq ", $o, " {{k6}}, ", $o, ", qword ptr [r8 + 224]{{1to8}}\n",
            "vpsravq ", $x, ", ", $x, ", qword ptr [r8 + ", $m, " + 32]{{1to8}}\n",
            "vpsravq ", $o, ", ", $o, ", qword ptr [r8 + ", $m, " + 32]{{1to8}}\n",
            "vpermt2d ", $x, ", zmm31, ", $o, "\n",
        )
    };
}

/// `out[i] = element(a[i], b[i])` for `i < n`, sixteen at a time.
///
/// # Safety
/// AVX-512 F/BW and BMI2 must be available; `a` and `b` readable and `out` writable for `n`
/// bytes (an operand may be `out` itself).
unsafe fn add_sub_row(c: &Constants, a: *const i8, b: *const i8, out: *mut i8, n: usize) {
    // SAFETY: the caller's contract. Each step reads and writes `m = min(left, 16)` bytes of
    // each row through the mask k1 (masked-out bytes are neither read nor faulted on) and
    // reads the constants; vector registers and k1, k5, k6 are clobbered through
    // `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            concat!(
                // rcx: elements left; rsi, rdx: the operands; rdi: the output; r8: the
                // constants; r9: elements this step; zmm31: `INTERLEAVE`.
                "vmovdqu32 zmm31, zmmword ptr [r10]\n",
                "test rcx, rcx\n",
                "jz 3f\n",
                "2:\n",
                "mov r9, 16\n",
                "cmp rcx, 16\n",
                "cmovb r9, rcx\n",
                "mov rax, -1\n",
                "bzhi rax, rax, r9\n",
                "kmovw k1, eax\n",
                // Each input offset, shifted by the headroom and its multiplier's left
                // exponent, and scaled.
                "vpmovsxbd zmm0 {{k1}}{{z}}, xmmword ptr [rsi]\n",
                "vpmovsxbd zmm1 {{k1}}{{z}}, xmmword ptr [rdx]\n",
                "vpsubd zmm0, zmm0, dword ptr [r8 + 192]{{1to16}}\n",
                "vpsubd zmm1, zmm1, dword ptr [r8 + 196]{{1to16}}\n",
                "vpsllvd zmm0, zmm0, dword ptr [r8 + 200]{{1to16}}\n",
                "vpsllvd zmm1, zmm1, dword ptr [r8 + 204]{{1to16}}\n",
                apply!("zmm0", "zmm2", "0"),
                apply!("zmm1", "zmm4", "64"),
                // The sum, or the difference (the second term negated by the mask).
                "vpxord zmm1, zmm1, dword ptr [r8 + 220]{{1to16}}\n",
                "vpsubd zmm1, zmm1, dword ptr [r8 + 220]{{1to16}}\n",
                "vpaddd zmm0, zmm0, zmm1\n",
                "vpsllvd zmm0, zmm0, dword ptr [r8 + 128]{{1to16}}\n",
                apply!("zmm0", "zmm2", "128"),
                // The clamp, the zero point, and the step's bytes out.
                "vpmaxsd zmm0, zmm0, dword ptr [r8 + 208]{{1to16}}\n",
                "vpminsd zmm0, zmm0, dword ptr [r8 + 212]{{1to16}}\n",
                "vpaddd zmm0, zmm0, dword ptr [r8 + 216]{{1to16}}\n",
                "vpmovsdb xmmword ptr [rdi] {{k1}}, zmm0\n",
                "add rsi, 16\n",
                "add rdx, 16\n",
                "add rdi, 16\n",
                "sub rcx, r9\n",
                "jnz 2b\n",
                "3:\n",
                "vzeroupper\n",
            ),
            inout("rcx") n => _,
            inout("rsi") a => _,
            inout("rdx") b => _,
            inout("rdi") out => _,
            in("r8") c.0.as_ptr(),
            in("r10") INTERLEAVE.as_ptr(),
            out("r9") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
