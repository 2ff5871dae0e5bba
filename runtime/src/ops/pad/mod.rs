//! Constant padding (TFLite `PAD`/`PADV2`, ONNX `Pad` in `constant` mode): the input framed by
//! `before[d]` and `after[d]` copies of one value along each dimension `d`.
//!
//! The value is an f32 for float tensors and, for int8/int16, the value already quantized
//! with the tensor's (shared) scale and zero point, so the device converts nothing; the
//! builder quantizes a real value, and real 0 becomes the zero point, TFLite's default.

pub mod reference;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand};
use crate::ops::concat::{MOVABLE, same_quantization};
use crate::ops::{Ctx, Node};
use crate::tensor::{DType, Element, MAX_RANK};

/// The value written into the padding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PadValue {
    /// For float tensors.
    Float(f32),
    /// For integer tensors: the stored integer (for int8/int16, the quantized value), within
    /// the element type's range.
    Integer(i32),
}

/// Attributes of a `Pad` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PadAttributes {
    /// The input's rank, 1 to [`MAX_RANK`].
    pub rank: u8,
    /// `[before, after]` per dimension; entries past `rank` are zero.
    pub pads: [[u32; 2]; MAX_RANK],
    /// The padding value.
    pub value: PadValue,
}

/// A validated padding: input dimensions and `(before, after)` per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PadGeometry {
    rank: usize,
    dims: [usize; MAX_RANK],
    pads: [(usize, usize); MAX_RANK],
}

impl PadGeometry {
    /// Checks the rank (1 to [`MAX_RANK`]), that no dimension is zero, that there is one
    /// `(before, after)` pair per dimension and that the padded element count fits.
    pub fn new(dims: &[usize], pads: &[(usize, usize)]) -> Result<PadGeometry, Error> {
        let rank = dims.len();
        if rank == 0 || rank > MAX_RANK || pads.len() != rank || dims.contains(&0) {
            return Err(Error::InvalidShape);
        }
        let mut g = PadGeometry {
            rank,
            dims: [1; MAX_RANK],
            pads: [(0, 0); MAX_RANK],
        };
        g.dims[..rank].copy_from_slice(dims);
        g.pads[..rank].copy_from_slice(pads);
        let mut total = 1usize;
        for d in 0..rank {
            let (before, after) = pads[d];
            let out = dims[d]
                .checked_add(before)
                .and_then(|n| n.checked_add(after))
                .ok_or(Error::InvalidShape)?;
            total = total.checked_mul(out).ok_or(Error::InvalidShape)?;
        }
        Ok(g)
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The input's dimensions.
    pub fn input_dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// `(before, after)` per dimension.
    pub fn pads(&self) -> &[(usize, usize)] {
        &self.pads[..self.rank]
    }

    /// Output dimension `d`: `before + input + after` (0 past the rank).
    pub fn output_dim(&self, d: usize) -> usize {
        if d < self.rank {
            self.pads[d].0 + self.dims[d] + self.pads[d].1
        } else {
            0
        }
    }

    /// Input elements.
    pub fn input_elements(&self) -> usize {
        self.input_dims().iter().product()
    }

    /// Output elements.
    pub fn output_elements(&self) -> usize {
        (0..self.rank).map(|d| self.output_dim(d)).product()
    }
}

/// Pads `input` into `output` with `value`.
pub fn pad<T: Copy>(
    geometry: &PadGeometry,
    value: T,
    input: &[T],
    output: &mut [T],
) -> Result<(), Error> {
    for (operand, expected, actual) in [
        (Operand::Input, geometry.input_elements(), input.len()),
        (Operand::Output, geometry.output_elements(), output.len()),
    ] {
        if expected != actual {
            return Err(Error::ShapeMismatch {
                operand,
                expected,
                actual,
            });
        }
    }
    reference::pad(geometry, value, input, output);
    Ok(())
}

/// The geometry of a model's op, checked against its attributes and operands.
fn geometry(node: &Node<'_>, attributes: &PadAttributes) -> Result<PadGeometry, OpProblem> {
    let input = node.input(0)?;
    let output = node.output(0)?;
    let rank = usize::from(attributes.rank);
    if rank == 0 || rank > MAX_RANK {
        return Err(OpProblem::Attribute("rank"));
    }
    if attributes.pads[rank..].iter().any(|&p| p != [0, 0]) {
        return Err(OpProblem::Attribute("pads"));
    }
    input.shape_if(
        input.record.shape.rank() == rank,
        "rank differs from the padding's",
    )?;
    let mut dims = [0usize; MAX_RANK];
    let mut pads = [(0usize, 0usize); MAX_RANK];
    for d in 0..rank {
        dims[d] = input.dim(d);
        pads[d] = (
            attributes.pads[d][0] as usize,
            attributes.pads[d][1] as usize,
        );
    }
    let g =
        PadGeometry::new(&dims[..rank], &pads[..rank]).map_err(|_| OpProblem::Attribute("pads"))?;
    output.shape_if(
        output.record.shape.rank() == rank && (0..rank).all(|d| output.dim(d) == g.output_dim(d)),
        "output dimension d is not before[d] + input[d] + after[d]",
    )?;
    Ok(g)
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 1), 1)?;
    let attributes: PadAttributes = node.attributes()?;
    geometry(node, &attributes)?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = input.expect_dtype(MOVABLE)?;
    output.expect_dtype(&[dtype])?;
    same_quantization(&input, &output)?;
    let fits = match (dtype, attributes.value) {
        (DType::F32, PadValue::Float(_)) => true,
        (DType::I8, PadValue::Integer(v)) => i8::try_from(v).is_ok(),
        (DType::I16, PadValue::Integer(v)) => i16::try_from(v).is_ok(),
        (DType::I32, PadValue::Integer(_)) => true,
        _ => false,
    };
    if !fits {
        return Err(OpProblem::Attribute("value"));
    }
    Ok(())
}

