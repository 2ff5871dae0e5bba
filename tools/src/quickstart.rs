//! `loam quickstart`: the whole path from data to a microcontroller, on the bundled digits,
//! offline, in one command: a project, training, float and int8 evaluation, ONNX export
//! checked against ONNX Runtime and tract, the `.loam` and firmware sources, the memory report
//! for a Cortex-M4, and the model fine-tuned on the emulated Cortex-M4 on a user whose data
//! differ from the training set, with the board required to match this machine bit for bit.
//!
//! The CLI prints; this module does the work and hands back what to print through
//! [`Event`]s and the [`Summary`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use loam::train::{Loss, Optimizer, TrainConfig};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::data::Dataset;
use crate::model_file::{ModelFile, write_atomically};
use crate::npy::{Array, Data};
use crate::onnx::{ExportOptions, export_bytes};
use crate::peers::Peer;
use crate::project::pipeline::{self, Prepared, RunSummary};
use crate::project::{Project, init};
use crate::report::Evaluation;
use crate::verify::verify_against;

/// The on-device learning session: the last layer only (the training state then fits a 16 KiB
/// board beside the arena), Adam, mini-batches of 4.
pub const LEARN_CONFIG: TrainConfig = TrainConfig {
    layers: 1,
    loss: Loss::CrossEntropy,
    optimizer: Optimizer::adam(0.005),
    clip_norm: None,
    accumulate: 4,
};
/// Passes over the user's training samples.
pub const LEARN_EPOCHS: u16 = 5;
/// The user's samples trained on; the rest are held out to measure.
pub const LEARN_TRAIN: usize = 400;

/// What the quickstart does besides the host steps.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project folder (made from the bundled digits if it has no `loam.toml`).
    pub dir: PathBuf,
    /// Build and run the learning firmware under QEMU when the tools for it are installed.
    pub board: bool,
}

/// Progress for the CLI to print.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts: its number, the count, and what it does.
    Step(usize, usize, &'static str),
    /// A line of what the step found.
    Line(String),
}

/// One line of the closing table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure or verdict.
    pub result: String,
}

/// What the quickstart made and measured.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The closing table.
    pub rows: Vec<Row>,
    /// The run folder (models, ONNX, firmware sources, report).
    pub run: PathBuf,
    /// The HTML report.
    pub report: PathBuf,
    /// Seconds the whole quickstart took.
    pub seconds: f64,
    /// Whether every check that ran passed (a skipped board run is not a failure).
    pub passed: bool,
}

impl Summary {
    /// The closing table as text.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
        let mut text = String::new();
        for row in &self.rows {
            text.push_str(&format!("{:<width$}  {}\n", row.what, row.result));
        }
        text
    }
}

const STEPS: usize = 7;

