//! What the fuzz target does with each input, shared with the test that replays its seeds and
//! past crashes, so both exercise exactly the same path.

use alloc::vec;

use crate::format::{AlignedBytes, Model, PREAMBLE_LEN, checksum};
use crate::interpreter::Interpreter;

/// Loads `data` as a model (with the CRC written in, since a fuzzer cannot forge checksums
/// and the interesting validation lies behind that test), checks its plan and, if the arena
/// is modest, runs it. Must never panic.
pub fn exercise(data: &[u8]) {
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
}
