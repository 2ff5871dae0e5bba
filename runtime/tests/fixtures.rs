//! Model files kept in the repository, checked on every target the tests run on (x86_64,
//! and aarch64/armv7 under QEMU; the Cortex-M firmware runs `int8-zoo.loam` too).
//!
//! - `format-1.0.loam`, written by the first version of the format, holds every op kind of
//!   format 1.0 in float and int8 form. It must keep loading, and computing what it computed
//!   when it was written, in every later runtime: the file is never regenerated.
//! - `int8-zoo.loam` is a small int8 network using every int8 op. It records the CRC-32 of its
//!   outputs on x86_64 for a seeded input; every target must reproduce it bit for bit.
//!
//! - `finetune-int8.loam` is a small int8 MLP that records a fine-tune check: 100 training
//!   steps of its last two layers on seeded samples, and the CRC-32 of the resulting checkpoint
//!   on x86_64; every target must train to the same bits (`loam::train::check`).
//!
//! - `finetune-plan.loam` is the same network with a training plan (format 1.1): six chosen
//!   rows of the middle layer and the whole last layer, weights kept int8. It records the
//!   same kind of check. Written by the first runtime that read plans, it is also the 1.1
//!   compatibility file: never regenerated.
//!
//! - `pytorch-cnn-int8.loam` and `pytorch-cnn-f32.loam` are the PyTorch CNN of the tools'
//!   import tests, quantized by ONNX Runtime or float, imported by `loam import`, with
//!   self-check records (a digest; the float outputs themselves); written by
//!   `LOAM_WRITE_FIXTURES=pytorch-cnn cargo test -p loam-tools --test import`.
//!
//! - `int16-layers.loam` is a small network of 16x8 layers (int16 activations, int8 weights:
//!   convolution, depthwise convolution, fully connected; format 1.2), with the CRC-32 of its
//!   outputs on x86_64 for a seeded input; every target must reproduce it bit for bit. Written
//!   by the first runtime with 16x8 layers, it is also the 1.2 compatibility file.
//!
//! - `f16-weights.loam` is the same network in f32 arithmetic with f16 weights (format 1.3),
//!   with the outputs the x86_64 host computed. Written by the first runtime with f16
//!   weights, it is the 1.3 compatibility file: never regenerated.
//!
//! To write a fixture that is missing (or, after an intended change to int8 arithmetic, to
//! rewrite the int8 zoo): `LOAM_WRITE_FIXTURES=1 cargo test -p loam --test fixtures`, or
//! `LOAM_WRITE_FIXTURES=int8-zoo` to overwrite that one.

use loam::format::writer::{ModelBuilder, QuantSpec, TensorId};
use loam::format::{AlignedBytes, FORMAT_MAJOR};
use loam::ops::activation::Unary;
use loam::ops::conv2d::ConvSpec;
use loam::ops::{FusedActivation, OpKind};
use loam::quant::QuantParams;
use loam::selftest::{SELFCHECK_CONSTANT, check_model, fill_inputs, selfcheck_values};
use loam::{DType, Interpreter, Model};

const FORMAT_1_0: &[u8] = include_bytes!("data/format-1.0.loam");
const INT8_ZOO: &[u8] = include_bytes!("data/int8-zoo.loam");
const FINETUNE_INT8: &[u8] = include_bytes!("data/finetune-int8.loam");
const FINETUNE_PLAN: &[u8] = include_bytes!("data/finetune-plan.loam");
const PYTORCH_CNN: &[u8] = include_bytes!("data/pytorch-cnn-int8.loam");
const PYTORCH_CNN_F32: &[u8] = include_bytes!("data/pytorch-cnn-f32.loam");
const INT16_LAYERS: &[u8] = include_bytes!("data/int16-layers.loam");
const F16_WEIGHTS: &[u8] = include_bytes!("data/f16-weights.loam");
const FINETUNE_SEED: u32 = 0x7a11;
const FINETUNE_STEPS: u32 = 100;
const SEED: u32 = 0x1007;
const EXPECTED_PREFIX: &str = "loam.expected.";

/// Deterministic weights in `[-scale, scale)`.
struct Weights(u64);

