//! x86_64 AVX-512 VNNI int8 convolution through the shared `vpdpbusd` micro-kernels
//! ([`crate::ops::x86_vnni`]). Input patches are gathered as raw int8 bytes, `zp` in the
//! padding, which the centering turns into exactly zero. Where a group's weights fit the
//! stack packing, eight pixels' patches meet sixteen channels per instruction; larger layers
//! dot two patches with four filter rows at a time. Accumulators are requantized 64
//! channels at a time. Pointwise convolutions run as the VNNI fully-connected layer.

use super::{Conv2dI8, ConvGeometry, PixelAt, gather_patch_at, gather_patch_runs};
use core::mem::MaybeUninit;

use crate::isa::Isa;
use crate::ops::fully_connected::x86_prepared::{Kernel, Prepared};
use crate::ops::fully_connected::x86_vnni;
use crate::ops::requantize::x86_avx512::{ChannelTable, TABLE_CHANNELS};
use crate::ops::x86_amx::{AMX_DEPTH, AMX_ROWS, TileActivations, TileSession};
use crate::ops::x86_vnni::{
    MAX_GEMM_DEPTH, PANEL, PackedWeights, TILE_ROWS, TileOutput, TileRows, dot_pair_requantize,
    gemm_requantize,
};

/// Shortest patch the AMX kernel takes: below four steps of 64 bytes of depth, the tiles'
/// fixed costs (sums stored and read back, depth padded to 64) outweighed their multiplies
/// (with the tiles on every layer, ResNet-8's 144-byte 3x3 layers ran 5-7% slower than with
/// VNNI and its 32-channel one 15-20%; its 288- and 576-byte ones ran 8-26% faster;
/// `loam bench --per-op`).
const AMX_MIN_DEPTH: usize = 256;

/// The AMX int8 kernel: the VNNI kernel's GEMM with tiles of 32 rows multiplied by
/// `tdpbusd` ([`crate::ops::x86_amx`]); pointwise layers through the AMX fully-connected
/// kernel (those of few channels the VBMI kernel takes through it, [`super::x86_vbmi`]);
/// the VNNI kernel where AMX is missing or the layer is too shallow ([`AMX_MIN_DEPTH`]) or
/// too deep for the packing.
pub(super) fn conv2d_i8_amx(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    let g = &op.geometry;
    // SAFETY: `op` was validated; no packing is passed.
    if unsafe { super::x86_amx_implicit::conv2d_i8(op, output, None) } {
        return;
    }
    if g.is_pointwise()
        && Isa::Avx512Vnni.available()
        // SAFETY: AVX-512 VNNI is available (checked just before); `op` was validated.
        && unsafe { super::x86_vbmi::conv2d_i8(op, output) }
    {
        return;
    }
    if g.is_pointwise() {
        return crate::ops::fully_connected::x86_amx::fully_connected_i8(
            &op.as_fully_connected(),
            output,
        );
    }
    if Isa::Amx.available() && amx_takes(g) {
        // SAFETY: AMX, and with it AVX-512 VNNI and AVX2, are available (checked above).
        return unsafe { conv2d_i8_gemm::<AMX_ROW_BYTES>(op, g, output, Tiles::Amx, None) };
    }
    conv2d_i8(op, output, scratch)
}

