//! x86_64 AVX2/FMA convolution: gather two output pixels' input patches (im2col into the
//! scratch), then dot them with four filter rows at a time, so each filter load serves two
//! pixels and each patch load four channels; accumulators are requantized 64 channels at a
//! time with vectors. Pointwise convolutions run as fully-connected layers over the pixels
//! (measured faster here than gathering: `cargo bench -p loam-benches --bench kernels`).
//!
//! int8 patches are stored as `x - zero_point` in i16 (0 in the padding, which is exactly the
//! reference's skipped taps) and multiplied with `vpmaddwd`: pair sums of products bounded by
//! 255 * 128 cannot saturate, and i32 addition wraps like the reference's, so the
//! accumulators are bit-exact.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{Conv2dF32, Conv2dI8, PATCH_PAD, gather_patch, gather_patch_runs};
use crate::isa::Isa;
use crate::ops::requantize::x86::requantize_row;
use crate::ops::{FloatWeight, fully_connected};

/// Output channels accumulated before a vectorized requantization pass.
const BLOCK: usize = 64;

/// The AVX2 int8 kernel; the reference where AVX2 is missing.
pub(super) fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if !Isa::Avx2.available() {
        return super::reference::conv2d_i8(op, output, scratch);
    }
    if op.geometry.is_pointwise() {
        return fully_connected::x86::fully_connected_i8(&op.as_fully_connected(), output);
    }
    // SAFETY: AVX2 and FMA are available (checked above).
    unsafe { conv2d_i8_avx2(op, output, scratch) }
}

/// The AVX2/FMA float kernel, for f32 or f16 filters (widened with F16C as they load); the
/// reference where AVX2 is missing.
pub(super) fn conv2d_f32<W: FloatWeight>(
    op: &Conv2dF32<'_, W>,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    if !Isa::Avx2.available() {
        return super::reference::conv2d_f32(op, output, scratch);
    }
    if op.geometry.is_pointwise() {
        return fully_connected::x86::fully_connected_f32(&op.as_fully_connected(), output);
    }
    // SAFETY: AVX2 and FMA are available (checked above).
    unsafe { conv2d_f32_avx2(op, output, scratch) }
}

/// Widens `src` to `x - zp` in i16 into `dst` (same length), sixteen at a time.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen_i8(src: &[i8], zp: i16, dst: &mut [i16]) {
    // SAFETY: AVX2 is available (caller); loads and stores cover `c..c + 16` with
    // `c + 16 <= len`, and `dst` is exactly as long as `src`.
    unsafe {
        let n = src.len().min(dst.len());
        let zps = _mm256_set1_epi16(zp);
        let mut c = 0;
        while c + 16 <= n {
            let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(src.as_ptr().add(c).cast()));
            _mm256_storeu_si256(dst.as_mut_ptr().add(c).cast(), _mm256_sub_epi16(x, zps));
            c += 16;
        }
        for (d, &x) in dst[c..n].iter_mut().zip(&src[c..n]) {
            *d = i16::from(x) - zp;
        }
    }
}

/// Gathers the patch of output pixel `p` for channel group `group` as `x - zp` in i16 (0 in
/// the padding): the shared gather, with each contiguous run widened by vectors.
#[target_feature(enable = "avx2")]
unsafe fn gather_i8(op: &Conv2dI8<'_>, p: usize, group: usize, dst: &mut [i16]) {
    let zp = op.params.input_zero_point as i16;
    gather_patch_runs(&op.geometry, op.input, p, group, dst, 0, |src, d| {
        // SAFETY: AVX2 is available (this function's own requirement).
        unsafe { widen_i8(src, zp, d) }
    });
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// Sums the eight lanes of each of `v[0..4]` for two pixels: `[r0p0, r1p0, r2p0, r3p0, r0p1,
/// r1p1, r2p1, r3p1]` (a `vphaddd` tree; addition order differs from the reference, which is
/// irrelevant for wrapping integer sums).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn reduce4x2(acc: &[[__m256i; 2]; 4]) -> __m256i {
    // SAFETY: AVX2 is available (caller); register-only intrinsics.
    unsafe {
        let pixel = |j: usize| {
            let h01 = _mm256_hadd_epi32(acc[0][j], acc[1][j]);
            let h23 = _mm256_hadd_epi32(acc[2][j], acc[3][j]);
            let h = _mm256_hadd_epi32(h01, h23);
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
        };
        _mm256_set_m128i(pixel(1), pixel(0))
    }
}

