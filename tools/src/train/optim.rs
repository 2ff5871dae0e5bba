//! Optimizers, learning-rate schedules and weight regularization for the host trainer.

use serde::{Deserialize, Serialize};

/// How parameters move along their gradients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Optimizer {
    /// Stochastic gradient descent with momentum.
    Sgd {
        /// Momentum (0 for plain SGD).
        #[serde(default)]
        momentum: f32,
        /// Nesterov's look-ahead form.
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (L2 regularization, if any, added to the gradient).
    Adam {
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f32,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f32,
        /// Denominator guard.
        #[serde(default = "epsilon")]
        epsilon: f32,
    },
    /// AdamW: Adam with weight decay applied to the weights directly.
    AdamW {
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f32,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f32,
        /// Denominator guard.
        #[serde(default = "epsilon")]
        epsilon: f32,
        /// Decoupled weight decay per step, scaled by the learning rate.
        #[serde(default = "weight_decay")]
        weight_decay: f32,
    },
}

fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn epsilon() -> f32 {
    1e-8
}
fn weight_decay() -> f32 {
    0.01
}

impl Default for Optimizer {
    fn default() -> Optimizer {
        Optimizer::Adam {
            beta1: beta1(),
            beta2: beta2(),
            epsilon: epsilon(),
        }
    }
}

/// The learning rate over training, on top of an optional linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between drops.
        every_epochs: usize,
        /// Factor per drop.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to `min_lr` at the end.
    Cosine {
        /// Final rate.
        #[serde(default)]
        min_lr: f32,
    },
    /// One cycle (Smith): up from `base / 25` to the base rate over the first 30% of the
    /// steps, then cosine down to `base / 10^4`.
    OneCycle,
}

impl Schedule {
    /// The rate at `step` of `total` steps (`steps_per_epoch` each), with `warmup` steps of
    /// linear warm-up first.
    pub fn rate(
        &self,
        base: f32,
        step: usize,
        total: usize,
        steps_per_epoch: usize,
        warmup: usize,
    ) -> f32 {
        let progress = step as f32 / total.max(1) as f32;
        let cosine = |from: f32, to: f32, t: f32| {
            to + 0.5 * (from - to) * (1.0 + (std::f32::consts::PI * t.clamp(0.0, 1.0)).cos())
        };
        let rate = match *self {
            Schedule::Constant => base,
            Schedule::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / steps_per_epoch.max(1);
                base * gamma.powi((epoch / every_epochs.max(1)) as i32)
            }
            Schedule::Cosine { min_lr } => cosine(base, min_lr, progress),
            Schedule::OneCycle => {
                const RISE: f32 = 0.3;
                if progress < RISE {
                    let start = base / 25.0;
                    start + (base - start) * progress / RISE
                } else {
                    cosine(base, base / 1e4, (progress - RISE) / (1.0 - RISE))
                }
            }
        };
        if step < warmup {
            rate * (step + 1) as f32 / warmup as f32
        } else {
            rate
        }
    }
}

/// Penalties on the weights (never on biases).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regularization {
    /// L1 coefficient.
    #[serde(default)]
    pub l1: f32,
    /// L2 coefficient (the gradient gains `2 * l2 * w`).
    #[serde(default)]
    pub l2: f32,
}

/// The optimizer's moments for every parameter tensor.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    optimizer: Optimizer,
    first: Vec<Vec<f32>>,
    second: Vec<Vec<f32>>,
    steps: i32,
}

impl OptimizerState {
    /// Zero moments for tensors of `sizes`.
    pub fn new(optimizer: Optimizer, sizes: &[usize]) -> OptimizerState {
        let zeros = || sizes.iter().map(|&n| vec![0.0; n]).collect::<Vec<_>>();
        OptimizerState {
            optimizer,
            first: zeros(),
            second: match optimizer {
                Optimizer::Sgd { .. } => Vec::new(),
                _ => zeros(),
            },
            steps: 0,
        }
    }

    /// One update of every tensor: `params[i]` moves along `grads[i]` (with the
    /// regularization added where `decays[i]`).
    pub fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[Vec<f32>],
        decays: &[bool],
        regularization: Regularization,
        rate: f32,
    ) {
        self.steps = self.steps.saturating_add(1);
        for (t, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let decay = decays.get(t).copied().unwrap_or(false);
            let Regularization { l1, l2 } = if decay {
                regularization
            } else {
                Regularization::default()
            };
            let m = &mut self.first[t];
            match self.optimizer {
                Optimizer::Sgd { momentum, nesterov } => {
                    for ((w, &g), v) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                        let g = g + 2.0 * l2 * *w + l1 * w.signum();
                        *v = momentum * *v + g;
                        let update = if nesterov { g + momentum * *v } else { *v };
                        *w -= rate * update;
                    }
                }
                Optimizer::Adam {
                    beta1,
                    beta2,
                    epsilon,
                }
                | Optimizer::AdamW {
                    beta1,
                    beta2,
                    epsilon,
                    ..
                } => {
                    let decoupled = match self.optimizer {
                        Optimizer::AdamW { weight_decay, .. } if decay => weight_decay,
                        _ => 0.0,
                    };
                    let c1 = 1.0 - beta1.powi(self.steps);
                    let c2 = 1.0 - beta2.powi(self.steps);
                    let v = &mut self.second[t];
                    for (((w, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v) {
                        let g = g + 2.0 * l2 * *w + l1 * w.signum();
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        let update = (*m / c1) / ((*v / c2).sqrt() + epsilon);
                        *w -= rate * (update + decoupled * *w);
                    }
                }
            }
        }
    }
}

