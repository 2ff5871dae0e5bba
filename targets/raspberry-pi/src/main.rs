//! `loam-pi`: streaming inference with the loam runtime on a Raspberry Pi (or any Linux).
//!
//! Loads a `.loam` model, reads samples from stdin (one line of numbers each), a CSV file or
//! WAV clips, and prints one prediction per sample as it goes (tab-separated: index, class,
//! label, score, latency in µs, then the expected label and `ok`/`wrong` when the data has
//! one), then a summary: counts, accuracy, throughput and latency percentiles. `--json`
//! prints the same as JSON lines. Errors in one sample are reported on stderr with their line
//! or file and the stream goes on.
//!
//! Exit status: 0 when every sample ran, 2 when some were rejected, 1 when the model or a
//! source could not be opened (or the runtime failed).

mod engine;
mod sources;
mod stats;

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use loam::audio::FeatureConfig;
use loam::{Interpreter, Model};
use serde_json::json;

use engine::Engine;
use sources::{Item, LabelColumn};
use stats::Latencies;

/// Streaming inference with a loam model: stdin lines, a CSV file or WAV clips in, one
/// prediction per line and latency percentiles out.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The `.loam` model to run.
    model: PathBuf,
    /// Read samples from this CSV file (gzipped or not; an optional header row and label
    /// column) instead of stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "wav")]
    csv: Option<PathBuf>,
    /// Run on these WAV clips (mono, the model's sample rate), computing the features with the
    /// model's audio front end. A clip's folder name, when it is one of the model's labels, is
    /// its expected label.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    wav: Vec<PathBuf>,
    /// The CSV column holding the label: a header name, a 0-based index, `none`, or `auto`
    /// (the last column when a row has exactly one value more than the model takes).
    #[arg(
        long,
        value_name = "NAME|INDEX",
        default_value = "auto",
        requires = "csv"
    )]
    label_column: LabelColumn,
    /// Print results and the summary as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Print only the summary, not a line per sample.
    #[arg(long)]
    quiet: bool,
    /// Invoke the model this many times per sample (every run counts in the percentiles; the
    /// line shows their median).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Invocations before the first measured one (warming caches and the branch predictor).
    #[arg(long, default_value_t = 0)]
    warmup: u32,
}

/// `x` to three decimals: nanoseconds for microsecond figures, which is all a clock gives.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        // A reader that went away (`loam-pi ... | head`) is a normal end, not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loam-pi: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole program; returns how many samples were rejected.
fn run(cli: &Cli) -> Result<u64> {
    let bytes = engine::read_model(&cli.model)?;
    let model = Model::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid .loam model", cli.model.display()))?;
    let labels: Vec<String> = model.labels().map(str::to_string).collect();
    // Room for the decoded records too, which speed up small layers (a few KiB).
    let mut arena = vec![0u8; Interpreter::arena_size_with_records(&model)];
    let engine = Engine::new(&model, &mut arena)
        .with_context(|| format!("loading {}", cli.model.display()))?;
    let audio = if cli.wav.is_empty() {
        None
    } else {
        let config = FeatureConfig::from_model(&model)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cli.model.display()))?
            .with_context(|| {
                format!(
                    "{} stores no audio front end, so it cannot take WAV clips",
                    cli.model.display()
                )
            })?;
        Some(sources::Audio::new(config, engine.input_len())?)
    };
    let (isa, available) = engine::isa_in_use();
    let (input, output) = engine.io()?;
    let info = json!({
        "model": model.metadata().name,
        "path": cli.model.display().to_string(),
        "input": engine::describe(&input),
        "output": engine::describe(&output),
        "labels": labels.len(),
        "arena_bytes": model.arena_size(),
        "isa": isa,
        "isa_available": available,
        "arch": std::env::consts::ARCH,
    });
    if !cli.json {
        eprintln!(
            "loam-pi: {} ({}): input {}, output {}, {} labels, arena {} B, ISA {isa} (available: {}), {}",
            model.metadata().name,
            cli.model.display(),
            engine::describe(&input),
            engine::describe(&output),
            labels.len(),
            model.arena_size(),
            available.join(", "),
            std::env::consts::ARCH,
        );
        if !cli.quiet {
            eprintln!("loam-pi: columns: index class label score latency_us [expected ok|wrong]");
        }
    }
    let clip_labels = labels.clone();
    let mut runner = Runner {
        engine,
        labels,
        out: BufWriter::new(std::io::stdout().lock()),
        json: cli.json,
        quiet: cli.quiet,
        repeat: cli.repeat,
        warmup_left: cli.warmup,
        latencies: Latencies::default(),
        durations: Vec::with_capacity(cli.repeat as usize),
        results: 0,
        rejected: 0,
        labelled: 0,
        correct: 0,
        unknown_labels: 0,
    };
    let len = runner.engine.input_len();
    let start = Instant::now();
    let mut each = |item: Item| runner.handle(item);
    if let Some(path) = &cli.csv {
        sources::csv(path, &cli.label_column, len, &mut each)?;
    } else if let Some(audio) = &audio {
        for path in &cli.wav {
            let item = audio
                .features(path)
                .map(|values| sources::Sample {
                    source: path.display().to_string(),
                    values,
                    expected: sources::folder_label(path, &clip_labels),
                })
                .with_context(|| format!("clip {}", path.display()));
            each(item)?;
        }
    } else {
        sources::lines(std::io::stdin().lock(), "stdin", len, &mut each)?;
    }
    let wall = start.elapsed();
    runner.summary(wall, info)?;
    Ok(runner.rejected)
}

