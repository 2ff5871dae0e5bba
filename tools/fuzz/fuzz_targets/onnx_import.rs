//! `loam import` on arbitrary bytes must return an import or an error, never panic; a model
//! it imports must load and run (see `loam_tools::onnx::fuzzing::exercise`). Seed it with the
//! fixtures: `cargo fuzz run onnx_import corpus ../tests/data/onnx`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one the importer catches (tract's, on a
        // malformed file, which it reports as an error); a panic that escapes still fails
        // the run, since the harness aborts on an unwinding test.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| loam_tools::onnx::fuzzing::exercise(data)
);
