//! The boards a model is sized for: flash and RAM of common parts, so `loam inspect
//! --target` and the run report say whether a model (and its on-device training) fits
//! before anything is flashed.

use anyhow::{Result, bail};
use serde::Serialize;

/// A board's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Board {
    /// The name `target.board` and `--target` take.
    pub name: &'static str,
    /// The part it stands for.
    pub part: &'static str,
    /// Flash bytes.
    pub flash: usize,
    /// RAM bytes.
    pub ram: usize,
}

/// The boards known by name.
pub const BOARDS: [Board; 7] = [
    Board {
        name: "cortex-m0",
        part: "nRF51822 (BBC micro:bit v1)",
        flash: 256 << 10,
        ram: 16 << 10,
    },
    Board {
        name: "cortex-m0plus",
        part: "RP2040 (Raspberry Pi Pico)",
        flash: 2 << 20,
        ram: 264 << 10,
    },
    Board {
        name: "cortex-m4",
        part: "STM32F411 (Black Pill)",
        flash: 512 << 10,
        ram: 128 << 10,
    },
    Board {
        name: "nrf52840",
        part: "nRF52840 (Cortex-M4F)",
        flash: 1 << 20,
        ram: 256 << 10,
    },
    Board {
        name: "cortex-m7",
        part: "STM32H743 (Cortex-M7)",
        flash: 2 << 20,
        ram: 1 << 20,
    },
    Board {
        name: "raspberry-pi-4",
        part: "Raspberry Pi 4 (Cortex-A72, 1 GiB)",
        flash: 8 << 30,
        ram: 1 << 30,
    },
    Board {
        name: "x86_64",
        part: "x86_64 host",
        flash: 64 << 30,
        ram: 4 << 30,
    },
];

/// The board called `name`.
pub fn board(name: &str) -> Result<Board> {
    match BOARDS.iter().find(|b| b.name == name) {
        Some(b) => Ok(*b),
        None => bail!(
            "unknown board `{name}`; known: {}",
            BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Whether `flash` and `ram` bytes fit `board`, in one line.
pub fn fit_line(board: &Board, what: &str, flash: usize, ram: usize) -> String {
    let share = |used: usize, total: usize| 100.0 * used as f64 / total.max(1) as f64;
    let verdict = if flash <= board.flash && ram <= board.ram {
        "fits"
    } else {
        "does NOT fit"
    };
    format!(
        "{what} {verdict} {} ({}): flash {flash} B of {} ({:.1}%), RAM {ram} B of {} ({:.1}%)",
        board.name,
        board.part,
        board.flash,
        share(flash, board.flash),
        board.ram,
        share(ram, board.ram)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_by_name_and_verdicts() {
        let m0 = board("cortex-m0").unwrap();
        assert!(fit_line(&m0, "model", 17_920, 1_408).contains("model fits cortex-m0"));
        assert!(fit_line(&m0, "training", 17_920, 17_408).contains("does NOT fit"));
        let e = board("esp32").unwrap_err();
        assert!(e.to_string().contains("known: cortex-m0"), "{e}");
    }
}
