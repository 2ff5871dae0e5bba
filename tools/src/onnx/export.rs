//! `.loam` -> ONNX.
//!
//! loam keeps images channels-last (NHWC) and ONNX's convolution and pooling are
//! channels-first (NCHW), so every 4-D value has a layout here. Layout-bound ops (Conv,
//! pooling, BatchNorm) ask for channels-first values; ops that only need consistent operands
//! (elementwise, Concat, Pad, Softmax over channels) run in whatever layout their inputs
//! already have; ops whose meaning depends on element order (Reshape, Transpose, FC over the
//! last dimension) ask for loam's layout. A `Transpose` is inserted only where a value is
//! wanted in a layout it does not have yet, and each conversion is made once. Weights are
//! reordered here, in the file, so the peers see ordinary ONNX weights and no transposes.
//!
//! int8 models become standard QDQ graphs: an int8 activation is an int8 ONNX value; each
//! consumer dequantizes it (`DequantizeLinear`), computes in float and the producer's result
//! is quantized again with the output's scale and zero point (`QuantizeLinear`). Weights are
//! int8 with per-channel `DequantizeLinear` (axis following the reordering) and biases int32
//! with scale `input_scale * weight_scale`, exactly the integers the `.loam` holds. ONNX
//! Runtime fuses such graphs into its int8 kernels; tract runs them as written. Data-movement
//! ops (Reshape, Transpose, Concat, Pad) move int8 values directly, as loam does.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, anyhow, bail, ensure};
use prost::Message;
use serde::Deserialize;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};

use loam::format::NO_TENSOR;
use loam::format::TensorRecord;
use loam::ops::activation::{ActivationAttributes, Unary};
use loam::ops::binary::BinaryAttributes;
use loam::ops::concat::ConcatAttributes;
use loam::ops::conv2d::Conv2dAttributes;
use loam::ops::depthwise_conv2d::DepthwiseConv2dAttributes;
use loam::ops::fully_connected::FullyConnectedAttributes;
use loam::ops::pad::{PadAttributes, PadValue};
use loam::ops::pool::Pool2dAttributes;
use loam::ops::softmax::SoftmaxAttributes;
use loam::ops::transpose::TransposeAttributes;
use loam::ops::{FusedActivation, OpKind};
use loam::{DType, Model, Quantization};

use super::proto::{Attr, data_type, node, permute, raw, tensor, value_info};
use super::{IR_VERSION, OPSET};

/// The opset of exports with int16 tensors: the first with int16 `QuantizeLinear`.
const INT16_OPSET: i64 = 21;
/// The IR version matching [`INT16_OPSET`].
const INT16_IR_VERSION: i64 = 10;

/// How the exported graph meets its caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Declare 4-D inputs and outputs channels-first (NCHW, as PyTorch exports them) instead
    /// of loam's channels-last, so the ONNX file takes the same arrays as the user's original
    /// model. Off by default: then the ONNX file takes exactly the bytes the `.loam` takes.
    pub channels_first_io: bool,
    /// Leave out the requantization of Softmax and LogSoftmax results (an int8 softmax, or
    /// a Quantize of a float one, is replaced by the float probabilities, and such a graph
    /// output is declared float): for a peer whose fused int8 softmax is wrong, as
    /// tract 0.23.9's ignores the output zero point, so that what is compared is loam's int8
    /// output against the exact float one.
    pub float_softmax_outputs: bool,
    /// Also declare every op's result as a graph output, after the model's own, in
    /// [`exposed_tensors`] order and loam's layout: what `loam verify --per-layer` compares.
    pub expose_intermediates: bool,
}

/// The tensors [`ExportOptions::expose_intermediates`] adds as graph outputs: each op's f32
/// or int8 outputs that are not graph outputs already, in op order.
pub fn exposed_tensors(model: &Model<'_>) -> Vec<u16> {
    let outputs: HashSet<u16> = model.outputs().iter().collect();
    let mut seen = HashSet::new();
    model
        .ops()
        .flat_map(|op| op.outputs.iter().collect::<Vec<_>>())
        .filter(|&t| t != NO_TENSOR && !outputs.contains(&t) && seen.insert(t))
        .filter(|&t| {
            model
                .tensor(usize::from(t))
                .is_some_and(|r| matches!(r.dtype, DType::F32 | DType::I8 | DType::I16))
        })
        .collect()
}

/// Whether `model` has int16 tensors (16x8 layers): its export needs opset 21, and tract
/// cannot run it.
pub fn has_int16_tensors(model: &Model<'_>) -> bool {
    (0..model.tensor_count())
        .filter_map(|i| model.tensor(i))
        .any(|t| t.dtype == DType::I16)
}

