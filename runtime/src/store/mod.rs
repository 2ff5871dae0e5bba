//! Checkpoints: what a device learned, kept in flash so that a power cut at any instant loses
//! at most the save in progress, never the previous one and never the model.
//!
//! A checkpoint is an opaque payload (the trainer's parameters and optimizer state) behind a
//! fixed 32-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `LMCK` |
//! | 4..6, 6..8 | format major, minor (little-endian `u16`) |
//! | 8..12 | sequence number, one more than the newest checkpoint in the store |
//! | 12..16 | payload length in bytes |
//! | 16..24 | [`ModelId`] of the model the payload belongs to |
//! | 24..28 | CRC-32 (ISO-HDLC) of the payload |
//! | 28..32 | CRC-32 of bytes 0..28 |
//!
//! [`CheckpointStore`] keeps two such slots in a flash region through the `embedded-storage`
//! [`NorFlash`](embedded_storage::nor_flash::NorFlash) trait, so any board's flash driver plugs
//! in. A save erases the slot that does not hold the current checkpoint, writes the payload,
//! and writes the header last: until the header's final byte is programmed the slot is not
//! valid, and the other slot still is. On boot the newest valid slot of the running model wins.
//! [`sim::SimulatedNorFlash`] is a RAM flash with NOR's rules and injectable power cuts, for
//! tests and for running under QEMU; with `std`, `file` keeps the same image in a file.

#[cfg(feature = "std")]
pub mod file;
pub mod sim;
mod slots;

pub use slots::{CheckpointInfo, CheckpointStore, SlotStatus};

use core::fmt;

use crate::format::Model;

/// The four bytes every checkpoint header starts with.
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"LMCK";
/// The checkpoint format's major version; a header with another major version is not read.
pub const CHECKPOINT_MAJOR: u16 = 1;
/// The checkpoint format's minor version this runtime writes.
pub const CHECKPOINT_MINOR: u16 = 0;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 32;

static CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
static CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// Identifies the model a checkpoint was trained from: CRC-64/XZ of the whole `.loam` file.
/// A checkpoint is only ever restored into the model it was saved from; after a firmware
/// update brings a new model, the old model's checkpoints are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelId(pub u64);

impl ModelId {
    /// The identity of a loaded model. Computed over the file once (about a cycle per byte
    /// with the table-driven CRC), so call it at boot and keep the result.
    pub fn of(model: &Model<'_>) -> ModelId {
        ModelId(CRC64.checksum(model.file_bytes()))
    }

