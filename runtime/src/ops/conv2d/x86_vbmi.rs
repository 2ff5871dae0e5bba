//! x86_64 AVX-512 VNNI + VBMI int8 convolution for first layers: few input channels, up to
//! sixteen output channels (or 32, 48 or 64, sixteen at a time), sixteen output pixels in
//! the lanes of each vector.
//!
//! **Why.** A network's first layer (MobileNet's: three channels in, eight out, 3x3 with
//! stride two; ResNet-8's: three in, sixteen out) has short patches (27 bytes) and few
//! channels. The im2col GEMM of [`super::x86_vnni`] puts channels in lanes: eight output
//! channels fill half of each vector, every pixel's patch is gathered run by run, and every
//! pixel is requantized alone, half its lanes idle. MobileNet's first layer took a quarter
//! of the model's time that way (`loam bench --per-op`).
//!
//! **Pixels in lanes.** Here each vector holds sixteen consecutive output pixels of one
//! row. A kernel row's taps read `kw * C` consecutive bytes of an input row, the run of
//! output pixel `ox` starting `ox * stride * C` bytes in; four bytes of each of the
//! sixteen runs are one `vpermi2b` (a byte permute over two 64-byte loads of the row:
//! `15 * stride * C + 16 <= 128` bytes, so the layer must be narrow), and one `vpdpbusd`
//! per output channel multiplies them with that channel's four weights, broadcast from
//! memory. So per sixteen pixels and four bytes of patch: one permute and one
//! multiply-add per channel, against the GEMM's broadcast and multiply-add per pixel.
//!
//! The same holds for pointwise layers of few input channels: MobileNet's first (8 -> 16
//! channels, 2,304 pixels) took 15.1 us through the AMX fully-connected kernel, whose
//! eight-byte depth leaves the tiles nearly idle, and 10.0 us here.
//!
//! **Requantization** is the one-rounding form of [`crate::ops::requantize::x86_avx512`]
//! with each channel's constants broadcast to its sixteen pixels, the clamp on dwords; the
//! bytes of the sixteen channels are then transposed to the output's pixel-major order by
//! two more byte permutes per 64 output bytes.
//!
//! Input rows are copied once into padded rows (`x + 128`, the unsigned operand of
//! `vpdpbusd`, with `zp + 128` in the padding), one slot per kernel row, shared between
//! output rows as in the depthwise kernels.
//!
//! **Deeper inputs** (a multiple of four channels, too many for a run of sixteen bytes, and
//! at most sixteen outputs: ResNet-8's 3x3 layers of sixteen channels, whose 144-byte
//! patches are too short for the AMX tiles) are copied into *quad planes* instead: for each quad of channels `m` (and
//! each phase of the stride), the row's pixels' four bytes of those channels side by side.
//! Sixteen consecutive output pixels' four bytes for tap `kx` and quad `m` are then one
//! 64-byte load, with no permute, and the weights and everything after them are as above.
//!
//! **Narrow images** (output rows under eight pixels, DS-CNN's five) would leave most lanes
//! idle, so there the sixteen lanes are sixteen consecutive output pixels in raster order,
//! across rows: the whole image is copied into one padded plane, and the permute's indices
//! depend on where the block starts in its row (one set per starting column). Inline assembly, like the other AVX-512
//! kernels, because the AVX-512 intrinsics are stable only from Rust 1.89 while the crate
//! supports 1.85.

use core::arch::asm;
use core::mem::MaybeUninit;

use super::{Conv2dI8, ConvGeometry, Held, RowSlots};
use crate::isa;
use crate::ops::requantize::x86_avx512::INTERLEAVE;
use crate::ops::x86_vnni::flip_copy;

/// Output pixels per vector.
const LANES: usize = 16;
/// Output channels per pass over a block (one accumulator each).
const CHUNK: usize = 16;
/// Most output channels (four passes).
const MAX_CHANNELS: usize = 4 * CHUNK;
/// Most bytes of a kernel row's run (four quads).
const MAX_RUN: usize = 16;
/// Most kernel rows.
const MAX_KERNEL_ROWS: usize = 11;
/// Bytes of one padded input row.
const ROW_BYTES: usize = 4096;
/// Bytes of a padded plane (narrow images).
const PLANE_BYTES: usize = 16 * 1024;
/// Output rows narrower than this run as a plane.
const NARROW: usize = LANES / 2;
/// Most loads per block in the quad planes (kernel taps times quads of channels).
const MAX_TAPS: usize = 64;
/// Room for the weights of every pass (taps of four bytes for sixteen channels).
const WEIGHT_QUADS: usize = 4 * MAX_KERNEL_ROWS * 4;

/// How a layer maps onto the kernel.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Bytes of a kernel row's run (`kw * C`).
    run: usize,
    /// Quads of a run.
    quads: usize,
    /// Bytes between the runs of neighbouring output pixels (`stride * C`).
    lane_step: usize,
    /// Bytes of a padded row.
    row_len: usize,
    /// For a narrow image, its padded plane's columns; `None` for rows.
    plane: Option<usize>,
    /// For deeper inputs, the bytes of one quad plane; `None` for runs of bytes.
    quad_plane: Option<usize>,
}

impl Layout {
    fn of(g: &ConvGeometry) -> Option<Layout> {
        Self::of_bytes(g).or_else(|| Self::of_quads(g))
    }

