//! x86_64 AVX-512 VNNI depthwise convolution (multiplier 1), a whole output row at a time.
//!
//! **Rows as flat vectors.** An NHWC output row is `out_width * channels` bytes, and for a
//! stride of one, the bytes that one tap of the filter reads for it are just as contiguous
//! in the input row: the output byte `ox * C + c` reads input byte `(ox + kx) * C + c`. So
//! the kernel walks the row 64 bytes at a time whatever the channel count: eight pixels of
//! eight channels (MobileNet's first depthwise layer, where the channel-vectorized AVX2
//! kernel left most of every vector empty), or one pixel of 64. Strides above one split
//! each input row into phases (the even and the odd pixels for a stride of two), which
//! makes the taps contiguous again; dilation only moves where a tap starts.
//!
//! **Padded rows.** Each output row first copies the input rows it reads, once per kernel
//! row, into padded, phase-split rows on the stack: `zp` in the padding, and every byte
//! flipped to `x + 128`, the unsigned operand `vpdpbusd` takes (see
//! [`crate::ops::x86_vnni`] for why that, with the bias less `(128 + zp) * sum(w)`, gives
//! the layer's sums exactly). The 64-byte loads then never leave those rows.
//!
//! **Four taps per instruction.** Four taps' 64 bytes are interleaved into quads by two
//! rounds of unpacking (bytes, then words), so that one `vpdpbusd` adds four taps' products
//! for sixteen positions of the row. The unpacking works within 128-bit lanes, so the four
//! accumulators hold the 64 positions out of order: accumulator `k`, lane `i` holds
//! position `16 * (i / 4) + 4 * k + i % 4`. The filter is interleaved the same way when it
//! is packed, the requantization constants are laid out in that order, and the saturating
//! packs that narrow the results (dwords to words, words to bytes) undo exactly that
//! permutation, so the bytes land in order.
//!
//! **Patterns.** Position `p` of the row's chunk `j` is channel `(64 * j + p) % C`, so the
//! chunks of a row repeat with a period of `C / gcd(C, 64)` chunks: one for every `C` that
//! divides 64 or is a multiple of it, three for 24 or 96. The filter and the constants are
//! packed once per call for each of those patterns; layers with too many patterns, too
//! large a window or too long a row use the AVX2 kernel.
//!
//! Inline assembly, like the other VNNI kernels, because the AVX-512 intrinsics are stable
//! only from Rust 1.89 while the crate supports 1.85.

#![allow(unused_unsafe)]

use core::arch::asm;
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::DepthwiseConv2dI8;
use crate::isa::Isa;
use crate::ops::conv2d::{ConvGeometry, Held, RowSlots};
use crate::ops::x86_vnni::flip_copy;

/// Bytes of a row the kernel takes per step (one zmm).
const VECTOR: usize = 64;
/// Most groups of four taps (a 5x5 window is seven).
const MAX_QUADS: usize = 8;
/// Most distinct chunk patterns (see the module comment).
const MAX_PATTERNS: usize = 12;
/// Bytes of packed filter kept on the stack.
const WEIGHT_BYTES: usize = 16 * 1024;
/// Bytes of padded input rows kept on the stack.
const ROW_BYTES: usize = 16 * 1024;
/// Most channels (the bias offsets are kept per channel).
const MAX_CHANNELS: usize = 1024;

/// The requantization constants of one accumulator, lane by lane in its position order:
/// what [`crate::ops::requantize::x86_avx512`] derives from a multiplier pair, prepared once.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct LaneConstants {
    /// Bias less `(128 + zp) * sum(w)`.
    offset: [i32; 16],
    /// Left exponent.
    left: [i32; 16],
    /// Mantissa.
    mantissa: [i32; 16],
    /// The odd lanes' mantissas, each in the even lane below it (where `vpmuldq` reads).
    odd_mantissa: [i32; 16],
    /// Right exponent.
    right: [i32; 16],
    /// `2^right - 1`, the bits the rounding divide drops.
    mask: [i32; 16],
    /// `mask >> 1`, the remainder above which it rounds away (one less for negatives).
    threshold: [i32; 16],
}

