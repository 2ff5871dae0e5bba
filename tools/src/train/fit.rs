//! The training loop: seeded shuffling, mini-batches split into fixed slices that run in
//! parallel, validation after every epoch, early stopping that restores the best weights,
//! and a stop flag (Ctrl-C) honoured between batches.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::device::{Device, Selection};
use super::loss::{LossFunction, Target};
use super::network::{Gradients, Network};
use super::optim::{Optimizer, OptimizerState, Regularization, Schedule, clip_by_norm};
use super::qat::Int8Forward;
use crate::graph::{Layer, Ranges};

/// Samples per parallel slice of a batch. Fixed, not derived from the thread count, so the
/// gradient sums (and the weights) do not depend on the machine.
const SLICE: usize = 8;

/// Inputs and their expected outputs.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// Samples back to back.
    pub inputs: &'a [f32],
    /// What each sample should give.
    pub targets: Targets<'a>,
}

/// The expected outputs of a set of samples.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// A class per sample.
    Classes(&'a [u32]),
    /// `width` values per sample.
    Values {
        /// Values, `width` per sample.
        values: &'a [f32],
        /// Values per sample.
        width: usize,
    },
}

impl<'a> Targets<'a> {
    /// Samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values { values, width } => values.len() / (*width).max(1),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> Target<'a> {
        match *self {
            Targets::Classes(c) => Target::Class(c[i]),
            Targets::Values { values, width } => {
                Target::Values(&values[i * width..(i + 1) * width])
            }
        }
    }
}

/// Which validation figure decides the best epoch and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// The validation loss (lower is better).
    #[default]
    ValidationLoss,
    /// The validation metric: accuracy for classification (higher is better), mean absolute
    /// error for regression (lower is better).
    ValidationMetric,
}

/// Stop when the monitored figure has not improved for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The figure watched.
    #[serde(default)]
    pub monitor: Monitor,
}

/// Random changes to training samples, drawn per sample and epoch from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// Largest shift in rows (time frames for a spectrogram) either way; the vacated
    /// positions are zero.
    #[serde(default)]
    pub shift_rows: usize,
    /// Largest shift in columns either way.
    #[serde(default)]
    pub shift_cols: usize,
    /// Mirror images left to right with probability 1/2.
    #[serde(default)]
    pub flip_horizontal: bool,
    /// Standard deviation of Gaussian noise added to every value.
    #[serde(default)]
    pub noise: f32,
}

impl Augmentation {
    fn is_identity(&self) -> bool {
        self.shift_rows == 0 && self.shift_cols == 0 && !self.flip_horizontal && self.noise == 0.0
    }

