//! `loam quantize` on model files: post-training static quantization of a float ONNX or
//! `.loam` model, checked against the float model, against ONNX Runtime and tract running
//! the QDQ file it writes, and on bad input.

use std::path::{Path, PathBuf};

use loam::DType;
use loam_tools::data::{Dataset, Targets};
use loam_tools::model_file::ModelFile;
use loam_tools::npy::{Array, Data};
use loam_tools::peers::Peer;
use loam_tools::quantize::{Calibration, ModelQuantizeOptions, quantize_loam, quantize_onnx};
use loam_tools::verify::{Tolerance, verify_against};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn pytorch_cnn() -> Vec<u8> {
    std::fs::read(repo("tools/tests/data/onnx/pytorch-cnn.onnx")).unwrap()
}

/// Seeded images uniform in [-1, 1), the distribution the fixture's ORT quantization used.
fn random_images(count: usize, seed: u64) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dims = vec![3, 32, 32];
    let len: usize = dims.iter().product();
    Dataset {
        name: format!("random-{seed}"),
        feature_names: (0..len).map(|i| format!("x{i}")).collect(),
        sample_dims: dims,
        features: (0..count * len)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        targets: Targets::None,
        class_names: Vec::new(),
    }
}

fn options() -> ModelQuantizeOptions {
    ModelQuantizeOptions {
        layer_report_samples: 8,
        ..ModelQuantizeOptions::default()
    }
}

/// The digits split: the first 200 to calibrate on, the last 400 held out.
fn digits() -> (Dataset, Dataset) {
    let all = loam_tools::data::digits::bundled().unwrap();
    let n = all.rows();
    (
        all.subset(&(0..200).collect::<Vec<_>>()),
        all.subset(&(n - 400..n).collect::<Vec<_>>()),
    )
}

fn digits_onnx() -> Vec<u8> {
    std::fs::read(repo("models/digits/model.onnx")).unwrap()
}

