//! x86_64 AVX2 fast paths, vectorized across channels (contiguous in NHWC). Each lane does
//! exactly what the reference does for its channel, in the same order, so every kernel here
//! is bit-exact:
//!
//! - max: `vpmaxsb` / `vmaxps(x, max)`, which keeps `max` when `x` is NaN, as `f32::max` does;
//! - float sums: the window is still added in row-major order, then divided (not multiplied
//!   by a reciprocal);
//! - int8 averages: the i32 sums are exact, and TFLite's truncating `(sum ± count/2) / count`
//!   is done in f64. Both operands are exact in f64; when the quotient is an integer, the
//!   correctly rounded division gives it exactly, and otherwise it lies at least `1 / count >=
//!   2^-23` from any integer while the rounding error is at most `2^-53 * 2^8` (the quotient of
//!   an int8 average is below 2^8 in magnitude), so truncation cannot cross an integer.
//!
//! Channel tails narrower than a vector run the reference's per-output code.

// Before Rust 1.87 the SIMD intrinsics are `unsafe fn`s even inside `#[target_feature]`
// functions; the crate supports 1.85, so the bodies below are `unsafe` blocks, which newer
// compilers partly consider redundant.
#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::reference;
use super::{GlobalAveragePoolI8Params, GlobalPoolShape, Pool2dGeometry, channel, pixel};
use crate::isa::Isa;

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) {
            if Isa::Avx2.available() {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { $avx2($($arg),*) }
            } else {
                reference::$name($($arg),*)
            }
        }
    };
}

dispatch!(
    /// AVX2 int8 max pooling; the reference where AVX2 is missing.
    max_pool2d_i8, max_pool2d_i8_avx2,
    (g: &Pool2dGeometry, activation: (i8, i8), input: &[i8], output: &mut [i8])
);
dispatch!(
    /// AVX2 int8 average pooling; the reference where AVX2 is missing.
    average_pool2d_i8, average_pool2d_i8_avx2,
    (g: &Pool2dGeometry, activation: (i8, i8), input: &[i8], output: &mut [i8])
);
dispatch!(
    /// AVX2 float max pooling; the reference where AVX2 is missing.
    max_pool2d_f32, max_pool2d_f32_avx2,
    (g: &Pool2dGeometry, activation: (f32, f32), input: &[f32], output: &mut [f32])
);
dispatch!(
    /// AVX2 float average pooling; the reference where AVX2 is missing.
    average_pool2d_f32, average_pool2d_f32_avx2,
    (g: &Pool2dGeometry, activation: (f32, f32), input: &[f32], output: &mut [f32])
);
dispatch!(
    /// AVX2 int8 global average; the reference where AVX2 is missing.
    global_average_pool_i8, global_average_pool_i8_avx2,
    (s: &GlobalPoolShape, params: &GlobalAveragePoolI8Params, input: &[i8], output: &mut [i8])
);
dispatch!(
    /// AVX2 float global average; the reference where AVX2 is missing.
    global_average_pool_f32, global_average_pool_f32_avx2,
    (s: &GlobalPoolShape, input: &[f32], output: &mut [f32])
);

#[target_feature(enable = "avx2")]
unsafe fn max_pool2d_i8_avx2(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let (lo, hi) = (
            _mm256_set1_epi8(activation.0),
            _mm256_set1_epi8(activation.1),
        );
        let ch = g.channels;
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let mut c = 0;
            while c + 32 <= ch {
                let mut max = _mm256_set1_epi8(i8::MIN);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        // SAFETY: `c + 32 <= ch == p.len()`.
                        let v = unsafe { _mm256_loadu_si256(p.as_ptr().add(c).cast()) };
                        max = _mm256_max_epi8(max, v);
                    }
                }
                let v = _mm256_min_epi8(_mm256_max_epi8(max, lo), hi);
                // SAFETY: `c + 32 <= ch == out.len()`.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(c).cast(), v) };
                c += 32;
            }
            if c + 16 <= ch {
                let mut max = _mm_set1_epi8(i8::MIN);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        // SAFETY: `c + 16 <= ch == p.len()`.
                        let v = unsafe { _mm_loadu_si128(p.as_ptr().add(c).cast()) };
                        max = _mm_max_epi8(max, v);
                    }
                }
                let v = _mm_min_epi8(
                    _mm_max_epi8(max, _mm256_castsi256_si128(lo)),
                    _mm256_castsi256_si128(hi),
                );
                // SAFETY: `c + 16 <= ch == out.len()`.
                unsafe { _mm_storeu_si128(out.as_mut_ptr().add(c).cast(), v) };
                c += 16;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::max_i8(g, input, channel(w, k), activation);
            }
        });
    }
}

