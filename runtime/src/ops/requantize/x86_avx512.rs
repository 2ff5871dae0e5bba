//! AVX-512 requantization of sixteen channels at a time, for the single-row kernels (a batch
//! of one), where the AVX2 form's per-block preparation of eight channels' constants is not
//! shared by other rows and took as long as applying them.
//!
//! The arithmetic is the AVX2 form's step for step (see [`super::x86`]): `vpmuldq` on the
//! even and odd lanes for `SaturatingRoundingDoublingHighMul`, the masked remainder test for
//! `RoundingDivideByPOT`, and the clamp against bounds shifted by the zero point. What
//! AVX-512 adds: sixteen lanes, the `[mantissa, shift]` pairs split by one `vpermi2d` each,
//! compare results in mask registers, masked loads and stores for the last partial block,
//! and `vpmovsdb`, which narrows sixteen lanes to bytes in one instruction.
//!
//! Inline assembly, like [`crate::ops::x86_vnni`], because the AVX-512 intrinsics are stable
//! only from Rust 1.89 while the crate supports 1.85.

use core::arch::asm;

use crate::fixed_point::QuantizedMultiplier;
use crate::ops::RequantizeParams;

/// `vpermi2d` indices that pick the even dwords of two vectors (the mantissas of sixteen
/// `[mantissa, shift]` pairs), then those of the odd dwords (the shifts).
static SPLIT_PAIRS: [u32; 32] = [
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, //
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
];

