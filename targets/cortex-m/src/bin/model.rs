//! Runs the bundled self-checking int8 model (every int8 op of format 1.0 in one small
//! network, `runtime/tests/data/int8-zoo.loam`) from flash with a static arena sized at
//! compile time from the file, and exits 0 if its outputs' CRC-32 equals the one an x86_64
//! host recorded in the file: the board computes exactly what the laptop computes.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

static MODEL: &[u8] = loam::include_model!("../../../../runtime/tests/data/int8-zoo.loam");
/// The plan's arena size, read from the file's preamble when the firmware is compiled.
const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!(
    "../../../../runtime/tests/data/int8-zoo.loam"
));

#[repr(C, align(16))]
struct Arena([u8; ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE]);

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and is the only code that touches ARENA.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let passed = loam_firmware::outputs_match_the_host("int8-zoo", MODEL, arena);
    loam_firmware::exit(if passed { 0 } else { 1 })
}
