//! x86_64 AVX2/FMA fast paths. Four output rows share each load of the input, so the
//! input is widened once per four dot products.
//!
//! int8: `(x - zp)` fits in i16 (|x - zp| <= 255) and so does each weight, so `vpmaddwd`
//! forms exact i32 pair sums that can never saturate; integer addition is associative mod
//! 2^32, so any summation order gives the reference's exact accumulator.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{FullyConnectedF32, FullyConnectedI8, FullyConnectedI16};
use crate::isa::Isa;
use crate::ops::FloatWeight;
use crate::ops::conv2d::x86::reduce4x2;
use crate::ops::requantize::x86::requantize_row;

/// Horizontal sum of eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// Sixteen int8 at `p`, sign-extended to i16.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_i8x16(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(p.cast()) })
    }
}

/// The AVX2 int8 kernel; falls back to the reference where AVX2 is missing.
pub(crate) fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { fully_connected_i8_avx2(op, output) }
    } else {
        super::reference::fully_connected_i8(op, output)
    }
}

/// The AVX2/FMA float kernel, for f32 or f16 weights (widened with F16C as they load);
/// falls back to the reference where AVX2 is missing.
pub(crate) fn fully_connected_f32<W: FloatWeight>(
    op: &FullyConnectedF32<'_, W>,
    output: &mut [f32],
) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 and FMA are available (checked just above).
        unsafe { fully_connected_f32_avx2(op, output) }
    } else {
        super::reference::fully_connected_f32(op, output)
    }
}

/// The AVX2 16x8 kernel; falls back to the reference where AVX2 is missing.
pub(crate) fn fully_connected_i16(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    if Isa::Avx2.available() {
        // SAFETY: AVX2 is available (checked just above).
        unsafe { fully_connected_i16_avx2(op, output) }
    } else {
        super::reference::fully_connected_i16(op, output)
    }
}

/// 16-element chunks summed in i32 lanes before they are widened into the i64 total: each
/// `vpmaddwd` lane is at most 2 * 2^15 * 2^7 = 2^23 in magnitude, so 2^7 of them stay below
/// 2^30 and no lane can overflow.
const I16_CHUNKS_PER_FLUSH: usize = 128;

/// Sum of four i64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi64(v: __m256i) -> i64 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        _mm_cvtsi128_si64(s).wrapping_add(_mm_extract_epi64::<1>(s))
    }
}

/// 16x8 dot products with `vpmaddwd` (int16 activations times int8 weights widened to
/// int16): exact pair sums in i32 lanes, widened into i64 every [`I16_CHUNKS_PER_FLUSH`]
/// chunks. Integer sums are exact in any order, so the accumulator is the reference's.
///
/// `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2")]
unsafe fn fully_connected_i16_avx2(op: &FullyConnectedI16<'_>, output: &mut [i16]) {
    let s = op.shape;
    let n = s.in_features;
    let whole = n / 16 * 16;
    for b in 0..s.batch {
        let row = &op.input[b * n..(b + 1) * n];
        for o in 0..s.out_features {
            let weights = &op.weights[o * n..(o + 1) * n];
            // SAFETY: AVX2 is available (caller); each load reads 16 elements at `i` with
            // `i + 16 <= whole <= n`, inside rows of exactly `n` elements.
            let mut acc = unsafe {
                let mut total = _mm256_setzero_si256();
                let mut lanes = _mm256_setzero_si256();
                let mut chunks = 0;
                let mut i = 0;
                while i < whole {
                    let x = _mm256_loadu_si256(row.as_ptr().add(i).cast());
                    let w = load_i8x16(weights.as_ptr().add(i));
                    lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(x, w));
                    chunks += 1;
                    i += 16;
                    if chunks == I16_CHUNKS_PER_FLUSH || i == whole {
                        let lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lanes));
                        let hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(lanes));
                        total = _mm256_add_epi64(total, _mm256_add_epi64(lo, hi));
                        lanes = _mm256_setzero_si256();
                        chunks = 0;
                    }
                }
                hsum_epi64(total)
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

/// Output features accumulated before a vectorized requantization pass.
const BLOCK: usize = 64;

