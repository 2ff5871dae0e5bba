//! Bringing what a device learned home: trained parameters written back into a copy of the
//! `.loam` file, so the fleet's learning can be deployed, inspected or exported to ONNX.
//!
//! Everything a trained layer changes has a fixed size in the file (weights, bias, and for
//! int8 layers the per-channel scales and requantization multipliers, all in the weight
//! blob), so the update is a patch of the blob and a new checksum: the graph, the memory plan
//! and the arena size stay exactly as they were.

use alloc::vec::Vec;

use super::{TrainError, TrainedLayer, TrainedRows, TrainedWeights};
use crate::error::Error;
use crate::format::{AlignedBytes, CRC_OFFSET, Model, Storage, TensorRecord, checksum};
use crate::quant::{layer_multipliers, quantize_bias, symmetric_scale};
use crate::tensor::{DType, Quantization};

/// What writing one trained layer back did.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChange {
    /// The op's position.
    pub op: usize,
    /// Parameters trained (weight rows and bias).
    pub params: usize,
    /// Largest absolute change of a parameter, against the model's own (dequantized) values.
    pub max_change: f32,
    /// RMS of the change over RMS of the original parameters.
    pub relative_change: f32,
    /// Share of the layer's parameters that moved by more than 1% of its largest magnitude.
    pub moved: f32,
    /// Largest error the file's encoding adds (int8 requantization; 0 for f32 layers).
    pub encoding_error: f32,
}

