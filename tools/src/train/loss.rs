//! Losses, per sample, with their gradient. Classification losses take logits (the scores
//! before a softmax or sigmoid) because `log(softmax)` computed from logits stays finite
//! where the probability underflows.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// What the model is trained to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy over the classes.
    CrossEntropy,
    /// Sigmoid binary cross-entropy per output (multi-label, or one output for two classes).
    BinaryCrossEntropy,
    /// Mean squared error.
    MeanSquaredError,
    /// Mean absolute error.
    MeanAbsoluteError,
    /// Huber: squared below `delta`, linear above.
    Huber,
}

/// The expected output of one sample.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A class index (one-hot over the outputs).
    Class(u32),
    /// Target values, one per output.
    Values(&'a [f32]),
}

impl Target<'_> {
    /// Target value of output `j` of `width`.
    fn at(&self, j: usize) -> f32 {
        match *self {
            Target::Class(c) => f32::from(u8::from(c as usize == j)),
            Target::Values(v) => v.get(j).copied().unwrap_or(0.0),
        }
    }

    fn check(&self, width: usize) -> Result<()> {
        match *self {
            Target::Class(c) if c as usize >= width => {
                bail!("class {c} is out of range for a model with {width} outputs")
            }
            Target::Values(v) if v.len() != width => {
                bail!("{} target values for a model with {width} outputs", v.len())
            }
            _ => Ok(()),
        }
    }
}

/// A loss with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LossFunction {
    /// Which loss.
    pub loss: Loss,
    /// Huber's threshold.
    pub huber_delta: f32,
    /// Per-class weights for cross-entropy (for imbalanced classes).
    pub class_weights: Option<Vec<f32>>,
}

impl LossFunction {
    /// `loss` with Huber delta 1 and no class weights.
    pub fn new(loss: Loss) -> LossFunction {
        LossFunction {
            loss,
            huber_delta: 1.0,
            class_weights: None,
        }
    }

    /// The loss of one sample's `prediction` and writes `scale * dloss/dprediction` to `grad`
    /// (`scale` is `1 / batch` so a batch's gradients sum to the mean's).
    pub fn sample(
        &self,
        prediction: &[f32],
        target: Target<'_>,
        scale: f32,
        grad: &mut [f32],
    ) -> Result<f32> {
        let width = prediction.len();
        target.check(width)?;
        let n = width.max(1) as f32;
        Ok(match self.loss {
            Loss::CrossEntropy => {
                let max = prediction.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = prediction.iter().map(|&z| (z - max).exp()).sum();
                let log_sum = max + sum.ln();
                let weight = match (target, &self.class_weights) {
                    (Target::Class(c), Some(w)) => w.get(c as usize).copied().unwrap_or(1.0),
                    _ => 1.0,
                };
                // Soft targets need not sum to 1: d/dz_j = p_j * sum(t) - t_j.
                let mass: f32 = (0..width).map(|j| target.at(j)).sum();
                let mut loss = 0.0;
                for (j, (g, &z)) in grad.iter_mut().zip(prediction).enumerate() {
                    let t = target.at(j);
                    let p = (z - log_sum).exp();
                    loss -= t * (z - log_sum);
                    *g = scale * weight * (p * mass - t);
                }
                weight * loss
            }
            Loss::BinaryCrossEntropy => {
                let mut loss = 0.0;
                for (j, (g, &z)) in grad.iter_mut().zip(prediction).enumerate() {
                    let t = target.at(j);
                    // log(1 + e^-|z|) form: finite for any z.
                    loss += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
                    let p = 1.0 / (1.0 + (-z).exp());
                    *g = scale * (p - t) / n;
                }
                loss / n
            }
            Loss::MeanSquaredError => {
                let mut loss = 0.0;
                for (j, (g, &y)) in grad.iter_mut().zip(prediction).enumerate() {
                    let e = y - target.at(j);
                    loss += e * e;
                    *g = scale * 2.0 * e / n;
                }
                loss / n
            }
            Loss::MeanAbsoluteError => {
                let mut loss = 0.0;
                for (j, (g, &y)) in grad.iter_mut().zip(prediction).enumerate() {
                    let e = y - target.at(j);
                    loss += e.abs();
                    *g = scale * e.signum() * f32::from(u8::from(e != 0.0)) / n;
                }
                loss / n
            }
            Loss::Huber => {
                let d = self.huber_delta;
                let mut loss = 0.0;
                for (j, (g, &y)) in grad.iter_mut().zip(prediction).enumerate() {
                    let e = y - target.at(j);
                    if e.abs() <= d {
                        loss += 0.5 * e * e;
                        *g = scale * e / n;
                    } else {
                        loss += d * (e.abs() - 0.5 * d);
                        *g = scale * d * e.signum() / n;
                    }
                }
                loss / n
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(f: &LossFunction, prediction: &[f32], target: Target<'_>) -> Vec<f32> {
        let mut scratch = vec![0.0; prediction.len()];
        (0..prediction.len())
            .map(|j| {
                let eps = 1e-3;
                let mut p = prediction.to_vec();
                p[j] += eps;
                let up = f.sample(&p, target, 1.0, &mut scratch).unwrap();
                p[j] -= 2.0 * eps;
                let down = f.sample(&p, target, 1.0, &mut scratch).unwrap();
                (up - down) / (2.0 * eps)
            })
            .collect()
    }

    #[test]
    fn every_loss_matches_finite_differences() {
        let prediction = [0.3, -1.2, 2.0];
        let values = [0.0, 1.0, 0.5];
        for loss in [
            Loss::CrossEntropy,
            Loss::BinaryCrossEntropy,
            Loss::MeanSquaredError,
            Loss::MeanAbsoluteError,
            Loss::Huber,
        ] {
            let f = LossFunction::new(loss);
            for target in [Target::Class(1), Target::Values(&values)] {
                let mut grad = [0.0; 3];
                f.sample(&prediction, target, 1.0, &mut grad).unwrap();
                let expected = numeric(&f, &prediction, target);
                for (a, e) in grad.iter().zip(&expected) {
                    assert!((a - e).abs() < 2e-3, "{loss:?}: {grad:?} vs {expected:?}");
                }
            }
        }
    }

    #[test]
    fn known_values() {
        let mut grad = [0.0; 2];
        let ce = LossFunction::new(Loss::CrossEntropy);
        let l = ce
            .sample(&[0.0, 0.0], Target::Class(0), 1.0, &mut grad)
            .unwrap();
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(grad, [-0.5, 0.5]);
        let mse = LossFunction::new(Loss::MeanSquaredError);
        let l = mse
            .sample(&[1.0, 3.0], Target::Values(&[0.0, 0.0]), 0.5, &mut grad)
            .unwrap();
        assert_eq!(l, 5.0);
        assert_eq!(grad, [0.5, 1.5]);
        // Huge logits stay finite.
        let l = ce
            .sample(&[1e4, -1e4], Target::Class(1), 1.0, &mut grad)
            .unwrap();
        assert!(l.is_finite() && (l - 2e4).abs() < 1.0);
    }

    #[test]
    fn bad_targets_are_named() {
        let mut grad = [0.0; 2];
        let ce = LossFunction::new(Loss::CrossEntropy);
        let e = ce
            .sample(&[0.0, 0.0], Target::Class(5), 1.0, &mut grad)
            .unwrap_err();
        assert!(e.to_string().contains("class 5"), "{e}");
        let e = ce
            .sample(&[0.0, 0.0], Target::Values(&[1.0]), 1.0, &mut grad)
            .unwrap_err();
        assert!(e.to_string().contains("1 target values"), "{e}");
    }
}
