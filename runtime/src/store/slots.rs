//! Two checkpoint slots (A/B) in a NOR flash region.

use embedded_storage::nor_flash::{NorFlash, NorFlashError};

use super::{
    CRC32, CheckpointHeader, FlashFault, HEADER_LEN, ModelId, SlotProblem, StoreError, payload_crc,
};

/// Bytes moved per flash call. Reads and writes go through a buffer of this size on the
/// stack, so the store needs no heap and at most this much stack beyond its frame; flash
/// write and read sizes must divide it.
const STAGE: usize = 256;

/// Where a checkpoint was found or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CheckpointInfo {
    /// The slot (0 or 1).
    pub slot: usize,
    /// Its header.
    pub header: CheckpointHeader,
}

impl CheckpointInfo {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.header.payload_len as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.header.payload_len == 0
    }
}

/// What one slot holds, for diagnostics (`loam checkpoint` and boot logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotStatus {
    /// A complete checkpoint (header and payload checksums match), of any model.
    Valid(CheckpointHeader),
    /// No usable checkpoint, and why.
    Invalid(SlotProblem),
}

/// A pair of checkpoint slots in a flash region, each `slot_size` bytes (a multiple of the
/// flash's erase size), the second right after the first.
///
/// [`save`](Self::save) never touches the slot holding the checkpoint [`load`](Self::load)
/// returns, and makes the new slot valid only with the last bytes it writes, so a power cut at
/// any point leaves either the previous checkpoint or the new one, complete. It never programs
/// a flash word twice between erases, which ECC flash (STM32L4/H7 and others) forbids.
#[derive(Debug)]
pub struct CheckpointStore<F> {
    flash: F,
    start: u32,
    slot_size: u32,
}

impl<F: NorFlash> CheckpointStore<F> {
    /// A store over `flash[start .. start + 2 * slot_size]`. Checks the geometry once: the
    /// region is inside the flash and erase-aligned, a slot holds at least a header, and the
    /// flash's read and write sizes are powers of two of at most 256 bytes.
    pub fn new(flash: F, start: u32, slot_size: u32) -> Result<Self, StoreError> {
        let (erase, write, read) = (F::ERASE_SIZE, F::WRITE_SIZE, F::READ_SIZE);
        for size in [write, read] {
            if !size.is_power_of_two() || size > STAGE {
                return Err(StoreError::Geometry(
                    "flash read/write size is not a power of two of at most 256 bytes",
                ));
            }
        }
        if erase == 0 || start as usize % erase != 0 || slot_size as usize % erase != 0 {
            return Err(StoreError::Geometry(
                "region start and slot size must be multiples of the erase size",
            ));
        }
        if slot_size as usize % write != 0 || slot_size as usize % read != 0 {
            return Err(StoreError::Geometry(
                "slot size must be a multiple of the read and write sizes",
            ));
        }
        let header_area = header_area::<F>();
        if (slot_size as usize) <= header_area {
            return Err(StoreError::Geometry("slot too small for a header"));
        }
        let end = (slot_size as u64) * 2 + start as u64;
        if end > flash.capacity() as u64 || end > u32::MAX as u64 {
            return Err(StoreError::Geometry(
                "region extends past the end of the flash",
            ));
        }
        Ok(CheckpointStore {
            flash,
            start,
            slot_size,
        })
    }

    /// The largest payload a slot holds.
    pub fn capacity(&self) -> usize {
        self.slot_size as usize - header_area::<F>()
    }

    /// The flash driver, back.
    pub fn release(self) -> F {
        self.flash
    }

    /// What each slot holds, payload checksums verified.
    pub fn slots(&mut self) -> Result<[SlotStatus; 2], StoreError> {
        Ok([self.inspect(0)?, self.inspect(1)?])
    }

    /// The newest complete checkpoint of `model`, without reading its payload out.
    pub fn latest(&mut self, model: ModelId) -> Result<Option<CheckpointInfo>, StoreError> {
        let slots = self.slots()?;
        Ok(newest(&slots, |h| h.model == model))
    }

    /// Copies the newest complete checkpoint of `model` into the front of `buf` and says
    /// where it came from; `None` when there is none (first boot, or only checkpoints of
    /// other models).
    pub fn load(
        &mut self,
        model: ModelId,
        buf: &mut [u8],
    ) -> Result<Option<CheckpointInfo>, StoreError> {
        let Some(info) = self.latest(model)? else {
            return Ok(None);
        };
        let len = info.len();
        let Some(dest) = buf.get_mut(..len) else {
            return Err(StoreError::BufferTooSmall {
                needed: len,
                actual: buf.len(),
            });
        };
        let mut offset = self.payload_offset(info.slot);
        let mut stage = [0u8; STAGE];
        for chunk in dest.chunks_mut(STAGE) {
            // Reads are whole READ_SIZE units; the slot always has room for the rounding.
            let padded = chunk.len().next_multiple_of(F::READ_SIZE);
            self.read(offset, &mut stage[..padded])?;
            chunk.copy_from_slice(&stage[..chunk.len()]);
            offset += padded as u32;
        }
        // The scan verified the payload; checking the copy too catches flash that changes
        // under us, rather than handing the trainer corrupt parameters.
        if CRC32.checksum(dest) != info.header.payload_crc {
            return Err(StoreError::ReadBackMismatch);
        }
        Ok(Some(info))
    }

