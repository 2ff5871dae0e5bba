//! The Raspberry Pi stage of `cargo xtask test`: cross-builds the `loam-pi` CLI in release for
//! 64-bit (aarch64) and 32-bit (armv7) Pi OS, reports the binary's size, runs it under
//! qemu-user on the bundled data (digits CSV, gestures CSV, keyword WAV clips) and requires
//! the very predictions the x86_64 build makes: the int8 models are bit-exact across
//! instruction sets, so class, label and score must all agree, line for line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::report::{Counts, Row};
use crate::test::{describe, run_streamed};
use crate::toolchain::{AARCH64_LINUX, ARMV7_LINUX, LinuxTarget, Toolchain, host_cargo};

/// One comparison: a model and the data it runs on, as `loam-pi` arguments (paths relative to
/// the repository root, where every run starts, so the `source` fields agree).
struct Check {
    name: &'static str,
    args: &'static [&'static str],
}

const CHECKS: [Check; 3] = [
    Check {
        name: "digits CSV",
        args: &[
            "models/digits/model.loam",
            "--csv",
            "models/digits/data/digits.csv.gz",
        ],
    },
    Check {
        name: "gestures CSV",
        args: &[
            "models/gestures/model.loam",
            "--csv",
            "models/gestures/data/gestures.csv.gz",
        ],
    },
    Check {
        name: "keyword WAV",
        args: &[
            "models/keywords/model.loam",
            "--wav",
            "models/keywords/data/yes/v01s1_nohash_0.wav",
            "models/keywords/data/stop/v01s1_nohash_0.wav",
            "models/keywords/data/left/v02s1_nohash_0.wav",
            "models/keywords/data/_silence_/v01s1_nohash_0.wav",
        ],
    },
];

/// The fast path each target's runtime must pick (what `loam-pi` reports as `"isa"`): a
/// build that fell back to the portable kernels would still predict the same, so this is
/// checked on its own.
fn expected_isa(target: &LinuxTarget) -> &'static str {
    if target.triple == AARCH64_LINUX.triple {
        // qemu-aarch64's default CPU (`max`) has the Armv8.2 dot product, as the Pi 5 does.
        "dotprod"
    } else {
        // Every Pi that runs 32-bit Linux has NEON, as qemu-arm's default CPU does.
        "neon32"
    }
}

/// One row per Pi target: a passed or failed count per data set compared with the host
/// build, and one for the instruction set in use. A build or host failure is the row's
/// problem.
pub fn pi_rows(root: &Path, toolchain: &Toolchain) -> Vec<Row> {
    println!("\n==> loam-pi: the x86_64 build's predictions, for reference");
    let reference = host_binary(root).and_then(|bin| {
        CHECKS
            .iter()
            .map(|check| {
                let mut cmd = Command::new(&bin);
                let out = run_loam_pi(root, &mut cmd, check)
                    .with_context(|| format!("host run on the {}", check.name))?;
                Ok(out.results)
            })
            .collect::<Result<Vec<_>>>()
    });
    [&AARCH64_LINUX, &ARMV7_LINUX]
        .into_iter()
        .map(|target| target_row(root, toolchain, target, reference.as_ref()))
        .collect()
}

fn target_row(
    root: &Path,
    toolchain: &Toolchain,
    target: &LinuxTarget,
    reference: Result<&Vec<Vec<String>>, &anyhow::Error>,
) -> Row {
    println!("\n==> loam-pi for {} under {}", target.triple, target.qemu);
    let arch = target.triple.split('-').next().unwrap_or(target.triple);
    let mut row = Row {
        target: format!("loam-pi {arch}"),
        runs_on: format!("{} (qemu-user)", target.qemu),
        counts: Counts::default(),
        problem: None,
    };
    let reference = match reference {
        Ok(r) => r,
        Err(e) => {
            row.problem = Some(format!("x86_64 reference: {e:#}"));
            return row;
        }
    };
    let bin = match cross_build(root, toolchain, target) {
        Ok(bin) => bin,
        Err(e) => {
            row.problem = Some(format!("{e:#}"));
            return row;
        }
    };
    let (size, stripped) = sizes(&bin, target);
    match stripped {
        Some(s) => {
            println!(
                "loam-pi {}: {size} bytes, {s} bytes stripped",
                target.triple
            );
            row.runs_on = format!("{} {} KiB stripped", target.qemu, s.div_ceil(1024));
        }
        None => println!("loam-pi {}: {size} bytes (no strip tool)", target.triple),
    }
    let mut failures = Vec::new();
    let mut isa_seen = None;
    for (check, expected) in CHECKS.iter().zip(reference) {
        let mut cmd = Command::new(target.qemu);
        cmd.args(["-L", target.sysroot]).arg(&bin);
        let outcome = run_loam_pi(root, &mut cmd, check).and_then(|out| {
            isa_seen.get_or_insert(out.isa);
            compare(&out.results, expected)
        });
        match outcome {
            Ok(()) => {
                println!("{}: identical to x86_64", check.name);
                row.counts.passed += 1;
            }
            Err(e) => {
                println!("{}: FAILED: {e:#}", check.name);
                row.counts.failed += 1;
                failures.push(check.name.to_string());
            }
        }
    }
    let want = expected_isa(target);
    if isa_seen.as_deref() == Some(want) {
        row.counts.passed += 1;
    } else {
        println!("ISA: expected {want}, loam-pi reported {isa_seen:?}");
        row.counts.failed += 1;
        failures.push(format!("ISA {isa_seen:?} (expected {want})"));
    }
    if !failures.is_empty() {
        row.problem = Some(failures.join(", "));
    }
    row
}

