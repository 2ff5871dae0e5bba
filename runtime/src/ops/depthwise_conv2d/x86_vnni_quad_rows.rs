//! x86_64 AVX-512 VNNI depthwise convolution (multiplier 1) over quad rows: each input row is
//! interleaved once, so that every `vpdpbusd` of the convolution reads its four taps from
//! one load.
//!
//! **Quad rows.** For an output row, position `p = ox * C + c` of a kernel row's taps
//! `kx = 4q..4q + 4` reads bytes at `p + at(kx)` of the padded, phase-split copy of the
//! input row (see [`super::x86_vnni`]: a stride splits a row into phases, which makes each
//! tap's bytes contiguous again). Interleaving those four runs into dwords gives the row's
//! *quad row*, `(x[p + at(4q)], .., x[p + at(4q + 3)])` for each position. It depends only
//! on the input row, so it is built once per input row and kept in a slot for every output
//! row that reads it (three for a 3x3 window of stride one); the chunk kernel of
//! [`super::x86_vnni`] interleaves the same bytes again on every output row. The
//! convolution is then, per sixteen positions, one load and one `vpdpbusd` per kernel row
//! and quad of taps.
//!
//! **Order.** The interleave is two rounds of unpacking, which work within 128-bit lanes,
//! so each block of 64 positions is stored as four vectors whose lane `i` of vector `k`
//! holds position `16 * (i / 4) + 4 * k + i % 4`. Nothing needs them in order: the
//! convolution reads quads, weights and the requantization's constants at the same slots
//! (the weights are interleaved by the same code; the constants are laid out in that
//! order), and the saturating packs that narrow the four vectors to bytes undo exactly
//! that permutation. Position `p`'s channel is `p % C`, so the weights and constants of a
//! block repeat every `lcm(C, 64) / 64` blocks; the kernel takes channel counts where that
//! is at most four blocks (a [`ChannelTable`] of 256): powers of two up to 256 and three
//! times them up to 192. With rows short enough for its stack buffers, it takes those; the
//! chunk kernel takes the rest.
//!
//! **Requantization** is [`crate::ops::requantize::x86_avx512`]'s one-rounding form, from
//! a [`ChannelTable`] prepared once per call, fused after the accumulation of each block.
//!
//! Inline assembly, like the other VNNI kernels, because the AVX-512 intrinsics are stable
//! only from Rust 1.89 while the crate supports 1.85.

use core::arch::asm;
use core::mem::MaybeUninit;

use super::DepthwiseConv2dI8;
use super::x86_vnni::{PhaseRows, fill_slot};
use crate::fixed_point::QuantizedMultiplier;
use crate::ops::RequantizeParams;
use crate::ops::conv2d::{ConvGeometry, Held, RowSlots, gcd};
use crate::ops::requantize::x86_avx512::{
    CHANNEL_BLOCK_BYTES, ChannelTable, INTERLEAVE, TABLE_CHANNELS, block_lines,
};

/// Positions per block: four vectors of sixteen dwords.
const BLOCK: usize = 64;
/// Most kernel rows times quads of taps per kernel row.
const MAX_TAP_ROWS: usize = 16;
/// Bytes of packed weights kept on the stack: a period of blocks (at most four of 256
/// bytes) per kernel row and quad of taps.
const WEIGHT_BYTES: usize = MAX_TAP_ROWS * 4 * 4 * BLOCK;
/// Bytes of quad rows kept on the stack (one slot of quad rows per kernel row).
const QUAD_BYTES: usize = 16 * 1024;
/// Bytes of the padded, phase-split copy of one input row.
const PHASE_BYTES: usize = 8 * 1024;

/// How a layer maps onto the kernel.
struct Layout {
    rows: PhaseRows,
    /// Quads of taps per kernel row.
    quads: usize,
    /// Blocks of an output row (its positions rounded up to whole blocks).
    blocks: usize,
    /// Blocks after which the weights and constants repeat.
    period: usize,
}

