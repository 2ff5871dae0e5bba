//! Depthwise 2-D convolution, NHWC (TFLite `DEPTHWISE_CONV_2D`; ONNX `Conv` with
//! `group == in_channels`), with a channel multiplier: output channel `c * multiplier + m`
//! filters input channel `c`.
//!
//! Filters are `[1][kernel_h][kernel_w][out_channels]` (TFLite's layout): for each kernel tap
//! the weights of all output channels are contiguous, like the channels of an NHWC pixel, so
//! the fast paths vectorize across channels.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(all(target_arch = "arm", loam_arm_dsp))]
mod arm;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
mod arm_neon;
pub mod reference;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_vnni;
#[cfg(target_arch = "x86_64")]
mod x86_vnni_quad_rows;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem};
use crate::isa::{Isa, Kernel, best};
use crate::ops::conv2d::{ConvGeometry, output_size};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
use crate::ops::lanes;
use crate::ops::layer::{self, LayerOperands};
use crate::ops::{Ctx, FloatWeight, FusedActivation, Node, RequantizeParams, Tolerance};
use crate::tensor::DType;

/// Attributes of a `DepthwiseConv2d` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DepthwiseConv2dAttributes {
    /// Vertical and horizontal stride.
    pub stride: [u16; 2],
    /// Vertical and horizontal dilation.
    pub dilation: [u16; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [u16; 4],
    /// Output channels per input channel.
    pub depth_multiplier: u16,
    /// Fused activation.
    pub activation: FusedActivation,
}

/// Calls `visit(pixel, window)` for every output pixel in order (`pixel` counts them); the
/// [`Window`] walks that pixel's taps. The walk the channel-vectorized kernels share; always
/// inlined, so that their per-tap code is compiled with their target features.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
#[inline(always)]
pub(crate) fn for_each_window(g: &ConvGeometry, mut visit: impl FnMut(usize, Window<'_>)) {
    let mut pixel = 0;
    for b in 0..g.batch {
        for oy in 0..g.out_height {
            for ox in 0..g.out_width {
                visit(pixel, Window { g, b, oy, ox });
                pixel += 1;
            }
        }
    }
}

/// One output pixel's receptive field.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
#[derive(Clone, Copy)]
pub(crate) struct Window<'g> {
    g: &'g ConvGeometry,
    b: usize,
    oy: usize,
    ox: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
impl Window<'_> {
    /// The taps inside the image as (input, filter) offsets of their channel 0 in NHWC
    /// tensors of `channels` channels, written into `buf`, so a kernel walks the window once
    /// per pixel rather than once per group of channels. The window must have at most
    /// [`MAX_STACK_TAPS`] taps.
    #[inline(always)]
    pub(crate) fn offsets(
        self,
        channels: usize,
        buf: &mut [(usize, usize); MAX_STACK_TAPS],
    ) -> &[(usize, usize)] {
        let mut n = 0;
        self.taps(|x, tap| {
            buf[n] = (x * channels, tap * channels);
            n += 1;
        });
        &buf[..n]
    }

    /// The input pixel under tap (0, 0) when the whole window lies inside the image (the
    /// other taps then sit at fixed offsets from it), or `None` when any tap is in the
    /// padding.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn interior_origin(self) -> Option<usize> {
        let g = self.g;
        let top = (self.oy * g.stride_height) as i64 - g.pad_top as i64;
        let left = (self.ox * g.stride_width) as i64 - g.pad_left as i64;
        let bottom = top + ((g.kernel_height - 1) * g.dilation_height) as i64;
        let right = left + ((g.kernel_width - 1) * g.dilation_width) as i64;
        (top >= 0 && left >= 0 && bottom < g.in_height as i64 && right < g.in_width as i64)
            .then(|| (self.b * g.in_height + top as usize) * g.in_width + left as usize)
    }

    /// Calls `tap(input_pixel)` for every tap of the window in the filter's (ky, kx) order,
    /// with `None` for the taps in the padding: for kernels that run a fixed tap sequence
    /// and feed the padding a neutral value.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn every_tap(self, mut tap: impl FnMut(Option<usize>)) {
        let g = self.g;
        for ky in 0..g.kernel_height {
            let row = g.input_row(self.oy, ky);
            for kx in 0..g.kernel_width {
                tap(row
                    .zip(g.input_col(self.ox, kx))
                    .map(|(iy, ix)| (self.b * g.in_height + iy) * g.in_width + ix));
            }
        }
    }

    /// Calls `tap(input_pixel, tap)` for every tap inside the image (the padding
    /// contributes nothing): `input_pixel` indexes the input's pixels, `tap` the filter's.
    #[inline(always)]
    pub(crate) fn taps(self, mut tap: impl FnMut(usize, usize)) {
        let g = self.g;
        for ky in 0..g.kernel_height {
            let Some(iy) = g.input_row(self.oy, ky) else {
                continue;
            };
            for kx in 0..g.kernel_width {
                let Some(ix) = g.input_col(self.ox, kx) else {
                    continue;
                };
                tap(
                    (self.b * g.in_height + iy) * g.in_width + ix,
                    ky * g.kernel_width + kx,
                );
            }
        }
    }
}