/// A pattern's constants: one block per accumulator.
type PatternConstants = [LaneConstants; 4];

/// How the padded, phase-split copy of an input row is laid out: `stride` phases of
/// `phase_len` bytes, each holding `positions` pixels of `channels` bytes (and slack).
#[derive(Clone, Copy)]
pub(super) struct PhaseRows {
    pub(super) channels: usize,
    pub(super) stride: usize,
    /// Bytes of one phase of one padded row (with slack for the last loads).
    pub(super) phase_len: usize,
    /// Pixels of one phase.
    pub(super) positions: usize,
}

/// How a layer maps onto the kernel.
struct Layout {
    channels: usize,
    taps: usize,
    quads: usize,
    patterns: usize,
    stride: usize,
    /// Bytes of one phase of one padded row (with a vector of slack).
    phase_len: usize,
    /// Pixels of one phase.
    positions: usize,
}

impl Layout {
    fn phase_rows(&self) -> PhaseRows {
        PhaseRows {
            channels: self.channels,
            stride: self.stride,
            phase_len: self.phase_len,
            positions: self.positions,
        }
    }
}

impl Layout {
    /// The layout, or `None` where the kernel does not take the layer.
    fn of(g: &ConvGeometry) -> Option<Layout> {
        let c = g.in_channels;
        let taps = g.kernel_height * g.kernel_width;
        let quads = taps.div_ceil(4);
        if g.out_channels != c || c == 0 || c > MAX_CHANNELS || quads > MAX_QUADS || taps == 0 {
            return None;
        }
        let patterns = c >> c.trailing_zeros().min(6);
        if patterns > MAX_PATTERNS || patterns * quads * 4 * VECTOR > WEIGHT_BYTES {
            return None;
        }
        let stride = g.stride_width;
        // The furthest tap starts `(kw - 1) * d / s` pixels into its phase.
        let reach = (g.kernel_width - 1) * g.dilation_width / stride;
        let positions = g.out_width + reach;
        let phase_len = positions.checked_mul(c)?.checked_add(VECTOR)?;
        let rows = g
            .kernel_height
            .checked_mul(stride)?
            .checked_mul(phase_len)?;
        (rows <= ROW_BYTES).then_some(Layout {
            channels: c,
            taps,
            quads,
            patterns,
            stride,
            phase_len,
            positions,
        })
    }
}

/// Whether the chunk kernel takes this layer (where the quad-row kernel does not; the others
/// go to the AVX2 kernel); for tests that must know their layers reach it.
#[cfg(test)]
pub(super) fn applies(g: &ConvGeometry) -> bool {
    Layout::of(g).is_some()
}

/// The VNNI kernels: the quad-row kernel ([`super::x86_vnni_quad_rows`]) for the layers it
/// takes, this module's chunk kernel for the others it takes, and the AVX2 kernel for the
/// rest and for CPUs without VNNI.
pub(super) fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) {
    if Isa::Avx512Vnni.available()
        // SAFETY: AVX-512 VNNI is available (checked first); `op` was validated by the
        // caller.
        && unsafe { super::x86_vnni_quad_rows::depthwise_conv2d_i8(op, output) }
    {
        return;
    }
    match Layout::of(&op.geometry) {
        // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked here).
        Some(layout) if Isa::Avx512Vnni.available() => unsafe {
            depthwise_i8_vnni(op, &layout, output)
        },
        _ => super::x86::depthwise_conv2d_i8(op, output),
    }
}

/// Position `p` of a 64-byte chunk: the accumulator and lane that hold it.
#[inline(always)]
const fn lane_of(p: usize) -> (usize, usize) {
    ((p % 16) / 4, (p / 16) * 4 + p % 4)
}

