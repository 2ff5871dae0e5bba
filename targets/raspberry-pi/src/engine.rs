//! The model side: loading a `.loam` file, turning a row of real numbers into the model's
//! input (preprocessing and quantization as the tools trained it), invoking, and reading the
//! prediction back as real numbers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use loam::format::{AlignedBytes, TensorRecord};
use loam::ops::OpKind;
use loam::preprocess::Preprocessing;
use loam::quant::QuantParams;
use loam::{DType, Interpreter, Model, Quantization};

/// Reads `path` into memory aligned as [`Model::from_bytes`] requires (a `Vec<u8>` is only
/// byte-aligned).
pub fn read_model(path: &Path) -> Result<AlignedBytes> {
    let raw = std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
    Ok(AlignedBytes::new(&raw))
}

/// How real numbers become the bytes of the input tensor.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    F32,
    I8(QuantParams),
    I16(QuantParams),
}

/// How the output tensor's bytes become real numbers.
#[derive(Debug, Clone, Copy)]
enum Decoding {
    F32,
    I8(QuantParams),
    I16(QuantParams),
}

fn quant_params(t: &TensorRecord<'_>, role: &str) -> Result<QuantParams> {
    match t.quantization {
        Quantization::PerTensor { scale, zero_point } => Ok(QuantParams { scale, zero_point }),
        Quantization::None => Ok(QuantParams {
            scale: 1.0,
            zero_point: 0,
        }),
        Quantization::PerChannel { .. } => bail!(
            "{role} `{}` is quantized per channel; only per-tensor {role}s are supported",
            t.name
        ),
    }
}

/// One prediction: the arg-max class and the output value there.
#[derive(Debug, Clone, Copy)]
pub struct Prediction {
    /// Index of the largest output.
    pub class: usize,
    /// The (dequantized) output at `class`: the probability when the model ends in softmax.
    pub score: f32,
}

/// A model bound to its arena, ready to run one sample after another.
pub struct Engine<'m, 'a> {
    interpreter: Interpreter<'m, 'a>,
    encoding: Encoding,
    decoding: Decoding,
    /// Values the input tensor holds.
    len: usize,
    /// The preprocessing stored in the model (none for models without it): the tools train
    /// on `(x - offset) * scale`, so raw data gets the same.
    preprocessing: Option<Preprocessing<'m>>,
    /// Reused between samples so a long stream allocates nothing per input.
    output: Vec<f32>,
}

impl<'m, 'a> Engine<'m, 'a> {
    /// Binds `model` to `arena` (at least [`Model::arena_size`] plus
    /// [`loam::format::ARENA_ALIGN`] bytes; [`Interpreter::arena_size_with_records`] for
    /// the decoded records too) and checks its first input and output are types
    /// this program can fill and read.
    pub fn new(model: &'m Model<'m>, arena: &'a mut [u8]) -> Result<Self> {
        let interpreter = Interpreter::new(model, arena).context("setting up the interpreter")?;
        ensure!(
            interpreter.input_count() >= 1 && interpreter.output_count() >= 1,
            "the model has {} input(s) and {} output(s); loam-pi needs at least one of each",
            interpreter.input_count(),
            interpreter.output_count()
        );
        let input = interpreter.input_tensor(0)?;
        let output = interpreter.output_tensor(0)?;
        let encoding = match input.dtype {
            DType::F32 => Encoding::F32,
            DType::I8 => Encoding::I8(quant_params(&input, "input")?),
            DType::I16 => Encoding::I16(quant_params(&input, "input")?),
            other => bail!(
                "input `{}` is {other}; loam-pi feeds f32, i8 or i16",
                input.name
            ),
        };
        let decoding = match output.dtype {
            DType::F32 => Decoding::F32,
            DType::I8 => Decoding::I8(quant_params(&output, "output")?),
            DType::I16 => Decoding::I16(quant_params(&output, "output")?),
            other => bail!(
                "output `{}` is {other}; loam-pi reads f32, i8 or i16",
                output.name
            ),
        };
        let len = input
            .shape
            .elements()
            .with_context(|| format!("input `{}` has no element count", input.name))?;
        let outputs = output.shape.elements().unwrap_or(0);
        ensure!(outputs > 0, "output `{}` is empty", output.name);
        let preprocessing = Preprocessing::from_model(model)?;
        if let Some(p) = preprocessing {
            ensure!(
                p.features() == 1 || p.features() == len,
                "the model's preprocessing is for {} values but its input has {len}",
                p.features()
            );
        }
        Ok(Engine {
            interpreter,
            encoding,
            decoding,
            len,
            preprocessing,
            output: vec![0.0; outputs],
        })
    }

