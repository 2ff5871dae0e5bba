//! Softmax and LogSoftmax over the last dimension (TFLite `SOFTMAX` and `LOG_SOFTMAX`, ONNX
//! `Softmax`/`LogSoftmax` with `axis = -1`), with a temperature `beta`:
//! `softmax(x)_i = exp(beta (x_i - max)) / sum_j exp(beta (x_j - max))` and
//! `log_softmax(x)_i = beta (x_i - max) - ln(sum_j exp(beta (x_j - max)))`.
//!
//! f32 subtracts the row maximum, exponentiates, sums (in double precision, so that a fast
//! path's error does not grow with the row length) and divides (or subtracts the log).
//!
//! int8 is TFLite's arithmetic exactly: `reference_ops::Softmax` for int8 input and output
//! (output fixed at scale 1/256, zero point -128) and `reference_integer_ops::LogSoftmax`
//! (output scale 16/256, zero point 127), on gemmlowp fixed point (`gemmlowp`). Their
//! multipliers and `diff_min` come from `PreprocessSoftmaxScaling` /
//! `PreprocessLogSoftmaxScalingExp` and `CalculateInputRadius`, computed by the builder
//! ([`SoftmaxQuant`]) and stored in the attributes.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
mod arm_neon;
pub(crate) mod gemmlowp;
// The table kernel runs everywhere an interpreter keeps the table in its arena; only the
// kernel that builds it on the stack is left out on bare metal (see `I8_KERNELS`).
mod lookup;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand, QuantField};
use crate::fixed_point::QuantizedMultiplier;
use crate::isa::{Isa, Kernel, best};
use crate::ops::{Ctx, Node, OpKind, Tolerance};
use crate::tensor::DType;

/// Attributes of a `Softmax` or `LogSoftmax` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftmaxAttributes {
    /// Inverse temperature: the inputs are scaled by it (positive and finite; 1 for plain
    /// softmax).
    pub beta: f32,
    /// The int8 kernel's fixed-point parameters; `None` for float ops.
    pub quantized: Option<SoftmaxQuant>,
}

/// The integers int8 softmax and log-softmax run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SoftmaxQuant {
    /// Q31 multiplier taking an input difference to Q5.26 (`beta * input_scale * 2^26`,
    /// split with `input_left_shift`).
    pub input_multiplier: i32,
    /// Left shift applied to the input difference before the multiplier, `0..=30`.
    pub input_left_shift: i32,
    /// The most negative input difference that still counts; smaller ones give
    /// `exp = 0` (and keep `diff << input_left_shift` inside an `i32`).
    pub diff_min: i32,
    /// LogSoftmax: multiplier of the reverse scaling (Q5.26 back to input steps); 0 for
    /// softmax.
    pub reverse_multiplier: i32,
    /// LogSoftmax: the reverse scaling's shift as [`QuantizedMultiplier`] reads it (the
    /// negation of TFLite's `reverse_scaling_right_shift`); 0 for softmax.
    pub reverse_shift: i32,
}

impl SoftmaxQuant {
    /// Integer bits of the scaled differences (Q5.26), TFLite's `kScaledDiffIntegerBits`.
    pub const SCALED_DIFF_INTEGER_BITS: i32 = 5;
    /// Integer bits of the sum of exponentials (Q12.19), TFLite's `kAccumulationIntegerBits`.
    pub const ACCUMULATION_INTEGER_BITS: i32 = 12;