/// Runs `op` (validated for `output`) through the packing an interpreter prepared in
/// `words`, if they hold the one for the GEMM this CPU runs for the layer
/// ([`crate::ops::fully_connected::x86_prepared`]); `false` (nothing written) where they do
/// not.
pub(crate) fn conv2d_i8_prepared(op: &Conv2dI8<'_>, words: &[i32], output: &mut [i8]) -> bool {
    let g = &op.geometry;
    if let Some(prepared) = Prepared::conv(words, g, Kernel::ConvImplicit) {
        // SAFETY: the plan's checks: the implicit kernel takes the layer on this CPU, and
        // the words are its packing; `op` is validated (caller).
        return unsafe { super::x86_amx_implicit::conv2d_i8(op, output, Some(&prepared)) };
    }
    if let Some(prepared) = Prepared::conv(words, g, Kernel::ConvAmx) {
        // SAFETY: the plan's checks: AMX (and so AVX-512 VNNI and AVX2) is available and
        // the tiles take the layer; `op` is validated (caller).
        unsafe {
            conv2d_i8_gemm::<AMX_ROW_BYTES>(op, g, output, Tiles::Amx, Some(&prepared));
        }
        return true;
    }
    if let Some(prepared) = Prepared::conv(words, g, Kernel::ConvVnni) {
        // SAFETY: the plan's checks: AVX-512 VNNI (and so AVX2) is available and the
        // packing holds the layer's panels; `op` is validated (caller).
        unsafe {
            conv2d_i8_gemm::<VNNI_ROW_BYTES>(op, g, output, Tiles::Vnni, Some(&prepared));
        }
        return true;
    }
    false
}

/// Bytes the AMX GEMM pads each panel's depth to a multiple of.
pub(crate) const AMX_ALIGN: usize = AMX_DEPTH;

/// Channels per slice of a group of `channels` whose patches of `k` bytes are packed with
/// their depth padded to `align`: equal slices of whole panels, as few as fit the packing
/// and a requantization table (64 channels that do not fit as one are two of 32, not 48
/// and 16, so that no slice leaves most of a tile's lanes idle); 0 where no panel fits.
pub(crate) fn slice_len(k: usize, channels: usize, align: usize) -> usize {
    let most = PackedWeights::channels_that_fit_aligned(k, align).min(TABLE_CHANNELS);
    if most == 0 {
        return 0;
    }
    let slices = channels.div_ceil(most).max(1);
    channels.div_ceil(slices).div_ceil(PANEL) * PANEL
}

/// Whether [`conv2d_i8_amx`] runs the layer on the tiles (given AMX).
pub(crate) fn amx_takes(g: &ConvGeometry) -> bool {
    !g.is_pointwise()
        && g.patch_len() >= AMX_MIN_DEPTH
        && PackedWeights::channels_that_fit_aligned(g.patch_len(), AMX_DEPTH) > 0
}

/// The VNNI int8 kernel; the AVX2 kernel where AVX-512 VNNI is missing.
pub(super) fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if !Isa::Avx512Vnni.available() {
        return super::x86::conv2d_i8(op, output, scratch);
    }
    let g = &op.geometry;
    // SAFETY: AVX-512 VNNI is available (checked above); `op` was validated by the caller.
    if unsafe { super::x86_vbmi::conv2d_i8(op, output) } {
        return;
    }
    if g.is_pointwise() {
        return x86_vnni::fully_connected_i8(&op.as_fully_connected(), output);
    }
    if PackedWeights::channels_that_fit(g.patch_len()) > 0 {
        // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked above).
        return unsafe { conv2d_i8_gemm::<VNNI_ROW_BYTES>(op, g, output, Tiles::Vnni, None) };
    }
    // The scratch holds two i16 patches with slack, so at least 4k bytes: two byte patches
    // fit with room to spare.
    let bytes: &mut [i8] = bytemuck::cast_slice_mut(scratch);
    // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked above).
    unsafe { conv2d_i8_vnni(op, g, output, bytes) }
}

