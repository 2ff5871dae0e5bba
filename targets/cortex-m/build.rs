//! Picks the board's memory map: the Cortex-M4F board for thumbv7em, the Cortex-M0 micro:bit
//! for thumbv6m, or the one named by `LOAM_BOARD` (a file under `memory/`).

use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap_or_default();
    let board = env::var("LOAM_BOARD").unwrap_or_else(|_| {
        if target.starts_with("thumbv6m") {
            "microbit"
        } else {
            "mps2-an386"
        }
        .to_string()
    });
    let source = PathBuf::from("memory").join(format!("{board}.x"));
    let memory = fs::read(&source)
        .unwrap_or_else(|e| panic!("LOAM_BOARD={board}: cannot read {}: {e}", source.display()));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), memory).expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=LOAM_BOARD");
    println!("cargo:rustc-env=LOAM_FIRMWARE_TARGET={target} on {board}");
    // Boards whose RAM cannot also hold a RAM-backed flash beside a program's buffers.
    let small_ram = board == "microbit";
    println!("cargo:rustc-check-cfg=cfg(loam_small_ram)");
    if small_ram {
        println!("cargo:rustc-cfg=loam_small_ram");
    }
    // The learning demo's model and user data: the bundled digits model and the mirrored
    // digits recording; on a 16 KiB board the same model with the training plan
    // `loam export --train-ram 9KiB --train-weights int8` stored in it, and its recording; or the files
    // `loam quickstart` trained and recorded (through `cargo xtask learn`). Copied where
    // `include_bytes!` finds them.
    let (model_default, recording_default) = if small_ram {
        (
            "../../runtime/tests/data/digits-small-ram.loam",
            "../../runtime/tests/data/digits-small-ram.lmus",
        )
    } else {
        (
            "../../models/digits/model.loam",
            "../../runtime/tests/data/digits-mirrored.lmus",
        )
    };
    let mut learn = Vec::new();
    for (var, default, name) in [
        ("LOAM_LEARN_MODEL", model_default, "learn-model.loam"),
        ("LOAM_LEARN_RECORDING", recording_default, "learn-user.lmus"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let source = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        println!("cargo:rerun-if-changed={}", source.display());
        let bytes = fs::read(&source)
            .unwrap_or_else(|e| panic!("{var}: cannot read {}: {e}", source.display()));
        fs::write(out.join(name), &bytes).expect("OUT_DIR is writable");
        learn.push((source, bytes));
    }
    // The training state the demo's trainer needs, computed by the runtime itself so the
    // firmware's static buffer is exactly that size on every board and plan.
    let model_bytes = loam::format::AlignedBytes::new(&learn[0].1);
    let model = loam::Model::from_bytes(&model_bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", learn[0].0.display()));
    let recording = loam::train::replay::Recording::parse(&learn[1].1)
        .unwrap_or_else(|e| panic!("{}: {e}", learn[1].0.display()));
    let state_len = loam::train::Trainer::state_len(&model, &recording.config)
        .unwrap_or_else(|e| panic!("{}: {e}", learn[0].0.display()));
    fs::write(
        out.join("learn-state.rs"),
        format!("/// `Trainer::state_len` of the demo's model and recording (from build.rs).\npub const STATE_LEN: usize = {state_len};\n"),
    )
    .expect("OUT_DIR is writable");
}
