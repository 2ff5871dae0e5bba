//! 2-D convolution, NHWC (TFLite `CONV_2D`, ONNX `Conv` after layout conversion), with
//! stride, dilation, asymmetric padding and groups; a 1-D convolution is `H = 1`.
//!
//! Filters are `[out_channels][kernel_h][kernel_w][in_channels / groups]` (TFLite's OHWI), so
//! each output channel's weights are one contiguous run in the same order as an input patch
//! gathered row by row: the fast paths gather patches (im2col, two output pixels at a time)
//! and take dot products. Pointwise convolutions (1x1, stride 1, no padding, one group) need no
//! gathering at all: they are fully-connected layers over the pixels.

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
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_amx_implicit;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vbmi;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni;

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem, Operand};
use crate::isa::{Isa, Kernel, best};
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
use crate::ops::fully_connected::{self, FullyConnectedI16};
use crate::ops::fully_connected::{FullyConnectedF32, FullyConnectedI8, FullyConnectedShape};
use crate::ops::layer::{self, LayerOperands, check_len};
use crate::ops::{Ctx, FloatWeight, FusedActivation, Node, RequantizeParams, Tolerance};
use crate::tensor::DType;

/// Attributes of a `Conv2d` op.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conv2dAttributes {
    /// Vertical and horizontal stride.
    pub stride: [u16; 2],
    /// Vertical and horizontal dilation.
    pub dilation: [u16; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [u16; 4],
    /// Channel groups (1 for an ordinary convolution).
    pub groups: u16,
    /// Fused activation.
    pub activation: FusedActivation,
}

/// The dimensions of a convolution over NHWC tensors. Depthwise convolution uses it too,
/// with `groups == in_channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConvGeometry {
    /// Images.
    pub batch: usize,
    /// Input rows.
    pub in_height: usize,
    /// Input columns.
    pub in_width: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output rows.
    pub out_height: usize,
    /// Output columns.
    pub out_width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel rows.
    pub kernel_height: usize,
    /// Kernel columns.
    pub kernel_width: usize,
    /// Vertical stride.
    pub stride_height: usize,
    /// Horizontal stride.
    pub stride_width: usize,
    /// Vertical dilation.
    pub dilation_height: usize,
    /// Horizontal dilation.
    pub dilation_width: usize,
    /// Rows of padding above the image.
    pub pad_top: usize,
    /// Columns of padding left of the image.
    pub pad_left: usize,
    /// Channel groups; both channel counts are multiples of it.
    pub groups: usize,
}

/// Output length of one spatial dimension, or `None` if the dilated kernel does not fit in
/// the padded input.
pub fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
    pad_after: usize,
) -> Option<usize> {
    let effective = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = input.checked_add(pad_before)?.checked_add(pad_after)?;
    if stride == 0 || padded < effective {
        return None;
    }
    Some((padded - effective) / stride + 1)
}

/// Which padded input row each of a kernel's row slots holds, for the x86 kernels that copy
/// each input row once into a slot and share it between the output rows that read it. Row
/// `v` of the padded input (counting the top padding) goes to slot `v % kernel_height` when
/// the kernel rows of one output row land in distinct slots that way (the dilation is prime
/// to the kernel height); otherwise each kernel row has its own slot.
#[cfg(target_arch = "x86_64")]
pub(crate) struct RowSlots {
    tags: [Option<(usize, usize)>; RowSlots::MAX],
    shared: bool,
}

/// The greatest common divisor.
#[cfg(target_arch = "x86_64")]
pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// What a slot needs before an output row reads it ([`RowSlots::claim`]).
#[cfg(target_arch = "x86_64")]
pub(crate) struct SlotFill {
    /// The image row to copy in, or `None` for a row of padding.
    pub(crate) image_row: Option<usize>,
    /// What the slot held before.
    pub(crate) held: Held,
}

/// What a slot held before its [`SlotFill`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Nothing,
    Image,
    Padding,
}

#[cfg(target_arch = "x86_64")]
impl RowSlots {
    /// Most slots (kernel rows).
    pub(crate) const MAX: usize = 32;

    /// Empty slots for a layer of `g`, whose kernel height is at most [`RowSlots::MAX`].
    pub(crate) fn new(g: &ConvGeometry) -> Self {
        RowSlots {
            tags: [None; RowSlots::MAX],
            shared: gcd(g.dilation_height, g.kernel_height) == 1,
        }
    }

    /// The slot that kernel row `ky` of output row `oy` of image `b` reads, and what it
    /// needs first (`None` where it holds that row already); the slot is then tagged with
    /// the row.
    pub(crate) fn claim(
        &mut self,
        g: &ConvGeometry,
        (b, oy, ky): (usize, usize, usize),
    ) -> (usize, Option<SlotFill>) {
        let v = oy * g.stride_height + ky * g.dilation_height;
        let slot = if self.shared { v % g.kernel_height } else { ky };
        let tag = &mut self.tags[slot];
        if *tag == Some((b, v)) {
            return (slot, None);
        }
        let held = match *tag {
            None => Held::Nothing,
            Some((_, v)) if g.image_row(v).is_some() => Held::Image,
            Some(_) => Held::Padding,
        };
        *tag = Some((b, v));
        let image_row = g.image_row(v);
        (slot, Some(SlotFill { image_row, held }))
    }
}