/// Two input rows times four weight rows per step (`x - zp` widened to i16 once per row and
/// step), reduced with a `vphaddd` tree, requantized 64 outputs at a time.
///
/// `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fully_connected_i8_avx2(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    // SAFETY: AVX2 is available (caller); loads read 16 bytes at `i` with `i + 16 <= n` from
    // rows of exactly `n` elements.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let p = &op.params;
        let chunks = n / 16;
        let zp = _mm256_set1_epi16(p.input_zero_point as i16);
        let mut acc0 = [0i32; BLOCK];
        let mut acc1 = [0i32; BLOCK];
        let mut b = 0;
        while b < s.batch {
            let pair = b + 1 < s.batch;
            let x0 = &op.input[b * n..(b + 1) * n];
            let x1 = if pair {
                &op.input[(b + 1) * n..(b + 2) * n]
            } else {
                x0
            };
            let mut block = 0;
            while block < s.out_features {
                let len = (s.out_features - block).min(BLOCK);
                let mut o = block;
                while o < block + len {
                    let rows = (block + len - o).min(4);
                    let w: [&[i8]; 4] =
                        core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
                    let mut acc = [[_mm256_setzero_si256(); 2]; 4];
                    for c in 0..chunks {
                        let i = c * 16;
                        let a = _mm256_sub_epi16(load_i8x16(x0.as_ptr().add(i)), zp);
                        let bb = _mm256_sub_epi16(load_i8x16(x1.as_ptr().add(i)), zp);
                        for r in 0..4 {
                            let wv = load_i8x16(w[r].as_ptr().add(i));
                            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, wv));
                            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(bb, wv));
                        }
                    }
                    let mut sums = [0i32; 8];
                    _mm256_storeu_si256(sums.as_mut_ptr().cast(), reduce4x2(&acc));
                    for i in chunks * 16..n {
                        let (a, bb) = (
                            i32::from(x0[i]) - p.input_zero_point,
                            i32::from(x1[i]) - p.input_zero_point,
                        );
                        for r in 0..4 {
                            let wv = i32::from(w[r][i]);
                            sums[r] = sums[r].wrapping_add(a * wv);
                            sums[4 + r] = sums[4 + r].wrapping_add(bb * wv);
                        }
                    }
                    acc0[o - block..o - block + rows].copy_from_slice(&sums[..rows]);
                    acc1[o - block..o - block + rows].copy_from_slice(&sums[4..4 + rows]);
                    o += rows;
                }
                let out = &mut output[b * s.out_features + block..][..len];
                requantize_row(p, &acc0[..len], op.bias, block, out);
                if pair {
                    let out = &mut output[(b + 1) * s.out_features + block..][..len];
                    requantize_row(p, &acc1[..len], op.bias, block, out);
                }
                block += len;
            }
            b += 2;
        }
    }
}

/// The longest f16 rows the batched f16 path widens into its stack buffer (four rows,
/// 16 KiB); longer rows widen as they load.
const WIDEN_MAX: usize = 1024;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fully_connected_f32_avx2<W: FloatWeight>(
    op: &FullyConnectedF32<'_, W>,
    output: &mut [f32],
) {
    // SAFETY: the caller guarantees the target features are available.
    unsafe {
        let s = op.shape;
        let n = s.in_features;
        let rows_at = |o: usize, rows: usize| -> [&[W]; 4] {
            core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n])
        };
        if !W::IS_F32 && s.batch > 1 && n <= WIDEN_MAX {
            // Several input rows (a pointwise convolution's pixels) share each weight row:
            // widen four rows once and run every input row over the f32 copy, instead of
            // widening them again for each input row.
            let mut widened = [0f32; 4 * WIDEN_MAX];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                for (r, src) in rows_at(o, rows).iter().enumerate() {
                    widen_row(src, &mut widened[r * n..(r + 1) * n]);
                }
                let wide: [&[f32]; 4] = core::array::from_fn(|r| &widened[r * n..(r + 1) * n]);
                for b in 0..s.batch {
                    let row = &op.input[b * n..(b + 1) * n];
                    let sums = dot4_f32(row, wide);
                    finish4(
                        op,
                        row,
                        wide,
                        o,
                        rows,
                        sums,
                        &mut output[b * s.out_features..],
                    );
                }
                o += rows;
            }
            return;
        }
        // The same dot and finish as `dot4_f32` and `finish4`, written out: through those
        // helpers this loop ran at half the speed on 125x64x64 f32 weights (23 vs 48 µs,
        // `cargo bench --bench kernels -- float_weights/f32/avx2/fc`, one after the other).
        let chunks = n / 8;
        let (lo, hi) = op.activation;
        for b in 0..s.batch {
            let row = &op.input[b * n..(b + 1) * n];
            let out_row = &mut output[b * s.out_features..(b + 1) * s.out_features];
            let mut o = 0;
            while o < s.out_features {
                let rows = (s.out_features - o).min(4);
                let w = |r: usize| &op.weights[(o + r.min(rows - 1)) * n..][..n];
                let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
                let mut a0 = _mm256_setzero_ps();
                let mut a1 = _mm256_setzero_ps();
                let mut a2 = _mm256_setzero_ps();
                let mut a3 = _mm256_setzero_ps();
                for c in 0..chunks {
                    let i = c * 8;
                    let x = _mm256_loadu_ps(row.as_ptr().add(i));
                    a0 = _mm256_fmadd_ps(x, W::load8_avx2(w0.as_ptr().add(i)), a0);
                    a1 = _mm256_fmadd_ps(x, W::load8_avx2(w1.as_ptr().add(i)), a1);
                    a2 = _mm256_fmadd_ps(x, W::load8_avx2(w2.as_ptr().add(i)), a2);
                    a3 = _mm256_fmadd_ps(x, W::load8_avx2(w3.as_ptr().add(i)), a3);
                }
                let sums = [hsum_ps(a0), hsum_ps(a1), hsum_ps(a2), hsum_ps(a3)];
                for (r, &sum) in sums.iter().enumerate().take(rows) {
                    let w = w(r);
                    let mut acc = sum;
                    for i in chunks * 8..n {
                        acc += row[i] * w[i].widen();
                    }
                    if let Some(bias) = op.bias {
                        acc += bias[o + r];
                    }
                    out_row[o + r] = acc.max(lo).min(hi);
                }
                o += rows;
            }
        }
    }
}

