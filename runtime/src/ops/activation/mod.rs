//! Elementwise activations: Relu, Clip (ReLU6), LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid,
//! HardSwish and inference-form BatchNorm, with ONNX's definitions (`Relu`, `Clip`,
//! `LeakyRelu`, `PRelu`, `Sigmoid`, `Tanh`, `HardSigmoid`, `HardSwish` as TFLite's
//! `x * relu6(x + 3) / 6`, `BatchNormalization`) and TFLite's int8 arithmetic.
//!
//! f32 evaluates each function directly (libm for the transcendental ones).
//!
//! int8 runs every unary function as a 256-entry lookup table that the model carries as a
//! constant input, filled offline exactly as TFLite's `LUTPopulate<int8_t>` fills its tables
//! ([`lookup_table_i8`]), so the device only indexes. PRelu int8 is TFLite's
//! `reference_ops::BroadcastPrelu4DSlow` arithmetic with its two multipliers precomputed into
//! the attributes. BatchNorm is float only.
//!
//! Every op here may compute in place: the output may share storage with input 0
//! ([`Source::Output`]).

pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

use serde::{Deserialize, Serialize};

pub use crate::ops::binary::Source;

use crate::error::{Error, OpProblem, Operand, QuantField};
use crate::fixed_point::QuantizedMultiplier;
use crate::isa::{Isa, Kernel, best};
use crate::ops::{Ctx, Node, OpKind};
use crate::quant::QuantParams;
use crate::tensor::DType;

/// A unary activation function and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)`.
    Clip {
        /// Lower bound (may be `-inf`).
        min: f32,
        /// Upper bound (may be `inf`).
        max: f32,
    },
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope (ONNX default 0.2).
        alpha: f32,
        /// Offset (ONNX default 0.5).
        beta: f32,
    },
    /// `x * relu6(x + 3) / 6`.
    HardSwish,
}

impl Unary {
    /// ReLU6, `Clip(0, 6)`.
    pub const RELU6: Unary = Unary::Clip { min: 0.0, max: 6.0 };
    /// HardSigmoid with ONNX's default parameters.
    pub const HARD_SIGMOID: Unary = Unary::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    };

    /// The op kind a model stores for this function.
    pub const fn kind(self) -> OpKind {
        match self {
            Unary::Relu => OpKind::Relu,
            Unary::Clip { .. } => OpKind::Clip,
            Unary::LeakyRelu { .. } => OpKind::LeakyRelu,
            Unary::Sigmoid => OpKind::Sigmoid,
            Unary::Tanh => OpKind::Tanh,
            Unary::HardSigmoid { .. } => OpKind::HardSigmoid,
            Unary::HardSwish => OpKind::HardSwish,
        }
    }

    /// The function at `x`: the float definition every kernel and lookup table follows
    /// ([`reference::unary`]).
    pub fn eval(self, x: f32) -> f32 {
        reference::unary(self, x)
    }

    /// Checks the parameters: finite (Clip's bounds may be infinite) and `min <= max`.
    pub fn validate(&self) -> Result<(), Error> {
        let ok = match *self {
            Unary::Clip { min, max } => !min.is_nan() && !max.is_nan() && min <= max,
            Unary::LeakyRelu { alpha } => alpha.is_finite(),
            Unary::HardSigmoid { alpha, beta } => alpha.is_finite() && beta.is_finite(),
            Unary::Relu | Unary::Sigmoid | Unary::Tanh | Unary::HardSwish => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidQuantization(QuantField::ActivationRange))
        }
    }
}

/// Attributes of an activation op; the variant must match the op's kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ActivationAttributes {
    /// Relu, Clip, LeakyRelu, Sigmoid, Tanh, HardSigmoid or HardSwish. For int8 the lookup
    /// table (input 1) is what runs; the function is kept for reports and checks.
    Unary(Unary),
    /// PRelu; int8 ops carry their multipliers.
    PRelu {
        /// The int8 kernel's multipliers; `None` for float.
        requant: Option<PReluRequant>,
    },
    /// Inference-form batch normalization.
    BatchNorm {
        /// Added to the variance before the square root.
        epsilon: f32,
    },
}

