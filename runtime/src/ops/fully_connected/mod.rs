//! Fully-connected layer (TFLite `FULLY_CONNECTED`, ONNX `Gemm`/`MatMul` with a constant
//! right-hand side): `output[b][o] = act(requant(sum_i input[b][i] * weights[o][i] + bias[o]))`.
//!
//! Weights are stored row-major as `[out_features][in_features]`, TFLite's layout, so each
//! output is one contiguous dot product.

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(all(target_arch = "arm", loam_arm_dsp))]
pub(crate) mod arm;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
pub(crate) mod arm_neon;
pub mod reference;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_prepared;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand};
use crate::isa::{Isa, Kernel, best};
use crate::ops::layer::{self, LayerOperands, check_len};
use crate::ops::{Ctx, FloatWeight, FusedActivation, Node};
use crate::tensor::DType;

/// Attributes of a `FullyConnected` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FullyConnectedAttributes {
    /// Fused activation applied to the output.
    pub activation: FusedActivation,
}

/// The dimensions of a fully-connected layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FullyConnectedShape {
    /// Rows of the input processed at once.
    pub batch: usize,
    /// Input features per row (the dot-product length).
    pub in_features: usize,
    /// Output features per row.
    pub out_features: usize,
}

impl FullyConnectedShape {
    /// Multiply-accumulates one call performs.
    pub fn macs(&self) -> usize {
        self.batch * self.in_features * self.out_features
    }

    fn elements(a: usize, b: usize) -> Result<usize, Error> {
        a.checked_mul(b).ok_or(Error::InvalidShape)
    }

    /// Checks the dimensions and the lengths a kernel indexes with: input, weights, output
    /// and bias.
    fn check_lengths(
        &self,
        input: usize,
        weights: usize,
        output: usize,
        bias: Option<usize>,
    ) -> Result<(), Error> {
        if self.batch == 0 || self.in_features == 0 || self.out_features == 0 {
            return Err(Error::InvalidShape);
        }
        let (b, i, o) = (self.batch, self.in_features, self.out_features);
        check_len(Operand::Input, Self::elements(b, i)?, input)?;
        check_len(Operand::Weights, Self::elements(o, i)?, weights)?;
        check_len(Operand::Output, Self::elements(b, o)?, output)?;
        if let Some(bias) = bias {
            check_len(Operand::Bias, o, bias)?;
        }
        Ok(())
    }
}

/// Quantization of an int8 fully-connected layer (the requantization every int8 layer
/// shares).
pub type FullyConnectedI8Params<'a> = crate::ops::RequantizeParams<'a>;

/// The operands of an int8 fully-connected call.
#[derive(Debug)]
pub struct FullyConnectedI8<'a> {
    /// Layer dimensions.
    pub shape: FullyConnectedShape,
    /// Quantization parameters.
    pub params: FullyConnectedI8Params<'a>,
    /// `[batch][in_features]` activations.
    pub input: &'a [i8],
    /// `[out_features][in_features]` weights.
    pub weights: &'a [i8],
    /// `[out_features]` bias in the accumulator's scale, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl FullyConnectedI8<'_> {
    /// Checks every length and quantization parameter against the shape, so kernels can index
    /// without further checks. Run once when a model is loaded, not per inference.
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        self.shape.check_lengths(
            self.input.len(),
            self.weights.len(),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(self.shape.out_features)
    }
}

/// Runs an int8 fully-connected layer with the fastest kernel this build has, after validating
/// the operands.
///
/// Every kernel gives exactly the bytes of [`reference::fully_connected_i8`].
pub fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I8_KERNELS))(op, output);
    Ok(())
}

