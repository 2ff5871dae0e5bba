use core::fmt;

/// Everything the runtime can report. Small and `Copy` so it costs nothing to return on a
/// microcontroller; which operand or field is at fault is named by the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length does not match the shape the op was given.
    ShapeMismatch {
        /// Which operand of the op is wrong.
        operand: Operand,
        /// The length the shape calls for.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A dimension is zero or the element count overflows `usize`.
    InvalidShape,
    /// A quantization parameter is out of range: a zero point outside the storage type, a
    /// non-positive or non-finite scale, or an empty activation range.
    InvalidQuantization(QuantField),
}

/// The operands of an op, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Operand {
    /// The activation input.
    Input,
    /// The weight tensor.
    Weights,
    /// The bias vector.
    Bias,
    /// The per-channel (or per-tensor) requantization multipliers.
    Multipliers,
    /// The output buffer.
    Output,
}

/// The quantization field at fault in [`Error::InvalidQuantization`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum QuantField {
    /// The input tensor's zero point.
    InputZeroPoint,
    /// The output tensor's zero point.
    OutputZeroPoint,
    /// A real-valued multiplier or scale.
    Scale,
    /// The fused activation's clamp range (`min > max`).
    ActivationRange,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Input => "input",
            Operand::Weights => "weights",
            Operand::Bias => "bias",
            Operand::Multipliers => "multipliers",
            Operand::Output => "output",
        })
    }
}

impl fmt::Display for QuantField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantField::InputZeroPoint => "input zero point",
            QuantField::OutputZeroPoint => "output zero point",
            QuantField::Scale => "scale",
            QuantField::ActivationRange => "activation range",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch {
                operand,
                expected,
                actual,
            } => write!(
                f,
                "{operand} has {actual} elements but the shape needs {expected}"
            ),
            Error::InvalidShape => {
                f.write_str("a dimension is zero or the element count overflows")
            }
            Error::InvalidQuantization(field) => write!(f, "invalid quantization: {field}"),
        }
    }
}

impl core::error::Error for Error {}