impl ConvGeometry {
    /// Row `v` of the input padded at the top, as a row of the image (`None` in the
    /// padding).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn image_row(&self, v: usize) -> Option<usize> {
        v.checked_sub(self.pad_top)
            .filter(|&iy| iy < self.in_height)
    }

    /// Input channels per group (the patch depth).
    pub fn group_in_channels(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn group_out_channels(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }

    /// Elements of one output channel's filter: `kernel_h * kernel_w * in_channels / groups`.
    pub fn patch_len(&self) -> usize {
        self.kernel_height * self.kernel_width * self.group_in_channels()
    }

    /// Multiply-accumulates one call performs.
    pub fn macs(&self) -> usize {
        self.batch * self.out_height * self.out_width * self.out_channels * self.patch_len()
    }

    /// The fully-connected layer over the pixels a [pointwise](Self::is_pointwise)
    /// convolution is.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
        allow(dead_code)
    )]
    #[cfg_attr(all(target_arch = "arm", not(loam_arm_dsp)), allow(dead_code))]
    pub(crate) fn pointwise_shape(&self) -> FullyConnectedShape {
        FullyConnectedShape {
            batch: self.batch * self.in_height * self.in_width,
            in_features: self.in_channels,
            out_features: self.out_channels,
        }
    }

    /// Whether this is a pointwise convolution: a fully-connected layer over the pixels.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_height == 1
            && self.kernel_width == 1
            && self.stride_height == 1
            && self.stride_width == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.groups == 1
            && self.in_height == self.out_height
            && self.in_width == self.out_width
    }

    fn product(dims: &[usize]) -> Result<usize, Error> {
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::InvalidShape)
    }

    /// Elements of the input.
    pub fn input_len(&self) -> Result<usize, Error> {
        Self::product(&[self.batch, self.in_height, self.in_width, self.in_channels])
    }

    /// Elements of the output.
    pub fn output_len(&self) -> Result<usize, Error> {
        Self::product(&[
            self.batch,
            self.out_height,
            self.out_width,
            self.out_channels,
        ])
    }

    /// Checks that every dimension is positive, the channels divide into the groups, and the
    /// index arithmetic of the kernels cannot overflow.
    pub fn validate(&self) -> Result<(), Error> {
        let all = [
            self.batch,
            self.in_height,
            self.in_width,
            self.in_channels,
            self.out_height,
            self.out_width,
            self.out_channels,
            self.kernel_height,
            self.kernel_width,
            self.stride_height,
            self.stride_width,
            self.dilation_height,
            self.dilation_width,
            self.groups,
        ];
        if all.contains(&0)
            || self.in_channels % self.groups != 0
            || self.out_channels % self.groups != 0
        {
            return Err(Error::InvalidShape);
        }
        // Input coordinates are computed as `out * stride + k * dilation - pad` in i64.
        let limit = 1usize << 30;
        if all
            .iter()
            .chain(&[self.pad_top, self.pad_left])
            .any(|&d| d > limit)
        {
            return Err(Error::InvalidShape);
        }
        self.input_len()?;
        self.output_len()?;
        Self::product(&[self.out_channels, self.patch_len()])?;
        Ok(())
    }

    /// The input row of output row `oy` and kernel row `ky`, if inside the image.
    #[inline]
    pub(crate) fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let y = (oy * self.stride_height + ky * self.dilation_height) as i64 - self.pad_top as i64;
        (0..self.in_height as i64)
            .contains(&y)
            .then_some(y as usize)
    }

    /// Checks the geometry and the operand lengths a kernel indexes with: input, filter
    /// (`filter_expected` elements, which differs between ordinary and depthwise layouts),
    /// output and bias.
    pub(crate) fn check_lengths(
        &self,
        input: usize,
        (filter_expected, filter): (usize, usize),
        output: usize,
        bias: Option<usize>,
    ) -> Result<(), Error> {
        self.validate()?;
        check_len(Operand::Input, self.input_len()?, input)?;
        check_len(Operand::Weights, filter_expected, filter)?;
        check_len(Operand::Output, self.output_len()?, output)?;
        if let Some(bias) = bias {
            check_len(Operand::Bias, self.out_channels, bias)?;
        }
        Ok(())
    }

    /// The input column of output column `ox` and kernel column `kx`, if inside the image.
    #[inline]
    pub(crate) fn input_col(&self, ox: usize, kx: usize) -> Option<usize> {
        let x = (ox * self.stride_width + kx * self.dilation_width) as i64 - self.pad_left as i64;
        (0..self.in_width as i64).contains(&x).then_some(x as usize)
    }
}

/// The operands of an int8 convolution.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dI8<'a> {
    /// Dimensions.
    pub geometry: ConvGeometry,
    /// Requantization.
    pub params: RequantizeParams<'a>,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [i8],
    /// `[out_c][k_h][k_w][in_c / groups]`.
    pub filter: &'a [i8],
    /// `[out_c]` in the accumulator's scale, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl Conv2dI8<'_> {
    /// Checks every length and parameter, so kernels can index without further checks.
    pub fn validate(&self, output: &[i8]) -> Result<(), Error> {
        let g = &self.geometry;
        g.check_lengths(
            self.input.len(),
            (g.out_channels * g.patch_len(), self.filter.len()),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(g.out_channels)
    }
}

/// The operands of a 16x8 convolution: int16 activations (zero point 0), int8 filter.
#[derive(Debug)]
pub struct Conv2dI16<'a> {
    /// Dimensions.
    pub geometry: ConvGeometry,
    /// Requantization.
    pub params: crate::ops::Requantize16Params<'a>,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [i16],
    /// `[out_c][k_h][k_w][in_c / groups]`.
    pub filter: &'a [i8],
    /// `[out_c]` in the accumulator's scale, or `None`.
    pub bias: Option<&'a [i32]>,
}

impl Conv2dI16<'_> {
    /// Checks every length and parameter, so kernels can index without further checks.
    pub fn validate(&self, output: &[i16]) -> Result<(), Error> {
        let g = &self.geometry;
        g.check_lengths(
            self.input.len(),
            (g.out_channels * g.patch_len(), self.filter.len()),
            output.len(),
            self.bias.map(<[i32]>::len),
        )?;
        self.params.validate(g.out_channels)
    }
}