/// [`fully_connected_i8`] with the weights an interpreter packed when it was made
/// ([`prepare`]; empty where it keeps none, or on CPUs it packs nothing for).
pub(crate) fn fully_connected_i8_packed(
    op: &FullyConnectedI8<'_>,
    packing: &[i32],
    output: &mut [i8],
) -> Result<(), Error> {
    #[cfg(target_arch = "x86_64")]
    if !packing.is_empty() {
        op.validate(output)?;
        if x86_prepared::fully_connected_i8(op, packing, output) {
            return Ok(());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = packing;
    fully_connected_i8(op, output)
}

/// The operands of a 16x8 fully-connected call: int16 activations, int8 weights.
#[derive(Debug)]
pub struct FullyConnectedI16<'a> {
    /// Layer dimensions.
    pub shape: FullyConnectedShape,
    /// Quantization parameters.
    pub params: crate::ops::Requantize16Params<'a>,
    /// `[batch][in_features]` activations (zero point 0).
    pub input: &'a [i16],
    /// `[out_features][in_features]` weights.
    pub weights: &'a [i8],
    /// `[out_features]` bias in the accumulator's scale, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl FullyConnectedI16<'_> {
    /// Checks every length and quantization parameter against the shape.
    pub fn validate(&self, output: &[i16]) -> Result<(), Error> {
        self.shape.check_lengths(
            self.input.len(),
            self.weights.len(),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(self.shape.out_features)
    }
}

/// Runs a 16x8 fully-connected layer with the fastest kernel this build has, after
/// validating the operands. Every kernel gives exactly the values of
/// [`reference::fully_connected_i16`].
pub fn fully_connected_i16(op: &FullyConnectedI16<'_>, output: &mut [i16]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I16_KERNELS))(op, output);
    Ok(())
}

/// A 16x8 fully-connected kernel over validated operands.
pub type I16Kernel = fn(&FullyConnectedI16<'_>, &mut [i16]);

/// Finishes up to four output rows of a SIMD kernel that summed the first `start` inputs
/// (`sums`): the scalar tail, the bias and the requantization, written to `out[o..o + rows]`.
#[cfg(any(target_arch = "aarch64", loam_arm_neon))]
pub(crate) fn finish_rows_i8(
    op: &FullyConnectedI8<'_>,
    row: &[i8],
    o: usize,
    rows: usize,
    start: usize,
    sums: [i32; 4],
    out: &mut [i8],
) {
    let n = op.shape.in_features;
    let p = &op.params;
    for (r, &sum) in sums.iter().enumerate().take(rows) {
        let w = &op.weights[(o + r) * n..(o + r + 1) * n];
        let mut acc = sum;
        for i in start..n {
            acc = acc.wrapping_add((i32::from(row[i]) - p.input_zero_point) * i32::from(w[i]));
        }
        if let Some(bias) = op.bias {
            acc = acc.wrapping_add(bias[o + r]);
        }
        out[o + r] = p.output(acc, o + r);
    }
}

/// The float counterpart of [`finish_rows_i8`]: tail, bias and clamp.
#[cfg(any(target_arch = "aarch64", loam_arm_neon))]
pub(crate) fn finish_rows_f32<W: FloatWeight>(
    op: &FullyConnectedF32<'_, W>,
    row: &[f32],
    o: usize,
    rows: usize,
    start: usize,
    sums: [f32; 4],
    out: &mut [f32],
) {
    let n = op.shape.in_features;
    let (lo, hi) = op.activation;
    for (r, &sum) in sums.iter().enumerate().take(rows) {
        let w = &op.weights[(o + r) * n..(o + r + 1) * n];
        let mut acc = sum;
        for i in start..n {
            acc += row[i] * w[i].widen();
        }
        if let Some(bias) = op.bias {
            acc += bias[o + r];
        }
        out[o + r] = acc.max(lo).min(hi);
    }
}

/// The 16x8 kernels of this build, reference first.
pub(crate) const I16_KERNELS: &[Kernel<I16Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::fully_connected_i16,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::fully_connected_i16,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::fully_connected_i16_neon,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::fully_connected_i16,
    },
];

/// The 16x8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side.
#[doc(hidden)]
pub fn i16_kernels() -> impl Iterator<Item = (&'static str, I16Kernel)> {
    crate::isa::runnable(I16_KERNELS)
}

/// An int8 fully-connected kernel over validated operands.
pub type I8Kernel = fn(&FullyConnectedI8<'_>, &mut [i8]);

/// The int8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side.
#[doc(hidden)]
pub fn i8_kernels() -> impl Iterator<Item = (&'static str, I8Kernel)> {
    crate::isa::runnable(I8_KERNELS)
}
/// A float kernel over validated operands, for weights of type `W`.
pub type F32Kernel<W = f32> = fn(&FullyConnectedF32<'_, W>, &mut [f32]);

/// The float kernels this CPU can run, by name (reference first), for benchmarks.
#[doc(hidden)]
pub fn f32_kernels() -> impl Iterator<Item = (&'static str, F32Kernel)> {
    crate::isa::runnable(F32_KERNELS)
}

/// The f16-weight kernels this CPU can run, by name (reference first), for benchmarks.
#[doc(hidden)]
pub fn f16_kernels() -> impl Iterator<Item = (&'static str, F32Kernel<half::f16>)> {
    crate::isa::runnable(F16_KERNELS)
}

/// The int8 kernels of this build, reference first. Each takes validated operands.
pub(crate) const I8_KERNELS: &[Kernel<I8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::fully_connected_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::fully_connected_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx512vnni",
        isa: Isa::Avx512Vnni,
        run: x86_vnni::fully_connected_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "amx",
        isa: Isa::Amx,
        run: x86_amx::fully_connected_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::fully_connected_i8_neon,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "dotprod",
        isa: Isa::DotProd,
        run: aarch64::fully_connected_i8_dotprod,
    },
    #[cfg(all(target_arch = "arm", loam_arm_dsp))]
    Kernel {
        name: "dsp",
        isa: Isa::ArmDsp,
        run: arm::fully_connected_i8_dsp,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::fully_connected_i8,
    },
];

/// The f16-weight kernels of this build, reference first. (32-bit NEON has none yet: an
/// f16 layer runs the reference there.)
pub(crate) const F16_KERNELS: &[Kernel<F32Kernel<half::f16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::fully_connected_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::fully_connected_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::fully_connected_f32_neon,
    },
];

/// The kernels for f16 weights with inputs rounded to f16 (when the caller allows it),
/// reference first.
pub(crate) const HALF_INPUT_KERNELS: &[Kernel<F32Kernel<half::f16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::fully_connected_f16_half_inputs,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "fhm",
        isa: Isa::Fhm,
        run: aarch64::fully_connected_f16_fhm,
    },
];

/// The half-input kernels this CPU can run, by name (reference first), for benchmarks.
#[doc(hidden)]
pub fn half_input_kernels() -> impl Iterator<Item = (&'static str, F32Kernel<half::f16>)> {
    crate::isa::runnable(HALF_INPUT_KERNELS)
}

/// The float kernels of this build, reference first.
pub(crate) const F32_KERNELS: &[Kernel<F32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::fully_connected_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::fully_connected_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::fully_connected_f32_neon,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::fully_connected_f32,
    },
];

