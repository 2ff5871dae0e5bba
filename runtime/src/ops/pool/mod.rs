//! 2-D pooling over NHWC images: max pooling (TFLite `MAX_POOL_2D`, ONNX `MaxPool`), average
//! pooling (TFLite `AVERAGE_POOL_2D`, ONNX `AveragePool` with `count_include_pad = 0`) and the
//! global average (ONNX `GlobalAveragePool`, TFLite `MEAN` over H and W).
//!
//! Windows are placed in floor mode: `out = (in + pad_before + pad_after - kernel) / stride +
//! 1`. Padding may be asymmetric and may exceed the kernel, but every window must hold at
//! least one real (non-padding) element: average pooling divides by the number of real
//! elements, as TFLite does, and a window of padding alone has no value TFLite defines (its
//! int8 `AveragePool` returns an error there). Such geometries are refused when the model
//! loads, and by the kernels' validation.
//!
//! Channels are contiguous in NHWC, so the fast paths vectorize across channels and keep each
//! channel's own order of operations: every fast path here is bit-exact to its reference,
//! float average pooling included (the window is still summed in row-major order, and the sum
//! divided, not multiplied by a reciprocal).

/// Runs `$body` for every output pixel of `$g` with `$win` bound to its window (channel 0)
/// and `$out` to its `channels` outputs, for the fast paths. A macro rather than a closure,
/// so the body is compiled with the enclosing function's target features on every
/// supported compiler.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "arm", loam_arm_dsp)
))]
macro_rules! for_each_pixel {
    ($g:expr, $output:expr, |$win:ident, $out:ident| $body:block) => {
        if let Ok((oh, ow)) = $g.output_size() {
            let mut pixels = $output.chunks_exact_mut($g.channels);
            for b in 0..$g.batch {
                for oy in 0..oh {
                    let rows = $g.rows(oy);
                    for ox in 0..ow {
                        let cols = $g.cols(ox);
                        let $win: reference::Window = (b, rows, cols, 0);
                        if let Some($out) = pixels.next() $body
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(all(target_arch = "arm", loam_arm_dsp))]
mod arm;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
mod arm_neon;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand, QuantField};
use crate::fixed_point::QuantizedMultiplier;
use crate::isa::{Isa, Kernel, best};
use crate::ops::{Ctx, FusedActivation, Node, OpKind, Tolerance, layer};
use crate::tensor::DType;

/// The most elements one window (or one global average) may hold: keeps int8 sums inside an
/// i32 with room to spare (`255 * 2^23 < 2^31`) and float counts exact.
pub const MAX_WINDOW: usize = 1 << 23;

/// How close the float fast paths come to the reference: exactly, since they only reorder
/// work across channels, never within one channel's sum.
pub const F32_TOLERANCE: Tolerance = Tolerance::Exact;

/// Attributes of `MaxPool2d` and `AveragePool2d`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pool2dAttributes {
    /// Window size, `[height, width]`.
    pub kernel: [u32; 2],
    /// Step between windows, `[height, width]`.
    pub stride: [u32; 2],
    /// Implicit padding, `[top, left, bottom, right]`.
    pub padding: [u32; 4],
    /// Fused activation applied to the output.
    pub activation: FusedActivation,
}

/// Attributes of `GlobalAveragePool`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GlobalAveragePoolAttributes {
    /// For int8: `[multiplier, shift]` of `input_scale / output_scale`, from TFLite's
    /// `QuantizeMultiplier` (computed by the tools, so the device does no float math). `None`
    /// for float models.
    pub requant: Option<[i32; 2]>,
}

/// Implicit zero-area padding around an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Padding2d {
    /// Rows above.
    pub top: usize,
    /// Columns on the left.
    pub left: usize,
    /// Rows below.
    pub bottom: usize,
    /// Columns on the right.
    pub right: usize,
}

/// The geometry of a pooling call over an NHWC image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool2dGeometry {
    /// Images.
    pub batch: usize,
    /// Input rows.
    pub height: usize,
    /// Input columns.
    pub width: usize,
    /// Channels (the contiguous dimension).
    pub channels: usize,
    /// Window `(height, width)`.
    pub kernel: (usize, usize),
    /// Stride `(height, width)`.
    pub stride: (usize, usize),
    /// Padding.
    pub padding: Padding2d,
}