    /// Saves a checkpoint of `model` whose payload is `parts` concatenated (parameters and
    /// optimizer state need not be contiguous). On success it is what [`load`](Self::load)
    /// returns from now on; on any error, including power loss, the previous checkpoint is.
    pub fn save(&mut self, model: ModelId, parts: &[&[u8]]) -> Result<CheckpointInfo, StoreError> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        if len > self.capacity() {
            return Err(StoreError::TooLarge {
                capacity: self.capacity(),
                len,
            });
        }
        let slots = self.slots()?;
        let current = newest(&slots, |h| h.model == model);
        let newest_any = newest(&slots, |_| true);
        let target = match current {
            Some(c) => 1 - c.slot,
            // Nothing of this model: reuse an invalid slot, else the older one.
            None => match slots {
                [SlotStatus::Invalid(_), _] => 0,
                [_, SlotStatus::Invalid(_)] => 1,
                _ => newest_any.map_or(0, |n| 1 - n.slot),
            },
        };
        let sequence = newest_any.map_or(1, |n| n.header.sequence.wrapping_add(1));
        let header = CheckpointHeader::new(sequence, model, len as u32, payload_crc(parts));

        let slot_start = self.slot_start(target);
        let used = (header_area::<F>() + len).next_multiple_of(F::ERASE_SIZE);
        self.flash
            .erase(slot_start, slot_start + used as u32)
            .map_err(flash_fault)?;
        self.write_payload(self.payload_offset(target), parts)?;
        // The header last: until its final byte lands the slot is not valid.
        let mut head = [0xFFu8; STAGE];
        head[..HEADER_LEN].copy_from_slice(&header.encode());
        self.flash
            .write(slot_start, &head[..header_area::<F>()])
            .map_err(flash_fault)?;

        match self.inspect(target)? {
            SlotStatus::Valid(h) if h == header => Ok(CheckpointInfo {
                slot: target,
                header,
            }),
            _ => Err(StoreError::ReadBackMismatch),
        }
    }

    fn write_payload(&mut self, mut offset: u32, parts: &[&[u8]]) -> Result<(), StoreError> {
        let mut stage = [0xFFu8; STAGE];
        let mut filled = 0;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = rest.len().min(STAGE - filled);
                stage[filled..filled + n].copy_from_slice(&rest[..n]);
                filled += n;
                rest = &rest[n..];
                if filled == STAGE {
                    self.flash.write(offset, &stage).map_err(flash_fault)?;
                    offset += STAGE as u32;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            // Pad the last write to whole words with 0xFF, which leaves erased bits alone.
            let padded = filled.next_multiple_of(F::WRITE_SIZE);
            stage[filled..padded].fill(0xFF);
            self.flash
                .write(offset, &stage[..padded])
                .map_err(flash_fault)?;
        }
        Ok(())
    }

    fn inspect(&mut self, slot: usize) -> Result<SlotStatus, StoreError> {
        let mut head = [0u8; HEADER_LEN];
        self.read_unaligned(self.slot_start(slot), &mut head)?;
        let header = match CheckpointHeader::decode(&head) {
            Ok(h) => h,
            Err(problem) => return Ok(SlotStatus::Invalid(problem)),
        };
        let len = header.payload_len as usize;
        if len > self.capacity() {
            return Ok(SlotStatus::Invalid(SlotProblem::Truncated));
        }
        let mut digest = CRC32.digest();
        let mut offset = self.payload_offset(slot);
        let mut stage = [0u8; STAGE];
        let mut left = len;
        while left > 0 {
            let n = left.min(STAGE);
            let padded = n.next_multiple_of(F::READ_SIZE);
            self.read(offset, &mut stage[..padded])?;
            digest.update(&stage[..n]);
            offset += padded as u32;
            left -= n;
        }
        Ok(if digest.finalize() == header.payload_crc {
            SlotStatus::Valid(header)
        } else {
            SlotStatus::Invalid(SlotProblem::PayloadChecksum)
        })
    }

    /// Reads `buf.len()` bytes that start on a read-size boundary, whatever the length.
    fn read_unaligned(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut stage = [0u8; STAGE];
        let padded = buf.len().next_multiple_of(F::READ_SIZE);
        self.read(offset, &mut stage[..padded])?;
        buf.copy_from_slice(&stage[..buf.len()]);
        Ok(())
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), StoreError> {
        self.flash.read(offset, buf).map_err(flash_fault)
    }

    fn slot_start(&self, slot: usize) -> u32 {
        self.start + slot as u32 * self.slot_size
    }

    fn payload_offset(&self, slot: usize) -> u32 {
        self.slot_start(slot) + header_area::<F>() as u32
    }
}

/// Bytes reserved for the header at the start of a slot: the header rounded up to whole
/// read and write units (all powers of two, so the largest of them is a multiple of the rest).
fn header_area<F: NorFlash>() -> usize {
    HEADER_LEN.max(F::WRITE_SIZE).max(F::READ_SIZE)
}

fn flash_fault<E: NorFlashError>(e: E) -> StoreError {
    StoreError::Flash(FlashFault::from(e.kind()))
}

fn newest(
    slots: &[SlotStatus; 2],
    wanted: impl Fn(&CheckpointHeader) -> bool,
) -> Option<CheckpointInfo> {
    let mut best: Option<CheckpointInfo> = None;
    for (slot, status) in slots.iter().enumerate() {
        if let SlotStatus::Valid(header) = status {
            if wanted(header) && best.is_none_or(|b| header.is_newer_than(&b.header)) {
                best = Some(CheckpointInfo {
                    slot,
                    header: *header,
                });
            }
        }
    }
    best
}