/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed validation and
/// `layout` be its.
#[target_feature(enable = "avx2")]
unsafe fn depthwise_i8_vnni(op: &DepthwiseConv2dI8<'_>, layout: &Layout, output: &mut [i8]) {
    let g = &op.geometry;
    let c = layout.channels;
    let zp = op.params.input_zero_point;
    let pattern_len = layout.quads * 4 * VECTOR;
    let mut weights = [MaybeUninit::<u8>::uninit(); WEIGHT_BYTES];
    let mut constants = [MaybeUninit::<PatternConstants>::uninit(); MAX_PATTERNS];
    for r in 0..layout.patterns {
        // The channel at each position of this pattern's chunks.
        let mut channel_at = [0usize; VECTOR];
        let mut ch = (r * VECTOR) % c;
        for slot in &mut channel_at {
            *slot = ch;
            ch = if ch + 1 == c { 0 } else { ch + 1 };
        }
        // SAFETY: AVX2 is available (caller); the pattern's `pattern_len` bytes lie inside
        // `weights` (`Layout::of` bounds `patterns * pattern_len`).
        unsafe {
            pack_filter(
                op.filter,
                layout,
                &channel_at,
                &mut weights[r * pattern_len..][..pattern_len],
            )
        };
        constants[r].write(pattern_constants(op, layout, &channel_at));
    }
    // The clamp's bytes and the zero point, which validation keeps in int8 range.
    let bounds = [
        i32::from(op.params.activation_min),
        i32::from(op.params.activation_max),
        op.params.output_zero_point,
    ];
    let shifts_left = op.params.multipliers.iter().any(|m| m.exponents().0 > 0);
    // The padded rows, one slot of `stride` phases per kernel row. Filled with the padding
    // once: the positions outside the image are the same for every input row, so copying
    // a row only ever writes the ones inside it.
    let slot_len = layout.stride * layout.phase_len;
    let rows_len = g.kernel_height * slot_len;
    let mut storage = [MaybeUninit::<u8>::uninit(); ROW_BYTES];
    // Validated zero points are int8; the padding holds `zp`, flipped like the input.
    let pad = zp as i8 as u8 ^ 0x80;
    storage[..rows_len].fill(MaybeUninit::new(pad));
    // SAFETY: the first `rows_len` bytes were just initialised (the slicing checked that
    // they lie in the storage), and only `u8` values are written through this.
    let rows: &mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u8>(), rows_len) };
    // Where each tap starts in its kernel row's slot, and which kernel row that is.
    let mut tap_at = [(0usize, 0usize); 4 * MAX_QUADS];
    for (t, at) in tap_at.iter_mut().enumerate().take(layout.taps) {
        let (ky, kx) = (t / g.kernel_width, t % g.kernel_width);
        let reach = kx * g.dilation_width;
        *at = (
            ky,
            reach % layout.stride * layout.phase_len + reach / layout.stride * c,
        );
    }
    // Consecutive output rows share input rows, each copied once into a slot.
    let mut slots = RowSlots::new(g);
    let mut slot_of = [0usize; 4 * MAX_QUADS];
    let row_len = g.out_width * c;
    let mut sources = [core::ptr::null::<u8>(); 4 * MAX_QUADS];
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for (ky, slot_of) in slot_of.iter_mut().enumerate().take(g.kernel_height) {
                let (slot, fill) = slots.claim(g, (b, oy, ky));
                *slot_of = slot;
                let Some(fill) = fill else {
                    continue;
                };
                let input_row = fill.image_row.map(|iy| {
                    &op.input[(b * g.in_height + iy) * g.in_width * c..][..g.in_width * c]
                });
                // SAFETY: AVX2 is available (caller).
                unsafe {
                    fill_slot(
                        input_row,
                        fill.held == Held::Image,
                        (g, &layout.phase_rows()),
                        pad,
                        &mut rows[slot * slot_len..][..slot_len],
                    )
                };
            }
            let base = rows.as_ptr();
            for (source, &(ky, at)) in sources.iter_mut().zip(&tap_at).take(layout.taps) {
                *source = base.wrapping_add(slot_of[ky] * slot_len + at);
            }
            // A spare tap of the last quad: zero weights, any readable row.
            for source in &mut sources[layout.taps..4 * layout.quads] {
                *source = base;
            }
            let out = &mut output[(b * g.out_height + oy) * row_len..][..row_len];
            let mut r = 0;
            for (j, chunk) in out.chunks_mut(VECTOR).enumerate() {
                // SAFETY: AVX-512 VNNI is available (caller). Each source's 64-byte load
                // at `64 * j` stays inside its phase: a tap starts at most `reach * C` bytes
                // in, and `reach * C + 64 * j + 64 <= positions * C + 64 = phase_len`
                // because `64 * j < out_width * C`. The pattern's weights and constants were
                // written above; the store covers `chunk.len() <= 64` bytes of the output.
                unsafe {
                    row_chunk(
                        &sources[..4 * layout.quads],
                        VECTOR * j,
                        weights[r * pattern_len..].as_ptr().cast(),
                        constants[r].as_ptr(),
                        (&bounds, shifts_left),
                        chunk,
                    )
                };
                r = if r + 1 == layout.patterns { 0 } else { r + 1 };
            }
        }
    }
}

