//! `loam quantize model.onnx` (or a float `.loam`): post-training static quantization of any
//! float model the importer takes, not only the layer graphs `loam train` writes.
//!
//! The model is quantized where ONNX Runtime's quantizer works, in the ONNX graph:
//! BatchNorms are folded, the float model runs on the calibration samples (in tract) with
//! every value to quantize exposed, each value's range is chosen by the user's
//! [`Calibration`], and the graph is rewritten in the standard QDQ form (per-channel int8
//! weights, int32 biases). The importer then lowers that into native int8 ops, so the `.loam`
//! and the QDQ ONNX file written beside it are one model: ONNX Runtime and tract run the
//! second, and `loam verify` compares them. Nodes named with `--keep-float`, and those with no
//! int8 kernel, stay f32 between a dequantize and a quantize.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use loam::format::writer::Built;
use loam::quant::QuantParams;
use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use super::probe::Probe;
use super::{Calibration, LayerError, range};
use crate::data::Dataset;
use crate::model_file::ModelFile;
use crate::npy::{Array, Data};
use crate::onnx::import::{self, ImportOptions};
use crate::onnx::qdq;

/// Choices for [`quantize_onnx`].
#[derive(Debug, Clone)]
pub struct ModelQuantizeOptions {
    /// How activation ranges are chosen.
    pub calibration: Calibration,
    /// Nodes (by node name or output name) to keep in f32.
    pub keep_float: Vec<String>,
    /// Conv, Gemm or MatMul nodes (by node name or output name) to run as 16x8 layers: int16
    /// activations in and out, int8 weights.
    pub int16: Vec<String>,
    /// Move each int8 layer's bias by the mean error its int8 weights and inputs cause.
    pub bias_correction: bool,
    /// Input shapes and the model name, as for `loam import`.
    pub import: ImportOptions,
    /// How many evaluation samples the per-layer error report runs (it runs two models in
    /// tract per sample).
    pub layer_report_samples: usize,
}

impl Default for ModelQuantizeOptions {
    fn default() -> Self {
        ModelQuantizeOptions {
            calibration: Calibration::Mse,
            keep_float: Vec::new(),
            int16: Vec::new(),
            bias_correction: false,
            import: ImportOptions::default(),
            layer_report_samples: 64,
        }
    }
}

/// A node that stays f32 in the quantized model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloatNode {
    /// Its ONNX name.
    pub node: String,
    /// Why.
    pub why: String,
}

/// How bias correction moved one node's bias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeBiasShift {
    /// The ONNX node.
    pub node: String,
    /// The largest change of one channel's bias.
    pub largest: f32,
    /// The mean size of the change over its channels.
    pub mean: f32,
}

/// The float and int8 models side by side on the evaluation samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Samples run.
    pub samples: usize,
    /// Whether they are the calibration samples (no separate evaluation data was given).
    pub on_calibration_data: bool,
    /// Top-1 accuracy of the float model, when the data has class labels.
    pub float_accuracy: Option<f64>,
    /// Top-1 accuracy of the int8 model, when the data has class labels.
    pub int8_accuracy: Option<f64>,
    /// Share of samples where both models pick the same class (first output).
    pub top1_agreement: f64,
    /// SQNR of the int8 model's first output against the float model's, in dB.
    pub output_sqnr_db: f64,
}

/// What [`quantize_onnx`] did and measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelQuantizeReport {
    /// How ranges were chosen.
    pub calibration: Calibration,
    /// Calibration samples run.
    pub calibration_samples: usize,
    /// Values given int8 parameters.
    pub quantized_values: usize,
    /// Layers whose weights are int8.
    pub int8_weight_layers: usize,
    /// Of those, the 16x8 layers (int16 activations).
    pub int16_layers: usize,
    /// Nodes left in f32, with why.
    pub float_nodes: Vec<FloatNode>,
    /// The importer's notes on the quantized model.
    pub notes: Vec<String>,
    /// SQNR of each quantized value against the float model's, in graph order.
    pub layers: Vec<LayerError>,
    /// Bias corrections made.
    pub bias_correction: Vec<NodeBiasShift>,
    /// Float against int8 on the evaluation samples.
    pub evaluation: Evaluation,
    /// Bytes of the float `.loam`.
    pub float_flash_bytes: usize,
    /// Bytes of the int8 `.loam`.
    pub flash_bytes: usize,
    /// Arena of the float `.loam`.
    pub float_arena_bytes: usize,
    /// Arena of the int8 `.loam`.
    pub arena_bytes: usize,
}

