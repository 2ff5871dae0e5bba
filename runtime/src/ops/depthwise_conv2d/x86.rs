//! x86_64 AVX2/FMA depthwise convolution for the common multiplier-1 case: eight channels
//! per vector (NHWC keeps them contiguous in both the input pixel and the filter tap), taps
//! accumulated in i32 (exact: integer addition wraps like the reference's). Other multipliers
//! use the reference.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{
    DepthwiseConv2dF32, DepthwiseConv2dI8, DepthwiseConv2dI16, Eights, MAX_STACK_TAPS,
    depthwise_i16_by_eights, for_each_window,
};
use crate::isa::Isa;
use crate::ops::FloatWeight;
use crate::ops::requantize::x86::requantize8;

/// The AVX2 int8 kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    if !Isa::Avx2.available() || g.out_channels != g.in_channels {
        return super::reference::depthwise_conv2d_i8(op, output);
    }
    // SAFETY: AVX2 is available (checked above).
    unsafe { depthwise_i8_avx2(op, output) }
}

/// The AVX2/FMA float kernel (multiplier 1); the reference otherwise.
pub(super) fn depthwise_conv2d_f32<W: FloatWeight>(
    op: &DepthwiseConv2dF32<'_, W>,
    output: &mut [f32],
) {
    let g = &op.geometry;
    if !Isa::Avx2.available() || g.out_channels != g.in_channels {
        return super::reference::depthwise_conv2d_f32(op, output);
    }
    // SAFETY: AVX2 and FMA are available (checked above).
    unsafe { depthwise_f32_avx2(op, output) }
}

/// The AVX2 16x8 kernel (multiplier 1, windows of at most `MAX_STACK_TAPS`); the reference
/// otherwise: eight channels per vector, `vpmulld` of the sign-extended activations and
/// weights into i32 lanes.
pub(super) fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    if !Isa::Avx2.available() {
        return super::reference::depthwise_conv2d_i16(op, output);
    }
    // SAFETY: AVX2 is available (checked above).
    unsafe { depthwise_i16_avx2(op, output) }
}

#[target_feature(enable = "avx2")]
unsafe fn depthwise_i16_avx2(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) {
    depthwise_i16_by_eights(
        op,
        output,
        Eights::new(
            // SAFETY: AVX2 is available (caller), here and in the closures below.
            unsafe { _mm256_setzero_si256() },
            |acc, x: &[i16; 8], w: &[i8; 8]| {
                // SAFETY: AVX2 is available; the loads read the 16 and 8 bytes of `x`, `w`.
                unsafe {
                    let x = _mm256_cvtepi16_epi32(_mm_loadu_si128(x.as_ptr().cast()));
                    let w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(w.as_ptr().cast()));
                    _mm256_add_epi32(acc, _mm256_mullo_epi32(x, w))
                }
            },
            |acc| {
                let mut lanes = [0i32; 8];
                // SAFETY: AVX2 is available; the store writes the 32 bytes of `lanes`.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
                lanes
            },
        ),
    );
}

/// Channels accumulated at once (four vectors of eight).
const BLOCK: usize = 32;