/// The output extent along one dimension, or the name of the attribute that makes it invalid.
fn extent(
    input: usize,
    kernel: usize,
    stride: usize,
    before: usize,
    after: usize,
) -> Result<usize, &'static str> {
    if kernel == 0 {
        return Err("kernel");
    }
    if stride == 0 {
        return Err("stride");
    }
    let padded = input
        .checked_add(before)
        .and_then(|p| p.checked_add(after))
        .ok_or("padding")?;
    if padded < kernel {
        return Err("kernel");
    }
    let out = (padded - kernel) / stride + 1;
    // The first window must reach past the top padding, and the last must start inside the
    // input (window origins only grow, so then every window holds a real element).
    // `(out - 1) * stride <= padded - kernel`, so the product cannot overflow.
    if before >= kernel || (out - 1) * stride >= input + before {
        return Err("padding");
    }
    Ok(out)
}

impl Pool2dGeometry {
    /// The output's `(height, width)`, after checking every dimension, the kernel, stride and
    /// padding (including that no window lies entirely in padding).
    pub fn output_size(&self) -> Result<(usize, usize), Error> {
        self.checked_output_size().map_err(|_| Error::InvalidShape)
    }

    fn checked_output_size(&self) -> Result<(usize, usize), &'static str> {
        if self.batch == 0 || self.height == 0 || self.width == 0 || self.channels == 0 {
            return Err("shape");
        }
        let p = self.padding;
        let oh = extent(self.height, self.kernel.0, self.stride.0, p.top, p.bottom)?;
        let ow = extent(self.width, self.kernel.1, self.stride.1, p.left, p.right)?;
        if self
            .kernel
            .0
            .checked_mul(self.kernel.1)
            .is_none_or(|area| area > MAX_WINDOW)
        {
            return Err("kernel");
        }
        let image = |h: usize, w: usize| {
            self.batch
                .checked_mul(h)
                .and_then(|n| n.checked_mul(w))
                .and_then(|n| n.checked_mul(self.channels))
        };
        if image(self.height, self.width).is_none() || image(oh, ow).is_none() {
            return Err("shape");
        }
        Ok((oh, ow))
    }

    /// Checks the geometry and both buffers' lengths; returns the output size.
    pub fn validate(&self, input: usize, output: usize) -> Result<(usize, usize), Error> {
        let (oh, ow) = self.output_size()?;
        let check = crate::ops::layer::check_len;
        // `output_size` checked that both products fit.
        let c = self.channels;
        check(
            Operand::Input,
            self.batch * self.height * self.width * c,
            input,
        )?;
        check(Operand::Output, self.batch * oh * ow * c, output)?;
        Ok((oh, ow))
    }

    /// The input rows `start..end` under output row `oy` (never empty once validated).
    #[inline]
    pub(crate) fn rows(&self, oy: usize) -> (usize, usize) {
        window(
            oy,
            self.stride.0,
            self.padding.top,
            self.kernel.0,
            self.height,
        )
    }

    /// The input columns `start..end` under output column `ox`.
    #[inline]
    pub(crate) fn cols(&self, ox: usize) -> (usize, usize) {
        window(
            ox,
            self.stride.1,
            self.padding.left,
            self.kernel.1,
            self.width,
        )
    }
}

/// TFLite's clamped filter window, as input indices: the window starts at `o * stride -
/// before`, and only its part inside `0..input` counts.
#[inline]
fn window(o: usize, stride: usize, before: usize, kernel: usize, input: usize) -> (usize, usize) {
    let origin = o * stride;
    let start = origin.saturating_sub(before);
    let end = (origin + kernel).saturating_sub(before).min(input);
    (start, end)
}

