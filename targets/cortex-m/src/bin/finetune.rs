//! On-device fine-tuning on the board: trains the last two layers of the bundled int8 MLP
//! (`runtime/tests/data/finetune-int8.loam`) for the 100 seeded steps the file records, then
//! saves the checkpoint to (RAM-backed) NOR flash through `loam::store` and reads it back into
//! a fresh trainer. Exits 0 only if the checkpoint's CRC-32 equals the one an x86_64 host
//! recorded in the model (the board trained to the same bits as the laptop) and the restored
//! parameters are identical. On the 16 KiB Cortex-M0 the model's arena and the training state
//! leave no room for a RAM flash of that size, so there the flash round trip is left to a real
//! board (the `checkpoint` binary covers the store on the M0).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use loam::Model;
use loam::train::Trainer;
use loam::train::check::{CHECK_CONFIG, check_model};
#[cfg(not(loam_small_ram))]
use loam_firmware::flash_round_trip;
use loam_firmware::{exit, fail};

static MODEL: &[u8] = loam::include_model!("../../../../runtime/tests/data/finetune-int8.loam");
const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!(
    "../../../../runtime/tests/data/finetune-int8.loam"
));
/// `Trainer::state_len` for this model and `CHECK_CONFIG`, checked at run time.
const STATE_LEN: usize = 1984;
#[cfg(not(loam_small_ram))]
const SLOT: usize = 8192;

#[repr(C, align(16))]
struct Arena([u8; ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE]);
static mut STATE: [f32; STATE_LEN] = [0.0; STATE_LEN];
#[cfg(not(loam_small_ram))]
static mut FLASH: [u8; 2 * SLOT] = [0xFF; 2 * SLOT];

#[entry]
fn main() -> ! {
    let model = Model::from_bytes(MODEL).unwrap_or_else(|e| fail("model", e));
    // SAFETY: `main` runs once and is the only code touching these statics.
    let (arena, state) = unsafe {
        (
            &mut (*core::ptr::addr_of_mut!(ARENA)).0,
            &mut *core::ptr::addr_of_mut!(STATE),
        )
    };
    let needed = Trainer::state_len(&model, &CHECK_CONFIG).unwrap_or_else(|e| fail("head", e));
    defmt::info!(
        "fine-tune on {}: model {=usize} B flash, arena {=usize} B + training state {=usize} B RAM",
        env!("LOAM_FIRMWARE_TARGET"),
        MODEL.len(),
        ARENA_SIZE,
        4 * needed
    );
    if needed != STATE_LEN {
        defmt::error!(
            "state needs {=usize} values, firmware has {=usize}",
            needed,
            STATE_LEN
        );
        exit(1)
    }

    let check = check_model(&model, arena, state).unwrap_or_else(|e| fail("training", e));
    defmt::info!(
        "{=u32} steps, {=u32} updates: loss {=f32} -> {=f32}",
        check.steps,
        check.updates,
        check.first_loss,
        check.last_loss
    );
    if !check.passed() {
        defmt::error!(
            "checkpoint digest {=u32:#010x}, host recorded {=u32:#010x}",
            check.digest,
            check.expected
        );
        exit(1)
    }
    defmt::info!(
        "checkpoint digest {=u32:#010x} matches the host's",
        check.digest
    );

    #[cfg(loam_small_ram)]
    {
        defmt::info!("flash round trip left to a board with real flash (16 KiB RAM)");
        exit(0)
    }
    #[cfg(not(loam_small_ram))]
    round_trip(&model, arena, state)
}

/// Saves a trainer's checkpoint to a RAM-backed NOR flash, loads it back and restores it.
#[cfg(not(loam_small_ram))]
fn round_trip(model: &Model<'_>, arena: &mut [u8], state: &mut [f32]) -> ! {
    // SAFETY: called once from `main`, the only code touching FLASH.
    let flash = unsafe { &mut *core::ptr::addr_of_mut!(FLASH) };
    let mut trainer =
        Trainer::new(model, arena, state, CHECK_CONFIG).unwrap_or_else(|e| fail("trainer", e));
    for class in 0..8 {
        trainer
            .step(
                &[class as i8 * 16; 16],
                loam::train::Target::Class(class % 4),
            )
            .unwrap_or_else(|e| fail("step", e));
    }
    let mut payload = [0u8; SLOT];
    let (len, slot) = flash_round_trip(model, &mut trainer, flash, &mut payload);
    defmt::info!(
        "checkpoint of {=usize} B ({=u32} updates) saved to slot {=usize} and restored",
        len,
        trainer.updates(),
        slot
    );
    exit(0)
}
