//! Tensor and op records decoded once into a fixed layout of plain words, which an
//! interpreter keeps in the spare tail of its arena (see [`crate::Interpreter::new`]).
//! Reading one back is a few loads, where decoding the postcard record again takes tens of
//! nanoseconds: a large share of a small layer's time.
//!
//! Words rather than the [`TensorRecord`] itself because the cache lives in the caller's byte
//! arena: a padding-free `Pod` is written there without `unsafe` and leaves every byte
//! initialised for the caller to reuse afterwards, which a struct with references, padding
//! and enum payloads would not.

use bytemuck::{Pod, Zeroable};

use super::{Model, OpRecord, Storage, TensorIds, TensorRecord};
use crate::fixed_point::QuantizedMultiplier;
use crate::tensor::{DType, MAX_RANK, Quantization, Shape};

/// One tensor's record, its name left out (no op reads it), plus whether its data holds
/// valid requantization multipliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct DecodedTensor {
    dtype: u32,
    rank: u32,
    dims: [u32; MAX_RANK],
    /// 0 none, 1 per tensor, 2 per channel.
    quantization: u32,
    /// The scale's bits (per tensor) or the channel axis (per channel).
    quantization_a: u32,
    /// The zero point (per tensor) or the scales' blob offset (per channel).
    quantization_b: u32,
    /// 0 arena, 1 constant.
    storage: u32,
    offset: u32,
    /// 1 when the tensor is an int32 constant whose every `[multiplier, shift]` pair is in
    /// range, checked once here instead of each time its layer runs.
    multipliers: u32,
}

// The sizes `loam_model_arena_size`'s documentation gives (the C API).
const _: () = assert!(core::mem::size_of::<DecodedTensor>() == 56);
const _: () = assert!(core::mem::size_of::<DecodedOp>() == 44);

const DTYPES: [DType; 5] = [DType::F32, DType::F16, DType::I8, DType::I16, DType::I32];

impl DecodedTensor {
    /// Tensor `index` of `model`; `None` past the last one.
    pub fn decode(model: &Model<'_>, index: usize) -> Option<DecodedTensor> {
        let record = model.operand_tensor(index)?;
        let multipliers = model
            .constant_data::<i32>(&record)
            .and_then(QuantizedMultiplier::slice_from_raw)
            .is_some();
        let (rank, dims) = record.shape.stored();
        let (quantization, quantization_a, quantization_b) = match record.quantization {
            Quantization::None => (0, 0, 0),
            Quantization::PerTensor { scale, zero_point } => {
                (1, scale.to_bits(), zero_point as u32)
            }
            Quantization::PerChannel {
                axis,
                scales_offset,
            } => (2, u32::from(axis), scales_offset),
        };
        let (storage, offset) = match record.storage {
            Storage::Arena { offset } => (0, offset),
            Storage::Constant { offset } => (1, offset),
        };
        Some(DecodedTensor {
            dtype: DTYPES.iter().position(|&d| d == record.dtype)? as u32,
            rank: u32::from(rank),
            dims,
            quantization,
            quantization_a,
            quantization_b,
            storage,
            offset,
            multipliers: u32::from(multipliers),
        })
    }

    /// The record as [`Model::operand_tensor`] gives it (empty name); `None` for words that
    /// no record encodes to.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn record(&self) -> Option<TensorRecord<'static>> {
        let quantization = match self.quantization {
            0 => Quantization::None,
            1 => Quantization::PerTensor {
                scale: f32::from_bits(self.quantization_a),
                zero_point: self.quantization_b as i32,
            },
            2 => Quantization::PerChannel {
                axis: u8::try_from(self.quantization_a).ok()?,
                scales_offset: self.quantization_b,
            },
            _ => return None,
        };
        let storage = match self.storage {
            0 => Storage::Arena {
                offset: self.offset,
            },
            1 => Storage::Constant {
                offset: self.offset,
            },
            _ => return None,
        };
        Some(TensorRecord {
            name: "",
            dtype: *DTYPES.get(self.dtype as usize)?,
            shape: Shape::from_stored(u8::try_from(self.rank).ok()?, self.dims)?,
            quantization,
            storage,
        })
    }

    /// Whether the tensor's data was checked to be valid `[multiplier, shift]` pairs
    /// ([`QuantizedMultiplier::slice_from_raw`] accepted it).
    #[inline]
    pub fn holds_multipliers(&self) -> bool {
        self.multipliers == 1
    }
}

/// One op's record, its name left out: the kind and where its lists lie in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct DecodedOp {
    kind: u32,
    /// `(start, len)` in the file's bytes of the inputs, outputs, temporaries and attributes.
    lists: [[u32; 2]; 4],
    /// `(start, len)` of the op's prepared words in the interpreter's word table
    /// ([`crate::ops::prepare`]).
    prepared: [u32; 2],
}

impl DecodedOp {
    /// Op `index` of `model`, its prepared words at `prepared` (start and length) in the
    /// interpreter's word table; `None` past the last op.
    pub fn decode(model: &Model<'_>, index: usize, prepared: (usize, usize)) -> Option<DecodedOp> {
        let record = model.op(index)?;
        let file = model.file_bytes();
        let place = |list: &[u8]| -> Option<[u32; 2]> {
            if list.is_empty() {
                return Some([0, 0]);
            }
            let start = (list.as_ptr() as usize).checked_sub(file.as_ptr() as usize)?;
            // The lists are borrowed from the header, inside the file; checked, not assumed.
            let placed = file.get(start..start.checked_add(list.len())?)?;
            (placed.as_ptr() == list.as_ptr())
                .then_some([u32::try_from(start).ok()?, u32::try_from(list.len()).ok()?])
        };
        Some(DecodedOp {
            kind: u32::from(record.kind),
            lists: [
                place(record.inputs.0)?,
                place(record.outputs.0)?,
                place(record.temporaries.0)?,
                place(record.attributes)?,
            ],
            prepared: [
                u32::try_from(prepared.0).ok()?,
                u32::try_from(prepared.1).ok()?,
            ],
        })
    }

    /// Where the op's prepared words lie in the interpreter's word table.
    #[inline]
    pub fn prepared(&self) -> core::ops::Range<usize> {
        let [start, len] = self.prepared.map(|w| w as usize);
        start..start.saturating_add(len)
    }

    /// The record as [`Model::op`] gives it, its name empty; `None` if a list lies outside
    /// `model`'s file (a record decoded from another model).
    #[inline]
    pub fn record<'a>(&self, model: &Model<'a>) -> Option<OpRecord<'a>> {
        let file = model.file_bytes();
        let list = |[start, len]: [u32; 2]| {
            let start = start as usize;
            file.get(start..start.checked_add(len as usize)?)
        };
        Some(OpRecord {
            kind: u16::try_from(self.kind).ok()?,
            name: "",
            inputs: TensorIds(list(self.lists[0])?),
            outputs: TensorIds(list(self.lists[1])?),
            temporaries: TensorIds(list(self.lists[2])?),
            attributes: list(self.lists[3])?,
        })
    }
}
