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
use core::mem::MaybeUninit;

use crate::fixed_point::QuantizedMultiplier;
use crate::ops::RequantizeParams;

/// `vpermi2d` indices that pick the even dwords of two vectors (the mantissas of sixteen
/// `[mantissa, shift]` pairs), then those of the odd dwords (the shifts).
static SPLIT_PAIRS: [u32; 32] = [
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, //
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
];

/// Rows the assembly takes per call: the tile of [`crate::ops::x86_amx`]'s GEMM (the
/// VNNI GEMM's tiles have eight), so that each block of sixteen channels' constants is
/// prepared once for all of them.
const ROWS: usize = 32;

/// Rows the assembly narrows and clamps together: four rows of sixteen channels make one
/// vector of bytes.
const ROW_GROUP: usize = 4;

/// `vpermt2d` indices that interleave the even dwords of two vectors: the even channels'
/// results (the low dwords of one vector's 64-bit lanes) with the odd channels' (the
/// other's).
pub(crate) static INTERLEAVE: [u32; 16] =
    [0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30];

/// `vpermd` indices that undo the saturating packs' order: after packing four rows, dword
/// `4 l + j` holds channels `4 l..4 l + 4` of row `j`; this gathers each row's sixteen
/// bytes into 128-bit lane `j`.
static ROWS_IN_LANES: [u32; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

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
/// through a [`ChannelTable`] of up to 256 channels at a time.
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
    if rows.len() < ROW_GROUP {
        // SAFETY: as this function's.
        return unsafe { requantize_few(params, rows, bias, first, output, starts) };
    }
    let n = rows.first().map_or(0, |row| row.len());
    let mut table = ChannelTable::new();
    for column in (0..n).step_by(TABLE_CHANNELS) {
        let len = (n - column).min(TABLE_CHANNELS);
        // SAFETY: AVX-512 F/BW are available (caller); at most `TABLE_CHANNELS` channels.
        unsafe {
            table.prepare(
                params,
                bias.map(|b| &b[column..column + len]),
                first + column,
                len,
            )
        };
        // SAFETY: as this function's.
        unsafe { requantize_table_rows(&table, (0, len), rows, column, output, starts) };
    }
}

/// [`requantize_rows`] for fewer than [`ROW_GROUP`] rows (a fully-connected layer's batch
/// of one), where the table path would prepare every block for one row and pad the rows
/// to four: each step's constants computed in registers and used at once
/// ([`requantize_few_rows`]).
///
/// # Safety
/// As [`requantize_rows`]'.
unsafe fn requantize_few(
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
    {
        // Each row's accumulators and output, checked to hold `n` entries.
        let mut sums = [core::ptr::null::<i32>(); ROW_GROUP];
        let mut outs = [core::ptr::null_mut::<i8>(); ROW_GROUP];
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
            requantize_few_rows(
                n,
                (&sums, &outs, rows.len()),
                (bias, bias_step),
                (pairs, pairs_step),
                &bounds,
            )
        };
    }
}

/// Channels a [`ChannelTable`] holds.
pub(crate) const TABLE_CHANNELS: usize = 256;
const TABLE_BLOCKS: usize = TABLE_CHANNELS / 16;
/// 64-byte lines of a [`ChannelBlock`].
const BLOCK_LINES: usize = 11;
/// Bytes of a [`ChannelBlock`].
pub(crate) const CHANNEL_BLOCK_BYTES: usize = BLOCK_LINES * 64;
/// Byte offsets of a [`ChannelBlock`]'s lines, as assembly templates take them: the bias,
/// the even and the odd channels' mantissas, the left exponents, the even and odd
/// rounding terms, negative bounds and shifts, and the any-left-shift flag.
pub(crate) mod block_lines {
    pub(crate) const BIAS: usize = 0;
    pub(crate) const MANTISSA: usize = 64;
    pub(crate) const ODD_MANTISSA: usize = 128;
    pub(crate) const LEFT: usize = 192;
    pub(crate) const ROUNDING: [usize; 2] = [256, 320];
    pub(crate) const NEGATIVE: [usize; 2] = [384, 448];
    pub(crate) const SHIFT: [usize; 2] = [512, 576];
}

