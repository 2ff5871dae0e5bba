//! The int8 half of the ONNX conformance test: every case on the float allow-list that has
//! an op loam runs in int8, quantized by ONNX Runtime's quantizer (`quantize_static`, QDQ,
//! per-channel, int8 activations and weights, calibrated on the case's own inputs) by
//! `conformance/quantize.py`, imported by loam (the QDQ groups become native int8 ops) and run
//! by both loam and ONNX Runtime on the case's inputs.
//!
//! The graph outputs are dequantized int8 values, so the two runtimes' outputs are compared
//! in units of the output's quantization step (the scale of the `DequantizeLinear` that
//! makes the output): a case passes when at least 99% of its elements are within one step.
//! Rounding differs between runtimes (ONNX Runtime requantizes in float, loam in fixed
//! point), so an element one step off is expected; two or more is not.
//!
//! `conformance/allow_int8.txt` follows the rules of `allow.txt`: a listed case that fails
//! fails the test, a passing case not listed is announced, `LOAM_CONFORMANCE_WRITE=1`
//! rewrites it. The quantized models are written once per data folder, allow-list, script
//! and onnxruntime version under the target folder (a few seconds). Without ONNX Runtime
//! (the Python wheel, which also holds the library loam loads) the test passes with a note,
//! unless `LOAM_REQUIRE_ONNX_TESTDATA=1` makes that a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use loam::ops::OpKind;
use loam_tools::model_file::ModelFile;
use loam_tools::npy::{Array, Data};
use loam_tools::onnx::{ImportOptions, import_bytes};
use loam_tools::peers::{Peer, onnxruntime_library};
use loam_tools::run::{io_records, real_values, run};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::{DatumType, Tensor};

use super::{
    Case, Judged, SUITES, Verdict, data_sets, find_data, list_cases, panic_message,
    read_allow_list, read_tensors, refusal_summary, run_parallel, shorten,
};

/// The share of a case's elements that must be within one quantization step.
const MIN_WITHIN_ONE: f64 = 0.99;

/// Output elements by their distance from ONNX Runtime's in quantization steps: 0, 1, 2, more.
type Histogram = [u64; 4];

/// What one quantized case came to.
#[derive(Debug)]
enum Outcome {
    /// Within one step on at least 99% of the elements of every data set together; `float`
    /// names the ops loam ran in f32 (none when the QDQ groups all became int8 ops).
    Passed { float: Vec<String> },
    /// loam's importer refused the QDQ model.
    Refused { reason: String },
    /// Imported, but running, comparing or the 1-step rule failed, or something panicked.
    Failed { imported: bool, reason: String },
}

