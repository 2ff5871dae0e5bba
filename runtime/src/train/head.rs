//! The trained head: the model's last fully-connected layers, what training updates in each
//! (everything, the bias, chosen weight rows, or nothing), and where each layer's weights and
//! bias are read from: the trainer's state for what it updates, the model's flash for the
//! rest, so a frozen row costs no RAM.

use super::{MAX_TRAINED_LAYERS, TrainError};
use crate::error::Error;
use crate::format::{ChannelIds, LayerUpdate, Model, WeightStorage};
use crate::ops::fully_connected::FullyConnectedAttributes;
use crate::ops::{Node, OpKind};
use crate::tensor::DType;

/// What training updates in one layer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum Update<'m> {
    /// Weights and bias.
    #[default]
    Full,
    /// Nothing; the layer only passes gradients back.
    Frozen,
    /// The bias.
    Bias,
    /// The weight rows of these output channels, and the bias.
    Rows(ChannelIds<'m>),
}

/// A layer's frozen weights as the file stores them.
#[derive(Debug, Clone, Copy)]
enum FlashWeights<'m> {
    F32(&'m [f32]),
    /// int8 values and their scale per output channel (or one for all).
    I8(&'m [i8], Scales<'m>),
}

impl Default for FlashWeights<'_> {
    fn default() -> Self {
        FlashWeights::F32(&[])
    }
}

#[derive(Debug, Clone, Copy)]
enum Scales<'m> {
    PerChannel(&'m [f32]),
    PerTensor(f32),
}

impl Scales<'_> {
    fn get(&self, channel: usize) -> f32 {
        match self {
            Scales::PerChannel(s) => s[channel],
            Scales::PerTensor(s) => *s,
        }
    }
}