impl Layout {
    /// The layout, or `None` where the kernel does not take the layer.
    fn of(g: &ConvGeometry) -> Option<Layout> {
        let c = g.in_channels;
        if g.out_channels != c || c == 0 || g.kernel_height == 0 || g.kernel_width == 0 {
            return None;
        }
        let period = c / gcd(c, BLOCK);
        let quads = g.kernel_width.div_ceil(4);
        let tap_rows = g.kernel_height.checked_mul(quads)?;
        if period * BLOCK > TABLE_CHANNELS || tap_rows > MAX_TAP_ROWS {
            return None;
        }
        let blocks = g.out_width.checked_mul(c)?.div_ceil(BLOCK);
        let row_bytes = blocks.checked_mul(4 * BLOCK)?;
        let stride = g.stride_width;
        // The furthest tap starts `(kw - 1) * d / s` pixels into its phase.
        let reach = (g.kernel_width - 1) * g.dilation_width / stride;
        let phase_len = (reach * c).checked_add(blocks * BLOCK)?;
        let fits = g.kernel_height.checked_mul(quads * row_bytes)? <= QUAD_BYTES
            && stride.checked_mul(phase_len)? <= PHASE_BYTES;
        fits.then_some(Layout {
            rows: PhaseRows {
                channels: c,
                stride,
                phase_len,
                positions: g.out_width + reach,
            },
            quads,
            blocks,
            period,
        })
    }

    fn tap_rows(&self, g: &ConvGeometry) -> usize {
        g.kernel_height * self.quads
    }

    /// Bytes of one quad row.
    fn row_bytes(&self) -> usize {
        self.blocks * 4 * BLOCK
    }

    /// Bytes of one tap row's packed weights (a period of blocks).
    fn weight_row_bytes(&self) -> usize {
        self.period * 4 * BLOCK
    }

    /// Position of slot `j` (of a block's 64), the unpacks' order.
    fn position_of(j: usize) -> usize {
        let (k, i) = (j / 16, j % 16);
        16 * (i / 4) + 4 * k + i % 4
    }
}

/// Whether the kernel takes this layer; for tests that must know which kernel a layer
/// reaches.
#[cfg(test)]
pub(super) fn applies(g: &ConvGeometry) -> bool {
    Layout::of(g).is_some()
}

/// Runs the layer if the kernel takes it (`false` where it does not, and nothing is
/// written).
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed validation.
pub(super) unsafe fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) -> bool {
    let Some(layout) = Layout::of(&op.geometry) else {
        return false;
    };
    // SAFETY: the caller's contract; `layout` is the layer's.
    unsafe { depthwise_i8_quad_rows(op, &layout, output) };
    true
}

/// 64-byte aligned bytes, for the loop's loads and the packing's stores.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line(#[allow(dead_code)] [u8; 64]);

/// What the row assembly reads besides its rows: the table's first block and the end of
/// its period, the last block's store mask, whether any channel shifts left, the clamp
/// bounds (bytes) and output zero point (a word), and the bytes of a tap row's weights.
#[repr(C)]
struct RowConstants {
    table: *const u8,
    table_end: *const u8,
    last_mask: u64,
    shifts_left: u64,
    bounds: [i32; 3],
    weight_row_bytes: u64,
}