#[test]
fn onnx_backend_conformance_int8() {
    let require = std::env::var("LOAM_REQUIRE_ONNX_TESTDATA").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(
            !require,
            "LOAM_REQUIRE_ONNX_TESTDATA=1 but {why} (cargo xtask setup installs the wheels)"
        );
        println!("skipping the ONNX int8 conformance test: {why}");
    };
    let data = match find_data() {
        Ok(data) => data,
        Err(why) => return skip(why),
    };
    if let Err(why) = onnxruntime_library() {
        return skip(format!("{why:#}"));
    }
    let (quantized, ort_version) = match quantized(&data) {
        Ok(found) => found,
        Err(why) => return skip(why),
    };
    let started = Instant::now();
    let mut cases = Vec::new();
    for suite in SUITES {
        let dir = quantized.join(suite);
        if dir.is_dir() {
            cases.extend(list_cases(suite, &dir));
        }
    }
    let results = run_parallel(&cases, run_case);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let float_allowed = read_allow_list(&manifest.join("conformance/allow.txt"));
    let allow_path = manifest.join("conformance/allow_int8.txt");
    let allowed = read_allow_list(&allow_path);

    let mut total: Histogram = [0; 4];
    for (_, hist) in &results {
        for (t, h) in total.iter_mut().zip(hist) {
            *t += h;
        }
    }
    let mut judged = Judged::new(
        &allowed,
        cases.iter().zip(&results).map(|(case, (outcome, _))| {
            let verdict = match outcome {
                Outcome::Passed { .. } => Verdict::Passed,
                Outcome::Refused { reason } => Verdict::Refused(reason.clone()),
                Outcome::Failed { reason, .. } => Verdict::Failed(reason.clone()),
            };
            (case.id(), verdict)
        }),
    );
    let present: BTreeSet<String> = cases.iter().map(Case::id).collect();
    for id in allowed.difference(&present) {
        judged.failures.push(format!(
            "{id}: listed in allow_int8.txt but the quantizer made no model of it"
        ));
    }

    println!("{}", table(&float_allowed, &cases, &results, &ort_version));
    println!("{}", histogram(&total));
    println!(
        "{} quantized cases in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    print_reasons(
        "not quantized",
        std::fs::read_to_string(quantized.join("skipped.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(": ").map_or(l, |(_, why)| why).to_string()),
    );
    print_reasons(
        "refused by loam's importer",
        results.iter().filter_map(|(o, _)| match o {
            Outcome::Refused { reason } => Some(reason.clone()),
            _ => None,
        }),
    );
    if std::env::var("LOAM_CONFORMANCE_VERBOSE").is_ok_and(|v| v == "1") {
        for (case, (outcome, _)) in cases.iter().zip(&results) {
            match outcome {
                Outcome::Refused { reason } => println!("refused {}: {reason}", case.id()),
                Outcome::Passed { float } if !float.is_empty() => {
                    println!("{} passes with ops in f32: {}", case.id(), float.join(", "))
                }
                _ => {}
            }
        }
    }
    judged.finish(&allow_path, ALLOW_LIST_HEADER, "ONNX int8 conformance");
}

/// The folder of quantized cases `conformance/quantize.py` writes for the float allow-list's
/// cases in `data`, and the onnxruntime version that quantized them; written once per data
/// folder, allow-list, script and onnxruntime version.
fn quantized(data: &Path) -> Result<(PathBuf, String), String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allow = manifest.join("conformance/allow.txt");
    let script = manifest.join("conformance/quantize.py");
    let out = Command::new("python3")
        .args(["-c", "import onnxruntime; print(onnxruntime.__version__)"])
        .output()
        .map_err(|e| format!("python3 does not run ({e})"))?;
    if !out.status.success() {
        return Err("python3 has no `onnxruntime` package (pip install onnxruntime)".into());
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut h);
        std::fs::read(&allow).unwrap_or_default().hash(&mut h);
        std::fs::read(&script).unwrap_or_default().hash(&mut h);
        h.finish()
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("onnx-conformance-int8-{version}-{key:016x}"));
    if dir.is_dir() {
        return Ok((dir, version));
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    println!("quantizing the ONNX test cases in {}", dir.display());
    let out = Command::new("python3")
        .arg(&script)
        .arg(data)
        .arg(&allow)
        .arg(&partial)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&partial, &dir).map_err(|e| format!("renaming {}: {e}", partial.display()))?;
    Ok((dir, version))
}

/// One case: every data set run by loam and ONNX Runtime; the outcome and the histogram of
/// the elements compared.
fn run_case(case: &Case) -> (Outcome, Histogram) {
    let mut hist: Histogram = [0; 4];
    let mut float = Vec::new();
    let model = match std::fs::read(case.dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => {
            let reason = format!("reading model.onnx: {e}");
            let outcome = Outcome::Failed {
                imported: false,
                reason,
            };
            return (outcome, hist);
        }
    };
    for set in data_sets(&case.dir) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_set(&model, &case.dir, &set, &mut hist)
        }))
        .unwrap_or_else(|panic| {
            Err(Outcome::Failed {
                imported: false,
                reason: format!("panicked: {}", panic_message(&*panic)),
            })
        });
        match result {
            Ok(ops) => float = ops,
            Err(outcome) => return (outcome, hist),
        }
    }
    let all: u64 = hist.iter().sum();
    let within = hist[0] + hist[1];
    let outcome = if all == 0 {
        Outcome::Failed {
            imported: true,
            reason: "no output element was compared".into(),
        }
    } else if (within as f64) < MIN_WITHIN_ONE * all as f64 {
        Outcome::Failed {
            imported: true,
            reason: format!(
                "{within} of {all} elements within 1 step of ONNX Runtime's ({:.1}%); off by \
                 0/1/2/more steps: {hist:?}",
                100.0 * within as f64 / all as f64
            ),
        }
    } else {
        Outcome::Passed { float }
    };
    (outcome, hist)
}

