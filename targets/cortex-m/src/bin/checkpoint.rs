//! Checkpoints on the board: saves to a RAM-backed NOR flash with the real chip's rules and
//! cuts the power at every byte of a save, clean and torn, rebooting each time. Exits 0 only
//! if every reboot found exactly the previous or exactly the new checkpoint, the store kept
//! working afterwards, and no flash word was programmed twice between erases.
//!
//! The store code is what a board with real flash runs; only the flash driver is simulated.
//! Sized for the Cortex-M0 (16 KiB of RAM): two 512-byte slots of 128-byte sectors.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use loam::store::sim::{SimulatedNorFlash, power_cut_sweep};
use loam::store::{CheckpointStore, ModelId};
use loam_firmware::exit;

const SLOT: usize = 512;
const WRITE: usize = 4;
const ERASE: usize = 128;

static mut FLASH: [u8; 2 * SLOT] = [0xFF; 2 * SLOT];
static mut BACKUP: [u8; 2 * SLOT] = [0; 2 * SLOT];
static mut SCRATCH: [u8; SLOT] = [0; SLOT];

/// A stand-in for trained parameters: distinct bytes for every save.
fn payload<const N: usize>(seed: u8) -> [u8; N] {
    let mut p = [0u8; N];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(seed);
    }
    p
}

#[entry]
fn main() -> ! {
    defmt::info!(
        "checkpoint power-cut sweep on {}: 2 slots of {=usize} B, {=usize}-byte words, {=usize}-byte sectors",
        env!("LOAM_FIRMWARE_TARGET"),
        SLOT,
        WRITE,
        ERASE
    );
    // SAFETY: `main` runs once and is the only code touching these statics.
    let (flash, backup, scratch) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(FLASH),
            &mut *core::ptr::addr_of_mut!(BACKUP),
            &mut *core::ptr::addr_of_mut!(SCRATCH),
        )
    };
    let model = ModelId(0x6c6f_616d_0000_0001);
    let older = payload::<120>(1);
    let old = payload::<120>(2);
    let new = payload::<300>(3);
    {
        let mut sim = SimulatedNorFlash::<WRITE, ERASE>::new(flash);
        let mut store = match CheckpointStore::new(&mut sim, 0, SLOT as u32) {
            Ok(s) => s,
            Err(e) => {
                defmt::error!("store: {}", e);
                exit(1)
            }
        };
        for p in [&older[..], &old[..]] {
            if let Err(e) = store.save(model, &[p]) {
                defmt::error!("initial save: {}", e);
                exit(1)
            }
        }
    }
    let mut total = 0;
    for torn in [false, true] {
        match power_cut_sweep::<WRITE, ERASE>(
            flash,
            backup,
            SLOT as u32,
            model,
            &old,
            &new,
            torn,
            scratch,
        ) {
            Ok(report) => {
                defmt::info!(
                    "torn={=bool}: {=u32} cut points, {=u32} recovered the old checkpoint, {=u32} the new",
                    torn,
                    report.cut_points,
                    report.recovered_old,
                    report.recovered_new
                );
                total += report.cut_points;
            }
            Err(failure) => {
                defmt::error!("torn={=bool}: {}", torn, failure);
                exit(1)
            }
        }
    }
    defmt::info!("{=u32} power cuts, every one recovered", total);
    exit(0)
}
