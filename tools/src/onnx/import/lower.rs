//! ONNX nodes to loam ops.
//!
//! Layout: ONNX images are NCHW and loam's are NHWC. Every runtime value remembers whether
//! loam holds it as ONNX shapes it ([`Layout::Plain`]) or with the channel axis moved last
//! ([`Layout::ChannelsLast`], rank 4 only). Convolutions and pooling produce channels-last
//! values, elementwise ops keep their operands' layout, and a Transpose is emitted only where
//! an op needs the other layout (a Reshape that reorders elements, a graph output).
//!
//! Quantization: a QDQ model marks every int8 tensor with a `QuantizeLinear` and reads it
//! back through a `DequantizeLinear`. A float ONNX value that is the dequantization of an
//! int8 loam tensor is [`Repr::Dequantized`]; an op whose inputs are all such values, whose
//! weights are quantized constants and whose output goes (perhaps through a ReLU or Clip)
//! into one `QuantizeLinear` becomes the native int8 op with the file's own integer weights.
//! Ops that keep their input's scale (pooling, reshapes, concatenation of equal scales,
//! padding) run on the int8 tensor directly. Anything else runs in f32 between a Dequantize
//! and a Quantize, and the import notes say which nodes did.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use loam::format::writer::{Built, ModelBuilder, QuantSpec, QuantizedWeights, TensorId};
use loam::ops::FusedActivation;
use loam::ops::activation::Unary;
use loam::ops::binary::BinaryOp;
use loam::ops::conv2d::ConvSpec;
use loam::ops::softmax::{LOG_SOFTMAX_OUTPUT, SOFTMAX_OUTPUT};
use loam::quant::QuantParams;
use loam::{DType, quant};

use crate::onnx::proto::permute;
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::prelude::{DatumType, Tensor};

use super::attrs::{self, input, node_name};
use super::report::Problem;
use super::{ImportOptions, MAX_ELEMENTS, Values, tensor_f32, within_limit};

/// How loam holds a value relative to its ONNX shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Same dimensions as ONNX.
    Plain,
    /// ONNX `[N, C, H, W]` held as `[N, H, W, C]`.
    ChannelsLast,
}

/// loam dimension `i` of a channels-last value is ONNX dimension `NCHW_OF_NHWC[i]`.
const NCHW_OF_NHWC: [usize; 4] = [0, 2, 3, 1];
/// ONNX dimension `j` of a channels-last value is loam dimension `NHWC_OF_NCHW[j]`.
const NHWC_OF_NCHW: [usize; 4] = [0, 3, 1, 2];

/// The integer type of a quantize or dequantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bits {
    U8,
    I8,
    I16,
}

/// What a runtime loam tensor stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Repr {
    /// A float ONNX value held in f32.
    Float,
    /// An integer ONNX value (a `QuantizeLinear` output) with these parameters (uint8 ones
    /// moved to int8 by subtracting 128, which keeps every real value).
    Int8(QuantParams),
    /// A float ONNX value that is exactly the dequantization of this int8 tensor.
    Dequantized(QuantParams),
    /// An int16 ONNX value (a `QuantizeLinear` with an int16 zero point).
    Int16(QuantParams),
    /// A float ONNX value that is exactly the dequantization of this int16 tensor; only 16x8
    /// layers read it as it is, other ops dequantize it.
    Dequantized16(QuantParams),
}