/// The dimensions of a global average over H and W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GlobalPoolShape {
    /// Images.
    pub batch: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

impl GlobalPoolShape {
    /// Checks the dimensions and both buffers' lengths (`[N, H, W, C]` in, `[N, C]` out).
    pub fn validate(&self, input: usize, output: usize) -> Result<(), Error> {
        let area = self.height.checked_mul(self.width);
        if self.batch == 0 || self.channels == 0 || area.is_none_or(|a| a == 0 || a > MAX_WINDOW) {
            return Err(Error::InvalidShape);
        }
        let expected = |n: Option<usize>, operand, actual| match n {
            None => Err(Error::InvalidShape),
            Some(e) if e == actual => Ok(()),
            Some(expected) => Err(Error::ShapeMismatch {
                operand,
                expected,
                actual,
            }),
        };
        let per_image = area.and_then(|a| a.checked_mul(self.channels));
        expected(
            per_image.and_then(|n| n.checked_mul(self.batch)),
            Operand::Input,
            input,
        )?;
        expected(
            self.batch.checked_mul(self.channels),
            Operand::Output,
            output,
        )
    }

    /// Elements averaged per output.
    pub fn count(&self) -> usize {
        self.height * self.width
    }
}

/// Quantization of an int8 global average (TFLite's int8 `Mean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GlobalAveragePoolI8Params {
    /// Input zero point, in `-128..=127`.
    pub input_zero_point: i32,
    /// Output zero point, in `-128..=127`.
    pub output_zero_point: i32,
    /// `input_scale / output_scale`.
    pub multiplier: QuantizedMultiplier,
}

impl GlobalAveragePoolI8Params {
    fn validate(&self) -> Result<(), Error> {
        if !(-128..=127).contains(&self.input_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::InputZeroPoint));
        }
        if !(-128..=127).contains(&self.output_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::OutputZeroPoint));
        }
        Ok(())
    }
}

type PoolI8Kernel = fn(&Pool2dGeometry, (i8, i8), &[i8], &mut [i8]);
type PoolF32Kernel = fn(&Pool2dGeometry, (f32, f32), &[f32], &mut [f32]);
type GlobalI8Kernel = fn(&GlobalPoolShape, &GlobalAveragePoolI8Params, &[i8], &mut [i8]);
type GlobalF32Kernel = fn(&GlobalPoolShape, &[f32], &mut [f32]);

/// int8 max pooling kernels, reference first. Each takes validated operands.
pub(crate) const MAX_I8_KERNELS: &[Kernel<PoolI8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::max_pool2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::max_pool2d_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::max_pool2d_i8,
    },
    #[cfg(all(target_arch = "arm", loam_arm_dsp))]
    Kernel {
        name: "dsp",
        isa: Isa::ArmDsp,
        run: arm::max_pool2d_i8_dsp,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::max_pool2d_i8,
    },
];

/// Float max pooling kernels, reference first.
pub(crate) const MAX_F32_KERNELS: &[Kernel<PoolF32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::max_pool2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::max_pool2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::max_pool2d_f32,
    },
];

/// int8 average pooling kernels, reference first.
pub(crate) const AVERAGE_I8_KERNELS: &[Kernel<PoolI8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::average_pool2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::average_pool2d_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::average_pool2d_i8,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::average_pool2d_i8,
    },
];

/// Float average pooling kernels, reference first.
pub(crate) const AVERAGE_F32_KERNELS: &[Kernel<PoolF32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::average_pool2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::average_pool2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::average_pool2d_f32,
    },
];

/// int8 global average kernels, reference first.
pub(crate) const GLOBAL_I8_KERNELS: &[Kernel<GlobalI8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::global_average_pool_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::global_average_pool_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::global_average_pool_i8,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::global_average_pool_i8,
    },
];

