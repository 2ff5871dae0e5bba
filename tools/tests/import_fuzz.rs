//! The importer never panics on damaged files: the fuzz target's seeds (the checked-in ONNX
//! fixtures), every input it ever crashed on (`tools/fuzz/regressions/onnx_import/`), and a
//! fixed set of mutations of each seed go through the same steps as the fuzz target
//! (`loam_tools::onnx::fuzzing::exercise`). `cargo fuzz run onnx_import` (in `tools/fuzz`)
//! searches further.

use std::path::Path;

use loam_tools::onnx::fuzzing::{exercise, mutations};

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn seeds_regressions_and_mutations_import_without_panics() {
    let seeds = seeds();
    assert!(seeds.len() >= 3, "the ONNX fixtures are missing");
    let mut count = 0;
    for (i, seed) in seeds.iter().enumerate() {
        exercise(seed);
        for variant in mutations(seed, 150, i as u64) {
            exercise(&variant);
            count += 1;
        }
    }
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/onnx_import");
    if let Ok(entries) = std::fs::read_dir(regressions) {
        for entry in entries.flatten() {
            exercise(&std::fs::read(entry.path()).unwrap());
            count += 1;
        }
    }
    assert!(count >= 450, "{count}");
}
