//! Depthwise convolution over NHWC images: output channel `o` filters input channel
//! `o / multiplier`; filters `[kh][kw][out]`.

use anyhow::Result;
use loam::ops::FusedActivation;
use loam::ops::conv2d::ConvGeometry;
use loam::ops::depthwise_conv2d::{DepthwiseConv2dF32, depthwise_conv2d_f32};

/// `output = activation(depthwise(input, filter) + bias)` through the runtime's kernel.
pub fn forward(
    g: &ConvGeometry,
    input: &[f32],
    filter: &[f32],
    bias: &[f32],
    activation: FusedActivation,
    output: &mut [f32],
) -> Result<()> {
    let op = DepthwiseConv2dF32 {
        geometry: *g,
        input,
        filter,
        bias: Some(bias),
        activation: super::clamp(activation),
    };
    depthwise_conv2d_f32(&op, output)?;
    Ok(())
}

/// Adds the filter's and bias's gradients, and writes the input's gradient when asked.
/// `d_output` is taken after the activation's mask.
pub fn backward(
    g: &ConvGeometry,
    input: &[f32],
    filter: &[f32],
    d_output: &[f32],
    d_filter: &mut [f32],
    d_bias: &mut [f32],
    mut d_input: Option<&mut [f32]>,
) {
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let multiplier = c_out / c_in.max(1);
    let image_in = g.in_height * g.in_width * c_in;
    let image_out = g.out_height * g.out_width * c_out;
    if let Some(d) = d_input.as_deref_mut() {
        d.fill(0.0);
    }
    for n in 0..g.batch {
        let x = &input[n * image_in..(n + 1) * image_in];
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                let at_out = n * image_out + (oy * g.out_width + ox) * c_out;
                let dy = &d_output[at_out..at_out + c_out];
                for (db, &v) in d_bias.iter_mut().zip(dy) {
                    *db += v;
                }
                for ky in 0..g.kernel_height {
                    let Some(iy) = (oy * g.stride_height + ky * g.dilation_height)
                        .checked_sub(g.pad_top)
                        .filter(|&y| y < g.in_height)
                    else {
                        continue;
                    };
                    for kx in 0..g.kernel_width {
                        let Some(ix) = (ox * g.stride_width + kx * g.dilation_width)
                            .checked_sub(g.pad_left)
                            .filter(|&x| x < g.in_width)
                        else {
                            continue;
                        };
                        let at_in = (iy * g.in_width + ix) * c_in;
                        let at_filter = (ky * g.kernel_width + kx) * c_out;
                        for (o, &grad) in dy.iter().enumerate() {
                            let c = o / multiplier;
                            d_filter[at_filter + o] += grad * x[at_in + c];
                            if let Some(d) = d_input.as_deref_mut() {
                                d[n * image_in + at_in + c] += grad * filter[at_filter + o];
                            }
                        }
                    }
                }
            }
        }
    }
}
