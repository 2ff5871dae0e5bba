//! Bringing what a device learned home: trained parameters written back into a copy of the
//! `.loam` file, so the fleet's learning can be deployed, inspected or exported to ONNX.
//!
//! Everything a trained layer changes has a fixed size in the file (weights, bias, and for
//! int8 layers the per-channel scales and requantization multipliers, all in the weight
//! blob), so the update is a patch of the blob and a new checksum: the graph, the memory plan
//! and the arena size stay exactly as they were.

use alloc::vec::Vec;

use super::{TrainError, TrainedLayer};
use crate::error::Error;
use crate::format::{AlignedBytes, CRC_OFFSET, Model, Storage, TensorRecord, checksum};
use crate::quant::{layer_multipliers, quantize_bias, symmetric_scale};
use crate::tensor::{DType, Quantization};

/// What writing one trained layer back did.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChange {
    /// The op's position.
    pub op: usize,
    /// Parameters (weights and bias).
    pub params: usize,
    /// Largest absolute change of a parameter, against the model's own (dequantized) values.
    pub max_change: f32,
    /// RMS of the change over RMS of the original parameters.
    pub relative_change: f32,
    /// Share of parameters that moved by more than 1% of the layer's largest magnitude.
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
    let node = crate::ops::Node { model, record };
    let outputs = layer.bias.len();
    // The model was validated when it loaded: a missing operand means it changed since.
    let operand = |_| corrupt;
    let weights = node.input(1).map_err(operand)?.record;
    let bias = node
        .optional_input(2)
        .map_err(operand)?
        .map(|b| b.record)
        .filter(|t| t.is_constant());
    if weights.shape.elements() != Some(layer.weights.len()) {
        return Err(TrainError::BadCheckpoint);
    }
    // The model's own parameters, to measure the change.
    let mut before = alloc::vec![0f32; layer.weights.len() + outputs];
    {
        let (w, b) = before.split_at_mut(layer.weights.len());
        super::load_layer(&node, w, b)?;
    }
    if bias.is_none() && layer.bias.iter().any(|&b| b != 0.0) {
        return Err(TrainError::NoTrainableHead(
            "a trained layer has no bias tensor to hold its trained bias",
        ));
    }
    let trained: Vec<f32> = layer.weights.iter().chain(layer.bias).copied().collect();
    let mut encoding_error = 0.0f32;
    match weights.dtype {
        DType::F32 => {
            write_le(out, range(blob_at, &weights)?, layer.weights);
            if let Some(b) = &bias {
                write_le(out, range(blob_at, b)?, layer.bias);
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
            let inputs = layer.inputs.max(1);
            // Per-channel layers get fresh scales for the trained range; a per-tensor layer
            // keeps its scale (it lives in the header) and clamps.
            let scales: Vec<f32> = match weights.quantization {
                Quantization::PerChannel { scales_offset, .. } => {
                    let scales: Vec<f32> = layer
                        .weights
                        .chunks(inputs)
                        .map(|row| symmetric_scale(row.iter().fold(0.0f32, |m, w| m.max(w.abs()))))
                        .collect();
                    let at = blob_at + scales_offset as usize;
                    write_le(out, at..at + 4 * scales.len(), &scales);
                    scales
                }
                Quantization::PerTensor { scale, .. } => alloc::vec![scale; outputs],
                _ => return Err(corrupt),
            };
            let q: Vec<u8> = layer
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let s = scales[i / inputs];
                    let q = libm::roundf(w / s).clamp(-127.0, 127.0);
                    encoding_error = encoding_error.max((q * s - w).abs());
                    q as i8 as u8
                })
                .collect();
            out[range(blob_at, &weights)?].copy_from_slice(&q);
            if let Some(b) = &bias {
                let qb = quantize_bias(layer.bias, in_scale, &scales);
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
        params: trained.len(),
        max_change,
        relative_change: libm::sqrt(change2 / base2.max(f64::MIN_POSITIVE)) as f32,
        moved: moved as f32 / trained.len().max(1) as f32,
        encoding_error,
    })
}
