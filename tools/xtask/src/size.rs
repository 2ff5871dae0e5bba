//! `cargo xtask size`: flash and static RAM of the reference firmware on each Cortex-M target,
//! and what loam adds over a baseline firmware with the same start-up and logging.
//!
//! Symbol sizes cannot attribute bytes to the runtime (LTO inlines it into `main`), so the
//! runtime's cost is measured as the difference between two builds.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::test::build_firmware;
use crate::toolchain::{CORTEX_M0, CORTEX_M4F, Toolchain, capture};

/// Sections stored in flash (`.data` holds its initial values there too).
const FLASH_SECTIONS: [&str; 4] = [".vector_table", ".text", ".rodata", ".data"];
/// Sections occupying RAM before the stack.
const RAM_SECTIONS: [&str; 3] = [".data", ".bss", ".uninit"];

/// Model bytes the reference firmware holds in flash (64x10 int8 weights, 10 int32 biases),
/// so the runtime's own code can be told apart from them.
const REFERENCE_MODEL_BYTES: u64 = 64 * 10 + 10 * 4;

/// Flash and RAM of one ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes in flash.
    pub flash: u64,
    /// Bytes of static RAM.
    pub ram: u64,
}

/// Adds up the flash and RAM sections of `arm-none-eabi-size -A` output.
pub fn footprint(size_output: &str) -> Footprint {
    let mut fp = Footprint { flash: 0, ram: 0 };
    for line in size_output.lines() {
        let mut cols = line.split_whitespace();
        let (Some(section), Some(size)) = (cols.next(), cols.next()) else {
            continue;
        };
        let Ok(size) = size.parse::<u64>() else {
            continue;
        };
        if FLASH_SECTIONS.contains(&section) {
            fp.flash += size;
        }
        if RAM_SECTIONS.contains(&section) {
            fp.ram += size;
        }
    }
    fp
}

fn measure(elf: &Path) -> Result<Footprint> {
    let out = capture(Command::new("arm-none-eabi-size").arg("-A").arg(elf))
        .with_context(|| format!("arm-none-eabi-size -A {}", elf.display()))?;
    let fp = footprint(&out);
    if fp.flash == 0 {
        bail!("{}: no flash sections found in:\n{out}", elf.display());
    }
    Ok(fp)
}

/// Builds and measures the firmware for both Cortex-M targets, then prints the table.
pub fn run(root: &Path, toolchain: &Toolchain) -> Result<()> {
    let mut lines = Vec::new();
    for target in [&CORTEX_M4F, &CORTEX_M0] {
        let dir = build_firmware(root, toolchain, target.triple)?;
        let baseline = measure(&dir.join("baseline"))?;
        let reference = measure(&dir.join("reference"))?;
        lines.push((target, baseline, reference));
    }
    println!(
        "\nfirmware size ({}; release, opt-level s, LTO)",
        toolchain.describe()
    );
    println!(
        "{:<24} {:<26} {:>10} {:>10}",
        "target", "firmware", "flash (B)", "RAM (B)"
    );
    for (target, baseline, reference) in lines {
        let code = reference
            .flash
            .saturating_sub(baseline.flash + REFERENCE_MODEL_BYTES);
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            target.triple, "baseline (no loam)", baseline.flash, baseline.ram
        );
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            "", "reference (one int8 FC)", reference.flash, reference.ram
        );
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            "",
            "  of which loam code",
            code,
            reference.ram.saturating_sub(baseline.ram)
        );
        println!(
            "{:<24} {:<26} {:>10}",
            "", "  of which model data", REFERENCE_MODEL_BYTES
        );
    }
    println!("(stack not included: it is sized by the linker script, not by the program)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flash_and_ram_sections_only() {
        let out = "\
reference  :
section             size        addr
.vector_table       1024           0
.text               3652        1024
.rodata             1364        4676
.data                 16   536870912
.bss                  20   536870928
.uninit                0   536870948
.defmt                15           1
.debug_info       291144           0
Total             962066
";
        assert_eq!(
            footprint(out),
            Footprint {
                flash: 1024 + 3652 + 1364 + 16,
                ram: 36
            }
        );
    }
}
