//! Losses on the trained head's output, with their gradient with respect to that output.

use super::{Target, TrainError};

/// What training minimizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Loss {
    /// Softmax cross-entropy on logits, against a class index. The model's own softmax (if
    /// any) is not run during training; the loss applies a numerically stable one.
    CrossEntropy,
    /// Mean squared error against a target vector.
    MeanSquaredError,
}

/// The loss of `output` against `target`, writing `d loss / d output` into `grad`.
pub(crate) fn loss_and_gradient(
    loss: Loss,
    output: &[f32],
    target: Target<'_>,
    grad: &mut [f32],
) -> Result<f32, TrainError> {
    match (loss, target) {
        (Loss::CrossEntropy, Target::Class(class)) => {
            if class >= output.len() {
                return Err(TrainError::BadTarget {
                    expected: output.len(),
                    actual: class,
                });
            }
            let max = output.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = output.iter().map(|&z| libm::expf(z - max)).sum();
            let log_sum = libm::logf(sum) + max;
            for (i, (g, &z)) in grad.iter_mut().zip(output).enumerate() {
                let p = libm::expf(z - log_sum);
                *g = if i == class { p - 1.0 } else { p };
            }
            Ok(log_sum - output[class])
        }
        (Loss::MeanSquaredError, Target::Values(values)) => {
            if values.len() != output.len() {
                return Err(TrainError::BadTarget {
                    expected: output.len(),
                    actual: values.len(),
                });
            }
            let n = output.len() as f32;
            let mut sum = 0.0f32;
            for ((g, &y), &t) in grad.iter_mut().zip(output).zip(values) {
                let d = y - t;
                sum += d * d;
                *g = 2.0 * d / n;
            }
            Ok(sum / n)
        }
        (Loss::CrossEntropy, Target::Values(_)) | (Loss::MeanSquaredError, Target::Class(_)) => {
            Err(TrainError::TargetKind)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_gradient(loss: Loss, output: &[f32], target: Target<'_>) -> std::vec::Vec<f32> {
        let mut scratch = std::vec![0.0; output.len()];
        (0..output.len())
            .map(|i| {
                let h = 1e-2f32;
                let mut plus = output.to_vec();
                plus[i] += h;
                let mut minus = output.to_vec();
                minus[i] -= h;
                let lp = loss_and_gradient(loss, &plus, target, &mut scratch).unwrap();
                let lm = loss_and_gradient(loss, &minus, target, &mut scratch).unwrap();
                (lp - lm) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let logits = [0.3f32, -1.2, 2.0, 0.0];
        let values = [0.5f32, 0.0, 1.0, -1.0];
        for (loss, target) in [
            (Loss::CrossEntropy, Target::Class(2)),
            (Loss::CrossEntropy, Target::Class(1)),
            (Loss::MeanSquaredError, Target::Values(&values)),
        ] {
            let mut grad = [0.0; 4];
            loss_and_gradient(loss, &logits, target, &mut grad).unwrap();
            for (a, n) in grad.iter().zip(numeric_gradient(loss, &logits, target)) {
                assert!((a - n).abs() < 2e-3, "{loss:?}: {grad:?} vs {n}");
            }
        }
    }

    #[test]
    fn cross_entropy_is_stable_for_huge_logits() {
        let mut grad = [0.0; 3];
        let l = loss_and_gradient(
            Loss::CrossEntropy,
            &[1e30, 0.0, -1e30],
            Target::Class(0),
            &mut grad,
        )
        .unwrap();
        assert_eq!(l, 0.0);
        assert_eq!(grad, [0.0, 0.0, 0.0]);
        let l = loss_and_gradient(
            Loss::CrossEntropy,
            &[100.0, 0.0],
            Target::Class(1),
            &mut grad[..2],
        )
        .unwrap();
        assert_eq!(l, 100.0);
    }

    #[test]
    fn wrong_targets_are_errors() {
        let mut grad = [0.0; 2];
        assert_eq!(
            loss_and_gradient(Loss::CrossEntropy, &[0.0; 2], Target::Class(2), &mut grad),
            Err(TrainError::BadTarget {
                expected: 2,
                actual: 2
            })
        );
        assert_eq!(
            loss_and_gradient(
                Loss::MeanSquaredError,
                &[0.0; 2],
                Target::Values(&[1.0]),
                &mut grad
            ),
            Err(TrainError::BadTarget {
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            loss_and_gradient(
                Loss::MeanSquaredError,
                &[0.0; 2],
                Target::Class(0),
                &mut grad
            ),
            Err(TrainError::TargetKind)
        );
    }
}
