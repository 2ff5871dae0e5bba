//! Training on an NVIDIA GPU (`loam train --device cuda`, the `cuda` feature): the same
//! networks, losses, optimizers and epoch loop as the CPU engine, with every layer's forward
//! and backward pass on the GPU.
//!
//! - CUDA is loaded at run time (cudarc's dynamic loading): the driver's `libcuda.so.1`, and
//!   NVRTC and cuBLAS from the library path or NVIDIA's Python wheels (`libs`). Whatever is
//!   missing gives one [`CudaUnavailable`] message that names it and the way back to the CPU.
//! - Matrix products (dense layers, and convolutions as im2col + GEMM) go to cuBLAS, in f32 by
//!   default or on TF32 tensor cores ([`Math::Tf32`]); everything else is a kernel of
//!   `kernels.cu`, compiled once per process by NVRTC with IEEE arithmetic.
//! - The training and validation sets are uploaded once. Each epoch uploads only its shuffled
//!   order (the CPU's, from the same seed); each step gathers and augments its batch on the
//!   GPU, and the host queues the step's work without waiting. Per-sample losses stay on the
//!   GPU and are summed there; the host reads the sums once per epoch (and once more for
//!   validation). The best epoch's weights are kept by a device-to-device copy.
//! - Results match the CPU's up to summation order (f32 math): the batches, learning rates,
//!   regularization and optimizer formulas are the same. Dropout masks and augmentation draw
//!   from a counter-based generator instead of the CPU's `StdRng`, so runs that use them train
//!   on different random draws than the CPU does (reproducibly, for a seed, on one GPU).
//! - Quantization-aware training stays on the CPU: it runs the runtime's int8 kernels.

#[cfg(test)]
mod emulator;
mod error;
mod gpu;
mod libs;
mod net;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;

use anyhow::{Result, bail};

pub use error::CudaUnavailable;
pub use gpu::{KERNEL_NAMES, KERNELS_CU};

use self::gpu::{Buf, GatherArgs, Gpu, LossArgs, TargetSpans};
use self::net::{GpuNet, Mode, Sizing};
use super::fit::{self, Backend, Fitted, Progress, Samples, Targets, TrainOptions};
use super::{Loss, Math, Network, Optimizer};

/// Opens the GPU (once per process) and describes it, or says what is missing.
pub fn probe() -> Result<String, CudaUnavailable> {
    Ok(Gpu::get()?.description.clone())
}

/// Compiles the kernels with NVRTC and returns the PTX (no GPU or driver needed).
pub fn compile_kernels() -> Result<String, CudaUnavailable> {
    Ok(gpu::compile_kernels()?.to_src())
}

/// [`super::fit()`] on the GPU with `math` for the matrix products.
pub fn fit(
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    math: Math,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    fit_on_gpu(
        Gpu::get()?,
        network,
        train,
        validation,
        options,
        math,
        stop,
        progress,
    )
}

