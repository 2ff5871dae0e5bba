//! What the weighted layers (fully connected, convolution, depthwise convolution) share: the
//! checks of their bias and requantization operands, and reading those at run time.
//!
//! Operand order for all three: `[input, weights, bias?, multipliers?]`. Float layers have no
//! multipliers. int8 layers carry one `[multiplier, shift]` pair per output channel (or one for
//! all), precomputed by the tools from `input_scale * weight_scale[c] / output_scale` with
//! TFLite's `QuantizeMultiplier`, so the device does no float math.

use crate::error::{Error, OpProblem, QuantField};
use crate::fixed_point::QuantizedMultiplier;
use crate::ops::{Ctx, FusedActivation, Node, Operand};
use crate::tensor::DType;

/// Quantization of an int8 weighted layer in TFLite's scheme: asymmetric int8 activations,
/// symmetric int8 weights (per output channel or per tensor), int32 bias, and a fixed-point
/// multiplier per output channel.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequantizeParams<'a> {
    /// Zero point of the input tensor, in `-128..=127`.
    pub input_zero_point: i32,
    /// Zero point of the output tensor, in `-128..=127`.
    pub output_zero_point: i32,
    /// `input_scale * weight_scale[o] / output_scale`, one per output channel, or a single
    /// entry shared by all of them (per-tensor weights).
    pub multipliers: &'a [QuantizedMultiplier],
    /// Lower clamp of the fused activation (`-128` for none, the zero point for ReLU).
    pub activation_min: i8,
    /// Upper clamp of the fused activation (`127` for none).
    pub activation_max: i8,
}

impl<'a> RequantizeParams<'a> {
    /// The multiplier for output channel `o`.
    #[inline]
    pub fn multiplier(&self, o: usize) -> QuantizedMultiplier {
        if self.multipliers.len() == 1 {
            self.multipliers[0]
        } else {
            self.multipliers[o]
        }
    }

    /// Requantizes an accumulator of channel `o` to the clamped int8 output.
    #[inline]
    pub fn output(&self, acc: i32, o: usize) -> i8 {
        let scaled = self
            .multiplier(o)
            .apply(acc)
            .saturating_add(self.output_zero_point);
        scaled.clamp(
            i32::from(self.activation_min),
            i32::from(self.activation_max),
        ) as i8
    }

    /// Checks zero points, the clamp range and the multiplier count against `channels`.
    pub fn validate(&self, channels: usize) -> Result<(), Error> {
        let m = self.multipliers.len();
        if m != 1 && m != channels {
            return Err(Error::ShapeMismatch {
                operand: crate::error::Operand::Multipliers,
                expected: channels,
                actual: m,
            });
        }
        if !(-128..=127).contains(&self.input_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::InputZeroPoint));
        }
        if !(-128..=127).contains(&self.output_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::OutputZeroPoint));
        }
        if self.activation_min > self.activation_max {
            return Err(Error::InvalidQuantization(QuantField::ActivationRange));
        }
        Ok(())
    }

    /// The parameters a model's layer runs with.
    pub(crate) fn from_requant<'b>(q: &I8Requant<'b>) -> RequantizeParams<'b> {
        RequantizeParams {
            input_zero_point: q.input_zero_point,
            output_zero_point: q.output_zero_point,
            multipliers: q.multipliers,
            activation_min: q.activation_min,
            activation_max: q.activation_max,
        }
    }
}

/// Quantization of a 16x8 weighted layer, TFLite's int16-activation scheme: symmetric int16
/// activations (zero point 0), symmetric int8 weights (per output channel or per tensor), an
/// int32 bias, a 64-bit accumulator and [`QuantizedMultiplier::apply_wide`]. TFLite stores the
/// bias as int64; loam's builder checks that it fits int32, which holds for every layer whose
/// bias is smaller than `2^31` accumulator steps.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requantize16Params<'a> {
    /// `input_scale * weight_scale[o] / output_scale`, one per output channel or one for all,
    /// each with a shift of at most [`QuantizedMultiplier::MAX_WIDE_SHIFT`].
    pub multipliers: &'a [QuantizedMultiplier],
    /// Lower clamp of the fused activation (`-32768` for none, 0 for ReLU).
    pub activation_min: i16,
    /// Upper clamp of the fused activation (`32767` for none).
    pub activation_max: i16,
}

