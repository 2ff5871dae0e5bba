//! Replays the fuzz target's seeds and every input it ever crashed on (saved under
//! `fuzz/regressions/`) through the same steps as the fuzz target, on every target the tests
//! run on: a fixed crash stays fixed.

use std::path::Path;

use loam::format::{AlignedBytes, PREAMBLE_LEN, checksum};
use loam::{Interpreter, Model};

fn replay(data: &[u8]) {
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
    if model.arena_size() <= 1 << 16 {
        let mut arena = vec![0u8; model.arena_size() + 16];
        if let Ok(mut interpreter) = Interpreter::new(&model, &mut arena) {
            let _ = interpreter.invoke();
        }
    }
}

#[test]
fn fuzz_seeds_and_regressions_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus/model_from_bytes", "regressions/model_from_bytes"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dir.starts_with("corpus") && !name.starts_with("seed-") {
                continue;
            }
            replay(&std::fs::read(entry.path()).unwrap());
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "the committed seeds are missing ({count} files replayed)"
    );
}