    /// The quad planes' layout, for inputs of a multiple of four channels.
    fn of_quads(g: &ConvGeometry) -> Option<Layout> {
        let c = g.in_channels;
        let s = g.stride_width;
        let quads = g.kernel_width.checked_mul(c)? / 4;
        let taps = g.kernel_height.checked_mul(quads)?;
        let fits = c % 4 == 0
            && c > 0
            && s > 0
            && g.groups == 1
            && g.out_width >= NARROW
            && g.dilation_height == 1
            && g.dilation_width == 1
            // One pass: with two or more, ResNet-8's strided layers (16 -> 32 and 32 -> 64
            // channels) ran 1.1-2.1x as long as through the GEMM (`loam bench --per-op`,
            // both builds), where its 16 -> 16 layers ran 0.62x.
            && (1..=CHUNK).contains(&g.out_channels)
            && (1..=MAX_KERNEL_ROWS).contains(&g.kernel_height)
            && (1..=MAX_TAPS).contains(&taps)
            && g.out_channels.div_ceil(CHUNK) * taps <= WEIGHT_QUADS;
        if !fits {
            return None;
        }
        // Each block loads sixteen positions from `kx / s` on.
        let positions = g.out_width.div_ceil(LANES) * LANES + (g.kernel_width - 1) / s;
        let plane_bytes = (4 * positions).next_multiple_of(64);
        let slot = s.checked_mul(c / 4)?.checked_mul(plane_bytes)?;
        (slot <= ROW_BYTES).then_some(Layout {
            run: g.kernel_width * c,
            quads,
            lane_step: 4,
            row_len: slot,
            plane: None,
            quad_plane: Some(plane_bytes),
        })
    }

    /// The runs of bytes' layout, for inputs of few channels.
    fn of_bytes(g: &ConvGeometry) -> Option<Layout> {
        let c = g.in_channels;
        let run = g.kernel_width.checked_mul(c)?;
        let lane_step = g.stride_width.checked_mul(c)?;
        let quads = run.div_ceil(4);
        let fits = g.groups == 1
            && g.out_width > 0
            && g.dilation_height == 1
            && g.dilation_width == 1
            && (g.out_channels <= CHUNK || g.out_channels % CHUNK == 0)
            && (1..=MAX_CHANNELS).contains(&g.out_channels)
            && (1..=MAX_RUN).contains(&run)
            && (1..=MAX_KERNEL_ROWS).contains(&g.kernel_height);
        if !fits {
            return None;
        }
        if g.out_width < NARROW {
            // Rows of five pixels (DS-CNN's first layer) in blocks of a row took 10.6 us
            // against 7.6 through the GEMM (`loam bench --per-op`, both builds): as a plane.
            let columns =
                (g.pad_left + g.in_width).max((g.out_width - 1) * g.stride_width + g.kernel_width);
            let rows = (g.pad_top + g.in_height)
                .max((g.out_height - 1) * g.stride_height + g.kernel_height);
            let row_bytes = columns.checked_mul(c)?;
            // The furthest lane of any block from its first pixel, plus its run.
            let reach = (0..g.out_width)
                .map(|phase| {
                    let last = phase + LANES - 1;
                    (last / g.out_width) * g.stride_height * row_bytes
                        + (last % g.out_width) * lane_step
                        - phase * lane_step
                })
                .max()?
                + 4 * quads;
            // Slack past the plane for a last block's lanes beyond the image.
            let plane_len = rows.checked_mul(row_bytes)?.checked_add(128 + reach)?;
            let fits = reach <= 128
                && plane_len <= PLANE_BYTES
                && (g.kernel_height - 1) * row_bytes + 128 <= plane_len;
            return fits.then_some(Layout {
                run,
                quads,
                lane_step,
                row_len: plane_len,
                plane: Some(columns),
                quad_plane: None,
            });
        }
        if (LANES - 1) * lane_step + 4 * quads > 128 {
            return None;
        }
        // Every block's two 64-byte loads start at its first pixel's run.
        let row_len = g
            .out_width
            .div_ceil(LANES)
            .checked_mul(LANES * lane_step)?
            .checked_add(128)?
            .max((g.pad_left + g.in_width) * c);
        (row_len <= ROW_BYTES).then_some(Layout {
            run,
            quads,
            lane_step,
            row_len,
            plane: None,
            quad_plane: None,
        })
    }
}

/// Whether the kernel takes the layer as quad planes (given VBMI), for tests.
#[cfg(test)]
pub(crate) fn takes_as_quad_planes(g: &ConvGeometry) -> bool {
    Layout::of(g).is_some_and(|l| l.quad_plane.is_some())
}

/// Whether the kernel takes the layer on this CPU (AVX-512 VNNI and VBMI).
pub(crate) fn takes(g: &ConvGeometry) -> bool {
    isa::avx512_vbmi() && Layout::of(g).is_some()
}

/// Runs the layer if the kernel takes it (`false`, nothing written, where it does not).
///
/// # Safety
/// AVX-512 VNNI must be available (the kernel checks VBMI itself); `op` must have passed
/// validation.
pub(crate) unsafe fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8]) -> bool {
    let Some(layout) = Layout::of(&op.geometry) else {
        return false;
    };
    if !isa::avx512_vbmi() {
        return false;
    }
    // SAFETY: AVX-512 VNNI and VBMI are available (the caller's and the check above).
    unsafe { conv2d_i8_vbmi(op, &layout, output) };
    true
}

/// 64-byte aligned bytes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line(#[allow(dead_code)] [u8; 64]);

/// One channel's constants as the assembly broadcasts them: the bias less `(128 + zp) *
/// sum(w)`, the left exponent, the mantissa (as a 64-bit value for `vpmuldq`), the
/// one-rounding form's rounding term, negative bound and shift (see
/// [`crate::ops::requantize::x86_avx512`]), and the clamp's bounds less the output zero
/// point, then that zero point.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct ChannelConstants {
    offset: i32,
    left: i32,
    mantissa: i64,
    rounding: i64,
    negative: i64,
    shift: i64,
    lo: i32,
    hi: i32,
    zero_point: i32,
}

