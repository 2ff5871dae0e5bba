//! Static quantization of a float ONNX graph into the standard QDQ form: every activation an
//! int8 op reads or writes gets a `QuantizeLinear -> DequantizeLinear` pair, weights become
//! int8 initializers (one scale per output channel) behind a `DequantizeLinear`, and biases
//! int32 in the accumulator's scale. This is the form ONNX Runtime's own quantizer writes, so
//! the result is a model ONNX Runtime and tract run as it is, and one the importer lowers into
//! native int8 ops with the very integers written here.
//!
//! Three steps, each its own function, so the caller can calibrate between them:
//! [`fold_batch_norms`] (BatchNorm into the convolution before it, or into a 1x1 depthwise
//! convolution of its own, so its affine map is quantized as weights), [`plan`] (which values
//! are quantized and which share parameters), and [`insert`] (the rewritten graph).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use loam::ops::softmax::{LOG_SOFTMAX_OUTPUT, SOFTMAX_OUTPUT};
use loam::quant::QuantParams;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

use super::import::Values;
use super::import::attrs::{self, input, node_name};
use super::proto::{self, Attr};

/// The first default-domain opset whose `DequantizeLinear` takes one scale per channel; older
/// models get one weight scale per tensor.
const PER_AXIS_OPSET: i64 = 13;

/// Folds each BatchNormalization whose input a convolution alone produces into that
/// convolution's weights and bias, and turns each other BatchNormalization of an image into a
/// 1x1 depthwise convolution: either way its affine map becomes int8 weights like any other,
/// instead of float parameters only loam would quantize.
pub(crate) fn fold_batch_norms(model: &ModelProto, values: &Values) -> Result<ModelProto> {
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .context("the ONNX model has no graph")?;
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut readers: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        for name in node.input.iter().filter(|s| !s.is_empty()) {
            *readers.entry(name.clone()).or_default() += 1;
        }
    }
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut removed = HashSet::new();
    let mut initializers = Vec::new();
    for b in 0..graph.node.len() {
        let bn = &graph.node[b];
        if bn.op_type != "BatchNormalization" || values.folds(bn) {
            continue;
        }
        let Some(x) = input(bn, 0).map(str::to_owned) else {
            continue;
        };
        let affine = (1..=4)
            .map(|i| {
                input(bn, i)
                    .and_then(|n| values.constant_f32(n))
                    .map(|c| c.0)
            })
            .collect::<Option<Vec<_>>>();
        let Some([gamma, beta, mean, var]) = affine.and_then(|v| <[_; 4]>::try_from(v).ok()) else {
            continue;
        };
        let epsilon = attrs::float(bn, "epsilon").unwrap_or(1e-5);
        let channels = gamma.len();
        if [&beta, &mean, &var].iter().any(|v| v.len() != channels) {
            continue;
        }
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + epsilon).sqrt())
            .collect();
        let shift: Vec<f32> = beta
            .iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        let out = bn.output[0].clone();
        let bn_name = node_name(bn);
        let conv = producer.get(&x).copied().filter(|&p| {
            let conv = &graph.node[p];
            conv.op_type == "Conv"
                && !removed.contains(&p)
                && readers.get(&x) == Some(&1)
                && !outputs.contains(&x)
                && input(conv, 1).is_some_and(|w| values.constant(w).is_some())
                && input(conv, 2).is_none_or(|b| values.constant(b).is_some())
        });
        if let Some(p) = conv {
            let conv = &graph.node[p];
            let (mut weights, dims) = values
                .constant_f32(input(conv, 1).unwrap_or_default())
                .context("convolution weight")?;
            if dims.first() != Some(&channels) {
                continue;
            }
            let mut bias = match input(conv, 2) {
                Some(b) => values.constant_f32(b).context("convolution bias")?.0,
                None => vec![0.0; channels],
            };
            if bias.len() != channels {
                continue;
            }
            let per_channel = weights.len() / channels;
            for (o, chunk) in weights.chunks_mut(per_channel.max(1)).enumerate() {
                chunk.iter_mut().for_each(|w| *w *= scale[o]);
                bias[o] = bias[o] * scale[o] + shift[o];
            }
            let w_name = format!("{out}.folded_weight");
            let b_name = format!("{out}.folded_bias");
            initializers.push(proto::tensor(
                &w_name,
                DataType::Float,
                &dims,
                proto::raw(&weights),
            ));
            initializers.push(proto::tensor(
                &b_name,
                DataType::Float,
                &[channels],
                proto::raw(&bias),
            ));
            let conv = &mut graph.node[p];
            conv.input.resize(3, String::new());
            conv.input[1] = w_name;
            conv.input[2] = b_name;
            conv.output[0] = out;
            removed.insert(b);
            continue;
        }
        if values.shape(&x).map(<[usize]>::len) != Some(4) {
            continue;
        }
        let w_name = format!("{out}.affine_weight");
        let b_name = format!("{out}.affine_bias");
        initializers.push(proto::tensor(
            &w_name,
            DataType::Float,
            &[channels, 1, 1, 1],
            proto::raw(&scale),
        ));
        initializers.push(proto::tensor(
            &b_name,
            DataType::Float,
            &[channels],
            proto::raw(&shift),
        ));
        graph.node[b] = proto::node(
            "Conv",
            &bn_name,
            &[&x, &w_name, &b_name],
            &[&out],
            vec![
                ("group", Attr::Int(channels as i64)),
                ("kernel_shape", Attr::Ints(vec![1, 1])),
            ],
        );
    }
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !removed.contains(&(i - 1))
    });
    graph.initializer.extend(initializers);
    drop_unused_initializers(graph);
    Ok(model)
}

