//! `cargo xtask test`: every target's tests, then the lint checks, then one summary table.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::report::{self, Counts, Row};
use crate::toolchain::{
    AARCH64_LINUX, ARMV7_LINUX, BareMetalTarget, CORTEX_M0, CORTEX_M4F, CROSS_TARGETS, LinuxTarget,
    MSRV, Toolchain, host_cargo,
};

/// The stages, by the names `--only` accepts.
pub const STAGES: [&str; 11] = [
    "x86_64",
    "aarch64",
    "armv7",
    "cortex-m4",
    "cortex-m0",
    "raspberry-pi",
    "mobile",
    "features",
    "msrv",
    "clippy",
    "fmt",
];

/// Seconds a firmware may run under QEMU before it counts as hung.
const FIRMWARE_TIMEOUT_S: u32 = 600;

/// Feature sets of the runtime that must each build; the no_std ones matter most.
const RUNTIME_FEATURE_SETS: [&str; 5] = ["", "alloc", "std", "defmt", "std,defmt"];

/// Runs the selected stages and returns the summary rows.
pub fn run(root: &Path, toolchain: &Toolchain, only: &[String]) -> Vec<Row> {
    let selected = |stage: &str| only.is_empty() || only.iter().any(|o| o == stage);
    let mut rows = Vec::new();
    if selected("x86_64") {
        rows.push(host_tests(root));
    }
    for (stage, target) in [("aarch64", &AARCH64_LINUX), ("armv7", &ARMV7_LINUX)] {
        if selected(stage) {
            rows.push(linux_tests(root, toolchain, target));
        }
    }
    for (stage, target) in [("cortex-m4", &CORTEX_M4F), ("cortex-m0", &CORTEX_M0)] {
        if selected(stage) {
            rows.push(firmware_tests(root, toolchain, target));
        }
    }
    if selected("raspberry-pi") {
        rows.extend(crate::pi::pi_rows(root, toolchain));
    }
    if selected("mobile") {
        rows.extend(crate::mobile::rows(root, toolchain));
    }
    if selected("features") {
        rows.push(feature_matrix(root));
        rows.push(cuda_feature(root));
    }
    if selected("msrv") {
        rows.push(msrv(root, toolchain));
    }
    if selected("clippy") {
        rows.push(clippy(root));
    }
    if selected("fmt") {
        rows.push(rustfmt(root));
    }
    rows
}

/// Runs a command with stdout and stderr merged, echoing each line as it comes (CI logs show
/// progress) and returning it all for parsing.
pub(crate) fn run_streamed(cmd: &mut Command) -> Result<(bool, String)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    println!("$ {}", describe(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    // The command holds the pipe's write ends; drop them so the read side sees EOF when the
    // child exits.
    *cmd = Command::new("true");
    let mut output = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        println!("{line}");
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait()?;
    Ok((status.success(), output))
}

pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The host's cargo, run at the workspace root with `args`.
pub(crate) fn host_cargo_in(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(host_cargo());
    cmd.current_dir(root).args(args);
    cmd
}

pub(crate) fn banner(title: &str) {
    println!("\n==> {title}");
}

/// A row from a `cargo test` run.
fn cargo_test_row(target: &str, runs_on: &str, cmd: &mut Command) -> Row {
    let (counts, problem) = match run_streamed(cmd) {
        Ok((success, output)) => {
            let counts = report::cargo_test_counts(&output);
            let problem = (!success && counts.failed == 0)
                .then(|| "cargo test failed before running every test".to_string());
            (counts, problem)
        }
        Err(e) => (Counts::default(), Some(format!("{e:#}"))),
    };
    Row {
        target: target.into(),
        runs_on: runs_on.into(),
        counts,
        problem,
    }
}

/// The instruction sets whose fast paths each target's tests must find (`LOAM_EXPECT_ISA`): a
/// missing one fails the run instead of leaving its kernels untested.
fn expected_isa(triple: &str) -> &'static str {
    match triple {
        "x86_64-unknown-linux-gnu" => "avx2",
        "aarch64-unknown-linux-gnu" => "neon,dotprod,fhm",
        // qemu-arm's default CPU has NEON, as every Pi does; the DSP kernels stay in the
        // tables, so both sets run against the reference.
        "armv7-unknown-linux-gnueabihf" => "dsp,neon32",
        _ => "",
    }
}

/// The CPU flags (`/proc/cpuinfo`) the runtime's AVX-512 VNNI kernels need.
const AVX512_VNNI_FLAGS: [&str; 4] = ["avx512f", "avx512bw", "avx512_vnni", "bmi2"];

