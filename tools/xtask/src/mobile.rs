//! The mobile stage of `cargo xtask test`: the C library (targets/mobile) exercised by its C
//! test program on x86_64 and on aarch64 under qemu-user, the two runs' output digests
//! compared, and the Java binding's test on the host JVM. (The check that the checked-in
//! header is cbindgen's output is a `cargo test` of the crate, run in the x86_64 stage.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::report::{self, Counts, Row};
use crate::test::{banner, host_cargo_in, run_streamed};
use crate::toolchain::{AARCH64_LINUX, Toolchain};

const CRATE: &str = "targets/mobile";
const MODEL: &str = "models/digits/model.loam";
const DIGITS: &str = "models/digits/data/digits.csv.gz";

/// The rows of the mobile stage: the C test per ISA (its own check count, plus one for the
/// digests agreeing) and the Java test.
pub fn rows(root: &Path, toolchain: &Toolchain) -> Vec<Row> {
    let scratch = root.join("target/mobile-tests");
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return vec![failed_row(
            "C API",
            "host",
            format!("creating {}: {e}", scratch.display()),
        )];
    }
    let mut rows = Vec::new();

    banner("mobile: the C library and its C test on x86_64");
    let host = c_test(root, &scratch, Host::X86_64, toolchain);
    banner("mobile: the C library and its C test on aarch64 (qemu-user)");
    let arm = c_test(root, &scratch, Host::Aarch64, toolchain);
    let digests_agree = match (&host, &arm) {
        (Ok(h), Ok(a)) => {
            let same = h.digest.is_some() && h.digest == a.digest;
            println!(
                "output digests: x86_64 {:?}, aarch64 {:?}: {}",
                h.digest,
                a.digest,
                if same { "equal" } else { "DIFFERENT" }
            );
            Some(same)
        }
        _ => None,
    };
    for (run, runs_on, target) in [
        (host, "host", "C API x86_64"),
        (arm, "qemu-aarch64 (qemu-user)", "C API aarch64"),
    ] {
        rows.push(match run {
            Ok(run) => {
                let mut counts = run.counts;
                if target.ends_with("aarch64") {
                    match digests_agree {
                        Some(true) => counts.passed += 1,
                        _ => counts.failed += 1,
                    }
                }
                Row {
                    target: target.into(),
                    runs_on: runs_on.into(),
                    counts,
                    problem: None,
                }
            }
            Err(e) => failed_row(target, runs_on, format!("{e:#}")),
        });
    }

    banner("mobile: the Java binding (JNI) on the host JVM");
    rows.push(match java_test(root, &scratch) {
        Ok(counts) => Row {
            target: "JNI (dev.loam.LoamModel)".into(),
            runs_on: "host JVM".into(),
            counts,
            problem: None,
        },
        Err(e) => failed_row("JNI (dev.loam.LoamModel)", "host JVM", format!("{e:#}")),
    });
    rows
}