/// Dot products of two i16 patches with four int8 filter rows, all of length `k`, as
/// `[r0p0, r1p0, r2p0, r3p0, r0p1, r1p1, r2p1, r3p1]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot4x2_i8(p0: &[i16], p1: &[i16], rows: [&[i8]; 4], k: usize) -> [i32; 8] {
    // SAFETY: AVX2 is available (caller); patch loads read 16 elements at `i < k` from
    // patches of `k + PATCH_PAD` elements, weight loads 16 bytes at `i + 16 <= k` from rows of
    // exactly `k` (or from a local buffer).
    unsafe {
        let (p0, p1) = (&p0[..k + PATCH_PAD], &p1[..k + PATCH_PAD]);
        let rows = rows.map(|r| &r[..k]);
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        let chunks = k / 16;
        for c in 0..chunks {
            let i = c * 16;
            let x0 = _mm256_loadu_si256(p0.as_ptr().add(i).cast());
            let x1 = _mm256_loadu_si256(p1.as_ptr().add(i).cast());
            for (r, row) in rows.iter().enumerate() {
                let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.as_ptr().add(i).cast()));
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(x0, w));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(x1, w));
            }
        }
        let rest = k - chunks * 16;
        if rest > 0 {
            // The last partial chunk: weights copied into zeroed 16-byte buffers, patch values
            // read past `k` into the slack, where they meet zero weights.
            let i = chunks * 16;
            let x0 = _mm256_loadu_si256(p0.as_ptr().add(i).cast());
            let x1 = _mm256_loadu_si256(p1.as_ptr().add(i).cast());
            for (r, row) in rows.iter().enumerate() {
                let mut w = [0i8; 16];
                w[..rest].copy_from_slice(&row[i..k]);
                let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().cast()));
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(x0, w));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(x1, w));
            }
        }
        let mut out = [0i32; 8];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), reduce4x2(&acc));
        out
    }
}