/// The operands of a float fully-connected call; the weights are `f32` or `f16`
/// ([`FloatWeight`]), the arithmetic `f32` either way.
#[derive(Debug, Clone, Copy)]
pub struct FullyConnectedF32<'a, W: FloatWeight = f32> {
    /// Layer dimensions.
    pub shape: FullyConnectedShape,
    /// `[batch][in_features]` activations.
    pub input: &'a [f32],
    /// `[out_features][in_features]` weights.
    pub weights: &'a [W],
    /// `[out_features]` bias, or `None`.
    pub bias: Option<&'a [f32]>,
    /// Output clamp (`-inf, inf` for none).
    pub activation: (f32, f32),
}

impl<W: FloatWeight> FullyConnectedF32<'_, W> {
    /// Checks every length against the shape.
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        self.shape.check_lengths(
            self.input.len(),
            self.weights.len(),
            output.len(),
            self.bias.map(<[f32]>::len),
        )?;
        layer::check_f32_clamp(self.activation)
    }
}

/// Runs a float fully-connected layer with the fastest kernel this build has. Fast paths
/// agree with [`reference::fully_connected_f32`] within [`F32_TOLERANCE`].
pub fn fully_connected_f32(op: &FullyConnectedF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    (best(F32_KERNELS))(op, output);
    Ok(())
}

