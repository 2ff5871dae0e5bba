//! Fully-connected layer (TFLite `FULLY_CONNECTED`, ONNX `Gemm`/`MatMul` with a constant
//! right-hand side): `output[b][o] = act(requant(sum_i input[b][i] * weights[o][i] + bias[o]))`.
//!
//! Weights are stored row-major as `[out_features][in_features]`, TFLite's layout, so each
//! output is one contiguous dot product.

pub mod reference;

use crate::error::{Error, Operand, QuantField};
use crate::fixed_point::QuantizedMultiplier;

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
}

/// Quantization of an int8 fully-connected layer, in TFLite's scheme: asymmetric int8
/// activations, symmetric int8 weights (per output channel or per tensor), int32 bias.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FullyConnectedI8Params<'a> {
    /// Zero point of the input tensor, in `-128..=127`.
    pub input_zero_point: i32,
    /// Zero point of the output tensor, in `-128..=127`.
    pub output_zero_point: i32,
    /// `input_scale * weight_scale[o] / output_scale`, one per output feature, or a single
    /// entry shared by all of them (per-tensor weights).
    pub multipliers: &'a [QuantizedMultiplier],
    /// Lower clamp of the fused activation (`-128` for none, the zero point for ReLU).
    pub activation_min: i8,
    /// Upper clamp of the fused activation (`127` for none).
    pub activation_max: i8,
}

impl FullyConnectedI8Params<'_> {
    /// The multiplier for output feature `o`.
    #[inline]
    pub(crate) fn multiplier(&self, o: usize) -> QuantizedMultiplier {
        if self.multipliers.len() == 1 {
            self.multipliers[0]
        } else {
            self.multipliers[o]
        }
    }
}

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
        let s = self.shape;
        if s.batch == 0 || s.in_features == 0 || s.out_features == 0 {
            return Err(Error::InvalidShape);
        }
        let check = |operand, expected: usize, actual: usize| {
            if expected == actual {
                Ok(())
            } else {
                Err(Error::ShapeMismatch {
                    operand,
                    expected,
                    actual,
                })
            }
        };
        check(
            Operand::Input,
            FullyConnectedShape::elements(s.batch, s.in_features)?,
            self.input.len(),
        )?;
        check(
            Operand::Weights,
            FullyConnectedShape::elements(s.out_features, s.in_features)?,
            self.weights.len(),
        )?;
        check(
            Operand::Output,
            FullyConnectedShape::elements(s.batch, s.out_features)?,
            output.len(),
        )?;
        if let Some(bias) = self.bias {
            check(Operand::Bias, s.out_features, bias.len())?;
        }
        let m = self.params.multipliers.len();
        if m != 1 {
            check(Operand::Multipliers, s.out_features, m)?;
        }
        let p = &self.params;
        if !(-128..=127).contains(&p.input_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::InputZeroPoint));
        }
        if !(-128..=127).contains(&p.output_zero_point) {
            return Err(Error::InvalidQuantization(QuantField::OutputZeroPoint));
        }
        if p.activation_min > p.activation_max {
            return Err(Error::InvalidQuantization(QuantField::ActivationRange));
        }
        Ok(())
    }
}

/// Runs an int8 fully-connected layer with the fastest kernel this build has, after validating
/// the operands.
///
/// Every kernel gives exactly the bytes of [`reference::fully_connected_i8`].
pub fn fully_connected_i8(op: &FullyConnectedI8<'_>, output: &mut [i8]) -> Result<(), Error> {
    op.validate(output)?;
    reference::fully_connected_i8(op, output);
    Ok(())
}

#[cfg(test)]
mod tests;