/// Removes initializers (and the graph inputs that only declare them) no node reads any more.
fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !used.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    graph.input.retain(|i| !dropped.contains(&i.name));
}

/// The ops the importer fuses a following ReLU or Clip into.
const FUSES_ACTIVATION: [&str; 8] = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
];

/// How a node treats quantization.
enum Role {
    /// Computes new values: int8 in, int8 out with parameters of its own.
    Requantizes {
        /// The constant weight input and the axis of its output channels.
        weight: Option<(usize, usize)>,
        /// The bias input, added in the accumulator's scale.
        bias: Option<usize>,
        /// A ReLU or Clip after it joins it (loam clamps the int8 output).
        fuses_activation: bool,
        /// The output parameters the int8 kernel produces whatever the range.
        fixed: Option<QuantParams>,
    },
    /// Moves or selects values: int8 in, the same parameters out.
    PassesThrough,
    /// Stays in f32, for this reason.
    Float(String),
}

fn role_of(node: &NodeProto, values: &Values) -> Role {
    let constant = |i: usize| input(node, i).and_then(|n| values.constant(n));
    let requantizes = |weight, bias, fuses_activation| Role::Requantizes {
        weight,
        bias,
        fuses_activation,
        fixed: None,
    };
    match node.op_type.as_str() {
        "Conv" => match constant(1) {
            Some(w) if w.rank() == 4 => requantizes(Some((1, 0)), input(node, 2).map(|_| 2), true),
            _ => Role::Float("its weight is not a constant 4-D tensor".into()),
        },
        "Gemm" => {
            let one = |a: &str| attrs::float(node, a).unwrap_or(1.0) == 1.0;
            let trans_b = attrs::int(node, "transB").unwrap_or(0) != 0;
            match constant(1) {
                Some(b)
                    if b.rank() == 2
                        && one("alpha")
                        && one("beta")
                        && attrs::int(node, "transA").unwrap_or(0) == 0 =>
                {
                    let features = b.shape()[if trans_b { 0 } else { 1 }];
                    let bias = constant(2)
                        .filter(|c| c.rank() == 1 && c.shape()[0] == features)
                        .map(|_| 2);
                    requantizes(Some((1, if trans_b { 0 } else { 1 })), bias, true)
                }
                _ => Role::Float(
                    "only Gemm with a constant 2-D B, alpha = beta = 1 and no transA has an \
                     int8 kernel"
                        .into(),
                ),
            }
        }
        "MatMul" => match constant(1) {
            Some(b) if b.rank() == 2 => requantizes(Some((1, 1)), None, true),
            _ => Role::Float("it multiplies by a value that is not a constant matrix".into()),
        },
        "Add" | "Sub" | "Mul" => requantizes(None, None, true),
        "Div" if constant(1).is_some() => requantizes(None, None, true),
        "Relu" | "Clip" | "LeakyRelu" | "Sigmoid" | "Tanh" | "HardSigmoid" | "HardSwish"
        | "PRelu" | "GlobalAveragePool" => requantizes(None, None, false),
        "ReduceMean" if attrs::int(node, "keepdims").unwrap_or(1) != 0 => {
            requantizes(None, None, false)
        }
        "Softmax" | "LogSoftmax" => Role::Requantizes {
            weight: None,
            bias: None,
            fuses_activation: false,
            fixed: Some(if node.op_type == "Softmax" {
                SOFTMAX_OUTPUT
            } else {
                LOG_SOFTMAX_OUTPUT
            }),
        },
        "MaxPool" | "AveragePool" | "GlobalMaxPool" | "ReduceMean" | "Reshape" | "Flatten"
        | "Squeeze" | "Unsqueeze" | "Transpose" | "Identity" | "Dropout" | "Pad" | "Concat" => {
            Role::PassesThrough
        }
        other => Role::Float(format!("`{other}` has no int8 kernel in loam")),
    }
}

/// A value that gets a `QuantizeLinear -> DequantizeLinear` pair.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    /// The ONNX value.
    pub tensor: String,
    /// The node computing it, or the graph input's name.
    pub producer: String,
    /// Parameters the int8 kernel fixes (softmax), whatever the calibration says.
    pub fixed: Option<QuantParams>,
    /// Whether it is a graph input (which keeps its name for the float value).
    pub is_input: bool,
    /// int16 (symmetric) rather than int8: a value a 16x8 layer reads or writes.
    pub wide: bool,
    /// For a conversion (a value another point already quantizes in the other width), the
    /// one node that reads this copy.
    pub reader: Option<usize>,
    /// The base of the names of its quantize/dequantize nodes and parameters: the value's
    /// name, or `<value>.int16` / `<value>.int8` for a conversion.
    pub stem: String,
}