/// Whether a `/proc/cpuinfo` text lists every one of `wanted` among its CPU flags.
fn has_flags(cpuinfo: &str, wanted: &[&str]) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, flags)| {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            wanted.iter().all(|f| flags.contains(f))
        })
}

/// The CPU flags (`/proc/cpuinfo`) the runtime's AMX kernels need besides VNNI's.
const AMX_FLAGS: [&str; 2] = ["amx_tile", "amx_int8"];

/// The host's `LOAM_EXPECT_ISA`: AVX2 always, AVX-512 VNNI and AMX where this CPU has them.
/// There is no emulator here that runs AVX-512 or AMX user code, so a machine without them
/// cannot test those kernels; it says so in the log instead of skipping them unseen.
fn host_expected_isa() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut isa = expected_isa("x86_64-unknown-linux-gnu").to_string();
    if has_flags(&cpuinfo, &AVX512_VNNI_FLAGS) {
        isa.push_str(",avx512vnni");
    } else {
        println!(
            "note: this CPU lacks AVX-512 VNNI ({}), so its int8 kernels are not tested here",
            AVX512_VNNI_FLAGS.join(", ")
        );
    }
    if has_flags(&cpuinfo, &AVX512_VNNI_FLAGS) && has_flags(&cpuinfo, &AMX_FLAGS) {
        isa.push_str(",amx");
    } else {
        println!(
            "note: this CPU lacks AMX ({}), so its int8 tile kernels are not tested here",
            AMX_FLAGS.join(", ")
        );
    }
    isa
}

fn host_tests(root: &Path) -> Row {
    banner("x86_64: the whole workspace");
    let mut cmd = host_cargo_in(root, &["test", "--workspace", "--locked"]);
    cmd.env("LOAM_EXPECT_ISA", host_expected_isa())
        // The ONNX conformance test (tests/) passes with a note where the onnx wheel is
        // missing; here, after `setup` installed it, a missing wheel is a failure. The QEMU
        // stages test the runtime crate only, so they never run it.
        .env("LOAM_REQUIRE_ONNX_TESTDATA", "1")
        // `loam quickstart`'s test runs its emulated Cortex-M4 step where QEMU and the cross
        // tools are installed and skips it elsewhere; after `setup`, they must be.
        .env("LOAM_REQUIRE_BOARD", "1");
    cargo_test_row("x86_64-unknown-linux-gnu", "host", &mut cmd)
}

fn linux_tests(root: &Path, toolchain: &Toolchain, target: &LinuxTarget) -> Row {
    banner(&format!(
        "{}: the runtime's tests under {}",
        target.triple, target.qemu
    ));
    let env_triple = target.triple.to_uppercase().replace('-', "_");
    let mut cmd = toolchain.cargo(target.triple);
    cmd.current_dir(root)
        .args(["test", "--locked", "-p", "loam", "--target", target.triple])
        .env("CARGO_TARGET_DIR", toolchain.target_dir(root))
        .env("LOAM_EXPECT_ISA", expected_isa(target.triple))
        .env(format!("CARGO_TARGET_{env_triple}_LINKER"), target.linker)
        .env(
            format!("CARGO_TARGET_{env_triple}_RUNNER"),
            format!("{} -L {}", target.qemu, target.sysroot),
        );
    cargo_test_row(
        target.triple,
        &format!("{} (qemu-user)", target.qemu),
        &mut cmd,
    )
}

