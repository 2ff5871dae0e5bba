//! AVX2 requantization of eight channels at a time.
//!
//! `SaturatingRoundingDoublingHighMul(a, b)` is `floor((a * b + 2^30) / 2^31)` for every input
//! but `i32::MIN * i32::MIN` (gemmlowp's nudge-and-truncate rounds ties upwards on both
//! signs). `vpmuldq` forms the exact 64-bit products of the even lanes (and, after a shift, of
//! the odd ones); a logical 64-bit shift by 31 leaves bits 31..62 of `ab + 2^30` in the low
//! dword, which are the arithmetic shift's low 32 bits (the odd lanes' products shift up by
//! one instead, into the high dword). `RoundingDivideByPOT` is the masked
//! remainder test with per-lane variable shifts. The zero point's saturating add and the
//! clamp are one clamp against shifted bounds, then a plain add (see [`OutputRange`]).

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::asm;
use core::arch::x86_64::*;

use crate::ops::RequantizeParams;

/// `vpmuldq`: the exact 64-bit products of the even lanes' low dwords. Written as one
/// instruction of assembly because LLVM rewrites `_mm256_mul_epi32` whenever it can prove
/// something about the operands' high halves (a shifted lane, a splatted constant) into a
/// sign extension and three `vpmuludq`, which took most of the requantization's time
/// (seen in `perf annotate` of `requantize_rows` and of the int8 Add).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn mul_epi32(a: __m256i, b: __m256i) -> __m256i {
    let product;
    // SAFETY: AVX2 is available (caller); a register-only instruction.
    unsafe {
        asm!(
            "vpmuldq {product}, {a}, {b}",
            product = lateout(ymm_reg) product,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    product
}

/// `SaturatingRoundingDoublingHighMul(a, b)` on eight lanes for a non-negative `b`, such as
/// every [`QuantizedMultiplier`](crate::fixed_point::QuantizedMultiplier)'s mantissa: then
/// `i32::MIN * i32::MIN`, the one input the plain formula gets wrong, cannot occur, and its
/// check is left out. `odd_b` is `b`'s odd lanes moved into the even ones
/// (`_mm256_srli_epi64::<32>(b)`), prepared once with the multipliers.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn doubling_high_mul(a: __m256i, b: __m256i, odd_b: __m256i) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let nudge = _mm256_set1_epi64x(1 << 30);
        // Bits 31..62 of `a * b + 2^30`: shifted down into the even lanes' low dwords, and
        // up by one into the odd lanes' high dwords.
        let even = _mm256_add_epi64(mul_epi32(a, b), nudge);
        let odd = mul_epi32(_mm256_srli_epi64::<32>(a), odd_b);
        let odd = _mm256_add_epi64(odd, nudge);
        _mm256_blend_epi32::<0b1010_1010>(
            _mm256_srli_epi64::<31>(even),
            _mm256_slli_epi64::<1>(odd),
        )
    }
}

/// `RoundingDivideByPOT` on eight lanes with per-lane exponents in `0..=31`, whose
/// [`divide_masks`] are prepared once with them.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rounding_divide_by_pot(
    x: __m256i,
    exponent: __m256i,
    (mask, half_mask): (__m256i, __m256i),
) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let remainder = _mm256_and_si256(x, mask);
        let threshold = _mm256_add_epi32(half_mask, _mm256_srli_epi32::<31>(x));
        let above = _mm256_cmpgt_epi32(remainder, threshold);
        _mm256_sub_epi32(_mm256_srav_epi32(x, exponent), above)
    }
}

/// The masks [`rounding_divide_by_pot`] compares with: `2^e - 1`, the bits the shift drops,
/// and half of it, the remainder that still rounds a non-negative value down.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn divide_masks(exponent: __m256i) -> (__m256i, __m256i) {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, exponent), one);
        (mask, _mm256_srli_epi32::<1>(mask))
    }
}

/// The multipliers and shifts of channels `c..c + 8` as two vectors (`mantissas`, `shifts`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn channel_multipliers(params: &RequantizeParams<'_>, c: usize) -> (__m256i, __m256i) {
    // SAFETY: AVX2 is available (caller); with per-channel multipliers the caller guarantees
    // `c + 8 <= multipliers.len()`, so the two 32-byte loads stay inside the slice of
    // `[mantissa, shift]` pairs.
    unsafe {
        if params.multipliers.len() == 1 {
            let m = params.multipliers[0];
            return (
                _mm256_set1_epi32(m.multiplier()),
                _mm256_set1_epi32(m.shift()),
            );
        }
        let pairs = params.multipliers[c..c + 8].as_ptr().cast::<__m256i>();
        let lo = _mm256_loadu_si256(pairs);
        let hi = _mm256_loadu_si256(pairs.add(1));
        let split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let lo = _mm256_permutevar8x32_epi32(lo, split);
        let hi = _mm256_permutevar8x32_epi32(hi, split);
        (
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        )
    }
}

