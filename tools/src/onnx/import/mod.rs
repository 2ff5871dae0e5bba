//! ONNX into loam: a model exported by PyTorch, Keras (tf2onnx) or any ONNX tool, float or
//! quantized in the QDQ form, lowered to loam ops and written as a `.loam` file.
//!
//! tract-onnx parses the protobuf and runs its shape and value inference over the graph with
//! the input shapes fixed; every value it can compute at import time (exporter noise such as
//! `Shape -> Gather -> Concat -> Reshape` chains, `Constant` nodes, folded initializers) is
//! a constant here and needs no loam op. The remaining nodes are lowered one by one in
//! [`lower`]: BatchNorm folded into the convolution before it, ReLU/Clip fused into their
//! producer, and `DequantizeLinear -> op -> QuantizeLinear` groups turned into native int8
//! ops that keep the file's own integer weights. Models in the QOperator form (`QLinearConv`,
//! ONNX Runtime's `QGemm`, ...) are first rewritten as those groups ([`qoperator`]).
//!
//! Before anything is written, [`report`] checks every node; all problems in the model come
//! back in one [`CompatibilityReport`], so a user fixes them in one pass.

pub(crate) mod attrs;
mod lower;
mod qoperator;
mod report;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use loam::format::writer::Built;
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::{InferenceFact, InferenceModelExt, Tensor};
use tract_onnx::tract_hir::infer::Factoid;

pub use report::{CompatibilityReport, Problem};

/// The default-domain operator sets the importer accepts: 11 is the first with today's
/// `Pad`/`Clip`/`Resize` signatures, 22 the newest whose changes to the lowered ops are all
/// handled.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=22;

/// Choices for [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Shapes for graph inputs whose shape the file leaves open, by input name. An input not
    /// named here takes 1 for an open first (batch) dimension; any other open dimension is an
    /// error that asks for its shape.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// The model name stored in the `.loam` (the graph's name if not given).
    pub name: Option<String>,
    /// Metadata constants to store in the `.loam` (preprocessing, a self-check record, ...).
    pub constants: Vec<(String, Vec<f32>)>,
}

/// What importing produced.
pub struct Imported {
    /// The `.loam` file.
    pub built: Built,
    /// Graph inputs with the shapes they were fixed to.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// Things a user should know that did not stop the import: nodes kept in f32 inside a
    /// quantized model and why, open dimensions that were set to 1.
    pub notes: Vec<String>,
}

/// Imports the ONNX file at `path`.
pub fn import(path: &Path, options: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let dir = path.parent().and_then(|p| p.to_str()).map(str::to_owned);
    import_bytes(&bytes, dir.as_deref(), options)
        .with_context(|| format!("importing {}", path.display()))
}

/// Imports an ONNX model held in memory; `dir` is where external weight files live, if any.
pub fn import_bytes(bytes: &[u8], dir: Option<&str>, options: &ImportOptions) -> Result<Imported> {
    let proto = pb::ModelProto::decode(bytes)
        .map_err(|e| anyhow::anyhow!("not an ONNX model (the protobuf does not decode: {e})"))?;
    let (proto, qoperator_problems) = if qoperator::has_qoperator_nodes(&proto) {
        qoperator::expand(&proto)
    } else {
        (proto, Vec::new())
    };
    let graph = proto
        .graph
        .as_ref()
        .context("the ONNX model has no graph")?;
    let opset = default_opset(&proto)?;

    let mut notes = Vec::new();
    let inputs = input_shapes(graph, options, &mut notes)?;
    // tract's shape and constant inference panics on some inconsistent files (an index past
    // a constant's end, say: found by fuzzing); that is a malformed model, not a crash.
    let values = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        analyse(&proto, dir, &inputs)
    }))
    .map_err(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        anyhow::anyhow!(
            "the model is inconsistent: tract stopped while inferring its shapes and \
             constants ({why})"
        )
    })??;

    let mut problems = report::check(graph, opset, &values);
    if !qoperator_problems.is_empty() {
        // A QOperator node left unexpanded is reported for what stopped it, not as an
        // unknown op.
        problems.retain(|p| qoperator_problems.iter().all(|(node, _)| *node != p.node));
        for (node, what) in qoperator_problems.into_iter().rev() {
            let op = graph
                .node
                .iter()
                .find(|n| attrs::node_name(n) == node)
                .map_or_else(String::new, |n| n.op_type.clone());
            problems.insert(0, Problem { node, op, what });
        }
    }
    let lowered = lower::lower(graph, opset, &values, &inputs, options, &mut notes);
    let built = match lowered {
        Ok(built) if problems.is_empty() => built,
        Ok(_) => return Err(CompatibilityReport { problems }.into()),
        Err(more) => {
            // Lowering problems count only when the static check found none: otherwise they
            // are that check's problems again, or their echoes downstream.
            if problems.is_empty() {
                problems = more;
            }
            return Err(CompatibilityReport { problems }.into());
        }
    };
    Ok(Imported {
        built,
        inputs,
        notes,
    })
}

/// The version of the default ONNX operator set the model uses, checked against [`OPSETS`].
pub(crate) fn default_opset(proto: &pb::ModelProto) -> Result<i64> {
    let version = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .context("the model imports no default-domain ONNX operator set")?;
    if !OPSETS.contains(&version) {
        bail!(
            "the model uses ONNX opset {version}; loam imports opsets {} to {} \
             (re-export with opset_version=17, or convert with onnx.version_converter)",
            OPSETS.start(),
            OPSETS.end()
        );
    }
    Ok(version)
}

