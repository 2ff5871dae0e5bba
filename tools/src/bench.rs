//! `loam bench`: latency of a model on this machine, whole and per op.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use loam::Interpreter;

use crate::model_file::ModelFile;
use crate::npy::Array;
use crate::onnx::{ExportOptions, export_bytes};
use crate::peers::Peer;
use crate::run::{io_records, random_inputs};

/// The seed of the random inputs used when none are given.
pub const INPUT_SEED: u64 = 0x6c6f_616d;

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Untimed runs first, to warm caches and branch predictors.
    pub warmup: usize,
    /// Timed runs.
    pub iterations: usize,
    /// Let f16-weight layers round their inputs to f16
    /// ([`loam::Interpreter::set_half_precision_inputs`]).
    pub half_precision_inputs: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 20,
            iterations: 200,
            half_precision_inputs: false,
        }
    }
}

/// One op's share of an invocation.
#[derive(Debug, Clone)]
pub struct OpTiming {
    /// Position in execution order.
    pub index: usize,
    /// Kind name.
    pub kind: &'static str,
    /// Node name.
    pub name: String,
    /// Median microseconds.
    pub median_us: f64,
}

/// The figures of a benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Model name.
    pub model: String,
    /// Timed runs.
    pub iterations: usize,
    /// Median latency, microseconds.
    pub median_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// Fastest run, microseconds.
    pub min_us: f64,
    /// Arena bytes the model's plan needs.
    pub arena_bytes: usize,
    /// Arena bytes past the plan that hold the decoded records and prepared words the
    /// interpreter keeps ([`Interpreter::arena_size_with_records`]).
    pub records_bytes: usize,
    /// Instruction sets the kernels could use.
    pub isa: Vec<&'static str>,
    /// Per-op medians.
    pub ops: Vec<OpTiming>,
    /// The peers' figures on the same model and inputs, measured in the same run.
    pub peers: Vec<PeerTiming>,
}

/// A peer runtime's latency on the model's ONNX export.
#[derive(Debug, Clone)]
pub struct PeerTiming {
    /// Which peer.
    pub peer: Peer,
    /// Median latency, microseconds.
    pub median_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// Fastest run, microseconds.
    pub min_us: f64,
}

/// Median, 90th percentile and minimum of `iterations` timed calls of `f` after `warmup`
/// untimed ones, in microseconds.
pub fn measure(
    options: BenchOptions,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64, f64)> {
    for _ in 0..options.warmup {
        f()?;
    }
    let mut totals = Vec::with_capacity(options.iterations.max(1));
    for _ in 0..options.iterations.max(1) {
        let t0 = Instant::now();
        f()?;
        totals.push(micros(t0.elapsed()));
    }
    totals.sort_by(f64::total_cmp);
    Ok((
        percentile(&totals, 0.5),
        percentile(&totals, 0.9),
        totals[0],
    ))
}