/// A 16x8 convolution kernel over validated operands.
pub type I16Kernel = fn(&Conv2dI16<'_>, &mut [i16]);

/// The 16x8 kernels of this build, reference first.
pub(crate) const I16_KERNELS: &[Kernel<I16Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::conv2d_i16,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: |op, output| conv2d_i16_by_rows(op, output, fully_connected::x86::fully_connected_i16),
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: |op, output| {
            conv2d_i16_by_rows(
                op,
                output,
                fully_connected::aarch64::fully_connected_i16_neon,
            )
        },
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: |op, output| {
            conv2d_i16_by_rows(op, output, fully_connected::arm_neon::fully_connected_i16)
        },
    },
];

/// The 16x8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side. Each expects a validated operation.
#[doc(hidden)]
pub fn i16_kernels() -> impl Iterator<Item = (&'static str, I16Kernel)> {
    crate::isa::runnable(I16_KERNELS)
}

/// The longest patch the 16x8 fast paths gather, on the stack: 16x8 layers have no scratch
/// in the file, and a file's scratch sizes cannot grow (FORMAT.md).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
const MAX_I16_STACK_PATCH: usize = 2048;

/// A 16x8 convolution through the 16x8 fully-connected kernel `fc`: a pointwise layer as one
/// fully-connected layer over its pixels, others a pixel at a time, the patch gathered on
/// the stack (0, the activations' zero point, in the padding) and dotted with every filter
/// row. Grouped layers and patches longer than [`MAX_I16_STACK_PATCH`] take the reference.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
fn conv2d_i16_by_rows(op: &Conv2dI16<'_>, output: &mut [i16], fc: fully_connected::I16Kernel) {
    let g = &op.geometry;
    if g.is_pointwise() {
        let pixels = FullyConnectedI16 {
            shape: g.pointwise_shape(),
            params: op.params,
            input: op.input,
            weights: op.filter,
            bias: op.bias,
        };
        return fc(&pixels, output);
    }
    let k = g.patch_len();
    if g.groups != 1 || k > MAX_I16_STACK_PATCH {
        return reference::conv2d_i16(op, output);
    }
    let mut patch = [0i16; MAX_I16_STACK_PATCH];
    let patch = &mut patch[..k];
    let shape = FullyConnectedShape {
        batch: 1,
        in_features: k,
        out_features: g.out_channels,
    };
    for (p, out) in output.chunks_exact_mut(g.out_channels).enumerate() {
        gather_patch(g, op.input, p, 0, patch, 0i16, |x| x);
        let row = FullyConnectedI16 {
            shape,
            params: op.params,
            input: patch,
            weights: op.filter,
            bias: op.bias,
        };
        fc(&row, out);
    }
}

/// Runs a 16x8 convolution with the fastest kernel this build has, after validating the
/// operands. Every kernel gives exactly the values of [`reference::conv2d_i16`].
pub fn conv2d_i16(op: &Conv2dI16<'_>, output: &mut [i16]) -> Result<(), Error> {
    op.validate(output)?;
    (best(I16_KERNELS))(op, output);
    Ok(())
}

/// The operands of a float convolution; the filter is `f32` or `f16` ([`FloatWeight`]),
/// the arithmetic `f32` either way.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dF32<'a, W: FloatWeight = f32> {
    /// Dimensions.
    pub geometry: ConvGeometry,
    /// `[batch][in_h][in_w][in_c]`.
    pub input: &'a [f32],
    /// `[out_c][k_h][k_w][in_c / groups]`.
    pub filter: &'a [W],
    /// `[out_c]`, or `None`.
    pub bias: Option<&'a [f32]>,
    /// Output clamp (`-inf, inf` for none).
    pub activation: (f32, f32),
}

impl<W: FloatWeight> Conv2dF32<'_, W> {
    /// Checks every length against the geometry.
    pub fn validate(&self, output: &[f32]) -> Result<(), Error> {
        let g = &self.geometry;
        g.check_lengths(
            self.input.len(),
            (g.out_channels * g.patch_len(), self.filter.len()),
            output.len(),
            self.bias.map(<[f32]>::len),
        )?;
        layer::check_f32_clamp(self.activation)
    }
}

impl<'a> Conv2dI8<'a> {
    /// This [pointwise](ConvGeometry::is_pointwise) convolution as the fully-connected
    /// layer over its pixels, which the fast paths run it as.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
        allow(dead_code)
    )]
    #[cfg_attr(all(target_arch = "arm", not(loam_arm_dsp)), allow(dead_code))]
    pub(crate) fn as_fully_connected(&self) -> FullyConnectedI8<'a> {
        FullyConnectedI8 {
            shape: self.geometry.pointwise_shape(),
            params: self.params,
            input: self.input,
            weights: self.filter,
            bias: self.bias,
        }
    }

    /// Gathers pixel `p`'s patch of `group` as `x - zp` in i16, 0 in the padding: the form
    /// the Arm SIMD and DSP kernels multiply exactly.
    #[cfg(any(target_arch = "aarch64", all(target_arch = "arm", loam_arm_dsp)))]
    pub(crate) fn gather_centered(&self, p: usize, group: usize, dst: &mut [i16]) {
        let zp = self.params.input_zero_point as i16;
        gather_patch(&self.geometry, self.input, p, group, dst, 0, |x: i8| {
            i16::from(x) - zp
        });
    }

    /// Adds channel `o`'s bias to the accumulator `acc`, requantizes it, and stores it as
    /// pixel `p`'s output.
    #[cfg(any(target_arch = "aarch64", loam_arm_neon))]
    pub(crate) fn store(&self, output: &mut [i8], p: usize, o: usize, acc: i32) {
        let acc = acc.wrapping_add(self.bias.map_or(0, |b| b[o]));
        output[p * self.geometry.out_channels + o] = self.params.output(acc, o);
    }
}

