//! ONNX import: a CNN exported by PyTorch (conv + BatchNorm + ReLU6, depthwise, max and global
//! pooling, a residual Add, the Shape/Gather/Concat flatten chain, Gemm, softmax), float and
//! quantized by ONNX Runtime's `quantize_static` (QDQ, per-channel, int8 and uint8
//! activations), imported and run by loam against ONNX Runtime and tract running the original
//! files; round trips through export; and the errors bad models get.
//!
//! Also the QOperator form of the same quantization (`QLinearConv`, ONNX Runtime's `QGemm`,
//! ...) and a small graph with the QOperator ops the CNN lacks.
//!
//! The fixtures come from `tests/data/onnx/make_pytorch_cnn.py` and `make_qoperator.py`. The peers need ONNX
//! Runtime's shared library (`cargo xtask setup` installs it).

use std::path::{Path, PathBuf};

use loam::DType;
use loam_tools::model_file::ModelFile;
use loam_tools::npy::{Array, Data};
use loam_tools::onnx::{ExportOptions, ImportOptions, export_bytes, import, import_bytes};
use loam_tools::peers::Peer;
use loam_tools::run::{random_inputs, run};
use prost::Message;
use tract_onnx::pb;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx")
        .join(name)
}

fn imported(name: &str) -> ModelFile {
    let imported = import(&fixture(name), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    ModelFile::from_bytes(name, &imported.built.bytes).unwrap()
}

fn floats(a: &Array) -> &[f32] {
    match &a.data {
        Data::F32(v) => v,
        other => panic!("expected f32, got {other:?}"),
    }
}

/// The largest difference between loam on `file` and `peer` on the ONNX `reference`, and the
/// share of elements that agree exactly, over 32 seeded samples.
fn compare(file: &ModelFile, peer: Peer, reference: &[u8]) -> (f32, f64) {
    let model = file.model().unwrap();
    let mut theirs = peer.load(reference).unwrap();
    let (mut max, mut exact, mut total) = (0.0f32, 0usize, 0usize);
    for seed in 0..32 {
        let inputs = random_inputs(&model, 1000 + seed).unwrap();
        let ours = run(file, &inputs).unwrap();
        theirs.set_inputs(&inputs).unwrap();
        let other = theirs.outputs().unwrap();
        assert_eq!(ours.len(), other.len());
        for (o, t) in ours.iter().zip(&other) {
            assert_eq!(o.array.shape, t.shape, "output `{}`", o.name);
            for (a, b) in floats(&o.array).iter().zip(floats(t)) {
                let d = (a - b).abs();
                max = max.max(d);
                exact += usize::from(d == 0.0);
                total += 1;
            }
        }
    }
    (max, exact as f64 / total as f64)
}

fn op_dtypes(file: &ModelFile) -> Vec<(String, DType)> {
    let model = file.model().unwrap();
    model
        .ops()
        .map(|op| {
            let out = op.outputs.get(0).unwrap();
            let t = model.tensor(usize::from(out)).unwrap();
            let kind = loam::ops::OpKind::from_code(op.kind).unwrap();
            (kind.name().to_string(), t.dtype)
        })
        .collect()
}

#[test]
fn pytorch_float_cnn_matches_both_peers() {
    let file = imported("pytorch-cnn.onnx");
    let onnx = std::fs::read(fixture("pytorch-cnn.onnx")).unwrap();
    for peer in [Peer::OnnxRuntime, Peer::Tract] {
        let (max, _) = compare(&file, peer, &onnx);
        println!("pytorch-cnn f32 vs {peer}: max abs {max:e}");
        assert!(max <= 1e-5, "{peer}: max abs {max}");
    }
    // Conv+BN+ReLU6 are one op each; the BatchNorm after the pooling is a 1x1 depthwise;
    // the flatten chain is folded away.
    let kinds: Vec<String> = op_dtypes(&file).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "Conv2d").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "DepthwiseConv2d").count(),
        2,
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "BatchNorm"), "{kinds:?}");
}

/// The output quantization step of the QDQ fixtures' softmax, as ONNX Runtime calibrated it.
const PROBABILITY_STEP: f32 = 1.0 / 255.0;

