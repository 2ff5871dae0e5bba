//! The `.loam` model format: a fixed preamble, a postcard header describing the graph and its
//! memory plan, and an aligned weight blob read in place. `runtime/FORMAT.md` is the
//! specification; this module is its reader (and, with `alloc`, its writer).
//!
//! [`Model::from_bytes`] validates everything once: the checksum, every record, every
//! tensor's bounds and every op's operands against its kind. After that, running the model
//! needs no further checks of the file, and no input bytes can make the runtime panic.

#[cfg(feature = "alloc")]
mod aligned;
mod decoded;
mod schema;
mod validate;
#[cfg(feature = "alloc")]
pub mod writer;

#[cfg(feature = "alloc")]
pub use aligned::AlignedBytes;
pub(crate) use decoded::{DecodedOp, DecodedTensor};
pub(crate) use schema::decode_exact;
pub use schema::{
    ChannelIds, ConstantRecord, Header, LayerUpdate, Metadata, NO_TENSOR, OpRecord, Storage, Table,
    TensorIds, TensorRecord, TrainedLayerRecord, TrainingPlan, WeightStorage,
};

use crate::error::LoadError;
use crate::tensor::{Element, Quantization};

/// The four bytes every `.loam` file starts with.
pub const MAGIC: [u8; 4] = *b"LOAM";
/// The format's major version: a file with another major version is refused.
pub const FORMAT_MAJOR: u16 = 1;
/// The newest minor version this runtime writes and fully understands. Files of any minor
/// version of [`FORMAT_MAJOR`] load when they only use what this runtime knows.
pub const FORMAT_MINOR: u16 = 3;
/// The minor version that added the trailing [`TrainingPlan`] header field. Writers use the
/// lowest minor version that expresses a file, so a model without a plan stays 1.0.
pub const MINOR_TRAINING_PLAN: u16 = 1;
/// The minor version that added 16x8 weighted layers (int16 activations, int8 weights); it
/// adds no header field. A file with such a layer is 1.2 (an older reader refuses the layer,
/// naming the op, as it does any element type it does not know there).
pub const MINOR_INT16_LAYERS: u16 = 2;
/// The minor version that added f16 weights for float layers (widened to f32 as the kernels
/// load them); it adds no header field. A file with an f16 tensor is 1.3 (an older reader
/// refuses the layer, naming the op).
pub const MINOR_F16_WEIGHTS: u16 = 3;
/// Size of the fixed preamble.
pub const PREAMBLE_LEN: usize = 32;
/// The blob's offset in the file is a multiple of this, so weights keep their alignment.
pub const BLOB_ALIGN: usize = 64;
/// Arena offsets are multiples of this, for aligned vector loads.
pub const ARENA_ALIGN: usize = 16;
/// The model's bytes must start at an address that is a multiple of this, so that weights of
/// up to 4-byte elements can be viewed in place.
pub const MODEL_ALIGN: usize = 4;

/// The fixed-layout start of a file (all fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Preamble {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Bytes covered by the checksum, preamble included.
    pub file_len: u32,
    /// Bytes of postcard header following the preamble.
    pub header_len: u32,
    /// Offset of the weight blob, a multiple of [`BLOB_ALIGN`].
    pub blob_offset: u32,
    /// Length of the weight blob.
    pub blob_len: u32,
    /// CRC-32 (ISO-HDLC) of the file with this field's four bytes left out.
    pub crc32: u32,
    /// Bytes of arena the memory plan needs; in the fixed preamble so that firmware can size
    /// its arena at compile time ([`arena_size`]).
    pub arena_size: u32,
}

/// Where the preamble keeps the file's CRC-32.
pub const CRC_OFFSET: usize = 24;
const ARENA_SIZE_OFFSET: usize = 28;

/// The arena size a `.loam` file's memory plan needs, read from its preamble; usable in a
/// `const` so firmware sizes its arena at compile time:
///
/// ```ignore
/// static MODEL: &[u8] = loam::include_model!("model.loam");
/// const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!("model.loam"));
/// static mut ARENA: [u8; ARENA_SIZE] = [0; ARENA_SIZE];
/// ```
///
/// Returns 0 for bytes that are not a `.loam` file (then [`crate::Interpreter::new`] reports
/// the real need once the model is loaded).
pub const fn arena_size(bytes: &[u8]) -> usize {
    if bytes.len() < PREAMBLE_LEN
        || bytes[0] != MAGIC[0]
        || bytes[1] != MAGIC[1]
        || bytes[2] != MAGIC[2]
        || bytes[3] != MAGIC[3]
    {
        return 0;
    }
    let o = ARENA_SIZE_OFFSET;
    u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
}