/// The indices and masks that transpose a block's bytes from channel-major (channel `c`'s
/// sixteen pixels at `16 * c`) to the output's pixel-major order: for each 64 output bytes,
/// the indices into the first 128 bytes (channels 0-7), those into the last 128 less 128
/// (channels 8-15), and which bytes take the latter.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Transpose {
    low: [u8; 64],
    high: [u8; 64],
    takes_high: u64,
    _pad: [u64; 7],
}

/// What the row assembly reads: the slots' row pointers (one per kernel row), their count,
/// the quads per run, the packed weights, the channels' constants, the gather indices (one
/// vector per quad), the transposes, the store masks of a whole block and of the row's
/// last, the bytes between blocks in the rows and in the output, the 512-byte scratch
/// where a block's bytes are transposed, whether any channel shifts left, the passes of
/// sixteen channels, the output's channels, and the pixels of the row's last block.
#[repr(C)]
struct RowPlan {
    rows: *const *const u8,
    kernel_rows: u64,
    quads: u64,
    weights: *const u8,
    constants: *const ChannelConstants,
    gather: *const u8,
    transpose: *const Transpose,
    whole_masks: *const u64,
    last_masks: *const u64,
    block_step: u64,
    out_step: u64,
    scratch: *mut u8,
    any_left: u64,
    chunks: u64,
    out_channels: u64,
    last_pixels: u64,
    /// Whether `rows` holds one pointer per tap and quad (the quad planes), each read as
    /// sixteen dwords, rather than one per kernel row.
    quad_rows: u64,
    /// Whether a pass has at most eight channels, so that the runs of bytes multiply and
    /// requantize only eight accumulators (MobileNet's first layer: 13.7 -> 9.0 us,
    /// `loam bench --per-op`, both builds alternated).
    narrow: u64,
}

/// # Safety
/// AVX-512 VNNI and VBMI must be available; `op` must have passed validation and `layout`
/// be its.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn conv2d_i8_vbmi(op: &Conv2dI8<'_>, layout: &Layout, output: &mut [i8]) {
    let g = &op.geometry;
    let n = g.out_channels;
    // Channels per pass, and passes.
    let (chunk, chunks) = (n.min(CHUNK), n.div_ceil(CHUNK));
    let zp = op.params.input_zero_point;
    let k = g.patch_len();

    // Weights: for each pass, kernel row `ky` and quad `j`, sixteen channels' four bytes
    // (zero past the run and past the layer's channels).
    let mut weights = [[[0i8; 4]; CHUNK]; WEIGHT_QUADS];
    // Nested loops rather than one divided index: this runs on every call, and divisions
    // by the layer's sizes cost more than the copies.
    // At most four passes of eleven kernel rows of four quads (`Layout::of`).
    let mut at = 0;
    for pass in 0..chunks {
        let channels = (n - pass * CHUNK).min(CHUNK);
        for ky in 0..g.kernel_height {
            for j in 0..layout.quads {
                let quad = &mut weights[at];
                at += 1;
                let (from, len) = (ky * layout.run + 4 * j, (layout.run - 4 * j).min(4));
                for (i, lanes) in quad.iter_mut().enumerate().take(channels) {
                    let o = pass * CHUNK + i;
                    let src = &op.filter[o * k + from..][..len];
                    // A whole quad as one fixed-size copy (a `memmove` call per quad cost
                    // a seventh of DS-CNN's first layer).
                    match <[i8; 4]>::try_from(src) {
                        Ok(quad) => *lanes = quad,
                        Err(_) => lanes[..len].copy_from_slice(src),
                    }
                }
            }
        }
    }
    // Each channel's constants.
    let mut constants = [ChannelConstants::default(); MAX_CHANNELS];
    for (o, constant) in constants.iter_mut().enumerate().take(n) {
        let sum = op.filter[o * k..(o + 1) * k]
            .iter()
            .fold(0i32, |s, &w| s.wrapping_add(i32::from(w)));
        let bias = op.bias.map_or(0, |b| b[o]);
        let m = op.params.multiplier(o);
        let (left, right) = m.exponents();
        let ozp = op.params.output_zero_point;
        *constant = ChannelConstants {
            offset: bias.wrapping_sub((128 + zp).wrapping_mul(sum)),
            left: left as i32,
            mantissa: i64::from(m.multiplier()),
            rounding: if right > 0 {
                (1i64 << 30) + (1i64 << (30 + right))
            } else {
                1 << 30
            },
            negative: if right > 0 {
                1i64 << (30 + right)
            } else {
                i64::MIN
            },
            shift: 31 + i64::from(right),
            lo: i32::from(op.params.activation_min) - ozp,
            hi: i32::from(op.params.activation_max) - ozp,
            zero_point: ozp,
        };
    }
    let any_left = op.params.multipliers.iter().any(|m| m.exponents().0 > 0);
    // The gather: lane `i` of quad `j` reads bytes `i * lane_step + 4 * j..+4` of the
    // block's 128.
    let mut gather = [[0u8; 64]; 4];
    for (j, indices) in gather.iter_mut().enumerate().take(layout.quads) {
        for (x, index) in indices.iter_mut().enumerate() {
            *index = ((x / 4) * layout.lane_step + 4 * j + x % 4) as u8;
        }
    }
    // The transposes: output byte `s` of a pass is pixel `s / chunk`, channel `s % chunk`,
    // at `16 * channel + pixel` of the channel-major bytes.
    let out_vectors = (LANES * chunk).div_ceil(64);
    let mut transpose = [Transpose {
        low: [0; 64],
        high: [0; 64],
        takes_high: 0,
        _pad: [0; 7],
    }; 4];
    // (Counted rather than divided: the divisions by a layer's channel count cost more
    // than a narrow layer's whole convolution.)
    let (mut p, mut o) = (0, 0);
    for t in transpose.iter_mut().take(out_vectors) {
        for x in 0..64 {
            let at = 16 * o + p.min(LANES - 1);
            if at < 128 {
                t.low[x] = at as u8;
            } else {
                t.high[x] = (at - 128) as u8;
                t.takes_high |= 1 << x;
            }
            o += 1;
            if o == chunk {
                (p, o) = (p + 1, 0);
            }
        }
    }
    let masks = |pixels: usize| {
        let mut m = [0u64; 4];
        for (v, m) in m.iter_mut().enumerate() {
            let bytes = (pixels * n).saturating_sub(64 * v).min(64);
            *m = if bytes == 64 {
                u64::MAX
            } else {
                (1u64 << bytes) - 1
            };
        }
        m
    };
    let whole_masks = masks(LANES);
    let last = g.out_width - (g.out_width.div_ceil(LANES) - 1) * LANES;
    let last_masks = masks(last);

    // The padded rows, one slot per kernel row (row `v` of the padded input in slot `v %
    // kernel_height`: consecutive output rows share input rows), filled with the padding
    // once; copying an image row only writes the image's positions.
    let rows = [core::ptr::null::<u8>(); MAX_KERNEL_ROWS];
    let mut scratch = [MaybeUninit::<Line>::uninit(); 8];
    let mut plan = RowPlan {
        rows: rows.as_ptr(),
        kernel_rows: g.kernel_height as u64,
        quads: layout.quads as u64,
        weights: weights.as_ptr().cast(),
        constants: constants.as_ptr(),
        gather: gather.as_ptr().cast(),
        transpose: transpose.as_ptr(),
        whole_masks: whole_masks.as_ptr(),
        last_masks: last_masks.as_ptr(),
        block_step: (LANES * layout.lane_step) as u64,
        out_step: (LANES * n) as u64,
        scratch: scratch.as_mut_ptr().cast(),
        any_left: u64::from(any_left),
        chunks: chunks as u64,
        out_channels: n as u64,
        last_pixels: last as u64,
        quad_rows: 0,
        narrow: u64::from(chunk <= 8),
    };
    if let Some(columns) = layout.plane {
        // SAFETY: as this function's; `layout` is the plane's.
        unsafe { convolve_planes(op, layout, columns, &mut plan, output) };
        return;
    }
    if let Some(plane_bytes) = layout.quad_plane {
        // SAFETY: as this function's; `layout` is the quad planes'.
        unsafe { convolve_quad_planes(op, layout, plane_bytes, &mut plan, output) };
        return;
    }
    // SAFETY: as this function's; `layout` is the rows'.
    unsafe { convolve_rows(op, layout, &mut plan, output) };
}

