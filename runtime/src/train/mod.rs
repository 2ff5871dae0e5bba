//! On-device fine-tuning: the last fully-connected layers of a model learn from the device's
//! own data while everything before them stays frozen (int8 in flash), with no heap.
//!
//! A [`Trainer`] runs the frozen part of the graph with the ordinary [`Interpreter`] up to the
//! *boundary* (the input of the first trained layer), dequantizes it, and runs the trained
//! head in `f32` from parameters held in a caller-given state buffer, initialised from the
//! model's own weights. [`Trainer::step`] does forward, loss, backward through the head only
//! (no activation of the frozen part is kept), gradient accumulation over
//! [`TrainConfig::accumulate`] samples, clipping, and the optimizer update.
//!
//! Memory is known before anything runs: the model's arena, plus
//! [`Trainer::state_len`] `f32`s of state (parameters, optimizer moments, gradients and the
//! head's activations). [`Trainer::checkpoint`] gives the parameters and moments as bytes for
//! [`crate::store::CheckpointStore`]; [`Trainer::restore`] takes them back.
//!
//! Every operation is sequential `f32` arithmetic (the portable reference kernels, never a SIMD
//! fast path whose summation order differs) and `libm` functions, and the frozen part is int8,
//! bit-exact everywhere; so the same inputs give bit-identical parameters on a Cortex-M0, a
//! Cortex-M4F and an x86_64 host ([`check`] proves it on each).

pub mod check;
#[cfg(feature = "alloc")]
pub mod export;
mod head;
mod loss;
mod optim;
pub mod replay;

pub use loss::Loss;
pub use optim::Optimizer;

use core::fmt;

use crate::error::Error;
use crate::format::{ChannelIds, Model, TensorRecord};
use crate::interpreter::Interpreter;
use crate::tensor::{DType, Element, Quantization};
use head::{Head, Update};

/// The most layers a trainer trains.
pub const MAX_TRAINED_LAYERS: usize = 4;

/// Bytes before the parameters in a checkpoint payload: parameter count, moments per
/// parameter, updates applied and a reserved word, each a little-endian `u32`.
pub const CHECKPOINT_PREFIX: usize = 16;

/// What to train and how.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TrainConfig {
    /// Fully-connected layers trained in full, counted from the end of the graph (1 to
    /// [`MAX_TRAINED_LAYERS`]); 0 trains what the model's stored training plan says
    /// ([`crate::format::TrainingPlan`], written by `loam export --trainable`).
    pub layers: usize,
    /// The loss.
    pub loss: Loss,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Largest L2 norm of a gradient update, if clipped.
    pub clip_norm: Option<f32>,
    /// Samples whose gradients are averaged into one update (a mini-batch, accumulated).
    pub accumulate: u32,
}

/// What a sample should have produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target<'t> {
    /// The class index, for [`Loss::CrossEntropy`].
    Class(usize),
    /// The values, for [`Loss::MeanSquaredError`].
    Values(&'t [f32]),
}

/// Why training could not start or a step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TrainError {
    /// Running the frozen layers failed.
    Runtime(Error),
    /// The model does not end in the fully-connected layers to train (the reason says what
    /// was found instead).
    NoTrainableHead(&'static str),
    /// The state buffer is smaller than [`Trainer::state_len`].
    StateTooSmall {
        /// `f32`s needed.
        required: usize,
        /// `f32`s given.
        actual: usize,
    },
    /// A hyperparameter is out of range (the text names it).
    InvalidConfig(&'static str),
    /// A class index past the outputs, or a target vector of the wrong length.
    BadTarget {
        /// Outputs of the head.
        expected: usize,
        /// The index or length given.
        actual: usize,
    },
    /// A class target for a regression loss or the reverse.
    TargetKind,
    /// The loss or the gradient became NaN or infinite; nothing was updated.
    NonFinite,
    /// A checkpoint payload does not fit this trainer (another head, optimizer or length).
    BadCheckpoint,
    /// A recorded data set ([`replay::Recording`]) is malformed (the text names the field).
    BadRecording(&'static str),
}

impl From<Error> for TrainError {
    fn from(e: Error) -> Self {
        TrainError::Runtime(e)
    }
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Runtime(e) => write!(f, "running the frozen layers: {e}"),
            TrainError::NoTrainableHead(why) => write!(f, "nothing to train: {why}"),
            TrainError::StateTooSmall { required, actual } => write!(
                f,
                "training state needs {required} f32 values, {actual} were given"
            ),
            TrainError::InvalidConfig(what) => write!(f, "training configuration: {what}"),
            TrainError::BadTarget { expected, actual } => write!(
                f,
                "target {actual} does not fit the head's {expected} outputs"
            ),
            TrainError::TargetKind => {
                f.write_str("a class target needs cross-entropy, a vector target MSE")
            }
            TrainError::NonFinite => {
                f.write_str("loss or gradient is NaN or infinite; the step was skipped")
            }
            TrainError::BadCheckpoint => {
                f.write_str("checkpoint does not match this model's trained layers")
            }
            TrainError::BadRecording(what) => write!(f, "recorded data set: {what}"),
        }
    }
}

