//! Which Rust toolchain builds the cross targets, and how cargo is invoked for each target.
//!
//! Two ways are supported. Where rustup can add targets (most users' machines), the rustup
//! toolchain builds everything. Where it cannot, Debian's `rustc-web` 1.85 with the arm64/armhf
//! std rlibs builds the Linux targets, and `-Zbuild-std` builds core for the thumb targets from
//! `rust-web-src`. Either way the GNU cross compilers link, and QEMU runs the result.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages' version; the issue that set this up verified exactly this one.
pub const DEBIAN_RUST_VERSION: &str = "1.85.0+dfsg3-1~deb12u3";

/// The oldest compiler the runtime supports (its `rust-version`); the `msrv` stage builds the
/// runtime with it for every target.
pub const MSRV: &str = "1.85";

/// The cross targets loam tests on.
pub const CROSS_TARGETS: [&str; 4] = [
    AARCH64_LINUX.triple,
    ARMV7_LINUX.triple,
    CORTEX_M4F.triple,
    CORTEX_M0.triple,
];

/// A Linux target run under qemu-user.
pub struct LinuxTarget {
    /// Rust target triple.
    pub triple: &'static str,
    /// GNU cross compiler used as the linker.
    pub linker: &'static str,
    /// qemu-user binary.
    pub qemu: &'static str,
    /// Sysroot holding the target's dynamic loader and libc.
    pub sysroot: &'static str,
}

/// A bare-metal target run under qemu-system-arm.
pub struct BareMetalTarget {
    /// Rust target triple.
    pub triple: &'static str,
    /// The emulated board, as named in the summary.
    pub board: &'static str,
    /// Firmware binaries run as one test each (besides the self-test, which reports its
    /// own count).
    pub tests: &'static [&'static str],
}

/// Raspberry Pi 3/4/5 class, 64-bit.
pub const AARCH64_LINUX: LinuxTarget = LinuxTarget {
    triple: "aarch64-unknown-linux-gnu",
    linker: "aarch64-linux-gnu-gcc",
    qemu: "qemu-aarch64",
    sysroot: "/usr/aarch64-linux-gnu",
};

/// Raspberry Pi 2/3/4 class, 32-bit.
pub const ARMV7_LINUX: LinuxTarget = LinuxTarget {
    triple: "armv7-unknown-linux-gnueabihf",
    linker: "arm-linux-gnueabihf-gcc",
    qemu: "qemu-arm",
    sysroot: "/usr/arm-linux-gnueabihf",
};

/// Cortex-M4F on the MPS2 AN386 board.
pub const CORTEX_M4F: BareMetalTarget = BareMetalTarget {
    triple: "thumbv7em-none-eabihf",
    board: "mps2-an386 (Cortex-M4F)",
    tests: &[
        "reference",
        "model",
        "gestures",
        "checkpoint",
        "finetune",
        "learn",
        "pytorch",
        "int16",
        "f16",
    ],
};

/// Cortex-M0 on the BBC micro:bit.
pub const CORTEX_M0: BareMetalTarget = BareMetalTarget {
    triple: "thumbv6m-none-eabi",
    board: "microbit (Cortex-M0)",
    // The learning demo trains the 9 KiB training plan here (a full last-layer update
    // needs about 17.4 KiB with the stack; the micro:bit has 16). The PyTorch CNN's 48 KB
    // arena does not fit at all.
    tests: &[
        "reference",
        "model",
        "gestures",
        "checkpoint",
        "finetune",
        "learn",
        "int16",
        "f16",
    ],
};

/// Which toolchain to use for the cross targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// rustup where it can add the targets, else Debian's.
    Auto,
    /// rustup's toolchain with its target std libraries.
    Rustup,
    /// Debian's rustc-web 1.85 with `-Zbuild-std` for bare metal.
    Debian,
}

/// A toolchain that can build every cross target.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// rustup with all cross targets installed; `cargo` is the one that runs xtask.
    Rustup { cargo: PathBuf },
    /// Debian's rustc-web.
    Debian,
}

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
const DEBIAN_RUSTLIB: &str = "/usr/lib/rustlib";

impl Toolchain {
    /// The toolchain already installed that `choice` allows, if any.
    pub fn detect(choice: Choice) -> Option<Toolchain> {
        let rustup = || {
            rustup_has_targets().then(|| Toolchain::Rustup {
                cargo: host_cargo(),
            })
        };
        let debian = || debian_is_installed().then_some(Toolchain::Debian);
        match choice {
            Choice::Auto => rustup().or_else(debian),
            Choice::Rustup => rustup(),
            Choice::Debian => debian(),
        }
    }