    /// The identity of raw model bytes, for hosts that hold a file without loading it.
    /// Equal to [`ModelId::of`] for the same file without trailing padding.
    pub fn of_bytes(file: &[u8]) -> ModelId {
        ModelId(CRC64.checksum(file))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A checkpoint header, as written before its payload in a slot or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CheckpointHeader {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Grows by one with every save; the valid slot with the larger number (in serial-number
    /// arithmetic, so it may wrap) is the newer.
    pub sequence: u32,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// The model the payload belongs to.
    pub model: ModelId,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
}

impl CheckpointHeader {
    /// A header of the current format version for `payload`.
    pub fn new(sequence: u32, model: ModelId, payload_len: u32, payload_crc: u32) -> Self {
        CheckpointHeader {
            major: CHECKPOINT_MAJOR,
            minor: CHECKPOINT_MINOR,
            sequence,
            payload_len,
            model,
            payload_crc,
        }
    }

    /// The header's bytes, its own checksum last.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
        h[4..6].copy_from_slice(&self.major.to_le_bytes());
        h[6..8].copy_from_slice(&self.minor.to_le_bytes());
        h[8..12].copy_from_slice(&self.sequence.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.model.0.to_le_bytes());
        h[24..28].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = CRC32.checksum(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads a header, checking its magic, checksum and major version (not the payload).
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<CheckpointHeader, SlotProblem> {
        if h.iter().all(|&b| b == 0xFF) {
            return Err(SlotProblem::Erased);
        }
        if h[0..4] != CHECKPOINT_MAGIC {
            return Err(SlotProblem::NotACheckpoint);
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if CRC32.checksum(&h[..28]) != u32_at(28) {
            return Err(SlotProblem::HeaderChecksum);
        }
        let major = u16::from_le_bytes([h[4], h[5]]);
        let minor = u16::from_le_bytes([h[6], h[7]]);
        if major != CHECKPOINT_MAJOR {
            return Err(SlotProblem::UnsupportedVersion { major, minor });
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[16..24]);
        Ok(CheckpointHeader {
            major,
            minor,
            sequence: u32_at(8),
            payload_len: u32_at(12),
            model: ModelId(u64::from_le_bytes(id)),
            payload_crc: u32_at(24),
        })
    }

    /// Whether this header is newer than `other` (serial-number comparison, so a sequence
    /// that wrapped past `u32::MAX` still counts as newer).
    pub fn is_newer_than(&self, other: &CheckpointHeader) -> bool {
        (self.sequence.wrapping_sub(other.sequence) as i32) > 0
    }
}

/// CRC-32 of a payload given in parts, as the header records it.
pub fn payload_crc(parts: &[&[u8]]) -> u32 {
    let mut digest = CRC32.digest();
    for part in parts {
        digest.update(part);
    }
    digest.finalize()
}

/// Reads a single-slot image (a checkpoint file, or one slot of a flash dump read back from a
/// board): the header and its payload, fully checked.
pub fn decode_image(image: &[u8]) -> Result<(CheckpointHeader, &[u8]), SlotProblem> {
    let Some(head) = image.first_chunk::<HEADER_LEN>() else {
        return Err(SlotProblem::Truncated);
    };
    let header = CheckpointHeader::decode(head)?;
    let payload = image
        .get(HEADER_LEN..)
        .and_then(|rest| rest.get(..header.payload_len as usize))
        .ok_or(SlotProblem::Truncated)?;
    if CRC32.checksum(payload) != header.payload_crc {
        return Err(SlotProblem::PayloadChecksum);
    }
    Ok((header, payload))
}

/// Why a slot (or a checkpoint file) holds no usable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SlotProblem {
    /// The header is all `0xFF`: never written since the last erase.
    Erased,
    /// The header does not start with `LMCK`.
    NotACheckpoint,
    /// The header's checksum does not match: a save was cut while writing it.
    HeaderChecksum,
    /// Written by a checkpoint format with another major version.
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The header claims more payload than the slot (or file) holds.
    Truncated,
    /// The payload's checksum does not match the header.
    PayloadChecksum,
}

impl fmt::Display for SlotProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotProblem::Erased => f.write_str("erased (no checkpoint written)"),
            SlotProblem::NotACheckpoint => f.write_str("not a loam checkpoint (bad magic)"),
            SlotProblem::HeaderChecksum => {
                f.write_str("header checksum mismatch (a save was interrupted)")
            }
            SlotProblem::UnsupportedVersion { major, minor } => write!(
                f,
                "checkpoint format {major}.{minor}; this runtime reads {CHECKPOINT_MAJOR}.x"
            ),
            SlotProblem::Truncated => f.write_str("payload extends past the end of the slot"),
            SlotProblem::PayloadChecksum => f.write_str("payload checksum mismatch"),
        }
    }
}

impl core::error::Error for SlotProblem {}

/// What a flash driver reported, mirrored from `embedded-storage`'s `NorFlashErrorKind` so
/// that it can be logged with defmt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FlashFault {
    /// An offset or length was not a multiple of the flash's read/write/erase size.
    NotAligned,
    /// An offset or length was beyond the flash.
    OutOfBounds,
    /// Anything else the driver reports (a program or erase failure, a lost power supply).
    Other,
}

impl From<embedded_storage::nor_flash::NorFlashErrorKind> for FlashFault {
    fn from(kind: embedded_storage::nor_flash::NorFlashErrorKind) -> Self {
        use embedded_storage::nor_flash::NorFlashErrorKind as K;
        match kind {
            K::NotAligned => FlashFault::NotAligned,
            K::OutOfBounds => FlashFault::OutOfBounds,
            _ => FlashFault::Other,
        }
    }
}