impl Preamble {
    /// Reads the preamble without validating anything but its length and magic.
    pub fn read(bytes: &[u8]) -> Result<Preamble, LoadError> {
        let Some(p) = bytes.get(..PREAMBLE_LEN) else {
            return Err(LoadError::Truncated {
                needed: PREAMBLE_LEN,
                actual: bytes.len(),
            });
        };
        if p[..4] != MAGIC {
            return Err(LoadError::NotALoamFile);
        }
        let u16_at = |i: usize| u16::from_le_bytes([p[i], p[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        Ok(Preamble {
            major: u16_at(4),
            minor: u16_at(6),
            file_len: u32_at(8),
            header_len: u32_at(12),
            blob_offset: u32_at(16),
            blob_len: u32_at(20),
            crc32: u32_at(CRC_OFFSET),
            arena_size: u32_at(ARENA_SIZE_OFFSET),
        })
    }

    /// The preamble's bytes.
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN] {
        let mut p = [0u8; PREAMBLE_LEN];
        p[..4].copy_from_slice(&MAGIC);
        p[4..6].copy_from_slice(&self.major.to_le_bytes());
        p[6..8].copy_from_slice(&self.minor.to_le_bytes());
        p[8..12].copy_from_slice(&self.file_len.to_le_bytes());
        p[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        p[16..20].copy_from_slice(&self.blob_offset.to_le_bytes());
        p[20..24].copy_from_slice(&self.blob_len.to_le_bytes());
        p[24..28].copy_from_slice(&self.crc32.to_le_bytes());
        p[28..32].copy_from_slice(&self.arena_size.to_le_bytes());
        p
    }
}

/// CRC-32 of a whole file with the stored checksum's bytes skipped.
pub fn checksum(file: &[u8]) -> u32 {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = crc.digest();
    digest.update(&file[..CRC_OFFSET.min(file.len())]);
    if file.len() > CRC_OFFSET + 4 {
        digest.update(&file[CRC_OFFSET + 4..]);
    }
    digest.finalize()
}

/// The header and the trailing fields the file's minor version says are there. Fields of a
/// minor version newer than this reader's are left unread, which the compatibility rule
/// allows: they only add to what the older fields mean.
fn read_header(
    bytes: &[u8],
    minor: u16,
) -> Result<(Header<'_>, Option<TrainingPlan<'_>>), LoadError> {
    const MALFORMED: LoadError = LoadError::Header("does not decode");
    if minor < MINOR_TRAINING_PLAN {
        return Ok((schema::decode_exact(bytes).ok_or(MALFORMED)?, None));
    }
    let (header, rest) = postcard::take_from_bytes::<Header<'_>>(bytes).map_err(|_| MALFORMED)?;
    let (training, rest) = postcard::take_from_bytes::<Option<TrainingPlan<'_>>>(rest)
        .map_err(|_| LoadError::Header("the training plan does not decode"))?;
    if minor <= FORMAT_MINOR && !rest.is_empty() {
        return Err(LoadError::Header("bytes after the last field"));
    }
    Ok((header, training))
}

/// A validated model, borrowing the file's bytes (flash, a memory-mapped file or a buffer).
/// Weights are read in place; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    file: &'a [u8],
    preamble: Preamble,
    header: Header<'a>,
    training: Option<TrainingPlan<'a>>,
    blob: &'a [u8],
}

impl<'a> Model<'a> {
    /// Parses and validates a `.loam` file. Never panics: any bytes either give a model that
    /// runs, or an error naming the field, tensor or op at fault.
    ///
    /// `bytes` must start at a 4-byte aligned address (see [`crate::include_model!`]) and may
    /// be longer than the file (flash padding is ignored).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, LoadError> {
        Self::parse(bytes, true)
    }

    /// Loads a file whose ops have no scratch buffers yet: the writer's first pass, which
    /// asks each op how much scratch it needs.
    #[cfg(feature = "alloc")]
    pub(crate) fn from_unplanned(bytes: &'a [u8]) -> Result<Model<'a>, LoadError> {
        Self::parse(bytes, false)
    }

    fn parse(bytes: &'a [u8], check_scratch: bool) -> Result<Model<'a>, LoadError> {
        let preamble = Preamble::read(bytes)?;
        if preamble.major != FORMAT_MAJOR {
            return Err(LoadError::UnsupportedVersion {
                major: preamble.major,
                minor: preamble.minor,
            });
        }
        if (bytes.as_ptr() as usize) % MODEL_ALIGN != 0 {
            return Err(LoadError::Misaligned);
        }
        let file_len = preamble.file_len as usize;
        let file = bytes.get(..file_len).ok_or(LoadError::Truncated {
            needed: file_len,
            actual: bytes.len(),
        })?;
        let computed = checksum(file);
        if computed != preamble.crc32 {
            return Err(LoadError::ChecksumMismatch {
                stored: preamble.crc32,
                computed,
            });
        }
        let header_end = PREAMBLE_LEN
            .checked_add(preamble.header_len as usize)
            .ok_or(LoadError::Preamble("header length overflows"))?;
        let blob_offset = preamble.blob_offset as usize;
        if header_end > blob_offset {
            return Err(LoadError::Preamble("header overlaps the blob"));
        }
        if blob_offset % BLOB_ALIGN != 0 {
            return Err(LoadError::Preamble("blob offset is not 64-byte aligned"));
        }
        let blob = blob_offset
            .checked_add(preamble.blob_len as usize)
            .and_then(|end| file.get(blob_offset..end))
            .ok_or(LoadError::Preamble("blob extends past the end of the file"))?;
        let (header, training) = read_header(&file[PREAMBLE_LEN..header_end], preamble.minor)?;
        let model = Model {
            file,
            preamble,
            header,
            training,
            blob,
        };
        validate::model(&model, check_scratch)?;
        Ok(model)
    }

    /// Checks the memory plan: no two tensors that are live at the same time share arena
    /// bytes (except an op computing in place), and no op reads an arena tensor before it is
    /// written. [`Model::from_bytes`] already guarantees memory safety without this; the plan
    /// check guarantees correct results from files written by other tools. It costs
    /// O(tensors^2 + tensors x ops) and uses no heap.
    pub fn check_plan(&self) -> Result<(), LoadError> {
        validate::plan(self)
    }

    /// What on-device training updates, when the file was written with a plan
    /// (`loam export --trainable`); checked at load against the ops it names.
    pub fn training_plan(&self) -> Option<TrainingPlan<'a>> {
        self.training
    }

    /// The postcard header as read (without the trailing fields of later minor versions).
    pub fn header(&self) -> &Header<'a> {
        &self.header
    }

    /// The file's format version, `(major, minor)`.
    pub fn format_version(&self) -> (u16, u16) {
        (self.preamble.major, self.preamble.minor)
    }

    /// The whole file, from its magic to the last byte the checksum covers (flash padding
    /// after it left out): what a checkpoint's [`crate::store::ModelId`] is computed over.
    pub fn file_bytes(&self) -> &'a [u8] {
        self.file
    }

