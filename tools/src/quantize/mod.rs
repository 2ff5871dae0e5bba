//! `loam quantize`: post-training static quantization of a float model with a choice of how
//! activation ranges are calibrated (min/max, percentile, or the range with the least
//! quantization error), and the error each layer then adds (SQNR), so a user sees which layer
//! hurts.
//!
//! Works on float `.loam` models made of the layers [`Graph`] describes (what `loam train`
//! writes, and imported models within that op set): the model is lifted back into a graph,
//! calibrated on sample inputs, and written as int8 by the same builder as every other int8
//! model.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use loam::format::TensorRecord;
use loam::ops::conv2d::{Conv2dAttributes, ConvSpec};
use loam::ops::depthwise_conv2d::DepthwiseConv2dAttributes;
use loam::ops::fully_connected::FullyConnectedAttributes;
use loam::ops::pool::Pool2dAttributes;
use loam::ops::{FusedActivation, OpKind};
use loam::quant::QuantParams;
use loam::{DType, Model};
use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Layer, Ranges};

pub mod half;
pub mod model;
mod probe;

pub use model::{
    ModelQuantizeOptions, ModelQuantizeReport, QuantizedModel, quantize_loam, quantize_onnx,
};

/// How activation ranges are chosen from calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile of the values at each end (e.g. 99.99), ignoring rare outliers.
    Percentile {
        /// Upper percentile; the lower one is `100 - p`.
        percentile: f32,
    },
    /// The range, shrunk from min/max, whose int8 rounding and clipping error (mean squared)
    /// over the calibration values is least.
    Mse,
}

impl std::fmt::Display for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Calibration::MinMax => f.write_str("min/max"),
            Calibration::Percentile { percentile } => write!(f, "percentile {percentile}"),
            Calibration::Mse => f.write_str("least squared error"),
        }
    }
}

