//! AVX-512 requantization of sixteen channels at a time, for the VNNI kernels: a row of
//! channels, or up to eight rows sharing them (a tile of pixels), each block of sixteen
//! channels' constants prepared once for all the rows.
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

/// Rows the assembly takes per call: a tile of [`crate::ops::x86_vnni`]'s GEMM.
const ROWS: usize = 8;

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
    let bias = bias.map(|b| &b[first..first + acc.len()]);
    // SAFETY: as this function's; one row written at the start of `out`.
    unsafe { requantize_rows(params, &[acc], bias, first, out, &[0]) }
}

/// Requantizes the channels `first..first + n` of several rows of `n` accumulators (`n` the
/// first row's length), with `bias[i]` added to channel `first + i`, into
/// `output[starts[r]..][..n]` for row `r`: what [`super::x86::requantize_rows`] computes,
/// sixteen channels per step, each step's constants prepared once for up to eight rows.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) (AVX-512 F and BW, and BMI2) must be
/// available.
///
/// # Panics
/// If a row is shorter than the first, a row's output runs past `output`, there are fewer
/// starts than rows, or per-channel multipliers or a bias do not cover the channels.
pub(crate) unsafe fn requantize_rows(
    params: &RequantizeParams<'_>,
    rows: &[&[i32]],
    bias: Option<&[i32]>,
    first: usize,
    output: &mut [i8],
    starts: &[usize],
) {
    let n = rows.first().map_or(0, |row| row.len());
    assert!(starts.len() >= rows.len(), "a start for every row");
    if n == 0 {
        return;
    }
    // Without a bias, or with one multiplier for every channel, the pointer stays on a
    // block of zeros or of copies of that multiplier (a step of 0 bytes per block).
    let zeros = [0i32; 16];
    let (bias, bias_step) = match bias {
        Some(b) => (b[..n].as_ptr(), 64usize),
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
    for (rows, starts) in rows.chunks(ROWS).zip(starts.chunks(ROWS)) {
        // Each row's accumulators and output, checked to hold `n` entries.
        let mut sums = [core::ptr::null::<i32>(); ROWS];
        let mut outs = [core::ptr::null_mut::<i8>(); ROWS];
        for ((row, &start), (sum, out)) in
            rows.iter().zip(starts).zip(sums.iter_mut().zip(&mut outs))
        {
            *sum = row[..n].as_ptr();
            *out = output[start..start + n].as_mut_ptr();
        }
        // SAFETY: the caller guarantees AVX-512 F/BW and BMI2. Each step reads `m = min(left,
        // 16)` accumulators of each row, bias values and multiplier pairs through masks
        // that cover exactly those (masked-out elements are neither read nor faulted on),
        // inside the slices checked above (or the 16-entry blocks of zeros and copies, read
        // from the same place each step), and writes `m` bytes of each row's output through
        // the same mask. Vector registers and k1-k5 are clobbered through
        // `clobber_abi("C")`; the stack is untouched.
        unsafe {
            requantize_block_rows(
                n,
                (&sums, &outs, rows.len()),
                (bias, bias_step),
                (pairs, pairs_step),
                &bounds,
            )
        };
    }
}

/// The assembly of [`requantize_rows`] for up to [`ROWS`] rows.
///
/// # Safety
/// As [`requantize_rows`]' comment at its call: `sums[..count]` and `outs[..count]` hold
/// `n` elements each, and `bias` and `pairs` cover `n` channels with their steps (or are
/// 16-entry blocks with a step of 0).
#[inline]
unsafe fn requantize_block_rows(
    n: usize,
    (sums, outs, count): (&[*const i32; ROWS], &[*mut i8; ROWS], usize),
    (bias, bias_step): (*const i32, usize),
    (pairs, pairs_step): (*const QuantizedMultiplier, usize),
    bounds: &[i32; 3],
) {
    // SAFETY: see the function's contract.
    unsafe {
        asm!(
            // rcx: channels left; r11: the rows' accumulators; rsi: their outputs; r15: row
            // count; rdx: bias; r8: multiplier pairs; r9, r10: the bias and pair pointers'
            // steps; r12: the step's first channel; r13: channels this step (first the
            // clamp bounds' address); r14: their pairs' dwords, then the row (first the
            // pair-splitting indices' address); rax: scratch.
            //
            // zmm20: 2^30 per 64-bit lane (the nudge); zmm21, zmm22: the shifted clamp
            // bounds; zmm23: the zero point; zmm24, zmm25: the pair-splitting indices;
            // zmm26: ones; zmm27: zeros; k4: the odd lanes.
            "mov eax, 0x40000000",
            "vpbroadcastq zmm20, rax",
            "vpbroadcastd zmm21, dword ptr [r13]",
            "vpbroadcastd zmm22, dword ptr [r13 + 4]",
            "vpbroadcastd zmm23, dword ptr [r13 + 8]",
            "vmovdqu32 zmm24, zmmword ptr [r14]",
            "vmovdqu32 zmm25, zmmword ptr [r14 + 64]",
            "mov eax, 1",
            "vpbroadcastd zmm26, eax",
            "vpxord zmm27, zmm27, zmm27",
            "mov eax, 0xAAAA",
            "kmovw k4, eax",
            "xor r12d, r12d",
            "test r15, r15",
            "jz 9f",
            "test rcx, rcx",
            "jz 9f",
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
            // The step's constants: zmm1 the bias; zmm4 the mantissas, zmm14 the odd
            // lanes' moved down; zmm6, zmm7 the left and right exponents; zmm10, zmm11
            // `2^right - 1` and half of it.
            "vmovdqu32 zmm1 {{k1}}{{z}}, zmmword ptr [rdx]",
            "vmovdqu32 zmm2 {{k2}}{{z}}, zmmword ptr [r8]",
            "vmovdqu32 zmm3 {{k3}}{{z}}, zmmword ptr [r8 + 64]",
            "vmovdqa32 zmm4, zmm24",
            "vpermi2d zmm4, zmm2, zmm3",
            "vmovdqa32 zmm5, zmm25",
            "vpermi2d zmm5, zmm2, zmm3",
            "vpsrlq zmm14, zmm4, 32",
            "vpmaxsd zmm6, zmm5, zmm27",
            "vpsubd zmm7, zmm27, zmm5",
            "vpmaxsd zmm7, zmm7, zmm27",
            "vpsllvd zmm10, zmm26, zmm7",
            "vpsubd zmm10, zmm10, zmm26",
            "vpsrld zmm11, zmm10, 1",
            "xor r14d, r14d",
            "4:",
            // zmm0: row r14's accumulators plus bias, shifted left.
            "mov rax, qword ptr [r11 + r14 * 8]",
            "vmovdqu32 zmm0 {{k1}}{{z}}, zmmword ptr [rax + r12 * 4]",
            "vpaddd zmm0, zmm0, zmm1",
            "vpsllvd zmm0, zmm0, zmm6",
            // SaturatingRoundingDoublingHighMul: bits 31..62 of `a * b + 2^30`, from the
            // even lanes' products shifted down and the odd lanes' shifted up by one.
            "vpmuldq zmm8, zmm0, zmm4",
            "vpaddq zmm8, zmm8, zmm20",
            "vpsrlq zmm8, zmm8, 31",
            "vpsrlq zmm9, zmm0, 32",
            "vpmuldq zmm9, zmm9, zmm14",
            "vpaddq zmm9, zmm9, zmm20",
            "vpsllq zmm9, zmm9, 1",
            "vpblendmd zmm8 {{k4}}, zmm8, zmm9",
            // RoundingDivideByPOT: shift right, plus one where the remainder exceeds half
            // of `2^e` (half plus one for a negative value).
            "vpandd zmm12, zmm8, zmm10",
            "vpsrld zmm13, zmm8, 31",
            "vpaddd zmm13, zmm13, zmm11",
            "vpcmpgtd k5, zmm12, zmm13",
            "vpsravd zmm8, zmm8, zmm7",
            "vpaddd zmm8 {{k5}}, zmm8, zmm26",
            // The clamp, the zero point, and the step's bytes out (in range, so the
            // saturating narrowing changes nothing).
            "vpmaxsd zmm8, zmm8, zmm21",
            "vpminsd zmm8, zmm8, zmm22",
            "vpaddd zmm8, zmm8, zmm23",
            "mov rax, qword ptr [rsi + r14 * 8]",
            "vpmovsdb xmmword ptr [rax + r12] {{k1}}, zmm8",
            "inc r14",
            "cmp r14, r15",
            "jb 4b",
            "add rdx, r9",
            "add r8, r10",
            "add r12, r13",
            "sub rcx, r13",
            "jnz 2b",
            "9:",
            "vzeroupper",
            inout("rcx") n => _,
            in("r11") sums.as_ptr(),
            in("rsi") outs.as_ptr(),
            in("r15") count,
            inout("rdx") bias => _,
            inout("r8") pairs => _,
            in("r9") bias_step,
            in("r10") pairs_step,
            out("r12") _,
            inout("r13") bounds.as_ptr() => _,
            inout("r14") SPLIT_PAIRS.as_ptr() => _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