/// A layer's bias as the file stores it.
#[derive(Debug, Clone, Copy, Default)]
enum FlashBias<'m> {
    #[default]
    None,
    F32(&'m [f32]),
    /// int32 values in units of input scale times weight scale.
    I32(&'m [i32], f32),
}

/// One weight row, wherever it lives.
#[derive(Clone, Copy)]
pub(super) enum Row<'a> {
    Ram(&'a [f32]),
    F32(&'a [f32]),
    I8(&'a [i8], f32),
}

impl Row<'_> {
    /// The row's dot product with `x`, summed in index order (as the reference kernel does,
    /// which host/device parity needs).
    pub(super) fn dot(&self, x: &[f32]) -> f32 {
        let mut acc = 0.0f32;
        match self {
            Row::Ram(w) | Row::F32(w) => {
                for (&x, &w) in x.iter().zip(w.iter()) {
                    acc += x * w;
                }
            }
            Row::I8(q, s) => {
                for (&x, &q) in x.iter().zip(q.iter()) {
                    acc += x * (s * f32::from(q));
                }
            }
        }
        acc
    }

    /// `out[i] += w[i] * d`.
    pub(super) fn add_scaled(&self, d: f32, out: &mut [f32]) {
        match self {
            Row::Ram(w) | Row::F32(w) => {
                for (o, &w) in out.iter_mut().zip(w.iter()) {
                    *o += w * d;
                }
            }
            Row::I8(q, s) => {
                for (o, &q) in out.iter_mut().zip(q.iter()) {
                    *o += (s * f32::from(q)) * d;
                }
            }
        }
    }

    /// Writes the row in real units.
    pub(super) fn copy_to(&self, out: &mut [f32]) {
        match self {
            Row::Ram(w) | Row::F32(w) => out.copy_from_slice(&w[..out.len()]),
            Row::I8(q, s) => {
                for (o, &q) in out.iter_mut().zip(q.iter()) {
                    *o = s * f32::from(q);
                }
            }
        }
    }
}

/// One layer of the head; offsets count `f32`s in their region of the state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Layer<'m> {
    pub op: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub clamp: (f32, f32),
    pub update: Update<'m>,
    /// Weight rows held in the parameters.
    pub rows: usize,
    /// Whether the bias is held in the parameters.
    pub bias: bool,
    /// Whether the trained weight rows are held as int8 (packed four to an `f32` slot).
    pub int8: bool,
    /// Trained weight rows (`rows x inputs`, `f32` or packed int8), then the bias if trained,
    /// in the parameter slots.
    pub params: usize,
    /// The same parameters' gradients (one `f32` each, weights then bias), in the gradients
    /// and in each optimizer moment.
    pub grads: usize,
    /// The layer's input, then its pre-activation output, in the activations.
    pub activations: usize,
    weights: FlashWeights<'m>,
    flash_bias: FlashBias<'m>,
    /// Whether the file has a bias tensor (a trained bias is written back into it).
    pub has_bias: bool,
}

impl<'m> Layer<'m> {
    /// Trained weights.
    pub fn weight_count(&self) -> usize {
        self.rows * self.inputs
    }

    /// Trained weights and bias.
    pub fn param_count(&self) -> usize {
        self.weight_count() + self.bias_count()
    }

    /// Trained biases.
    pub fn bias_count(&self) -> usize {
        if self.bias { self.outputs } else { 0 }
    }

    /// `f32` slots the trained weights take.
    pub fn weight_slots(&self) -> usize {
        if self.int8 {
            self.weight_count().div_ceil(4)
        } else {
            self.weight_count()
        }
    }

    /// `f32` slots the trained weights and bias take.
    pub fn param_slots(&self) -> usize {
        self.weight_slots() + self.bias_count()
    }

    /// The scale of output channel `o`'s int8 weights (1 for an `f32` layer).
    pub fn scale(&self, o: usize) -> f32 {
        match self.weights {
            FlashWeights::I8(_, s) => s.get(o),
            FlashWeights::F32(_) => 1.0,
        }
    }

    /// The trained int8 weight rows of an int8 layer, in the parameter slots.
    pub fn ram_i8<'a>(&self, params: &'a [f32]) -> &'a [i8] {
        let bytes: &[i8] = bytemuck::cast_slice(&params[self.params..][..self.weight_slots()]);
        &bytes[..self.weight_count()]
    }

    /// [`Layer::ram_i8`], to write.
    pub fn ram_i8_mut<'a>(&self, params: &'a mut [f32]) -> &'a mut [i8] {
        let bytes: &mut [i8] =
            bytemuck::cast_slice_mut(&mut params[self.params..][..self.weight_slots()]);
        &mut bytes[..self.weight_count()]
    }

    /// Output channel `o`'s int8 row as the file stores it (int8 layers only).
    pub fn flash_i8(&self, o: usize) -> &'m [i8] {
        match self.weights {
            FlashWeights::I8(q, _) => &q[o * self.inputs..][..self.inputs],
            FlashWeights::F32(_) => &[],
        }
    }

    /// For each output channel in order, the index of its row among the trained rows, or
    /// `None` when the row stays in flash.
    pub fn row_slots(&self) -> RowSlots<'m> {
        RowSlots {
            update: self.update,
            channel: 0,
            next_listed: 0,
            outputs: self.outputs,
        }
    }

    /// Output channel `o`'s weights: `params` holds the trained rows (at this layer's
    /// offset), `slot` is `o`'s entry of [`Layer::row_slots`].
    pub fn row<'a>(&self, o: usize, slot: Option<usize>, params: &'a [f32]) -> Row<'a>
    where
        'm: 'a,
    {
        let n = self.inputs;
        match (slot, self.weights) {
            (Some(r), _) if self.int8 => Row::I8(&self.ram_i8(params)[r * n..][..n], self.scale(o)),
            (Some(r), _) => Row::Ram(&params[self.params + r * n..][..n]),
            (None, FlashWeights::F32(w)) => Row::F32(&w[o * n..][..n]),
            (None, FlashWeights::I8(q, scales)) => Row::I8(&q[o * n..][..n], scales.get(o)),
        }
    }

    /// Output channel `o`'s bias in real units.
    pub fn bias_of(&self, o: usize, params: &[f32]) -> f32 {
        if self.bias {
            return params[self.params + self.weight_slots() + o];
        }
        self.flash_bias(o)
    }

    /// The bias the file stores for channel `o`, in real units (as `load_layer` computes it).
    pub fn flash_bias(&self, o: usize) -> f32 {
        match self.flash_bias {
            FlashBias::None => 0.0,
            FlashBias::F32(b) => b[o],
            FlashBias::I32(q, input_scale) => q[o] as f32 * input_scale * self.scale(o),
        }
    }
}

