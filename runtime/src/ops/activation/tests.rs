use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
use crate::ops::testing::{compare_kernels, f32s, i8s, run_model};
use proptest::prelude::*;
use std::string::String;
use std::vec;
use std::vec::Vec;

fn unary_strategy() -> impl Strategy<Value = Unary> {
    prop_oneof![
        Just(Unary::Relu),
        (-4.0f32..4.0, 0.0f32..4.0).prop_map(|(min, w)| Unary::Clip { min, max: min + w }),
        Just(Unary::RELU6),
        (-2.0f32..2.0).prop_map(|alpha| Unary::LeakyRelu { alpha }),
        Just(Unary::Sigmoid),
        Just(Unary::Tanh),
        (-1.0f32..1.0, -1.0f32..1.0).prop_map(|(alpha, beta)| Unary::HardSigmoid { alpha, beta }),
        Just(Unary::HARD_SIGMOID),
        Just(Unary::HardSwish),
    ]
}

fn all_unary() -> [Unary; 8] {
    [
        Unary::Relu,
        Unary::RELU6,
        Unary::Clip {
            min: -1.5,
            max: f32::INFINITY,
        },
        Unary::LeakyRelu { alpha: 0.1 },
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::HARD_SIGMOID,
        Unary::HardSwish,
    ]
}

/// Runs a unary kernel out of place or in place.
fn run_unary(kernel: UnaryF32Kernel, f: Unary, x: &[f32], in_place: bool) -> Vec<f32> {
    if in_place {
        let mut out = x.to_vec();
        kernel(f, Source::Output, &mut out);
        out
    } else {
        let mut out = vec![0f32; x.len()];
        kernel(f, Source::Slice(x), &mut out);
        out
    }
}

fn floats_equal(want: &[f32], got: &[f32]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(std::format!("length {} vs {}", want.len(), got.len()));
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if !F32_TOLERANCE.accepts(*w, *g, 0, 0.0) {
            return Err(std::format!("element {i}: want {w}, got {g}"));
        }
    }
    Ok(())
}

/// How many fast paths of `table` this CPU runs, so a test can tell they were compared.
fn fast_paths<F>(table: &[crate::isa::Kernel<F>]) -> usize {
    table[1..].iter().filter(|k| k.isa.available()).count()
}

/// A float of interest: the edges of each piece, signed zeros, infinities and NaN.
fn special_floats() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        -1.5,
        6.0,
        -3.0,
        3.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
    ]
}