/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed validation and
/// `layout` be its.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_i8_quad_rows(op: &DepthwiseConv2dI8<'_>, layout: &Layout, output: &mut [i8]) {
    let g = &op.geometry;
    let c = g.in_channels;
    let zp = op.params.input_zero_point;
    let tap_rows = layout.tap_rows(g);
    let row_bytes = layout.row_bytes();
    // Where each tap's bytes start in the padded, phase-split row (a spare tap past the
    // window starts where its quad's first does: its weights are zero).
    let mut tap_at = [0usize; 4 * MAX_TAP_ROWS];
    for (kx, at) in tap_at.iter_mut().enumerate().take(4 * layout.quads) {
        let kx = if kx < g.kernel_width { kx } else { kx / 4 * 4 };
        let reach = kx * g.dilation_width;
        let rows = &layout.rows;
        *at = reach % rows.stride * rows.phase_len + reach / rows.stride * c;
    }

    // The weights, a period of blocks per kernel row and quad of taps.
    let mut weight_lines = [MaybeUninit::<Line>::uninit(); WEIGHT_BYTES / 64];
    let weights: *mut u8 = weight_lines.as_mut_ptr().cast();
    // SAFETY: AVX-512 VNNI is available (caller); `tap_rows <= MAX_TAP_ROWS` periods of at
    // most four blocks fit the buffer (`Layout::of`).
    unsafe { pack_weights(op.filter, g, layout, weights) };

    // The table, one slot per position of a period's blocks in the unpacks' order: the
    // bias less `(128 + zp) * sum(w)` over every tap (the padding reads `zp`, flipped to
    // `zp + 128`; the spare taps have zero weights), and the channel's multiplier.
    let mut sums = [0i32; TABLE_CHANNELS];
    for taps in op
        .filter
        .chunks_exact(c)
        .take(g.kernel_height * g.kernel_width)
    {
        for (sum, &w) in sums.iter_mut().zip(taps) {
            *sum += i32::from(w);
        }
    }
    let slots = layout.period * BLOCK;
    // Each position's channel, counted rather than divided (a division per position cost
    // more than the layer's arithmetic on DS-CNN's layers).
    let mut channel_at = [0u16; TABLE_CHANNELS];
    let mut ch = 0;
    for at in &mut channel_at[..slots] {
        *at = ch as u16;
        ch = if ch + 1 == c { 0 } else { ch + 1 };
    }
    let channel_of =
        |j: usize| usize::from(channel_at[j / BLOCK * BLOCK + Layout::position_of(j % BLOCK)]);
    let mut offsets = [0i32; TABLE_CHANNELS];
    let mut per_slot = [QuantizedMultiplier::default(); TABLE_CHANNELS];
    for (j, (offset, m)) in offsets
        .iter_mut()
        .zip(&mut per_slot)
        .enumerate()
        .take(slots)
    {
        let ch = channel_of(j);
        let bias = op.bias.map_or(0, |bias| bias[ch]);
        *offset = bias.wrapping_sub((128 + zp).wrapping_mul(sums[ch]));
        *m = op.params.multiplier(ch);
    }
    let params = RequantizeParams {
        multipliers: if op.params.multipliers.len() == 1 {
            op.params.multipliers
        } else {
            &per_slot[..slots]
        },
        ..op.params
    };
    let mut table = ChannelTable::new();
    // SAFETY: AVX-512 VNNI is available (caller); the slots are at most `TABLE_CHANNELS`
    // (`Layout::of`), and the offsets and multipliers cover them.
    unsafe { table.prepare(&params, Some(&offsets[..slots]), 0, slots) };
    let row_len = g.out_width * c;
    let last = row_len - (layout.blocks - 1) * BLOCK;
    let constants = RowConstants {
        table: table.blocks_ptr(),
        table_end: table
            .blocks_ptr()
            .wrapping_add(4 * layout.period * CHANNEL_BLOCK_BYTES),
        last_mask: u64::MAX >> (64 - last),
        shifts_left: u64::from(op.params.multipliers.iter().any(|m| m.exponents().0 > 0)),
        bounds: [
            i32::from(op.params.activation_min),
            i32::from(op.params.activation_max),
            op.params.output_zero_point,
        ],
        weight_row_bytes: layout.weight_row_bytes() as u64,
    };

    // The padded copy of the input row being interleaved. Filled with the padding once: the
    // positions outside the image are the same for every row, and copying a row only ever
    // writes the ones inside it.
    let rows_len = layout.rows.stride * layout.rows.phase_len;
    let mut phase_storage = [MaybeUninit::<u8>::uninit(); PHASE_BYTES];
    // Validated zero points are int8; the padding holds `zp`, flipped like the input.
    let pad = zp as i8 as u8 ^ 0x80;
    phase_storage[..rows_len].fill(MaybeUninit::new(pad));
    // SAFETY: the first `rows_len` bytes were just initialised (the slicing checked that they
    // lie in the storage), and only `u8` values are written through this.
    let phase_rows: &mut [u8] = unsafe {
        core::slice::from_raw_parts_mut(phase_storage.as_mut_ptr().cast::<u8>(), rows_len)
    };

    // The quad rows, one slot per kernel row ([`RowSlots`]): consecutive output rows share
    // input rows, so each is interleaved once.
    let slot_len = layout.quads * row_bytes;
    let mut quad_lines = [MaybeUninit::<Line>::uninit(); QUAD_BYTES / 64];
    let quads: *mut u8 = quad_lines.as_mut_ptr().cast();
    let mut slots = RowSlots::new(g);
    let mut slot_of = [0usize; MAX_TAP_ROWS];
    let mut sources = [core::ptr::null::<u8>(); MAX_TAP_ROWS];
    for out_row in 0..g.batch * g.out_height {
        let (b, oy) = (out_row / g.out_height, out_row % g.out_height);
        for (ky, slot_of) in slot_of.iter_mut().enumerate().take(g.kernel_height) {
            let (slot, fill) = slots.claim(g, (b, oy, ky));
            *slot_of = slot;
            let Some(fill) = fill else {
                continue;
            };
            // SAFETY: the slot's `slot_len` bytes lie inside the quad rows' buffer
            // (`Layout::of` bounds `kernel_height * slot_len`).
            let slot_bytes = unsafe { quads.add(slot * slot_len) };
            match fill.image_row {
                // A row of padding interleaves to padding.
                None if fill.held == Held::Padding => {}
                // SAFETY: as above.
                None => unsafe { core::ptr::write_bytes(slot_bytes, pad, slot_len) },
                Some(iy) => {
                    let input_row =
                        &op.input[(b * g.in_height + iy) * g.in_width * c..][..g.in_width * c];
                    // SAFETY: AVX2 is available (caller).
                    unsafe {
                        fill_slot(Some(input_row), false, (g, &layout.rows), pad, phase_rows)
                    };
                    for q in 0..layout.quads {
                        let tap = |k: usize| phase_rows[tap_at[4 * q + k]..].as_ptr();
                        // SAFETY: AVX-512 VNNI is available (caller); each tap's run of
                        // `blocks * 64` bytes ends within the phase rows (a tap starts at
                        // most `(stride - 1) * phase_len + reach * C`, and `phase_len =
                        // reach * C + blocks * 64`), and the quad row's `row_bytes` lie
                        // inside the slot.
                        unsafe {
                            interleave([tap(0), tap(1), tap(2), tap(3)], layout.blocks, {
                                slot_bytes.add(q * row_bytes)
                            })
                        };
                    }
                }
            }
        }
        for (t, source) in sources.iter_mut().enumerate().take(tap_rows) {
            let (ky, q) = (t / layout.quads, t % layout.quads);
            // SAFETY: inside the quad rows' buffer, as above.
            *source = unsafe { quads.add(slot_of[ky] * slot_len + q * row_bytes) };
        }
        let out = &mut output[out_row * row_len..][..row_len];
        // SAFETY: AVX-512 VNNI is available (caller); each source holds `blocks` blocks,
        // each tap row of the weights and the table a period of them, and the output row
        // `(blocks - 1) * 64 + last` bytes, `last` the bits of the last block's mask.
        unsafe {
            convolve_row(
                &sources[..tap_rows],
                weights,
                layout.blocks,
                &constants,
                out.as_mut_ptr(),
            )
        };
    }
}

