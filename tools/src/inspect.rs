//! `loam inspect`: what a `.loam` model needs before it is flashed: flash bytes, the planned
//! arena, its inputs and outputs, each op with its output shape and multiply-accumulates, and
//! the RAM on-device fine-tuning of its last layers would take.

use anyhow::Result;
use loam::Model;
use loam::format::TensorRecord;
use loam::ops::OpKind;
use loam::train::{Loss, Optimizer, TrainConfig, Trainer};
use serde::Serialize;

use crate::model_file::ModelFile;

/// One graph input or output.
#[derive(Debug, Clone, Serialize)]
pub struct Port {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u32>,
}

/// One op.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// Position in execution order.
    pub index: usize,
    /// Kind.
    pub kind: String,
    /// Node name.
    pub name: String,
    /// Dimensions of its first output.
    pub output: Vec<u32>,
    /// Multiply-accumulates per inference (convolutions and fully-connected layers).
    pub macs: u64,
}

/// RAM for fine-tuning the last `layers` fully-connected layers on the device.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRam {
    /// Layers trained, counted from the end.
    pub layers: usize,
    /// Training state bytes with Adam (parameters, two moments, gradients, activations).
    pub adam_state: usize,
    /// Training state bytes with plain SGD (no moments).
    pub sgd_state: usize,
    /// Arena plus Adam's state: the RAM a device needs for the model and its training.
    pub total_adam: usize,
}

/// Everything `loam inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Model name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Bytes of the `.loam` file: what goes into flash.
    pub flash_bytes: usize,
    /// Bytes of constant tensors (weights, biases, quantization tables).
    pub weight_bytes: usize,
    /// Bytes of the planned tensor arena: the inference RAM.
    pub arena_bytes: usize,
    /// Bytes of arena with which the interpreter also keeps every record decoded, which
    /// speeds up small layers ([`loam::Interpreter::arena_size_with_records`]).
    pub arena_with_records_bytes: usize,
    /// Graph inputs.
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// Ops in execution order.
    pub ops: Vec<OpRow>,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Class names stored in the model.
    pub labels: usize,
    /// Names of the metadata constants (preprocessing, drift statistics, ...).
    pub constants: Vec<String>,
    /// On-device training RAM, for as many trailing layers as the trainer supports here.
    pub training: Vec<TrainingRam>,
    /// Why the trainer takes not even the last layer, when it does not.
    pub training_refused: Option<String>,
    /// What the model's stored training plan trains and its RAM (Adam), if it has one.
    pub plan: Option<crate::trainable::PlanReport>,
}

fn port(t: &TensorRecord<'_>) -> Port {
    Port {
        name: t.name.to_string(),
        dtype: t.dtype.to_string(),
        shape: t.shape.dims().to_vec(),
    }
}

/// Multiply-accumulates of one op from its operands' shapes.
fn macs(
    model: &Model<'_>,
    kind: Option<OpKind>,
    inputs: &[u16],
    output: Option<&TensorRecord<'_>>,
) -> u64 {
    let (Some(output), Some(&weights)) = (output, inputs.get(1)) else {
        return 0;
    };
    let Some(weights) = model.tensor(usize::from(weights)) else {
        return 0;
    };
    let out = output.shape.elements().unwrap_or(0) as u64;
    let w = weights.shape.dims();
    let product = |d: &[u32]| d.iter().map(|&x| u64::from(x)).product::<u64>();
    match kind {
        // Each output sums over one weight row ([out, in]) or one filter ([out, kh, kw, c]).
        Some(OpKind::FullyConnected | OpKind::Conv2d) if !w.is_empty() => out * product(&w[1..]),
        // Filters [kh, kw, channels]: each output sums over its kernel window.
        Some(OpKind::DepthwiseConv2d) if w.len() >= 2 => out * product(&w[..w.len() - 1]),
        _ => 0,
    }
}

/// Inspects `file`'s model.
pub fn inspect(file: &ModelFile) -> Result<Inspection> {
    let model = file.model()?;
    let tensor = |id: u16| model.tensor(usize::from(id));
    let mut ops = Vec::new();
    for (index, op) in model.ops().enumerate() {
        let kind = OpKind::from_code(op.kind);
        let inputs: Vec<u16> = op.inputs.iter().collect();
        let output = op.outputs.iter().next().and_then(tensor);
        ops.push(OpRow {
            index,
            kind: kind.map_or("?", |k| k.name()).to_string(),
            name: op.name.to_string(),
            output: output
                .as_ref()
                .map(|t| t.shape.dims().to_vec())
                .unwrap_or_default(),
            macs: macs(&model, kind, &inputs, output.as_ref()),
        });
    }
    let weight_bytes = (0..model.tensor_count())
        .filter_map(|i| model.tensor(i))
        .filter(|t| t.is_constant())
        .filter_map(|t| t.byte_len())
        .sum();
    let metadata = model.metadata();
    let constants = (0..metadata.constants.len())
        .filter_map(|i| {
            metadata
                .constants
                .get::<loam::format::ConstantRecord<'_>>(i)
        })
        .map(|c| c.name.to_string())
        .collect();
    let arena = model.arena_size();
    let config = |layers, optimizer| TrainConfig {
        layers,
        loss: Loss::CrossEntropy,
        optimizer,
        clip_norm: None,
        accumulate: 1,
    };
    let training: Vec<TrainingRam> = (1..=loam::train::MAX_TRAINED_LAYERS)
        .map_while(|layers| {
            let config = |optimizer| config(layers, optimizer);
            let adam = Trainer::state_len(&model, &config(Optimizer::adam(1e-3))).ok()?;
            let sgd = Trainer::state_len(&model, &config(Optimizer::sgd(1e-2, 0.0))).ok()?;
            Some(TrainingRam {
                layers,
                adam_state: 4 * adam,
                sgd_state: 4 * sgd,
                total_adam: arena + 4 * adam,
            })
        })
        .collect();
    let training_refused = training
        .is_empty()
        .then(|| Trainer::state_len(&model, &config(1, Optimizer::adam(1e-3))).err())
        .flatten()
        .map(|e| e.to_string());
    let ports = |outputs: bool| -> Result<Vec<Port>> {
        Ok(crate::run::io_records(&model, outputs)?
            .iter()
            .map(port)
            .collect())
    };
    Ok(Inspection {
        name: metadata.name.to_string(),
        description: metadata.description.to_string(),
        flash_bytes: file.bytes().len(),
        weight_bytes,
        arena_bytes: arena,
        arena_with_records_bytes: loam::Interpreter::arena_size_with_records(&model),
        inputs: ports(false)?,
        outputs: ports(true)?,
        macs: ops.iter().map(|o| o.macs).sum(),
        ops,
        labels: metadata.labels.len(),
        constants,
        training,
        training_refused,
        plan: crate::trainable::plan_report(&model, crate::trainable::PlanOptimizer::Adam)?,
    })
}

