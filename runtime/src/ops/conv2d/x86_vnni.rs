//! x86_64 AVX-512 VNNI int8 convolution through the shared `vpdpbusd` micro-kernels
//! ([`crate::ops::x86_vnni`]). Input patches are gathered as raw int8 bytes, `zp` in the
//! padding, which the centering turns into exactly zero. Where a group's weights fit the
//! stack packing, eight pixels' patches meet sixteen channels per instruction; larger layers
//! dot two patches with four filter rows at a time. Accumulators are requantized 64
//! channels at a time. Pointwise convolutions run as the VNNI fully-connected layer.

use super::{Conv2dI8, ConvGeometry, gather_patch_runs};
use crate::isa::Isa;
use crate::ops::fully_connected::x86_vnni;
use crate::ops::requantize::x86::requantize_row;
use crate::ops::x86_vnni::{
    MAX_GEMM_DEPTH, PackedWeights, TILE_ROWS, TileOutput, TileRows, centered, dot4x2,
    gemm_requantize,
};

/// Output channels accumulated before a vectorized requantization pass.
const BLOCK: usize = 64;

/// The VNNI int8 kernel; the AVX2 kernel where AVX-512 VNNI is missing.
pub(super) fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) {
    if !Isa::Avx512Vnni.available() {
        return super::x86::conv2d_i8(op, output, scratch);
    }
    let g = &op.geometry;
    if g.is_pointwise() {
        return x86_vnni::fully_connected_i8(&op.as_fully_connected(), output);
    }
    // The scratch holds two i16 patches with slack, so at least 4k bytes: two byte patches
    // fit with room to spare.
    let bytes: &mut [i8] = bytemuck::cast_slice_mut(scratch);
    if PackedWeights::fits(g.patch_len(), g.group_out_channels()) {
        // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked above).
        return unsafe { conv2d_i8_gemm(op, g, output) };
    }
    // SAFETY: AVX-512 VNNI, and with it AVX2, are available (checked above).
    unsafe { conv2d_i8_vnni(op, g, output, bytes) }
}

/// Im2col into tiles of eight pixels, against the group's weights packed once: channels in
/// lanes, no reductions (see [`gemm_tile`]).
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `op` must have passed validation and its
/// group's weights must [fit](PackedWeights::fits).
#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_i8_gemm(op: &Conv2dI8<'_>, g: &ConvGeometry, output: &mut [i8]) {
    let k = g.patch_len();
    let zp = op.params.input_zero_point;
    let (cg_out, oc_total) = (g.group_out_channels(), g.out_channels);
    let pixels = g.batch * g.out_height * g.out_width;
    // Validated zero points are int8.
    let fill = zp as i8;
    let mut packed = PackedWeights::new();
    // Eight gathered patches; on the stack, since a file's scratch sizes cannot grow.
    let mut patches = [0i8; TILE_ROWS * MAX_GEMM_DEPTH];
    for group in 0..g.groups {
        let first = group * cg_out;
        packed.pack(&op.filter[first * k..(first + cg_out) * k], k, cg_out, zp);
        let mut p0 = 0;
        while p0 < pixels {
            let tile_rows = (pixels - p0).min(TILE_ROWS);
            for (r, patch) in patches.chunks_exact_mut(k).take(tile_rows).enumerate() {
                gather_patch_runs(g, op.input, p0 + r, group, patch, fill, |src, d| {
                    d.copy_from_slice(src)
                });
            }
            let mut slices: [&[i8]; TILE_ROWS] = [&[]; TILE_ROWS];
            for (slot, patch) in slices.iter_mut().zip(patches.chunks_exact(k)) {
                *slot = patch;
            }
            let rows = TileRows::new(&slices[..tile_rows], k);
            let at = TileOutput {
                first_row: p0,
                row_stride: oc_total,
                first_channel: first,
            };
            // SAFETY: AVX-512 VNNI is available (caller); the tile's pixels and the group's
            // channels are inside the validated layer.
            unsafe { gemm_requantize(&rows, &packed, &op.params, op.bias, output, at) };
            p0 += tile_rows;
        }
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
        gather_patch_runs(g, op.input, p, group, dst, fill, |src, d| {
            d.copy_from_slice(src)
        });
    };
    let mut acc0 = [0i32; BLOCK];
    let mut acc1 = [0i32; BLOCK];
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
            let mut block = first;
            while block < first + cg_out {
                let len = (first + cg_out - block).min(BLOCK);
                let mut oc = block;
                while oc < block + len {
                    let rows = (block + len - oc).min(4);
                    let row = |r: usize| {
                        let o = oc + r.min(rows - 1);
                        &op.filter[o * k..(o + 1) * k]
                    };
                    let w = [row(0), row(1), row(2), row(3)];
                    // SAFETY: AVX-512 VNNI is available (caller).
                    let sums = centered(&unsafe { dot4x2([patch0, patch1], w) }, zp);
                    acc0[oc - block..oc - block + rows].copy_from_slice(&sums[..rows]);
                    acc1[oc - block..oc - block + rows].copy_from_slice(&sums[4..4 + rows]);
                    oc += rows;
                }
                // SAFETY: AVX2 is available (caller); `len` accumulators for channels
                // `block..block + len`, inside the validated bias and multipliers.
                unsafe {
                    let out = &mut output[p * oc_total + block..][..len];
                    requantize_row(&op.params, &acc0[..len], op.bias, block, out);
                    if pair {
                        let out = &mut output[(p + 1) * oc_total + block..][..len];
                        requantize_row(&op.params, &acc1[..len], op.bias, block, out);
                    }
                }
                block += len;
            }
        }
        p += 2;
    }
}