impl<'a, W: FloatWeight> Conv2dF32<'a, W> {
    /// Float counterpart of [`Conv2dI8::store`]: bias and clamp.
    #[cfg(any(target_arch = "aarch64", loam_arm_neon))]
    pub(crate) fn store(&self, output: &mut [f32], p: usize, o: usize, acc: f32) {
        let (lo, hi) = self.activation;
        let v = acc + self.bias.map_or(0.0, |b| b[o]);
        output[p * self.geometry.out_channels + o] = v.max(lo).min(hi);
    }

    /// Float counterpart of [`Conv2dI8::as_fully_connected`].
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn as_fully_connected(&self) -> FullyConnectedF32<'a, W> {
        FullyConnectedF32 {
            shape: self.geometry.pointwise_shape(),
            input: self.input,
            weights: self.filter,
            bias: self.bias,
            activation: self.activation,
        }
    }
}

/// Elements of slack after each gathered patch, so vector loads of a patch's last partial
/// chunk stay inside the scratch (the slack is multiplied by zero weights).
pub const PATCH_PAD: usize = 16;

/// Gathers output pixel `p`'s input patch for channel group `group` into `dst` in filter
/// order (kernel row, kernel column, channel): `convert` per input value, `fill` for taps in
/// the padding. The im2col step every fast path shares (cores without one never gather).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[cfg_attr(all(target_arch = "arm", not(loam_arm_dsp)), allow(dead_code))]
pub(crate) fn gather_patch<T: Copy, U: Copy>(
    g: &ConvGeometry,
    input: &[T],
    p: usize,
    group: usize,
    dst: &mut [U],
    fill: U,
    convert: impl Fn(T) -> U,
) {
    gather_patch_runs(g, input, p, group, dst, fill, |src, d| {
        for (d, &x) in d.iter_mut().zip(src) {
            *d = convert(x);
        }
    });
}

/// Two patches dotted with four filter rows: `(patch0, patch1, first_channel, rows)` to
/// `[row][pixel]` accumulators.
#[cfg(any(target_arch = "aarch64", loam_arm_neon))]
pub(crate) type DotPair<'a, P, A> = dyn FnMut(&[P], &[P], usize, usize) -> [[A; 2]; 4] + 'a;

/// Runs `dot` over pixel pairs and four-row filter blocks, writing each result through
/// `emit(pixel, channel, accumulator)`: the loop the Arm SIMD kernels share. The scratch
/// holds the two patches.
#[cfg(any(target_arch = "aarch64", loam_arm_neon))]
pub(crate) fn drive<P: Copy + Default, A: Copy>(
    g: &ConvGeometry,
    scratch: &mut [P],
    gather_patch: &mut dyn FnMut(usize, usize, &mut [P]),
    dot: &mut DotPair<'_, P, A>,
    emit: &mut dyn FnMut(usize, usize, A),
) {
    let k = g.patch_len();
    let cg_out = g.group_out_channels();
    let pixels = g.batch * g.out_height * g.out_width;
    let (patch0, rest) = scratch.split_at_mut(k);
    let patch1 = &mut rest[..k];
    let mut p = 0;
    while p < pixels {
        let pair = p + 1 < pixels;
        for group in 0..g.groups {
            gather_patch(p, group, patch0);
            if pair {
                gather_patch(p + 1, group, patch1);
            } else {
                patch1.copy_from_slice(patch0);
            }
            let first = group * cg_out;
            let mut oc = first;
            while oc < first + cg_out {
                let rows = (first + cg_out - oc).min(4);
                let sums = dot(patch0, patch1, oc, rows);
                for (r, sum) in sums.iter().enumerate().take(rows) {
                    emit(p, oc + r, sum[0]);
                    if pair {
                        emit(p + 1, oc + r, sum[1]);
                    }
                }
                oc += rows;
            }
        }
        p += 2;
    }
}

/// [`gather_patch`] with the conversion done a run at a time: `copy(src, dst)` converts one
/// contiguous run of input values (`dst` is as long as `src`), so a fast path can convert it
/// with vectors. Always inlined, so that a fast path's `copy` is compiled with that path's
/// target features.
#[inline(always)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[cfg_attr(all(target_arch = "arm", not(loam_arm_dsp)), allow(dead_code))]
pub(crate) fn gather_patch_runs<T: Copy, U: Copy>(
    g: &ConvGeometry,
    input: &[T],
    p: usize,
    group: usize,
    dst: &mut [U],
    fill: U,
    copy: impl Fn(&[T], &mut [U]),
) {
    let per_image = g.out_height * g.out_width;
    let at = PixelAt {
        b: p / per_image,
        oy: (p % per_image) / g.out_width,
        ox: p % g.out_width,
    };
    gather_patch_at(g, input, at, group, dst, fill, copy)
}

/// An output pixel by its image, row and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PixelAt {
    pub b: usize,
    pub oy: usize,
    pub ox: usize,
}

impl PixelAt {
    /// The pixel after this one in NHWC order.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn next(self, g: &ConvGeometry) -> PixelAt {
        if self.ox + 1 < g.out_width {
            PixelAt {
                ox: self.ox + 1,
                ..self
            }
        } else if self.oy + 1 < g.out_height {
            PixelAt {
                oy: self.oy + 1,
                ox: 0,
                ..self
            }
        } else {
            PixelAt {
                b: self.b + 1,
                oy: 0,
                ox: 0,
            }
        }
    }
}

