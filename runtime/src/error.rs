use core::fmt;

use crate::tensor::DType;

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
    /// The arena handed to an interpreter is smaller than the model's memory plan.
    ArenaTooSmall {
        /// Bytes the plan needs, plus what aligning the arena's start costs.
        required: usize,
        /// Bytes that were passed.
        actual: usize,
    },
    /// No graph input or output has this name or index.
    NoSuchTensor,
    /// A tensor was accessed as the wrong element type.
    DTypeMismatch {
        /// The tensor's element type.
        expected: DType,
        /// The type it was accessed as.
        actual: DType,
    },
    /// The model changed under the interpreter (a record that validated at load no longer
    /// decodes); only possible if the model bytes were modified after loading.
    CorruptModel,
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
    /// The scratch buffer.
    Scratch,
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
            Operand::Scratch => "scratch",
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
            Error::ArenaTooSmall { required, actual } => write!(
                f,
                "the arena has {actual} bytes but the model's memory plan needs {required}"
            ),
            Error::NoSuchTensor => f.write_str("no graph input or output has that name or index"),
            Error::DTypeMismatch { expected, actual } => {
                write!(
                    f,
                    "the tensor holds {expected} but was accessed as {actual}"
                )
            }
            Error::CorruptModel => {
                f.write_str("the model bytes changed after they were loaded and validated")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Why a `.loam` file was refused by [`crate::Model::from_bytes`]. Each variant names the part
/// of the file at fault: the preamble field, the tensor or op by index, and the operand or
/// attribute within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError {
    /// Fewer bytes than the preamble, or than the length the preamble records.
    Truncated {
        /// Bytes the file says it has (or the preamble's size).
        needed: usize,
        /// Bytes that were passed.
        actual: usize,
    },
    /// The bytes do not start with the `LOAM` magic.
    NotALoamFile,
    /// The file's major format version is one this runtime cannot read.
    UnsupportedVersion {
        /// The file's major version.
        major: u16,
        /// The file's minor version.
        minor: u16,
    },
    /// The bytes do not start at a 4-byte aligned address, so weights cannot be read in place.
    /// Embed models with [`crate::include_model!`] or copy them into an aligned buffer.
    Misaligned,
    /// The CRC-32 over the file does not match the one stored: the bytes are damaged.
    ChecksumMismatch {
        /// CRC stored in the preamble.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A preamble field is inconsistent; the name says which.
    Preamble(&'static str),
    /// The header record is malformed; the name says which part.
    Header(&'static str),
    /// A tensor record is invalid.
    Tensor {
        /// The tensor's index.
        index: u16,
        /// What is wrong.
        problem: TensorProblem,
    },
    /// An op record is invalid.
    Op {
        /// The op's position in execution order.
        index: u16,
        /// Its kind code (see [`crate::ops::OpKind`]).
        kind: u16,
        /// What is wrong.
        problem: OpProblem,
    },
    /// The memory plan lets a tensor's arena bytes be overwritten while it is still needed,
    /// or an op reads a tensor before anything wrote it.
    Plan {
        /// The tensor at fault.
        tensor: u16,
        /// What is wrong.
        problem: PlanProblem,
    },
    /// A graph input or output entry is invalid.
    GraphIo {
        /// `true` for an output, `false` for an input.
        output: bool,
        /// Position in the input or output list.
        index: u16,
        /// What is wrong.
        problem: &'static str,
    },
    /// The training plan (format 1.1) names an op or channel that cannot be trained.
    Training {
        /// Position of the layer record in the plan.
        layer: u16,
        /// What is wrong.
        problem: &'static str,
    },
}

/// What is wrong with a tensor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TensorProblem {
    /// The record does not decode (it may use a feature of a newer format).
    Malformed,
    /// A zero dimension, a rank above the maximum, or an element count that overflows.
    Shape,
    /// The quantization parameters are invalid; the text says which.
    Quantization(&'static str),
    /// The data lies outside the weight blob.
    DataOutOfBounds,
    /// The data's offset is not a multiple of the element size.
    DataMisaligned,
    /// The arena range lies outside the planned arena size.
    ArenaOutOfBounds,
    /// The arena offset is not a multiple of the arena alignment.
    ArenaMisaligned,
}

/// What is wrong with the memory plan, found by [`crate::Model::check_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PlanProblem {
    /// It shares arena bytes with this other tensor while both are live.
    Overlaps(u16),
    /// This op reads it before any op wrote it (and it is not a graph input).
    ReadBeforeWritten(u16),
    /// More than one op writes it, or an op writes a graph input.
    WrittenTwice,
}

/// Which operand of an op an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// The op as a whole.
    Op,
    /// Input `n`.
    Input(u8),
    /// Output `n`.
    Output(u8),
    /// Temporary (scratch) tensor `n`.
    Temporary(u8),
}

/// What is wrong with an op record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OpProblem {
    /// The record does not decode.
    Malformed,
    /// This runtime does not know the op kind (the file may need a newer loam).
    UnknownKind,
    /// The attributes do not decode.
    Attributes,
    /// An attribute has a value the op cannot take; the text names the attribute.
    Attribute(&'static str),
    /// Wrong number of operands in a list.
    Arity {
        /// The list (`Input(0)`, `Output(0)` or `Temporary(0)` stand for the whole list).
        slot: Slot,
        /// Fewest allowed.
        min: u8,
        /// Most allowed.
        max: u8,
        /// How many there are.
        actual: u8,
    },
    /// A tensor index is out of range, or a required operand is absent.
    Missing(Slot),
    /// The operand has an element type the op does not take with the others.
    DType(Slot),
    /// The operand's shape is inconsistent with the op's other operands or attributes; the
    /// text says how.
    Shape(Slot, &'static str),
    /// The operand's quantization is missing or not what the op needs; the text says how.
    Quantization(Slot, &'static str),
    /// The operand must be a constant in the weight blob.
    NotConstant(Slot),
    /// The operand must live in the arena.
    NotInArena(Slot),
    /// An output overlaps an input or another output in the arena in a way the op does not
    /// allow.
    Aliasing(Slot),
    /// A temporary buffer is smaller than the op needs.
    ScratchTooSmall {
        /// Bytes needed.
        needed: u32,
    },
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Op => f.write_str("the op"),
            Slot::Input(n) => write!(f, "input {n}"),
            Slot::Output(n) => write!(f, "output {n}"),
            Slot::Temporary(n) => write!(f, "temporary {n}"),
        }
    }
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Malformed => {
                f.write_str("record is malformed (or uses a feature of a newer format)")
            }
            TensorProblem::Shape => {
                f.write_str("shape has a zero dimension, too many dimensions or too many elements")
            }
            TensorProblem::Quantization(what) => write!(f, "invalid quantization: {what}"),
            TensorProblem::DataOutOfBounds => f.write_str("data lies outside the weight blob"),
            TensorProblem::DataMisaligned => {
                f.write_str("data offset is not a multiple of the element size")
            }
            TensorProblem::ArenaOutOfBounds => {
                f.write_str("arena range lies outside the planned arena size")
            }
            TensorProblem::ArenaMisaligned => {
                f.write_str("arena offset is not a multiple of the arena alignment")
            }
        }
    }
}

