//! A NOR flash in RAM with the rules of the real thing, and power cuts on demand.
//!
//! Rules kept: erase works on whole sectors and sets them to `0xFF`; a write is aligned to the
//! write size and can only clear bits (the stored byte becomes `old & new`); every access is
//! bounds-checked. A [`PowerCut`] stops the flash after a given number of *steps* (one step per
//! byte programmed and per sector erased): the operation in flight ends with
//! [`SimFlashError::PowerLost`] and every later one fails too, as if the chip were dead until
//! the caller "reboots" by building a new `SimulatedNorFlash` over the same bytes. A torn cut
//! leaves the word in flight half-programmed, or the sector in flight half-erased.
//!
//! Hand-written because no maintained crate simulates NOR power loss for `no_std`; firmware
//! runs the same sweep under QEMU as the host tests, with the region in a static buffer.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use super::{CheckpointStore, ModelId, StoreError};

/// When the simulated power supply fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PowerCut {
    /// Steps (bytes programmed plus sectors erased) that complete before the cut.
    pub after_steps: u32,
    /// Whether the word or sector in flight is left half-done rather than untouched.
    pub torn: bool,
}

/// What the simulated flash reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SimFlashError {
    /// Offset or length not a multiple of the read, write or erase size.
    NotAligned,
    /// Beyond the end of the flash.
    OutOfBounds,
    /// The power was cut; nothing works until a reboot.
    PowerLost,
}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            SimFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            SimFlashError::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

/// A RAM-backed NOR flash over borrowed bytes, with `WRITE`-byte words and `ERASE`-byte
/// sectors.
#[derive(Debug)]
pub struct SimulatedNorFlash<'a, const WRITE: usize, const ERASE: usize> {
    bytes: &'a mut [u8],
    cut: Option<PowerCut>,
    steps: u32,
    powered: bool,
    rewrites: u32,
}

/// Half the bits of a byte: what a torn program or erase gets done.
const TORN_MASK: u8 = 0b0101_0101;

impl<'a, const WRITE: usize, const ERASE: usize> SimulatedNorFlash<'a, WRITE, ERASE> {
    /// A flash over `bytes` as they are (a reboot keeps them); `bytes.len()` must be a
    /// multiple of `ERASE`.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        SimulatedNorFlash {
            bytes,
            cut: None,
            steps: 0,
            powered: true,
            rewrites: 0,
        }
    }

    /// The same, with power failing as `cut` says.
    pub fn with_power_cut(bytes: &'a mut [u8], cut: PowerCut) -> Self {
        SimulatedNorFlash {
            cut: Some(cut),
            ..Self::new(bytes)
        }
    }

    /// Steps done so far (bytes programmed plus sectors erased).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether the power is still on.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Writes that programmed a word not fully erased. Plain NOR allows it; ECC flash
    /// refuses, so a store that wants to run everywhere keeps this at zero.
    pub fn rewrites(&self) -> u32 {
        self.rewrites
    }

    /// The flash's contents.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// Takes one step; false (and the power off) when the cut falls here.
    fn step(&mut self) -> bool {
        if self.cut.is_some_and(|c| self.steps >= c.after_steps) {
            self.powered = false;
            return false;
        }
        self.steps += 1;
        true
    }

    fn torn(&self) -> bool {
        self.cut.is_some_and(|c| c.torn)
    }

    fn check(&self, offset: usize, len: usize, align: usize) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLost);
        }
        if offset % align != 0 || len % align != 0 {
            return Err(SimFlashError::NotAligned);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(()),
            _ => Err(SimFlashError::OutOfBounds),
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimulatedNorFlash<'_, WRITE, ERASE> {
    type Error = SimFlashError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimulatedNorFlash<'_, WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        let offset = offset as usize;
        self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.bytes[offset..offset + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimulatedNorFlash<'_, WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
        let (from, to) = (from as usize, to as usize);
        if to < from {
            return Err(SimFlashError::OutOfBounds);
        }
        self.check(from, to - from, ERASE)?;
        for sector in self.bytes[from..to].chunks_mut(ERASE) {
            if self.cut.is_some_and(|c| self.steps >= c.after_steps) {
                if self.cut.is_some_and(|c| c.torn) {
                    let half = sector.len() / 2;
                    sector[..half].fill(0xFF);
                    for b in &mut sector[half..] {
                        *b |= TORN_MASK;
                    }
                }
                self.powered = false;
                return Err(SimFlashError::PowerLost);
            }
            sector.fill(0xFF);
            self.steps += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), SimFlashError> {
        let offset = offset as usize;
        self.check(offset, data.len(), WRITE)?;
        for (word_index, word) in data.chunks(WRITE).enumerate() {
            let at = offset + word_index * WRITE;
            if self.bytes[at..at + WRITE].iter().any(|&b| b != 0xFF) {
                self.rewrites += 1;
            }
            for (i, &new) in word.iter().enumerate() {
                if !self.step() {
                    if self.torn() {
                        // The rest of this word gets only some of its bits programmed.
                        for (b, &n) in self.bytes[at + i..at + WRITE].iter_mut().zip(&word[i..]) {
                            *b &= n | TORN_MASK;
                        }
                    }
                    return Err(SimFlashError::PowerLost);
                }
                self.bytes[at + i] &= new;
            }
        }
        Ok(())
    }
}

/// The outcome of [`power_cut_sweep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SweepReport {
    /// Cut points tried: every step of the save, plus the uncut save.
    pub cut_points: u32,
    /// Reboots that found the previous checkpoint.
    pub recovered_old: u32,
    /// Reboots that found the new checkpoint.
    pub recovered_new: u32,
}

