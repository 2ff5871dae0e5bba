//! Concatenation along one axis (TFLite `CONCATENATION`, ONNX `Concat`).
//!
//! In row-major order, concatenating along `axis` interleaves contiguous blocks: for each of
//! the `outer` index combinations before the axis, each input contributes one block of
//! `dim(axis) * inner` elements. The kernel copies those blocks; it never looks at values, so
//! it serves every element type. Quantized inputs must share the output's scale and zero
//! point (TFLite rescales mismatched inputs; here the tools insert that requantization as its
//! own op), so bytes can move unchanged.

pub mod reference;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand as Which};
use crate::ops::{Ctx, Node, Operand};
use crate::tensor::{DType, Element, Quantization};

/// Attributes of a `Concat` op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcatAttributes {
    /// The dimension joined along (non-negative, below the rank).
    pub axis: u8,
}

/// The element types the data-movement ops (Concat, Reshape, Transpose, Pad) take: every type
/// an activation can have. (f16 exists for weights only.)
pub(crate) const MOVABLE: &[DType] = &[DType::F32, DType::I8, DType::I16, DType::I32];

/// Checks that `operand` has exactly `reference`'s quantization, as every data-movement op
/// needs (bytes move unchanged). int8 and int16 tensors must be per-tensor quantized;
/// per-channel quantization is refused for every type, since moving elements would detach
/// them from their channels' scales.
pub(crate) fn same_quantization(
    reference: &Operand<'_>,
    operand: &Operand<'_>,
) -> Result<(), OpProblem> {
    for o in [reference, operand] {
        if matches!(o.record.quantization, Quantization::PerChannel { .. }) {
            return Err(OpProblem::Quantization(
                o.slot,
                "per-channel quantization cannot be moved",
            ));
        }
        if matches!(o.record.dtype, DType::I8 | DType::I16) {
            o.per_tensor()?;
        }
    }
    if operand.record.quantization != reference.record.quantization {
        return Err(OpProblem::Quantization(
            operand.slot,
            "scale and zero point differ from the op's other operands'",
        ));
    }
    Ok(())
}

/// Copies one input of a concatenation into `output`: `input` holds `outer` blocks of equal
/// length, which land at element `offset` of each of `output`'s `outer` rows. Returns the
/// offset where the next input's blocks go.
///
/// Checks the lengths (every block fits in its row); a concatenation is complete when the
/// returned offset equals the row length, `output.len() / outer`.
pub fn concat_part<T: Copy>(
    outer: usize,
    offset: usize,
    input: &[T],
    output: &mut [T],
) -> Result<usize, Error> {
    if outer == 0 || input.is_empty() || input.len() % outer != 0 || output.len() % outer != 0 {
        return Err(Error::InvalidShape);
    }
    let block = input.len() / outer;
    let row = output.len() / outer;
    let end = offset.checked_add(block).ok_or(Error::InvalidShape)?;
    if end > row {
        return Err(Error::ShapeMismatch {
            operand: Which::Output,
            expected: outer * end,
            actual: output.len(),
        });
    }
    reference::copy_blocks(outer, offset, input, output);
    Ok(end)
}