/// [`gather_patch_runs`] for a pixel given by position, for callers that walk the pixels in
/// order ([`PixelAt::next`]) and so need no divisions to find each one.
#[inline(always)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
#[cfg_attr(all(target_arch = "arm", not(loam_arm_dsp)), allow(dead_code))]
pub(crate) fn gather_patch_at<T: Copy, U: Copy>(
    g: &ConvGeometry,
    input: &[T],
    PixelAt { b, oy, ox }: PixelAt,
    group: usize,
    dst: &mut [U],
    fill: U,
    copy: impl Fn(&[T], &mut [U]),
) {
    let cg = g.group_in_channels();
    let row_len = g.kernel_width * cg;
    // With one group and no dilation, the taps of a kernel row that fall inside the image,
    // `lo..hi`, are adjacent pixels: a contiguous run of the input, copied in one go
    // between padding on either side, instead of tap by tap (most of the gather's cost
    // when channels are few).
    let first_col = (ox * g.stride_width) as i64 - g.pad_left as i64;
    let inside = (g.groups == 1 && g.dilation_width == 1).then(|| {
        let lo = (-first_col).clamp(0, g.kernel_width as i64) as usize;
        let hi = (g.in_width as i64 - first_col).clamp(lo as i64, g.kernel_width as i64);
        (lo, hi as usize)
    });
    // A window wholly inside the image (most pixels of a large one): every kernel row is
    // such a run, whole, a fixed step apart, with no row to test for the padding.
    let top = (oy * g.stride_height) as i64 - g.pad_top as i64;
    if inside == Some((0, g.kernel_width))
        && top >= 0
        && top as usize + (g.kernel_height - 1) * g.dilation_height < g.in_height
    {
        let step = g.dilation_height * g.in_width * g.in_channels;
        let start =
            ((b * g.in_height + top as usize) * g.in_width + first_col as usize) * g.in_channels;
        for (ky, row) in dst[..g.kernel_height * row_len]
            .chunks_exact_mut(row_len)
            .enumerate()
        {
            let from = start + ky * step;
            copy(&input[from..from + row_len], row);
        }
        return;
    }
    for ky in 0..g.kernel_height {
        let row = &mut dst[ky * row_len..(ky + 1) * row_len];
        let Some(iy) = g.input_row(oy, ky) else {
            fill_run(row, fill);
            continue;
        };
        let line = (b * g.in_height + iy) * g.in_width;
        if let Some((lo, hi)) = inside {
            fill_run(&mut row[..lo * cg], fill);
            if lo < hi {
                let start = (line as i64 + first_col + lo as i64) as usize * g.in_channels;
                copy(
                    &input[start..start + (hi - lo) * cg],
                    &mut row[lo * cg..hi * cg],
                );
            }
            fill_run(&mut row[hi * cg..], fill);
            continue;
        }
        for kx in 0..g.kernel_width {
            let d = &mut row[kx * cg..(kx + 1) * cg];
            match g.input_col(ox, kx) {
                Some(ix) => {
                    let start = (line + ix) * g.in_channels + group * cg;
                    copy(&input[start..start + cg], d);
                }
                None => fill_run(d, fill),
            }
        }
    }
}

/// Fills a gathered patch's padding, a few elements at a time: `slice::fill` became a call
/// to `memset` per run, a tenth of DS-CNN's first layer (one channel, a 10x4 window that
/// overlaps the padding at most pixels), where runs are a handful of bytes.
#[inline(always)]
fn fill_run<U: Copy>(dst: &mut [U], value: U) {
    if dst.len() > 64 {
        return dst.fill(value);
    }
    let quad = [value; 4];
    let mut quads = dst.chunks_exact_mut(4);
    for chunk in &mut quads {
        chunk.copy_from_slice(&quad);
    }
    // Element by element, not a copy of variable length (which became `memcpy`).
    match quads.into_remainder() {
        [a] => *a = value,
        [a, b] => (*a, *b) = (value, value),
        [a, b, c] => (*a, *b, *c) = (value, value, value),
        _ => {}
    }
}

/// Scratch elements (`i16` for int8, `f32` for float) the fast paths need: two gathered
/// input patches, each followed by [`PATCH_PAD`] elements. Sized the same on every ISA (the
/// Cortex-M DSP kernel gathers two q15 columns too), so a file plans one arena for every
/// target.
pub fn scratch_len(geometry: &ConvGeometry) -> usize {
    2 * (geometry.patch_len() + PATCH_PAD)
}

