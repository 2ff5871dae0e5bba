//! `loam import` on arbitrary bytes must return an import or an error, never panic; a model
//! it imports must load and run (see `loam_tools::onnx::fuzzing::exercise`). Seed it with the
//! fixtures: `cargo fuzz run onnx_import ../tests/data/onnx`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loam_tools::onnx::fuzzing::exercise(data));
