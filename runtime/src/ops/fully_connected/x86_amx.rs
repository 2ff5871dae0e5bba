//! x86_64 AMX int8 fully-connected layer, which pointwise convolutions run as too: the
//! weights packed into panels once per call (a slice of channels at a time where they do
//! not all fit), then the input rows multiplied in place by the tiles ([`crate::ops::x86_amx`]),
//! 32 rows at a time, `tdpbssd` on the signed bytes as they are (no copy, no `x + 128`
//! flip), the input zero point folded into the packing's offsets. The depth is walked in
//! chunks of up to 64 bytes that divide it, so nothing pads it.

use core::mem::MaybeUninit;

use super::x86_prepared::Prepared;
use super::{FullyConnectedI8, FullyConnectedShape};
use crate::isa::Isa;
use crate::ops::requantize::x86_avx512::{ChannelTable, TABLE_CHANNELS};
use crate::ops::x86_amx::{AMX_DEPTH, AMX_ROWS, TileActivations, TileSession};
use crate::ops::x86_vnni::{MAX_GEMM_DEPTH, PANEL, PackedWeights, TileOutput};

/// Fewest rows the tiles take where the VNNI kernel can pack the weights: below, the
/// tiles' fixed costs (loads, `tilestored`, and rows computed twice where the last block
/// overlaps) outweighed their multiplies. Measured (`cargo bench -p loam-benches --bench
/// kernels -- fully_connected_i8`, both kernels in one run): 36 rows of 128 -> 128, 5.96
/// us on the tiles against 5.76 us; 125 rows of 64 -> 64, 3.98 against 4.92 us; 2,304 rows
/// of 8 -> 16, 16.7 against 18.6 us. Layers whose weights do not fit the VNNI packing
/// (which then dots rows with weight rows) take the tiles from [`AMX_MIN_ROWS`] rows: 9
/// rows of 256 -> 256, 10.6 against 14.2 us.
const AMX_MIN_PACKED_ROWS: usize = 64;

/// Fewest rows the tiles take.
const AMX_MIN_ROWS: usize = 4;

/// Rows of one row tile: a batch shorter than this is copied into a tile of zeros.
const TILE_ROWS: usize = AMX_ROWS / 2;

/// The AMX int8 kernel; the VNNI kernel where AMX is missing or the layer does not suit
/// the tiles ([`amx_takes`]).
pub(crate) fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    match depth_chunk(op.shape.in_features) {
        Some(chunk) if Isa::Amx.available() && amx_takes(&op.shape) => {
            // SAFETY: AMX, and with it AVX-512 VNNI and AVX2, are available (checked just
            // above); the layer suits the tiles.
            unsafe { fully_connected_i8_amx(op, output, chunk, None) }
        }
        _ => super::x86_vnni::fully_connected_i8(op, output),
    }
}

/// Whether [`fully_connected_i8`] runs the layer on the tiles (given AMX): enough rows
/// ([`AMX_MIN_PACKED_ROWS`]), a depth of whole quads that [`depth_chunk`] divides, and at
/// least a panel of weights that fits the packing.
pub(crate) fn amx_takes(shape: &FullyConnectedShape) -> bool {
    let k = shape.in_features;
    let vnni_packs = PackedWeights::fits(k, shape.out_features);
    let fewest = if vnni_packs {
        AMX_MIN_PACKED_ROWS
    } else {
        AMX_MIN_ROWS
    };
    shape.batch >= fewest && depth_chunk(k).is_some() && PackedWeights::channels_that_fit(k) > 0
}

/// The bytes of depth each tile multiply takes for rows of `k` bytes: all of them up to
/// 64, else the largest multiple of four in `16..=64` that divides `k` (`None` when there
/// is none, or `k` is not a whole number of quads: the tiles multiply quads, and padding
/// rows read in place is not possible).
pub(crate) fn depth_chunk(k: usize) -> Option<usize> {
    if k == 0 || k % 4 != 0 {
        None
    } else if k <= AMX_DEPTH {
        Some(k)
    } else {
        (4..=AMX_DEPTH / 4)
            .rev()
            .map(|q| 4 * q)
            .find(|&c| k % c == 0)
    }
}

/// Channels per slice of the packing for rows of `k` bytes: equal slices of whole panels,
/// as the convolution's (0 where not one panel fits).
pub(crate) fn slice_len(k: usize, channels: usize) -> usize {
    let most = PackedWeights::channels_that_fit(k).min(TABLE_CHANNELS);
    if most == 0 {
        return 0;
    }
    let slices = channels.div_ceil(most);
    channels.div_ceil(slices.max(1)).div_ceil(PANEL) * PANEL
}