impl Requantize16Params<'_> {
    /// The multiplier for output channel `o`.
    #[inline]
    pub fn multiplier(&self, o: usize) -> QuantizedMultiplier {
        if self.multipliers.len() == 1 {
            self.multipliers[0]
        } else {
            self.multipliers[o]
        }
    }

    /// Requantizes an accumulator of channel `o` to the clamped int16 output.
    #[inline]
    pub fn output(&self, acc: i64, o: usize) -> i16 {
        self.multiplier(o).apply_wide(acc).clamp(
            i32::from(self.activation_min),
            i32::from(self.activation_max),
        ) as i16
    }

    /// Checks the multiplier count and shifts and the clamp range against `channels`.
    pub fn validate(&self, channels: usize) -> Result<(), Error> {
        let m = self.multipliers.len();
        if m != 1 && m != channels {
            return Err(Error::ShapeMismatch {
                operand: crate::error::Operand::Multipliers,
                expected: channels,
                actual: m,
            });
        }
        if self
            .multipliers
            .iter()
            .any(|m| m.shift() > QuantizedMultiplier::MAX_WIDE_SHIFT)
        {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        if self.activation_min > self.activation_max {
            return Err(Error::InvalidQuantization(QuantField::ActivationRange));
        }
        Ok(())
    }
}

/// Requantization of an int8 layer, read from its operands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct I8Requant<'m> {
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub multipliers: &'m [QuantizedMultiplier],
    pub activation_min: i8,
    pub activation_max: i8,
}

/// The operands every weighted layer has, decoded from the model once per check or run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerOperands<'m> {
    /// Input 0, the activations.
    pub input: Operand<'m>,
    /// Input 1, the weights or filter.
    pub weights: Operand<'m>,
    /// Output 0.
    pub output: Operand<'m>,
}

impl<'m> LayerOperands<'m> {
    /// Decodes the input, weights and output records of `node`.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub(crate) fn read(node: &Node<'m>) -> Result<LayerOperands<'m>, OpProblem> {
        Ok(LayerOperands {
            input: node.input(0)?,
            weights: node.input(1)?,
            output: node.output(0)?,
        })
    }
}

/// Checks the bias (input 2) and, for int8, the multipliers (input 3) of a layer with
/// `channels` output channels whose weights' channel axis is `weight_axis`.
pub(crate) fn check_operands(
    node: &Node<'_>,
    operands: &LayerOperands<'_>,
    dtype: DType,
    channels: usize,
    weight_axis: usize,
) -> Result<(), OpProblem> {
    let LayerOperands {
        input,
        weights,
        output,
    } = *operands;
    if !weights.record.is_constant() {
        return Err(OpProblem::NotConstant(weights.slot));
    }
    match dtype {
        DType::F32 => {
            // f16 weights are widened as the kernels load them (format 1.3).
            match weights.expect_dtype(&[DType::F32, DType::F16])? {
                DType::F16 => node.constant::<half::f16>(&weights).map(drop)?,
                _ => node.constant::<f32>(&weights).map(drop)?,
            }
            output.expect_dtype(&[DType::F32])?;
            if let Some(bias) = node.optional_input(2)? {
                bias.expect_dtype(&[DType::F32])?;
                node.constant::<f32>(&bias)?;
                bias.shape_if(
                    bias.record.shape.is(&[channels]),
                    "bias needs one value per output channel",
                )?;
            }
            if node.input_count() > 3 {
                return Err(OpProblem::Arity {
                    slot: crate::error::Slot::Input(0),
                    min: 2,
                    max: 3,
                    actual: node.input_count().min(255) as u8,
                });
            }
        }
        DType::I8 | DType::I16 => {
            let wide = dtype == DType::I16;
            weights.expect_dtype(&[DType::I8])?;
            output.expect_dtype(&[dtype])?;
            for operand in [&input, &output] {
                let (_, zero_point) = operand.per_tensor()?;
                if wide && zero_point != 0 {
                    return Err(OpProblem::Quantization(
                        operand.slot,
                        "int16 activations are symmetric (zero point 0)",
                    ));
                }
            }
            node.check_weight_quantization(&weights, weight_axis)?;
            if let Some(bias) = node.optional_input(2)? {
                bias.expect_dtype(&[DType::I32])?;
                node.constant::<i32>(&bias)?;
                bias.shape_if(
                    bias.record.shape.is(&[channels]),
                    "bias needs one value per output channel",
                )?;
            }
            let m = node.input(3)?;
            let raw = node.constant::<i32>(&m)?;
            m.shape_if(
                m.record.shape.is(&[channels, 2]) || m.record.shape.is(&[1, 2]),
                "multipliers are [channels, 2] or [1, 2] (multiplier, shift) pairs",
            )?;
            match QuantizedMultiplier::slice_from_raw(raw) {
                None => {
                    return Err(OpProblem::Quantization(
                        m.slot,
                        "a multiplier or shift is out of range",
                    ));
                }
                Some(ms)
                    if wide
                        && ms
                            .iter()
                            .any(|m| m.shift() > QuantizedMultiplier::MAX_WIDE_SHIFT) =>
                {
                    return Err(OpProblem::Quantization(
                        m.slot,
                        "a shift above 7, which a 16x8 layer cannot apply",
                    ));
                }
                Some(_) => {}
            }
        }
        _ => return Err(OpProblem::DType(input.slot)),
    }
    Ok(())
}

