//! Elementwise arithmetic with NumPy broadcasting: `y = act(a + b)`, `act(a - b)`, `act(a * b)`
//! (TFLite `ADD`/`SUB`/`MUL`, ONNX `Add`/`Sub`/`Mul`).
//!
//! Shapes broadcast as NumPy (and ONNX multidirectional broadcasting) define it: the shorter
//! shape is aligned on the trailing dimension, and a dimension of 1 repeats along the other
//! operand's. The output has the broadcast shape.
//!
//! int8 follows TFLite's reference arithmetic exactly (`reference_integer_ops::AddElementwise`,
//! `reference_ops::SubElementwise`, `reference_integer_ops::MulElementwise`); the multipliers
//! they need are computed once by [`BinaryRequant::new`] (TFLite's `Prepare`) and stored in the
//! op's attributes, so the device does integer work only.
//!
//! The output may share storage with either input when the shapes are equal (the op computes
//! in place); the kernels then read that operand from the output buffer ([`Source::Output`]).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
mod arm_neon;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand, QuantField};
use crate::fixed_point::QuantizedMultiplier;
use crate::isa::{Isa, Kernel, best};
use crate::ops::{Ctx, FusedActivation, Node, OpKind};
use crate::tensor::{DType, MAX_RANK};

/// The arithmetic of a binary op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
}

impl BinaryOp {
    /// The op for an [`OpKind`], if it is one of Add, Sub and Mul.
    pub const fn from_kind(kind: OpKind) -> Option<BinaryOp> {
        match kind {
            OpKind::Add => Some(BinaryOp::Add),
            OpKind::Sub => Some(BinaryOp::Sub),
            OpKind::Mul => Some(BinaryOp::Mul),
            _ => None,
        }
    }

    /// The [`OpKind`] a model stores for this op.
    pub const fn kind(self) -> OpKind {
        match self {
            BinaryOp::Add => OpKind::Add,
            BinaryOp::Sub => OpKind::Sub,
            BinaryOp::Mul => OpKind::Mul,
        }
    }
}

/// Attributes of an `Add`, `Sub` or `Mul` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryAttributes {
    /// Fused activation applied to the output.
    pub activation: FusedActivation,
    /// The int8 kernel's fixed-point parameters; `None` for float ops.
    pub requant: Option<BinaryRequant>,
}

/// The integers an int8 binary op runs with, each multiplier stored as `[multiplier, shift]`
/// (see [`QuantizedMultiplier`]).
///
/// Add and Sub bring both inputs to a common scale first: each offset input is shifted left
/// by `left_shift` (20 for int8, TFLite's choice) for headroom, scaled by its `input`
/// multiplier (`input_scale / (2 * max(input scales))`), the two are added or subtracted, and
/// the result is scaled by `output` (`2 * max(input scales) / (2^left_shift * output_scale)`).
/// Mul multiplies the offset inputs and scales the product by `output`
/// (`input1_scale * input2_scale / output_scale`); its `left_shift` and input multipliers are
/// zero and unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BinaryRequant {
    /// Headroom shift applied to both offset inputs (Add and Sub).
    pub left_shift: u8,
    /// Input 1's multiplier (Add and Sub).
    pub input1: [i32; 2],
    /// Input 2's multiplier (Add and Sub).
    pub input2: [i32; 2],
    /// The output multiplier.
    pub output: [i32; 2],
}

impl BinaryRequant {
    /// TFLite's `left_shift` for int8 Add and Sub.
    pub const I8_LEFT_SHIFT: u8 = 20;
    /// The largest `left_shift` a file may hold: `255 << 23` still fits in an `i32`.
    pub const MAX_LEFT_SHIFT: u8 = 23;

