//! 2-D convolution over NHWC images with stride, dilation, padding and groups; filters
//! `[out][kh][kw][in / groups]`. The backward pass gathers each image's patches (im2col) once
//! per group and turns both gradients into matrix products.

use anyhow::{Context, Result};
use loam::ops::FusedActivation;
use loam::ops::conv2d::{Conv2dF32, ConvGeometry, ConvSpec, conv2d_f32, scratch_len};

use crate::train::gemm::{View, gemm};

/// The runtime's geometry of a convolution of `spec` over `batch` images `[h, w, c]`.
pub fn geometry(spec: &ConvSpec, batch: usize, input: [usize; 3]) -> Result<ConvGeometry> {
    let [h, w, c] = input;
    let [pt, pl, pb, pr] = spec.padding;
    let size = |n, k, s, d, a, b| loam::ops::conv2d::output_size(n, k, s, d, a, b);
    let g = ConvGeometry {
        batch,
        in_height: h,
        in_width: w,
        in_channels: c,
        out_height: size(h, spec.kernel.0, spec.stride.0, spec.dilation.0, pt, pb)
            .context("the kernel does not fit the input's height")?,
        out_width: size(w, spec.kernel.1, spec.stride.1, spec.dilation.1, pl, pr)
            .context("the kernel does not fit the input's width")?,
        out_channels: spec.out_channels,
        kernel_height: spec.kernel.0,
        kernel_width: spec.kernel.1,
        stride_height: spec.stride.0,
        stride_width: spec.stride.1,
        dilation_height: spec.dilation.0,
        dilation_width: spec.dilation.1,
        pad_top: pt,
        pad_left: pl,
        groups: spec.groups,
    };
    g.validate().context("convolution dimensions")?;
    Ok(g)
}

/// `output = activation(conv(input, filter) + bias)` through the runtime's kernel.
pub fn forward(
    g: &ConvGeometry,
    input: &[f32],
    filter: &[f32],
    bias: &[f32],
    activation: FusedActivation,
    output: &mut [f32],
) -> Result<()> {
    let op = Conv2dF32 {
        geometry: *g,
        input,
        filter,
        bias: Some(bias),
        activation: super::clamp(activation),
    };
    let mut scratch = vec![0.0; scratch_len(g)];
    conv2d_f32(&op, output, &mut scratch)?;
    Ok(())
}

/// The input position tap `(ky, kx)` of output pixel `(oy, ox)` reads, if inside the image.
#[inline]
fn tap(g: &ConvGeometry, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride_height + ky * g.dilation_height).checked_sub(g.pad_top)?;
    let ix = (ox * g.stride_width + kx * g.dilation_width).checked_sub(g.pad_left)?;
    (iy < g.in_height && ix < g.in_width).then_some((iy, ix))
}

/// Adds the filter's and bias's gradients to `d_filter` and `d_bias`, and writes the input's
/// gradient to `d_input` when asked. `d_output` is taken after the activation's mask.
pub fn backward(
    g: &ConvGeometry,
    input: &[f32],
    filter: &[f32],
    d_output: &[f32],
    d_filter: &mut [f32],
    d_bias: &mut [f32],
    mut d_input: Option<&mut [f32]>,
) {
    let pixels = g.out_height * g.out_width;
    let patch = g.patch_len();
    let (gin, gout) = (g.group_in_channels(), g.group_out_channels());
    let image_in = g.in_height * g.in_width * g.in_channels;
    let image_out = pixels * g.out_channels;
    let mut cols = vec![0.0f32; pixels * patch];
    let mut d_cols = vec![0.0f32; pixels * patch];
    if let Some(d) = d_input.as_deref_mut() {
        d.fill(0.0);
    }
    for n in 0..g.batch {
        let x = &input[n * image_in..(n + 1) * image_in];
        let dy = &d_output[n * image_out..(n + 1) * image_out];
        for row in dy.chunks_exact(g.out_channels) {
            for (db, &v) in d_bias.iter_mut().zip(row) {
                *db += v;
            }
        }
        for group in 0..g.groups {
            gather(g, x, group, &mut cols);
            let first = group * gout;
            let dy_group = &dy[first..];
            // dW[o][p] += sum_pixel dy[pixel][o] * cols[pixel][p]
            gemm(
                gout,
                pixels,
                patch,
                View {
                    data: dy_group,
                    row_stride: 1,
                    col_stride: g.out_channels,
                },
                View::rows(&cols, patch),
                1.0,
                &mut d_filter[first * patch..(first + gout) * patch],
            );
            let Some(d_image) = d_input.as_deref_mut() else {
                continue;
            };
            // dcols[pixel][p] = sum_o dy[pixel][o] * W[o][p]
            gemm(
                pixels,
                gout,
                patch,
                View {
                    data: dy_group,
                    row_stride: g.out_channels,
                    col_stride: 1,
                },
                View::rows(&filter[first * patch..(first + gout) * patch], patch),
                0.0,
                &mut d_cols,
            );
            scatter(
                g,
                &d_cols,
                group * gin,
                &mut d_image[n * image_in..(n + 1) * image_in],
            );
        }
    }
}

/// One image's patches for channel group `group`, `[pixel][ky][kx][channel]`, zero in the
/// padding.
fn gather(g: &ConvGeometry, image: &[f32], group: usize, cols: &mut [f32]) {
    let gin = g.group_in_channels();
    let first = group * gin;
    let mut out = cols.chunks_exact_mut(gin);
    for oy in 0..g.out_height {
        for ox in 0..g.out_width {
            for ky in 0..g.kernel_height {
                for kx in 0..g.kernel_width {
                    let Some(dst) = out.next() else { return };
                    match tap(g, oy, ox, ky, kx) {
                        Some((iy, ix)) => {
                            let at = (iy * g.in_width + ix) * g.in_channels + first;
                            dst.copy_from_slice(&image[at..at + gin]);
                        }
                        None => dst.fill(0.0),
                    }
                }
            }
        }
    }
}

/// Adds patch gradients back onto the image positions they were gathered from.
fn scatter(g: &ConvGeometry, d_cols: &[f32], first: usize, d_image: &mut [f32]) {
    let gin = g.group_in_channels();
    let mut taps = d_cols.chunks_exact(gin);
    for oy in 0..g.out_height {
        for ox in 0..g.out_width {
            for ky in 0..g.kernel_height {
                for kx in 0..g.kernel_width {
                    let Some(src) = taps.next() else { return };
                    if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                        let at = (iy * g.in_width + ix) * g.in_channels + first;
                        for (d, &s) in d_image[at..at + gin].iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}