    /// TFLite's `PreprocessSoftmaxScaling(beta, input_scale, 5)`: the multiplier and left
    /// shift, as double-precision `QuantizeMultiplierGreaterThanOne` of
    /// `min(beta * input_scale * 2^26, 2^31 - 1)`.
    ///
    /// Where `beta * input_scale >= 16` the shift saturates at 30 with the largest
    /// multiplier, as TFLite's single-rounding build does (its default build would produce
    /// a shift of 31, whose `1 << 31` overflows).
    fn input_multiplier(beta: f32, input_scale: f32) -> Result<QuantizedMultiplier, Error> {
        if !(beta.is_finite() && beta > 0.0 && input_scale.is_finite() && input_scale > 0.0) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        let max_real = (1u64 << 31) as f64 - 1.0;
        let real = (f64::from(beta)
            * f64::from(input_scale)
            * (1u64 << (31 - Self::SCALED_DIFF_INTEGER_BITS)) as f64)
            .min(max_real);
        // `QuantizeMultiplierGreaterThanOne` requires more than 1.
        if real <= 1.0 {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        QuantizedMultiplier::from_real(real)
    }

    /// TFLite's `CalculateInputRadius(5, left_shift)` negated: the `diff_min` of softmax.
    fn diff_min(left_shift: i32) -> i32 {
        let bits = Self::SCALED_DIFF_INTEGER_BITS;
        let max_input_rescaled = f64::from((1 << bits) - 1) * (1u64 << (31 - bits)) as f64
            / (1u64 << left_shift.clamp(0, 62)) as f64;
        -(libm::floor(max_input_rescaled) as i32)
    }

    /// The parameters of int8 softmax for an input scale, as TFLite's `SoftmaxPrepare`.
    pub fn softmax(beta: f32, input_scale: f32) -> Result<SoftmaxQuant, Error> {
        let m = Self::input_multiplier(beta, input_scale)?;
        Ok(SoftmaxQuant {
            input_multiplier: m.multiplier(),
            input_left_shift: m.shift(),
            diff_min: Self::diff_min(m.shift()),
            reverse_multiplier: 0,
            reverse_shift: 0,
        })
    }

    /// The parameters of int8 log-softmax for an input scale, as TFLite's `LogSoftmaxPrepare`
    /// (`PreprocessLogSoftmaxScalingExp`: the softmax multiplier plus the reverse scaling
    /// `2^(31 - left_shift) / multiplier`).
    pub fn log_softmax(beta: f32, input_scale: f32) -> Result<SoftmaxQuant, Error> {
        let m = Self::input_multiplier(beta, input_scale)?;
        let reverse = (1u64 << (31 - m.shift())) as f64 / f64::from(m.multiplier());
        let r = QuantizedMultiplier::from_real(reverse)?;
        Ok(SoftmaxQuant {
            input_multiplier: m.multiplier(),
            input_left_shift: m.shift(),
            diff_min: Self::diff_min(m.shift()),
            reverse_multiplier: r.multiplier(),
            reverse_shift: r.shift(),
        })
    }

    /// The input multiplier, checked: non-negative, shift in `0..=30`.
    pub fn input(&self) -> Option<QuantizedMultiplier> {
        if !(0..=30).contains(&self.input_left_shift) {
            return None;
        }
        QuantizedMultiplier::new(self.input_multiplier, self.input_left_shift).ok()
    }

    /// The reverse multiplier (log-softmax), checked.
    pub fn reverse(&self) -> Option<QuantizedMultiplier> {
        QuantizedMultiplier::new(self.reverse_multiplier, self.reverse_shift).ok()
    }

    /// Checks everything the int8 kernels rely on: the multipliers, and a `diff_min` whose
    /// differences stay inside an `i32` when shifted left.
    pub fn validate(&self, log: bool) -> Result<(), Error> {
        let bad = Err(Error::InvalidQuantization(QuantField::Scale));
        let Some(input) = self.input() else {
            return bad;
        };
        if log && self.reverse().is_none() {
            return bad;
        }
        let radius = -i64::from(self.diff_min);
        if radius < 0 || (radius << input.shift()) > i64::from(i32::MAX) {
            return bad;
        }
        Ok(())
    }
}

/// The rows of a softmax: `rows` independent rows of `depth` elements (the last dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SoftmaxShape {
    /// Product of the leading dimensions.
    pub rows: usize,
    /// The last dimension.
    pub depth: usize,
}

