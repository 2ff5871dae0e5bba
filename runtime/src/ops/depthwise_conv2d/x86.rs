//! x86_64 AVX2/FMA depthwise convolution for the common multiplier-1 case: eight channels
//! per vector (NHWC keeps them contiguous in both the input pixel and the filter tap), taps
//! accumulated in i32 (exact: integer addition wraps like the reference's); the int8 kernel
//! takes two taps per multiply (see [`depthwise_i8_avx2`]). Other multipliers use the
//! reference.

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
use crate::ops::requantize::x86::{Channels8, OutputRange, narrow8, narrow32};

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

/// Filter slots (i16) of the tap-pair layout one pass keeps on the stack (16 KiB).
const PAIRED_WEIGHTS: usize = 8192;

/// Most channels one pass covers (the per-channel constants and the zero-point row are
/// sized by it).
const PASS_CHANNELS: usize = 256;

/// The int8 kernel multiplies two taps per instruction: `vpmaddwd` over the i16 pairs
/// `(x[t][c], x[t + 1][c])` and `(w[t][c], w[t + 1][c])` gives eight channels' sums of two
/// products each. Products of two int8 are at most 2^14 in magnitude, so a pair's sum fits
/// its i32 lane without saturation, and the lanes then add with wrapping like the
/// reference's accumulator.
///
/// The activations enter raw, not `x - zp`: `sum((x - zp) * w) = sum(x * w) - zp * sum(w)`
/// over every tap of the window, the second term a per-channel constant folded into the
/// bias once per call. That is exact only when the taps in the padding read `zp` itself
/// (they then contribute `(zp - zp) * w = 0`, the reference's skipped taps), so they read
/// a row of `zp`.
///
/// The filter is rearranged into that pair layout, and the requantization constants are
/// prepared, once per call for up to [`PASS_CHANNELS`] channels at a time
/// ([`PAIRED_WEIGHTS`] bounds it for large windows); the pixels are walked once per such
/// pass. Channels past the last multiple of eight use the scalar loop.
#[target_feature(enable = "avx2")]
unsafe fn depthwise_i8_avx2(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    let g = &op.geometry;
    let c = g.in_channels;
    let taps = g.kernel_height * g.kernel_width;
    if taps > MAX_STACK_TAPS {
        return super::reference::depthwise_conv2d_i8(op, output);
    }
    let pairs = taps.div_ceil(2);
    let full = c / 8 * 8;
    // At most 32 pairs, so at least 128 channels per pass.
    let span = (PAIRED_WEIGHTS / (16 * pairs) * 8).min(PASS_CHANNELS);
    let mut paired = [0i16; PAIRED_WEIGHTS];
    let mut offsets = [0i32; PASS_CHANNELS];
    let mut requantize = [Channels8::UNSET; PASS_CHANNELS / 8];
    // SAFETY: AVX2 is available (caller).
    let range = unsafe { OutputRange::new(&op.params) };
    let zp = op.params.input_zero_point;
    // Validation keeps the zero point in int8 range.
    let zero_row = [zp as i8; PASS_CHANNELS];
    // Each tap's distance from tap (0, 0) in an NHWC input, for windows inside the image.
    let mut tap_offsets = [0usize; MAX_STACK_TAPS];
    for (t, offset) in tap_offsets.iter_mut().take(taps).enumerate() {
        let (ky, kx) = (t / g.kernel_width, t % g.kernel_width);
        *offset = (ky * g.dilation_height * g.in_width + kx * g.dilation_width) * c;
    }
    let mut from = 0;
    while from < full {
        let to = (from + span).min(full);
        pair_filter(op, (from, to), pairs, &mut paired);
        for (ch, offset) in (from..to).zip(offsets.iter_mut()) {
            let sum = (0..taps).fold(0i32, |s, t| s + i32::from(op.filter[t * c + ch]));
            let bias = op.bias.map_or(0, |bias| bias[ch]);
            *offset = bias.wrapping_sub(zp.wrapping_mul(sum));
        }
        for (block, channels) in (from..to).step_by(8).zip(requantize.iter_mut()) {
            // SAFETY: AVX2 is available (caller); validated multipliers are one or one per
            // channel, and `block + 8 <= to <= channels`.
            *channels = unsafe { Channels8::new(&op.params, block) };
        }
        // The row of `zp`, addressed so that channel `ch` of the pass reads
        // `zero_row[ch - from]`; only the channels of this pass are ever read through it.
        let padding = zero_row.as_ptr().wrapping_sub(from);
        let mut sources = [padding; MAX_STACK_TAPS + 1];
        for_each_window(g, |pixel, window| {
            if let Some(origin) = window.interior_origin() {
                // SAFETY: validation proved every input pixel of the window in bounds, and
                // the window lies inside the image, so each tap's offset from its origin
                // stays inside the input.
                let origin = unsafe { op.input.as_ptr().add(origin * c) };
                for (source, &offset) in sources.iter_mut().zip(&tap_offsets[..taps]) {
                    *source = origin.wrapping_add(offset);
                }
            } else {
                let mut t = 0;
                window.every_tap(|input_pixel| {
                    sources[t] = match input_pixel {
                        // SAFETY: validation proved every input pixel of the window in bounds.
                        Some(p) => unsafe { op.input.as_ptr().add(p * c) },
                        None => padding,
                    };
                    t += 1;
                });
            }
            // An odd window's last pair has a zero weight for its second tap; it reads
            // the padding row, which is always readable.
            sources[taps] = padding;
            let out = &mut output[pixel * c..(pixel + 1) * c];
            let mut c0 = from;
            while c0 < to {
                let vectors = ((to - c0) / 8).min(BLOCK / 8);
                let block = PairBlock {
                    sources: &sources[..2 * pairs],
                    paired: &paired[(c0 - from) / 8 * pairs * 16..],
                    pairs,
                    c0,
                    offsets: &offsets[c0 - from..],
                    requantize: &requantize[(c0 - from) / 8..],
                    range: &range,
                };
                // SAFETY: AVX2 is available (caller); `block` reads channels
                // `c0..c0 + 8 * vectors`, inside this pass, of pixels in bounds or the
                // padding row, and `vectors` blocks of paired weights `pair_filter` wrote.
                unsafe {
                    match vectors {
                        4 => block.finish::<4>(out),
                        3 => block.finish::<3>(out),
                        2 => block.finish::<2>(out),
                        _ => block.finish::<1>(out),
                    }
                }
                c0 += vectors * 8;
            }
        });
        from = to;
    }
    if full < c {
        let mut valid = [(0usize, 0usize); MAX_STACK_TAPS];
        for_each_window(g, |pixel, window| {
            let taps = window.offsets(c, &mut valid);
            for o in full..c {
                let mut acc: i32 = 0;
                for &(xi, wi) in taps {
                    let x = i32::from(op.input[xi + o]) - zp;
                    acc = acc.wrapping_add(x * i32::from(op.filter[wi + o]));
                }
                let acc = acc.wrapping_add(op.bias.map_or(0, |bias| bias[o]));
                output[pixel * c + o] = op.params.output(acc, o);
            }
        });
    }
}