/// Packs the weights: for kernel row `ky` and quad `q`, a period of blocks holding the
/// weights of taps `4q..4q + 4` of each position's channel (zero for spare taps past the
/// window), interleaved by [`interleave`] like the input.
///
/// # Safety
/// AVX-512 VNNI must be available; `dst` must hold `tap_rows * weight_row_bytes` bytes.
#[target_feature(enable = "avx2")]
unsafe fn pack_weights(filter: &[i8], g: &ConvGeometry, layout: &Layout, dst: *mut u8) {
    let c = g.in_channels;
    let period = layout.period * BLOCK;
    // One period of positions per tap, in order: position `p` holds channel `p % C`.
    let mut runs = [[0u8; TABLE_CHANNELS]; 4];
    for t in 0..layout.tap_rows(g) {
        let (ky, q) = (t / layout.quads, t % layout.quads);
        for (k, run) in runs.iter_mut().enumerate() {
            let kx = 4 * q + k;
            if kx < g.kernel_width {
                let taps = &filter[(ky * g.kernel_width + kx) * c..][..c];
                // The period is a whole number of channel rows (`lcm(C, 64)`).
                for row in run[..period].chunks_exact_mut(c) {
                    row.copy_from_slice(bytemuck::cast_slice(taps));
                }
            } else {
                run.fill(0);
            }
        }
        // SAFETY: AVX-512 VNNI is available (caller); each run holds the period's bytes, and
        // the tap row's `weight_row_bytes` lie inside `dst` (the caller's contract).
        unsafe {
            interleave(
                runs.each_ref().map(|r| r.as_ptr()),
                layout.period,
                dst.add(t * layout.weight_row_bytes()),
            )
        };
    }
}