/// Most taps whose offsets the fast paths keep on the stack for a pixel (an 8x8 window);
/// larger windows use the reference. It also keeps the 16x8 fast paths' i32 lanes exact:
/// each product is at most 2^22 in magnitude (|x| <= 2^15, |w| <= 2^7), so even 511 taps
/// would stay inside an i32 and equal the reference's i64 sum.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
pub(crate) const MAX_STACK_TAPS: usize = 64;

/// Whether a channel-vectorized fast path takes this layer: multiplier 1 and a window of at
/// most [`MAX_STACK_TAPS`] taps (the others use their ISA's fallback).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
pub(crate) fn by_eights_applies(g: &ConvGeometry) -> bool {
    g.out_channels == g.in_channels && g.kernel_height * g.kernel_width <= MAX_STACK_TAPS
}

/// The vector half of a [`depthwise_by_eights`] kernel: an accumulator started at `zero`,
/// advanced tap by tap with `mac(acc, x, w)` over eight channels, read out by `lanes`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
pub(crate) struct Eights<A, M, L> {
    zero: A,
    mac: M,
    lanes: L,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
impl<A, M, L> Eights<A, M, L> {
    /// Groups the three (a function, so the closures' argument types are inferred).
    #[inline(always)]
    pub(crate) fn new<X, W, S>(zero: A, mac: M, lanes: L) -> Self
    where
        M: Fn(A, &[X; 8], &[W; 8]) -> A,
        L: Fn(A) -> [S; 8],
    {
        Eights { zero, mac, lanes }
    }
}

/// The loop the channel-vectorized depthwise fast paths share (the layer must pass
/// [`by_eights_applies`]): for each output pixel, eight channels per step through `vector`,
/// the last `channels % 8` channels by `scalar(taps, channel)`, and every channel's sum
/// finished by `store(sum, channel)`. `taps` are the pixel's (input, filter) offsets of
/// channel 0, in the reference's (ky, kx) order. Always inlined, so that the closures are
/// compiled with the calling fast path's target features.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
#[inline(always)]
pub(crate) fn depthwise_by_eights<X, W, A: Copy, S, O>(
    g: &ConvGeometry,
    (input, filter): (&[X], &[W]),
    output: &mut [O],
    vector: Eights<A, impl Fn(A, &[X; 8], &[W; 8]) -> A, impl Fn(A) -> [S; 8]>,
    scalar: impl Fn(&[(usize, usize)], usize) -> S,
    store: impl Fn(S, usize) -> O,
) {
    let c = g.in_channels;
    let mut offsets = [(0usize, 0usize); MAX_STACK_TAPS];
    for_each_window(g, |pixel, window| {
        let taps = window.offsets(c, &mut offsets);
        let out = &mut output[pixel * c..(pixel + 1) * c];
        let mut c0 = 0;
        while c0 + 8 <= c {
            let mut acc = vector.zero;
            for &(x, w) in taps {
                acc = (vector.mac)(acc, lanes(input, x + c0), lanes(filter, w + c0));
            }
            for (l, sum) in (vector.lanes)(acc).into_iter().enumerate() {
                out[c0 + l] = store(sum, c0 + l);
            }
            c0 += 8;
        }
        for (o, out) in out.iter_mut().enumerate().skip(c0) {
            *out = store(scalar(taps, o), o);
        }
    });
}

/// The 16x8 fast paths' loop: [`depthwise_by_eights`] with i32 lanes (exact, see
/// [`MAX_STACK_TAPS`]) widened to i64 for the bias and TFLite's 64-bit requantization; the
/// reference where it does not apply.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
#[inline(always)]
pub(crate) fn depthwise_i16_by_eights<A: Copy>(
    op: &DepthwiseConv2dI16<'_>,
    output: &mut [i16],
    vector: Eights<A, impl Fn(A, &[i16; 8], &[i8; 8]) -> A, impl Fn(A) -> [i32; 8]>,
) {
    if !by_eights_applies(&op.geometry) {
        return reference::depthwise_conv2d_i16(op, output);
    }
    depthwise_by_eights(
        &op.geometry,
        (op.input, op.filter),
        output,
        vector,
        |taps, o| {
            taps.iter().fold(0i32, |acc, &(x, w)| {
                acc + i32::from(op.input[x + o]) * i32::from(op.filter[w + o])
            })
        },
        |sum, o| {
            let acc = i64::from(sum).wrapping_add(op.bias.map_or(0, |bias| i64::from(bias[o])));
            op.params.output(acc, o)
        },
    );
}

/// Checks a depthwise geometry: groups equal the input channels and the output channels are
/// a multiple of them.
fn validate_geometry(g: &ConvGeometry) -> Result<(), Error> {
    g.validate()?;
    if g.groups != g.in_channels {
        return Err(Error::InvalidShape);
    }
    Ok(())
}

/// The operands of an int8 depthwise convolution. `geometry.groups` must equal
/// `geometry.in_channels`.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv2dI8<'a> {
    /// Dimensions.
    pub geometry: ConvGeometry,
    /// Requantization.
    pub params: RequantizeParams<'a>,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [i8],
    /// `[k_h][k_w][out_c]`.
    pub filter: &'a [i8],
    /// `[out_c]`, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl DepthwiseConv2dI8<'_> {
    /// Checks every length and parameter.
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        let g = &self.geometry;
        validate_geometry(g)?;
        g.check_lengths(
            self.input.len(),
            (
                g.kernel_height * g.kernel_width * g.out_channels,
                self.filter.len(),
            ),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(g.out_channels)
    }
}