impl core::error::Error for TrainError {}

/// Which weight rows of a layer a trainer updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainedRows<'t> {
    /// Every row.
    All,
    /// None: the weights stayed as the file has them.
    None,
    /// The rows of these output channels (strictly increasing).
    Channels(ChannelIds<'t>),
}

/// A trained layer's weight rows as the trainer holds them.
#[derive(Debug, Clone, Copy)]
pub enum TrainedWeights<'t> {
    /// In real units.
    F32(&'t [f32]),
    /// int8 on the layer's scales in the file ([`crate::format::WeightStorage::Int8`]).
    I8(&'t [i8]),
}

impl TrainedWeights<'_> {
    /// Number of weights.
    pub fn len(&self) -> usize {
        match self {
            TrainedWeights::F32(w) => w.len(),
            TrainedWeights::I8(w) => w.len(),
        }
    }

    /// Whether there are none (a bias-only layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A trained layer's parameters in real units, to write back into a model
/// (`export::patch_model`, with `alloc`) or to compare with the model's own.
#[derive(Debug, Clone, Copy)]
pub struct TrainedLayer<'t> {
    /// The op's position in the model.
    pub op: usize,
    /// Input features.
    pub inputs: usize,
    /// Output channels.
    pub outputs: usize,
    /// Which weight rows `weights` holds.
    pub rows: TrainedRows<'t>,
    /// The trained weight rows, `[rows][inputs]`.
    pub weights: TrainedWeights<'t>,
    /// The trained bias `[outputs]`, if the bias was trained.
    pub bias: Option<&'t [f32]>,
}

/// The fixed prefix of a checkpoint payload: what a trainer needs to match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CheckpointShape {
    /// Trained parameters.
    pub params: usize,
    /// Optimizer values per parameter (0 plain SGD, 1 SGD with momentum, 2 Adam).
    pub moments: usize,
    /// Updates applied when it was saved.
    pub updates: u32,
}

impl CheckpointShape {
    /// Reads the prefix of a payload [`Trainer::checkpoint`] wrote.
    pub fn read(payload: &[u8]) -> Option<CheckpointShape> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                payload.get(4 * i..4 * i + 4)?.try_into().ok()?,
            ))
        };
        Some(CheckpointShape {
            params: word(0)? as usize,
            moments: word(1)? as usize,
            updates: word(2)?,
        })
    }
}

/// The [`TrainConfig::layers`] whose trained set has `params` parameters: 0 when the model's
/// stored training plan has that many, else the count of last layers (1 to
/// [`MAX_TRAINED_LAYERS`]) trained in full that do.
pub fn layers_for(model: &Model<'_>, params: usize) -> Option<usize> {
    (0..=MAX_TRAINED_LAYERS).find(|&n| Head::for_config(model, n).is_ok_and(|h| h.params == params))
}

/// Fine-tunes the last fully-connected layers of a model; see the module docs.
pub struct Trainer<'m, 'a, 's> {
    interpreter: Interpreter<'m, 'a>,
    head: Head<'m>,
    config: TrainConfig,
    state: &'s mut [f32],
    /// Samples accumulated since the last update.
    pending: u32,
    updates: u32,
    prefix: [u8; CHECKPOINT_PREFIX],
}

/// The state buffer split into its regions.
struct Parts<'s> {
    params: &'s mut [f32],
    moments: &'s mut [f32],
    grads: &'s mut [f32],
    activations: &'s mut [f32],
    delta: &'s mut [f32],
    previous_delta: &'s mut [f32],
}

impl<'m, 'a, 's> Trainer<'m, 'a, 's> {
    /// `f32`s of state that training `model` with `config` needs: parameters, optimizer
    /// moments, gradients, the head's activations and two gradient vectors.
    pub fn state_len(model: &Model<'_>, config: &TrainConfig) -> Result<usize, TrainError> {
        let head = Head::for_config(model, config.layers)?;
        Ok(Self::layout_len(&head, config))
    }