/// A constant weight quantized per output channel.
#[derive(Debug, Clone)]
pub(crate) struct Weight {
    /// Index of the node in the graph.
    pub node: usize,
    /// Its weight input.
    pub input: usize,
    /// The axis of the output channels in the weight.
    pub axis: usize,
    /// Its bias input, if any.
    pub bias: Option<usize>,
    /// The point whose parameters its activation input has.
    pub input_point: usize,
}

/// Which values are quantized and how: the result of [`plan`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Quantized values in graph order.
    pub points: Vec<Point>,
    /// The parameter group of each point: points of one group share parameters (a value and
    /// what a pooling, reshape or concatenation makes of it).
    pub groups: Vec<usize>,
    /// Weights quantized per channel.
    pub weights: Vec<Weight>,
    /// Nodes that stay f32 in the quantized model, with why.
    pub float_nodes: Vec<(String, String)>,
}

impl Plan {
    /// The points of each parameter group, by group.
    pub fn members(&self) -> HashMap<usize, Vec<usize>> {
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        for (p, &g) in self.groups.iter().enumerate() {
            members.entry(g).or_default().push(p);
        }
        members
    }
}

fn find(groups: &mut [usize], mut p: usize) -> usize {
    while groups[p] != p {
        groups[p] = groups[groups[p]];
        p = groups[p];
    }
    p
}