/// The operands of a 16x8 depthwise convolution: int16 activations (zero point 0), int8
/// filter.
#[derive(Debug)]
pub struct DepthwiseConv2dI16<'a> {
    /// Dimensions.
    pub geometry: ConvGeometry,
    /// Requantization.
    pub params: crate::ops::Requantize16Params<'a>,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [i16],
    /// `[k_h][k_w][out_c]`.
    pub filter: &'a [i8],
    /// `[out_c]`, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl DepthwiseConv2dI16<'_> {
    /// Checks every length and parameter.
    pub fn validate(&self, output: &[i16]) -> Result<(), Error> {
        let g = &self.geometry;
        validate_geometry(g)?;
        g.check_lengths(
            self.input.len(),
            (
                g.kernel_height * g.kernel_width * g.out_channels,
                self.filter.len(),
            ),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(g.out_channels)
    }
}

/// A 16x8 depthwise kernel.
#[doc(hidden)]
pub type I16Kernel = fn(&DepthwiseConv2dI16<'_>, &mut [i16]);

/// The 16x8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side. Each expects a validated operation.
#[doc(hidden)]
pub fn i16_kernels() -> impl Iterator<Item = (&'static str, I16Kernel)> {
    crate::isa::runnable(I16_KERNELS)
}

/// The 16x8 kernels of this build, reference first.
pub(crate) const I16_KERNELS: &[Kernel<I16Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::depthwise_conv2d_i16,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::depthwise_conv2d_i16,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::depthwise_conv2d_i16,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::depthwise_conv2d_i16,
    },
];

/// Runs a 16x8 depthwise convolution with the fastest kernel this build has, after
/// validating the operands. Every kernel gives exactly the values of
/// [`reference::depthwise_conv2d_i16`].
pub fn depthwise_conv2d_i16(op: &DepthwiseConv2dI16<'_>, output: &mut [i16]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I16_KERNELS))(op, output);
    Ok(())
}

/// The operands of a float depthwise convolution; the filter is `f32` or `f16`
/// ([`FloatWeight`]), the arithmetic `f32` either way.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv2dF32<'a, W: FloatWeight = f32> {
    /// Dimensions (`groups == in_channels`).
    pub geometry: ConvGeometry,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [f32],
    /// `[k_h][k_w][out_c]`.
    pub filter: &'a [W],
    /// `[out_c]`, or `None`.
    pub bias: Option<&'a [f32]>,
    /// Output clamp.
    pub activation: (f32, f32),
}

impl<W: FloatWeight> DepthwiseConv2dF32<'_, W> {
    /// Checks every length.
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        let g = &self.geometry;
        validate_geometry(g)?;
        g.check_lengths(
            self.input.len(),
            (
                g.kernel_height * g.kernel_width * g.out_channels,
                self.filter.len(),
            ),
            output.len(),
            self.bias.map(<[f32]>::len),
        )?;
        layer::check_f32_clamp(self.activation)
    }
}