impl Inspection {
    /// Whether inference, and fine-tuning the last layer, fit `board`.
    pub fn fit_lines(&self, board: &crate::boards::Board) -> Vec<String> {
        let mut lines = vec![crate::boards::fit_line(
            board,
            "inference",
            self.flash_bytes,
            self.arena_bytes,
        )];
        if let Some(plan) = &self.plan {
            lines.push(crate::boards::fit_line(
                board,
                "fine-tuning with the stored plan (Adam; stack not counted)",
                self.flash_bytes,
                plan.total_bytes,
            ));
        }
        if let Some(t) = self.training.first() {
            lines.push(crate::boards::fit_line(
                board,
                "last-layer fine-tuning (Adam; stack not counted)",
                self.flash_bytes,
                t.total_adam,
            ));
        }
        lines
    }

    /// The report as the CLI prints it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{}: {}", self.name, self.description);
        let _ = writeln!(
            s,
            "flash {} B (weights {} B), arena {} B ({} B keeping its records decoded and its weights packed for this CPU, for speed), {} MACs per inference",
            self.flash_bytes,
            self.weight_bytes,
            self.arena_bytes,
            self.arena_with_records_bytes,
            self.macs
        );
        for (what, ports) in [("input", &self.inputs), ("output", &self.outputs)] {
            for p in ports {
                let _ = writeln!(s, "{what:<6} {} {} {:?}", p.name, p.dtype, p.shape);
            }
        }
        let _ = writeln!(
            s,
            "\n{:>3}  {:<18} {:<16} {:<18} {:>10}",
            "#", "op", "name", "output", "MACs"
        );
        for o in &self.ops {
            let _ = writeln!(
                s,
                "{:>3}  {:<18} {:<16} {:<18} {:>10}",
                o.index,
                o.kind,
                o.name,
                format!("{:?}", o.output),
                o.macs
            );
        }
        if !self.constants.is_empty() {
            let _ = writeln!(s, "\nconstants: {}", self.constants.join(", "));
        }
        if self.training.is_empty() {
            let _ = writeln!(
                s,
                "\non-device training: not possible ({})",
                self.training_refused
                    .as_deref()
                    .unwrap_or("the model does not end in fully-connected layers")
            );
        } else {
            let _ = writeln!(
                s,
                "\non-device training of the last layers (RAM beside the {} B arena):",
                self.arena_bytes
            );
            let _ = writeln!(
                s,
                "{:>7} {:>12} {:>12} {:>16}",
                "layers", "Adam state", "SGD state", "arena + Adam"
            );
            for t in &self.training {
                let _ = writeln!(
                    s,
                    "{:>7} {:>10} B {:>10} B {:>14} B",
                    t.layers, t.adam_state, t.sgd_state, t.total_adam
                );
            }
        }
        if let Some(plan) = &self.plan {
            let _ = write!(s, "\n{}", plan.to_text());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_digits_model_is_described() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/model.loam");
        let i = inspect(&ModelFile::open(&path).unwrap()).unwrap();
        assert_eq!((i.flash_bytes, i.arena_bytes), (17_920, 1_408));
        assert!(i.arena_with_records_bytes > i.arena_bytes);
        // conv 8x8x16 over 3x3x1, conv 4x4x32 over 3x3x16, dense 128->64, dense 64->10.
        assert_eq!(
            i.macs,
            8 * 8 * 16 * 9 + 4 * 4 * 32 * 144 + 128 * 64 + 64 * 10
        );
        assert_eq!(i.inputs[0].dtype, "i8");
        assert!(i.constants.iter().any(|c| c == "drift.input.mean"));
        // The last layer alone: the 11,248 B the learning demo's firmware allocates.
        assert_eq!(i.training[0].adam_state, 11_248);
        assert!(i.training[1].adam_state > i.training[0].adam_state);
        assert!(i.training[0].sgd_state < i.training[0].adam_state);
        assert!(i.to_text().contains("arena + Adam"));
        let m0 = crate::boards::board("cortex-m0").unwrap();
        let lines = i.fit_lines(&m0);
        assert!(
            lines[0].starts_with("inference fits cortex-m0"),
            "{lines:?}"
        );
        assert!(lines[1].contains("RAM 12656 B"), "{lines:?}");
    }
}