    /// Applies to one sample of `dims` (`[h, w, c]`, or anything with only noise).
    pub(crate) fn apply(&self, dims: &[usize], sample: &mut [f32], rng: &mut StdRng) {
        if let &[h, w, c] = dims {
            let dy = shift(self.shift_rows, rng);
            let dx = shift(self.shift_cols, rng);
            let flip = self.flip_horizontal && rng.random::<bool>();
            if dy != 0 || dx != 0 || flip {
                let source = sample.to_vec();
                for y in 0..h {
                    for x in 0..w {
                        let sy = y as isize - dy;
                        let sx = if flip { w - 1 - x } else { x } as isize - dx;
                        let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                        for ch in 0..c {
                            sample[(y * w + x) * c + ch] = if inside {
                                source[(sy as usize * w + sx as usize) * c + ch]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
        if self.noise > 0.0 {
            for v in sample {
                *v += self.noise * gaussian(rng);
            }
        }
    }
}

fn shift(max: usize, rng: &mut StdRng) -> isize {
    if max == 0 {
        0
    } else {
        let max = max.min(1 << 20) as i64;
        rng.random_range(-max..=max) as isize
    }
}

/// A standard normal draw (Box-Muller), so the noise needs no further crate.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// Everything that shapes a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per update.
    pub batch_size: usize,
    /// Base learning rate.
    pub learning_rate: f32,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Weight penalties.
    pub regularization: Regularization,
    /// Gradient norm clip.
    pub clip_norm: Option<f32>,
    /// The loss.
    pub loss: LossFunction,
    /// Early stopping (needs validation samples).
    pub early_stopping: Option<EarlyStopping>,
    /// Training-time augmentation.
    pub augmentation: Augmentation,
    /// Seeds shuffling, dropout and augmentation.
    pub seed: u64,
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss (with dropout and augmentation on).
    pub train_loss: f64,
    /// Training metric.
    pub train_metric: f64,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation metric.
    pub val_metric: Option<f64>,
    /// Learning rate at the epoch's end.
    pub learning_rate: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// What [`fit`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A batch finished.
    Batch {
        /// Epoch number, from 1.
        epoch: usize,
        /// Batches done this epoch.
        done: usize,
        /// Batches per epoch.
        total: usize,
        /// The batch's mean loss. A GPU does not wait for it: there it is the latest figure
        /// read back (the previous epoch's mean training loss; NaN in the first epoch).
        loss: f64,
    },
    /// An epoch finished.
    Epoch(&'a EpochStats),
}

/// The result of training.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The network with the best epoch's weights (the last epoch's without validation).
    pub network: Network,
    /// Per-epoch figures.
    pub history: Vec<EpochStats>,
    /// The epoch whose weights `network` holds.
    pub best_epoch: usize,
    /// Early stopping ended the run.
    pub stopped_early: bool,
    /// The stop flag ended the run.
    pub interrupted: bool,
    /// `accuracy` or `mae`.
    pub metric_name: &'static str,
}

/// Where the loss reads the network: the input of a final softmax under cross-entropy (the
/// loss applies its own, from logits), else the output.
pub fn loss_layer(network: &Network, loss: &LossFunction) -> usize {
    let last = network.output_layer();
    match (&network.graph.layers[last], loss.loss) {
        (Layer::Softmax { from }, super::Loss::CrossEntropy) => *from,
        _ => last,
    }
}

/// Figures summed over samples.
#[derive(Default)]
struct Sums {
    loss: f64,
    metric: f64,
}

fn metric(prediction: &[f32], target: Target<'_>) -> f64 {
    match target {
        Target::Class(c) => {
            let best = prediction
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                );
            f64::from(u8::from(best.0 == c as usize))
        }
        Target::Values(v) => {
            let n = v.len().max(1) as f64;
            prediction
                .iter()
                .zip(v)
                .map(|(p, t)| f64::from((p - t).abs()))
                .sum::<f64>()
                / n
        }
    }
}

fn check(network: &Network, samples: &Samples<'_>, what: &str) -> Result<usize> {
    let n = samples.targets.len();
    if samples.inputs.len() != n * network.input_len() {
        bail!(
            "{what}: {} input values for {n} samples of {} values",
            samples.inputs.len(),
            network.input_len()
        );
    }
    Ok(n)
}

/// Gathers samples `indices` into one input buffer, augmented with `rng` when given.
fn gather(
    network: &Network,
    inputs: &[f32],
    indices: &[usize],
    augmentation: Option<(&Augmentation, &mut StdRng)>,
) -> Vec<f32> {
    let len = network.input_len();
    let mut x = Vec::with_capacity(indices.len() * len);
    for &i in indices {
        x.extend_from_slice(&inputs[i * len..(i + 1) * len]);
    }
    if let Some((aug, rng)) = augmentation
        && !aug.is_identity()
    {
        for sample in x.chunks_exact_mut(len) {
            aug.apply(network.dims(0), sample, rng);
        }
    }
    x
}

/// A generator for slice `slice` of update `step`, independent of which thread runs it.
fn slice_rng(seed: u64, step: u64, slice: u64) -> StdRng {
    let mix = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ slice.wrapping_mul(0xc2b2_ae3d_27d4_eb4f).rotate_left(31);
    StdRng::seed_from_u64(mix)
}

/// Trains `network` on `train`, validating on `validation` after every epoch; returns the
/// best weights. `stop` is polled between batches. Runs on the device selected for this
/// process ([`super::device::select`]; the CPU unless chosen).
pub fn fit(
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    fit_on(
        super::device::selected(),
        network,
        train,
        validation,
        options,
        stop,
        progress,
    )
}

/// [`fit`] on `device`, whatever the process selected.
pub fn fit_on(
    device: Selection,
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    match device.device {
        Device::Cpu => fit_with(network, train, validation, options, None, stop, progress),
        #[cfg(feature = "cuda")]
        Device::Cuda => super::cuda::fit(
            network,
            train,
            validation,
            options,
            device.math,
            stop,
            progress,
        ),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => bail!(super::device::NO_CUDA_SUPPORT),
    }
}

/// What every device checks before training, and what it learns from the data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setup {
    /// Training samples.
    pub samples: usize,
    /// `accuracy` or `mae`.
    pub metric_name: &'static str,
}

/// Checks `train` and `validation` against `network` and `options`.
pub(crate) fn setup(
    network: &Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
) -> Result<Setup> {
    let n = check(network, train, "training set")?;
    if n == 0 {
        bail!("the training set is empty");
    }
    if let Some(v) = validation {
        check(network, v, "validation set")?;
    }
    if options.batch_size == 0 {
        bail!("batch size is 0");
    }
    if options.early_stopping.is_some() && validation.is_none() {
        bail!("early stopping needs a validation split");
    }
    let metric_name = match train.targets {
        Targets::Classes(_) => "accuracy",
        Targets::Values { .. } => "mae",
    };
    Ok(Setup {
        samples: n,
        metric_name,
    })
}

/// One device's part of a training run: the per-batch update and the scoring. The epoch loop
/// ([`run_epochs`]) owns the rest (shuffling, the schedule, early stopping, progress, the stop
/// flag, the best epoch), so every device trains the same batches in the same order at the
/// same learning rates.
pub(crate) trait Backend {
    /// Starts an epoch whose batches are `order` (training-set indices) in chunks of the
    /// batch size.
    fn begin_epoch(&mut self, epoch: usize, order: &[usize]) -> Result<()>;

    /// One update on the training samples `batch` (chunk `index` of the epoch's order) at
    /// optimizer step `step` (counted over the run, from 0) with learning rate `rate`.
    /// Returns the batch's mean loss when it is known without waiting on a device.
    fn step(
        &mut self,
        epoch: usize,
        index: usize,
        batch: &[usize],
        step: usize,
        rate: f32,
    ) -> Result<Option<f64>>;

    /// Ends the epoch: its training loss and metric summed over its samples.
    fn end_epoch(&mut self, epoch: usize) -> Result<(f64, f64)>;

    /// Mean validation loss and metric of the current weights.
    fn validate(&mut self) -> Result<(f64, f64)>;

    /// Remembers the current weights as the best so far.
    fn keep_best(&mut self) -> Result<()>;

    /// The network holding the weights [`Backend::keep_best`] kept last (`best`), or the
    /// current ones.
    fn finish(self: Box<Self>, best: bool) -> Result<Network>;
}

/// The epoch loop over `backend`: trains `setup.samples` samples for `options.epochs` epochs
/// and assembles the [`Fitted`] result.
pub(crate) fn run_epochs(
    mut backend: Box<dyn Backend + '_>,
    setup: Setup,
    validating: bool,
    options: &TrainOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    let n = setup.samples;
    let higher_is_better = setup.metric_name == "accuracy";
    let steps_per_epoch = n.div_ceil(options.batch_size);
    let total = steps_per_epoch * options.epochs;
    let warmup = options.warmup_epochs * steps_per_epoch;
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = Vec::new();
    // The best score and its epoch; the backend keeps the weights.
    let mut best: Option<(f64, usize)> = None;
    let (mut stopped_early, mut interrupted) = (false, false);
    let mut step = 0usize;
    // What a batch's progress shows when the backend cannot tell without waiting.
    let mut last_loss = f64::NAN;
    'epochs: for epoch in 1..=options.epochs {
        let started = std::time::Instant::now();
        order.shuffle(&mut StdRng::seed_from_u64(
            options.seed.wrapping_add(epoch as u64),
        ));
        backend.begin_epoch(epoch, &order)?;
        let mut rate = options.learning_rate;
        for (b, batch) in order.chunks(options.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'epochs;
            }
            rate =
                options
                    .schedule
                    .rate(options.learning_rate, step, total, steps_per_epoch, warmup);
            if let Some(loss) = backend.step(epoch, b, batch, step, rate)? {
                last_loss = loss;
            }
            step += 1;
            progress(Progress::Batch {
                epoch,
                done: b + 1,
                total: steps_per_epoch,
                loss: last_loss,
            });
        }
        let (loss_sum, metric_sum) = backend.end_epoch(epoch)?;
        let (val_loss, val_metric) = if validating {
            let (l, m) = backend.validate()?;
            (Some(l), Some(m))
        } else {
            (None, None)
        };
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / n as f64,
            train_metric: metric_sum / n as f64,
            val_loss,
            val_metric,
            learning_rate: f64::from(rate),
            seconds: started.elapsed().as_secs_f64(),
        };
        last_loss = stats.train_loss;
        progress(Progress::Epoch(&stats));
        history.push(stats);
        // Lower is better for the score.
        let monitor = options
            .early_stopping
            .map(|e| e.monitor)
            .unwrap_or_default();
        let score = match (monitor, val_loss, val_metric) {
            (Monitor::ValidationLoss, Some(l), _) => Some(l),
            (Monitor::ValidationMetric, _, Some(m)) => Some(if higher_is_better { -m } else { m }),
            _ => None,
        };
        if let Some(score) = score {
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, epoch));
                backend.keep_best()?;
            }
            if let (Some(e), Some((_, best_epoch))) = (options.early_stopping, best)
                && epoch - best_epoch >= e.patience
            {
                stopped_early = true;
                break;
            }
        }
    }
    let best_epoch = best.map_or(history.len(), |(_, epoch)| epoch);
    let network = backend.finish(best.is_some())?;
    Ok(Fitted {
        network,
        history,
        best_epoch,
        stopped_early,
        interrupted,
        metric_name: setup.metric_name,
    })
}