/// [`fit`] on `gpu`.
#[allow(clippy::too_many_arguments)]
fn fit_on_gpu(
    gpu: &Gpu,
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    math: Math,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Fitted> {
    let setup = fit::setup(&network, train, validation, options)?;
    let _busy = gpu.lock();
    gpu.set_math(math)?;
    let trainer = Trainer::new(gpu, network, train, validation, options)?;
    fit::run_epochs(
        Box::new(trainer),
        setup,
        validation.is_some(),
        options,
        stop,
        progress,
    )
}

/// The `LOSS_*` number of kernels.cu.
fn loss_kind(loss: Loss) -> i32 {
    match loss {
        Loss::CrossEntropy => 0,
        Loss::BinaryCrossEntropy => 1,
        Loss::MeanSquaredError => 2,
        Loss::MeanAbsoluteError => 3,
        Loss::Huber => 4,
    }
}

/// A set of samples on the GPU, with room for each sample's loss and metric.
struct DeviceSet {
    inputs: Buf<f32>,
    classes: Option<Buf<u32>>,
    values: Option<Buf<f32>>,
    samples: usize,
    sample_loss: Buf<f32>,
    sample_metric: Buf<f64>,
}

impl DeviceSet {
    fn upload(gpu: &Gpu, set: &Samples<'_>, width: usize, what: &str) -> Result<DeviceSet> {
        let samples = set.targets.len();
        let (classes, values) = match set.targets {
            Targets::Classes(c) => {
                if let Some(&bad) = c.iter().find(|&&c| c as usize >= width) {
                    bail!("{what}: class {bad} is out of range for a model with {width} outputs");
                }
                (Some(gpu.upload(c)?), None)
            }
            Targets::Values { values, width: w } => {
                if w != width {
                    bail!("{what}: {w} target values for a model with {width} outputs");
                }
                (None, Some(gpu.upload(values)?))
            }
        };
        Ok(DeviceSet {
            inputs: gpu.upload(set.inputs)?,
            classes,
            values,
            samples,
            sample_loss: gpu.zeros(samples)?,
            sample_metric: gpu.zeros(samples)?,
        })
    }

    fn targets(&self) -> TargetSpans<'_> {
        match (&self.classes, &self.values) {
            (Some(c), _) => TargetSpans::Classes(c.span()),
            (None, Some(v)) => TargetSpans::Values(v.span()),
            (None, None) => unreachable!("a set has classes or values"),
        }
    }

    /// Bytes [`DeviceSet::upload`] allocates for `set`.
    fn bytes(set: &Samples<'_>) -> u64 {
        let n = set.targets.len() as u64;
        let targets = match set.targets {
            Targets::Classes(c) => c.len() as u64 * 4,
            Targets::Values { values, .. } => values.len() as u64 * 4,
        };
        set.inputs.len() as u64 * 4 + targets + n * (4 + 8)
    }
}

/// The optimizer's state on the GPU.
struct OptimState {
    first: Buf<f32>,
    second: Buf<f32>,
    decay: Buf<u8>,
    partial: Buf<f64>,
    scale: Buf<f32>,
    diverged: Buf<i32>,
    steps: i32,
}

impl OptimState {
    fn new(gpu: &Gpu, net: &GpuNet, optimizer: Optimizer) -> Result<OptimState> {
        let n = net.params.len();
        let mut decay = Vec::with_capacity(n);
        for &slot in net.network().slots() {
            let len = net.network().param(slot).len();
            decay.extend(std::iter::repeat_n(u8::from(!slot.bias), len));
        }
        let second = match optimizer {
            Optimizer::Sgd { .. } => 1,
            _ => n,
        };
        Ok(OptimState {
            first: gpu.zeros(n)?,
            second: gpu.zeros(second)?,
            decay: gpu.upload(&decay)?,
            partial: gpu.zeros(gpu::MAX_PARTIALS)?,
            scale: gpu.zeros(1)?,
            diverged: gpu.zeros(1)?,
            steps: 0,
        })
    }

    /// Bytes [`OptimState::new`] allocates for `params` parameters.
    fn bytes(params: usize) -> u64 {
        params as u64 * (4 + 4 + 1) + gpu::MAX_PARTIALS as u64 * 8 + 8
    }

    /// Clips the gradients in `net` and moves its parameters one step, as
    /// `OptimizerState::step` after `clip_by_norm` does on the CPU.
    fn step(&mut self, gpu: &Gpu, net: &GpuNet, options: &TrainOptions, rate: f32) -> Result<()> {
        let (w, g) = (net.params.span(), net.grads.span());
        let (scale, diverged) = (self.scale.span(), self.diverged.span());
        gpu.clip(g, self.partial.span(), options.clip_norm, scale, diverged)?;
        self.steps = self.steps.saturating_add(1);
        let reg = options.regularization;
        match options.optimizer {
            Optimizer::Sgd { momentum, nesterov } => gpu.sgd_step(
                w,
                g,
                self.first.span(),
                self.decay.span(),
                (rate, momentum, nesterov),
                (reg.l1, reg.l2),
                scale,
                diverged,
            ),
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
                let weight_decay = match options.optimizer {
                    Optimizer::AdamW { weight_decay, .. } => weight_decay,
                    _ => 0.0,
                };
                // As the CPU computes them, on the host.
                let c1 = 1.0 - beta1.powi(self.steps);
                let c2 = 1.0 - beta2.powi(self.steps);
                gpu.adam_step(
                    w,
                    g,
                    (self.first.span(), self.second.first(w.len())),
                    self.decay.span(),
                    rate,
                    (beta1, beta2, epsilon, c1, c2, weight_decay),
                    (reg.l1, reg.l2),
                    scale,
                    diverged,
                )
            }
        }
    }
}