/// Builds the firmware, runs the self-test, the reference layer, the bundled model, the
/// checkpoint sweep, the fine-tune check and (where it fits) the learning demo under QEMU. The self-test reports one count per
/// check; the others count as one test each.
fn firmware_tests(root: &Path, toolchain: &Toolchain, target: &BareMetalTarget) -> Row {
    banner(&format!(
        "{}: firmware under qemu-system-arm on {}",
        target.triple, target.board
    ));
    let mut row = Row {
        target: target.triple.into(),
        runs_on: format!(
            "qemu-system-arm {}",
            target.board.split(' ').next().unwrap_or("")
        ),
        counts: Counts::default(),
        problem: None,
    };
    let elves = match build_firmware(root, toolchain, target.triple) {
        Ok(dir) => dir,
        Err(e) => {
            row.problem = Some(format!("{e:#}"));
            return row;
        }
    };
    match run_firmware(root, &elves.join("selftest")) {
        Ok((success, output)) => match report::firmware_counts(&output) {
            Some(counts) => {
                row.counts = counts;
                if !success && counts.failed == 0 {
                    row.problem = Some("selftest exited non-zero".into());
                }
            }
            None => row.problem = Some("selftest printed no result line".into()),
        },
        Err(e) => row.problem = Some(format!("{e:#}")),
    }
    // The reference layer, the bundled int8 model whose outputs must match the digest an
    // x86_64 host recorded in it, the checkpoint power-cut sweep, the fine-tune whose
    // checkpoint must match the host's bit for bit, and the learning demo: one test each.
    for &bin in target.tests {
        match run_firmware(root, &elves.join(bin)) {
            Ok((true, _)) => row.counts.passed += 1,
            Ok((false, _)) => row.counts.failed += 1,
            Err(e) => row.problem = Some(format!("{bin}: {e:#}")),
        }
    }
    // What a board with a probe runs: every binary with defmt over RTT (builds; nothing here
    // can read RTT), in its own target folder so the QEMU build above stays cached.
    if target.triple == CORTEX_M4F.triple {
        let mut rtt = firmware_build(toolchain, root, target.triple, "target/rtt");
        rtt.args(["--bins", "--no-default-features", "--features", "rtt"]);
        match run_streamed(&mut rtt) {
            Ok((true, _)) => row.counts.passed += 1,
            _ => {
                row.counts.failed += 1;
                row.problem = Some("the RTT build failed".into());
            }
        }
    }
    row
}

/// `cargo build --release` of the firmware for `triple` into `targets/cortex-m/<target_dir>`,
/// for the caller to add what to build (`--bins`, `--bin NAME`) and features.
fn firmware_build(toolchain: &Toolchain, root: &Path, triple: &str, target_dir: &str) -> Command {
    let firmware = root.join("targets/cortex-m");
    let mut cmd = toolchain.cargo(triple);
    // The firmware has its own workspace and profile; an inherited CARGO_TARGET_DIR would
    // move its ELF files away from where the runner looks, so the folder is named here.
    cmd.current_dir(&firmware)
        .args(["build", "--locked", "--release", "--target", triple])
        .arg("--target-dir")
        .arg(firmware.join(target_dir))
        .args(toolchain.bare_metal_args());
    cmd
}

/// Builds every firmware binary for `triple`; returns the directory holding the ELF files.
pub fn build_firmware(root: &Path, toolchain: &Toolchain, triple: &str) -> Result<PathBuf> {
    let target_dir = root.join("targets/cortex-m/target");
    let mut cmd = firmware_build(toolchain, root, triple, "target");
    cmd.arg("--bins");
    let (success, _) = run_streamed(&mut cmd)?;
    anyhow::ensure!(success, "firmware build for {triple} failed");
    Ok(target_dir.join(triple).join("release"))
}

/// `cargo xtask learn`: the learning firmware built with `model` and `recording` in place of
/// the bundled ones, run under QEMU on the Cortex-M4F board. Returns whether it reproduced the
/// host's figures (its exit status).
pub fn learn(root: &Path, toolchain: &Toolchain, model: &Path, recording: &Path) -> Result<bool> {
    for (tool, what) in [
        ("qemu-system-arm", "QEMU"),
        ("arm-none-eabi-gcc", "the GNU Arm linker"),
        ("defmt-print", "defmt-print"),
    ] {
        anyhow::ensure!(
            crate::toolchain::runs(tool, "--version"),
            "{what} ({tool}) is not installed; `cargo xtask setup` installs it"
        );
    }
    let absolute =
        |p: &Path| std::fs::canonicalize(p).with_context(|| format!("reading {}", p.display()));
    let (model, recording) = (absolute(model)?, absolute(recording)?);
    let triple = CORTEX_M4F.triple;
    let target_dir = root.join("targets/cortex-m/target");
    let mut cmd = firmware_build(toolchain, root, triple, "target");
    cmd.args(["--bin", "learn"])
        .env("LOAM_LEARN_MODEL", &model)
        .env("LOAM_LEARN_RECORDING", &recording);
    let (built, _) = run_streamed(&mut cmd)?;
    anyhow::ensure!(built, "building the learning firmware failed");
    let elf = target_dir.join(triple).join("release").join("learn");
    let (ok, _) = run_firmware(root, &elf)?;
    Ok(ok)
}

fn run_firmware(root: &Path, elf: &Path) -> Result<(bool, String)> {
    let mut cmd = Command::new("timeout");
    cmd.current_dir(root.join("targets/cortex-m"))
        .arg(FIRMWARE_TIMEOUT_S.to_string())
        .arg("./qemu-run")
        .arg(elf);
    run_streamed(&mut cmd)
}