/// Calls `run(p, ch, len)` for each run of a chunk's positions `p..p + len` whose channels
/// `ch..ch + len` are consecutive (one run for 64 channels or more, `64 / c` runs for
/// fewer), so that packing copies slices rather than gathering bytes.
#[inline(always)]
fn for_each_run(channel_at: &[usize; VECTOR], c: usize, mut run: impl FnMut(usize, usize, usize)) {
    let mut p = 0;
    while p < VECTOR {
        let ch = channel_at[p];
        let len = (c - ch).min(VECTOR - p);
        run(p, ch, len);
        p += len;
    }
}

/// One pattern's requantization constants, each position's in its accumulator lane.
fn pattern_constants(
    op: &DepthwiseConv2dI8<'_>,
    layout: &Layout,
    channel_at: &[usize; VECTOR],
) -> PatternConstants {
    let c = layout.channels;
    let zp = op.params.input_zero_point;
    let mut lanes = [LaneConstants {
        offset: [0; 16],
        left: [0; 16],
        mantissa: [0; 16],
        odd_mantissa: [0; 16],
        right: [0; 16],
        mask: [0; 16],
        threshold: [0; 16],
    }; 4];
    // Each position's `sum(w)` over every tap, a run of channels at a time.
    let mut sums = [0i32; VECTOR];
    for weights in op.filter.chunks_exact(c).take(layout.taps) {
        for_each_run(channel_at, c, |p, ch, len| {
            for (sum, &w) in sums[p..p + len].iter_mut().zip(&weights[ch..ch + len]) {
                *sum += i32::from(w);
            }
        });
    }
    for (p, (&ch, &sum)) in channel_at.iter().zip(&sums).enumerate() {
        let (k, i) = lane_of(p);
        // The bias less `(128 + zp) * sum(w)` over every tap: the padding reads `zp`,
        // flipped to `zp + 128`, and the quads' spare taps have zero weights.
        let bias = op.bias.map_or(0, |bias| bias[ch]);
        let m = op.params.multiplier(ch);
        let (left, right) = m.exponents();
        let mask = (1u32 << right).wrapping_sub(1) as i32;
        let lane = &mut lanes[k];
        lane.offset[i] = bias.wrapping_sub((128 + zp).wrapping_mul(sum));
        lane.left[i] = left as i32;
        lane.mantissa[i] = m.multiplier();
        if i % 2 == 1 {
            lane.odd_mantissa[i - 1] = m.multiplier();
        }
        lane.right[i] = right as i32;
        lane.mask[i] = mask;
        lane.threshold[i] = mask >> 1;
    }
    lanes
}

