//! Max, average and global average pooling over NHWC images (windows without padding, as
//! the graph writes them).

use anyhow::Result;
use loam::ops::pool::{
    GlobalPoolShape, Padding2d, Pool2dGeometry, average_pool2d_f32, global_average_pool_f32,
    max_pool2d_f32,
};

const NO_CLAMP: (f32, f32) = (f32::NEG_INFINITY, f32::INFINITY);

/// A pooling window sliding over `batch` images `[h, w, c]`.
pub fn geometry(
    batch: usize,
    input: [usize; 3],
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Pool2dGeometry {
    let [height, width, channels] = input;
    Pool2dGeometry {
        batch,
        height,
        width,
        channels,
        kernel,
        stride,
        padding: Padding2d::default(),
    }
}

/// Max pooling forward through the runtime's kernel.
pub fn max_forward(g: &Pool2dGeometry, input: &[f32], output: &mut [f32]) -> Result<()> {
    max_pool2d_f32(g, NO_CLAMP, input, output)?;
    Ok(())
}

/// Average pooling forward through the runtime's kernel.
pub fn average_forward(g: &Pool2dGeometry, input: &[f32], output: &mut [f32]) -> Result<()> {
    average_pool2d_f32(g, NO_CLAMP, input, output)?;
    Ok(())
}

/// Global average pooling forward through the runtime's kernel.
pub fn global_forward(s: &GlobalPoolShape, input: &[f32], output: &mut [f32]) -> Result<()> {
    global_average_pool_f32(s, input, output)?;
    Ok(())
}

/// Calls `visit(output_index, input_index_of_each_window_element)` for every window.
fn windows(g: &Pool2dGeometry, mut visit: impl FnMut(usize, &mut dyn Iterator<Item = usize>)) {
    let oh = (g.height - g.kernel.0) / g.stride.0 + 1;
    let ow = (g.width - g.kernel.1) / g.stride.1 + 1;
    let c = g.channels;
    for n in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let out = ((n * oh + oy) * ow + ox) * c + ch;
                    let (y0, x0) = (oy * g.stride.0, ox * g.stride.1);
                    let mut taps = (0..g.kernel.0).flat_map(move |ky| {
                        (0..g.kernel.1)
                            .map(move |kx| ((n * g.height + y0 + ky) * g.width + x0 + kx) * c + ch)
                    });
                    visit(out, &mut taps);
                }
            }
        }
    }
}

/// Routes each output's gradient to the first largest element of its window, the element
/// the forward pass picked.
pub fn max_backward(g: &Pool2dGeometry, input: &[f32], d_output: &[f32], d_input: &mut [f32]) {
    d_input.fill(0.0);
    windows(g, |out, taps| {
        let mut best: Option<usize> = None;
        for at in taps {
            // NaN never wins, as in the forward kernel.
            if best.is_none_or(|b| input[at] > input[b]) {
                best = Some(at);
            }
        }
        if let Some(at) = best {
            d_input[at] += d_output[out];
        }
    });
}

/// Spreads each output's gradient evenly over its window.
pub fn average_backward(g: &Pool2dGeometry, d_output: &[f32], d_input: &mut [f32]) {
    d_input.fill(0.0);
    let share = 1.0 / (g.kernel.0 * g.kernel.1) as f32;
    windows(g, |out, taps| {
        for at in taps {
            d_input[at] += d_output[out] * share;
        }
    });
}

/// Spreads each channel's gradient evenly over the image.
pub fn global_backward(s: &GlobalPoolShape, d_output: &[f32], d_input: &mut [f32]) {
    let share = 1.0 / s.count() as f32;
    let per_image = s.count() * s.channels;
    for (n, image) in d_input.chunks_exact_mut(per_image).enumerate() {
        let dy = &d_output[n * s.channels..(n + 1) * s.channels];
        for pixel in image.chunks_exact_mut(s.channels) {
            for (d, &g) in pixel.iter_mut().zip(dy) {
                *d = g * share;
            }
        }
    }
}