    fn layout_len(head: &Head, config: &TrainConfig) -> usize {
        head.param_slots
            + head.params * (1 + config.optimizer.moments())
            + head.activations
            + 2 * head.widest
    }

    /// Binds a model, its arena and a state buffer; initialises the trained parameters from
    /// the model's weights (dequantized when int8).
    pub fn new(
        model: &'m Model<'m>,
        arena: &'a mut [u8],
        state: &'s mut [f32],
        config: TrainConfig,
    ) -> Result<Self, TrainError> {
        if !config.optimizer.is_valid() {
            return Err(TrainError::InvalidConfig("optimizer hyperparameters"));
        }
        if config.accumulate == 0 {
            return Err(TrainError::InvalidConfig("accumulate must be at least 1"));
        }
        if config
            .clip_norm
            .is_some_and(|c| !(c.is_finite() && c > 0.0))
        {
            return Err(TrainError::InvalidConfig("clip_norm must be positive"));
        }
        let head = Head::for_config(model, config.layers)?;
        let required = Self::layout_len(&head, &config);
        if state.len() < required {
            return Err(TrainError::StateTooSmall {
                required,
                actual: state.len(),
            });
        }
        let interpreter = Interpreter::new(model, arena)?;
        let mut trainer = Trainer {
            interpreter,
            head,
            config,
            state: &mut state[..required],
            pending: 0,
            updates: 0,
            prefix: [0; CHECKPOINT_PREFIX],
        };
        trainer.reset()?;
        Ok(trainer)
    }

    /// Back to the model's own weights: parameters from the file, moments and gradients
    /// zero.
    pub fn reset(&mut self) -> Result<(), TrainError> {
        self.state.fill(0.0);
        self.pending = 0;
        self.updates = 0;
        for layer in self.head.layers() {
            let (params, _) = self.state.split_at_mut(self.head.param_slots);
            let n = layer.inputs;
            for (o, slot) in layer.row_slots().enumerate() {
                let Some(r) = slot else { continue };
                // The file's row (the trained one is not written yet).
                if layer.int8 {
                    layer.ram_i8_mut(params)[r * n..][..n].copy_from_slice(layer.flash_i8(o));
                } else {
                    let row = layer.row(o, None, &[]);
                    row.copy_to(&mut params[layer.params + r * n..][..n]);
                }
            }
            if layer.bias {
                for o in 0..layer.outputs {
                    params[layer.params + layer.weight_slots() + o] = layer.flash_bias(o);
                }
            }
        }
        Ok(())
    }

    /// The interpreter, to fill inputs of a model with several (then use
    /// [`Trainer::step_filled`]).
    pub fn interpreter_mut(&mut self) -> &mut Interpreter<'m, 'a> {
        &mut self.interpreter
    }

    /// Trains on one sample: `input` for graph input 0, and its target. Returns the loss
    /// before the update. The optimizer runs every [`TrainConfig::accumulate`] samples.
    pub fn step<T: Element>(&mut self, input: &[T], target: Target<'_>) -> Result<f32, TrainError> {
        self.fill(input)?;
        self.step_filled(target)
    }

    /// [`Trainer::step`] on inputs already written through [`Trainer::interpreter_mut`].
    pub fn step_filled(&mut self, target: Target<'_>) -> Result<f32, TrainError> {
        self.forward()?;
        let head = self.head;
        let config = self.config;
        let p = self.parts();
        let last = head.last();
        let output_at = head.activations - last.outputs;
        let loss = loss::loss_and_gradient(
            config.loss,
            &p.activations[output_at..],
            target,
            &mut p.delta[..last.outputs],
        )?;
        if !loss.is_finite() || p.delta[..last.outputs].iter().any(|d| !d.is_finite()) {
            return Err(TrainError::NonFinite);
        }
        backward(&head, p);
        self.pending += 1;
        if self.pending >= config.accumulate {
            self.apply_update()?;
        }
        Ok(loss)
    }

    /// The head's output (logits, before any softmax in the model) for `input`, computed
    /// with the current trained parameters.
    pub fn predict<T: Element>(&mut self, input: &[T]) -> Result<&[f32], TrainError> {
        self.fill(input)?;
        self.predict_filled()
    }