#[target_feature(enable = "avx2")]
unsafe fn depthwise_i8_avx2(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    // SAFETY: AVX2 is available (caller). Every load reads 8 bytes at `tap + c` with
    // `c + 8 <= channels`, from an input pixel or filter tap of `channels` bytes that
    // validation proved in bounds; stores write 8 bytes inside the output pixel.
    unsafe {
        let g = &op.geometry;
        let c = g.in_channels;
        if g.kernel_height * g.kernel_width > MAX_STACK_TAPS {
            return super::reference::depthwise_conv2d_i8(op, output);
        }
        let zp = _mm256_set1_epi32(op.params.input_zero_point);
        let input = op.input.as_ptr();
        let filter = op.filter.as_ptr();
        let full = c / 8 * 8;
        let mut offsets = [(0usize, 0usize); MAX_STACK_TAPS];
        for_each_window(g, |pixel, window| {
            let taps = window.offsets(c, &mut offsets);
            let out_base = pixel * c;
            let mut c0 = 0;
            while c0 < full {
                let vectors = ((full - c0) / 8).min(BLOCK / 8);
                let mut acc = [_mm256_setzero_si256(); BLOCK / 8];
                for &(xi, wi) in taps {
                    for (j, a) in acc.iter_mut().enumerate().take(vectors) {
                        let at = c0 + 8 * j;
                        let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(input.add(xi + at).cast()));
                        let w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(filter.add(wi + at).cast()));
                        *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(_mm256_sub_epi32(x, zp), w));
                    }
                }
                for (j, a) in acc.iter().enumerate().take(vectors) {
                    let at = c0 + 8 * j;
                    let mut v = *a;
                    if let Some(bias) = op.bias {
                        v = _mm256_add_epi32(
                            v,
                            _mm256_loadu_si256(bias[at..at + 8].as_ptr().cast()),
                        );
                    }
                    let bytes = requantize8(&op.params, v, at);
                    core::ptr::write_unaligned(
                        output[out_base + at..out_base + at + 8]
                            .as_mut_ptr()
                            .cast::<i64>(),
                        bytes,
                    );
                }
                c0 += vectors * 8;
            }
            for o in full..c {
                let mut acc: i32 = 0;
                for &(xi, wi) in taps {
                    let x = i32::from(op.input[xi + o]) - op.params.input_zero_point;
                    acc = acc.wrapping_add(x * i32::from(op.filter[wi + o]));
                }
                let acc = acc.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
                output[out_base + o] = op.params.output(acc, o);
            }
        });
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn depthwise_f32_avx2<W: FloatWeight>(op: &DepthwiseConv2dF32<'_, W>, output: &mut [f32]) {
    // SAFETY: the caller guarantees the target features are available; raw
    // pointer accesses below are bounds-justified where they occur.
    unsafe {
        let g = &op.geometry;
        let c = g.in_channels;
        let chunks = c / 8;
        let (lo, hi) = op.activation;
        let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        for b in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let out_base = ((b * g.out_height + oy) * g.out_width + ox) * c;
                    for chunk in 0..chunks {
                        let c0 = chunk * 8;
                        let mut acc = _mm256_setzero_ps();
                        for ky in 0..g.kernel_height {
                            let Some(iy) = g.input_row(oy, ky) else {
                                continue;
                            };
                            for kx in 0..g.kernel_width {
                                let Some(ix) = g.input_col(ox, kx) else {
                                    continue;
                                };
                                let x = &op.input
                                    [((b * g.in_height + iy) * g.in_width + ix) * c + c0..][..8];
                                let w = &op.filter[(ky * g.kernel_width + kx) * c + c0..][..8];
                                // SAFETY: both slices hold exactly 8 elements.
                                unsafe {
                                    acc = _mm256_fmadd_ps(
                                        _mm256_loadu_ps(x.as_ptr()),
                                        W::load8_avx2(w.as_ptr()),
                                        acc,
                                    );
                                }
                            }
                        }
                        let out = &mut output[out_base + c0..][..8];
                        // SAFETY: `out` (and the bias run, when present) hold exactly 8 floats.
                        unsafe {
                            if let Some(bias) = op.bias {
                                acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias[c0..][..8].as_ptr()));
                            }
                            // max then min, like the reference's `max(lo).min(hi)`.
                            acc = _mm256_min_ps(_mm256_max_ps(acc, vlo), vhi);
                            _mm256_storeu_ps(out.as_mut_ptr(), acc);
                        }
                    }
                    for o in chunks * 8..c {
                        let mut acc = 0.0f32;
                        for ky in 0..g.kernel_height {
                            let Some(iy) = g.input_row(oy, ky) else {
                                continue;
                            };
                            for kx in 0..g.kernel_width {
                                let Some(ix) = g.input_col(ox, kx) else {
                                    continue;
                                };
                                acc += op.input[((b * g.in_height + iy) * g.in_width + ix) * c + o]
                                    * op.filter[(ky * g.kernel_width + kx) * c + o].widen();
                            }
                        }
                        if let Some(bias) = op.bias {
                            acc += bias[o];
                        }
                        output[out_base + o] = acc.max(lo).min(hi);
                    }
                }
            }
        }
    }
}