impl SoftmaxShape {
    fn validate(&self, input: usize, output: usize) -> Result<(), Error> {
        if self.depth == 0 || self.rows == 0 {
            return Err(Error::InvalidShape);
        }
        let n = self
            .rows
            .checked_mul(self.depth)
            .ok_or(Error::InvalidShape)?;
        for (operand, actual) in [(Operand::Input, input), (Operand::Output, output)] {
            if actual != n {
                return Err(Error::ShapeMismatch {
                    operand,
                    expected: n,
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// The operands of a float softmax or log-softmax call.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxF32<'a> {
    /// Rows and depth.
    pub shape: SoftmaxShape,
    /// Inverse temperature.
    pub beta: f32,
    /// Log-softmax rather than softmax.
    pub log: bool,
    /// `[rows][depth]` input.
    pub input: &'a [f32],
}

impl SoftmaxF32<'_> {
    /// Checks the lengths and `beta`.
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        self.shape.validate(self.input.len(), output.len())?;
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        Ok(())
    }
}

/// The operands of an int8 softmax or log-softmax call; the output quantization is fixed
/// (scale 1/256 and zero point -128 for softmax, 16/256 and 127 for log-softmax).
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxI8<'a> {
    /// Rows and depth.
    pub shape: SoftmaxShape,
    /// Log-softmax rather than softmax.
    pub log: bool,
    /// The fixed-point parameters.
    pub params: SoftmaxQuant,
    /// `[rows][depth]` input.
    pub input: &'a [i8],
}

impl SoftmaxI8<'_> {
    /// Checks the lengths and parameters.
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        self.shape.validate(self.input.len(), output.len())?;
        self.params.validate(self.log)
    }
}

type F32Kernel = fn(&SoftmaxF32<'_>, &mut [f32]);

/// The float kernels of this build, reference first.
pub(crate) const F32_KERNELS: &[Kernel<F32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::softmax_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::softmax_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::softmax_f32,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::softmax_f32,
    },
];

/// How far a float fast path may drift from the reference, for softmax and log-softmax
/// alike: the fast paths use a polynomial `exp` (a few ulps where libm's is within one) and
/// sum in a different order (in double precision, so the order hardly matters). Softmax
/// outputs lie in `[0, 1]` and so do the errors of log-softmax's `ln(sum)`, whence the
/// absolute term.
pub const F32_TOLERANCE: Tolerance = Tolerance::Relative {
    abs: 1e-6,
    rel: 4e-6,
};

/// Runs float softmax or log-softmax with the fastest kernel this build has; fast paths
/// agree with [`reference::softmax_f32`] within [`F32_TOLERANCE`].
pub fn softmax_f32(op: &SoftmaxF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    (best(F32_KERNELS))(op, output);
    Ok(())
}

/// Runs int8 softmax or log-softmax (TFLite's reference arithmetic) with the fastest kernel
/// this build has, after validating the operands. Every kernel gives exactly the bytes of
/// [`reference::softmax_i8`] or [`reference::log_softmax_i8`].
pub fn softmax_i8(op: &SoftmaxI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I8_KERNELS))(op, output);
    Ok(())
}

/// An int8 softmax kernel (softmax or log-softmax, as the operands say).
#[doc(hidden)]
pub type I8Kernel = fn(&SoftmaxI8<'_>, &mut [i8]);

/// The reference kernels as one [`I8Kernel`].
fn reference_i8(op: &SoftmaxI8<'_>, output: &mut [i8]) {
    if op.log {
        reference::log_softmax_i8(op, output);
    } else {
        reference::softmax_i8(op, output);
    }
}

/// The int8 kernels of this build, reference first.
pub(crate) const I8_KERNELS: &[Kernel<I8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference_i8,
    },
    // Its 1 KiB table lives on the stack, which on bare metal is whatever RAM the arena and
    // the application leave (a 16 KiB Cortex-M0 running the learning demo overflowed), so
    // microcontrollers keep the reference.
    #[cfg(not(target_os = "none"))]
    Kernel {
        name: "lookup",
        isa: Isa::Portable,
        run: lookup::softmax_i8,
    },
];