/// [`fully_connected_f16`] with the inputs rounded to f16 too, for CPUs that multiply
/// binary16 pairs natively: the result is [`reference::fully_connected_f16_half_inputs`]'s
/// within [`F32_TOLERANCE`] (each output within `2^-11 * sum |x * w|` of the f32 layer's).
/// Where no such CPU is present this runs the f16 kernels, which round nothing.
pub fn fully_connected_f16_half_inputs(
    op: &FullyConnectedF32<'_, half::f16>,
    output: &mut [f32],
) -> Result<(), Error> {
    op.validate(output)?;
    if HALF_INPUT_KERNELS[1..].iter().any(|k| k.isa.available()) {
        (best(HALF_INPUT_KERNELS))(op, output);
    } else {
        (best(F16_KERNELS))(op, output);
    }
    Ok(())
}

/// [`fully_connected_f32`] with f16 weights, widened as they are loaded: the result is the
/// f32 layer's with the widened weights, within [`F32_TOLERANCE`].
pub fn fully_connected_f16(
    op: &FullyConnectedF32<'_, half::f16>,
    output: &mut [f32],
) -> Result<(), Error> {
    op.validate(output)?;
    (best(F16_KERNELS))(op, output);
    Ok(())
}

/// How far a float fast path may drift from the reference: summation order differs, so the
/// bound scales with the dot product's magnitude (`sum |x * w|`) and length.
pub const F32_TOLERANCE: crate::ops::Tolerance = crate::ops::Tolerance::DotProduct;

/// `(batch, in_features, out_features)` of a model's fully-connected op.
fn geometry(operands: &LayerOperands<'_>) -> Result<FullyConnectedShape, OpProblem> {
    let LayerOperands {
        input,
        weights,
        output,
    } = *operands;
    weights.shape_if(
        weights.record.shape.rank() == 2,
        "weights are [out_features, in_features]",
    )?;
    let (out_features, in_features) = (weights.dim(0), weights.dim(1));
    let rank = input.record.shape.rank();
    input.shape_if(rank >= 1, "input needs at least one dimension")?;
    input.shape_if(
        input.dim(rank - 1) == in_features,
        "last dimension differs from the weights' in_features",
    )?;
    let batch = input.elements() / in_features;
    let dims = input.dims();
    let mut expected = [0usize; crate::tensor::MAX_RANK];
    for (e, &d) in expected.iter_mut().zip(dims) {
        *e = d as usize;
    }
    expected[rank - 1] = out_features;
    output.shape_if(
        output.record.shape.is(&expected[..rank]),
        "output is the input's shape with out_features last",
    )?;
    Ok(FullyConnectedShape {
        batch,
        in_features,
        out_features,
    })
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((2, 4), 1)?;
    let attributes: FullyConnectedAttributes = node.attributes()?;
    attributes.activation.check()?;
    let operands = LayerOperands::read(node)?;
    let shape = geometry(&operands)?;
    let dtype = operands
        .input
        .expect_dtype(&[DType::F32, DType::I8, DType::I16])?;
    layer::check_operands(node, &operands, dtype, shape.out_features, 0)
}

/// What [`prepare`] folds: an int8 layer's weights, bias and input zero point.
struct Foldable<'m> {
    weights: &'m [i8],
    bias: Option<&'m [i32]>,
    zero_point: i32,
    out_features: usize,
}