impl ActivationAttributes {
    /// The op kind these attributes belong to.
    pub const fn kind(&self) -> OpKind {
        match self {
            ActivationAttributes::Unary(f) => f.kind(),
            ActivationAttributes::PRelu { .. } => OpKind::PRelu,
            ActivationAttributes::BatchNorm { .. } => OpKind::BatchNorm,
        }
    }
}

/// The two multipliers of int8 PRelu, `[multiplier, shift]` each: `identity` scales
/// non-negative inputs (`input_scale / output_scale`), `alpha` scales the product of a
/// negative input and its slope (`input_scale * alpha_scale / output_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PReluRequant {
    /// Multiplier for `x >= 0`.
    pub identity: [i32; 2],
    /// Multiplier for `x < 0`.
    pub alpha: [i32; 2],
}

impl PReluRequant {
    /// The multipliers TFLite's PRelu `Prepare` computes (its real multipliers are products
    /// and quotients of the float scales in single precision, as here).
    pub fn new(
        input_scale: f32,
        alpha_scale: f32,
        output_scale: f32,
    ) -> Result<PReluRequant, Error> {
        let scales = [input_scale, alpha_scale, output_scale];
        if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        let raw = |real: f32| QuantizedMultiplier::from_real(f64::from(real)).map(|m| m.to_raw());
        Ok(PReluRequant {
            identity: raw(input_scale / output_scale)?,
            alpha: raw(input_scale * alpha_scale / output_scale)?,
        })
    }

    /// The two multipliers, checked.
    pub fn multipliers(&self) -> Option<(QuantizedMultiplier, QuantizedMultiplier)> {
        let m = |r: [i32; 2]| QuantizedMultiplier::new(r[0], r[1]).ok();
        Some((m(self.identity)?, m(self.alpha)?))
    }
}

fn check_input<T>(input: &Source<'_, T>, output: &[T]) -> Result<(), Error> {
    match input {
        Source::Slice(x) if x.len() != output.len() => Err(Error::ShapeMismatch {
            operand: Operand::Input,
            expected: output.len(),
            actual: x.len(),
        }),
        _ => Ok(()),
    }
}

/// Checks a per-channel vector of `len` elements against `channels` (`allow_one`: a single
/// value for every channel is also fine) and the output against whole rows of `channels`.
fn check_channels(
    operand: Operand,
    channels: usize,
    len: usize,
    allow_one: bool,
    output: usize,
) -> Result<(), Error> {
    if channels == 0 || output % channels != 0 {
        return Err(Error::InvalidShape);
    }
    if len == channels || (allow_one && len == 1) {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            operand,
            expected: channels,
            actual: len,
        })
    }
}

type UnaryF32Kernel = fn(Unary, Source<'_, f32>, &mut [f32]);

/// The float unary kernels of this build, reference first.
pub(crate) const UNARY_F32_KERNELS: &[Kernel<UnaryF32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::unary_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::unary_f32,
    },
];

/// How far a float fast path may drift from the reference: not at all (the vectorized
/// functions only compare, select and multiply once).
pub const F32_TOLERANCE: crate::ops::Tolerance = crate::ops::Tolerance::Exact;

/// Applies a float unary function to every element with the fastest kernel this build has.
pub fn unary_f32(f: Unary, input: Source<'_, f32>, output: &mut [f32]) -> Result<(), Error> {
    f.validate()?;
    check_input(&input, output)?;
    (best(UNARY_F32_KERNELS))(f, input, output);
    Ok(())
}

/// Entries in an int8 lookup table.
pub const LUT_LEN: usize = 256;

/// The int8 lookup table of `f` between these quantizations, filled as TFLite's
/// `LUTPopulate<int8_t>` does: dequantize each input value, apply the float function,
/// multiply by `1 / output_scale`, round half away from zero, add the zero point, clamp.
///
/// Entry `i` holds the output for input `i - 128` (ascending order), so an input `x` is looked
/// up at `(x as u8 ^ 0x80) as usize`. TFLite indexes by `x as u8` instead; the entries are the
/// same, rotated by 128.
pub fn lookup_table_i8(f: Unary, input: QuantParams, output: QuantParams) -> [i8; LUT_LEN] {
    let inverse_scale = 1.0 / output.scale;
    let mut table = [0i8; LUT_LEN];
    for (entry, val) in table.iter_mut().zip(-128i32..=127) {
        let dequantized = input.scale * (val - input.zero_point) as f32;
        let transformed = f.eval(dequantized);
        let rescaled = libm::roundf(transformed * inverse_scale);
        // The float-to-int conversion saturates (and maps NaN to 0) where C++'s would be
        // undefined; the clamp below gives the same bytes wherever C++'s is defined.
        let quantized = (rescaled + output.zero_point as f32) as i32;
        *entry = quantized.clamp(-128, 127) as i8;
    }
    table
}

