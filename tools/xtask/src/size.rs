//! `cargo xtask size`: flash and static RAM of the reference firmware (one int8 layer), of
//! the bundled-model firmware (loader, interpreter and every int8 op) and of the applications
//! (gestures, on-device learning) on each Cortex-M target, and what loam adds over a baseline
//! firmware with the same start-up and logging.
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

/// The reference firmware's statics holding the model (they keep their names through LTO),
/// so the runtime's own code can be told apart from the model's bytes.
const REFERENCE_MODEL_SYMBOLS: [&str; 2] = ["reference::WEIGHTS", "reference::BIAS"];

/// The model the `model` firmware embeds.
const ZOO_MODEL: &str = "runtime/tests/data/int8-zoo.loam";

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

/// Adds up the sizes of `symbols` in `nm --print-size --demangle` output; every one must be
/// there, or the measurement would silently count model bytes as code.
pub fn symbol_bytes(nm_output: &str, symbols: &[&str]) -> Result<u64> {
    symbols
        .iter()
        .map(|symbol| {
            nm_output
                .lines()
                .find_map(|line| {
                    let mut cols = line.split_whitespace();
                    let (_addr, size, _kind) = (cols.next()?, cols.next()?, cols.next()?);
                    (cols.next()? == *symbol).then(|| u64::from_str_radix(size, 16).ok())?
                })
                .with_context(|| format!("symbol {symbol} not found in the reference firmware"))
        })
        .sum()
}

fn model_bytes(elf: &Path) -> Result<u64> {
    let out = capture(
        Command::new("arm-none-eabi-nm")
            .args(["--print-size", "--demangle"])
            .arg(elf),
    )
    .with_context(|| format!("arm-none-eabi-nm {}", elf.display()))?;
    symbol_bytes(&out, &REFERENCE_MODEL_SYMBOLS)
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
        let model = model_bytes(&dir.join("reference"))?;
        let zoo = measure(&dir.join("model"))?;
        // The applications: the model, its data and the runtime's ops it uses.
        let mut apps = Vec::new();
        for (bin, what) in [
            ("gestures", "gestures (sensor + model)"),
            ("learn", "learn (on-device training)"),
        ] {
            if target.tests.contains(&bin) {
                apps.push((what, measure(&dir.join(bin))?));
            }
        }
        lines.push((target, baseline, reference, model, zoo, apps));
    }
    // The bundled model firmware embeds this file and a static arena of the size its
    // preamble records.
    let zoo_file =
        std::fs::read(root.join(ZOO_MODEL)).with_context(|| format!("reading {ZOO_MODEL}"))?;
    let zoo_arena = zoo_file
        .get(28..32)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) as u64;
    println!(
        "\nfirmware size ({}; release, opt-level s, LTO)",
        toolchain.describe()
    );
    println!(
        "{:<24} {:<26} {:>10} {:>10}",
        "target", "firmware", "flash (B)", "RAM (B)"
    );
    for (target, baseline, reference, model, zoo, apps) in lines {
        let code = reference.flash.saturating_sub(baseline.flash + model);
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
        println!("{:<24} {:<26} {:>10}", "", "  of which model data", model);
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            "", "int8 zoo (whole runtime)", zoo.flash, zoo.ram
        );
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            "",
            "  of which loam runtime",
            zoo.flash
                .saturating_sub(baseline.flash + zoo_file.len() as u64),
            zoo.ram.saturating_sub(baseline.ram + zoo_arena)
        );
        println!(
            "{:<24} {:<26} {:>10} {:>10}",
            "",
            "  of which model / arena",
            zoo_file.len(),
            zoo_arena
        );
        for (what, app) in apps {
            println!("{:<24} {:<26} {:>10} {:>10}", "", what, app.flash, app.ram);
        }
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

    #[test]
    fn model_bytes_come_from_the_named_symbols() {
        let nm = "\
000014c4 00000028 r reference::BIAS
00001244 00000280 r reference::WEIGHTS
00000d7a 0000005e t semihosting::io::Write::write_all
";
        assert_eq!(
            symbol_bytes(nm, &REFERENCE_MODEL_SYMBOLS).unwrap(),
            0x28 + 0x280
        );
        let missing = symbol_bytes(
            "00001244 00000280 r reference::WEIGHTS\n",
            &REFERENCE_MODEL_SYMBOLS,
        );
        assert!(missing.unwrap_err().to_string().contains("reference::BIAS"));
    }
}