    /// The records of the input and output tensors it feeds and reads.
    pub fn io(&self) -> Result<(TensorRecord<'m>, TensorRecord<'m>)> {
        Ok((
            self.interpreter.input_tensor(0)?,
            self.interpreter.output_tensor(0)?,
        ))
    }

    /// Values one sample must have.
    pub fn input_len(&self) -> usize {
        self.len
    }

    /// Writes one sample of raw (unpreprocessed) values into the input tensor. `values` must
    /// hold [`Self::input_len`] finite numbers; the caller checks, so errors name the line.
    pub fn set_input(&mut self, values: &[f32]) -> Result<()> {
        ensure!(
            values.len() == self.len,
            "{} values, the model takes {}",
            values.len(),
            self.len
        );
        let preprocessing = self.preprocessing;
        let prep = |j: usize, x: f32| preprocessing.map_or(x, |p| p.apply(j, x));
        match self.encoding {
            Encoding::F32 => {
                let input = self.interpreter.input_mut::<f32>(0)?;
                for (j, (dst, &x)) in input.iter_mut().zip(values).enumerate() {
                    *dst = prep(j, x);
                }
            }
            Encoding::I8(q) => {
                let input = self.interpreter.input_mut::<i8>(0)?;
                for (j, (dst, &x)) in input.iter_mut().zip(values).enumerate() {
                    *dst = q.quantize(prep(j, x), -128, 127) as i8;
                }
            }
            Encoding::I16(q) => {
                let input = self.interpreter.input_mut::<i16>(0)?;
                for (j, (dst, &x)) in input.iter_mut().zip(values).enumerate() {
                    *dst = q.quantize(prep(j, x), -32768, 32767) as i16;
                }
            }
        }
        Ok(())
    }

    /// Runs the model once on the input set last, returning how long the ops took.
    pub fn invoke(&mut self) -> Result<Duration> {
        let start = Instant::now();
        self.interpreter.invoke().context("invoking the model")?;
        Ok(start.elapsed())
    }

    /// The prediction of the last invocation.
    pub fn prediction(&mut self) -> Result<Prediction> {
        match self.decoding {
            Decoding::F32 => {
                let out = self.interpreter.output::<f32>(0)?;
                self.output.copy_from_slice(out);
            }
            Decoding::I8(q) => {
                let out = self.interpreter.output::<i8>(0)?;
                for (dst, &v) in self.output.iter_mut().zip(out) {
                    *dst = q.dequantize(i32::from(v));
                }
            }
            Decoding::I16(q) => {
                let out = self.interpreter.output::<i16>(0)?;
                for (dst, &v) in self.output.iter_mut().zip(out) {
                    *dst = q.dequantize(i32::from(v));
                }
            }
        }
        // The first of equal maxima wins, as numpy's argmax does, so every ISA and the tools
        // agree on ties (int8 softmax outputs tie often).
        let mut class = 0;
        for (i, &v) in self.output.iter().enumerate() {
            if v > self.output[class] {
                class = i;
            }
        }
        Ok(Prediction {
            class,
            score: self.output[class],
        })
    }
}

/// The fast path the runtime's dispatch picks for int8 layers on this CPU, and every
/// available instruction-set family.
pub fn isa_in_use() -> (&'static str, Vec<&'static str>) {
    let available: Vec<&'static str> = loam::isa::available_names().collect();
    // What the int8 layers run on (the opt-in half-precision family, say, is available
    // without being in use).
    let best = loam::ops::kernel_name(OpKind::FullyConnected, DType::I8);
    (best, available)
}

/// `dtype [dims]` of a tensor, for the banner.
pub fn describe(t: &TensorRecord<'_>) -> String {
    format!("{} `{}` {}", t.dtype, t.name, t.shape)
}