/// The lookup-table index of an int8 value: `x + 128`.
#[inline]
pub fn lut_index(x: i8) -> usize {
    usize::from(x as u8 ^ 0x80)
}

/// Maps every element through a [`lookup_table_i8`] table (one of another length is reported
/// as [`Operand::Weights`]).
pub fn lookup_i8(table: &[i8], input: Source<'_, i8>, output: &mut [i8]) -> Result<(), Error> {
    if table.len() != LUT_LEN {
        return Err(Error::ShapeMismatch {
            operand: Operand::Weights,
            expected: LUT_LEN,
            actual: table.len(),
        });
    }
    check_input(&input, output)?;
    reference::lookup_i8(table, input, output);
    Ok(())
}

/// The operands of a float PRelu call: `channels` is the input's last dimension.
#[derive(Debug, Clone, Copy)]
pub struct PReluF32<'a> {
    /// Length of the last dimension.
    pub channels: usize,
    /// One slope per channel, or one for all.
    pub slope: &'a [f32],
    /// The input.
    pub input: Source<'a, f32>,
}

impl PReluF32<'_> {
    /// Checks the lengths (the slope is reported as [`Operand::Weights`]).
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        check_input(&self.input, output)?;
        check_channels(
            Operand::Weights,
            self.channels,
            self.slope.len(),
            true,
            output.len(),
        )
    }
}

/// Runs float PRelu after validating the operands.
pub fn prelu_f32(op: &PReluF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    reference::prelu_f32(op, output);
    Ok(())
}

/// The quantization of an int8 PRelu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PReluI8Params {
    /// The input's zero point, in `-128..=127`.
    pub input_zero_point: i32,
    /// The slope's zero point, in `-128..=127`.
    pub alpha_zero_point: i32,
    /// The output's zero point, in `-128..=127`.
    pub output_zero_point: i32,
    /// `input_scale / output_scale`.
    pub identity: QuantizedMultiplier,
    /// `input_scale * alpha_scale / output_scale`.
    pub alpha: QuantizedMultiplier,
}

/// The operands of an int8 PRelu call.
#[derive(Debug, Clone, Copy)]
pub struct PReluI8<'a> {
    /// Length of the last dimension.
    pub channels: usize,
    /// Quantization.
    pub params: PReluI8Params,
    /// One slope per channel, or one for all.
    pub slope: &'a [i8],
    /// The input.
    pub input: Source<'a, i8>,
}

impl PReluI8<'_> {
    /// Checks lengths and zero points.
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        check_input(&self.input, output)?;
        check_channels(
            Operand::Weights,
            self.channels,
            self.slope.len(),
            true,
            output.len(),
        )?;
        let zp = |z: i32| (-128..=127).contains(&z);
        let p = &self.params;
        if !zp(p.input_zero_point) || !zp(p.alpha_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::InputZeroPoint));
        }
        if !zp(p.output_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::OutputZeroPoint));
        }
        Ok(())
    }
}

/// Runs int8 PRelu after validating the operands.
pub fn prelu_i8(op: &PReluI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    reference::prelu_i8(op, output);
    Ok(())
}

/// The operands of an inference-form batch normalization over the last dimension.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormF32<'a> {
    /// Length of the last dimension.
    pub channels: usize,
    /// Per-channel scale (gamma).
    pub scale: &'a [f32],
    /// Per-channel bias (beta).
    pub bias: &'a [f32],
    /// Per-channel running mean.
    pub mean: &'a [f32],
    /// Per-channel running variance.
    pub var: &'a [f32],
    /// Added to the variance.
    pub epsilon: f32,
    /// The input.
    pub input: Source<'a, f32>,
}

