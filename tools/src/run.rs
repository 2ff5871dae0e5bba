//! `loam run`: a model on NPY inputs, outputs back as arrays. An input with one more leading
//! dimension than the model's (or a leading dimension where the model has batch 1) is run
//! sample by sample and the outputs are stacked.

use anyhow::{Context, Result, bail, ensure};
use loam::format::TensorRecord;
use loam::quant::QuantParams;
use loam::{DType, Interpreter, Model, Quantization};

use crate::model_file::ModelFile;
use crate::npy::{Array, Data};

/// One output of a run.
#[derive(Debug, Clone)]
pub struct NamedArray {
    /// The tensor's name in the model.
    pub name: String,
    /// Its values.
    pub array: Array,
    /// Its quantization, for dequantizing int8 outputs.
    pub quantization: Quantization,
}

fn dims(t: &TensorRecord<'_>) -> Vec<usize> {
    t.shape.dims().iter().map(|&d| d as usize).collect()
}

/// How many samples `array` holds for a model input of shape `model`, and whether the
/// outputs need a stacked leading dimension.
fn samples(array: &[usize], model: &[usize]) -> Option<(usize, bool)> {
    if array == model {
        return Some((1, false));
    }
    if array.len() == model.len() + 1 && &array[1..] == model {
        return Some((array[0], true));
    }
    if !model.is_empty() && model[0] == 1 && array.len() == model.len() && array[1..] == model[1..]
    {
        return Some((array[0], true));
    }
    None
}