/// TFLite's `(sum ± count/2) / count` (truncating) on eight lanes; exact, see the module
/// comment. `half` holds `count / 2` and `count` the count, in every lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rounded_average8(sum: __m256i, half: __m256i, count: __m256d) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let positive = _mm256_cmpgt_epi32(sum, _mm256_setzero_si256());
        let n = _mm256_blendv_epi8(
            _mm256_sub_epi32(sum, half),
            _mm256_add_epi32(sum, half),
            positive,
        );
        let lo = _mm256_div_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(n)), count);
        let hi = _mm256_div_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(n)), count);
        _mm256_set_m128i(_mm256_cvttpd_epi32(hi), _mm256_cvttpd_epi32(lo))
    }
}

/// Eight int8 at `p`, sign-extended to i32.
///
/// # Safety
/// AVX2 must be available and eight bytes readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_i8x8(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees AVX2 and eight readable bytes at `p`.
    unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())) }
}

/// Narrows eight i32 already in int8 range and stores them at `p`.
///
/// # Safety
/// AVX2 must be available and eight bytes writable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_i8x8(p: *mut i8, v: __m256i) {
    // SAFETY: the caller guarantees AVX2 and eight writable bytes at `p`.
    unsafe {
        let words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        _mm_storel_epi64(p.cast(), _mm_packs_epi16(words, words))
    }
}

/// The i32 sums of channels `c..c + 8 * N` over a window (image `b`, rows `y0..y1`,
/// columns `x0..x1`), in the reference's order. A window row's pixels are one run of
/// `(x1 - x0) * channels` bytes, read through that run, where reading each pixel through
/// its own bounds-checked slice, eight channels at a time, took DS-CNN's 125-pixel window
/// over 64 channels 1.4 us.
///
/// # Safety
/// AVX2 must be available; `c + 8 * N` must not exceed the channels, and the window must
/// lie in the input.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn window_sums<const N: usize>(
    g: &Pool2dGeometry,
    input: &[i8],
    (b, (y0, y1), (x0, x1)): (usize, (usize, usize), (usize, usize)),
    c: usize,
) -> [__m256i; N] {
    // SAFETY: the caller guarantees AVX2.
    let mut sums = [unsafe { _mm256_setzero_si256() }; N];
    for y in y0..y1 {
        let run = &input[reference::at(g, b, y, x0, 0)..][..(x1 - x0) * g.channels];
        for pixel in run.chunks_exact(g.channels) {
            for (i, sum) in sums.iter_mut().enumerate() {
                // SAFETY: AVX2 (caller); `c + 8 * N <= channels == pixel.len()` (caller).
                unsafe {
                    let v = load_i8x8(pixel.as_ptr().add(c + 8 * i));
                    *sum = _mm256_add_epi32(*sum, v);
                }
            }
        }
    }
    sums
}

#[target_feature(enable = "avx2")]
unsafe fn average_pool2d_i8_avx2(
    g: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let lo = _mm256_set1_epi32(activation.0.into());
        let hi = _mm256_set1_epi32(activation.1.into());
        let ch = g.channels;
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            // At most MAX_WINDOW elements (validated).
            let count = ((y1 - y0) * (x1 - x0)) as i32;
            let half = _mm256_set1_epi32(count / 2);
            let divisor = _mm256_set1_pd(f64::from(count));
            let window = (b, (y0, y1), (x0, x1));
            let mut c = 0;
            while c + 32 <= ch {
                let sums = window_sums::<4>(g, input, window, c);
                for (i, &sum) in sums.iter().enumerate() {
                    let v = _mm256_min_epi32(
                        _mm256_max_epi32(rounded_average8(sum, half, divisor), lo),
                        hi,
                    );
                    // SAFETY: `c + 32 <= ch == out.len()`.
                    unsafe { store_i8x8(out.as_mut_ptr().add(c + 8 * i), v) };
                }
                c += 32;
            }
            while c + 8 <= ch {
                let [sum] = window_sums::<1>(g, input, window, c);
                let v = _mm256_min_epi32(
                    _mm256_max_epi32(rounded_average8(sum, half, divisor), lo),
                    hi,
                );
                // SAFETY: `c + 8 <= ch == out.len()`.
                unsafe { store_i8x8(out.as_mut_ptr().add(c), v) };
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::average_i8(g, input, channel(w, k), activation);
            }
        });
    }
}

