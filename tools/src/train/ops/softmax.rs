//! Softmax over the last dimension.

use anyhow::Result;
use loam::ops::softmax::{SoftmaxF32, SoftmaxShape, softmax_f32};

/// `output = softmax(input)` row by row through the runtime's kernel.
pub fn forward(rows: usize, depth: usize, input: &[f32], output: &mut [f32]) -> Result<()> {
    let op = SoftmaxF32 {
        shape: SoftmaxShape { rows, depth },
        beta: 1.0,
        log: false,
        input,
    };
    softmax_f32(&op, output)?;
    Ok(())
}

/// `dx = p * (dy - sum(dy * p))` per row, from the forward pass's output `p`.
pub fn backward(depth: usize, output: &[f32], d_output: &[f32], d_input: &mut [f32]) {
    for ((p, dy), dx) in output
        .chunks_exact(depth)
        .zip(d_output.chunks_exact(depth))
        .zip(d_input.chunks_exact_mut(depth))
    {
        let dot: f32 = p.iter().zip(dy).map(|(a, b)| a * b).sum();
        for ((d, &pi), &gi) in dx.iter_mut().zip(p).zip(dy) {
            *d = pi * (gi - dot);
        }
    }
}
