//! `loam verify`: the same inputs through loam and a peer runtime, output by output.
//!
//! The peer runs the ONNX file [`crate::onnx::export`] writes for the model, so what is
//! compared is loam's arithmetic against an independent implementation of the same graph.
//! Float outputs report the largest absolute difference and that difference relative to the
//! largest magnitude the peer produced; int8 outputs report how many elements differ by 0, 1,
//! 2, ... quantization steps (the LSB histogram), since runtimes legitimately round
//! requantization differently by one step.

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::model_file::ModelFile;
use crate::npy::{Array, Data};
use crate::onnx::{ExportOptions, export_bytes};
use crate::peers::Peer;
use crate::run::run;

/// How far apart one output is.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// Float output.
    Float {
        /// Largest `|loam - peer|`.
        max_abs: f64,
        /// `max_abs` divided by the largest `|peer|` (0 when the peer's output is all zero).
        max_rel: f64,
    },
    /// Integer output, or a float output dequantized from int8: `histogram[k]` elements
    /// differ by `k` quantization steps (rounded to the nearest step when dequantized).
    Quantized {
        /// Counts per step difference, up to the largest seen.
        histogram: Vec<usize>,
        /// The step of a dequantized float output; `None` for an integer output.
        step: Option<f64>,
    },
}

/// One output's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputComparison {
    /// The output's name.
    pub name: String,
    /// Elements compared (over every sample).
    pub elements: usize,
    /// How far apart.
    pub difference: Difference,
}

impl OutputComparison {
    /// The largest difference in quantization steps (int8 outputs only).
    pub fn max_lsb(&self) -> Option<usize> {
        match &self.difference {
            Difference::Quantized { histogram, .. } => Some(histogram.len().saturating_sub(1)),
            Difference::Float { .. } => None,
        }
    }

    /// The fraction of elements within `steps` quantization steps (int8 outputs only).
    pub fn within_lsb(&self, steps: usize) -> Option<f64> {
        match &self.difference {
            Difference::Quantized { histogram, .. } => {
                let near: usize = histogram.iter().take(steps + 1).sum();
                Some(near as f64 / self.elements.max(1) as f64)
            }
            Difference::Float { .. } => None,
        }
    }
}

/// What `loam verify` prints.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The peer compared against.
    pub peer: Peer,
    /// Samples run.
    pub samples: usize,
    /// One entry per model output.
    pub outputs: Vec<OutputComparison>,
    /// What a reader of the comparison should know (how the peer was run differently).
    pub notes: Vec<String>,
}

/// When a comparison passes.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Largest absolute float difference allowed.
    pub atol: f64,
    /// Largest float difference allowed relative to the peer's largest magnitude.
    pub rtol: f64,
    /// Largest int8 difference in quantization steps.
    pub max_lsb: usize,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            atol: 1e-4,
            rtol: 1e-4,
            max_lsb: 1,
        }
    }
}

/// The int8 grid `(scale, zero point)` of a tensor that has one: an int8 tensor's own, or
/// that of the int8 tensor a Dequantize op makes a float one from. Such a tensor can only
/// take values on that grid, so it is compared in steps of it.
fn grid_of(model: &loam::Model<'_>, id: u16) -> Option<(f64, i32)> {
    let per_tensor = |t: loam::format::TensorRecord<'_>| match t.quantization {
        loam::Quantization::PerTensor { scale, zero_point } => Some((f64::from(scale), zero_point)),
        _ => None,
    };
    let tensor = model.tensor(usize::from(id))?;
    if tensor.dtype == loam::DType::I8 {
        return per_tensor(tensor);
    }
    let producer = model.ops().find(|op| op.outputs.iter().any(|t| t == id))?;
    if loam::ops::OpKind::from_code(producer.kind) != Some(loam::ops::OpKind::Dequantize) {
        return None;
    }
    per_tensor(model.tensor(usize::from(producer.inputs.get(0)?))?)
}

/// [`grid_of`] each graph output.
fn output_grids(model: &loam::Model<'_>) -> Vec<Option<(f64, i32)>> {
    model
        .outputs()
        .iter()
        .map(|id| grid_of(model, id))
        .collect()
}

