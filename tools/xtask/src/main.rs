//! loam's task runner, in the cargo xtask convention: `cargo xtask <task>`.

mod mobile;
mod pi;
mod report;
mod setup;
mod size;
mod test;
mod toolchain;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use toolchain::{Choice, Toolchain};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "loam's task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the cross compilers, QEMU, the Rust cross targets and defmt-print (idempotent).
    Setup {
        /// Which Rust toolchain builds the cross targets.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        toolchain: Choice,
    },
    /// Run every test on every target (x86_64, aarch64 and armv7 under qemu-user, Cortex-M4F
    /// and Cortex-M0 under qemu-system-arm), then clippy and rustfmt; print a summary table.
    Test {
        /// Which Rust toolchain builds the cross targets.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        toolchain: Choice,
        /// Run only these stages (comma separated).
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(test::STAGES))]
        only: Vec<String>,
    },
    /// The GPU trainer on this machine's NVIDIA GPU (the tools' `cuda` feature): the GPU tests
    /// against the CPU engine and the training benchmark beside PyTorch on the same GPU.
    TestGpu,
    /// Build the on-device learning firmware for the Cortex-M4F with another model and recorded
    /// user data set, and run it under QEMU (what `loam quickstart` runs). Needs what `setup`
    /// installs; does not install it.
    Learn {
        /// The int8 `.loam` model to embed.
        #[arg(long)]
        model: PathBuf,
        /// The user's data and the host's figures, from `loam_tools::finetune::record`.
        #[arg(long)]
        recording: PathBuf,
        /// Which Rust toolchain builds the firmware.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        toolchain: Choice,
    },
    /// Flash and RAM of the reference firmware on Cortex-M4F and Cortex-M0.
    Size {
        /// Which Rust toolchain builds the firmware.
        #[arg(long, value_enum, default_value_t = Choice::Auto)]
        toolchain: Choice,
    },
}

fn workspace_root() -> PathBuf {
    // tools/xtask -> the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask lives two levels below the workspace root")
        .to_path_buf()
}

/// The toolchain to use, running setup first when something is missing.
fn ready_toolchain(choice: Choice) -> Result<Toolchain> {
    if setup::host_tools_present()
        && let Some(toolchain) = Toolchain::detect(choice)
        && (matches!(toolchain, Toolchain::Debian) || toolchain::rustup_has_msrv())
    {
        return Ok(toolchain);
    }
    println!("cross tools missing: running `cargo xtask setup` first");
    setup::run(choice).context("cargo xtask setup")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Setup { toolchain } => {
            setup::run(toolchain)?;
        }
        Task::Test { toolchain, only } => {
            let started = Instant::now();
            let toolchain = ready_toolchain(toolchain)?;
            let rows = test::run(&root, &toolchain, &only);
            print!("{}", report::summary_table(&rows, &toolchain.describe()));
            println!("wall time {:.0} s", started.elapsed().as_secs_f64());
            if rows.iter().any(report::Row::failed) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::TestGpu => {
            let started = Instant::now();
            let rows = test::gpu(&root);
            print!("{}", report::summary_table(&rows, "not used"));
            println!("wall time {:.0} s", started.elapsed().as_secs_f64());
            if rows.iter().any(report::Row::failed) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::Learn {
            model,
            recording,
            toolchain,
        } => {
            let toolchain = Toolchain::detect(toolchain).context(
                "no Rust toolchain for thumbv7em-none-eabihf; `cargo xtask setup` installs one",
            )?;
            if !test::learn(&root, &toolchain, &model, &recording)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::Size { toolchain } => {
            let toolchain = ready_toolchain(toolchain)?;
            size::run(&root, &toolchain)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