/// One data set through both runtimes, the distances added to `hist`.
fn run_set(
    model: &[u8],
    dir: &Path,
    set: &Path,
    hist: &mut Histogram,
) -> Result<Vec<String>, Outcome> {
    let failed = |imported: bool| move |reason: String| Outcome::Failed { imported, reason };
    let inputs = read_tensors(set, "input_").map_err(failed(false))?;
    let proto = pb::ModelProto::decode(model)
        .map_err(|e| failed(false)(format!("model.onnx does not decode: {e}")))?;
    let graph = proto.graph.unwrap_or_default();
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let fed: Vec<(&str, Array)> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !initializers.contains(n))
        .zip(&inputs)
        .map(|(name, (_, t))| Ok((name, float_array(t)?)))
        .collect::<Result<_, String>>()
        .map_err(failed(false))?;

    let options = ImportOptions {
        input_shapes: fed
            .iter()
            .map(|(name, a)| (name.to_string(), a.shape.clone()))
            .collect(),
        ..ImportOptions::default()
    };
    let imported = import_bytes(model, dir.to_str(), &options).map_err(|e| Outcome::Refused {
        reason: refusal_summary(&format!("{e:#}")),
    })?;
    let file = ModelFile::from_bytes("int8 conformance case", &imported.built.bytes)
        .map_err(|e| failed(true)(format!("the imported model does not load: {e:#}")))?;
    let loam_model = file.model().map_err(|e| failed(true)(format!("{e:#}")))?;
    let float = float_ops(&loam_model).map_err(failed(true))?;
    let by_name: HashMap<&str, &Array> = fed.iter().map(|(n, a)| (*n, a)).collect();
    let ours_in = io_records(&loam_model, false)
        .map_err(|e| failed(true)(format!("{e:#}")))?
        .iter()
        .map(|r| {
            by_name
                .get(r.name)
                .map(|a| (*a).clone())
                .ok_or_else(|| failed(true)(format!("the model's input `{}` has no data", r.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ours = run(&file, &ours_in).map_err(|e| failed(true)(format!("run: {e:#}")))?;

    let ort_failed = |e: anyhow::Error| failed(true)(format!("ONNX Runtime: {e:#}"));
    let mut ort = Peer::OnnxRuntime.load(model).map_err(ort_failed)?;
    let theirs_in: Vec<Array> = fed.into_iter().map(|(_, a)| a).collect();
    ort.set_inputs(&theirs_in).map_err(ort_failed)?;
    let theirs = ort.outputs().map_err(ort_failed)?;

    for (output, want) in graph.output.iter().zip(&theirs) {
        let name = output.name.as_str();
        let scale = output_scale(&graph, name).map_err(failed(true))?;
        let got = ours
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| failed(true)(format!("loam has no output `{name}`")))?;
        if got.array.shape != want.shape {
            return Err(failed(true)(format!(
                "output `{name}` has shape {:?}, ONNX Runtime's {:?}",
                got.array.shape, want.shape
            )));
        }
        let Data::F32(want) = &want.data else {
            return Err(failed(true)(format!(
                "ONNX Runtime's output `{name}` is not float"
            )));
        };
        for (g, &w) in real_values(got).into_iter().zip(want) {
            hist[bucket(g, f64::from(w), scale)] += 1;
        }
    }
    Ok(float)
}

/// The names of the ops of `model` that compute in f32: every op with a float output but the
/// `Dequantize`s that make the graph's outputs (the QDQ model's outputs are float).
fn float_ops(model: &loam::Model<'_>) -> Result<Vec<String>, String> {
    let outputs: BTreeSet<&str> = io_records(model, true)
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .map(|t| t.name)
        .collect();
    let mut float = Vec::new();
    for op in model.ops() {
        let written: Vec<_> = (0..op.outputs.len())
            .filter_map(|i| op.outputs.get(i))
            .filter_map(|id| model.tensor(usize::from(id)))
            .collect();
        let final_dequantize = op.kind == OpKind::Dequantize as u16
            && written.iter().all(|t| outputs.contains(t.name));
        if !final_dequantize && written.iter().any(|t| t.dtype == loam::DType::F32) {
            float.push(op.name.to_string());
        }
    }
    Ok(float)
}

/// The histogram bucket of an element `got` where ONNX Runtime gives `want`, for an output
/// of quantization step `scale`.
fn bucket(got: f64, want: f64, scale: f64) -> usize {
    if got == want {
        return 0;
    }
    let steps = ((got - want).abs() / scale).round();
    if steps.is_finite() {
        (steps as usize).min(3)
    } else {
        3
    }
}

/// A float input tensor as an array.
fn float_array(t: &Tensor) -> Result<Array, String> {
    if t.datum_type() != DatumType::F32 {
        return Err(format!("an input is {:?}, not float", t.datum_type()));
    }
    let view = t
        .to_plain_array_view::<f32>()
        .map_err(|e| format!("{e:#}"))?;
    Ok(Array {
        shape: t.shape().to_vec(),
        data: Data::F32(view.iter().copied().collect()),
    })
}

/// The quantization step of the graph output `name`: the scale of the `DequantizeLinear` that
/// makes it (the quantizer gives every output one).
fn output_scale(graph: &pb::GraphProto, name: &str) -> Result<f64, String> {
    let node = graph
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == name))
        .filter(|n| n.op_type == "DequantizeLinear")
        .ok_or_else(|| format!("output `{name}` is not made by a DequantizeLinear"))?;
    let scale_name = node.input.get(1).map_or("", String::as_str);
    let proto = graph
        .initializer
        .iter()
        .find(|t| t.name == scale_name)
        .ok_or_else(|| format!("output `{name}`: its scale `{scale_name}` is no initializer"))?;
    let resolver = tract_onnx::data_resolver::default();
    let scale = tract_onnx::tensor::load_tensor(&*resolver, proto, None)
        .and_then(|t| t.cast_to_scalar::<f32>())
        .map_err(|e| format!("output `{name}`: its scale: {e:#}"))?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(format!("output `{name}` has scale {scale}"));
    }
    Ok(f64::from(scale))
}