proptest! {
    /// Every float kernel gives the reference's values exactly, in place or not.
    #[test]
    fn every_unary_f32_kernel_matches_the_reference(
        f in unary_strategy(),
        x in (0usize..80).prop_flat_map(|n| f32s(n, 8.0)),
        in_place in any::<bool>(),
    ) {
        compare_kernels(UNARY_F32_KERNELS, |k| run_unary(k, f, &x, in_place), floats_equal)?;
    }

    /// The float definitions agree with double-precision math to within a few ulps.
    #[test]
    fn reference_matches_real_math(f in unary_strategy(), x in -12.0f32..12.0) {
        let d = f64::from(x);
        let clamp = |v: f64, lo: f64, hi: f64| v.max(lo).min(hi);
        let want = match f {
            Unary::Relu => d.max(0.0),
            Unary::Clip { min, max } => clamp(d, f64::from(min), f64::from(max)),
            Unary::LeakyRelu { alpha } => if d < 0.0 { f64::from(alpha) * d } else { d },
            Unary::Sigmoid => 1.0 / (1.0 + libm::exp(-d)),
            Unary::Tanh => libm::tanh(d),
            Unary::HardSigmoid { alpha, beta } => clamp(f64::from(alpha) * d + f64::from(beta), 0.0, 1.0),
            Unary::HardSwish => d * clamp(d + 3.0, 0.0, 6.0) / 6.0,
        };
        let got = f64::from(f.eval(x));
        // HardSigmoid rounds `alpha * x` before adding beta, so near a cancellation the
        // error is relative to the terms, not the result.
        let scale = match f {
            Unary::HardSigmoid { alpha, beta } => (f64::from(alpha) * d).abs() + f64::from(beta).abs(),
            _ => want.abs(),
        };
        prop_assert!((got - want).abs() <= 4.0 * f64::from(f32::EPSILON) * scale.max(1e-30) + 1e-37,
            "{:?}({}) = {} want {}", f, x, got, want);
    }

    /// A lookup table holds, for every input value, the float function of the dequantized
    /// input requantized to the output, within one step of exact arithmetic.
    #[test]
    fn lookup_tables_match_real_math(
        f in unary_strategy(),
        (lo, hi) in (-8.0f32..0.0, 0.01f32..8.0),
        (olo, ohi) in (-8.0f32..0.0, 0.01f32..8.0),
    ) {
        let qi = QuantParams::i8_from_range(lo, hi);
        let qo = QuantParams::i8_from_range(olo, ohi);
        let table = lookup_table_i8(f, qi, qo);
        for x in -128i32..=127 {
            let real = f64::from(f.eval(qi.dequantize(x)));
            let want = (real / f64::from(qo.scale) + f64::from(qo.zero_point)).clamp(-128.0, 127.0);
            let got = table[lut_index(x as i8)];
            prop_assert!((f64::from(got) - want).abs() <= 1.0, "x {}: got {} want {}", x, got, want);
        }
    }

    /// The lookup kernel indexes the table at `x + 128`, in place or not.
    #[test]
    fn lookup_reads_entry_x_plus_128(
        table in i8s(LUT_LEN),
        x in (0usize..70).prop_flat_map(i8s),
        in_place in any::<bool>(),
    ) {
        let mut out = if in_place { x.clone() } else { vec![0i8; x.len()] };
        let input = if in_place { Source::Output } else { Source::Slice(&x) };
        lookup_i8(&table, input, &mut out).unwrap();
        for (&v, &o) in x.iter().zip(&out) {
            prop_assert_eq!(o, table[(i32::from(v) + 128) as usize]);
        }
    }

    /// int8 PRelu is within one output step of real arithmetic on the dequantized values.
    #[test]
    fn prelu_i8_matches_real_arithmetic(
        channels in 1usize..20,
        rows in 1usize..4,
        per_channel in any::<bool>(),
        slopes in prop::collection::vec(-2.0f32..2.0, 20),
        (ilo, ihi) in (-8.0f32..0.0, 0.01f32..8.0),
        (olo, ohi) in (-8.0f32..0.0, 0.01f32..8.0),
        seed in any::<u64>(),
    ) {
        let slope_f = &slopes[..if per_channel { channels } else { 1 }];
        let qi = QuantParams::i8_from_range(ilo, ihi);
        let qo = QuantParams::i8_from_range(olo, ohi);
        let qa = QuantParams::i8_from_range(
            slope_f.iter().copied().fold(0.0, f32::min),
            slope_f.iter().copied().fold(0.0, f32::max),
        );
        let slope: Vec<i8> = slope_f.iter().map(|&s| qa.quantize(s, -128, 127) as i8).collect();
        let requant = PReluRequant::new(qi.scale, qa.scale, qo.scale).unwrap();
        let (identity, alpha) = requant.multipliers().unwrap();
        let x: Vec<i8> = (0..rows * channels)
            .map(|i| (seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407)) >> 56) as u8 as i8)
            .collect();
        let op = PReluI8 {
            channels,
            params: PReluI8Params {
                input_zero_point: qi.zero_point,
                alpha_zero_point: qa.zero_point,
                output_zero_point: qo.zero_point,
                identity,
                alpha,
            },
            slope: &slope,
            input: Source::Slice(&x),
        };
        let mut out = vec![0i8; x.len()];
        prelu_i8(&op, &mut out).unwrap();
        for (i, (&v, &o)) in x.iter().zip(&out).enumerate() {
            let xr = f64::from(qi.dequantize(i32::from(v)));
            let a = f64::from(qa.dequantize(i32::from(slope[if per_channel { i % channels } else { 0 }])));
            let real = if xr >= 0.0 { xr } else { a * xr };
            let want = (real / f64::from(qo.scale) + f64::from(qo.zero_point)).clamp(-128.0, 127.0);
            prop_assert!((f64::from(o) - want).abs() <= 1.0, "{}: got {} want {}", i, o, want);
        }
        // In place gives the same bytes.
        let mut in_place = x.clone();
        prelu_i8(&PReluI8 { input: Source::Output, ..op }, &mut in_place).unwrap();
        prop_assert_eq!(in_place, out);
    }

    /// Float PRelu and batch normalization follow their formulas per channel.
    #[test]
    fn prelu_and_batch_norm_f32_follow_their_formulas(
        channels in 1usize..12,
        rows in 1usize..4,
        v in prop::collection::vec(-3.0f32..3.0, 5 * 12),
        x in f32s(48, 5.0),
        per_channel in any::<bool>(),
    ) {
        let x = &x[..rows * channels];
        let slope = &v[..if per_channel { channels } else { 1 }];
        let mut out = vec![0f32; x.len()];
        prelu_f32(&PReluF32 { channels, slope, input: Source::Slice(x) }, &mut out).unwrap();
        for (i, (&xi, &o)) in x.iter().zip(&out).enumerate() {
            let s = slope[if per_channel { i % channels } else { 0 }];
            prop_assert_eq!(o, if xi < 0.0 { s * xi } else { xi });
        }
        let var: Vec<f32> = v[4 * channels..5 * channels].iter().map(|x| x.abs()).collect();
        let op = BatchNormF32 {
            channels,
            scale: &v[..channels],
            bias: &v[channels..2 * channels],
            mean: &v[2 * channels..3 * channels],
            var: &var,
            epsilon: 1e-3,
            input: Source::Slice(x),
        };
        batch_norm_f32(&op, &mut out).unwrap();
        for (i, (&xi, &o)) in x.iter().zip(&out).enumerate() {
            let c = i % channels;
            let d = |v: f32| f64::from(v);
            let want = (d(xi) - d(op.mean[c])) / (d(var[c]) + 1e-3).sqrt() * d(op.scale[c]) + d(op.bias[c]);
            let magnitude = (d(xi).abs() + d(op.mean[c]).abs()) / (d(var[c]) + 1e-3).sqrt() * d(op.scale[c]).abs() + d(op.bias[c]).abs();
            prop_assert!((d(o) - want).abs() <= 8.0 * f64::from(f32::EPSILON) * magnitude, "{}: {} vs {}", i, o, want);
        }
    }
}

