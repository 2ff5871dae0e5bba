//! Runs loam's portable self-test on the board and exits 0 if every check passed (the golden
//! digest included: the board computed exactly what an x86_64 build computes), 1 otherwise.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use loam::selftest::{self, GOLDEN_DIGEST};
use loam_firmware::exit;

#[entry]
fn main() -> ! {
    defmt::info!("loam selftest on {}", env!("LOAM_FIRMWARE_TARGET"));
    let summary = selftest::run(&mut |outcome| {
        if outcome.passed {
            defmt::info!("{=str} ... ok", outcome.name);
        } else {
            defmt::error!("{=str} ... FAILED", outcome.name);
        }
    });
    defmt::info!(
        "digest {=u32:#010x} (golden {=u32:#010x})",
        summary.digest,
        GOLDEN_DIGEST
    );
    defmt::info!(
        "{=u32} passed, {=u32} failed",
        summary.passed,
        summary.failed
    );
    exit(if summary.all_passed() { 0 } else { 1 })
}