    /// [`Trainer::predict`] on inputs already written through [`Trainer::interpreter_mut`].
    pub fn predict_filled(&mut self) -> Result<&[f32], TrainError> {
        self.forward()?;
        let from = self.head.activations - self.head.last().outputs;
        Ok(&self.state[self.activations_at() + from..][..self.head.last().outputs])
    }

    /// The trained parameters as held: per layer, the trained weight rows (`f32`, or int8
    /// packed four to a value) then the bias.
    pub fn parameters(&self) -> &[f32] {
        &self.state[..self.head.param_slots]
    }

    /// The trained layers with their current parameters, in graph order (layers a plan
    /// keeps frozen left out).
    pub fn trained_layers(&self) -> impl Iterator<Item = TrainedLayer<'_>> + '_ {
        self.head
            .layers()
            .iter()
            .filter(|layer| layer.param_count() > 0)
            .map(|layer| {
                let params = &self.state[..self.head.param_slots];
                let bias = &params[layer.params + layer.weight_slots()..][..layer.bias_count()];
                let weights = if layer.int8 {
                    TrainedWeights::I8(layer.ram_i8(params))
                } else {
                    TrainedWeights::F32(&params[layer.params..][..layer.weight_count()])
                };
                TrainedLayer {
                    op: layer.op,
                    inputs: layer.inputs,
                    outputs: layer.outputs,
                    rows: match layer.update {
                        Update::Full => TrainedRows::All,
                        Update::Rows(list) => TrainedRows::Channels(list),
                        Update::Bias | Update::Frozen => TrainedRows::None,
                    },
                    weights,
                    bias: layer.bias.then_some(bias),
                }
            })
    }