/// Builds the host `loam-pi` (release, in the workspace's target folder: `CARGO_TARGET_DIR`
/// when set, which cargo also reads).
fn host_binary(root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(host_cargo());
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "-p", "loam-pi"]);
    stream(&mut cmd)?;
    Ok(crate::toolchain::host_target_dir(root).join("release/loam-pi"))
}

/// Cross-builds `loam-pi` for `target` and returns the binary's path.
fn cross_build(root: &Path, toolchain: &Toolchain, target: &LinuxTarget) -> Result<PathBuf> {
    let env_triple = target.triple.to_uppercase().replace('-', "_");
    let target_dir = toolchain.target_dir(root);
    let mut cmd = toolchain.cargo(target.triple);
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "-p", "loam-pi"])
        .args(["--target", target.triple])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(format!("CARGO_TARGET_{env_triple}_LINKER"), target.linker);
    stream(&mut cmd)?;
    Ok(target_dir.join(target.triple).join("release/loam-pi"))
}

/// The binary's size as built (with the release profile's line tables) and stripped (by the
/// target's binutils `strip`, into a copy beside it), in bytes.
fn sizes(bin: &Path, target: &LinuxTarget) -> (u64, Option<u64>) {
    let size = std::fs::metadata(bin).map_or(0, |m| m.len());
    let strip = target.linker.replace("-gcc", "-strip");
    let out = bin.with_extension("stripped");
    let stripped = Command::new(&strip)
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&out).ok())
        .map(|m| m.len());
    (size, stripped)
}

/// What one `loam-pi --json` run printed.
struct Outcome {
    /// The result lines with the latency (the only field that may differ) removed.
    results: Vec<String>,
    /// The instruction set it reported using.
    isa: String,
}

/// Runs `cmd` (the `loam-pi` binary, possibly behind qemu) on `check` with `--json` from the
/// repository root. Its output is not echoed (thousands of lines); the summary line is.
fn run_loam_pi(root: &Path, cmd: &mut Command, check: &Check) -> Result<Outcome> {
    cmd.current_dir(root).args(check.args).arg("--json");
    println!("$ {}", describe(cmd));
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "exit status {}: {}",
        out.status,
        stderr.trim()
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    let summary = lines.pop().unwrap_or_default();
    println!("{summary}");
    ensure!(
        summary.contains(r#""type":"summary""#),
        "the last line is not the summary: {summary}"
    );
    let isa = json_string(summary, "isa").unwrap_or_default();
    let results = lines.iter().map(|l| without_latency(l)).collect();
    Ok(Outcome { results, isa })
}

/// The string value of `"key":"..."` in a flat JSON line (loam-pi's own output: no escapes
/// in the ISA names), without a JSON parser in xtask's dependencies.
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// A result line without its `"latency_us":N,` field.
fn without_latency(line: &str) -> String {
    let Some(start) = line.find("\"latency_us\":") else {
        return line.to_string();
    };
    let end = line[start..]
        .find([',', '}'])
        .map_or(line.len(), |e| start + e + 1);
    format!("{}{}", &line[..start], &line[end..])
}

/// Requires `got` to equal `expected` line for line, naming the first difference.
fn compare(got: &[String], expected: &[String]) -> Result<()> {
    if let Some((i, (g, e))) = got
        .iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (g, e))| g != e)
    {
        bail!("result {i} differs: x86_64 {e}, cross {g}");
    }
    ensure!(
        got.len() == expected.len(),
        "{} results, x86_64 gave {}",
        got.len(),
        expected.len()
    );
    Ok(())
}

/// Runs a build command with its output echoed, failing on a non-zero exit.
fn stream(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let (ok, _) = run_streamed(cmd)?;
    ensure!(ok, "{what} failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_the_only_field_dropped() {
        let line = r#"{"class":1,"index":0,"latency_us":12.5,"score":0.99,"type":"result"}"#;
        assert_eq!(
            without_latency(line),
            r#"{"class":1,"index":0,"score":0.99,"type":"result"}"#
        );
        let summary = r#"{"info":{"isa":"dotprod","isa_available":["neon"]},"type":"summary"}"#;
        assert_eq!(json_string(summary, "isa").as_deref(), Some("dotprod"));
    }

    #[test]
    fn comparisons_name_the_first_difference() {
        let a = vec!["x".to_string(), "y".to_string()];
        let b = vec!["x".to_string(), "z".to_string()];
        assert!(compare(&a, &a).is_ok());
        let e = compare(&a, &b).unwrap_err().to_string();
        assert!(e.contains("result 1"), "{e}");
        assert!(compare(&a[..1], &a).is_err());
    }
}