/// Copies an input row into the phases of a padded row: position `q` of phase `phase` is
/// input column `q * stride + phase - pad_left`, flipped to `x + 128`. The positions
/// outside the image already hold the padding; a row in the padding (`None`) writes it
/// over the positions inside the image too, where the slot held an image row
/// (`was_image`).
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fill_slot(
    input_row: Option<&[i8]>,
    was_image: bool,
    (g, layout): (&ConvGeometry, &PhaseRows),
    pad: u8,
    slot: &mut [u8],
) {
    let c = layout.channels;
    let s = layout.stride;
    let mut phases = slot.chunks_exact_mut(layout.phase_len);
    // The positions of each phase whose column lies inside the image: `first..end`.
    let inside = |phase: usize| {
        let end = (g.in_width + g.pad_left)
            .saturating_sub(phase)
            .div_ceil(s)
            .min(layout.positions);
        (g.pad_left.saturating_sub(phase).div_ceil(s).min(end), end)
    };
    let Some(input_row) = input_row else {
        if was_image {
            for (phase, dst) in (&mut phases).enumerate() {
                let (first, end) = inside(phase);
                dst[first * c..end * c].fill(pad);
            }
        }
        return;
    };
    if s == 2 {
        // Input pixel `ix` goes to phase `(ix + pad_left) % 2`, position
        // `(ix + pad_left) / 2`: the even pixels fill one phase from `pad_left / 2` on, the
        // odd ones the other from `(pad_left + 1) / 2` on, each as far as it reaches.
        let (p0, p1) = (phases.next(), phases.next());
        let (Some(p0), Some(p1)) = (p0, p1) else {
            return;
        };
        let (evens, odds) = if g.pad_left % 2 == 0 {
            (p0, p1)
        } else {
            (p1, p0)
        };
        let (even_at, odd_at) = (g.pad_left / 2, g.pad_left.div_ceil(2));
        let n_even = g
            .in_width
            .div_ceil(2)
            .min(layout.positions.saturating_sub(even_at));
        let n_odd = (g.in_width / 2).min(layout.positions.saturating_sub(odd_at));
        // SAFETY: AVX2 is available (caller).
        unsafe {
            split_pixels(
                input_row,
                c,
                &mut evens[even_at * c..][..n_even * c],
                &mut odds[odd_at * c..][..n_odd * c],
            )
        };
        return;
    }
    for (phase, dst) in phases.enumerate() {
        let (first, end) = inside(phase);
        if s == 1 {
            let from = first - g.pad_left;
            flip_copy(
                &input_row[from * c..(from + end - first) * c],
                &mut dst[first * c..end * c],
            );
        } else {
            for q in first..end {
                let column = q * s + phase - g.pad_left;
                flip_copy(
                    &input_row[column * c..(column + 1) * c],
                    &mut dst[q * c..(q + 1) * c],
                );
            }
        }
    }
}

/// Writes the first `evens.len() / c` even pixels of `row` (pixels of `c` bytes) into
/// `evens` and the first `odds.len() / c` odd ones into `odds`, flipped to `x + 128`.
/// Channel counts of 4, 8 and 16 split 64 bytes per step with lane permutes (a pixel at a
/// time cost more than the convolution of a stride-2 layer); larger ones copy whole pixels.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
unsafe fn split_pixels(row: &[i8], c: usize, evens: &mut [u8], odds: &mut [u8]) {
    let (n_even, n_odd) = (evens.len() / c, odds.len() / c);
    let mut done = 0;
    if matches!(c, 4 | 8 | 16) {
        // Steps of 64 bytes: 64 / c pixel pairs, half to each side.
        let pairs = 32 / c;
        // SAFETY: AVX2 is available (caller); each step reads 64 bytes of `row` and writes
        // 32 bytes of each side, all inside the slices (checked by the slicing).
        unsafe {
            let flip = _mm256_set1_epi8(-128);
            let dwords = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            let qwords = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
            while (done + pairs) <= n_even.min(n_odd) && (2 * done + 2 * pairs) * c <= row.len() {
                let src = &row[2 * done * c..][..64];
                let a = _mm256_loadu_si256(src.as_ptr().cast());
                let b = _mm256_loadu_si256(src[32..].as_ptr().cast());
                // Each 32-byte half as [its even pixels | its odd pixels].
                let (a, b) = match c {
                    4 => (
                        _mm256_permutevar8x32_epi32(a, dwords),
                        _mm256_permutevar8x32_epi32(b, dwords),
                    ),
                    8 => (
                        _mm256_permutevar8x32_epi32(a, qwords),
                        _mm256_permutevar8x32_epi32(b, qwords),
                    ),
                    _ => (a, b),
                };
                let even = _mm256_xor_si256(_mm256_permute2x128_si256::<0x20>(a, b), flip);
                let odd = _mm256_xor_si256(_mm256_permute2x128_si256::<0x31>(a, b), flip);
                _mm256_storeu_si256(evens[done * c..][..32].as_mut_ptr().cast(), even);
                _mm256_storeu_si256(odds[done * c..][..32].as_mut_ptr().cast(), odd);
                done += pairs;
            }
        }
    }
    for q in done..n_even.max(n_odd) {
        if q < n_even {
            // SAFETY: AVX2 is available (caller).
            unsafe { flip_pixel(&row[2 * q * c..][..c], &mut evens[q * c..][..c]) };
        }
        if q < n_odd {
            // SAFETY: AVX2 is available (caller).
            unsafe { flip_pixel(&row[(2 * q + 1) * c..][..c], &mut odds[q * c..][..c]) };
        }
    }
}