/// Im2col into tiles of eight pixels (32 for AMX), against the group's weights packed
/// once: channels in lanes, no reductions (see [`gemm_requantize`]). A group whose weights do not all fit the
/// packing runs as several slices of its channels, each over every pixel (the gather is
/// repeated, which costs far less than [`dot_pair_requantize`]'s reductions did: ResNet-8's
/// 64-channel 3x3 layer went from 27.0 to 16.1 µs in `loam bench --per-op`).
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available, and AMX for [`Tiles::Amx`]; `op` must have
/// passed validation and its patches must be short enough for
/// [one panel](PackedWeights::channels_that_fit_aligned) of the tiles' layout; `prepared`,
/// if any, must be the interpreter's packing of `op`'s weights for these tiles.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_i8_gemm<const ROW_BYTES: usize>(
    op: &Conv2dI8<'_>,
    g: &ConvGeometry,
    output: &mut [i8],
    tiles: Tiles,
    prepared: Option<&Prepared<'_>>,
) {
    let k = g.patch_len();
    let (tile_len, align) = tiles.layout();
    let zp = op.params.input_zero_point;
    let (cg_out, oc_total) = (g.group_out_channels(), g.out_channels);
    let pixels = g.batch * g.out_height * g.out_width;
    // Validated zero points are int8.
    let fill = zp as i8;
    let mut packed = PackedWeights::new();
    let mut table = ChannelTable::new();
    // Room for two tiles' rows of the tiles used, the one gathered while the one before is
    // multiplied (see below): `ROW_BYTES` is sized for the tiles, so that a VNNI layer's
    // frame does not carry the AMX tiles' 64 KiB.
    let mut storage = [[MaybeUninit::<u8>::uninit(); ROW_BYTES]; 2];
    let [first_storage, second_storage] = &mut storage;
    let mut buffers = [
        TileRows::with_layout(first_storage, k, tile_len, align),
        TileRows::with_layout(second_storage, k, tile_len, align),
    ];
    // SAFETY: AMX is available where the tiles are AMX's (caller).
    let mut session = matches!(tiles, Tiles::Amx).then(|| unsafe { TileSession::start(AMX_DEPTH) });
    let slice_len = slice_len(k, cg_out, align);
    debug_assert!(prepared.is_none_or(|p| p.slice_len() == slice_len));
    for (group, from) in
        (0..g.groups).flat_map(|group| (0..cg_out).step_by(slice_len).map(move |c| (group, c)))
    {
        let first = group * cg_out + from;
        let len = (cg_out - from).min(slice_len);
        let (offsets, panels) = match prepared {
            Some(prepared) => prepared.group_slice(group, from / slice_len),
            None => {
                let bias = op.bias.map(|bias| &bias[first..first + len]);
                // SAFETY: AVX2 is available (caller); `len` channels fit (`slice_len`).
                unsafe {
                    packed.pack_aligned(
                        &op.filter[first * k..(first + len) * k],
                        (k, len, align),
                        zp,
                        bias,
                    )
                };
                (packed.offsets(), packed.view())
            }
        };
        // SAFETY: AVX-512 VNNI is available (caller); `len <= TABLE_CHANNELS`, inside the
        // validated multipliers.
        unsafe { table.prepare(&op.params, Some(offsets), first, len) };
        // Each tile is multiplied after the next one is gathered: the AMX tile loads read
        // the rows back 64 bytes at a time, across several of the gather's stores, which
        // the core cannot forward to them (they wait for those stores to reach the cache);
        // gathering first gives the stores that time. (Its gain was not measured apart
        // from the interior-window gather that came with it.) The VNNI kernel's 4-byte
        // broadcasts forward, and lose nothing by the order.
        let mut pending: Option<(usize, TileOutput)> = None;
        let mut p0 = 0;
        let mut at = PixelAt { b: 0, oy: 0, ox: 0 };
        let mut next = 0;
        loop {
            let gathered = (p0 < pixels).then(|| {
                let tile_rows = (pixels - p0).min(tile_len);
                buffers[next].load(tile_rows, |_, patch| {
                    gather_patch_at(g, op.input, at, group, patch, fill, copy_run);
                    at = at.next(g);
                });
                let tile = TileOutput {
                    first_row: p0,
                    row_stride: oc_total,
                    first_channel: first,
                };
                p0 += tile_rows;
                next ^= 1;
                (next ^ 1, tile)
            });
            let Some((index, tile)) = core::mem::replace(&mut pending, gathered) else {
                if pending.is_none() {
                    break;
                }
                continue;
            };
            let rows = &buffers[index];
            // SAFETY: AVX-512 VNNI, or AMX for `Tiles::Amx`, is available (caller); the
            // tile's pixels and the group's channels are inside the validated layer, and
            // the rows and packing have the tiles' layout.
            unsafe {
                match &mut session {
                    None => gemm_requantize(rows, &panels, &table, output, tile),
                    Some(session) => session.gemm_requantize(
                        &TileActivations::flipped(rows),
                        &panels,
                        &table,
                        output,
                        tile,
                    ),
                }
            };
        }
        if let Some(session) = &mut session {
            // SAFETY: AMX is available (caller); the packing and layer of the calls above,
            // before the next slice repacks.
            unsafe { session.finish(&table, output) };
        }
    }
}

