//! The QOperator form of a quantized ONNX model (`QLinearConv`, `QLinearMatMul`, and ONNX
//! Runtime's `com.microsoft` `QGemm`, `QLinearAdd`, `QLinearGlobalAveragePool`, ...), written
//! as the equivalent QDQ groups: each integer op becomes `DequantizeLinear` on its inputs, the
//! float op, and `QuantizeLinear` on its output, with the very same integers, scales and zero
//! points. The lowering already turns such groups into native int8 ops, so both forms import
//! into the same `.loam`.
//!
//! The float op keeps the QOperator node's name, so problems and notes name the node the user
//! knows.

use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};

use super::attrs::{self, input, node_name};
use crate::onnx::proto::{self, Attr};

/// How one QOperator op maps to its QDQ group.
struct Expansion {
    /// The float op.
    op: &'static str,
    /// `(value, scale, zero point)` input positions of the quantized inputs, in the float
    /// op's input order.
    quantized: &'static [(usize, usize, usize)],
    /// The bias input (int32 in the scale of the first two inputs' product), if any, placed
    /// after the quantized inputs.
    bias: Option<usize>,
    /// `(scale, zero point)` positions of the output's parameters; `None` for a float output.
    output: Option<(usize, usize)>,
    /// Attributes the float op does not take.
    dropped: &'static [&'static str],
}

fn expansion(node: &NodeProto) -> Option<Expansion> {
    let ms = node.domain == "com.microsoft";
    let std = node.domain.is_empty() || node.domain == "ai.onnx";
    let e = |op, quantized, bias, output, dropped| {
        Some(Expansion {
            op,
            quantized,
            bias,
            output,
            dropped,
        })
    };
    const UNARY: &[(usize, usize, usize)] = &[(0, 1, 2)];
    const BINARY: &[(usize, usize, usize)] = &[(0, 1, 2), (3, 4, 5)];
    match (node.op_type.as_str(), std, ms) {
        ("QLinearConv", true, _) => e("Conv", BINARY, Some(8), Some((6, 7)), &[]),
        ("QLinearMatMul", true, _) => e("MatMul", BINARY, None, Some((6, 7)), &[]),
        ("QGemm", _, true) => {
            let output = input(node, 7).map(|_| (7, 8));
            e("Gemm", BINARY, Some(6), output, &[])
        }
        ("QLinearAdd", _, true) => e("Add", BINARY, None, Some((6, 7)), &[]),
        ("QLinearMul", _, true) => e("Mul", BINARY, None, Some((6, 7)), &[]),
        ("QLinearGlobalAveragePool", _, true) => e(
            "GlobalAveragePool",
            UNARY,
            None,
            Some((3, 4)),
            &["channels_last"],
        ),
        ("QLinearAveragePool", _, true) => {
            e("AveragePool", UNARY, None, Some((3, 4)), &["channels_last"])
        }
        ("QLinearSigmoid", _, true) => e("Sigmoid", UNARY, None, Some((3, 4)), &[]),
        ("QLinearLeakyRelu", _, true) => e("LeakyRelu", UNARY, None, Some((3, 4)), &[]),
        ("QLinearSoftmax", _, true) => e("Softmax", UNARY, None, Some((3, 4)), &["opset"]),
        _ => None,
    }
}

/// Whether `model` has any QOperator node [`expand`] rewrites.
pub(crate) fn has_qoperator_nodes(model: &ModelProto) -> bool {
    model.graph.as_ref().is_some_and(|g| {
        g.node
            .iter()
            .any(|n| expansion(n).is_some() || is_qlinear_concat(n))
    })
}

fn is_qlinear_concat(node: &NodeProto) -> bool {
    node.op_type == "QLinearConcat" && node.domain == "com.microsoft"
}

/// Things about a QOperator node the QDQ form cannot say; the import reports them.
fn unsupported(node: &NodeProto) -> Option<String> {
    if attrs::int(node, "channels_last").unwrap_or(0) != 0 {
        return Some("channels_last = 1 is not supported; export with channels first".into());
    }
    if node.op_type == "QLinearSoftmax"
        && attrs::int(node, "opset").is_some_and(|o| o < 13)
        && attrs::int(node, "axis").is_some_and(|a| a != -1)
    {
        return Some(
            "a softmax with opset-12 semantics (flattening at its axis) is not supported".into(),
        );
    }
    None
}