/// The GPU's side of the epoch loop.
struct Trainer<'a> {
    gpu: &'a Gpu,
    net: GpuNet,
    optim: OptimState,
    options: &'a TrainOptions,
    train: DeviceSet,
    validation: Option<DeviceSet>,
    /// The epoch's order, then (in validation) the identity.
    order: Buf<u32>,
    identity: Buf<u32>,
    class_weights: Buf<f32>,
    n_weights: usize,
    /// The loss's layer and its values per sample.
    at: usize,
    width: usize,
    gather: GatherArgs,
    /// Epoch sums read back: training loss and metric, validation loss and metric.
    sums: Buf<f64>,
    partial: Buf<f64>,
    best: Option<Buf<f32>>,
}

impl<'a> Trainer<'a> {
    fn new(
        gpu: &'a Gpu,
        network: Network,
        train: &Samples<'_>,
        validation: Option<&Samples<'_>>,
        options: &'a TrainOptions,
    ) -> Result<Trainer<'a>> {
        let at = fit::loss_layer(&network, &options.loss);
        let width = network.len(at);
        let samples = train.targets.len();
        let val_samples = validation.map_or(0, |v| v.targets.len());
        let sizing = Sizing {
            batch: options.batch_size.min(samples.max(val_samples)).max(1),
            start: at,
            input_grad: false,
        };
        // Everything allocated below, checked against the free memory first so a model that
        // cannot fit says so before anything is allocated.
        let params: usize = network
            .slots()
            .iter()
            .map(|&s| network.param(s).len())
            .sum();
        let need = net::bytes_needed(&network, sizing)?
            + OptimState::bytes(params)
            + params as u64 * 4
            + DeviceSet::bytes(train)
            + validation.map_or(0, DeviceSet::bytes)
            + (samples.max(val_samples) as u64) * 4 * 2;
        let (free, _) = gpu.memory()?;
        // cuBLAS's workspace and the allocator's rounding take some beyond the buffers.
        let margin = 64 << 20;
        if need + margin > free {
            return Err(CudaUnavailable::OutOfMemory {
                need_mib: error::mib(need + margin),
                free_mib: error::mib(free),
            }
            .into());
        }
        let net = GpuNet::new(gpu, network, sizing)?;
        let optim = OptimState::new(gpu, &net, options.optimizer)?;
        let train_set = DeviceSet::upload(gpu, train, width, "training set")?;
        let validation = validation
            .map(|v| DeviceSet::upload(gpu, v, width, "validation set"))
            .transpose()?;
        let identity: Vec<u32> = (0..val_samples as u32).collect();
        let weights = options.loss.class_weights.clone().unwrap_or_default();
        let dims = net.network().dims(0).to_vec();
        let a = options.augmentation;
        let gather = GatherArgs {
            image: match dims.as_slice() {
                &[h, w, c] => [h, w, c],
                _ => [0, 0, 0],
            },
            shift_rows: a.shift_rows,
            shift_cols: a.shift_cols,
            flip: a.flip_horizontal,
            noise: a.noise,
            seed: options.seed,
            step: 0,
        };
        Ok(Trainer {
            gpu,
            optim,
            options,
            train: train_set,
            validation,
            order: gpu.zeros(samples)?,
            identity: gpu.upload(&identity)?,
            class_weights: gpu.upload(&weights)?,
            n_weights: weights.len(),
            at,
            width,
            gather,
            sums: gpu.zeros(4)?,
            partial: gpu.zeros(gpu::MAX_PARTIALS)?,
            best: None,
            net,
        })
    }

    fn loss_args(&self, scale: f32) -> LossArgs {
        LossArgs {
            kind: loss_kind(self.options.loss.loss),
            huber_delta: self.options.loss.huber_delta,
            scale,
        }
    }
}