/// See [`Layer::row_slots`].
pub(super) struct RowSlots<'m> {
    update: Update<'m>,
    channel: usize,
    /// Position in the channel list of the next listed channel.
    next_listed: usize,
    outputs: usize,
}

impl Iterator for RowSlots<'_> {
    type Item = Option<usize>;

    fn next(&mut self) -> Option<Option<usize>> {
        if self.channel >= self.outputs {
            return None;
        }
        let o = self.channel;
        self.channel += 1;
        Some(match self.update {
            Update::Full => Some(o),
            Update::Frozen | Update::Bias => None,
            Update::Rows(list) => {
                // The list is strictly increasing (checked at load): one cursor suffices.
                if list.get(self.next_listed) == Some(o as u16) {
                    self.next_listed += 1;
                    Some(self.next_listed - 1)
                } else {
                    None
                }
            }
        })
    }
}

/// The trained layers of a model and the sizes of the state they need.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head<'m> {
    layers: [Layer<'m>; MAX_TRAINED_LAYERS],
    pub count: usize,
    /// Trained parameters (one gradient each).
    pub params: usize,
    /// `f32` slots the parameters take (fewer than `params` with int8 weights).
    pub param_slots: usize,
    pub activations: usize,
    pub widest: usize,
}

impl<'m> Head<'m> {
    pub fn layers(&self) -> &[Layer<'m>] {
        &self.layers[..self.count]
    }

