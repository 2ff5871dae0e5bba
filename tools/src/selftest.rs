//! `loam selftest`: runs the runtime's portable self-test on this machine, the same checks the
//! Cortex-M firmware and the Raspberry Pi builds run, and prints the digest a board must match.

use std::fmt::Write as _;

use loam::selftest::{self, GOLDEN_DIGEST, Summary};

/// The outcome of a host self-test: the per-check lines as printed and the totals.
pub struct Report {
    /// One line per check, then the totals line.
    pub text: String,
    /// The totals.
    pub summary: Summary,
}

impl Report {
    /// Whether every check passed (the golden digest is one of the checks).
    pub fn passed(&self) -> bool {
        self.summary.all_passed()
    }
}

/// Runs the self-test and formats one line per check.
pub fn run() -> Report {
    let mut text = String::new();
    let summary = selftest::run(&mut |o| {
        let verdict = if o.passed { "ok" } else { "FAILED" };
        let _ = writeln!(text, "  {:<44} {verdict}", o.name);
    });
    let _ = writeln!(
        text,
        "digest {:#010x} (golden {GOLDEN_DIGEST:#010x}) on {}\n{} passed, {} failed",
        summary.digest,
        std::env::consts::ARCH,
        summary.passed,
        summary.failed
    );
    Report { text, summary }
}