    /// What the trainer updates per layer, in graph order: `(op, weight rows, bias trained)`.
    pub fn trained_set(&self) -> impl Iterator<Item = (usize, usize, bool)> + '_ {
        self.head
            .layers()
            .iter()
            .map(|layer| (layer.op, layer.rows, layer.bias))
    }

    /// Optimizer updates applied so far.
    pub fn updates(&self) -> u32 {
        self.updates
    }

    /// The checkpoint payload in two parts (a 16-byte prefix, then parameters and optimizer
    /// moments), for [`crate::store::CheckpointStore::save`] or a file. Samples accumulated
    /// but not yet applied are not part of it.
    pub fn checkpoint(&mut self) -> [&[u8]; 2] {
        let moments = self.config.optimizer.moments() as u32;
        let words = [self.head.params as u32, moments, self.updates, 0];
        for (chunk, w) in self.prefix.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        [
            &self.prefix,
            bytemuck::cast_slice(&self.state[..self.saved_len()]),
        ]
    }

    /// `f32` slots a checkpoint saves: the parameters and the optimizer moments.
    fn saved_len(&self) -> usize {
        self.head.param_slots + self.head.params * self.config.optimizer.moments()
    }

    /// Bytes of a checkpoint payload of this trainer.
    pub fn checkpoint_len(&self) -> usize {
        CHECKPOINT_PREFIX + 4 * self.saved_len()
    }

    /// Takes back parameters and moments from a payload [`Trainer::checkpoint`] wrote; the
    /// trainer is unchanged if the payload does not fit it.
    pub fn restore(&mut self, payload: &[u8]) -> Result<(), TrainError> {
        if payload.len() != self.checkpoint_len() {
            return Err(TrainError::BadCheckpoint);
        }
        let word = |i: usize| {
            u32::from_le_bytes([
                payload[4 * i],
                payload[4 * i + 1],
                payload[4 * i + 2],
                payload[4 * i + 3],
            ])
        };
        if word(0) as usize != self.head.params
            || word(1) as usize != self.config.optimizer.moments()
        {
            return Err(TrainError::BadCheckpoint);
        }
        let values = &payload[CHECKPOINT_PREFIX..];
        // Every f32 must be finite; int8 weight slots hold bytes, any of which are valid.
        let int8_slot = |i: usize| {
            self.head
                .layers()
                .iter()
                .any(|l| l.int8 && (l.params..l.params + l.weight_slots()).contains(&i))
        };
        if values.chunks_exact(4).enumerate().any(|(i, b)| {
            !int8_slot(i) && !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()
        }) {
            return Err(TrainError::BadCheckpoint);
        }
        for (v, b) in self.state.iter_mut().zip(values.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let grads_at = values.len() / 4;
        self.state[grads_at..grads_at + self.head.params].fill(0.0);
        self.updates = word(2);
        self.pending = 0;
        Ok(())
    }

    fn fill<T: Element>(&mut self, input: &[T]) -> Result<(), TrainError> {
        let slot = self.interpreter.input_mut::<T>(0)?;
        if slot.len() != input.len() {
            return Err(TrainError::Runtime(Error::ShapeMismatch {
                operand: crate::error::Operand::Input,
                expected: slot.len(),
                actual: input.len(),
            }));
        }
        slot.copy_from_slice(input);
        Ok(())
    }

    fn activations_at(&self) -> usize {
        self.head.param_slots + self.head.params * (1 + self.config.optimizer.moments())
    }

    fn parts(&mut self) -> Parts<'_> {
        let params = self.head.params;
        let moments = params * self.config.optimizer.moments();
        let (p, rest) = self.state.split_at_mut(self.head.param_slots);
        let (m, rest) = rest.split_at_mut(moments);
        let (g, rest) = rest.split_at_mut(params);
        let (a, rest) = rest.split_at_mut(self.head.activations);
        let (d, pd) = rest.split_at_mut(self.head.widest);
        Parts {
            params: p,
            moments: m,
            grads: g,
            activations: a,
            delta: d,
            previous_delta: pd,
        }
    }

    /// Runs the frozen ops, dequantizes the boundary, then the head in f32.
    fn forward(&mut self) -> Result<(), TrainError> {
        let first = *self.head.first();
        self.interpreter.invoke_ops(0..first.op)?;
        let model = self.interpreter.model();
        let record = model.op(first.op).ok_or(Error::CorruptModel)?;
        let boundary: TensorRecord<'_> = record
            .inputs
            .get(0)
            .and_then(|t| model.tensor(usize::from(t)))
            .ok_or(Error::CorruptModel)?;
        let head = self.head;
        let at = self.activations_at();
        let bytes = self.interpreter.tensor_bytes(&boundary)?;
        let x = &mut self.state[at + first.activations..][..first.inputs];
        dequantize(&boundary, bytes, x)?;

        let p = self.parts();
        for layer in head.layers() {
            let (before, after) = p.activations.split_at_mut(layer.activations + layer.inputs);
            let input = &before[layer.activations..];
            let (pre, rest) = after.split_at_mut(layer.outputs);
            // Sequential sums in index order, as the portable reference kernel does (never a
            // fast path): the same on every target, which host/device parity needs.
            for ((o, slot), z) in layer.row_slots().enumerate().zip(pre.iter_mut()) {
                let mut acc = layer.row(o, slot, p.params).dot(input);
                acc += layer.bias_of(o, p.params);
                *z = acc;
            }
            // The next layer's input (or the head's output) follows right after.
            let next = &mut rest[..layer.outputs];
            for (y, &z) in next.iter_mut().zip(pre.iter()) {
                *y = z.max(layer.clamp.0).min(layer.clamp.1);
            }
        }
        Ok(())
    }

    fn apply_update(&mut self) -> Result<(), TrainError> {
        let config = self.config;
        let head = self.head;
        let step = self.updates.wrapping_add(1);
        let p = self.parts();
        let scale = 1.0 / config.accumulate as f32;
        p.grads.iter_mut().for_each(|g| *g *= scale);
        let norm = match config.clip_norm {
            Some(max) => optim::clip_by_norm(p.grads, max),
            None => libm::sqrtf(p.grads.iter().map(|g| g * g).sum::<f32>()),
        };
        if !norm.is_finite() {
            p.grads.fill(0.0);
            self.pending = 0;
            return Err(TrainError::NonFinite);
        }
        if head.param_slots == head.params {
            config.optimizer.update(p.params, p.grads, p.moments, step);
        } else {
            update_with_int8_weights(&head, &config.optimizer, step, p.params, p.grads, p.moments);
        }
        self.parts().grads.fill(0.0);
        self.pending = 0;
        self.updates = step;
        Ok(())
    }
}