/// [`fit`] on the CPU, or with `ranges` quantization-aware training: every batch runs through
/// the int8 model written over `ranges` from the current weights, and validation scores that
/// model.
pub(crate) fn fit_with(
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    ranges: Option<&Ranges>,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    let setup = setup(&network, train, validation, options)?;
    let backend = Cpu::new(network, train, validation, options, ranges);
    run_epochs(
        Box::new(backend),
        setup,
        validation.is_some(),
        options,
        stop,
        progress,
    )
}

/// The CPU engine: each batch split into fixed slices that run in parallel on rayon's
/// threads, summed in slice order.
struct Cpu<'a> {
    network: Network,
    train: &'a Samples<'a>,
    validation: Option<&'a Samples<'a>>,
    options: &'a TrainOptions,
    ranges: Option<&'a Ranges>,
    /// The layer the loss reads and its width per sample.
    at: usize,
    width: usize,
    decays: Vec<bool>,
    state: OptimizerState,
    sums: Sums,
    best: Option<Network>,
}

impl<'a> Cpu<'a> {
    fn new(
        network: Network,
        train: &'a Samples<'a>,
        validation: Option<&'a Samples<'a>>,
        options: &'a TrainOptions,
        ranges: Option<&'a Ranges>,
    ) -> Cpu<'a> {
        let at = loss_layer(&network, &options.loss);
        let width = network.len(at);
        let sizes: Vec<usize> = network
            .slots()
            .iter()
            .map(|&s| network.param(s).len())
            .collect();
        let decays = network.slots().iter().map(|s| !s.bias).collect();
        let state = OptimizerState::new(options.optimizer, &sizes);
        Cpu {
            network,
            train,
            validation,
            options,
            ranges,
            at,
            width,
            decays,
            state,
            sums: Sums::default(),
            best: None,
        }
    }
}