#[target_feature(enable = "avx2")]
unsafe fn max_pool2d_f32_avx2(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let (lo, hi) = (_mm256_set1_ps(activation.0), _mm256_set1_ps(activation.1));
        let ch = g.channels;
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let mut c = 0;
            while c + 8 <= ch {
                let mut max = _mm256_set1_ps(f32::MIN);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        // SAFETY: `c + 8 <= ch == p.len()`.
                        let v = unsafe { _mm256_loadu_ps(p.as_ptr().add(c)) };
                        // `vmaxps` returns its second operand when either is NaN.
                        max = _mm256_max_ps(v, max);
                    }
                }
                let v = _mm256_min_ps(_mm256_max_ps(max, lo), hi);
                // SAFETY: `c + 8 <= ch == out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c), v) };
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::max_f32(g, input, channel(w, k), activation);
            }
        });
    }
}

#[target_feature(enable = "avx2")]
unsafe fn average_pool2d_f32_avx2(
    g: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let (lo, hi) = (_mm256_set1_ps(activation.0), _mm256_set1_ps(activation.1));
        let ch = g.channels;
        for_each_pixel!(g, output, |w, out| {
            let (b, (y0, y1), (x0, x1), _) = w;
            let count = _mm256_set1_ps(((y1 - y0) * (x1 - x0)) as f32);
            let mut c = 0;
            while c + 8 <= ch {
                let mut total = _mm256_setzero_ps();
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = pixel(g, input, b, y, x);
                        // SAFETY: `c + 8 <= ch == p.len()`.
                        let v = unsafe { _mm256_loadu_ps(p.as_ptr().add(c)) };
                        total = _mm256_add_ps(total, v);
                    }
                }
                // A NaN average becomes `lo` (`vmaxps` returns its second operand), as
                // `f32::max` makes it.
                let v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(total, count), lo), hi);
                // SAFETY: `c + 8 <= ch == out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c), v) };
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::average_f32(g, input, channel(w, k), activation);
            }
        });
    }
}

#[target_feature(enable = "avx2")]
unsafe fn global_average_pool_i8_avx2(
    s: &GlobalPoolShape,
    params: &GlobalAveragePoolI8Params,
    input: &[i8],
    output: &mut [i8],
) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let ch = s.channels;
        let area = s.count();
        let zp = _mm256_set1_epi32(params.input_zero_point);
        let images = input.chunks_exact(area * ch);
        for (image, out) in images.zip(output.chunks_exact_mut(ch)) {
            let mut c = 0;
            while c + 8 <= ch {
                let mut sum = _mm256_setzero_si256();
                for p in image.chunks_exact(ch) {
                    // SAFETY: `c + 8 <= ch == p.len()`.
                    let v = unsafe { load_i8x8(p.as_ptr().add(c)) };
                    sum = _mm256_add_epi32(sum, _mm256_sub_epi32(v, zp));
                }
                let mut sums = [0i32; 8];
                // SAFETY: `sums` has room for eight i32.
                unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), sum) };
                for (o, &acc) in out[c..c + 8].iter_mut().zip(&sums) {
                    // At most MAX_WINDOW elements (validated).
                    *o = reference::finish_mean(acc, area as i32, params);
                }
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::mean_i8(s, image, k, params);
            }
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn global_average_pool_f32_avx2(s: &GlobalPoolShape, input: &[f32], output: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2; raw pointer accesses below are bounds-justified
    // where they occur.
    unsafe {
        let ch = s.channels;
        let area = s.count();
        let count = _mm256_set1_ps(area as f32);
        let images = input.chunks_exact(area * ch);
        for (image, out) in images.zip(output.chunks_exact_mut(ch)) {
            let mut c = 0;
            while c + 8 <= ch {
                let mut total = _mm256_setzero_ps();
                for p in image.chunks_exact(ch) {
                    // SAFETY: `c + 8 <= ch == p.len()`.
                    total = _mm256_add_ps(total, unsafe { _mm256_loadu_ps(p.as_ptr().add(c)) });
                }
                let v = _mm256_div_ps(total, count);
                // SAFETY: `c + 8 <= ch == out.len()`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c), v) };
                c += 8;
            }
            for (k, o) in out.iter_mut().enumerate().skip(c) {
                *o = reference::mean_f32(s, image, k);
            }
        }
    }
}