/// Chooses the values to quantize in `graph` (whose BatchNorms are folded): every value an
/// int8-capable node reads at run time and every value it writes (after the ReLU or Clip it
/// absorbs), unless the node is named in `keep_float` (by node name or output name).
pub(crate) fn plan(
    graph: &GraphProto,
    values: &Values,
    keep_float: &[String],
    int16: &[String],
) -> Result<Plan> {
    if let Some(n) = graph
        .node
        .iter()
        .find(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")
    {
        bail!(
            "the model is already quantized (node `{}` is a {}); quantize its float original",
            node_name(n),
            n.op_type
        );
    }
    let keep: HashSet<&str> = keep_float.iter().map(String::as_str).collect();
    let mut matched: HashSet<String> = HashSet::new();
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for name in node.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(name.as_str()).or_default().push(i);
        }
    }
    let producer: HashMap<&str, &NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let is_kept = |node: &NodeProto, matched: &mut HashSet<String>| -> bool {
        let mut hit = false;
        for name in
            std::iter::once(node.name.as_str()).chain(node.output.iter().map(String::as_str))
        {
            if keep.contains(name) {
                matched.insert(name.to_string());
                hit = true;
            }
        }
        hit
    };

    // The ReLU or Clip (with constant bounds) that alone reads `node`'s output.
    let activation_after = |node: &NodeProto| -> Option<usize> {
        let out = node.output.first()?;
        if graph_outputs.contains(out.as_str()) {
            return None;
        }
        let &[c] = consumers.get(out.as_str())?.as_slice() else {
            return None;
        };
        let next = &graph.node[c];
        let bounded = next.op_type == "Relu"
            || (next.op_type == "Clip"
                && (1..=2).all(|k| input(next, k).is_none_or(|b| values.constant(b).is_some())));
        (bounded && input(next, 0) == Some(out.as_str())).then_some(c)
    };
    let mut plan = Plan {
        points: Vec::new(),
        groups: Vec::new(),
        weights: Vec::new(),
        float_nodes: Vec::new(),
    };
    // The point whose parameters each quantized value has.
    let mut source: HashMap<String, usize> = HashMap::new();
    let mut fused: HashSet<usize> = HashSet::new();
    let wide_names: HashSet<&str> = int16.iter().map(String::as_str).collect();
    let mut wide_matched: HashSet<String> = HashSet::new();
    let add_point = |plan: &mut Plan,
                     tensor: &str,
                     fixed: Option<QuantParams>,
                     wide: bool,
                     reader: Option<usize>|
     -> usize {
        let node = producer.get(tensor);
        let stem = match reader {
            None => tensor.to_string(),
            Some(_) => format!("{tensor}.{}", if wide { "int16" } else { "int8" }),
        };
        plan.points.push(Point {
            tensor: tensor.to_string(),
            producer: node.map_or_else(|| tensor.to_string(), |n| node_name(n)),
            fixed,
            is_input: node.is_none() && reader.is_none(),
            wide,
            reader,
            stem,
        });
        let p = plan.points.len() - 1;
        plan.groups.push(p);
        p
    };
    for (i, node) in graph.node.iter().enumerate() {
        if fused.contains(&i) || values.folds(node) {
            continue;
        }
        let kept = is_kept(node, &mut matched);
        let role = if kept {
            Role::Float("kept in f32 as asked".into())
        } else {
            role_of(node, values)
        };
        let runtime: Vec<&str> = node
            .input
            .iter()
            .filter(|s| !s.is_empty() && values.constant(s).is_none())
            .map(String::as_str)
            .collect();
        match role {
            Role::Float(why) => {
                // A kept layer keeps its ReLU or Clip: the importer fuses it into the float
                // op, and quantizing the value between them would spend half the int8 range
                // on values the activation drops.
                if kept
                    && FUSES_ACTIVATION.contains(&node.op_type.as_str())
                    && let Some(c) = activation_after(node)
                {
                    fused.insert(c);
                }
                plan.float_nodes.push((node_name(node), why))
            }
            Role::PassesThrough => {
                let sources: Option<Vec<usize>> =
                    runtime.iter().map(|t| source.get(*t).copied()).collect();
                let Some(sources) = sources.filter(|s| !s.is_empty()) else {
                    continue;
                };
                let Some(out) = node.output.first() else {
                    continue;
                };
                // int8 and int16 values do not mix: such a node runs in float.
                let wide = plan.points[sources[0]].wide;
                if sources.iter().any(|&s| plan.points[s].wide != wide) {
                    continue;
                }
                let p = add_point(&mut plan, out, None, wide, None);
                for s in sources {
                    let (a, b) = (find(&mut plan.groups, s), find(&mut plan.groups, p));
                    plan.groups[b] = a;
                }
                source.insert(out.clone(), p);
            }
            Role::Requantizes {
                weight,
                bias,
                fuses_activation,
                fixed,
            } => {
                let mut wide = false;
                for name in std::iter::once(node.name.as_str())
                    .chain(node.output.iter().map(String::as_str))
                {
                    if wide_names.contains(name) {
                        wide_matched.insert(name.to_string());
                        wide = true;
                    }
                }
                if wide && weight.is_none() {
                    bail!(
                        "--int16 names `{}` ({}): only Conv, Gemm and MatMul layers with \
                         constant weights run with int16 activations",
                        node_name(node),
                        node.op_type
                    );
                }
                // The point each runtime input is read through: its own, or a conversion to
                // this node's width.
                let mut reads = Vec::new();
                for t in &runtime {
                    let p = match source.get(*t) {
                        Some(&p) if plan.points[p].wide == wide => p,
                        Some(_) => add_point(&mut plan, t, None, wide, Some(i)),
                        None => {
                            let p = add_point(&mut plan, t, None, wide, None);
                            source.insert(t.to_string(), p);
                            p
                        }
                    };
                    reads.push(p);
                }
                let Some(mut out) = node.output.first().cloned() else {
                    continue;
                };
                if fuses_activation
                    && let Some(c) = activation_after(node)
                    && !is_kept(&graph.node[c], &mut matched)
                {
                    fused.insert(c);
                    out = graph.node[c].output[0].clone();
                }
                let p = add_point(&mut plan, &out, fixed, wide, None);
                source.insert(out, p);
                if let Some((input, axis)) = weight
                    && let Some(&input_point) = reads.first()
                {
                    plan.weights.push(Weight {
                        node: i,
                        input,
                        axis,
                        bias,
                        input_point,
                    });
                }
            }
        }
    }
    let unmatched: Vec<&str> = int16
        .iter()
        .map(String::as_str)
        .filter(|k| !wide_matched.contains(*k))
        .collect();
    if !unmatched.is_empty() {
        bail!(
            "--int16 names no quantized Conv, Gemm or MatMul node (or its output): {} (see \
             `loam inspect` or the ONNX graph for the names)",
            unmatched.join(", ")
        );
    }
    let unmatched: Vec<&str> = keep_float
        .iter()
        .map(String::as_str)
        .filter(|k| !matched.contains(*k))
        .collect();
    if !unmatched.is_empty() {
        bail!(
            "--keep-float names no node or node output: {} (see `loam inspect` or the ONNX \
             graph for the names)",
            unmatched.join(", ")
        );
    }
    for p in 0..plan.groups.len() {
        plan.groups[p] = find(&mut plan.groups, p);
    }
    Ok(plan)
}

/// A weight and its bias as int8/int32 with their scales: what [`insert`] writes.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedWeight {
    /// Integer weights in the file's layout.
    pub values: Vec<i8>,
    /// One scale per output channel (or one, per tensor).
    pub scales: Vec<f32>,
    /// int32 biases and their scales (input scale times weight scale).
    pub bias: Option<(Vec<i32>, Vec<f32>)>,
}