/// Scales `grads` so their joint L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_by_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .flatten()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > max_norm && norm > 0.0 {
        let k = max_norm / norm;
        grads.iter_mut().flatten().for_each(|g| *g *= k);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimise(optimizer: Optimizer, rate: f32) -> f32 {
        // f(w) = (w - 3)^2, from w = 0.
        let mut w = [0.0f32];
        let mut state = OptimizerState::new(optimizer, &[1]);
        for _ in 0..500 {
            let g = vec![vec![2.0 * (w[0] - 3.0)]];
            state.step(&mut [&mut w], &g, &[true], Regularization::default(), rate);
        }
        w[0]
    }

    #[test]
    fn every_optimizer_reaches_the_minimum() {
        let adam = Optimizer::default();
        let adamw = Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        };
        for (opt, rate) in [
            (
                Optimizer::Sgd {
                    momentum: 0.0,
                    nesterov: false,
                },
                0.1,
            ),
            (
                Optimizer::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                0.01,
            ),
            (
                Optimizer::Sgd {
                    momentum: 0.9,
                    nesterov: true,
                },
                0.01,
            ),
            (adam, 0.05),
            (adamw, 0.05),
        ] {
            let w = minimise(opt, rate);
            assert!((w - 3.0).abs() < 1e-2, "{opt:?} ended at {w}");
        }
    }

    #[test]
    fn first_adam_step_moves_by_the_rate() {
        // Bias correction makes Adam's first step exactly `rate * sign(g)`.
        let mut w = [1.0f32];
        let mut state = OptimizerState::new(Optimizer::default(), &[1]);
        state.step(
            &mut [&mut w],
            &[vec![123.0]],
            &[true],
            Regularization::default(),
            0.1,
        );
        assert!((w[0] - 0.9).abs() < 1e-6, "{}", w[0]);
    }

    #[test]
    fn regularization_shrinks_weights_not_biases() {
        let (mut w, mut b) = ([1.0f32], [1.0f32]);
        let mut state = OptimizerState::new(
            Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            &[1, 1],
        );
        let reg = Regularization { l1: 0.0, l2: 0.5 };
        state.step(
            &mut [&mut w, &mut b],
            &[vec![0.0], vec![0.0]],
            &[true, false],
            reg,
            0.1,
        );
        assert_eq!((w[0], b[0]), (0.9, 1.0));
    }

    #[test]
    fn schedules() {
        let s = Schedule::Step {
            every_epochs: 2,
            gamma: 0.5,
        };
        assert_eq!(s.rate(1.0, 3, 100, 1, 0), 0.5);
        assert_eq!(s.rate(1.0, 4, 100, 1, 0), 0.25);
        let c = Schedule::Cosine { min_lr: 0.0 };
        assert!((c.rate(1.0, 50, 100, 10, 0) - 0.5).abs() < 1e-6);
        assert!(c.rate(1.0, 100, 100, 10, 0).abs() < 1e-6);
        let o = Schedule::OneCycle;
        assert!((o.rate(1.0, 0, 100, 10, 0) - 0.04).abs() < 1e-6);
        assert!((o.rate(1.0, 30, 100, 10, 0) - 1.0).abs() < 1e-6);
        assert_eq!(Schedule::Constant.rate(1.0, 1, 100, 10, 4), 0.5);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = vec![vec![3.0], vec![4.0]];
        assert_eq!(clip_by_norm(&mut g, 1.0), 5.0);
        assert_eq!(g, vec![vec![0.6], vec![0.8]]);
    }

    #[test]
    fn configs_read_from_toml() {
        #[derive(Deserialize)]
        struct T {
            optimizer: Optimizer,
            schedule: Schedule,
        }
        let t: T = toml::from_str(
            "optimizer = { kind = \"sgd\", momentum = 0.9, nesterov = true }\nschedule = { kind = \"cosine\" }",
        )
        .unwrap();
        assert_eq!(
            t.optimizer,
            Optimizer::Sgd {
                momentum: 0.9,
                nesterov: true
            }
        );
        assert_eq!(t.schedule, Schedule::Cosine { min_lr: 0.0 });
        assert!(
            toml::from_str::<T>(
                "optimizer = { kind = \"adam\", beta = 1 }\nschedule = { kind = \"constant\" }"
            )
            .is_err()
        );
    }
}