/// [`flip_copy`] for one pixel: 32 bytes a step where the channels are a multiple of 32
/// (the byte loop's setup cost more than the copy for a pixel at a time).
///
/// # Safety
/// AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn flip_pixel(src: &[i8], dst: &mut [u8]) {
    if src.len() % 32 != 0 || src.len() != dst.len() {
        return flip_copy(src, dst);
    }
    // SAFETY: AVX2 is available (caller); each step reads and writes 32 bytes inside the
    // equally long slices.
    unsafe {
        let flip = _mm256_set1_epi8(-128);
        for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
            let v = _mm256_loadu_si256(s.as_ptr().cast());
            _mm256_storeu_si256(d.as_mut_ptr().cast(), _mm256_xor_si256(v, flip));
        }
    }
}

/// Packs one pattern's filter: for each quad of taps, four vectors of 64 bytes holding
/// the taps' weights at the positions' channels, interleaved exactly as the kernel
/// interleaves the activations (zero weights for the spare taps past the window).
///
/// # Safety
/// AVX2 must be available; `dst` must hold `quads * 256` bytes.
#[target_feature(enable = "avx2")]
unsafe fn pack_filter(
    filter: &[i8],
    layout: &Layout,
    channel_at: &[usize; VECTOR],
    dst: &mut [MaybeUninit<u8>],
) {
    let c = layout.channels;
    assert!(dst.len() >= layout.quads * 4 * VECTOR);
    for q in 0..layout.quads {
        // The quad's four taps as rows of the chunk's positions.
        let mut taps = [[0i8; VECTOR]; 4];
        for (t, row) in taps.iter_mut().enumerate() {
            let tap = 4 * q + t;
            if tap < layout.taps {
                let weights = &filter[tap * c..(tap + 1) * c];
                for_each_run(channel_at, c, |p, ch, len| {
                    row[p..p + len].copy_from_slice(&weights[ch..ch + len]);
                });
            }
        }
        // SAFETY: AVX2 is available (caller); the loads read the 64-byte rows in two
        // halves, and the stores write `dst[q * 256..][..256]`, inside it (asserted).
        unsafe {
            for half in 0..2 {
                // Plain calls rather than a closure, which would not inherit AVX2.
                let a = _mm256_loadu_si256(taps[0][32 * half..].as_ptr().cast());
                let b = _mm256_loadu_si256(taps[1][32 * half..].as_ptr().cast());
                let cc = _mm256_loadu_si256(taps[2][32 * half..].as_ptr().cast());
                let d = _mm256_loadu_si256(taps[3][32 * half..].as_ptr().cast());
                let ab_lo = _mm256_unpacklo_epi8(a, b);
                let ab_hi = _mm256_unpackhi_epi8(a, b);
                let cd_lo = _mm256_unpacklo_epi8(cc, d);
                let cd_hi = _mm256_unpackhi_epi8(cc, d);
                let quads = [
                    _mm256_unpacklo_epi16(ab_lo, cd_lo),
                    _mm256_unpackhi_epi16(ab_lo, cd_lo),
                    _mm256_unpacklo_epi16(ab_hi, cd_hi),
                    _mm256_unpackhi_epi16(ab_hi, cd_hi),
                ];
                for (k, v) in quads.into_iter().enumerate() {
                    let at = (4 * q + k) * VECTOR + 32 * half;
                    _mm256_storeu_si256(dst[at..at + 32].as_mut_ptr().cast(), v);
                }
            }
        }
    }
}