impl fmt::Display for OpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpProblem::Malformed => f.write_str("record is malformed"),
            OpProblem::UnknownKind => f.write_str(
                "this runtime does not know the op kind (the file may need a newer loam)",
            ),
            OpProblem::Attributes => f.write_str("attributes are malformed"),
            OpProblem::Attribute(what) => write!(f, "invalid attribute: {what}"),
            OpProblem::Arity {
                slot,
                min,
                max,
                actual,
            } => {
                let list = match slot {
                    Slot::Output(_) => "outputs",
                    Slot::Temporary(_) => "temporaries",
                    _ => "inputs",
                };
                if min == max {
                    write!(f, "has {actual} {list}, needs {min}")
                } else {
                    write!(f, "has {actual} {list}, needs {min} to {max}")
                }
            }
            OpProblem::Missing(slot) => write!(f, "{slot} is absent or out of range"),
            OpProblem::DType(slot) => write!(f, "{slot} has an element type the op does not take"),
            OpProblem::Shape(slot, what) => write!(f, "{slot} has the wrong shape: {what}"),
            OpProblem::Quantization(slot, what) => {
                write!(f, "{slot} has unusable quantization: {what}")
            }
            OpProblem::NotConstant(slot) => write!(f, "{slot} must be a constant"),
            OpProblem::NotInArena(slot) => write!(f, "{slot} must live in the arena"),
            OpProblem::Aliasing(slot) => {
                write!(f, "{slot} overlaps another operand in the arena")
            }
            OpProblem::ScratchTooSmall { needed } => {
                write!(
                    f,
                    "its scratch buffer is smaller than the {needed} bytes it needs"
                )
            }
        }
    }
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanProblem::Overlaps(other) => {
                write!(
                    f,
                    "shares arena bytes with tensor {other} while both are live"
                )
            }
            PlanProblem::ReadBeforeWritten(op) => {
                write!(f, "op {op} reads it before anything writes it")
            }
            PlanProblem::WrittenTwice => {
                f.write_str("is written by more than one op, or is a graph input an op writes")
            }
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Truncated { needed, actual } => write!(
                f,
                "truncated: the file needs {needed} bytes but only {actual} were given"
            ),
            LoadError::NotALoamFile => f.write_str("not a .loam file (bad magic)"),
            LoadError::UnsupportedVersion { major, minor } => write!(
                f,
                "written in format {major}.{minor}; this runtime reads format {}.x",
                crate::format::FORMAT_MAJOR
            ),
            LoadError::Misaligned => f.write_str(
                "the model bytes are not 4-byte aligned (use loam::include_model! or an aligned buffer)",
            ),
            LoadError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (the file is damaged)"
            ),
            LoadError::Preamble(what) => write!(f, "invalid preamble: {what}"),
            LoadError::Header(what) => write!(f, "invalid header: {what}"),
            LoadError::Tensor { index, problem } => write!(f, "tensor {index}: {problem}"),
            LoadError::Op {
                index,
                kind,
                problem,
            } => match crate::ops::OpKind::from_code(*kind) {
                Some(k) => write!(f, "op {index} ({}): {problem}", k.name()),
                None => write!(f, "op {index} (kind {kind}): {problem}"),
            },
            LoadError::Plan { tensor, problem } => {
                write!(f, "memory plan: tensor {tensor} {problem}")
            }
            LoadError::GraphIo {
                output,
                index,
                problem,
            } => {
                let which = if *output { "output" } else { "input" };
                write!(f, "graph {which} {index}: {problem}")
            }
            LoadError::Training { layer, problem } => {
                write!(f, "training plan, layer {layer}: {problem}")
            }
        }
    }
}

impl core::error::Error for LoadError {}