/// The output rows of a layer of runs of bytes: each input row copied into a padded slot
/// once, then each output row run by [`convolve_row`]. (Its own function, like the other
/// modes, so that the caller's frame does not carry every mode's buffers at once.)
///
/// # Safety
/// AVX-512 VNNI and VBMI must be available; `op` must have passed validation, `layout` be
/// its (runs of bytes in rows), and `plan` hold its weights, constants and transposes.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn convolve_rows(op: &Conv2dI8<'_>, layout: &Layout, plan: &mut RowPlan, output: &mut [i8]) {
    let g = &op.geometry;
    let (c, n) = (g.in_channels, g.out_channels);
    let pad = op.params.input_zero_point as i8 as u8 ^ 0x80;
    let mut slot_lines = [MaybeUninit::<Line>::uninit(); MAX_KERNEL_ROWS * ROW_BYTES / 64];
    let slots: *mut u8 = slot_lines.as_mut_ptr().cast();
    let slot_len = layout.row_len.next_multiple_of(64);
    let mut row_slots = RowSlots::new(g);
    let mut rows = [core::ptr::null::<u8>(); MAX_KERNEL_ROWS];
    let row_len = g.out_width * n;
    let image_len = g.in_width * c;
    // SAFETY: `kernel_height * slot_len` bytes lie inside the slots' storage (`Layout::of`
    // bounds both factors).
    unsafe { core::ptr::write_bytes(slots, pad, g.kernel_height * slot_len) };
    for out_row in 0..g.batch * g.out_height {
        let (b, oy) = (out_row / g.out_height, out_row % g.out_height);
        for (ky, row) in rows.iter_mut().enumerate().take(g.kernel_height) {
            let (slot, fill) = row_slots.claim(g, (b, oy, ky));
            // SAFETY: inside the slots' storage, as above.
            let slot_bytes = unsafe { slots.add(slot * slot_len) };
            *row = slot_bytes;
            let Some(fill) = fill else {
                continue;
            };
            // SAFETY: the slot's `slot_len` bytes, inside the storage; only `u8` values
            // are written through this.
            let slot_bytes = unsafe { core::slice::from_raw_parts_mut(slot_bytes, slot_len) };
            let image = &mut slot_bytes[g.pad_left * c..][..image_len];
            match fill.image_row {
                Some(iy) => flip_copy(
                    &op.input[(b * g.in_height + iy) * image_len..][..image_len],
                    image,
                ),
                None if fill.held == Held::Image => image.fill(pad),
                None => {}
            }
        }
        plan.rows = rows.as_ptr();
        let out = &mut output[out_row * row_len..][..row_len];
        // SAFETY: AVX-512 VNNI and VBMI are available (caller). Each block's two loads
        // read 128 bytes at `block * block_step` of each row, inside its `row_len` bytes
        // (`Layout::of`); the weights, constants, gather indices and transposes cover the
        // kernel rows, quads, channels and output vectors the plan names; the stores
        // write the row's `out_width * n` bytes through the masks.
        unsafe { convolve_row(plan, g.out_width.div_ceil(LANES), out.as_mut_ptr()) };
    }
}