fn run_typed<T: Element>(ctx: &Ctx<'_, '_>, g: &PadGeometry, value: T) -> Result<(), Error> {
    let node = &ctx.node;
    let input = node.input(0).map_err(|_| Error::CorruptModel)?;
    let output = node.output(0).map_err(|_| Error::CorruptModel)?;
    let x = ctx.read::<T>(&input)?;
    // SAFETY: validation keeps the output clear of the input.
    let y = unsafe { ctx.write::<T>(&output)? };
    pad(g, value, x, y)
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let corrupt = |_| Error::CorruptModel;
    let attributes: PadAttributes = ctx.node.attributes().map_err(corrupt)?;
    let g = geometry(&ctx.node, &attributes).map_err(corrupt)?;
    let dtype = ctx.node.input(0).map_err(corrupt)?.record.dtype;
    match (dtype, attributes.value) {
        (DType::F32, PadValue::Float(v)) => run_typed::<f32>(ctx, &g, v),
        (DType::I8, PadValue::Integer(v)) => {
            run_typed::<i8>(ctx, &g, i8::try_from(v).map_err(|_| Error::CorruptModel)?)
        }
        (DType::I16, PadValue::Integer(v)) => {
            run_typed::<i16>(ctx, &g, i16::try_from(v).map_err(|_| Error::CorruptModel)?)
        }
        (DType::I32, PadValue::Integer(v)) => run_typed::<i32>(ctx, &g, v),
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::{PadAttributes, PadValue};
    use crate::format::writer::{BuildError, ModelBuilder, TensorId};
    use crate::ops::OpKind;
    use crate::quant::QuantParams;
    use crate::tensor::{DType, MAX_RANK};
    use alloc::vec::Vec;

    impl ModelBuilder {
        /// Appends a constant padding of `x`: `pads[d] = (before, after)` for each dimension,
        /// filled with the real `value` (quantized with `x`'s scale and zero point for integer
        /// tensors, so 0.0 pads with the zero point). Returns the output tensor.
        pub fn pad(
            &mut self,
            name: &str,
            x: TensorId,
            pads: &[(usize, usize)],
            value: f32,
        ) -> Result<TensorId, BuildError> {
            let shape = self.shape(x).ok_or(BuildError::UnknownTensor(x))?;
            let dtype = self.dtype(x).ok_or(BuildError::UnknownTensor(x))?;
            let bad = || BuildError::BadShape(name.into());
            if pads.len() > MAX_RANK {
                return Err(bad());
            }
            let mut stored = [[0u32; 2]; MAX_RANK];
            for (s, &(before, after)) in stored.iter_mut().zip(pads) {
                *s = [
                    u32::try_from(before).map_err(|_| bad())?,
                    u32::try_from(after).map_err(|_| bad())?,
                ];
            }
            let dims: Vec<usize> = pads
                .iter()
                .enumerate()
                .map(|(d, &(before, after))| {
                    before.saturating_add(shape.dim(d)).saturating_add(after)
                })
                .collect();
            let q = self.per_tensor(x).unwrap_or(QuantParams {
                scale: 1.0,
                zero_point: 0,
            });
            let value = match dtype {
                DType::F32 => PadValue::Float(value),
                DType::I8 => PadValue::Integer(q.quantize(value, i8::MIN.into(), i8::MAX.into())),
                DType::I16 => {
                    PadValue::Integer(q.quantize(value, i16::MIN.into(), i16::MAX.into()))
                }
                _ => PadValue::Integer(q.quantize(value, i32::MIN, i32::MAX)),
            };
            let quantization = self
                .quantization(x)
                .cloned()
                .ok_or(BuildError::UnknownTensor(x))?;
            let out = self.tensor(name, dtype, &dims, quantization)?;
            let attributes = PadAttributes {
                rank: pads.len() as u8,
                pads: stored,
                value,
            };
            self.op(OpKind::Pad, name, &[Some(x)], &[out], &attributes)?;
            Ok(out)
        }
    }
}