/// A quantized model.
pub struct QuantizedModel {
    /// The int8 `.loam`.
    pub built: Built,
    /// The same model as a QDQ ONNX file (`None` when it has int16 values and the model's
    /// opset is older than 21, which has no int16 quantize).
    pub onnx: Option<Vec<u8>>,
    /// What was done and measured.
    pub report: ModelQuantizeReport,
}

/// The samples of `data` shaped for a model input of `dims` (batch first): as they are when
/// a sample has the input's size, transposed when the data holds channels-last images and
/// the model takes channels-first ones.
pub fn samples_for(data: &Dataset, dims: &[usize]) -> Result<Vec<Vec<f32>>> {
    let per_sample: &[usize] = if dims.len() > 1 && dims[0] == 1 {
        &dims[1..]
    } else {
        dims
    };
    let len: usize = per_sample.iter().product();
    ensure!(
        data.sample_len() == len,
        "{}: a sample has {} values ({:?}) but the model's input takes {len} ({dims:?})",
        data.name,
        data.sample_len(),
        data.sample_dims
    );
    ensure!(data.rows() > 0, "{}: no samples", data.name);
    let channels_last = data.sample_dims.len() == 3
        && per_sample.len() == 3
        && data.sample_dims[..] != per_sample[..]
        && data.sample_dims[2] == per_sample[0]
        && data.sample_dims[..2] == per_sample[1..];
    Ok((0..data.rows())
        .map(|r| {
            let s = data.sample(r);
            if channels_last {
                crate::onnx::proto::permute(s, &data.sample_dims, &[2, 0, 1]).0
            } else {
                s.to_vec()
            }
        })
        .collect())
}

/// `samples` (each in the layout of a model input of `dims`) as one batch array: the
/// input's leading batch of 1, if it has one, replaced by the sample count.
pub(crate) fn stack_samples(samples: &[Vec<f32>], dims: &[usize]) -> Array {
    Array {
        shape: std::iter::once(samples.len())
            .chain(
                dims.iter()
                    .skip(usize::from(dims.first() == Some(&1)))
                    .copied(),
            )
            .collect(),
        data: Data::F32(samples.concat()),
    }
}

fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal.max(f64::MIN_POSITIVE) / noise).log10()
    }
}