/// How a sweep failed: the cut point and what was wrong after the reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SweepFailure {
    /// Steps completed before the cut.
    pub cut_after: u32,
    /// What went wrong.
    pub what: &'static str,
    /// The store's error, when there was one.
    pub error: Option<StoreError>,
}

/// Cuts power at every step of one save and checks each reboot.
///
/// `flash` is the region (two slots of `slot_size`); it must already hold a checkpoint of
/// `model` whose payload is `old` (and may hold an older one in the other slot). For each
/// cut point the sweep restores `flash` from a copy in `backup`, saves `new` with the cut,
/// reboots, and requires the loaded checkpoint to be exactly `old` or exactly `new`; once a
/// reboot has found `new`, every later cut point must too; after each reboot one more save
/// must succeed and load back, and no save may program a word twice between erases.
/// `scratch` receives loaded payloads and must hold the larger of the two.
#[allow(clippy::too_many_arguments)]
pub fn power_cut_sweep<const WRITE: usize, const ERASE: usize>(
    flash: &mut [u8],
    backup: &mut [u8],
    slot_size: u32,
    model: ModelId,
    old: &[u8],
    new: &[u8],
    torn: bool,
    scratch: &mut [u8],
) -> Result<SweepReport, SweepFailure> {
    let fail = |cut_after, what, error| SweepFailure {
        cut_after,
        what,
        error,
    };
    if old == new {
        return Err(fail(0, "old and new payloads must differ", None));
    }
    let Some(backup) = backup.get_mut(..flash.len()) else {
        return Err(fail(0, "backup is smaller than the flash", None));
    };
    backup.copy_from_slice(flash);

    // An uncut save first, to count its steps.
    let total = {
        let mut sim = SimulatedNorFlash::<WRITE, ERASE>::new(flash);
        let mut store = CheckpointStore::new(&mut sim, 0, slot_size)
            .map_err(|e| fail(0, "geometry", Some(e)))?;
        store
            .save(model, &[new])
            .map_err(|e| fail(0, "uncut save failed", Some(e)))?;
        sim.steps()
    };

    let mut report = SweepReport {
        cut_points: 0,
        recovered_old: 0,
        recovered_new: 0,
    };
    for cut_after in 0..=total {
        flash.copy_from_slice(backup);
        let cut = PowerCut {
            after_steps: cut_after,
            torn,
        };
        {
            let mut sim = SimulatedNorFlash::<WRITE, ERASE>::with_power_cut(flash, cut);
            let mut store = CheckpointStore::new(&mut sim, 0, slot_size)
                .map_err(|e| fail(cut_after, "geometry", Some(e)))?;
            let saved = store.save(model, &[new]);
            if saved.is_ok() != (cut_after == total) {
                return Err(fail(
                    cut_after,
                    "save reported success although power was cut, or failed uncut",
                    saved.err(),
                ));
            }
            if sim.rewrites() != 0 {
                return Err(fail(cut_after, "a word was programmed twice", None));
            }
        }

        // Reboot: the same bytes, power back.
        let mut sim = SimulatedNorFlash::<WRITE, ERASE>::new(flash);
        let mut store = CheckpointStore::new(&mut sim, 0, slot_size)
            .map_err(|e| fail(cut_after, "geometry", Some(e)))?;
        let loaded = match store.load(model, scratch) {
            Ok(Some(info)) => &scratch[..info.len()],
            Ok(None) => return Err(fail(cut_after, "no checkpoint after reboot", None)),
            Err(e) => return Err(fail(cut_after, "load failed after reboot", Some(e))),
        };
        if loaded == new {
            report.recovered_new += 1;
        } else if loaded == old {
            if report.recovered_new > 0 {
                return Err(fail(
                    cut_after,
                    "old checkpoint came back after a shorter cut had found the new one",
                    None,
                ));
            }
            report.recovered_old += 1;
        } else {
            return Err(fail(
                cut_after,
                "recovered payload is neither the old nor the new checkpoint",
                None,
            ));
        }
        if cut_after == total && loaded != new {
            return Err(fail(cut_after, "an uncut save did not stick", None));
        }

        // The store must still work: save again and read it back.
        let again: &[u8] = if cut_after % 2 == 0 { old } else { new };
        store
            .save(model, &[again])
            .map_err(|e| fail(cut_after, "save after reboot failed", Some(e)))?;
        match store.load(model, scratch) {
            Ok(Some(info)) if &scratch[..info.len()] == again => {}
            Ok(_) => return Err(fail(cut_after, "save after reboot did not load back", None)),
            Err(e) => return Err(fail(cut_after, "load after reboot failed", Some(e))),
        }
        report.cut_points += 1;
    }
    flash.copy_from_slice(backup);
    Ok(report)
}

#[cfg(test)]
mod tests;