/// Accumulates the differences of one output over samples; `grid` is the output's int8
/// grid, if it has one. An int8 output the peer gives as float (see
/// [`ExportOptions::float_softmax_outputs`]) is dequantized on it and compared in its steps.
fn accumulate(
    name: &str,
    acc: &mut Option<OutputComparison>,
    ours: &Array,
    theirs: &Array,
    grid: Option<(f64, i32)>,
) -> Result<()> {
    let dequantized;
    let (ours, step) = match (&ours.data, &theirs.data, grid) {
        (Data::I8(q), Data::F32(_), Some((scale, zero_point))) => {
            dequantized = Array {
                shape: ours.shape.clone(),
                data: Data::F32(
                    q.iter()
                        .map(|&q| ((i32::from(q) - zero_point) as f64 * scale) as f32)
                        .collect(),
                ),
            };
            (&dequantized, Some(scale))
        }
        (Data::F32(_), _, Some((scale, _))) => (ours, Some(scale)),
        _ => (ours, None),
    };
    ensure!(
        ours.data.len() == theirs.data.len(),
        "output `{name}`: loam gives {} values, the peer {}",
        ours.data.len(),
        theirs.data.len()
    );
    let entry = acc.get_or_insert_with(|| OutputComparison {
        name: name.to_string(),
        elements: 0,
        difference: match (&ours.data, step) {
            (Data::F32(_), None) => Difference::Float {
                max_abs: 0.0,
                max_rel: 0.0,
            },
            _ => Difference::Quantized {
                histogram: vec![],
                step,
            },
        },
    });
    entry.elements += ours.data.len();
    match (&mut entry.difference, &ours.data, &theirs.data) {
        (Difference::Float { max_abs, max_rel }, Data::F32(a), Data::F32(b)) => {
            let largest = b.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
            let worst = a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| {
                m.max((f64::from(x) - f64::from(y)).abs())
            });
            if worst.is_nan() || a.iter().zip(b).any(|(x, y)| x.is_nan() != y.is_nan()) {
                bail!("output `{name}`: one runtime produced NaN where the other did not");
            }
            *max_abs = max_abs.max(worst);
            if largest > 0.0 {
                *max_rel = max_rel.max(worst / largest);
            }
        }
        (Difference::Quantized { histogram, step }, _, _) => {
            let (a, b) = (ours.data.to_f64(), theirs.data.to_f64());
            ensure!(
                ours.data.dtype() == theirs.data.dtype(),
                "output `{name}`: loam gives {}, the peer {}",
                ours.data.dtype(),
                theirs.data.dtype()
            );
            if a.iter().zip(&b).any(|(x, y)| x.is_nan() != y.is_nan()) {
                bail!("output `{name}`: one runtime produced NaN where the other did not");
            }
            for (x, y) in a.iter().zip(&b) {
                let d = match step {
                    Some(s) => ((x - y).abs() / *s).round() as usize,
                    None => (x - y).abs() as usize,
                };
                if histogram.len() <= d {
                    histogram.resize(d + 1, 0);
                }
                histogram[d] += 1;
            }
        }
        _ => bail!(
            "output `{name}`: loam gives {}, the peer {}",
            ours.data.dtype(),
            theirs.data.dtype()
        ),
    }
    Ok(())
}

/// Runs every sample (one array per graph input each, exactly the inputs' shapes) through
/// loam and through `peer`, and compares the outputs.
pub fn verify(file: &ModelFile, peer: Peer, samples: &[Vec<Array>]) -> Result<VerifyReport> {
    let model = file.model()?;
    ensure!(
        !(peer == Peer::Tract && crate::onnx::has_int16_tensors(&model)),
        "{} has int16 tensors (16x8 layers), and tract 0.23.9 has no int16 QuantizeLinear; \
         verify it against onnxruntime",
        file.path.display()
    );
    // tract 0.23.9 fuses DequantizeLinear -> Softmax -> QuantizeLinear into an int8 softmax
    // that ignores the output zero point (every probability off by up to 255 steps); it gets
    // the softmax's float result instead, against which loam's int8 output is compared.
    let float_softmax = peer == Peer::Tract && crate::onnx::quantizes_a_softmax(&model);
    let options = ExportOptions {
        float_softmax_outputs: float_softmax,
        ..ExportOptions::default()
    };
    let onnx = export_bytes(&model, options)
        .with_context(|| format!("exporting {} to ONNX for {peer}", file.path.display()))?;
    let mut report = verify_against(file, peer, &onnx, samples)
        .with_context(|| format!("comparing {} with {peer}", file.path.display()))?;
    if float_softmax {
        report.notes.push(
            "tract runs the model's softmax in float: its int8 softmax ignores the output zero \
             point (tract 0.23.9), so loam's quantized probabilities are compared with the \
             exact ones"
                .to_string(),
        );
    }
    Ok(report)
}

