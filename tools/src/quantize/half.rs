//! `loam quantize --to f16`: a float model's layer weights stored as IEEE binary16, half
//! their flash, with the arithmetic left in f32 (the runtime widens each weight as it loads
//! it). Nothing is calibrated; with sample data the report compares the f16 model with the
//! float one on it.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use loam::format::writer::{HalfWeights, ModelBuilder};
use serde::{Deserialize, Serialize};

use super::model::{evaluate, load_data, samples_for, stack_samples};
use crate::model_file::{ModelFile, write_atomically};
use crate::onnx::import::{self, ImportOptions};

/// The files `loam quantize --to f16` reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct HalfFiles<'a> {
    /// The float `.loam` or `.onnx`.
    pub model: &'a Path,
    /// Samples to compare the two models on (`.npy` or any data set the loaders read).
    pub data: Option<&'a Path>,
    /// Labels for a `.npy` or IDX `data`.
    pub labels: Option<&'a Path>,
    /// The most samples to compare on (the first ones).
    pub samples: Option<usize>,
    /// The f16 `.loam` to write.
    pub output: &'a Path,
    /// Where to write the model as ONNX too (weights widened back to f32, as ONNX's layers
    /// take one element type).
    pub onnx_output: Option<&'a Path>,
    /// Layers (op or output names) whose weights stay f32.
    pub keep_f32: &'a [String],
}

/// The float and f16 models side by side on sample data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HalfComparison {
    /// Samples run.
    pub samples: usize,
    /// Top-1 accuracy of the float model, when the data has class labels.
    pub float_accuracy: Option<f64>,
    /// Top-1 accuracy of the f16 model, when the data has class labels.
    pub f16_accuracy: Option<f64>,
    /// Share of samples where both models pick the same class (first output).
    pub top1_agreement: f64,
    /// SQNR of the f16 model's first output against the float model's, in dB.
    pub output_sqnr_db: f64,
    /// The largest difference between the two models' first outputs.
    pub largest_difference: f64,
}

/// What `loam quantize --to f16` did and measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HalfReport {
    /// Weight tensors now stored as f16.
    pub tensors: usize,
    /// Weights in them.
    pub weights: usize,
    /// The largest relative rounding of a weight in f16's normal range (at most 2^-11).
    pub largest_relative_error: f64,
    /// Nonzero weights below f16's normal range (each moved by at most 2^-25).
    pub below_normal: usize,
    /// Bytes of the float `.loam`.
    pub float_flash_bytes: usize,
    /// Bytes of the f16 `.loam`.
    pub flash_bytes: usize,
    /// Arena of the f16 `.loam` (the float model's: activations stay f32).
    pub arena_bytes: usize,
    /// The two models on the sample data, when given.
    pub comparison: Option<HalfComparison>,
}