/// The PyTorch CNN quantized by loam: every conv, depthwise, BatchNorm and Gemm gets int8
/// weights, nothing stays float, and ONNX Runtime and tract running the QDQ file `loam
/// quantize` writes agree with loam's int8 model within one step on 99% of outputs (ONNX
/// Runtime rounds requantization its own way; tract's int8 softmax ignores the output zero
/// point, so tract is compared on the model's own export, which runs its softmax in float).
#[test]
fn the_pytorch_cnn_quantizes_and_agrees_with_both_peers() {
    let calibration = random_images(16, 11);
    let evaluation = random_images(8, 5);
    let q = quantize_onnx(&pytorch_cnn(), &calibration, Some(&evaluation), &options()).unwrap();
    print!("{}", q.report.to_text());
    let r = &q.report;
    // stem, depthwise, pointwise, post-pool BatchNorm (as a 1x1 depthwise), head conv,
    // fc1, fc2.
    assert_eq!(r.int8_weight_layers, 7, "{}", r.to_text());
    assert!(r.float_nodes.is_empty(), "{:?}", r.float_nodes);
    assert!(
        r.notes.iter().all(|n| !n.contains("runs in f32")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.evaluation.top1_agreement, 1.0);
    // The probabilities are quantized in steps of 1/256 around 0.1: about 40 dB at best.
    assert!(r.evaluation.output_sqnr_db > 35.0, "{}", r.to_text());
    assert!(r.layers.iter().all(|l| l.sqnr_db > 30.0), "{}", r.to_text());
    assert!(r.flash_bytes * 2 < r.float_flash_bytes);

    let file = ModelFile::from_bytes("quantized", &q.built.bytes).unwrap();
    let model = file.model().unwrap();
    let weights: Vec<DType> = model
        .ops()
        .filter(|op| op.inputs.len() > 1)
        .filter_map(|op| model.tensor(usize::from(op.inputs.iter().nth(1)?)))
        .map(|t| t.dtype)
        .collect();
    assert!(weights.contains(&DType::I8));
    let samples: Vec<Vec<Array>> = (0..8)
        .map(|s| {
            vec![Array {
                shape: vec![1, 3, 32, 32],
                data: Data::F32(evaluation.sample(s).to_vec()),
            }]
        })
        .collect();
    let ort = verify_against(&file, Peer::OnnxRuntime, q.onnx.as_ref().unwrap(), &samples).unwrap();
    print!("{}", ort.to_text());
    assert!(
        ort.failures(Tolerance::default()).is_empty(),
        "{}",
        ort.to_text()
    );
    assert!(ort.outputs[0].within_lsb(1).unwrap() >= 0.99);
    let tract = loam_tools::verify::verify(&file, Peer::Tract, &samples).unwrap();
    print!("{}", tract.to_text());
    assert!(
        tract.failures(Tolerance::default()).is_empty(),
        "{}",
        tract.to_text()
    );
}

/// The bundled digits model, quantized on 200 digits, keeps its accuracy on 400 held-out
/// ones; bias correction does not make the output worse; min/max calibration works too.
#[test]
fn digits_keep_their_accuracy_when_quantized() {
    let (calibration, held_out) = digits();
    let plain = quantize_onnx(&digits_onnx(), &calibration, Some(&held_out), &options()).unwrap();
    print!("{}", plain.report.to_text());
    let e = &plain.report.evaluation;
    let (float, int8) = (e.float_accuracy.unwrap(), e.int8_accuracy.unwrap());
    assert_eq!(e.samples, 400);
    assert!(!e.on_calibration_data);
    assert!(float > 0.9, "{float}");
    assert!(int8 >= float - 0.01, "float {float}, int8 {int8}");
    assert!(
        plain.report.float_nodes.is_empty(),
        "{:?}",
        plain.report.float_nodes
    );

    let corrected = quantize_onnx(
        &digits_onnx(),
        &calibration,
        Some(&held_out),
        &ModelQuantizeOptions {
            bias_correction: true,
            ..options()
        },
    )
    .unwrap();
    print!("{}", corrected.report.to_text());
    let c = &corrected.report;
    assert_eq!(c.bias_correction.len(), 4, "{}", c.to_text());
    assert!(c.bias_correction.iter().all(|b| b.largest > 0.0));
    assert!(
        c.evaluation.output_sqnr_db >= e.output_sqnr_db,
        "bias correction: {:.2} dB against {:.2} dB without",
        c.evaluation.output_sqnr_db,
        e.output_sqnr_db
    );
    assert!(c.evaluation.int8_accuracy.unwrap() >= float - 0.01);

    let min_max = quantize_onnx(
        &digits_onnx(),
        &calibration,
        Some(&held_out),
        &ModelQuantizeOptions {
            calibration: Calibration::MinMax,
            ..options()
        },
    )
    .unwrap();
    assert!(min_max.report.evaluation.int8_accuracy.unwrap() >= float - 0.02);
}

/// Mixed precision: a layer named with `keep_float` stays f32 (its weights too), between a
/// dequantize and a quantize, and every other layer stays int8.
#[test]
fn a_kept_layer_stays_float() {
    let (calibration, held_out) = digits();
    let q = quantize_onnx(
        &digits_onnx(),
        &calibration,
        Some(&held_out),
        &ModelQuantizeOptions {
            keep_float: vec!["conv3".into()],
            ..options()
        },
    )
    .unwrap();
    print!("{}", q.report.to_text());
    assert_eq!(q.report.int8_weight_layers, 3);
    assert_eq!(q.report.float_nodes.len(), 1);
    assert_eq!(q.report.float_nodes[0].node, "conv3");
    let file = ModelFile::from_bytes("mixed", &q.built.bytes).unwrap();
    let model = file.model().unwrap();
    let mut weight_types = Vec::new();
    for op in model.ops() {
        if ["conv1", "conv3", "dense7", "dense8"].contains(&op.name) {
            let w = model
                .tensor(usize::from(op.inputs.iter().nth(1).unwrap()))
                .unwrap();
            weight_types.push((op.name.to_string(), w.dtype));
        }
    }
    assert_eq!(
        weight_types,
        [
            ("conv1".to_string(), DType::I8),
            ("conv3".to_string(), DType::F32),
            ("dense7".to_string(), DType::I8),
            ("dense8".to_string(), DType::I8),
        ]
    );
    assert!(q.report.evaluation.int8_accuracy.unwrap() > 0.9);
}

/// A float `.loam` quantizes through its own ONNX export.
#[test]
fn a_float_loam_model_quantizes() {
    let file = ModelFile::open(&repo("runtime/tests/data/pytorch-cnn-f32.loam")).unwrap();
    let calibration = random_images(8, 3);
    let q = quantize_loam(&file.model().unwrap(), &calibration, None, &options()).unwrap();
    print!("{}", q.report.to_text());
    assert_eq!(q.report.int8_weight_layers, 7);
    assert!(q.report.evaluation.on_calibration_data);
    assert!(q.report.evaluation.output_sqnr_db > 35.0);
    let int8 = ModelFile::from_bytes("int8", &q.built.bytes).unwrap();
    assert_eq!(int8.model().unwrap().metadata().name, "pytorch-cnn-f32");
}

/// Bad input gets one clear message: a model already quantized, a `keep_float` name that is
/// not in the graph, samples of the wrong size, a model with no int8 to gain.
#[test]
fn bad_input_is_named() {
    let calibration = random_images(2, 1);
    let err = |onnx: &[u8], data: &Dataset, options: &ModelQuantizeOptions| match quantize_onnx(
        onnx, data, None, options,
    ) {
        Ok(_) => panic!("quantizing should fail"),
        Err(e) => format!("{e:#}"),
    };
    let quantized = std::fs::read(repo("tools/tests/data/onnx/pytorch-cnn.qdq-int8.onnx")).unwrap();
    let e = err(&quantized, &calibration, &options());
    assert!(e.contains("already quantized"), "{e}");

    let e = err(
        &pytorch_cnn(),
        &calibration,
        &ModelQuantizeOptions {
            keep_float: vec!["/no/such/Conv".into()],
            ..options()
        },
    );
    assert!(
        e.contains("--keep-float") && e.contains("/no/such/Conv"),
        "{e}"
    );

    let (digits, _) = digits();
    let e = err(&pytorch_cnn(), &digits, &options());
    assert!(e.contains("64 values") && e.contains("3072"), "{e}");

    let e = err(b"not a model", &calibration, &options());
    assert!(e.contains("not an ONNX model"), "{e}");
}

/// Mixed precision the other way: layers named in `int16` run as 16x8 layers (int16
/// activations, int8 weights), converted where they meet int8 ops. With every weighted layer
/// 16x8 the outputs are closer to the float ones than with int8 activations, and accuracy
/// holds; the QDQ file needs opset 21 for int16, which this model predates.
#[test]
fn int16_layers_run_16x8_and_come_closer_to_float() {
    let (calibration, held_out) = digits();
    let layers = ["conv1", "conv3", "dense7", "dense8"];
    let int8 = quantize_onnx(&digits_onnx(), &calibration, Some(&held_out), &options()).unwrap();
    let int16 = quantize_onnx(
        &digits_onnx(),
        &calibration,
        Some(&held_out),
        &ModelQuantizeOptions {
            int16: layers.iter().map(|l| l.to_string()).collect(),
            ..options()
        },
    )
    .unwrap();
    print!("{}", int16.report.to_text());
    let r = &int16.report;
    assert_eq!(r.int16_layers, 4);
    // On the 400 held-out digits, through loam's own runtime: int8 weights bound both, and
    // int16 activations remove the rest of the error (about 5 dB here).
    let (wide, narrow) = (
        r.evaluation.output_sqnr_db,
        int8.report.evaluation.output_sqnr_db,
    );
    assert!(
        wide > narrow + 3.0,
        "output: 16x8 {wide:.1} dB, int8 {narrow:.1} dB"
    );
    let e = &r.evaluation;
    assert!(
        e.int8_accuracy.unwrap() >= e.float_accuracy.unwrap() - 0.01,
        "{e:?}"
    );
    assert!(int16.onnx.is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("opset 21")),
        "{:?}",
        r.notes
    );
    let file = ModelFile::from_bytes("int16", &int16.built.bytes).unwrap();
    let model = file.model().unwrap();
    for op in model.ops().filter(|op| layers.contains(&op.name)) {
        let out = model
            .tensor(usize::from(op.outputs.get(0).unwrap()))
            .unwrap();
        assert_eq!(out.dtype, DType::I16, "{}", op.name);
    }

    // Only weighted layers run 16x8; a name must be in the graph.
    for (name, expected) in [("maxpool2", "maxpool2"), ("nope", "--int16 names no")] {
        let e = match quantize_onnx(
            &digits_onnx(),
            &calibration,
            None,
            &ModelQuantizeOptions {
                int16: vec![name.into()],
                ..options()
            },
        ) {
            Ok(_) => panic!("--int16 {name} should fail"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(expected), "{e}");
    }
}

/// A model of 16x8 layers exports to ONNX at opset 21 (int16 `QuantizeLinear`), and ONNX
/// Runtime running it agrees with loam on the int16 grid: ONNX Runtime requantizes in float,
/// loam with TFLite's 15-bit multiplier, which the kernels' proptests hold within two steps
/// of exact arithmetic per layer; over the three layers here a step or two more can add up,
/// rarely. tract has no int16 quantize, which verify says.
#[test]
fn int16_models_verify_against_onnx_runtime() {
    use loam_tools::run::random_inputs;
    use loam_tools::verify::verify;
    let file = ModelFile::open(&repo("runtime/tests/data/int16-layers.loam")).unwrap();
    let model = file.model().unwrap();
    let samples: Vec<_> = (0..16)
        .map(|s| random_inputs(&model, 40 + s).unwrap())
        .collect();
    let report = verify(&file, Peer::OnnxRuntime, &samples).unwrap();
    print!("{}", report.to_text());
    let four_steps = Tolerance {
        max_lsb: 4,
        ..Tolerance::default()
    };
    assert!(
        report.failures(four_steps).is_empty(),
        "{}",
        report.to_text()
    );
    assert!(report.outputs[0].within_lsb(1).unwrap() >= 0.95);
    assert!(report.outputs[0].within_lsb(2).unwrap() >= 0.99);
    let onnx =
        loam_tools::onnx::export(&model, loam_tools::onnx::ExportOptions::default()).unwrap();
    assert_eq!(onnx.opset_import[0].version, 21);
    let e = verify(&file, Peer::Tract, &samples).unwrap_err();
    assert!(format!("{e:#}").contains("onnxruntime"), "{e:#}");
}