    /// The parameters TFLite's `Prepare` computes for int8 tensors with these scales: add's
    /// `Prepare` and sub's `PrepareGeneralSubOp` (in double precision from the float scales),
    /// and mul's `Prepare` (whose real multiplier TFLite computes in single precision, as here).
    pub fn new(
        op: BinaryOp,
        input1_scale: f32,
        input2_scale: f32,
        output_scale: f32,
    ) -> Result<BinaryRequant, Error> {
        let scales = [input1_scale, input2_scale, output_scale];
        if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        let raw = |real: f64| QuantizedMultiplier::from_real(real).map(QuantizedMultiplier::to_raw);
        match op {
            BinaryOp::Add | BinaryOp::Sub => {
                let left_shift = Self::I8_LEFT_SHIFT;
                // `2 * max` and `(1 << 20) * output_scale` are exact in single precision, so
                // double precision throughout gives TFLite's values.
                let twice_max = 2.0 * f64::from(input1_scale.max(input2_scale));
                let output = twice_max / ((1u32 << left_shift) as f64 * f64::from(output_scale));
                Ok(BinaryRequant {
                    left_shift,
                    input1: raw(f64::from(input1_scale) / twice_max)?,
                    input2: raw(f64::from(input2_scale) / twice_max)?,
                    output: raw(output)?,
                })
            }
            BinaryOp::Mul => Ok(BinaryRequant {
                left_shift: 0,
                input1: [0, 0],
                input2: [0, 0],
                output: raw(f64::from(input1_scale * input2_scale / output_scale))?,
            }),
        }
    }

    /// The three multipliers, checked; `None` if one is out of range or `left_shift` exceeds
    /// [`BinaryRequant::MAX_LEFT_SHIFT`].
    pub fn multipliers(
        &self,
    ) -> Option<(
        QuantizedMultiplier,
        QuantizedMultiplier,
        QuantizedMultiplier,
    )> {
        if self.left_shift > Self::MAX_LEFT_SHIFT {
            return None;
        }
        let m = |r: [i32; 2]| QuantizedMultiplier::new(r[0], r[1]).ok();
        Some((m(self.input1)?, m(self.input2)?, m(self.output)?))
    }
}

/// The broadcast geometry of a binary op: both operands' dimensions aligned on the trailing
/// dimension and padded with leading 1s to [`MAX_RANK`], and the output's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BinaryShape {
    rank: usize,
    out: [usize; MAX_RANK],
    a: [usize; MAX_RANK],
    b: [usize; MAX_RANK],
    out_elements: usize,
    a_elements: usize,
    b_elements: usize,
}

impl BinaryShape {
    /// The broadcast of two shapes (NumPy rules). Fails with [`Error::InvalidShape`] when a
    /// shape has more than [`MAX_RANK`] dimensions or a zero dimension, the shapes do not
    /// broadcast, or an element count overflows.
    pub fn broadcast(a: &[usize], b: &[usize]) -> Result<BinaryShape, Error> {
        if a.len() > MAX_RANK || b.len() > MAX_RANK {
            return Err(Error::InvalidShape);
        }
        let pad = |dims: &[usize]| {
            let mut padded = [1usize; MAX_RANK];
            padded[MAX_RANK - dims.len()..].copy_from_slice(dims);
            padded
        };
        let (pa, pb) = (pad(a), pad(b));
        let mut out = [1usize; MAX_RANK];
        for i in 0..MAX_RANK {
            out[i] = match (pa[i], pb[i]) {
                (0, _) | (_, 0) => return Err(Error::InvalidShape),
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return Err(Error::InvalidShape),
            };
        }
        let count = |dims: &[usize; MAX_RANK]| {
            dims.iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or(Error::InvalidShape)
        };
        Ok(BinaryShape {
            rank: a.len().max(b.len()),
            out,
            a: pa,
            b: pb,
            out_elements: count(&out)?,
            a_elements: count(&pa)?,
            b_elements: count(&pb)?,
        })
    }

    /// The output's dimensions (the rank is the larger of the inputs' ranks).
    pub fn output_dims(&self) -> &[usize] {
        &self.out[MAX_RANK - self.rank..]
    }

    /// Elements of the output.
    pub fn output_elements(&self) -> usize {
        self.out_elements
    }

    /// Elements of input 1 (`a`).
    pub fn a_elements(&self) -> usize {
        self.a_elements
    }

    /// Elements of input 2 (`b`).
    pub fn b_elements(&self) -> usize {
        self.b_elements
    }