#[test]
fn pytorch_qdq_cnn_runs_in_int8_within_one_step_of_onnxruntime() {
    for name in ["pytorch-cnn.qdq-int8.onnx", "pytorch-cnn.qdq-uint8.onnx"] {
        let file = imported(name);
        // Every weighted layer is native int8.
        for (kind, dtype) in op_dtypes(&file) {
            if ["Conv2d", "DepthwiseConv2d", "FullyConnected", "Add"].contains(&kind.as_str()) {
                assert_eq!(dtype, DType::I8, "{name}: {kind} is not int8");
            }
        }
        let onnx = std::fs::read(fixture(name)).unwrap();
        let (max, exact) = compare(&file, Peer::OnnxRuntime, &onnx);
        println!("{name} vs onnxruntime: max abs {max:e}, {exact:.4} exact");
        // ONNX Runtime requantizes in float, loam with TFLite's fixed-point multipliers: the
        // two round a value lying near a half step differently, never by more than a step.
        assert!(max <= PROBABILITY_STEP * 1.001, "{name}: max abs {max}");
        assert!(exact >= 0.9, "{name}: only {exact} exact");
    }
}

/// `onnx` cut after the node producing `value`, which becomes the only output.
fn truncated(onnx: &[u8], value: &str) -> Vec<u8> {
    let mut model = pb::ModelProto::decode(onnx).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let end = graph
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == value))
        .unwrap();
    graph.node.truncate(end + 1);
    let mut output = graph.output[0].clone();
    output.name = value.to_string();
    output.r#type = None;
    graph.output = vec![output];
    model.encode_to_vec()
}

#[test]
fn pytorch_qdq_cnn_logits_match_tract() {
    // tract 0.23.9 runs int8 softmax ignoring the output zero point (see tests/peers.rs), so
    // against tract the quantized model is compared at its logits.
    let name = "pytorch-cnn.qdq-int8.onnx";
    let onnx = truncated(
        &std::fs::read(fixture(name)).unwrap(),
        "/fc2/Gemm_output_0_DequantizeLinear_Output",
    );
    let proto = pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let step = proto
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name == "/fc2/Gemm_output_0_scale")
        .map(|t| {
            t.float_data
                .first()
                .copied()
                .unwrap_or_else(|| f32::from_le_bytes(t.raw_data[..4].try_into().unwrap()))
        })
        .unwrap();
    let built = import_bytes(&onnx, None, &ImportOptions::default()).unwrap();
    let file = ModelFile::from_bytes("logits", &built.built.bytes).unwrap();
    for peer in [Peer::Tract, Peer::OnnxRuntime] {
        let (max, exact) = compare(&file, peer, &onnx);
        println!(
            "{name} logits vs {peer}: max {} steps, {exact:.4} exact",
            max / step
        );
        assert!(max <= step * 1.001, "{peer}: {} steps", max / step);
        assert!(exact >= 0.9, "{peer}: only {exact} exact");
    }
}

#[test]
fn import_export_import_is_exact() {
    for name in [
        "pytorch-cnn.onnx",
        "pytorch-cnn.qdq-int8.onnx",
        "pytorch-cnn.qdq-uint8.onnx",
    ] {
        let first = imported(name);
        let exported = export_bytes(&first.model().unwrap(), ExportOptions::default()).unwrap();
        let again = import_bytes(&exported, None, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{name} re-imported: {e:#}"));
        let second = ModelFile::from_bytes("again", &again.built.bytes).unwrap();
        let model = first.model().unwrap();
        for seed in 0..8 {
            let inputs = random_inputs(&model, seed).unwrap();
            let a = run(&first, &inputs).unwrap();
            let b = run(&second, &inputs).unwrap();
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.array, y.array, "{name}: output `{}` changed", x.name);
            }
        }
    }
}