/// The quad planes' output rows: each input row copied, once, into a slot of quad planes
/// (`plane_bytes` each: for each phase of the stride and quad of channels, the dwords of the
/// row's pixels of that phase), then each output row run by [`convolve_row`] with one row
/// pointer per kernel row, tap and quad.
///
/// # Safety
/// AVX-512 VNNI and VBMI must be available; `op` must have passed validation, `layout` be
/// its (quad planes), and `plan` hold its weights, constants and transposes.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn convolve_quad_planes(
    op: &Conv2dI8<'_>,
    layout: &Layout,
    plane_bytes: usize,
    plan: &mut RowPlan,
    output: &mut [i8],
) {
    let g = &op.geometry;
    let (c, n) = (g.in_channels, g.out_channels);
    let (s, quads_per_pixel) = (g.stride_width, c / 4);
    let positions = plane_bytes / 4;
    let pad = op.params.input_zero_point as i8 as u8 ^ 0x80;
    let pad_word = u32::from_ne_bytes([pad; 4]);
    let slot_len = layout.row_len;
    let mut slot_lines = [MaybeUninit::<Line>::uninit(); MAX_KERNEL_ROWS * ROW_BYTES / 64];
    let slots: *mut u32 = slot_lines.as_mut_ptr().cast();
    // SAFETY: `kernel_height * slot_len` bytes lie inside the slots' storage (`Layout::of`
    // bounds both); only `u32` values are written through this.
    let slots: &mut [u32] =
        unsafe { core::slice::from_raw_parts_mut(slots, g.kernel_height * slot_len / 4) };
    slots.fill(pad_word);
    let mut row_slots = RowSlots::new(g);
    let mut rows = [core::ptr::null::<u8>(); MAX_TAPS];
    plan.kernel_rows = (g.kernel_height * layout.quads) as u64;
    plan.block_step = (LANES * 4) as u64;
    plan.quad_rows = 1;
    let row_len = g.out_width * n;
    let image_len = g.in_width * c;
    for out_row in 0..g.batch * g.out_height {
        let (b, oy) = (out_row / g.out_height, out_row % g.out_height);
        for ky in 0..g.kernel_height {
            let (slot, fill) = row_slots.claim(g, (b, oy, ky));
            let words = &mut slots[slot * slot_len / 4..][..slot_len / 4];
            if let Some(fill) = fill {
                match fill.image_row {
                    Some(iy) => {
                        let input = &op.input[(b * g.in_height + iy) * image_len..][..image_len];
                        // Pixel `x` lies in column `x + pad_left`: phase `column % s`,
                        // position `column / s` (counted, not divided).
                        let (mut phase, mut position) = (g.pad_left % s, g.pad_left / s);
                        for pixel in input.chunks_exact(c) {
                            if position >= positions {
                                break;
                            }
                            for (m, quad) in pixel.chunks_exact(4).enumerate() {
                                let word = u32::from_ne_bytes([
                                    quad[0] as u8,
                                    quad[1] as u8,
                                    quad[2] as u8,
                                    quad[3] as u8,
                                ]);
                                let plane = phase * quads_per_pixel + m;
                                words[plane * positions + position] = word ^ 0x8080_8080;
                            }
                            phase += 1;
                            if phase == s {
                                (phase, position) = (0, position + 1);
                            }
                        }
                    }
                    None if fill.held == Held::Image => words.fill(pad_word),
                    None => {}
                }
            }
            let base: *const u8 = words.as_ptr().cast();
            for kx in 0..g.kernel_width {
                for m in 0..quads_per_pixel {
                    let plane = (kx % s) * quads_per_pixel + m;
                    let at = plane * plane_bytes + (kx / s) * 4;
                    rows[(ky * g.kernel_width + kx) * quads_per_pixel + m] = base.wrapping_add(at);
                }
            }
        }
        plan.rows = rows.as_ptr();
        let out = &mut output[out_row * row_len..][..row_len];
        // SAFETY: AVX-512 VNNI and VBMI are available (caller). Each block loads 64 bytes at
        // `64 * block` from each tap's start, `(kx / s) * 4` bytes into its plane, inside the
        // plane's `positions` dwords (`Layout::of`); the weights, constants and transposes
        // cover the taps, channels and output vectors the plan names; the stores write the
        // row's `out_width * n` bytes through the masks, or pixel by pixel.
        unsafe { convolve_row(plan, g.out_width.div_ceil(LANES), out.as_mut_ptr()) };
    }
}