/// Writes the filter's channels `from..to` (a multiple of eight apart) in the tap-pair
/// layout: for each block of eight channels, for each pair `p`, the sixteen i16
/// `w[2p][c], w[2p + 1][c]` of its channels `c` in order (zero past the last tap).
fn pair_filter(
    op: &DepthwiseConv2dI8<'_>,
    (from, to): (usize, usize),
    pairs: usize,
    paired: &mut [i16],
) {
    let c = op.geometry.in_channels;
    let taps = op.geometry.kernel_height * op.geometry.kernel_width;
    let weight = |t: usize, ch: usize| {
        if t < taps {
            i16::from(op.filter[t * c + ch])
        } else {
            0
        }
    };
    let slots = paired.chunks_exact_mut(16);
    let blocks = (from..to)
        .step_by(8)
        .flat_map(|b| (0..pairs).map(move |p| (b, p)));
    for ((b, p), slot) in blocks.zip(slots) {
        for (lane, pair) in slot.chunks_exact_mut(2).enumerate() {
            pair[0] = weight(2 * p, b + lane);
            pair[1] = weight(2 * p + 1, b + lane);
        }
    }
}

/// One pixel's group of up to four 8-channel vectors starting at channel `c0`.
struct PairBlock<'a> {
    /// Each tap's channel-0 address: an input pixel or the padding row.
    sources: &'a [*const i8],
    /// The paired weights from the group's first block on.
    paired: &'a [i16],
    pairs: usize,
    c0: usize,
    /// Bias less `zp * sum(w)`, from channel `c0` on.
    offsets: &'a [i32],
    /// The requantization of each block, from the group's first on.
    requantize: &'a [Channels8],
    range: &'a OutputRange,
}

impl PairBlock<'_> {
    /// Accumulates `V` vectors over every tap pair, adds the per-channel offsets and
    /// writes the requantized bytes into the pixel's `out`.
    ///
    /// # Safety
    /// AVX2 must be available; every source must be readable at channels
    /// `c0..c0 + 8 * V`, and `paired` must hold `V` blocks of `pairs` pairs.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn finish<const V: usize>(&self, out: &mut [i8]) {
        // SAFETY: the caller's contract; the weight loads read `paired` at
        // `(j * pairs + p) * 16 .. + 16`, inside the `V` blocks it holds, and the other
        // loads and stores go through slices of their exact lengths.
        unsafe {
            let mut acc = [_mm256_setzero_si256(); V];
            let w = self.paired.as_ptr();
            for p in 0..self.pairs {
                let (a, b) = (self.sources[2 * p], self.sources[2 * p + 1]);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = self.c0 + 8 * j;
                    let x = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(
                        _mm_loadl_epi64(a.wrapping_add(at).cast()),
                        _mm_loadl_epi64(b.wrapping_add(at).cast()),
                    ));
                    let w = _mm256_loadu_si256(w.add((j * self.pairs + p) * 16).cast());
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, w));
                }
            }
            let mut lanes = [_mm256_setzero_si256(); V];
            for (j, (lanes, acc)) in lanes.iter_mut().zip(acc).enumerate() {
                let offsets = _mm256_loadu_si256(self.offsets[8 * j..][..8].as_ptr().cast());
                *lanes =
                    self.requantize[j].apply::<true>(self.range, _mm256_add_epi32(acc, offsets));
            }
            let out = &mut out[self.c0..][..8 * V];
            if V == 4 {
                let bytes = narrow32([lanes[0], lanes[1 % V], lanes[2 % V], lanes[3 % V]]);
                _mm256_storeu_si256(out.as_mut_ptr().cast(), bytes);
            } else {
                for (out, lanes) in out.chunks_exact_mut(8).zip(lanes) {
                    core::ptr::write_unaligned(out.as_mut_ptr().cast::<i64>(), narrow8(lanes));
                }
            }
        }
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
