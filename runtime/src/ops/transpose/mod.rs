//! Permutation of dimensions (TFLite `TRANSPOSE`, ONNX `Transpose`): output dimension `i` is
//! input dimension `perm[i]`.
//!
//! The reference walks the output in order with the input's strides. The fast path
//! ([`blocked`], portable) first simplifies the permutation: dimensions of size 1 go, and
//! dimensions that stay next to each other in the same order merge. What remains of NHWC <->
//! NCHW (`[0, 3, 1, 2]` / `[0, 2, 3, 1]`) and of any 2-D transpose is a (batched) 2-D
//! transpose, done in cache-sized tiles; a permutation that merges to the identity is a copy.

pub mod blocked;
pub mod reference;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand};
use crate::isa::{Isa, Kernel, best};
use crate::ops::concat::{MOVABLE, same_quantization};
use crate::ops::{Ctx, Node};
use crate::tensor::{DType, Element, MAX_RANK};

/// Attributes of a `Transpose` op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransposeAttributes {
    /// The input's rank, 1 to [`MAX_RANK`].
    pub rank: u8,
    /// Output dimension `i` is input dimension `perm[i]`; entries past `rank` are zero.
    pub perm: [u8; MAX_RANK],
}

/// A validated transpose: input dimensions and permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransposeGeometry {
    rank: usize,
    dims: [usize; MAX_RANK],
    perm: [usize; MAX_RANK],
}

impl TransposeGeometry {
    /// Checks that `perm` is a permutation of `0..dims.len()`, that the rank is 1 to
    /// [`MAX_RANK`], and that no dimension is zero and the element count fits.
    pub fn new(dims: &[usize], perm: &[usize]) -> Result<TransposeGeometry, Error> {
        let rank = dims.len();
        if rank == 0 || rank > MAX_RANK || perm.len() != rank {
            return Err(Error::InvalidShape);
        }
        let mut seen = [false; MAX_RANK];
        for &p in perm {
            if p >= rank || seen[p] {
                return Err(Error::InvalidShape);
            }
            seen[p] = true;
        }
        if dims.contains(&0)
            || dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .is_none()
        {
            return Err(Error::InvalidShape);
        }
        let mut g = TransposeGeometry {
            rank,
            dims: [1; MAX_RANK],
            perm: [0; MAX_RANK],
        };
        g.dims[..rank].copy_from_slice(dims);
        g.perm[..rank].copy_from_slice(perm);
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

    /// The permutation.
    pub fn perm(&self) -> &[usize] {
        &self.perm[..self.rank]
    }

    /// Output dimension `i` (`input_dims()[perm()[i]]`), 0 past the rank.
    pub fn output_dim(&self, i: usize) -> usize {
        if i < self.rank {
            self.dims[self.perm[i]]
        } else {
            0
        }
    }

    /// The element count (the same for input and output).
    pub fn elements(&self) -> usize {
        self.input_dims().iter().product()
    }
}

type TransposeKernel<T> = fn(&TransposeGeometry, &[T], &mut [T]);

/// The kernels for element type `T`, reference first. Each takes validated operands.
pub(crate) fn kernels<T: Copy>() -> [Kernel<TransposeKernel<T>>; 2] {
    [
        Kernel {
            name: "reference",
            isa: Isa::Portable,
            run: reference::transpose::<T>,
        },
        Kernel {
            name: "blocked",
            isa: Isa::Portable,
            run: blocked::transpose::<T>,
        },
    ]
}

/// Transposes `input` into `output` with the fastest kernel (every kernel gives the
/// reference's result; they only move elements).
pub fn transpose<T: Copy>(
    geometry: &TransposeGeometry,
    input: &[T],
    output: &mut [T],
) -> Result<(), Error> {
    let n = geometry.elements();
    for (operand, len) in [
        (Operand::Input, input.len()),
        (Operand::Output, output.len()),
    ] {
        if len != n {
            return Err(Error::ShapeMismatch {
                operand,
                expected: n,
                actual: len,
            });
        }
    }
    (best(&kernels::<T>()))(geometry, input, output);
    Ok(())
}

/// The geometry of a model's op, checked against its attributes and operands.
fn geometry(node: &Node<'_>) -> Result<TransposeGeometry, OpProblem> {
    let attributes: TransposeAttributes = node.attributes()?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let rank = usize::from(attributes.rank);
    if rank == 0 || rank > MAX_RANK {
        return Err(OpProblem::Attribute("rank"));
    }
    if attributes.perm[rank..].iter().any(|&p| p != 0) {
        return Err(OpProblem::Attribute("perm"));
    }
    input.shape_if(
        input.record.shape.rank() == rank,
        "rank differs from the permutation's",
    )?;
    let mut dims = [0usize; MAX_RANK];
    let mut perm = [0usize; MAX_RANK];
    for i in 0..rank {
        dims[i] = input.dim(i);
        perm[i] = usize::from(attributes.perm[i]);
    }
    let g = TransposeGeometry::new(&dims[..rank], &perm[..rank])
        .map_err(|_| OpProblem::Attribute("perm"))?;
    output.shape_if(
        output.record.shape.rank() == rank && (0..rank).all(|i| output.dim(i) == g.output_dim(i)),
        "output dimension i is not input dimension perm[i]",
    )?;
    Ok(g)
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 1), 1)?;
    geometry(node)?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = input.expect_dtype(MOVABLE)?;
    output.expect_dtype(&[dtype])?;
    same_quantization(&input, &output)
}

