//! AVX-512 int8 Add and Sub, sixteen elements per step, for rows where both operands
//! advance (same-shape inputs, a residual connection's Add); repeated operands and Mul go to
//! the AVX2 kernel. The arithmetic is the AVX2 kernel's step for step (see [`super::x86`]):
//! each input offset, shifted and scaled by its multiplier, the two summed (or subtracted),
//! the sum scaled by the output multiplier, clamped and offset by the output zero point.
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

/// Byte offsets in [`Constants`] of a multiplier's fields.
const LEFT: usize = 0;
const RIGHT: usize = 4;
const MASK: usize = 8;
const HALF: usize = 12;
const MANTISSA: usize = 16;

/// The layer's constants as the assembly reads them, each broadcast from here by the
/// instruction that uses it: three multipliers of 32 bytes (left and right exponents,
/// `RoundingDivideByPOT`'s mask and half-mask, the mantissa as a 64-bit value for
/// `vpmuldq`), then the zero points, the headroom shift, the clamp, and small constants.
#[repr(C, align(64))]
struct Constants([i32; 36]);

impl Constants {
    const INPUT1: usize = 0;
    const INPUT2: usize = 32;
    const OUTPUT: usize = 64;
    const ZP1: usize = 96;
    const ZP2: usize = 100;
    const LEFT_SHIFT: usize = 104;
    /// The clamp bounds less the output zero point, then that zero point (see
    /// `crate::ops::requantize::x86::OutputRange`).
    const LO: usize = 108;
    const HI: usize = 112;
    const OUTPUT_ZP: usize = 116;
    const ONE: usize = 120;
    /// -1 for Sub (`s1 + (s2 ^ -1) - (-1) = s1 - s2`), 0 for Add.
    const NEGATE: usize = 124;
    /// 2^30 as a 64-bit value: the doubling high multiply's nudge.
    const NUDGE: usize = 128;

    fn new(p: &BinaryI8Params) -> Constants {
        let mut c = Constants([0; 36]);
        let mut put = |at: usize, v: i32| c.0[at / 4] = v;
        for (at, m) in [
            (Self::INPUT1, p.input1_multiplier),
            (Self::INPUT2, p.input2_multiplier),
            (Self::OUTPUT, p.output_multiplier),
        ] {
            let (left, right) = m.exponents();
            let mask = ((1i64 << right) - 1) as i32;
            put(at + LEFT, left as i32);
            put(at + RIGHT, right as i32);
            put(at + MASK, mask);
            put(at + HALF, mask >> 1);
            // Little-endian 64-bit: the mantissa, then its sign extension (non-negative).
            put(at + MANTISSA, m.multiplier());
        }
        let ozp = p.output_zero_point;
        put(Self::ZP1, p.input1_zero_point);
        put(Self::ZP2, p.input2_zero_point);
        put(Self::LEFT_SHIFT, p.left_shift as i32);
        put(Self::LO, i32::from(p.activation_min) - ozp);
        put(Self::HI, i32::from(p.activation_max) - ozp);
        put(Self::OUTPUT_ZP, ozp);
        put(Self::ONE, 1);
        put(Self::NEGATE, if p.op == BinaryOp::Sub { -1 } else { 0 });
        put(Self::NUDGE, 1 << 30);
        c
    }
}