/// A float constant's values; f16 weights are widened (exactly).
fn f32_values(model: &Model<'_>, t: &TensorRecord<'_>, what: &str) -> Result<Vec<f32>> {
    if !matches!(t.dtype, DType::F32 | DType::F16) {
        bail!(
            "{what} `{}` is {}, not f32 or f16: quantize a float model",
            t.name,
            t.dtype
        );
    }
    let bytes = model
        .constant_bytes(t)
        .with_context(|| format!("{what} `{}` is not a constant", t.name))?;
    Ok(if t.dtype == DType::F16 {
        bytes
            .chunks_exact(2)
            .map(|b| ::half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// Lifts a float `.loam` model back into a [`Graph`]; the error names the first op the graph
/// cannot express.
pub fn lift(model: &Model<'_>) -> Result<Graph> {
    let metadata = model.metadata();
    let tensor = |id: u16| {
        model
            .tensor(usize::from(id))
            .with_context(|| format!("tensor {id} out of range"))
    };
    let ids = |t: loam::format::TensorIds<'_>| -> Vec<u16> { t.iter().collect() };
    let inputs = ids(model.inputs());
    let &[input] = inputs.as_slice() else {
        bail!(
            "models with {} inputs cannot be quantized here (one input)",
            inputs.len()
        );
    };
    let input_record = tensor(input)?;
    if input_record.dtype != DType::F32 {
        bail!(
            "the model's input is {}: quantize a float model",
            input_record.dtype
        );
    }
    let mut layers = vec![Layer::Input {
        dims: input_record
            .shape
            .dims()
            .iter()
            .map(|&d| d as usize)
            .collect(),
    }];
    let mut layer_of: HashMap<u16, usize> = HashMap::from([(input, 0)]);
    for op in model.ops() {
        let kind = OpKind::from_code(op.kind).context("unknown op kind")?;
        let operands = ids(op.inputs);
        let outputs = ids(op.outputs);
        let &[output] = outputs.as_slice() else {
            bail!("op `{}` has {} outputs", op.name, outputs.len());
        };
        let from = |k: usize| -> Result<usize> {
            let id = *operands
                .get(k)
                .with_context(|| format!("op `{}` lacks operand {k}", op.name))?;
            layer_of
                .get(&id)
                .copied()
                .with_context(|| format!("op `{}` reads a tensor no earlier op writes", op.name))
        };
        let record = |k: usize, what: &str| -> Result<TensorRecord<'_>> {
            let id = *operands
                .get(k)
                .filter(|&&id| id != loam::format::NO_TENSOR)
                .with_context(|| format!("op `{}` has no {what}", op.name))?;
            tensor(id)
        };
        let constant = |k: usize, what: &str| -> Result<Vec<f32>> {
            f32_values(model, &record(k, what)?, what)
        };
        // An optional operand may be left out or marked absent; then it is zeros.
        let bias = |k: usize, len: usize| -> Result<Vec<f32>> {
            match operands.get(k) {
                Some(&id) if id != loam::format::NO_TENSOR => constant(k, "bias"),
                _ => Ok(vec![0.0; len]),
            }
        };
        let attributes = |what: &str| format!("op `{}`: decoding its {what} attributes", op.name);
        let layer = match kind {
            OpKind::FullyConnected => {
                let a: FullyConnectedAttributes = postcard::from_bytes(op.attributes)
                    .with_context(|| attributes("fully-connected"))?;
                let weights = constant(1, "weights")?;
                let outputs_n = record(1, "weights")?
                    .shape
                    .dims()
                    .first()
                    .copied()
                    .unwrap_or(0) as usize;
                let bias = bias(2, outputs_n)?;
                Layer::Dense {
                    from: from(0)?,
                    weights,
                    bias,
                    activation: a.activation,
                }
            }
            OpKind::Conv2d | OpKind::DepthwiseConv2d => {
                let filter_record = record(1, "filter")?;
                let fd = filter_record.shape.dims();
                let (stride, dilation, padding, groups, activation) = if kind == OpKind::Conv2d {
                    let a: Conv2dAttributes = postcard::from_bytes(op.attributes)
                        .with_context(|| attributes("convolution"))?;
                    (
                        a.stride,
                        a.dilation,
                        a.padding,
                        usize::from(a.groups),
                        a.activation,
                    )
                } else {
                    let a: DepthwiseConv2dAttributes = postcard::from_bytes(op.attributes)
                        .with_context(|| attributes("depthwise"))?;
                    (a.stride, a.dilation, a.padding, 1, a.activation)
                };
                let out_channels = *tensor(output)?.shape.dims().last().unwrap_or(&0) as usize;
                let kernel = if kind == OpKind::Conv2d {
                    (
                        fd.get(1).copied().unwrap_or(1) as usize,
                        fd.get(2).copied().unwrap_or(1) as usize,
                    )
                } else {
                    let n = fd.len();
                    (
                        fd[n.saturating_sub(3)] as usize,
                        fd[n.saturating_sub(2)] as usize,
                    )
                };
                let spec = ConvSpec {
                    out_channels,
                    kernel,
                    stride: (usize::from(stride[0]), usize::from(stride[1])),
                    dilation: (usize::from(dilation[0]), usize::from(dilation[1])),
                    padding: padding.map(usize::from),
                    groups,
                };
                let weights = constant(1, "filter")?;
                let bias = bias(2, out_channels)?;
                if kind == OpKind::Conv2d {
                    Layer::Conv {
                        from: from(0)?,
                        spec,
                        weights,
                        bias,
                        activation,
                    }
                } else {
                    Layer::Depthwise {
                        from: from(0)?,
                        spec,
                        weights,
                        bias,
                        activation,
                    }
                }
            }
            OpKind::MaxPool2d | OpKind::AveragePool2d => {
                let a: Pool2dAttributes =
                    postcard::from_bytes(op.attributes).with_context(|| attributes("pooling"))?;
                if a.padding != [0; 4] || a.activation != FusedActivation::NONE {
                    bail!(
                        "op `{}`: padded or clamped pooling is not supported here",
                        op.name
                    );
                }
                let kernel = (a.kernel[0] as usize, a.kernel[1] as usize);
                let stride = (a.stride[0] as usize, a.stride[1] as usize);
                if kind == OpKind::MaxPool2d {
                    Layer::MaxPool {
                        from: from(0)?,
                        kernel,
                        stride,
                    }
                } else {
                    Layer::AvgPool {
                        from: from(0)?,
                        kernel,
                        stride,
                    }
                }
            }
            OpKind::GlobalAveragePool => Layer::GlobalAvgPool { from: from(0)? },
            OpKind::Add => {
                let a: loam::ops::binary::BinaryAttributes =
                    postcard::from_bytes(op.attributes).with_context(|| attributes("add"))?;
                Layer::Add {
                    a: from(0)?,
                    b: from(1)?,
                    activation: a.activation,
                }
            }
            OpKind::Reshape => Layer::Reshape {
                from: from(0)?,
                dims: tensor(output)?
                    .shape
                    .dims()
                    .iter()
                    .map(|&d| d as usize)
                    .collect(),
            },
            OpKind::Softmax => Layer::Softmax { from: from(0)? },
            other => bail!(
                "op `{}` ({}) cannot be quantized by `loam quantize` yet (supported: conv, \
                 depthwise, fully-connected, pooling, add, reshape, softmax)",
                op.name,
                other.name()
            ),
        };
        layers.push(layer);
        layer_of.insert(output, layers.len() - 1);
    }
    let outputs = ids(model.outputs());
    if outputs.len() != 1 || layer_of.get(&outputs[0]) != Some(&(layers.len() - 1)) {
        bail!("the model's one output must be its last op's");
    }
    let constants = (0..metadata.constants.len())
        .filter_map(|i| {
            metadata
                .constants
                .get::<loam::format::ConstantRecord<'_>>(i)
        })
        .map(|c| (c.name.to_string(), c.values().collect()))
        .collect();
    let labels = (0..metadata.labels.len())
        .filter_map(|i| metadata.labels.get::<&str>(i))
        .map(str::to_string)
        .collect();
    Ok(Graph {
        name: metadata.name.to_string(),
        description: metadata.description.to_string(),
        labels,
        constants,
        layers,
    })
}

/// The value at `p` percent of `sorted`.
fn percentile(sorted: &[f32], p: f32) -> f32 {
    let at = ((p / 100.0) * (sorted.len() - 1) as f32).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Mean squared error of rounding `values` to int8 over `(lo, hi)`.
fn quantization_mse(values: &[f32], lo: f32, hi: f32) -> f64 {
    let q = QuantParams::i8_from_range(lo, hi);
    values
        .iter()
        .map(|&v| {
            let back = q.scale * (q.quantize(v, -128, 127) - q.zero_point) as f32;
            f64::from(v - back).powi(2)
        })
        .sum::<f64>()
        / values.len().max(1) as f64
}

/// The range `method` picks for one layer's `values`.
pub fn range(values: &mut [f32], method: Calibration) -> (f32, f32) {
    values.sort_unstable_by(f32::total_cmp);
    let (min, max) = (values[0], values[values.len() - 1]);
    match method {
        Calibration::MinMax => (min, max),
        Calibration::Percentile { percentile: p } => {
            (percentile(values, 100.0 - p), percentile(values, p))
        }
        Calibration::Mse => {
            // Shrinking both ends by one factor keeps a ReLU's zero at zero.
            let (mut best, mut best_err) = ((min, max), f64::INFINITY);
            for step in 0..=60 {
                let k = 1.0 - step as f32 * 0.015;
                let err = quantization_mse(values, min * k, max * k);
                if err < best_err {
                    (best, best_err) = ((min * k, max * k), err);
                }
            }
            best
        }
    }
}

/// Per-layer ranges of `graph` over `inputs` (whole samples back to back) by `method`.
pub fn calibrate(graph: &Graph, inputs: &[f32], method: Calibration) -> Result<Ranges> {
    if method == Calibration::MinMax {
        return graph.calibrate_on(inputs);
    }
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); graph.layers.len()];
    graph.for_each_output(inputs, &mut |layer, v| values[layer].extend_from_slice(v))?;
    if let Calibration::Percentile { percentile } = method
        && !(50.0..=100.0).contains(&percentile)
    {
        bail!("percentile {percentile} is outside 50..=100");
    }
    Ok(values.iter_mut().map(|v| range(v, method)).collect())
}

/// One layer's quantization error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerError {
    /// Layer name in the int8 model.
    pub name: String,
    /// Signal-to-quantization-noise ratio of its output in dB: higher is better; each bit
    /// is about 6 dB, so 30 dB is about 5 good bits.
    pub sqnr_db: f64,
}

/// How bias correction changed one layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BiasShift {
    /// Layer index in the graph.
    pub layer: usize,
    /// The largest change of one channel's bias.
    pub largest: f32,
    /// The mean size of the change over the layer's channels.
    pub mean: f32,
}