/// The layer's [`Foldable`] parts, when it is int8 and its input zero point is not -128.
fn foldable<'m>(node: &Node<'m>) -> Option<Foldable<'m>> {
    let operands = LayerOperands::read(node).ok()?;
    if operands.input.record.dtype != DType::I8 {
        return None;
    }
    let zero_point = operands.input.record.quantization.zero_point();
    if zero_point == -128 {
        return None;
    }
    let shape = geometry(&operands).ok()?;
    let bias = match node.optional_input(2).ok()? {
        Some(b) => Some(node.constant::<i32>(&b).ok()?),
        None => None,
    };
    Some(Foldable {
        weights: node.constant::<i8>(&operands.weights).ok()?,
        bias,
        zero_point,
        out_features: shape.out_features,
    })
}

/// Words [`prepare`] keeps: an int8 layer whose input zero point is not -128 keeps one per
/// output channel (its folded bias), and on x86 CPUs with AVX-512 VNNI an int8 layer that
/// the GEMMs take keeps its packed weights after them ([`x86_prepared`]).
pub(crate) fn prepared_len(node: &Node<'_>) -> usize {
    foldable(node).map_or(0, |f| f.out_features) + packing_len(node)
}

/// The words of an int8 layer's packed weights on this CPU (0 elsewhere).
fn packing_len(node: &Node<'_>) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        int8_shape(node).map_or(0, |shape| x86_prepared::words(&shape))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = node;
        0
    }
}

/// The shape of an int8 layer (int8 input and weights).
#[cfg(target_arch = "x86_64")]
fn int8_shape(node: &Node<'_>) -> Option<FullyConnectedShape> {
    let operands = LayerOperands::read(node).ok()?;
    if operands.input.record.dtype != DType::I8 || operands.weights.record.dtype != DType::I8 {
        return None;
    }
    geometry(&operands).ok()
}

/// The layer's bias with its input zero point folded in: `bias[o] - (128 + zp) * sum(w[o])`,
/// wrapping. The layer then runs as one whose input zero point is -128 with this bias, which
/// gives the same accumulators (`sum((x - zp) * w) = sum((x + 128) * w) - (128 + zp) *
/// sum(w)`, all modulo 2^32 as the reference accumulates) and so the same outputs on every
/// kernel. Kernels that multiply `x + 128` as unsigned bytes (x86 VNNI) then skip the weight
/// sums they would compute on every run, as TFLite Micro and CMSIS-NN keep their kernel
/// sums from `Prepare`.
///
/// The packed weights that follow ([`packing_len`]) are packed from the folded layer
/// where there is one.
pub(crate) fn prepare(node: &Node<'_>, words: &mut [i32]) -> Option<()> {
    let fold = foldable(node).map_or(0, |f| f.out_features);
    let (folded, packing) = words.split_at_mut_checked(fold)?;
    if packing.len() != packing_len(node) {
        return None;
    }
    let (weights, bias, zero_point) = match foldable(node) {
        Some(f) if f.out_features > 0 => {
            fold_input_zero_point(f.weights, f.bias, f.zero_point, folded);
            (f.weights, Some(&*folded), -128)
        }
        Some(_) => return None,
        None if packing.is_empty() => return Some(()),
        None => {
            let operands = LayerOperands::read(node).ok()?;
            let bias = match node.optional_input(2).ok()? {
                Some(b) => Some(node.constant::<i32>(&b).ok()?),
                None => None,
            };
            (
                node.constant::<i8>(&operands.weights).ok()?,
                bias,
                operands.input.record.quantization.zero_point(),
            )
        }
    };
    if packing.is_empty() {
        return Some(());
    }
    #[cfg(target_arch = "x86_64")]
    {
        let shape = int8_shape(node)?;
        x86_prepared::prepare(&shape, weights, bias, zero_point, packing)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (weights, bias, zero_point);
        None
    }
}

