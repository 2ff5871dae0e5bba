use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use loam_tools::bench::{self, BenchOptions};
use loam_tools::model_file::{ModelFile, write_atomically};
use loam_tools::onnx::{ExportOptions, ImportOptions, export_bytes, import};
use loam_tools::peers::Peer;
use loam_tools::verify::{Tolerance, verify, verify_against};
use loam_tools::{finetune, npy, run, sources};

/// loam: from data to a microcontroller, and learning on it.
#[derive(Parser)]
#[command(name = "loam", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `loam checkpoint ...`.
#[derive(Subcommand)]
enum CheckpointCommand {
    /// Per trained layer: how far the parameters moved from the model's own.
    Diff {
        /// The `.loam` model the checkpoint was trained from.
        model: PathBuf,
        /// A checkpoint file, or a dump of the board's two flash slots.
        checkpoint: PathBuf,
    },
    /// Write the trained parameters into a copy of the model (int8 layers requantized per
    /// channel); the graph, memory plan and arena size stay the same.
    Export {
        /// The `.loam` model the checkpoint was trained from.
        model: PathBuf,
        /// A checkpoint file, or a dump of the board's two flash slots.
        checkpoint: PathBuf,
        /// The updated `.loam`.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// `loam quantize --calibration`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CalibrationChoice {
    /// The smallest and largest value seen.
    MinMax,
    /// A percentile at each end (`--percentile`).
    Percentile,
    /// The range with the least int8 rounding and clipping error.
    Mse,
}

/// `loam quantize --to`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum QuantizeTo {
    /// int8 activations and weights, calibrated on --data.
    Int8,
    /// f16 weights for the float layers (half their flash), f32 arithmetic; no calibration.
    F16,
}

/// `loam finetune --optimizer`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OptimizerChoice {
    /// Adam (beta1 0.9, beta2 0.999).
    Adam,
    /// SGD with momentum.
    Sgd,
}