/// `QuantizedMultiplier::apply` of the multiplier at byte offset `$m` of the constants
/// (r8) on the sixteen lanes of `$x`, into `$x`; `$o`, `$t` and k5 are clobbered, k4
/// selects the odd lanes.
macro_rules! apply {
    ($x:literal, $o:literal, $t:literal, $m:literal) => {
        concat!(
            "vpsllvd ",
            $x,
            ", ",
            $x,
            ", dword ptr [r8 + ",
            $m,
            "]{{1to16}}\n",
            // SaturatingRoundingDoublingHighMul: bits 31..62 of `a * b + 2^30`, from the
            // even lanes' products shifted down and the odd lanes' shifted up by one.
            "vpsrlq ",
            $o,
            ", ",
            $x,
            ", 32\n",
            "vpmuldq ",
            $x,
            ", ",
            $x,
            ", qword ptr [r8 + ",
            $m,
            " + 16]{{1to8}}\n",
            "vpaddq ",
            $x,
            ", ",
            $x,
            ", qword ptr [r8 + 128]{{1to8}}\n",
            "vpsrlq ",
            $x,
            ", ",
            $x,
            ", 31\n",
            "vpmuldq ",
            $o,
            ", ",
            $o,
            ", qword ptr [r8 + ",
            $m,
            " + 16]{{1to8}}\n",
            "vpaddq ",
            $o,
            ", ",
            $o,
            ", qword ptr [r8 + 128]{{1to8}}\n",
            "vpsllq ",
            $o,
            ", ",
            $o,
            ", 1\n",
            "vpblendmd ",
            $x,
            " {{k4}}, ",
            $x,
            ", ",
            $o,
            "\n",
            // RoundingDivideByPOT: shift right, plus one where the remainder exceeds half
            // of `2^e` (half plus one for a negative value).
            "vpandd ",
            $o,
            ", ",
            $x,
            ", dword ptr [r8 + ",
            $m,
            " + 8]{{1to16}}\n",
            "vpsrld ",
            $t,
            ", ",
            $x,
            ", 31\n",
            "vpaddd ",
            $t,
            ", ",
            $t,
            ", dword ptr [r8 + ",
            $m,
            " + 12]{{1to16}}\n",
            "vpcmpgtd k5, ",
            $o,
            ", ",
            $t,
            "\n",
            "vpsravd ",
            $x,
            ", ",
            $x,
            ", dword ptr [r8 + ",
            $m,
            " + 4]{{1to16}}\n",
            "vpaddd ",
            $x,
            " {{k5}}, ",
            $x,
            ", dword ptr [r8 + 120]{{1to16}}\n",
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
    // reads the constants; vector registers and k1, k4, k5 are clobbered through
    // `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            concat!(
                // rcx: elements left; rsi, rdx: the operands; rdi: the output; r8: the
                // constants; r9: elements this step; k4: the odd lanes.
                "mov eax, 0xAAAA\n",
                "kmovw k4, eax\n",
                "test rcx, rcx\n",
                "jz 3f\n",
                "2:\n",
                "mov r9, 16\n",
                "cmp rcx, 16\n",
                "cmovb r9, rcx\n",
                "mov rax, -1\n",
                "bzhi rax, rax, r9\n",
                "kmovw k1, eax\n",
                // Each input offset, shifted by the headroom, and scaled.
                "vpmovsxbd zmm0 {{k1}}{{z}}, xmmword ptr [rsi]\n",
                "vpmovsxbd zmm1 {{k1}}{{z}}, xmmword ptr [rdx]\n",
                "vpsubd zmm0, zmm0, dword ptr [r8 + 96]{{1to16}}\n",
                "vpsubd zmm1, zmm1, dword ptr [r8 + 100]{{1to16}}\n",
                "vpsllvd zmm0, zmm0, dword ptr [r8 + 104]{{1to16}}\n",
                "vpsllvd zmm1, zmm1, dword ptr [r8 + 104]{{1to16}}\n",
                apply!("zmm0", "zmm2", "zmm3", "0"),
                apply!("zmm1", "zmm4", "zmm5", "32"),
                // The sum, or the difference (the second term negated by the mask).
                "vpxord zmm1, zmm1, dword ptr [r8 + 124]{{1to16}}\n",
                "vpsubd zmm1, zmm1, dword ptr [r8 + 124]{{1to16}}\n",
                "vpaddd zmm0, zmm0, zmm1\n",
                apply!("zmm0", "zmm2", "zmm3", "64"),
                // The clamp, the zero point, and the step's bytes out.
                "vpmaxsd zmm0, zmm0, dword ptr [r8 + 108]{{1to16}}\n",
                "vpminsd zmm0, zmm0, dword ptr [r8 + 112]{{1to16}}\n",
                "vpaddd zmm0, zmm0, dword ptr [r8 + 116]{{1to16}}\n",
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
            out("r9") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