/// Float global average kernels, reference first.
pub(crate) const GLOBAL_F32_KERNELS: &[Kernel<GlobalF32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::global_average_pool_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::global_average_pool_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::global_average_pool_f32,
    },
];

/// The `channels` inputs of pixel `(b, y, x)`.
#[inline(always)]
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "arm", loam_arm_dsp)
))]
fn pixel<'a, T>(g: &Pool2dGeometry, input: &'a [T], b: usize, y: usize, x: usize) -> &'a [T] {
    &input[reference::at(g, b, y, x, 0)..][..g.channels]
}

/// `window` with its channel set to `c`.
#[inline(always)]
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    all(target_arch = "arm", loam_arm_dsp)
))]
fn channel(window: reference::Window, c: usize) -> reference::Window {
    (window.0, window.1, window.2, c)
}

fn check_activation<T: PartialOrd>(activation: (T, T)) -> Result<(), Error> {
    if activation.0 > activation.1 {
        return Err(Error::InvalidQuantization(QuantField::ActivationRange));
    }
    Ok(())
}

/// int16 max pooling (input and output share their quantization), then the clamp; the
/// reference only.
pub fn max_pool2d_i16(
    geometry: &Pool2dGeometry,
    activation: (i16, i16),
    input: &[i16],
    output: &mut [i16],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    check_activation(activation)?;
    reference::max_pool2d_i16(geometry, activation, input, output);
    Ok(())
}

/// int16 average pooling (input and output share their quantization), then the clamp; the
/// reference only.
pub fn average_pool2d_i16(
    geometry: &Pool2dGeometry,
    activation: (i16, i16),
    input: &[i16],
    output: &mut [i16],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    check_activation(activation)?;
    reference::average_pool2d_i16(geometry, activation, input, output);
    Ok(())
}

/// int8 max pooling (input and output share their quantization), then the clamp
/// `activation = (min, max)`. Every kernel gives the bytes of [`reference::max_pool2d_i8`].
pub fn max_pool2d_i8(
    geometry: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    check_activation(activation)?;
    (best(MAX_I8_KERNELS))(geometry, activation, input, output);
    Ok(())
}

/// Float max pooling, then the clamp `activation = (min, max)`.
pub fn max_pool2d_f32(
    geometry: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    crate::ops::layer::check_f32_clamp(activation)?;
    (best(MAX_F32_KERNELS))(geometry, activation, input, output);
    Ok(())
}

/// int8 average pooling over each window's real elements (input and output share their
/// quantization), then the clamp. Every kernel gives the bytes of
/// [`reference::average_pool2d_i8`].
pub fn average_pool2d_i8(
    geometry: &Pool2dGeometry,
    activation: (i8, i8),
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    check_activation(activation)?;
    (best(AVERAGE_I8_KERNELS))(geometry, activation, input, output);
    Ok(())
}

/// Float average pooling over each window's real elements, then the clamp. Fast paths agree
/// with [`reference::average_pool2d_f32`] within [`F32_TOLERANCE`] (exactly).
pub fn average_pool2d_f32(
    geometry: &Pool2dGeometry,
    activation: (f32, f32),
    input: &[f32],
    output: &mut [f32],
) -> Result<(), Error> {
    geometry.validate(input.len(), output.len())?;
    crate::ops::layer::check_f32_clamp(activation)?;
    (best(AVERAGE_F32_KERNELS))(geometry, activation, input, output);
    Ok(())
}

/// int8 mean over H and W, requantized to the output's scale. Every kernel gives the bytes of
/// [`reference::global_average_pool_i8`].
pub fn global_average_pool_i8(
    shape: &GlobalPoolShape,
    params: &GlobalAveragePoolI8Params,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    shape.validate(input.len(), output.len())?;
    params.validate()?;
    (best(GLOBAL_I8_KERNELS))(shape, params, input, output);
    Ok(())
}