impl Repr {
    fn params(self) -> Option<QuantParams> {
        match self {
            Repr::Float | Repr::Int16(_) | Repr::Dequantized16(_) => None,
            Repr::Int8(p) | Repr::Dequantized(p) => Some(p),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Runtime {
    id: TensorId,
    layout: Layout,
    repr: Repr,
}

/// A `DequantizeLinear` of a constant: the integers and their parameters, kept so an int8 op
/// uses the very weights the file has.
#[derive(Debug)]
struct QuantConst {
    ints: Vec<i32>,
    dims: Vec<usize>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    /// The axis the scales run along, when there is more than one.
    axis: Option<usize>,
    real: Vec<f32>,
}

impl QuantConst {
    fn channel_of(&self, index: usize) -> usize {
        match self.axis {
            None => 0,
            Some(axis) => {
                let inner: usize = self.dims[axis + 1..].iter().product();
                (index / inner.max(1)) % self.dims[axis]
            }
        }
    }

    /// The weights as symmetric int8 with one scale per channel along `axis` (which has
    /// `channels` entries): `q - zero_point` for each, if all of them fit in int8.
    fn int8_along(&self, axis: usize, channels: usize) -> Option<(Vec<i8>, Vec<f32>)> {
        let scales = match self.axis {
            None => vec![self.scales[0]; channels],
            Some(a) if a == axis && self.scales.len() == channels => self.scales.clone(),
            Some(_) => return None,
        };
        let values = self
            .ints
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let zp = self.zero_points[self.channel_of(i).min(self.zero_points.len() - 1)];
                i8::try_from(q - zp).ok()
            })
            .collect::<Option<Vec<i8>>>()?;
        Some((values, scales))
    }
}

#[derive(Debug, Clone)]
enum Value {
    Const(Arc<Tensor>),
    QuantConst(Arc<QuantConst>),
    Runtime(Runtime),
}

/// What follows an op and can be folded into it.
#[derive(Default)]
struct Tail {
    /// A BatchNormalization right after it: its node and per-channel `(scale, shift)`.
    batch_norm: Option<(usize, Vec<f32>, Vec<f32>)>,
    /// A ReLU or Clip after it (or after the BatchNorm).
    activation: Option<(usize, FusedActivation)>,
    /// The int8 `QuantizeLinear` that ends the chain.
    quantize: Option<(usize, QuantParams)>,
    /// The int16 `QuantizeLinear` that ends the chain instead.
    quantize16: Option<(usize, QuantParams)>,
}

/// Which ops before the quantize a [`Tail`] may take.
#[derive(Debug, Clone, Copy)]
struct Fold {
    /// A BatchNorm (into float convolution weights).
    batch_norm: bool,
    /// A ReLU or Clip (into the op's output clamp).
    activation: bool,
}

impl Fold {
    /// Only a quantize right after the op.
    const QUANTIZE: Fold = Fold {
        batch_norm: false,
        activation: false,
    };
    /// A ReLU/Clip, then a quantize.
    const ACTIVATION: Fold = Fold {
        batch_norm: false,
        activation: true,
    };
}

impl Tail {
    fn activation(&self) -> FusedActivation {
        self.activation.map_or(FusedActivation::NONE, |(_, a)| a)
    }
}

type Lowered<T> = Result<T, String>;

/// A constant input: its values as floats, its dimensions, and the integers behind it when it
/// is a dequantized constant.
type ConstantInput = (Vec<f32>, Vec<usize>, Option<Arc<QuantConst>>);

/// The message of an error that only repeats an earlier node's problem.
const POISONED: &str = "";

/// Lowers the whole graph; `Err` carries every problem found.
pub(crate) fn lower(
    graph: &GraphProto,
    opset: i64,
    values: &Values,
    inputs: &[(String, Vec<usize>)],
    options: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<Built, Vec<Problem>> {
    let name = options.name.clone().unwrap_or_else(|| {
        if graph.name.is_empty() {
            "imported".into()
        } else {
            graph.name.clone()
        }
    });
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for name in node.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(name.clone()).or_default().push(i);
        }
    }
    let mut lowerer = Lowerer {
        graph,
        opset,
        values,
        b: ModelBuilder::new(&name),
        env: HashMap::new(),
        consumers,
        graph_outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        fused: HashSet::new(),
        dequantized: HashMap::new(),
        relaid: HashMap::new(),
        notes,
    };
    lowerer.b.metadata.description = format!("imported from ONNX (opset {opset})");
    lowerer.b.metadata.constants = options.constants.clone();
    let mut problems = Vec::new();
    for (name, dims) in inputs {
        match lowerer.b.tensor(name, DType::F32, dims, QuantSpec::None) {
            Ok(id) => {
                lowerer.b.input(id);
                lowerer.env.insert(
                    name.clone(),
                    Value::Runtime(Runtime {
                        id,
                        layout: Layout::Plain,
                        repr: Repr::Float,
                    }),
                );
            }
            Err(e) => problems.push(Problem {
                node: name.clone(),
                op: "input".into(),
                what: e.to_string(),
            }),
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        if lowerer.fused.contains(&i) {
            continue;
        }
        // A folded node's outputs are read from `values` when used. A DequantizeLinear of a
        // constant is lowered all the same, to keep the integers behind the floats.
        if node.op_type != "DequantizeLinear" && values.folds(node) {
            continue;
        }
        if let Err(what) = lowerer.node(node)
            && what != POISONED
        {
            problems.push(Problem {
                node: node_name(node),
                op: node.op_type.clone(),
                what,
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for output in &graph.output {
        if let Err(what) = lowerer.graph_output(&output.name) {
            problems.push(Problem {
                node: output.name.clone(),
                op: "graph output".into(),
                what,
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if has_f16_constants(graph) {
        // Weights stored as f16 in the file (cast to f32 for the layers) stay f16 in the
        // `.loam` where that changes nothing: the tensors whose every value f16 holds.
        let kept = lowerer.b.store_exact_float_weights_as_f16();
        if kept.tensors > 0 {
            lowerer.notes.push(format!(
                "{} weight tensors ({} weights) keep the file's f16 storage (computed in f32)",
                kept.tensors, kept.weights
            ));
        }
    }
    lowerer.b.build().map_err(|e| {
        vec![Problem {
            node: name,
            op: "model".into(),
            what: format!("the lowered model does not validate: {e}"),
        }]
    })
}

/// Whether the graph stores any constant as binary16 (an initializer or a Constant node).
fn has_f16_constants(graph: &GraphProto) -> bool {
    let f16 = tract_onnx::pb::tensor_proto::DataType::Float16 as i32;
    graph.initializer.iter().any(|t| t.data_type == f16)
        || graph.node.iter().any(|n| {
            n.op_type == "Constant"
                && n.attribute
                    .iter()
                    .any(|a| a.t.as_ref().is_some_and(|t| t.data_type == f16))
        })
}

struct Lowerer<'g, 'n> {
    graph: &'g GraphProto,
    opset: i64,
    values: &'g Values,
    b: ModelBuilder,
    env: HashMap<String, Value>,
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
    /// Nodes already lowered as part of an earlier node (BatchNorm, activation, quantize).
    fused: HashSet<usize>,
    /// The f32 copy of each int8 tensor that a float op needed.
    dequantized: HashMap<TensorId, TensorId>,
    /// The other-layout copy of each tensor that needed one.
    relaid: HashMap<TensorId, TensorId>,
    notes: &'n mut Vec<String>,
}

fn build_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn dims_of(t: &Tensor) -> Vec<usize> {
    t.shape().to_vec()
}

fn tensor_i64(t: &Tensor) -> Lowered<Vec<i64>> {
    let cast = t
        .cast_to::<i64>()
        .map_err(|e| format!("a constant does not convert to integers: {e}"))?;
    Ok(cast
        .to_plain_array_view::<i64>()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect())
}

/// Whether an image of ONNX `dims` `[N, C, H, W]` has the same element order channels-last:
/// so when C or H*W is 1.
fn same_order(dims: &[usize]) -> bool {
    dims[1] == 1 || dims[2] * dims[3] == 1
}

fn normalize_axis(axis: i64, rank: usize) -> Lowered<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

impl Lowerer<'_, '_> {
    // ----- values -------------------------------------------------------------------------

    fn value(&self, name: &str) -> Lowered<Value> {
        if let Some(v) = self.env.get(name) {
            return Ok(v.clone());
        }
        if let Some(t) = self.values.constant(name) {
            return Ok(Value::Const(t.clone()));
        }
        Err(POISONED.into())
    }

    fn input_value(&self, node: &NodeProto, i: usize) -> Lowered<Value> {
        let name = input(node, i).ok_or_else(|| format!("input {i} is missing"))?;
        self.value(name)
    }

    fn runtime(&self, node: &NodeProto, i: usize) -> Lowered<Runtime> {
        match self.input_value(node, i)? {
            Value::Runtime(r) => Ok(r),
            _ => Err(format!(
                "input {i} is a constant where loam needs a value computed at run time"
            )),
        }
    }

    /// A constant input as floats with its dimensions, and the integers behind it if it is
    /// a dequantized constant.
    fn constant(&self, node: &NodeProto, i: usize) -> Lowered<ConstantInput> {
        match self.input_value(node, i)? {
            Value::Const(t) => Ok((tensor_f32(&t)?, dims_of(&t), None)),
            Value::QuantConst(q) => Ok((q.real.clone(), q.dims.clone(), Some(q))),
            Value::Runtime(_) => Err(format!(
                "input {i} is computed at run time; loam needs it constant"
            )),
        }
    }

    fn optional_constant(&self, node: &NodeProto, i: usize) -> Lowered<Option<Vec<f32>>> {
        match input(node, i) {
            None => Ok(None),
            Some(_) => self.constant(node, i).map(|(v, _, _)| Some(v)),
        }
    }

    fn int_constant(&self, node: &NodeProto, i: usize) -> Lowered<Option<Vec<i64>>> {
        match input(node, i) {
            None => Ok(None),
            Some(_) => match self.input_value(node, i)? {
                Value::Const(t) => tensor_i64(&t).map(Some),
                _ => Err(format!("input {i} must be a constant list of integers")),
            },
        }
    }

    fn set(&mut self, name: &str, value: Value) {
        self.env.insert(name.to_string(), value);
    }

    fn set_runtime(&mut self, name: &str, id: TensorId, layout: Layout, repr: Repr) {
        self.set(name, Value::Runtime(Runtime { id, layout, repr }));
    }

    fn loam_dims(&self, id: TensorId) -> Vec<usize> {
        self.b
            .shape(id)
            .map(|s| s.dims().iter().map(|&d| d as usize).collect())
            .unwrap_or_default()
    }

    /// The ONNX dimensions of a runtime value.
    fn onnx_dims(&self, r: Runtime) -> Vec<usize> {
        let d = self.loam_dims(r.id);
        match r.layout {
            Layout::Plain => d,
            Layout::ChannelsLast => NHWC_OF_NCHW.iter().map(|&i| d[i]).collect(),
        }
    }

    fn note(&mut self, node: &NodeProto, what: &str) {
        self.notes
            .push(format!("`{}` ({}) {what}", node_name(node), node.op_type));
    }

    // ----- conversions --------------------------------------------------------------------

    /// `r` as an f32 tensor (a Dequantize op for an int8 one, made once per tensor).
    fn float(&mut self, r: Runtime) -> Lowered<Runtime> {
        if r.repr == Repr::Float {
            return Ok(r);
        }
        let id = match self.dequantized.get(&r.id) {
            Some(&id) => id,
            None => {
                let name = format!("{}.f32", self.tensor_name(r.id));
                let id = self.b.dequantize(&name, r.id).map_err(build_err)?;
                self.dequantized.insert(r.id, id);
                id
            }
        };
        Ok(Runtime {
            id,
            layout: r.layout,
            repr: Repr::Float,
        })
    }

    fn tensor_name(&self, id: TensorId) -> String {
        format!("t{}", id.0)
    }

    /// `r` in `layout` (a Transpose op when it differs, made once per tensor).
    fn relayout(&mut self, r: Runtime, layout: Layout) -> Lowered<Runtime> {
        if r.layout == layout {
            return Ok(r);
        }
        let dims = self.loam_dims(r.id);
        if dims.len() != 4 {
            return Err(format!(
                "a rank-{} value where loam needs an image [N, C, H, W]",
                dims.len()
            ));
        }
        let id = match self.relaid.get(&r.id) {
            Some(&id) => id,
            None => {
                let (perm, suffix) = match layout {
                    Layout::ChannelsLast => (NCHW_OF_NHWC, "nhwc"),
                    Layout::Plain => (NHWC_OF_NCHW, "nchw"),
                };
                let name = format!("{}.{suffix}", self.tensor_name(r.id));
                let id = self.b.transpose(&name, r.id, &perm).map_err(build_err)?;
                self.relaid.insert(r.id, id);
                id
            }
        };
        Ok(Runtime { id, layout, ..r })
    }

    /// The `QuantizeLinear`/`DequantizeLinear` parameters of `node` as int8 parameters, and
    /// whether the integer side is uint8.
    fn q_params(&self, node: &NodeProto) -> Lowered<(Vec<f32>, Vec<i32>, Bits)> {
        let (scales, _, _) = self.constant(node, 1)?;
        let (zero_points, bits) = match input(node, 2) {
            None => (vec![0], Bits::U8),
            Some(_) => match self.input_value(node, 2)? {
                Value::Const(t) => {
                    let bits = match t.datum_type() {
                        DatumType::U8 => Bits::U8,
                        DatumType::I16 => Bits::I16,
                        _ => Bits::I8,
                    };
                    let z = tensor_i64(&t)?.into_iter().map(|z| z as i32).collect();
                    (z, bits)
                }
                _ => return Err("the zero point must be a constant".into()),
            },
        };
        if scales.is_empty()
            || zero_points.is_empty()
            || (zero_points.len() != 1 && zero_points.len() != scales.len())
        {
            return Err(format!(
                "{} scales and {} zero points do not pair up",
                scales.len(),
                zero_points.len()
            ));
        }
        Ok((scales, zero_points, bits))
    }

    /// The per-tensor parameters of an activation's quantize or dequantize (uint8 ones moved
    /// to int8), and whether the integers are int16.
    fn per_tensor_params(&self, node: &NodeProto) -> Lowered<(QuantParams, bool)> {
        let (scales, zps, bits) = self.q_params(node)?;
        if scales.len() != 1 || zps.len() != 1 {
            return Err("per-axis quantization of an activation is not supported".into());
        }
        let shift = if bits == Bits::U8 { 128 } else { 0 };
        let p = QuantParams {
            scale: scales[0],
            zero_point: zps[0] - shift,
        };
        if bits == Bits::I16 && p.zero_point != 0 {
            return Err(format!(
                "an int16 activation with zero point {}; loam's int16 activations are symmetric \
                 (zero point 0)",
                p.zero_point
            ));
        }
        Ok((p, bits == Bits::I16))
    }

    // ----- fusion -------------------------------------------------------------------------

    /// The node that alone reads `value`, if it is not also a graph output.
    fn single_consumer(&self, value: &str) -> Option<(usize, &NodeProto)> {
        if self.graph_outputs.contains(value) {
            return None;
        }
        match self.consumers.get(value).map(Vec::as_slice) {
            Some(&[i]) if !self.fused.contains(&i) => Some((i, &self.graph.node[i])),
            _ => None,
        }
    }

    /// The ReLU/Clip bounds of `node`, if it is one with constant bounds.
    fn activation_of(&self, node: &NodeProto) -> Option<FusedActivation> {
        match node.op_type.as_str() {
            "Relu" => Some(FusedActivation::RELU),
            "Clip" => {
                let (min, max) = if self.opset >= 11 {
                    let bound = |i: usize, default: f32| -> Option<f32> {
                        match input(node, i) {
                            None => Some(default),
                            Some(_) => match self.input_value(node, i).ok()? {
                                Value::Const(t) => tensor_f32(&t).ok()?.first().copied(),
                                _ => None,
                            },
                        }
                    };
                    (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
                } else {
                    (
                        attrs::float(node, "min").unwrap_or(f32::NEG_INFINITY),
                        attrs::float(node, "max").unwrap_or(f32::INFINITY),
                    )
                };
                (min <= max).then_some(FusedActivation { min, max })
            }
            _ => None,
        }
    }

    /// What can be folded after the op producing `out`: what `fold` allows, then a quantize.
    /// The quantize must follow what is folded: one after an activation that is not folded
    /// belongs to that activation.
    fn tail(&self, out: &str, fold: Fold) -> Tail {
        let mut tail = Tail::default();
        let mut current = out.to_string();
        if fold.batch_norm
            && let Some((i, node)) = self.single_consumer(&current)
            && node.op_type == "BatchNormalization"
            && input(node, 0) == Some(current.as_str())
            && let Ok((scale, shift)) = self.batch_norm_affine(node)
        {
            tail.batch_norm = Some((i, scale, shift));
            current = node.output[0].clone();
        }
        if fold.activation
            && let Some((i, node)) = self.single_consumer(&current)
            && input(node, 0) == Some(current.as_str())
            && let Some(a) = self.activation_of(node)
        {
            tail.activation = Some((i, a));
            current = node.output[0].clone();
        }
        if let Some((i, node)) = self.single_consumer(&current)
            && node.op_type == "QuantizeLinear"
            && input(node, 0) == Some(current.as_str())
            && let Ok((p, wide)) = self.per_tensor_params(node)
        {
            if wide {
                tail.quantize16 = Some((i, p));
            } else {
                tail.quantize = Some((i, p));
            }
        }
        tail
    }

    /// The ONNX name of the last float value of a tail that was folded (before its quantize).
    fn tail_float_name(&self, out: &str, tail: &Tail) -> String {
        if let Some((i, _)) = tail.activation {
            return self.graph.node[i].output[0].clone();
        }
        if let Some((i, _, _)) = tail.batch_norm {
            return self.graph.node[i].output[0].clone();
        }
        out.to_string()
    }

    /// Records a float op's output `id` for the folded tail of `out`.
    fn finish_float(&mut self, out: &str, tail: &Tail, id: TensorId, layout: Layout) {
        if let Some((i, _, _)) = tail.batch_norm {
            self.fused.insert(i);
        }
        if let Some((i, _)) = tail.activation {
            self.fused.insert(i);
        }
        let name = self.tail_float_name(out, tail);
        self.set_runtime(&name, id, layout, Repr::Float);
    }

    /// Records an int8 op's output `id`, which stands for the tail's quantized value.
    fn finish_int8(&mut self, out: &str, tail: &Tail, id: TensorId, layout: Layout) {
        self.finish_integer(out, tail, id, layout, false);
    }

    /// Records an integer op's output `id`, which stands for the tail's int8 (or, `wide`,
    /// int16) value.
    fn finish_integer(&mut self, out: &str, tail: &Tail, id: TensorId, layout: Layout, wide: bool) {
        let quantize = if wide { tail.quantize16 } else { tail.quantize };
        let Some((q, params)) = quantize else {
            return;
        };
        if let Some((i, _)) = tail.activation {
            self.fused.insert(i);
        }
        self.fused.insert(q);
        let float_name = self.tail_float_name(out, tail);
        let (dequantized, int) = if wide {
            (Repr::Dequantized16(params), Repr::Int16(params))
        } else {
            (Repr::Dequantized(params), Repr::Int8(params))
        };
        self.set_runtime(&float_name, id, layout, dequantized);
        let q_out = self.graph.node[q].output[0].clone();
        self.set_runtime(&q_out, id, layout, int);
    }

    /// The route of a weighted layer whose input and output are both quantized: its input and
    /// output parameters, and whether they are int16 (a 16x8 layer) rather than int8.
    fn integer_route(x: &Runtime, tail: &Tail) -> Option<((QuantParams, QuantParams), bool)> {
        Self::int16_route(x, tail)
            .map(|r| (r, true))
            .or_else(|| Self::int8_route(x, tail).map(|r| (r, false)))
    }

    /// The int16 input and output parameters if `x` is int16 and the tail ends in an int16
    /// quantize: a 16x8 layer.
    fn int16_route(x: &Runtime, tail: &Tail) -> Option<(QuantParams, QuantParams)> {
        match (x.repr, tail.quantize16, &tail.batch_norm) {
            (Repr::Dequantized16(pin), Some((_, pout)), None) => Some((pin, pout)),
            _ => None,
        }
    }

    /// The int8 output parameters if `x` is int8 and the tail ends in a quantize.
    fn int8_route(x: &Runtime, tail: &Tail) -> Option<(QuantParams, QuantParams)> {
        match (x.repr, tail.quantize, &tail.batch_norm) {
            (Repr::Dequantized(pin), Some((_, pout)), None) => Some((pin, pout)),
            _ => None,
        }
    }

    // ----- nodes --------------------------------------------------------------------------

    fn node(&mut self, node: &NodeProto) -> Lowered<()> {
        let out = node.output.first().cloned().unwrap_or_default();
        match node.op_type.as_str() {
            "Conv" => self.conv(node, &out),
            "Gemm" => self.dense(node, &out, true),
            "MatMul" => self.dense(node, &out, false),
            "BatchNormalization" => self.batch_norm(node, &out),
            "Add" => self.binary(node, &out, BinaryOp::Add),
            "Sub" => self.binary(node, &out, BinaryOp::Sub),
            "Mul" => self.binary(node, &out, BinaryOp::Mul),
            "Div" => self.binary(node, &out, BinaryOp::Mul),
            "Relu" => self.unary(node, &out, Unary::Relu),
            "Clip" => {
                let a = self
                    .activation_of(node)
                    .ok_or("Clip bounds must be constants with min <= max")?;
                self.unary(
                    node,
                    &out,
                    Unary::Clip {
                        min: a.min,
                        max: a.max,
                    },
                )
            }
            "LeakyRelu" => {
                let alpha = attrs::float(node, "alpha").unwrap_or(0.01);
                self.unary(node, &out, Unary::LeakyRelu { alpha })
            }
            "Sigmoid" => self.unary(node, &out, Unary::Sigmoid),
            "Tanh" => self.unary(node, &out, Unary::Tanh),
            "HardSigmoid" => {
                let alpha = attrs::float(node, "alpha").unwrap_or(0.2);
                let beta = attrs::float(node, "beta").unwrap_or(0.5);
                self.unary(node, &out, Unary::HardSigmoid { alpha, beta })
            }
            "HardSwish" => self.unary(node, &out, Unary::HardSwish),
            "PRelu" => self.prelu(node, &out),
            "Softmax" => self.softmax(node, &out, false),
            "LogSoftmax" => self.softmax(node, &out, true),
            "MaxPool" => self.pool(node, &out, true, false),
            "AveragePool" => self.pool(node, &out, false, false),
            "GlobalMaxPool" => self.pool(node, &out, true, true),
            "GlobalAveragePool" => self.global_average(node, &out, true),
            "ReduceMean" => self.reduce_mean(node, &out),
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => self.reshape(node, &out),
            "Identity" | "Dropout" => {
                let v = self.input_value(node, 0)?;
                self.set(&out, v);
                Ok(())
            }
            "Transpose" => self.transpose(node, &out),
            "Concat" => self.concat(node, &out),
            "Pad" => self.pad(node, &out),
            "QuantizeLinear" => self.quantize(node, &out),
            "DequantizeLinear" => self.dequantize(node, &out),
            other => Err(format!("`{other}` is not an op loam runs")),
        }?;
        // No value may exceed what an arena can address, whatever shape the file claims.
        if let Some(Value::Runtime(r)) = self.env.get(&out) {
            let dims = self.loam_dims(r.id);
            if !within_limit(&dims) {
                return Err(format!(
                    "its output of shape {dims:?} exceeds loam's limit of {MAX_ELEMENTS} elements"
                ));
            }
        }
        Ok(())
    }

    /// `[top, left, bottom, right]` padding of a 2-D window op on an `(h, w)` input.
    fn padding(
        node: &NodeProto,
        size: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> Lowered<[usize; 4]> {
        let auto = attrs::string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => {
                let pads = attrs::ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                    return Err(format!("pads {pads:?} are not 4 non-negative numbers"));
                }
                Ok([
                    pads[0] as usize,
                    pads[1] as usize,
                    pads[2] as usize,
                    pads[3] as usize,
                ])
            }
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let total = |n: usize, k: usize, s: usize, d: usize| {
                    let out = n.div_ceil(s);
                    ((out - 1) * s + (k - 1) * d + 1).saturating_sub(n)
                };
                let th = total(size.0, kernel.0, stride.0, dilation.0);
                let tw = total(size.1, kernel.1, stride.1, dilation.1);
                let split = |t: usize| {
                    if auto == "SAME_UPPER" {
                        (t / 2, t - t / 2)
                    } else {
                        (t - t / 2, t / 2)
                    }
                };
                let (top, bottom) = split(th);
                let (left, right) = split(tw);
                Ok([top, left, bottom, right])
            }
            other => Err(format!("auto_pad `{other}` is not an ONNX value")),
        }
    }

    fn pair(node: &NodeProto, name: &str, default: usize) -> Lowered<(usize, usize)> {
        match attrs::ints(node, name) {
            None => Ok((default, default)),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => {
                Ok((v[0] as usize, v[1] as usize))
            }
            Some(v) => Err(format!("{name} {v:?} is not two positive numbers")),
        }
    }

    fn conv(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let (w_real, wd, wq) = self.constant(node, 1)?;
        if wd.len() != 4 {
            return Err("only 2-D convolutions are supported".into());
        }
        let groups = attrs::int(node, "group").unwrap_or(1).max(1) as usize;
        let x = self.relayout(x, Layout::ChannelsLast)?;
        let [_, h, w, c] = <[usize; 4]>::try_from(self.loam_dims(x.id))
            .map_err(|_| "the input is not an image [N, C, H, W]")?;
        if wd[1].checked_mul(groups) != Some(c) {
            return Err(format!(
                "weight of shape {wd:?} with {groups} groups does not fit {c} input channels"
            ));
        }
        let kernel = (wd[2], wd[3]);
        let stride = Self::pair(node, "strides", 1)?;
        let dilation = Self::pair(node, "dilations", 1)?;
        let padding = Self::padding(node, (h, w), kernel, stride, dilation)?;
        let spec = ConvSpec {
            out_channels: wd[0],
            kernel,
            stride,
            dilation,
            padding,
            groups,
        };
        let depthwise = groups > 1 && groups == c && wd[1] == 1;
        // ONNX [O][I/g][kh][kw] -> loam [O][kh][kw][I/g], or [kh][kw][O] for depthwise.
        let perm: [usize; 4] = if depthwise {
            [1, 2, 3, 0]
        } else {
            [0, 2, 3, 1]
        };
        let tail = self.tail(
            out,
            Fold {
                batch_norm: wq.is_none(),
                activation: true,
            },
        );
        if let (Some(((pin, pout), wide)), Some(q)) = (Self::integer_route(&x, &tail), &wq) {
            if let Some((ints, scales)) = q.int8_along(0, wd[0]) {
                let values = permute(&ints, &wd, &perm).0;
                let bias = self.int8_bias(node, 2, pin.scale, &scales)?;
                let weights = QuantizedWeights {
                    values: &values,
                    scales: &scales,
                    bias: bias.as_deref(),
                };
                let act = tail.activation();
                let b = &mut self.b;
                let id = match (depthwise, wide) {
                    (true, true) => {
                        b.depthwise_conv2d_i16_quantized(out, x.id, spec, weights, pout, act)
                    }
                    (true, false) => {
                        b.depthwise_conv2d_i8_quantized(out, x.id, spec, weights, pout, act)
                    }
                    (false, true) => b.conv2d_i16_quantized(out, x.id, spec, weights, pout, act),
                    (false, false) => b.conv2d_i8_quantized(out, x.id, spec, weights, pout, act),
                }
                .map_err(build_err)?;
                self.finish_integer(out, &tail, id, Layout::ChannelsLast, wide);
                return Ok(());
            }
            self.note(
                node,
                "runs in f32: its weights are not int8 with one scale per output channel",
            );
        }
        let x = self.float(x)?;
        let mut weights = w_real;
        let mut bias = self
            .optional_constant(node, 2)?
            .unwrap_or_else(|| vec![0.0; wd[0]]);
        if bias.len() != wd[0] {
            return Err(format!(
                "bias has {} values for {} channels",
                bias.len(),
                wd[0]
            ));
        }
        if let Some((_, scale, shift)) = &tail.batch_norm {
            if scale.len() != wd[0] {
                return Err("the BatchNorm after it has the wrong channel count".into());
            }
            let per_channel = weights.len() / wd[0];
            for (o, chunk) in weights.chunks_mut(per_channel).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= scale[o]);
                bias[o] = bias[o] * scale[o] + shift[o];
            }
        }
        let filter = permute(&weights, &wd, &perm).0;
        let act = tail.activation();
        let id = if depthwise {
            self.b
                .depthwise_conv2d_f32(out, x.id, spec, &filter, Some(&bias), act)
        } else {
            self.b
                .conv2d_f32(out, x.id, spec, &filter, Some(&bias), act)
        }
        .map_err(build_err)?;
        self.finish_float(out, &tail, id, Layout::ChannelsLast);
        Ok(())
    }

    /// An int8 layer's bias from input `i`: the file's int32 values when they are in the
    /// accumulator's scale, else the real values quantized to it.
    fn int8_bias(
        &self,
        node: &NodeProto,
        i: usize,
        input_scale: f32,
        scales: &[f32],
    ) -> Lowered<Option<Vec<i32>>> {
        if input(node, i).is_none() {
            return Ok(None);
        }
        let (real, _, q) = self.constant(node, i)?;
        let real = if real.len() == 1 && scales.len() > 1 {
            vec![real[0]; scales.len()]
        } else {
            real
        };
        if real.len() != scales.len() {
            return Err(format!(
                "bias has {} values for {} channels",
                real.len(),
                scales.len()
            ));
        }
        if let Some(q) = q
            && q.ints.len() == scales.len()
            && q.zero_points.iter().all(|&z| z == 0)
        {
            let matches = scales.iter().enumerate().all(|(c, &s)| {
                let expected = f64::from(input_scale) * f64::from(s);
                let given = f64::from(q.scales[q.channel_of(c).min(q.scales.len() - 1)]);
                (given - expected).abs() <= expected * 1e-5
            });
            if matches {
                return Ok(Some(q.ints.clone()));
            }
        }
        Ok(Some(quant::quantize_bias(&real, input_scale, scales)))
    }

    fn dense(&mut self, node: &NodeProto, out: &str, gemm: bool) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let x = self.relayout(x, Layout::Plain)?;
        let (b_real, bd, bq) = self.constant(node, 1)?;
        if bd.len() != 2 {
            return Err("the weight must be 2-D".into());
        }
        let trans_b = gemm && attrs::int(node, "transB").unwrap_or(0) != 0;
        let alpha = if gemm {
            attrs::float(node, "alpha").unwrap_or(1.0)
        } else {
            1.0
        };
        let beta = if gemm {
            attrs::float(node, "beta").unwrap_or(1.0)
        } else {
            1.0
        };
        let (features_out, features_in) = if trans_b {
            (bd[0], bd[1])
        } else {
            (bd[1], bd[0])
        };
        let x_dims = self.loam_dims(x.id);
        if x_dims.last() != Some(&features_in) || (gemm && x_dims.len() != 2) {
            return Err(format!(
                "input of shape {x_dims:?} does not fit a weight of shape {bd:?}"
            ));
        }
        // loam's weights are [out][in].
        let to_loam = |v: &[f32]| {
            if trans_b {
                v.to_vec()
            } else {
                permute(v, &bd, &[1, 0]).0
            }
        };
        let bias_input = if gemm { 2 } else { usize::MAX };
        let tail = self.tail(out, Fold::ACTIVATION);
        if let (Some(((pin, pout), wide)), Some(q)) = (Self::integer_route(&x, &tail), &bq)
            && alpha == 1.0
            && beta == 1.0
        {
            let axis = if trans_b { 0 } else { 1 };
            if let Some((ints, scales)) = q.int8_along(axis, features_out) {
                let values = if trans_b {
                    ints
                } else {
                    permute(&ints, &bd, &[1, 0]).0
                };
                let bias = self.int8_bias(node, bias_input, pin.scale, &scales)?;
                let weights = QuantizedWeights {
                    values: &values,
                    scales: &scales,
                    bias: bias.as_deref(),
                };
                let act = tail.activation();
                let id = if wide {
                    self.b
                        .fully_connected_i16_quantized(out, x.id, weights, pout, act)
                } else {
                    self.b
                        .fully_connected_i8_quantized(out, x.id, weights, pout, act)
                }
                .map_err(build_err)?;
                self.finish_integer(out, &tail, id, Layout::Plain, wide);
                return Ok(());
            }
            self.note(
                node,
                "runs in f32: its weights are not int8 with one scale per output feature",
            );
        }
        let x = self.float(x)?;
        let mut weights = to_loam(&b_real);
        weights.iter_mut().for_each(|w| *w *= alpha);
        let bias = match self.optional_constant(node, bias_input)? {
            None => None,
            Some(c) if c.len() == features_out => Some(c.iter().map(|v| v * beta).collect()),
            Some(c) if c.len() == 1 => Some(vec![c[0] * beta; features_out]),
            Some(c) => {
                return Err(format!(
                    "C has {} values; loam adds one bias per output feature",
                    c.len()
                ));
            }
        };
        let id = self
            .b
            .fully_connected_f32(out, x.id, &weights, bias.as_deref(), tail.activation())
            .map_err(build_err)?;
        self.finish_float(out, &tail, id, Layout::Plain);
        Ok(())
    }

    /// A BatchNorm as the per-channel `y = scale * x + shift`.
    fn batch_norm_affine(&self, node: &NodeProto) -> Lowered<(Vec<f32>, Vec<f32>)> {
        let epsilon = attrs::float(node, "epsilon").unwrap_or(1e-5);
        let (gamma, _, _) = self.constant(node, 1)?;
        let (beta, _, _) = self.constant(node, 2)?;
        let (mean, _, _) = self.constant(node, 3)?;
        let (var, _, _) = self.constant(node, 4)?;
        let c = gamma.len();
        if [beta.len(), mean.len(), var.len()].iter().any(|&n| n != c) {
            return Err("scale, bias, mean and variance differ in length".into());
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| gamma[i] / (var[i] + epsilon).sqrt())
            .collect();
        let shift = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        Ok((scale, shift))
    }

    fn batch_norm(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let (scale, shift) = self.batch_norm_affine(node)?;
        let rank = self.onnx_dims(x).len();
        let tail = self.tail(out, Fold::ACTIVATION);
        if rank == 4 {
            // A per-channel affine map is a 1x1 depthwise convolution, which loam runs in
            // int8 as well as f32.
            let x = self.relayout(x, Layout::ChannelsLast)?;
            let spec = ConvSpec::new(scale.len(), 1);
            let act = tail.activation();
            if let Some((_, pout)) = Self::int8_route(&x, &tail) {
                let id = self
                    .b
                    .depthwise_conv2d_i8(out, x.id, spec, &scale, Some(&shift), pout, act)
                    .map_err(build_err)?;
                self.finish_int8(out, &tail, id, Layout::ChannelsLast);
            } else {
                let x = self.float(x)?;
                let id = self
                    .b
                    .depthwise_conv2d_f32(out, x.id, spec, &scale, Some(&shift), act)
                    .map_err(build_err)?;
                self.finish_float(out, &tail, id, Layout::ChannelsLast);
            }
            return Ok(());
        }
        if rank != 2 {
            return Err(format!("BatchNorm over a rank-{rank} value"));
        }
        let x = self.float(x)?;
        let ones = vec![1.0; scale.len()];
        let zeros = vec![0.0; scale.len()];
        let id = self
            .b
            .batch_norm_f32(out, x.id, &scale, &shift, &zeros, &ones, 0.0)
            .map_err(build_err)?;
        self.set_runtime(out, id, Layout::Plain, Repr::Float);
        Ok(())
    }

    /// A constant operand of an elementwise op with `other` in its layout: the data, and
    /// its loam dimensions.
    fn broadcast_constant(
        &self,
        data: Vec<f32>,
        dims: Vec<usize>,
        other: Runtime,
    ) -> Lowered<(Vec<f32>, Vec<usize>)> {
        if other.layout == Layout::Plain {
            return Ok((data, dims));
        }
        if dims.len() > 4 {
            return Err("a constant of rank above 4 against an image".into());
        }
        let mut full = vec![1usize; 4 - dims.len()];
        full.extend(&dims);
        let permuted = permute(&data, &full, &NCHW_OF_NHWC).0;
        let loam_dims = NCHW_OF_NHWC.iter().map(|&i| full[i]).collect();
        Ok((permuted, loam_dims))
    }

    fn binary(&mut self, node: &NodeProto, out: &str, op: BinaryOp) -> Lowered<()> {
        let a = self.input_value(node, 0)?;
        let b = self.input_value(node, 1)?;
        let divide = node.op_type == "Div";
        let tail = self.tail(out, Fold::ACTIVATION);
        let (a, b) = match (a, b) {
            (Value::Runtime(a), Value::Runtime(b)) => {
                if divide {
                    return Err("division by a value computed at run time".into());
                }
                let (ra, rb) = (self.onnx_dims(a).len(), self.onnx_dims(b).len());
                let layout = if ra == 4
                    && rb == 4
                    && (a.layout == Layout::ChannelsLast || b.layout == Layout::ChannelsLast)
                {
                    Layout::ChannelsLast
                } else {
                    Layout::Plain
                };
                (self.relayout(a, layout)?, self.relayout(b, layout)?)
            }
            (Value::Runtime(r), c) | (c, Value::Runtime(r)) => {
                let constant_first = !matches!(self.input_value(node, 0)?, Value::Runtime(_));
                if divide && constant_first {
                    return Err("division of a constant by a value computed at run time".into());
                }
                let (mut data, dims) = match c {
                    Value::Const(t) => (tensor_f32(&t)?, dims_of(&t)),
                    Value::QuantConst(q) => (q.real.clone(), q.dims.clone()),
                    Value::Runtime(_) => unreachable!("matched above"),
                };
                if divide {
                    data.iter_mut().for_each(|v| *v = 1.0 / *v);
                }
                let (data, dims) = self.broadcast_constant(data, dims, r)?;
                let cname = format!("{out}.operand");
                let c = if Self::int8_route(&r, &tail).is_some() {
                    let lo = data.iter().copied().fold(0.0f32, f32::min);
                    let hi = data.iter().copied().fold(0.0f32, f32::max);
                    let p = QuantParams::i8_from_range(lo, hi);
                    let ints: Vec<i8> = data
                        .iter()
                        .map(|&v| p.quantize(v, -128, 127) as i8)
                        .collect();
                    let quant = QuantSpec::PerTensor {
                        scale: p.scale,
                        zero_point: p.zero_point,
                    };
                    let id = self.b.constant(&cname, &dims, &ints, quant);
                    (id, Repr::Dequantized(p))
                } else {
                    let id = self.b.constant(&cname, &dims, &data, QuantSpec::None);
                    (id, Repr::Float)
                };
                let c = Runtime {
                    id: c.0.map_err(build_err)?,
                    layout: r.layout,
                    repr: c.1,
                };
                if constant_first { (c, r) } else { (r, c) }
            }
            _ => return Err(POISONED.into()),
        };
        let layout = a.layout;
        let act = tail.activation();
        let both_int8 =
            matches!(a.repr, Repr::Dequantized(_)) && matches!(b.repr, Repr::Dequantized(_));
        if both_int8
            && let Some((_, pout)) = tail.quantize
            && tail.batch_norm.is_none()
        {
            let id = self
                .b
                .binary_i8(op, out, a.id, b.id, pout, act)
                .map_err(build_err)?;
            self.finish_int8(out, &tail, id, layout);
            return Ok(());
        }
        let a = self.float(a)?;
        let b = self.float(b)?;
        let id = self
            .b
            .binary_f32(op, out, a.id, b.id, act)
            .map_err(build_err)?;
        self.finish_float(out, &tail, id, layout);
        Ok(())
    }

    fn unary(&mut self, node: &NodeProto, out: &str, f: Unary) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let tail = self.tail(out, Fold::QUANTIZE);
        if let Some((_, pout)) = Self::int8_route(&x, &tail) {
            let id = self
                .b
                .activation_i8(out, x.id, f, pout)
                .map_err(build_err)?;
            self.finish_int8(out, &tail, id, x.layout);
            return Ok(());
        }
        let x = self.float(x)?;
        let id = self.b.activation_f32(out, x.id, f).map_err(build_err)?;
        self.set_runtime(out, id, x.layout, Repr::Float);
        Ok(())
    }

    fn prelu(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let (slope, dims, _) = self.constant(node, 1)?;
        let channels = *self.onnx_dims(x).get(1).unwrap_or(&1);
        let per_channel = slope.len() == channels && dims.iter().filter(|&&d| d != 1).count() <= 1;
        if slope.len() != 1 && !per_channel {
            return Err(format!(
                "slope of shape {dims:?}; loam takes one slope or one per channel"
            ));
        }
        let rank = self.onnx_dims(x).len();
        let x = if rank == 4 {
            self.relayout(x, Layout::ChannelsLast)?
        } else if rank == 2 {
            x
        } else {
            return Err(format!("PRelu over a rank-{rank} value"));
        };
        let tail = self.tail(out, Fold::QUANTIZE);
        if let Some((_, pout)) = Self::int8_route(&x, &tail) {
            let id = self
                .b
                .prelu_i8(out, x.id, &slope, pout)
                .map_err(build_err)?;
            self.finish_int8(out, &tail, id, x.layout);
            return Ok(());
        }
        let x = self.float(x)?;
        let id = self.b.prelu_f32(out, x.id, &slope).map_err(build_err)?;
        self.set_runtime(out, id, x.layout, Repr::Float);
        Ok(())
    }

    fn softmax(&mut self, node: &NodeProto, out: &str, log: bool) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let rank = self.onnx_dims(x).len();
        let default_axis = if self.opset >= 13 { -1 } else { 1 };
        let axis = normalize_axis(attrs::int(node, "axis").unwrap_or(default_axis), rank)?;
        let last_in_loam = match x.layout {
            Layout::ChannelsLast => axis == 1,
            Layout::Plain => axis == rank - 1,
        };
        let x = if last_in_loam {
            x
        } else if x.layout == Layout::ChannelsLast && axis == 3 {
            self.relayout(x, Layout::Plain)?
        } else {
            return Err(format!(
                "softmax over axis {axis} of a rank-{rank} value; loam takes the last axis"
            ));
        };
        let tail = self.tail(out, Fold::QUANTIZE);
        let fixed = if log {
            LOG_SOFTMAX_OUTPUT
        } else {
            SOFTMAX_OUTPUT
        };
        if let Some((_, pout)) = Self::int8_route(&x, &tail) {
            if pout == fixed {
                let id = if log {
                    self.b.log_softmax_i8(out, x.id)
                } else {
                    self.b.softmax_i8(out, x.id, 1.0)
                }
                .map_err(build_err)?;
                self.finish_int8(out, &tail, id, x.layout);
                return Ok(());
            }
            self.note(
                node,
                &format!(
                    "runs in f32: its output is quantized with scale {} and zero point {}, \
                     and int8 {} produces scale {} and zero point {}",
                    pout.scale, pout.zero_point, node.op_type, fixed.scale, fixed.zero_point
                ),
            );
        }
        let x = self.float(x)?;
        let id = if log {
            self.b.log_softmax_f32(out, x.id)
        } else {
            self.b.softmax_f32(out, x.id, 1.0)
        }
        .map_err(build_err)?;
        self.set_runtime(out, id, x.layout, Repr::Float);
        Ok(())
    }

    fn pool(&mut self, node: &NodeProto, out: &str, max: bool, global: bool) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let x = self.relayout(x, Layout::ChannelsLast)?;
        let [_, h, w, _] = <[usize; 4]>::try_from(self.loam_dims(x.id))
            .map_err(|_| "the input is not an image [N, C, H, W]")?;
        let (kernel, stride, padding) = if global {
            ((h, w), (1, 1), [0; 4])
        } else {
            let kernel = Self::pair(node, "kernel_shape", 1)?;
            let stride = Self::pair(node, "strides", 1)?;
            let padding = Self::padding(node, (h, w), kernel, stride, (1, 1))?;
            if attrs::int(node, "ceil_mode").unwrap_or(0) != 0 {
                let size = |n: usize, k: usize, s: usize, before: usize, after: usize| {
                    let span = n
                        .saturating_add(before)
                        .saturating_add(after)
                        .saturating_sub(k);
                    (span / s, span.div_ceil(s))
                };
                let (fh, ch) = size(h, kernel.0, stride.0, padding[0], padding[2]);
                let (fw, cw) = size(w, kernel.1, stride.1, padding[1], padding[3]);
                if fh != ch || fw != cw {
                    return Err("ceil_mode = 1 changes the output size here; export with \
                         ceil_mode=False or pad the input"
                        .into());
                }
            }
            (kernel, stride, padding)
        };
        let id = if max {
            self.b
                .max_pool2d(out, x.id, kernel, stride, padding, FusedActivation::NONE)
        } else {
            self.b
                .average_pool2d(out, x.id, kernel, stride, padding, FusedActivation::NONE)
        }
        .map_err(build_err)?;
        // Pooling keeps the input's scale, so an int8 input pools as int8.
        self.set_runtime(out, id, Layout::ChannelsLast, x.repr);
        Ok(())
    }

    fn global_average(&mut self, node: &NodeProto, out: &str, keep_dims: bool) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let x = self.relayout(x, Layout::ChannelsLast)?;
        let tail = self.tail(out, Fold::QUANTIZE);
        let (id, repr) = match (x.repr, tail.quantize) {
            (Repr::Dequantized(_), Some((_, pout))) if keep_dims => {
                let id = self
                    .b
                    .global_average_pool(out, x.id, Some(pout))
                    .map_err(build_err)?;
                self.finish_int8(out, &tail, id, Layout::ChannelsLast);
                return Ok(());
            }
            (Repr::Dequantized(pin), _) => {
                let id = self
                    .b
                    .global_average_pool(out, x.id, Some(pin))
                    .map_err(build_err)?;
                (id, Repr::Dequantized(pin))
            }
            _ => {
                let x = self.float(x)?;
                (
                    self.b
                        .global_average_pool(out, x.id, None)
                        .map_err(build_err)?,
                    Repr::Float,
                )
            }
        };
        if keep_dims {
            self.set_runtime(out, id, Layout::ChannelsLast, repr);
        } else {
            let c = self.loam_dims(id)[3];
            let n = self.loam_dims(id)[0];
            let flat = self
                .b
                .reshape(&format!("{out}.flat"), id, &[n, c])
                .map_err(build_err)?;
            self.set_runtime(out, flat, Layout::Plain, repr);
        }
        Ok(())
    }

    fn reduce_mean(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let rank = self.onnx_dims(x).len();
        let axes = if self.opset >= 18 {
            self.int_constant(node, 1)?
        } else {
            attrs::ints(node, "axes")
        }
        .ok_or("ReduceMean over all axes is not supported")?;
        let mut axes = axes
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Lowered<Vec<_>>>()?;
        axes.sort_unstable();
        if rank != 4 || axes != [2, 3] {
            return Err(format!(
                "ReduceMean over axes {axes:?} of a rank-{rank} value; loam reduces the \
                 spatial axes of an image (global average pooling)"
            ));
        }
        let keep = attrs::int(node, "keepdims").unwrap_or(1) != 0;
        self.global_average(node, out, keep)
    }

    /// The ONNX shape a Reshape, Flatten, Squeeze or Unsqueeze gives an input of `dims`.
    fn reshaped_dims(&self, node: &NodeProto, dims: &[usize]) -> Lowered<Vec<usize>> {
        let rank = dims.len();
        let total: usize = dims.iter().product();
        match node.op_type.as_str() {
            "Reshape" => {
                let shape = self.int_constant(node, 1)?.ok_or("the shape is missing")?;
                let allow_zero = attrs::int(node, "allowzero").unwrap_or(0) != 0;
                let mut out = Vec::with_capacity(shape.len());
                let mut infer = None;
                for (i, &s) in shape.iter().enumerate() {
                    match s {
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if !allow_zero => out.push(
                            *dims
                                .get(i)
                                .ok_or("a 0 in the shape past the input's rank")?,
                        ),
                        s if s >= 0 => out.push(s as usize),
                        _ => return Err(format!("shape {shape:?} is not valid")),
                    }
                }
                if let Some(i) = infer {
                    let known: usize = out.iter().product();
                    if known == 0 || !total.is_multiple_of(known) {
                        return Err(format!("shape {shape:?} does not fit {dims:?}"));
                    }
                    out[i] = total / known;
                }
                Ok(out)
            }
            "Flatten" => {
                let axis = attrs::int(node, "axis").unwrap_or(1);
                let axis = if axis == rank as i64 {
                    rank
                } else {
                    normalize_axis(axis, rank)?
                };
                Ok(vec![
                    dims[..axis].iter().product(),
                    dims[axis..].iter().product(),
                ])
            }
            "Squeeze" => {
                let axes = if self.opset >= 13 {
                    self.int_constant(node, 1)?
                } else {
                    attrs::ints(node, "axes")
                };
                let axes = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&a| normalize_axis(a, rank))
                        .collect::<Lowered<Vec<_>>>()?,
                    None => (0..rank).filter(|&i| dims[i] == 1).collect(),
                };
                Ok(dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, &d)| d)
                    .collect())
            }
            _ => {
                let axes = if self.opset >= 13 {
                    self.int_constant(node, 1)?
                } else {
                    attrs::ints(node, "axes")
                }
                .ok_or("Unsqueeze needs axes")?;
                let out_rank = rank + axes.len();
                let axes = axes
                    .iter()
                    .map(|&a| normalize_axis(a, out_rank))
                    .collect::<Lowered<Vec<_>>>()?;
                let mut rest = dims.iter();
                Ok((0..out_rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            *rest.next().unwrap_or(&1)
                        }
                    })
                    .collect())
            }
        }
    }

    fn reshape(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let dims = self.onnx_dims(x);
        let target = self.reshaped_dims(node, &dims)?;
        if target.iter().product::<usize>() != dims.iter().product::<usize>() {
            return Err(format!("cannot reshape {dims:?} to {target:?}"));
        }
        if target == dims {
            self.set(out, Value::Runtime(x));
            return Ok(());
        }
        let x = if x.layout == Layout::ChannelsLast && !same_order(&dims) {
            self.relayout(x, Layout::Plain)?
        } else {
            x
        };
        let id = self.b.reshape(out, x.id, &target).map_err(build_err)?;
        self.set_runtime(out, id, Layout::Plain, x.repr);
        Ok(())
    }

    fn transpose(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let rank = self.onnx_dims(x).len();
        let perm = match attrs::ints(node, "perm") {
            Some(p) => p
                .iter()
                .map(|&a| normalize_axis(a, rank))
                .collect::<Lowered<Vec<_>>>()?,
            None => (0..rank).rev().collect(),
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() {
            return Err(format!("perm {perm:?} is not a permutation"));
        }
        // NHWC -> NCHW on a plain value, the transpose every Keras export starts with, is
        // loam's own channels-last layout: no op at all. The reverse likewise.
        if rank == 4 && x.layout == Layout::Plain && perm == NHWC_OF_NCHW {
            self.set_runtime(out, x.id, Layout::ChannelsLast, x.repr);
            return Ok(());
        }
        if rank == 4 && x.layout == Layout::ChannelsLast && perm == NCHW_OF_NHWC {
            self.set_runtime(out, x.id, Layout::Plain, x.repr);
            return Ok(());
        }
        let loam_perm: Vec<usize> = match x.layout {
            Layout::Plain => perm,
            Layout::ChannelsLast => perm.iter().map(|&p| NHWC_OF_NCHW[p]).collect(),
        };
        if loam_perm.iter().enumerate().all(|(i, &p)| i == p) {
            self.set_runtime(out, x.id, Layout::Plain, x.repr);
            return Ok(());
        }
        let id = self.b.transpose(out, x.id, &loam_perm).map_err(build_err)?;
        self.set_runtime(out, id, Layout::Plain, x.repr);
        Ok(())
    }

    fn concat(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let mut parts = Vec::new();
        for i in 0..node.input.len() {
            if input(node, i).is_some() {
                parts.push(self.runtime(node, i)?);
            }
        }
        let first = *parts.first().ok_or("no inputs")?;
        let rank = self.onnx_dims(first).len();
        let axis = normalize_axis(attrs::int(node, "axis").unwrap_or(0), rank)?;
        let layout = if parts.iter().all(|p| p.layout == Layout::ChannelsLast) {
            Layout::ChannelsLast
        } else {
            Layout::Plain
        };
        let loam_axis = match layout {
            Layout::ChannelsLast => NHWC_OF_NCHW[axis],
            Layout::Plain => axis,
        };
        let shared = first.repr.params().filter(|p| {
            parts
                .iter()
                .all(|r| matches!(r.repr, Repr::Dequantized(q) if q == *p))
        });
        let mut ids = Vec::with_capacity(parts.len());
        for p in parts {
            let p = self.relayout(p, layout)?;
            let p = if shared.is_some() { p } else { self.float(p)? };
            ids.push(p.id);
        }
        let id = self.b.concat(out, &ids, loam_axis).map_err(build_err)?;
        let repr = shared.map_or(Repr::Float, Repr::Dequantized);
        self.set_runtime(out, id, layout, repr);
        Ok(())
    }

    fn pad(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let rank = self.onnx_dims(x).len();
        let (pads, value) = if self.opset >= 11 {
            let pads = self.int_constant(node, 1)?.ok_or("pads are missing")?;
            let value = self
                .optional_constant(node, 2)?
                .and_then(|v| v.first().copied())
                .unwrap_or(0.0);
            (pads, value)
        } else {
            (
                attrs::ints(node, "pads").unwrap_or_default(),
                attrs::float(node, "value").unwrap_or(0.0),
            )
        };
        if pads.len() != 2 * rank || pads.iter().any(|&p| p < 0) {
            return Err(format!(
                "pads {pads:?} are not {} non-negative numbers",
                2 * rank
            ));
        }
        let onnx_pair = |d: usize| (pads[d] as usize, pads[rank + d] as usize);
        let pairs: Vec<(usize, usize)> = match x.layout {
            Layout::Plain => (0..rank).map(onnx_pair).collect(),
            Layout::ChannelsLast => NCHW_OF_NHWC.iter().map(|&d| onnx_pair(d)).collect(),
        };
        let id = self.b.pad(out, x.id, &pairs, value).map_err(build_err)?;
        self.set_runtime(out, id, x.layout, x.repr);
        Ok(())
    }

    fn quantize(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        let x = self.runtime(node, 0)?;
        let (p, wide) = self.per_tensor_params(node)?;
        let (same, int, dtype) = if wide {
            (Repr::Dequantized16(p), Repr::Int16(p), DType::I16)
        } else {
            (Repr::Dequantized(p), Repr::Int8(p), DType::I8)
        };
        if x.repr == same {
            self.set_runtime(out, x.id, x.layout, int);
            return Ok(());
        }
        let f = self.float(x)?;
        let id = self.b.quantize(out, f.id, p, dtype).map_err(build_err)?;
        self.set_runtime(out, id, x.layout, int);
        Ok(())
    }

    fn dequantize(&mut self, node: &NodeProto, out: &str) -> Lowered<()> {
        // A constant's integers and zero points stay as stored (uint8 ones unshifted): only
        // their differences matter.
        let (scales, zero_points, _) = self.q_params(node)?;
        match self.input_value(node, 0)? {
            Value::Const(t) => {
                let dims = dims_of(&t);
                let ints: Vec<i32> = tensor_i64(&t)?.into_iter().map(|v| v as i32).collect();
                let axis = if scales.len() > 1 {
                    Some(normalize_axis(
                        attrs::int(node, "axis").unwrap_or(1),
                        dims.len(),
                    )?)
                } else {
                    None
                };
                let mut q = QuantConst {
                    ints,
                    dims,
                    scales,
                    zero_points,
                    axis,
                    real: Vec::new(),
                };
                if let Some(a) = q.axis
                    && q.dims[a] != q.scales.len()
                {
                    return Err(format!(
                        "{} scales along an axis of {}",
                        q.scales.len(),
                        q.dims[a]
                    ));
                }
                q.real = (0..q.ints.len())
                    .map(|i| {
                        let c = q.channel_of(i);
                        let zp = q.zero_points[c.min(q.zero_points.len() - 1)];
                        (q.ints[i] - zp) as f32 * q.scales[c.min(q.scales.len() - 1)]
                    })
                    .collect();
                self.set(out, Value::QuantConst(Arc::new(q)));
                Ok(())
            }
            Value::Runtime(r) => {
                let (p, _) = self.per_tensor_params(node)?;
                match r.repr {
                    Repr::Int8(q) if q == p => {
                        self.set_runtime(out, r.id, r.layout, Repr::Dequantized(p));
                        Ok(())
                    }
                    Repr::Int16(q) if q == p => {
                        self.set_runtime(out, r.id, r.layout, Repr::Dequantized16(p));
                        Ok(())
                    }
                    Repr::Int8(_) | Repr::Int16(_) => Err(
                        "DequantizeLinear with parameters other than its QuantizeLinear's".into(),
                    ),
                    _ => Err("DequantizeLinear of a float value".into()),
                }
            }
            Value::QuantConst(_) => Err("DequantizeLinear of a dequantized value".into()),
        }
    }

    fn graph_output(&mut self, name: &str) -> Lowered<()> {
        let r = match self.value(name) {
            Ok(Value::Runtime(r)) => r,
            Ok(_) => return Err("a constant graph output; loam outputs are computed".into()),
            Err(_) => return Err("the output is never computed".into()),
        };
        let dims = self.onnx_dims(r);
        let mut id = r.id;
        if r.layout == Layout::ChannelsLast {
            let perm = NHWC_OF_NCHW;
            let target = if matches!(r.repr, Repr::Dequantized(_) | Repr::Dequantized16(_)) {
                format!("{name}.nchw")
            } else {
                name.to_string()
            };
            id = if same_order(&dims) {
                self.b.reshape(&target, id, &dims)
            } else {
                self.b.transpose(&target, id, &perm)
            }
            .map_err(build_err)?;
        }
        if matches!(r.repr, Repr::Dequantized(_) | Repr::Dequantized16(_)) {
            id = self.b.dequantize(name, id).map_err(build_err)?;
        }
        self.b.output(id);
        Ok(())
    }
}
