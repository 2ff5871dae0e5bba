//! Reading test counts out of test output, and the summary table `cargo xtask test` ends with.

use std::fmt::Write as _;

/// Tests counted in one row of the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u32,
    /// Tests that failed.
    pub failed: u32,
}

impl Counts {
    /// Tests run.
    pub fn run(&self) -> u32 {
        self.passed + self.failed
    }

    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Sums the `test result: ok. N passed; M failed; ...` lines of `cargo test` (one per test
/// binary and one for doc tests).
pub fn cargo_test_counts(output: &str) -> Counts {
    let mut total = Counts::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let mut counts = Counts::default();
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                match (n.parse::<u32>(), what) {
                    (Ok(n), "passed") => counts.passed = n,
                    (Ok(n), "failed") => counts.failed = n,
                    _ => {}
                }
            }
        }
        total.add(counts);
    }
    total
}

/// The firmware's closing `N passed, M failed` line (decoded from defmt; the log prefix before
/// the counts is ignored).
pub fn firmware_counts(output: &str) -> Option<Counts> {
    output.lines().rev().find_map(|line| {
        let (head, tail) = line.split_once(" passed, ")?;
        let passed = head.split_whitespace().last()?.parse().ok()?;
        let failed = tail.strip_suffix(" failed")?.trim().parse().ok()?;
        Some(Counts { passed, failed })
    })
}

/// One line of the summary: a target (or a check) and what ran there.
#[derive(Debug, Clone)]
pub struct Row {
    /// The target triple or check name.
    pub target: String,
    /// Where it ran (host, which emulator).
    pub runs_on: String,
    /// Tests counted.
    pub counts: Counts,
    /// Why the row failed beyond its counts (a build error, an emulator that did not start),
    /// or `None`.
    pub problem: Option<String>,
}

impl Row {
    /// A row failed if any test failed, nothing ran, or something else went wrong. A target
    /// that could not run is a failure, never a skip.
    pub fn failed(&self) -> bool {
        self.problem.is_some() || self.counts.failed > 0 || self.counts.run() == 0
    }
}

/// The table printed at the end of `cargo xtask test`, then the overall `N passed, M failed`
/// line. A row that failed without counting a failed test (it could not build or run) adds one
/// failure to the total so the closing line never reads as a pass.
pub fn summary_table(rows: &[Row], toolchain: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nsummary (cross toolchain: {toolchain})");
    let _ = writeln!(
        out,
        "{:<31} {:<30} {:>6} {:>7} {:>7}  result",
        "target", "runs on", "tests", "passed", "failed"
    );
    let mut total = Counts::default();
    for row in rows {
        let result = match (&row.problem, row.failed()) {
            (Some(problem), _) => format!("FAILED: {problem}"),
            (None, true) if row.counts.run() == 0 => "FAILED: no tests ran".to_string(),
            (None, true) => "FAILED".to_string(),
            (None, false) => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<31} {:<30} {:>6} {:>7} {:>7}  {result}",
            row.target,
            row.runs_on,
            row.counts.run(),
            row.counts.passed,
            row.counts.failed
        );
        total.add(row.counts);
        if row.failed() && row.counts.failed == 0 {
            total.failed += 1;
        }
    }
    let _ = writeln!(out, "{} passed, {} failed", total.passed, total.failed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_cargo_test_result_line() {
        let output = "\
running 7 tests
test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.15s
running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s
";
        assert_eq!(
            cargo_test_counts(output),
            Counts {
                passed: 10,
                failed: 2
            }
        );
        assert_eq!(
            cargo_test_counts("error: could not compile"),
            Counts::default()
        );
    }

    #[test]
    fn reads_the_firmware_closing_line() {
        let log = "0 INFO  loam selftest on thumbv6m\n8 INFO  digest 0x2b61bea3\n9 INFO  6 passed, 1 failed\n";
        assert_eq!(
            firmware_counts(log),
            Some(Counts {
                passed: 6,
                failed: 1
            })
        );
        assert_eq!(
            firmware_counts("9 INFO  7 passed, 0 failed"),
            Some(Counts {
                passed: 7,
                failed: 0
            })
        );
        assert_eq!(firmware_counts("qemu-system-arm: cannot open kernel"), None);
    }

    #[test]
    fn a_row_that_could_not_run_fails_and_counts_as_a_failure() {
        let ok = Row {
            target: "x86_64".into(),
            runs_on: "host".into(),
            counts: Counts {
                passed: 5,
                failed: 0,
            },
            problem: None,
        };
        let broken = Row {
            target: "thumbv6m-none-eabi".into(),
            runs_on: "qemu".into(),
            counts: Counts::default(),
            problem: Some("build failed".into()),
        };
        let silent = Row {
            problem: None,
            ..broken.clone()
        };
        assert!(!ok.failed());
        assert!(broken.failed());
        assert!(silent.failed(), "a target where no test ran is a failure");
        let table = summary_table(&[ok, broken, silent], "test");
        assert!(table.ends_with("5 passed, 2 failed\n"), "{table}");
        assert!(table.contains("FAILED: build failed"));
        assert!(table.contains("FAILED: no tests ran"));
    }
}