/// An int8 depthwise kernel over validated operands.
#[doc(hidden)]
pub type I8Kernel = fn(&DepthwiseConv2dI8<'_>, &mut [i8]);
/// A float depthwise kernel over validated operands, for filters of type `W`.
pub type F32Kernel<W = f32> = fn(&DepthwiseConv2dF32<'_, W>, &mut [f32]);

/// The f16-filter kernels of this build, reference first (32-bit NEON has none yet).
pub(crate) const F16_KERNELS: &[Kernel<F32Kernel<half::f16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::depthwise_conv2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::depthwise_conv2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::depthwise_conv2d_f32_neon,
    },
];

/// The float kernels this CPU can run, by name (reference first), for benchmarks.
#[doc(hidden)]
pub fn f32_kernels() -> impl Iterator<Item = (&'static str, F32Kernel)> {
    crate::isa::runnable(F32_KERNELS)
}

/// The f16-filter kernels this CPU can run, by name (reference first), for benchmarks.
#[doc(hidden)]
pub fn f16_kernels() -> impl Iterator<Item = (&'static str, F32Kernel<half::f16>)> {
    crate::isa::runnable(F16_KERNELS)
}

/// The int8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side. Each expects a validated operation.
#[doc(hidden)]
pub fn i8_kernels() -> impl Iterator<Item = (&'static str, I8Kernel)> {
    crate::isa::runnable(I8_KERNELS)
}

/// The int8 kernels of this build, reference first.
pub(crate) const I8_KERNELS: &[Kernel<I8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::depthwise_conv2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::depthwise_conv2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx512vnni",
        isa: Isa::Avx512Vnni,
        run: x86_vnni::depthwise_conv2d_i8,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::depthwise_conv2d_i8_neon,
    },
    #[cfg(all(target_arch = "arm", loam_arm_dsp))]
    Kernel {
        name: "dsp",
        isa: Isa::ArmDsp,
        run: arm::depthwise_conv2d_i8_dsp,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::depthwise_conv2d_i8,
    },
];

/// The float kernels of this build, reference first.
pub(crate) const F32_KERNELS: &[Kernel<F32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::depthwise_conv2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::depthwise_conv2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::depthwise_conv2d_f32_neon,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::depthwise_conv2d_f32,
    },
];

/// How far a float fast path may drift from the reference.
pub const F32_TOLERANCE: Tolerance = Tolerance::DotProduct;

/// Runs an int8 depthwise convolution with the fastest kernel this build has, after
/// validating the operands; every kernel gives the bytes of
/// [`reference::depthwise_conv2d_i8`].
pub fn depthwise_conv2d_i8(op: &DepthwiseConv2dI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I8_KERNELS))(op, output);
    Ok(())
}

/// Runs a float depthwise convolution with the fastest kernel this build has; fast paths agree
/// with [`reference::depthwise_conv2d_f32`] within [`F32_TOLERANCE`].
pub fn depthwise_conv2d_f32(op: &DepthwiseConv2dF32<'_>, output: &mut [f32]) -> Result<(), Error> {
    op.validate(output)?;
    (best(F32_KERNELS))(op, output);
    Ok(())
}

/// [`depthwise_conv2d_f32`] with an f16 filter, widened as it is loaded: the result is the
/// f32 layer's with the widened filter, within [`F32_TOLERANCE`].
pub fn depthwise_conv2d_f16(
    op: &DepthwiseConv2dF32<'_, half::f16>,
    output: &mut [f32],
) -> Result<(), Error> {
    op.validate(output)?;
    (best(F16_KERNELS))(op, output);
    Ok(())
}