/// `model` with every QOperator node replaced by its QDQ group. Nodes with something the QDQ
/// form cannot express are left as they are, and the compatibility report names them.
pub(crate) fn expand(model: &ModelProto) -> (ModelProto, Vec<(String, String)>) {
    let mut model = model.clone();
    let mut problems = Vec::new();
    let Some(graph) = model.graph.as_mut() else {
        return (model, problems);
    };
    let mut nodes = Vec::with_capacity(graph.node.len() * 3);
    for node in std::mem::take(&mut graph.node) {
        if let Some(why) = (expansion(&node).is_some() || is_qlinear_concat(&node))
            .then(|| unsupported(&node))
            .flatten()
        {
            problems.push((node_name(&node), why));
            nodes.push(node);
            continue;
        }
        if is_qlinear_concat(&node) {
            expand_concat(&node, &mut nodes);
        } else if let Some(e) = expansion(&node) {
            expand_one(&node, &e, &mut nodes);
        } else {
            nodes.push(node);
        }
    }
    // The float op of each group wrote `<y>.float` and the quantize `<y>`; where `<y>` is not
    // a graph output, swap them, so loam's int8 op carries the name the file gave its result.
    let outputs: std::collections::HashSet<String> =
        graph.output.iter().map(|o| o.name.clone()).collect();
    let mut renamed = std::collections::HashMap::new();
    for node in &mut nodes {
        for i in node.input.iter_mut() {
            if let Some(r) = renamed.get(i.as_str()) {
                *i = String::clone(r);
            }
        }
        if node.op_type == "QuantizeLinear"
            && let (Some(from), Some(to)) = (node.input.first(), node.output.first())
            && *from == format!("{to}.float")
            && !outputs.contains(to)
        {
            let int8 = format!("{to}.int8");
            renamed.insert(to.clone(), int8.clone());
            node.input[0] = to.clone();
            node.output[0] = int8;
        }
    }
    let floats: std::collections::HashMap<String, String> = renamed
        .keys()
        .map(|y| (format!("{y}.float"), y.clone()))
        .collect();
    for node in &mut nodes {
        for o in node.output.iter_mut() {
            if let Some(y) = floats.get(o.as_str()) {
                *o = y.clone();
            }
        }
    }
    graph.node = nodes;
    (model, problems)
}

fn stem(node: &NodeProto) -> String {
    node_name(node)
}

fn dequantize(
    node: &NodeProto,
    (value, scale, zero_point): (usize, usize, usize),
    axis: Option<i64>,
    out: &mut Vec<NodeProto>,
) -> String {
    let name = format!("{}.input{value}.dequantized", stem(node));
    let mut inputs = vec![
        input(node, value).unwrap_or_default(),
        input(node, scale).unwrap_or_default(),
    ];
    if let Some(z) = input(node, zero_point) {
        inputs.push(z);
    }
    let attributes = axis.map_or_else(Vec::new, |a| vec![("axis", Attr::Int(a))]);
    out.push(proto::node(
        "DequantizeLinear",
        &format!("{}.dequantize{value}", stem(node)),
        &inputs,
        &[&name],
        attributes,
    ));
    name
}

fn expand_one(node: &NodeProto, e: &Expansion, out: &mut Vec<NodeProto>) {
    let mut inputs = Vec::new();
    for (k, &q) in e.quantized.iter().enumerate() {
        // The second operand of a convolution or matrix product is the weight: its scales
        // may run along the output channels (axis 0 of a filter or of a transposed B, axis 1
        // of a plain B); a single scale makes the axis moot.
        let axis = match (e.op, k) {
            ("Conv", 1) => Some(0),
            ("MatMul", 1) => Some(1),
            ("Gemm", 1) => Some(if attrs::int(node, "transB").unwrap_or(0) != 0 {
                0
            } else {
                1
            }),
            _ => None,
        };
        inputs.push(dequantize(node, q, axis, out));
    }
    if let Some(b) = e.bias
        && let Some(bias) = input(node, b)
    {
        // The bias scale is the product of the two operands' scales, as the QOperator ops
        // define it; tract folds the product at import.
        let (a_scale, w_scale) = (e.quantized[0].1, e.quantized[1].1);
        let scale = format!("{}.bias_scale", stem(node));
        out.push(proto::node(
            "Mul",
            &format!("{}.bias_scale", stem(node)),
            &[
                input(node, a_scale).unwrap_or_default(),
                input(node, w_scale).unwrap_or_default(),
            ],
            &[&scale],
            Vec::new(),
        ));
        let name = format!("{}.bias.dequantized", stem(node));
        out.push(proto::node(
            "DequantizeLinear",
            &format!("{}.dequantize_bias", stem(node)),
            &[bias, &scale],
            &[&name],
            vec![("axis", Attr::Int(0))],
        ));
        inputs.push(name);
    }
    let y = node.output.first().cloned().unwrap_or_default();
    let float_out = match e.output {
        Some(_) => format!("{y}.float"),
        None => y.clone(),
    };
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut op = proto::node(e.op, &node_name(node), &inputs, &[&float_out], Vec::new());
    op.attribute = kept_attributes(node, e.dropped);
    out.push(op);
    if let Some((scale, zero_point)) = e.output {
        quantize(node, &float_out, (scale, zero_point), &y, out);
    }
}