fn run_typed<T: Element>(ctx: &Ctx<'_, '_>, g: &TransposeGeometry) -> Result<(), Error> {
    let node = &ctx.node;
    let input = node.input(0).map_err(|_| Error::CorruptModel)?;
    let output = node.output(0).map_err(|_| Error::CorruptModel)?;
    let x = ctx.read::<T>(&input)?;
    // SAFETY: validation keeps the output clear of the input.
    let y = unsafe { ctx.write::<T>(&output)? };
    transpose(g, x, y)
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let g = geometry(&ctx.node).map_err(|_| Error::CorruptModel)?;
    let input = ctx.node.input(0).map_err(|_| Error::CorruptModel)?;
    match input.record.dtype {
        DType::F32 => run_typed::<f32>(ctx, &g),
        DType::I8 => run_typed::<i8>(ctx, &g),
        DType::I16 => run_typed::<i16>(ctx, &g),
        DType::I32 => run_typed::<i32>(ctx, &g),
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::TransposeAttributes;
    use crate::format::writer::{BuildError, ModelBuilder, TensorId};
    use crate::ops::OpKind;
    use crate::tensor::MAX_RANK;
    use alloc::vec::Vec;

    impl ModelBuilder {
        /// Appends a transpose of `x`: output dimension `i` is input dimension `perm[i]`.
        /// The type and quantization are kept. Returns the output tensor.
        pub fn transpose(
            &mut self,
            name: &str,
            x: TensorId,
            perm: &[usize],
        ) -> Result<TensorId, BuildError> {
            let shape = self.shape(x).ok_or(BuildError::UnknownTensor(x))?;
            let bad = || BuildError::BadShape(name.into());
            if perm.len() > MAX_RANK {
                return Err(bad());
            }
            let mut stored = [0u8; MAX_RANK];
            for (s, &p) in stored.iter_mut().zip(perm) {
                *s = u8::try_from(p).map_err(|_| bad())?;
            }
            // An invalid permutation still gets an output (of ones where it points nowhere);
            // the op's load-time check then names the problem.
            let dims: Vec<usize> = perm
                .iter()
                .map(|&p| shape.dims().get(p).map_or(1, |&d| d as usize))
                .collect();
            let dtype = self.dtype(x).ok_or(BuildError::UnknownTensor(x))?;
            let quantization = self
                .quantization(x)
                .cloned()
                .ok_or(BuildError::UnknownTensor(x))?;
            let out = self.tensor(name, dtype, &dims, quantization)?;
            let attributes = TransposeAttributes {
                rank: perm.len() as u8,
                perm: stored,
            };
            self.op(OpKind::Transpose, name, &[Some(x)], &[out], &attributes)?;
            Ok(out)
        }
    }
}