    /// Whether operand `dims` (padded) covers the whole output, so that its elements line up
    /// one to one with the output's (the condition for computing in place).
    fn is_full(&self, dims: &[usize; MAX_RANK]) -> bool {
        *dims == self.out
    }

    /// Element strides of a padded operand over the output's index space: 0 along the
    /// dimensions it broadcasts.
    fn strides(&self, dims: &[usize; MAX_RANK]) -> [usize; MAX_RANK] {
        let mut strides = [0usize; MAX_RANK];
        let mut stride = 1usize;
        for i in (0..MAX_RANK).rev() {
            if dims[i] != 1 {
                strides[i] = stride;
                stride = stride.saturating_mul(dims[i]);
            }
        }
        strides
    }

    /// The output as rows for the fast paths: dimensions of size 1 dropped and neighbours
    /// that broadcast alike merged, so that each row is a run where each operand either
    /// advances one element per output element or repeats one value.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn rows(&self) -> Rows {
        let mut dims = [1usize; MAX_RANK];
        // (a repeats, b repeats) along each merged dimension.
        let mut pattern = [(false, false); MAX_RANK];
        let mut n = 0usize;
        for i in 0..MAX_RANK {
            let d = self.out[i];
            if d == 1 {
                continue;
            }
            let p = (self.a[i] == 1, self.b[i] == 1);
            if n > 0 && pattern[n - 1] == p {
                dims[n - 1] = dims[n - 1].saturating_mul(d);
            } else {
                dims[n] = d;
                pattern[n] = p;
                n += 1;
            }
        }
        let mut rows = Rows {
            outer: [1; MAX_RANK - 1],
            a_stride: [0; MAX_RANK - 1],
            b_stride: [0; MAX_RANK - 1],
            count: 1,
            len: 1,
            a_advances: true,
            b_advances: true,
        };
        if n == 0 {
            // Every dimension is 1: one row of one element.
            return rows;
        }
        let (mut sa, mut sb) = (1usize, 1usize);
        let mut a_stride = [0usize; MAX_RANK];
        let mut b_stride = [0usize; MAX_RANK];
        for j in (0..n).rev() {
            if !pattern[j].0 {
                a_stride[j] = sa;
                sa = sa.saturating_mul(dims[j]);
            }
            if !pattern[j].1 {
                b_stride[j] = sb;
                sb = sb.saturating_mul(dims[j]);
            }
        }
        rows.len = dims[n - 1];
        rows.a_advances = !pattern[n - 1].0;
        rows.b_advances = !pattern[n - 1].1;
        // The outer dimensions, right-aligned in arrays of MAX_RANK - 1.
        let outer = n - 1;
        let skip = MAX_RANK - 1 - outer;
        rows.outer[skip..].copy_from_slice(&dims[..outer]);
        rows.a_stride[skip..].copy_from_slice(&a_stride[..outer]);
        rows.b_stride[skip..].copy_from_slice(&b_stride[..outer]);
        rows.count = self.out_elements / rows.len.max(1);
        rows
    }
}

/// The output of a binary op as `count` rows of `len` elements; see [`BinaryShape::rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only the x86, aarch64 and 32-bit NEON fast paths walk rows; other ISAs use the reference.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon)),
    allow(dead_code)
)]
pub(crate) struct Rows {
    outer: [usize; MAX_RANK - 1],
    a_stride: [usize; MAX_RANK - 1],
    b_stride: [usize; MAX_RANK - 1],
    /// Number of rows.
    pub count: usize,
    /// Elements per row.
    pub len: usize,
    /// Whether `a` advances along a row (else it repeats one value).
    pub a_advances: bool,
    /// Whether `b` advances along a row.
    pub b_advances: bool,
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon)),
    allow(dead_code)
)]
impl Rows {
    /// `(a offset, b offset, output offset)` of each row in order.
    pub fn iter(&self) -> RowIter {
        RowIter {
            rows: *self,
            index: [0; MAX_RANK - 1],
            a: 0,
            b: 0,
            row: 0,
        }
    }
}