/// How many samples `inputs` hold for the graph inputs `records` (every input must hold the
/// same number), and whether the outputs need a stacked leading dimension.
fn sample_count(inputs: &[Array], records: &[TensorRecord<'_>]) -> Result<(usize, bool)> {
    let mut count = None;
    let mut stacked = false;
    for (array, t) in inputs.iter().zip(records) {
        let (n, s) = samples(&array.shape, &dims(t)).with_context(|| {
            format!(
                "input `{}` has shape {:?} but the model needs {:?} (optionally with a leading batch dimension)",
                t.name,
                array.shape,
                dims(t)
            )
        })?;
        ensure!(
            *count.get_or_insert(n) == n,
            "the inputs hold different numbers of samples"
        );
        stacked |= s;
    }
    Ok((count.unwrap_or(1), stacked))
}

/// Runs one sample (`inputs` holding exactly one per graph input) op by op and returns the
/// values of `tensors` (f32 or int8), each read right after the op that writes it: the memory
/// plan reuses arena bytes, so they would not survive to the end of the run.
pub fn run_layers(file: &ModelFile, inputs: &[Array], tensors: &[u16]) -> Result<Vec<Array>> {
    let model = file.model()?;
    let records = io_records(&model, false)?;
    ensure!(
        inputs.len() == records.len(),
        "{} has {} input(s) but {} array(s) were given",
        file.path.display(),
        records.len(),
        inputs.len()
    );
    let mut arena = vec![0u8; Interpreter::arena_size_with_records(&model)];
    let mut interpreter = Interpreter::new(&model, &mut arena)?;
    for (i, (array, t)) in inputs.iter().zip(&records).enumerate() {
        let bytes = sample_bytes(array, t, 0, t.shape.elements().unwrap_or(0))?;
        interpreter.input_bytes_mut(i)?.copy_from_slice(&bytes);
    }
    let mut values: Vec<Option<Array>> = vec![None; tensors.len()];
    for (index, op) in model.ops().enumerate() {
        interpreter
            .invoke_ops(index..index + 1)
            .with_context(|| format!("running op {index} `{}`", op.name))?;
        for written in op.outputs.iter() {
            for (slot, _) in values
                .iter_mut()
                .zip(tensors)
                .filter(|(_, t)| **t == written)
            {
                let record = model
                    .tensor(usize::from(written))
                    .context("an op writes a tensor the model does not have")?;
                let bytes = interpreter.tensor_bytes(&record)?;
                let data = match record.dtype {
                    DType::F32 => Data::F32(bytemuck::pod_collect_to_vec(bytes)),
                    DType::I8 => Data::I8(bytemuck::pod_collect_to_vec(bytes)),
                    DType::I16 => Data::I16(bytemuck::pod_collect_to_vec(bytes)),
                    other => bail!(
                        "tensor `{}` is {other}; layers compare f32, int8 and int16",
                        record.name
                    ),
                };
                let shape = record.shape.dims().iter().map(|&d| d as usize).collect();
                *slot = Some(Array { shape, data });
            }
        }
    }
    values
        .into_iter()
        .zip(tensors)
        .map(|(v, t)| v.with_context(|| format!("no op writes tensor {t}")))
        .collect()
}

/// The bytes of sample `s` of `array` as the model input `t` needs them: same element type,
/// or f32 values quantized with the input's parameters.
fn sample_bytes(
    array: &Array,
    t: &TensorRecord<'_>,
    s: usize,
    per_sample: usize,
) -> Result<Vec<u8>> {
    let range = s * per_sample..(s + 1) * per_sample;
    match (&array.data, t.dtype, t.quantization) {
        (Data::F32(v), DType::F32, _) => Ok(bytemuck::cast_slice(&v[range]).to_vec()),
        (Data::I8(v), DType::I8, _) => Ok(bytemuck::cast_slice(&v[range]).to_vec()),
        (Data::I16(v), DType::I16, _) => Ok(bytemuck::cast_slice(&v[range]).to_vec()),
        (Data::F32(v), DType::I8 | DType::I16, Quantization::PerTensor { scale, zero_point }) => {
            let q = QuantParams { scale, zero_point };
            Ok(if t.dtype == DType::I8 {
                v[range]
                    .iter()
                    .map(|&x| q.quantize(x, -128, 127) as i8 as u8)
                    .collect()
            } else {
                v[range]
                    .iter()
                    .flat_map(|&x| (q.quantize(x, -32768, 32767) as i16).to_le_bytes())
                    .collect()
            })
        }
        (data, dtype, _) => bail!(
            "input `{}` is {dtype} but the array holds {}",
            t.name,
            data.dtype()
        ),
    }
}

/// Runs `file`'s model on `inputs` (one array per graph input, in order).
pub fn run(file: &ModelFile, inputs: &[Array]) -> Result<Vec<NamedArray>> {
    let model = file.model()?;
    let records = io_records(&model, false)?;
    let names: Vec<&str> = records.iter().map(|t| t.name).collect();
    ensure!(
        inputs.len() == records.len(),
        "{} has {} input(s) ({}) but {} array(s) were given",
        file.path.display(),
        records.len(),
        names.join(", "),
        inputs.len()
    );
    let (count, stacked) = sample_count(inputs, &records)?;
    let outputs = io_records(&model, true)?;
    let mut arena = vec![0u8; Interpreter::arena_size_with_records(&model)];
    let mut interpreter = Interpreter::new(&model, &mut arena)?;
    let mut collected: Vec<Vec<u8>> = vec![Vec::new(); outputs.len()];
    for s in 0..count {
        for (i, (array, t)) in inputs.iter().zip(&records).enumerate() {
            let per_sample = t.shape.elements().unwrap_or(0);
            let bytes = sample_bytes(array, t, s, per_sample)?;
            interpreter.input_bytes_mut(i)?.copy_from_slice(&bytes);
        }
        interpreter
            .invoke()
            .with_context(|| format!("running {}", file.path.display()))?;
        for (i, out) in collected.iter_mut().enumerate() {
            out.extend_from_slice(interpreter.output_bytes(i)?);
        }
    }
    outputs
        .iter()
        .zip(collected)
        .map(|(t, bytes)| {
            let mut shape = dims(t);
            if stacked {
                if shape.first() == Some(&1) {
                    shape[0] = count;
                } else {
                    shape.insert(0, count);
                }
            }
            Ok(NamedArray {
                name: t.name.to_string(),
                array: Array {
                    shape,
                    data: Data::from_bytes(t.dtype, &bytes)?,
                },
                quantization: t.quantization,
            })
        })
        .collect()
}

/// Splits `inputs` (one array per graph input, each exactly the input's shape or with a
/// leading batch dimension, as [`run`] takes them) into per-sample input sets of exactly the
/// model's shapes and element types (float data for int8 inputs is quantized).
pub fn split_samples(model: &Model<'_>, inputs: &[Array]) -> Result<Vec<Vec<Array>>> {
    let records = io_records(model, false)?;
    ensure!(
        inputs.len() == records.len(),
        "the model has {} input(s) but {} array(s) were given",
        records.len(),
        inputs.len()
    );
    let (count, _) = sample_count(inputs, &records)?;
    (0..count)
        .map(|s| {
            inputs
                .iter()
                .zip(&records)
                .map(|(array, t)| {
                    let bytes = sample_bytes(array, t, s, t.shape.elements().unwrap_or(0))?;
                    Ok(Array {
                        shape: dims(t),
                        data: Data::from_bytes(t.dtype, &bytes)?,
                    })
                })
                .collect()
        })
        .collect()
}

/// Seeded random inputs for `model`, one array per graph input in its exact shape: floats
/// uniform in [-1, 1), integers uniform over their type.
pub fn random_inputs(model: &Model<'_>, seed: u64) -> Result<Vec<Array>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    io_records(model, false)?
        .iter()
        .map(|t| {
            let n = t.shape.elements().unwrap_or(0);
            let data = match t.dtype {
                DType::F32 => Data::F32((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()),
                DType::I8 => Data::I8((0..n).map(|_| rng.random()).collect()),
                DType::I16 => Data::I16((0..n).map(|_| rng.random()).collect()),
                DType::I32 => Data::I32((0..n).map(|_| rng.random()).collect()),
                other => bail!("input `{}` is {other}, which no input can be", t.name),
            };
            Ok(Array {
                shape: dims(t),
                data,
            })
        })
        .collect()
}

/// The records of the graph inputs (or outputs).
pub fn io_records<'m>(model: &Model<'m>, outputs: bool) -> Result<Vec<TensorRecord<'m>>> {
    let ids = if outputs {
        model.outputs()
    } else {
        model.inputs()
    };
    ids.iter()
        .map(|id| {
            model
                .tensor(usize::from(id))
                .context("graph input or output out of range")
        })
        .collect()
}

/// The values of an output as real numbers (dequantized when quantized).
pub fn real_values(output: &NamedArray) -> Vec<f64> {
    let raw = output.array.data.to_f64();
    match output.quantization {
        Quantization::PerTensor { scale, zero_point } => raw
            .iter()
            .map(|&q| f64::from(scale) * (q - f64::from(zero_point)))
            .collect(),
        _ => raw,
    }
}
