//! Replays the fuzz target's seeds and every input it ever crashed on (saved under
//! `fuzz/regressions/`) through the same steps as the fuzz target, on every target the tests
//! run on: a fixed crash stays fixed.

use std::path::Path;

use loam::fuzzing::exercise as replay;

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
