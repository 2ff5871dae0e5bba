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
    // The learning demo's model and user data: the bundled digits model and the mirrored
    // digits recording, or the files `loam quickstart` trained and recorded (through
    // `cargo xtask learn`), copied where `include_bytes!` finds them.
    for (var, default, name) in [
        (
            "LOAM_LEARN_MODEL",
            "../../models/digits/model.loam",
            "learn-model.loam",
        ),
        (
            "LOAM_LEARN_RECORDING",
            "../../runtime/tests/data/digits-mirrored.lmus",
            "learn-user.lmus",
        ),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let source = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        println!("cargo:rerun-if-changed={}", source.display());
        let bytes = fs::read(&source)
            .unwrap_or_else(|e| panic!("{var}: cannot read {}: {e}", source.display()));
        fs::write(out.join(name), bytes).expect("OUT_DIR is writable");
    }
    // Boards whose RAM cannot also hold a RAM-backed flash beside a program's buffers.
    println!("cargo:rustc-check-cfg=cfg(loam_small_ram)");
    if board == "microbit" {
        println!("cargo:rustc-cfg=loam_small_ram");
    }
}
