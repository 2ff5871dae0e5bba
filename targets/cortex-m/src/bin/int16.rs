//! Runs the self-checking network of 16x8 layers (int16 activations, int8 weights: a
//! convolution, a depthwise convolution and a fully connected layer,
//! `runtime/tests/data/int16-layers.loam`, format 1.2) from flash and exits 0 if its
//! outputs' CRC-32 equals the one an x86_64 host recorded in the file.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

static MODEL: &[u8] = loam::include_model!("../../../../runtime/tests/data/int16-layers.loam");
/// The plan's arena size, read from the file's preamble when the firmware is compiled.
const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!(
    "../../../../runtime/tests/data/int16-layers.loam"
));

#[repr(C, align(16))]
struct Arena([u8; ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE]);

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and is the only code that touches ARENA.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let passed = loam_firmware::outputs_match_the_host("int16-layers", MODEL, arena);
    loam_firmware::exit(if passed { 0 } else { 1 })
}
