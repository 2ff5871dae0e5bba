//! ONNX conformance: the backend test cases of the `onnx` PyPI wheel (suites `node`,
//! `pytorch-converted`, `pytorch-operator` and `simple`), each imported with loam's ONNX
//! importer, run by the runtime's interpreter on the case's own inputs, and checked against
//! the case's expected outputs (rtol 1e-3, atol 1e-5).
//!
//! Most cases use ops or element types loam does not run; their import is refused with the
//! compatibility report, which is the expected outcome and no error. `conformance/allow.txt`
//! names every case that passes: a listed case that fails (import, run or comparison) fails
//! this test, a passing case not listed is only announced. `LOAM_CONFORMANCE_WRITE=1`
//! rewrites the list with the passing set; `LOAM_CONFORMANCE_VERBOSE=1` prints why each
//! refused case was refused.
//!
//! The data: the wheel's `onnx/backend/test/data` (found by asking `python3`), or the folder
//! `LOAM_ONNX_TESTDATA` names, laid out once per onnx version under the target folder by
//! `conformance/prepare.py`: it writes the `node` suite (recent wheels ship only the code that
//! makes it) and converts models of opsets loam does not import (the pytorch suites are
//! opset 6 and 9) with `onnx.version_converter`, as loam's error message tells users to.
//! Node cases pass weights and axes as graph inputs; a model refused for that is tried again
//! with its inputs after the first baked in as initializers (see [`run_set`]).
//! Without the data the test passes with a note, unless `LOAM_REQUIRE_ONNX_TESTDATA=1`
//! (`cargo xtask test` sets it) makes that a failure.
//!
//! The int8 half, the same cases quantized by ONNX Runtime and checked against it, is in
//! [`int8`] (`onnx_conformance/int8.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use loam_tools::model_file::ModelFile;
use loam_tools::npy::{Array, Data};
use loam_tools::onnx::{CompatibilityReport, ImportOptions, import_bytes};
use loam_tools::run::{NamedArray, io_records, real_values, run};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::{DatumType, Tensor};

#[path = "onnx_conformance/int8.rs"]
mod int8;

/// The suites checked, in the order the table prints them.
const SUITES: [&str; 4] = ["node", "pytorch-converted", "pytorch-operator", "simple"];

/// Relative tolerance on each element: the ONNX backend tests' own default.
const RTOL: f64 = 1e-3;
/// Absolute tolerance, for elements near zero.
const ATOL: f64 = 1e-5;

/// What one case came to.
#[derive(Debug)]
enum Outcome {
    /// Every output of every data set within tolerance; `baked` when the inputs after the
    /// first had to be made initializers for loam to import the model (see [`run_set`]).
    Passed { baked: bool },
    /// The importer refused the model (its compatibility report, or another clear refusal
    /// such as an opset outside loam's range): the expected outcome for unsupported ops.
    Refused { report: bool, reason: String },
    /// Imported, but running or comparing went wrong, or something panicked: a bug, in the
    /// importer or the runtime, whenever the case's import succeeded.
    Failed { imported: bool, reason: String },
}

/// One case folder: `<suite>/<name>/model.onnx` with `test_data_set_*`.
struct Case {
    suite: &'static str,
    name: String,
    dir: PathBuf,
    /// Whether `prepare.py` converted the model to an opset loam imports.
    converted: bool,
}