/// Bias correction: `graph` with each conv, depthwise and dense layer's bias moved so that
/// its int8 weights leave every output channel's mean where the float weights put it.
///
/// Rounding weights to int8 shifts a channel's mean pre-activation output by
/// `E[(W_q - W) x]`; the error does not average out over a layer because it is the same for
/// every input. This measures that shift on `inputs` (whole samples back to back, the float
/// model's own activations feeding each layer) and subtracts it from the bias, as in Nagel et
/// al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (2019), with
/// the expectation measured rather than inferred from batch-norm statistics. Activation
/// rounding is not corrected (it is zero-mean under round-to-nearest).
pub fn correct_biases(graph: &Graph, inputs: &[f32]) -> Result<(Graph, Vec<BiasShift>)> {
    let network = crate::train::Network::new(graph.clone())?;
    let len = network.input_len();
    if len == 0 || inputs.is_empty() || !inputs.len().is_multiple_of(len) {
        bail!(
            "bias correction needs whole samples of {len} values, got {}",
            inputs.len()
        );
    }
    // Each weighted layer's weight error, as the runtime's builder will round the weights.
    let mut errors: Vec<Option<Vec<f32>>> = vec![None; graph.layers.len()];
    for (i, layer) in graph.layers.iter().enumerate() {
        let (weights, channel_last) = match layer {
            Layer::Conv { weights, .. } | Layer::Dense { weights, .. } => (weights, false),
            Layer::Depthwise { weights, .. } => (weights, true),
            _ => continue,
        };
        let channels = network.dims(i).last().copied().unwrap_or(1);
        let (q, scales) =
            loam::quant::quantize_weights_per_channel(weights, channels, channel_last);
        let per_channel = weights.len() / channels.max(1);
        let delta = weights
            .iter()
            .zip(&q)
            .enumerate()
            .map(|(k, (&w, &q))| {
                let c = if channel_last {
                    k % channels
                } else {
                    k / per_channel.max(1)
                };
                f32::from(q) * scales[c] - w
            })
            .collect();
        errors[i] = Some(delta);
    }
    // Mean shift per channel, summed over samples in chunks to bound the memory the
    // activations take.
    let mut sums: Vec<Vec<f64>> = errors
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Some(_) => vec![0.0; network.dims(i).last().copied().unwrap_or(1)],
            None => Vec::new(),
        })
        .collect();
    let mut positions = vec![0u64; graph.layers.len()];
    for chunk in inputs.chunks(64 * len) {
        let batch = chunk.len() / len;
        let trace = network.forward(chunk, batch, None)?;
        for (i, layer) in graph.layers.iter().enumerate() {
            let Some(delta) = &errors[i] else { continue };
            let from = match layer {
                Layer::Conv { from, .. }
                | Layer::Depthwise { from, .. }
                | Layer::Dense { from, .. } => *from,
                _ => continue,
            };
            let shift = network.linear_part(i, &trace.outputs[from], batch, delta)?;
            let channels = sums[i].len();
            for (k, v) in shift.iter().enumerate() {
                sums[i][k % channels] += f64::from(*v);
            }
            positions[i] += (shift.len() / channels) as u64;
        }
    }
    let mut corrected = graph.clone();
    let mut shifts = Vec::new();
    for (i, layer) in corrected.layers.iter_mut().enumerate() {
        let bias = match layer {
            Layer::Conv { bias, .. }
            | Layer::Depthwise { bias, .. }
            | Layer::Dense { bias, .. } => bias,
            _ => continue,
        };
        let n = positions[i].max(1) as f64;
        let (mut largest, mut total) = (0.0f32, 0.0f32);
        for (b, &sum) in bias.iter_mut().zip(&sums[i]) {
            let shift = (sum / n) as f32;
            *b -= shift;
            largest = largest.max(shift.abs());
            total += shift.abs();
        }
        shifts.push(BiasShift {
            layer: i,
            largest,
            mean: total / bias.len().max(1) as f32,
        });
    }
    Ok((corrected, shifts))
}