/// The narrow image's blocks: each image copied into a padded plane `columns` pixels wide, then each block of sixteen output pixels in raster order run by [`convolve_row`]
/// as a row of one block, its kernel rows and gather indices those of its first pixel.
///
/// # Safety
/// AVX-512 VNNI and VBMI must be available; `op` must have passed validation, `layout` be
/// its (a plane), and `plan` hold its weights, constants and transposes.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn convolve_planes(
    op: &Conv2dI8<'_>,
    layout: &Layout,
    columns: usize,
    plan: &mut RowPlan,
    output: &mut [i8],
) {
    let g = &op.geometry;
    let (c, n) = (g.in_channels, g.out_channels);
    let row_bytes = columns * c;
    // Gather indices per starting column: lane `i` of a block starting at column `phase`
    // is pixel `phase + i` of its row, which may lie rows further down.
    let mut gather = [[[0u8; 64]; 4]; NARROW];
    for (phase, quads) in gather.iter_mut().enumerate().take(g.out_width) {
        // Each lane's run from the block's first pixel, counted along the rows.
        let mut starts = [0usize; LANES];
        let (mut row, mut column) = (0, phase);
        for start in &mut starts {
            *start = row * g.stride_height * row_bytes + column * layout.lane_step
                - phase * layout.lane_step;
            column += 1;
            if column == g.out_width {
                (row, column) = (row + 1, 0);
            }
        }
        for (j, indices) in quads.iter_mut().enumerate().take(layout.quads) {
            for (x, index) in indices.iter_mut().enumerate() {
                *index = (starts[x / 4] + 4 * j + x % 4) as u8;
            }
        }
    }
    let pad = op.params.input_zero_point as i8 as u8 ^ 0x80;
    let mut plane_lines = [MaybeUninit::<Line>::uninit(); PLANE_BYTES / 64];
    // SAFETY: the plane's `row_len` bytes lie in its storage (`Layout::of`).
    unsafe { core::ptr::write_bytes(plane_lines.as_mut_ptr().cast::<u8>(), pad, layout.row_len) };
    // SAFETY: just initialised; only `u8` values are written through this.
    let plane: &mut [u8] = unsafe {
        core::slice::from_raw_parts_mut(plane_lines.as_mut_ptr().cast::<u8>(), layout.row_len)
    };
    let image_len = g.in_width * c;
    let pixels = g.out_height * g.out_width;
    let mut kernel_rows = [core::ptr::null::<u8>(); MAX_KERNEL_ROWS];
    for b in 0..g.batch {
        for iy in 0..g.in_height {
            flip_copy(
                &op.input[(b * g.in_height + iy) * image_len..][..image_len],
                &mut plane[((g.pad_top + iy) * columns + g.pad_left) * c..][..image_len],
            );
        }
        for first in (0..pixels).step_by(LANES) {
            let (oy, phase) = (first / g.out_width, first % g.out_width);
            let start = (oy * g.stride_height * columns + phase * g.stride_width) * c;
            for (ky, row) in kernel_rows.iter_mut().enumerate().take(g.kernel_height) {
                *row = plane[start + ky * row_bytes..].as_ptr();
            }
            let valid = (pixels - first).min(LANES);
            let mut masks = [0u64; 4];
            for (v, m) in masks.iter_mut().enumerate() {
                let bytes = (valid * n).saturating_sub(64 * v).min(64);
                *m = if bytes == 64 {
                    u64::MAX
                } else {
                    (1u64 << bytes) - 1
                };
            }
            plan.rows = kernel_rows.as_ptr();
            plan.gather = gather[phase].as_ptr().cast();
            plan.last_masks = masks.as_ptr();
            plan.last_pixels = valid as u64;
            let out = &mut output[(b * pixels + first) * n..][..valid * n];
            // SAFETY: AVX-512 VNNI and VBMI are available (caller). The block's loads read
            // 128 bytes from each kernel row's start, at most `(kh - 1) * row_bytes + 128`
            // past the block's start, whose lanes reach at most `reach` bytes (both inside
            // the plane and its slack, `Layout::of`); the stores write the `valid` pixels'
            // bytes through the masks (one pass) or pixel by pixel (several).
            unsafe { convolve_row(plan, 1, out.as_mut_ptr()) };
        }
    }
}

/// One accumulator's requantization with the pass's channel `$c`'s constants (at `r10 + 64 *
/// $c`),
/// clamped and offset by the output zero point, its sixteen bytes stored at `16 * $c` of
/// the scratch (r13). zmm16 and k5, k6 are clobbered; zmm17 holds 2^31 per 64-bit lane and
/// zmm18 `INTERLEAVE`.
macro_rules! requantize {
    ($c:literal) => {
        concat!(
            "vpaddd zmm",
            $c,
            ", zmm",
            $c,
            ", dword ptr [r10 + 64 * ",
            $c,
            "]{{1to16}}\n",
            "cmp qword ptr [r15 + 96], 0\n",
            "je 50",
            $c,
            "f\n",
            "vpsllvd zmm",
            $c,
            ", zmm",
            $c,
            ", dword ptr [r10 + 64 * ",
            $c,
            " + 4]{{1to16}}\n",
            "50",
            $c,
            ":\n",
            "vpsrlq zmm16, zmm",
            $c,
            ", 32\n",
            "vpmuldq zmm",
            $c,
            ", zmm",
            $c,
            ", qword ptr [r10 + 64 * ",
            $c,
            " + 8]{{1to8}}\n",
            "vpmuldq zmm16, zmm16, qword ptr [r10 + 64 * ",
            $c,
            " + 8]{{1to8}}\n",
            "vpaddq zmm",
            $c,
            ", zmm",
            $c,
            ", qword ptr [r10 + 64 * ",
            $c,
            " + 16]{{1to8}}\n",
            "vpaddq zmm16, zmm16, qword ptr [r10 + 64 * ",
            $c,
            " + 16]{{1to8}}\n",
            "vpcmpq k5, zmm",
            $c,
            ", qword ptr [r10 + 64 * ",
            $c,
            " + 24]{{1to8}}, 1\n",
            "vpcmpq k6, zmm16, qword ptr [r10 + 64 * ",
            $c,
            " + 24]{{1to8}}, 1\n",
            "vpsubq zmm",
            $c,
            " {{k5}}, zmm",
            $c,
            ", zmm17\n",
            "vpsubq zmm16 {{k6}}, zmm16, zmm17\n",
            "vpsravq zmm",
            $c,
            ", zmm",
            $c,
            ", qword ptr [r10 + 64 * ",
            $c,
            " + 32]{{1to8}}\n",
            "vpsravq zmm16, zmm16, qword ptr [r10 + 64 * ",
            $c,
            " + 32]{{1to8}}\n",
            "vpermt2d zmm",
            $c,
            ", zmm18, zmm16\n",
            "vpmaxsd zmm",
            $c,
            ", zmm",
            $c,
            ", dword ptr [r10 + 64 * ",
            $c,
            " + 40]{{1to16}}\n",
            "vpminsd zmm",
            $c,
            ", zmm",
            $c,
            ", dword ptr [r10 + 64 * ",
            $c,
            " + 44]{{1to16}}\n",
            "vpaddd zmm",
            $c,
            ", zmm",
            $c,
            ", dword ptr [r10 + 64 * ",
            $c,
            " + 48]{{1to16}}\n",
            "vpmovdb xmmword ptr [r13 + 16 * ",
            $c,
            "], zmm",
            $c,
            "\n",
        )
    };
}