/// Sixteen channels' constants, the lines the row loop loads: the bias; the mantissas
/// (`vpmuldq` reads the even channels' from the low dwords of the 64-bit lanes); the odd
/// channels' mantissas moved into those low dwords; the left exponents; then per 64-bit
/// lane of the even and of the odd channels, with `r` the right exponent, `2^30 +
/// 2^(30 + r)` (2^30 where `r = 0`), `2^(30 + r)`, the sum below which the high multiply's
/// result was negative (i64::MIN where `r = 0`: no correction), and `31 + r`; last, whether
/// any channel shifts left (the first dword).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct ChannelBlock([[i32; 16]; BLOCK_LINES]);

/// Up to [`TABLE_CHANNELS`] consecutive channels' requantization constants with their bias
/// and the layer's clamp, prepared once ([`ChannelTable::prepare`]) and applied to every
/// row that shares those channels ([`requantize_table_rows`]): preparing a block of
/// sixteen costs about as much as requantizing two rows of it, so the GEMM kernels prepare
/// each layer's (or slice's) channels once rather than for every tile of rows.
pub(crate) struct ChannelTable {
    /// The first `channels.div_ceil(16)` blocks are written by `prepare`.
    blocks: [MaybeUninit<ChannelBlock>; TABLE_BLOCKS],
    channels: usize,
    /// The clamp's bounds (bytes) and the output zero point (a word), both validated int8.
    bounds: [i32; 3],
}

impl ChannelTable {
    /// An empty table.
    pub(crate) const fn new() -> Self {
        ChannelTable {
            blocks: [MaybeUninit::uninit(); TABLE_BLOCKS],
            channels: 0,
            bounds: [0; 3],
        }
    }

    /// Channels prepared.
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// The prepared blocks, [`CHANNEL_BLOCK_BYTES`] apart, for kernels that requantize in
    /// their own assembly (the depthwise quad-row kernel); each block's lines are in the
    /// order [`ChannelBlock`] documents, at the offsets of [`block_lines`].
    pub(crate) fn blocks_ptr(&self) -> *const u8 {
        self.blocks.as_ptr().cast()
    }