/// `loam data ...`.
#[derive(Subcommand)]
enum DataCommand {
    /// Profile the project's data: rows, columns, types, missing values, class balance.
    Inspect {
        /// The project file.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
    },
    /// Write the prepared splits (cleaned, transformed with statistics fit on the training
    /// split) as NPY files, with the preprocessing, the split and a profile.
    Prepare {
        /// The project file.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
        /// The folder to write (must not exist).
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Start a project: write a commented `loam.toml` (and, with `--example`, a bundled
    /// data set beside it).
    Init {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A bundled data set to start from (digits, gestures).
        #[arg(long)]
        example: Option<String>,
    },
    /// Look at the project's data.
    #[command(subcommand)]
    Data(DataCommand),
    /// The whole path on the bundled digits, offline, in one command: make a project, train
    /// (float), quantize and evaluate (int8), export ONNX and check it against ONNX Runtime and
    /// tract, write the .loam and firmware sources, report memory for a Cortex-M4, fine-tune on
    /// a user with mirrored digits here and on the emulated Cortex-M4 (when QEMU is
    /// installed), and end with a summary table.
    Quickstart {
        /// The project folder (kept; run again to train again).
        #[arg(long, default_value = "loam-quickstart")]
        dir: PathBuf,
        /// Skip the emulated Cortex-M4.
        #[arg(long)]
        no_board: bool,
    },
    /// Train the project's model and write a run folder: the loam.toml used, metrics.json,
    /// the float model (.loam and ONNX), the int8 .loam, charts and report.html.
    /// Ctrl-C stops after the current batch and keeps the best epoch so far.
    Train {
        /// The project file.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
        /// Where run folders go (default: runs/ beside the project file).
        #[arg(long)]
        runs: Option<PathBuf>,
        /// Where to train, overriding `[training] device`: the CPU, or an NVIDIA GPU (a loam
        /// built with `--features cuda`).
        #[arg(long, value_enum)]
        device: Option<loam_tools::train::Device>,
    },
    /// Search training and model settings (the project's `[tune]` section): every trial is an
    /// ordinary training run scored on the validation split or by k-fold. Prints the trials
    /// best first, writes runs/tune-NNN/results.json and results.csv, and loam.best.toml
    /// (the project file with the best settings) beside loam.toml. Ctrl-C stops after the
    /// current batch, drops that trial and keeps the ones done.
    Tune {
        /// The project file.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
        /// Trials to run (overrides tune.trials; caps a grid).
        #[arg(long)]
        trials: Option<usize>,
    },
    /// Score a run's float and int8 models side by side on its held-out rows and rewrite its
    /// report.
    Eval {
        /// The run folder (default: the project's latest run).
        run: Option<PathBuf>,
        /// The project file, to find the latest run.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
    },
    /// Training throughput (samples/s) of the digits MLP, a LeNet-style CNN and DS-CNN (or
    /// the `--network`s chosen) on this machine's CPU or GPU, and with `--vs-pytorch PYTHON`
    /// the same networks trained by PyTorch on the same device in the same run, with the ratio.
    BenchTrain {
        /// Samples per update.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Samples per timed epoch.
        #[arg(long, default_value_t = 4096)]
        samples: usize,
        /// Threads for both (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// A Python interpreter with `torch` installed.
        #[arg(long = "vs-pytorch")]
        python: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where loam trains (and PyTorch, with --vs-pytorch): the CPU, or an NVIDIA GPU (a
        /// loam built with `--features cuda`; PyTorch then trains on `cuda`).
        #[arg(long, value_enum, default_value_t = loam_tools::train::Device::Cpu)]
        device: loam_tools::train::Device,
        /// The networks to measure (repeat the flag; default: digits-mlp, lenet, ds-cnn). Also
        /// known: resnet-8, mobilenet-v1-alpha (the MLPerf Tiny templates).
        #[arg(long = "network")]
        networks: Vec<String>,
    },
    /// Quantize a float model to int8 with a chosen activation-range calibration, and show
    /// accuracy before and after and each layer's SQNR: a float `.onnx` or `.loam` file
    /// (with --data and --output), or a project run's model (re-quantized in place). With
    /// `--to f16`, store a float model's layer weights as f16 instead (--data optional, to
    /// compare the two).
    Quantize {
        /// A float `.onnx` or `.loam` model, or a run folder (default: the project's latest
        /// run).
        run: Option<PathBuf>,
        /// Calibration samples for a model file: a `.npy` array (one sample per row, in the
        /// model input's layout) or any data set `loam train` reads.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Class labels for `--data` when it is a `.npy` (or IDX) file, to report accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Separate samples to evaluate float against int8 on (default: the calibration data).
        #[arg(long)]
        eval: Option<PathBuf>,
        /// Class labels for a `.npy` `--eval`.
        #[arg(long)]
        eval_labels: Option<PathBuf>,
        /// The int8 `.loam` to write (model files only).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also write the quantized model as a QDQ ONNX file (for ONNX Runtime or tract).
        #[arg(long)]
        onnx_output: Option<PathBuf>,
        /// Keep this node in f32 (ONNX node name or output name; repeatable): mixed precision
        /// for a layer the per-layer SQNR shows hurts. With `--to f16`, a layer whose weights
        /// stay f32 (one to fine-tune on the device).
        #[arg(long = "keep-float")]
        keep_float: Vec<String>,
        /// Run this Conv, Gemm or MatMul node with int16 activations and int8 weights (ONNX
        /// node name or output name; repeatable): a 16x8 layer for one int8 leaves too coarse.
        #[arg(long = "int16")]
        int16: Vec<String>,
        /// The shape of an input the ONNX file leaves open, as `name=1,3,32,32` (repeatable).
        #[arg(long = "input-shape", value_parser = parse_input_shape)]
        input_shapes: Vec<(String, Vec<usize>)>,
        /// Print the report as JSON (model files only).
        #[arg(long)]
        json: bool,
        /// The project file, to find the latest run.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
        /// How activation ranges are chosen.
        #[arg(long, value_enum, default_value_t = CalibrationChoice::Mse)]
        calibration: CalibrationChoice,
        /// The percentile for `--calibration percentile`.
        #[arg(long, default_value_t = 99.99)]
        percentile: f32,
        /// Training samples to calibrate on (default: quantize.calibration_samples).
        #[arg(long)]
        samples: Option<usize>,
        /// Correct each layer's bias for the mean shift its int8 weights' rounding causes,
        /// measured on the calibration samples.
        #[arg(long)]
        bias_correction: bool,
        /// What to quantize to.
        #[arg(long, value_enum, default_value_t = QuantizeTo::Int8)]
        to: QuantizeTo,
    },
    /// What a model needs before it is flashed: flash, arena, inputs and outputs, each op's
    /// output shape and MACs, and the RAM for fine-tuning its last layers on the device.
    Inspect {
        /// The `.loam` model.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Say whether it fits this board (cortex-m0, cortex-m0plus, cortex-m4, nrf52840,
        /// cortex-m7, raspberry-pi-4, x86_64); repeatable.
        #[arg(long = "target")]
        targets: Vec<String>,
    },
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
        /// Also time these runtimes on the model's ONNX export, in the same run:
        /// `onnxruntime`, `tract` (comma-separated).
        #[arg(long, value_delimiter = ',')]
        vs: Vec<Peer>,
        /// Let f16-weight fully-connected layers round their inputs to f16, so that a CPU with
        /// FEAT_FHM (`fmlal`) multiplies binary16 pairs; results move by up to 2^-11 of each
        /// output's `sum |x * w|`. Time it beside a run without.
        #[arg(long)]
        half_precision_inputs: bool,
    },
    /// Write a model in another format: ONNX (`-o model.onnx`; int8 models as QDQ), C or
    /// Rust sources for firmware.
    Export {
        /// The `.loam` model (default: the int8 `model.loam` of the project's latest run).
        model: Option<PathBuf>,
        /// The project file, to find the latest run.
        #[arg(long, default_value = "loam.toml")]
        project: PathBuf,
        /// Output file; its extension picks the format: `.onnx`; `.h` or `.c` for a C header
        /// and source holding the model array and `<NAME>_ARENA_SIZE`; `.rs` for a Rust
        /// module (`MODEL`, `ARENA_SIZE`) with the `.loam` copied beside it.
        #[arg(long, short)]
        output: PathBuf,
        /// Declare 4-D inputs and outputs NCHW (as PyTorch does) instead of loam's NHWC.
        #[arg(long)]
        channels_first: bool,
        /// Store what on-device training updates: `last:N` (the last N fully-connected
        /// layers), or layers by name or op index, each `full`, `bias` or a share of its
        /// output channels: `fc1:bias,fc2:25%`. `none` removes a stored plan.
        #[arg(long, conflicts_with = "train_ram")]
        trainable: Option<String>,
        /// Store the training plan that updates the most parameters within this much RAM
        /// (arena included; stack not): `64KiB`, `12K`, `20000`.
        #[arg(long)]
        train_ram: Option<String>,
        /// The optimizer the device will train with, which `--train-ram` sizes its moments
        /// for.
        #[arg(long, value_enum, default_value = "adam")]
        optimizer: loam_tools::trainable::PlanOptimizer,
        /// How the device holds the weights it trains: `f32`, or `int8` on the layer's own
        /// scales (a quarter of the RAM; needs an int8 model).
        #[arg(long, value_enum, default_value = "f32")]
        train_weights: loam_tools::trainable::TrainWeights,
    },
    /// Run the same inputs through loam and a peer runtime (on the model's ONNX export) and
    /// compare every output: max abs/rel error for float, an LSB histogram for int8. Exits
    /// non-zero beyond the tolerance.
    Verify {
        /// The `.loam` model.
        model: PathBuf,
        /// The peer: `onnxruntime` or `tract`.
        #[arg(long)]
        against: Peer,
        /// Inputs as `.npy`, one per graph input (a leading dimension holds several samples);
        /// seeded random samples if omitted.
        #[arg(long)]
        data: Vec<PathBuf>,
        /// Random samples to run when no data is given.
        #[arg(long, default_value_t = 16)]
        samples: usize,
        /// Largest absolute float difference allowed (an output passes if within this or
        /// `--rtol`).
        #[arg(long, default_value_t = 1e-4)]
        atol: f64,
        /// Largest float difference allowed relative to the peer's largest magnitude.
        #[arg(long, default_value_t = 1e-4)]
        rtol: f64,
        /// Largest int8 difference allowed, in quantization steps.
        #[arg(long, default_value_t = 1)]
        max_lsb: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Run the peer on this ONNX file (the one the model was imported from, say) instead
        /// of on the model's own export.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Also compare every op's result, in op order, to see where the runtimes start to
        /// disagree (the peer runs the export with every result declared an output).
        #[arg(long)]
        per_layer: bool,
    },
    /// Fine-tune the last fully-connected layers of a model on NPY data with the runtime's
    /// on-device trainer (the arithmetic a board runs, bit for bit): accuracy before and
    /// after on held-out samples, the RAM it takes, and a checkpoint a board can resume from.
    Finetune {
        /// The `.loam` model (int8 or f32).
        model: PathBuf,
        /// Input samples as `.npy`, samples along the first dimension.
        #[arg(long)]
        data: PathBuf,
        /// Targets as `.npy`: integer class indices `[N]` (cross-entropy) or float vectors
        /// `[N, outputs]` (mean squared error).
        #[arg(long)]
        labels: PathBuf,
        /// Fully-connected layers to train in full, counted from the end; 0 trains what the
        /// model's stored training plan says (`loam export --trainable`). Default: the plan
        /// when the model has one, else 1.
        #[arg(long)]
        layers: Option<usize>,
        /// The optimizer.
        #[arg(long, value_enum, default_value = "adam")]
        optimizer: OptimizerChoice,
        /// Learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f32,
        /// SGD momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f32,
        /// Samples per update (gradients accumulated, as on a device).
        #[arg(long, default_value_t = 8)]
        batch: u32,
        /// Clip each update's gradient to this L2 norm.
        #[arg(long)]
        clip: Option<f32>,
        /// Passes over the training samples.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Share of the samples held out to measure before and after.
        #[arg(long, default_value_t = 0.2)]
        holdout: f32,
        /// Seeds the split and the shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Checkpoint file: resumed from if it exists, written (atomically) at the end.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Bring a device's learning home: compare a checkpoint's trained layers with the
    /// model's own (`diff`), or write them into a new `.loam` (`export`).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Import an ONNX model (float, or int8 in the QDQ form) as a `.loam` file. Every
    /// unsupported op or attribute in the model is listed at once; nothing is written then.
    Import {
        /// The `.onnx` model.
        model: PathBuf,
        /// Output `.loam` file.
        #[arg(long, short)]
        output: PathBuf,
        /// The shape of an input the file leaves open, as `name=1,3,32,32` (repeatable). An
        /// open batch dimension is 1 without it.
        #[arg(long = "input-shape", value_parser = parse_input_shape)]
        input_shapes: Vec<(String, Vec<usize>)>,
        /// Model name stored in the file (the ONNX graph's name by default).
        #[arg(long)]
        name: Option<String>,
    },
}

fn parse_input_shape(s: &str) -> std::result::Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("`{s}` is not name=d0,d1,..."))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<usize>().map_err(|e| format!("`{d}`: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Sets the stop flag on Ctrl-C (a second one exits at once: the user insists).
fn stop_on_ctrl_c(message: &'static str) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\n{message} (Ctrl-C again to abort)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

fn batch_bar(template: &str) -> Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    Ok(bar)
}

/// `loam tune` with a line per trial, a progress bar for the one running, and Ctrl-C
/// keeping the trials done.
fn tune_with_progress(
    project: &std::path::Path,
    trials: Option<usize>,
) -> Result<loam_tools::project::tune::TuneSummary> {
    use loam_tools::project::tune::{self, TuneEvent, TuneOptions};
    use loam_tools::train::Progress;
    let stop = stop_on_ctrl_c("stopping after this batch; keeping the trials done so far")?;
    let bar = batch_bar("{prefix} [{bar:30}] {pos}/{len} batches  loss {msg}")?;
    let mut on_event = |e: TuneEvent<'_>| match e {
        TuneEvent::Trial { trial, of, params } => {
            bar.println(format!("trial {trial}/{of}: {params}"));
        }
        TuneEvent::Training {
            fold,
            folds,
            progress:
                Progress::Batch {
                    epoch,
                    done,
                    total,
                    loss,
                },
        } => {
            let fold = if folds > 1 {
                format!("fold {fold}/{folds} ")
            } else {
                String::new()
            };
            bar.set_prefix(format!("{fold}epoch {epoch:>3}"));
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{loss:.4}"));
        }
        TuneEvent::Training { .. } => {}
        TuneEvent::Done(t) => bar.println(match &t.error {
            Some(e) => format!("  failed: {e}"),
            None => format!(
                "  score {}  ({} epochs, {:.1}s)",
                t.score_text(),
                t.epochs_text(),
                t.seconds
            ),
        }),
    };
    let summary = tune::tune(project, &TuneOptions { trials }, &stop, &mut on_event);
    bar.finish_and_clear();
    summary
}

/// Selects where `loam train` (and each `loam tune` trial) trains: `device` (`--device`),
/// else the project's `[training] device`. A GPU is opened here, so a missing driver or
/// library is reported before the data is prepared.
fn select_device(
    project: &std::path::Path,
    device: Option<loam_tools::train::Device>,
) -> Result<()> {
    let (p, _) = loam_tools::project::Project::load(project)?;
    let selection = p.device(device)?;
    #[cfg(feature = "cuda")]
    if selection.device == loam_tools::train::Device::Cuda {
        let gpu = loam_tools::train::cuda::probe()?;
        eprintln!("training on {gpu}");
    }
    loam_tools::train::device::select(selection);
    Ok(())
}

/// `loam train` with a progress bar per epoch and Ctrl-C stopping cleanly.
fn train_with_progress(
    project: &std::path::Path,
    runs: Option<&std::path::Path>,
) -> Result<loam_tools::project::pipeline::RunSummary> {
    use loam_tools::train::Progress;
    let stop = stop_on_ctrl_c("stopping after this batch; keeping the best epoch so far")?;
    let bar = batch_bar("epoch {prefix:>3} [{bar:30}] {pos}/{len} batches  loss {msg}")?;
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Batch {
            epoch,
            done,
            total,
            loss,
        } => {
            bar.set_prefix(epoch.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            // A GPU reports no per-batch loss until its first epoch ends.
            bar.set_message(if loss.is_finite() {
                format!("{loss:.4}")
            } else {
                "-".into()
            });
        }
        Progress::Epoch(e) => {
            let val = match (e.val_loss, e.val_metric) {
                (Some(l), Some(m)) => format!("  val loss {l:.4}  val metric {m:.4}"),
                _ => String::new(),
            };
            bar.println(format!(
                "epoch {:>3}  loss {:.4}  metric {:.4}{val}  lr {:.2e}  {:.1}s",
                e.epoch, e.train_loss, e.train_metric, e.learning_rate, e.seconds
            ));
        }
    };
    let summary = loam_tools::project::pipeline::train(project, runs, &stop, &mut on_progress);
    bar.finish_and_clear();
    summary
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`loam inspect m.loam | head`)
    // would panic; the default action ends the process quietly, as for any Unix tool.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
        Command::Init { dir, example } => {
            let path = loam_tools::project::init::init(&dir, example.as_deref())?;
            println!(
                "wrote {}; next: `loam train --project {}`",
                path.display(),
                path.display()
            );
        }
        Command::Quickstart { dir, no_board } => {
            let options = loam_tools::quickstart::Options {
                dir,
                board: !no_board,
            };
            let mut events = |event| match event {
                loam_tools::quickstart::Event::Step(n, of, title) => {
                    println!("\n[{n}/{of}] {title}");
                }
                loam_tools::quickstart::Event::Line(line) => println!("  {line}"),
            };
            let mut train = |project: &std::path::Path| train_with_progress(project, None);
            let summary = loam_tools::quickstart::run(&options, &mut events, &mut train)?;
            println!("\nsummary ({:.0} s)", summary.seconds);
            print!("{}", summary.table());
            println!(
                "\nnext: open {} for the training curves and confusion matrices; the models and \
                 firmware sources are in {}",
                summary.report.display(),
                summary.run.display()
            );
            if !summary.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Data(DataCommand::Prepare { project, output }) => {
            let [train, val, test] = loam_tools::project::pipeline::prepare_to(&project, &output)?;
            println!(
                "wrote {}: {train} training, {val} validation, {test} test rows",
                output.display()
            );
        }
        Command::Data(DataCommand::Inspect { project }) => {
            let (p, _) = loam_tools::project::Project::load(&project)?;
            let dir = project.parent().unwrap_or(std::path::Path::new("."));
            let data = loam_tools::project::pipeline::load_data(&p, dir)?;
            print!("{}", loam_tools::data::profile(&data));
        }
        Command::Train {
            project,
            runs,
            device,
        } => {
            select_device(&project, device)?;
            let summary = train_with_progress(&project, runs.as_deref())?;
            println!(
                "{}",
                loam_tools::project::pipeline::summary_text(&summary.metrics)
            );
            println!("run folder: {}", summary.dir.display());
            println!("report:     {}", summary.dir.join("report.html").display());
        }
        Command::Tune { project, trials } => {
            select_device(&project, None)?;
            let summary = tune_with_progress(&project, trials)?;
            print!("{}", loam_tools::project::tune::table_text(&summary.report));
            for note in &summary.notes {
                println!("note: {note}");
            }
            println!("results:    {}", summary.dir.display());
            if let Some(best) = &summary.best_file {
                println!(
                    "best:       {} (`loam train --project {}`)",
                    best.display(),
                    best.display()
                );
            }
            if summary.report.trials.iter().all(|t| t.score.is_none()) {
                bail!("every trial failed (see the errors above)");
            }
        }
        Command::Eval { run, project } => {
            let run = match run {
                Some(r) => r,
                None => loam_tools::project::pipeline::latest_run_of(&project)?,
            };
            let metrics = loam_tools::project::pipeline::eval_run(&run)?;
            println!("{}", run.display());
            print!("{}", loam_tools::project::pipeline::summary_text(&metrics));
        }
        Command::BenchTrain {
            batch,
            samples,
            threads,
            python,
            json,
            device,
            networks,
        } => {
            loam_tools::train::device::check_supported(device)?;
            let options = loam_tools::train_bench::TrainBenchOptions {
                batch,
                samples,
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
                python,
                script: loam_tools::train_bench::default_script(),
                device,
                networks,
            };
            let rows = loam_tools::train_bench::run(&options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", loam_tools::train_bench::table(&rows, &options));
            }
        }
        Command::Quantize {
            run,
            data,
            labels,
            eval,
            eval_labels,
            output,
            onnx_output,
            keep_float,
            int16,
            input_shapes,
            json,
            project,
            calibration,
            percentile,
            samples,
            bias_correction,
            to,
        } => {
            use loam_tools::quantize::Calibration;
            if to == QuantizeTo::F16 {
                let model = run
                    .as_ref()
                    .filter(|r| r.is_file())
                    .context("--to f16 converts a model file: loam quantize model.loam --to f16 -o model-f16.loam")?;
                anyhow::ensure!(
                    int16.is_empty() && !bias_correction && eval.is_none(),
                    "--int16, --bias-correction and --eval are int8 options; --to f16 converts \
                     every float layer's weights but those of --keep-float (--data compares the \
                     two models)"
                );
                let files = loam_tools::quantize::half::HalfFiles {
                    model,
                    data: data.as_deref(),
                    labels: labels.as_deref(),
                    samples,
                    output: output
                        .as_deref()
                        .context("say where the f16 model goes: --output model-f16.loam")?,
                    onnx_output: onnx_output.as_deref(),
                    keep_f32: &keep_float,
                };
                let import = ImportOptions {
                    input_shapes: input_shapes.into_iter().collect(),
                    ..ImportOptions::default()
                };
                let report = loam_tools::quantize::half::convert_files(&files, &import)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.to_text());
                    println!("wrote {}", files.output.display());
                    if let Some(o) = files.onnx_output {
                        println!("wrote {}", o.display());
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let calibration = match calibration {
                CalibrationChoice::MinMax => Calibration::MinMax,
                CalibrationChoice::Percentile => Calibration::Percentile { percentile },
                CalibrationChoice::Mse => Calibration::Mse,
            };
            if let Some(model) = run.as_ref().filter(|r| r.is_file()) {
                let options = loam_tools::quantize::ModelQuantizeOptions {
                    calibration,
                    keep_float,
                    int16,
                    bias_correction,
                    import: ImportOptions {
                        input_shapes: input_shapes.into_iter().collect(),
                        ..ImportOptions::default()
                    },
                    ..Default::default()
                };
                let files = loam_tools::quantize::model::QuantizeFiles {
                    model,
                    data: data.as_deref().context(
                        "quantizing a model file needs calibration samples: --data x.npy (or a data set)",
                    )?,
                    labels: labels.as_deref(),
                    eval: eval.as_deref(),
                    eval_labels: eval_labels.as_deref(),
                    output: output
                        .as_deref()
                        .context("say where the int8 model goes: --output model-int8.loam")?,
                    onnx_output: onnx_output.as_deref(),
                    samples,
                };
                let report = loam_tools::quantize::model::quantize_files(&files, &options)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.to_text());
                    println!("wrote {}", files.output.display());
                    if let Some(o) = files.onnx_output {
                        println!("wrote {}", o.display());
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::ensure!(
                data.is_none()
                    && output.is_none()
                    && onnx_output.is_none()
                    && keep_float.is_empty()
                    && int16.is_empty()
                    && eval.is_none(),
                "--data, --eval, --output, --onnx-output, --keep-float and --int16 go with a model file \
                 (.onnx or .loam); a run folder is re-quantized from its own data"
            );
            let run = match run {
                Some(r) => r,
                None => loam_tools::project::pipeline::latest_run_of(&project)?,
            };
            let metrics = loam_tools::project::pipeline::quantize_run(
                &run,
                calibration,
                samples,
                bias_correction,
            )?;
            println!("{}", run.display());
            print!(
                "{}",
                loam_tools::project::pipeline::quantization_text(&metrics)
            );
            println!(
                "wrote {} ({} bytes of flash, {} bytes of arena)",
                run.join("model.loam").display(),
                metrics.flash_bytes,
                metrics.arena_bytes
            );
        }
        Command::Inspect {
            model,
            json,
            targets,
        } => {
            let report = loam_tools::inspect::inspect(&ModelFile::open(&model)?)?;
            let boards = targets
                .iter()
                .map(|t| loam_tools::boards::board(t))
                .collect::<Result<Vec<_>>>()?;
            if json {
                let mut value = serde_json::to_value(&report)?;
                value["targets"] = serde_json::to_value(
                    boards
                        .iter()
                        .map(|b| (b.name, report.fit_lines(b)))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report.to_text());
                for b in &boards {
                    for line in report.fit_lines(b) {
                        println!("{line}");
                    }
                }
            }
        }
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
            vs,
            input,
            iterations,
            warmup,
            per_op,
            json,
            half_precision_inputs,
        } => {
            let file = ModelFile::open(&model)?;
            let arrays = input
                .iter()
                .map(|p| npy::read(p))
                .collect::<Result<Vec<_>>>()?;
            let report = bench::bench(
                &file,
                (!arrays.is_empty()).then_some(&arrays[..]),
                BenchOptions {
                    warmup,
                    iterations,
                    half_precision_inputs,
                },
                &vs,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_text(per_op));
            }
        }
        Command::Export {
            model,
            project,
            output,
            channels_first,
            trainable,
            train_ram,
            optimizer,
            train_weights,
        } => {
            let model = match model {
                Some(m) => m,
                None => {
                    let model =
                        loam_tools::project::pipeline::latest_run_of(&project)?.join("model.loam");
                    println!("exporting {}", model.display());
                    model
                }
            };
            let file = with_plan(
                ModelFile::open(&model)?,
                trainable.as_deref(),
                train_ram.as_deref(),
                optimizer,
                train_weights.storage(),
            )?;
            match output.extension().and_then(|e| e.to_str()) {
                Some("loam") => {
                    write_atomically(&output, file.bytes())?;
                    print_sources_written(&[&output], &file)?;
                }
                Some("onnx") => {
                    if file.model()?.training_plan().is_some() {
                        eprintln!(
                            "note: ONNX has no place for the training plan; export the .loam \
                             (or .rs/.h sources) for the device"
                        );
                    }
                    let options = ExportOptions {
                        channels_first_io: channels_first,
                        ..ExportOptions::default()
                    };
                    let bytes = export_bytes(&file.model()?, options)
                        .with_context(|| format!("exporting {} to ONNX", model.display()))?;
                    write_atomically(&output, &bytes)?;
                    println!("{} written ({} bytes)", output.display(), bytes.len());
                }
                Some("h" | "c") => {
                    let (h, c) = (output.with_extension("h"), output.with_extension("c"));
                    let stem = file_stem(&output)?;
                    let header_name = format!("{stem}.h");
                    let (header, source) = sources::c_sources(
                        &file.model()?,
                        file.bytes(),
                        &sources::identifier(stem),
                        &header_name,
                        &display_name(&model),
                    );
                    write_atomically(&h, header.as_bytes())?;
                    write_atomically(&c, source.as_bytes())?;
                    print_sources_written(&[&h, &c], &file)?;
                }
                Some("rs") => {
                    let stem = file_stem(&output)?;
                    let loam_copy = output.with_extension("loam");
                    let loam_name = format!("{stem}.loam");
                    let module =
                        sources::rust_module(&file.model()?, &loam_name, &display_name(&model));
                    if loam_copy != model {
                        write_atomically(&loam_copy, file.bytes())?;
                    }
                    write_atomically(&output, module.as_bytes())?;
                    print_sources_written(&[&output, &loam_copy], &file)?;
                }
                _ => bail!(
                    "cannot tell the format of {} from its extension; use .loam, .onnx, .h, .c \
                     or .rs",
                    output.display()
                ),
            }
        }
        Command::Finetune {
            model,
            data,
            labels,
            layers,
            optimizer,
            lr,
            momentum,
            batch,
            clip,
            epochs,
            holdout,
            seed,
            checkpoint,
        } => {
            let file = ModelFile::open(&model)?;
            let has_plan = file.model()?.training_plan().is_some();
            let options = finetune::FinetuneOptions {
                layers: layers.unwrap_or(if has_plan { 0 } else { 1 }),
                optimizer: match optimizer {
                    OptimizerChoice::Adam => loam::train::Optimizer::adam(lr),
                    OptimizerChoice::Sgd => loam::train::Optimizer::sgd(lr, momentum),
                },
                clip_norm: clip,
                batch,
                epochs,
                holdout,
                seed,
                checkpoint,
            };
            let report =
                finetune::finetune(&file, &npy::read(&data)?, &npy::read(&labels)?, &options)
                    .with_context(|| format!("fine-tuning {}", model.display()))?;
            print!("{}", report.to_text());
        }
        Command::Checkpoint(CheckpointCommand::Diff { model, checkpoint }) => {
            let applied = loam_tools::checkpoint::apply(&ModelFile::open(&model)?, &checkpoint)?;
            print!("{}", applied.to_text());
        }
        Command::Checkpoint(CheckpointCommand::Export {
            model,
            checkpoint,
            output,
        }) => {
            let applied = loam_tools::checkpoint::apply(&ModelFile::open(&model)?, &checkpoint)?;
            write_atomically(&output, &applied.patched)?;
            print!("{}", applied.to_text());
            println!(
                "{} written ({} bytes)",
                output.display(),
                applied.patched.len()
            );
        }
        Command::Import {
            model,
            output,
            input_shapes,
            name,
        } => {
            let options = ImportOptions {
                input_shapes: input_shapes.into_iter().collect(),
                name,
                ..ImportOptions::default()
            };
            let imported = import(&model, &options)?;
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            let bytes = &imported.built.bytes;
            let loaded = ModelFile::from_bytes(&output.display().to_string(), bytes)?;
            let m = loaded.model()?;
            write_atomically(&output, bytes)?;
            println!(
                "{} written: {} ops, {} bytes, arena {} bytes",
                output.display(),
                m.op_count(),
                bytes.len(),
                m.arena_size()
            );
            for (name, dims) in &imported.inputs {
                println!("  input `{name}` {dims:?}");
            }
        }
        Command::Verify {
            model,
            against,
            data,
            samples,
            atol,
            rtol,
            max_lsb,
            json,
            reference,
            per_layer,
        } => {
            anyhow::ensure!(
                !(per_layer && reference.is_some()),
                "--per-layer compares the model's own export; leave out --reference"
            );
            let file = ModelFile::open(&model)?;
            let m = file.model()?;
            let sets = if data.is_empty() {
                (0..samples as u64)
                    .map(|s| run::random_inputs(&m, bench::INPUT_SEED + s))
                    .collect::<Result<Vec<_>>>()?
            } else {
                let arrays = data
                    .iter()
                    .map(|p| npy::read(p))
                    .collect::<Result<Vec<_>>>()?;
                run::split_samples(&m, &arrays)?
            };
            let report = match reference {
                None => verify(&file, against, &sets)?,
                Some(path) => {
                    let onnx = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    verify_against(&file, against, &onnx, &sets).with_context(|| {
                        format!(
                            "comparing {} with {against} running {}",
                            model.display(),
                            path.display()
                        )
                    })?
                }
            };
            let tolerance = Tolerance {
                atol,
                rtol,
                max_lsb,
            };
            let failures = report.failures(tolerance);
            let layers = if per_layer {
                Some(loam_tools::verify::verify_per_layer(&file, against, &sets)?)
            } else {
                None
            };
            if json {
                let mut v = report.to_json();
                v["passed"] = failures.is_empty().into();
                if let Some(layers) = &layers {
                    v["layers"] = layers
                        .iter()
                        .map(|l| {
                            let mut c = loam_tools::verify::comparison_json(&l.comparison);
                            c["op"] = l.op.into();
                            c["kind"] = l.kind.clone().into();
                            c
                        })
                        .collect::<Vec<_>>()
                        .into();
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", report.to_text());
                if let Some(layers) = &layers {
                    print!("{}", loam_tools::verify::layers_text(layers, tolerance));
                }
            }
            if !failures.is_empty() {
                eprintln!("verify failed against {against}:");
                for f in &failures {
                    eprintln!("  {f}");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn file_stem(path: &std::path::Path) -> Result<&str> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))
}

fn display_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `file` with the training plan `--trainable` or `--train-ram` asks for, its table printed.
fn with_plan(
    file: ModelFile,
    trainable: Option<&str>,
    train_ram: Option<&str>,
    optimizer: loam_tools::trainable::PlanOptimizer,
    weights: loam::format::WeightStorage,
) -> Result<ModelFile> {
    use loam_tools::trainable;
    let model = file.model()?;
    let plan = match (trainable, train_ram) {
        (Some("none"), _) => None,
        (Some(spec), _) => Some(loam::format::writer::PlannedTraining {
            layers: trainable::parse_trainable(&model, spec)?,
            weights,
        }),
        (None, Some(budget)) => Some(trainable::fit_ram(
            &model,
            trainable::parse_ram(budget)?,
            optimizer,
            weights,
        )?),
        (None, None) => return Ok(file),
    };
    let origin = file.path.display().to_string();
    let bytes = loam::format::writer::with_training_plan(&model, plan.as_ref())
        .map_err(|e| anyhow::anyhow!("{origin}: the training plan: {e}"))?;
    let planned = ModelFile::from_bytes(&origin, &bytes)?;
    match trainable::plan_report(&planned.model()?, optimizer)? {
        Some(report) => print!("{}", report.to_text()),
        None => println!("training plan removed"),
    }
    Ok(planned)
}

fn print_sources_written(paths: &[&std::path::Path], file: &ModelFile) -> Result<()> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    println!(
        "{} written: {} bytes of model (flash), {} bytes of arena (RAM)",
        names.join(", "),
        file.bytes().len(),
        file.model()?.arena_size()
    );
    Ok(())
}