impl BatchNormF32<'_> {
    /// Checks the lengths (the four vectors are reported as [`Operand::Weights`]).
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        check_input(&self.input, output)?;
        for v in [self.scale, self.bias, self.mean, self.var] {
            check_channels(
                Operand::Weights,
                self.channels,
                v.len(),
                false,
                output.len(),
            )?;
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        Ok(())
    }
}

/// Runs float batch normalization after validating the operands.
pub fn batch_norm_f32(op: &BatchNormF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    reference::batch_norm_f32(op, output);
    Ok(())
}

/// The length of an operand's last dimension (1 for a scalar).
fn last_dim(operand: &crate::ops::Operand<'_>) -> usize {
    operand.dims().last().map_or(1, |&d| d as usize)
}

/// Checks a constant per-channel operand: present, constant, of `dtype`, and shaped `[C]`
/// (`per_channel_only`) or, for PRelu's slope, any shape of 1s whose last dimension is 1 or
/// C and that does not outrank the input.
fn check_vector(
    node: &Node<'_>,
    i: usize,
    dtype: DType,
    channels: usize,
    input_rank: usize,
    per_channel_only: bool,
) -> Result<(), OpProblem> {
    let v = node.input(i)?;
    v.expect_dtype(&[dtype])?;
    if !v.record.is_constant() {
        return Err(OpProblem::NotConstant(v.slot));
    }
    if per_channel_only {
        return v.shape_if(
            v.record.shape.is(&[channels]),
            "needs one value per channel (the input's last dimension)",
        );
    }
    let dims = v.dims();
    let (last, leading) = match dims.split_last() {
        Some((&last, leading)) => (last as usize, leading),
        None => (1, &[][..]),
    };
    v.shape_if(
        dims.len() <= input_rank.max(1)
            && leading.iter().all(|&d| d == 1)
            && (last == 1 || last == channels),
        "slope is one value, or one per channel along the last dimension",
    )
}

pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    let attributes: ActivationAttributes = node.attributes()?;
    if attributes.kind() != kind {
        return Err(OpProblem::Attribute(
            "function (does not match the op kind)",
        ));
    }
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = input.expect_dtype(&[DType::F32, DType::I8])?;
    output.expect_dtype(&[dtype])?;
    output.shape_if(
        output.record.shape == input.record.shape,
        "output needs the input's shape",
    )?;
    let rank = input.dims().len();
    let channels = last_dim(&input);
    match attributes {
        ActivationAttributes::Unary(f) => {
            f.validate()
                .map_err(|_| OpProblem::Attribute("function parameters"))?;
            if dtype == DType::F32 {
                return node.arity((1, 1), 1);
            }
            node.arity((2, 2), 1)?;
            input.per_tensor()?;
            output.per_tensor()?;
            let table = node.input(1)?;
            node.constant::<i8>(&table)?;
            table.shape_if(
                table.record.shape.is(&[LUT_LEN]),
                "the lookup table is [256] int8",
            )
        }
        ActivationAttributes::PRelu { requant } => {
            node.arity((2, 2), 1)?;
            check_vector(node, 1, dtype, channels, rank, false)?;
            match (dtype, requant) {
                (DType::F32, None) => Ok(()),
                (DType::F32, Some(_)) => {
                    Err(OpProblem::Attribute("requant (float PRelu has none)"))
                }
                (_, None) => Err(OpProblem::Attribute("requant (int8 PRelu needs it)")),
                (_, Some(r)) => {
                    input.per_tensor()?;
                    node.input(1)?.per_tensor()?;
                    output.per_tensor()?;
                    match r.multipliers() {
                        Some(_) => Ok(()),
                        None => Err(OpProblem::Attribute(
                            "requant (a multiplier is out of range)",
                        )),
                    }
                }
            }
        }
        ActivationAttributes::BatchNorm { epsilon } => {
            if dtype != DType::F32 {
                return Err(OpProblem::DType(input.slot));
            }
            node.arity((5, 5), 1)?;
            if !(epsilon.is_finite() && epsilon >= 0.0) {
                return Err(OpProblem::Attribute("epsilon"));
            }
            input.shape_if(rank >= 1, "needs a channel (last) dimension")?;
            for i in 1..5 {
                check_vector(node, i, DType::F32, channels, rank, true)?;
            }
            Ok(())
        }
    }
}