/// Why a checkpoint could not be saved or loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError {
    /// The flash driver failed; the previous checkpoint is still intact.
    Flash(FlashFault),
    /// The region or slot size does not suit the flash (the reason names the rule).
    Geometry(&'static str),
    /// The payload does not fit in a slot.
    TooLarge {
        /// Bytes a slot can hold after its header.
        capacity: usize,
        /// Bytes that were to be saved.
        len: usize,
    },
    /// The caller's buffer is smaller than the checkpoint.
    BufferTooSmall {
        /// The checkpoint's payload length.
        needed: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// What was read back differs from what was just written or verified: the flash is
    /// failing (worn out, or written to by someone else).
    ReadBackMismatch,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Flash(FlashFault::NotAligned) => {
                f.write_str("flash driver: access not aligned")
            }
            StoreError::Flash(FlashFault::OutOfBounds) => {
                f.write_str("flash driver: access out of bounds")
            }
            StoreError::Flash(FlashFault::Other) => {
                f.write_str("flash driver: program or erase failed")
            }
            StoreError::Geometry(why) => write!(f, "checkpoint region: {why}"),
            StoreError::TooLarge { capacity, len } => write!(
                f,
                "checkpoint of {len} bytes does not fit a slot of {capacity} bytes"
            ),
            StoreError::BufferTooSmall { needed, actual } => write!(
                f,
                "checkpoint of {needed} bytes does not fit the {actual}-byte buffer"
            ),
            StoreError::ReadBackMismatch => {
                f.write_str("flash read back differs from what was written")
            }
        }
    }
}

impl core::error::Error for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CheckpointHeader {
        CheckpointHeader::new(7, ModelId(0x0123_4567_89ab_cdef), 100, 0xdead_beef)
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(CheckpointHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn every_single_bit_flip_of_a_header_is_caught() {
        let bytes = header().encode();
        for bit in 0..HEADER_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(CheckpointHeader::decode(&b).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn erased_and_foreign_headers_are_named() {
        assert_eq!(
            CheckpointHeader::decode(&[0xFF; HEADER_LEN]),
            Err(SlotProblem::Erased)
        );
        assert_eq!(
            CheckpointHeader::decode(&[0; HEADER_LEN]),
            Err(SlotProblem::NotACheckpoint)
        );
    }

    #[test]
    fn a_newer_major_version_is_refused_with_its_number() {
        let mut h = header();
        h.major = CHECKPOINT_MAJOR + 1;
        h.minor = 3;
        assert_eq!(
            CheckpointHeader::decode(&h.encode()),
            Err(SlotProblem::UnsupportedVersion {
                major: CHECKPOINT_MAJOR + 1,
                minor: 3
            })
        );
    }

    #[test]
    fn sequence_comparison_survives_wrapping() {
        let mut a = header();
        let mut b = header();
        a.sequence = u32::MAX;
        b.sequence = 0;
        assert!(b.is_newer_than(&a));
        assert!(!a.is_newer_than(&b));
        assert!(!a.is_newer_than(&a));
    }

    #[test]
    fn images_are_checked_to_the_last_payload_byte() {
        let payload = [1u8, 2, 3, 4, 5];
        let h = CheckpointHeader::new(1, ModelId(9), 5, payload_crc(&[&payload]));
        let mut image = h.encode().to_vec();
        image.extend_from_slice(&payload);
        assert_eq!(decode_image(&image), Ok((h, &payload[..])));
        assert_eq!(
            decode_image(&image[..image.len() - 1]),
            Err(SlotProblem::Truncated)
        );
        image[HEADER_LEN + 4] ^= 1;
        assert_eq!(decode_image(&image), Err(SlotProblem::PayloadChecksum));
        assert_eq!(decode_image(&image[..10]), Err(SlotProblem::Truncated));
    }

    /// A tiny valid model: one f32 ReLU.
    pub(crate) fn tiny_model(name: &str) -> std::vec::Vec<u8> {
        use crate::format::writer::{ModelBuilder, QuantSpec};
        use crate::ops::activation::Unary;
        let mut b = ModelBuilder::new(name);
        let x = b
            .tensor("x", crate::DType::F32, &[1, 4], QuantSpec::None)
            .unwrap();
        b.input(x);
        let y = b.activation_f32("relu", x, Unary::Relu).unwrap();
        b.output(y);
        b.build().unwrap().bytes
    }

    #[test]
    fn model_id_covers_the_file_without_padding() {
        let bytes = tiny_model("a");
        let aligned = crate::format::AlignedBytes::new(&bytes);
        let id = ModelId::of(&Model::from_bytes(&aligned).unwrap());
        assert_eq!(id, ModelId::of_bytes(&bytes));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0xFF; 64]);
        let padded = crate::format::AlignedBytes::new(&padded);
        assert_eq!(ModelId::of(&Model::from_bytes(&padded).unwrap()), id);
        assert_ne!(ModelId::of_bytes(&tiny_model("b")), id);
    }
}