fn failed_row(target: &str, runs_on: &str, problem: String) -> Row {
    Row {
        target: target.into(),
        runs_on: runs_on.into(),
        counts: Counts::default(),
        problem: Some(problem),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Host {
    X86_64,
    Aarch64,
}

struct CRun {
    counts: Counts,
    digest: Option<String>,
}

/// Builds the library for `host`, compiles the C test against its static library, runs it on
/// the digits set and reads its counts and output digest.
fn c_test(root: &Path, scratch: &Path, host: Host, toolchain: &Toolchain) -> Result<CRun> {
    let (lib_dir, compiler, runner) = match host {
        Host::X86_64 => (build_host_library(root)?, "gcc", String::new()),
        Host::Aarch64 => {
            let target = &AARCH64_LINUX;
            let env_triple = target.triple.to_uppercase().replace('-', "_");
            let target_dir = toolchain.target_dir(root);
            let mut build = toolchain.cargo(target.triple);
            // Without the JNI entry points: the C test needs the C API only.
            build
                .current_dir(root)
                .args([
                    "build",
                    "--locked",
                    "--release",
                    "-p",
                    "loam-mobile",
                    "--no-default-features",
                    "--target",
                    target.triple,
                ])
                .env("CARGO_TARGET_DIR", &target_dir)
                .env(format!("CARGO_TARGET_{env_triple}_LINKER"), target.linker);
            let (ok, _) = run_streamed(&mut build)?;
            ensure!(ok, "building loam-mobile for {} failed", target.triple);
            (
                target_dir.join(target.triple).join("release"),
                target.linker,
                format!("{} -L {} ", target.qemu, target.sysroot),
            )
        }
    };
    let name = match host {
        Host::X86_64 => "x86_64",
        Host::Aarch64 => "aarch64",
    };
    if host == Host::Aarch64 {
        // The release build an app ships; the host library is a debug build for the tests.
        report_size(&lib_dir.join("libloam_mobile.so"));
    }
    let exe = scratch.join(format!("loam_test_{name}"));
    let mut compile = Command::new(compiler);
    compile
        .current_dir(root)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-I"])
        .arg(format!("{CRATE}/include"))
        .arg(format!("{CRATE}/tests/c/loam_test.c"))
        .arg(lib_dir.join("libloam_mobile.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe);
    let (ok, _) = run_streamed(&mut compile)?;
    ensure!(ok, "compiling the C test with {compiler} failed");

    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir)?;
    // The digits arrive on stdin, decompressed by gzip, as an app would stream its samples.
    let mut run = Command::new("sh");
    run.current_dir(root).arg("-c").arg(format!(
        "gzip -dc {DIGITS} | {runner}{} {MODEL} {}",
        exe.display(),
        dir.display()
    ));
    let (ok, output) = run_streamed(&mut run)?;
    let counts = report::firmware_counts(&output)
        .context("the C test printed no `result: N passed, M failed` line")?;
    ensure!(
        ok || counts.failed > 0,
        "the C test exited non-zero without a failed check"
    );
    let digest = output
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .map(str::to_string);
    Ok(CRun { counts, digest })
}

/// Builds the host library (with the JNI entry points) and returns where it is.
fn build_host_library(root: &Path) -> Result<PathBuf> {
    let mut build = host_cargo_in(root, &["build", "--locked", "-p", "loam-mobile"]);
    let (ok, _) = run_streamed(&mut build)?;
    ensure!(ok, "building loam-mobile for the host failed");
    Ok(crate::toolchain::host_target_dir(root).join("debug"))
}

/// Prints the stripped size of the aarch64 shared library, the figure an app download grows by.
fn report_size(library: &Path) {
    let stripped = library.with_extension("stripped.so");
    let ok = Command::new("aarch64-linux-gnu-strip")
        .arg("-o")
        .arg(&stripped)
        .arg(library)
        .status()
        .is_ok_and(|s| s.success());
    if let (true, Ok(meta)) = (ok, std::fs::metadata(&stripped)) {
        println!(
            "libloam_mobile.so for aarch64 (release): {} bytes stripped",
            meta.len()
        );
    }
}

/// Compiles the Java class and its test and runs the test against the host library.
fn java_test(root: &Path, scratch: &Path) -> Result<Counts> {
    let lib_dir = build_host_library(root)?;
    let classes = scratch.join("classes");
    let mut javac = Command::new("javac");
    javac
        .current_dir(root)
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .arg(format!("{CRATE}/java/dev/loam/LoamException.java"))
        .arg(format!("{CRATE}/java/dev/loam/LoamModel.java"))
        .arg(format!("{CRATE}/java/test/LoamModelTest.java"));
    let (ok, _) = run_streamed(&mut javac)?;
    ensure!(
        ok,
        "javac failed (is a JDK installed? `cargo xtask setup` installs one)"
    );
    let mut java = Command::new("java");
    java.current_dir(root)
        .arg(format!("-Djava.library.path={}", lib_dir.display()))
        .arg("-cp")
        .arg(&classes)
        .args(["LoamModelTest", MODEL, DIGITS])
        .arg(scratch);
    let (ok, output) = run_streamed(&mut java)?;
    let counts = report::firmware_counts(&output)
        .context("the Java test printed no `result: N passed, M failed` line")?;
    ensure!(
        ok || counts.failed > 0,
        "the Java test exited non-zero without a failed check"
    );
    Ok(counts)
}