impl Case {
    /// The allow-list's name for the case.
    fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

#[test]
fn onnx_backend_conformance() {
    let require = std::env::var("LOAM_REQUIRE_ONNX_TESTDATA").is_ok_and(|v| v == "1");
    let data = match find_data() {
        Ok(data) => data,
        Err(why) => {
            assert!(
                !require,
                "LOAM_REQUIRE_ONNX_TESTDATA=1 but {why} (cargo xtask setup installs the wheel)"
            );
            println!("skipping the ONNX conformance test: {why}");
            return;
        }
    };
    let started = Instant::now();
    let mut cases = Vec::new();
    for suite in SUITES {
        let dir = data.join(suite);
        if dir.is_dir() {
            cases.extend(list_cases(suite, &dir));
        } else {
            assert!(
                !require,
                "LOAM_REQUIRE_ONNX_TESTDATA=1 but {} is missing",
                dir.display()
            );
            println!("skipping suite `{suite}`: {} is missing", dir.display());
        }
    }
    let outcomes = run_all(&cases);
    let allow_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/allow.txt");
    let allowed = read_allow_list(&allow_path);

    let mut judged = Judged::new(
        &allowed,
        cases.iter().zip(&outcomes).map(|(case, outcome)| {
            let verdict = match outcome {
                Outcome::Passed { .. } => Verdict::Passed,
                Outcome::Refused { reason, .. } => Verdict::Refused(refusal_summary(reason)),
                Outcome::Failed { reason, .. } => Verdict::Failed(reason.clone()),
            };
            (case.id(), verdict)
        }),
    );
    // A listed case whose folder is gone (a renamed case, another wheel version) is a
    // failure too: the list must keep meaning "these pass".
    let present: BTreeSet<String> = cases.iter().map(Case::id).collect();
    let checked_suites: BTreeSet<&str> = cases.iter().map(|c| c.suite).collect();
    for id in &allowed {
        let suite = id.split('/').next().unwrap_or("");
        if checked_suites.contains(suite) && !present.contains(id) {
            judged.failures.push(format!(
                "{id}: listed in allow.txt but not in the test data"
            ));
        }
    }

    println!("{}", table(&cases, &outcomes));
    println!(
        "{} cases in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    print_refusals(&outcomes);
    if std::env::var("LOAM_CONFORMANCE_VERBOSE").is_ok_and(|v| v == "1") {
        for (case, outcome) in cases.iter().zip(&outcomes) {
            if let Outcome::Refused { reason, .. } = outcome {
                println!("refused {}: {}", case.id(), refusal_summary(reason));
            }
        }
    }
    judged.finish(&allow_path, ALLOW_LIST_HEADER, "ONNX conformance");
}

/// A case's result as its allow-list sees it.
enum Verdict {
    Passed,
    /// The importer refused the model, with why.
    Refused(String),
    /// Imported, but wrong, or a panic, with why.
    Failed(String),
}

/// What an allow-list makes of a run's verdicts.
struct Judged {
    /// Listed cases that no longer pass.
    failures: Vec<String>,
    /// Passing cases the list lacks.
    newly_passing: Vec<String>,
    /// Unlisted cases that imported but failed, or panicked.
    wrong_unlisted: Vec<String>,
    /// Every passing case.
    passing: BTreeSet<String>,
}

impl Judged {
    /// Sorts `verdicts` (case id and verdict) against the `allowed` list.
    fn new(
        allowed: &BTreeSet<String>,
        verdicts: impl IntoIterator<Item = (String, Verdict)>,
    ) -> Judged {
        let mut judged = Judged {
            failures: Vec::new(),
            newly_passing: Vec::new(),
            wrong_unlisted: Vec::new(),
            passing: BTreeSet::new(),
        };
        for (id, verdict) in verdicts {
            let listed = allowed.contains(&id);
            match verdict {
                Verdict::Passed => {
                    if !listed {
                        judged.newly_passing.push(id.clone());
                    }
                    judged.passing.insert(id);
                }
                Verdict::Refused(reason) if listed => judged
                    .failures
                    .push(format!("{id}: import failed: {reason}")),
                Verdict::Failed(reason) if listed => {
                    judged.failures.push(format!("{id}: {reason}"))
                }
                Verdict::Failed(reason) => judged.wrong_unlisted.push(format!("{id}: {reason}")),
                Verdict::Refused(_) => {}
            }
        }
        judged
    }

    /// Prints the newly passing and the wrong unlisted cases, rewrites the list at
    /// `allow_path` (under `header`) with `LOAM_CONFORMANCE_WRITE=1`, and fails on any listed
    /// case that no longer passes.
    fn finish(self, allow_path: &Path, header: &str, what: &str) {
        let list = allow_path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for id in &self.newly_passing {
            println!("newly passing, add to {list}: {id}");
        }
        if !self.wrong_unlisted.is_empty() {
            // Not failures (the cases are not listed), but an import that succeeds and
            // computes the wrong thing, or a panic, is a bug to fix: the importer should have
            // refused the model with its report.
            println!(
                "imported but not passing, or panicked ({}; not on the allow-list, so not \
                 failing the test):",
                self.wrong_unlisted.len()
            );
            for line in &self.wrong_unlisted {
                println!("  {line}");
            }
        }
        if std::env::var("LOAM_CONFORMANCE_WRITE").is_ok_and(|v| v == "1") {
            write_allow_list(allow_path, header, &self.passing);
            println!(
                "wrote {} ({} cases)",
                allow_path.display(),
                self.passing.len()
            );
        }
        assert!(
            self.failures.is_empty(),
            "{} allow-listed {what} case(s) no longer pass:\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

/// The folder holding the suites, laid out by `conformance/prepare.py`, or why there is none;
/// found (and laid out) once for both tests of this file, which run at the same time.
fn find_data() -> Result<PathBuf, String> {
    static DATA: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DATA.get_or_init(find_data_once).clone()
}

fn find_data_once() -> Result<PathBuf, String> {
    let package = onnx_package();
    let source = match std::env::var_os("LOAM_ONNX_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => package.as_ref()?.1.join("backend/test/data"),
    };
    if !source.is_dir() {
        return Err(format!(
            "there is no ONNX test data at {}",
            source.display()
        ));
    }
    let Ok((version, _)) = package else {
        // A data folder given without Python's onnx to prepare it: used as it is (no `node`
        // suite unless it has one, old opsets refused).
        println!(
            "python3 has no onnx package: using {} unprepared",
            source.display()
        );
        return Ok(source);
    };
    prepared(&source, &version)
}

/// The installed `onnx` Python package's version and folder.
fn onnx_package() -> Result<(String, PathBuf), String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(onnx.__version__); print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .map_err(|e| format!("python3 does not run ({e})"))?;
    if !out.status.success() {
        return Err("python3 has no `onnx` package (pip install onnx)".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(version), Some(dir)) => Ok((version.trim().into(), PathBuf::from(dir.trim()))),
        _ => Err(format!(
            "python3 printed {text:?} for onnx's version and folder"
        )),
    }
}

/// `source` laid out by `conformance/prepare.py` (the `node` suite written, opsets loam does
/// not import converted) under the target folder, once per onnx version and source: it takes
/// about 20 s, the test itself a few.
fn prepared(source: &Path, version: &str) -> Result<PathBuf, String> {
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        h.finish()
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("onnx-conformance-{version}-{key:016x}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    // Written beside and renamed, so an interrupted run never leaves half a layout to reuse.
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/prepare.py");
    println!("preparing the ONNX test data in {}", dir.display());
    let out = Command::new("python3")
        .arg(&script)
        .arg(source)
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
    Ok(dir)
}

/// The case folders of a suite, sorted by name.
fn list_cases(suite: &'static str, dir: &Path) -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .map(|dir| Case {
            suite,
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            converted: dir.join("converted_from").is_file(),
            dir,
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Runs every case on all cores; outcomes in the order of `cases`.
fn run_all(cases: &[Case]) -> Vec<Outcome> {
    run_parallel(cases, run_case)
}

thread_local! {
    /// Whether panics on this thread are caught and reported by [`run_parallel`], so the
    /// panic hook keeps quiet about them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `f` of every item on all cores; results in the order of `items`. A panic inside `f` is
/// for `f` to catch and report with the case's name: the hook, installed once for the
/// process (the tests of this file run at the same time), prints nothing for these threads
/// where the default one would print every panic, interleaved, while they run.
fn run_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0..items.len()).map(|_| None).collect::<Vec<_>>());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                QUIET.with(|q| q.set(true));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    results.lock().unwrap()[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// One case: each data set imported (with its input shapes), run and compared.
fn run_case(case: &Case) -> Outcome {
    let model_bytes = match std::fs::read(case.dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Failed {
                imported: false,
                reason: format!("reading model.onnx: {e}"),
            };
        }
    };
    let sets = data_sets(&case.dir);
    if sets.is_empty() {
        return Outcome::Refused {
            report: false,
            reason: "the case has no test data set".into(),
        };
    }
    let mut baked = false;
    for set in &sets {
        // A panic in the import or the run is a bug either way (unsupported or malformed
        // input must give an error); it counts as not imported.
        let outcome = catch_unwind(AssertUnwindSafe(|| run_set(&model_bytes, &case.dir, set)))
            .unwrap_or_else(|panic| {
                Err(Outcome::Failed {
                    imported: false,
                    reason: format!("panicked: {}", panic_message(&*panic)),
                })
            });
        match outcome {
            Ok(b) => baked |= b,
            Err(outcome) => return outcome,
        }
    }
    Outcome::Passed { baked }
}

/// The `test_data_set_*` folders of a case, in order.
fn data_sets(dir: &Path) -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort_by_key(|p| numbered(p, "test_data_set_"));
    sets
}

/// The number after `prefix` in a file name (`input_12.pb` -> 12), for numeric ordering.
fn numbered(path: &Path, prefix: &str) -> usize {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The `prefix_K.pb` tensors of a data set, by K.
fn read_tensors(set: &Path, prefix: &str) -> Result<Vec<(pb::TensorProto, Tensor)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(set)
        .map_err(|e| format!("reading {}: {e}", set.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| numbered(p, prefix) != usize::MAX)
        .collect();
    files.sort_by_key(|p| numbered(p, prefix));
    files
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let proto = pb::TensorProto::decode(&bytes[..])
                .map_err(|e| format!("{} is not a TensorProto: {e}", file.display()))?;
            let resolver = tract_onnx::data_resolver::default();
            let tensor = tract_onnx::tensor::load_tensor(&*resolver, &proto, None)
                .map_err(|e| format!("{}: {e:#}", file.display()))?;
            Ok((proto, tensor))
        })
        .collect()
}

/// One data set: whether its inputs after the first had to be baked in, or `Err` with the
/// outcome when anything is not as expected.
fn run_set(model_bytes: &[u8], dir: &Path, set: &Path) -> Result<bool, Outcome> {
    let failed = |imported: bool| move |reason: String| Outcome::Failed { imported, reason };
    // Input data tract cannot read (bfloat16, float8, int4, sequences) is of a kind no loam
    // model takes either.
    let inputs = read_tensors(set, "input_").map_err(|reason| Outcome::Refused {
        report: false,
        reason: format!("input data loam cannot take: {reason}"),
    })?;
    let proto = pb::ModelProto::decode(model_bytes).map_err(|e| Outcome::Refused {
        report: false,
        reason: format!("model.onnx does not decode: {e}"),
    })?;
    let graph = proto.graph.clone().unwrap_or_default();
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    // The K-th input file feeds the K-th graph input, as in ONNX's own runner.
    let fed: Vec<(&str, &(pb::TensorProto, Tensor))> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !initializers.contains(n))
        .zip(&inputs)
        .collect();
    let output_names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();

    let refused = |e: anyhow::Error| Outcome::Refused {
        report: e.downcast_ref::<CompatibilityReport>().is_some(),
        reason: format!("{e:#}"),
    };
    let (imported, baked, fed) = match import_fed(model_bytes, dir, &fed) {
        Ok(imported) => (imported, false, fed),
        // The node suite passes weights, biases, axes and shapes as graph inputs, which loam
        // (like every microcontroller runtime) needs constant. A model the plain import
        // refuses is tried once more with its inputs after the first baked in as
        // initializers holding the data set's values: the same computation on the same data,
        // in the form a deployed model has.
        Err(first) if fed.len() > 1 => {
            let (data, constants) = fed.split_at(1);
            let baked_model = bake(&proto, constants);
            match import_fed(&baked_model, dir, data) {
                Ok(imported) => (imported, true, data.to_vec()),
                Err(_) => return Err(refused(first)),
            }
        }
        Err(e) => return Err(refused(e)),
    };
    let file = ModelFile::from_bytes("conformance case", &imported.built.bytes)
        .map_err(|e| failed(true)(format!("the imported model does not load: {e:#}")))?;
    let model = file.model().map_err(|e| failed(true)(format!("{e:#}")))?;

    let by_name: HashMap<&str, &Tensor> = fed.iter().map(|(n, (_, t))| (*n, t)).collect();
    let mut arrays = Vec::new();
    for record in io_records(&model, false).map_err(|e| failed(true)(format!("{e:#}")))? {
        let tensor = by_name.get(record.name).ok_or_else(|| {
            failed(true)(format!("the model's input `{}` has no data", record.name))
        })?;
        if tensor.datum_type() != DatumType::F32 {
            return Err(failed(true)(format!(
                "input `{}` is {:?} but the model imported as float",
                record.name,
                tensor.datum_type()
            )));
        }
        arrays.push(Array {
            shape: tensor.shape().to_vec(),
            data: Data::F32(
                tensor
                    .to_plain_array_view::<f32>()
                    .map_err(|e| failed(true)(format!("{e:#}")))?
                    .iter()
                    .copied()
                    .collect(),
            ),
        });
    }
    let outputs = run(&file, &arrays).map_err(|e| failed(true)(format!("run: {e:#}")))?;
    let expected: Vec<Tensor> = read_tensors(set, "output_")
        .map_err(failed(true))?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if outputs.len() != expected.len() {
        return Err(failed(true)(format!(
            "{} output(s), expected {}",
            outputs.len(),
            expected.len()
        )));
    }
    for (k, want) in expected.iter().enumerate() {
        let name = output_names.get(k).copied().unwrap_or("");
        let got = outputs
            .iter()
            .find(|o| o.name == name)
            .unwrap_or(&outputs[k]);
        compare(
            name,
            &got.array.shape,
            &values_as(got, want.datum_type()),
            want,
        )
        .map_err(failed(true))?;
    }
    Ok(baked)
}

/// Imports `model` with the graph inputs `fed` fixed to their data's shapes, as a user
/// passes them with `--input-shape`.
fn import_fed(
    model: &[u8],
    dir: &Path,
    fed: &[(&str, &(pb::TensorProto, Tensor))],
) -> anyhow::Result<loam_tools::onnx::Imported> {
    let options = ImportOptions {
        input_shapes: fed
            .iter()
            .map(|(name, (_, t))| (name.to_string(), t.shape().to_vec()))
            .collect(),
        ..ImportOptions::default()
    };
    import_bytes(model, dir.to_str(), &options)
}

/// `model` with the graph inputs `constants` turned into initializers holding their data.
fn bake(model: &pb::ModelProto, constants: &[(&str, &(pb::TensorProto, Tensor))]) -> Vec<u8> {
    let mut model = model.clone();
    let graph = model.graph.get_or_insert_default();
    graph
        .input
        .retain(|i| !constants.iter().any(|(name, _)| *name == i.name));
    for (name, (proto, _)) in constants {
        graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            ..proto.clone()
        });
    }
    model.encode_to_vec()
}

