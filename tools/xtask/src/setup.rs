//! `cargo xtask setup`: installs what a fresh Debian machine lacks for the cross targets. Every
//! step checks first and acts only when something is missing, so running it again is cheap.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::toolchain::{self, Choice, DEBIAN_RUST_VERSION, Toolchain};

/// Cross compilers (also the linkers), emulators and the JDK, from Debian.
const HOST_PACKAGES: [&str; 7] = [
    "gcc-aarch64-linux-gnu",
    "gcc-arm-linux-gnueabihf",
    "gcc-arm-none-eabi",
    "qemu-user",
    "qemu-system-arm",
    "file",
    // javac and java, for the Android binding's JNI test on the host JVM.
    "openjdk-17-jdk-headless",
];

/// Decodes the Cortex-M firmware's defmt log on the host.
const DEFMT_PRINT: &str = "defmt-print";
const DEFMT_PRINT_VERSION: &str = "1.2.0";

/// The peer runtime the tools' tests and benchmarks compare against, from PyPI: its wheel
/// carries `libonnxruntime.so`, which the `ort` crate loads at run time.
const ONNXRUNTIME_WHEEL: &str = "onnxruntime==1.31.1";
const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// The ONNX Python package, from PyPI: its `onnx/backend/test/data` and node case code are the
/// cases of the workspace's ONNX conformance test (tests/tests/onnx_conformance.rs), so the
/// version is pinned with the test's allow-list.
const ONNX_WHEEL: &str = "onnx==1.23.2";
const ONNX_VERSION: &str = "1.23.2";

/// NVRTC, from PyPI, for the tools' `cuda` feature: its tests compile the GPU kernels to PTX,
/// which needs no GPU or driver. CUDA 13.0's release, so the PTX it writes loads on every CUDA
/// 13 driver (a newer NVRTC's PTX needs a newer driver).
const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc==13.0.88";
const NVRTC_VERSION: &str = "13.0.88";

/// cuBLAS, from PyPI, which only `cargo xtask test-gpu` needs (a GPU machine may have it in
/// its library path already); the CUDA 13.0 release, as NVRTC.
const CUBLAS_WHEEL: &str = "nvidia-cublas==13.0.2.14";
const CUBLAS_VERSION: &str = "13.0.2.14";

/// Whether the cross compilers, QEMU, defmt-print, ONNX Runtime, the onnx package and NVRTC
/// are installed (the Rust toolchain is checked by [`Toolchain::detect`]).
pub fn host_tools_present() -> bool {
    HOST_PACKAGES.iter().all(|p| package_installed(p, None))
        && defmt_print_is_current()
        && onnxruntime_is_current()
        && wheel_is(ONNX_WHEEL, ONNX_VERSION)
        && wheel_is(NVRTC_WHEEL, NVRTC_VERSION)
}

/// Whether `python3` has the PyPI package of `wheel` (`name==version`) at `version`.
fn wheel_is(wheel: &str, version: &str) -> bool {
    let name = wheel.split("==").next().unwrap_or(wheel);
    toolchain::capture(Command::new("python3").args([
        "-c",
        &format!("import importlib.metadata as m; print(m.version('{name}'))"),
    ]))
    .is_some_and(|v| v.trim() == version)
}

/// Installs `wheel` with pip unless it is there at `version`.
fn pip_install(wheel: &str, version: &str, what: &str) -> Result<()> {
    if wheel_is(wheel, version) {
        println!("setup: {wheel} present");
        return Ok(());
    }
    println!("setup: pip install {wheel}");
    run_checked(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        wheel,
    ]))
    .with_context(|| format!("installing {what}"))
}

/// What `cargo xtask test-gpu` needs besides the driver: NVRTC and cuBLAS.
pub fn gpu_libraries() -> Result<()> {
    pip_install(
        NVRTC_WHEEL,
        NVRTC_VERSION,
        "NVRTC (the GPU kernels' compiler)",
    )?;
    pip_install(
        CUBLAS_WHEEL,
        CUBLAS_VERSION,
        "cuBLAS (the GPU's matrix products)",
    )
}

fn onnxruntime_is_current() -> bool {
    toolchain::capture(
        Command::new("python3").args(["-c", "import onnxruntime; print(onnxruntime.__version__)"]),
    )
    .is_some_and(|v| v.trim() == ONNXRUNTIME_VERSION)
}