/// Quantizes the float ONNX model `onnx` on `calibration`, evaluating on `evaluation` (the
/// calibration data when `None`).
pub fn quantize_onnx(
    onnx: &[u8],
    calibration: &Dataset,
    evaluation: Option<&Dataset>,
    options: &ModelQuantizeOptions,
) -> Result<QuantizedModel> {
    if let Calibration::Percentile { percentile } = options.calibration {
        ensure!(
            (50.0..=100.0).contains(&percentile),
            "percentile {percentile} is outside 50..=100"
        );
    }
    let proto = pb::ModelProto::decode(onnx)
        .map_err(|e| anyhow::anyhow!("not an ONNX model (the protobuf does not decode: {e})"))?;
    let graph = proto
        .graph
        .as_ref()
        .context("the ONNX model has no graph")?;
    let opset = import::default_opset(&proto)?;
    let mut notes = Vec::new();
    let inputs = import::input_shapes(graph, &options.import, &mut notes)?;
    let [(input, dims)] = inputs.as_slice() else {
        bail!(
            "the model has {} inputs; `loam quantize` calibrates models with one",
            inputs.len()
        );
    };
    // The float model first: anything loam cannot run is reported before any work.
    let float = import::import_bytes(onnx, None, &options.import).context("the float model")?;

    let values = import::analyse(&proto, None, &inputs)?;
    let folded = qdq::fold_batch_norms(&proto, &values)?;
    let folded_bytes = folded.encode_to_vec();
    let values = import::analyse(&folded, None, &inputs)?;
    let folded_graph = folded
        .graph
        .as_ref()
        .context("the ONNX model has no graph")?;
    let plan = qdq::plan(folded_graph, &values, &options.keep_float, &options.int16)?;

    // Calibration: every value to quantize, over every sample.
    let samples = samples_for(calibration, dims)?;
    let mut names: Vec<String> = plan
        .points
        .iter()
        .filter(|p| p.fixed.is_none())
        .map(|p| p.tensor.clone())
        .collect();
    names.sort();
    names.dedup();
    let mut probe = Probe::load(&folded_bytes, input, dims, &names)?;
    let mut seen: HashMap<&str, Vec<f32>> = HashMap::new();
    for sample in &samples {
        for (name, v) in names.iter().zip(probe.run(sample)?) {
            seen.entry(name.as_str()).or_default().extend(v);
        }
    }
    let mut params = vec![QuantParams::i8_from_range(0.0, 0.0); plan.points.len()];
    for members in plan.members().values() {
        let fixed = members.iter().find_map(|&p| plan.points[p].fixed);
        let wide = plan.points[members[0]].wide;
        let p = match fixed {
            Some(f) => f,
            None => {
                let mut tensors: Vec<&str> = members
                    .iter()
                    .map(|&p| plan.points[p].tensor.as_str())
                    .collect();
                tensors.sort_unstable();
                tensors.dedup();
                let mut all: Vec<f32> = tensors
                    .iter()
                    .flat_map(|t| seen.get(t).cloned().unwrap_or_default())
                    .collect();
                if all.is_empty() {
                    all.push(0.0);
                }
                if wide {
                    // 65,536 steps leave clipping nothing to win: the least-error range of
                    // an int16 value is its whole range.
                    let method = match options.calibration {
                        Calibration::Mse => Calibration::MinMax,
                        other => other,
                    };
                    let (lo, hi) = range(&mut all, method);
                    QuantParams::i16_from_range(lo, hi)
                } else {
                    let (lo, hi) = range(&mut all, options.calibration);
                    QuantParams::i8_from_range(lo, hi)
                }
            }
        };
        for &m in members {
            params[m] = p;
        }
    }
    drop(seen);

    let per_axis = qdq::per_axis(opset);
    // The QDQ graph with the biases in `overrides` (real values, by weight index) in place of
    // the file's.
    let build =
        |overrides: &HashMap<usize, Vec<f32>>, form: qdq::Int16Form| -> Result<pb::ModelProto> {
            let mut plan = plan.clone();
            for (k, w) in plan.weights.iter_mut().enumerate() {
                let node = &folded_graph.node[w.node];
                if overrides.contains_key(&k)
                    && w.bias.is_none()
                    && import::attrs::input(node, 2).is_none()
                {
                    w.bias = Some(2);
                }
            }
            let weights = plan
                .weights
                .iter()
                .enumerate()
                .map(|(k, w)| {
                    qdq::quantize_weight(
                        folded_graph,
                        &values,
                        w,
                        overrides.get(&k).map(Vec::as_slice),
                        params[w.input_point].scale,
                        per_axis,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            qdq::insert(&folded, &plan, &params, &weights, form)
        };
    let mut overrides = HashMap::new();
    let mut bias_shifts = Vec::new();
    if options.bias_correction {
        // One layer at a time in graph order, each measured with the layers before it
        // already corrected, so no error is corrected twice.
        for k in 0..plan.weights.len() {
            let current = build(&overrides, qdq::Int16Form::FakeQuant)?.encode_to_vec();
            if let Some((bias, shift)) = bias_correction(
                &folded_bytes,
                &current,
                folded_graph,
                &values,
                &plan,
                k,
                (input, dims),
                &samples,
            )? {
                overrides.insert(k, bias);
                bias_shifts.push(shift);
            }
        }
    }
    let qdq_bytes = build(&overrides, qdq::Int16Form::QuantizeLinear)?.encode_to_vec();
    let any_wide = plan.points.iter().any(|p| p.wide);
    // tract observes the int16 values through their float form.
    let probe_bytes = if any_wide {
        build(&overrides, qdq::Int16Form::FakeQuant)?.encode_to_vec()
    } else {
        qdq_bytes.clone()
    };
    let quantized = import::import_bytes(&qdq_bytes, None, &options.import)
        .context("importing the quantized graph")?;

    // Evaluation: both .loam models through loam's own runtime.
    let (eval_samples, labels, on_calibration_data) = match evaluation {
        Some(d) => (
            samples_for(d, dims)?,
            d.classes().map(<[u32]>::to_vec),
            false,
        ),
        None => (
            samples.clone(),
            calibration.classes().map(<[u32]>::to_vec),
            true,
        ),
    };
    let float_file = ModelFile::from_bytes("float model", &float.built.bytes)?;
    let int8_file = ModelFile::from_bytes("int8 model", &quantized.built.bytes)?;
    let stacked = stack_samples(&eval_samples, dims);
    let float_out = crate::run::run(&float_file, std::slice::from_ref(&stacked))?;
    let int8_out = crate::run::run(&int8_file, std::slice::from_ref(&stacked))?;
    let evaluation = evaluate(
        &crate::run::real_values(&float_out[0]),
        &crate::run::real_values(&int8_out[0]),
        eval_samples.len(),
        labels.as_deref(),
        on_calibration_data,
    );

    // Per-layer error: each quantized value in the QDQ model against the float model.
    let layer_points: Vec<usize> = (0..plan.points.len())
        .filter(|&p| !plan.points[p].is_input && plan.points[p].reader.is_none())
        .collect();
    let names: Vec<String> = layer_points
        .iter()
        .map(|&p| plan.points[p].tensor.clone())
        .collect();
    let graph_outputs = output_names(folded_graph);
    let dequantized: Vec<String> = names
        .iter()
        .map(|n| qdq::dequantized_name(&graph_outputs, n))
        .collect();
    let mut float_probe = Probe::load(&folded_bytes, input, dims, &names)?;
    let mut int8_probe = Probe::load(&probe_bytes, input, dims, &dequantized)?;
    let mut sums = vec![(0.0f64, 0.0f64); names.len()];
    for sample in eval_samples
        .iter()
        .take(options.layer_report_samples.max(1))
    {
        let f = float_probe.run(sample)?;
        let q = int8_probe.run(sample)?;
        for ((s, f), q) in sums.iter_mut().zip(&f).zip(&q) {
            for (a, b) in f.iter().zip(q) {
                s.0 += f64::from(*a).powi(2);
                s.1 += f64::from(a - b).powi(2);
            }
        }
    }
    let layers = layer_points
        .iter()
        .zip(&sums)
        .map(|(&p, &(signal, noise))| LayerError {
            name: format!(
                "{} ({}{})",
                plan.points[p].producer,
                plan.points[p].tensor,
                if plan.points[p].wide { ", int16" } else { "" }
            ),
            sqnr_db: sqnr_db(signal, noise),
        })
        .collect();
    let mut notes = quantized.notes.clone();
    // Standard ONNX quantizes to int16 from opset 21; an older model's QDQ file would not
    // load in ONNX Runtime.
    let onnx = if any_wide && opset < 21 {
        notes.push(format!(
            "no QDQ ONNX file: the model's opset {opset} has no int16 QuantizeLinear (opset 21 \
             has); export the float model at opset 21 to get one"
        ));
        None
    } else {
        Some(qdq_bytes)
    };

    let float_model = float_file.model()?;
    let int8_model = int8_file.model()?;
    let report = ModelQuantizeReport {
        calibration: options.calibration,
        calibration_samples: samples.len(),
        quantized_values: plan.points.len(),
        int8_weight_layers: plan.weights.len(),
        int16_layers: plan
            .weights
            .iter()
            .filter(|w| plan.points[w.input_point].wide)
            .count(),
        float_nodes: plan
            .float_nodes
            .iter()
            .map(|(node, why)| FloatNode {
                node: node.clone(),
                why: why.clone(),
            })
            .collect(),
        notes,
        layers,
        bias_correction: bias_shifts,
        evaluation,
        float_flash_bytes: float.built.bytes.len(),
        flash_bytes: quantized.built.bytes.len(),
        float_arena_bytes: float_model.arena_size(),
        arena_bytes: int8_model.arena_size(),
    };
    Ok(QuantizedModel {
        built: quantized.built,
        onnx,
        report,
    })
}

/// Quantizes a float `.loam` model: exported to ONNX, then as [`quantize_onnx`].
pub fn quantize_loam(
    model: &loam::Model<'_>,
    calibration: &Dataset,
    evaluation: Option<&Dataset>,
    options: &ModelQuantizeOptions,
) -> Result<QuantizedModel> {
    let onnx = crate::onnx::export_bytes(model, crate::onnx::ExportOptions::default())
        .context("exporting the float model to ONNX for quantization")?;
    let mut options = options.clone();
    if options.import.name.is_none() {
        options.import.name = Some(model.metadata().name.to_string());
    }
    quantize_onnx(&onnx, calibration, evaluation, &options)
}

fn output_names(graph: &pb::GraphProto) -> std::collections::HashSet<String> {
    graph.output.iter().map(|o| o.name.clone()).collect()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

pub(crate) fn evaluate(
    float: &[f64],
    int8: &[f64],
    samples: usize,
    labels: Option<&[u32]>,
    on_calibration_data: bool,
) -> Evaluation {
    let width = float.len() / samples.max(1);
    let (mut agree, mut float_right, mut int8_right) = (0usize, 0usize, 0usize);
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for s in 0..samples {
        let f = &float[s * width..(s + 1) * width];
        let q = &int8[s * width..(s + 1) * width];
        let (fc, qc) = (argmax(f), argmax(q));
        agree += usize::from(fc == qc);
        if let Some(l) = labels.and_then(|l| l.get(s)) {
            float_right += usize::from(fc == *l as usize);
            int8_right += usize::from(qc == *l as usize);
        }
        for (a, b) in f.iter().zip(q) {
            signal += a * a;
            noise += (a - b).powi(2);
        }
    }
    let share = |n: usize| n as f64 / samples.max(1) as f64;
    let labelled = labels.is_some_and(|l| l.len() >= samples);
    Evaluation {
        samples,
        on_calibration_data,
        float_accuracy: labelled.then(|| share(float_right)),
        int8_accuracy: labelled.then(|| share(int8_right)),
        top1_agreement: share(agree),
        output_sqnr_db: sqnr_db(signal, noise),
    }
}

/// Empirical bias correction of weight `k`: per output channel, the mean of the float
/// model's pre-activation output minus the QDQ model's over the calibration samples, added to
/// the bias. Returns the corrected real bias and the shift for the report; `None` for a
/// MatMul, which has no bias to move.
#[allow(clippy::too_many_arguments)]
fn bias_correction(
    float_onnx: &[u8],
    qdq_onnx: &[u8],
    graph: &pb::GraphProto,
    values: &import::Values,
    plan: &qdq::Plan,
    k: usize,
    (input, dims): (&str, &[usize]),
    samples: &[Vec<f32>],
) -> Result<Option<(Vec<f32>, NodeBiasShift)>> {
    let w = &plan.weights[k];
    let node = &graph.node[w.node];
    if node.op_type == "MatMul" {
        return Ok(None);
    }
    let out = qdq::node_output(graph, w);
    let mut float_probe = Probe::load(float_onnx, input, dims, std::slice::from_ref(&out))?;
    let quantized = qdq::float_name(plan, &output_names(graph), &out);
    let mut qdq_probe = Probe::load(qdq_onnx, input, dims, &[quantized])?;
    // Output channels: dimension 1 of a convolution's NCHW output, the last of a matrix's.
    let shape = values
        .shape(&out)
        .with_context(|| format!("the shape of `{out}`"))?;
    let (channels, inner) = if node.op_type == "Conv" {
        (shape[1], shape[2..].iter().product::<usize>())
    } else {
        (*shape.last().unwrap_or(&1), 1)
    };
    let mut sums = vec![0.0f64; channels];
    let mut count = 0u64;
    for sample in samples {
        let f = float_probe.run(sample)?;
        let q = qdq_probe.run(sample)?;
        for (i, (a, b)) in f[0].iter().zip(&q[0]).enumerate() {
            sums[(i / inner.max(1)) % channels] += f64::from(a - b);
        }
        count += (f[0].len() / channels.max(1)) as u64;
    }
    let mut bias = match w.bias.and_then(|b| import::attrs::input(node, b)) {
        Some(b) => {
            values
                .constant_f32(b)
                .with_context(|| format!("bias `{b}` is not a constant"))?
                .0
        }
        None => vec![0.0; channels],
    };
    if bias.len() != channels {
        return Ok(None);
    }
    let n = count.max(1) as f64;
    let (mut largest, mut total) = (0.0f32, 0.0f32);
    for (b, s) in bias.iter_mut().zip(&sums) {
        let shift = (s / n) as f32;
        *b += shift;
        largest = largest.max(shift.abs());
        total += shift.abs();
    }
    let shift = NodeBiasShift {
        node: import::attrs::node_name(node),
        largest,
        mean: total / channels.max(1) as f32,
    };
    Ok(Some((bias, shift)))
}

/// The files `loam quantize` reads and writes for a model file.
#[derive(Debug, Clone, Copy)]
pub struct QuantizeFiles<'a> {
    /// The float `.onnx` or `.loam`.
    pub model: &'a Path,
    /// Calibration samples (`.npy` or any data set the loaders read).
    pub data: &'a Path,
    /// Labels for a `.npy` or IDX `data`.
    pub labels: Option<&'a Path>,
    /// Evaluation samples, if not the calibration data.
    pub eval: Option<&'a Path>,
    /// Labels for a `.npy` or IDX `eval`.
    pub eval_labels: Option<&'a Path>,
    /// The int8 `.loam` to write.
    pub output: &'a Path,
    /// Where to write the QDQ ONNX model too.
    pub onnx_output: Option<&'a Path>,
    /// The most calibration samples to use (the first ones).
    pub samples: Option<usize>,
}

pub(crate) fn load_data(path: &Path, labels: Option<&Path>) -> Result<Dataset> {
    crate::data::load(
        path,
        labels,
        &crate::data::csv::CsvOptions::default(),
        &crate::data::audio::AudioOptions::default(),
    )
}

/// Quantizes `files.model` on `files.data` and writes the int8 `.loam` (and the QDQ ONNX
/// file), each written whole or not at all.
pub fn quantize_files(
    files: &QuantizeFiles<'_>,
    options: &ModelQuantizeOptions,
) -> Result<ModelQuantizeReport> {
    let mut calibration = load_data(files.data, files.labels)?;
    if let Some(n) = files.samples
        && n < calibration.rows()
    {
        calibration = calibration.subset(&(0..n.max(1)).collect::<Vec<_>>());
    }
    let evaluation = files
        .eval
        .map(|e| load_data(e, files.eval_labels))
        .transpose()?;
    let is_loam = files
        .model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("loam"));
    let quantized = if is_loam {
        let file = ModelFile::open(files.model)?;
        quantize_loam(&file.model()?, &calibration, evaluation.as_ref(), options)
    } else {
        let bytes = std::fs::read(files.model)
            .with_context(|| format!("reading {}", files.model.display()))?;
        quantize_onnx(&bytes, &calibration, evaluation.as_ref(), options)
    }
    .with_context(|| format!("quantizing {}", files.model.display()))?;
    // Both files or neither.
    let onnx = match files.onnx_output {
        Some(path) => Some((
            path,
            quantized.onnx.as_ref().with_context(|| {
                format!(
                    "cannot write {} (nothing was written): {}",
                    path.display(),
                    quantized.report.notes.last().map_or("", String::as_str)
                )
            })?,
        )),
        None => None,
    };
    crate::model_file::write_atomically(files.output, &quantized.built.bytes)?;
    if let Some((path, bytes)) = onnx {
        crate::model_file::write_atomically(path, bytes)?;
    }
    Ok(quantized.report)
}

impl ModelQuantizeReport {
    /// The report as `loam quantize` prints it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let e = &self.evaluation;
        let _ = writeln!(
            s,
            "calibration: {} on {} samples; {} values quantized, {} layers with int8 weights \
             ({} of them 16x8: int16 activations)",
            self.calibration,
            self.calibration_samples,
            self.quantized_values,
            self.int8_weight_layers,
            self.int16_layers
        );
        let on = if e.on_calibration_data {
            "the calibration samples"
        } else {
            "the evaluation samples"
        };
        let _ = writeln!(s, "\nfloat against int8 on {} of {on}:", e.samples);
        if let (Some(f), Some(q)) = (e.float_accuracy, e.int8_accuracy) {
            let _ = writeln!(
                s,
                "  accuracy        {:>7.2}% float   {:>7.2}% int8   ({:+.2} points)",
                100.0 * f,
                100.0 * q,
                100.0 * (q - f)
            );
        }
        let _ = writeln!(
            s,
            "  same top class  {:>7.2}%\n  output SQNR     {:>7.1} dB",
            100.0 * e.top1_agreement,
            e.output_sqnr_db
        );
        let _ = writeln!(
            s,
            "  flash           {:>8} B float  {:>8} B int8   ({:.2}x smaller)",
            self.float_flash_bytes,
            self.flash_bytes,
            self.float_flash_bytes as f64 / self.flash_bytes.max(1) as f64
        );
        let _ = writeln!(
            s,
            "  arena           {:>8} B float  {:>8} B int8",
            self.float_arena_bytes, self.arena_bytes
        );
        let _ = writeln!(
            s,
            "\nper-layer SQNR against the float model (higher is better; ~6 dB per bit; \
             keep a layer in f32 with --keep-float NODE):"
        );
        for l in &self.layers {
            let _ = writeln!(s, "  {:>7.1} dB  {}", l.sqnr_db, l.name);
        }
        if !self.bias_correction.is_empty() {
            let _ = writeln!(s, "\nbias correction (largest / mean change per channel):");
            for b in &self.bias_correction {
                let _ = writeln!(s, "  {:>10.3e} {:>10.3e}  {}", b.largest, b.mean, b.node);
            }
        }
        if !self.float_nodes.is_empty() {
            let _ = writeln!(s, "\nkept in f32:");
            for f in &self.float_nodes {
                let _ = writeln!(s, "  {}: {}", f.node, f.why);
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