fn kept_attributes(node: &NodeProto, dropped: &[&str]) -> Vec<AttributeProto> {
    node.attribute
        .iter()
        .filter(|a| !dropped.contains(&a.name.as_str()))
        .cloned()
        .collect()
}

fn quantize(
    node: &NodeProto,
    from: &str,
    (scale, zero_point): (usize, usize),
    to: &str,
    out: &mut Vec<NodeProto>,
) {
    let mut inputs = vec![from, input(node, scale).unwrap_or_default()];
    if let Some(z) = input(node, zero_point) {
        inputs.push(z);
    }
    out.push(proto::node(
        "QuantizeLinear",
        &format!("{}.quantize", stem(node)),
        &inputs,
        &[to],
        Vec::new(),
    ));
}

/// `QLinearConcat(Y_scale, Y_zero_point, X0, X0_scale, X0_zero_point, X1, ...)`.
fn expand_concat(node: &NodeProto, out: &mut Vec<NodeProto>) {
    let parts = node.input.len().saturating_sub(2) / 3;
    let inputs: Vec<String> = (0..parts)
        .map(|k| {
            let base = 2 + 3 * k;
            dequantize(node, (base, base + 1, base + 2), None, out)
        })
        .collect();
    let y = node.output.first().cloned().unwrap_or_default();
    let float_out = format!("{y}.float");
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let mut op = proto::node(
        "Concat",
        &node_name(node),
        &inputs,
        &[&float_out],
        Vec::new(),
    );
    op.attribute = kept_attributes(node, &[]);
    out.push(op);
    quantize(node, &float_out, (0, 1), &y, out);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::npy::{Array, Data};
    use crate::peers::Peer;

    /// The expansion means what the QOperator ops mean: ONNX Runtime gives the same outputs
    /// for a file and its expansion (it fuses each QDQ group back into the integer kernel),
    /// to within a step where it picks a different kernel for a group.
    #[test]
    fn onnx_runtime_runs_a_file_and_its_expansion_alike() {
        use rand::{Rng, SeedableRng};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx");
        for (name, dims, step) in [
            (
                "pytorch-cnn.qop-uint8.onnx",
                vec![1, 3, 32, 32],
                1.0 / 256.0,
            ),
            ("pytorch-cnn.qop-int8.onnx", vec![1, 3, 32, 32], 1.0 / 256.0),
            ("branches.qop-uint8.onnx", vec![1, 4, 8, 8], 8.3e-3),
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let model = ModelProto::decode(bytes.as_slice()).unwrap();
            assert!(has_qoperator_nodes(&model));
            let (expanded, problems) = expand(&model);
            assert!(problems.is_empty(), "{problems:?}");
            assert!(!has_qoperator_nodes(&expanded));
            let mut original = Peer::OnnxRuntime.load(&bytes).unwrap();
            let mut rewritten = Peer::OnnxRuntime.load(&expanded.encode_to_vec()).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(9);
            let (mut worst, mut same, mut total) = (0.0f32, 0usize, 0usize);
            for _ in 0..16 {
                let n = dims.iter().product();
                let input = Array {
                    shape: dims.clone(),
                    data: Data::F32((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()),
                };
                original.set_inputs(std::slice::from_ref(&input)).unwrap();
                rewritten.set_inputs(std::slice::from_ref(&input)).unwrap();
                let (a, b) = (original.outputs().unwrap(), rewritten.outputs().unwrap());
                let (Data::F32(a), Data::F32(b)) = (&a[0].data, &b[0].data) else {
                    panic!("float outputs expected");
                };
                for (x, y) in a.iter().zip(b) {
                    worst = worst.max((x - y).abs());
                    same += usize::from(x == y);
                    total += 1;
                }
            }
            println!("{name}: {same}/{total} equal, worst {worst:e}");
            assert!(worst <= step * 1.001, "{name}: {worst}");
            assert!(same * 100 >= total * 95, "{name}: {same}/{total}");
        }
    }
}