/// Eight channels' requantization constants, prepared once and applied to every row of
/// accumulators that shares those channels (the pixels of a convolution, the rows of a
/// batch): the mantissas split for `vpmuldq`'s even lanes, the shift as left and right
/// exponents, and `RoundingDivideByPOT`'s masks. Preparing them costs about as much as
/// applying them, so kernels that requantize many rows prepare each block once.
#[derive(Clone, Copy)]
pub(crate) struct Channels8 {
    mantissa: __m256i,
    /// The odd channels' mantissas in the low halves of the 64-bit lanes.
    odd_mantissa: __m256i,
    left: __m256i,
    right: __m256i,
    /// [`divide_masks`] of `right`.
    masks: (__m256i, __m256i),
}

/// The clamp and output zero point all of a layer's channels share.
#[derive(Clone, Copy)]
pub(crate) struct OutputRange {
    lo: __m256i,
    hi: __m256i,
    zero_point: __m256i,
}

impl OutputRange {
    /// `params`' range.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn new(params: &RequantizeParams<'_>) -> Self {
        // SAFETY: AVX2 is available (caller); register-only intrinsics.
        unsafe {
            // `clamp(x.saturating_add(zp), lo, hi)` is `clamp(x, lo - zp, hi - zp) + zp`:
            // where the add would saturate, both sides give the nearer bound, and with
            // every term in int8 range nothing here can overflow.
            let zp = params.output_zero_point;
            OutputRange {
                lo: _mm256_set1_epi32(i32::from(params.activation_min) - zp),
                hi: _mm256_set1_epi32(i32::from(params.activation_max) - zp),
                zero_point: _mm256_set1_epi32(zp),
            }
        }
    }
}

impl Channels8 {
    /// A placeholder for tables filled before use (every bit pattern of these vectors is
    /// valid, and `apply` on it reads nothing but registers).
    // SAFETY: `Channels8` is plain vector data, for which all-zero bytes are a valid value.
    pub(crate) const UNSET: Channels8 = unsafe { core::mem::zeroed() };

    /// The constants of channels `c..c + 8` (the one multiplier of a per-tensor layer for
    /// all eight).
    ///
    /// # Safety
    /// AVX2 must be available; with per-channel multipliers, `c + 8 <= multipliers.len()`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn new(params: &RequantizeParams<'_>, c: usize) -> Self {
        // SAFETY: AVX2 is available (caller); `channel_multipliers`' contract is passed on.
        unsafe {
            let (mantissa, shift) = channel_multipliers(params, c);
            let zero = _mm256_setzero_si256();
            let right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
            Channels8 {
                mantissa,
                odd_mantissa: _mm256_srli_epi64::<32>(mantissa),
                left: _mm256_max_epi32(shift, zero),
                right,
                masks: divide_masks(right),
            }
        }
    }

    /// Whether any of the eight multipliers is 1 or more, so that `apply` must shift left
    /// (the layers whose scales shrink have none).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn shifts_left(&self) -> bool {
        // SAFETY: AVX2 is available (caller); register-only intrinsics.
        unsafe { _mm256_testz_si256(self.left, self.left) == 0 }
    }

    /// Eight accumulators (bias added) requantized and clamped, as i32 lanes: TFLite's
    /// `MultiplyByQuantizedMultiplier`, zero point and clamp, as [`doubling_high_mul`] and
    /// [`rounding_divide_by_pot`] compute them, with the constants hoisted. `LEFT` must be
    /// true when [`shifts_left`](Self::shifts_left) is; without it the shift is left out.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn apply<const LEFT: bool>(
        &self,
        range: &OutputRange,
        acc: __m256i,
    ) -> __m256i {
        // SAFETY: AVX2 is available (caller); register-only intrinsics.
        unsafe {
            let a = if LEFT {
                _mm256_sllv_epi32(acc, self.left)
            } else {
                acc
            };
            let x = doubling_high_mul(a, self.mantissa, self.odd_mantissa);
            let x = rounding_divide_by_pot(x, self.right, self.masks);
            _mm256_add_epi32(
                _mm256_min_epi32(_mm256_max_epi32(x, range.lo), range.hi),
                range.zero_point,
            )
        }
    }
}

/// Eight clamped int8 values in i32 lanes as eight bytes (the low 8 of the result).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn narrow8(v: __m256i) -> i64 {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(v, v), v);
        // Bytes 0..4 of each 128-bit half are the half's four lanes.
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        _mm_cvtsi128_si64(_mm256_castsi256_si128(bytes))
    }
}