    /// Prepares channels `first..first + n` of `params` (at most [`TABLE_CHANNELS`]), with
    /// `bias[i]` added to channel `first + i`; they become the table's channels `0..n`.
    ///
    /// # Safety
    /// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) (AVX-512 F and BW, and BMI2) must
    /// be available.
    ///
    /// # Panics
    /// If `n` is too large, or per-channel multipliers or a bias do not cover the channels.
    pub(crate) unsafe fn prepare(
        &mut self,
        params: &RequantizeParams<'_>,
        bias: Option<&[i32]>,
        first: usize,
        n: usize,
    ) {
        assert!(n <= TABLE_CHANNELS, "a table's channels");
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
        self.channels = n;
        self.bounds = [
            i32::from(params.activation_min),
            i32::from(params.activation_max),
            params.output_zero_point,
        ];
        // SAFETY: AVX-512 F/BW and BMI2 are available (caller). Each block reads `m =
        // min(left, 16)` bias values and multiplier pairs through masks that cover exactly
        // those, inside the slices checked above (or the 16-entry blocks of zeros and
        // copies, read from the same place each step), and writes the block's 704 bytes
        // inside `blocks` (`n.div_ceil(16) <= TABLE_BLOCKS` blocks). Vector registers and
        // k1-k7 are clobbered through `clobber_abi("C")`; the stack is untouched.
        unsafe {
            asm!(
                // rcx: channels left; rdx: bias; r8: pairs; r9, r10: their steps; r11: the
                // block being written; r13: channels this block; rax: scratch.
                "vmovdqu32 zmm24, zmmword ptr [{split}]",
                "vmovdqu32 zmm25, zmmword ptr [{split} + 64]",
                "mov eax, 0x40000000",
                "vpbroadcastq zmm20, rax",
                "mov eax, 31",
                "vpbroadcastq zmm26, rax",
                "mov rax, 0x8000000000000000",
                "vpbroadcastq zmm30, rax",
                "vpxord zmm27, zmm27, zmm27",
                "mov eax, 0xAAAA",
                "kmovw k4, eax",
                "test rcx, rcx",
                "jz 9f",
                "2:",
                "mov r13, 16",
                "cmp rcx, 16",
                "cmovb r13, rcx",
                "mov rax, -1",
                "bzhi rax, rax, r13",
                "kmovw k1, eax",
                "lea rax, [r13 + r13]",
                "mov r12, -1",
                "bzhi r12, r12, rax",
                "kmovd k2, r12d",
                "kshiftrd k3, k2, 16",
                "vmovdqu32 zmm1 {{k1}}{{z}}, zmmword ptr [rdx]",
                "vmovdqu32 zmm2 {{k2}}{{z}}, zmmword ptr [r8]",
                "vmovdqu32 zmm3 {{k3}}{{z}}, zmmword ptr [r8 + 64]",
                "vmovdqa32 zmm4, zmm24",
                "vpermi2d zmm4, zmm2, zmm3",
                "vmovdqa32 zmm5, zmm25",
                "vpermi2d zmm5, zmm2, zmm3",
                "vpsrlq zmm14, zmm4, 32",
                "vpmaxsd zmm6, zmm5, zmm27",
                "vptestmd k7, zmm6, zmm6",
                "kmovw eax, k7",
                "vpsubd zmm7, zmm27, zmm5",
                "vpmaxsd zmm7, zmm7, zmm27",
                "vpblendmd zmm10 {{k4}}, zmm7, zmm27",
                "vpsrlq zmm11, zmm7, 32",
                "vpsllvq zmm12, zmm20, zmm10",
                "vpsllvq zmm13, zmm20, zmm11",
                "vptestmq k5, zmm10, zmm10",
                "vptestmq k6, zmm11, zmm11",
                "vmovdqa64 zmm15, zmm20",
                "vpaddq zmm15 {{k5}}, zmm20, zmm12",
                "vmovdqa64 zmm16, zmm20",
                "vpaddq zmm16 {{k6}}, zmm20, zmm13",
                "vpblendmq zmm12 {{k5}}, zmm30, zmm12",
                "vpblendmq zmm13 {{k6}}, zmm30, zmm13",
                "vpaddq zmm17, zmm10, zmm26",
                "vpaddq zmm18, zmm11, zmm26",
                "vmovdqa32 zmmword ptr [r11], zmm1",
                "vmovdqa32 zmmword ptr [r11 + 64], zmm4",
                "vmovdqa32 zmmword ptr [r11 + 128], zmm14",
                "vmovdqa32 zmmword ptr [r11 + 192], zmm6",
                "vmovdqa32 zmmword ptr [r11 + 256], zmm15",
                "vmovdqa32 zmmword ptr [r11 + 320], zmm16",
                "vmovdqa32 zmmword ptr [r11 + 384], zmm12",
                "vmovdqa32 zmmword ptr [r11 + 448], zmm13",
                "vmovdqa32 zmmword ptr [r11 + 512], zmm17",
                "vmovdqa32 zmmword ptr [r11 + 576], zmm18",
                "vmovd xmm0, eax",
                "vmovdqa32 zmmword ptr [r11 + 640], zmm0",
                "add r11, 704",
                "add rdx, r9",
                "add r8, r10",
                "sub rcx, r13",
                "jnz 2b",
                "9:",
                "vzeroupper",
                split = in(reg) SPLIT_PAIRS.as_ptr(),
                inout("rcx") n => _,
                inout("rdx") bias => _,
                inout("r8") pairs => _,
                in("r9") bias_step,
                in("r10") pairs_step,
                inout("r11") self.blocks.as_mut_ptr() => _,
                out("r12") _,
                out("r13") _,
                out("rax") _,
                clobber_abi("C"),
                options(nostack),
            );
        }
    }
}