impl Backend for Cpu<'_> {
    fn begin_epoch(&mut self, _epoch: usize, _order: &[usize]) -> Result<()> {
        self.sums = Sums::default();
        Ok(())
    }

    fn step(
        &mut self,
        epoch: usize,
        _index: usize,
        batch: &[usize],
        step: usize,
        rate: f32,
    ) -> Result<Option<f64>> {
        let (network, options, train) = (&self.network, self.options, self.train);
        let (at, width) = (self.at, self.width);
        let scale = 1.0 / batch.len() as f32;
        // Written once per update: every slice of the batch sees the same weights.
        let int8 = self
            .ranges
            .map(|r| Int8Forward::new(network, r))
            .transpose()?;
        let slices: Vec<(Sums, Gradients)> = batch
            .par_chunks(SLICE)
            .enumerate()
            .map(|(k, indices)| -> Result<(Sums, Gradients)> {
                let mut rng = slice_rng(options.seed, step as u64, k as u64);
                let x = gather(
                    network,
                    train.inputs,
                    indices,
                    Some((&options.augmentation, &mut rng)),
                );
                let trace = match &int8 {
                    Some(q) => q.run(&x, indices.len())?.trace,
                    None => network.forward(&x, indices.len(), Some(&mut rng))?,
                };
                let mut d = vec![0.0f32; indices.len() * width];
                let mut sums = Sums::default();
                for ((&i, out), g) in indices
                    .iter()
                    .zip(trace.outputs[at].chunks_exact(width))
                    .zip(d.chunks_exact_mut(width))
                {
                    let target = train.targets.get(i);
                    sums.loss += f64::from(options.loss.sample(out, target, scale, g)?);
                    sums.metric += metric(out, target);
                }
                let mut grads = network.zero_gradients();
                network.backward(&trace, at, d, &mut grads)?;
                Ok((sums, grads))
            })
            .collect::<Result<_>>()?;
        // Summed in slice order, whatever thread finished first.
        let mut grads = network.zero_gradients();
        let mut batch_loss = 0.0;
        for (s, g) in slices {
            batch_loss += s.loss;
            self.sums.loss += s.loss;
            self.sums.metric += s.metric;
            for (acc, part) in grads.iter_mut().zip(&g) {
                acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
        }
        // Checked before the update, so no weight ever takes a non-finite step.
        if grads.iter().flatten().any(|g| !g.is_finite()) {
            bail!(
                "training diverged at epoch {epoch} (a gradient is not finite); lower the learning rate"
            );
        }
        if let Some(max) = options.clip_norm {
            clip_by_norm(&mut grads, max);
        }
        self.state.step(
            &mut self.network.params_mut(),
            &grads,
            &self.decays,
            options.regularization,
            rate,
        );
        Ok(Some(batch_loss / batch.len() as f64))
    }

    fn end_epoch(&mut self, _epoch: usize) -> Result<(f64, f64)> {
        Ok((self.sums.loss, self.sums.metric))
    }

    fn validate(&mut self) -> Result<(f64, f64)> {
        let Some(v) = self.validation else {
            bail!("no validation samples");
        };
        let int8 = self
            .ranges
            .map(|r| Int8Forward::new(&self.network, r))
            .transpose()?;
        evaluate_with(&self.network, v, &self.options.loss, int8.as_ref())
    }

    fn keep_best(&mut self) -> Result<()> {
        self.best = Some(self.network.clone());
        Ok(())
    }

    fn finish(self: Box<Self>, best: bool) -> Result<Network> {
        Ok(match (best, self.best) {
            (true, Some(net)) => net,
            _ => self.network,
        })
    }
}