/// A copy of `model_bytes` with `layers` written in; with the change per layer. The copy
/// loads with [`Model::from_bytes`] (checked before it is returned).
pub fn patch_model<'t>(
    model_bytes: &[u8],
    layers: impl IntoIterator<Item = TrainedLayer<'t>>,
) -> Result<(Vec<u8>, Vec<LayerChange>), TrainError> {
    let original = AlignedBytes::new(model_bytes);
    let model =
        Model::from_bytes(&original).map_err(|_| TrainError::Runtime(Error::CorruptModel))?;
    let file_len = model.file_bytes().len();
    let blob_at = model.preamble().blob_offset as usize;
    let mut out = model_bytes[..file_len].to_vec();
    let mut changes = Vec::new();
    for layer in layers {
        changes.push(patch_layer(&model, blob_at, &mut out, &layer)?);
    }
    let crc = checksum(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    Model::from_bytes(&AlignedBytes::new(&out))
        .map_err(|_| TrainError::Runtime(Error::CorruptModel))?;
    Ok((out, changes))
}

/// The byte range of a constant tensor in the file.
fn range(blob_at: usize, t: &TensorRecord<'_>) -> Result<core::ops::Range<usize>, TrainError> {
    match t.storage {
        Storage::Constant { offset } => {
            let start = blob_at + offset as usize;
            Ok(start..start + t.byte_len().ok_or(Error::CorruptModel)?)
        }
        Storage::Arena { .. } => Err(TrainError::NoTrainableHead(
            "a trained layer's weights are not constant",
        )),
    }
}

/// Writes `values` over the file bytes `at` (in the file's little-endian order, which is the
/// target's: the crate refuses big-endian targets).
fn write_le<T: bytemuck::Pod>(out: &mut [u8], at: core::ops::Range<usize>, values: &[T]) {
    for (o, v) in out[at]
        .iter_mut()
        .zip(bytemuck::cast_slice::<T, u8>(values))
    {
        *o = *v;
    }
}

fn patch_layer(
    model: &Model<'_>,
    blob_at: usize,
    out: &mut [u8],
    layer: &TrainedLayer<'_>,
) -> Result<LayerChange, TrainError> {
    let corrupt = TrainError::Runtime(Error::CorruptModel);
    let record = model.op(layer.op).ok_or(corrupt)?;
    let node = crate::ops::Node::new(model, record);
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    // The model was validated when it loaded: a missing operand means it changed since.
    let operand = |_| corrupt;
    let weights = node.input(1).map_err(operand)?.record;
    let bias = node
        .optional_input(2)
        .map_err(operand)?
        .map(|b| b.record)
        .filter(|t| t.is_constant());
    if weights.shape.elements() != Some(inputs * outputs) {
        return Err(TrainError::BadCheckpoint);
    }
    // Which rows the layer trained, and where each sits in `layer.weights`.
    let mut slot: Vec<Option<usize>> = alloc::vec![None; outputs];
    match layer.rows {
        TrainedRows::All => slot.iter_mut().enumerate().for_each(|(o, s)| *s = Some(o)),
        TrainedRows::None => {}
        TrainedRows::Channels(list) => {
            for (r, c) in list.iter().enumerate() {
                *slot
                    .get_mut(usize::from(c))
                    .ok_or(TrainError::BadCheckpoint)? = Some(r);
            }
        }
    }
    let trained_rows = slot.iter().flatten().count();
    if layer.weights.len() != trained_rows * inputs
        || layer.bias.is_some_and(|b| b.len() != outputs)
    {
        return Err(TrainError::BadCheckpoint);
    }
    // The model's own parameters, to measure the change, and the trained ones over them.
    let mut before = alloc::vec![0f32; inputs * outputs + outputs];
    {
        let (w, b) = before.split_at_mut(inputs * outputs);
        load_layer(&node, w, b)?;
    }
    // Trained int8 rows on the file's scales: written back as they are, exactly.
    let scale_of = |o: usize| -> Result<f32, TrainError> {
        match weights.quantization {
            Quantization::PerChannel { .. } => model
                .channel_scales(&weights)
                .and_then(|s| s.get(o).copied())
                .ok_or(corrupt),
            q => q.scale().ok_or(corrupt),
        }
    };
    let mut trained = before.clone();
    for (o, s) in slot.iter().enumerate() {
        if let Some(r) = s {
            let row = &mut trained[o * inputs..][..inputs];
            match layer.weights {
                TrainedWeights::F32(w) => row.copy_from_slice(&w[r * inputs..][..inputs]),
                TrainedWeights::I8(q) => {
                    let scale = scale_of(o)?;
                    for (v, &q) in row.iter_mut().zip(&q[r * inputs..][..inputs]) {
                        *v = scale * f32::from(q);
                    }
                }
            }
        }
    }
    if let Some(b) = layer.bias {
        trained[inputs * outputs..].copy_from_slice(b);
        if bias.is_none() && b.iter().any(|&b| b != 0.0) {
            return Err(TrainError::NoTrainableHead(
                "a trained layer has no bias tensor to hold its trained bias",
            ));
        }
    }
    let (new_weights, new_bias) = trained.split_at(inputs * outputs);
    let mut encoding_error = 0.0f32;
    match weights.dtype {
        DType::F32 => {
            write_le(out, range(blob_at, &weights)?, new_weights);
            if let Some(b) = &bias {
                write_le(out, range(blob_at, b)?, new_bias);
            }
        }
        DType::I8 => {
            let input = node.input(0).map_err(operand)?.record;
            let output = node.output(0).map_err(operand)?.record;
            let (Some(in_scale), Some(out_scale)) =
                (input.quantization.scale(), output.quantization.scale())
            else {
                return Err(corrupt);
            };
            // Per-channel layers get fresh scales for the trained rows' range; a per-tensor
            // layer keeps its scale (it lives in the header) and clamps. Rows not trained keep
            // their scale and bytes exactly.
            let scales: Vec<f32> = match weights.quantization {
                Quantization::PerChannel { scales_offset, .. } => {
                    let old = model.channel_scales(&weights).ok_or(corrupt)?;
                    let scales: Vec<f32> = new_weights
                        .chunks(inputs.max(1))
                        .zip(&slot)
                        .zip(old)
                        .map(|((row, s), &old)| match s {
                            Some(_) if matches!(layer.weights, TrainedWeights::F32(_)) => {
                                symmetric_scale(row.iter().fold(0.0f32, |m, w| m.max(w.abs())))
                            }
                            _ => old,
                        })
                        .collect();
                    let at = blob_at + scales_offset as usize;
                    write_le(out, at..at + 4 * scales.len(), &scales);
                    scales
                }
                Quantization::PerTensor { scale, .. } => alloc::vec![scale; outputs],
                _ => return Err(corrupt),
            };
            let at = range(blob_at, &weights)?;
            for (o, s) in slot.iter().enumerate() {
                let Some(r) = s else { continue };
                if let TrainedWeights::I8(q) = layer.weights {
                    // Kept int8 on these scales while training: the bytes themselves.
                    let bytes = &mut out[at.start + o * inputs..][..inputs];
                    for (b, &q) in bytes.iter_mut().zip(&q[r * inputs..][..inputs]) {
                        *b = q as u8;
                    }
                    continue;
                }
                let scale = scales[o];
                let row = &new_weights[o * inputs..][..inputs];
                for (byte, &w) in out[at.start + o * inputs..][..inputs].iter_mut().zip(row) {
                    let q = libm::roundf(w / scale).clamp(-127.0, 127.0);
                    encoding_error = encoding_error.max((q * scale - w).abs());
                    *byte = q as i8 as u8;
                }
            }
            if let Some(b) = &bias {
                let qb = quantize_bias(new_bias, in_scale, &scales);
                write_le(out, range(blob_at, b)?, &qb);
            }
            let multipliers = node.input(3).map_err(operand)?.record;
            if multipliers.shape.elements() == Some(2 * outputs) {
                let m = layer_multipliers(in_scale, &scales, out_scale);
                write_le(out, range(blob_at, &multipliers)?, &m);
            }
        }
        _ => {
            return Err(TrainError::NoTrainableHead(
                "weights are neither f32 nor int8",
            ));
        }
    }
    let max_abs = before
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let (mut change2, mut base2, mut max_change, mut moved) = (0.0f64, 0.0f64, 0.0f32, 0usize);
    for (&a, &b) in before.iter().zip(&trained) {
        let d = b - a;
        change2 += f64::from(d) * f64::from(d);
        base2 += f64::from(a) * f64::from(a);
        max_change = max_change.max(d.abs());
        moved += usize::from(d.abs() > 0.01 * max_abs);
    }
    Ok(LayerChange {
        op: layer.op,
        params: layer.weights.len() + layer.bias.map_or(0, <[f32]>::len),
        max_change,
        relative_change: libm::sqrt(change2 / base2.max(f64::MIN_POSITIVE)) as f32,
        moved: moved as f32 / trained.len().max(1) as f32,
        encoding_error,
    })
}

/// A trained layer's weights and bias in real units.
fn load_layer(node: &crate::ops::Node<'_>, w: &mut [f32], b: &mut [f32]) -> Result<(), TrainError> {
    let corrupt = |_| TrainError::Runtime(Error::CorruptModel);
    let model = node.model;
    let weights = node.input(1).map_err(corrupt)?;
    let bias = node.optional_input(2).map_err(corrupt)?;
    match weights.record.dtype {
        DType::F32 => {
            w.copy_from_slice(node.constant::<f32>(&weights).map_err(corrupt)?);
            match bias {
                Some(bias) => b.copy_from_slice(node.constant::<f32>(&bias).map_err(corrupt)?),
                None => b.fill(0.0),
            }
        }
        DType::I8 => {
            let q = node.constant::<i8>(&weights).map_err(corrupt)?;
            let per_tensor = weights.record.quantization.scale();
            let channel_scales = model.channel_scales(&weights.record);
            let input_scale = node
                .input(0)
                .map_err(corrupt)?
                .record
                .quantization
                .scale()
                .ok_or(TrainError::Runtime(Error::CorruptModel))?;
            let scale = |o: usize| -> Result<f32, TrainError> {
                channel_scales
                    .and_then(|s| s.get(o).copied())
                    .or(per_tensor)
                    .ok_or(TrainError::Runtime(Error::CorruptModel))
            };
            let inputs = w.len() / b.len().max(1);
            for (o, row) in w.chunks_exact_mut(inputs.max(1)).enumerate() {
                let s = scale(o)?;
                for (v, &q) in row.iter_mut().zip(&q[o * inputs..]) {
                    *v = s * f32::from(q);
                }
            }
            match bias {
                Some(bias) => {
                    let q = node.constant::<i32>(&bias).map_err(corrupt)?;
                    for (o, (v, &q)) in b.iter_mut().zip(q).enumerate() {
                        *v = q as f32 * input_scale * scale(o)?;
                    }
                }
                None => b.fill(0.0),
            }
        }
        _ => {
            return Err(TrainError::NoTrainableHead(
                "weights are neither f32 nor int8",
            ));
        }
    }
    Ok(())
}

/// A fully-connected layer that on-device training can reach, for the tools that choose a
/// training plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayer {
    /// The op's position.
    pub op: usize,
    /// Input features.
    pub inputs: usize,
    /// Output channels.
    pub outputs: usize,
    /// Whether the file has a bias tensor for it (a trained bias needs one).
    pub has_bias: bool,
}