/// Fails with [`Error::ShapeMismatch`] naming `operand` unless the lengths agree.
pub(crate) fn check_len(
    operand: crate::error::Operand,
    expected: usize,
    actual: usize,
) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            operand,
            expected,
            actual,
        })
    }
}

/// Checks a float kernel's output clamp (`min <= max`, neither NaN).
pub(crate) fn check_f32_clamp((lo, hi): (f32, f32)) -> Result<(), Error> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(Error::InvalidQuantization(QuantField::ActivationRange));
    }
    Ok(())
}

/// The clamp range of a fused activation on an int8 output.
pub(crate) fn i8_activation(output: &Operand<'_>, activation: FusedActivation) -> (i8, i8) {
    let (scale, zero_point) = output.per_tensor().unwrap_or((1.0, 0));
    let (lo, hi) = activation.quantized(scale, zero_point, -128, 127);
    (lo as i8, hi as i8)
}

/// The clamp range of a fused activation on a float output.
pub(crate) fn f32_activation(activation: FusedActivation) -> (f32, f32) {
    (activation.min, activation.max)
}

/// Reads an int8 layer's requantization operands at run time.
pub(crate) fn i8_requant<'m>(
    ctx: &Ctx<'m, '_>,
    input: &Operand<'m>,
    output: &Operand<'m>,
    activation: FusedActivation,
) -> Result<I8Requant<'m>, Error> {
    let multipliers = ctx.node.multipliers_input(3).ok_or(Error::CorruptModel)?;
    let (activation_min, activation_max) = i8_activation(output, activation);
    Ok(I8Requant {
        input_zero_point: input.record.quantization.zero_point(),
        output_zero_point: output.record.quantization.zero_point(),
        multipliers,
        activation_min,
        activation_max,
    })
}

/// The clamp range of a fused activation on an int16 output.
pub(crate) fn i16_activation(output: &Operand<'_>, activation: FusedActivation) -> (i16, i16) {
    let (scale, zero_point) = output.per_tensor().unwrap_or((1.0, 0));
    let (lo, hi) = activation.quantized(scale, zero_point, -32768, 32767);
    (lo as i16, hi as i16)
}

/// Reads a 16x8 layer's requantization operands at run time.
pub(crate) fn i16_requant<'m>(
    ctx: &Ctx<'m, '_>,
    output: &Operand<'m>,
    activation: FusedActivation,
) -> Result<Requantize16Params<'m>, Error> {
    let multipliers = ctx.node.multipliers_input(3).ok_or(Error::CorruptModel)?;
    let (activation_min, activation_max) = i16_activation(output, activation);
    Ok(Requantize16Params {
        multipliers,
        activation_min,
        activation_max,
    })
}

/// A constant bias operand (input 2), if present.
pub(crate) fn bias<'m, T: crate::tensor::Element>(
    ctx: &Ctx<'m, '_>,
) -> Result<Option<&'m [T]>, Error> {
    match ctx
        .node
        .optional_input(2)
        .map_err(|_| Error::CorruptModel)?
    {
        None => Ok(None),
        Some(b) => ctx
            .node
            .constant::<T>(&b)
            .map(Some)
            .map_err(|_| Error::CorruptModel),
    }
}