/// Float mean over H and W. Fast paths agree with [`reference::global_average_pool_f32`]
/// within [`F32_TOLERANCE`] (exactly).
pub fn global_average_pool_f32(
    shape: &GlobalPoolShape,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), Error> {
    shape.validate(input.len(), output.len())?;
    (best(GLOBAL_F32_KERNELS))(shape, input, output);
    Ok(())
}

/// The `[N, H, W, C]` dimensions of an NHWC operand.
fn nhwc(operand: &crate::ops::Operand<'_>) -> Result<[usize; 4], OpProblem> {
    operand.shape_if(operand.record.shape.rank() == 4, "NHWC images are rank 4")?;
    Ok([0, 1, 2, 3].map(|i| operand.dim(i)))
}

/// The geometry of a model's Max/AveragePool2d op, checked against its operands.
fn geometry(node: &Node<'_>, attributes: &Pool2dAttributes) -> Result<Pool2dGeometry, OpProblem> {
    let input = node.input(0)?;
    let output = node.output(0)?;
    let [batch, height, width, channels] = nhwc(&input)?;
    let a = attributes;
    let g = Pool2dGeometry {
        batch,
        height,
        width,
        channels,
        kernel: (a.kernel[0] as usize, a.kernel[1] as usize),
        stride: (a.stride[0] as usize, a.stride[1] as usize),
        padding: Padding2d {
            top: a.padding[0] as usize,
            left: a.padding[1] as usize,
            bottom: a.padding[2] as usize,
            right: a.padding[3] as usize,
        },
    };
    let (oh, ow) = g.checked_output_size().map_err(OpProblem::Attribute)?;
    output.shape_if(
        output.record.shape.is(&[batch, oh, ow, channels]),
        "output is [N, out_h, out_w, C] for the kernel, stride and padding",
    )?;
    Ok(g)
}

/// The shape of a model's GlobalAveragePool op, checked against its operands.
fn global_shape(node: &Node<'_>) -> Result<GlobalPoolShape, OpProblem> {
    let input = node.input(0)?;
    let output = node.output(0)?;
    let [batch, height, width, channels] = nhwc(&input)?;
    input.shape_if(
        height * width <= MAX_WINDOW,
        "H * W exceeds the largest average (2^23 elements)",
    )?;
    output.shape_if(
        output.record.shape.is(&[batch, 1, 1, channels]),
        "output is [N, 1, 1, C]",
    )?;
    Ok(GlobalPoolShape {
        batch,
        height,
        width,
        channels,
    })
}

pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((1, 1), 1)?;
    let input = node.input(0)?;
    let output = node.output(0)?;
    let dtype = if kind == OpKind::GlobalAveragePool {
        input.expect_dtype(&[DType::F32, DType::I8])?
    } else {
        input.expect_dtype(&[DType::F32, DType::I8, DType::I16])?
    };
    output.expect_dtype(&[dtype])?;
    if kind == OpKind::GlobalAveragePool {
        let attributes: GlobalAveragePoolAttributes = node.attributes()?;
        global_shape(node)?;
        match (dtype, attributes.requant) {
            (DType::I8, Some([m, s])) => {
                input.per_tensor()?;
                output.per_tensor()?;
                if QuantizedMultiplier::new(m, s).is_err() {
                    return Err(OpProblem::Attribute("requant"));
                }
            }
            (DType::F32, None) => {}
            _ => return Err(OpProblem::Attribute("requant")),
        }
        return Ok(());
    }
    let attributes: Pool2dAttributes = node.attributes()?;
    attributes.activation.check()?;
    geometry(node, &attributes)?;
    if dtype != DType::F32 {
        let q = input.per_tensor()?;
        if output.per_tensor()? != q {
            return Err(OpProblem::Quantization(
                output.slot,
                "must equal the input's scale and zero point",
            ));
        }
    }
    Ok(())
}

pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let input = node.input(0).map_err(corrupt)?;
    let output = node.output(0).map_err(corrupt)?;
    if kind == OpKind::GlobalAveragePool {
        let attributes: GlobalAveragePoolAttributes = node.attributes().map_err(corrupt)?;
        let shape = global_shape(node).map_err(corrupt)?;
        return match (input.record.dtype, attributes.requant) {
            (DType::F32, None) => {
                let x = ctx.read(&input)?;
                // SAFETY: validation keeps the output clear of the input.
                let y = unsafe { ctx.write(&output)? };
                global_average_pool_f32(&shape, x, y)
            }
            (DType::I8, Some([m, s])) => {
                let params = GlobalAveragePoolI8Params {
                    input_zero_point: input.record.quantization.zero_point(),
                    output_zero_point: output.record.quantization.zero_point(),
                    multiplier: QuantizedMultiplier::new(m, s)?,
                };
                let x = ctx.read(&input)?;
                // SAFETY: validation keeps the output clear of the input.
                let y = unsafe { ctx.write(&output)? };
                global_average_pool_i8(&shape, &params, x, y)
            }
            _ => Err(Error::CorruptModel),
        };
    }
    let attributes: Pool2dAttributes = node.attributes().map_err(corrupt)?;
    let g = geometry(node, &attributes).map_err(corrupt)?;
    let max = kind == OpKind::MaxPool2d;
    match input.record.dtype {
        DType::F32 => {
            let activation = layer::f32_activation(attributes.activation);
            let x = ctx.read(&input)?;
            // SAFETY: validation keeps the output clear of the input.
            let y = unsafe { ctx.write(&output)? };
            if max {
                max_pool2d_f32(&g, activation, x, y)
            } else {
                average_pool2d_f32(&g, activation, x, y)
            }
        }
        DType::I8 => {
            let activation = layer::i8_activation(&output, attributes.activation);
            let x = ctx.read(&input)?;
            // SAFETY: validation keeps the output clear of the input.
            let y = unsafe { ctx.write(&output)? };
            if max {
                max_pool2d_i8(&g, activation, x, y)
            } else {
                average_pool2d_i8(&g, activation, x, y)
            }
        }
        DType::I16 => {
            let activation = layer::i16_activation(&output, attributes.activation);
            let x = ctx.read(&input)?;
            // SAFETY: validation keeps the output clear of the input.
            let y = unsafe { ctx.write(&output)? };
            if max {
                max_pool2d_i16(&g, activation, x, y)
            } else {
                average_pool2d_i16(&g, activation, x, y)
            }
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "alloc")]
mod build {
    use super::{GlobalAveragePoolAttributes, Pool2dAttributes};
    use crate::fixed_point::QuantizedMultiplier;
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
    use crate::ops::{FusedActivation, OpKind};
    use crate::quant::QuantParams;
    use crate::tensor::DType;

    /// Floor-mode output extent, lenient: an impossible geometry gives 1 and is then refused,
    /// with the attribute named, by the op's load-time check.
    fn extent(input: usize, kernel: usize, stride: usize, before: usize, after: usize) -> usize {
        input
            .saturating_add(before)
            .saturating_add(after)
            .saturating_sub(kernel)
            / stride.max(1)
            + 1
    }

    fn nhwc(b: &ModelBuilder, x: TensorId) -> Result<[usize; 4], BuildError> {
        let shape = b.shape(x).ok_or(BuildError::UnknownTensor(x))?;
        Ok([0, 1, 2, 3].map(|i| shape.dim(i)))
    }

    fn to_u32(name: &str, values: &[usize]) -> Result<[u32; 4], BuildError> {
        let mut out = [0u32; 4];
        for (o, &v) in out.iter_mut().zip(values) {
            *o = u32::try_from(v).map_err(|_| BuildError::BadShape(name.into()))?;
        }
        Ok(out)
    }