/// The network's outputs for every sample (after a final softmax, if any), in order.
pub fn predict(network: &Network, inputs: &[f32]) -> Result<Vec<f32>> {
    let len = network.input_len();
    if len == 0 || !inputs.len().is_multiple_of(len) {
        bail!(
            "{} input values are not whole samples of {len}",
            inputs.len()
        );
    }
    let last = network.output_layer();
    let parts: Vec<Vec<f32>> = inputs
        .par_chunks(64 * len)
        .map(|x| -> Result<Vec<f32>> {
            let mut trace = network.forward(x, x.len() / len, None)?;
            Ok(std::mem::take(&mut trace.outputs[last]))
        })
        .collect::<Result<_>>()?;
    Ok(parts.concat())
}

/// Mean loss and metric over `samples`, without dropout or augmentation.
pub fn evaluate(
    network: &Network,
    samples: &Samples<'_>,
    loss: &LossFunction,
) -> Result<(f64, f64)> {
    evaluate_with(network, samples, loss, None)
}

/// [`evaluate`], through the int8 model `int8` when given.
pub(crate) fn evaluate_with(
    network: &Network,
    samples: &Samples<'_>,
    loss: &LossFunction,
    int8: Option<&Int8Forward>,
) -> Result<(f64, f64)> {
    let n = check(network, samples, "evaluation set")?;
    if n == 0 {
        bail!("the evaluation set is empty");
    }
    let len = network.input_len();
    let at = loss_layer(network, loss);
    let width = network.len(at);
    let indices: Vec<usize> = (0..n).collect();
    let sums: Vec<Sums> = indices
        .par_chunks(64)
        .map(|chunk| -> Result<Sums> {
            let x = &samples.inputs[chunk[0] * len..(chunk[0] + chunk.len()) * len];
            let trace = match int8 {
                Some(q) => q.run(x, chunk.len())?.trace,
                None => network.forward(x, chunk.len(), None)?,
            };
            let mut sums = Sums::default();
            let mut scratch = vec![0.0; width];
            for (&i, out) in chunk.iter().zip(trace.outputs[at].chunks_exact(width)) {
                let target = samples.targets.get(i);
                sums.loss += f64::from(loss.sample(out, target, 1.0, &mut scratch)?);
                sums.metric += metric(out, target);
            }
            Ok(sums)
        })
        .collect::<Result<_>>()?;
    let total = sums.iter().fold(Sums::default(), |a, s| Sums {
        loss: a.loss + s.loss,
        metric: a.metric + s.metric,
    });
    Ok((total.loss / n as f64, total.metric / n as f64))
}