/// The model's last fully-connected layers a trainer can train (at most
/// [`super::MAX_TRAINED_LAYERS`]), in graph order; empty when the model does not end in one.
pub fn head_layers(model: &Model<'_>) -> Vec<HeadLayer> {
    (1..=super::MAX_TRAINED_LAYERS)
        .rev()
        .find_map(|n| super::Head::find(model, n).ok())
        .map(|head| {
            head.layers()
                .iter()
                .map(|l| HeadLayer {
                    op: l.op,
                    inputs: l.inputs,
                    outputs: l.outputs,
                    has_bias: l.has_bias,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A fully-connected layer's weights `[outputs][inputs]` and bias in real units, as the
/// trainer starts from them.
pub fn layer_parameters(model: &Model<'_>, op: usize) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    let corrupt = TrainError::Runtime(Error::CorruptModel);
    let record = model.op(op).ok_or(corrupt)?;
    let node = crate::ops::Node::new(model, record);
    let weights = node.input(1).map_err(|_| corrupt)?;
    let (outputs, inputs) = (weights.dim(0), weights.dim(1));
    let mut w = alloc::vec![0f32; outputs * inputs];
    let mut b = alloc::vec![0f32; outputs];
    load_layer(&node, &mut w, &mut b)?;
    Ok((w, b))
}
