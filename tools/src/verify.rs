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
    /// Integer output: `histogram[k]` elements differ by exactly `k` steps.
    Quantized {
        /// Counts per step difference, up to the largest seen.
        histogram: Vec<usize>,
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
            Difference::Quantized { histogram } => Some(histogram.len().saturating_sub(1)),
            Difference::Float { .. } => None,
        }
    }

    /// The fraction of elements within `steps` quantization steps (int8 outputs only).
    pub fn within_lsb(&self, steps: usize) -> Option<f64> {
        match &self.difference {
            Difference::Quantized { histogram } => {
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

/// Accumulates the differences of one output over samples.
fn accumulate(
    name: &str,
    acc: &mut Option<OutputComparison>,
    ours: &Array,
    theirs: &Array,
) -> Result<()> {
    ensure!(
        ours.data.len() == theirs.data.len(),
        "output `{name}`: loam gives {} values, the peer {}",
        ours.data.len(),
        theirs.data.len()
    );
    let entry = acc.get_or_insert_with(|| OutputComparison {
        name: name.to_string(),
        elements: 0,
        difference: match ours.data {
            Data::F32(_) => Difference::Float {
                max_abs: 0.0,
                max_rel: 0.0,
            },
            _ => Difference::Quantized { histogram: vec![] },
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
        (Difference::Quantized { histogram }, _, _) => {
            let (a, b) = (ours.data.to_f64(), theirs.data.to_f64());
            ensure!(
                ours.data.dtype() == theirs.data.dtype(),
                "output `{name}`: loam gives {}, the peer {}",
                ours.data.dtype(),
                theirs.data.dtype()
            );
            for (x, y) in a.iter().zip(&b) {
                let d = (x - y).abs() as usize;
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
    let onnx = export_bytes(&model, ExportOptions::default())
        .with_context(|| format!("exporting {} to ONNX for {peer}", file.path.display()))?;
    verify_against(file, peer, &onnx, samples)
        .with_context(|| format!("comparing {} with {peer}", file.path.display()))
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
        for ((o, t), a) in ours.iter().zip(&other).zip(&mut acc) {
            accumulate(&o.name, a, &o.array, t)?;
        }
    }
    Ok(VerifyReport {
        peer,
        samples: samples.len(),
        outputs: acc.into_iter().flatten().collect(),
    })
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
                Difference::Quantized { histogram } => {
                    let hist: Vec<String> = histogram
                        .iter()
                        .enumerate()
                        .filter(|&(_, &n)| n > 0)
                        .map(|(k, n)| format!("{k}:{n}"))
                        .collect();
                    s.push_str(&format!(
                        "  {:<24} int   {:>8} values  LSB histogram {}  ({:.2}% within 1 LSB)\n",
                        o.name,
                        o.elements,
                        hist.join(" "),
                        100.0 * o.within_lsb(1).unwrap_or(0.0)
                    ));
                }
            }
        }
        s
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "peer": self.peer.name(),
            "samples": self.samples,
            "outputs": self.outputs.iter().map(|o| match &o.difference {
                Difference::Float { max_abs, max_rel } => json!({
                    "name": o.name, "elements": o.elements,
                    "max_abs": max_abs, "max_rel": max_rel,
                }),
                Difference::Quantized { histogram } => json!({
                    "name": o.name, "elements": o.elements,
                    "lsb_histogram": histogram,
                }),
            }).collect::<Vec<_>>(),
        })
    }
}