/// An int8 convolution kernel: operation, output, scratch.
pub type I8Kernel = fn(&Conv2dI8<'_>, &mut [i8], &mut [i16]);
/// A float convolution kernel over validated operands, for filters of type `W`.
pub type F32Kernel<W = f32> = fn(&Conv2dF32<'_, W>, &mut [f32], &mut [f32]);

/// The int8 kernels of this build, reference first. Each takes validated operands and a
/// scratch of at least [`scratch_len`] elements.
pub(crate) const I8_KERNELS: &[Kernel<I8Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::conv2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::conv2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx512vnni",
        isa: Isa::Avx512Vnni,
        run: x86_vnni::conv2d_i8,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "amx",
        isa: Isa::Amx,
        run: x86_vnni::conv2d_i8_amx,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::conv2d_i8_neon,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "dotprod",
        isa: Isa::DotProd,
        run: aarch64::conv2d_i8_dotprod,
    },
    #[cfg(all(target_arch = "arm", loam_arm_dsp))]
    Kernel {
        name: "dsp",
        isa: Isa::ArmDsp,
        run: arm::conv2d_i8_dsp,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::conv2d_i8,
    },
];

/// The f16-filter kernels of this build, reference first (32-bit NEON has none yet).
pub(crate) const F16_KERNELS: &[Kernel<F32Kernel<half::f16>>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::conv2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::conv2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::conv2d_f32_neon,
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

/// The float kernels of this build, reference first.
pub(crate) const F32_KERNELS: &[Kernel<F32Kernel>] = &[
    Kernel {
        name: "reference",
        isa: Isa::Portable,
        run: reference::conv2d_f32,
    },
    #[cfg(target_arch = "x86_64")]
    Kernel {
        name: "avx2",
        isa: Isa::Avx2,
        run: x86::conv2d_f32,
    },
    #[cfg(target_arch = "aarch64")]
    Kernel {
        name: "neon",
        isa: Isa::Neon,
        run: aarch64::conv2d_f32_neon,
    },
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    Kernel {
        name: "neon32",
        isa: Isa::Neon32,
        run: arm_neon::conv2d_f32,
    },
];

/// The int8 kernels this CPU can run, by name (reference first), for benchmarks that set
/// kernels side by side. Each takes a scratch of at least [`scratch_len`] elements and
/// expects a validated operation.
#[doc(hidden)]
pub fn i8_kernels() -> impl Iterator<Item = (&'static str, I8Kernel)> {
    crate::isa::runnable(I8_KERNELS)
}

/// How far a float fast path may drift from the reference (a reordered dot product).
pub const F32_TOLERANCE: Tolerance = Tolerance::DotProduct;

fn check_scratch(needed: usize, actual: usize) -> Result<(), Error> {
    if actual < needed {
        return Err(Error::ShapeMismatch {
            operand: Operand::Scratch,
            expected: needed,
            actual,
        });
    }
    Ok(())
}

/// Runs an int8 convolution with the fastest kernel this build has, after validating the
/// operands. `scratch` needs [`scratch_len`] elements. Every kernel gives exactly the bytes
/// of [`reference::conv2d_i8`].
pub fn conv2d_i8(op: &Conv2dI8<'_>, output: &mut [i8], scratch: &mut [i16]) -> Result<(), Error> {
    op.validate(output)?;
    check_scratch(scratch_len(&op.geometry), scratch.len())?;
    (best(I8_KERNELS))(op, output, scratch);
    Ok(())
}

/// Runs a float convolution with the fastest kernel this build has; fast paths agree with
/// [`reference::conv2d_f32`] within [`F32_TOLERANCE`].
pub fn conv2d_f32(
    op: &Conv2dF32<'_>,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    op.validate(output)?;
    check_scratch(scratch_len(&op.geometry), scratch.len())?;
    (best(F32_KERNELS))(op, output, scratch);
    Ok(())
}

/// [`conv2d_f32`] with an f16 filter, widened as it is loaded: the result is the f32
/// convolution's with the widened filter, within [`F32_TOLERANCE`].
pub fn conv2d_f16(
    op: &Conv2dF32<'_, half::f16>,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    op.validate(output)?;
    check_scratch(scratch_len(&op.geometry), scratch.len())?;
    (best(F16_KERNELS))(op, output, scratch);
    Ok(())
}

/// The geometry of a model's convolution from its operands and attributes.
fn geometry(operands: &LayerOperands<'_>, a: &Conv2dAttributes) -> Result<ConvGeometry, OpProblem> {
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
        filter.record.shape.rank() == 4,
        "filter is [out_channels, kernel_h, kernel_w, in_channels / groups]",
    )?;
    let groups = usize::from(a.groups);
    if groups == 0 {
        return Err(OpProblem::Attribute("groups is 0"));
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
    let (oc, kh, kw, kc) = (filter.dim(0), filter.dim(1), filter.dim(2), filter.dim(3));
    input.shape_if(c % groups == 0, "channels are not a multiple of groups")?;
    filter.shape_if(
        c / groups == kc,
        "filter depth differs from in_channels / groups",
    )?;
    filter.shape_if(
        oc % groups == 0,
        "out_channels are not a multiple of groups",
    )?;
    let oh = output_size(h, kh, sh, dh, pt, pb);
    let ow = output_size(w, kw, sw, dw, pl, pr);
    let (Some(oh), Some(ow)) = (oh, ow) else {
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
        groups,
    };
    g.validate()
        .map_err(|_| OpProblem::Shape(input.slot, "dimensions out of range"))?;
    Ok(g)
}

pub(crate) fn check(node: &Node<'_>) -> Result<(), OpProblem> {
    node.arity((2, 4), 1)?;
    let a: Conv2dAttributes = node.attributes()?;
    a.activation.check()?;
    let operands = LayerOperands::read(node)?;
    let g = geometry(&operands, &a)?;
    let dtype = operands
        .input
        .expect_dtype(&[DType::F32, DType::I8, DType::I16])?;
    layer::check_operands(node, &operands, dtype, g.out_channels, 0)
}

pub(crate) fn scratch_bytes(node: &Node<'_>) -> Result<usize, OpProblem> {
    let a: Conv2dAttributes = node.attributes()?;
    let operands = LayerOperands::read(node)?;
    let g = geometry(&operands, &a)?;
    let element = match operands.input.record.dtype {
        DType::I8 => 2,
        // The 16x8 reference gathers nothing.
        DType::I16 => 0,
        _ => 4,
    };
    Ok(scratch_len(&g) * element)
}

/// An int8 convolution as [`prepare`] packs it.
#[cfg(target_arch = "x86_64")]
struct Int8Layer<'m> {
    geometry: ConvGeometry,
    filter: &'m [i8],
    bias: Option<&'m [i32]>,
    zero_point: i32,
}

/// The int8 convolution `node` is (int8 input and filter), for [`prepare`].
#[cfg(target_arch = "x86_64")]
fn int8_layer<'m>(node: &Node<'m>) -> Option<Int8Layer<'m>> {
    let a: Conv2dAttributes = node.attributes().ok()?;
    let operands = LayerOperands::read(node).ok()?;
    let geometry = geometry(&operands, &a).ok()?;
    if operands.input.record.dtype != DType::I8 || operands.weights.record.dtype != DType::I8 {
        return None;
    }
    let bias = match node.optional_input(2).ok()? {
        Some(b) => Some(node.constant::<i32>(&b).ok()?),
        None => None,
    };
    Some(Int8Layer {
        geometry,
        filter: node.constant::<i8>(&operands.weights).ok()?,
        bias,
        zero_point: operands.input.record.quantization.zero_point(),
    })
}