    pub fn last(&self) -> &Layer<'m> {
        &self.layers[self.count - 1]
    }

    pub fn first(&self) -> &Layer<'m> {
        &self.layers[0]
    }

    /// What a [`super::TrainConfig`] with `layers` trains: the model's stored plan for 0,
    /// else everything in the last `layers` fully-connected layers.
    pub fn for_config(model: &'m Model<'m>, layers: usize) -> Result<Head<'m>, TrainError> {
        if layers != 0 {
            return Self::find(model, layers);
        }
        let plan = model.training_plan().ok_or(TrainError::NoTrainableHead(
            "the model stores no training plan (write one with `loam export --trainable`)",
        ))?;
        let mut head = Self::find(model, plan.len())?;
        let int8 = plan.weights == WeightStorage::Int8;
        for (i, layer) in head.layers[..head.count].iter_mut().enumerate() {
            if int8 && !matches!(layer.weights, FlashWeights::I8(..)) {
                return Err(TrainError::NoTrainableHead(
                    "the training plan keeps weights int8, but a layer's weights are not int8",
                ));
            }
            layer.int8 = int8;
            let record = plan.layer(i).ok_or(Error::CorruptModel)?;
            if record.op as usize != layer.op {
                return Err(TrainError::NoTrainableHead(
                    "the training plan's layers are not the model's last fully-connected layers",
                ));
            }
            if matches!(record.update, LayerUpdate::Bias) && !layer.has_bias {
                return Err(TrainError::NoTrainableHead(
                    "the training plan trains the bias of a layer that has none",
                ));
            }
            layer.update = match record.update {
                LayerUpdate::Full => Update::Full,
                LayerUpdate::Frozen => Update::Frozen,
                LayerUpdate::Bias => Update::Bias,
                LayerUpdate::Channels(list) => Update::Rows(list),
            };
        }
        head.lay_out();
        Ok(head)
    }

    /// Finds the last `count` fully-connected ops, chained output to input, after which only
    /// softmax, quantize, dequantize or reshape ops follow; everything in them is trained.
    pub fn find(model: &'m Model<'m>, count: usize) -> Result<Head<'m>, TrainError> {
        if count == 0 || count > MAX_TRAINED_LAYERS {
            return Err(TrainError::InvalidConfig(
                "layers must be between 1 and MAX_TRAINED_LAYERS",
            ));
        }
        let mut found = [Layer::default(); MAX_TRAINED_LAYERS];
        let mut n = 0;
        let mut next_input: Option<u16> = None;
        for index in (0..model.op_count()).rev() {
            let record = model.op(index).ok_or(Error::CorruptModel)?;
            let kind = OpKind::from_code(record.kind).ok_or(Error::CorruptModel)?;
            match kind {
                OpKind::Softmax
                | OpKind::LogSoftmax
                | OpKind::Quantize
                | OpKind::Dequantize
                | OpKind::Reshape
                    if n == 0 =>
                {
                    continue;
                }
                OpKind::FullyConnected => {}
                _ => {
                    return Err(TrainError::NoTrainableHead(
                        "an op other than FullyConnected sits among the layers to train",
                    ));
                }
            }
            if next_input.is_some() && next_input != record.outputs.get(0) {
                return Err(TrainError::NoTrainableHead(
                    "the fully-connected layers to train do not feed each other",
                ));
            }
            next_input = record.inputs.get(0);
            found[n] = Self::layer(model, Node::new(model, record), index)?;
            n += 1;
            if n == count {
                break;
            }
        }
        if n < count {
            return Err(TrainError::NoTrainableHead(
                "the model has fewer fully-connected layers than asked to train",
            ));
        }
        found[..n].reverse();
        let mut head = Head {
            layers: found,
            count: n,
            params: 0,
            param_slots: 0,
            activations: 0,
            widest: 0,
        };
        head.lay_out();
        Ok(head)
    }

    fn layer(model: &'m Model<'m>, node: Node<'m>, index: usize) -> Result<Layer<'m>, TrainError> {
        let corrupt = |_| TrainError::Runtime(Error::CorruptModel);
        let attributes: FullyConnectedAttributes = node.attributes().map_err(corrupt)?;
        let weights = node.input(1).map_err(corrupt)?;
        let (outputs, inputs) = (weights.dim(0), weights.dim(1));
        let input = node.input(0).map_err(corrupt)?;
        if input.elements() != inputs {
            return Err(TrainError::NoTrainableHead(
                "a layer to train has a batch dimension other than 1",
            ));
        }
        let bias = node.optional_input(2).map_err(corrupt)?;
        let (flash_weights, flash_bias) = match weights.record.dtype {
            DType::F32 => {
                let bias = match &bias {
                    Some(b) => FlashBias::F32(node.constant::<f32>(b).map_err(corrupt)?),
                    None => FlashBias::None,
                };
                (
                    FlashWeights::F32(node.constant::<f32>(&weights).map_err(corrupt)?),
                    bias,
                )
            }
            DType::I8 => {
                let scales = match model.channel_scales(&weights.record) {
                    Some(s) if s.len() == outputs => Scales::PerChannel(s),
                    _ => Scales::PerTensor(
                        weights
                            .record
                            .quantization
                            .scale()
                            .ok_or(TrainError::Runtime(Error::CorruptModel))?,
                    ),
                };
                let input_scale = input
                    .record
                    .quantization
                    .scale()
                    .ok_or(TrainError::Runtime(Error::CorruptModel))?;
                let bias = match &bias {
                    Some(b) => {
                        FlashBias::I32(node.constant::<i32>(b).map_err(corrupt)?, input_scale)
                    }
                    None => FlashBias::None,
                };
                (
                    FlashWeights::I8(node.constant::<i8>(&weights).map_err(corrupt)?, scales),
                    bias,
                )
            }
            _ => {
                return Err(TrainError::NoTrainableHead(
                    "a layer to train has weights that are neither f32 nor int8 (f16 layers \
                     run frozen; write the layers to train in f32)",
                ));
            }
        };
        Ok(Layer {
            op: index,
            inputs,
            outputs,
            clamp: (attributes.activation.min, attributes.activation.max),
            update: Update::Full,
            rows: 0,
            bias: false,
            int8: false,
            params: 0,
            grads: 0,
            activations: 0,
            weights: flash_weights,
            flash_bias,
            has_bias: bias.is_some(),
        })
    }

    /// Sizes and offsets from each layer's update.
    fn lay_out(&mut self) {
        self.params = 0;
        self.param_slots = 0;
        self.activations = 0;
        self.widest = 0;
        for layer in &mut self.layers[..self.count] {
            (layer.rows, layer.bias) = match layer.update {
                Update::Full => (layer.outputs, true),
                Update::Frozen => (0, false),
                Update::Bias => (0, true),
                Update::Rows(list) => (list.len(), true),
            };
            layer.params = self.param_slots;
            layer.grads = self.params;
            layer.activations = self.activations;
            self.params += layer.param_count();
            self.param_slots += layer.param_slots();
            self.activations += layer.inputs + layer.outputs;
            self.widest = self.widest.max(layer.inputs).max(layer.outputs);
        }
        // The head's output after the last activation.
        self.activations += self.last().outputs;
    }
}