/// Thirty-two clamped int8 values in four vectors of i32 lanes as 32 bytes, in order.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn narrow32(v: [__m256i; 4]) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        // The packs work within 128-bit halves, leaving each vector's two 4-byte halves
        // in dwords `j` and `4 + j`.
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(v[0], v[1]),
            _mm256_packs_epi32(v[2], v[3]),
        );
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Requantizes the channels `first..first + n` of several rows of `n` accumulators, with
/// `bias[i]` added to channel `first + i`, into `output[starts[r]..][..n]` for row `r`:
/// each block of eight channels' constants is prepared once for every row.
///
/// # Safety
/// AVX2 must be available; with per-channel multipliers they must cover channels
/// `first..first + n`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requantize_rows(
    params: &RequantizeParams<'_>,
    rows: &[&[i32]],
    bias: Option<&[i32]>,
    first: usize,
    output: &mut [i8],
    starts: &[usize],
) {
    let n = rows.first().map_or(0, |row| row.len());
    // SAFETY: AVX2 is available (caller); every load and store below goes through a
    // slice of exactly 8 elements, and the multipliers cover `first + i + 8` by the
    // caller's contract.
    unsafe {
        let range = OutputRange::new(params);
        let mut i = 0;
        while i + 8 <= n {
            let channels = Channels8::new(params, first + i);
            let bias = bias.map(|b| _mm256_loadu_si256(b[i..][..8].as_ptr().cast()));
            if channels.shifts_left() {
                requantize_block::<true>(&channels, &range, rows, (output, starts), i, bias);
            } else {
                requantize_block::<false>(&channels, &range, rows, (output, starts), i, bias);
            }
            i += 8;
        }
        for (row, &start) in rows.iter().zip(starts) {
            for j in i..n {
                let acc = row[j].wrapping_add(bias.map_or(0, |b| b[j]));
                output[start + j] = params.output(acc, first + j);
            }
        }
    }
}

/// Channels `i..i + 8` of every row for [`requantize_rows`]: four rows share one narrowing,
/// and their 8-byte runs then go out one by one.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn requantize_block<const LEFT: bool>(
    channels: &Channels8,
    range: &OutputRange,
    rows: &[&[i32]],
    (output, starts): (&mut [i8], &[usize]),
    i: usize,
    bias: Option<__m256i>,
) {
    // SAFETY: AVX2 is available (caller); every load and store goes through a slice of
    // exactly 8 (or 32) elements.
    unsafe {
        let lanes = |row: &[i32]| {
            let mut v = _mm256_loadu_si256(row[i..][..8].as_ptr().cast());
            if let Some(bias) = bias {
                v = _mm256_add_epi32(v, bias);
            }
            channels.apply::<LEFT>(range, v)
        };
        for (rows, starts) in rows.chunks_exact(4).zip(starts.chunks_exact(4)) {
            let mut bytes = [0i8; 32];
            let packed = narrow32([
                lanes(rows[0]),
                lanes(rows[1]),
                lanes(rows[2]),
                lanes(rows[3]),
            ]);
            _mm256_storeu_si256(bytes.as_mut_ptr().cast(), packed);
            for (run, &start) in bytes.chunks_exact(8).zip(starts) {
                let out = &mut output[start + i..][..8];
                let run = core::ptr::read_unaligned(run.as_ptr().cast::<i64>());
                core::ptr::write_unaligned(out.as_mut_ptr().cast::<i64>(), run);
            }
        }
        let rest = rows.len() / 4 * 4;
        for (row, &start) in rows[rest..].iter().zip(&starts[rest..]) {
            let bytes = narrow8(lanes(row));
            let out = &mut output[start + i..][..8];
            core::ptr::write_unaligned(out.as_mut_ptr().cast::<i64>(), bytes);
        }
    }
}

/// [`RequantizeParams::output`] with `bias[first + i]` added, over a row of channels
/// `first..first + acc.len()`: [`requantize_rows`] for one row.
///
/// # Safety
/// AVX2 must be available; `acc.len() <= out.len()`, and with per-channel multipliers (and a
/// bias) they must cover channels `first..first + acc.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requantize_row(
    params: &RequantizeParams<'_>,
    acc: &[i32],
    bias: Option<&[i32]>,
    first: usize,
    out: &mut [i8],
) {
    let bias = bias.map(|b| &b[first..first + acc.len()]);
    // SAFETY: AVX2 is available (caller), and the contract is passed on.
    unsafe { requantize_rows(params, &[acc], bias, first, out, &[0]) }
}