/// Words [`prepare`] keeps: on x86 CPUs with AVX-512 VNNI, an int8 layer that a GEMM takes
/// keeps its packed weights ([`crate::ops::fully_connected::x86_prepared`]): a pointwise
/// one those of the fully-connected GEMMs, another those of the im2col GEMM; nothing
/// elsewhere.
pub(crate) fn prepared_len(node: &Node<'_>) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::ops::fully_connected::x86_prepared;
        match int8_layer(node) {
            Some(layer) if x86_amx_implicit::takes(&layer.geometry) => {
                x86_prepared::conv_words(&layer.geometry)
            }
            Some(layer) if x86_vbmi::takes(&layer.geometry) => 0,
            Some(layer) if layer.geometry.is_pointwise() => {
                x86_prepared::words(&layer.geometry.pointwise_shape())
            }
            Some(layer) => x86_prepared::conv_words(&layer.geometry),
            None => 0,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = node;
        0
    }
}

/// Packs an int8 layer's weights into its [`prepared_len`] words.
pub(crate) fn prepare(node: &Node<'_>, words: &mut [i32]) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::ops::fully_connected::x86_prepared;
        let Int8Layer {
            geometry: g,
            filter,
            bias,
            zero_point,
        } = int8_layer(node)?;
        if g.is_pointwise() {
            x86_prepared::prepare(&g.pointwise_shape(), filter, bias, zero_point, words)
        } else {
            let plan = x86_prepared::Plan::conv(&g)?;
            x86_prepared::prepare_plan(&plan, filter, bias, zero_point, words)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (node, words);
        None
    }
}

pub(crate) fn run(ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    let node = &ctx.node;
    let corrupt = |_| Error::CorruptModel;
    let a: Conv2dAttributes = node.attributes().map_err(corrupt)?;
    let operands = LayerOperands::read(node).map_err(corrupt)?;
    let geometry = geometry(&operands, &a).map_err(corrupt)?;
    let LayerOperands {
        input,
        weights: filter,
        output,
    } = operands;
    let temp = node.temporary(0).map_err(corrupt)?;
    match (input.record.dtype, filter.record.dtype) {
        (DType::F32, DType::F16) => {
            let op = Conv2dF32 {
                geometry,
                input: ctx.read(&input)?,
                filter: node.constant::<half::f16>(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(a.activation),
            };
            // SAFETY: validation keeps the output and the temporary clear of every other
            // operand and of each other.
            let (out, scratch) =
                unsafe { (ctx.write::<f32>(&output)?, scratch_view::<f32>(ctx, temp)?) };
            conv2d_f16(&op, out, scratch)
        }
        (DType::F32, _) => {
            let op = Conv2dF32 {
                geometry,
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
                activation: layer::f32_activation(a.activation),
            };
            // SAFETY: validation keeps the output and the temporary clear of every other
            // operand and of each other.
            let (out, scratch) =
                unsafe { (ctx.write::<f32>(&output)?, scratch_view::<f32>(ctx, temp)?) };
            conv2d_f32(&op, out, scratch)
        }
        (DType::I8, _) => {
            let q = layer::i8_requant(ctx, &input, &output, a.activation)?;
            let op = Conv2dI8 {
                geometry,
                params: RequantizeParams::from_requant(&q),
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
            };
            // SAFETY: as above.
            let (out, scratch) =
                unsafe { (ctx.write::<i8>(&output)?, scratch_view::<i16>(ctx, temp)?) };
            // The weights the interpreter packed (`prepare`).
            #[cfg(target_arch = "x86_64")]
            if !node.prepared.is_empty() {
                if geometry.is_pointwise() {
                    return crate::ops::fully_connected::fully_connected_i8_packed(
                        &op.as_fully_connected(),
                        node.prepared,
                        out,
                    );
                }
                op.validate(out)?;
                if x86_vnni::conv2d_i8_prepared(&op, node.prepared, out) {
                    return Ok(());
                }
            }
            conv2d_i8(&op, out, scratch)
        }
        (DType::I16, _) => {
            let op = Conv2dI16 {
                geometry,
                params: layer::i16_requant(ctx, &output, a.activation)?,
                input: ctx.read(&input)?,
                filter: node.constant(&filter).map_err(corrupt)?,
                bias: layer::bias(ctx)?,
            };
            // SAFETY: validation keeps the output clear of every other operand.
            conv2d_i16(&op, unsafe { ctx.write::<i16>(&output)? })
        }
        _ => Err(Error::CorruptModel),
    }
}

/// The op's scratch temporary viewed as `T`s (empty when the op has none). Arena offsets are
/// 16-byte aligned, so the view is aligned for any element type.
///
/// # Safety
/// As [`Ctx::write`]: no other live slice may overlap the temporary.
#[allow(clippy::mut_from_ref)] // The arena is behind a raw pointer, as in `Ctx::write`.
pub(crate) unsafe fn scratch_view<'c, 'm, T: bytemuck::Pod>(
    ctx: &'c Ctx<'m, '_>,
    temp: Option<crate::ops::Operand<'m>>,
) -> Result<&'c mut [T], Error> {
    let Some(t) = temp else {
        return Ok(&mut []);
    };
    // SAFETY: the caller upholds `Ctx::write`'s contract.
    let bytes = unsafe { ctx.write::<i8>(&t)? };
    let whole = bytes.len() / core::mem::size_of::<T>() * core::mem::size_of::<T>();
    bytemuck::try_cast_slice_mut(&mut bytes[..whole]).map_err(|_| Error::CorruptModel)
}