/// Quantizes one planned weight (and its bias, at `input_scale` times each weight scale).
/// `per_axis` false gives one scale for the whole tensor (opsets before 13).
pub(crate) fn quantize_weight(
    graph: &GraphProto,
    values: &Values,
    weight: &Weight,
    bias_override: Option<&[f32]>,
    input_scale: f32,
    per_axis: bool,
) -> Result<QuantizedWeight> {
    let node = &graph.node[weight.node];
    let name = input(node, weight.input).unwrap_or_default();
    let (real, dims) = values.constant_f32(name).with_context(|| {
        format!(
            "node `{}`: weight `{name}` is not a constant",
            node_name(node)
        )
    })?;
    let channels = dims[weight.axis];
    let (values_i8, scales) = if per_axis {
        // Channel-major when the channel axis is the first, channel-last when it is the last
        // of a matrix: the two layouts ONNX weights come in.
        loam::quant::quantize_weights_per_channel(&real, channels, weight.axis != 0)
    } else {
        let max_abs = real.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = loam::quant::symmetric_scale(max_abs);
        let q = real
            .iter()
            .map(|&w| (w / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        (q, vec![scale])
    };
    let bias = match (weight.bias.and_then(|b| input(node, b)), bias_override) {
        (_, Some(real)) => Some(real.to_vec()),
        (Some(b), None) => Some(
            values
                .constant_f32(b)
                .with_context(|| {
                    format!("node `{}`: bias `{b}` is not a constant", node_name(node))
                })?
                .0,
        ),
        (None, None) => None,
    };
    let bias = bias.map(|real| {
        let ints = loam::quant::quantize_bias(&real, input_scale, &scales);
        let bias_scales = scales.iter().map(|s| input_scale * s).collect();
        (ints, bias_scales)
    });
    Ok(QuantizedWeight {
        values: values_i8,
        scales,
        bias,
    })
}

fn scalar_params(
    graph: &mut GraphProto,
    stem: &str,
    p: QuantParams,
    wide: bool,
) -> (String, String) {
    let scale = format!("{stem}.scale");
    let zero_point = format!("{stem}.zero_point");
    graph.initializer.push(proto::tensor(
        &scale,
        DataType::Float,
        &[],
        proto::raw(&[p.scale]),
    ));
    let zero = if wide {
        proto::tensor(
            &zero_point,
            DataType::Int16,
            &[],
            proto::raw(&[p.zero_point as i16]),
        )
    } else {
        proto::tensor(
            &zero_point,
            DataType::Int8,
            &[],
            proto::raw(&[p.zero_point as i8]),
        )
    };
    graph.initializer.push(zero);
    (scale, zero_point)
}

/// How [`insert`] writes an int16 quantize/dequantize pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int16Form {
    /// `QuantizeLinear`/`DequantizeLinear` with an int16 zero point: what the importer
    /// lowers, and standard ONNX from opset 21.
    QuantizeLinear,
    /// The same arithmetic in float ops (divide, round half to even, clip, multiply), for
    /// runtimes without int16 quantization (tract, which observes the graph here).
    FakeQuant,
}

fn dequantize_constant(
    graph: &mut GraphProto,
    stem: &str,
    data: (DataType, &[usize], Vec<u8>),
    scales: &[f32],
    zero_type: DataType,
    axis: Option<usize>,
) -> (NodeProto, String) {
    let (data_type, dims, raw) = data;
    let quantized = format!("{stem}.quantized");
    let scale = format!("{stem}.scale");
    let zero_point = format!("{stem}.zero_point");
    let out = format!("{stem}.dequantized");
    let per_axis = scales.len() > 1;
    let param_dims: Vec<usize> = if per_axis { vec![scales.len()] } else { vec![] };
    let zeros = match zero_type {
        DataType::Int32 => proto::raw(&vec![0i32; scales.len()]),
        _ => vec![0u8; scales.len()],
    };
    graph
        .initializer
        .push(proto::tensor(&quantized, data_type, dims, raw));
    graph.initializer.push(proto::tensor(
        &scale,
        DataType::Float,
        &param_dims,
        proto::raw(if per_axis { scales } else { &scales[..1] }),
    ));
    let zeros = if per_axis {
        zeros
    } else {
        zeros[..zero_type_size(zero_type)].to_vec()
    };
    graph
        .initializer
        .push(proto::tensor(&zero_point, zero_type, &param_dims, zeros));
    let attributes = match axis {
        Some(a) if per_axis => vec![("axis", Attr::Int(a as i64))],
        _ => Vec::new(),
    };
    let node = proto::node(
        "DequantizeLinear",
        &format!("{stem}.dequantize"),
        &[&quantized, &scale, &zero_point],
        &[&out],
        attributes,
    );
    (node, out)
}

fn zero_type_size(t: DataType) -> usize {
    if t == DataType::Int32 { 4 } else { 1 }
}

/// `model` with the plan's quantize/dequantize pairs inserted (each point with `params[p]`)
/// and its weights replaced by `weights` (one per [`Plan::weights`] entry).
pub(crate) fn insert(
    model: &ModelProto,
    plan: &Plan,
    params: &[QuantParams],
    weights: &[QuantizedWeight],
    int16_form: Int16Form,
) -> Result<ModelProto> {
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .context("the ONNX model has no graph")?;
    let taken: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .collect();
    let graph_inputs: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    let nodes = std::mem::take(&mut graph.node);

    // Weights first: their dequantized names replace the node inputs below.
    let mut weight_nodes: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut replaced: HashMap<(usize, usize), String> = HashMap::new();
    for (w, q) in plan.weights.iter().zip(weights) {
        let node = &nodes[w.node];
        let stem = format!("{}.weight", node_name(node));
        let name = input(node, w.input).unwrap_or_default();
        let dims = graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
        let dims = match dims {
            Some(d) => d,
            None => bail!(
                "weight `{name}` of `{}` is not an initializer",
                node_name(node)
            ),
        };
        let (dq, out) = dequantize_constant(
            graph,
            &stem,
            (DataType::Int8, &dims, proto::raw(&q.values)),
            &q.scales,
            DataType::Int8,
            Some(w.axis),
        );
        weight_nodes.entry(w.node).or_default().push(dq);
        replaced.insert((w.node, w.input), out);
        if let (Some(b), Some((ints, scales))) = (w.bias, &q.bias) {
            let stem = format!("{}.bias", node_name(node));
            let (dq, out) = dequantize_constant(
                graph,
                &stem,
                (DataType::Int32, &[ints.len()], proto::raw(ints)),
                scales,
                DataType::Int32,
                Some(0),
            );
            weight_nodes.entry(w.node).or_default().push(dq);
            replaced.insert((w.node, b), out);
        }
    }

    let mut at: HashMap<&str, usize> = HashMap::new();
    for (p, point) in plan.points.iter().enumerate() {
        if point.reader.is_none() {
            at.insert(point.tensor.as_str(), p);
        }
    }
    let pair = |graph: &mut GraphProto, p: usize, from: &str, to: &str| -> Result<Vec<NodeProto>> {
        let point = &plan.points[p];
        let stem = &point.stem;
        let quantized = format!("{stem}.quantized");
        if taken.contains(&quantized) {
            bail!("the model already has a value named `{quantized}`");
        }
        if point.wide && int16_form == Int16Form::FakeQuant {
            let (scale, lo, hi) = (
                format!("{stem}.scale"),
                format!("{stem}.lowest"),
                format!("{stem}.highest"),
            );
            for (name, v) in [(&scale, params[p].scale), (&lo, -32768.0), (&hi, 32767.0)] {
                graph
                    .initializer
                    .push(proto::tensor(name, DataType::Float, &[], proto::raw(&[v])));
            }
            let steps = format!("{stem}.steps");
            let rounded = format!("{stem}.rounded");
            return Ok(vec![
                proto::node(
                    "Div",
                    &format!("{stem}.divide"),
                    &[from, &scale],
                    &[&steps],
                    Vec::new(),
                ),
                proto::node(
                    "Round",
                    &format!("{stem}.round"),
                    &[&steps],
                    &[&rounded],
                    Vec::new(),
                ),
                proto::node(
                    "Clip",
                    &format!("{stem}.clip"),
                    &[&rounded, &lo, &hi],
                    &[&quantized],
                    Vec::new(),
                ),
                proto::node(
                    "Mul",
                    &format!("{stem}.rescale"),
                    &[&quantized, &scale],
                    &[to],
                    Vec::new(),
                ),
            ]);
        }
        let (scale, zero_point) = scalar_params(graph, stem, params[p], point.wide);
        Ok(vec![
            proto::node(
                "QuantizeLinear",
                &format!("{stem}.quantize"),
                &[from, &scale, &zero_point],
                &[&quantized],
                Vec::new(),
            ),
            proto::node(
                "DequantizeLinear",
                &format!("{stem}.dequantize"),
                &[&quantized, &scale, &zero_point],
                &[to],
                Vec::new(),
            ),
        ])
    };

    // Graph inputs: quantized right away, their readers moved to the dequantized copy.
    let mut rewired: HashMap<String, String> = HashMap::new();
    let mut out_nodes = Vec::with_capacity(nodes.len() * 2);
    for (p, point) in plan.points.iter().enumerate() {
        if point.reader.is_none() && graph_inputs.contains(&point.tensor) {
            let to = format!("{}.dequantized", point.tensor);
            out_nodes.extend(pair(graph, p, &point.tensor, &to)?);
            rewired.insert(point.tensor.clone(), to);
        }
    }
    // Everything else: readers move to `<value>.dequantized`, so the int8 op keeps the
    // value's own name; a graph output keeps its name for the dequantized value instead, and
    // its producer writes `<value>.float`.
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for (i, mut node) in nodes.into_iter().enumerate() {
        if let Some(dq) = weight_nodes.remove(&i) {
            out_nodes.extend(dq);
        }
        // A bias that bias correction gave a node that had none.
        let wanted = replaced
            .keys()
            .filter(|(n, _)| *n == i)
            .map(|&(_, k)| k + 1)
            .max()
            .unwrap_or(0);
        if node.input.len() < wanted {
            node.input.resize(wanted, String::new());
        }
        for (k, name) in node.input.iter_mut().enumerate() {
            if let Some(r) = replaced.get(&(i, k)) {
                *name = r.clone();
            } else if let Some(r) = rewired.get(name.as_str()) {
                *name = r.clone();
            }
        }
        // Conversions to this node's width, read by it alone.
        for (p, point) in plan.points.iter().enumerate() {
            if point.reader != Some(i) {
                continue;
            }
            let current = rewired
                .get(&point.tensor)
                .cloned()
                .unwrap_or_else(|| point.tensor.clone());
            let to = format!("{}.dequantized", point.stem);
            out_nodes.extend(pair(graph, p, &current, &to)?);
            for name in node.input.iter_mut() {
                if *name == current {
                    *name = to.clone();
                }
            }
        }
        let mut pairs = Vec::new();
        for out in node.output.iter_mut() {
            let Some(&p) = at.get(out.as_str()) else {
                continue;
            };
            if graph_outputs.contains(out.as_str()) {
                let float = format!("{out}.float");
                pairs.extend(pair(graph, p, &float, out)?);
                *out = float;
            } else {
                let to = format!("{out}.dequantized");
                pairs.extend(pair(graph, p, out, &to)?);
                rewired.insert(out.clone(), to);
            }
        }
        out_nodes.push(node);
        out_nodes.extend(pairs);
    }
    graph.node = out_nodes;
    drop_unused_initializers(graph);
    Ok(model)
}

/// Whether the model's default opset lets `DequantizeLinear` take one scale per channel.
pub(crate) fn per_axis(opset: i64) -> bool {
    opset >= PER_AXIS_OPSET
}

/// The name of the value a planned weight's node computes before any fused activation (its
/// own first output in the float graph), for bias correction.
pub(crate) fn node_output(graph: &GraphProto, weight: &Weight) -> String {
    graph.node[weight.node]
        .output
        .first()
        .cloned()
        .unwrap_or_default()
}

/// Where the graph [`insert`] writes holds `value`'s float result before quantization:
/// `<value>.float` when `value` is a quantized graph output, else `value` itself.
pub(crate) fn float_name(plan: &Plan, graph_outputs: &HashSet<String>, value: &str) -> String {
    let quantized = plan.points.iter().any(|p| p.tensor == value && !p.is_input);
    if quantized && graph_outputs.contains(value) {
        format!("{value}.float")
    } else {
        value.to_string()
    }
}

/// Where the graph [`insert`] writes holds the dequantized copy of the quantized `value`:
/// the value's own name for a graph output, else `<value>.dequantized`.
pub(crate) fn dequantized_name(graph_outputs: &HashSet<String>, value: &str) -> String {
    if graph_outputs.contains(value) {
        value.to_string()
    } else {
        format!("{value}.dequantized")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::value_info;

    /// input -> Conv a -> Relu ┐
    ///       -> Conv b --------┴ Concat -> MaxPool -> Erf (no int8 kernel) -> Add(input)
    fn branchy() -> ModelProto {
        let weight = |name: &str| {
            proto::tensor(
                name,
                DataType::Float,
                &[2, 2, 1, 1],
                proto::raw(&[0.5f32, -0.25, 0.125, 1.0]),
            )
        };
        let graph = GraphProto {
            name: "branchy".into(),
            node: vec![
                proto::node("Conv", "a", &["x", "wa"], &["ya"], Vec::new()),
                proto::node("Relu", "a_relu", &["ya"], &["ra"], Vec::new()),
                proto::node("Conv", "b", &["x", "wb"], &["yb"], Vec::new()),
                proto::node(
                    "Concat",
                    "cat",
                    &["ra", "yb"],
                    &["c"],
                    vec![("axis", Attr::Int(1))],
                ),
                proto::node(
                    "MaxPool",
                    "pool",
                    &["c"],
                    &["p"],
                    vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
                ),
                proto::node("Erf", "erf", &["p"], &["e"], Vec::new()),
                proto::node("Add", "add", &["e", "p"], &["out"], Vec::new()),
            ],
            initializer: vec![weight("wa"), weight("wb")],
            input: vec![value_info("x", DataType::Float, &[1, 2, 3, 3])],
            output: vec![value_info("out", DataType::Float, &[1, 4, 3, 3])],
            ..GraphProto::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![tract_onnx::pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(graph),
            ..ModelProto::default()
        }
    }

    fn planned(keep: &[&str]) -> (ModelProto, Values, Plan) {
        let model = branchy();
        let inputs = vec![("x".to_string(), vec![1, 2, 3, 3])];
        let values = crate::onnx::import::analyse(&model, None, &inputs).unwrap();
        let keep: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
        let plan = plan(model.graph.as_ref().unwrap(), &values, &keep, &[]).unwrap();
        (model, values, plan)
    }

    fn point(plan: &Plan, tensor: &str) -> usize {
        plan.points
            .iter()
            .position(|p| p.tensor == tensor)
            .unwrap_or_else(|| panic!("no point `{tensor}` in {:?}", plan.points))
    }

    #[test]
    fn concatenated_values_share_parameters_and_fused_relus_are_not_points() {
        let (_, _, plan) = planned(&[]);
        let tensors: Vec<&str> = plan.points.iter().map(|p| p.tensor.as_str()).collect();
        // `ya` is inside conv a's fused ReLU; `e` comes from a float op and is quantized
        // where the Add reads it, as `out` is where the Add writes it.
        assert_eq!(tensors, ["x", "ra", "yb", "c", "p", "e", "out"]);
        let group = |t: &str| plan.groups[point(&plan, t)];
        assert_eq!(group("ra"), group("yb"));
        assert_eq!(group("ra"), group("c"));
        assert_eq!(group("c"), group("p"));
        assert_ne!(group("x"), group("c"));
        assert_ne!(group("e"), group("out"));
        assert_eq!(plan.weights.len(), 2);
        assert_eq!(plan.float_nodes.len(), 1);
        assert!(
            plan.float_nodes[0].1.contains("Erf"),
            "{:?}",
            plan.float_nodes
        );
        assert!(plan.points[point(&plan, "x")].is_input);
    }

    #[test]
    fn a_kept_node_takes_its_relu_along() {
        let (_, _, plan) = planned(&["a"]);
        let tensors: Vec<&str> = plan.points.iter().map(|p| p.tensor.as_str()).collect();
        // Conv a and its ReLU stay float; the Concat then mixes float and int8 inputs and so
        // runs in float, and the int8 path starts again where the Add reads its inputs.
        assert_eq!(tensors, ["x", "yb", "e", "p", "out"]);
        assert_eq!(
            plan.float_nodes[0],
            ("a".to_string(), "kept in f32 as asked".into())
        );
        assert_eq!(plan.weights.len(), 1);
        let err = super::plan(
            branchy().graph.as_ref().unwrap(),
            &planned(&[]).1,
            &["nope".to_string()],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn int16_layers_get_int16_values_and_conversions_where_widths_meet() {
        let model = branchy();
        let inputs = vec![("x".to_string(), vec![1, 2, 3, 3])];
        let values = crate::onnx::import::analyse(&model, None, &inputs).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let plan = plan(graph, &values, &[], &["a".to_string()]).unwrap();
        let described: Vec<(&str, bool, Option<usize>)> = plan
            .points
            .iter()
            .map(|p| (p.stem.as_str(), p.wide, p.reader))
            .collect();
        // Conv a (16x8) quantizes the input to int16; conv b (int8) reads an int8 copy; the
        // Concat of an int16 and an int8 value runs in float.
        assert_eq!(
            described,
            [
                ("x", true, None),
                ("ra", true, None),
                ("x.int8", false, Some(2)),
                ("yb", false, None),
                ("e", false, None),
                ("p", false, None),
                ("out", false, None),
            ]
        );
        let params: Vec<QuantParams> = plan
            .points
            .iter()
            .map(|p| {
                if p.wide {
                    QuantParams::i16_from_range(-1.0, 1.0)
                } else {
                    QuantParams::i8_from_range(-1.0, 1.0)
                }
            })
            .collect();
        let weights: Vec<QuantizedWeight> = plan
            .weights
            .iter()
            .map(|w| quantize_weight(graph, &values, w, None, 0.01, true).unwrap())
            .collect();
        let qdq = insert(&model, &plan, &params, &weights, Int16Form::QuantizeLinear).unwrap();
        let g = qdq.graph.unwrap();
        let b = g.node.iter().find(|n| n.name == "b").unwrap();
        assert_eq!(b.input[0], "x.int8.dequantized");
        let zero = g
            .initializer
            .iter()
            .find(|t| t.name == "x.zero_point")
            .unwrap();
        assert_eq!(zero.data_type, DataType::Int16 as i32);
        // tract's view: the same arithmetic in float ops, no int16 quantize left.
        let fake = insert(&model, &plan, &params, &weights, Int16Form::FakeQuant).unwrap();
        let fake = fake.graph.unwrap();
        assert!(fake.node.iter().any(|n| n.op_type == "Round"));
        assert!(
            fake.initializer
                .iter()
                .all(|t| t.data_type != DataType::Int16 as i32)
        );
    }

    #[test]
    fn the_rewritten_graph_keeps_its_output_name_and_reads_dequantized_values() {
        let (model, values, plan) = planned(&[]);
        let params = vec![QuantParams::i8_from_range(-1.0, 1.0); plan.points.len()];
        let weights: Vec<QuantizedWeight> = plan
            .weights
            .iter()
            .map(|w| {
                quantize_weight(model.graph.as_ref().unwrap(), &values, w, None, 0.01, true)
                    .unwrap()
            })
            .collect();
        let out = insert(&model, &plan, &params, &weights, Int16Form::QuantizeLinear).unwrap();
        let graph = out.graph.unwrap();
        let producer = |name: &str| {
            graph
                .node
                .iter()
                .find(|n| n.output.iter().any(|o| o == name))
                .map(|n| n.op_type.clone())
        };
        assert_eq!(producer("out").as_deref(), Some("DequantizeLinear"));
        assert_eq!(producer("out.float").as_deref(), Some("Add"));
        let reader = |op: &str| graph.node.iter().find(|n| n.name == op).unwrap();
        assert_eq!(reader("cat").input, ["ra.dequantized", "yb.dequantized"]);
        assert_eq!(reader("a").input, ["x.dequantized", "a.weight.dequantized"]);
        // The original float weights are gone; the int8 ones came in.
        assert!(graph.initializer.iter().all(|t| t.name != "wa"));
        let wa = graph
            .initializer
            .iter()
            .find(|t| t.name == "a.weight.quantized")
            .unwrap();
        assert_eq!(wa.data_type, DataType::Int8 as i32);
        // Every node reads only values something writes.
        let mut known: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
        known.insert("x".into());
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                assert!(known.contains(i), "`{}` reads unknown `{i}`", n.name);
            }
            known.extend(n.output.iter().cloned());
        }
    }
}