/// Requantizes the table's channels `from..from + n` (`from` a multiple of sixteen) for
/// several rows: row `r`'s accumulators `rows[r][column..column + n]` into
/// `output[starts[r] + column..][..n]`.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) (AVX-512 F and BW, and BMI2) must be
/// available.
///
/// # Panics
/// If the channels are not the table's, a row is too short, a row's output runs past
/// `output`, or there are fewer starts than rows.
pub(crate) unsafe fn requantize_table_rows(
    table: &ChannelTable,
    (from, n): (usize, usize),
    rows: &[&[i32]],
    column: usize,
    output: &mut [i8],
    starts: &[usize],
) {
    assert!(
        from % 16 == 0 && from + n <= table.channels,
        "the table's channels"
    );
    assert!(starts.len() >= rows.len(), "a start for every row");
    if n == 0 {
        return;
    }
    let blocks = table.blocks[from / 16..].as_ptr();
    for (rows, starts) in rows.chunks(ROWS).zip(starts.chunks(ROWS)) {
        // Each row's accumulators and output, checked to hold `n` entries.
        let mut sums = [core::ptr::null::<i32>(); ROWS];
        let mut outs = [core::ptr::null_mut::<i8>(); ROWS];
        for ((row, &start), (sum, out)) in
            rows.iter().zip(starts).zip(sums.iter_mut().zip(&mut outs))
        {
            *sum = row[column..column + n].as_ptr();
            *out = output[start + column..start + column + n].as_mut_ptr();
        }
        // Rows past the last whole group of four repeat the first row: the same sums,
        // written to the same place, after it, as the same bytes.
        let count = rows.len().div_ceil(ROW_GROUP) * ROW_GROUP;
        for r in rows.len()..count {
            (sums[r], outs[r]) = (sums[0], outs[0]);
        }
        // SAFETY: the caller guarantees AVX-512 F/BW and BMI2. Each step reads `m = min(left,
        // 16)` accumulators of each row through a mask that covers exactly those (masked-out
        // elements are neither read nor faulted on), inside the slices checked above, and
        // one prepared block of the table (`from + n <= channels`, checked above); it writes
        // `m` bytes of each row's output through the same mask (a padding row rewrites the
        // first row's bytes, unchanged). Vector registers and k1-k7 are clobbered through
        // `clobber_abi("C")`; the stack is untouched.
        unsafe { requantize_block_rows(n, (&sums, &outs, count), blocks.cast(), &table.bounds) };
    }
}