/// A loam output as numbers comparable with an expected tensor of type `want`: an int8
/// output where ONNX gives the quantized integers (a graph ending in QuantizeLinear) as its
/// integers, shifted back by 128 where ONNX's are uint8 (loam keeps uint8 as int8 with the
/// zero point moved by 128); anything else as real values.
fn values_as(got: &NamedArray, want: DatumType) -> Vec<f64> {
    match (&got.array.data, want) {
        (Data::I8(q), DatumType::I8) => q.iter().map(|&v| f64::from(v)).collect(),
        (Data::I8(q), DatumType::U8) => q.iter().map(|&v| f64::from(v) + 128.0).collect(),
        _ => real_values(got),
    }
}

/// Checks one output against the expected tensor: same shape, every element within
/// `ATOL + RTOL * |expected|` (NaN matching NaN, infinities matching exactly).
fn compare(name: &str, shape: &[usize], got: &[f64], want: &Tensor) -> Result<(), String> {
    if shape != want.shape() {
        return Err(format!(
            "output `{name}` has shape {shape:?}, expected {:?}",
            want.shape()
        ));
    }
    let want = want.cast_to::<f64>().map_err(|e| {
        format!(
            "output `{name}`: expected values of {:?}: {e}",
            want.datum_type()
        )
    })?;
    let want: Vec<f64> = want
        .to_plain_array_view::<f64>()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .copied()
        .collect();
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= ATOL + RTOL * w.abs()
        };
        if !ok {
            bad += 1;
            let excess = (g - w).abs() / (ATOL + RTOL * w.abs());
            if worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "output `{name}`: {bad} of {} elements off; element {i} is {}, expected {}",
            want.len(),
            got[i],
            want[i]
        )),
    }
}