/// A row of checks, each passing or failing as a whole.
fn check_row(target: &str, checks: Vec<(String, Command)>) -> Row {
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for (name, mut cmd) in checks {
        match run_streamed(&mut cmd) {
            Ok((true, _)) => counts.passed += 1,
            Ok((false, _)) | Err(_) => {
                counts.failed += 1;
                failures.push(name);
            }
        }
    }
    Row {
        target: target.into(),
        runs_on: "host".into(),
        counts,
        problem: (!failures.is_empty()).then(|| failures.join(", ")),
    }
}

fn feature_matrix(root: &Path) -> Row {
    banner("feature matrix of the runtime");
    let checks = RUNTIME_FEATURE_SETS
        .iter()
        .map(|features| {
            let mut cmd = host_cargo_in(
                root,
                &["check", "--locked", "-p", "loam", "--no-default-features"],
            );
            if !features.is_empty() {
                cmd.args(["--features", features]);
            }
            let name = if features.is_empty() {
                "no features"
            } else {
                features
            };
            (format!("[{name}]"), cmd)
        })
        .collect();
    check_row("loam feature sets", checks)
}

/// Builds the runtime with its MSRV compiler for the host and every cross target, tests
/// included for the host, so nothing newer than the `rust-version` it declares slips in.
fn msrv(root: &Path, toolchain: &Toolchain) -> Row {
    banner(&format!("the runtime with Rust {MSRV}"));
    let target_dir = root.join("target").join("msrv");
    let mut checks = Vec::new();
    for triple in std::iter::once("x86_64-unknown-linux-gnu").chain(CROSS_TARGETS) {
        let mut cmd = toolchain.msrv_cargo(triple);
        cmd.current_dir(root)
            .args(["check", "--locked", "-p", "loam", "--target", triple])
            .env("CARGO_TARGET_DIR", &target_dir);
        if triple.starts_with("thumb") {
            cmd.args(toolchain.bare_metal_args());
        } else {
            cmd.args(["--features", "std", "--all-targets"]);
        }
        checks.push((triple.to_string(), cmd));
    }
    let mut row = check_row(&format!("rust {MSRV} (runtime)"), checks);
    row.runs_on = "host".into();
    row
}

