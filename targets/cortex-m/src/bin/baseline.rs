//! The size baseline for `cargo xtask size`: the same start-up, logging and exit as
//! `reference`, without loam. The difference between the two is what the runtime (and the
//! layer's weights) cost in flash and RAM.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use loam_firmware::exit;

#[entry]
fn main() -> ! {
    let mut output = [0i8; 10];
    for (i, x) in output.iter_mut().enumerate() {
        // Derived at run time so the log call is not folded into a constant.
        *x = core::hint::black_box((i as i8).wrapping_mul(3));
    }
    defmt::info!("output {=[?]}", output);
    exit(0)
}