/// Input 0 as a kernel source: the output itself when they share storage.
fn source<'c, 'm, T: crate::tensor::Element>(
    ctx: &'c Ctx<'m, '_>,
    input: &crate::ops::Operand<'m>,
    in_place: bool,
) -> Result<Source<'c, T>, Error> {
    if in_place {
        Ok(Source::Output)
    } else {
        Ok(Source::Slice(ctx.read(input)?))
    }
}

pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let attributes: ActivationAttributes = node.attributes().map_err(corrupt)?;
    if attributes.kind() != kind {
        return Err(Error::CorruptModel);
    }
    let input = node.input(0).map_err(corrupt)?;
    let output = node.output(0).map_err(corrupt)?;
    let in_place = ctx.shares_storage(&input, &output);
    let channels = last_dim(&input);
    let constant_f32 = |i: usize| -> Result<&[f32], Error> {
        node.constant::<f32>(&node.input(i).map_err(corrupt)?)
            .map_err(corrupt)
    };
    match (attributes, input.record.dtype) {
        (ActivationAttributes::Unary(f), DType::F32) => {
            let input = source(ctx, &input, in_place)?;
            // SAFETY: validation keeps the output clear of the input unless it shares the
            // input's storage exactly, and then the input is read through the output alone.
            unary_f32(f, input, unsafe { ctx.write(&output)? })
        }
        (ActivationAttributes::Unary(_), DType::I8) => {
            let table = node
                .constant::<i8>(&node.input(1).map_err(corrupt)?)
                .map_err(corrupt)?;
            let input = source(ctx, &input, in_place)?;
            // SAFETY: as above; the table is a constant.
            lookup_i8(table, input, unsafe { ctx.write(&output)? })
        }
        (ActivationAttributes::PRelu { .. }, DType::F32) => {
            let op = PReluF32 {
                channels,
                slope: constant_f32(1)?,
                input: source(ctx, &input, in_place)?,
            };
            // SAFETY: as above; the slope is a constant.
            prelu_f32(&op, unsafe { ctx.write(&output)? })
        }
        (ActivationAttributes::PRelu { requant }, DType::I8) => {
            let (identity, alpha) = requant
                .and_then(|r| r.multipliers())
                .ok_or(Error::CorruptModel)?;
            let slope = node.input(1).map_err(corrupt)?;
            let op = PReluI8 {
                channels,
                params: PReluI8Params {
                    input_zero_point: input.record.quantization.zero_point(),
                    alpha_zero_point: slope.record.quantization.zero_point(),
                    output_zero_point: output.record.quantization.zero_point(),
                    identity,
                    alpha,
                },
                slope: node.constant::<i8>(&slope).map_err(corrupt)?,
                input: source(ctx, &input, in_place)?,
            };
            // SAFETY: as above; the slope is a constant.
            prelu_i8(&op, unsafe { ctx.write(&output)? })
        }
        (ActivationAttributes::BatchNorm { epsilon }, DType::F32) => {
            let op = BatchNormF32 {
                channels,
                scale: constant_f32(1)?,
                bias: constant_f32(2)?,
                mean: constant_f32(3)?,
                var: constant_f32(4)?,
                epsilon,
                input: source(ctx, &input, in_place)?,
            };
            // SAFETY: as above; the four vectors are constants.
            batch_norm_f32(&op, unsafe { ctx.write(&output)? })
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::{ActivationAttributes, LUT_LEN, PReluRequant, Unary, lookup_table_i8};
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
    use crate::quant::QuantParams;
    use crate::tensor::DType;
    use alloc::format;
    use alloc::vec::Vec;

    fn dims(b: &ModelBuilder, x: TensorId) -> Result<Vec<usize>, BuildError> {
        let shape = b.shape(x).ok_or(BuildError::UnknownTensor(x))?;
        Ok(shape.dims().iter().map(|&d| d as usize).collect())
    }

    fn per_tensor(q: QuantParams) -> QuantSpec {
        QuantSpec::PerTensor {
            scale: q.scale,
            zero_point: q.zero_point,
        }
    }

    impl ModelBuilder {
        /// Appends a float unary activation; returns the output tensor.
        pub fn activation_f32(
            &mut self,
            name: &str,
            x: TensorId,
            f: Unary,
        ) -> Result<TensorId, BuildError> {
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::F32, &dims, QuantSpec::None)?;
            self.op(
                f.kind(),
                name,
                &[Some(x)],
                &[out],
                &ActivationAttributes::Unary(f),
            )?;
            Ok(out)
        }

        /// Appends an int8 unary activation as a lookup table from `x`'s quantization to
        /// `output` ([`lookup_table_i8`]). `x` must be int8 with per-tensor quantization.
        pub fn activation_i8(
            &mut self,
            name: &str,
            x: TensorId,
            f: Unary,
            output: QuantParams,
        ) -> Result<TensorId, BuildError> {
            let input = self.per_tensor(x).ok_or(BuildError::UnknownTensor(x))?;
            let table = lookup_table_i8(f, input, output);
            let table = self.constant(
                &format!("{name}.table"),
                &[LUT_LEN],
                &table,
                QuantSpec::None,
            )?;
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::I8, &dims, per_tensor(output))?;
            self.op(
                f.kind(),
                name,
                &[Some(x), Some(table)],
                &[out],
                &ActivationAttributes::Unary(f),
            )?;
            Ok(out)
        }

        /// Appends float PRelu with one slope per channel (the last dimension) or one for
        /// all.
        pub fn prelu_f32(
            &mut self,
            name: &str,
            x: TensorId,
            slope: &[f32],
        ) -> Result<TensorId, BuildError> {
            let slope = self.constant(
                &format!("{name}.slope"),
                &[slope.len()],
                slope,
                QuantSpec::None,
            )?;
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::F32, &dims, QuantSpec::None)?;
            self.op(
                crate::ops::OpKind::PRelu,
                name,
                &[Some(x), Some(slope)],
                &[out],
                &ActivationAttributes::PRelu { requant: None },
            )?;
            Ok(out)
        }

        /// Appends int8 PRelu: the slopes are quantized to int8 over their own range, and
        /// the multipliers computed as TFLite's `Prepare` does. `x` must be int8 with
        /// per-tensor quantization.
        pub fn prelu_i8(
            &mut self,
            name: &str,
            x: TensorId,
            slope: &[f32],
            output: QuantParams,
        ) -> Result<TensorId, BuildError> {
            let input = self.per_tensor(x).ok_or(BuildError::UnknownTensor(x))?;
            let lo = slope.iter().copied().fold(0.0f32, f32::min);
            let hi = slope.iter().copied().fold(0.0f32, f32::max);
            let q = QuantParams::i8_from_range(lo, hi);
            let quantized: Vec<i8> = slope
                .iter()
                .map(|&s| q.quantize(s, -128, 127) as i8)
                .collect();
            // Scales that give no multipliers leave the op without them, which the
            // load-time check reports when the model is built.
            let requant = PReluRequant::new(input.scale, q.scale, output.scale).ok();
            let slope = self.constant(
                &format!("{name}.slope"),
                &[quantized.len()],
                &quantized,
                per_tensor(q),
            )?;
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::I8, &dims, per_tensor(output))?;
            self.op(
                crate::ops::OpKind::PRelu,
                name,
                &[Some(x), Some(slope)],
                &[out],
                &ActivationAttributes::PRelu { requant },
            )?;
            Ok(out)
        }

        /// Appends float inference-form batch normalization over the last dimension:
        /// `(x - mean) / sqrt(var + epsilon) * scale + bias`, with the four vectors stored
        /// as given.
        #[allow(clippy::too_many_arguments)]
        pub fn batch_norm_f32(
            &mut self,
            name: &str,
            x: TensorId,
            scale: &[f32],
            bias: &[f32],
            mean: &[f32],
            var: &[f32],
            epsilon: f32,
        ) -> Result<TensorId, BuildError> {
            let mut inputs = [Some(x), None, None, None, None];
            for (i, (part, v)) in [
                ("scale", scale),
                ("bias", bias),
                ("mean", mean),
                ("var", var),
            ]
            .into_iter()
            .enumerate()
            {
                inputs[i + 1] = Some(self.constant(
                    &format!("{name}.{part}"),
                    &[v.len()],
                    v,
                    QuantSpec::None,
                )?);
            }
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::F32, &dims, QuantSpec::None)?;
            self.op(
                crate::ops::OpKind::BatchNorm,
                name,
                &inputs,
                &[out],
                &ActivationAttributes::BatchNorm { epsilon },
            )?;
            Ok(out)
        }
    }
}