/// `dst = src` widened, eight at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_row<W: FloatWeight>(src: &[W], dst: &mut [f32]) {
    let chunks = src.len() / 8;
    for c in 0..chunks {
        // SAFETY: `c * 8 + 8 <= len` for both slices, which have the same length.
        unsafe {
            _mm256_storeu_ps(
                dst.as_mut_ptr().add(c * 8),
                W::load8_avx2(src.as_ptr().add(c * 8)),
            );
        }
    }
    for (d, w) in dst[chunks * 8..].iter_mut().zip(&src[chunks * 8..]) {
        *d = w.widen();
    }
}

/// The sums of `row`'s first `8 * (n / 8)` products with four weight rows of `n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_f32<W: FloatWeight>(row: &[f32], w: [&[W]; 4]) -> [f32; 4] {
    let n = row.len();
    let [w0, w1, w2, w3] = w;
    // SAFETY: every load reads eight elements at `i` with `i + 8 <= n` from slices of `n`.
    unsafe {
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut a2 = _mm256_setzero_ps();
        let mut a3 = _mm256_setzero_ps();
        for c in 0..n / 8 {
            let i = c * 8;
            let x = _mm256_loadu_ps(row.as_ptr().add(i));
            a0 = _mm256_fmadd_ps(x, W::load8_avx2(w0.as_ptr().add(i)), a0);
            a1 = _mm256_fmadd_ps(x, W::load8_avx2(w1.as_ptr().add(i)), a1);
            a2 = _mm256_fmadd_ps(x, W::load8_avx2(w2.as_ptr().add(i)), a2);
            a3 = _mm256_fmadd_ps(x, W::load8_avx2(w3.as_ptr().add(i)), a3);
        }
        [hsum_ps(a0), hsum_ps(a1), hsum_ps(a2), hsum_ps(a3)]
    }
}

/// The scalar tail, bias and clamp of four output rows; writes `out[o..o + rows]`.
#[inline]
fn finish4<W: FloatWeight, V: FloatWeight>(
    op: &FullyConnectedF32<'_, W>,
    row: &[f32],
    w: [&[V]; 4],
    o: usize,
    rows: usize,
    sums: [f32; 4],
    out: &mut [f32],
) {
    let n = row.len();
    let (lo, hi) = op.activation;
    for (r, &sum) in sums.iter().enumerate().take(rows) {
        let mut acc = sum;
        for i in n / 8 * 8..n {
            acc += row[i] * w[r][i].widen();
        }
        if let Some(bias) = op.bias {
            acc += bias[o + r];
        }
        out[o + r] = acc.max(lo).min(hi);
    }
}