/// [`fully_connected_i8`] on the tiles with the interpreter's `prepared` packing.
///
/// # Safety
/// AMX (and so AVX-512 VNNI and AVX2) must be available; `op` must have passed
/// `validate(output)` and its shape suit the tiles ([`amx_takes`], [`depth_chunk`]);
/// `prepared` must be for `op`'s weights.
pub(crate) unsafe fn fully_connected_i8_prepared(
    op: &FullyConnectedI8<'_>,
    output: &mut [i8],
    prepared: &Prepared<'_>,
) {
    let chunk = depth_chunk(op.shape.in_features).expect("a depth the tiles take");
    // SAFETY: the caller's contract.
    unsafe { fully_connected_i8_amx(op, output, chunk, Some(prepared)) }
}

/// # Safety
/// AMX (and so AVX-512 VNNI and AVX2) must be available; `op` must have passed
/// `validate(output)` and its shape suit the tiles, `chunk` being its [`depth_chunk`];
/// `prepared`, if any, must be for `op`'s weights.
#[target_feature(enable = "avx2,fma")]
unsafe fn fully_connected_i8_amx(
    op: &FullyConnectedI8<'_>,
    output: &mut [i8],
    chunk: usize,
    prepared: Option<&Prepared<'_>>,
) {
    let s = op.shape;
    let (k, channels, batch) = (s.in_features, s.out_features, s.batch);
    // Signed rows: the packing's offsets for the zero point less 128 are the layer's bias
    // less `zp * sum(w)` (see `TileSession::gemm_requantize`).
    let zp = op.params.input_zero_point - 128;
    let slice_len = slice_len(k, channels);
    debug_assert!(prepared.is_none_or(|p| p.slice_len() == slice_len));
    // A batch shorter than a row tile is copied into one, zeros after it; longer batches
    // are read in place, the last block of rows overlapping the one before it (its rows
    // are computed twice, to the same bytes) rather than running past the input.
    let mut short: [MaybeUninit<i8>; TILE_ROWS * MAX_GEMM_DEPTH];
    let (rows, block): (&[i8], usize) = if batch < TILE_ROWS {
        short = [MaybeUninit::uninit(); TILE_ROWS * MAX_GEMM_DEPTH];
        let tile = &mut short[..TILE_ROWS * k];
        for (dst, &src) in tile.iter_mut().zip(&op.input[..batch * k]) {
            *dst = MaybeUninit::new(src);
        }
        tile[batch * k..].fill(MaybeUninit::new(0));
        // SAFETY: every byte of `tile` was written just above.
        let tile = unsafe { core::slice::from_raw_parts(tile.as_ptr().cast::<i8>(), tile.len()) };
        (tile, batch)
    } else if batch < AMX_ROWS {
        (op.input, TILE_ROWS)
    } else {
        (op.input, AMX_ROWS)
    };
    let mut packed = PackedWeights::new();
    let mut table = ChannelTable::new();
    // SAFETY: AMX is available (caller); `chunk` is a multiple of four in `4..=64`.
    let mut session = unsafe { TileSession::start(chunk) };
    for (slice, from) in (0..channels).step_by(slice_len).enumerate() {
        let len = (channels - from).min(slice_len);
        let (offsets, panels) = match prepared {
            Some(prepared) => prepared.slice(slice),
            None => {
                let bias = op.bias.map(|bias| &bias[from..from + len]);
                // SAFETY: AVX2 is available (caller); `len` channels fit (`slice_len`).
                unsafe { packed.pack(&op.weights[from * k..(from + len) * k], (k, len), zp, bias) };
                (packed.offsets(), packed.view())
            }
        };
        // SAFETY: AVX-512 VNNI is available (caller); `len <= TABLE_CHANNELS`, inside the
        // validated multipliers.
        unsafe { table.prepare(&op.params, Some(offsets), from, len) };
        let mut next = 0;
        while next < batch {
            let first_row = next.min(batch - block.min(batch));
            let count = block.min(batch);
            let tile = TileActivations::signed(&rows[first_row * k..], k, count);
            let at = TileOutput {
                first_row,
                row_stride: channels,
                first_channel: from,
            };
            // SAFETY: AMX is available (caller); the rows and channels are inside the
            // validated layer; the packing's depth is `k`, a multiple of the session's
            // chunk, and the rows are `k` bytes apart.
            unsafe { session.gemm_requantize(&tile, &panels, &table, output, at) };
            next += block;
        }
        // SAFETY: AMX is available (caller); the packing and layer of the calls above,
        // before the next slice repacks.
        unsafe { session.finish(&table, output) };
    }
}
