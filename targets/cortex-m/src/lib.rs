//! What every loam firmware here shares: defmt logging over semihosting, a panic handler that
//! logs and exits non-zero, and a clean exit with a status code the host sees.
//!
//! Under QEMU, semihosting carries both the defmt frames (to the host's stdout, decoded there by
//! `defmt-print`) and the exit code. On a board, build with `--no-default-features --features
//! rtt`: the frames go over RTT to `probe-rs run`, which decodes them and also serves the
//! semihosting exit.
#![no_std]

use cortex_m as _;
#[cfg(all(feature = "semihosting-log", feature = "rtt"))]
compile_error!("pick one defmt transport: `semihosting-log` (the default) or `rtt`");
#[cfg(not(any(feature = "semihosting-log", feature = "rtt")))]
compile_error!("pick a defmt transport: `semihosting-log` (the default) or `rtt`");
#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "semihosting-log")]
use defmt_semihosting as _;

/// Ends the program with `code` as the emulator's (or debugger's) exit status.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Logs `what` failed with `e`, and exits 1.
pub fn fail(what: &str, e: impl defmt::Format) -> ! {
    defmt::error!("{=str}: {}", what, e);
    exit(1)
}

/// What a board does across a power cycle: saves `trainer`'s checkpoint to a NOR flash
/// emulated in `flash` (two slots of `payload.len()` bytes, with the store's rules), resets
/// the trainer to the model's own weights, loads the checkpoint back into `payload` and
/// restores it. Returns `(bytes, slot)` of the checkpoint; exits 1 if anything fails or the
/// restored parameters differ from the saved ones.
pub fn flash_round_trip(
    model: &loam::Model<'_>,
    trainer: &mut loam::train::Trainer<'_, '_, '_>,
    flash: &mut [u8],
    payload: &mut [u8],
) -> (usize, usize) {
    use loam::store::sim::SimulatedNorFlash;
    use loam::store::{CheckpointStore, ModelId, payload_crc};

    let id = ModelId::of(model);
    let mut sim = SimulatedNorFlash::<4, 1024>::new(flash);
    let slot_size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut store =
        CheckpointStore::new(&mut sim, 0, slot_size).unwrap_or_else(|e| fail("store", e));
    let saved = store
        .save(id, &trainer.checkpoint())
        .unwrap_or_else(|e| fail("save", e));
    let before = payload_crc(&trainer.checkpoint());
    // Start over from the model's weights, then take the checkpoint back.
    trainer.reset().unwrap_or_else(|e| fail("reset", e));
    match store.load(id, payload) {
        Ok(Some(info)) if info == saved => {
            trainer
                .restore(&payload[..info.len()])
                .unwrap_or_else(|e| fail("restore", e));
            if payload_crc(&trainer.checkpoint()) != before {
                defmt::error!("restored parameters differ from the saved ones");
                exit(1)
            }
            (info.len(), info.slot)
        }
        _ => {
            defmt::error!("the saved checkpoint did not load back");
            exit(1)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    exit(101)
}

defmt::timestamp!("{=u32}", {
    // Cycle counts are not available on every core (the M0 has no DWT), so log lines carry a
    // sequence number: enough to order them.
    static COUNT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    let n = COUNT.load(core::sync::atomic::Ordering::Relaxed);
    COUNT.store(n.wrapping_add(1), core::sync::atomic::Ordering::Relaxed);
    n
});

/// Logs a model's name, target and sizes, and loads it.
fn load_logged<'m>(name: &str, bytes: &'m [u8]) -> loam::Model<'m> {
    defmt::info!(
        "{} on {}: {=usize} bytes of model, {=usize} bytes of arena",
        name,
        env!("LOAM_FIRMWARE_TARGET"),
        bytes.len(),
        loam::format::arena_size(bytes)
    );
    loam::Model::from_bytes(bytes).unwrap_or_else(|e| fail("model", e))
}

/// Runs a self-checking model (one carrying `loam::selftest::SELFCHECK_CONSTANT`) from flash
/// with `arena`; whether its outputs' CRC-32 equals the one the x86_64 host recorded in the
/// file: the board computes exactly what the laptop computes.
pub fn outputs_match_the_host(name: &str, bytes: &[u8], arena: &mut [u8]) -> bool {
    let model = load_logged(name, bytes);
    match loam::selftest::check_model(&model, arena) {
        Ok(check) if check.passed() => {
            defmt::info!(
                "outputs digest {=u32:#010x} matches the host's",
                check.digest
            );
            true
        }
        Ok(check) => {
            defmt::error!(
                "outputs digest {=u32:#010x}, host recorded {=u32:#010x}",
                check.digest,
                check.expected
            );
            false
        }
        Err(e) => fail("running the model", e),
    }
}

/// [`outputs_match_the_host`] for a float model: its outputs within `atol + rtol * |value|`
/// of those the host recorded (`loam::selftest::EXPECTED_CONSTANT`), since float kernels sum
/// in another order on each ISA.
pub fn outputs_near_the_host(
    name: &str,
    bytes: &[u8],
    arena: &mut [u8],
    atol: f32,
    rtol: f32,
) -> bool {
    let model = load_logged(name, bytes);
    match loam::selftest::check_model_within(&model, arena, atol, rtol) {
        Ok(check) => {
            defmt::info!(
                "{=usize} outputs, largest difference from the host's {=f32}, {=usize} outside {=f32} + {=f32} x |value|",
                check.elements,
                check.max_abs,
                check.outside,
                atol,
                rtol
            );
            check.passed()
        }
        Err(e) => fail("running the model", e),
    }
}