/// The f16 form of a float `.loam` and what was converted; the layers named in `keep_f32`
/// (op or output names) keep f32 weights, so that they can be fine-tuned on the device.
/// Fails when a name is not a float layer's, when no layer has float weights to convert (an
/// int8 model, say) or when a weight is beyond f16's range; the error says which.
pub fn to_f16(float: &[u8], keep_f32: &[String]) -> Result<(Vec<u8>, HalfWeights, usize)> {
    let file = ModelFile::from_bytes("float model", float)?;
    let model = file.model()?;
    let layers: Vec<(&str, &str)> = model
        .ops()
        .filter(|op| loam::ops::OpKind::from_code(op.kind).is_some_and(|k| k.is_weighted_layer()))
        .map(|op| {
            let output = op
                .outputs
                .get(0)
                .and_then(|t| model.tensor(usize::from(t)))
                .map_or("", |t| t.name);
            (op.name, output)
        })
        .collect();
    for name in keep_f32 {
        ensure!(
            layers.iter().any(|(op, out)| op == name || out == name),
            "--keep-float {name}: no FullyConnected, Conv2d or DepthwiseConv2d layer has that op or \
             output name; the model's are: {}",
            layers
                .iter()
                .map(|(op, _)| *op)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    ensure!(
        model.training_plan().is_none(),
        "the model carries an on-device training plan; convert it to f16 first and add the \
         plan to the f16 model (f16 layers run frozen)"
    );
    let mut b = ModelBuilder::from_model(&model).context("copying the model")?;
    let keep: Vec<&str> = keep_f32.iter().map(String::as_str).collect();
    let converted = b.store_float_weights_as_f16(&keep)?;
    ensure!(
        converted.tensors > 0,
        "the model has no float FullyConnected, Conv2d or DepthwiseConv2d weights to store as f16"
    );
    let built = b.build().context("writing the f16 model")?;
    Ok((built.bytes, converted, built.plan.arena_size))
}

/// Converts `files.model` to f16 weights, compares the two models on `files.data` when given,
/// and writes the `.loam` (and ONNX) file, each whole or not at all.
pub fn convert_files(files: &HalfFiles<'_>, import_options: &ImportOptions) -> Result<HalfReport> {
    let is_loam = files
        .model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("loam"));
    let float = if is_loam {
        ModelFile::open(files.model)?.bytes().to_vec()
    } else {
        import::import(files.model, import_options)?.built.bytes
    };
    let (half, converted, arena_bytes) = to_f16(&float, files.keep_f32)
        .with_context(|| format!("converting {}", files.model.display()))?;
    let comparison = files
        .data
        .map(|data| compare(&float, &half, data, files.labels, files.samples))
        .transpose()?;
    let onnx = files
        .onnx_output
        .map(|path| {
            let file = ModelFile::from_bytes("f16 model", &half)?;
            crate::onnx::export_bytes(&file.model()?, crate::onnx::ExportOptions::default())
                .with_context(|| format!("exporting {} (nothing was written)", path.display()))
                .map(|bytes| (path, bytes))
        })
        .transpose()?;
    write_atomically(files.output, &half)?;
    if let Some((path, bytes)) = onnx {
        write_atomically(path, &bytes)?;
    }
    Ok(HalfReport {
        tensors: converted.tensors,
        weights: converted.weights,
        largest_relative_error: converted.largest_relative_error,
        below_normal: converted.below_normal,
        float_flash_bytes: float.len(),
        flash_bytes: half.len(),
        arena_bytes,
        comparison,
    })
}

/// Both models through loam's runtime on the samples of `data`.
fn compare(
    float: &[u8],
    half: &[u8],
    data: &Path,
    labels: Option<&Path>,
    samples: Option<usize>,
) -> Result<HalfComparison> {
    let mut data = load_data(data, labels)?;
    if let Some(n) = samples
        && n < data.rows()
    {
        data = data.subset(&(0..n.max(1)).collect::<Vec<_>>());
    }
    let float_file = ModelFile::from_bytes("float model", float)?;
    let half_file = ModelFile::from_bytes("f16 model", half)?;
    let model = float_file.model()?;
    ensure!(
        model.inputs().len() == 1,
        "comparing on --data needs a model with one input (this one has {})",
        model.inputs().len()
    );
    let input = crate::run::io_records(&model, false)?[0];
    let dims: Vec<usize> = input.shape.dims().iter().map(|&d| d as usize).collect();
    let rows = samples_for(&data, &dims)?;
    let stacked = stack_samples(&rows, &dims);
    let want =
        crate::run::real_values(&crate::run::run(&float_file, std::slice::from_ref(&stacked))?[0]);
    let got =
        crate::run::real_values(&crate::run::run(&half_file, std::slice::from_ref(&stacked))?[0]);
    let e = evaluate(&want, &got, rows.len(), data.classes(), true);
    let largest_difference = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    Ok(HalfComparison {
        samples: e.samples,
        float_accuracy: e.float_accuracy,
        f16_accuracy: e.int8_accuracy,
        top1_agreement: e.top1_agreement,
        output_sqnr_db: e.output_sqnr_db,
        largest_difference,
    })
}

impl HalfReport {
    /// The report as `loam quantize --to f16` prints it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "f16 weights: {} tensors, {} weights; largest relative rounding {:.2e} (at most \
             2^-11 = 4.9e-4){}",
            self.tensors,
            self.weights,
            self.largest_relative_error,
            if self.below_normal > 0 {
                format!(
                    "; {} tiny weights below 2^-14 moved by at most 3.0e-8 each",
                    self.below_normal
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "flash: {} bytes float, {} bytes f16 ({:.1}%); arena {} bytes (activations stay f32)",
            self.float_flash_bytes,
            self.flash_bytes,
            100.0 * self.flash_bytes as f64 / self.float_flash_bytes.max(1) as f64,
            self.arena_bytes
        );
        if let Some(c) = &self.comparison {
            let _ = writeln!(s, "\nfloat against f16 weights on {} samples:", c.samples);
            if let (Some(f), Some(h)) = (c.float_accuracy, c.f16_accuracy) {
                let _ = writeln!(
                    s,
                    "  accuracy        {:>7.2}% float   {:>7.2}% f16   ({:+.2} points)",
                    100.0 * f,
                    100.0 * h,
                    100.0 * (h - f)
                );
            }
            let _ = writeln!(s, "  top-1 agreement {:>7.2}%", 100.0 * c.top1_agreement);
            let _ = writeln!(
                s,
                "  output SQNR     {:>7.1} dB; largest difference {:.2e}",
                c.output_sqnr_db, c.largest_difference
            );
        }
        s
    }
}