impl Backend for Trainer<'_> {
    fn begin_epoch(&mut self, _epoch: usize, order: &[usize]) -> Result<()> {
        let order: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        self.gpu.write(&order, &mut self.order)
    }

    fn step(
        &mut self,
        _epoch: usize,
        index: usize,
        batch: &[usize],
        step: usize,
        rate: f32,
    ) -> Result<Option<f64>> {
        let gpu = self.gpu;
        let count = batch.len();
        let first = index * self.options.batch_size;
        let seed = self.options.seed;
        let mode = Mode::Train {
            seed,
            step: step as u64,
        };
        let gather = GatherArgs {
            step: step as u64,
            ..self.gather
        };
        let sample_len = self.net.len(0);
        gpu.gather_batch(
            self.train.inputs.span(),
            self.train.samples,
            self.order.span(),
            first,
            count,
            sample_len,
            &gather,
            self.net.output(0, count),
        )?;
        self.net.forward(gpu, count, self.at, mode)?;
        let args = self.loss_args(1.0 / count as f32);
        gpu.loss(
            self.net.output(self.at, count),
            self.width,
            count,
            self.train.samples,
            self.order.span(),
            first,
            self.train.targets(),
            self.class_weights.span(),
            self.n_weights,
            &args,
            Some(self.net.gradient(self.at, count)),
            self.train.sample_loss.span(),
            self.train.sample_metric.span(),
        )?;
        self.net.backward(gpu, count, self.at, mode)?;
        self.optim.step(gpu, &self.net, self.options, rate)?;
        // The loss stays on the GPU until the epoch ends.
        Ok(None)
    }

    fn end_epoch(&mut self, epoch: usize) -> Result<(f64, f64)> {
        let (gpu, s) = (self.gpu, &self.train);
        gpu.sum_f32(
            s.sample_loss.span(),
            self.partial.span(),
            self.sums.span(),
            0,
        )?;
        gpu.sum_f64(
            s.sample_metric.span(),
            self.partial.span(),
            self.sums.span(),
            1,
        )?;
        let sums = gpu.read(&self.sums, 2)?;
        if gpu.read(&self.optim.diverged, 1)?[0] != 0 {
            bail!(
                "training diverged at epoch {epoch} (a gradient is not finite); lower the learning rate"
            );
        }
        Ok((sums[0], sums[1]))
    }

    fn validate(&mut self) -> Result<(f64, f64)> {
        let gpu = self.gpu;
        let Some(v) = &self.validation else {
            bail!("no validation samples");
        };
        let sample_len = self.net.len(0);
        let step = self.net.batch();
        let args = self.loss_args(1.0);
        for first in (0..v.samples).step_by(step) {
            let count = step.min(v.samples - first);
            gpu.gather_batch(
                v.inputs.span(),
                v.samples,
                self.identity.span(),
                first,
                count,
                sample_len,
                &GatherArgs::default(),
                self.net.output(0, count),
            )?;
            self.net.forward(gpu, count, self.at, Mode::Eval)?;
            gpu.loss(
                self.net.output(self.at, count),
                self.width,
                count,
                v.samples,
                self.identity.span(),
                first,
                v.targets(),
                self.class_weights.span(),
                self.n_weights,
                &args,
                None,
                v.sample_loss.span(),
                v.sample_metric.span(),
            )?;
        }
        gpu.sum_f32(
            v.sample_loss.span(),
            self.partial.span(),
            self.sums.span(),
            2,
        )?;
        gpu.sum_f64(
            v.sample_metric.span(),
            self.partial.span(),
            self.sums.span(),
            3,
        )?;
        let sums = gpu.read(&self.sums, 4)?;
        let n = v.samples.max(1) as f64;
        Ok((sums[2] / n, sums[3] / n))
    }

    fn keep_best(&mut self) -> Result<()> {
        if self.best.is_none() {
            self.best = Some(self.gpu.zeros(self.net.params.len())?);
        }
        if let Some(best) = &mut self.best {
            self.gpu.copy(&self.net.params, best)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>, best: bool) -> Result<Network> {
        let Trainer {
            gpu,
            net,
            best: kept,
            ..
        } = *self;
        net.download_into(gpu, if best { kept.as_ref() } else { None })
    }
}
