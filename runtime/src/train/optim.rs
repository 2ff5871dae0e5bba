//! Optimizers and gradient clipping, over flat parameter, gradient and moment slices.
//!
//! Every update is plain sequential `f32` arithmetic and `libm` (software) functions, so a
//! Cortex-M0 without an FPU, a Cortex-M4F and an x86_64 host produce the same bits.

/// How parameters move along their gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Optimizer {
    /// Stochastic gradient descent with (optionally Nesterov) momentum, as PyTorch defines it:
    /// `v = momentum * v + g`, then `p -= lr * v` (or `p -= lr * (g + momentum * v)`).
    Sgd {
        /// Step size.
        learning_rate: f32,
        /// Momentum factor; 0 keeps no velocity (and no state for it).
        momentum: f32,
        /// Nesterov's variant.
        nesterov: bool,
    },
    /// Adam with bias correction.
    Adam {
        /// Step size.
        learning_rate: f32,
        /// Decay of the first moment (0.9 usual).
        beta1: f32,
        /// Decay of the second moment (0.999 usual).
        beta2: f32,
        /// Added to the root of the second moment (1e-8 usual).
        epsilon: f32,
    },
}

impl Optimizer {
    /// Adam with the usual constants and `learning_rate`.
    pub const fn adam(learning_rate: f32) -> Optimizer {
        Optimizer::Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// Plain SGD with momentum.
    pub const fn sgd(learning_rate: f32, momentum: f32) -> Optimizer {
        Optimizer::Sgd {
            learning_rate,
            momentum,
            nesterov: false,
        }
    }

    /// State values kept per parameter.
    pub fn moments(&self) -> usize {
        match *self {
            Optimizer::Sgd { momentum: 0.0, .. } => 0,
            Optimizer::Sgd { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }

    pub(crate) fn is_valid(&self) -> bool {
        let finite_positive = |v: f32| v.is_finite() && v > 0.0;
        match *self {
            Optimizer::Sgd {
                learning_rate,
                momentum,
                ..
            } => finite_positive(learning_rate) && (0.0..1.0).contains(&momentum),
            Optimizer::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                finite_positive(learning_rate)
                    && (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && finite_positive(epsilon)
            }
        }
    }

    /// Applies one update (`step` counts from 1) to `params` from `grads`, with `moments`
    /// holding [`Self::moments`] slices of the parameters' length back to back.
    pub(crate) fn update(&self, params: &mut [f32], grads: &[f32], moments: &mut [f32], step: u32) {
        let n = params.len();
        let (first, second) = moments.split_at_mut(n.min(moments.len()));
        let prepared = self.prepare(step);
        for (i, (p, &g)) in params.iter_mut().zip(grads).enumerate() {
            *p -= self.delta(&prepared, g, first.get_mut(i), second.get_mut(i));
        }
    }

    /// What every parameter's update of step `step` shares (Adam's bias corrections).
    pub(crate) fn prepare(&self, step: u32) -> Prepared {
        match *self {
            Optimizer::Adam { beta1, beta2, .. } => {
                let t = step as f32;
                Prepared {
                    correction1: 1.0 - libm::powf(beta1, t),
                    correction2: 1.0 - libm::powf(beta2, t),
                }
            }
            Optimizer::Sgd { .. } => Prepared {
                correction1: 1.0,
                correction2: 1.0,
            },
        }
    }

    /// The amount to subtract from one parameter whose gradient is `g`, updating its moments
    /// (`first` for SGD's velocity or Adam's mean, `second` for Adam's variance; absent when
    /// the optimizer keeps fewer).
    pub(crate) fn delta(
        &self,
        prepared: &Prepared,
        g: f32,
        first: Option<&mut f32>,
        second: Option<&mut f32>,
    ) -> f32 {
        match *self {
            Optimizer::Sgd {
                learning_rate,
                momentum,
                nesterov,
            } => match first {
                Some(v) if momentum != 0.0 => {
                    *v = momentum * *v + g;
                    let direction = if nesterov { g + momentum * *v } else { *v };
                    learning_rate * direction
                }
                _ => learning_rate * g,
            },
            Optimizer::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
            } => {
                let (Some(m), Some(v)) = (first, second) else {
                    return 0.0;
                };
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                let m_hat = *m / prepared.correction1;
                let v_hat = *v / prepared.correction2;
                learning_rate * m_hat / (libm::sqrtf(v_hat) + epsilon)
            }
        }
    }
}

/// See [`Optimizer::prepare`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared {
    correction1: f32,
    correction2: f32,
}

pub(crate) fn clip_by_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = libm::sqrtf(grads.iter().map(|g| g * g).sum::<f32>());
    if norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        grads.iter_mut().for_each(|g| *g *= scale);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimizes `sum (p - 3)^2` and expects every optimizer to get close to 3.
    fn converges(optimizer: Optimizer, steps: u32) -> [f32; 2] {
        let mut p = [0.0f32, 10.0];
        let mut moments = [0.0f32; 4];
        for step in 1..=steps {
            let g = [2.0 * (p[0] - 3.0), 2.0 * (p[1] - 3.0)];
            optimizer.update(&mut p, &g, &mut moments, step);
        }
        p
    }

    #[test]
    fn every_optimizer_reaches_a_quadratics_minimum() {
        for optimizer in [
            Optimizer::sgd(0.1, 0.0),
            Optimizer::sgd(0.05, 0.9),
            Optimizer::Sgd {
                learning_rate: 0.05,
                momentum: 0.9,
                nesterov: true,
            },
            Optimizer::adam(0.1),
        ] {
            let p = converges(optimizer, 500);
            assert!(
                (p[0] - 3.0).abs() < 1e-2 && (p[1] - 3.0).abs() < 1e-2,
                "{optimizer:?}: {p:?}"
            );
        }
    }

    #[test]
    fn adam_first_step_moves_each_parameter_by_the_learning_rate() {
        let mut p = [1.0f32, 1.0];
        let mut moments = [0.0f32; 4];
        Optimizer::adam(0.01).update(&mut p, &[5.0, -0.001], &mut moments, 1);
        assert!(
            (p[0] - 0.99).abs() < 1e-6 && (p[1] - 1.01).abs() < 1e-4,
            "{p:?}"
        );
    }

    #[test]
    fn clipping_bounds_the_norm_and_keeps_the_direction() {
        let mut g = [3.0f32, 4.0];
        assert_eq!(clip_by_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = [0.3f32, 0.4];
        clip_by_norm(&mut small, 1.0);
        assert_eq!(small, [0.3, 0.4]);
    }

    #[test]
    fn invalid_hyperparameters_are_caught() {
        assert!(!Optimizer::sgd(0.0, 0.0).is_valid());
        assert!(!Optimizer::sgd(0.1, 1.0).is_valid());
        assert!(!Optimizer::adam(f32::NAN).is_valid());
        assert!(Optimizer::adam(1e-3).is_valid());
    }
}