fn import_error(onnx: &[u8]) -> String {
    match import_bytes(onnx, None, &ImportOptions::default()) {
        Ok(_) => panic!("the import succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

fn edited(edit: impl FnOnce(&mut pb::ModelProto)) -> Vec<u8> {
    let bytes = std::fs::read(fixture("pytorch-cnn.onnx")).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut model);
    model.encode_to_vec()
}

#[test]
fn one_report_lists_every_unsupported_node() {
    let onnx = edited(|m| {
        let nodes = &mut m.graph.as_mut().unwrap().node;
        let gap = nodes
            .iter_mut()
            .find(|n| n.op_type == "GlobalAveragePool")
            .unwrap();
        gap.op_type = "LpPool".into();
        let pool = nodes.iter_mut().find(|n| n.op_type == "MaxPool").unwrap();
        pool.attribute.retain(|a| a.name != "dilations");
        pool.attribute.push(pb::AttributeProto {
            name: "dilations".into(),
            ints: vec![2, 2],
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ..Default::default()
        });
        let custom = nodes.iter_mut().find(|n| n.op_type == "Relu").unwrap();
        custom.domain = "com.example".into();
    });
    let message = import_error(&onnx);
    println!("{message}");
    assert!(message.contains("3 problems"), "{message}");
    assert!(message.contains("loam runs: Add,"), "{message}");
    assert!(
        message.contains("`LpPool` is not an op loam runs"),
        "{message}"
    );
    assert!(message.contains("dilated pooling"), "{message}");
    assert!(message.contains("com.example::Relu"), "{message}");
    assert!(message.contains("node `/pool/MaxPool`"), "{message}");
}

#[test]
fn bad_files_get_one_clear_message() {
    let bytes = std::fs::read(fixture("pytorch-cnn.onnx")).unwrap();
    let truncated = import_error(&bytes[..bytes.len() / 3]);
    assert!(truncated.contains("not an ONNX model"), "{truncated}");

    let old = import_error(&edited(|m| m.opset_import[0].version = 9));
    assert!(old.contains("opset 9") && old.contains("11 to 22"), "{old}");

    let huge = import_error(&edited(|m| {
        let input = &mut m.graph.as_mut().unwrap().input[0];
        let Some(pb::type_proto::Value::TensorType(t)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            unreachable!()
        };
        for d in t.shape.as_mut().unwrap().dim.iter_mut().skip(2) {
            d.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(30_000));
        }
    }));
    assert!(huge.contains("larger than loam's limit"), "{huge}");

    let runtime_weight = import_error(&edited(|m| {
        let g = m.graph.as_mut().unwrap();
        let conv = g.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
        conv.input[1] = "input".into();
    }));
    assert!(
        runtime_weight.contains("weight (input 1) is computed at run time"),
        "{runtime_weight}"
    );
}

/// An int8 activation followed by a Clip that ends in the quantize: the Clip stays (as its
/// own int8 op), the quantize is folded after it and not after the Tanh.
#[test]
fn a_clip_after_an_int8_activation_is_kept() {
    let bytes = std::fs::read(fixture("pytorch-cnn.qdq-int8.onnx")).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let at = graph
        .node
        .iter()
        .position(|n| n.op_type == "Softmax")
        .unwrap();
    let softmax_out = graph.node[at].output[0].clone();
    graph.node[at].op_type = "Tanh".into();
    graph.node[at].attribute.clear();
    graph.node[at].output[0] = "tanh".into();
    let scalar = |name: &str, v: f32| pb::TensorProto {
        name: name.into(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: vec![v],
        ..Default::default()
    };
    graph.initializer.push(scalar("clip_min", 0.2));
    graph.initializer.push(scalar("clip_max", 0.5));
    let clip = pb::NodeProto {
        op_type: "Clip".into(),
        name: "clip".into(),
        input: vec!["tanh".into(), "clip_min".into(), "clip_max".into()],
        output: vec![softmax_out],
        ..Default::default()
    };
    graph.node.insert(at + 1, clip);
    let onnx = model.encode_to_vec();
    let built = import_bytes(&onnx, None, &ImportOptions::default()).unwrap();
    let file = ModelFile::from_bytes("tanh-clip", &built.built.bytes).unwrap();
    let (max, _) = compare(&file, Peer::OnnxRuntime, &onnx);
    assert!(max <= PROBABILITY_STEP * 1.001, "max abs {max}");
}

/// Dropout is lowered as Identity, which is right in inference mode only: a model whose
/// Dropout has `training_mode` true gets the report (found by the ONNX conformance test's
/// `node/test_training_dropout`, which imported and then computed the wrong values).
#[test]
fn dropout_in_training_mode_is_refused() {
    let with_dropout = |training: bool| {
        edited(|m| {
            let graph = m.graph.as_mut().unwrap();
            let at = graph.node.iter().position(|n| n.op_type == "Gemm").unwrap();
            let gemm_out = std::mem::replace(&mut graph.node[at].output[0], "gemm".into());
            graph.initializer.push(pb::TensorProto {
                name: "training".into(),
                data_type: pb::tensor_proto::DataType::Bool as i32,
                int32_data: vec![i32::from(training)],
                ..Default::default()
            });
            let dropout = pb::NodeProto {
                op_type: "Dropout".into(),
                name: "dropout".into(),
                input: vec!["gemm".into(), String::new(), "training".into()],
                output: vec![gemm_out],
                ..Default::default()
            };
            graph.node.insert(at + 1, dropout);
        })
    };
    let message = import_error(&with_dropout(true));
    assert!(
        message.contains("node `dropout` (Dropout): training_mode = true"),
        "{message}"
    );
    // In inference mode it is still the Identity it was.
    import_bytes(&with_dropout(false), None, &ImportOptions::default()).unwrap();
}

#[test]
fn a_convolution_of_other_rank_is_named_with_its_way_out() {
    let with_rank = |extra: Option<usize>| {
        edited(|m| {
            let graph = m.graph.as_mut().unwrap();
            let conv = graph.node.iter().find(|n| n.op_type == "Conv").unwrap();
            let weight = conv.input[1].clone();
            let w = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == weight)
                .unwrap();
            match extra {
                // [out, in, kh, kw] as [out, in, kh * kw]: the same values, one dimension less.
                None => {
                    let kw = w.dims.pop().unwrap();
                    *w.dims.last_mut().unwrap() *= kw;
                }
                Some(n) => w.dims.extend(std::iter::repeat_n(1, n)),
            }
        })
    };
    let message = import_error(&with_rank(Some(1)));
    assert!(
        message.contains("a 3-D convolution; loam imports 2-D convolutions: only 1-D"),
        "{message}"
    );
    let message = import_error(&with_rank(None));
    assert!(
        message.contains(
            "a 1-D convolution; loam imports 2-D convolutions: export it as a Conv2d of height 1"
        ),
        "{message}"
    );
}

/// The PyTorch CNN as the boards run it, float and ORT-quantized: imported, with a self-check
/// record (seeded inputs, the CRC-32 of the outputs this machine computes and, for the float
/// model, the outputs themselves). The Cortex-M4F firmware (`pytorch`) and the runtime's tests
/// on aarch64 and armv7 run `runtime/tests/data/pytorch-cnn-{int8,f32}.loam` and must
/// reproduce the int8 digest exactly and the float outputs within 1e-5 + 1e-4 relative.
#[test]
fn the_pytorch_cnn_the_boards_run_is_current() {
    use loam::selftest::{
        EXPECTED_CONSTANT, SELFCHECK_CONSTANT, check_model, check_model_within, fill_inputs,
        output_digest,
    };
    const SEED: u32 = 0x5eed;
    let writing = std::env::var("LOAM_WRITE_FIXTURES")
        .is_ok_and(|v| v.split(',').any(|n| n == "pytorch-cnn"));
    for (onnx, fixture_name) in [
        ("pytorch-cnn.qdq-int8.onnx", "pytorch-cnn-int8"),
        ("pytorch-cnn.onnx", "pytorch-cnn-f32"),
    ] {
        let plain = imported(onnx);
        let model = plain.model().unwrap();
        let mut arena = vec![0u8; model.arena_size() + 16];
        let mut interpreter = loam::Interpreter::new(&model, &mut arena).unwrap();
        fill_inputs(&mut interpreter, u64::from(SEED)).unwrap();
        interpreter.invoke().unwrap();
        let digest = output_digest(&interpreter).unwrap();
        let float = interpreter.output_tensor(0).unwrap().dtype == DType::F32
            && plain
                .model()
                .unwrap()
                .ops()
                .all(|o| o.kind != loam::ops::OpKind::Quantize.code());
        let mut constants = vec![(
            SELFCHECK_CONSTANT.to_string(),
            loam::selftest::selfcheck_values(SEED, digest).to_vec(),
        )];
        if float {
            let values: Vec<f32> = (0..interpreter.output_count())
                .flat_map(|i| interpreter.output::<f32>(i).unwrap().to_vec())
                .collect();
            constants.push((EXPECTED_CONSTANT.to_string(), values));
        }
        let options = ImportOptions {
            name: Some(fixture_name.into()),
            constants,
            ..ImportOptions::default()
        };
        let bytes = import(&fixture(onnx), &options).unwrap().built.bytes;
        let file = ModelFile::from_bytes(onnx, &bytes).unwrap();
        let model = file.model().unwrap();
        if float {
            let check = check_model_within(&model, &mut arena, 1e-5, 1e-4).unwrap();
            assert!(check.passed() && check.max_abs == 0.0, "{check:?}");
        } else {
            let check = check_model(&model, &mut arena).unwrap();
            assert!(check.passed(), "{check:?}");
        }
        println!(
            "{fixture_name}: {} B flash, {} B arena, outputs digest {digest:#010x}",
            bytes.len(),
            model.arena_size()
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runtime/tests/data")
            .join(format!("{fixture_name}.loam"));
        if writing {
            loam_tools::model_file::write_atomically(&path, &bytes).unwrap();
        }
        assert!(
            std::fs::read(&path).unwrap_or_default() == bytes,
            "{} is stale (the importer changed?); regenerate it with \
             LOAM_WRITE_FIXTURES=pytorch-cnn cargo test -p loam-tools --test import",
            path.display()
        );
    }
}

/// The first line of the import issue's "done when": the PyTorch CNN, float and ORT-quantized
/// int8, passes `loam verify` against both ONNX Runtime and tract with the default
/// tolerances (float 1e-4; int8 outputs, dequantized or not, within one step).
#[test]
fn the_pytorch_cnn_passes_verify_against_both_peers() {
    use loam_tools::verify::{Difference, Tolerance, verify};
    for fixture_name in ["pytorch-cnn-f32", "pytorch-cnn-int8"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runtime/tests/data")
            .join(format!("{fixture_name}.loam"));
        let file = ModelFile::open(&path).unwrap();
        let model = file.model().unwrap();
        let samples: Vec<_> = (0..16)
            .map(|seed| random_inputs(&model, 500 + seed).unwrap())
            .collect();
        for peer in Peer::ALL {
            let report = verify(&file, peer, &samples).unwrap();
            print!("{fixture_name}: {}", report.to_text());
            assert!(
                report.failures(Tolerance::default()).is_empty(),
                "{fixture_name} vs {peer}: {}",
                report.to_text()
            );
            let int8 = fixture_name.ends_with("int8");
            let stepped = matches!(
                report.outputs[0].difference,
                Difference::Quantized { step: Some(_), .. }
            );
            assert_eq!(stepped, int8, "{}", report.to_text());
            assert_eq!(!report.notes.is_empty(), int8 && peer == Peer::Tract);
        }
    }
}

/// Why `loam verify` runs tract's softmax in float: tract 0.23.9's fused int8 softmax
/// ignores the output zero point. When this test fails, tract has fixed it and the
/// workaround (`ExportOptions::float_softmax_outputs`) can go.
#[test]
fn tract_int8_softmax_still_ignores_the_output_zero_point() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/model.loam");
    let file = ModelFile::open(&path).unwrap();
    let model = file.model().unwrap();
    let inputs = random_inputs(&model, 7).unwrap();
    let ours = run(&file, &inputs).unwrap();
    let Data::I8(ours) = &ours[0].array.data else {
        panic!("int8 probabilities expected");
    };
    let onnx = export_bytes(&model, ExportOptions::default()).unwrap();
    let mut tract = Peer::Tract.load(&onnx).unwrap();
    tract.set_inputs(&inputs).unwrap();
    let Data::I8(theirs) = tract.outputs().unwrap()[0].data.clone() else {
        panic!("int8 probabilities expected");
    };
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
        .max()
        .unwrap();
    assert!(worst > 100, "tract now agrees within {worst} steps");
}

/// `loam verify --per-layer`: every op result of the PyTorch CNN, loam op by op against the
/// peers running the export with every result declared an output. The int8 layers agree
/// within a step on 99% of values (ONNX Runtime rounds requantization its own way), the
/// float ones within float rounding.
#[test]
fn per_layer_verify_compares_every_op_result() {
    use loam_tools::verify::{Difference, verify_per_layer};
    for (fixture_name, peer) in [
        ("pytorch-cnn-int8", Peer::OnnxRuntime),
        ("pytorch-cnn-int8", Peer::Tract),
        ("pytorch-cnn-f32", Peer::Tract),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runtime/tests/data")
            .join(format!("{fixture_name}.loam"));
        let file = ModelFile::open(&path).unwrap();
        let model = file.model().unwrap();
        let samples: Vec<_> = (0..4)
            .map(|seed| random_inputs(&model, 900 + seed).unwrap())
            .collect();
        let layers = verify_per_layer(&file, peer, &samples).unwrap();
        assert_eq!(
            layers.len(),
            loam_tools::onnx::exposed_tensors(&model).len()
        );
        assert!(layers.windows(2).all(|w| w[0].op <= w[1].op));
        for l in &layers {
            match l.comparison.difference {
                // An Add sums two inputs that may each be a step off: two steps, rarely.
                Difference::Quantized { .. } => assert!(
                    l.comparison.max_lsb().unwrap() <= 2
                        && l.comparison.within_lsb(1).unwrap() >= 0.99,
                    "{fixture_name} {peer}: {l:?}"
                ),
                // Downstream of int8 logits a float softmax inherits their one-step
                // differences; in the float model every layer agrees to float rounding.
                Difference::Float { max_rel, .. } => assert!(
                    max_rel
                        < if fixture_name.ends_with("f32") {
                            1e-5
                        } else {
                            1e-2
                        },
                    "{fixture_name} {peer}: {l:?}"
                ),
            }
        }
    }
}

/// The QOperator form (`QLinearConv`, ONNX Runtime's `QGemm`, `QLinearAdd`,
/// `QLinearGlobalAveragePool`, `QLinearSoftmax`) imports into the same native int8 ops as the
/// QDQ form, and the result matches ONNX Runtime running the original file within a step
/// (exactly, on these inputs).
#[test]
fn the_pytorch_cnn_in_qoperator_form_runs_in_int8_like_onnxruntime() {
    for name in ["pytorch-cnn.qop-int8.onnx", "pytorch-cnn.qop-uint8.onnx"] {
        let imported = import(&fixture(name), &ImportOptions::default()).unwrap();
        assert!(
            imported.notes.iter().all(|n| !n.contains("runs in f32")),
            "{name}: {:?}",
            imported.notes
        );
        let file = ModelFile::from_bytes(name, &imported.built.bytes).unwrap();
        let dtypes = op_dtypes(&file);
        // Everything between the input's quantize and the output's dequantize is int8.
        let inner = &dtypes[1..dtypes.len() - 1];
        assert!(
            inner.iter().all(|(_, t)| *t == DType::I8),
            "{name}: {dtypes:?}"
        );
        let kinds: Vec<&str> = dtypes.iter().map(|(k, _)| k.as_str()).collect();
        for kind in [
            "Conv2d",
            "DepthwiseConv2d",
            "Add",
            "GlobalAveragePool",
            "FullyConnected",
            "Softmax",
        ] {
            assert!(kinds.contains(&kind), "{name}: no {kind} in {kinds:?}");
        }
        let onnx = std::fs::read(fixture(name)).unwrap();
        let (max, exact) = compare(&file, Peer::OnnxRuntime, &onnx);
        println!("{name} vs onnxruntime: max abs {max:e}, {exact:.4} exact");
        assert!(max <= PROBABILITY_STEP * 1.001, "{name}: max abs {max}");
        assert!(exact >= 0.99, "{name}: only {exact} exact");
    }
}

/// The other QOperator ops (`QLinearMatMul`, `QLinearMul`, `QLinearSigmoid`,
/// `QLinearLeakyRelu`, `QLinearAveragePool`, `QLinearConcat`) import and run in int8. Against
/// ONNX Runtime the logits differ by a few steps: loam's int8 average pool keeps its input's
/// scale, so the requantization to the pool's own output scale rounds twice where ONNX
/// Runtime rounds once, and the activations' tables round their own way; the squaring and the
/// 256-long dot product add those up. The bound is what the same graph quantized in the QDQ
/// form gets too.
#[test]
fn the_other_qoperator_ops_import() {
    let name = "branches.qop-uint8.onnx";
    let file = imported(name);
    let dtypes = op_dtypes(&file);
    for kind in [
        "Conv2d",
        "AveragePool2d",
        "Sigmoid",
        "LeakyRelu",
        "Mul",
        "FullyConnected",
    ] {
        assert!(
            dtypes.iter().any(|(k, t)| k == kind && *t == DType::I8),
            "{kind} is not int8: {dtypes:?}"
        );
    }
    let onnx = std::fs::read(fixture(name)).unwrap();
    let float = std::fs::read(fixture("branches.onnx")).unwrap();
    let (max, exact) = compare(&file, Peer::OnnxRuntime, &onnx);
    let (max_float, _) = compare(&file, Peer::OnnxRuntime, &float);
    println!("{name} vs onnxruntime: max abs {max:e}, {exact:.4} exact; vs float {max_float:e}");
    // Logit steps are 8.3e-3 here.
    assert!(max <= 5.0 * 8.3e-3, "max abs {max}");
    assert!(exact >= 0.2, "only {exact} exact");
    // And the int8 model still computes the float one: within a tenth of the logits' range
    // (255 steps, 2.1), after a squaring.
    assert!(max_float <= 0.21, "against the float model: {max_float}");
}

/// A dynamically quantized model (ONNX Runtime's `quantize_dynamic`) is refused node by node
/// with the way out; a QOperator node with channels-last data is named with what stops it.
#[test]
fn dynamic_quantization_and_channels_last_are_named() {
    let e = import_error(&std::fs::read(fixture("branches.dynamic.onnx")).unwrap());
    assert!(e.contains("4 problems"), "{e}");
    for node in ["input_QuantizeLinear", "conv_quant", "fc_quant"] {
        assert!(e.contains(node), "{node} missing: {e}");
    }
    assert!(
        e.contains("dynamic quantization") && e.contains("loam quantize"),
        "{e}"
    );

    let bytes = std::fs::read(fixture("pytorch-cnn.qop-uint8.onnx")).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let node = model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "QLinearGlobalAveragePool")
        .unwrap();
    node.attribute.retain(|a| a.name != "channels_last");
    node.attribute.push(pb::AttributeProto {
        name: "channels_last".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    });
    let name = node.name.clone();
    let e = import_error(&model.encode_to_vec());
    assert!(
        e.contains("1 problem") && e.contains(&name) && e.contains("channels_last"),
        "{e}"
    );
}