    /// The preamble as read.
    pub fn preamble(&self) -> &Preamble {
        &self.preamble
    }

    /// Name, version, description, labels and preprocessing constants.
    pub fn metadata(&self) -> &Metadata<'a> {
        &self.header.metadata
    }

    /// Class labels in output order.
    pub fn labels(&self) -> impl Iterator<Item = &'a str> + '_ {
        let table = self.header.metadata.labels;
        (0..table.len()).filter_map(move |i| table.get::<&str>(i))
    }

    /// The preprocessing constant called `name`.
    pub fn constant(&self, name: &str) -> Option<ConstantRecord<'a>> {
        let table = self.header.metadata.constants;
        (0..table.len())
            .filter_map(|i| table.get::<ConstantRecord<'_>>(i))
            .find(|c| c.name == name)
    }

    /// Bytes of arena the memory plan needs: what [`crate::Interpreter::new`] requires
    /// (plus up to [`ARENA_ALIGN`]` - 1` if the arena's start is not aligned).
    pub fn arena_size(&self) -> usize {
        self.preamble.arena_size as usize
    }

    /// The weight blob.
    pub fn blob(&self) -> &'a [u8] {
        self.blob
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.header.tensors.len()
    }

    /// Tensor `index`'s record.
    pub fn tensor(&self, index: usize) -> Option<TensorRecord<'a>> {
        self.header.tensors.get(index)
    }

    /// Tensor `index`'s record with an empty name, for the ops as they run (see
    /// [`schema::OperandRecord`]).
    pub(crate) fn operand_tensor(&self, index: usize) -> Option<TensorRecord<'a>> {
        schema::OperandRecord::decode(&self.header.tensors, index)
    }

    /// Number of ops.
    pub fn op_count(&self) -> usize {
        self.header.ops.len()
    }

    /// Op `index`'s record (in execution order).
    pub fn op(&self, index: usize) -> Option<OpRecord<'a>> {
        self.header.ops.get(index)
    }

    /// The ops in execution order.
    pub fn ops(&self) -> impl Iterator<Item = OpRecord<'a>> + '_ {
        (0..self.op_count()).filter_map(|i| self.op(i))
    }

    /// Tensor indices of the graph inputs.
    pub fn inputs(&self) -> TensorIds<'a> {
        self.header.inputs
    }

    /// Tensor indices of the graph outputs.
    pub fn outputs(&self) -> TensorIds<'a> {
        self.header.outputs
    }

    /// The position among the graph inputs of the one called `name`.
    pub fn input_position(&self, name: &str) -> Option<usize> {
        self.position(self.header.inputs, name)
    }

    /// The position among the graph outputs of the one called `name`.
    pub fn output_position(&self, name: &str) -> Option<usize> {
        self.position(self.header.outputs, name)
    }

    fn position(&self, ids: TensorIds<'_>, name: &str) -> Option<usize> {
        ids.iter()
            .position(|t| self.tensor(usize::from(t)).is_some_and(|r| r.name == name))
    }

    /// The bytes of a constant tensor, or `None` for an arena tensor.
    pub fn constant_bytes(&self, tensor: &TensorRecord<'_>) -> Option<&'a [u8]> {
        match tensor.storage {
            Storage::Constant { offset } => {
                let start = offset as usize;
                self.blob.get(start..start.checked_add(tensor.byte_len()?)?)
            }
            Storage::Arena { .. } => None,
        }
    }

    /// A constant tensor's elements, viewed in place; `None` for arena tensors or the wrong
    /// element type.
    pub fn constant_data<T: Element>(&self, tensor: &TensorRecord<'_>) -> Option<&'a [T]> {
        if tensor.dtype != T::DTYPE {
            return None;
        }
        bytemuck::try_cast_slice(self.constant_bytes(tensor)?).ok()
    }

    /// The per-channel scales of a tensor with [`Quantization::PerChannel`].
    pub fn channel_scales(&self, tensor: &TensorRecord<'_>) -> Option<&'a [f32]> {
        match tensor.quantization {
            Quantization::PerChannel {
                axis,
                scales_offset,
            } => {
                let start = scales_offset as usize;
                let len = tensor.shape.dim(usize::from(axis)).checked_mul(4)?;
                bytemuck::try_cast_slice(self.blob.get(start..start.checked_add(len)?)?).ok()
            }
            _ => None,
        }
    }
}

/// Embeds a `.loam` file in the program at the alignment [`Model::from_bytes`] needs, as a
/// `&'static [u8]`: `static MODEL: &[u8] = loam::include_model!("model.loam");`.
#[macro_export]
macro_rules! include_model {
    ($path:expr) => {{
        #[repr(C, align(16))]
        struct Aligned<B: ?Sized>(B);
        static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records the ops decode as they run are the full records but for the name, for
    /// every tensor of a file with every kind of quantization and storage.
    #[test]
    fn operand_records_are_the_tensor_records_without_their_names() {
        for bytes in [
            crate::include_model!("../../tests/data/int8-zoo.loam"),
            crate::include_model!("../../tests/data/f16-weights.loam"),
            crate::include_model!("../../tests/data/int16-layers.loam"),
        ] {
            let model = Model::from_bytes(bytes).unwrap();
            assert!(model.tensor_count() > 0);
            for i in 0..model.tensor_count() {
                let full = model.tensor(i).unwrap();
                assert_eq!(
                    model.operand_tensor(i),
                    Some(TensorRecord { name: "", ..full })
                );
            }
            assert_eq!(model.operand_tensor(model.tensor_count()), None);
        }
    }
}