/// Bytes of one tile's rows for each GEMM: [`TILE_ROWS`] or [`AMX_ROWS`] rows of up to
/// [`MAX_GEMM_DEPTH`] bytes.
const VNNI_ROW_BYTES: usize = TILE_ROWS * MAX_GEMM_DEPTH;
const AMX_ROW_BYTES: usize = AMX_ROWS * MAX_GEMM_DEPTH;

/// Which GEMM multiplies the gathered tiles.
#[derive(Clone, Copy)]
enum Tiles {
    /// [`gemm_requantize`]: eight rows, depth padded to four bytes.
    Vnni,
    /// [`TileSession::gemm_requantize`]: 32 rows (two tiles), depth padded to 64 bytes.
    Amx,
}

impl Tiles {
    /// Rows per tile and the depth's alignment.
    fn layout(self) -> (usize, usize) {
        match self {
            Tiles::Vnni => (TILE_ROWS, 4),
            Tiles::Amx => (AMX_ROWS, AMX_DEPTH),
        }
    }
}

/// Copies one gathered run of the input, `min(src.len(), dst.len())` bytes. Where channels
/// are few the runs are short (four bytes for DS-CNN's first layer: one channel, four taps
/// wide; nine for MobileNet's: three channels, three taps), and a call to `memcpy` per run
/// cost more than the copy itself; up to 64 bytes move as two fixed-size, possibly
/// overlapping, loads and stores.
#[inline(always)]
fn copy_run(src: &[i8], dst: &mut [i8]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    match n {
        0 => {}
        1..4 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..8 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        16..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        // Three taps of sixteen channels (ResNet's 3x3 layers): `memcpy` took 8% of the
        // model there.
        33..=64 => {
            dst[..32].copy_from_slice(&src[..32]);
            dst[n - 32..].copy_from_slice(&src[n - 32..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed validation and
/// `scratch` must hold at least two patches.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_i8_vnni(
    op: &Conv2dI8<'_>,
    g: &ConvGeometry,
    output: &mut [i8],
    scratch: &mut [i8],
) {
    let k = g.patch_len();
    let zp = op.params.input_zero_point;
    let (cg_out, oc_total) = (g.group_out_channels(), g.out_channels);
    let pixels = g.batch * g.out_height * g.out_width;
    let (patch0, rest) = scratch.split_at_mut(k);
    let patch1 = &mut rest[..k];
    // Validated zero points are int8.
    let fill = zp as i8;
    let gather = |p: usize, group: usize, dst: &mut [i8]| {
        gather_patch_runs(g, op.input, p, group, dst, fill, copy_run);
    };
    let mut p = 0;
    while p < pixels {
        let pair = p + 1 < pixels;
        for group in 0..g.groups {
            gather(p, group, patch0);
            if pair {
                gather(p + 1, group, patch1);
            } else {
                patch1.copy_from_slice(patch0);
            }
            let first = group * cg_out;
            // Pixel p's outputs end where pixel p + 1's begin.
            let (before, after) = output.split_at_mut((p + 1) * oc_total);
            let out0 = &mut before[p * oc_total + first..][..cg_out];
            let out1 = pair.then(|| &mut after[first..first + cg_out]);
            // SAFETY: AVX-512 VNNI is available (caller); the layer is validated.
            unsafe {
                dot_pair_requantize(
                    [patch0, patch1],
                    op.filter,
                    first,
                    &op.params,
                    op.bias,
                    (out0, out1),
                )
            };
        }
        p += 2;
    }
}
