//! Tells the kernels which 32-bit Arm cores have the DSP extension's SIMD multiply-accumulates
//! (SMLAD, SXTB16): stable Rust does not expose Arm target features to `cfg`, so the target
//! name decides. Cortex-M4/M7/M33/M55 (`thumbv7em`, `thumbv8m.main`) and every Armv7-A/R core
//! have them; the Cortex-M0/M0+/M3 (`thumbv6m`, `thumbv7m`, `thumbv8m.base`) do not. It also
//! tells which targets carry the 32-bit NEON kernels (`loam_arm_neon`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loam_arm_dsp)");
    println!("cargo::rustc-check-cfg=cfg(loam_arm_neon)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let dsp = [
        "thumbv7em",
        "thumbv8m.main",
        "armv7",
        "thumbv7a",
        "thumbv7neon",
        "armv7r",
    ]
    .iter()
    .any(|prefix| target.starts_with(prefix));
    if dsp {
        println!("cargo::rustc-cfg=loam_arm_dsp");
    }
    // NEON is optional in Armv7-A and the Armv7 Linux targets are built without it, so its
    // kernels are compiled for A-profile Linux/Android and run only where the kernel's HWCAP
    // reports NEON: an OS must be there to ask. M-profile cores have no NEON. The kernels
    // name VFP registers, which soft-float targets (`armv7-unknown-linux-gnueabi`) do not
    // have: hard-float (`...eabihf`) and Android (VFP with the soft-float calling convention)
    // targets only.
    let a_profile = ["armv7-", "armv7a", "thumbv7neon", "thumbv7a"]
        .iter()
        .any(|prefix| target.starts_with(prefix));
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let has_vfp = target.ends_with("eabihf") || os == "android";
    if a_profile && has_vfp && (os == "linux" || os == "android") {
        println!("cargo::rustc-cfg=loam_arm_neon");
    }
}
