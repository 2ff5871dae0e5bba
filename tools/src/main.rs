use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use loam_tools::bench::{self, BenchOptions};
use loam_tools::model_file::ModelFile;
use loam_tools::{npy, run};

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
    /// Run a model on NPY inputs and write its outputs as NPY.
    Run {
        /// The `.loam` model.
        model: PathBuf,
        /// One `.npy` per graph input, in order. An extra leading dimension runs a batch of
        /// samples. float32 data for an int8 input is quantized with the input's parameters.
        #[arg(long, short, required = true)]
        input: Vec<PathBuf>,
        /// Where to write each graph output, in order (fewer paths than outputs skips the
        /// rest).
        #[arg(long, short)]
        output: Vec<PathBuf>,
    },
    /// Write a reference architecture (MLPerf Tiny shapes, digits MLP) with seeded, untrained
    /// weights, to size a board or benchmark before a trained model exists.
    Template {
        /// One of: digits-mlp, ds-cnn, resnet-8, autoencoder, mobilenet-v1-0.25.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(loam_tools::zoo::NAMES))]
        name: String,
        /// Write the int8 model (calibrated on random inputs) instead of f32.
        #[arg(long)]
        int8: bool,
        /// Output `.loam` file.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Measure a model's latency on this machine (single thread).
    Bench {
        /// The `.loam` model.
        model: PathBuf,
        /// Inputs as `.npy` (one per graph input, exactly the model's shape); random if
        /// omitted.
        #[arg(long, short)]
        input: Vec<PathBuf>,
        /// Timed runs.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Untimed warm-up runs.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Print per-op times too.
        #[arg(long)]
        per_op: bool,
        /// Print JSON (`median_us`, `p90_us`, per-op times) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Selftest => {
            let report = loam_tools::selftest::run();
            print!("{}", report.text);
            return Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Run {
            model,
            input,
            output,
        } => {
            let file = ModelFile::open(&model)?;
            let arrays = input
                .iter()
                .map(|p| npy::read(p))
                .collect::<Result<Vec<_>>>()?;
            let outputs = run::run(&file, &arrays)?;
            if output.len() > outputs.len() {
                bail!(
                    "{} output paths given but the model has {} output(s)",
                    output.len(),
                    outputs.len()
                );
            }
            for (i, out) in outputs.iter().enumerate() {
                let values = run::real_values(out);
                let preview: Vec<String> =
                    values.iter().take(8).map(|v| format!("{v:.4}")).collect();
                println!(
                    "{}: {} {:?} [{}{}]",
                    out.name,
                    out.array.data.dtype(),
                    out.array.shape,
                    preview.join(", "),
                    if values.len() > 8 { ", ..." } else { "" }
                );
                if let Some(path) = output.get(i) {
                    npy::write(path, &out.array)
                        .with_context(|| format!("writing output `{}`", out.name))?;
                    println!("  written to {}", path.display());
                }
            }
        }
        Command::Template { name, int8, output } => {
            let built = loam_tools::zoo::build(&name, int8)?;
            loam_tools::model_file::write_atomically(&output, &built.bytes)?;
            let p = built.plan;
            println!(
                "{} ({}) written to {}: {} bytes of model, arena {} bytes (naive {} bytes, {:.1}x smaller; peak at op {})",
                name,
                if int8 { "int8" } else { "f32" },
                output.display(),
                built.bytes.len(),
                p.arena_size,
                p.naive_size,
                p.naive_size as f64 / p.arena_size.max(1) as f64,
                p.peak_op
            );
        }
        Command::Bench {
            model,
            input,
            iterations,
            warmup,
            per_op,
            json,
        } => {
            let file = ModelFile::open(&model)?;
            let arrays = input
                .iter()
                .map(|p| npy::read(p))
                .collect::<Result<Vec<_>>>()?;
            let report = bench::bench(
                &file,
                (!arrays.is_empty()).then_some(&arrays[..]),
                BenchOptions { warmup, iterations },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_text(per_op));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