/// `onnx` with every float initializer of rank 2 or more stored as f16 and cast back to f32
/// by a Cast node, the form f16-weight exports take.
fn with_f16_weights(onnx: &[u8]) -> Vec<u8> {
    let mut model = pb::ModelProto::decode(onnx).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let mut casts = Vec::new();
    for init in graph.initializer.iter_mut() {
        if init.data_type != pb::tensor_proto::DataType::Float as i32 || init.dims.len() < 2 {
            continue;
        }
        let values: Vec<f32> = if init.raw_data.is_empty() {
            init.float_data.clone()
        } else {
            bytemuck::pod_collect_to_vec(&init.raw_data)
        };
        let halves: Vec<u8> = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let wide = init.name.clone();
        init.name = format!("{wide}.f16");
        init.data_type = pb::tensor_proto::DataType::Float16 as i32;
        init.raw_data = halves;
        init.float_data.clear();
        casts.push(pb::NodeProto {
            op_type: "Cast".into(),
            name: format!("{wide}.cast"),
            input: vec![init.name.clone()],
            output: vec![wide],
            attribute: vec![pb::AttributeProto {
                name: "to".into(),
                i: pb::tensor_proto::DataType::Float as i64,
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    assert!(!casts.is_empty());
    casts.append(&mut graph.node);
    graph.node = casts;
    model.encode_to_vec()
}

/// An ONNX model whose weights are stored as f16 (cast to f32 for its layers) imports with
/// f16 weights where that is lossless, about half the flash, and computes what ONNX Runtime
/// and tract compute on that file.
#[test]
fn f16_weights_in_the_file_stay_f16() {
    let digits =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/model.onnx"))
            .unwrap();
    let onnx = with_f16_weights(&digits);
    let imported = import_bytes(&onnx, None, &ImportOptions::default()).unwrap();
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("keep the file's f16 storage")),
        "{:?}",
        imported.notes
    );
    let file = ModelFile::from_bytes("digits-f16", &imported.built.bytes).unwrap();
    let model = file.model().unwrap();
    let weight_types: Vec<DType> = model
        .ops()
        .filter(|op| [0, 1, 2].contains(&op.kind))
        .map(|op| {
            model
                .tensor(usize::from(op.inputs.get(1).unwrap()))
                .unwrap()
                .dtype
        })
        .collect();
    assert_eq!(weight_types, [DType::F16; 4]);
    let float = import_bytes(&digits, None, &ImportOptions::default()).unwrap();
    assert!(
        (imported.built.bytes.len() as f64) < 0.55 * float.built.bytes.len() as f64,
        "{} vs {}",
        imported.built.bytes.len(),
        float.built.bytes.len()
    );
    for peer in [Peer::OnnxRuntime, Peer::Tract] {
        let (max, _) = compare(&file, peer, &onnx);
        println!("digits with f16 weights vs {peer}: max abs {max:e}");
        assert!(max <= 1e-5, "{peer}: max abs {max}");
    }
}