/// Float counterpart of [`dot4x2_i8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4x2_f32<W: FloatWeight>(
    p0: &[f32],
    p1: &[f32],
    rows: [&[W]; 4],
    k: usize,
) -> [[f32; 2]; 4] {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let (p0, p1) = (&p0[..k + PATCH_PAD], &p1[..k + PATCH_PAD]);
        let rows = rows.map(|r| &r[..k]);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let chunks = k / 8;
        for c in 0..chunks {
            let i = c * 8;
            // SAFETY: `i + 8 <= k` and every slice has exactly `k` elements.
            unsafe {
                let x0 = _mm256_loadu_ps(p0.as_ptr().add(i));
                let x1 = _mm256_loadu_ps(p1.as_ptr().add(i));
                for (r, row) in rows.iter().enumerate() {
                    let w = W::load8_avx2(row.as_ptr().add(i));
                    acc[r][0] = _mm256_fmadd_ps(x0, w, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(x1, w, acc[r][1]);
                }
            }
        }
        let rest = k - chunks * 8;
        if rest > 0 {
            let i = chunks * 8;
            let x0 = _mm256_loadu_ps(p0.as_ptr().add(i));
            let x1 = _mm256_loadu_ps(p1.as_ptr().add(i));
            for (r, row) in rows.iter().enumerate() {
                let mut w = [0f32; 8];
                for (d, s) in w.iter_mut().zip(&row[i..k]) {
                    *d = s.widen();
                }
                let w = _mm256_loadu_ps(w.as_ptr());
                acc[r][0] = _mm256_fmadd_ps(x0, w, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x1, w, acc[r][1]);
            }
        }
        let mut out = [[0f32; 2]; 4];
        for r in 0..4 {
            for j in 0..2 {
                out[r][j] = hsum_ps(acc[r][j]);
            }
        }
        out
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_i8_avx2(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let g = &op.geometry;
        let k = g.patch_len();
        let (cg_out, oc_total) = (g.group_out_channels(), g.out_channels);
        let pixels = g.batch * g.out_height * g.out_width;
        let (patch0, rest) = scratch.split_at_mut(k + PATCH_PAD);
        let patch1 = &mut rest[..k + PATCH_PAD];
        let mut acc0 = [0i32; BLOCK];
        let mut acc1 = [0i32; BLOCK];
        let mut p = 0;
        while p < pixels {
            let pair = p + 1 < pixels;
            for group in 0..g.groups {
                gather_i8(op, p, group, patch0);
                if pair {
                    gather_i8(op, p + 1, group, patch1);
                } else {
                    patch1.copy_from_slice(patch0);
                }
                let first = group * cg_out;
                let mut block = first;
                while block < first + cg_out {
                    let len = (first + cg_out - block).min(BLOCK);
                    let mut oc = block;
                    while oc < block + len {
                        let rows = (block + len - oc).min(4);
                        let row = |r: usize| {
                            let o = oc + r.min(rows - 1);
                            &op.filter[o * k..(o + 1) * k]
                        };
                        let sums = dot4x2_i8(patch0, patch1, [row(0), row(1), row(2), row(3)], k);
                        acc0[oc - block..oc - block + rows].copy_from_slice(&sums[..rows]);
                        acc1[oc - block..oc - block + rows].copy_from_slice(&sums[4..4 + rows]);
                        oc += rows;
                    }
                    let out = &mut output[p * oc_total + block..][..len];
                    requantize_row(&op.params, &acc0[..len], op.bias, block, out);
                    if pair {
                        let out = &mut output[(p + 1) * oc_total + block..][..len];
                        requantize_row(&op.params, &acc1[..len], op.bias, block, out);
                    }
                    block += len;
                }
            }
            p += 2;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn conv2d_f32_avx2<W: FloatWeight>(
    op: &Conv2dF32<'_, W>,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let g = &op.geometry;
        let k = g.patch_len();
        let (cg_out, oc_total) = (g.group_out_channels(), g.out_channels);
        let pixels = g.batch * g.out_height * g.out_width;
        let (lo, hi) = op.activation;
        let (patch0, rest) = scratch.split_at_mut(k + PATCH_PAD);
        let patch1 = &mut rest[..k + PATCH_PAD];
        // The slack past each patch is read by the last partial chunk: it must be finite.
        patch0[k..].fill(0.0);
        patch1[k..].fill(0.0);
        let mut p = 0;
        while p < pixels {
            let pair = p + 1 < pixels;
            for group in 0..g.groups {
                gather_patch(g, op.input, p, group, patch0, 0.0f32, |x: f32| x);
                if pair {
                    gather_patch(g, op.input, p + 1, group, patch1, 0.0f32, |x: f32| x);
                } else {
                    patch1.copy_from_slice(patch0);
                }
                let first = group * cg_out;
                let mut oc = first;
                while oc < first + cg_out {
                    let rows = (first + cg_out - oc).min(4);
                    let row = |r: usize| {
                        let o = oc + r.min(rows - 1);
                        &op.filter[o * k..(o + 1) * k]
                    };
                    let sums = dot4x2_f32(patch0, patch1, [row(0), row(1), row(2), row(3)], k);
                    for (r, sum) in sums.iter().enumerate().take(rows) {
                        let o = oc + r;
                        let bias = op.bias.map_or(0.0, |b| b[o]);
                        output[p * oc_total + o] = (sum[0] + bias).max(lo).min(hi);
                        if pair {
                            output[(p + 1) * oc_total + o] = (sum[1] + bias).max(lo).min(hi);
                        }
                    }
                    oc += rows;
                }
            }
            p += 2;
        }
    }
}