/// The optimizer step when a plan keeps weights int8: `f32` parameters (biases) as
/// [`Optimizer::update`] does; an int8 weight moves by the optimizer's step on the real
/// weight divided by the row's scale, the same real step as an `f32` weight would take. For
/// SGD that is quantization-aware scaling (MCUNetV3): the int8 gradient `g * s` scaled by
/// `s^-2`; for Adam, whose step does not depend on the gradient's scale, it keeps the moments
/// in real units so the learning rate means the same as for `f32` weights. Then stochastic
/// rounding keyed by the step and the parameter's index, so a step smaller than one int8
/// step still moves the weight on average and every target rounds alike.
fn update_with_int8_weights(
    head: &Head<'_>,
    optimizer: &Optimizer,
    step: u32,
    params: &mut [f32],
    grads: &[f32],
    moments: &mut [f32],
) {
    let n = grads.len();
    let (first, second) = moments.split_at_mut(n.min(moments.len()));
    let prepared = optimizer.prepare(step);
    let mut delta =
        |i: usize, g: f32| optimizer.delta(&prepared, g, first.get_mut(i), second.get_mut(i));
    for layer in head.layers() {
        let weights = layer.weight_count();
        if layer.int8 {
            let q = layer.ram_i8_mut(params);
            for (o, slot) in layer.row_slots().enumerate() {
                let Some(r) = slot else { continue };
                let scale = layer.scale(o);
                let row = r * layer.inputs;
                for (j, q) in q[row..][..layer.inputs].iter_mut().enumerate() {
                    let i = layer.grads + row + j;
                    let moved = f32::from(*q) - delta(i, grads[i]) / scale;
                    *q = stochastic_round(moved, step, i as u32).clamp(-127.0, 127.0) as i8;
                }
            }
        } else {
            for k in 0..weights {
                let i = layer.grads + k;
                params[layer.params + k] -= delta(i, grads[i]);
            }
        }
        for k in 0..layer.bias_count() {
            let i = layer.grads + weights + k;
            params[layer.params + layer.weight_slots() + k] -= delta(i, grads[i]);
        }
    }
}

/// `x` rounded down or up with probability its distance from the other, the draw a hash of
/// `step` and `index` (SplitMix64's finalizer): reproducible on every target.
fn stochastic_round(x: f32, step: u32, index: u32) -> f32 {
    let mut z = (u64::from(step) << 32 | u64::from(index)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let draw = (z >> 40) as f32 / (1u64 << 24) as f32;
    let floor = libm::floorf(x);
    if draw < x - floor { floor + 1.0 } else { floor }
}

/// Backward through the head: gradients of every trained parameter accumulate into
/// `grads`, from `d loss / d output` in `delta`.
fn backward(head: &Head<'_>, p: Parts<'_>) {
    let Parts {
        params,
        grads,
        activations,
        mut delta,
        mut previous_delta,
        ..
    } = p;
    for (k, layer) in head.layers().iter().enumerate().rev() {
        let x = &activations[layer.activations..][..layer.inputs];
        let z = &activations[layer.activations + layer.inputs..][..layer.outputs];
        let d = &mut delta[..layer.outputs];
        // Through the clamp: zero where it cut the value.
        for (d, &z) in d.iter_mut().zip(z) {
            if !(z > layer.clamp.0 && z < layer.clamp.1) {
                *d = 0.0;
            }
        }
        let (gw, gb) =
            grads[layer.grads..][..layer.param_count()].split_at_mut(layer.weight_count());
        for ((o, &d), slot) in d.iter().enumerate().zip(layer.row_slots()) {
            if layer.bias {
                gb[o] += d;
            }
            if let Some(r) = slot {
                for (g, &x) in gw[r * layer.inputs..][..layer.inputs].iter_mut().zip(x) {
                    *g += d * x;
                }
            }
        }
        if k > 0 {
            let prev = &mut previous_delta[..layer.inputs];
            prev.fill(0.0);
            for ((o, &d), slot) in d.iter().enumerate().zip(layer.row_slots()) {
                layer.row(o, slot, params).add_scaled(d, prev);
            }
            core::mem::swap(&mut delta, &mut previous_delta);
        }
    }
}

/// The boundary tensor in real units.
fn dequantize(tensor: &TensorRecord<'_>, bytes: &[u8], out: &mut [f32]) -> Result<(), TrainError> {
    match (tensor.dtype, tensor.quantization) {
        (DType::F32, _) => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        (DType::I8, Quantization::PerTensor { scale, zero_point }) => {
            for (v, &q) in out.iter_mut().zip(bytes) {
                *v = scale * (i32::from(q as i8) - zero_point) as f32;
            }
        }
        (DType::I16, Quantization::PerTensor { scale, zero_point }) => {
            for (v, q) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = scale * (i32::from(i16::from_le_bytes([q[0], q[1]])) - zero_point) as f32;
            }
        }
        _ => {
            return Err(TrainError::NoTrainableHead(
                "the first trained layer's input is neither f32 nor per-tensor int8 or int16",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