/// Iterator over a [`Rows`]' starting offsets.
// Only the x86, aarch64 and 32-bit NEON fast paths walk rows; other ISAs use the reference.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon)),
    allow(dead_code)
)]
pub(crate) struct RowIter {
    rows: Rows,
    index: [usize; MAX_RANK - 1],
    a: usize,
    b: usize,
    row: usize,
}

impl Iterator for RowIter {
    type Item = (usize, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.row >= self.rows.count {
            return None;
        }
        let item = (self.a, self.b, self.row * self.rows.len);
        self.row += 1;
        // Odometer over the outer dimensions, innermost last.
        for d in (0..MAX_RANK - 1).rev() {
            self.index[d] += 1;
            self.a += self.rows.a_stride[d];
            self.b += self.rows.b_stride[d];
            if self.index[d] < self.rows.outer[d] {
                break;
            }
            self.a -= self.rows.a_stride[d] * self.rows.outer[d];
            self.b -= self.rows.b_stride[d] * self.rows.outer[d];
            self.index[d] = 0;
        }
        Some(item)
    }
}

/// Where a row reads an operand from.
#[derive(Clone, Copy)]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
enum Arg<'a, T> {
    /// A run of the row's length that advances with the output.
    Slice(&'a [T]),
    /// One value repeated along the row.
    Scalar(T),
    /// The output row itself (the op computes in place).
    Out,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
impl<'a, T: Copy> Arg<'a, T> {
    fn new(src: Source<'a, T>, offset: usize, advances: bool, len: usize) -> Arg<'a, T> {
        match src {
            // Validation only lets an operand covering the whole output be read in place,
            // and such an operand always advances, at the output's own offset.
            Source::Output => Arg::Out,
            Source::Slice(s) if advances => Arg::Slice(&s[offset..offset + len]),
            Source::Slice(s) => Arg::Scalar(s[offset]),
        }
    }

    fn get(self, i: usize, out: &[T]) -> T {
        match self {
            Arg::Slice(s) => s[i],
            Arg::Scalar(x) => x,
            Arg::Out => out[i],
        }
    }
}

/// Where a kernel reads an operand from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a, T> {
    /// Its own buffer.
    Slice(&'a [T]),
    /// The output buffer, which holds the operand's values when the kernel starts: the op
    /// computes in place. Only an operand whose shape is the output's can be read this way.
    Output,
}

/// The quantization of an int8 binary op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BinaryI8Params {
    /// Add, Sub or Mul.
    pub op: BinaryOp,
    /// Input 1's zero point, in `-128..=127`.
    pub input1_zero_point: i32,
    /// Input 2's zero point, in `-128..=127`.
    pub input2_zero_point: i32,
    /// The output's zero point, in `-128..=127`.
    pub output_zero_point: i32,
    /// Headroom shift of the offset inputs (Add and Sub), at most
    /// [`BinaryRequant::MAX_LEFT_SHIFT`].
    pub left_shift: u32,
    /// Input 1's multiplier (Add and Sub).
    pub input1_multiplier: QuantizedMultiplier,
    /// Input 2's multiplier (Add and Sub).
    pub input2_multiplier: QuantizedMultiplier,
    /// The output multiplier.
    pub output_multiplier: QuantizedMultiplier,
    /// Lower clamp of the fused activation.
    pub activation_min: i8,
    /// Upper clamp of the fused activation.
    pub activation_max: i8,
}

impl BinaryI8Params {
    /// The parameters of an op with these stored integers, zero points and clamp.
    pub fn from_requant(
        op: BinaryOp,
        requant: &BinaryRequant,
        zero_points: [i32; 3],
        activation: (i8, i8),
    ) -> Result<BinaryI8Params, Error> {
        let (m1, m2, mo) = requant
            .multipliers()
            .ok_or(Error::InvalidQuantization(QuantField::Scale))?;
        Ok(BinaryI8Params {
            op,
            input1_zero_point: zero_points[0],
            input2_zero_point: zero_points[1],
            output_zero_point: zero_points[2],
            left_shift: u32::from(requant.left_shift),
            input1_multiplier: m1,
            input2_multiplier: m2,
            output_multiplier: mo,
            activation_min: activation.0,
            activation_max: activation.1,
        })
    }

    fn validate(&self) -> Result<(), Error> {
        let zp = |z: i32| (-128..=127).contains(&z);
        if !zp(self.input1_zero_point) || !zp(self.input2_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::InputZeroPoint));
        }
        if !zp(self.output_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::OutputZeroPoint));
        }
        if self.left_shift > u32::from(BinaryRequant::MAX_LEFT_SHIFT) {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        if self.activation_min > self.activation_max {
            return Err(Error::InvalidQuantization(QuantField::ActivationRange));
        }
        Ok(())
    }
}