/// Interleaves four runs of `blocks * 64` bytes into quads, a block of 64 positions at a
/// time: two rounds of unpacking (bytes, then words) into four vectors in the order the
/// module comment describes, stored one after the other.
///
/// # Safety
/// AVX-512 VNNI (with it AVX-512 BW) must be available; each source must be readable for
/// `blocks * 64` bytes and `dst` writable for four times that.
#[inline]
unsafe fn interleave(sources: [*const u8; 4], blocks: usize, dst: *mut u8) {
    // SAFETY: the caller's contract; vector registers are clobbered through
    // `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            // rcx: blocks left; rdx: the block's offset in the runs; rsi, rdi, r8, r9: the
            // runs; r10: the output.
            "test rcx, rcx",
            "jz 9f",
            "xor edx, edx",
            "2:",
            "vmovdqu8 zmm4, zmmword ptr [rsi + rdx]",
            "vmovdqu8 zmm5, zmmword ptr [rdi + rdx]",
            "vmovdqu8 zmm6, zmmword ptr [r8 + rdx]",
            "vmovdqu8 zmm7, zmmword ptr [r9 + rdx]",
            "vpunpcklbw zmm8, zmm4, zmm5",
            "vpunpckhbw zmm9, zmm4, zmm5",
            "vpunpcklbw zmm10, zmm6, zmm7",
            "vpunpckhbw zmm11, zmm6, zmm7",
            "vpunpcklwd zmm4, zmm8, zmm10",
            "vpunpckhwd zmm5, zmm8, zmm10",
            "vpunpcklwd zmm6, zmm9, zmm11",
            "vpunpckhwd zmm7, zmm9, zmm11",
            "vmovdqu8 zmmword ptr [r10], zmm4",
            "vmovdqu8 zmmword ptr [r10 + 64], zmm5",
            "vmovdqu8 zmmword ptr [r10 + 128], zmm6",
            "vmovdqu8 zmmword ptr [r10 + 192], zmm7",
            "add rdx, 64",
            "add r10, 256",
            "dec rcx",
            "jnz 2b",
            "9:",
            "vzeroupper",
            inout("rcx") blocks => _,
            out("rdx") _,
            in("rsi") sources[0],
            in("rdi") sources[1],
            in("r8") sources[2],
            in("r9") sources[3],
            inout("r10") dst => _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}

