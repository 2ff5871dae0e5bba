//! `loam quickstart`, the README's main command, run as a person runs it: every step on the
//! bundled digits ends in the summary table, with the files it promises in the run folder.
//! The emulated Cortex-M4 step runs where QEMU and the cross tools are installed, and must
//! then reproduce this machine's fine-tuning bit for bit; `cargo xtask test` sets
//! `LOAM_REQUIRE_BOARD=1` so that a missing tool fails instead of skipping it.

use std::process::Command;

#[test]
fn quickstart_ends_with_the_summary_table() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("qs");
    let require_board = std::env::var_os("LOAM_REQUIRE_BOARD").is_some();
    let output = Command::new(env!("CARGO_BIN_EXE_loam"))
        .args(["quickstart", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(output.status.success(), "quickstart failed");

    let summary = stdout
        .split("\nsummary (")
        .nth(1)
        .expect("the summary table");
    for row in [
        "accuracy, 269 test digits      float 97.77%, int8 97.77%",
        "ONNX Runtime, int8 QDQ         269 inputs:",
        "ONNX Runtime, float            269 inputs: max abs difference",
        "tract, float                   269 inputs: max abs difference",
        "flash, RAM (int8)              17920 B model, 1408 B arena",
        "fine-tuning, this machine      25.9% -> 93.5% on 139 held-out samples",
    ] {
        assert!(summary.contains(row), "missing `{row}` in\n{summary}");
    }
    let board = summary
        .lines()
        .find(|l| l.starts_with("fine-tuning, Cortex-M4 (QEMU)"))
        .expect("the board row");
    if require_board || !board.contains("skipped") {
        assert!(
            board.ends_with("25.9% -> 93.5%, checkpoint bits identical to this machine's"),
            "{board}"
        );
    }

    let run = project.join("runs/digits-001");
    for file in [
        "model.loam",
        "model-f32.loam",
        "model.onnx",
        "model-int8.onnx",
        "report.html",
        "user-mirrored.lmus",
        "firmware/digits.h",
        "firmware/digits.c",
        "firmware/digits.rs",
        "firmware/digits.loam",
    ] {
        assert!(run.join(file).is_file(), "{file} was not written");
    }
    // The bundled model is what the bundled project trains to; the quickstart reproduces it.
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.loam");
    assert_eq!(
        std::fs::read(run.join("model.loam")).unwrap(),
        std::fs::read(bundled).unwrap(),
        "the quickstart's model differs from models/digits/model.loam"
    );
}