/// `folded[o] = bias[o] - (128 + zero_point) * sum(weights[o])` (wrapping) for the
/// `folded.len()` weight rows of `weights`: the bias of the same layer with input zero
/// point -128 ([`prepare`]).
pub(crate) fn fold_input_zero_point(
    weights: &[i8],
    bias: Option<&[i32]>,
    zero_point: i32,
    folded: &mut [i32],
) {
    let in_features = weights.len() / folded.len().max(1);
    for (o, (f, row)) in folded
        .iter_mut()
        .zip(weights.chunks_exact(in_features.max(1)))
        .enumerate()
    {
        let sum = row.iter().fold(0i32, |s, &w| s.wrapping_add(i32::from(w)));
        let bias = bias.and_then(|b| b.get(o)).copied().unwrap_or(0);
        *f = bias.wrapping_sub((128 + zero_point).wrapping_mul(sum));
    }
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let attributes: FullyConnectedAttributes = node.attributes().map_err(corrupt)?;
    let operands = LayerOperands::read(node).map_err(corrupt)?;
    let shape = geometry(&operands).map_err(corrupt)?;
    let LayerOperands {
        input,
        weights,
        output,
    } = operands;
    match (input.record.dtype, weights.record.dtype) {
        (DType::F32, DType::F16) => {
            let op = FullyConnectedF32 {
                shape,
                input: ctx.read(&input)?,
                weights: node.constant::<half::f16>(&weights).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(attributes.activation),
            };
            // SAFETY: validation keeps the output clear of every input.
            let out = unsafe { ctx.write(&output)? };
            if ctx.half_precision_inputs {
                fully_connected_f16_half_inputs(&op, out)
            } else {
                fully_connected_f16(&op, out)
            }
        }
        (DType::F32, _) => {
            let op = FullyConnectedF32 {
                shape,
                input: ctx.read(&input)?,
                weights: node.constant(&weights).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(attributes.activation),
            };
            // SAFETY: validation keeps the output clear of every input.
            fully_connected_f32(&op, unsafe { ctx.write(&output)? })
        }
        (DType::I8, _) => {
            let mut params = crate::ops::RequantizeParams::from_requant(&layer::i8_requant(
                ctx,
                &input,
                &output,
                attributes.activation,
            )?);
            let mut bias = layer::bias(ctx)?;
            // The prepared words, when the interpreter keeps them: the bias with the input
            // zero point folded in where it is not -128, then the packed weights, if any
            // (`prepare`).
            let mut packing: &[i32] = &[];
            if !node.prepared.is_empty() {
                let fold = if params.input_zero_point != -128 {
                    shape.out_features
                } else {
                    0
                };
                let (folded, rest) = node
                    .prepared
                    .split_at_checked(fold)
                    .ok_or(Error::CorruptModel)?;
                if fold > 0 {
                    params.input_zero_point = -128;
                    bias = Some(folded);
                }
                packing = rest;
            }
            let op = FullyConnectedI8 {
                shape,
                params,
                input: ctx.read(&input)?,
                weights: node.constant(&weights).map_err(corrupt)?,
                bias,
            };
            // SAFETY: validation keeps the output clear of every input.
            let output = unsafe { ctx.write(&output)? };
            fully_connected_i8_packed(&op, packing, output)
        }
        (DType::I16, _) => {
            let op = FullyConnectedI16 {
                shape,
                params: layer::i16_requant(ctx, &output, attributes.activation)?,
                input: ctx.read(&input)?,
                weights: node.constant(&weights).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
            };
            // SAFETY: validation keeps the output clear of every input.
            fully_connected_i16(&op, unsafe { ctx.write(&output)? })
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::FullyConnectedAttributes;
    use crate::format::writer::{BuildError, ModelBuilder, QuantizedWeights, TensorId};
    use crate::ops::layer::build::{Layer, Precision};
    use crate::ops::{FusedActivation, OpKind};
    use crate::quant::QuantParams;
    use alloc::vec::Vec;

    fn output_dims(
        b: &ModelBuilder,
        input: TensorId,
        out_features: usize,
    ) -> Result<Vec<usize>, BuildError> {
        let shape = b.shape(input).ok_or(BuildError::UnknownTensor(input))?;
        let mut dims: Vec<usize> = shape.dims().iter().map(|&d| d as usize).collect();
        if let Some(last) = dims.last_mut() {
            *last = out_features;
        }
        Ok(dims)
    }

    fn in_features(b: &ModelBuilder, input: TensorId) -> Result<usize, BuildError> {
        let shape = b.shape(input).ok_or(BuildError::UnknownTensor(input))?;
        Ok(shape.dims().last().map_or(0, |&d| d as usize))
    }

    /// Appends a fully-connected layer of the given precision; the weights are
    /// `[out_features][in_features]`.
    fn append(
        b: &mut ModelBuilder,
        name: &str,
        input: TensorId,
        activation: FusedActivation,
        precision: Precision<'_>,
    ) -> Result<TensorId, BuildError> {
        let n = in_features(b, input)?;
        let out_features = precision.weight_count() / n.max(1);
        let dims = output_dims(b, input, out_features)?;
        Layer {
            kind: OpKind::FullyConnected,
            name,
            input,
            precision,
            weight_dims: &[out_features, n],
            channel_axis: 0,
            output_dims: &dims,
            attributes: &FullyConnectedAttributes { activation },
        }
        .append(b)
    }

    impl ModelBuilder {
        /// Appends a float fully-connected layer; `weights` is `[out_features][in_features]`.
        /// Returns the output tensor.
        pub fn fully_connected_f32(
            &mut self,
            name: &str,
            input: TensorId,
            weights: &[f32],
            bias: Option<&[f32]>,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::F32 { weights, bias };
            append(self, name, input, activation, precision)
        }

        /// Appends a float fully-connected layer whose weights are stored as f16 (rounded
        /// to nearest): half the flash of [`ModelBuilder::fully_connected_f32`], the same
        /// f32 arithmetic on the rounded weights. Returns the output tensor.
        pub fn fully_connected_f16(
            &mut self,
            name: &str,
            input: TensorId,
            weights: &[f32],
            bias: Option<&[f32]>,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::F16 { weights, bias };
            append(self, name, input, activation, precision)
        }

        /// Appends a 16x8 fully-connected layer whose weights are integers already (as for
        /// [`ModelBuilder::fully_connected_i8_quantized`]), kept bit for bit.
        pub fn fully_connected_i16_quantized(
            &mut self,
            name: &str,
            input: TensorId,
            weights: QuantizedWeights<'_>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::Quantized16 { weights, output };
            append(self, name, input, activation, precision)
        }

        /// Appends a 16x8 fully-connected layer from float weights (quantized per output
        /// feature): `input` is int16 with zero point 0, as is `output`.
        pub fn fully_connected_i16(
            &mut self,
            name: &str,
            input: TensorId,
            weights: &[f32],
            bias: Option<&[f32]>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::I16 {
                weights,
                bias,
                output,
            };
            append(self, name, input, activation, precision)
        }

        /// Appends an int8 fully-connected layer from float weights: weights quantized
        /// symmetrically per output channel, bias to int32, multipliers as TFLite computes
        /// them. `input` must be an int8 tensor with per-tensor quantization.
        pub fn fully_connected_i8(
            &mut self,
            name: &str,
            input: TensorId,
            weights: &[f32],
            bias: Option<&[f32]>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::I8 {
                weights,
                bias,
                output,
            };
            append(self, name, input, activation, precision)
        }

        /// Appends an int8 fully-connected layer whose weights are integers already
        /// (`[out_features][in_features]`, one scale per output feature), kept bit for bit.
        pub fn fully_connected_i8_quantized(
            &mut self,
            name: &str,
            input: TensorId,
            weights: QuantizedWeights<'_>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::Quantized { weights, output };
            append(self, name, input, activation, precision)
        }
    }
}
