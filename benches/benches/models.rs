//! Whole-model latency at batch 1 on one thread, loam side by side with ONNX Runtime and tract
//! in the same run, on the MLPerf-Tiny-shaped architectures and the digits MLP.
//!
//! Each architecture is built twice, f32 and int8 (calibrated), and each build runs in loam
//! and, through its ONNX export (QDQ for int8), in both peers, all on the same seeded input.
//! After criterion's own report comes one table per model: each runtime's median and the
//! ratio the project's goal is stated in, loam int8 latency over the best peer figure (the
//! faster of the two peers, each at its better precision).
//!
//! `cargo bench -p loam-benches --bench models` (`-- --quick` for a short run). The peers
//! need ONNX Runtime's library (`cargo xtask setup` installs it; `ORT_DYLIB_PATH` overrides).

use std::path::PathBuf;
use std::time::Duration;

use criterion::Criterion;
use loam::Interpreter;
use loam_tools::bench::INPUT_SEED;
use loam_tools::model_file::ModelFile;
use loam_tools::onnx::{ExportOptions, export_bytes};
use loam_tools::peers::Peer;
use loam_tools::run::random_inputs;
use loam_tools::zoo;

const PRECISIONS: [(&str, bool); 2] = [("int8", true), ("f32", false)];

fn runtimes() -> Vec<String> {
    let mut names = vec![];
    for (precision, _) in PRECISIONS {
        names.push(format!("loam-{precision}"));
        for peer in Peer::ALL {
            names.push(format!("{peer}-{precision}"));
        }
    }
    names
}

fn bench_model(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(format!("model-{name}"));
    for (precision, int8) in PRECISIONS {
        let built = zoo::build(name, int8).expect("the architecture builds");
        let file = ModelFile::from_bytes(name, &built.bytes).expect("the model loads");
        let model = file.model().unwrap();
        let inputs = random_inputs(&model, INPUT_SEED).unwrap();

        let mut arena = vec![0u8; Interpreter::arena_size_with_records(&model)];
        let mut interpreter = Interpreter::new(&model, &mut arena).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            interpreter
                .input_bytes_mut(i)
                .unwrap()
                .copy_from_slice(input.data.bytes());
        }
        group.bench_function(format!("loam-{precision}"), |b| {
            b.iter(|| interpreter.invoke().unwrap())
        });

        let onnx = export_bytes(&model, ExportOptions::default()).expect("ONNX export");
        for peer in Peer::ALL {
            let mut loaded = peer
                .load(&onnx)
                .unwrap_or_else(|e| panic!("{peer} cannot run {name} ({precision}): {e:#}"));
            loaded.set_inputs(&inputs).unwrap();
            group.bench_function(format!("{peer}-{precision}"), |b| {
                b.iter(|| loaded.invoke().unwrap())
            });
        }
    }
    group.finish();
}

fn output_directory() -> PathBuf {
    match std::env::var_os("CRITERION_HOME") {
        Some(home) => PathBuf::from(home),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
            .join("criterion"),
    }
}

/// The median criterion wrote for `group`/`function` at or after `started` (this run), in
/// microseconds; a stale estimate from an earlier run is not a side-by-side measurement.
fn median_us(
    dir: &std::path::Path,
    group: &str,
    function: &str,
    started: std::time::SystemTime,
) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < started {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(v["median"]["point_estimate"].as_f64()? / 1e3)
}

fn print_table(dir: &std::path::Path, started: std::time::SystemTime) {
    println!("\nbatch 1, one thread; medians in microseconds; ratio = loam int8 / best peer");
    let runtimes = runtimes();
    let header: Vec<String> = runtimes.iter().map(|r| format!("{r:>18}")).collect();
    println!("{:<20}{}{:>10}", "model", header.join(""), "ratio");
    for name in zoo::NAMES {
        let group = format!("model-{name}");
        let figures: Vec<Option<f64>> = runtimes
            .iter()
            .map(|r| median_us(dir, &group, r, started))
            .collect();
        if figures.iter().all(Option::is_none) {
            continue;
        }
        let cells: Vec<String> = figures
            .iter()
            .map(|f| f.map_or(format!("{:>18}", "-"), |v| format!("{v:>18.1}")))
            .collect();
        let measured: Vec<(&str, f64)> = runtimes
            .iter()
            .zip(&figures)
            .filter_map(|(r, f)| Some((r.as_str(), (*f)?)))
            .collect();
        let loam_int8 = measured
            .iter()
            .find(|(r, _)| *r == "loam-int8")
            .map(|&(_, v)| v);
        let best_peer = measured
            .iter()
            .filter(|(r, _)| !r.starts_with("loam"))
            .map(|&(_, v)| v)
            .reduce(f64::min);
        let ratio = match (loam_int8, best_peer) {
            (Some(l), Some(p)) => format!("{:>9.2}x", l / p),
            _ => format!("{:>10}", "-"),
        };
        println!("{name:<20}{}{ratio}", cells.join(""));
    }
}

fn main() {
    let dir = output_directory();
    let started = std::time::SystemTime::now();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for name in zoo::NAMES {
        bench_model(&mut c, name);
    }
    c.final_summary();
    print_table(&dir, started);
}