/// Output vector `$v` of a block's bytes in zmm23: transpose `$v` (at `r12 + 192 * $v`)
/// applied to the scratch's channel-major bytes (zmm19-zmm22); zmm24 and k1 are clobbered.
macro_rules! transposed {
    ($v:literal) => {
        concat!(
            "vmovdqu8 zmm23, zmmword ptr [r12 + 192 * ",
            $v,
            "]\n",
            "vpermi2b zmm23, zmm19, zmm20\n",
            "vmovdqu8 zmm24, zmmword ptr [r12 + 192 * ",
            $v,
            " + 64]\n",
            "vpermi2b zmm24, zmm21, zmm22\n",
            "kmovq k1, qword ptr [r12 + 192 * ",
            $v,
            " + 128]\n",
            "vmovdqu8 zmm23 {{k1}}, zmm24\n",
        )
    };
}

/// One output vector of a block's bytes ([`transposed!`]), stored at `r11 + 64 * $v`
/// through mask `$v` of the block's masks (rax).
macro_rules! store {
    ($v:literal) => {
        concat!(
            transposed!($v),
            "kmovq k1, qword ptr [rax + 8 * ",
            $v,
            "]\n",
            "vmovdqu8 zmmword ptr [r11 + 64 * ",
            $v,
            "] {{k1}}, zmm23\n",
        )
    };
}

/// One output vector of a pass's bytes ([`transposed!`]) into the scratch's second 256
/// bytes (at `r13 + 256 + 64 * $v`), for passes that store pixel by pixel.
macro_rules! transpose {
    ($v:literal) => {
        concat!(
            transposed!($v),
            "vmovdqu8 zmmword ptr [r13 + 256 + 64 * ",
            $v,
            "], zmm23\n",
        )
    };
}

/// zmm0-zmm7 += zmm16 (sixteen pixels' four bytes) times channels 0-7's four weights at
/// rdi, broadcast.
macro_rules! multiply_eight {
    () => {
        concat!(
            "vpdpbusd zmm0, zmm16, dword ptr [rdi]{{1to16}}\n",
            "vpdpbusd zmm1, zmm16, dword ptr [rdi + 4]{{1to16}}\n",
            "vpdpbusd zmm2, zmm16, dword ptr [rdi + 8]{{1to16}}\n",
            "vpdpbusd zmm3, zmm16, dword ptr [rdi + 12]{{1to16}}\n",
            "vpdpbusd zmm4, zmm16, dword ptr [rdi + 16]{{1to16}}\n",
            "vpdpbusd zmm5, zmm16, dword ptr [rdi + 20]{{1to16}}\n",
            "vpdpbusd zmm6, zmm16, dword ptr [rdi + 24]{{1to16}}\n",
            "vpdpbusd zmm7, zmm16, dword ptr [rdi + 28]{{1to16}}\n",
        )
    };
}

/// [`multiply_eight!`] for all sixteen channels (zmm0-zmm15).
macro_rules! multiply_sixteen {
    () => {
        concat!(
            multiply_eight!(),
            "vpdpbusd zmm8, zmm16, dword ptr [rdi + 32]{{1to16}}\n",
            "vpdpbusd zmm9, zmm16, dword ptr [rdi + 36]{{1to16}}\n",
            "vpdpbusd zmm10, zmm16, dword ptr [rdi + 40]{{1to16}}\n",
            "vpdpbusd zmm11, zmm16, dword ptr [rdi + 44]{{1to16}}\n",
            "vpdpbusd zmm12, zmm16, dword ptr [rdi + 48]{{1to16}}\n",
            "vpdpbusd zmm13, zmm16, dword ptr [rdi + 52]{{1to16}}\n",
            "vpdpbusd zmm14, zmm16, dword ptr [rdi + 56]{{1to16}}\n",
            "vpdpbusd zmm15, zmm16, dword ptr [rdi + 60]{{1to16}}\n",
        )
    };
}