/// Runs the quickstart. `train` trains a project file into its `runs/` folder (the CLI passes
/// its progress-bar version of [`pipeline::train`]).
pub fn run(
    options: &Options,
    events: &mut dyn FnMut(Event),
    train: &mut dyn FnMut(&Path) -> Result<RunSummary>,
) -> Result<Summary> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut passed = true;
    let mut row = |what: &str, result: String| {
        rows.push(Row {
            what: what.to_string(),
            result,
        })
    };

    events(Event::Step(1, STEPS, "project and data"));
    let project_file = options.dir.join("loam.toml");
    if project_file.exists() {
        events(Event::Line(format!(
            "using {} (delete the folder to start over)",
            project_file.display()
        )));
    } else {
        init::init(&options.dir, Some("digits"))?;
        events(Event::Line(format!(
            "wrote {} and the bundled digits: 1,797 8x8 hand-written digits, 10 classes \
             (scikit-learn's copy of the UCI set, BSD-3)",
            project_file.display()
        )));
    }
    let (project, _) = Project::load(&project_file)?;
    let prepared = pipeline::prepare(&project, &options.dir)?;
    // The later steps (test inputs, the mirrored user) are written for the digits' 8x8 images
    // in 10 classes; a folder holding another project is refused rather than misread.
    anyhow::ensure!(
        prepared.train.sample_len() == 64 && prepared.train.class_names.len() == 10,
        "{} is not the quickstart's digits project; pass another --dir",
        project_file.display()
    );
    events(Event::Line(format!(
        "split: {} training, {} validation, {} test rows",
        prepared.train.rows(),
        prepared.val.rows(),
        prepared.test.rows()
    )));

    events(Event::Step(
        2,
        STEPS,
        "train (float), quantize (int8), evaluate",
    ));
    let trained_at = Instant::now();
    let summary = train(&project_file)?;
    let metrics = &summary.metrics;
    events(Event::Line(format!(
        "{} epochs in {:.1} s, best validation at epoch {}",
        metrics.history.epochs.len(),
        trained_at.elapsed().as_secs_f64(),
        metrics.best_epoch
    )));
    let (float, int8) = (accuracy(&metrics.float), accuracy(&metrics.int8));
    let held_out = metrics.rows[2];
    events(Event::Line(format!(
        "accuracy on {held_out} held-out digits: float {}, int8 {}",
        percent(float),
        percent(int8)
    )));
    row(
        &format!("accuracy, {held_out} test digits"),
        format!("float {}, int8 {}", percent(float), percent(int8)),
    );

    events(Event::Step(
        3,
        STEPS,
        "export: ONNX, .loam, firmware sources",
    ));
    let run = summary.dir.clone();
    let file = ModelFile::open(&run.join("model.loam"))?;
    let model = file.model()?;
    let onnx_int8 = export_bytes(&model, ExportOptions::default())
        .with_context(|| format!("exporting {} to ONNX", file.path.display()))?;
    let onnx_path = run.join("model-int8.onnx");
    write_atomically(&onnx_path, &onnx_int8)?;
    let firmware = run.join("firmware");
    std::fs::create_dir_all(&firmware)
        .with_context(|| format!("creating {}", firmware.display()))?;
    let (header, source) = crate::sources::c_sources(
        &model,
        file.bytes(),
        "digits",
        "digits.h",
        "model.loam (loam quickstart)",
    );
    write_atomically(&firmware.join("digits.h"), header.as_bytes())?;
    write_atomically(&firmware.join("digits.c"), source.as_bytes())?;
    let module = crate::sources::rust_module(&model, "digits.loam", "model.loam (loam quickstart)");
    write_atomically(&firmware.join("digits.rs"), module.as_bytes())?;
    write_atomically(&firmware.join("digits.loam"), file.bytes())?;
    for (path, what) in [
        (run.join("model.onnx"), "float ONNX"),
        (
            onnx_path.clone(),
            "int8 ONNX (QuantizeLinear/DequantizeLinear)",
        ),
        (run.join("model.loam"), "int8 .loam"),
        (
            firmware.join("digits.h"),
            "C header + digits.c (ARENA_SIZE)",
        ),
        (firmware.join("digits.rs"), "Rust module + digits.loam"),
    ] {
        events(Event::Line(format!("{:<44} {}", path.display(), what)));
    }

    events(Event::Step(
        4,
        STEPS,
        "verify the ONNX exports against ONNX Runtime and tract",
    ));
    let float_file = ModelFile::open(&run.join("model-f32.loam"))?;
    let onnx_float = std::fs::read(run.join("model.onnx"))
        .with_context(|| format!("reading {}", run.join("model.onnx").display()))?;
    let ort = crate::peers::onnxruntime_library();
    if let Err(e) = &ort {
        events(Event::Line(format!("ONNX Runtime skipped: {e:#}")));
    }
    let checks = [
        (
            Peer::OnnxRuntime,
            &file,
            &onnx_int8,
            "ONNX Runtime, int8 QDQ",
        ),
        (
            Peer::OnnxRuntime,
            &float_file,
            &onnx_float,
            "ONNX Runtime, float",
        ),
        (Peer::Tract, &float_file, &onnx_float, "tract, float"),
    ];
    for (peer, loam_file, onnx, label) in checks {
        if peer == Peer::OnnxRuntime && ort.is_err() {
            row(label, "skipped (ONNX Runtime not installed)".into());
            continue;
        }
        let verdict = test_inputs(&loam_file.model()?, &prepared.test)
            .and_then(|inputs| verify_against(loam_file, peer, onnx, &inputs))
            .map(|report| judge(&report));
        let (ok, text) = match verdict {
            Ok(judged) => judged,
            // The first line: a peer's error may carry its backtrace after it.
            Err(e) => (
                false,
                format!("{e:#}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        };
        let text = if ok { text } else { format!("FAILED: {text}") };
        passed &= ok;
        events(Event::Line(format!("{label}: {text}")));
        row(label, text);
    }
    let tract_int8 = "not compared: tract 0.23.9 fuses DequantizeLinear-Softmax-QuantizeLinear \
                      into an int8 softmax that ignores the output zero point";
    events(Event::Line(format!("tract, int8: {tract_int8}")));

    events(Event::Step(
        5,
        STEPS,
        "memory and compute before flashing (Cortex-M4)",
    ));
    let inspection = crate::inspect::inspect(&file)?;
    for line in inspection.to_text().lines() {
        events(Event::Line(line.to_string()));
    }
    let board = crate::boards::board("cortex-m4")?;
    for line in inspection.fit_lines(&board) {
        events(Event::Line(line));
    }
    row(
        "flash, RAM (int8)",
        format!(
            "{} B model, {} B arena; {:.1}% of the flash and {:.1}% of the RAM of an {}",
            inspection.flash_bytes,
            inspection.arena_bytes,
            100.0 * inspection.flash_bytes as f64 / board.flash as f64,
            100.0 * inspection.arena_bytes as f64 / board.ram as f64,
            board.part
        ),
    );

    events(Event::Step(
        6,
        STEPS,
        "a user whose digits come out mirrored: fine-tune on this machine",
    ));
    let (samples, labels) = mirrored_digits(&prepared);
    let (recording, host) = crate::finetune::record(
        &file,
        &samples,
        &labels,
        LEARN_TRAIN,
        LEARN_EPOCHS,
        &LEARN_CONFIG,
    )?;
    let recording_path = run.join("user-mirrored.lmus");
    write_atomically(&recording_path, &recording)?;
    let share = |n: u16| 100.0 * f64::from(n) / f64::from(host.holdout.max(1));
    let learned = format!(
        "{:.1}% -> {:.1}% on {} held-out samples after {} steps on {}",
        share(host.correct_before),
        share(host.correct_after),
        host.holdout,
        host.steps,
        LEARN_TRAIN
    );
    events(Event::Line(format!(
        "last layer, Adam, {LEARN_EPOCHS} epochs: {learned}; checkpoint digest {:#010x}",
        host.digest
    )));
    row("fine-tuning, this machine", learned);

    events(Event::Step(
        7,
        STEPS,
        "the same on the emulated Cortex-M4 (QEMU)",
    ));
    let board_result = if options.board {
        run_on_board(&file.path, &recording_path, events)
    } else {
        BoardRun::Skipped("--no-board".into())
    };
    let board_row = match board_result {
        BoardRun::Matched => format!(
            "{:.1}% -> {:.1}%, checkpoint bits identical to this machine's",
            share(host.correct_before),
            share(host.correct_after)
        ),
        BoardRun::Failed(why) => {
            passed = false;
            format!("FAILED: {why}")
        }
        BoardRun::Skipped(why) => format!("skipped: {why}"),
    };
    events(Event::Line(board_row.clone()));
    row("fine-tuning, Cortex-M4 (QEMU)", board_row);

    let report = run.join("report.html");
    row("report", report.display().to_string());
    Ok(Summary {
        rows,
        run,
        report,
        seconds: started.elapsed().as_secs_f64(),
        passed,
    })
}

fn accuracy(evaluation: &Evaluation) -> Option<f64> {
    match evaluation {
        Evaluation::Classification(c) => Some(c.accuracy),
        _ => None,
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// Whether a peer agrees with loam, and the figures that say so. Float: within 1e-4. int8:
/// runtimes round requantization each their own way, and a one-step difference early moves
/// later layers, so at least 99% of outputs within one step and none more than 12 apart (the
/// bound `tests/peers.rs` holds every bundled architecture to); a wrong scale, zero point or
/// layout is off by far more.
fn judge(report: &crate::verify::VerifyReport) -> (bool, String) {
    let mut ok = true;
    let mut parts = Vec::new();
    for output in &report.outputs {
        match output.difference {
            crate::verify::Difference::Float { max_abs, .. } => {
                ok &= max_abs <= 1e-4;
                parts.push(format!("max abs difference {max_abs:.1e}"));
            }
            crate::verify::Difference::Quantized { .. } => {
                let worst = output.max_lsb().unwrap_or(0);
                let equal = output.within_lsb(0).unwrap_or(0.0);
                let near = output.within_lsb(1).unwrap_or(0.0);
                ok &= near >= 0.99 && worst <= 12;
                parts.push(format!(
                    "{:.1}% of outputs identical, {:.1}% within 1 step, at most {worst} apart",
                    100.0 * equal,
                    100.0 * near
                ));
            }
        }
    }
    (
        ok,
        format!("{} inputs: {}", report.samples, parts.join("; ")),
    )
}

/// The test rows as a model's inputs: preprocessed, quantized with the input's parameters for
/// an int8 model, one sample each.
fn test_inputs(model: &loam::Model<'_>, test: &Dataset) -> Result<Vec<Vec<Array>>> {
    let all = Array {
        shape: vec![test.rows(), 8, 8, 1],
        data: Data::F32(test.features.clone()),
    };
    crate::run::split_samples(model, &[all])
}

/// A user whose camera sees the digits mirrored: the validation and test digits (rows the
/// model never trained on), flipped left to right and shuffled with a fixed seed; returned as
/// preprocessed samples and their labels. The digits model mostly gets them wrong.
pub fn mirrored_digits(prepared: &Prepared) -> (Vec<f32>, Vec<u8>) {
    let mut rows: Vec<(Vec<f32>, u8)> = Vec::new();
    for part in [&prepared.val, &prepared.test] {
        let classes = part.classes().unwrap_or(&[]);
        for (i, &class) in classes.iter().enumerate() {
            let image = part.sample(i);
            let mirrored: Vec<f32> = (0..64).map(|p| image[p / 8 * 8 + 7 - p % 8]).collect();
            rows.push((mirrored, class as u8));
        }
    }
    rows.shuffle(&mut rand::rngs::StdRng::seed_from_u64(2026));
    let samples = rows.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let labels = rows.iter().map(|&(_, y)| y).collect();
    (samples, labels)
}

enum BoardRun {
    Matched,
    Failed(String),
    Skipped(String),
}

/// The checkout this binary was built from, where the firmware's sources are.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the learning firmware with this model and recording and runs it under QEMU
/// (`cargo xtask learn`), echoing the board's log.
fn run_on_board(model: &Path, recording: &Path, events: &mut dyn FnMut(Event)) -> BoardRun {
    let root = checkout();
    if !root.join("targets/cortex-m/Cargo.toml").exists() {
        return BoardRun::Skipped(format!(
            "the firmware sources are not at {} (run from a loam checkout)",
            root.display()
        ));
    }
    let installed = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !installed("qemu-system-arm") {
        return BoardRun::Skipped(
            "QEMU is not installed (`cargo xtask setup` installs it and the cross tools)".into(),
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    events(Event::Line(
        "building the learning firmware for thumbv7em-none-eabihf with this model \
         (`cargo xtask learn`; the first build takes a minute)"
            .into(),
    ));
    let output = Command::new(cargo)
        .current_dir(&root)
        .args(["xtask", "learn", "--model"])
        .arg(model)
        .arg("--recording")
        .arg(recording)
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => return BoardRun::Skipped(format!("cannot run cargo: {e}")),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The board's defmt log, not the build's.
    for line in text.lines().filter(|l| is_board_log(l)) {
        events(Event::Line(format!("board | {}", line.trim())));
    }
    if output.status.success() {
        return BoardRun::Matched;
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string();
    if last.contains("not installed") || last.contains("no Rust toolchain") {
        BoardRun::Skipped(last.trim_start_matches("error: ").to_string())
    } else {
        BoardRun::Failed(last)
    }
}

/// A line of the firmware's decoded defmt log: a message counter, then the level.
fn is_board_log(line: &str) -> bool {
    let line = line
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    ["INFO", "WARN", "ERROR"]
        .iter()
        .any(|level| line.starts_with(level))
}