/// Like [`verify`], with the peer running `reference` (an ONNX model with the same inputs and
/// outputs, such as the file the `.loam` was imported from) instead of the model's export.
pub fn verify_against(
    file: &ModelFile,
    peer: Peer,
    reference: &[u8],
    samples: &[Vec<Array>],
) -> Result<VerifyReport> {
    let mut theirs = peer.load(reference).context("loading the ONNX model")?;
    let grids = output_grids(&file.model()?);
    let mut acc: Vec<Option<OutputComparison>> = Vec::new();
    for inputs in samples {
        let ours = run(file, inputs)?;
        theirs.set_inputs(inputs)?;
        let other = theirs.outputs()?;
        ensure!(
            other.len() == ours.len(),
            "loam has {} outputs, {peer} {}",
            ours.len(),
            other.len()
        );
        acc.resize(ours.len(), None);
        for (i, ((o, t), a)) in ours.iter().zip(&other).zip(&mut acc).enumerate() {
            accumulate(&o.name, a, &o.array, t, grids.get(i).copied().flatten())?;
        }
    }
    Ok(VerifyReport {
        peer,
        samples: samples.len(),
        outputs: acc.into_iter().flatten().collect(),
        notes: Vec::new(),
    })
}

/// One comparison as JSON (`name`, `elements`, then `max_abs`/`max_rel` or
/// `lsb_histogram`/`step`).
pub fn comparison_json(o: &OutputComparison) -> serde_json::Value {
    match &o.difference {
        Difference::Float { max_abs, max_rel } => json!({
            "name": o.name, "elements": o.elements,
            "max_abs": max_abs, "max_rel": max_rel,
        }),
        Difference::Quantized { histogram, step } => json!({
            "name": o.name, "elements": o.elements,
            "lsb_histogram": histogram, "step": step,
        }),
    }
}

/// One op result compared by [`verify_per_layer`].
#[derive(Debug, Clone)]
pub struct LayerComparison {
    /// The op that writes it.
    pub op: usize,
    /// The op's kind.
    pub kind: String,
    /// The comparison (named after the tensor).
    pub comparison: OutputComparison,
}

/// Every op's result through loam (run op by op) and through `peer` (the model's export with
/// every result declared an output), in op order: where two runtimes start to disagree.
/// Declaring intermediate results outputs can keep a peer from fusing ops it would fuse
/// otherwise, so its figures can differ slightly from a plain run's.
pub fn verify_per_layer(
    file: &ModelFile,
    peer: Peer,
    samples: &[Vec<Array>],
) -> Result<Vec<LayerComparison>> {
    let model = file.model()?;
    let tensors = crate::onnx::exposed_tensors(&model);
    let options = ExportOptions {
        float_softmax_outputs: peer == Peer::Tract && crate::onnx::quantizes_a_softmax(&model),
        expose_intermediates: true,
        ..ExportOptions::default()
    };
    let onnx = export_bytes(&model, options)
        .with_context(|| format!("exporting {} to ONNX for {peer}", file.path.display()))?;
    let mut theirs = peer.load(&onnx).context("loading the ONNX model")?;
    let names: Vec<String> = tensors
        .iter()
        .map(|&t| {
            model
                .tensor(usize::from(t))
                .map_or("?", |r| r.name)
                .to_string()
        })
        .collect();
    let outputs = model.outputs().len();
    let mut acc: Vec<Option<OutputComparison>> = vec![None; tensors.len()];
    for inputs in samples {
        let ours = crate::run::run_layers(file, inputs, &tensors)?;
        theirs.set_inputs(inputs)?;
        let other = theirs.outputs()?;
        ensure!(
            other.len() == outputs + tensors.len(),
            "{peer} gave {} outputs for {} model outputs and {} layers",
            other.len(),
            outputs,
            tensors.len()
        );
        for (k, ((o, t), a)) in ours.iter().zip(&other[outputs..]).zip(&mut acc).enumerate() {
            accumulate(&names[k], a, o, t, grid_of(&model, tensors[k]))?;
        }
    }
    let producers: Vec<(usize, String)> = tensors
        .iter()
        .map(|&t| {
            model
                .ops()
                .enumerate()
                .find(|(_, op)| op.outputs.iter().any(|o| o == t))
                .map(|(i, op)| {
                    let kind = loam::ops::OpKind::from_code(op.kind).map_or("?", |k| k.name());
                    (i, kind.to_string())
                })
                .unwrap_or((usize::MAX, "?".into()))
        })
        .collect();
    Ok(acc
        .into_iter()
        .zip(producers)
        .filter_map(|(c, (op, kind))| {
            c.map(|comparison| LayerComparison {
                op,
                kind,
                comparison,
            })
        })
        .collect())
}

