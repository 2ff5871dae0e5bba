//! What every loam firmware here shares: defmt logging over semihosting, a panic handler that
//! logs and exits non-zero, and a clean exit with a status code the host sees.
//!
//! Under QEMU, semihosting carries both the defmt frames (to the host's stdout, decoded there by
//! `defmt-print`) and the exit code. On a real board without a debugger attached, semihosting
//! calls fault, so the board firmware swaps this module for RTT logging (see the README).
#![no_std]

use cortex_m as _;
use defmt_semihosting as _;

/// Ends the program with `code` as the emulator's (or debugger's) exit status.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
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