/// The requantization of accumulator `zmm$acc` with the constants of the table block at
/// `r14 + $at`, up to the clamp: [`crate::ops::requantize::x86_avx512`]'s one-rounding
/// form (its offset, the bias, is added and its left shift applied before). zmm8, zmm9, k5
/// and k6 are clobbered; zmm21 holds 2^31 per 64-bit lane and zmm28 `INTERLEAVE`.
macro_rules! requantize {
    ($acc:literal, $at:literal) => {
        concat!(
            "vpsrlq zmm9, zmm",
            $acc,
            ", 32\n",
            "vpmuldq zmm",
            $acc,
            ", zmm",
            $acc,
            ", zmmword ptr [r14 + ",
            $at,
            " + {mantissa}]\n",
            "vpmuldq zmm9, zmm9, zmmword ptr [r14 + ",
            $at,
            " + {odd_mantissa}]\n",
            "vpaddq zmm",
            $acc,
            ", zmm",
            $acc,
            ", zmmword ptr [r14 + ",
            $at,
            " + {rounding_even}]\n",
            "vpaddq zmm9, zmm9, zmmword ptr [r14 + ",
            $at,
            " + {rounding_odd}]\n",
            "vpcmpq k5, zmm",
            $acc,
            ", zmmword ptr [r14 + ",
            $at,
            " + {negative_even}], 1\n",
            "vpcmpq k6, zmm9, zmmword ptr [r14 + ",
            $at,
            " + {negative_odd}], 1\n",
            "vpsubq zmm",
            $acc,
            " {{k5}}, zmm",
            $acc,
            ", zmm21\n",
            "vpsubq zmm9 {{k6}}, zmm9, zmm21\n",
            "vpsravq zmm",
            $acc,
            ", zmm",
            $acc,
            ", zmmword ptr [r14 + ",
            $at,
            " + {shift_even}]\n",
            "vpsravq zmm9, zmm9, zmmword ptr [r14 + ",
            $at,
            " + {shift_odd}]\n",
            "vpermt2d zmm",
            $acc,
            ", zmm28, zmm9\n",
        )
    };
}