/// Checks an operand's source against its padded dimensions.
fn validate_source<T>(
    shape: &BinaryShape,
    dims: &[usize; MAX_RANK],
    elements: usize,
    source: &Source<'_, T>,
) -> Result<(), Error> {
    match source {
        Source::Slice(s) if s.len() == elements => Ok(()),
        Source::Slice(s) => Err(Error::ShapeMismatch {
            operand: Operand::Input,
            expected: elements,
            actual: s.len(),
        }),
        Source::Output if shape.is_full(dims) => Ok(()),
        Source::Output => Err(Error::InvalidShape),
    }
}

fn validate_output(shape: &BinaryShape, len: usize) -> Result<(), Error> {
    if len == shape.out_elements {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: shape.out_elements,
            actual: len,
        })
    }
}

/// The operands of an int8 binary call.
#[derive(Debug, Clone, Copy)]
pub struct BinaryI8<'a> {
    /// Broadcast geometry.
    pub shape: BinaryShape,
    /// Quantization.
    pub params: BinaryI8Params,
    /// Input 1.
    pub a: Source<'a, i8>,
    /// Input 2.
    pub b: Source<'a, i8>,
}

impl BinaryI8<'_> {
    /// Checks lengths and parameters, so kernels can index without further checks. Either
    /// input's length mismatch is reported as [`Operand::Input`].
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        let s = &self.shape;
        validate_source(s, &s.a, s.a_elements, &self.a)?;
        validate_source(s, &s.b, s.b_elements, &self.b)?;
        validate_output(s, output.len())?;
        self.params.validate()
    }
}

/// The operands of a float binary call.
#[derive(Debug, Clone, Copy)]
pub struct BinaryF32<'a> {
    /// Broadcast geometry.
    pub shape: BinaryShape,
    /// Add, Sub or Mul.
    pub op: BinaryOp,
    /// Output clamp (`-inf, inf` for none).
    pub activation: (f32, f32),
    /// Input 1.
    pub a: Source<'a, f32>,
    /// Input 2.
    pub b: Source<'a, f32>,
}

impl BinaryF32<'_> {
    /// Checks lengths and the clamp range.
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        let s = &self.shape;
        validate_source(s, &s.a, s.a_elements, &self.a)?;
        validate_source(s, &s.b, s.b_elements, &self.b)?;
        validate_output(s, output.len())?;
        crate::ops::layer::check_f32_clamp(self.activation)
    }
}

type I8Kernel = fn(&BinaryI8<'_>, &mut [i8]);
type F32Kernel = fn(&BinaryF32<'_>, &mut [f32]);

/// The int8 kernels of this build, reference first.
pub(crate) const I8_KERNELS: &[Kernel<I8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::binary_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::binary_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx512",
        isa: Isa::Avx512Vnni,
        run: x86_avx512::binary_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::binary_i8,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::binary_i8,
    },
];

/// The int8 kernels this CPU can run, by name (reference first), for the benchmarks.
#[doc(hidden)]
pub fn i8_kernels() -> impl Iterator<Item = (&'static str, I8Kernel)> {
    crate::isa::runnable(I8_KERNELS)
}

/// The float kernels of this build, reference first.
pub(crate) const F32_KERNELS: &[Kernel<F32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::binary_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::binary_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::binary_f32,
    },
];

/// How far a float fast path may drift from the reference: not at all, since each output is
/// one IEEE operation and a clamp in either.
pub const F32_TOLERANCE: crate::ops::Tolerance = crate::ops::Tolerance::Exact;

