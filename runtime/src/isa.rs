//! Which instruction-set extensions this build may use. With `std` the CPU is asked at run
//! time (the answers are cached by `std`); on bare metal the choice is made at compile time
//! from the target's features, since there is no OS to ask.
//!
//! Every fast path is registered in its op's kernel table under one [`Isa`]; dispatch takes the
//! last available entry, and the tests run every available entry against the reference. The
//! test `expected_isas_are_available` fails when an ISA the test runner expects (it sets
//! `LOAM_EXPECT_ISA`) is missing, so a fast path can never be skipped silently.

/// An instruction-set family a kernel is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Isa {
    /// Plain Rust, every target: the reference kernels and portable fast paths.
    Portable,
    /// x86_64 with AVX2, FMA and F16C (the x86-64-v3 level's vector part).
    Avx2,
    /// x86_64 with AVX-512 (F, BW) and its VNNI byte dot products (`vpdpbusd`), plus BMI2.
    Avx512Vnni,
    /// x86_64 with AMX's int8 tile multiplies (`tdpbusd`, Sapphire Rapids and later) on top
    /// of [`Isa::Avx512Vnni`], where the OS lets the process use the tile registers (on
    /// Linux the first check asks for them with `arch_prctl(ARCH_REQ_XCOMP_PERM)`, as
    /// oneDNN does).
    Amx,
    /// aarch64 Advanced SIMD (every aarch64 CPU).
    Neon,
    /// aarch64 with the Armv8.2 SDOT dot-product instructions.
    DotProd,
    /// aarch64 with FEAT_FHM (Armv8.2 optional, 8.4 mandatory): `fmlal`, binary16 products
    /// accumulated in binary32. Only for layers whose caller allowed half-precision inputs
    /// ([`crate::Interpreter::set_half_precision_inputs`]).
    Fhm,
    /// 32-bit Arm with the DSP extension's SIMD multiply-accumulates (SMLAD, SXTB16):
    /// Cortex-M4/M7/M33 and every Armv7-A core.
    ArmDsp,
    /// 32-bit Arm (Armv7-A, or an Armv8 core in 32-bit mode) with Advanced SIMD, on Linux or
    /// Android, where the kernel's HWCAP reports it.
    Neon32,
}

impl Isa {
    /// Every family, in order of preference from least to most specific.
    pub const ALL: [Isa; 9] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Amx,
        Isa::Neon,
        Isa::DotProd,
        Isa::Fhm,
        Isa::ArmDsp,
        Isa::Neon32,
    ];

    /// The name used in reports and in `LOAM_EXPECT_ISA`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::DotProd => "dotprod",
            Isa::Fhm => "fhm",
            Isa::ArmDsp => "dsp",
            Isa::Neon32 => "neon32",
        }
    }

    /// Whether this build carries code for the family and the CPU can run it.
    #[inline]
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => avx2_fma(),
            Isa::Avx512Vnni => avx512_vnni(),
            Isa::Amx => amx(),
            Isa::Neon => cfg!(target_arch = "aarch64"),
            Isa::DotProd => dotprod(),
            Isa::Fhm => fhm(),
            Isa::ArmDsp => arm_dsp(),
            Isa::Neon32 => neon32(),
        }
    }
}

#[inline]
fn avx2_fma() -> bool {
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    {
        // F16C (half-precision conversion) came before AVX2 on every x86 core, and the f16
        // weight kernels of this tier use it; asking keeps a VM that masks it safe.
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(all(target_arch = "x86_64", not(any(feature = "std", test))))]
    {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline]
fn avx512_vnni() -> bool {
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    {
        // The kernels are inline assembly (the AVX-512 intrinsics need Rust 1.89; the crate
        // supports 1.85), so every extension they use is asked for here. The detection
        // also checks that the OS saves the 512-bit state.
        avx2_fma()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
    {
        // Bare-metal x86 is not a target loam serves; without an OS to ask, the kernels
        // stay off rather than rely on unstable target-feature names.
        false
    }
}

/// Whether AVX-512 VBMI (byte permutes across a whole vector, `vpermi2b`) is available beside
/// [`Isa::Avx512Vnni`]: every CPU with AMX has it; Cascade Lake, which has VNNI, does not.
/// Kernels that need it fall back to the other VNNI kernels without it.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx512_vbmi() -> bool {
    #[cfg(all(target_arch = "x86_64", any(feature = "std", test)))]
    {
        avx512_vnni() && std::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(all(target_arch = "x86_64", any(feature = "std", test))))]
    {
        false
    }
}

#[inline]
fn amx() -> bool {
    #[cfg(all(
        target_arch = "x86_64",
        target_os = "linux",
        any(feature = "std", test)
    ))]
    {
        use core::sync::atomic::{AtomicU8, Ordering};
        /// 0: not asked yet; 1: no; 2: yes. Asked once: the answer cannot change, and the
        /// dispatch asks on every layer call.
        static ANSWER: AtomicU8 = AtomicU8::new(0);
        match ANSWER.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes = avx512_vnni() && amx_tiles_granted();
                ANSWER.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_os = "linux",
        any(feature = "std", test)
    )))]
    {
        // Elsewhere there is no stable way to ask the OS for the tile state, so the AMX
        // kernels stay off.
        false
    }
}