/// The int8 kernels this CPU can run, by name (reference first), for the benchmarks.
#[doc(hidden)]
pub fn i8_kernels() -> impl Iterator<Item = (&'static str, I8Kernel)> {
    crate::isa::runnable(I8_KERNELS)
}

/// The output quantization int8 softmax produces: scale 1/256, zero point -128.
pub const SOFTMAX_OUTPUT: crate::quant::QuantParams = crate::quant::QuantParams {
    scale: 1.0 / 256.0,
    zero_point: -128,
};

/// The output quantization int8 log-softmax produces: scale 16/256, zero point 127.
pub const LOG_SOFTMAX_OUTPUT: crate::quant::QuantParams = crate::quant::QuantParams {
    scale: 16.0 / 256.0,
    zero_point: 127,
};

fn shape(input: &crate::ops::Operand<'_>) -> SoftmaxShape {
    let depth = input.dims().last().map_or(1, |&d| d as usize);
    SoftmaxShape {
        rows: input.elements() / depth.max(1),
        depth,
    }
}

pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    let log = match kind {
        OpKind::Softmax => false,
        OpKind::LogSoftmax => true,
        _ => return Err(OpProblem::UnknownKind),
    };
    node.arity((1, 1), 1)?;
    let attributes: SoftmaxAttributes = node.attributes()?;
    if !(attributes.beta.is_finite() && attributes.beta > 0.0) {
        return Err(OpProblem::Attribute("beta (must be positive and finite)"));
    }
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = input.expect_dtype(&[DType::F32, DType::I8])?;
    output.expect_dtype(&[dtype])?;
    input.shape_if(
        !input.dims().is_empty(),
        "needs a last dimension to normalize over",
    )?;
    output.shape_if(
        output.record.shape == input.record.shape,
        "output needs the input's shape",
    )?;
    match dtype {
        DType::F32 => match attributes.quantized {
            None => Ok(()),
            Some(_) => Err(OpProblem::Attribute("quantized (float ops have none)")),
        },
        _ => {
            input.per_tensor()?;
            let (scale, zero_point) = output.per_tensor()?;
            let want = if log {
                LOG_SOFTMAX_OUTPUT
            } else {
                SOFTMAX_OUTPUT
            };
            if scale != want.scale || zero_point != want.zero_point {
                return Err(OpProblem::Quantization(
                    output.slot,
                    if log {
                        "int8 log-softmax output is scale 16/256, zero point 127"
                    } else {
                        "int8 softmax output is scale 1/256, zero point -128"
                    },
                ));
            }
            let q = attributes
                .quantized
                .ok_or(OpProblem::Attribute("quantized (int8 ops need it)"))?;
            q.validate(log).map_err(|_| {
                OpProblem::Attribute("quantized (a multiplier, shift or diff_min is out of range)")
            })
        }
    }
}

/// Words [`prepare`] keeps: an int8 softmax or log-softmax keeps the exponentials of every
/// difference from its row's maximum, [`lookup::TABLE_LEN`] of them.
pub(crate) fn prepared_len(node: &Node<'_>) -> usize {
    match node.input(0) {
        Ok(input) if input.record.dtype == DType::I8 => lookup::TABLE_LEN,
        _ => 0,
    }
}

/// Fills the exponential table of an int8 softmax or log-softmax: the values the reference
/// computes for each difference, which depend on the layer's parameters alone (the
/// table kernel builds the same table on the stack on every run).
pub(crate) fn prepare(kind: OpKind, node: &Node<'_>, words: &mut [i32]) -> Option<()> {
    let attributes: SoftmaxAttributes = node.attributes().ok()?;
    lookup::fill_table(&attributes.quantized?, kind == OpKind::LogSoftmax, words)
}

pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let log = kind == OpKind::LogSoftmax;
    let attributes: SoftmaxAttributes = node.attributes().map_err(corrupt)?;
    let input = node.input(0).map_err(corrupt)?;
    let output = node.output(0).map_err(corrupt)?;
    let shape = shape(&input);
    match input.record.dtype {
        DType::F32 => {
            let op = SoftmaxF32 {
                shape,
                beta: attributes.beta,
                log,
                input: ctx.read(&input)?,
            };
            // SAFETY: validation keeps the output clear of the input (softmax never runs in
            // place).
            softmax_f32(&op, unsafe { ctx.write(&output)? })
        }
        DType::I8 => {
            let op = SoftmaxI8 {
                shape,
                log,
                params: attributes.quantized.ok_or(Error::CorruptModel)?,
                input: ctx.read(&input)?,
            };
            // SAFETY: as above.
            let out = unsafe { ctx.write(&output)? };
            match <&[i32; lookup::TABLE_LEN]>::try_from(node.prepared) {
                Ok(table) => {
                    op.validate(out)?;
                    lookup::softmax_i8_with_table(&op, out, table);
                    Ok(())
                }
                Err(_) => softmax_i8(&op, out),
            }
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::{LOG_SOFTMAX_OUTPUT, SOFTMAX_OUTPUT, SoftmaxAttributes, SoftmaxQuant};
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
    use crate::ops::OpKind;
    use crate::tensor::DType;
    use alloc::vec::Vec;

    impl ModelBuilder {
        fn softmax_op(
            &mut self,
            kind: OpKind,
            name: &str,
            x: TensorId,
            beta: f32,
            int8: bool,
        ) -> Result<TensorId, BuildError> {
            let log = kind == OpKind::LogSoftmax;
            let shape = self.shape(x).ok_or(BuildError::UnknownTensor(x))?;
            let dims: Vec<usize> = shape.dims().iter().map(|&d| d as usize).collect();
            let (out, quantized) = if int8 {
                let input = self.per_tensor(x).ok_or(BuildError::UnknownTensor(x))?;
                let (q, quantized) = if log {
                    (
                        LOG_SOFTMAX_OUTPUT,
                        SoftmaxQuant::log_softmax(beta, input.scale),
                    )
                } else {
                    (SOFTMAX_OUTPUT, SoftmaxQuant::softmax(beta, input.scale))
                };
                let spec = QuantSpec::PerTensor {
                    scale: q.scale,
                    zero_point: q.zero_point,
                };
                // Parameters that cannot be computed are left out, which the load-time
                // check reports when the model is built.
                (self.tensor(name, DType::I8, &dims, spec)?, quantized.ok())
            } else {
                (self.tensor(name, DType::F32, &dims, QuantSpec::None)?, None)
            };
            self.op(
                kind,
                name,
                &[Some(x)],
                &[out],
                &SoftmaxAttributes { beta, quantized },
            )?;
            Ok(out)
        }

        /// Appends float softmax over the last dimension with inverse temperature `beta`.
        pub fn softmax_f32(
            &mut self,
            name: &str,
            x: TensorId,
            beta: f32,
        ) -> Result<TensorId, BuildError> {
            self.softmax_op(OpKind::Softmax, name, x, beta, false)
        }

        /// Appends int8 softmax over the last dimension; the output is quantized with scale
        /// 1/256 and zero point -128, and the parameters are TFLite's for `x`'s scale.
        pub fn softmax_i8(
            &mut self,
            name: &str,
            x: TensorId,
            beta: f32,
        ) -> Result<TensorId, BuildError> {
            self.softmax_op(OpKind::Softmax, name, x, beta, true)
        }

        /// Appends float log-softmax over the last dimension.
        pub fn log_softmax_f32(&mut self, name: &str, x: TensorId) -> Result<TensorId, BuildError> {
            self.softmax_op(OpKind::LogSoftmax, name, x, 1.0, false)
        }

        /// Appends int8 log-softmax over the last dimension; the output is quantized with
        /// scale 16/256 and zero point 127, and the parameters are TFLite's for `x`'s scale.
        pub fn log_softmax_i8(&mut self, name: &str, x: TensorId) -> Result<TensorId, BuildError> {
            self.softmax_op(OpKind::LogSoftmax, name, x, 1.0, true)
        }
    }
}