fn clippy(root: &Path) -> Row {
    banner("clippy");
    let cmd = host_cargo_in(
        root,
        &[
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    );
    // The GPU trainer is compiled only with the tools' cuda feature.
    let cuda = host_cargo_in(
        root,
        &[
            "clippy",
            "--locked",
            "-p",
            "loam-tools",
            "--features",
            "cuda",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    );
    check_row(
        "clippy -D warnings",
        vec![
            ("workspace".into(), cmd),
            ("loam-tools --features cuda".into(), cuda),
        ],
    )
}

/// A row from several `cargo test` runs, their counts summed.
fn cargo_tests_row(target: &str, runs_on: &str, commands: Vec<Command>) -> Row {
    let mut row = Row {
        target: target.into(),
        runs_on: runs_on.into(),
        counts: Counts::default(),
        problem: None,
    };
    for mut cmd in commands {
        let one = cargo_test_row(target, runs_on, &mut cmd);
        row.counts.passed += one.counts.passed;
        row.counts.failed += one.counts.failed;
        row.problem = row.problem.or(one.problem);
    }
    row
}

/// The tools' `cuda` feature, built and tested without a GPU: it must build (with cudarc
/// loading CUDA at run time, nothing of CUDA is needed to), NVRTC (the wheel `setup` installs)
/// must compile every kernel, a machine without the driver must get the message that says so,
/// and the GPU training path must match the CPU engine on the emulated GPU (the kernels
/// compiled by `cc`). The tests that need a real GPU are `cargo xtask test-gpu`'s.
fn cuda_feature(root: &Path) -> Row {
    banner("loam-tools with the cuda feature (no GPU needed)");
    let target = "loam-tools --features cuda";
    let mut build = host_cargo_in(
        root,
        &[
            "build",
            "--locked",
            "-p",
            "loam-tools",
            "--features",
            "cuda",
        ],
    );
    if !matches!(run_streamed(&mut build), Ok((true, _))) {
        return Row {
            target: target.into(),
            runs_on: "host".into(),
            counts: Counts::default(),
            problem: Some("cargo build -p loam-tools --features cuda failed".into()),
        };
    }
    let test = |extra: &[&str]| {
        let mut cmd = host_cargo_in(
            root,
            &["test", "--locked", "-p", "loam-tools", "--features", "cuda"],
        );
        cmd.args(extra).env("LOAM_REQUIRE_NVRTC", "1");
        cmd
    };
    cargo_tests_row(
        target,
        "host (no GPU; emulated GPU)",
        vec![
            test(&["--lib", "--", "cuda::", "device"]),
            test(&["--test", "cuda"]),
        ],
    )
}

/// `cargo xtask test-gpu`: the GPU trainer on this machine's NVIDIA GPU. The ignored `gpu_`
/// tests (every layer, optimizer and loss, one epoch and its repeatability against the CPU
/// engine, the memory and divergence messages), `loam train --device cuda` end to end, and the
/// training benchmark at batch 256 for ResNet-8 and MobileNetV1-0.25 beside PyTorch on the same
/// GPU (when `python3` has torch with CUDA).
pub fn gpu(root: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    banner("NVRTC and cuBLAS");
    if let Err(e) = crate::setup::gpu_libraries() {
        rows.push(Row {
            target: "CUDA libraries".into(),
            runs_on: "pip".into(),
            counts: Counts::default(),
            problem: Some(format!("{e:#}")),
        });
        return rows;
    }
    banner("GPU tests");
    let test = |extra: &[&str]| {
        let mut cmd = host_cargo_in(
            root,
            &["test", "--locked", "-p", "loam-tools", "--features", "cuda"],
        );
        cmd.args(extra);
        cmd
    };
    rows.push(cargo_tests_row(
        "loam-tools gpu_ tests",
        "NVIDIA GPU",
        vec![
            test(&["--lib", "--", "--ignored", "gpu_", "--test-threads=1"]),
            test(&["--test", "cuda"]),
        ],
    ));
    banner("training throughput beside PyTorch, batch 256");
    let torch = crate::toolchain::capture(Command::new("python3").args([
        "-c",
        "import torch; assert torch.cuda.is_available(); print(torch.__version__)",
    ]));
    let mut bench = host_cargo_in(
        root,
        &[
            "run",
            "--release",
            "--locked",
            "-p",
            "loam-tools",
            "--features",
            "cuda",
            "--",
            "bench-train",
            "--device",
            "cuda",
            "--batch",
            "256",
            "--samples",
            "16384",
            "--network",
            "resnet-8",
            "--network",
            "mobilenet-v1-alpha",
        ],
    );
    match &torch {
        Some(version) => {
            println!("PyTorch {} with CUDA: comparing", version.trim());
            bench.args(["--vs-pytorch", "python3"]);
        }
        None => println!(
            "python3 has no torch with CUDA: loam's figures only (pip install torch to compare)"
        ),
    }
    let mut row = check_row(
        "bench-train --device cuda",
        vec![("benchmark".into(), bench)],
    );
    row.runs_on = "NVIDIA GPU".into();
    rows.push(row);
    rows
}

fn rustfmt(root: &Path) -> Row {
    banner("rustfmt");
    let workspace = host_cargo_in(root, &["fmt", "--all", "--check"]);
    let firmware = host_cargo_in(
        root,
        &[
            "fmt",
            "--manifest-path",
            "targets/cortex-m/Cargo.toml",
            "--check",
        ],
    );
    check_row(
        "rustfmt --check",
        vec![
            ("workspace".into(), workspace),
            ("targets/cortex-m".into(), firmware),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_vnni_and_amx_need_every_flag_on_the_flags_line() {
        let vnni = |cpuinfo: &str| has_flags(cpuinfo, &AVX512_VNNI_FLAGS);
        let zen4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 bmi2 avx512f avx512bw avx512_vnni\n";
        assert!(vnni(zen4));
        assert!(!has_flags(zen4, &AMX_FLAGS));
        let no_bw = "flags\t\t: avx2 bmi2 avx512f avx512_vnni\n";
        assert!(!vnni(no_bw));
        // `avx512_vnni` must be a whole flag, not part of another one.
        let only_vl = "flags\t\t: avx2 bmi2 avx512f avx512bw avx512_vnni_x\n";
        assert!(!vnni(only_vl));
        assert!(!vnni(""));
        let sapphire =
            "flags\t\t: avx2 bmi2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8\n";
        assert!(vnni(sapphire) && has_flags(sapphire, &AMX_FLAGS));
        let no_int8 = "flags\t\t: avx2 bmi2 avx512f avx512bw avx512_vnni amx_tile amx_bf16\n";
        assert!(!has_flags(no_int8, &AMX_FLAGS));
    }
}