/// Runs an int8 binary op with the fastest kernel this build has, after validating the
/// operands. Every kernel gives exactly the bytes of [`reference::binary_i8`].
pub fn binary_i8(op: &BinaryI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I8_KERNELS))(op, output);
    Ok(())
}

/// Runs a float binary op with the fastest kernel this build has, after validating the
/// operands. Every kernel gives exactly the values of [`reference::binary_f32`].
pub fn binary_f32(op: &BinaryF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    (best(F32_KERNELS))(op, output);
    Ok(())
}

/// The broadcast geometry of a model's op.
fn geometry(node: &Node<'_>) -> Result<BinaryShape, OpProblem> {
    let a = node.input(0)?;
    let b = node.input(1)?;
    let mut da = [0usize; MAX_RANK];
    let mut db = [0usize; MAX_RANK];
    for (d, &x) in da.iter_mut().zip(a.dims()) {
        *d = x as usize;
    }
    for (d, &x) in db.iter_mut().zip(b.dims()) {
        *d = x as usize;
    }
    BinaryShape::broadcast(&da[..a.dims().len()], &db[..b.dims().len()]).map_err(|_| {
        OpProblem::Shape(
            b.slot,
            "does not broadcast with input 0 (trailing dimensions must match or be 1)",
        )
    })
}

pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    BinaryOp::from_kind(kind).ok_or(OpProblem::UnknownKind)?;
    node.arity((2, 2), 1)?;
    let attributes: BinaryAttributes = node.attributes()?;
    attributes.activation.check()?;
    let a = node.input(0)?;
    let b = node.input(1)?;
    let output = node.output(0)?;
    let dtype = a.expect_dtype(&[DType::F32, DType::I8])?;
    b.expect_dtype(&[dtype])?;
    output.expect_dtype(&[dtype])?;
    let shape = geometry(node)?;
    output.shape_if(
        output.record.shape.is(shape.output_dims()),
        "output is not the broadcast of the inputs' shapes",
    )?;
    match dtype {
        DType::F32 => {
            if attributes.requant.is_some() {
                return Err(OpProblem::Attribute("requant (float ops have none)"));
            }
        }
        _ => {
            a.per_tensor()?;
            b.per_tensor()?;
            output.per_tensor()?;
            let requant = attributes
                .requant
                .ok_or(OpProblem::Attribute("requant (int8 ops need it)"))?;
            if requant.multipliers().is_none() {
                return Err(OpProblem::Attribute(
                    "requant (a multiplier or the left shift is out of range)",
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let op = BinaryOp::from_kind(kind).ok_or(Error::CorruptModel)?;
    let attributes: BinaryAttributes = node.attributes().map_err(corrupt)?;
    let shape = geometry(node).map_err(corrupt)?;
    let a = node.input(0).map_err(corrupt)?;
    let b = node.input(1).map_err(corrupt)?;
    let output = node.output(0).map_err(corrupt)?;
    // An input that shares the output's storage is read through the output slice alone.
    let in_place_a = ctx.shares_storage(&a, &output);
    let in_place_b = ctx.shares_storage(&b, &output);
    match a.record.dtype {
        DType::F32 => {
            let op = BinaryF32 {
                shape,
                op,
                activation: (attributes.activation.min, attributes.activation.max),
                a: if in_place_a {
                    Source::Output
                } else {
                    Source::Slice(ctx.read(&a)?)
                },
                b: if in_place_b {
                    Source::Output
                } else {
                    Source::Slice(ctx.read(&b)?)
                },
            };
            // SAFETY: validation keeps the output clear of every input except one that shares
            // its storage exactly, and such an input is not read through its own slice.
            binary_f32(&op, unsafe { ctx.write(&output)? })
        }
        DType::I8 => {
            let requant = attributes.requant.ok_or(Error::CorruptModel)?;
            let (scale, zero_point) = output.per_tensor().map_err(corrupt)?;
            let (lo, hi) = attributes
                .activation
                .quantized(scale, zero_point, -128, 127);
            let params = BinaryI8Params::from_requant(
                op,
                &requant,
                [
                    a.record.quantization.zero_point(),
                    b.record.quantization.zero_point(),
                    zero_point,
                ],
                (lo as i8, hi as i8),
            )
            .map_err(|_| Error::CorruptModel)?;
            let op = BinaryI8 {
                shape,
                params,
                a: if in_place_a {
                    Source::Output
                } else {
                    Source::Slice(ctx.read(&a)?)
                },
                b: if in_place_b {
                    Source::Output
                } else {
                    Source::Slice(ctx.read(&b)?)
                },
            };
            // SAFETY: as for the float case above.
            binary_i8(&op, unsafe { ctx.write(&output)? })
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::{BinaryAttributes, BinaryOp, BinaryRequant, BinaryShape};
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
    use crate::ops::FusedActivation;
    use crate::quant::QuantParams;
    use crate::tensor::DType;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn output_dims(
        b: &ModelBuilder,
        name: &str,
        x: TensorId,
        y: TensorId,
    ) -> Result<Vec<usize>, BuildError> {
        let dims = |t: TensorId| -> Result<Vec<usize>, BuildError> {
            let shape = b.shape(t).ok_or(BuildError::UnknownTensor(t))?;
            Ok(shape.dims().iter().map(|&d| d as usize).collect())
        };
        let shape = BinaryShape::broadcast(&dims(x)?, &dims(y)?)
            .map_err(|_| BuildError::BadShape(name.to_string()))?;
        Ok(shape.output_dims().to_vec())
    }

    impl ModelBuilder {
        /// Appends a float `a op b` with NumPy broadcasting; returns the output tensor.
        pub fn binary_f32(
            &mut self,
            op: BinaryOp,
            name: &str,
            a: TensorId,
            b: TensorId,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let dims = output_dims(self, name, a, b)?;
            let out = self.tensor(name, DType::F32, &dims, QuantSpec::None)?;
            self.op(
                op.kind(),
                name,
                &[Some(a), Some(b)],
                &[out],
                &BinaryAttributes {
                    activation,
                    requant: None,
                },
            )?;
            Ok(out)
        }

        /// Appends an int8 `a op b` with NumPy broadcasting, its fixed-point parameters
        /// computed from the three scales as TFLite's `Prepare` does. `a` and `b` must be int8
        /// tensors with per-tensor quantization; the output gets `output`'s.
        pub fn binary_i8(
            &mut self,
            op: BinaryOp,
            name: &str,
            a: TensorId,
            b: TensorId,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let qa = self.per_tensor(a).ok_or(BuildError::UnknownTensor(a))?;
            let qb = self.per_tensor(b).ok_or(BuildError::UnknownTensor(b))?;
            // Scales that give no multipliers leave the op without parameters, which the
            // load-time check reports when the model is built.
            let requant = BinaryRequant::new(op, qa.scale, qb.scale, output.scale).ok();
            let dims = output_dims(self, name, a, b)?;
            let out = self.tensor(
                name,
                DType::I8,
                &dims,
                QuantSpec::PerTensor {
                    scale: output.scale,
                    zero_point: output.zero_point,
                },
            )?;
            self.op(
                op.kind(),
                name,
                &[Some(a), Some(b)],
                &[out],
                &BinaryAttributes {
                    activation,
                    requant,
                },
            )?;
            Ok(out)
        }

        /// Appends a float `a + b`.
        pub fn add_f32(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_f32(BinaryOp::Add, name, a, b, activation)
        }

        /// Appends a float `a - b`.
        pub fn sub_f32(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_f32(BinaryOp::Sub, name, a, b, activation)
        }

        /// Appends a float `a * b`.
        pub fn mul_f32(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_f32(BinaryOp::Mul, name, a, b, activation)
        }

        /// Appends an int8 `a + b`.
        pub fn add_i8(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_i8(BinaryOp::Add, name, a, b, output, activation)
        }

        /// Appends an int8 `a - b`.
        pub fn sub_i8(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_i8(BinaryOp::Sub, name, a, b, output, activation)
        }

        /// Appends an int8 `a * b`.
        pub fn mul_i8(
            &mut self,
            name: &str,
            a: TensorId,
            b: TensorId,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.binary_i8(BinaryOp::Mul, name, a, b, output, activation)
        }
    }
}