/// Lengths on either side of the vector width, with the special values at every position.
#[test]
fn edge_cases_match_the_reference() {
    let specials = special_floats();
    for &n in &[0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
        let x: Vec<f32> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    specials[(i / 3) % specials.len()]
                } else {
                    (i as f32 * 0.77).sin() * 7.0
                }
            })
            .collect();
        for f in all_unary() {
            for in_place in [false, true] {
                let compared = compare_kernels(
                    UNARY_F32_KERNELS,
                    |k| run_unary(k, f, &x, in_place),
                    floats_equal,
                )
                .unwrap();
                assert_eq!(compared, fast_paths(UNARY_F32_KERNELS));
            }
        }
    }
}

#[test]
fn lookup_tables_follow_tflite() {
    // Identity quantization: Relu's table is max(x, zero point), HardSwish/Relu6 saturate.
    let q = QuantParams {
        scale: 0.05,
        zero_point: -10,
    };
    let relu = lookup_table_i8(Unary::Relu, q, q);
    for x in -128i32..=127 {
        assert_eq!(i32::from(relu[lut_index(x as i8)]), x.max(-10));
    }
    // Sigmoid into TFLite's fixed output quantization (1/256, -128): 0 maps to 0.5.
    let out = QuantParams {
        scale: 1.0 / 256.0,
        zero_point: -128,
    };
    let sigmoid = lookup_table_i8(Unary::Sigmoid, q, out);
    assert_eq!(sigmoid[lut_index(-10)], 0);
    assert_eq!(sigmoid[lut_index(127)], 127);
    // Halves round away from zero (TFLite's `TfLiteRound`): 1.5 -> 2, 2.5 -> 3, -1.5 -> -2.
    let q1 = QuantParams {
        scale: 1.0,
        zero_point: 0,
    };
    let half = QuantParams {
        scale: 2.0,
        zero_point: 0,
    };
    let t = lookup_table_i8(Unary::Relu, q1, half);
    assert_eq!(t[lut_index(3)], 2);
    assert_eq!(t[lut_index(5)], 3);
    let leaky = lookup_table_i8(Unary::LeakyRelu { alpha: 1.0 }, q1, half);
    assert_eq!(leaky[lut_index(-3)], -2);
    // Zero points at both ends of the range, in and out.
    for (zi, zo) in [(-128, 127), (127, -128), (-128, -128), (127, 127)] {
        let qi = QuantParams {
            scale: 0.04,
            zero_point: zi,
        };
        let qo = QuantParams {
            scale: 0.03,
            zero_point: zo,
        };
        for f in all_unary() {
            let table = lookup_table_i8(f, qi, qo);
            for x in -128i32..=127 {
                let real = f64::from(f.eval(qi.dequantize(x)));
                let want = (real / 0.03 + f64::from(zo)).clamp(-128.0, 127.0);
                let got = f64::from(table[lut_index(x as i8)]);
                assert!((got - want).abs() <= 1.0, "{f:?} {x}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn validation_names_the_wrong_operand() {
    let x = [0f32; 6];
    let mut out = [0f32; 6];
    assert_eq!(
        unary_f32(Unary::Relu, Source::Slice(&x[..5]), &mut out),
        Err(Error::ShapeMismatch {
            operand: Operand::Input,
            expected: 6,
            actual: 5
        })
    );
    assert_eq!(
        unary_f32(
            Unary::Clip { min: 1.0, max: 0.0 },
            Source::Slice(&x),
            &mut out
        ),
        Err(Error::InvalidQuantization(QuantField::ActivationRange))
    );
    assert_eq!(
        lookup_i8(&[0; 255], Source::Output, &mut [0i8; 4]),
        Err(Error::ShapeMismatch {
            operand: Operand::Weights,
            expected: 256,
            actual: 255
        })
    );
    let op = PReluF32 {
        channels: 3,
        slope: &[1.0, 2.0],
        input: Source::Slice(&x),
    };
    assert_eq!(
        prelu_f32(&op, &mut out),
        Err(Error::ShapeMismatch {
            operand: Operand::Weights,
            expected: 3,
            actual: 2
        })
    );
    let op = PReluF32 {
        channels: 4,
        slope: &[1.0],
        input: Source::Slice(&x),
    };
    assert_eq!(prelu_f32(&op, &mut out), Err(Error::InvalidShape));
    let v = [1f32; 3];
    let op = BatchNormF32 {
        channels: 3,
        scale: &v,
        bias: &v,
        mean: &v[..2],
        var: &v,
        epsilon: 0.0,
        input: Source::Output,
    };
    assert_eq!(
        batch_norm_f32(&op, &mut out),
        Err(Error::ShapeMismatch {
            operand: Operand::Weights,
            expected: 3,
            actual: 2
        })
    );
}

fn per_tensor(q: QuantParams) -> QuantSpec {
    QuantSpec::PerTensor {
        scale: q.scale,
        zero_point: q.zero_point,
    }
}

/// Reads a built model's tensor offsets, to see what the planner shared.
fn arena_offset(bytes: &[u8], name: &str) -> Option<u32> {
    let aligned = crate::format::AlignedBytes::new(bytes);
    let model = crate::format::Model::from_bytes(&aligned).unwrap();
    (0..model.tensor_count()).find_map(|i| {
        let t = model.tensor(i)?;
        match (t.name == name, t.storage) {
            (true, crate::format::Storage::Arena { offset }) => Some(offset),
            _ => None,
        }
    })
}

/// A chain of every float activation: each intermediate dies at the next op, so all but the
/// first run in place.
#[test]
fn float_models_run_like_the_kernels() {
    let x: Vec<f32> = (0..3 * 13).map(|i| (i as f32 * 0.61).sin() * 5.0).collect();
    let slope: Vec<f32> = (0..13).map(|i| i as f32 * 0.05 - 0.3).collect();
    let (scale, bias, mean): (Vec<f32>, Vec<f32>, Vec<f32>) = (
        (0..13).map(|i| 1.0 + i as f32 * 0.1).collect(),
        (0..13).map(|i| i as f32 * -0.2).collect(),
        (0..13).map(|i| (i as f32).cos()).collect(),
    );
    let var: Vec<f32> = (0..13).map(|i| 0.5 + i as f32 * 0.3).collect();

    let mut b = ModelBuilder::new("activations-f32");
    let xt = b
        .tensor("x", DType::F32, &[3, 13], QuantSpec::None)
        .unwrap();
    b.input(xt);
    let mut t = b
        .batch_norm_f32("bn", xt, &scale, &bias, &mean, &var, 1e-5)
        .unwrap();
    t = b.prelu_f32("prelu", t, &slope).unwrap();
    for (i, f) in all_unary().into_iter().enumerate() {
        t = b.activation_f32(&std::format!("f{i}"), t, f).unwrap();
    }
    b.output(t);
    let built = b.build().unwrap();
    assert_eq!(
        arena_offset(&built.bytes, "bn"),
        arena_offset(&built.bytes, "prelu")
    );
    assert_eq!(
        arena_offset(&built.bytes, "prelu"),
        arena_offset(&built.bytes, "f7")
    );
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let got: &[f32] = bytemuck::cast_slice(&out[0]);

    let mut want = vec![0f32; x.len()];
    reference::batch_norm_f32(
        &BatchNormF32 {
            channels: 13,
            scale: &scale,
            bias: &bias,
            mean: &mean,
            var: &var,
            epsilon: 1e-5,
            input: Source::Slice(&x),
        },
        &mut want,
    );
    reference::prelu_f32(
        &PReluF32 {
            channels: 13,
            slope: &slope,
            input: Source::Output,
        },
        &mut want,
    );
    for f in all_unary() {
        reference::unary_f32(f, Source::Output, &mut want);
    }
    assert_eq!(got, &want[..]);
}

/// Every int8 activation as a model, against the kernels run by hand.
#[test]
fn int8_models_run_like_the_kernels() {
    let qx = QuantParams::i8_from_range(-6.0, 6.0);
    let x: Vec<i8> = (0..2 * 9).map(|i| ((i * 29) % 256) as u8 as i8).collect();
    let slope = [0.25f32, -0.5, 1.5, 0.0, 0.1, 0.2, 0.3, -1.0, 2.0];
    let outputs = [
        QuantParams::i8_from_range(0.0, 6.0),
        QuantParams::i8_from_range(-4.0, 4.0),
        QuantParams::i8_from_range(-1.0, 1.0),
        QuantParams {
            scale: 1.0 / 256.0,
            zero_point: -128,
        },
    ];
    for f in all_unary() {
        for &qo in &outputs {
            let mut b = ModelBuilder::new("activation-i8");
            let xt = b.tensor("x", DType::I8, &[2, 9], per_tensor(qx)).unwrap();
            b.input(xt);
            let p = b.prelu_i8("prelu", xt, &slope, qx).unwrap();
            let y = b.activation_i8("y", p, f, qo).unwrap();
            b.output(y);
            let built = b.build().unwrap();
            assert_eq!(
                arena_offset(&built.bytes, "prelu"),
                arena_offset(&built.bytes, "y")
            );
            let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
            let got: &[i8] = bytemuck::cast_slice(&out[0]);

            let qa = QuantParams::i8_from_range(-1.0, 2.0);
            let qslope: Vec<i8> = slope
                .iter()
                .map(|&s| qa.quantize(s, -128, 127) as i8)
                .collect();
            let (identity, alpha) = PReluRequant::new(qx.scale, qa.scale, qx.scale)
                .unwrap()
                .multipliers()
                .unwrap();
            let mut want = vec![0i8; x.len()];
            reference::prelu_i8(
                &PReluI8 {
                    channels: 9,
                    params: PReluI8Params {
                        input_zero_point: qx.zero_point,
                        alpha_zero_point: qa.zero_point,
                        output_zero_point: qx.zero_point,
                        identity,
                        alpha,
                    },
                    slope: &qslope,
                    input: Source::Slice(&x),
                },
                &mut want,
            );
            let table = lookup_table_i8(f, qx, qo);
            reference::lookup_i8(&table, Source::Output, &mut want);
            assert_eq!(got, &want[..], "{f:?} into {qo:?}");
        }
    }
}

/// The first op problem of a model that should not build.
fn op_problem(b: &ModelBuilder) -> OpProblem {
    match b.build() {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

fn graph(dtype: DType, q: QuantSpec, dims: &[usize]) -> (ModelBuilder, TensorId, TensorId) {
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", dtype, dims, q.clone()).unwrap();
    let y = b.tensor("y", dtype, dims, q).unwrap();
    b.input(x);
    b.output(y);
    (b, x, y)
}

#[test]
fn check_rejects_bad_operands() {
    let q = per_tensor(QuantParams::i8_from_range(-1.0, 1.0));

    // Attributes of another kind.
    let (mut b, x, y) = graph(DType::F32, QuantSpec::None, &[4]);
    b.op(
        OpKind::Sigmoid,
        "f",
        &[Some(x)],
        &[y],
        &ActivationAttributes::Unary(Unary::Tanh),
    )
    .unwrap();
    assert!(matches!(op_problem(&b), OpProblem::Attribute(_)));

    // A lookup table of the wrong length.
    let (mut b, x, y) = graph(DType::I8, q.clone(), &[4]);
    let t = b
        .constant("t", &[255], &[0i8; 255], QuantSpec::None)
        .unwrap();
    b.op(
        OpKind::Tanh,
        "f",
        &[Some(x), Some(t)],
        &[y],
        &ActivationAttributes::Unary(Unary::Tanh),
    )
    .unwrap();
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Input(1), _)
    ));

    // A lookup table that is not a constant.
    let (mut b, x, y) = graph(DType::I8, q.clone(), &[4]);
    let t = b.tensor("t", DType::I8, &[256], QuantSpec::None).unwrap();
    b.input(t);
    b.op(
        OpKind::Tanh,
        "f",
        &[Some(x), Some(t)],
        &[y],
        &ActivationAttributes::Unary(Unary::Tanh),
    )
    .unwrap();
    assert_eq!(op_problem(&b), OpProblem::NotConstant(Slot::Input(1)));

    // An output of another shape.
    let mut b = ModelBuilder::new("shape");
    let x = b.tensor("x", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[6], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(
        OpKind::Relu,
        "f",
        &[Some(x)],
        &[y],
        &ActivationAttributes::Unary(Unary::Relu),
    )
    .unwrap();
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Output(0), _)
    ));

    // int8 batch normalization.
    let (mut b, x, y) = graph(DType::I8, q.clone(), &[2, 3]);
    let v = b.constant("v", &[3], &[1f32; 3], QuantSpec::None).unwrap();
    b.op(
        OpKind::BatchNorm,
        "bn",
        &[Some(x), Some(v), Some(v), Some(v), Some(v)],
        &[y],
        &ActivationAttributes::BatchNorm { epsilon: 1e-5 },
    )
    .unwrap();
    assert_eq!(op_problem(&b), OpProblem::DType(Slot::Input(0)));

    // A batch-norm vector of the wrong length, and a negative epsilon.
    let (mut b, x, y) = graph(DType::F32, QuantSpec::None, &[2, 3]);
    let v = b.constant("v", &[3], &[1f32; 3], QuantSpec::None).unwrap();
    let w = b.constant("w", &[2], &[1f32; 2], QuantSpec::None).unwrap();
    b.op(
        OpKind::BatchNorm,
        "bn",
        &[Some(x), Some(v), Some(v), Some(w), Some(v)],
        &[y],
        &ActivationAttributes::BatchNorm { epsilon: 1e-5 },
    )
    .unwrap();
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Input(3), _)
    ));
    let (mut b, x, y) = graph(DType::F32, QuantSpec::None, &[2, 3]);
    let v = b.constant("v", &[3], &[1f32; 3], QuantSpec::None).unwrap();
    b.op(
        OpKind::BatchNorm,
        "bn",
        &[Some(x), Some(v), Some(v), Some(v), Some(v)],
        &[y],
        &ActivationAttributes::BatchNorm { epsilon: -1.0 },
    )
    .unwrap();
    assert_eq!(op_problem(&b), OpProblem::Attribute("epsilon"));

    // A PRelu slope that matches neither one value nor the channels.
    let (mut b, x, y) = graph(DType::F32, QuantSpec::None, &[2, 3]);
    let s = b.constant("s", &[2], &[1f32; 2], QuantSpec::None).unwrap();
    b.op(
        OpKind::PRelu,
        "p",
        &[Some(x), Some(s)],
        &[y],
        &ActivationAttributes::PRelu { requant: None },
    )
    .unwrap();
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Input(1), _)
    ));

    // int8 PRelu without its multipliers.
    let (mut b, x, y) = graph(DType::I8, q.clone(), &[2, 3]);
    let s = b.constant("s", &[3], &[1i8; 3], q.clone()).unwrap();
    b.op(
        OpKind::PRelu,
        "p",
        &[Some(x), Some(s)],
        &[y],
        &ActivationAttributes::PRelu { requant: None },
    )
    .unwrap();
    assert!(matches!(op_problem(&b), OpProblem::Attribute(_)));

    // Clip with its bounds reversed.
    let (mut b, x, y) = graph(DType::F32, QuantSpec::None, &[4]);
    b.op(
        OpKind::Clip,
        "c",
        &[Some(x)],
        &[y],
        &ActivationAttributes::Unary(Unary::Clip {
            min: 1.0,
            max: -1.0,
        }),
    )
    .unwrap();
    assert!(matches!(op_problem(&b), OpProblem::Attribute(_)));
}