/// Whether the CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24 and 25) and Linux
/// grants this process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)` returns 0; Linux 5.16 and later). `std` has no stable detection for
/// AMX, hence CPUID and the system call by hand.
#[cfg(all(
    target_arch = "x86_64",
    target_os = "linux",
    any(feature = "std", test)
))]
// `__cpuid` is a safe function from Rust 1.94; the crate supports 1.85, where it is not.
#[allow(unused_unsafe)]
fn amx_tiles_granted() -> bool {
    // SAFETY: CPUID is available on every x86_64 CPU; leaf 7 exists where leaf 0 says so.
    let max_leaf = unsafe { core::arch::x86_64::__cpuid(0) }.eax;
    if max_leaf < 7 {
        return false;
    }
    // SAFETY: as above.
    let edx = unsafe { core::arch::x86_64::__cpuid_count(7, 0) }.edx;
    if edx & (1 << 24) == 0 || edx & (1 << 25) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    const SYS_ARCH_PRCTL: usize = 158;
    let result: isize;
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, 18)` only asks the kernel to enable a state
    // component for this process; it reads and writes no memory of ours. The `syscall`
    // instruction clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

#[inline]
fn dotprod() -> bool {
    #[cfg(all(target_arch = "aarch64", any(feature = "std", test)))]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(all(target_arch = "aarch64", not(any(feature = "std", test))))]
    {
        cfg!(target_feature = "dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

#[inline]
fn fhm() -> bool {
    #[cfg(all(target_arch = "aarch64", any(feature = "std", test)))]
    {
        std::arch::is_aarch64_feature_detected!("fhm")
    }
    #[cfg(all(target_arch = "aarch64", not(any(feature = "std", test))))]
    {
        cfg!(target_feature = "fhm")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}

#[inline]
fn arm_dsp() -> bool {
    // Armv7-A (Linux, Raspberry Pi) always has the Armv6 SIMD instructions; on M-profile only
    // v7E-M and later do. Stable Rust does not expose Arm target features to `cfg`, so build.rs
    // decides from the target name: a compile-time fact either way.
    cfg!(all(target_arch = "arm", loam_arm_dsp))
}

#[inline]
fn neon32() -> bool {
    #[cfg(all(target_arch = "arm", loam_arm_neon, any(feature = "std", test)))]
    {
        // `is_arm_feature_detected!` is unstable, so ask the kernel directly: bit 12 of
        // AT_HWCAP (16) is HWCAP_NEON on 32-bit Arm Linux and Android. glibc and bionic answer
        // from a copy made at start-up, so this is cheap enough to ask per call.
        const AT_HWCAP: core::ffi::c_ulong = 16;
        const HWCAP_NEON: core::ffi::c_ulong = 1 << 12;
        unsafe extern "C" {
            fn getauxval(kind: core::ffi::c_ulong) -> core::ffi::c_ulong;
        }
        // SAFETY: getauxval has no preconditions; it returns 0 for a missing entry.
        unsafe { getauxval(AT_HWCAP) & HWCAP_NEON != 0 }
    }
    #[cfg(not(all(target_arch = "arm", loam_arm_neon, any(feature = "std", test))))]
    {
        // Without an OS to ask there is no stable way to know (32-bit Arm target features
        // are not visible to `cfg` on stable), so the NEON kernels stay off.
        false
    }
}

/// The names of the families this build and CPU can run, for reports.
pub fn available_names() -> impl Iterator<Item = &'static str> {
    Isa::ALL
        .into_iter()
        .filter(|i| i.available())
        .map(Isa::name)
}

/// One kernel of an op: the family it needs and the function. Op modules keep a table of
/// these, reference first.
pub(crate) struct Kernel<F> {
    pub name: &'static str,
    pub isa: Isa,
    pub run: F,
}

/// The kernels of `table` this CPU can run, by name (reference first), for the benchmarks
/// that set kernels side by side.
pub(crate) fn runnable<F: Copy>(
    table: &'static [Kernel<F>],
) -> impl Iterator<Item = (&'static str, F)> {
    table
        .iter()
        .filter(|k| k.isa.available())
        .map(|k| (k.name, k.run))
}

/// The name of the kernel [`best`] picks from `table`.
pub(crate) fn best_name<F>(table: &[Kernel<F>]) -> &'static str {
    let mut chosen = table[0].name;
    for k in table {
        if k.isa.available() {
            chosen = k.name;
        }
    }
    chosen
}

/// The last kernel of `table` the CPU can run (tables list the reference first, so there is
/// always one).
#[inline]
pub(crate) fn best<F: Copy>(table: &[Kernel<F>]) -> F {
    let mut chosen = table[0].run;
    for k in table {
        if k.isa.available() {
            chosen = k.run;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when the test runner expected an instruction set this CPU or build lacks, so the
    /// fast paths for it cannot go untested unnoticed. `cargo xtask test` sets
    /// `LOAM_EXPECT_ISA` for each target.
    #[test]
    fn expected_isas_are_available() {
        let Ok(expected) = std::env::var("LOAM_EXPECT_ISA") else {
            return;
        };
        for name in expected.split(',').filter(|s| !s.is_empty()) {
            let isa = Isa::ALL.iter().find(|i| i.name() == name);
            assert!(isa.is_some(), "LOAM_EXPECT_ISA names unknown ISA {name}");
            assert!(
                isa.is_some_and(|i| i.available()),
                "expected ISA {name} is not available: its kernels would go untested"
            );
        }
    }
}