/// A caught panic's message.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Per suite: cases, of them converted to another opset, imported, passing, and of the
/// passing ones those that needed their inputs after the first baked in.
fn table(cases: &[Case], outcomes: &[Outcome]) -> String {
    const COLUMNS: [&str; 5] = ["cases", "converted", "imported", "passing", "baked"];
    let mut rows: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
    for (case, outcome) in cases.iter().zip(outcomes) {
        let row = rows.entry(case.suite).or_default();
        row[0] += 1;
        row[1] += usize::from(case.converted);
        match outcome {
            Outcome::Passed { baked } => {
                row[2] += 1;
                row[3] += 1;
                row[4] += usize::from(*baked);
            }
            Outcome::Failed { imported: true, .. } => row[2] += 1,
            _ => {}
        }
    }
    let line = |name: &str, cells: Vec<String>| {
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:>10}")).collect();
        format!("{name:<18}{}\n", cells.join(""))
    };
    let mut out = format!("ONNX conformance (rtol {RTOL:e}, atol {ATOL:e})\n");
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
        "converted: opset changed by onnx.version_converter to one loam imports; baked: \
         passing once the inputs after the first were made initializers",
    );
    out
}

/// How many imports were refused, and why, in a few lines: the compatibility report's
/// problems counted by what they say (the node name left out), other refusals by their text.
fn print_refusals(outcomes: &[Outcome]) {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut reports = 0;
    let mut other = 0;
    for outcome in outcomes {
        let Outcome::Refused { report, reason } = outcome else {
            continue;
        };
        if *report {
            reports += 1;
            // "  - node `n` (Op): what" -> "Op: what"
            for line in reason
                .lines()
                .filter_map(|l| l.trim().strip_prefix("- node `"))
            {
                let problem = line.split_once("` (").map_or(line, |(_, rest)| rest);
                let problem = problem.replacen("): ", ": ", 1);
                *reasons.entry(shorten(&problem)).or_default() += 1;
            }
        } else {
            other += 1;
            let text = reason.rsplit(": ").next().unwrap_or(reason);
            *reasons.entry(shorten(text)).or_default() += 1;
        }
    }
    println!(
        "refused: {reports} with a compatibility report, {other} otherwise; most common reasons:"
    );
    let mut sorted: Vec<_> = reasons.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (reason, n) in sorted.iter().take(15) {
        println!("  {n:>5}  {reason}");
    }
}

