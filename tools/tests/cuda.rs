//! `loam train --device cuda` as a person runs it: on a machine without a usable GPU (or from a
//! loam built without the `cuda` feature) it says what is missing and how to train on the CPU,
//! exits non-zero and writes nothing; with a GPU it trains the project there.

use std::path::Path;
use std::process::{Command, Output};

fn loam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loam"))
        .args(args)
        .output()
        .expect("the loam binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A digits project in `dir`, its `[training]` section given `extra` lines.
fn digits_project(dir: &Path, extra: &str) -> String {
    let out = loam(&["init", dir.to_str().unwrap(), "--example", "digits"]);
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join("loam.toml");
    if !extra.is_empty() {
        let toml = std::fs::read_to_string(&path).unwrap();
        let toml = toml.replacen("[training]\n", &format!("[training]\n{extra}\n"), 1);
        std::fs::write(&path, toml).unwrap();
    }
    path.to_str().unwrap().to_string()
}

/// The reason this machine cannot train on a GPU, or None if it can.
fn gpu_unavailable() -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        loam_tools::train::cuda::probe()
            .err()
            .map(|e| e.to_string())
    }
    #[cfg(not(feature = "cuda"))]
    {
        Some("this loam was built without CUDA support".into())
    }
}

#[test]
fn training_on_a_gpu_without_one_names_what_is_missing_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let project = digits_project(dir.path(), "");
    let out = loam(&["train", "--project", &project, "--device", "cuda"]);
    match gpu_unavailable() {
        Some(reason) => {
            let all = text(&out);
            assert!(!out.status.success(), "{all}");
            assert!(all.contains(&reason), "{all}");
            assert!(all.contains("--device cpu"), "{all}");
            // One line of error, not a panic's backtrace.
            assert!(!all.contains("panicked"), "{all}");
            assert!(!dir.path().join("runs").exists());
        }
        None => assert!(out.status.success(), "{}", text(&out)),
    }
}

#[test]
fn the_project_file_can_ask_for_the_gpu_and_quantization_aware_epochs_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let project = digits_project(dir.path(), "device = \"cuda\"\nqat_epochs = 1");
    let out = loam(&["train", "--project", &project]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let expected = if cfg!(feature = "cuda") {
        "quantization-aware training runs on the CPU only"
    } else {
        "built without CUDA support"
    };
    assert!(all.contains(expected), "{all}");
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn benchmarking_training_on_a_gpu_without_one_fails_with_the_reason() {
    let Some(reason) = gpu_unavailable() else {
        return;
    };
    let out = loam(&[
        "bench-train",
        "--device",
        "cuda",
        "--network",
        "digits-mlp",
        "--samples",
        "64",
    ]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(&reason), "{all}");
}
