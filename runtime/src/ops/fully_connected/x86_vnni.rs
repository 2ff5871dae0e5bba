//! x86_64 AVX-512 VNNI int8 fast path, bit-exact through the shared micro-kernels
//! ([`crate::ops::x86_vnni`]). With several input rows (a batch, or a pointwise
//! convolution's pixels) the weights are packed once and each tile of eight rows meets
//! sixteen channels per `vpdpbusd` (channels in lanes, no reductions). A single row dots
//! four weight rows at a time instead, 64 bytes per step, since packing would cost as much
//! as the product.

use super::FullyConnectedI8;
use crate::isa::Isa;
use crate::ops::RequantizeParams;
use crate::ops::requantize::x86::requantize_row;
use crate::ops::x86_vnni::{
    PackedWeights, TILE_ROWS, TileOutput, TileRows, centered, dot4x2, gemm_requantize,
};

/// Below this many inputs, a few rows are faster through the AVX2 kernel: one 64-byte step
/// does not pay for the weight sums and the reductions (measured: `cargo bench -p
/// loam-benches --bench kernels -- fully_connected_i8`, 1x64x32).
const SHORT_ROW: usize = 128;

/// Rows from which packing the weights pays (measured: `cargo bench -p loam-benches --bench
/// kernels -- fully_connected_i8`).
const GEMM_MIN_ROWS: usize = 4;

/// Output features accumulated before a vectorized requantization pass.
const BLOCK: usize = 64;

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
    if s.batch >= GEMM_MIN_ROWS && PackedWeights::fits(n, s.out_features) {
        // SAFETY: as this function's.
        return unsafe {
            gemm_i8(
                &op.params,
                op.input,
                op.weights,
                op.bias,
                s.out_features,
                n,
                output,
            )
        };
    }
    if n < SHORT_ROW {
        // SAFETY: AVX2 is available (caller).
        return unsafe { super::x86::fully_connected_i8_avx2(op, output) };
    }
    let zp = op.params.input_zero_point;
    let mut acc0 = [0i32; BLOCK];
    let mut acc1 = [0i32; BLOCK];
    let mut b = 0;
    while b < s.batch {
        let pair = b + 1 < s.batch;
        let x0 = &op.input[b * n..(b + 1) * n];
        let x1 = if pair {
            &op.input[(b + 1) * n..(b + 2) * n]
        } else {
            x0
        };
        let mut block = 0;
        while block < s.out_features {
            let len = (s.out_features - block).min(BLOCK);
            let mut o = block;
            while o < block + len {
                let rows = (block + len - o).min(4);
                let w: [&[i8]; 4] =
                    core::array::from_fn(|r| &op.weights[(o + r.min(rows - 1)) * n..][..n]);
                // SAFETY: AVX-512 VNNI is available (caller).
                let sums = centered(&unsafe { dot4x2([x0, x1], w) }, zp);
                acc0[o - block..o - block + rows].copy_from_slice(&sums[..rows]);
                acc1[o - block..o - block + rows].copy_from_slice(&sums[4..4 + rows]);
                o += rows;
            }
            // SAFETY: AVX2 is available (caller); `len` accumulators for channels
            // `block..block + len`, inside the validated bias and multipliers.
            unsafe {
                let out = &mut output[b * s.out_features + block..][..len];
                requantize_row(&op.params, &acc0[..len], op.bias, block, out);
                if pair {
                    let out = &mut output[(b + 1) * s.out_features + block..][..len];
                    requantize_row(&op.params, &acc1[..len], op.bias, block, out);
                }
            }
            block += len;
        }
        b += 2;
    }
}

/// `output[m][c] = requant(sum((x[m] - zp) * w[c]) + bias[c])` for the rows of `input`, `k`
/// inputs each, and `channels` weight rows that [fit](PackedWeights::fits) the packing.
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; the operands must be a validated layer's.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_i8(
    params: &RequantizeParams<'_>,
    input: &[i8],
    weights: &[i8],
    bias: Option<&[i32]>,
    channels: usize,
    k: usize,
    output: &mut [i8],
) {
    let zp = params.input_zero_point;
    let mut packed = PackedWeights::new();
    packed.pack(weights, k, channels, zp);
    for (t, tile) in input.chunks(TILE_ROWS * k).enumerate() {
        let mut slices: [&[i8]; TILE_ROWS] = [&[]; TILE_ROWS];
        let mut tile_rows = 0;
        for (slot, row) in slices.iter_mut().zip(tile.chunks_exact(k)) {
            *slot = row;
            tile_rows += 1;
        }
        let rows = TileRows::new(&slices[..tile_rows], k);
        let at = TileOutput {
            first_row: t * TILE_ROWS,
            row_stride: channels,
            first_channel: 0,
        };
        // SAFETY: AVX-512 VNNI is available (caller); the tile's rows and channels are
        // inside the validated layer.
        unsafe { gemm_requantize(&rows, &packed, params, bias, output, at) };
    }
}
