use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// loam: from data to a microcontroller, and learning on it.
#[derive(Parser)]
#[command(name = "loam", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the runtime's arithmetic self-test on this machine (the same checks the firmware
    /// runs on a board) and print the digest every target must reproduce.
    Selftest,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Selftest => {
            let report = loam_tools::selftest::run();
            print!("{}", report.text);
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