/// The assembly of [`requantize_table_rows`] for up to [`ROWS`] rows, a whole number of
/// [`ROW_GROUP`]s.
///
/// Per lane, `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(a, m), r)` is computed
/// as one rounding of the exact 64-bit product `p = a * m` (from `vpmuldq` on the even and
/// the odd lanes): for `r > 0`, `(p + 2^30 + 2^(30 + r) - 2^31 [p + 2^30 < 0]) >> (31 + r)`,
/// for `r = 0`, `(p + 2^30) >> 31` (arithmetic shifts). The high multiply's result is
/// `q = floor((p + 2^30) / 2^31)` (gemmlowp's nudge rounds ties upwards on both signs; the
/// one input it saturates, `i32::MIN * i32::MIN`, needs a negative `m`), and the divide's is
/// `floor((q + 2^(r - 1) - [q < 0]) / 2^r)` (ties away from zero); since
/// `floor((floor(x) + k) / 2^r) = floor((x + k) / 2^r)` for an integer `k`, the two floors
/// are one, and `q < 0` exactly when `p + 2^30 < 0`. Nothing overflows: `|p| < 2^62`.
/// This takes fewer instructions than the two steps (the AVX2 form's) and puts fewer of
/// them on the one port that shifts 512-bit vectors.
///
/// The clamp and the zero point's saturating add run on four rows at once: packed to
/// words with saturation, the zero point added with saturation, packed to bytes, clamped
/// as bytes. Equal to `clamp(x.saturating_add(zp), lo, hi)`: a value beyond the int16
/// range stays beyond the int8 one after the add of an int8 zero point.
///
/// # Safety
/// As [`requantize_table_rows`]' comment at its call: `sums[..count]` and `outs[..count]`
/// hold `n` elements each, `count` is a multiple of [`ROW_GROUP`], and `blocks` points to
/// `n.div_ceil(16)` prepared blocks.
#[inline]
unsafe fn requantize_block_rows(
    n: usize,
    (sums, outs, count): (&[*const i32; ROWS], &[*mut i8; ROWS], usize),
    blocks: *const ChannelBlock,
    bounds: &[i32; 3],
) {
    debug_assert!(count % ROW_GROUP == 0 && count <= ROWS);
    // SAFETY: see the function's contract.
    unsafe {
        asm!(
            // rcx: channels left; r11: the rows' accumulators; rsi: their outputs; r15: row
            // count; rdx: the step's block of constants; r12: the step's first channel;
            // r13: channels this step (first the clamp bounds' address); r14: the row;
            // rdi: whether any channel of the step shifts left; rax: scratch.
            //
            // zmm19: the zero point per word; zmm21: 2^31 per 64-bit lane; zmm22, zmm23:
            // the clamp bounds per byte; zmm28: `INTERLEAVE`; zmm29: `ROWS_IN_LANES`.
            "vpbroadcastb zmm22, byte ptr [r13]",
            "vpbroadcastb zmm23, byte ptr [r13 + 4]",
            "vpbroadcastw zmm19, word ptr [r13 + 8]",
            "vmovdqu32 zmm28, zmmword ptr [{interleave}]",
            "vmovdqu32 zmm29, zmmword ptr [{rows_in_lanes}]",
            "mov eax, 0x80000000",
            "vpbroadcastq zmm21, rax",
            "xor r12d, r12d",
            "test r15, r15",
            "jz 9f",
            "test rcx, rcx",
            "jz 9f",
            "2:",
            // m = min(n, 16) channels this step: k1 selects them.
            "mov r13, 16",
            "cmp rcx, 16",
            "cmovb r13, rcx",
            "mov rax, -1",
            "bzhi rax, rax, r13",
            "kmovw k1, eax",
            // The step's constants (see `ChannelBlock`): zmm1 the bias; zmm4 the
            // mantissas, zmm14 the odd channels'; zmm6 the left exponents (rdi: any);
            // zmm15, zmm16 the rounding terms, zmm12, zmm13 the negative bounds, zmm17,
            // zmm18 the shifts, of the even and the odd channels.
            "vmovdqa32 zmm1, zmmword ptr [rdx]",
            "vmovdqa32 zmm4, zmmword ptr [rdx + 64]",
            "vmovdqa32 zmm14, zmmword ptr [rdx + 128]",
            "vmovdqa32 zmm6, zmmword ptr [rdx + 192]",
            "vmovdqa32 zmm15, zmmword ptr [rdx + 256]",
            "vmovdqa32 zmm16, zmmword ptr [rdx + 320]",
            "vmovdqa32 zmm12, zmmword ptr [rdx + 384]",
            "vmovdqa32 zmm13, zmmword ptr [rdx + 448]",
            "vmovdqa32 zmm17, zmmword ptr [rdx + 512]",
            "vmovdqa32 zmm18, zmmword ptr [rdx + 576]",
            "mov edi, dword ptr [rdx + 640]",
            "xor r14d, r14d",
            "4:",
            // Row 0 of the group: zmm0, its odd channels' products in zmm7.
            "mov rax, qword ptr [r11 + r14 * 8 + 0]",
            "vmovdqu32 zmm0 {{k1}}{{z}}, zmmword ptr [rax + r12 * 4]",
            "vpaddd zmm0, zmm0, zmm1",
            "test edi, edi",
            "jz 31f",
            "vpsllvd zmm0, zmm0, zmm6",
            "31:",
            "vpsrlq zmm7, zmm0, 32",
            "vpmuldq zmm0, zmm0, zmm4",
            "vpmuldq zmm7, zmm7, zmm14",
            "vpaddq zmm0, zmm0, zmm15",
            "vpaddq zmm7, zmm7, zmm16",
            "vpcmpq k5, zmm0, zmm12, 1",
            "vpcmpq k6, zmm7, zmm13, 1",
            "vpsubq zmm0 {{k5}}, zmm0, zmm21",
            "vpsubq zmm7 {{k6}}, zmm7, zmm21",
            "vpsravq zmm0, zmm0, zmm17",
            "vpsravq zmm7, zmm7, zmm18",
            "vpermt2d zmm0, zmm28, zmm7",
            // Row 1 of the group: zmm2, its odd channels' products in zmm8.
            "mov rax, qword ptr [r11 + r14 * 8 + 8]",
            "vmovdqu32 zmm2 {{k1}}{{z}}, zmmword ptr [rax + r12 * 4]",
            "vpaddd zmm2, zmm2, zmm1",
            "test edi, edi",
            "jz 32f",
            "vpsllvd zmm2, zmm2, zmm6",
            "32:",
            "vpsrlq zmm8, zmm2, 32",
            "vpmuldq zmm2, zmm2, zmm4",
            "vpmuldq zmm8, zmm8, zmm14",
            "vpaddq zmm2, zmm2, zmm15",
            "vpaddq zmm8, zmm8, zmm16",
            "vpcmpq k5, zmm2, zmm12, 1",
            "vpcmpq k6, zmm8, zmm13, 1",
            "vpsubq zmm2 {{k5}}, zmm2, zmm21",
            "vpsubq zmm8 {{k6}}, zmm8, zmm21",
            "vpsravq zmm2, zmm2, zmm17",
            "vpsravq zmm8, zmm8, zmm18",
            "vpermt2d zmm2, zmm28, zmm8",
            // Row 2 of the group: zmm3, its odd channels' products in zmm9.
            "mov rax, qword ptr [r11 + r14 * 8 + 16]",
            "vmovdqu32 zmm3 {{k1}}{{z}}, zmmword ptr [rax + r12 * 4]",
            "vpaddd zmm3, zmm3, zmm1",
            "test edi, edi",
            "jz 33f",
            "vpsllvd zmm3, zmm3, zmm6",
            "33:",
            "vpsrlq zmm9, zmm3, 32",
            "vpmuldq zmm3, zmm3, zmm4",
            "vpmuldq zmm9, zmm9, zmm14",
            "vpaddq zmm3, zmm3, zmm15",
            "vpaddq zmm9, zmm9, zmm16",
            "vpcmpq k5, zmm3, zmm12, 1",
            "vpcmpq k6, zmm9, zmm13, 1",
            "vpsubq zmm3 {{k5}}, zmm3, zmm21",
            "vpsubq zmm9 {{k6}}, zmm9, zmm21",
            "vpsravq zmm3, zmm3, zmm17",
            "vpsravq zmm9, zmm9, zmm18",
            "vpermt2d zmm3, zmm28, zmm9",
            // Row 3 of the group: zmm5, its odd channels' products in zmm10.
            "mov rax, qword ptr [r11 + r14 * 8 + 24]",
            "vmovdqu32 zmm5 {{k1}}{{z}}, zmmword ptr [rax + r12 * 4]",
            "vpaddd zmm5, zmm5, zmm1",
            "test edi, edi",
            "jz 34f",
            "vpsllvd zmm5, zmm5, zmm6",
            "34:",
            "vpsrlq zmm10, zmm5, 32",
            "vpmuldq zmm5, zmm5, zmm4",
            "vpmuldq zmm10, zmm10, zmm14",
            "vpaddq zmm5, zmm5, zmm15",
            "vpaddq zmm10, zmm10, zmm16",
            "vpcmpq k5, zmm5, zmm12, 1",
            "vpcmpq k6, zmm10, zmm13, 1",
            "vpsubq zmm5 {{k5}}, zmm5, zmm21",
            "vpsubq zmm10 {{k6}}, zmm10, zmm21",
            "vpsravq zmm5, zmm5, zmm17",
            "vpsravq zmm10, zmm10, zmm18",
            "vpermt2d zmm5, zmm28, zmm10",
            // The group's clamp, zero point and bytes, each row's sixteen in a lane.
            "vpackssdw zmm11, zmm0, zmm2",
            "vpackssdw zmm31, zmm3, zmm5",
            "vpaddsw zmm11, zmm11, zmm19",
            "vpaddsw zmm31, zmm31, zmm19",
            "vpacksswb zmm11, zmm11, zmm31",
            "vpmaxsb zmm11, zmm11, zmm22",
            "vpminsb zmm11, zmm11, zmm23",
            "vpermd zmm11, zmm29, zmm11",
            "mov rax, qword ptr [rsi + r14 * 8]",
            "vmovdqu8 xmmword ptr [rax + r12] {{k1}}, xmm11",
            "vextracti32x4 xmm31, zmm11, 1",
            "mov rax, qword ptr [rsi + r14 * 8 + 8]",
            "vmovdqu8 xmmword ptr [rax + r12] {{k1}}, xmm31",
            "vextracti32x4 xmm31, zmm11, 2",
            "mov rax, qword ptr [rsi + r14 * 8 + 16]",
            "vmovdqu8 xmmword ptr [rax + r12] {{k1}}, xmm31",
            "vextracti32x4 xmm31, zmm11, 3",
            "mov rax, qword ptr [rsi + r14 * 8 + 24]",
            "vmovdqu8 xmmword ptr [rax + r12] {{k1}}, xmm31",
            "add r14, 4",
            "cmp r14, r15",
            "jb 4b",
            "add rdx, 704",
            "add r12, r13",
            "sub rcx, r13",
            "jnz 2b",
            "9:",
            "vzeroupper",
            interleave = in(reg) INTERLEAVE.as_ptr(),
            rows_in_lanes = in(reg) ROWS_IN_LANES.as_ptr(),
            inout("rcx") n => _,
            in("r11") sums.as_ptr(),
            in("rsi") outs.as_ptr(),
            in("r15") count,
            inout("rdx") blocks => _,
            out("r12") _,
            inout("r13") bounds.as_ptr() => _,
            out("r14") _,
            out("rdi") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}

/// The assembly of [`requantize_rows`] for fewer than [`ROW_GROUP`] rows: each step's
/// constants computed in registers and used at once, in the two steps of the AVX2 form
/// (`vpmuldq` on the even and odd lanes for `SaturatingRoundingDoublingHighMul`, the
/// masked remainder test for `RoundingDivideByPOT`), each row clamped and narrowed alone.
/// The FC autoencoder's layers (batches of one) took 1.3x as long through the table path
/// (`loam bench --per-op`, both builds in one run); that path then also padded the one row
/// to four, and the two costs were not measured apart.
///
/// # Safety
/// As [`requantize_rows`]' comment at its call: `sums[..count]` and `outs[..count]` hold
/// `n` elements each, and `bias` and `pairs` cover `n` channels with their steps (or are
/// 16-entry blocks with a step of 0).
#[inline]
unsafe fn requantize_few_rows(
    n: usize,
    (sums, outs, count): (&[*const i32; ROW_GROUP], &[*mut i8; ROW_GROUP], usize),
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
