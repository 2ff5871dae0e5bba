//! `Model::from_bytes` on arbitrary bytes must return `Ok` or `Err`, never panic; a model it
//! accepts must then plan-check and run without panicking (see `loam::fuzzing::exercise`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loam::fuzzing::exercise(data));
