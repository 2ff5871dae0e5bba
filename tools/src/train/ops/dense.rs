//! Fully connected: `y[b] = W x[b] + bias`, weights `[out][in]`.

use anyhow::Result;
use loam::ops::FusedActivation;
use loam::ops::fully_connected::{FullyConnectedF32, FullyConnectedShape, fully_connected_f32};

use crate::train::gemm::{View, gemm};

/// The layer's dimensions for `batch` rows.
#[derive(Debug, Clone, Copy)]
pub struct Dense {
    /// Rows.
    pub batch: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

impl Dense {
    /// `output = activation(input * weights^T + bias)` through the runtime's kernel.
    pub fn forward(
        &self,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        activation: FusedActivation,
        output: &mut [f32],
    ) -> Result<()> {
        let op = FullyConnectedF32 {
            shape: FullyConnectedShape {
                batch: self.batch,
                in_features: self.inputs,
                out_features: self.outputs,
            },
            input,
            weights,
            bias: Some(bias),
            activation: super::clamp(activation),
        };
        fully_connected_f32(&op, output)?;
        Ok(())
    }

    /// Adds the gradients of the weights and bias to `d_weights` and `d_bias`, and writes
    /// the input's gradient to `d_input` when asked. `d_output` is taken after the
    /// activation's mask.
    pub fn backward(
        &self,
        input: &[f32],
        weights: &[f32],
        d_output: &[f32],
        d_weights: &mut [f32],
        d_bias: &mut [f32],
        d_input: Option<&mut [f32]>,
    ) {
        let (b, i, o) = (self.batch, self.inputs, self.outputs);
        // dW[o][i] += sum_b dy[b][o] * x[b][i]
        gemm(
            o,
            b,
            i,
            View::transposed(d_output, o),
            View::rows(input, i),
            1.0,
            d_weights,
        );
        for row in d_output.chunks_exact(o) {
            for (db, &g) in d_bias.iter_mut().zip(row) {
                *db += g;
            }
        }
        if let Some(d_input) = d_input {
            // dx[b][i] = sum_o dy[b][o] * W[o][i]
            gemm(
                b,
                o,
                i,
                View::rows(d_output, o),
                View::rows(weights, i),
                0.0,
                d_input,
            );
        }
    }
}
