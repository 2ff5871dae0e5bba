//! A user's model end to end: the PyTorch CNN of the tools' import tests (conv + BatchNorm +
//! ReLU6, depthwise-separable block, max and global pooling, a residual add, Gemm, softmax),
//! float and quantized by ONNX Runtime (QDQ, per-channel), imported by `loam import` and run
//! from flash (`runtime/tests/data/pytorch-cnn-{int8,f32}.loam`). Exits 0 if the int8
//! model's outputs' CRC-32 equals the one the x86_64 host recorded, and the float model's
//! outputs are within 1e-5 + 1e-4 relative of the host's. Its arenas (15 KB int8, 48 KB f32)
//! are more than a 16 KiB board has, so it runs on the Cortex-M4F.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    #[cfg(loam_small_ram)]
    {
        defmt::error!("the PyTorch CNN needs a 48 KB arena; this board has 16 KiB of RAM");
        loam_firmware::exit(1)
    }
    #[cfg(not(loam_small_ram))]
    run::both()
}

#[cfg(not(loam_small_ram))]
mod run {
    use loam_firmware::{exit, outputs_match_the_host, outputs_near_the_host};

    static INT8: &[u8] =
        loam::include_model!("../../../../runtime/tests/data/pytorch-cnn-int8.loam");
    static F32: &[u8] = loam::include_model!("../../../../runtime/tests/data/pytorch-cnn-f32.loam");
    /// The larger of the two plans' arenas, read from the files when the firmware is compiled.
    const ARENA_SIZE: usize = {
        let int8 = loam::format::arena_size(include_bytes!(
            "../../../../runtime/tests/data/pytorch-cnn-int8.loam"
        ));
        let f32 = loam::format::arena_size(include_bytes!(
            "../../../../runtime/tests/data/pytorch-cnn-f32.loam"
        ));
        if int8 > f32 { int8 } else { f32 }
    };

    #[repr(C, align(16))]
    struct Arena([u8; ARENA_SIZE]);

    static mut ARENA: Arena = Arena([0; ARENA_SIZE]);

    pub fn both() -> ! {
        // SAFETY: called once from `main`, the only code that touches ARENA.
        let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
        let int8 = outputs_match_the_host("pytorch-cnn-int8", INT8, arena);
        let float = outputs_near_the_host("pytorch-cnn-f32", F32, arena, 1e-5, 1e-4);
        exit(if int8 && float { 0 } else { 1 })
    }
}