/// Appending weighted layers to a model: the part of the FullyConnected, Conv2d and
/// DepthwiseConv2d builder helpers that is the same for all three.
#[cfg(feature = "alloc")]
pub(crate) mod build {
    use serde::Serialize;

    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, QuantizedWeights, TensorId};
    use crate::ops::OpKind;
    use crate::quant::{self, QuantParams};
    use crate::tensor::DType;

    /// A weighted layer's weights and the arithmetic it runs in.
    #[derive(Clone, Copy)]
    pub(crate) enum Precision<'a> {
        /// f32 weights and bias; an f32 layer.
        F32 {
            weights: &'a [f32],
            bias: Option<&'a [f32]>,
        },
        /// f32 weights rounded to f16 (to nearest, ties to even) and an f32 bias; an f32
        /// layer that keeps its weights at half the size.
        F16 {
            weights: &'a [f32],
            bias: Option<&'a [f32]>,
        },
        /// f32 weights quantized symmetrically per output channel by the builder, the bias
        /// to int32 in the accumulator's scale; an int8 layer with `output` quantization.
        I8 {
            weights: &'a [f32],
            bias: Option<&'a [f32]>,
            output: QuantParams,
        },
        /// Integer weights kept as given; an int8 layer with `output` quantization.
        Quantized {
            weights: QuantizedWeights<'a>,
            output: QuantParams,
        },
        /// Integer weights kept as given; a 16x8 layer (int16 input and `output`, zero
        /// points 0).
        Quantized16 {
            weights: QuantizedWeights<'a>,
            output: QuantParams,
        },
        /// f32 weights quantized symmetrically per output channel, the bias to int32 in the
        /// accumulator's scale; a 16x8 layer (int16 input and `output`, zero points 0).
        I16 {
            weights: &'a [f32],
            bias: Option<&'a [f32]>,
            output: QuantParams,
        },
    }

    impl Precision<'_> {
        /// How many weights there are.
        pub(crate) fn weight_count(&self) -> usize {
            match self {
                Precision::F32 { weights, .. }
                | Precision::F16 { weights, .. }
                | Precision::I8 { weights, .. }
                | Precision::I16 { weights, .. } => weights.len(),
                Precision::Quantized { weights, .. } | Precision::Quantized16 { weights, .. } => {
                    weights.values.len()
                }
            }
        }
    }

    /// A weighted layer to append.
    pub(crate) struct Layer<'a, A> {
        pub kind: OpKind,
        pub name: &'a str,
        pub input: TensorId,
        pub precision: Precision<'a>,
        /// The weights' dimensions in the kind's layout.
        pub weight_dims: &'a [usize],
        /// The weights' output-channel axis (0 for FC and Conv2d, 3 for depthwise).
        pub channel_axis: usize,
        pub output_dims: &'a [usize],
        pub attributes: &'a A,
    }

    impl<A: Serialize> Layer<'_, A> {
        fn constant_name(&self, part: &str) -> alloc::string::String {
            alloc::format!("{}.{part}", self.name)
        }

        /// Appends the layer; returns its output.
        pub(crate) fn append(&self, b: &mut ModelBuilder) -> Result<TensorId, BuildError> {
            match self.precision {
                Precision::F32 { weights, bias } => self.append_f32(b, weights, bias, false),
                Precision::F16 { weights, bias } => self.append_f32(b, weights, bias, true),
                Precision::I8 {
                    weights,
                    bias,
                    output,
                }
                | Precision::I16 {
                    weights,
                    bias,
                    output,
                } => {
                    // The input's scale sets the bias scale; it must be int8 per tensor.
                    let input_q = b
                        .per_tensor(self.input)
                        .ok_or(BuildError::UnknownTensor(self.input))?;
                    let channels = self.channels();
                    let channel_last = self.channel_axis + 1 == self.weight_dims.len();
                    let (qw, scales) =
                        quant::quantize_weights_per_channel(weights, channels, channel_last);
                    let bias_q = bias.map(|v| quant::quantize_bias(v, input_q.scale, &scales));
                    if let (Some(real), Some(q)) = (bias, &bias_q) {
                        // An int16 input's scale is small enough that a large bias can leave
                        // int32 in the accumulator's scale; saturating would be silent.
                        let saturated = q.iter().zip(real).zip(&scales).any(|((&q, &r), &s)| {
                            (q == i32::MAX || q == i32::MIN)
                                && (f64::from(r) / (f64::from(input_q.scale) * f64::from(s))).abs()
                                    > f64::from(i32::MAX)
                        });
                        if saturated {
                            return Err(BuildError::DataLength(self.constant_name("bias")));
                        }
                    }
                    let weights = QuantizedWeights {
                        values: &qw,
                        scales: &scales,
                        bias: bias_q.as_deref(),
                    };
                    let dtype = match self.precision {
                        Precision::I16 { .. } => DType::I16,
                        _ => DType::I8,
                    };
                    self.append_quantized(b, weights, output, dtype)
                }
                Precision::Quantized { weights, output } => {
                    self.append_quantized(b, weights, output, DType::I8)
                }
                Precision::Quantized16 { weights, output } => {
                    self.append_quantized(b, weights, output, DType::I16)
                }
            }
        }

        fn channels(&self) -> usize {
            self.weight_dims
                .get(self.channel_axis)
                .copied()
                .unwrap_or(1)
        }

        /// The float layer, its weights stored as f16 when `half`.
        fn append_f32(
            &self,
            b: &mut ModelBuilder,
            weights: &[f32],
            bias: Option<&[f32]>,
            half: bool,
        ) -> Result<TensorId, BuildError> {
            let name = self.constant_name("weight");
            let w = if half {
                let halves: alloc::vec::Vec<half::f16> =
                    weights.iter().map(|&w| half::f16::from_f32(w)).collect();
                b.constant(&name, self.weight_dims, &halves, QuantSpec::None)?
            } else {
                b.constant(&name, self.weight_dims, weights, QuantSpec::None)?
            };
            let bias = bias
                .map(|v| b.constant(&self.constant_name("bias"), &[v.len()], v, QuantSpec::None))
                .transpose()?;
            let out = b.tensor(self.name, DType::F32, self.output_dims, QuantSpec::None)?;
            b.op(
                self.kind,
                self.name,
                &[Some(self.input), Some(w), bias],
                &[out],
                self.attributes,
            )?;
            Ok(out)
        }

        /// The integer layer (int8, or 16x8 with `dtype` I16) with integer weights, and the
        /// multipliers as TFLite computes them. The input must have per-tensor quantization
        /// and the output's element type.
        fn append_quantized(
            &self,
            b: &mut ModelBuilder,
            weights: QuantizedWeights<'_>,
            output: QuantParams,
            dtype: DType,
        ) -> Result<TensorId, BuildError> {
            let input_q = b
                .per_tensor(self.input)
                .ok_or(BuildError::UnknownTensor(self.input))?;
            let channels = self.channels();
            if weights.scales.len() != channels
                || weights.bias.is_some_and(|bias| bias.len() != channels)
            {
                return Err(BuildError::DataLength(self.constant_name("weight")));
            }
            let multipliers = quant::layer_multipliers(input_q.scale, weights.scales, output.scale);
            let w = b.constant(
                &self.constant_name("weight"),
                self.weight_dims,
                weights.values,
                QuantSpec::PerChannel {
                    axis: self.channel_axis as u8,
                    scales: weights.scales.to_vec(),
                },
            )?;
            let bias = weights
                .bias
                .map(|v| b.constant(&self.constant_name("bias"), &[v.len()], v, QuantSpec::None))
                .transpose()?;
            let m = b.constant(
                &self.constant_name("multipliers"),
                &[channels, 2],
                &multipliers,
                QuantSpec::None,
            )?;
            let out = b.tensor(
                self.name,
                dtype,
                self.output_dims,
                QuantSpec::PerTensor {
                    scale: output.scale,
                    zero_point: output.zero_point,
                },
            )?;
            b.op(
                self.kind,
                self.name,
                &[Some(self.input), Some(w), bias, Some(m)],
                &[out],
                self.attributes,
            )?;
            Ok(out)
        }
    }
}
