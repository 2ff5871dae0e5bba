//! Quantize (f32 to int8/int16) and Dequantize (int8/int16 to f32), TFLite `QUANTIZE` and
//! `DEQUANTIZE` (ONNX `QuantizeLinear`/`DequantizeLinear` with per-tensor parameters).
//!
//! The parameters are those of the integer side: the output's for Quantize, the input's for
//! Dequantize. Neither op has attributes.

pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::error::{Error, OpProblem, Operand, QuantField};
use crate::isa::{Isa, Kernel, best};
use crate::ops::{Ctx, Node, OpKind};
use crate::quant::QuantParams;
use crate::tensor::{DType, Element};

type QuantizeKernel<Q> = fn(QuantParams, &[f32], &mut [Q]);
type DequantizeKernel<Q> = fn(QuantParams, &[Q], &mut [f32]);

/// f32 to int8 kernels, reference first. Each takes validated operands.
pub(crate) const QUANTIZE_I8_KERNELS: &[Kernel<QuantizeKernel<i8>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::quantize_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::quantize_i8,
    },
];

/// f32 to int16 kernels, reference first.
pub(crate) const QUANTIZE_I16_KERNELS: &[Kernel<QuantizeKernel<i16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::quantize_i16,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::quantize_i16,
    },
];

/// int8 to f32 kernels, reference first.
pub(crate) const DEQUANTIZE_I8_KERNELS: &[Kernel<DequantizeKernel<i8>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::dequantize_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::dequantize_i8,
    },
];

/// int16 to f32 kernels, reference first.
pub(crate) const DEQUANTIZE_I16_KERNELS: &[Kernel<DequantizeKernel<i16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::dequantize_i16,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::dequantize_i16,
    },
];

/// Checks the lengths and the integer side's parameters; `zero_point_field` names the zero
/// point in the error (the output's for Quantize, the input's for Dequantize).
fn validate(
    params: QuantParams,
    range: (i32, i32),
    zero_point_field: QuantField,
    input: usize,
    output: usize,
) -> Result<(), Error> {
    if input != output {
        return Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: input,
            actual: output,
        });
    }
    if !(params.scale.is_finite() && params.scale > 0.0) {
        return Err(Error::InvalidQuantization(QuantField::Scale));
    }
    if !(range.0..=range.1).contains(&params.zero_point) {
        return Err(Error::InvalidQuantization(zero_point_field));
    }
    Ok(())
}

const I8_RANGE: (i32, i32) = (i8::MIN as i32, i8::MAX as i32);
const I16_RANGE: (i32, i32) = (i16::MIN as i32, i16::MAX as i32);

/// Quantizes `input` to int8 with the fastest kernel this build has: `round(x / scale) +
/// zero_point`, ties away from zero, clamped. Every kernel gives the bytes of
/// [`reference::quantize_i8`].
pub fn quantize_i8(params: QuantParams, input: &[f32], output: &mut [i8]) -> Result<(), Error> {
    validate(
        params,
        I8_RANGE,
        QuantField::OutputZeroPoint,
        input.len(),
        output.len(),
    )?;
    (best(QUANTIZE_I8_KERNELS))(params, input, output);
    Ok(())
}

/// Quantizes `input` to int16; see [`quantize_i8`].
pub fn quantize_i16(params: QuantParams, input: &[f32], output: &mut [i16]) -> Result<(), Error> {
    validate(
        params,
        I16_RANGE,
        QuantField::OutputZeroPoint,
        input.len(),
        output.len(),
    )?;
    (best(QUANTIZE_I16_KERNELS))(params, input, output);
    Ok(())
}

/// Dequantizes int8 `input`: `scale * (q - zero_point)`. Every kernel gives the bits of
/// [`reference::dequantize_i8`].
pub fn dequantize_i8(params: QuantParams, input: &[i8], output: &mut [f32]) -> Result<(), Error> {
    validate(
        params,
        I8_RANGE,
        QuantField::InputZeroPoint,
        input.len(),
        output.len(),
    )?;
    (best(DEQUANTIZE_I8_KERNELS))(params, input, output);
    Ok(())
}