/// An output row, `blocks` blocks of sixteen pixels (the last through its masks).
///
/// # Safety
/// AVX-512 VNNI and VBMI must be available, and `plan` describe reads and writes inside
/// the layer's rows, tables and output row `out`, as [`conv2d_i8_vbmi`] sets them up.
#[inline]
unsafe fn convolve_row(plan: &RowPlan, blocks: usize, out: *mut i8) {
    // SAFETY: the caller's contract; vector registers and k1, k5, k6 are clobbered through
    // `clobber_abi("C")`; the stack is untouched (the scratch is the caller's).
    unsafe {
        asm!(
            // r15: the plan; rcx: blocks left; rdx: the block's byte offset in the rows;
            // r11: the output; rsi: the row pointers; r8: kernel rows left; rdi: the
            // weights; r9: quads left; r12: the gather indices; r10: the constants;
            // r13: the scratch; r14: any left shift; rax: scratch.
            "vmovdqu32 zmm18, zmmword ptr [{interleave}]",
            "mov eax, 0x80000000",
            "vpbroadcastq zmm17, rax",
            "xor edx, edx",
            "2:",
            "mov rdi, qword ptr [r15 + 24]",
            "mov r10, qword ptr [r15 + 32]",
            "xor r14d, r14d",
            "6:",
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            "mov rsi, qword ptr [r15]",
            "mov r8, qword ptr [r15 + 8]",
            "cmp qword ptr [r15 + 128], 0",
            "jne 21f",
            "3:",
            // The kernel row's 128 bytes from the block's first pixel on.
            "mov rax, qword ptr [rsi]",
            "vmovdqu8 zmm19, zmmword ptr [rax + rdx]",
            "vmovdqu8 zmm20, zmmword ptr [rax + rdx + 64]",
            "mov r9, qword ptr [r15 + 16]",
            "mov r12, qword ptr [r15 + 40]",
            "cmp qword ptr [r15 + 136], 0",
            "jne 24f",
            "4:",
            "vmovdqu8 zmm16, zmmword ptr [r12]",
            "vpermi2b zmm16, zmm19, zmm20",
            multiply_sixteen!(),
            "add rdi, 64",
            "add r12, 64",
            "dec r9",
            "jnz 4b",
            "jmp 26f",
            // At most eight channels: eight accumulators.
            "24:",
            "vmovdqu8 zmm16, zmmword ptr [r12]",
            "vpermi2b zmm16, zmm19, zmm20",
            multiply_eight!(),
            "add rdi, 64",
            "add r12, 64",
            "dec r9",
            "jnz 24b",
            "26:",
            "add rsi, 8",
            "dec r8",
            "jnz 3b",
            "jmp 22f",
            // Quad planes: each tap and quad of channels one load of sixteen pixels' dwords.
            "21:",
            "mov rax, qword ptr [rsi]",
            "vmovdqu8 zmm16, zmmword ptr [rax + rdx]",
            multiply_sixteen!(),
            "add rdi, 64",
            "add rsi, 8",
            "dec r8",
            "jnz 21b",
            "22:",
            // Requantize each channel's sixteen pixels into the scratch, channel-major.
            "mov r13, qword ptr [r15 + 88]",
            requantize!("0"),
            requantize!("1"),
            requantize!("2"),
            requantize!("3"),
            requantize!("4"),
            requantize!("5"),
            requantize!("6"),
            requantize!("7"),
            "cmp qword ptr [r15 + 136], 0",
            "jne 27f",
            requantize!("8"),
            requantize!("9"),
            requantize!("10"),
            requantize!("11"),
            requantize!("12"),
            requantize!("13"),
            requantize!("14"),
            requantize!("15"),
            "27:",
            // Transpose to pixel-major bytes and store, through the last block's masks on
            // the row's last block.
            "vmovdqu8 zmm19, zmmword ptr [r13]",
            "vmovdqu8 zmm20, zmmword ptr [r13 + 64]",
            "vmovdqu8 zmm21, zmmword ptr [r13 + 128]",
            "vmovdqu8 zmm22, zmmword ptr [r13 + 192]",
            "mov r12, qword ptr [r15 + 48]",
            "cmp qword ptr [r15 + 104], 1",
            "jne 7f",
            // One pass: the block's bytes are contiguous in the output.
            "mov rax, qword ptr [r15 + 56]",
            "cmp rcx, 1",
            "cmove rax, qword ptr [r15 + 64]",
            store!("0"),
            store!("1"),
            store!("2"),
            store!("3"),
            "jmp 8f",
            // Several passes: each pixel's sixteen bytes of this pass, `out_channels` apart,
            // sixteen bytes into the pixel per pass before.
            "7:",
            transpose!("0"),
            transpose!("1"),
            transpose!("2"),
            transpose!("3"),
            "mov r9, 16",
            "cmp rcx, 1",
            "cmove r9, qword ptr [r15 + 120]",
            "mov rax, r14",
            "shl rax, 4",
            "add rax, r11",
            "lea rsi, [r13 + 256]",
            "9:",
            "vmovdqu8 xmm23, xmmword ptr [rsi]",
            "vmovdqu8 xmmword ptr [rax], xmm23",
            "add rsi, 16",
            "add rax, qword ptr [r15 + 112]",
            "dec r9",
            "jnz 9b",
            "8:",
            // The next pass's constants (the weights follow on).
            "add r10, 16 * 64",
            "inc r14",
            "cmp r14, qword ptr [r15 + 104]",
            "jb 6b",
            "add rdx, qword ptr [r15 + 72]",
            "add r11, qword ptr [r15 + 80]",
            "dec rcx",
            "jnz 2b",
            "vzeroupper",
            interleave = in(reg) INTERLEAVE.as_ptr(),
            in("r15") plan,
            inout("rcx") blocks => _,
            out("rdx") _,
            inout("r11") out => _,
            out("rsi") _,
            out("r8") _,
            out("rdi") _,
            out("r9") _,
            out("r12") _,
            out("r10") _,
            out("r13") _,
            out("r14") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
