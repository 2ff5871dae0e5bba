//! `Model::from_bytes` on arbitrary bytes must return `Ok` or `Err`, never panic; a model it
//! accepts must then plan-check and run without panicking.
//!
//! The fuzzer cannot forge CRC-32s, so the target writes the correct checksum into the
//! preamble before parsing: the checksum test itself is trivial, everything behind it is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loam::format::{AlignedBytes, PREAMBLE_LEN, checksum};
use loam::{Interpreter, Model};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= PREAMBLE_LEN {
        let file_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if file_len <= bytes.len() {
            let crc = checksum(&bytes[..file_len]);
            bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let aligned = AlignedBytes::new(&bytes);
    let Ok(model) = Model::from_bytes(&aligned) else {
        return;
    };
    let _ = model.check_plan();
    // Running is bounded by the arena the file asks for; keep it small enough to stay fast.
    if model.arena_size() <= 1 << 16 {
        let mut arena = vec![0u8; model.arena_size() + 16];
        if let Ok(mut interpreter) = Interpreter::new(&model, &mut arena) {
            let _ = interpreter.invoke();
        }
    }
});