/// The SQNR of every layer's int8 output against the float model's, over `inputs`: `int8`
/// (the graph the int8 model is written from, e.g. after [`correct_biases`]) against `float`,
/// two graphs of the same layers.
pub fn layer_errors(
    float: &Graph,
    int8: &Graph,
    ranges: &Ranges,
    inputs: &[f32],
) -> Result<Vec<LayerError>> {
    if float.layers.len() != int8.layers.len() {
        bail!("the float and int8 graphs have different layers");
    }
    let graph = float;
    let built = int8.build_i8_exposed(ranges)?;
    let bytes = loam::format::AlignedBytes::new(&built.bytes);
    let model = Model::from_bytes(&bytes)?;
    let records = crate::run::io_records(&model, true)?;
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter = loam::Interpreter::new(&model, &mut arena)?;
    let input = crate::run::io_records(&model, false)?[0];
    let (in_scale, in_zero) = match input.quantization {
        loam::Quantization::PerTensor { scale, zero_point } => (scale, zero_point),
        _ => bail!("the int8 model's input is not per-tensor quantized"),
    };
    let q = QuantParams {
        scale: in_scale,
        zero_point: in_zero,
    };
    // The int8 model's output `k` for each layer that has one (dropout layers have none),
    // with its dequantization.
    let mut output_of: Vec<Option<(usize, f32, i32)>> = vec![None; graph.layers.len()];
    let mut k = 0;
    for (i, layer) in graph.layers.iter().enumerate().skip(1) {
        if matches!(layer, Layer::Dropout { .. }) {
            continue;
        }
        let record = records
            .get(k)
            .context("the int8 model exposes fewer outputs than the graph has layers")?;
        let loam::Quantization::PerTensor { scale, zero_point } = record.quantization else {
            bail!("layer output `{}` is not per-tensor quantized", record.name);
        };
        output_of[i] = Some((k, scale, zero_point));
        k += 1;
    }
    let mut signal = vec![0f64; k];
    let mut noise = vec![0f64; k];
    let mut failure: Option<anyhow::Error> = None;
    // The float model visits every layer of a sample in order, the input first: run the int8
    // model on that input, then compare each layer as the float values arrive.
    graph.for_each_output(inputs, &mut |layer, float| {
        if failure.is_some() {
            return;
        }
        let compared = (|| -> Result<()> {
            if layer == 0 {
                let quantized = interpreter.input_mut::<i8>(0)?;
                for (q8, &x) in quantized.iter_mut().zip(float) {
                    *q8 = q.quantize(x, -128, 127) as i8;
                }
                interpreter.invoke()?;
            } else if let Some((k, scale, zero)) = output_of[layer] {
                for (&qv, &f) in interpreter.output::<i8>(k)?.iter().zip(float) {
                    let back = scale * (i32::from(qv) - zero) as f32;
                    signal[k] += f64::from(f).powi(2);
                    noise[k] += f64::from(f - back).powi(2);
                }
            }
            Ok(())
        })();
        failure = compared.err();
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(records
        .iter()
        .take(k)
        .zip(signal.iter().zip(&noise))
        .map(|(record, (&s, &n))| LayerError {
            name: record.name.to_string(),
            sqnr_db: 10.0 * (s.max(1e-30) / n.max(1e-30)).log10(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::ModelFile;

    #[test]
    fn a_trained_float_model_lifts_back_to_the_same_outputs() {
        let g = crate::zoo::ds_cnn();
        let built = g.build_f32(false).unwrap();
        let file = ModelFile::from_bytes("ds-cnn", &built.bytes).unwrap();
        let lifted = lift(&file.model().unwrap()).unwrap();
        let again = lifted.build_f32(false).unwrap();
        assert!(
            again.bytes == built.bytes,
            "lifting and rewriting changes the model"
        );
        // int8 models are refused with the reason.
        let ranges = g.calibrate(4, 1).unwrap();
        let int8 = ModelFile::from_bytes("int8", &g.build_i8(&ranges).unwrap().bytes).unwrap();
        let e = lift(&int8.model().unwrap()).unwrap_err();
        assert!(e.to_string().contains("float model"), "{e}");
    }

    /// Imported models may leave a bias out; the lifted graph then has a zero bias and
    /// computes what the model computes.
    #[test]
    fn layers_without_a_bias_lift_with_zeros() {
        use loam::format::writer::{ModelBuilder, QuantSpec};
        let mut b = ModelBuilder::new("no-bias");
        let x = b
            .tensor("x", DType::F32, &[1, 4, 4, 2], QuantSpec::None)
            .unwrap();
        b.input(x);
        let filter: Vec<f32> = (0..3 * 9 * 2).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let spec = ConvSpec::new(3, 3).same(4, 4);
        let c = b
            .conv2d_f32("c", x, spec, &filter, None, FusedActivation::RELU)
            .unwrap();
        let f = b.reshape("f", c, &[1, 48]).unwrap();
        let weights: Vec<f32> = (0..5 * 48).map(|i| (i % 5) as f32 * 0.05 - 0.1).collect();
        let y = b
            .fully_connected_f32("d", f, &weights, None, FusedActivation::NONE)
            .unwrap();
        b.output(y);
        let original = ModelFile::from_bytes("no-bias", &b.build().unwrap().bytes).unwrap();
        let lifted = lift(&original.model().unwrap()).unwrap();
        let rebuilt =
            ModelFile::from_bytes("lifted", &lifted.build_f32(false).unwrap().bytes).unwrap();
        let input = crate::npy::Array {
            shape: vec![1, 4, 4, 2],
            data: crate::npy::Data::F32((0..32).map(|i| i as f32 / 32.0).collect()),
        };
        let run = |m: &ModelFile| {
            crate::run::run(m, std::slice::from_ref(&input)).unwrap()[0]
                .array
                .clone()
        };
        assert_eq!(run(&original), run(&rebuilt));
    }

    #[test]
    fn ranges_by_method() {
        let mut v: Vec<f32> = (0..=1000).map(|i| i as f32 / 1000.0).collect();
        v.push(50.0); // one outlier
        assert_eq!(range(&mut v.clone(), Calibration::MinMax), (0.0, 50.0));
        let (lo, hi) = range(&mut v.clone(), Calibration::Percentile { percentile: 99.0 });
        assert!(lo.abs() < 0.02 && (hi - 0.99).abs() < 0.02, "{lo} {hi}");
        // Heavy-tailed values (exponential): the least-error range clips the tail, keeps 0,
        // and errs less than min/max or a percentile.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut e: Vec<f32> = (0..20_000)
            .map(|_| -(1.0 - rand::Rng::random::<f32>(&mut rng)).ln())
            .collect();
        let mse = range(&mut e, Calibration::Mse);
        let minmax = range(&mut e, Calibration::MinMax);
        let pct = range(&mut e, Calibration::Percentile { percentile: 99.0 });
        assert!(
            mse.0 <= minmax.0 && mse.1 < minmax.1,
            "{mse:?} vs {minmax:?}"
        );
        let err = |r: (f32, f32)| quantization_mse(&e, r.0, r.1);
        assert!(err(mse) < err(minmax) && err(mse) < err(pct), "{mse:?}");
    }

    #[test]
    fn layer_errors_are_high_for_a_well_calibrated_model() {
        let g = crate::zoo::digits_mlp();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x: Vec<f32> = (0..64 * 64)
            .map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0))
            .collect();
        let ranges = calibrate(&g, &x, Calibration::MinMax).unwrap();
        let errors = layer_errors(&g, &g, &ranges, &x).unwrap();
        assert_eq!(errors.len(), 4);
        for e in &errors {
            assert!(e.sqnr_db > 20.0, "{e:?}");
        }
        // A range far too wide costs resolution, visibly.
        let wide: Ranges = ranges
            .iter()
            .map(|&(lo, hi)| (lo * 50.0, hi * 50.0))
            .collect();
        let worse = layer_errors(&g, &g, &wide, &x).unwrap();
        assert!(
            worse[0].sqnr_db < errors[0].sqnr_db - 20.0,
            "{worse:?} vs {errors:?}"
        );
    }
    /// Weights that all sit 0.45 of a step above an int8 level round down together, so the
    /// int8 model's outputs sit below the float model's on average; corrected biases take
    /// most of that offset away, through conv (with padding), depthwise and dense layers.
    #[test]
    fn bias_correction_removes_the_mean_shift_of_rounded_weights() {
        let mut b = crate::graph::GraphBuilder::new("shifted", &[1, 6, 6, 2], 5);
        let x = b.conv(0, 4, (3, 3), 1, FusedActivation::NONE);
        let x = b.depthwise(x, 1, FusedActivation::NONE);
        let x = b.flatten(x);
        b.dense(x, 3, FusedActivation::NONE);
        let mut g = b.finish();
        let network = crate::train::Network::new(g.clone()).unwrap();
        for (i, layer) in g.layers.iter_mut().enumerate() {
            let (weights, channel_last) = match layer {
                Layer::Conv { weights, .. } | Layer::Dense { weights, .. } => (weights, false),
                Layer::Depthwise { weights, .. } => (weights, true),
                _ => continue,
            };
            let channels = *network.dims(i).last().unwrap();
            let (q, scales) =
                loam::quant::quantize_weights_per_channel(weights, channels, channel_last);
            let per_channel = weights.len() / channels;
            for (k, (w, &q)) in weights.iter_mut().zip(&q).enumerate() {
                let c = if channel_last {
                    k % channels
                } else {
                    k / per_channel
                };
                // The largest stays put, so the scale does.
                if q.unsigned_abs() < 127 {
                    *w = (f32::from(q) + 0.45) * scales[c];
                }
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let inputs: Vec<f32> = (0..128 * 72)
            .map(|_| rand::Rng::random_range(&mut rng, 0.0..1.0))
            .collect();
        let ranges = calibrate(&g, &inputs, Calibration::MinMax).unwrap();
        let (corrected, shifts) = correct_biases(&g, &inputs).unwrap();
        assert_eq!(shifts.len(), 3);
        assert!(shifts.iter().all(|s| s.largest > 0.0), "{shifts:?}");
        let last = g.layers.len() - 1;
        let float = crate::train::Network::new(g.clone())
            .unwrap()
            .forward(&inputs, 128, None)
            .unwrap()
            .outputs
            .swap_remove(last);
        let mean_error = |graph: &Graph| -> f64 {
            let network = crate::train::Network::new(graph.clone()).unwrap();
            let int8 = crate::train::qat::Int8Forward::new(&network, &ranges)
                .unwrap()
                .run(&inputs, 128)
                .unwrap()
                .trace
                .outputs
                .swap_remove(last);
            (0..3)
                .map(|c| {
                    let sum: f64 = int8
                        .iter()
                        .zip(&float)
                        .skip(c)
                        .step_by(3)
                        .map(|(&q, &f)| f64::from(q - f))
                        .sum();
                    (sum / 128.0).abs()
                })
                .sum::<f64>()
                / 3.0
        };
        let (before, after) = (mean_error(&g), mean_error(&corrected));
        assert!(
            after < 0.3 * before,
            "mean error {before} before, {after} after"
        );
    }

    use rand::SeedableRng;
}