/// The per-layer table `loam verify --per-layer` prints; the first layer beyond `tolerance`
/// is marked.
pub fn layers_text(layers: &[LayerComparison], tolerance: Tolerance) -> String {
    let mut s = format!(
        "per layer:\n  {:>3}  {:<18} {:<32} {}\n",
        "#", "op", "result", "difference"
    );
    let mut marked = false;
    for l in layers {
        let o = &l.comparison;
        let (text, beyond) = match &o.difference {
            Difference::Float { max_abs, max_rel } => (
                format!("max abs {max_abs:.3e}  max rel {max_rel:.3e}"),
                *max_abs > tolerance.atol && *max_rel > tolerance.rtol,
            ),
            Difference::Quantized { .. } => {
                let lsb = o.max_lsb().unwrap_or(0);
                (
                    format!(
                        "up to {lsb} LSB, {:.2}% within 1",
                        100.0 * o.within_lsb(1).unwrap_or(0.0)
                    ),
                    lsb > tolerance.max_lsb,
                )
            }
        };
        let mark = if beyond && !marked {
            marked = true;
            "  <- first beyond the tolerance"
        } else {
            ""
        };
        s.push_str(&format!(
            "  {:>3}  {:<18} {:<32} {text}{mark}\n",
            l.op, l.kind, o.name
        ));
    }
    s
}

impl VerifyReport {
    /// The outputs beyond `tolerance`, described.
    pub fn failures(&self, tolerance: Tolerance) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.outputs {
            match &o.difference {
                Difference::Float { max_abs, max_rel } => {
                    if *max_abs > tolerance.atol && *max_rel > tolerance.rtol {
                        out.push(format!(
                            "`{}`: max abs {max_abs:.3e} > {:.1e} and max rel {max_rel:.3e} > {:.1e}",
                            o.name, tolerance.atol, tolerance.rtol
                        ));
                    }
                }
                Difference::Quantized { .. } => {
                    let lsb = o.max_lsb().unwrap_or(0);
                    if lsb > tolerance.max_lsb {
                        out.push(format!(
                            "`{}`: differs by up to {lsb} LSB (allowed {})",
                            o.name, tolerance.max_lsb
                        ));
                    }
                }
            }
        }
        out
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut s = format!("against {} over {} sample(s):\n", self.peer, self.samples);
        for o in &self.outputs {
            match &o.difference {
                Difference::Float { max_abs, max_rel } => s.push_str(&format!(
                    "  {:<24} f32   {:>8} values  max abs {max_abs:.3e}  max rel {max_rel:.3e}\n",
                    o.name, o.elements
                )),
                Difference::Quantized { histogram, step } => {
                    let hist: Vec<String> = histogram
                        .iter()
                        .enumerate()
                        .filter(|&(_, &n)| n > 0)
                        .map(|(k, n)| format!("{k}:{n}"))
                        .collect();
                    let (kind, unit) = match step {
                        Some(step) => ("deq", format!(" of {step:.3e}")),
                        None => ("int", String::new()),
                    };
                    s.push_str(&format!(
                        "  {:<24} {kind}   {:>8} values  LSB histogram {}  ({:.2}% within 1 LSB{unit})\n",
                        o.name,
                        o.elements,
                        hist.join(" "),
                        100.0 * o.within_lsb(1).unwrap_or(0.0)
                    ));
                }
            }
        }
        for note in &self.notes {
            s.push_str(&format!("  note: {note}\n"));
        }
        s
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "peer": self.peer.name(),
            "samples": self.samples,
            "outputs": self.outputs.iter().map(comparison_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}
