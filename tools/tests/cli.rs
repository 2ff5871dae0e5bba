//! The `loam` binary as a person runs it.

use std::process::Command;

fn loam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loam"))
        .args(args)
        .output()
        .expect("the loam binary runs")
}

#[test]
fn selftest_passes_and_prints_every_check() {
    let out = loam(&["selftest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("fixed_point.divide_by_pot"));
    assert!(stdout.contains(&format!("golden {:#010x}", loam::selftest::GOLDEN_DIGEST)));
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let out = loam(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Template -> run -> bench, the way a person sizes and tries a model before the importer
/// exists: the int8 digits MLP runs on a float NPY batch (quantized on the way in) and
/// writes its outputs as NPY.
#[test]
fn a_template_runs_on_npy_inputs_and_benchmarks() {
    use loam_tools::npy::{self, Array, Data};

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("digits.loam");
    let model_s = model.to_str().unwrap();
    let out = loam(&["template", "digits-mlp", "--int8", "-o", model_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("arena"), "{}", text(&out));

    // Three samples with the model's [1, 64] shape stacked: [3, 64].
    let input = dir.path().join("x.npy");
    let values: Vec<f32> = (0..3 * 64).map(|i| ((i % 17) as f32 / 8.0) - 1.0).collect();
    npy::write(
        &input,
        &Array {
            shape: vec![3, 64],
            data: Data::F32(values),
        },
    )
    .unwrap();
    let output = dir.path().join("y.npy");
    let out = loam(&[
        "run",
        model_s,
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let y = npy::read(&output).unwrap();
    assert_eq!(y.shape, vec![3, 10]);
    assert!(matches!(y.data, Data::I8(_)));

    let out = loam(&[
        "bench",
        model_s,
        "--iterations",
        "20",
        "--warmup",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["median_us"].as_f64().unwrap() > 0.0);
    assert!(json["p90_us"].as_f64().unwrap() >= json["median_us"].as_f64().unwrap());
    assert_eq!(json["ops"].as_array().unwrap().len(), 4);
}

/// Bad input is a clear error naming the file, and no output file appears.
#[test]
fn bad_inputs_name_the_file_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.loam");
    std::fs::write(&bogus, b"LOAM but not really a model").unwrap();
    let output = dir.path().join("y.npy");
    let out = loam(&[
        "run",
        bogus.to_str().unwrap(),
        "-i",
        "missing.npy",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("bogus.loam"), "{}", text(&out));
    assert!(!output.exists());

    let model = dir.path().join("m.loam");
    assert!(
        loam(&["template", "digits-mlp", "-o", model.to_str().unwrap()])
            .status
            .success()
    );
    let wrong = dir.path().join("wrong.npy");
    loam_tools::npy::write(
        &wrong,
        &loam_tools::npy::Array {
            shape: vec![1, 63],
            data: loam_tools::npy::Data::F32(vec![0.0; 63]),
        },
    )
    .unwrap();
    let out = loam(&[
        "run",
        model.to_str().unwrap(),
        "-i",
        wrong.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("input `input` has shape [1, 63]"),
        "{}",
        text(&out)
    );
    assert!(!output.exists());
}

/// Export to ONNX, verify against ONNX Runtime, and benchmark side by side, as a person checks
/// a model before trusting it.
#[test]
fn export_verify_and_bench_against_peers() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("ds.loam");
    let model_s = model.to_str().unwrap();
    assert!(
        loam(&["template", "ds-cnn", "--int8", "-o", model_s])
            .status
            .success()
    );

    let onnx = dir.path().join("ds.onnx");
    let out = loam(&["export", model_s, "-o", onnx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&onnx).unwrap();
    assert!(bytes.len() > 30_000, "the weights are in the file");

    let out = loam(&[
        "verify",
        model_s,
        "--against",
        "onnxruntime",
        "--samples",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("LSB histogram"), "{}", text(&out));

    // A tolerance nobody can meet fails with a non-zero exit and says which output.
    let f32_model = dir.path().join("ds-f32.loam");
    assert!(
        loam(&["template", "ds-cnn", "-o", f32_model.to_str().unwrap()])
            .status
            .success()
    );
    let out = loam(&[
        "verify",
        f32_model.to_str().unwrap(),
        "--against",
        "tract",
        "--samples",
        "2",
        "--atol",
        "0",
        "--rtol",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("softmax"), "{}", text(&out));

    let out = loam(&[
        "bench",
        model_s,
        "--iterations",
        "5",
        "--warmup",
        "1",
        "--vs",
        "onnxruntime,tract",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let peers = json["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    for p in peers {
        assert!(p["median_us"].as_f64().unwrap() > 0.0);
    }

    // An unknown format is refused before anything is written.
    let txt = dir.path().join("ds.txt");
    let out = loam(&["export", model_s, "-o", txt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("extension"), "{}", text(&out));
    assert!(!txt.exists());
}

/// A PyTorch export imported, then checked against ONNX Runtime running the original file;
/// a model with an unsupported op gets the report and no output file.
#[test]
fn import_then_verify_against_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/onnx");
    let onnx = format!("{data}/pytorch-cnn.qdq-int8.onnx");
    let model = dir.path().join("cnn.loam");
    let model = model.to_str().unwrap();
    let out = loam(&[
        "import",
        &onnx,
        "-o",
        model,
        "--input-shape",
        "input=1,3,32,32",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("input `input` [1, 3, 32, 32]"),
        "{}",
        text(&out)
    );
    // One step of the output's quantization (1/255), since ONNX Runtime requantizes in float.
    let out = loam(&[
        "verify",
        model,
        "--against",
        "onnxruntime",
        "--reference",
        &onnx,
        "--atol",
        "0.00393",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let bad = dir.path().join("bad.onnx");
    let mut bytes = std::fs::read(format!("{data}/pytorch-cnn.onnx")).unwrap();
    // Rename every MaxPool (same length, so the protobuf stays valid) to an op loam lacks.
    let needle = b"MaxPool";
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        bytes[i + at..i + at + needle.len()].copy_from_slice(b"LpPool_");
        i += at + needle.len();
    }
    std::fs::write(&bad, &bytes).unwrap();
    let target = dir.path().join("bad.loam");
    let out = loam(&[
        "import",
        bad.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`LpPool_` is not an op loam runs"),
        "{}",
        text(&out)
    );
    assert!(!target.exists(), "a failed import left a file");
}

/// Export to firmware sources and build them as a firmware project would: the C pair with
/// gcc (strict warnings), the Rust module in a crate depending on the runtime. Both must see
/// the file's exact bytes, 16-byte aligned, and the plan's arena size as a constant.
#[test]
fn export_to_c_and_rust_sources_that_compile_and_embed_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("digits.loam");
    let model_s = model.to_str().unwrap();
    assert!(
        loam(&["template", "digits-mlp", "--int8", "-o", model_s])
            .status
            .success()
    );
    let file = std::fs::read(&model).unwrap();
    let arena = loam::format::arena_size(&file);
    assert!(arena > 0);

    let header = dir.path().join("digits.h");
    let out = loam(&["export", model_s, "-o", header.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{arena} bytes of arena")),
        "{}",
        text(&out)
    );
    let main_c = dir.path().join("main.c");
    std::fs::write(
        &main_c,
        r#"#include <stdio.h>
#include "digits.h"
int main(int argc, char **argv) {
    if ((uintptr_t)digits_model % DIGITS_ARENA_ALIGN != 0) return 2;
    static uint8_t arena[DIGITS_ARENA_SIZE];
    (void)arena;
    FILE *f = fopen(argv[argc - 1], "wb");
    fwrite(digits_model, 1, sizeof digits_model, f);
    fclose(f);
    printf("%u\n", (unsigned)DIGITS_ARENA_SIZE);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("embed");
    let gcc = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(&exe)
        .arg(&main_c)
        .arg(dir.path().join("digits.c"))
        .output()
        .expect("gcc runs");
    assert!(gcc.status.success(), "{}", text(&gcc));
    let copy = dir.path().join("copy.loam");
    let run = Command::new(&exe).arg(&copy).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        arena.to_string()
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        file,
        "the C array holds the file's bytes"
    );

    let krate = dir.path().join("firmware");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let module = krate.join("src/model.rs");
    let out = loam(&["export", model_s, "-o", module.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(krate.join("src/model.loam")).unwrap(), file);
    let runtime = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"firmware\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nloam = {{ path = {:?} }}\n\n[workspace]\n",
            runtime.canonicalize().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "mod model;\n\
         fn main() {\n\
         \x20   let m = loam::Model::from_bytes(model::MODEL).expect(\"loads\");\n\
         \x20   assert_eq!(m.arena_size(), model::ARENA_SIZE);\n\
         \x20   assert_eq!(model::MODEL.as_ptr() as usize % 16, 0);\n\
         \x20   static mut ARENA: model::Arena = model::Arena::new();\n\
         \x20   let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };\n\
         \x20   let mut it = loam::Interpreter::new(&m, arena).expect(\"arena fits\");\n\
         \x20   it.invoke().expect(\"runs\");\n\
         \x20   println!(\"{}\", model::ARENA_SIZE);\n\
         }\n",
    )
    .unwrap();
    // Shares a target folder across runs so the runtime compiles once; offline, since every
    // dependency is already in the local registry from building this workspace.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sources-check");
    let cargo = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--offline", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(cargo.status.success(), "{}", text(&cargo));
    assert_eq!(
        String::from_utf8_lossy(&cargo.stdout).trim(),
        arena.to_string()
    );
}

/// Fine-tuning on the host with the on-device trainer: an untrained int8 digits MLP learns
/// ten noisy prototypes through its last two layers, the checkpoint is written and resumed,
/// and bad labels get a clear message.
#[test]
fn finetune_learns_reports_ram_and_resumes_from_its_checkpoint() {
    use loam_tools::npy::{self, Array, Data};

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("digits.loam");
    let model_s = model.to_str().unwrap();
    assert!(
        loam(&["template", "digits-mlp", "--int8", "-o", model_s])
            .status
            .success()
    );
    let (data, labels) = prototype_digits(dir.path());
    let n = 600;
    let checkpoint = dir.path().join("digits.ckpt");
    let args = [
        "finetune",
        model_s,
        "--data",
        data.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--layers",
        "2",
        "--lr",
        "0.01",
        "--epochs",
        "4",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ];
    let out = loam(&args);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let accuracy = |line: &str| -> f32 {
        let at = line.find("accuracy ").unwrap() + "accuracy ".len();
        line[at..]
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = accuracy(report.lines().find(|l| l.starts_with("before")).unwrap());
    let after = accuracy(report.lines().find(|l| l.starts_with("epoch   4")).unwrap());
    assert!(before < 40.0 && after > 90.0, "{report}");
    assert!(report.contains("RAM: arena"), "{report}");
    assert!(report.contains("240 updates"), "{report}");
    assert!(checkpoint.exists());

    // The learning comes home: the diff names both trained layers, and the exported model
    // (int8 requantized) classifies the data as the fine-tuned head did.
    let ckpt_s = checkpoint.to_str().unwrap();
    let out = loam(&["checkpoint", "diff", model_s, ckpt_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).lines().count(), 4, "{}", text(&out));
    let tuned = dir.path().join("tuned.loam");
    let out = loam(&[
        "checkpoint",
        "export",
        model_s,
        ckpt_s,
        "-o",
        tuned.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let accuracy_of = |model: &std::path::Path| -> f32 {
        let probs = dir.path().join("probs.npy");
        let out = loam(&[
            "run",
            model.to_str().unwrap(),
            "-i",
            data.to_str().unwrap(),
            "-o",
            probs.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let Data::I8(p) = npy::read(&probs).unwrap().data else {
            panic!("int8 probabilities")
        };
        let correct = p
            .chunks(10)
            .enumerate()
            .filter(|(i, row)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by_key(|(k, v)| (**v, std::cmp::Reverse(*k)));
                best.unwrap().0 == i % 10
            })
            .count();
        100.0 * correct as f32 / n as f32
    };
    let (original, exported) = (accuracy_of(&model), accuracy_of(&tuned));
    assert!(
        original < 40.0 && exported > 90.0,
        "{original}% -> {exported}%"
    );

    // Resuming continues from the saved updates.
    let out = loam(&args);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("resumed from checkpoint"), "{report}");
    assert!(report.contains("480 updates"), "{report}");

    // A different head cannot take that checkpoint.
    let mut other = args.to_vec();
    other[7] = "1";
    let out = loam(&other);
    assert!(!out.status.success());
    assert!(text(&out).contains("digits.ckpt"), "{}", text(&out));

    let short = dir.path().join("short.npy");
    npy::write(
        &short,
        &Array {
            shape: vec![5],
            data: Data::I32(vec![0; 5]),
        },
    )
    .unwrap();
    let mut bad = args.to_vec();
    bad[5] = short.to_str().unwrap();
    let out = loam(&bad);
    assert!(!out.status.success());
    assert!(text(&out).contains("600 samples"), "{}", text(&out));
}

/// The lifecycle on the bundled digits project, as its README tells a person to run it:
/// inspect the data, train (the shipped config: CNN, 30 epochs), then re-score the run.
/// The int8 model must reach the model card's bar of 97% on the held-out digits.
#[test]
fn digits_project_trains_evaluates_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("digits");
    let out = loam(&["init", project.to_str().unwrap(), "--example", "digits"]);
    assert!(out.status.success(), "{}", text(&out));
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/loam.toml"),
    )
    .unwrap();
    let toml = project.join("loam.toml");
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), shipped);
    let toml = toml.to_str().unwrap();

    let out = loam(&["data", "inspect", "--project", toml]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1797 rows"), "{}", text(&out));

    let out = loam(&["train", "--project", toml]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let run = project.join("runs/digits-001");
    for file in [
        "loam.toml",
        "metrics.json",
        "model-f32.loam",
        "model.onnx",
        "model.loam",
        "preprocessing.json",
        "split.json",
        "curves.png",
        "curves.svg",
        "confusion.png",
        "confusion.svg",
        "report.html",
    ] {
        assert!(
            run.join(file).is_file(),
            "{file} missing from the run folder\n{log}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(project.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("digits-001")]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let int8 = metrics["int8"]["accuracy"].as_f64().unwrap();
    let float = metrics["float"]["accuracy"].as_f64().unwrap();
    assert!(int8 >= 0.97, "int8 accuracy {int8}\n{log}");
    assert!((float - int8).abs() <= 0.01, "float {float} vs int8 {int8}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("data:image/png;base64,"));
    // The trained model carries its preprocessing and drift statistics for the device.
    let bytes = std::fs::read(run.join("model.loam")).unwrap();
    let aligned = loam::format::AlignedBytes::new(&bytes);
    let model = loam::Model::from_bytes(&aligned).unwrap();
    let constant = |name: &str| model.constant(name).map(|c| c.values().count());
    assert_eq!(constant("preprocess.scale"), Some(64));
    assert_eq!(constant("drift.input.mean"), Some(64));

    let out = loam(&["eval", "--project", toml]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{int8:.4}")), "{}", text(&out));

    // Re-quantize with the least-error ranges, then export for firmware: the lifecycle's end.
    let out = loam(&["quantize", "--project", toml, "--calibration", "mse"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("per-layer SQNR") && log.contains("conv1"),
        "{log}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["quantization"]["calibration"]["method"], "mse");
    let requantized = metrics["int8"]["accuracy"].as_f64().unwrap();
    assert!(
        requantized >= 0.97,
        "int8 accuracy after loam quantize: {requantized}"
    );
    let header = dir.path().join("digits.h");
    // Without a model, export takes the latest run's int8 model.
    let out = loam(&["export", "--project", toml, "-o", header.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read_to_string(&header)
            .unwrap()
            .contains("ARENA_SIZE")
    );
    assert!(
        text(&out).contains("digits-001"),
        "export names the run it took the model from: {}",
        text(&out)
    );
}

/// The lifecycle on the bundled keyword clips, shortened to stay quick in a debug build
/// (one epoch of a small CNN, no augmented copies): WAV clips in, a model out that carries
/// the audio front end for the device, scored, re-quantized and exported.
#[test]
fn keywords_project_runs_from_clips_to_firmware_sources() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("keywords");
    let out = loam(&["init", project.to_str().unwrap(), "--example", "keywords"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(project.join("data/yes").is_dir());
    assert!(project.join("data/testing_list.txt").is_file());
    let toml = project.join("loam.toml");
    let shipped = std::fs::read_to_string(&toml).unwrap();
    let quick = shipped
        .replace("copies = 4", "copies = 0")
        .replace("epochs = 60", "epochs = 1")
        .replace(
            "template = \"ds-cnn\"",
            "layers = [{ type = \"conv\", filters = 4, kernel = [5, 5], stride = 2 }, \
             { type = \"global-avg-pool\" }]",
        );
    assert_ne!(quick, shipped);
    std::fs::write(&toml, quick).unwrap();
    let toml = toml.to_str().unwrap();
    let out = loam(&["train", "--project", toml]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("rows: 936 train, 104 validation, 104 test"),
        "{log}"
    );
    // The per-class table names the classes (the folders), not their numbers.
    assert!(log.lines().any(|l| l.starts_with("_unknown_ ")), "{log}");
    let run = project.join("runs/keywords-001");
    let bytes = std::fs::read(run.join("model.loam")).unwrap();
    let aligned = loam::format::AlignedBytes::new(&bytes);
    let model = loam::Model::from_bytes(&aligned).unwrap();
    let front_end = loam::audio::FeatureConfig::from_model(&model)
        .unwrap()
        .unwrap();
    assert_eq!(front_end.window, 480);
    assert_eq!(front_end.hop, 320);
    for args in [
        vec!["eval", "--project", toml],
        vec!["quantize", "--project", toml],
    ] {
        let out = loam(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let header = dir.path().join("keywords.h");
    let out = loam(&["export", "--project", toml, "-o", header.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read_to_string(&header)
            .unwrap()
            .contains("ARENA_SIZE")
    );
}

/// `loam tune` on the digits project (MLP, 2 epochs): `--trials` overrides the file, the
/// table comes best first, the results land in runs/tune-001, and the best settings file
/// trains. A typo in [tune.space] is refused naming the key.
#[test]
fn tune_ranks_trials_writes_results_and_a_best_file_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let out = loam(&["init", dir.path().to_str().unwrap(), "--example", "digits"]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = dir.path().join("loam.toml");
    let shipped = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("template = \"cnn-small\"", "template = \"mlp\"")
        .replace("epochs = 30", "epochs = 2");
    std::fs::write(
        &toml,
        format!(
            "{shipped}\n[tune]\ntrials = 5\nseed = 1\n[tune.space]\n\
             learning_rate = {{ log_uniform = [1e-4, 1e-2] }}\nbatch_size = {{ choice = [32, 64] }}\n"
        ),
    )
    .unwrap();
    let toml_s = toml.to_str().unwrap();
    let out = loam(&["tune", "--project", toml_s, "--trials", "2"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let table: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("rank"))
        .take(3)
        .collect();
    assert_eq!(table.len(), 3, "{log}");
    assert!(
        table[0].contains("learning_rate") && table[0].contains("validation loss"),
        "{log}"
    );
    let score = |row: &str| -> f64 { row.split_whitespace().nth(4).unwrap().parse().unwrap() };
    assert!(
        score(table[1]) <= score(table[2]),
        "lowest loss first\n{log}"
    );
    assert!(log.contains("2 of 2 trials"), "{log}");
    let run = dir.path().join("runs/tune-001");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["trials"].as_array().map(Vec::len), Some(2));
    assert!(run.join("results.csv").is_file());
    let best = dir.path().join("loam.best.toml");
    assert!(log.contains("loam.best.toml"), "{log}");
    let out = loam(&["train", "--project", best.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("runs/digits-001/model.loam").is_file());

    std::fs::write(
        &toml,
        format!("{shipped}\n[tune]\n[tune.space]\nmomentum = {{ choice = [0.9] }}\n"),
    )
    .unwrap();
    let out = loam(&["tune", "--project", toml_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("tune.space.momentum"), "{}", text(&out));
}

/// The lifecycle on the bundled gestures project (accelerometer CSV, time-ordered split),
/// shortened to three epochs: every step from `init` to firmware sources, the run folder
/// with its plots and HTML report, and a model that carries its preprocessing.
#[test]
fn gestures_project_runs_from_csv_to_firmware_sources() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("gestures");
    let out = loam(&["init", project.to_str().unwrap(), "--example", "gestures"]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = project.join("loam.toml");
    let shipped = std::fs::read_to_string(&toml).unwrap();
    let quick = shipped.replace("epochs = 40", "epochs = 3");
    assert_ne!(quick, shipped);
    std::fs::write(&toml, quick).unwrap();
    let toml = toml.to_str().unwrap();

    let out = loam(&["data", "inspect", "--project", toml]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1800 rows"), "{}", text(&out));
    assert!(text(&out).contains("6 classes"), "{}", text(&out));

    let out = loam(&["train", "--project", toml]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let run = project.join("runs/gestures-001");
    for file in [
        "metrics.json",
        "model.onnx",
        "model.loam",
        "curves.png",
        "curves.svg",
        "confusion.png",
        "confusion.svg",
        "report.html",
    ] {
        assert!(run.join(file).is_file(), "{file} missing\n{log}");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("data:image/png;base64,"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    // Six classes: three epochs are far from the card's figure but far above chance.
    let int8 = metrics["int8"]["accuracy"].as_f64().unwrap();
    assert!(int8 > 0.5, "int8 accuracy {int8}\n{log}");

    for args in [
        vec!["eval", "--project", toml],
        vec!["quantize", "--project", toml],
    ] {
        let out = loam(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let header = dir.path().join("gestures.h");
    let out = loam(&["export", "--project", toml, "-o", header.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let header = std::fs::read_to_string(&header).unwrap();
    assert!(header.contains("ARENA_SIZE"), "{header}");
    let bytes = std::fs::read(run.join("model.loam")).unwrap();
    let aligned = loam::format::AlignedBytes::new(&bytes);
    let model = loam::Model::from_bytes(&aligned).unwrap();
    assert_eq!(
        model
            .constant("preprocess.scale")
            .map(|c| c.values().count()),
        Some(300),
        "a scale per input value (100 steps of 3 axes) for the device"
    );
}

/// 600 samples of ten noisy 64-value prototypes (one class each) as `x.npy` and `y.npy` in
/// `dir`: something the digits-mlp template can learn quickly.
fn prototype_digits(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use loam_tools::npy::{self, Array, Data};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let prototypes: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..64).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let n = 600;
    let mut x = Vec::with_capacity(n * 64);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 10;
        x.extend(
            prototypes[class]
                .iter()
                .map(|&p| (p + rng.random_range(-0.3f32..0.3)).clamp(-1.0, 1.0)),
        );
        y.push(class as i32);
    }
    let data = dir.join("x.npy");
    let labels = dir.join("y.npy");
    npy::write(
        &data,
        &Array {
            shape: vec![n, 64],
            data: Data::F32(x),
        },
    )
    .unwrap();
    npy::write(
        &labels,
        &Array {
            shape: vec![n],
            data: Data::I32(y),
        },
    )
    .unwrap();
    (data, labels)
}

/// A training plan chosen by name and by RAM budget, stored in the model, fine-tuned through
/// (`loam finetune` uses it by default) and brought home by `loam checkpoint export`.
#[test]
fn a_training_plan_is_chosen_stored_trained_and_brought_home() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let model = path("mlp.loam");
    assert!(
        loam(&["template", "digits-mlp", "--int8", "-o", &model])
            .status
            .success()
    );
    let out = loam(&["inspect", &model, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dense: Vec<String> = json["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "FullyConnected")
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    let (hidden, last) = (&dense[dense.len() - 2], &dense[dense.len() - 1]);

    let planned = path("planned.loam");
    let spec = format!("{hidden}:bias,{last}:50%");
    let out = loam(&["export", &model, "-o", &planned, "--trainable", &spec]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("5 of 10 channels"), "{report}");
    assert!(
        report.contains("a full update of these layers needs"),
        "{report}"
    );
    assert!(text(&loam(&["inspect", &planned])).contains("training plan"));

    let (data, labels) = prototype_digits(dir.path());
    let checkpoint = path("planned.ckpt");
    let finetune = |model: &str, epochs: &str, checkpoint: &str| {
        loam(&[
            "finetune",
            model,
            "--data",
            data.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--lr",
            "0.01",
            "--epochs",
            epochs,
            "--checkpoint",
            checkpoint,
        ])
    };
    let out = finetune(&planned, "4", &checkpoint);
    assert!(out.status.success(), "{}", text(&out));
    let out = loam(&["checkpoint", "diff", &planned, &checkpoint]);
    let diff = text(&out);
    assert!(out.status.success(), "{diff}");
    assert!(
        diff.contains(hidden.as_str()) && diff.contains(last.as_str()),
        "{diff}"
    );
    let tuned = path("tuned.loam");
    let out = loam(&["checkpoint", "export", &planned, &checkpoint, "-o", &tuned]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&loam(&["inspect", &tuned])).contains("training plan"));

    // A budget: the plan printed fits it; removing the plan gives back the original bytes.
    let fitted = path("fitted.loam");
    let out = loam(&["export", &model, "-o", &fitted, "--train-ram", "12KiB"]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let total: usize = report
        .split(" B; a full update")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(total <= 12 * 1024, "{report}");
    let plain = path("plain.loam");
    let out = loam(&["export", &fitted, "-o", &plain, "--trainable", "none"]);
    assert!(
        text(&out).contains("training plan removed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&model).unwrap()
    );

    // Weights kept int8 while training: the plan says so, trains, and comes home.
    let int8 = path("int8.loam");
    let out = loam(&[
        "export",
        &model,
        "-o",
        &int8,
        "--train-ram",
        "12KiB",
        "--train-weights",
        "int8",
    ]);
    assert!(text(&out).contains("int8 weights in RAM"), "{}", text(&out));
    let int8_checkpoint = path("int8.ckpt");
    let out = finetune(&int8, "2", &int8_checkpoint);
    assert!(out.status.success(), "{}", text(&out));
    let out = loam(&[
        "checkpoint",
        "export",
        &int8,
        &int8_checkpoint,
        "-o",
        &path("int8-tuned.loam"),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Mistakes name what is wrong and write nothing.
    let refused = path("refused.loam");
    for (flag, value, says) in [
        ("--trainable", "conv9", hidden.as_str()),
        (
            "--trainable",
            "last:7",
            "fully-connected layer(s) training can reach",
        ),
        (
            "--trainable",
            &format!("{last}:150%") as &str,
            "a share of its output channels",
        ),
        ("--train-ram", "300", "cannot hold training"),
        ("--train-ram", "lots", "is not a size in bytes"),
    ] {
        let out = loam(&["export", &model, "-o", &refused, flag, value]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {}", text(&out));
        assert!(text(&out).contains(says), "{flag} {value}: {}", text(&out));
        assert!(!std::path::Path::new(&refused).exists());
    }
}

/// The first `n` bundled digits as `x.npy` (`[n, 8, 8, 1]` f32) and `y.npy` (`[n]` i32
/// classes) in `dir`.
fn digits_npy(dir: &std::path::Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    use loam_tools::npy::{self, Array, Data};

    let digits = loam_tools::data::digits::bundled().unwrap();
    let sample = digits.subset(&(0..n).collect::<Vec<_>>());
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let features = Array {
        shape: vec![n, 8, 8, 1],
        data: Data::F32(sample.features.clone()),
    };
    npy::write(&x, &features).unwrap();
    let labels = sample
        .classes()
        .unwrap()
        .iter()
        .map(|&c| c as i32)
        .collect();
    let labels = Array {
        shape: vec![n],
        data: Data::I32(labels),
    };
    npy::write(&y, &labels).unwrap();
    (x, y)
}

/// `loam quantize model.onnx --data x.npy --labels y.npy -o m.loam --onnx-output m.onnx`: a
/// float ONNX model and NumPy calibration data in, an int8 `.loam` and its QDQ ONNX out, with
/// accuracy before and after and the per-layer SQNR; a bad data file leaves no output.
#[test]
fn quantize_an_onnx_model_from_npy_samples() {
    use loam_tools::npy::{self, Array, Data};

    let dir = tempfile::tempdir().unwrap();
    let (x, y) = digits_npy(dir.path(), 120);
    let onnx = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.onnx");
    let out_loam = dir.path().join("digits-int8.loam");
    let out_onnx = dir.path().join("digits-int8.onnx");
    let run = loam(&[
        "quantize",
        onnx,
        "--data",
        x.to_str().unwrap(),
        "--labels",
        y.to_str().unwrap(),
        "-o",
        out_loam.to_str().unwrap(),
        "--onnx-output",
        out_onnx.to_str().unwrap(),
        "--calibration",
        "percentile",
    ]);
    let said = text(&run);
    assert!(run.status.success(), "{said}");
    for expected in [
        "percentile 99.99 on 120 samples",
        "accuracy",
        "per-layer SQNR",
        "dense8",
    ] {
        assert!(said.contains(expected), "`{expected}` missing:\n{said}");
    }
    let inspect = loam(&["inspect", out_loam.to_str().unwrap()]);
    assert!(
        text(&inspect).contains("FullyConnected"),
        "{}",
        text(&inspect)
    );
    let verify = loam(&[
        "verify",
        out_loam.to_str().unwrap(),
        "--against",
        "onnxruntime",
        "--reference",
        out_onnx.to_str().unwrap(),
        "--data",
        x.to_str().unwrap(),
    ]);
    assert!(verify.status.success(), "{}", text(&verify));

    // The wrong samples: the error names the file and the shapes; nothing is written.
    let wrong = dir.path().join("wrong.npy");
    npy::write(
        &wrong,
        &Array {
            shape: vec![2, 5],
            data: Data::F32(vec![0.0; 10]),
        },
    )
    .unwrap();
    let missing = dir.path().join("never.loam");
    let run = loam(&[
        "quantize",
        onnx,
        "--data",
        wrong.to_str().unwrap(),
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(text(&run).contains("wrong"), "{}", text(&run));
    assert!(!missing.exists());
    let run = loam(&["quantize", onnx, "-o", missing.to_str().unwrap()]);
    assert!(text(&run).contains("--data"), "{}", text(&run));
}

/// `loam quantize model.onnx --to f16 -o m.loam --onnx-output m.onnx --data x.npy`: the float
/// layers' weights stored as f16, the file about half the size, the same accuracy on the
/// samples, and an ONNX export that ONNX Runtime runs to the same outputs; an int8 model has
/// nothing to convert and nothing is written.
#[test]
fn quantize_to_f16_halves_the_weights_and_keeps_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = digits_npy(dir.path(), 200);
    let onnx = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.onnx");
    let out_loam = dir.path().join("digits-f16.loam");
    let out_onnx = dir.path().join("digits-f16.onnx");
    let run = loam(&[
        "quantize",
        onnx,
        "--to",
        "f16",
        "--data",
        x.to_str().unwrap(),
        "--labels",
        y.to_str().unwrap(),
        "-o",
        out_loam.to_str().unwrap(),
        "--onnx-output",
        out_onnx.to_str().unwrap(),
        "--json",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["tensors"], 4, "{report}");
    let (float, half) = (
        report["float_flash_bytes"].as_f64().unwrap(),
        report["flash_bytes"].as_f64().unwrap(),
    );
    assert!(half < 0.55 * float, "{report}");
    let c = &report["comparison"];
    assert_eq!(c["samples"], 200, "{report}");
    assert!(c["top1_agreement"].as_f64().unwrap() >= 0.99, "{report}");
    assert!(c["output_sqnr_db"].as_f64().unwrap() > 50.0, "{report}");
    let (f, h) = (
        c["float_accuracy"].as_f64().unwrap(),
        c["f16_accuracy"].as_f64().unwrap(),
    );
    assert!((f - h).abs() <= 0.01, "{report}");
    assert_eq!(std::fs::metadata(&out_loam).unwrap().len() as f64, half);
    let inspect = loam(&["inspect", out_loam.to_str().unwrap(), "--json"]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let verify = loam(&[
        "verify",
        out_loam.to_str().unwrap(),
        "--against",
        "onnxruntime",
        "--reference",
        out_onnx.to_str().unwrap(),
        "--data",
        x.to_str().unwrap(),
    ]);
    assert!(verify.status.success(), "{}", text(&verify));

    // An int8 model: nothing to convert, nothing written; int8 options are refused.
    let int8 = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.loam");
    let missing = dir.path().join("never.loam");
    let run = loam(&[
        "quantize",
        int8,
        "--to",
        "f16",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(text(&run).contains("no float"), "{}", text(&run));
    assert!(!missing.exists());
    let run = loam(&[
        "quantize",
        onnx,
        "--to",
        "f16",
        "--int16",
        "dense8",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert!(text(&run).contains("int8 options"), "{}", text(&run));
    assert!(!missing.exists());

    // The last layer kept f32 stays trainable on the device; a name that is no layer's is
    // refused with the names there are.
    let kept = dir.path().join("digits-f16-head.loam");
    let run = loam(&[
        "quantize",
        onnx,
        "--to",
        "f16",
        "--keep-float",
        "dense8",
        "-o",
        kept.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("3 tensors"), "{}", text(&run));
    let inspect = loam(&["inspect", kept.to_str().unwrap()]);
    assert!(
        text(&inspect).contains("on-device training of the last layers"),
        "{}",
        text(&inspect)
    );
    let run = loam(&[
        "quantize",
        onnx,
        "--to",
        "f16",
        "--keep-float",
        "dense99",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(text(&run).contains("dense8"), "{}", text(&run));
    assert!(!missing.exists());
}