/// The largest tensor the importer accepts, in elements: a `.loam` arena is addressed with
/// 32-bit offsets, and no microcontroller or phone model comes near this.
const MAX_ELEMENTS: usize = 1 << 28;

/// Whether a tensor of `dims` stays within [`MAX_ELEMENTS`].
fn within_limit(dims: &[usize]) -> bool {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some_and(|n| n <= MAX_ELEMENTS)
}

/// The concrete shape of every graph input that is not an initializer.
pub(crate) fn input_shapes(
    graph: &pb::GraphProto,
    options: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Vec<usize>)>> {
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut shapes = Vec::new();
    for input in &graph.input {
        if initializers.contains(input.name.as_str()) {
            continue;
        }
        let name = &input.name;
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t,
            _ => bail!("graph input `{name}` is not a tensor"),
        };
        if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
            bail!(
                "graph input `{name}` has element type {}; loam models take float32 inputs \
                 (quantize inside the graph with QuantizeLinear)",
                element_type_name(tensor.elem_type)
            );
        }
        let dims = if let Some(given) = options.input_shapes.get(name) {
            given.clone()
        } else {
            let proto_dims = tensor
                .shape
                .as_ref()
                .with_context(|| {
                    format!("graph input `{name}` has no shape; give it with --input-shape")
                })?
                .dim
                .iter();
            let mut dims = Vec::new();
            for (axis, d) in proto_dims.enumerate() {
                match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                        dims.push(v as usize)
                    }
                    _ if axis == 0 => {
                        notes.push(format!(
                            "input `{name}`: the open batch dimension is fixed to 1"
                        ));
                        dims.push(1)
                    }
                    _ => bail!(
                        "graph input `{name}` has an open dimension at axis {axis}; give the \
                         shape with --input-shape {name}=1,3,32,32 (say)"
                    ),
                }
            }
            dims
        };
        if !within_limit(&dims) {
            bail!(
                "graph input `{name}` of shape {dims:?} is larger than loam's limit of {} \
                 elements per tensor",
                MAX_ELEMENTS
            );
        }
        shapes.push((name.clone(), dims));
    }
    Ok(shapes)
}

/// An ONNX element type's name, for messages.
fn element_type_name(code: i32) -> String {
    pb::tensor_proto::DataType::try_from(code)
        .map(|t| t.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("#{code}"))
}

/// What tract's analysis knows about the graph's values.
pub(crate) struct Values {
    /// Values computable at import time, by ONNX value name.
    constants: HashMap<String, Arc<Tensor>>,
    /// Shapes known at import time, by ONNX value name.
    shapes: HashMap<String, Vec<usize>>,
}

impl Values {
    /// The value of `name` if it is known before running the model.
    pub(crate) fn constant(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.constants.get(name)
    }

    /// The value of `name` as floats with its dimensions, if it is a constant that converts.
    pub(crate) fn constant_f32(&self, name: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        let t = self.constant(name)?;
        Some((tensor_f32(t).ok()?, t.shape().to_vec()))
    }

    /// The shape of `name`, if inference fixed it.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// Whether every output of `node` is known before running the model, so the node needs
    /// no loam op.
    pub(crate) fn folds(&self, node: &pb::NodeProto) -> bool {
        node.output
            .iter()
            .filter(|o| !o.is_empty())
            .all(|o| self.constant(o).is_some())
    }
}

/// A constant's values as floats, whatever its element type.
pub(crate) fn tensor_f32(t: &Tensor) -> Result<Vec<f32>, String> {
    let cast = t
        .cast_to::<f32>()
        .map_err(|e| format!("a constant does not convert to float: {e}"))?;
    Ok(cast
        .to_plain_array_view::<f32>()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect())
}

/// Runs tract's inference over the graph with the inputs fixed to `inputs`, and collects
/// every value it could compute.
pub(crate) fn analyse(
    proto: &pb::ModelProto,
    dir: Option<&str>,
    inputs: &[(String, Vec<usize>)],
) -> Result<Values> {
    // value_info and declared output shapes keep the exporter's symbolic batch; the inputs
    // fixed here are what every shape must follow from.
    let onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    let mut parsed = onnx
        .parse(proto, dir)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("reading the ONNX graph")?;
    let model = &mut parsed.model;
    for (name, dims) in inputs {
        let outlet = *parsed
            .outlets_by_name
            .get(name)
            .with_context(|| format!("graph input `{name}` is not in the graph"))?;
        model
            .set_outlet_fact(
                outlet,
                InferenceFact::dt_shape(tract_onnx::prelude::DatumType::F32, dims.clone()),
            )
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    }
    // Obstinate: an op tract cannot analyse must not hide the constants around it; the
    // compatibility report names the op itself.
    let _ = model.analyse(true);
    let mut constants = HashMap::new();
    let mut shapes = HashMap::new();
    for (name, outlet) in &parsed.outlets_by_name {
        let Ok(fact) = model.outlet_fact(*outlet) else {
            continue;
        };
        if let Some(value) = fact.value.concretize() {
            constants.insert(name.clone(), value);
        }
        if let Some(dims) = fact.shape.concretize()
            && let Some(dims) = dims
                .iter()
                .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
                .collect()
        {
            shapes.insert(name.clone(), dims);
        }
    }
    // Sources are never constants, whatever tract inferred about them.
    for (name, _) in inputs {
        constants.remove(name);
    }
    Ok(Values { constants, shapes })
}