/// A refusal in one line: the compatibility report's problems, or the error's last cause.
fn refusal_summary(reason: &str) -> String {
    let problems: Vec<&str> = reason
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .collect();
    if problems.is_empty() {
        reason.rsplit(": ").next().unwrap_or(reason).to_string()
    } else {
        problems.join("; ")
    }
}

/// The first 100 characters of a reason's first line.
fn shorten(text: &str) -> String {
    first_line(text).chars().take(100).collect()
}

/// The allow-list's case names (`suite/case`); `#` starts a comment.
fn read_allow_list(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// allow.txt's header.
const ALLOW_LIST_HEADER: &str = "# ONNX backend test cases (suite/case) that loam imports and runs within rtol 1e-3,\n\
     # atol 1e-5 of the expected outputs; tests/tests/onnx_conformance.rs checks them.\n\
     # Written by `LOAM_CONFORMANCE_WRITE=1 cargo test -p loam-tests --test onnx_conformance`\n\
     # from the passing set. The list may only grow: a listed case that stops passing\n\
     # fails the build.\n";

/// Writes `header` and the `passing` case ids, one per line, to `path`.
fn write_allow_list(path: &Path, header: &str, passing: &BTreeSet<String>) {
    let mut text = String::from(header);
    for id in passing {
        text.push_str(id);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The comparison itself: a conformance run where everything passes proves little unless a
/// wrong element, a wrong shape and a NaN where a number belongs are caught.
#[test]
fn comparison_catches_wrong_outputs() {
    let want = Tensor::from_shape(&[2, 2], &[1.0f32, -2.0, 0.0, f32::NAN]).unwrap();
    let close = [1.0005, -2.001, 5e-6, f64::NAN];
    compare("y", &[2, 2], &close, &want).unwrap();
    let off = [1.0, -2.01, 0.0, f64::NAN];
    let err = compare("y", &[2, 2], &off, &want).unwrap_err();
    assert!(err.contains("1 of 4 elements off; element 1"), "{err}");
    assert!(compare("y", &[4], &close, &want).is_err());
    assert!(compare("y", &[2, 2], &[1.0, -2.0, 0.0, 0.0], &want).is_err());
}