/// Whether `model` quantizes a Softmax or LogSoftmax result (what
/// [`ExportOptions::float_softmax_outputs`] changes).
pub fn quantizes_a_softmax(model: &Model<'_>) -> bool {
    model.ops().any(|op| match OpKind::from_code(op.kind) {
        Some(OpKind::Quantize) => softmax_result(model, &op),
        Some(OpKind::Softmax | OpKind::LogSoftmax) => op
            .outputs
            .get(0)
            .and_then(|t| model.tensor(usize::from(t)))
            .is_some_and(|t| t.dtype == DType::I8),
        _ => false,
    })
}

/// Whether `op`'s input 0 is the output of a Softmax or LogSoftmax.
fn softmax_result(model: &Model<'_>, op: &loam::format::OpRecord<'_>) -> bool {
    let Some(x) = op.inputs.get(0) else {
        return false;
    };
    model.ops().any(|p| {
        matches!(
            OpKind::from_code(p.kind),
            Some(OpKind::Softmax | OpKind::LogSoftmax)
        ) && p.outputs.iter().any(|t| t == x)
    })
}

/// Writes `model` as an ONNX model.
pub fn export(model: &Model<'_>, options: ExportOptions) -> Result<ModelProto> {
    Exporter::new(model).run(options)
}

/// [`export`], serialized.
pub fn export_bytes(model: &Model<'_>, options: ExportOptions) -> Result<Vec<u8>> {
    Ok(export(model, options)?.encode_to_vec())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Layout {
    /// loam's order of dimensions (NHWC for images).
    Loam,
    /// A 4-D tensor as NCHW.
    ChannelsFirst,
}

const TO_CHANNELS_FIRST: [usize; 4] = [0, 3, 1, 2];
const TO_CHANNELS_LAST: [usize; 4] = [0, 2, 3, 1];

/// Where dimension `axis` of a loam tensor lands after `perm`.
fn permuted_axis(perm: &[usize], axis: usize) -> usize {
    perm.iter().position(|&p| p == axis).unwrap_or(axis)
}

struct Exporter<'a, 'm> {
    model: &'a Model<'m>,
    graph: GraphProto,
    names: HashSet<String>,
    /// Each tensor's values as loam stores them (f32 or int8), per layout made so far.
    stored: HashMap<(u16, Layout), String>,
    /// Each tensor's real (float) values, per layout made so far.
    real: HashMap<(u16, Layout), String>,
    /// The layout a tensor was produced in.
    native: HashMap<u16, Layout>,
    /// Scale and zero-point initializers of per-tensor quantized tensors.
    qparams: HashMap<u16, (String, String)>,
    /// See [`ExportOptions::float_softmax_outputs`].
    float_softmax_outputs: bool,
    /// int8 tensors exported as their float values (softmax results, with that option).
    floated: HashSet<u16>,
}

impl<'a, 'm> Exporter<'a, 'm> {
    fn new(model: &'a Model<'m>) -> Self {
        Exporter {
            model,
            graph: GraphProto::default(),
            names: HashSet::new(),
            stored: HashMap::new(),
            real: HashMap::new(),
            native: HashMap::new(),
            qparams: HashMap::new(),
            float_softmax_outputs: false,
            floated: HashSet::new(),
        }
    }

    fn run(mut self, options: ExportOptions) -> Result<ModelProto> {
        self.float_softmax_outputs = options.float_softmax_outputs;
        let model = self.model;
        let io_layout = |rec: &TensorRecord<'_>| {
            if options.channels_first_io && rec.shape.rank() == 4 {
                Layout::ChannelsFirst
            } else {
                Layout::Loam
            }
        };
        // Graph inputs and outputs keep their loam names; nothing else may take them.
        for id in model.inputs().iter().chain(model.outputs().iter()) {
            self.names.insert(self.record(id)?.name.to_string());
        }
        for id in model.inputs().iter() {
            let rec = self.record(id)?;
            let layout = io_layout(&rec);
            let dims = layout_dims(&rec, layout);
            ensure!(
                matches!(rec.dtype, DType::F32 | DType::I8 | DType::I16),
                "input `{}` is {}; ONNX export takes f32, int8 and int16 inputs",
                rec.name,
                rec.dtype
            );
            self.graph
                .input
                .push(value_info(rec.name, data_type(rec.dtype), &dims));
            self.stored.insert((id, layout), rec.name.to_string());
            self.native.insert(id, layout);
        }

        let mut problems = Vec::new();
        let mut failed: HashSet<u16> = HashSet::new();
        for (index, op) in model.ops().enumerate() {
            let present = |ids: loam::format::TensorIds<'_>| {
                ids.iter().filter(|&t| t != NO_TENSOR).collect::<Vec<_>>()
            };
            let (inputs, outputs) = (present(op.inputs), present(op.outputs));
            // An op fed by an op that could not be exported is skipped quietly: its own
            // problem, if any, shows once the first one is fixed.
            if inputs.iter().any(|t| failed.contains(t)) {
                failed.extend(outputs);
                continue;
            }
            let kind = OpKind::from_code(op.kind);
            let result = match kind {
                Some(kind) => self.op(kind, op.name, &op).map_err(|e| (kind.name(), e)),
                None => Err(("?", anyhow!("unknown op kind code {}", op.kind))),
            };
            if let Err((kind, e)) = result {
                problems.push(format!("  op {index} `{}` ({kind}): {e:#}", op.name));
                failed.extend(outputs);
            }
        }
        if !problems.is_empty() {
            bail!(
                "{} op(s) cannot be written as ONNX:\n{}",
                problems.len(),
                problems.join("\n")
            );
        }

        for id in model.outputs().iter() {
            let rec = self.record(id)?;
            let layout = io_layout(&rec);
            let (value, dtype) = if self.floated.contains(&id) {
                (self.real(id, layout)?, DType::F32)
            } else {
                (self.stored(id, layout)?, rec.dtype)
            };
            if value != rec.name {
                self.graph
                    .node
                    .push(node("Identity", rec.name, &[&value], &[rec.name], vec![]));
            }
            let dims = layout_dims(&rec, layout);
            self.graph
                .output
                .push(value_info(rec.name, data_type(dtype), &dims));
        }

        if options.expose_intermediates {
            for id in exposed_tensors(model) {
                let rec = self.record(id)?;
                let (value, dtype) = if self.floated.contains(&id) {
                    (self.real(id, Layout::Loam)?, DType::F32)
                } else {
                    (self.stored(id, Layout::Loam)?, rec.dtype)
                };
                let name = self.fresh(&format!("{}.layer", rec.name));
                self.graph
                    .node
                    .push(node("Identity", &name, &[&value], &[&name], vec![]));
                self.graph
                    .output
                    .push(value_info(&name, data_type(dtype), &dims(&rec)));
            }
        }

        let meta = model.metadata();
        self.graph.name = meta.name.to_string();
        let mut metadata_props = vec![];
        let mut prop = |key: &str, value: String| {
            if !value.is_empty() {
                metadata_props.push(StringStringEntryProto {
                    key: key.into(),
                    value,
                });
            }
        };
        prop("loam.version", meta.version.to_string());
        prop("loam.labels", model.labels().collect::<Vec<_>>().join("\n"));
        // int16 quantization is standard ONNX from opset 21 (IR version 10); every other op
        // written here means the same there.
        let wide = has_int16_tensors(model);
        let (ir_version, opset) = if wide {
            (INT16_IR_VERSION, INT16_OPSET)
        } else {
            (IR_VERSION, OPSET)
        };
        Ok(ModelProto {
            ir_version,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            producer_name: "loam".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: meta.description.to_string(),
            graph: Some(self.graph),
            metadata_props,
            ..ModelProto::default()
        })
    }

    fn record(&self, id: u16) -> Result<TensorRecord<'m>> {
        self.model
            .tensor(usize::from(id))
            .with_context(|| format!("tensor {id} is not in the model"))
    }

    /// A name not used yet, derived from `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn initializer(&mut self, base: &str, dt: DataType, dims: &[usize], bytes: Vec<u8>) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(tensor(&name, dt, dims, bytes));
        name
    }

    /// Adds a node with one output named after `base`, and returns that output.
    fn add(
        &mut self,
        op_type: &str,
        base: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let out = self.fresh(base);
        self.graph
            .node
            .push(node(op_type, &out, inputs, &[&out], attrs));
        out
    }

    /// The tensor's stored values (f32 or int8) in `layout`.
    fn stored(&mut self, id: u16, layout: Layout) -> Result<String> {
        if let Some(name) = self.stored.get(&(id, layout)) {
            return Ok(name.clone());
        }
        let rec = self.record(id)?;
        if self.floated.contains(&id) {
            // A consumer needs the int8 values after all: quantize the float ones.
            let real = self.real(id, layout)?;
            let q = self.quantize_linear(id, rec.name, &real)?;
            self.stored.insert((id, layout), q.clone());
            return Ok(q);
        }
        if !self.native.contains_key(&id) {
            let bytes = self
                .model
                .constant_bytes(&rec)
                .with_context(|| format!("tensor `{}` is read before it is written", rec.name))?;
            let name =
                self.initializer(rec.name, data_type(rec.dtype), &dims(&rec), bytes.to_vec());
            self.stored.insert((id, Layout::Loam), name);
            self.native.insert(id, Layout::Loam);
            if layout == Layout::Loam {
                return self.stored(id, layout);
            }
        }
        let native = self.native[&id];
        let from = self.stored[&(id, native)].clone();
        ensure!(
            rec.shape.rank() == 4,
            "tensor `{}` would need a layout change but is not 4-D",
            rec.name
        );
        let (perm, suffix) = match layout {
            Layout::ChannelsFirst => (TO_CHANNELS_FIRST, "nchw"),
            Layout::Loam => (TO_CHANNELS_LAST, "nhwc"),
        };
        let perm = perm.iter().map(|&p| p as i64).collect();
        let out = self.add(
            "Transpose",
            &format!("{}_{suffix}", rec.name),
            &[&from],
            vec![("perm", Attr::Ints(perm))],
        );
        self.stored.insert((id, layout), out.clone());
        Ok(out)
    }

    /// The tensor's real values in `layout`: dequantized if it is int8.
    fn real(&mut self, id: u16, layout: Layout) -> Result<String> {
        if let Some(name) = self.real.get(&(id, layout)) {
            return Ok(name.clone());
        }
        let rec = self.record(id)?;
        let stored = self.stored(id, layout)?;
        let out = match (rec.dtype, rec.quantization) {
            (DType::F32, _) => stored,
            (DType::I8 | DType::I16, Quantization::PerTensor { .. }) => {
                let (scale, zero_point) = self.qparams(id)?;
                self.add(
                    "DequantizeLinear",
                    &format!("{}_dq", rec.name),
                    &[&stored, &scale, &zero_point],
                    vec![],
                )
            }
            (DType::I8, Quantization::PerChannel { axis, .. }) => {
                let perm: &[usize] = match layout {
                    Layout::Loam => &[],
                    Layout::ChannelsFirst => &TO_CHANNELS_FIRST,
                };
                self.dequantize_per_channel(id, &stored, permuted_axis(perm, usize::from(axis)))?
            }
            (dtype, quantization) => bail!(
                "tensor `{}` is {dtype} with {quantization:?}; ONNX export handles f32 and int8",
                rec.name
            ),
        };
        self.real.insert((id, layout), out.clone());
        Ok(out)
    }

    fn dequantize_per_channel(&mut self, id: u16, stored: &str, axis: usize) -> Result<String> {
        let rec = self.record(id)?;
        let scales = self
            .model
            .channel_scales(&rec)
            .with_context(|| format!("per-channel scales of `{}`", rec.name))?
            .to_vec();
        let n = scales.len();
        let scale = self.initializer(
            &format!("{}_scale", rec.name),
            DataType::Float,
            &[n],
            raw(&scales),
        );
        let zero = self.initializer(
            &format!("{}_zero_point", rec.name),
            DataType::Int8,
            &[n],
            vec![0; n],
        );
        Ok(self.add(
            "DequantizeLinear",
            &format!("{}_dq", rec.name),
            &[stored, &scale, &zero],
            vec![("axis", Attr::Int(axis as i64))],
        ))
    }

    /// The scale and zero-point initializers of a per-tensor quantized int8 tensor.
    fn qparams(&mut self, id: u16) -> Result<(String, String)> {
        if let Some(p) = self.qparams.get(&id) {
            return Ok(p.clone());
        }
        let rec = self.record(id)?;
        let Quantization::PerTensor { scale, zero_point } = rec.quantization else {
            bail!("tensor `{}` is not quantized per tensor", rec.name);
        };
        let s = self.initializer(
            &format!("{}_scale", rec.name),
            DataType::Float,
            &[],
            raw(&[scale]),
        );
        let z = if rec.dtype == DType::I16 {
            let zero_point = i16::try_from(zero_point)
                .with_context(|| format!("zero point of `{}` is outside int16", rec.name))?;
            self.initializer(
                &format!("{}_zero_point", rec.name),
                DataType::Int16,
                &[],
                raw(&[zero_point]),
            )
        } else {
            let zero_point = i8::try_from(zero_point)
                .with_context(|| format!("zero point of `{}` is outside int8", rec.name))?;
            self.initializer(
                &format!("{}_zero_point", rec.name),
                DataType::Int8,
                &[],
                raw(&[zero_point]),
            )
        };
        self.qparams.insert(id, (s.clone(), z.clone()));
        Ok((s, z))
    }

    /// A `QuantizeLinear` of `real` with per-tensor int8 tensor `id`'s scale and zero point.
    fn quantize_linear(&mut self, id: u16, name: &str, real: &str) -> Result<String> {
        let (scale, zero_point) = self.qparams(id)?;
        Ok(self.add("QuantizeLinear", name, &[real, &scale, &zero_point], vec![]))
    }

    /// Makes the float `real` stand for int8 tensor `id` (see
    /// [`ExportOptions::float_softmax_outputs`]); a consumer that needs its int8 values gets
    /// them quantized from it.
    fn float_instead(&mut self, id: u16, layout: Layout, real: String) -> Result<()> {
        self.real.insert((id, layout), real);
        self.native.insert(id, layout);
        self.floated.insert(id);
        Ok(())
    }

    /// Makes `real` (float, in `layout`) the value of tensor `id`: quantized first when the
    /// tensor is int8.
    fn produce(&mut self, id: u16, layout: Layout, real: String) -> Result<()> {
        let rec = self.record(id)?;
        match (rec.dtype, rec.quantization) {
            (DType::F32, _) => {
                self.real.insert((id, layout), real.clone());
                self.stored.insert((id, layout), real);
            }
            (DType::I8 | DType::I16, Quantization::PerTensor { .. }) => {
                let q = self.quantize_linear(id, rec.name, &real)?;
                self.stored.insert((id, layout), q);
            }
            (dtype, quantization) => bail!(
                "output `{}` is {dtype} with {quantization:?}; ONNX export handles f32 and \
                 per-tensor int8 and int16 activations",
                rec.name
            ),
        }
        self.native.insert(id, layout);
        Ok(())
    }

    /// Makes `stored` (f32 or int8 as loam stores it, in `layout`) the value of tensor `id`.
    fn produce_stored(&mut self, id: u16, layout: Layout, stored: String) -> Result<()> {
        let rec = self.record(id)?;
        ensure!(
            matches!(rec.dtype, DType::F32 | DType::I8 | DType::I16),
            "tensor `{}` is {}; ONNX export handles f32, int8 and int16",
            rec.name,
            rec.dtype
        );
        if rec.dtype == DType::F32 {
            self.real.insert((id, layout), stored.clone());
        }
        self.stored.insert((id, layout), stored);
        self.native.insert(id, layout);
        Ok(())
    }

    fn native_or_loam(&self, id: u16) -> Layout {
        self.native.get(&id).copied().unwrap_or(Layout::Loam)
    }

    fn scalar_f32(&mut self, base: &str, v: f32) -> String {
        self.initializer(base, DataType::Float, &[], raw(&[v]))
    }

    fn activation(&mut self, x: String, act: FusedActivation, base: &str) -> Result<String> {
        if act == FusedActivation::NONE {
            return Ok(x);
        }
        if act == FusedActivation::RELU {
            return Ok(self.add("Relu", &format!("{base}_relu"), &[&x], vec![]));
        }
        self.clip(x, act.min, act.max, base)
    }

    fn clip(&mut self, x: String, min: f32, max: f32, base: &str) -> Result<String> {
        // An infinite bound is an omitted input (the empty name), ONNX's "no bound".
        let lo = if min.is_finite() {
            self.scalar_f32(&format!("{base}_min"), min)
        } else {
            String::new()
        };
        let hi = if max.is_finite() {
            self.scalar_f32(&format!("{base}_max"), max)
        } else {
            String::new()
        };
        Ok(self.add("Clip", &format!("{base}_clip"), &[&x, &lo, &hi], vec![]))
    }

    /// A weight tensor as an ONNX initializer with its dimensions reordered by `perm`
    /// (dequantized per channel when int8).
    fn weights(&mut self, id: u16, perm: &[usize]) -> Result<String> {
        let rec = self.record(id)?;
        let dims = dims(&rec);
        ensure!(
            perm.len() == dims.len(),
            "weights `{}` have rank {}",
            rec.name,
            dims.len()
        );
        let bytes = self
            .model
            .constant_bytes(&rec)
            .with_context(|| format!("weights `{}` are not a constant", rec.name))?;
        let (reordered, new_dims) = match rec.dtype {
            DType::F32 => {
                let values: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
                let (v, d) = permute(&values, &dims, perm);
                (raw(&v), d)
            }
            // f16 weights go out widened (exactly) to f32: ONNX's Conv and Gemm take one
            // element type for input and weights, and the loam layer computes in f32 on the
            // widened values, so the exported graph computes the same thing.
            DType::F16 => {
                let values: Vec<f32> = bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
                    .iter()
                    .map(|h| h.to_f32())
                    .collect();
                let (v, d) = permute(&values, &dims, perm);
                (raw(&v), d)
            }
            DType::I8 => {
                let (v, d) = permute(bytes, &dims, perm);
                (v, d)
            }
            other => bail!(
                "weights `{}` are {other}; ONNX export handles f32, f16 and int8",
                rec.name
            ),
        };
        let stored_as = match rec.dtype {
            DType::F16 => DType::F32,
            other => other,
        };
        let name = self.initializer(rec.name, data_type(stored_as), &new_dims, reordered);
        match (stored_as, rec.quantization) {
            (DType::F32, _) => Ok(name),
            (DType::I8, Quantization::PerChannel { axis, .. }) => {
                self.dequantize_per_channel(id, &name, permuted_axis(perm, usize::from(axis)))
            }
            (DType::I8, Quantization::PerTensor { .. }) => {
                let (scale, zero_point) = self.qparams(id)?;
                Ok(self.add(
                    "DequantizeLinear",
                    &format!("{name}_dq"),
                    &[&name, &scale, &zero_point],
                    vec![],
                ))
            }
            (_, q) => bail!("weights `{}` have quantization {q:?}", rec.name),
        }
    }

    /// A bias: f32 as it is, int32 dequantized with `input_scale * weight_scale[c]`.
    fn bias(&mut self, bias: u16, input: u16, weights: u16) -> Result<String> {
        let rec = self.record(bias)?;
        match rec.dtype {
            DType::F32 => self.stored(bias, Layout::Loam),
            DType::I32 => {
                let input_scale = self
                    .record(input)?
                    .quantization
                    .scale()
                    .context("int32 bias on an input without a per-tensor scale")?;
                let w = self.record(weights)?;
                let channels = rec.shape.elements().unwrap_or(0);
                let scales: Vec<f32> = match w.quantization {
                    Quantization::PerChannel { .. } => self
                        .model
                        .channel_scales(&w)
                        .context("weight scales")?
                        .iter()
                        .map(|s| input_scale * s)
                        .collect(),
                    Quantization::PerTensor { scale, .. } => vec![input_scale * scale; channels],
                    Quantization::None => bail!("int32 bias with unquantized weights"),
                };
                ensure!(
                    scales.len() == channels,
                    "bias `{}` and weight scales differ in length",
                    rec.name
                );
                let stored = self.stored(bias, Layout::Loam)?;
                let scale = self.initializer(
                    &format!("{}_scale", rec.name),
                    DataType::Float,
                    &[channels],
                    raw(&scales),
                );
                let zero = self.initializer(
                    &format!("{}_zero_point", rec.name),
                    DataType::Int32,
                    &[channels],
                    raw(&vec![0i32; channels]),
                );
                Ok(self.add(
                    "DequantizeLinear",
                    &format!("{}_dq", rec.name),
                    &[&stored, &scale, &zero],
                    vec![("axis", Attr::Int(0))],
                ))
            }
            other => bail!("bias `{}` is {other}", rec.name),
        }
    }

    fn op(&mut self, kind: OpKind, name: &str, op: &loam::format::OpRecord<'_>) -> Result<()> {
        let input = |i: usize| -> Result<u16> {
            op.inputs
                .get(i)
                .filter(|&t| t != NO_TENSOR)
                .with_context(|| format!("input {i} is missing"))
        };
        let optional = |i: usize| op.inputs.get(i).filter(|&t| t != NO_TENSOR);
        let output = op.outputs.get(0).context("the op has no output")?;
        let rank = |e: &Self, id: u16| e.record(id).map(|r| r.shape.rank());
        match kind {
            OpKind::FullyConnected => {
                let a: FullyConnectedAttributes = attributes(op)?;
                let (x, w) = (input(0)?, input(1)?);
                let xr = self.real(x, Layout::Loam)?;
                let bias = optional(2).map(|b| self.bias(b, x, w)).transpose()?;
                let y = if rank(self, x)? == 2 {
                    let wr = self.weights(w, &[0, 1])?;
                    let mut ins = vec![xr.as_str(), wr.as_str()];
                    ins.extend(bias.as_deref());
                    self.add("Gemm", name, &ins, vec![("transB", Attr::Int(1))])
                } else {
                    let wr = self.weights(w, &[1, 0])?;
                    let y = self.add("MatMul", name, &[&xr, &wr], vec![]);
                    match bias {
                        Some(b) => self.add("Add", &format!("{name}_bias"), &[&y, &b], vec![]),
                        None => y,
                    }
                };
                let y = self.activation(y, a.activation, name)?;
                self.produce(output, Layout::Loam, y)
            }
            OpKind::Conv2d | OpKind::DepthwiseConv2d => {
                let (x, w) = (input(0)?, input(1)?);
                let in_channels = self.record(x)?.shape.dims().get(3).copied().unwrap_or(1);
                let (stride, dilation, padding, group, act, perm) = if kind == OpKind::Conv2d {
                    let a: Conv2dAttributes = attributes(op)?;
                    (
                        a.stride,
                        a.dilation,
                        a.padding,
                        u32::from(a.groups),
                        a.activation,
                        [0, 3, 1, 2],
                    )
                } else {
                    let a: DepthwiseConv2dAttributes = attributes(op)?;
                    (
                        a.stride,
                        a.dilation,
                        a.padding,
                        in_channels,
                        a.activation,
                        [3, 0, 1, 2],
                    )
                };
                let wdims = dims(&self.record(w)?);
                ensure!(wdims.len() == 4, "weights are not 4-D");
                let xr = self.real(x, Layout::ChannelsFirst)?;
                let wr = self.weights(w, &perm)?;
                let bias = optional(2).map(|b| self.bias(b, x, w)).transpose()?;
                let mut ins = vec![xr.as_str(), wr.as_str()];
                ins.extend(bias.as_deref());
                let ints = |v: &[u16]| Attr::Ints(v.iter().map(|&x| i64::from(x)).collect());
                let y = self.add(
                    "Conv",
                    name,
                    &ins,
                    vec![
                        (
                            "kernel_shape",
                            Attr::Ints(vec![wdims[1] as i64, wdims[2] as i64]),
                        ),
                        ("strides", ints(&stride)),
                        ("dilations", ints(&dilation)),
                        ("pads", ints(&padding)),
                        ("group", Attr::Int(i64::from(group))),
                    ],
                );
                let y = self.activation(y, act, name)?;
                self.produce(output, Layout::ChannelsFirst, y)
            }
            OpKind::MaxPool2d | OpKind::AveragePool2d => {
                let a: Pool2dAttributes = attributes(op)?;
                let x = input(0)?;
                let xr = self.real(x, Layout::ChannelsFirst)?;
                let ints = |v: &[u32]| Attr::Ints(v.iter().map(|&x| i64::from(x)).collect());
                let op_type = if kind == OpKind::MaxPool2d {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let y = self.add(
                    op_type,
                    name,
                    &[&xr],
                    vec![
                        ("kernel_shape", ints(&a.kernel)),
                        ("strides", ints(&a.stride)),
                        ("pads", ints(&a.padding)),
                    ],
                );
                let y = self.activation(y, a.activation, name)?;
                self.produce(output, Layout::ChannelsFirst, y)
            }
            OpKind::GlobalAveragePool => {
                let xr = self.real(input(0)?, Layout::ChannelsFirst)?;
                let y = self.add("GlobalAveragePool", name, &[&xr], vec![]);
                self.produce(output, Layout::ChannelsFirst, y)
            }
            OpKind::Add | OpKind::Sub | OpKind::Mul => {
                let a: BinaryAttributes = attributes(op)?;
                let (x, y) = (input(0)?, input(1)?);
                let layout = if rank(self, x)? == 4
                    && rank(self, y)? == 4
                    && [x, y]
                        .iter()
                        .any(|&t| self.native_or_loam(t) == Layout::ChannelsFirst)
                {
                    Layout::ChannelsFirst
                } else {
                    Layout::Loam
                };
                let (xr, yr) = (self.real(x, layout)?, self.real(y, layout)?);
                let out = self.add(kind.name(), name, &[&xr, &yr], vec![]);
                let out = self.activation(out, a.activation, name)?;
                self.produce(output, layout, out)
            }
            OpKind::Concat => {
                let a: ConcatAttributes = attributes(op)?;
                let ids: Vec<u16> = op.inputs.iter().filter(|&t| t != NO_TENSOR).collect();
                let mut all4 = true;
                for &t in &ids {
                    all4 &= rank(self, t)? == 4;
                }
                let layout = if all4
                    && ids
                        .iter()
                        .any(|&t| self.native_or_loam(t) == Layout::ChannelsFirst)
                {
                    Layout::ChannelsFirst
                } else {
                    Layout::Loam
                };
                let axis = match layout {
                    Layout::Loam => usize::from(a.axis),
                    Layout::ChannelsFirst => permuted_axis(&TO_CHANNELS_FIRST, usize::from(a.axis)),
                };
                let mut values = Vec::with_capacity(ids.len());
                for &t in &ids {
                    values.push(self.stored(t, layout)?);
                }
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let y = self.add(
                    "Concat",
                    name,
                    &refs,
                    vec![("axis", Attr::Int(axis as i64))],
                );
                self.produce_stored(output, layout, y)
            }
            OpKind::Reshape => {
                let x = self.stored(input(0)?, Layout::Loam)?;
                let out_dims: Vec<i64> = dims(&self.record(output)?)
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                let shape = self.initializer(
                    &format!("{name}_shape"),
                    DataType::Int64,
                    &[out_dims.len()],
                    raw(&out_dims),
                );
                let y = self.add("Reshape", name, &[&x, &shape], vec![]);
                self.produce_stored(output, Layout::Loam, y)
            }
            OpKind::Transpose => {
                let a: TransposeAttributes = attributes(op)?;
                let x = self.stored(input(0)?, Layout::Loam)?;
                let perm = a.perm[..usize::from(a.rank)]
                    .iter()
                    .map(|&p| i64::from(p))
                    .collect();
                let y = self.add("Transpose", name, &[&x], vec![("perm", Attr::Ints(perm))]);
                self.produce_stored(output, Layout::Loam, y)
            }
            OpKind::Pad => {
                let a: PadAttributes = attributes(op)?;
                let x = input(0)?;
                let r = usize::from(a.rank);
                let layout = if r == 4 {
                    self.native_or_loam(x)
                } else {
                    Layout::Loam
                };
                let order: Vec<usize> = match layout {
                    Layout::Loam => (0..r).collect(),
                    Layout::ChannelsFirst => TO_CHANNELS_FIRST.to_vec(),
                };
                let mut pads: Vec<i64> = order.iter().map(|&d| i64::from(a.pads[d][0])).collect();
                pads.extend(order.iter().map(|&d| i64::from(a.pads[d][1])));
                let xs = self.stored(x, layout)?;
                let pads = self.initializer(
                    &format!("{name}_pads"),
                    DataType::Int64,
                    &[pads.len()],
                    raw(&pads),
                );
                let value = match (a.value, self.record(x)?.dtype) {
                    (PadValue::Float(v), DType::F32) => {
                        self.scalar_f32(&format!("{name}_value"), v)
                    }
                    (PadValue::Integer(v), DType::I8) => {
                        let v = i8::try_from(v).context("pad value outside int8")?;
                        self.initializer(&format!("{name}_value"), DataType::Int8, &[], raw(&[v]))
                    }
                    (v, dtype) => bail!("pad value {v:?} on a {dtype} tensor"),
                };
                let y = self.add("Pad", name, &[&xs, &pads, &value], vec![]);
                self.produce_stored(output, layout, y)
            }
            OpKind::Relu
            | OpKind::Clip
            | OpKind::LeakyRelu
            | OpKind::Sigmoid
            | OpKind::Tanh
            | OpKind::HardSigmoid
            | OpKind::HardSwish => {
                let ActivationAttributes::Unary(f) = attributes(op)? else {
                    bail!("attributes are not a unary function's");
                };
                let x = input(0)?;
                let layout = self.native_or_loam(x);
                let xr = self.real(x, layout)?;
                let y = match f {
                    Unary::Relu => self.add("Relu", name, &[&xr], vec![]),
                    Unary::Clip { min, max } => self.clip(xr, min, max, name)?,
                    Unary::LeakyRelu { alpha } => self.add(
                        "LeakyRelu",
                        name,
                        &[&xr],
                        vec![("alpha", Attr::Float(alpha))],
                    ),
                    Unary::Sigmoid => self.add("Sigmoid", name, &[&xr], vec![]),
                    Unary::Tanh => self.add("Tanh", name, &[&xr], vec![]),
                    Unary::HardSigmoid { alpha, beta } => self.add(
                        "HardSigmoid",
                        name,
                        &[&xr],
                        vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta))],
                    ),
                    Unary::HardSwish => self.add("HardSwish", name, &[&xr], vec![]),
                };
                self.produce(output, layout, y)
            }
            OpKind::PRelu => {
                let (x, slope) = (input(0)?, input(1)?);
                let xr = self.real(x, Layout::Loam)?;
                let sr = self.real(slope, Layout::Loam)?;
                let y = self.add("PRelu", name, &[&xr, &sr], vec![]);
                self.produce(output, Layout::Loam, y)
            }
            OpKind::BatchNorm => {
                let ActivationAttributes::BatchNorm { epsilon } = attributes(op)? else {
                    bail!("attributes are not BatchNorm's");
                };
                let x = input(0)?;
                let layout = match rank(self, x)? {
                    4 => Layout::ChannelsFirst,
                    2 => Layout::Loam,
                    r => bail!(
                        "BatchNorm over the last dimension of a rank-{r} tensor has no ONNX form"
                    ),
                };
                let xr = self.real(x, layout)?;
                let mut ins = vec![xr];
                for i in 1..5 {
                    let t = input(i)?;
                    ins.push(self.real(t, Layout::Loam)?);
                }
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                let y = self.add(
                    "BatchNormalization",
                    name,
                    &refs,
                    vec![("epsilon", Attr::Float(epsilon))],
                );
                self.produce(output, layout, y)
            }
            OpKind::Softmax | OpKind::LogSoftmax => {
                let a: SoftmaxAttributes = attributes(op)?;
                let x = input(0)?;
                let (layout, axis) =
                    if rank(self, x)? == 4 && self.native_or_loam(x) == Layout::ChannelsFirst {
                        (Layout::ChannelsFirst, 1)
                    } else {
                        (Layout::Loam, -1)
                    };
                let mut xr = self.real(x, layout)?;
                if a.beta != 1.0 {
                    let beta = self.scalar_f32(&format!("{name}_beta"), a.beta);
                    xr = self.add("Mul", &format!("{name}_scaled"), &[&xr, &beta], vec![]);
                }
                let y = self.add(kind.name(), name, &[&xr], vec![("axis", Attr::Int(axis))]);
                if self.float_softmax_outputs && self.record(output)?.dtype == DType::I8 {
                    return self.float_instead(output, layout, y);
                }
                self.produce(output, layout, y)
            }
            OpKind::Quantize | OpKind::Dequantize => {
                let x = input(0)?;
                let layout = self.native_or_loam(x);
                let xr = self.real(x, layout)?;
                if kind == OpKind::Quantize
                    && self.float_softmax_outputs
                    && softmax_result(self.model, op)
                {
                    return self.float_instead(output, layout, xr);
                }
                self.produce(output, layout, xr)
            }
            other => bail!("{other} has no ONNX export yet"),
        }
    }
}

fn attributes<'a, A: Deserialize<'a>>(op: &loam::format::OpRecord<'a>) -> Result<A> {
    postcard::from_bytes(op.attributes).map_err(|e| anyhow!("attributes do not decode: {e}"))
}

fn dims(rec: &TensorRecord<'_>) -> Vec<usize> {
    rec.shape.dims().iter().map(|&d| d as usize).collect()
}

fn layout_dims(rec: &TensorRecord<'_>, layout: Layout) -> Vec<usize> {
    let d = dims(rec);
    match layout {
        Layout::Loam => d,
        Layout::ChannelsFirst => TO_CHANNELS_FIRST.iter().map(|&p| d[p]).collect(),
    }
}