/// Installs whatever is missing and returns the toolchain to use.
pub fn run(choice: Choice) -> Result<Toolchain> {
    let mut apt = Apt::new()?;
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p, None))
        .collect();
    if missing.is_empty() {
        println!("setup: cross compilers and QEMU present");
    } else {
        println!("setup: installing {}", missing.join(" "));
        apt.install(&missing)?;
    }

    let toolchain = match Toolchain::detect(choice) {
        Some(t) => t,
        None => install_toolchain(choice, &mut apt)?,
    };
    println!("setup: cross toolchain is {}", toolchain.describe());
    if matches!(toolchain, Toolchain::Rustup { .. }) && !toolchain::rustup_has_msrv() {
        let msrv = toolchain::MSRV;
        println!(
            "setup: rustup toolchain install {msrv} (the runtime's MSRV) with the cross targets"
        );
        run_checked(
            Command::new("timeout")
                .args([
                    "600",
                    "rustup",
                    "toolchain",
                    "install",
                    msrv,
                    "--profile",
                    "minimal",
                ])
                .arg("--target")
                .arg(toolchain::CROSS_TARGETS.join(",")),
        )
        .context("installing the MSRV toolchain")?;
    }

    if onnxruntime_is_current() {
        println!("setup: ONNX Runtime {ONNXRUNTIME_VERSION} present");
    } else {
        println!("setup: pip install {ONNXRUNTIME_WHEEL}");
        run_checked(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            ONNXRUNTIME_WHEEL,
        ]))
        .context("installing ONNX Runtime (the tools' peer runtime)")?;
    }

    pip_install(
        ONNX_WHEEL,
        ONNX_VERSION,
        "onnx (the ONNX conformance test's cases)",
    )?;
    pip_install(
        NVRTC_WHEEL,
        NVRTC_VERSION,
        "NVRTC (the tools' cuda feature compiles its kernels with it)",
    )?;

    if defmt_print_is_current() {
        println!("setup: {DEFMT_PRINT} {DEFMT_PRINT_VERSION} present");
    } else {
        println!("setup: cargo install {DEFMT_PRINT}@{DEFMT_PRINT_VERSION}");
        let status = Command::new(toolchain::host_cargo())
            .args(["install", "--locked"])
            .arg(format!("{DEFMT_PRINT}@{DEFMT_PRINT_VERSION}"))
            .status()
            .context("running cargo install")?;
        if !status.success() {
            bail!("cargo install {DEFMT_PRINT}@{DEFMT_PRINT_VERSION} failed ({status})");
        }
    }
    Ok(toolchain)
}

fn install_toolchain(choice: Choice, apt: &mut Apt) -> Result<Toolchain> {
    if matches!(choice, Choice::Auto | Choice::Rustup) && toolchain::runs("rustup", "--version") {
        println!(
            "setup: rustup target add {}",
            toolchain::CROSS_TARGETS.join(" ")
        );
        // `timeout`: where rustup's server is unreachable it may hang rather than fail.
        let added = Command::new("timeout")
            .args(["300", "rustup", "target", "add"])
            .args(toolchain::CROSS_TARGETS)
            .status()
            .is_ok_and(|s| s.success());
        if let Some(t) = Toolchain::detect(Choice::Rustup).filter(|_| added) {
            return Ok(t);
        }
        if choice == Choice::Rustup {
            bail!(
                "rustup could not add the cross targets; try `cargo xtask setup --toolchain debian`"
            );
        }
        println!(
            "setup: rustup cannot add targets here; using Debian's rustc-web {DEBIAN_RUST_VERSION}"
        );
    }
    install_debian_toolchain(apt)?;
    Toolchain::detect(Choice::Debian).context(
        "Debian's rustc-web installed, but its ARM std libraries or sources are still missing",
    )
}

