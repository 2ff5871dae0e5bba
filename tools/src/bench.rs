//! `loam bench`: latency of a model on this machine, whole and per op.

use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde_json::json;

use loam::{DType, Interpreter};

use crate::model_file::ModelFile;
use crate::npy::Array;
use crate::run::io_records;

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Untimed runs first, to warm caches and branch predictors.
    pub warmup: usize,
    /// Timed runs.
    pub iterations: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 20,
            iterations: 200,
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
    /// Arena bytes.
    pub arena_bytes: usize,
    /// Instruction sets the kernels could use.
    pub isa: Vec<&'static str>,
    /// Per-op medians.
    pub ops: Vec<OpTiming>,
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
pub fn bench(
    file: &ModelFile,
    inputs: Option<&[Array]>,
    options: BenchOptions,
) -> Result<BenchReport> {
    let model = file.model()?;
    let mut arena = vec![0u8; model.arena_size() + loam::format::ARENA_ALIGN];
    let mut interpreter = Interpreter::new(&model, &mut arena)?;
    let records = io_records(&model, false)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6c6f616d);
    for (i, t) in records.iter().enumerate() {
        let slot = interpreter.input_bytes_mut(i)?;
        match inputs.and_then(|a| a.get(i)) {
            Some(array) => {
                anyhow::ensure!(
                    array.data.bytes().len() == slot.len() && array.data.dtype() == t.dtype,
                    "input `{}` needs {} {} values",
                    t.name,
                    t.shape.elements().unwrap_or(0),
                    t.dtype
                );
                slot.copy_from_slice(array.data.bytes());
            }
            None => match t.dtype {
                DType::F32 => {
                    for chunk in slot.chunks_exact_mut(4) {
                        chunk.copy_from_slice(&rng.random_range(-1.0f32..1.0).to_le_bytes());
                    }
                }
                _ => rng.fill(slot),
            },
        }
    }
    for _ in 0..options.warmup {
        interpreter.invoke()?;
    }
    let start = Instant::now();
    let clock = || start.elapsed().as_nanos() as u64;
    let mut totals = Vec::with_capacity(options.iterations);
    let mut per_op: Vec<Vec<f64>> = vec![Vec::with_capacity(options.iterations); model.op_count()];
    for _ in 0..options.iterations.max(1) {
        let t0 = Instant::now();
        interpreter.invoke()?;
        totals.push(micros(t0.elapsed()));
    }
    // Per-op times come from separate, profiled runs so the clock reads do not inflate the
    // whole-model figures.
    for _ in 0..options.iterations.max(1) {
        interpreter.invoke_profiled(clock, |p| per_op[p.index].push(p.elapsed as f64 / 1e3))?;
    }
    totals.sort_by(f64::total_cmp);
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
    Ok(BenchReport {
        model: model.metadata().name.to_string(),
        iterations: totals.len(),
        median_us: percentile(&totals, 0.5),
        p90_us: percentile(&totals, 0.9),
        min_us: totals.first().copied().unwrap_or(0.0),
        arena_bytes: model.arena_size(),
        isa: loam::isa::available_names().collect(),
        ops,
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
            "isa": self.isa,
            "ops": self.ops.iter().map(|o| json!({
                "index": o.index,
                "kind": o.kind,
                "name": o.name,
                "median_us": o.median_us,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as a table for people.
    pub fn to_text(&self, per_op: bool) -> String {
        let mut s = format!(
            "{}: median {:.1} us, p90 {:.1} us, min {:.1} us over {} runs (arena {} B; kernels: {})\n",
            self.model,
            self.median_us,
            self.p90_us,
            self.min_us,
            self.iterations,
            self.arena_bytes,
            self.isa.join(", ")
        );
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