/// Per suite: cases on the float allow-list, of them quantized, imported by loam, passing.
fn table(
    float_allowed: &BTreeSet<String>,
    cases: &[Case],
    results: &[(Outcome, Histogram)],
    ort_version: &str,
) -> String {
    const COLUMNS: [&str; 5] = ["float", "quantized", "imported", "passing", "all int8"];
    let mut rows: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
    for id in float_allowed {
        let suite = id.split('/').next().unwrap_or("");
        if let Some(suite) = SUITES.iter().find(|s| **s == suite) {
            rows.entry(suite).or_default()[0] += 1;
        }
    }
    for (case, (outcome, _)) in cases.iter().zip(results) {
        let row = rows.entry(case.suite).or_default();
        row[1] += 1;
        match outcome {
            Outcome::Passed { float } => {
                row[2] += 1;
                row[3] += 1;
                row[4] += usize::from(float.is_empty());
            }
            Outcome::Failed { imported: true, .. } => row[2] += 1,
            _ => {}
        }
    }
    let line = |name: &str, cells: Vec<String>| {
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:>10}")).collect();
        format!("{name:<18}{}\n", cells.join(""))
    };
    let mut out = format!(
        "ONNX int8 conformance (QDQ per-channel by onnxruntime {ort_version}; within 1 step of \
         ONNX Runtime on >= {}% of elements)\n",
        MIN_WITHIN_ONE * 100.0
    );
    out.push_str(&line(
        "suite",
        COLUMNS.iter().map(|c| c.to_string()).collect(),
    ));
    let mut total = [0usize; 5];
    for suite in SUITES {
        if let Some(row) = rows.get(suite) {
            out.push_str(&line(suite, row.iter().map(usize::to_string).collect()));
            for (t, r) in total.iter_mut().zip(row) {
                *t += r;
            }
        }
    }
    out.push_str(&line("total", total.iter().map(usize::to_string).collect()));
    out.push_str(
        "float: on allow.txt; quantized: ONNX Runtime's quantizer made a QDQ model with at \
         least one quantized node;\nall int8: passing with no op in f32 in loam's model (the \
         final Dequantize of each output aside)",
    );
    out
}

/// The overall distance histogram in one line.
fn histogram(hist: &Histogram) -> String {
    let all: u64 = hist.iter().sum::<u64>().max(1);
    let cells: Vec<String> = ["0", "1", "2", ">2"]
        .iter()
        .zip(hist)
        .map(|(label, &n)| format!("{label}: {n} ({:.2}%)", 100.0 * n as f64 / all as f64))
        .collect();
    format!(
        "output elements by distance from ONNX Runtime's in quantization steps: {}",
        cells.join(", ")
    )
}

/// `reasons` counted, the most common first.
fn print_reasons(what: &str, reasons: impl Iterator<Item = String>) {
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for reason in reasons {
        *counted.entry(shorten(&reason)).or_default() += 1;
    }
    let n: usize = counted.values().sum();
    if n == 0 {
        return;
    }
    println!("{what}: {n}; most common reasons:");
    let mut sorted: Vec<_> = counted.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (reason, n) in sorted.iter().take(10) {
        println!("  {n:>5}  {reason}");
    }
}

/// allow_int8.txt's header.
const ALLOW_LIST_HEADER: &str = "# ONNX backend test cases (suite/case), quantized by ONNX Runtime's quantizer (QDQ,\n\
     # per-channel, int8), whose loam int8 outputs are within 1 quantization step of ONNX\n\
     # Runtime's on at least 99% of elements; tests/tests/onnx_conformance/int8.rs checks\n\
     # them. Written by `LOAM_CONFORMANCE_WRITE=1 cargo test -p loam-tests --test\n\
     # onnx_conformance` from the passing set. The list may only grow: a listed case that\n\
     # stops passing fails the build.\n";

/// The distance in steps: equal values, rounding noise, whole steps, and non-finite values.
#[test]
fn buckets_count_quantization_steps() {
    assert_eq!(bucket(0.5, 0.5, 0.1), 0);
    assert_eq!(bucket(0.5 + 1e-7, 0.5, 0.1), 0);
    assert_eq!(bucket(0.6, 0.5, 0.1), 1);
    assert_eq!(bucket(0.3, 0.5, 0.1), 2);
    assert_eq!(bucket(-1.0, 0.5, 0.1), 3);
    assert_eq!(bucket(f64::NAN, 0.5, 0.1), 3);
    assert_eq!(bucket(f64::INFINITY, 0.5, 0.1), 3);
}