#[cfg(feature = "alloc")]
mod build {
    use super::Conv2dAttributes;
    use crate::format::writer::{BuildError, ModelBuilder, QuantizedWeights, TensorId};
    use crate::ops::layer::build::{Layer, Precision};
    use crate::ops::{FusedActivation, OpKind};
    use crate::quant::QuantParams;

    /// A convolution's hyperparameters for the builder helpers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ConvSpec {
        /// Output channels.
        pub out_channels: usize,
        /// Kernel `(height, width)`.
        pub kernel: (usize, usize),
        /// `(vertical, horizontal)` stride.
        pub stride: (usize, usize),
        /// `(vertical, horizontal)` dilation.
        pub dilation: (usize, usize),
        /// `[top, left, bottom, right]` padding.
        pub padding: [usize; 4],
        /// Channel groups.
        pub groups: usize,
    }

    impl ConvSpec {
        /// A `kernel` x `kernel` convolution with stride 1 and no padding.
        pub fn new(out_channels: usize, kernel: usize) -> ConvSpec {
            ConvSpec {
                out_channels,
                kernel: (kernel, kernel),
                stride: (1, 1),
                dilation: (1, 1),
                padding: [0; 4],
                groups: 1,
            }
        }

        /// With this stride in both directions.
        pub fn stride(self, s: usize) -> ConvSpec {
            ConvSpec {
                stride: (s, s),
                ..self
            }
        }

        /// With TensorFlow's "SAME" padding for an input of `height` x `width`.
        pub fn same(self, height: usize, width: usize) -> ConvSpec {
            let pad = |size: usize, k: usize, s: usize, d: usize| {
                let out = size.div_ceil(s);
                let needed = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(size);
                (needed / 2, needed - needed / 2)
            };
            let (t, b) = pad(height, self.kernel.0, self.stride.0, self.dilation.0);
            let (l, r) = pad(width, self.kernel.1, self.stride.1, self.dilation.1);
            ConvSpec {
                padding: [t, l, b, r],
                ..self
            }
        }

        pub(crate) fn attributes(
            &self,
            activation: FusedActivation,
        ) -> Result<Conv2dAttributes, BuildError> {
            let u = |x: usize| {
                u16::try_from(x).map_err(|_| {
                    BuildError::BadShape(alloc::string::String::from("conv attribute"))
                })
            };
            Ok(Conv2dAttributes {
                stride: [u(self.stride.0)?, u(self.stride.1)?],
                dilation: [u(self.dilation.0)?, u(self.dilation.1)?],
                padding: [
                    u(self.padding[0])?,
                    u(self.padding[1])?,
                    u(self.padding[2])?,
                    u(self.padding[3])?,
                ],
                groups: u(self.groups)?,
                activation,
            })
        }

        /// The output shape for an NHWC input shape.
        pub(crate) fn output_dims(&self, input: &[u32]) -> Option<[usize; 4]> {
            let [n, h, w, _] =
                [input.first()?, input.get(1)?, input.get(2)?, input.get(3)?].map(|&d| d as usize);
            let oh = super::output_size(
                h,
                self.kernel.0,
                self.stride.0,
                self.dilation.0,
                self.padding[0],
                self.padding[2],
            )?;
            let ow = super::output_size(
                w,
                self.kernel.1,
                self.stride.1,
                self.dilation.1,
                self.padding[1],
                self.padding[3],
            )?;
            Some([n, oh, ow, self.out_channels])
        }
    }

    fn input_dims(b: &ModelBuilder, x: TensorId) -> Result<alloc::vec::Vec<u32>, BuildError> {
        Ok(b.shape(x)
            .ok_or(BuildError::UnknownTensor(x))?
            .dims()
            .to_vec())
    }

    /// Appends a convolution of the given precision; the filter is
    /// `[out_c][k_h][k_w][in_c / groups]`.
    fn append(
        b: &mut ModelBuilder,
        name: &str,
        input: TensorId,
        spec: ConvSpec,
        activation: FusedActivation,
        precision: Precision<'_>,
    ) -> Result<TensorId, BuildError> {
        let dims = input_dims(b, input)?;
        let out_dims = spec
            .output_dims(&dims)
            .ok_or_else(|| BuildError::BadShape(name.into()))?;
        let depth = dims.get(3).map_or(0, |&c| c as usize) / spec.groups.max(1);
        Layer {
            kind: OpKind::Conv2d,
            name,
            input,
            precision,
            weight_dims: &[spec.out_channels, spec.kernel.0, spec.kernel.1, depth],
            channel_axis: 0,
            output_dims: &out_dims,
            attributes: &spec.attributes(activation)?,
        }
        .append(b)
    }

    impl ModelBuilder {
        /// Appends a float convolution; `filter` is `[out_c][k_h][k_w][in_c / groups]`.
        pub fn conv2d_f32(
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

        /// [`ModelBuilder::conv2d_f32`] with the filter stored as f16 (rounded to nearest):
        /// half the flash, the same f32 arithmetic on the rounded weights.
        pub fn conv2d_f16(
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

        /// Appends a 16x8 convolution whose weights are integers already (as for
        /// [`ModelBuilder::conv2d_i8_quantized`]), kept bit for bit.
        pub fn conv2d_i16_quantized(
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

        /// Appends a 16x8 convolution from float weights (quantized per output channel):
        /// `input` is int16 with zero point 0, as is `output`.
        #[allow(clippy::too_many_arguments)]
        pub fn conv2d_i16(
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

        /// Appends an int8 convolution from float weights (quantized per output channel).
        #[allow(clippy::too_many_arguments)]
        pub fn conv2d_i8(
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

        /// Appends an int8 convolution whose weights are integers already (`[out_c][k_h]
        /// [k_w][in_c / groups]`, one scale per output channel), kept bit for bit.
        pub fn conv2d_i8_quantized(
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

#[cfg(feature = "alloc")]
pub use build::ConvSpec;