    /// A short description for the summary.
    pub fn describe(&self) -> String {
        let version = |rustc: &str| {
            capture(Command::new(rustc).arg("--version"))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| format!("{rustc} (version unknown)"))
        };
        match self {
            Toolchain::Rustup { .. } => format!("rustup: {}", version("rustc")),
            Toolchain::Debian => format!("Debian rustc-web: {}", version(DEBIAN_RUSTC)),
        }
    }

    /// `cargo` set up to build for `triple`. For Debian, the 1.85 compiler is named explicitly
    /// so the rustup proxies on PATH are not picked up.
    pub fn cargo(&self, triple: &str) -> Command {
        match self {
            Toolchain::Rustup { cargo } => Command::new(cargo),
            Toolchain::Debian => {
                let mut cmd = Command::new(DEBIAN_CARGO);
                cmd.env("RUSTC", DEBIAN_RUSTC)
                    .env("RUSTDOC", DEBIAN_RUSTDOC);
                if triple.starts_with("thumb") {
                    // -Zbuild-std builds core from rust-web-src; Debian ships no thumb rlibs.
                    cmd.env("RUSTC_BOOTSTRAP", "1");
                }
                cmd
            }
        }
    }

    /// `cargo` of the MSRV compiler, set up to build for `triple`: the Debian toolchain is that
    /// compiler; with rustup it is the `1.85` toolchain that setup installs beside stable.
    pub fn msrv_cargo(&self, triple: &str) -> Command {
        match self {
            Toolchain::Rustup { .. } => {
                let mut cmd = Command::new("rustup");
                cmd.args(["run", MSRV, "cargo"]);
                cmd
            }
            Toolchain::Debian => self.cargo(triple),
        }
    }

    /// Extra `cargo build` arguments a bare-metal target needs with this toolchain.
    pub fn bare_metal_args(&self) -> &'static [&'static str] {
        match self {
            Toolchain::Rustup { .. } => &[],
            Toolchain::Debian => &[
                "-Zbuild-std=core",
                "-Zbuild-std-features=compiler-builtins-mem",
            ],
        }
    }

    /// Directory for cross build outputs, apart from the host's so switching compilers does
    /// not invalidate either.
    pub fn target_dir(&self, root: &Path) -> PathBuf {
        root.join("target").join(match self {
            Toolchain::Rustup { .. } => "cross-rustup",
            Toolchain::Debian => "cross-debian",
        })
    }
}

/// Where the host's cargo puts its builds: `CARGO_TARGET_DIR` (relative to `root` when
/// relative, as cargo reads it) or `root/target`.
pub fn host_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d))
}

/// The cargo that runs this xtask (cargo sets `CARGO` for the programs it runs).
pub fn host_cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Whether rustup reports every cross target installed.
pub fn rustup_has_targets() -> bool {
    capture(Command::new("rustup").args(["target", "list", "--installed"])).is_some_and(
        |installed| {
            CROSS_TARGETS
                .iter()
                .all(|t| installed.lines().any(|l| l.trim() == *t))
        },
    )
}

/// Whether rustup has the MSRV toolchain with every cross target.
pub fn rustup_has_msrv() -> bool {
    capture(Command::new("rustup").args(["target", "list", "--installed", "--toolchain", MSRV]))
        .is_some_and(|installed| {
            CROSS_TARGETS
                .iter()
                .all(|t| installed.lines().any(|l| l.trim() == *t))
        })
}

/// Whether Debian's 1.85 toolchain with the ARM std rlibs and the std sources is installed.
pub fn debian_is_installed() -> bool {
    let version_ok = capture(Command::new(DEBIAN_RUSTC).arg("--version"))
        .is_some_and(|v| v.starts_with("rustc 1.85"));
    let rlibs_ok = [AARCH64_LINUX.triple, ARMV7_LINUX.triple].iter().all(|t| {
        std::fs::read_dir(Path::new(DEBIAN_RUSTLIB).join(t).join("lib")).is_ok_and(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
    });
    let src_ok = Path::new(DEBIAN_RUSTLIB)
        .join("src/rust/library/core")
        .is_dir();
    version_ok && rlibs_ok && src_ok
}

/// Runs a command and returns its stdout if it exits successfully.
pub fn capture(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH (or at that path) and runs.
pub fn runs(program: &str, arg: &str) -> bool {
    capture(Command::new(program).arg(arg)).is_some()
}