/// [`RequantizeParams::output`] with `bias[first + i]` added, over a row of channels
/// `first..first + acc.len()`, into `out[..acc.len()]`: what
/// [`super::x86::requantize_row`] computes, sixteen channels per step.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) (AVX-512 F and BW, and BMI2) must be
/// available.
///
/// # Panics
/// If `out` is shorter than `acc`, or per-channel multipliers or a bias do not cover the
/// channels; the kernels that call it pass a validated layer's, which do.
pub(crate) unsafe fn requantize_row(
    params: &RequantizeParams<'_>,
    acc: &[i32],
    bias: Option<&[i32]>,
    first: usize,
    out: &mut [i8],
) {
    let n = acc.len();
    let out = &mut out[..n];
    // Without a bias, or with one multiplier for every channel, the pointer stays on a
    // block of zeros or of copies of that multiplier (a step of 0 bytes per block).
    let zeros = [0i32; 16];
    let (bias, bias_step) = match bias {
        Some(b) => (b[first..first + n].as_ptr(), 64usize),
        None => (zeros.as_ptr(), 0),
    };
    let repeated: [QuantizedMultiplier; 16];
    let (pairs, pairs_step) = if params.multipliers.len() == 1 {
        repeated = [params.multipliers[0]; 16];
        (repeated.as_ptr(), 0usize)
    } else {
        (params.multipliers[first..first + n].as_ptr(), 128)
    };
    let zero_point = params.output_zero_point;
    // `clamp(x.saturating_add(zp), lo, hi)` is `clamp(x, lo - zp, hi - zp) + zp` (see
    // `super::x86::OutputRange`).
    let bounds = [
        i32::from(params.activation_min) - zero_point,
        i32::from(params.activation_max) - zero_point,
        zero_point,
    ];
    // SAFETY: the caller guarantees AVX-512 F/BW and BMI2. Each step reads `m = min(left,
    // 16)` accumulators, bias values and multiplier pairs through masks that cover exactly
    // those (masked-out elements are neither read nor faulted on), inside the slices taken
    // above (or the 16-entry blocks of zeros and copies, read from the same place each
    // step), and writes `m` bytes of `out` through the same mask. Vector registers and
    // k1-k5 are clobbered through `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            // rcx: channels left; rsi: accumulators; rdx: bias; r8: multiplier pairs;
            // rdi: output; r9, r10: the bias and pair pointers' steps; r11: the clamp
            // bounds and zero point; r12: the pair-splitting indices; r13: channels this
            // step; r14: their pairs' dwords.
            // zmm20: 2^30 per 64-bit lane (the nudge); zmm21, zmm22: the shifted clamp
            // bounds; zmm23: the zero point; zmm24, zmm25: the pair-splitting indices;
            // zmm26: ones; zmm27: zeros; k4: the odd lanes.
            "mov eax, 0x40000000",
            "vpbroadcastq zmm20, rax",
            "vpbroadcastd zmm21, dword ptr [r11]",
            "vpbroadcastd zmm22, dword ptr [r11 + 4]",
            "vpbroadcastd zmm23, dword ptr [r11 + 8]",
            "vmovdqu32 zmm24, zmmword ptr [r12]",
            "vmovdqu32 zmm25, zmmword ptr [r12 + 64]",
            "mov eax, 1",
            "vpbroadcastd zmm26, eax",
            "vpxord zmm27, zmm27, zmm27",
            "mov eax, 0xAAAA",
            "kmovw k4, eax",
            "test rcx, rcx",
            "jz 3f",
            "2:",
            // m = min(n, 16) channels this step: k1 selects them, k2 and k3 their pairs'
            // 2m dwords in the two 64-byte halves.
            "mov r13, 16",
            "cmp rcx, 16",
            "cmovb r13, rcx",
            "mov rax, -1",
            "bzhi rax, rax, r13",
            "kmovw k1, eax",
            "lea r14, [r13 + r13]",
            "mov rax, -1",
            "bzhi rax, rax, r14",
            "kmovd k2, eax",
            "kshiftrd k3, k2, 16",
            // zmm0: the accumulators plus bias.
            "vmovdqu32 zmm0 {{k1}}{{z}}, zmmword ptr [rsi]",
            "vmovdqu32 zmm1 {{k1}}{{z}}, zmmword ptr [rdx]",
            "vpaddd zmm0, zmm0, zmm1",
            // zmm4: mantissas, zmm5: shifts; zmm6: left exponents, zmm7: right ones.
            "vmovdqu32 zmm2 {{k2}}{{z}}, zmmword ptr [r8]",
            "vmovdqu32 zmm3 {{k3}}{{z}}, zmmword ptr [r8 + 64]",
            "vmovdqa32 zmm4, zmm24",
            "vpermi2d zmm4, zmm2, zmm3",
            "vmovdqa32 zmm5, zmm25",
            "vpermi2d zmm5, zmm2, zmm3",
            "vpmaxsd zmm6, zmm5, zmm27",
            "vpsubd zmm7, zmm27, zmm5",
            "vpmaxsd zmm7, zmm7, zmm27",
            "vpsllvd zmm0, zmm0, zmm6",
            // SaturatingRoundingDoublingHighMul: bits 31..62 of `a * b + 2^30`, from the
            // even lanes' products shifted down and the odd lanes' shifted up by one.
            "vpmuldq zmm8, zmm0, zmm4",
            "vpaddq zmm8, zmm8, zmm20",
            "vpsrlq zmm8, zmm8, 31",
            "vpsrlq zmm9, zmm0, 32",
            "vpsrlq zmm10, zmm4, 32",
            "vpmuldq zmm9, zmm9, zmm10",
            "vpaddq zmm9, zmm9, zmm20",
            "vpsllq zmm9, zmm9, 1",
            "vpblendmd zmm8 {{k4}}, zmm8, zmm9",
            // RoundingDivideByPOT: shift right, plus one where the remainder exceeds half
            // of `2^e` (half plus one for a negative value).
            "vpsllvd zmm10, zmm26, zmm7",
            "vpsubd zmm10, zmm10, zmm26",
            "vpsrld zmm11, zmm10, 1",
            "vpandd zmm12, zmm8, zmm10",
            "vpsrld zmm13, zmm8, 31",
            "vpaddd zmm13, zmm13, zmm11",
            "vpcmpgtd k5, zmm12, zmm13",
            "vpsravd zmm8, zmm8, zmm7",
            "vpaddd zmm8 {{k5}}, zmm8, zmm26",
            // The clamp, the zero point, and sixteen bytes out (in range, so the
            // saturating narrowing changes nothing).
            "vpmaxsd zmm8, zmm8, zmm21",
            "vpminsd zmm8, zmm8, zmm22",
            "vpaddd zmm8, zmm8, zmm23",
            "vpmovsdb xmmword ptr [rdi] {{k1}}, zmm8",
            "add rsi, 64",
            "add rdx, r9",
            "add r8, r10",
            "add rdi, 16",
            "sub rcx, r13",
            "jnz 2b",
            "3:",
            "vzeroupper",
            inout("rcx") n => _,
            inout("rsi") acc.as_ptr() => _,
            inout("rdx") bias => _,
            inout("r8") pairs => _,
            inout("rdi") out.as_mut_ptr() => _,
            in("r9") bias_step,
            in("r10") pairs_step,
            in("r11") bounds.as_ptr(),
            in("r12") SPLIT_PAIRS.as_ptr(),
            out("r13") _,
            out("r14") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