/// Debian's rustc-web 1.85 plus the arm64/armhf std rlibs. The rlib packages are unpacked by
/// hand because their multiarch dependencies do not install on an amd64 system, and the rlibs
/// are all rustc needs.
fn install_debian_toolchain(apt: &mut Apt) -> Result<()> {
    let v = DEBIAN_RUST_VERSION;
    let packages = [
        "rustc-web",
        "cargo-web",
        "rust-web-src",
        "libstd-rust-web-dev",
        "libstd-rust-web-1.85",
    ];
    let pinned: Vec<String> = packages
        .iter()
        .filter(|p| !package_installed(p, Some(v)))
        .map(|p| format!("{p}={v}"))
        .collect();
    if !pinned.is_empty() {
        println!("setup: installing {}", pinned.join(" "));
        apt.install(&pinned.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let foreign = ["arm64", "armhf"];
    for arch in foreign {
        apt.root(Command::new("dpkg").args(["--add-architecture", arch]))?;
    }
    apt.update(true)?;
    let dir = std::env::temp_dir().join("loam-xtask-debs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for arch in foreign {
        let spec = format!("libstd-rust-web-dev:{arch}={v}");
        println!("setup: apt-get download {spec}");
        run_checked(
            Command::new("apt-get")
                .current_dir(&dir)
                .args(["download", &spec]),
        )?;
    }
    for entry in std::fs::read_dir(&dir)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            println!("setup: dpkg-deb -x {} /", deb.display());
            apt.root(Command::new("dpkg-deb").arg("-x").arg(&deb).arg("/"))?;
        }
    }
    Ok(())
}

fn defmt_print_is_current() -> bool {
    toolchain::capture(Command::new(DEFMT_PRINT).arg("--version"))
        .is_some_and(|v| v.contains(DEFMT_PRINT_VERSION))
}

/// Whether a Debian package is installed (at `version`, if given).
fn package_installed(package: &str, version: Option<&str>) -> bool {
    toolchain::capture(Command::new("dpkg-query").args(["-W", "-f=${Status}|${Version}", package]))
        .is_some_and(|out| dpkg_says_installed(&out, version))
}

/// Reads `dpkg-query -f '${Status}|${Version}'`: "install ok installed|1.2" is installed; a
/// removed package reads "unknown ok not-installed|" or "deinstall ok config-files|1.2".
fn dpkg_says_installed(out: &str, version: Option<&str>) -> bool {
    let (status, installed) = out.split_once('|').unwrap_or((out, ""));
    status.split_whitespace().last() == Some("installed") && version.is_none_or(|v| v == installed)
}

/// apt as root (directly, or through sudo), updating its lists at most once per kind of run.
struct Apt {
    sudo: bool,
    updated: bool,
    updated_foreign: bool,
}

impl Apt {
    fn new() -> Result<Self> {
        if !Path::new("/usr/bin/apt-get").exists() {
            bail!(
                "cargo xtask setup needs apt-get (Debian or Ubuntu); on other systems install \
                 the GNU Arm cross compilers, qemu-user, qemu-system-arm and the rustup targets \
                 {} by hand",
                toolchain::CROSS_TARGETS.join(", ")
            );
        }
        let root =
            toolchain::capture(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0");
        Ok(Self {
            sudo: !root,
            updated: false,
            updated_foreign: false,
        })
    }

    fn root(&self, cmd: &mut Command) -> Result<()> {
        if self.sudo {
            let mut sudo = Command::new("sudo");
            sudo.arg(cmd.get_program()).args(cmd.get_args());
            run_checked(&mut sudo)
        } else {
            run_checked(cmd)
        }
    }

    /// `apt-get update`, again after foreign architectures were added.
    fn update(&mut self, foreign: bool) -> Result<()> {
        if self.updated && (!foreign || self.updated_foreign) {
            return Ok(());
        }
        // A mirror mid-sync makes `apt-get update` fail for one index while the others are
        // fine; retry once, then go on: if a package is really unavailable, the install that
        // follows fails with apt's own message.
        for attempt in 1..=2 {
            println!("setup: apt-get update");
            match self.root(Command::new("apt-get").args(["update", "-q"])) {
                Ok(()) => break,
                Err(e) if attempt == 2 => {
                    println!("setup: warning: {e:#}; trying to install anyway")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_secs(5)),
            }
        }
        self.updated = true;
        self.updated_foreign |= foreign;
        Ok(())
    }

    fn install(&mut self, packages: &[&str]) -> Result<()> {
        self.update(false)?;
        self.root(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q"])
                .args(packages),
        )
    }
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} {:?} failed ({status})",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_packages_are_not_installed() {
        assert!(dpkg_says_installed("install ok installed|1:7.2", None));
        assert!(dpkg_says_installed(
            "install ok installed|1.85.0",
            Some("1.85.0")
        ));
        assert!(!dpkg_says_installed(
            "install ok installed|1.84.0",
            Some("1.85.0")
        ));
        assert!(!dpkg_says_installed("unknown ok not-installed|", None));
        assert!(!dpkg_says_installed(
            "deinstall ok config-files|1:7.2",
            None
        ));
        assert!(!package_installed("loam-no-such-package", None));
    }
}