/// Runs samples as they come and keeps the figures for the summary.
struct Runner<'m, 'a, W: Write> {
    engine: Engine<'m, 'a>,
    labels: Vec<String>,
    out: W,
    json: bool,
    quiet: bool,
    repeat: u32,
    warmup_left: u32,
    latencies: Latencies,
    /// This sample's invocations (reused).
    durations: Vec<Duration>,
    results: u64,
    rejected: u64,
    /// Samples whose expected label names a class, and how many of those were predicted.
    labelled: u64,
    correct: u64,
    /// Samples with a label that is no class of the model.
    unknown_labels: u64,
}

impl<W: Write> Runner<'_, '_, W> {
    /// The class an expected label names: one of the model's labels, or a class index.
    fn class_of(&self, expected: &str) -> Option<usize> {
        if let Some(i) = self.labels.iter().position(|l| l == expected) {
            return Some(i);
        }
        let i: usize = expected.parse().ok()?;
        (self.labels.is_empty() || i < self.labels.len()).then_some(i)
    }

    /// Runs one sample, or reports why it was rejected. Only output and runtime failures are
    /// errors: they would repeat for every later sample.
    fn handle(&mut self, item: Item) -> Result<()> {
        let sample = match item {
            Ok(sample) => sample,
            Err(e) => return self.reject(&e),
        };
        if let Err(e) = self.engine.set_input(&sample.values) {
            return self.reject(&e.context(sample.source));
        }
        // The memory plan lets later ops overwrite the input tensor, so every invocation after
        // the first needs the input written again (outside the timed part).
        while self.warmup_left > 0 {
            self.engine.invoke()?;
            self.engine.set_input(&sample.values)?;
            self.warmup_left -= 1;
        }
        self.durations.clear();
        for i in 0..self.repeat {
            if i > 0 {
                self.engine.set_input(&sample.values)?;
            }
            let d = self.engine.invoke()?;
            self.latencies.record(d);
            self.durations.push(d);
        }
        let latency_us = stats::median_us(&mut self.durations);
        let prediction = self.engine.prediction()?;
        let label = self
            .labels
            .get(prediction.class)
            .cloned()
            .unwrap_or_else(|| prediction.class.to_string());
        let correct = sample.expected.as_deref().and_then(|e| {
            let class = self.class_of(e);
            if class.is_none() {
                self.unknown_labels += 1;
            }
            class.map(|c| c == prediction.class)
        });
        if let Some(ok) = correct {
            self.labelled += 1;
            self.correct += u64::from(ok);
        }
        let index = self.results;
        self.results += 1;
        if self.quiet {
            return Ok(());
        }
        if self.json {
            let line = json!({
                "type": "result",
                "index": index,
                "source": sample.source,
                "class": prediction.class,
                "label": label,
                "score": prediction.score,
                "latency_us": round3(latency_us),
                "expected": sample.expected,
                "correct": correct,
            });
            writeln!(self.out, "{line}")
        } else {
            write!(
                self.out,
                "{index}\t{}\t{label}\t{:.4}\t{latency_us:.1}",
                prediction.class, prediction.score
            )
            .and_then(|()| match (&sample.expected, correct) {
                (Some(e), Some(ok)) => {
                    writeln!(self.out, "\t{e}\t{}", if ok { "ok" } else { "wrong" })
                }
                (Some(e), None) => writeln!(self.out, "\t{e}\t?"),
                (None, _) => writeln!(self.out),
            })
        }
        // A pipe's reader (or a daemon's client) sees each result as soon as it exists.
        .and_then(|()| self.out.flush())
        .context("writing to stdout")
    }

    fn reject(&mut self, e: &anyhow::Error) -> Result<()> {
        self.rejected += 1;
        eprintln!("loam-pi: rejected {e:#}");
        Ok(())
    }

    /// Prints the closing figures: on stderr as text (stdout stays one line per result), or
    /// on stdout as one JSON line.
    fn summary(&mut self, wall: Duration, info: serde_json::Value) -> Result<()> {
        let l = &self.latencies;
        let invoke_s = l.sum().as_secs_f64();
        let throughput = if invoke_s > 0.0 {
            l.count() as f64 / invoke_s
        } else {
            0.0
        };
        let accuracy = (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64);
        if self.json {
            let line = json!({
                "type": "summary",
                "info": info,
                "inputs": self.results,
                "rejected": self.rejected,
                "invocations": l.count(),
                "labelled": self.labelled,
                "correct": self.correct,
                "unknown_labels": self.unknown_labels,
                "accuracy": accuracy,
                "latency_us": {
                    "p50": round3(l.percentile_us(50.0)),
                    "p90": round3(l.percentile_us(90.0)),
                    "p99": round3(l.percentile_us(99.0)),
                    "max": round3(l.max_us()),
                },
                "throughput_per_s": round3(throughput),
                "wall_s": wall.as_secs_f64(),
            });
            writeln!(self.out, "{line}")
                .and_then(|()| self.out.flush())
                .context("writing to stdout")?;
            return Ok(());
        }
        eprintln!(
            "loam-pi: {} inputs, {} rejected, {} invocations in {:.3} s",
            self.results,
            self.rejected,
            l.count(),
            wall.as_secs_f64()
        );
        if let Some(a) = accuracy {
            eprintln!(
                "loam-pi: accuracy {:.2}% ({}/{})",
                100.0 * a,
                self.correct,
                self.labelled
            );
        }
        if self.unknown_labels > 0 {
            eprintln!(
                "loam-pi: {} labels name no class of the model (not scored)",
                self.unknown_labels
            );
        }
        eprintln!(
            "loam-pi: latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            l.percentile_us(50.0),
            l.percentile_us(90.0),
            l.percentile_us(99.0),
            l.max_us()
        );
        eprintln!("loam-pi: throughput {throughput:.0} inferences/s (time in the model only)");
        Ok(())
    }
}