/// One 64-byte chunk of an output row: every quad of taps accumulated, requantized with the
/// pattern's constants (`shifts_left` when any channel's multiplier has a left exponent),
/// narrowed back into order, clamped to `bounds` (the activation's bytes, then the output
/// zero point) and stored through a mask.
///
/// # Safety
/// AVX-512 VNNI must be available; each source must be readable for 64 bytes at `offset`,
/// `weights` must hold `sources.len() / 4` packed quads and `constants` the pattern's
/// constants; `out` holds at most 64 bytes.
#[inline]
unsafe fn row_chunk(
    sources: &[*const u8],
    offset: usize,
    weights: *const u8,
    constants: *const PatternConstants,
    (bounds, shifts_left): (&[i32; 3], bool),
    out: &mut [i8],
) {
    debug_assert!(out.len() <= VECTOR && sources.len() % 4 == 0 && !sources.is_empty());
    /// The requantization of accumulator `zmm$acc`, whose constants start `$at` bytes into
    /// the pattern's, up to the clamp: `requantize_rows`' steps, constants read from memory
    /// (its offset was the accumulator's start, its left shift is applied before).
    macro_rules! requantize {
        ($acc:literal, $at:literal) => {
            concat!(
                "vpmuldq zmm8, zmm",
                $acc,
                ", zmmword ptr [r8 + ",
                $at,
                " + 128]\n",
                "vpaddq zmm8, zmm8, zmm20\n",
                "vpsrlq zmm8, zmm8, 31\n",
                "vpsrlq zmm9, zmm",
                $acc,
                ", 32\n",
                "vpmuldq zmm9, zmm9, zmmword ptr [r8 + ",
                $at,
                " + 192]\n",
                "vpaddq zmm9, zmm9, zmm20\n",
                "vpsllq zmm9, zmm9, 1\n",
                "vpblendmd zmm8 {{k4}}, zmm8, zmm9\n",
                "vpandd zmm12, zmm8, zmmword ptr [r8 + ",
                $at,
                " + 320]\n",
                "vpsrld zmm13, zmm8, 31\n",
                "vpaddd zmm13, zmm13, zmmword ptr [r8 + ",
                $at,
                " + 384]\n",
                "vpcmpgtd k5, zmm12, zmm13\n",
                "vpsravd zmm",
                $acc,
                ", zmm8, zmmword ptr [r8 + ",
                $at,
                " + 256]\n",
                "vpaddd zmm",
                $acc,
                " {{k5}}, zmm",
                $acc,
                ", zmm26\n",
            )
        };
    }
    // SAFETY: the caller's contract: the loads read 64 bytes at `offset` of each source,
    // the packed quads (256 bytes each) and the pattern's 1,792 bytes of constants; the
    // store writes `out.len()` bytes through the mask k1. Vector registers and k1-k5 are
    // clobbered through `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            // rsi: the quads' source pointers, four per quad; rdx: the chunk's offset in
            // them; rdi: the packed weights; rcx: quads left; r8: the constants; r9: the
            // output; r10: its length; r11: the clamp bounds and zero point.
            // The accumulators start at the channels' offsets (bias less the flip's sum).
            "vmovdqa32 zmm0, zmmword ptr [r8]",
            "vmovdqa32 zmm1, zmmword ptr [r8 + 448]",
            "vmovdqa32 zmm2, zmmword ptr [r8 + 896]",
            "vmovdqa32 zmm3, zmmword ptr [r8 + 1344]",
            "2:",
            "mov rax, qword ptr [rsi]",
            "vmovdqu8 zmm4, zmmword ptr [rax + rdx]",
            "mov rax, qword ptr [rsi + 8]",
            "vmovdqu8 zmm5, zmmword ptr [rax + rdx]",
            "mov rax, qword ptr [rsi + 16]",
            "vmovdqu8 zmm6, zmmword ptr [rax + rdx]",
            "mov rax, qword ptr [rsi + 24]",
            "vmovdqu8 zmm7, zmmword ptr [rax + rdx]",
            "vpunpcklbw zmm8, zmm4, zmm5",
            "vpunpckhbw zmm9, zmm4, zmm5",
            "vpunpcklbw zmm10, zmm6, zmm7",
            "vpunpckhbw zmm11, zmm6, zmm7",
            "vpunpcklwd zmm4, zmm8, zmm10",
            "vpunpckhwd zmm5, zmm8, zmm10",
            "vpunpcklwd zmm6, zmm9, zmm11",
            "vpunpckhwd zmm7, zmm9, zmm11",
            "vpdpbusd zmm0, zmm4, zmmword ptr [rdi]",
            "vpdpbusd zmm1, zmm5, zmmword ptr [rdi + 64]",
            "vpdpbusd zmm2, zmm6, zmmword ptr [rdi + 128]",
            "vpdpbusd zmm3, zmm7, zmmword ptr [rdi + 192]",
            "add rsi, 32",
            "add rdi, 256",
            "dec rcx",
            "jnz 2b",
            // zmm20: 2^30 per 64-bit lane (the nudge); zmm21, zmm22: the clamp bounds as
            // bytes; zmm23: the zero point as words; zmm26: ones; k4: the odd lanes.
            "mov eax, 0x40000000",
            "vpbroadcastq zmm20, rax",
            "vpbroadcastb zmm21, byte ptr [r11]",
            "vpbroadcastb zmm22, byte ptr [r11 + 4]",
            "vpbroadcastw zmm23, word ptr [r11 + 8]",
            "mov eax, 1",
            "vpbroadcastd zmm26, eax",
            "mov eax, 0xAAAA",
            "kmovw k4, eax",
            // Most layers scale down only: no left shift anywhere.
            "test r12, r12",
            "jz 3f",
            "vpsllvd zmm0, zmm0, zmmword ptr [r8 + 64]",
            "vpsllvd zmm1, zmm1, zmmword ptr [r8 + 448 + 64]",
            "vpsllvd zmm2, zmm2, zmmword ptr [r8 + 896 + 64]",
            "vpsllvd zmm3, zmm3, zmmword ptr [r8 + 1344 + 64]",
            "3:",
            requantize!("0", "0"),
            requantize!("1", "448"),
            requantize!("2", "896"),
            requantize!("3", "1344"),
            // Saturating packs restore the positions' order. `clamp(x.saturating_add(zp),
            // lo, hi)` equals them with the zero point added in saturating words and the
            // clamp on the bytes: a sum beyond the words saturates both ways alike.
            "vpackssdw zmm0, zmm0, zmm1",
            "vpackssdw zmm2, zmm2, zmm3",
            "vpaddsw zmm0, zmm0, zmm23",
            "vpaddsw zmm2, zmm2, zmm23",
            "vpacksswb zmm0, zmm0, zmm2",
            "vpmaxsb zmm0, zmm0, zmm21",
            "vpminsb zmm0, zmm0, zmm22",
            "mov rax, -1",
            "bzhi rax, rax, r10",
            "kmovq k1, rax",
            "vmovdqu8 zmmword ptr [r9] {{k1}}, zmm0",
            "vzeroupper",
            inout("rsi") sources.as_ptr() => _,
            in("rdx") offset,
            inout("rdi") weights => _,
            inout("rcx") sources.len() / 4 => _,
            in("r8") constants,
            in("r9") out.as_mut_ptr(),
            in("r10") out.len(),
            in("r11") bounds.as_ptr(),
            in("r12") usize::from(shifts_left),
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