fn geometry(
    operands: &LayerOperands<'_>,
    a: &DepthwiseConv2dAttributes,
) -> Result<ConvGeometry, OpProblem> {
    let LayerOperands {
        input,
        weights: filter,
        output,
    } = *operands;
    input.shape_if(
        input.record.shape.rank() == 4,
        "input is [batch, height, width, channels]",
    )?;
    filter.shape_if(
        filter.record.shape.rank() == 4 && filter.dim(0) == 1,
        "filter is [1, kernel_h, kernel_w, out_channels]",
    )?;
    let m = usize::from(a.depth_multiplier);
    if m == 0 {
        return Err(OpProblem::Attribute("depth_multiplier is 0"));
    }
    let [sh, sw] = a.stride.map(usize::from);
    let [dh, dw] = a.dilation.map(usize::from);
    if sh == 0 || sw == 0 {
        return Err(OpProblem::Attribute("stride is 0"));
    }
    if dh == 0 || dw == 0 {
        return Err(OpProblem::Attribute("dilation is 0"));
    }
    let [pt, pl, pb, pr] = a.padding.map(usize::from);
    let (n, h, w, c) = (input.dim(0), input.dim(1), input.dim(2), input.dim(3));
    let (kh, kw, oc) = (filter.dim(1), filter.dim(2), filter.dim(3));
    filter.shape_if(
        c.checked_mul(m) == Some(oc),
        "out_channels differ from in_channels * depth_multiplier",
    )?;
    let (Some(oh), Some(ow)) = (
        output_size(h, kh, sh, dh, pt, pb),
        output_size(w, kw, sw, dw, pl, pr),
    ) else {
        return Err(OpProblem::Shape(
            filter.slot,
            "the dilated kernel is larger than the padded input",
        ));
    };
    output.shape_if(
        output.record.shape.is(&[n, oh, ow, oc]),
        "output is not [batch, out_h, out_w, out_channels] for these attributes",
    )?;
    let g = ConvGeometry {
        batch: n,
        in_height: h,
        in_width: w,
        in_channels: c,
        out_height: oh,
        out_width: ow,
        out_channels: oc,
        kernel_height: kh,
        kernel_width: kw,
        stride_height: sh,
        stride_width: sw,
        dilation_height: dh,
        dilation_width: dw,
        pad_top: pt,
        pad_left: pl,
        groups: c,
    };
    validate_geometry(&g).map_err(|_| OpProblem::Shape(input.slot, "dimensions out of range"))?;
    Ok(g)
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((2, 4), 1)?;
    let a: DepthwiseConv2dAttributes = node.attributes()?;
    a.activation.check()?;
    let operands = LayerOperands::read(node)?;
    let g = geometry(&operands, &a)?;
    let dtype = operands
        .input
        .expect_dtype(&[DType::F32, DType::I8, DType::I16])?;
    layer::check_operands(node, &operands, dtype, g.out_channels, 3)
}