/// Times `peer` on an ONNX model (a `.loam`'s export) with `inputs`, single-threaded.
pub fn bench_peer(
    onnx: &[u8],
    peer: Peer,
    inputs: &[Array],
    options: BenchOptions,
) -> Result<PeerTiming> {
    let mut loaded = peer.load(onnx)?;
    loaded.set_inputs(inputs)?;
    let (median_us, p90_us, min_us) = measure(options, || loaded.invoke())?;
    Ok(PeerTiming {
        peer,
        median_us,
        p90_us,
        min_us,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Benchmarks `file`'s model, single-threaded, batch as stored. Inputs come from `inputs` (one
/// per graph input, exactly the model's shape) or are seeded random values.
///
/// Each peer in `vs` then runs the model's ONNX export on the same inputs.
pub fn bench(
    file: &ModelFile,
    inputs: Option<&[Array]>,
    options: BenchOptions,
    vs: &[Peer],
) -> Result<BenchReport> {
    let model = file.model()?;
    // Room for the decoded records too: what a host application would give it.
    let mut arena = vec![0u8; Interpreter::arena_size_with_records(&model)];
    let mut interpreter = Interpreter::new(&model, &mut arena)?;
    ensure!(
        interpreter.keeps_records_decoded(),
        "the interpreter did not keep the records in {} bytes of arena",
        arena.len()
    );
    let records_bytes = interpreter.records_bytes();
    interpreter.set_half_precision_inputs(options.half_precision_inputs);
    let records = io_records(&model, false)?;
    let random;
    let inputs = match inputs {
        Some(a) => a,
        None => {
            random = random_inputs(&model, INPUT_SEED)?;
            &random
        }
    };
    ensure!(
        inputs.len() == records.len(),
        "the model has {} input(s) but {} array(s) were given",
        records.len(),
        inputs.len()
    );
    for (i, (t, array)) in records.iter().zip(inputs).enumerate() {
        let slot = interpreter.input_bytes_mut(i)?;
        ensure!(
            array.data.bytes().len() == slot.len() && array.data.dtype() == t.dtype,
            "input `{}` needs {} {} values",
            t.name,
            t.shape.elements().unwrap_or(0),
            t.dtype
        );
        slot.copy_from_slice(array.data.bytes());
    }
    let (median_us, p90_us, min_us) = measure(options, || Ok(interpreter.invoke()?))?;
    let start = Instant::now();
    let clock = || start.elapsed().as_nanos() as u64;
    let mut per_op: Vec<Vec<f64>> = vec![Vec::with_capacity(options.iterations); model.op_count()];
    // Per-op times come from separate, profiled runs so the clock reads do not inflate the
    // whole-model figures.
    for _ in 0..options.iterations.max(1) {
        interpreter.invoke_profiled(clock, |p| per_op[p.index].push(p.elapsed as f64 / 1e3))?;
    }
    let ops = model
        .ops()
        .enumerate()
        .map(|(index, op)| {
            let mut times = std::mem::take(&mut per_op[index]);
            times.sort_by(f64::total_cmp);
            OpTiming {
                index,
                kind: loam::ops::OpKind::from_code(op.kind).map_or("?", |k| k.name()),
                name: op.name.to_string(),
                median_us: percentile(&times, 0.5),
            }
        })
        .collect();
    let peers = if vs.is_empty() {
        Vec::new()
    } else {
        let onnx = export_bytes(&model, ExportOptions::default())
            .with_context(|| format!("exporting {} to ONNX", file.path.display()))?;
        vs.iter()
            .map(|&peer| bench_peer(&onnx, peer, inputs, options))
            .collect::<Result<_>>()?
    };
    Ok(BenchReport {
        model: model.metadata().name.to_string(),
        iterations: options.iterations.max(1),
        median_us,
        p90_us,
        min_us,
        arena_bytes: model.arena_size(),
        records_bytes,
        isa: loam::isa::available_names().collect(),
        ops,
        peers,
    })
}

impl BenchReport {
    /// The report as JSON (`median_us`, `p90_us`, ... and `ops`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "model": self.model,
            "iterations": self.iterations,
            "median_us": self.median_us,
            "p90_us": self.p90_us,
            "min_us": self.min_us,
            "arena_bytes": self.arena_bytes,
            "records_bytes": self.records_bytes,
            "isa": self.isa,
            "ops": self.ops.iter().map(|o| json!({
                "index": o.index,
                "kind": o.kind,
                "name": o.name,
                "median_us": o.median_us,
            })).collect::<Vec<_>>(),
            "peers": self.peers.iter().map(|p| json!({
                "peer": p.peer.name(),
                "median_us": p.median_us,
                "p90_us": p.p90_us,
                "min_us": p.min_us,
                "loam_speedup": p.median_us / self.median_us.max(1e-9),
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as a table for people.
    pub fn to_text(&self, per_op: bool) -> String {
        let mut s = format!(
            "{}: median {:.1} us, p90 {:.1} us, min {:.1} us over {} runs (arena {} B + {} B of kept records; kernels: {})\n",
            self.model,
            self.median_us,
            self.p90_us,
            self.min_us,
            self.iterations,
            self.arena_bytes,
            self.records_bytes,
            self.isa.join(", ")
        );
        for p in &self.peers {
            s.push_str(&format!(
                "{:>14}: median {:.1} us, p90 {:.1} us, min {:.1} us (loam takes {:.2}x its median)\n",
                p.peer.name(),
                p.median_us,
                p.p90_us,
                p.min_us,
                self.median_us / p.median_us.max(1e-9)
            ));
        }
        if per_op {
            s.push_str("  op  kind                 name                           median us\n");
            for o in &self.ops {
                s.push_str(&format!(
                    "  {:>2}  {:<20} {:<30} {:>9.2}\n",
                    o.index, o.kind, o.name, o.median_us
                ));
            }
        }
        s
    }
}
