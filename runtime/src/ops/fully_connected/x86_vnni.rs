//! x86_64 AVX-512 VNNI int8 fast path, bit-exact through the shared micro-kernels
//! ([`crate::ops::x86_vnni`]). With several input rows (a batch, or a pointwise
//! convolution's pixels) the weights are packed once and each tile of eight rows meets
//! sixteen channels per `vpdpbusd` (channels in lanes, no reductions). A batch of one dots
//! its row with eight weight rows at a time instead ([`dot_row_requantize`]), and a few rows
//! go two at a time against four weight rows, 64 bytes per step, since packing would cost as
//! much as the product.

use core::mem::MaybeUninit;

use super::x86_prepared::Prepared;
use super::{FullyConnectedI8, FullyConnectedShape};
use crate::isa::Isa;
use crate::ops::requantize::x86_avx512::{ChannelTable, TABLE_CHANNELS};
use crate::ops::x86_vnni::{
    MAX_GEMM_DEPTH, PackedWeights, TILE_ROWS, TileOutput, TileRows, TileStorage,
    dot_pair_requantize, dot_row_requantize, gemm_requantize,
};

/// Below this many inputs, two or three rows are faster through the AVX2 kernel: one 64-byte
/// step does not pay for the weight sums and the reductions (measured: `cargo bench -p
/// loam-benches --bench kernels -- fully_connected_i8`). A single row is not: 1x64x32 takes
/// 102 ns through `dot8`, 185 ns through the AVX2 kernel.
const SHORT_ROW: usize = 128;

/// Rows from which packing the weights pays (measured: `cargo bench -p loam-benches --bench
/// kernels -- fully_connected_i8`).
const GEMM_MIN_ROWS: usize = 4;

/// The VNNI int8 kernel; the AVX2 kernel where AVX-512 VNNI is missing.
pub(crate) fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    if Isa::Avx512Vnni.available() {
        // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked just above).
        unsafe { fully_connected_i8_vnni(op, output) }
    } else {
        super::x86::fully_connected_i8(op, output)
    }
}

/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed `validate(output)`.
#[target_feature(enable = "avx2,fma")]
unsafe fn fully_connected_i8_vnni(op: &FullyConnectedI8<'_>, output: &mut [i8]) {
    let s = op.shape;
    let n = s.in_features;
    if packs(&s) {
        // SAFETY: as this function's.
        return unsafe { gemm_i8(op, output, None) };
    }
    if n < SHORT_ROW && s.batch > 1 {
        // SAFETY: AVX2 is available (caller).
        return unsafe { super::x86::fully_connected_i8_avx2(op, output) };
    }
    let m = s.out_features;
    // Rows two at a time; an odd last row (a batch of one) comes alone.
    for (x, out) in op.input.chunks(2 * n).zip(output.chunks_mut(2 * m)) {
        let (x0, x1) = x.split_at(n);
        let (out0, out1) = out.split_at_mut(m);
        if x1.is_empty() {
            // SAFETY: AVX-512 VNNI is available (caller); the layer is validated.
            unsafe { dot_row_requantize(x0, op.weights, 0, &op.params, op.bias, out0) };
        } else {
            // SAFETY: AVX-512 VNNI is available (caller); the layer is validated.
            unsafe {
                dot_pair_requantize(
                    [x0, x1],
                    op.weights,
                    0,
                    &op.params,
                    op.bias,
                    (out0, Some(out1)),
                )
            };
        }
    }
}

/// Whether the layer runs through [`gemm_i8`], which packs its weights: several rows, and
/// weights that [fit](PackedWeights::fits) the packing.
pub(crate) fn packs(shape: &FullyConnectedShape) -> bool {
    shape.batch >= GEMM_MIN_ROWS && PackedWeights::fits(shape.in_features, shape.out_features)
}

/// The batched layer through [`gemm_requantize`]: the weights packed once per call (a
/// slice of channels at a time where a layer has more than a table holds), or taken from
/// the interpreter's `prepared` packing, then the input a tile of eight rows at a time.
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed `validate(output)`
/// and its shape be one the kernel [`packs`]; `prepared` must be for the weights of `op`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_i8(
    op: &FullyConnectedI8<'_>,
    output: &mut [i8],
    prepared: Option<&Prepared<'_>>,
) {
    let (k, channels) = (op.shape.in_features, op.shape.out_features);
    let mut packed = PackedWeights::new();
    let mut table = ChannelTable::new();
    let mut storage: TileStorage = [MaybeUninit::uninit(); TILE_ROWS * MAX_GEMM_DEPTH];
    let mut rows = TileRows::new(&mut storage, k);
    debug_assert!(prepared.is_none_or(|p| p.slice_len() == TABLE_CHANNELS));
    for (slice, from) in (0..channels).step_by(TABLE_CHANNELS).enumerate() {
        let len = (channels - from).min(TABLE_CHANNELS);
        let (offsets, panels) = match prepared {
            Some(prepared) => prepared.slice(slice),
            None => {
                let bias = op.bias.map(|bias| &bias[from..from + len]);
                // SAFETY: AVX2 is available (caller); a slice of weights that fit.
                unsafe {
                    packed.pack(
                        &op.weights[from * k..(from + len) * k],
                        (k, len),
                        op.params.input_zero_point,
                        bias,
                    )
                };
                (packed.offsets(), packed.view())
            }
        };
        // SAFETY: AVX-512 VNNI is available (caller); `len <= TABLE_CHANNELS`, inside the
        // validated multipliers.
        unsafe { table.prepare(&op.params, Some(offsets), from, len) };
        for (t, tile) in op.input.chunks(TILE_ROWS * k).enumerate() {
            rows.copy(tile);
            let at = TileOutput {
                first_row: t * TILE_ROWS,
                row_stride: channels,
                first_channel: from,
            };
            // SAFETY: AVX-512 VNNI is available (caller); the tile's rows and channels are
            // inside the validated layer.
            unsafe { gemm_requantize(&rows, &panels, &table, output, at) };
        }
    }
}
