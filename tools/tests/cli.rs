//! The `loam` binary as a person runs it.

use std::process::Command;

fn loam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loam"))
        .args(args)
        .output()
        .expect("the loam binary runs")
}

#[test]
fn selftest_passes_and_prints_every_check() {
    let out = loam(&["selftest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("fixed_point.divide_by_pot"));
    assert!(stdout.contains(&format!("golden {:#010x}", loam::selftest::GOLDEN_DIGEST)));
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let out = loam(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
