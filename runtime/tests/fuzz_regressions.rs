//! Replays each fuzz target's seeds and every input it ever crashed on (saved under
//! `fuzz/regressions/<target>/`) through the same steps as the fuzz target, on every target the
//! tests run on: a fixed crash stays fixed.

use std::path::Path;

use loam::fuzzing::{exercise, exercise_checkpoint_store};

/// Replays the committed seeds and regressions of one fuzz target; returns how many.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dir == "corpus" && !name.starts_with("seed-") {
                continue;
            }
            run(&std::fs::read(entry.path()).unwrap());
            count += 1;
        }
    }
    count
}

#[test]
fn model_loading_seeds_and_regressions_replay_cleanly() {
    let count = replay("model_from_bytes", exercise);
    assert!(
        count >= 3,
        "the committed seeds are missing ({count} files replayed)"
    );
}

#[test]
fn checkpoint_store_seeds_and_regressions_replay_cleanly() {
    let count = replay("checkpoint_store", exercise_checkpoint_store);
    assert!(
        count >= 3,
        "the committed seeds are missing ({count} files replayed)"
    );
}
