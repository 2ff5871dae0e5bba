//! Fused clamp activations (ReLU, ReLU6, none): the gradient flows only where the output
//! lies strictly inside the clamp, since a clamped output does not move with its input.

use loam::ops::FusedActivation;

/// Zeroes `grad` wherever `output` sits on a bound of `activation`.
pub fn backward(activation: FusedActivation, output: &[f32], grad: &mut [f32]) {
    let (lo, hi) = (activation.min, activation.max);
    if lo == f32::NEG_INFINITY && hi == f32::INFINITY {
        return;
    }
    for (g, &y) in grad.iter_mut().zip(output) {
        if y <= lo || y >= hi {
            *g = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_relu6_block_clamped_outputs() {
        let output = [0.0, 0.5, 6.0, 3.0];
        let mut grad = [1.0; 4];
        backward(FusedActivation::RELU, &output, &mut grad);
        assert_eq!(grad, [0.0, 1.0, 1.0, 1.0]);
        let mut grad = [1.0; 4];
        backward(FusedActivation::RELU6, &output, &mut grad);
        assert_eq!(grad, [0.0, 1.0, 0.0, 1.0]);
        let mut grad = [1.0; 4];
        backward(FusedActivation::NONE, &output, &mut grad);
        assert_eq!(grad, [1.0; 4]);
    }
}