/// Concatenates `inputs`, each `outer` blocks of some length, into `output`: for every outer
/// index, the blocks of all inputs in order. With `outer` the product of the dimensions
/// before the axis, that is concatenation along the axis.
pub fn concat<T: Copy>(outer: usize, inputs: &[&[T]], output: &mut [T]) -> Result<(), Error> {
    let mut offset = 0;
    for input in inputs {
        offset = concat_part(outer, offset, input, output)?;
    }
    if outer == 0 || offset.checked_mul(outer) != Some(output.len()) {
        return Err(Error::ShapeMismatch {
            operand: Which::Output,
            expected: offset.saturating_mul(outer),
            actual: output.len(),
        });
    }
    Ok(())
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 255), 1)?;
    let attributes: ConcatAttributes = node.attributes()?;
    let output = node.output(0)?;
    let dtype = output.expect_dtype(MOVABLE)?;
    let rank = output.record.shape.rank();
    let axis = usize::from(attributes.axis);
    if axis >= rank {
        return Err(OpProblem::Attribute("axis"));
    }
    let mut total = 0usize;
    for i in 0..node.input_count() {
        let x = node.input(i)?;
        x.expect_dtype(&[dtype])?;
        let same_elsewhere = x.record.shape.rank() == rank
            && (0..rank).all(|d| d == axis || x.dim(d) == output.dim(d));
        x.shape_if(
            same_elsewhere,
            "differs from the output in rank or in a dimension other than the axis",
        )?;
        same_quantization(&output, &x)?;
        total = total.saturating_add(x.dim(axis));
    }
    output.shape_if(
        total == output.dim(axis),
        "its axis dimension is not the sum of the inputs'",
    )
}

fn run_typed<T: Element>(ctx: &Ctx<'_, '_>, axis: usize) -> Result<(), Error> {
    let node = &ctx.node;
    let output = node.output(0).map_err(|_| Error::CorruptModel)?;
    let outer: usize = output.dims()[..axis.min(output.dims().len())]
        .iter()
        .map(|&d| d as usize)
        .product();
    // SAFETY: validation keeps the output clear of every input; the inputs are only read.
    let y = unsafe { ctx.write::<T>(&output)? };
    let mut offset = 0;
    for i in 0..node.input_count() {
        let x = node.input(i).map_err(|_| Error::CorruptModel)?;
        offset = concat_part(outer, offset, ctx.read::<T>(&x)?, y)?;
    }
    if offset.checked_mul(outer) != Some(y.len()) {
        return Err(Error::CorruptModel);
    }
    Ok(())
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let attributes: ConcatAttributes = node.attributes().map_err(|_| Error::CorruptModel)?;
    let axis = usize::from(attributes.axis);
    match node
        .output(0)
        .map_err(|_| Error::CorruptModel)?
        .record
        .dtype
    {
        DType::F32 => run_typed::<f32>(ctx, axis),
        DType::I8 => run_typed::<i8>(ctx, axis),
        DType::I16 => run_typed::<i16>(ctx, axis),
        DType::I32 => run_typed::<i32>(ctx, axis),
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::ConcatAttributes;
    use crate::format::writer::{BuildError, ModelBuilder, TensorId};
    use crate::ops::OpKind;
    use alloc::vec::Vec;

    impl ModelBuilder {
        /// Appends a concatenation of `inputs` along `axis`. The output takes the first
        /// input's type and quantization (the others must match it). Returns the output
        /// tensor.
        pub fn concat(
            &mut self,
            name: &str,
            inputs: &[TensorId],
            axis: usize,
        ) -> Result<TensorId, BuildError> {
            let first = *inputs
                .first()
                .ok_or_else(|| BuildError::BadShape(name.into()))?;
            let shape = self.shape(first).ok_or(BuildError::UnknownTensor(first))?;
            let mut dims: Vec<usize> = shape.dims().iter().map(|&d| d as usize).collect();
            if axis < dims.len() {
                dims[axis] = 0;
                for &x in inputs {
                    let s = self.shape(x).ok_or(BuildError::UnknownTensor(x))?;
                    dims[axis] = dims[axis].saturating_add(s.dim(axis));
                }
            }
            let dtype = self.dtype(first).ok_or(BuildError::UnknownTensor(first))?;
            let quantization = self
                .quantization(first)
                .cloned()
                .ok_or(BuildError::UnknownTensor(first))?;
            let axis = u8::try_from(axis).map_err(|_| BuildError::BadShape(name.into()))?;
            let out = self.tensor(name, dtype, &dims, quantization)?;
            let ids: Vec<Option<TensorId>> = inputs.iter().copied().map(Some).collect();
            self.op(
                OpKind::Concat,
                name,
                &ids,
                &[out],
                &ConcatAttributes { axis },
            )?;
            Ok(out)
        }
    }
}
