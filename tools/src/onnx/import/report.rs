//! The compatibility report: every node the importer cannot lower, with the reason, found in
//! one pass over the graph so that a user fixes all of them before trying again.

use std::collections::HashSet;
use std::fmt;

use tract_onnx::pb::{GraphProto, NodeProto};

use super::Values;
use super::attrs::{self, input, node_name};

/// One thing in the model that loam cannot import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The node's name (or its first output's, for unnamed nodes).
    pub node: String,
    /// Its op type, with the domain for non-standard ops.
    pub op: String,
    /// What is unsupported and, where there is one, what to do instead.
    pub what: String,
}

/// Every problem found in a model; the import wrote nothing.
#[derive(Debug, Clone)]
pub struct CompatibilityReport {
    /// In graph order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for CompatibilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "the model cannot be imported: {n} problem{} (nothing was written)",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - node `{}` ({}): {}", p.node, p.op, p.what)?;
        }
        if self
            .problems
            .iter()
            .any(|p| p.what.contains("is not an op loam runs"))
        {
            writeln!(f, "loam runs: {}", SUPPORTED_OPS.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CompatibilityReport {}

/// Ops the lowering handles (each with the attribute checks below).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "QuantizeLinear",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Ops that compute shapes and indices; they vanish when their inputs' shapes are known, so
/// below an op that stopped the analysis they are not problems of their own.
const SHAPE_OPS: &[&str] = &[
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Gather",
    "Mul",
    "Range",
    "Shape",
    "Slice",
    "Squeeze",
    "Unsqueeze",
];

/// The ops of dynamically quantized models (ONNX Runtime's `quantize_dynamic`).
const DYNAMIC_QUANTIZATION: &[&str] = &[
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
];

/// How a problem says that an input is not constant.
const RUN_TIME: &str = "computed at run time";

/// Checks every node that is not computed at import time.
pub(crate) fn check(graph: &GraphProto, opset: i64, values: &Values) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Values downstream of a problem: their shapes may be unknown only because of it.
    let mut tainted: HashSet<&str> = HashSet::new();
    for node in &graph.node {
        if values.folds(node) {
            continue;
        }
        let before = problems.len();
        let downstream = node.input.iter().any(|i| tainted.contains(i.as_str()));
        check_one(node, opset, values, downstream, &mut problems);
        if downstream || problems.len() > before {
            tainted.extend(node.output.iter().map(String::as_str));
        }
    }
    problems
}

fn check_one(
    node: &NodeProto,
    opset: i64,
    values: &Values,
    downstream: bool,
    problems: &mut Vec<Problem>,
) {
    let standard = node.domain.is_empty() || node.domain == "ai.onnx";
    let mut problem = |what: String| {
        let op = if standard {
            node.op_type.clone()
        } else {
            format!("{}::{}", node.domain, node.op_type)
        };
        problems.push(Problem {
            node: node_name(node),
            op,
            what,
        })
    };
    if DYNAMIC_QUANTIZATION.contains(&node.op_type.as_str()) {
        problem(
            "dynamic quantization (scales computed at run time) has no int8 kernel in loam, \
             which runs statically quantized models; quantize the float model with \
             `loam quantize` (or ONNX Runtime's quantize_static)"
                .into(),
        );
        return;
    }
    if !standard {
        problem(
            "not a standard ONNX op; loam imports the default domain (and ONNX Runtime's \
             QOperator ops: QGemm, QLinearAdd, QLinearMul, QLinearConcat, \
             QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu, \
             QLinearSoftmax)"
                .into(),
        );
        return;
    }
    if downstream && SHAPE_OPS.contains(&node.op_type.as_str()) {
        return;
    }
    if !SUPPORTED_OPS.contains(&node.op_type.as_str()) {
        problem(format!("`{}` is not an op loam runs", node.op_type));
        return;
    }
    for what in check_node(node, opset, values) {
        // Which inputs are constant is unknown below a problem.
        if !(downstream && what.contains(RUN_TIME)) {
            problem(what);
        }
    }
}

/// What is wrong with one node of a supported op type.
fn check_node(node: &NodeProto, opset: i64, values: &Values) -> Vec<String> {
    let mut out = Vec::new();
    let constant = |i: usize| input(node, i).is_none_or(|name| values.constant(name).is_some());
    let need_constant = |out: &mut Vec<String>, i: usize, what: &str| {
        if !constant(i) {
            out.push(format!(
                "the {what} (input {i}) is {RUN_TIME}; loam needs it constant"
            ));
        }
    };
    match node.op_type.as_str() {
        "Conv" => {
            need_constant(&mut out, 1, "weight");
            need_constant(&mut out, 2, "bias");
            let rank = input(node, 1)
                .and_then(|w| values.constant(w))
                .map(|w| w.rank());
            if let Some(rank) = rank
                && rank != 4
            {
                let dims = rank.saturating_sub(2);
                let hint = if dims == 1 {
                    "export it as a Conv2d of height 1 (unsqueeze the input and weight)"
                } else {
                    "only 1-D (as height 1) and 2-D ones run on loam"
                };
                out.push(format!(
                    "a {dims}-D convolution; loam imports 2-D convolutions: {hint}"
                ));
            }
        }
        "Gemm" => {
            if attrs::int(node, "transA").unwrap_or(0) != 0 {
                out.push("transA = 1 is not supported; transpose the input instead".into());
            }
            need_constant(&mut out, 1, "weight (B)");
            need_constant(&mut out, 2, "bias (C)");
        }
        "MatMul" => {
            need_constant(&mut out, 1, "right-hand side");
            if let Some(b) = input(node, 1).and_then(|b| values.constant(b))
                && b.rank() != 2
            {
                out.push(format!(
                    "a right-hand side of rank {}; loam's MatMul takes a 2-D constant",
                    b.rank()
                ));
            }
        }
        "MaxPool" | "AveragePool" => {
            if attrs::ints(node, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
                out.push("dilated pooling is not supported".into());
            }
            if attrs::ints(node, "kernel_shape").is_some_and(|k| k.len() != 2) {
                out.push("only 2-D pooling is supported".into());
            }
            if node.output.len() > 1 && !node.output[1].is_empty() {
                out.push("the indices output of MaxPool is not supported".into());
            }
            let padded = attrs::ints(node, "pads").is_some_and(|p| p.iter().any(|&x| x != 0))
                || attrs::string(node, "auto_pad").is_some_and(|a| a.starts_with("SAME"));
            if node.op_type == "AveragePool"
                && attrs::int(node, "count_include_pad").unwrap_or(0) != 0
                && padded
            {
                out.push(
                    "count_include_pad = 1 with padding; loam averages over the real \
                     elements only (as TFLite does)"
                        .into(),
                );
            }
        }
        "Pad" => {
            let mode = attrs::string(node, "mode").unwrap_or_else(|| "constant".into());
            if mode != "constant" {
                out.push(format!("mode `{mode}`; loam pads with a constant only"));
            }
            if opset >= 11 {
                need_constant(&mut out, 1, "pads");
                need_constant(&mut out, 2, "constant value");
            }
            if input(node, 3).is_some() {
                out.push("padding chosen axes (input 3) is not supported".into());
            }
        }
        "Clip" => {
            need_constant(&mut out, 1, "minimum");
            need_constant(&mut out, 2, "maximum");
        }
        "PRelu" => need_constant(&mut out, 1, "slope"),
        "Div" => need_constant(&mut out, 1, "divisor"),
        "BatchNormalization" => {
            for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                need_constant(&mut out, i, what);
            }
            if attrs::int(node, "training_mode").unwrap_or(0) != 0 {
                out.push("training_mode = 1; export the model in eval mode".into());
            }
        }
        "Dropout" => {
            // Lowered as Identity, which is what Dropout computes only in inference mode: a
            // training_mode input that is true (or unknown before running) drops elements.
            need_constant(&mut out, 2, "training_mode");
            let training = input(node, 2)
                .and_then(|t| values.constant(t))
                .and_then(|t| {
                    let t = t.cast_to::<bool>().ok()?;
                    t.to_plain_array_view::<bool>().ok()?.iter().next().copied()
                });
            if training == Some(true) {
                out.push("training_mode = true; export the model in eval mode".into());
            }
        }
        "Reshape" => need_constant(&mut out, 1, "shape"),
        "Squeeze" | "Unsqueeze" if opset >= 13 => need_constant(&mut out, 1, "axes"),
        "ReduceMean" if opset >= 18 => need_constant(&mut out, 1, "axes"),
        "QuantizeLinear" | "DequantizeLinear" => {
            need_constant(&mut out, 1, "scale");
            need_constant(&mut out, 2, "zero point");
            let zero_point = input(node, 2).and_then(|z| values.constant(z));
            if let Some(z) = zero_point {
                use tract_onnx::prelude::DatumType;
                let ok = matches!(
                    z.datum_type(),
                    DatumType::I8 | DatumType::U8 | DatumType::I16
                ) || (node.op_type == "DequantizeLinear"
                    && z.datum_type() == DatumType::I32);
                if !ok {
                    out.push(format!(
                        "{:?} quantization; loam imports int8, uint8 and int16 (and int32 \
                         biases)",
                        z.datum_type()
                    ));
                }
            }
            let scale_len = input(node, 1)
                .and_then(|s| values.constant(s))
                .map_or(1, |s| s.len());
            let x_constant = input(node, 0).is_some_and(|x| values.constant(x).is_some());
            if scale_len > 1 && !x_constant {
                out.push(
                    "per-axis quantization of an activation; loam quantizes activations per \
                     tensor"
                        .into(),
                );
            }
        }
        _ => {}
    }
    out
}
