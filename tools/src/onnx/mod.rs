//! ONNX in and out of loam: ONNX models (float or QDQ int8) imported as `.loam`, and a
//! `.loam` model written as an ONNX graph that ONNX Runtime and tract run, float models as
//! plain ONNX and int8 models in the standard QDQ form.
//!
//! The protobuf types are `tract_onnx::pb` (prost code generated from `onnx.proto`), so the
//! files written here are read back by the same definitions tract uses.

mod export;
pub mod fuzzing;
pub mod import;
pub(crate) mod proto;
pub(crate) mod qdq;

pub use export::{
    ExportOptions, export, export_bytes, exposed_tensors, has_int16_tensors, quantizes_a_softmax,
};
pub use import::{CompatibilityReport, ImportOptions, Imported, import, import_bytes};

/// The ONNX operator set exported graphs declare: 17 has every op loam exports with the
/// signatures used here (`Softmax` over one axis, `Clip`/`Pad` bounds as inputs, per-axis
/// `QuantizeLinear`/`DequantizeLinear`, `HardSwish`) and both peers load it.
pub const OPSET: i64 = 17;

/// The ONNX IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 8;