impl Weights {
    fn take(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn q(lo: f32, hi: f32) -> QuantParams {
    QuantParams::i8_from_range(lo, hi)
}

/// The int8 network: every int8 op kind, small enough for a 16 KiB Cortex-M0. Returns the
/// outputs it marks.
fn int8_network(b: &mut ModelBuilder, w: &mut Weights, x: TensorId) -> Vec<TensorId> {
    let r = FusedActivation::RELU;
    let c1 = b
        .conv2d_i8(
            "c1",
            x,
            ConvSpec::new(8, 3).same(8, 8),
            &w.take(216, 0.5),
            Some(&w.take(8, 0.1)),
            q(0.0, 3.0),
            r,
        )
        .unwrap();
    let d1 = b
        .depthwise_conv2d_i8(
            "d1",
            c1,
            ConvSpec::new(8, 3).stride(2).same(8, 8),
            &w.take(72, 0.6),
            Some(&w.take(8, 0.1)),
            q(0.0, 6.0),
            FusedActivation::RELU6,
        )
        .unwrap();
    let p1 = b
        .conv2d_i8(
            "p1",
            d1,
            ConvSpec::new(8, 1),
            &w.take(64, 0.5),
            None,
            q(-4.0, 4.0),
            FusedActivation::NONE,
        )
        .unwrap();
    let a1 = b
        .add_i8("a1", d1, p1, q(-4.0, 8.0), FusedActivation::NONE)
        .unwrap();
    let mut grouped = ConvSpec::new(8, 3).same(4, 4);
    grouped.groups = 2;
    let g1 = b
        .conv2d_i8(
            "g1",
            a1,
            grouped,
            &w.take(8 * 9 * 4, 0.3),
            Some(&w.take(8, 0.2)),
            q(-6.0, 6.0),
            FusedActivation::NONE,
        )
        .unwrap();
    let m1 = b
        .mul_i8("m1", g1, a1, q(-20.0, 20.0), FusedActivation::NONE)
        .unwrap();
    let s1 = b
        .sub_i8("s1", m1, g1, q(-20.0, 20.0), FusedActivation::NONE)
        .unwrap();
    let mp = b
        .max_pool2d("mp", s1, (2, 2), (2, 2), [0; 4], FusedActivation::NONE)
        .unwrap();
    let ap = b
        .average_pool2d(
            "ap",
            s1,
            (3, 3),
            (2, 2),
            [1, 1, 0, 0],
            FusedActivation::NONE,
        )
        .unwrap();
    let cat = b.concat("cat", &[mp, mp], 3).unwrap();
    let cat2 = b.concat("cat2", &[ap, ap], 3).unwrap();
    let sum = b
        .add_i8("sum", cat, cat2, q(-30.0, 30.0), FusedActivation::NONE)
        .unwrap();
    let pd = b
        .pad("pd", sum, &[(0, 0), (1, 1), (1, 1), (0, 0)], 0.0)
        .unwrap();
    let tr = b.transpose("tr", pd, &[0, 3, 1, 2]).unwrap();
    let flat = b.reshape("flat", tr, &[1, 256]).unwrap();
    let fc = b
        .fully_connected_i8(
            "fc",
            flat,
            &w.take(2560, 0.2),
            Some(&w.take(10, 0.5)),
            q(-8.0, 8.0),
            FusedActivation::NONE,
        )
        .unwrap();
    let softmax = b.softmax_i8("softmax", fc, 1.0).unwrap();
    let log_softmax = b.log_softmax_i8("log_softmax", fc).unwrap();
    let mut chain = fc;
    let steps: [(&str, Unary, QuantParams); 7] = [
        ("leaky", Unary::LeakyRelu { alpha: 0.1 }, q(-1.0, 8.0)),
        ("tanh", Unary::Tanh, q(-1.0, 1.0)),
        ("hswish", Unary::HardSwish, q(-0.5, 1.0)),
        (
            "hsigmoid",
            Unary::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            q(0.0, 1.0),
        ),
        ("relu", Unary::Relu, q(0.0, 1.0)),
        ("clip", Unary::Clip { min: 0.2, max: 0.8 }, q(0.0, 1.0)),
        ("sigmoid", Unary::Sigmoid, q(0.0, 1.0)),
    ];
    for (name, f, out) in steps {
        chain = b.activation_i8(name, chain, f, out).unwrap();
    }
    let prelu = b
        .prelu_i8("prelu", fc, &w.take(10, 0.5), q(-8.0, 8.0))
        .unwrap();
    let gap = b
        .global_average_pool("gap", s1, Some(q(-10.0, 10.0)))
        .unwrap();
    let deq = b.dequantize("deq", fc).unwrap();
    let req = b.quantize("req", deq, q(-4.0, 4.0), DType::I8).unwrap();
    vec![softmax, log_softmax, chain, prelu, gap, deq, req]
}

/// The same network in f32, plus BatchNorm, which only exists in float.
fn float_network(b: &mut ModelBuilder, w: &mut Weights, x: TensorId) -> Vec<TensorId> {
    let r = FusedActivation::RELU;
    let none = FusedActivation::NONE;
    let c1 = b
        .conv2d_f32(
            "f.c1",
            x,
            ConvSpec::new(8, 3).same(8, 8),
            &w.take(216, 0.5),
            Some(&w.take(8, 0.1)),
            r,
        )
        .unwrap();
    let bn = b
        .batch_norm_f32(
            "f.bn",
            c1,
            &w.take(8, 1.0),
            &w.take(8, 0.1),
            &w.take(8, 0.1),
            &[0.5; 8],
            1e-3,
        )
        .unwrap();
    let d1 = b
        .depthwise_conv2d_f32(
            "f.d1",
            bn,
            ConvSpec::new(8, 3).stride(2).same(8, 8),
            &w.take(72, 0.6),
            Some(&w.take(8, 0.1)),
            FusedActivation::RELU6,
        )
        .unwrap();
    let p1 = b
        .conv2d_f32(
            "f.p1",
            d1,
            ConvSpec::new(8, 1),
            &w.take(64, 0.5),
            None,
            none,
        )
        .unwrap();
    let a1 = b.add_f32("f.a1", d1, p1, none).unwrap();
    let mut grouped = ConvSpec::new(8, 3).same(4, 4);
    grouped.groups = 2;
    let g1 = b
        .conv2d_f32(
            "f.g1",
            a1,
            grouped,
            &w.take(288, 0.3),
            Some(&w.take(8, 0.2)),
            none,
        )
        .unwrap();
    let m1 = b.mul_f32("f.m1", g1, a1, none).unwrap();
    let s1 = b.sub_f32("f.s1", m1, g1, none).unwrap();
    let mp = b
        .max_pool2d("f.mp", s1, (2, 2), (2, 2), [0; 4], none)
        .unwrap();
    let ap = b
        .average_pool2d("f.ap", s1, (3, 3), (2, 2), [1, 1, 0, 0], none)
        .unwrap();
    let cat = b.concat("f.cat", &[mp, ap], 3).unwrap();
    let pd = b
        .pad("f.pd", cat, &[(0, 0), (1, 1), (1, 1), (0, 0)], 0.25)
        .unwrap();
    let tr = b.transpose("f.tr", pd, &[0, 3, 1, 2]).unwrap();
    let flat = b.reshape("f.flat", tr, &[1, 256]).unwrap();
    let fc = b
        .fully_connected_f32(
            "f.fc",
            flat,
            &w.take(2560, 0.2),
            Some(&w.take(10, 0.5)),
            none,
        )
        .unwrap();
    let softmax = b.softmax_f32("f.softmax", fc, 1.0).unwrap();
    let log_softmax = b.log_softmax_f32("f.log_softmax", fc).unwrap();
    let mut chain = fc;
    for (name, f) in [
        ("f.leaky", Unary::LeakyRelu { alpha: 0.1 }),
        ("f.tanh", Unary::Tanh),
        ("f.hswish", Unary::HardSwish),
        (
            "f.hsigmoid",
            Unary::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        ("f.relu", Unary::Relu),
        ("f.clip", Unary::Clip { min: 0.2, max: 0.8 }),
        ("f.sigmoid", Unary::Sigmoid),
    ] {
        chain = b.activation_f32(name, chain, f).unwrap();
    }
    let prelu = b.prelu_f32("f.prelu", fc, &w.take(10, 0.5)).unwrap();
    let gap = b.global_average_pool("f.gap", s1, None).unwrap();
    let quantized = b.quantize("f.q", fc, q(-4.0, 4.0), DType::I8).unwrap();
    vec![softmax, log_softmax, chain, prelu, gap, quantized]
}

fn int8_input(b: &mut ModelBuilder, name: &str) -> TensorId {
    let p = q(-1.0, 1.0);
    b.tensor(
        name,
        DType::I8,
        &[1, 8, 8, 3],
        QuantSpec::PerTensor {
            scale: p.scale,
            zero_point: p.zero_point,
        },
    )
    .unwrap()
}

/// The arithmetic [`layered_network`] is built in.
#[derive(Clone, Copy, PartialEq)]
enum Precision {
    F32,
    /// f32 arithmetic, weights stored as f16.
    F16,
    I8,
    I16,
}

/// A float convolution or depthwise convolution builder method (f32 or f16 weights).
type Float4d = fn(
    &mut ModelBuilder,
    &str,
    TensorId,
    ConvSpec,
    &[f32],
    Option<&[f32]>,
    FusedActivation,
) -> Result<TensorId, loam::format::writer::BuildError>;
/// A float fully-connected builder method (f32 or f16 weights).
type FloatDense = fn(
    &mut ModelBuilder,
    &str,
    TensorId,
    &[f32],
    Option<&[f32]>,
    FusedActivation,
) -> Result<TensorId, loam::format::writer::BuildError>;

/// Conv 3x3 (12) + ReLU, depthwise 3x3 + ReLU6, fully connected (10), on an 8x8x3 image,
/// in `precision` with the same weights. `ranges` (the largest magnitude of the conv,
/// depthwise and FC outputs, from the float network) set the integer networks' output
/// parameters; the float network exposes those three values as outputs too.
fn layered_network(precision: Precision, ranges: [f32; 3]) -> ModelBuilder {
    let mut w = Weights(0x16);
    let conv_w = w.take(12 * 3 * 3 * 3, 0.4);
    let conv_b = w.take(12, 0.1);
    let dw_w = w.take(3 * 3 * 12, 0.5);
    let dw_b = w.take(12, 0.1);
    let fc_w = w.take(10 * 8 * 8 * 12, 0.05);
    let fc_b = w.take(10, 0.1);
    let mut b = ModelBuilder::new(match precision {
        Precision::F32 => "layers-f32",
        Precision::F16 => "f16-weights",
        Precision::I8 => "layers-i8",
        Precision::I16 => "int16-layers",
    });
    b.metadata.description = if precision == Precision::F16 {
        "convolution, depthwise and fully connected layers with f16 weights (test fixture)"
    } else {
        "16x8 convolution, depthwise and fully connected layers (test fixture)"
    }
    .into();
    let x = b
        .tensor("x", DType::F32, &[1, 8, 8, 3], QuantSpec::None)
        .unwrap();
    b.input(x);
    let (conv, dw) = (
        ConvSpec::new(12, 3).same(8, 8),
        ConvSpec::new(12, 3).same(8, 8),
    );
    let relu6 = FusedActivation { min: 0.0, max: 6.0 };
    let params = |range: f32| match precision {
        Precision::I16 => QuantParams::i16_from_range(-range, range),
        _ => QuantParams::i8_from_range(-range, range),
    };
    let dtype = if precision == Precision::I16 {
        DType::I16
    } else {
        DType::I8
    };
    let out = match precision {
        Precision::F32 | Precision::F16 => {
            // The same layers; the f16 network stores its weights as f16.
            let (conv2d, depthwise, dense) = if precision == Precision::F16 {
                (
                    ModelBuilder::conv2d_f16 as Float4d,
                    ModelBuilder::depthwise_conv2d_f16 as Float4d,
                    ModelBuilder::fully_connected_f16 as FloatDense,
                )
            } else {
                (
                    ModelBuilder::conv2d_f32 as Float4d,
                    ModelBuilder::depthwise_conv2d_f32 as Float4d,
                    ModelBuilder::fully_connected_f32 as FloatDense,
                )
            };
            let relu = FusedActivation::RELU;
            let c = conv2d(&mut b, "conv", x, conv, &conv_w, Some(&conv_b), relu).unwrap();
            let d = depthwise(&mut b, "dw", c, dw, &dw_w, Some(&dw_b), relu6).unwrap();
            let flat = b.reshape("flat", d, &[1, 8 * 8 * 12]).unwrap();
            let none = FusedActivation::NONE;
            let f = dense(&mut b, "fc", flat, &fc_w, Some(&fc_b), none).unwrap();
            b.output(c);
            b.output(d);
            f
        }
        Precision::I8 | Precision::I16 => {
            let q = b.quantize("x.q", x, params(1.0), dtype).unwrap();
            let (c, d, f) = if precision == Precision::I16 {
                let c = b
                    .conv2d_i16(
                        "conv",
                        q,
                        conv,
                        &conv_w,
                        Some(&conv_b),
                        params(ranges[0]),
                        FusedActivation::RELU,
                    )
                    .unwrap();
                let d = b
                    .depthwise_conv2d_i16("dw", c, dw, &dw_w, Some(&dw_b), params(ranges[1]), relu6)
                    .unwrap();
                let flat = b.reshape("flat", d, &[1, 8 * 8 * 12]).unwrap();
                let f = b
                    .fully_connected_i16(
                        "fc",
                        flat,
                        &fc_w,
                        Some(&fc_b),
                        params(ranges[2]),
                        FusedActivation::NONE,
                    )
                    .unwrap();
                (c, d, f)
            } else {
                let c = b
                    .conv2d_i8(
                        "conv",
                        q,
                        conv,
                        &conv_w,
                        Some(&conv_b),
                        params(ranges[0]),
                        FusedActivation::RELU,
                    )
                    .unwrap();
                let d = b
                    .depthwise_conv2d_i8("dw", c, dw, &dw_w, Some(&dw_b), params(ranges[1]), relu6)
                    .unwrap();
                let flat = b.reshape("flat", d, &[1, 8 * 8 * 12]).unwrap();
                let f = b
                    .fully_connected_i8(
                        "fc",
                        flat,
                        &fc_w,
                        Some(&fc_b),
                        params(ranges[2]),
                        FusedActivation::NONE,
                    )
                    .unwrap();
                (c, d, f)
            };
            let _ = (c, d);
            b.dequantize("y", f).unwrap()
        }
    };
    b.output(out);
    b
}

/// The largest magnitude of the float network's conv, depthwise and FC outputs on the
/// seeded input.
fn layered_ranges() -> [f32; 3] {
    let float = layered_network(Precision::F32, [1.0; 3]).build().unwrap();
    let outputs = run(&float.bytes, SEED);
    // Outputs: conv, dw, fc.
    let peak = |bytes: &[u8]| f32s(bytes).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    [peak(&outputs[0]), peak(&outputs[1]), peak(&outputs[2])]
}

fn int8_zoo() -> ModelBuilder {
    let mut b = ModelBuilder::new("int8-zoo");
    b.metadata.description =
        "every int8 op of format 1.0 in one small network (test fixture)".into();
    let x = int8_input(&mut b, "x");
    b.input(x);
    for out in int8_network(&mut b, &mut Weights(1), x) {
        b.output(out);
    }
    b
}

fn format_1_0() -> ModelBuilder {
    let mut b = ModelBuilder::new("format-1.0");
    b.metadata.description =
        "every op kind of format 1.0, float and int8 (compatibility fixture)".into();
    b.metadata.labels = (0..10).map(|i| format!("class {i}")).collect();
    b.metadata
        .constants
        .push(("input.mean".into(), vec![0.5, 0.25, 0.125]));
    let xf = b
        .tensor("x_f32", DType::F32, &[1, 8, 8, 3], QuantSpec::None)
        .unwrap();
    let xq = int8_input(&mut b, "x_i8");
    b.input(xf);
    b.input(xq);
    let mut outputs = float_network(&mut b, &mut Weights(2), xf);
    outputs.extend(int8_network(&mut b, &mut Weights(3), xq));
    for out in outputs {
        b.output(out);
    }
    b
}

/// Runs a model on the seeded inputs and returns each output's bytes.
fn run(bytes: &[u8], seed: u32) -> Vec<Vec<u8>> {
    let aligned = AlignedBytes::new(bytes);
    let model = Model::from_bytes(&aligned).unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter = Interpreter::new(&model, &mut arena).unwrap();
    fill_inputs(&mut interpreter, u64::from(seed)).unwrap();
    interpreter.invoke().unwrap();
    (0..interpreter.output_count())
        .map(|i| interpreter.output_bytes(i).unwrap().to_vec())
        .collect()
}

fn digest(outputs: &[Vec<u8>]) -> u32 {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut d = crc.digest();
    for o in outputs {
        d.update(o);
    }
    d.finalize()
}

fn write_requested(name: &str) -> bool {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.loam"));
    match std::env::var("LOAM_WRITE_FIXTURES").as_deref() {
        Ok("1") | Ok("all") => {
            !path.exists()
                || std::fs::metadata(&path)
                    .map(|m| m.len() == 0)
                    .unwrap_or(true)
        }
        Ok(v) => v == name,
        Err(_) => false,
    }
}

fn save(name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.loam"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    eprintln!("wrote {}", path.display());
}

#[test]
fn write_fixtures_when_asked() {
    if write_requested("int8-zoo") {
        let mut b = int8_zoo();
        let first = b.build().unwrap();
        let d = digest(&run(&first.bytes, SEED));
        b.metadata.constants.push((
            SELFCHECK_CONSTANT.into(),
            selfcheck_values(SEED, d).to_vec(),
        ));
        save("int8-zoo", &b.build().unwrap().bytes);
    }
    if write_requested("finetune-int8") {
        let mut b = loam::train::check::check_network(true);
        let first = AlignedBytes::new(&b.build().unwrap().bytes);
        let model = Model::from_bytes(&first).unwrap();
        let check = train(&model);
        b.metadata.constants.push((
            loam::train::check::FINETUNE_CONSTANT.into(),
            loam::train::check::record_values(FINETUNE_SEED, FINETUNE_STEPS, check.digest).to_vec(),
        ));
        save("finetune-int8", &b.build().unwrap().bytes);
    }
    if write_requested("finetune-plan") {
        use loam::format::WeightStorage;
        use loam::format::writer::{
            PlannedLayer, PlannedTraining, PlannedUpdate, with_training_plan,
        };
        let mut b = loam::train::check::check_network(true);
        let with_plan = |bytes: &[u8]| {
            let aligned = AlignedBytes::new(bytes);
            let model = Model::from_bytes(&aligned).unwrap();
            let ops: Vec<usize> = model
                .ops()
                .enumerate()
                .filter(|(_, o)| o.kind == OpKind::FullyConnected.code())
                .map(|(i, _)| i)
                .collect();
            let plan = PlannedTraining {
                layers: vec![
                    PlannedLayer {
                        op: ops[1],
                        update: PlannedUpdate::Channels(vec![0, 3, 5, 7, 11, 14]),
                    },
                    PlannedLayer {
                        op: ops[2],
                        update: PlannedUpdate::Full,
                    },
                ],
                weights: WeightStorage::Int8,
            };
            with_training_plan(&model, Some(&plan)).unwrap()
        };
        let first = AlignedBytes::new(&with_plan(&b.build().unwrap().bytes));
        let check = train(&Model::from_bytes(&first).unwrap());
        b.metadata.constants.push((
            loam::train::check::FINETUNE_CONSTANT.into(),
            loam::train::check::record_values(FINETUNE_SEED, FINETUNE_STEPS, check.digest).to_vec(),
        ));
        save("finetune-plan", &with_plan(&b.build().unwrap().bytes));
    }
    if write_requested("int16-layers") {
        let mut b = layered_network(Precision::I16, layered_ranges());
        let first = b.build().unwrap();
        let d = digest(&run(&first.bytes, SEED));
        b.metadata.constants.push((
            SELFCHECK_CONSTANT.into(),
            selfcheck_values(SEED, d).to_vec(),
        ));
        save("int16-layers", &b.build().unwrap().bytes);
    }
    if write_requested("f16-weights") {
        let mut b = layered_network(Precision::F16, [1.0; 3]);
        let first = b.build().unwrap();
        let outputs = run(&first.bytes, SEED);
        let recorded: Vec<f32> = outputs.iter().flat_map(|o| f32s(o)).collect();
        b.metadata
            .constants
            .push((loam::selftest::EXPECTED_CONSTANT.into(), recorded));
        b.metadata.constants.push((
            SELFCHECK_CONSTANT.into(),
            selfcheck_values(SEED, digest(&outputs)).to_vec(),
        ));
        save("f16-weights", &b.build().unwrap().bytes);
    }
    if write_requested("format-1.0") {
        let mut b = format_1_0();
        let first = b.build().unwrap();
        let outputs = run(&first.bytes, SEED);
        let aligned = AlignedBytes::new(&first.bytes);
        let model = Model::from_bytes(&aligned).unwrap();
        for (i, bytes) in outputs.iter().enumerate() {
            let t = model
                .tensor(usize::from(model.outputs().get(i).unwrap()))
                .unwrap();
            let values: Vec<f32> = match t.dtype {
                DType::F32 => f32s(bytes),
                DType::I8 => bytes.iter().map(|&v| f32::from(v as i8)).collect(),
                other => panic!("unexpected output type {other}"),
            };
            b.metadata
                .constants
                .push((format!("{EXPECTED_PREFIX}{i}"), values));
        }
        b.metadata.constants.push((
            SELFCHECK_CONSTANT.into(),
            selfcheck_values(SEED, digest(&outputs)).to_vec(),
        ));
        save("format-1.0", &b.build().unwrap().bytes);
    }
}

/// The file written by format 1.0 loads, plans, and computes what it computed when written:
/// int8 outputs exactly, float outputs within a relative 1e-4 (float kernels differ between
/// ISAs in summation order).
#[test]
fn the_first_format_version_still_loads_and_runs() {
    let aligned = AlignedBytes::new(FORMAT_1_0);
    let model = Model::from_bytes(&aligned).unwrap();
    model.check_plan().unwrap();
    assert_eq!(model.format_version(), (FORMAT_MAJOR, 0));
    assert_eq!(model.metadata().name, "format-1.0");
    assert_eq!(model.labels().count(), 10);
    assert_eq!(
        model
            .constant("input.mean")
            .unwrap()
            .values()
            .collect::<Vec<_>>(),
        [0.5, 0.25, 0.125]
    );

    // Every op kind of format 1.0 is in the file.
    let kinds: std::collections::HashSet<u16> = model.ops().map(|op| op.kind).collect();
    for kind in OpKind::ALL
        .iter()
        .filter(|k| k.code() <= OpKind::BatchNorm.code())
    {
        assert!(
            kinds.contains(&kind.code()),
            "{kind} is missing from the fixture"
        );
    }

    let outputs = run(FORMAT_1_0, SEED);
    for (i, bytes) in outputs.iter().enumerate() {
        let t = model
            .tensor(usize::from(model.outputs().get(i).unwrap()))
            .unwrap();
        let expected: Vec<f32> = model
            .constant(&format!("{EXPECTED_PREFIX}{i}"))
            .unwrap()
            .values()
            .collect();
        match t.dtype {
            DType::I8 => {
                let got: Vec<f32> = bytes.iter().map(|&v| f32::from(v as i8)).collect();
                assert_eq!(got, expected, "int8 output {i} ({})", t.name);
            }
            DType::F32 => {
                let got: Vec<f32> = f32s(bytes);
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (g - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "float output {i} ({}): {g} vs {e}",
                        t.name
                    );
                }
            }
            other => panic!("unexpected output type {other}"),
        }
    }
}

/// This target computes the int8 zoo's outputs bit for bit as the x86_64 host that wrote it.
#[test]
fn the_int8_zoo_is_bit_exact_on_this_target() {
    let aligned = AlignedBytes::new(INT8_ZOO);
    let model = Model::from_bytes(&aligned).unwrap();
    assert_reproduces_the_recorded_digest(&model);
    // Small enough for the 16 KiB Cortex-M0 board.
    assert!(model.arena_size() < 4096, "arena {}", model.arena_size());
}

/// This target computes the 16x8 fixture's outputs bit for bit as the x86_64 host that wrote
/// it; the file is format 1.2, and what the builder writes today is the same file.
#[test]
fn the_int16_layers_are_bit_exact_on_this_target() {
    let aligned = AlignedBytes::new(INT16_LAYERS);
    let model = Model::from_bytes(&aligned).unwrap();
    assert_eq!(
        model.format_version(),
        (FORMAT_MAJOR, loam::format::MINOR_INT16_LAYERS)
    );
    assert_reproduces_the_recorded_digest(&model);
    let kinds: Vec<(u16, DType)> = model
        .ops()
        .map(|op| {
            let out = model
                .tensor(usize::from(op.outputs.get(0).unwrap()))
                .unwrap();
            (op.kind, out.dtype)
        })
        .collect();
    for kind in [
        OpKind::Conv2d,
        OpKind::DepthwiseConv2d,
        OpKind::FullyConnected,
    ] {
        assert!(kinds.contains(&(kind.code(), DType::I16)), "{kinds:?}");
    }
}

/// The f16-weight fixture (format 1.3, written by the first runtime with f16 weights, never
/// regenerated): its convolution, depthwise and fully-connected weights are f16, and this
/// target computes the outputs the x86_64 host recorded within 1e-5 + 1e-4 relative (float
/// kernels sum in another order on each ISA).
#[test]
fn the_f16_weights_compute_what_the_host_did() {
    let aligned = AlignedBytes::new(F16_WEIGHTS);
    let model = Model::from_bytes(&aligned).unwrap();
    assert_eq!(
        model.format_version(),
        (FORMAT_MAJOR, loam::format::MINOR_F16_WEIGHTS)
    );
    let weights: Vec<DType> = model
        .ops()
        .filter(|op| op.kind != OpKind::Reshape.code())
        .map(|op| {
            model
                .tensor(usize::from(op.inputs.get(1).unwrap()))
                .unwrap()
                .dtype
        })
        .collect();
    assert_eq!(weights, [DType::F16; 3]);
    let mut arena = vec![0u8; model.arena_size() + 16];
    let check = loam::selftest::check_model_within(&model, &mut arena, 1e-5, 1e-4).unwrap();
    assert!(check.passed(), "{check:?}");
}

/// What f16 weights are for: half the flash of f32 weights, at outputs that stay within the
/// weights' rounding (binary16 keeps 11 significant bits, about 66 dB).
#[test]
fn f16_weights_halve_the_flash_and_keep_the_float_outputs() {
    let build = |p: Precision| layered_network(p, [1.0; 3]).build().unwrap();
    let (float, half) = (build(Precision::F32), build(Precision::F16));
    let weights = 12 * 3 * 3 * 3 + 3 * 3 * 12 + 10 * 8 * 8 * 12;
    let saved = float.bytes.len() - half.bytes.len();
    println!(
        "file: f32 weights {} bytes, f16 weights {} bytes ({} weights)",
        float.bytes.len(),
        half.bytes.len(),
        weights
    );
    // Each weight saves two bytes; alignment padding moves the total by at most a few dozen.
    assert!(saved.abs_diff(2 * weights) <= 64, "saved {saved}");
    let (want, got) = (run(&float.bytes, SEED), run(&half.bytes, SEED));
    for (o, (w, g)) in want.iter().zip(&got).enumerate() {
        let (w, g) = (f32s(w), f32s(g));
        let signal: f64 = w.iter().map(|v| f64::from(*v).powi(2)).sum();
        let noise: f64 = w
            .iter()
            .zip(&g)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let db = 10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10();
        println!("output {o}: f16 weights against f32 weights, SQNR {db:.1} dB");
        assert!(db > 55.0, "output {o}: {db} dB");
    }
}

/// What 16x8 layers are for: the same network with int16 activations is far closer to the
/// float one than with int8 (each bit is about 6 dB), at the same int8 weights.
#[test]
fn int16_layers_are_far_closer_to_float_than_int8() {
    let ranges = layered_ranges();
    let outputs = |p: Precision| {
        let built = layered_network(p, ranges).build().unwrap();
        let out = run(&built.bytes, SEED);
        f32s(out.last().unwrap())
    };
    let float = outputs(Precision::F32);
    let sqnr = |q: &[f32]| {
        let signal: f64 = float.iter().map(|v| f64::from(*v).powi(2)).sum();
        let noise: f64 = float
            .iter()
            .zip(q)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        10.0 * (signal / noise).log10()
    };
    let (i8_db, i16_db) = (
        sqnr(&outputs(Precision::I8)),
        sqnr(&outputs(Precision::I16)),
    );
    println!("output SQNR against float: int8 {i8_db:.1} dB, 16x8 {i16_db:.1} dB");
    assert!(i8_db > 20.0, "int8 {i8_db}");
    // The weights stay int8, so their rounding bounds both; activations gain the rest.
    assert!(i16_db > i8_db + 6.0, "int8 {i8_db} dB, 16x8 {i16_db} dB");
}

/// The float PyTorch CNN imported by `loam import`: this target's outputs are within 1e-5 +
/// 1e-4 relative of the x86_64 host's (float kernels sum in another order on each ISA).
#[test]
fn the_imported_float_pytorch_cnn_computes_what_the_host_did() {
    let aligned = AlignedBytes::new(PYTORCH_CNN_F32);
    let model = Model::from_bytes(&aligned).unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let check = loam::selftest::check_model_within(&model, &mut arena, 1e-5, 1e-4).unwrap();
    assert!(check.passed(), "{check:?}");
}

/// The PyTorch CNN quantized by ONNX Runtime and imported by `loam import` (written by the
/// tools' import tests): this target computes the outputs the x86_64 host recorded.
#[test]
fn the_imported_pytorch_cnn_is_bit_exact_on_this_target() {
    let aligned = AlignedBytes::new(PYTORCH_CNN);
    let model = Model::from_bytes(&aligned).unwrap();
    assert_reproduces_the_recorded_digest(&model);
}

/// Every fixture, run by an interpreter that keeps its records decoded (and its layers'
/// prepared words) in the arena past the plan, computes the bytes of one that decodes them as
/// each op runs: floats included, since the same kernels run in the same order.
#[test]
fn kept_records_compute_the_same_bytes_on_every_fixture() {
    for bytes in [
        FORMAT_1_0,
        INT8_ZOO,
        FINETUNE_INT8,
        FINETUNE_PLAN,
        PYTORCH_CNN,
        PYTORCH_CNN_F32,
        INT16_LAYERS,
        F16_WEIGHTS,
    ] {
        let aligned = AlignedBytes::new(bytes);
        let model = Model::from_bytes(&aligned).unwrap();
        let name = model.metadata().name;
        let run = |arena: &mut [u8]| {
            let mut interpreter = Interpreter::new(&model, arena).unwrap();
            fill_inputs(&mut interpreter, u64::from(SEED)).unwrap();
            interpreter.invoke().unwrap();
            let outputs: Vec<Vec<u8>> = (0..interpreter.output_count())
                .map(|i| interpreter.output_bytes(i).unwrap().to_vec())
                .collect();
            (interpreter.keeps_records_decoded(), outputs)
        };
        let mut plain = vec![0u8; model.arena_size() + 16];
        let skip = plain.as_ptr().align_offset(loam::format::ARENA_ALIGN);
        let (kept, want) = run(&mut plain[skip..skip + model.arena_size()]);
        assert!(!kept, "{name}: no room, yet records kept");
        let mut roomy = vec![0u8; Interpreter::arena_size_with_records(&model)];
        let (kept, got) = run(&mut roomy);
        assert!(kept, "{name}: the records do not fit their own size");
        assert_eq!(got, want, "{name}");
    }
}

/// Checks the plan, runs the model's self-check record (its seeded inputs) and asserts the
/// outputs' CRC-32 is the one the x86_64 host recorded.
fn assert_reproduces_the_recorded_digest(model: &Model<'_>) {
    model.check_plan().unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let check = check_model(model, &mut arena).unwrap();
    assert!(
        check.passed(),
        "{}: digest {:#010x}, recorded {:#010x}",
        model.metadata().name,
        check.digest,
        check.expected
    );
}

/// A damaged copy of a valid file is refused with an error, never a panic: every single-byte
/// change (with the checksum fixed up, so validation behind it is reached) either loads and
/// runs or fails cleanly.
#[test]
fn damaged_files_are_refused_cleanly() {
    let mut bytes = INT8_ZOO.to_vec();
    let file_len = bytes.len();
    let step = (file_len / 256).max(1);
    for i in (0..file_len).step_by(step) {
        for flip in [0x01u8, 0xff] {
            let original = bytes[i];
            bytes[i] ^= flip;
            if i >= 32 || !(24..28).contains(&i) {
                let crc = loam::format::checksum(&bytes);
                let mut fixed = bytes.clone();
                if fixed.len() >= 28 {
                    fixed[24..28].copy_from_slice(&crc.to_le_bytes());
                }
                let aligned = AlignedBytes::new(&fixed);
                if let Ok(model) = Model::from_bytes(&aligned) {
                    let _ = model.check_plan();
                    if model.arena_size() < 1 << 20 {
                        loam::fuzzing::invoke_both_ways(&model);
                    }
                }
            }
            bytes[i] = original;
        }
    }
    // Truncations too.
    for len in (0..file_len).step_by(step.max(7)) {
        let aligned = AlignedBytes::new(&bytes[..len]);
        assert!(Model::from_bytes(&aligned).is_err());
    }
}

fn train(model: &Model<'_>) -> loam::train::check::FinetuneCheck {
    use loam::train::Trainer;
    use loam::train::check::{check_config, train_seeded};
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut state = vec![0f32; Trainer::state_len(model, &check_config(model)).unwrap()];
    train_seeded(
        model,
        &mut arena,
        &mut state,
        u64::from(FINETUNE_SEED),
        FINETUNE_STEPS,
    )
    .unwrap()
}

/// Host/device parity of on-device training: 100 steps on this target give the checkpoint
/// bytes an x86_64 host recorded (the Cortex-M firmware runs the same check).
#[test]
fn fine_tuning_trains_to_the_recorded_bits() {
    use loam::train::Trainer;
    use loam::train::check::CHECK_CONFIG;
    let aligned = AlignedBytes::new(FINETUNE_INT8);
    let model = Model::from_bytes(&aligned).unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let len = Trainer::state_len(&model, &CHECK_CONFIG).unwrap();
    let check = trains_to_recorded_bits(&model, &mut arena, len);
    assert_eq!(check.steps, FINETUNE_STEPS);
    assert_eq!(check.updates, FINETUNE_STEPS / 4);
    assert!(check.last_loss < check.first_loss, "{check:?}");
    // Arena and state fit the 16 KiB Cortex-M0 board with room for the stack.
    assert!(
        model.arena_size() + 4 * len < 10 * 1024,
        "{} + 4 x {len}",
        model.arena_size()
    );
}

/// The on-device learning demo on this target: the bundled digits model (trained on the
/// host, int8) replays a user's recorded mirrored digits, and must reach exactly the accuracy
/// and checkpoint bytes the x86_64 host recorded (`tools/tests/device_demo.rs` writes the
/// recording; the Cortex-M firmware replays it too).
#[test]
fn the_mirrored_digits_user_replays_to_the_recorded_figures() {
    use loam::train::Trainer;
    use loam::train::replay::{Recording, replay};
    let model_bytes = AlignedBytes::new(include_bytes!("../../models/digits/model.loam"));
    let model = Model::from_bytes(&model_bytes).unwrap();
    let recording = Recording::parse(include_bytes!("data/digits-mirrored.lmus")).unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut state = vec![0f32; Trainer::state_len(&model, &recording.config).unwrap()];
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, recording.config).unwrap();
    let report = replay(&mut trainer, &recording, &mut || 0).unwrap();
    assert!(
        report.matches(&recording.expected),
        "{report:?} vs recorded {:?}",
        recording.expected
    );
    assert!(
        report.correct_after > 2 * report.correct_before,
        "{report:?}"
    );
}

/// The same parity for a stored training plan (format 1.1: sparse rows, int8 weights with
/// stochastic rounding): every target trains to the bits the x86_64 host recorded, in less
/// state than the full two-layer update.
#[test]
fn a_stored_training_plan_trains_to_the_recorded_bits() {
    use loam::format::{LayerUpdate, WeightStorage};
    use loam::train::Trainer;
    use loam::train::check::{CHECK_CONFIG, check_config};
    let aligned = AlignedBytes::new(FINETUNE_PLAN);
    let model = Model::from_bytes(&aligned).unwrap();
    assert_eq!(model.format_version(), (FORMAT_MAJOR, 1));
    let plan = model.training_plan().unwrap();
    assert_eq!(plan.weights, WeightStorage::Int8);
    assert!(matches!(plan.layer(0).unwrap().update, LayerUpdate::Channels(c) if c.len() == 6));
    let mut arena = vec![0u8; model.arena_size() + 16];
    let len = Trainer::state_len(&model, &check_config(&model)).unwrap();
    let full = Trainer::state_len(&model, &CHECK_CONFIG).unwrap();
    assert!(2 * len < full, "{len} of {full}");
    let check = trains_to_recorded_bits(&model, &mut arena, len);
    // Learning itself is the unit tests' subject (100 steps of six rows are too few to
    // show it in a ten-sample loss window); this is about every target's bits.
    assert_eq!(check.updates, FINETUNE_STEPS / 4);
}

/// Runs the fine-tune check `model` records with a state of `len` values and asserts this
/// target reproduced the recorded checkpoint digest.
fn trains_to_recorded_bits(
    model: &Model<'_>,
    arena: &mut [u8],
    len: usize,
) -> loam::train::check::FinetuneCheck {
    let mut state = vec![0f32; len];
    let check = loam::train::check::check_model(model, arena, &mut state).unwrap();
    assert!(
        check.passed(),
        "checkpoint digest {:#010x}, recorded {:#010x}",
        check.digest,
        check.expected
    );
    check
}

/// Every fixture copied through `ModelBuilder::from_model` and written again (a fresh memory
/// plan) computes exactly what the original computes: same outputs, bit for bit.
#[test]
fn a_model_copied_through_the_builder_computes_the_same_bits() {
    for (name, bytes) in [
        ("format-1.0", FORMAT_1_0),
        ("int8-zoo", INT8_ZOO),
        ("int16-layers", INT16_LAYERS),
        ("f16-weights", F16_WEIGHTS),
        ("pytorch-cnn-int8", PYTORCH_CNN),
        ("pytorch-cnn-f32", PYTORCH_CNN_F32),
    ] {
        let aligned = AlignedBytes::new(bytes);
        let model = Model::from_bytes(&aligned).unwrap();
        let copy = ModelBuilder::from_model(&model)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(run(&copy.bytes, SEED), run(bytes, SEED), "{name}");
        let copied = AlignedBytes::new(&copy.bytes);
        let copied = Model::from_bytes(&copied).unwrap();
        assert_eq!(copied.format_version(), model.format_version(), "{name}");
        assert_eq!(copied.metadata().description, model.metadata().description);
        assert_eq!(
            copied.labels().collect::<Vec<_>>(),
            model.labels().collect::<Vec<_>>()
        );
        assert!(copy.plan.arena_size <= model.arena_size(), "{name}");
    }
}

/// Converting the float models' weights to f16 halves their weight bytes, writes format 1.3
/// and keeps their outputs within the weights' rounding; the int8 ones have nothing to
/// convert.
#[test]
fn float_weights_convert_to_f16_and_int8_ones_stay() {
    for (name, bytes, float) in [
        ("format-1.0", FORMAT_1_0, true),
        ("pytorch-cnn-f32", PYTORCH_CNN_F32, true),
        ("int8-zoo", INT8_ZOO, false),
    ] {
        let aligned = AlignedBytes::new(bytes);
        let model = Model::from_bytes(&aligned).unwrap();
        let mut b = ModelBuilder::from_model(&model).unwrap();
        let converted = b.store_float_weights_as_f16(&[]).unwrap();
        let half = b.build().unwrap();
        if !float {
            assert_eq!(converted.tensors, 0, "{name}");
            assert_eq!(half.bytes.len(), bytes.len(), "{name}");
            continue;
        }
        assert!(converted.tensors > 0, "{name}");
        println!("{name}: {converted:?}");
        assert!(
            converted.largest_relative_error <= 1.0 / 2048.0,
            "{name}: {converted:?}"
        );
        let saved = bytes.len() - half.bytes.len();
        assert!(
            saved.abs_diff(2 * converted.weights) <= 64 * converted.tensors,
            "{name}"
        );
        let aligned_half = AlignedBytes::new(&half.bytes);
        let half_model = Model::from_bytes(&aligned_half).unwrap();
        assert_eq!(
            half_model.format_version(),
            (FORMAT_MAJOR, loam::format::MINOR_F16_WEIGHTS)
        );
        let (want, got) = (run(bytes, SEED), run(&half.bytes, SEED));
        let outputs = model.outputs();
        for (o, (w, g)) in want.iter().zip(&got).enumerate() {
            let t = model.tensor(usize::from(outputs.get(o).unwrap())).unwrap();
            if t.dtype != DType::F32 {
                continue;
            }
            let (w, g) = (f32s(w), f32s(g));
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            let worst = w
                .iter()
                .zip(&g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "{name} output {o}: largest difference {:.2e} of {scale:.2e}",
                worst
            );
            assert!(
                worst <= 1e-2 * scale,
                "{name} output {o}: {worst} of {scale}"
            );
        }
    }
}
