//! What the importer's fuzz target does with each input, shared with the test that replays
//! its seeds, regressions and a fixed set of mutations, so both exercise the same path.

use crate::model_file::ModelFile;
use crate::onnx::{ImportOptions, import_bytes};

/// Imports `data` as an ONNX model; if that succeeds, loads the `.loam` it wrote and, when
/// its arena is modest, runs it on seeded inputs. Errors are the expected outcome for most
/// inputs; a panic anywhere is a bug.
pub fn exercise(data: &[u8]) {
    let Ok(imported) = import_bytes(data, None, &ImportOptions::default()) else {
        return;
    };
    let file = ModelFile::from_bytes("fuzzed.onnx", &imported.built.bytes)
        .expect("the importer wrote a .loam the runtime refuses");
    let model = file.model().expect("validated above");
    if model.arena_size() <= 1 << 20
        && let Ok(inputs) = crate::run::random_inputs(&model, 1)
    {
        let _ = crate::run::run(&file, &inputs);
    }
}

/// Deterministic variants of a valid file for the replay test: truncations, single-byte
/// changes, and a byte range copied over another, `count` of them seeded by `seed`.
pub fn mutations(seed: &[u8], count: usize, rng_seed: u64) -> Vec<Vec<u8>> {
    let mut state = rng_seed;
    let mut next = move |bound: usize| -> usize {
        // SplitMix64: the same variants on every machine.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % bound.max(1) as u64) as usize
    };
    (0..count)
        .map(|k| {
            let mut v = seed.to_vec();
            match k % 4 {
                0 => v.truncate(next(seed.len())),
                1 => {
                    let at = next(v.len());
                    v[at] = next(256) as u8;
                }
                2 => {
                    // A varint or length somewhere becomes large.
                    let at = next(v.len());
                    v[at] = 0xff;
                    if at + 1 < v.len() {
                        v[at + 1] = 0x7f;
                    }
                }
                _ => {
                    let (from, to) = (next(v.len()), next(v.len()));
                    let len = next(64).min(v.len() - from.max(to));
                    v.copy_within(from..from + len, to);
                }
            }
            v
        })
        .collect()
}
