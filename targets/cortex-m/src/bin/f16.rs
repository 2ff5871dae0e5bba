//! Runs the self-checking network with f16 weights (a convolution, a depthwise convolution
//! and a fully connected layer computing in f32, `runtime/tests/data/f16-weights.loam`,
//! format 1.3) from flash and exits 0 if its outputs are within 1e-5 + 1e-4 relative of
//! those an x86_64 host recorded in the file (float kernels sum in another order per ISA).
#![no_std]
#![no_main]

use cortex_m_rt::entry;

static MODEL: &[u8] = loam::include_model!("../../../../runtime/tests/data/f16-weights.loam");
/// The plan's arena size, read from the file's preamble when the firmware is compiled.
const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!(
    "../../../../runtime/tests/data/f16-weights.loam"
));

#[repr(C, align(16))]
struct Arena([u8; ARENA_SIZE]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE]);

#[entry]
fn main() -> ! {
    // SAFETY: `main` runs once and is the only code that touches ARENA.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let passed = loam_firmware::outputs_near_the_host("f16-weights", MODEL, arena, 1e-5, 1e-4);
    loam_firmware::exit(if passed { 0 } else { 1 })
}