    impl ModelBuilder {
        #[allow(clippy::too_many_arguments)]
        fn pool2d(
            &mut self,
            kind: OpKind,
            name: &str,
            x: TensorId,
            kernel: (usize, usize),
            stride: (usize, usize),
            padding: [usize; 4],
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let [n, h, w, c] = nhwc(self, x)?;
            let oh = extent(h, kernel.0, stride.0, padding[0], padding[2]);
            let ow = extent(w, kernel.1, stride.1, padding[1], padding[3]);
            let dtype = self.dtype(x).ok_or(BuildError::UnknownTensor(x))?;
            let quantization = self
                .quantization(x)
                .cloned()
                .ok_or(BuildError::UnknownTensor(x))?;
            let out = self.tensor(name, dtype, &[n, oh, ow, c], quantization)?;
            let k = to_u32(name, &[kernel.0, kernel.1])?;
            let s = to_u32(name, &[stride.0, stride.1])?;
            let attributes = Pool2dAttributes {
                kernel: [k[0], k[1]],
                stride: [s[0], s[1]],
                padding: to_u32(name, &padding)?,
                activation,
            };
            self.op(kind, name, &[Some(x)], &[out], &attributes)?;
            Ok(out)
        }

        /// Appends a 2-D max pooling over the NHWC tensor `x` (float or int8; the output
        /// keeps the input's quantization). `kernel` and `stride` are `(height, width)`,
        /// `padding` is `[top, left, bottom, right]`. Returns the output tensor.
        pub fn max_pool2d(
            &mut self,
            name: &str,
            x: TensorId,
            kernel: (usize, usize),
            stride: (usize, usize),
            padding: [usize; 4],
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.pool2d(
                OpKind::MaxPool2d,
                name,
                x,
                kernel,
                stride,
                padding,
                activation,
            )
        }

        /// Appends a 2-D average pooling (padding excluded from each average) over the NHWC
        /// tensor `x`; arguments as for [`ModelBuilder::max_pool2d`].
        pub fn average_pool2d(
            &mut self,
            name: &str,
            x: TensorId,
            kernel: (usize, usize),
            stride: (usize, usize),
            padding: [usize; 4],
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            self.pool2d(
                OpKind::AveragePool2d,
                name,
                x,
                kernel,
                stride,
                padding,
                activation,
            )
        }

        /// Appends a mean over H and W of the NHWC tensor `x`, giving `[N, 1, 1, C]` of the
        /// input's type. For int8, `output` is the output's quantization (the input's when
        /// `None`) and the requantization multiplier is computed here as TFLite's `MEAN`
        /// does; for float it is ignored.
        pub fn global_average_pool(
            &mut self,
            name: &str,
            x: TensorId,
            output: Option<QuantParams>,
        ) -> Result<TensorId, BuildError> {
            let [n, _, _, c] = nhwc(self, x)?;
            let dtype = self.dtype(x).ok_or(BuildError::UnknownTensor(x))?;
            let (quantization, requant) = if dtype == DType::I8 {
                let input_q = self.per_tensor(x).ok_or(BuildError::UnknownTensor(x))?;
                let out_q = output.unwrap_or(input_q);
                let real = f64::from(input_q.scale) / f64::from(out_q.scale);
                let m = QuantizedMultiplier::from_real(real).unwrap_or_default();
                (
                    QuantSpec::PerTensor {
                        scale: out_q.scale,
                        zero_point: out_q.zero_point,
                    },
                    Some(m.to_raw()),
                )
            } else {
                (QuantSpec::None, None)
            };
            let out = self.tensor(name, dtype, &[n, 1, 1, c], quantization)?;
            self.op(
                OpKind::GlobalAveragePool,
                name,
                &[Some(x)],
                &[out],
                &GlobalAveragePoolAttributes { requant },
            )?;
            Ok(out)
        }
    }
}