/// One output row: for each block of 64 positions, every tap row's quads multiplied with
/// its weights into four accumulators, requantized with the period's table blocks,
/// narrowed back into order, clamped, and stored (the last block through its mask).
///
/// # Safety
/// AVX-512 VNNI must be available; each source must be readable for `blocks * 256` bytes,
/// and each of the `sources.len()` weight rows (`weight_row_bytes` apart from `weights`)
/// for a period of blocks; `constants.table` must hold prepared blocks up to `table_end`,
/// the same period of four; and `out` must be writable for `(blocks - 1) * 64` bytes and
/// the set bits of `last_mask`.
#[inline]
unsafe fn convolve_row(
    sources: &[*const u8],
    weights: *const u8,
    blocks: usize,
    constants: &RowConstants,
    out: *mut i8,
) {
    debug_assert!(!sources.is_empty() && blocks > 0);
    // SAFETY: the caller's contract; vector registers and k1, k5, k6 are clobbered through
    // `clobber_abi("C")`; the stack is untouched.
    unsafe {
        asm!(
            // rcx: blocks left; rdx: the block's byte offset in the quad rows; r10: its
            // offset in the weights' period; rsi: the sources; r8: their count; rdi: the
            // weights; r9: the output; r15: the constants; r14: the block's table blocks;
            // r11: the source being read; r12: its weights; r13: tap rows left.
            "vpbroadcastb zmm22, byte ptr [r15 + 32]",
            "vpbroadcastb zmm23, byte ptr [r15 + 36]",
            "vpbroadcastw zmm19, word ptr [r15 + 40]",
            "vmovdqu32 zmm28, zmmword ptr [{interleave}]",
            "mov eax, 0x80000000",
            "vpbroadcastq zmm21, rax",
            "mov r14, qword ptr [r15]",
            "xor edx, edx",
            "xor r10d, r10d",
            "2:",
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "mov r11, rsi",
            "lea r12, [rdi + r10]",
            "mov r13, r8",
            "3:",
            "mov rax, qword ptr [r11]",
            "vmovdqu8 zmm4, zmmword ptr [rax + rdx]",
            "vmovdqu8 zmm5, zmmword ptr [rax + rdx + 64]",
            "vmovdqu8 zmm6, zmmword ptr [rax + rdx + 128]",
            "vmovdqu8 zmm7, zmmword ptr [rax + rdx + 192]",
            "vpdpbusd zmm0, zmm4, zmmword ptr [r12]",
            "vpdpbusd zmm1, zmm5, zmmword ptr [r12 + 64]",
            "vpdpbusd zmm2, zmm6, zmmword ptr [r12 + 128]",
            "vpdpbusd zmm3, zmm7, zmmword ptr [r12 + 192]",
            "add r11, 8",
            "add r12, qword ptr [r15 + 48]",
            "dec r13",
            "jnz 3b",
            // The bias, and the left shift where any channel has one.
            "vpaddd zmm0, zmm0, zmmword ptr [r14 + {bias}]",
            "vpaddd zmm1, zmm1, zmmword ptr [r14 + {b1} + {bias}]",
            "vpaddd zmm2, zmm2, zmmword ptr [r14 + {b2} + {bias}]",
            "vpaddd zmm3, zmm3, zmmword ptr [r14 + {b3} + {bias}]",
            "cmp qword ptr [r15 + 24], 0",
            "je 4f",
            "vpsllvd zmm0, zmm0, zmmword ptr [r14 + {left}]",
            "vpsllvd zmm1, zmm1, zmmword ptr [r14 + {b1} + {left}]",
            "vpsllvd zmm2, zmm2, zmmword ptr [r14 + {b2} + {left}]",
            "vpsllvd zmm3, zmm3, zmmword ptr [r14 + {b3} + {left}]",
            "4:",
            requantize!("0", "0"),
            requantize!("1", "{b1}"),
            requantize!("2", "{b2}"),
            requantize!("3", "{b3}"),
            // Saturating packs restore the positions' order; `clamp(x.saturating_add(zp),
            // lo, hi)` as in the table requantization.
            "vpackssdw zmm0, zmm0, zmm1",
            "vpackssdw zmm2, zmm2, zmm3",
            "vpaddsw zmm0, zmm0, zmm19",
            "vpaddsw zmm2, zmm2, zmm19",
            "vpacksswb zmm0, zmm0, zmm2",
            "vpmaxsb zmm0, zmm0, zmm22",
            "vpminsb zmm0, zmm0, zmm23",
            "cmp rcx, 1",
            "je 5f",
            "vmovdqu8 zmmword ptr [r9], zmm0",
            // The next block's table blocks and weights, back to the first after a period.
            "add r14, {b4}",
            "cmp r14, qword ptr [r15 + 8]",
            "cmovae r14, qword ptr [r15]",
            "add r10, 256",
            "xor eax, eax",
            "cmp r10, qword ptr [r15 + 48]",
            "cmovae r10, rax",
            "add r9, 64",
            "add rdx, 256",
            "dec rcx",
            "jmp 2b",
            "5:",
            "kmovq k1, qword ptr [r15 + 16]",
            "vmovdqu8 zmmword ptr [r9] {{k1}}, zmm0",
            "vzeroupper",
            interleave = in(reg) INTERLEAVE.as_ptr(),
            bias = const block_lines::BIAS,
            left = const block_lines::LEFT,
            mantissa = const block_lines::MANTISSA,
            odd_mantissa = const block_lines::ODD_MANTISSA,
            rounding_even = const block_lines::ROUNDING[0],
            rounding_odd = const block_lines::ROUNDING[1],
            negative_even = const block_lines::NEGATIVE[0],
            negative_odd = const block_lines::NEGATIVE[1],
            shift_even = const block_lines::SHIFT[0],
            shift_odd = const block_lines::SHIFT[1],
            b1 = const CHANNEL_BLOCK_BYTES,
            b2 = const 2 * CHANNEL_BLOCK_BYTES,
            b3 = const 3 * CHANNEL_BLOCK_BYTES,
            b4 = const 4 * CHANNEL_BLOCK_BYTES,
            inout("rcx") blocks => _,
            out("rdx") _,
            in("rsi") sources.as_ptr(),
            in("r8") sources.len(),
            in("rdi") weights,
            out("r10") _,
            inout("r9") out => _,
            in("r15") constants,
            out("r14") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("rax") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
}