/// Dequantizes int16 `input`; see [`dequantize_i8`].
pub fn dequantize_i16(params: QuantParams, input: &[i16], output: &mut [f32]) -> Result<(), Error> {
    validate(
        params,
        I16_RANGE,
        QuantField::InputZeroPoint,
        input.len(),
        output.len(),
    )?;
    (best(DEQUANTIZE_I16_KERNELS))(params, input, output);
    Ok(())
}

pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 1), 1)?;
    node.attributes::<()>()?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let integer = if kind == OpKind::Quantize {
        input.expect_dtype(&[DType::F32])?;
        output.expect_dtype(&[DType::I8, DType::I16])?;
        output
    } else {
        input.expect_dtype(&[DType::I8, DType::I16])?;
        output.expect_dtype(&[DType::F32])?;
        input
    };
    // The tensor checks already keep the scale positive and the zero point in range.
    integer.per_tensor()?;
    output.shape_if(
        output.record.shape == input.record.shape,
        "output has the input's shape",
    )
}

pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let input = node.input(0).map_err(corrupt)?;
    let output = node.output(0).map_err(corrupt)?;
    let integer = if kind == OpKind::Quantize {
        &output
    } else {
        &input
    };
    let (scale, zero_point) = integer.per_tensor().map_err(corrupt)?;
    let params = QuantParams { scale, zero_point };
    match (kind, integer.record.dtype) {
        (OpKind::Quantize, DType::I8) => apply(ctx, &input, &output, params, quantize_i8),
        (OpKind::Quantize, DType::I16) => apply(ctx, &input, &output, params, quantize_i16),
        (OpKind::Dequantize, DType::I8) => apply(ctx, &input, &output, params, dequantize_i8),
        (OpKind::Dequantize, DType::I16) => apply(ctx, &input, &output, params, dequantize_i16),
        _ => Err(Error::CorruptModel),
    }
}

/// A public entry point such as [`quantize_i8`].
type EntryPoint<I, O> = fn(QuantParams, &[I], &mut [O]) -> Result<(), Error>;

/// Runs one of the public entry points on the op's operands.
fn apply<'m, I: Element, O: Element>(
    ctx: &Ctx<'m, '_>,
    input: &crate::ops::Operand<'m>,
    output: &crate::ops::Operand<'m>,
    params: QuantParams,
    f: EntryPoint<I, O>,
) -> Result<(), Error> {
    let x = ctx.read(input)?;
    // SAFETY: validation keeps the output clear of the input, and `x` is the only other
    // slice held.
    let y = unsafe { ctx.write(output)? };
    f(params, x, y)
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
    use crate::ops::OpKind;
    use crate::quant::QuantParams;
    use crate::tensor::DType;
    use alloc::vec::Vec;

    fn dims(b: &ModelBuilder, x: TensorId) -> Result<Vec<usize>, BuildError> {
        let shape = b.shape(x).ok_or(BuildError::UnknownTensor(x))?;
        Ok(shape.dims().iter().map(|&d| d as usize).collect())
    }

    impl ModelBuilder {
        /// Appends a Quantize op: the f32 tensor `x` to a `dtype` (int8 or int16) tensor
        /// quantized with `params`. Returns the output tensor.
        pub fn quantize(
            &mut self,
            name: &str,
            x: TensorId,
            params: QuantParams,
            dtype: DType,
        ) -> Result<TensorId, BuildError> {
            let dims = dims(self, x)?;
            let out = self.tensor(
                name,
                dtype,
                &dims,
                QuantSpec::PerTensor {
                    scale: params.scale,
                    zero_point: params.zero_point,
                },
            )?;
            self.op(OpKind::Quantize, name, &[Some(x)], &[out], &())?;
            Ok(out)
        }

        /// Appends a Dequantize op: the per-tensor quantized int8 or int16 tensor `x` to f32.
        /// Returns the output tensor.
        pub fn dequantize(&mut self, name: &str, x: TensorId) -> Result<TensorId, BuildError> {
            let dims = dims(self, x)?;
            let out = self.tensor(name, DType::F32, &dims, QuantSpec::None)?;
            self.op(OpKind::Dequantize, name, &[Some(x)], &[out], &())?;
            Ok(out)
        }
    }
}