pub(crate) fn scratch_bytes(_node: &Node<'_>) -> Result<usize, OpProblem> {
    Ok(0)
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let a: DepthwiseConv2dAttributes = node.attributes().map_err(corrupt)?;
    let operands = LayerOperands::read(node).map_err(corrupt)?;
    let geometry = geometry(&operands, &a).map_err(corrupt)?;
    let LayerOperands {
        input,
        weights: filter,
        output,
    } = operands;
    match (input.record.dtype, filter.record.dtype) {
        (DType::F32, DType::F16) => {
            let op = DepthwiseConv2dF32 {
                geometry,
                input: ctx.read(&input)?,
                filter: node.constant::<half::f16>(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(a.activation),
            };
            // SAFETY: validation keeps the output clear of every input.
            depthwise_conv2d_f16(&op, unsafe { ctx.write(&output)? })
        }
        (DType::F32, _) => {
            let op = DepthwiseConv2dF32 {
                geometry,
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(a.activation),
            };
            // SAFETY: validation keeps the output clear of every input.
            depthwise_conv2d_f32(&op, unsafe { ctx.write(&output)? })
        }
        (DType::I8, _) => {
            let q = layer::i8_requant(ctx, &input, &output, a.activation)?;
            let op = DepthwiseConv2dI8 {
                geometry,
                params: RequantizeParams::from_requant(&q),
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
            };
            // SAFETY: validation keeps the output clear of every input.
            depthwise_conv2d_i8(&op, unsafe { ctx.write(&output)? })
        }
        (DType::I16, _) => {
            let op = DepthwiseConv2dI16 {
                geometry,
                params: layer::i16_requant(ctx, &output, a.activation)?,
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
            };
            // SAFETY: validation keeps the output clear of every input.
            depthwise_conv2d_i16(&op, unsafe { ctx.write(&output)? })
        }
        _ => Err(Error::CorruptModel),
    }
}

#[cfg(feature = "alloc")]
mod build {
    use super::DepthwiseConv2dAttributes;
    use crate::format::writer::{BuildError, ModelBuilder, QuantizedWeights, TensorId};
    use crate::ops::conv2d::ConvSpec;
    use crate::ops::layer::build::{Layer, Precision};
    use crate::ops::{FusedActivation, OpKind};
    use crate::quant::QuantParams;

    fn attributes(
        spec: &ConvSpec,
        multiplier: usize,
        activation: FusedActivation,
    ) -> Result<DepthwiseConv2dAttributes, BuildError> {
        let conv = spec.attributes(activation)?;
        Ok(DepthwiseConv2dAttributes {
            stride: conv.stride,
            dilation: conv.dilation,
            padding: conv.padding,
            depth_multiplier: u16::try_from(multiplier)
                .map_err(|_| BuildError::BadShape("depth multiplier".into()))?,
            activation,
        })
    }

    fn dims(
        b: &ModelBuilder,
        input: TensorId,
        spec: &ConvSpec,
        name: &str,
    ) -> Result<([usize; 4], usize, usize), BuildError> {
        let shape = b.shape(input).ok_or(BuildError::UnknownTensor(input))?;
        let channels = shape.dim(3);
        let out = spec
            .output_dims(shape.dims())
            .ok_or_else(|| BuildError::BadShape(name.into()))?;
        let multiplier = spec.out_channels / channels.max(1);
        Ok((out, channels, multiplier))
    }

    /// Appends a depthwise convolution of the given precision; the filter is
    /// `[k_h][k_w][out_c]`.
    fn append(
        b: &mut ModelBuilder,
        name: &str,
        input: TensorId,
        spec: ConvSpec,
        activation: FusedActivation,
        precision: Precision<'_>,
    ) -> Result<TensorId, BuildError> {
        let (out_dims, _, multiplier) = dims(b, input, &spec, name)?;
        Layer {
            kind: OpKind::DepthwiseConv2d,
            name,
            input,
            precision,
            weight_dims: &[1, spec.kernel.0, spec.kernel.1, spec.out_channels],
            channel_axis: 3,
            output_dims: &out_dims,
            attributes: &attributes(&spec, multiplier, activation)?,
        }
        .append(b)
    }

    impl ModelBuilder {
        /// Appends a float depthwise convolution; `spec.out_channels` is the input channels
        /// times the multiplier and `filter` is `[k_h][k_w][out_c]`.
        pub fn depthwise_conv2d_f32(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            filter: &[f32],
            bias: Option<&[f32]>,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::F32 {
                weights: filter,
                bias,
            };
            append(self, name, input, spec, activation, precision)
        }

        /// [`ModelBuilder::depthwise_conv2d_f32`] with the filter stored as f16 (rounded to nearest):
        /// half the flash, the same f32 arithmetic on the rounded weights.
        pub fn depthwise_conv2d_f16(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            filter: &[f32],
            bias: Option<&[f32]>,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::F16 {
                weights: filter,
                bias,
            };
            append(self, name, input, spec, activation, precision)
        }

        /// Appends a 16x8 depthwise convolution whose weights are integers already (as for
        /// [`ModelBuilder::depthwise_conv2d_i8_quantized`]), kept bit for bit.
        pub fn depthwise_conv2d_i16_quantized(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            weights: QuantizedWeights<'_>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::Quantized16 { weights, output };
            append(self, name, input, spec, activation, precision)
        }

        /// Appends a 16x8 depthwise convolution from float weights (quantized per output
        /// channel): `input` is int16 with zero point 0, as is `output`.
        #[allow(clippy::too_many_arguments)]
        pub fn depthwise_conv2d_i16(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            filter: &[f32],
            bias: Option<&[f32]>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::I16 {
                weights: filter,
                bias,
                output,
            };
            append(self, name, input, spec, activation, precision)
        }

        /// Appends an int8 depthwise convolution from float weights (quantized per output
        /// channel, the filter's last axis).
        #[allow(clippy::too_many_arguments)]
        pub fn depthwise_conv2d_i8(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            filter: &[f32],
            bias: Option<&[f32]>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::I8 {
                weights: filter,
                bias,
                output,
            };
            append(self, name, input, spec, activation, precision)
        }

        /// Appends an int8 depthwise convolution whose weights are integers already
        /// (`[k_h][k_w][out_c]`, one scale per output channel), kept bit for bit.
        pub fn depthwise_conv2d_i8_quantized(
            &mut self,
            name: &str,
            input: TensorId,
            spec: ConvSpec,
            weights: QuantizedWeights<'_>,
            output: QuantParams,
            activation: FusedActivation,
        ) -> Result<TensorId, BuildError> {
            let precision = Precision::Quantized { weights, output };
            append(self, name, input, spec, activation, precision)
        }
    }
}
