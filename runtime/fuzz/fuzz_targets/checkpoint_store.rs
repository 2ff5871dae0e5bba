//! The checkpoint store over arbitrary flash contents must never panic, and a save onto any
//! such contents must load back exactly (see `loam::fuzzing::exercise_checkpoint_store`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loam::fuzzing::exercise_checkpoint_store(data));
