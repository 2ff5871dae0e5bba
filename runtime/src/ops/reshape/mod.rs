//! Reshape (TFLite `RESHAPE`, ONNX `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`): the same
//! elements in the same row-major order under a new shape.
//!
//! The target shape is the output tensor's shape (the tools resolve ONNX's shape input), so
//! the op has one input and no attributes. Reshape may run in place
//! ([`crate::ops::OpKind::in_place_inputs`]): when the planner gives the output the input's
//! storage there is nothing to do; otherwise the bytes are copied.

pub mod reference;

use crate::error::{Error, OpProblem, Operand};
use crate::ops::concat::{MOVABLE, same_quantization};
use crate::ops::{Ctx, Node};
use crate::tensor::{DType, Element};

/// Copies `input` to `output`, which must have the same length.
pub fn reshape<T: Copy>(input: &[T], output: &mut [T]) -> Result<(), Error> {
    if input.len() != output.len() {
        return Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: input.len(),
            actual: output.len(),
        });
    }
    reference::copy(input, output);
    Ok(())
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 1), 1)?;
    node.attributes::<()>()?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = input.expect_dtype(MOVABLE)?;
    output.expect_dtype(&[dtype])?;
    output.shape_if(
        output.elements() == input.elements(),
        "element count differs from the input's",
    )?;
    same_quantization(&input, &output)
}

fn copy<T: Element>(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let input = node.input(0).map_err(|_| Error::CorruptModel)?;
    let output = node.output(0).map_err(|_| Error::CorruptModel)?;
    if ctx.shares_storage(&input, &output) {
        // Computed in place: the bytes already are the output.
        return Ok(());
    }
    let x = ctx.read::<T>(&input)?;
    // SAFETY: the output does not share the input's storage (checked just above), and
    // validation allows no other overlap.
    let y = unsafe { ctx.write::<T>(&output)? };
    reshape(x, y)
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let input = ctx.node.input(0).map_err(|_| Error::CorruptModel)?;
    match input.record.dtype {
        DType::F32 => copy::<f32>(ctx),
        DType::I8 => copy::<i8>(ctx),
        DType::I16 => copy::<i16>(ctx),
        DType::I32 => copy::<i32>(ctx),
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use crate::format::writer::{BuildError, ModelBuilder, TensorId};
    use crate::ops::OpKind;

    impl ModelBuilder {
        /// Appends a reshape of `x` to `dims` (same element count; the type and quantization
        /// are kept). Returns the output tensor, which may share `x`'s storage.
        pub fn reshape(
            &mut self,
            name: &str,
            x: TensorId,
            dims: &[usize],
        ) -> Result<TensorId, BuildError> {
            let dtype = self.dtype(x).ok_or(BuildError::UnknownTensor(x))?;
            let quantization = self
                .quantization(x)
                .cloned()
                .ok_or(BuildError::UnknownTensor(x))?;
            let out = self.tensor(name, dtype, dims, quantization)?;
            self.op(OpKind::Reshape, name, &[Some(x)], &[out], &())?;
            Ok(out)
        }
    }
}
