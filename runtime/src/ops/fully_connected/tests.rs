use super::*;
use crate::error::QuantField;
use crate::fixed_point::QuantizedMultiplier;
use crate::selftest::{real_output, rearranged_accumulator};
use proptest::prelude::*;
use std::format;
use std::vec;
use std::vec::Vec;

/// A random int8 fully-connected problem.
#[derive(Debug, Clone)]
struct Problem {
    shape: FullyConnectedShape,
    input_zero_point: i32,
    output_zero_point: i32,
    multipliers: Vec<QuantizedMultiplier>,
    activation: (i8, i8),
    input: Vec<i8>,
    weights: Vec<i8>,
    bias: Option<Vec<i32>>,
}

impl Problem {
    fn op(&self) -> FullyConnectedI8<'_> {
        FullyConnectedI8 {
            shape: self.shape,
            params: FullyConnectedI8Params {
                input_zero_point: self.input_zero_point,
                output_zero_point: self.output_zero_point,
                multipliers: &self.multipliers,
                activation_min: self.activation.0,
                activation_max: self.activation.1,
            },
            input: &self.input,
            weights: &self.weights,
            bias: self.bias.as_deref(),
        }
    }
}

fn problem() -> impl Strategy<Value = Problem> {
    (
        // Past eight rows, so the batched (packed-weight) fast paths see whole tiles and a
        // partial one.
        1usize..20,
        // Past 128 inputs too, where the AVX-512 VNNI kernel stops handing short rows to
        // the AVX2 one.
        prop_oneof![1usize..80, 120usize..300],
        1usize..40,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(batch, in_features, out_features, per_channel, with_bias)| {
                let shape = FullyConnectedShape {
                    batch,
                    in_features,
                    out_features,
                };
                let channels = if per_channel { out_features } else { 1 };
                (
                    // Half the time -128, the zero point of every input a ReLU produced, for
                    // which the single-row VNNI kernel skips its weight sums.
                    prop_oneof![Just(-128i8), any::<i8>()],
                    any::<i8>(),
                    prop::collection::vec(1e-5f64..0.05, channels),
                    (any::<i8>(), any::<i8>()),
                    prop::collection::vec(any::<i8>(), batch * in_features),
                    prop::collection::vec(any::<i8>(), out_features * in_features),
                    prop::collection::vec(-(1i32 << 16)..(1 << 16), out_features),
                )
                    .prop_map(
                        move |(izp, ozp, reals, (a, b), input, weights, bias)| Problem {
                            shape,
                            input_zero_point: izp.into(),
                            output_zero_point: ozp.into(),
                            multipliers: reals
                                .into_iter()
                                .map(|r| QuantizedMultiplier::from_real(r).unwrap())
                                .collect(),
                            activation: (a.min(b), a.max(b)),
                            input,
                            weights,
                            bias: with_bias.then_some(bias),
                        },
                    )
            },
        )
}

proptest! {
    /// The reference agrees bit for bit with the TFLite requantization of an independently
    /// computed accumulator, and within one step of exact real arithmetic.
    #[test]
    fn reference_matches_independent_model(p in problem()) {
        let s = p.shape;
        let mut out = vec![0i8; s.batch * s.out_features];
        let op = p.op();
        fully_connected_i8(&op, &mut out).unwrap();
        for b in 0..s.batch {
            for o in 0..s.out_features {
                let acc = i32::try_from(rearranged_accumulator(&op, b, o)).unwrap();
                let (lo, hi) = (i32::from(p.activation.0), i32::from(p.activation.1));
                let fixed = (op.params.multiplier(o).apply(acc) + p.output_zero_point).clamp(lo, hi);
                let got = i32::from(out[b * s.out_features + o]);
                prop_assert_eq!(got, fixed);
                let real = real_output(&op, b, o);
                prop_assert!((f64::from(got) - real).abs() <= 1.0, "got {} real {}", got, real);
            }
        }
    }
}

#[test]
fn validation_names_the_wrong_operand() {
    let m = [QuantizedMultiplier::from_real(0.01).unwrap()];
    let input = [0i8; 6];
    let weights = [0i8; 12];
    let bias = [0i32; 4];
    let good = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 2,
            in_features: 3,
            out_features: 4,
        },
        params: FullyConnectedI8Params {
            input_zero_point: 0,
            output_zero_point: 0,
            multipliers: &m,
            activation_min: -128,
            activation_max: 127,
        },
        input: &input,
        weights: &weights,
        bias: Some(&bias),
    };
    let mut out = [0i8; 8];
    assert_eq!(fully_connected_i8(&good, &mut out), Ok(()));

    let mismatch = |operand, expected, actual| {
        Err(Error::ShapeMismatch {
            operand,
            expected,
            actual,
        })
    };
    assert_eq!(
        fully_connected_i8(&good, &mut out[..7]),
        mismatch(Operand::Output, 8, 7)
    );
    let op = FullyConnectedI8 {
        input: &input[..5],
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Input, 6, 5)
    );
    let op = FullyConnectedI8 {
        weights: &weights[..11],
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Weights, 12, 11)
    );
    let op = FullyConnectedI8 {
        bias: Some(&bias[..3]),
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Bias, 4, 3)
    );
    let two = [m[0]; 2];
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            multipliers: &two,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Multipliers, 4, 2)
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            input_zero_point: 128,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::InputZeroPoint))
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            output_zero_point: -129,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::OutputZeroPoint))
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            activation_min: 1,
            activation_max: 0,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::ActivationRange))
    );
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 0,
            ..good.shape
        },
        ..good
    };
    assert_eq!(fully_connected_i8(&op, &mut out), Err(Error::InvalidShape));
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: usize::MAX,
            ..good.shape
        },
        ..good
    };
    assert_eq!(fully_connected_i8(&op, &mut out), Err(Error::InvalidShape));
}

use crate::ops::testing::{compare_kernels, exact, f32s, run_model};
use crate::ops::{FusedActivation, Tolerance};

fn run_i8(kernel: I8Kernel, op: &FullyConnectedI8<'_>) -> Vec<i8> {
    let mut out = vec![0i8; op.shape.batch * op.shape.out_features];
    kernel(op, &mut out);
    out
}

proptest! {
    /// Every int8 kernel this CPU runs gives the reference's bytes.
    #[test]
    fn every_i8_kernel_matches_the_reference(p in problem()) {
        let op = p.op();
        compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact)?;
    }

    /// The layer re-expressed with input zero point -128 and the folded bias (what an
    /// interpreter with room for prepared words runs) gives the original layer's bytes on
    /// every kernel this CPU runs, the reference included.
    #[test]
    fn the_folded_bias_gives_the_layers_bytes_on_every_kernel(p in problem()) {
        let want = run_i8(I8_KERNELS[0].run, &p.op());
        let mut folded = vec![0i32; p.shape.out_features];
        fold_input_zero_point(&p.weights, p.bias.as_deref(), p.input_zero_point, &mut folded);
        let mut op = p.op();
        op.params.input_zero_point = -128;
        op.bias = Some(&folded);
        for k in I8_KERNELS.iter().filter(|k| k.isa.available()) {
            let got = run_i8(k.run, &op);
            prop_assert!(exact(&want, &got).is_ok(), "{}: {:?}", k.name, exact(&want, &got));
        }
    }

    /// Every float kernel stays within the dot-product tolerance of the reference.
    #[test]
    fn every_f32_kernel_is_within_tolerance(p in f32_problem()) {
        within_tolerance(F32_KERNELS, &p.op())?;
    }

    /// Every f16-weight kernel stays within the same tolerance of the f16 reference, and that
    /// reference is exactly the f32 reference run on the widened weights.
    #[test]
    fn every_f16_kernel_is_within_tolerance(p in f32_problem()) {
        let halves = p.weights_f16();
        let op = p.op_f16(&halves);
        within_tolerance(F16_KERNELS, &op)?;
        let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        let f32_op = FullyConnectedF32 { weights: &widened, ..p.op() };
        let n = op.shape.batch * op.shape.out_features;
        let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
        reference::fully_connected_f32(&f32_op, &mut want);
        reference::fully_connected_f32(&op, &mut got);
        prop_assert_eq!(want, got);
    }
}

proptest! {
    /// With inputs rounded to f16 too: every kernel within the dot-product tolerance of that
    /// reference, and the reference within `2^-11 * sum |x * w|` (plus the f32 summation
    /// error) of the f32 layer on the same f16 weights.
    #[test]
    fn every_half_input_kernel_is_within_tolerance(p in f32_problem()) {
        let halves = p.weights_f16();
        let op = p.op_f16(&halves);
        within_tolerance(HALF_INPUT_KERNELS, &op)?;
        let s = op.shape;
        let n = s.batch * s.out_features;
        let (mut rounded, mut exact) = (vec![0f32; n], vec![0f32; n]);
        reference::fully_connected_f16_half_inputs(&op, &mut rounded);
        reference::fully_connected_f32(&op, &mut exact);
        for i in 0..n {
            let (b, o) = (i / s.out_features, i % s.out_features);
            let magnitude: f32 = (0..s.in_features)
                .map(|k| (op.input[b * s.in_features + k] * halves[o * s.in_features + k].to_f32()).abs())
                .sum::<f32>() + op.bias.map_or(0.0, |bias| bias[o].abs());
            let bound = magnitude / 2048.0 + 4.0 * (s.in_features as f32 + 1.0) * f32::EPSILON * magnitude;
            prop_assert!((rounded[i] - exact[i]).abs() <= bound, "element {i}: {} vs {}", rounded[i], exact[i]);
        }
    }
}

/// A row with an input f16 cannot hold (beyond 65504) runs in f32, in the reference and in
/// every half-input kernel; the other rows are rounded.
#[test]
fn half_inputs_beyond_f16_run_their_row_in_f32() {
    let (in_features, out_features) = (20, 5);
    let mut input: Vec<f32> = (0..2 * in_features)
        .map(|i| (i as f32 * 0.37).sin() * 3.0)
        .collect();
    input[3] = 1.0e5;
    let weights: Vec<f32> = (0..out_features * in_features)
        .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let p = F32Problem {
        shape: FullyConnectedShape {
            batch: 2,
            in_features,
            out_features,
        },
        input,
        weights,
        bias: None,
        activation: (f32::NEG_INFINITY, f32::INFINITY),
    };
    let halves = p.weights_f16();
    let op = p.op_f16(&halves);
    let run = |k: F32Kernel<half::f16>| {
        let mut out = vec![0f32; 2 * out_features];
        k(&op, &mut out);
        out
    };
    let (f32_rows, rounded) = (
        run(reference::fully_connected_f32),
        run(reference::fully_connected_f16_half_inputs),
    );
    assert_eq!(rounded[..out_features], f32_rows[..out_features]);
    assert_ne!(rounded[out_features..], f32_rows[out_features..]);
    assert!(rounded.iter().all(|v| v.is_finite()));
    within_tolerance(HALF_INPUT_KERNELS, &op).unwrap();
}

/// The interpreter rounds f16 layers' inputs only when asked; either way the output is the
/// matching kernel's.
#[test]
fn the_interpreter_rounds_inputs_only_when_asked() {
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::tensor::DType;

    let weights: Vec<f32> = (0..6 * 40)
        .map(|i| ((i * 5) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.29).cos() * 0.3).collect();
    let mut b = ModelBuilder::new("fc16");
    let x = b
        .tensor("x", DType::F32, &[1, 40], QuantSpec::None)
        .unwrap();
    b.input(x);
    let y = b
        .fully_connected_f16("fc", x, &weights, None, FusedActivation::NONE)
        .unwrap();
    b.output(y);
    let bytes = crate::format::AlignedBytes::new(&b.build().unwrap().bytes);
    let model = crate::Model::from_bytes(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let halves: Vec<half::f16> = weights.iter().map(|&w| half::f16::from_f32(w)).collect();
    let op = FullyConnectedF32 {
        shape: FullyConnectedShape {
            batch: 1,
            in_features: 40,
            out_features: 6,
        },
        input: &input,
        weights: &halves[..],
        bias: None,
        activation: (f32::NEG_INFINITY, f32::INFINITY),
    };
    for allow in [false, true] {
        let mut interpreter = crate::Interpreter::new(&model, &mut arena).unwrap();
        interpreter.set_half_precision_inputs(allow);
        interpreter
            .input_mut::<f32>(0)
            .unwrap()
            .copy_from_slice(&input);
        interpreter.invoke().unwrap();
        let mut want = vec![0f32; 6];
        if allow {
            fully_connected_f16_half_inputs(&op, &mut want).unwrap();
        } else {
            fully_connected_f16(&op, &mut want).unwrap();
        }
        assert_eq!(
            interpreter.output::<f32>(0).unwrap(),
            &want[..],
            "allow {allow}"
        );
    }
}

/// Runs every kernel of `table` on `op` and checks each against the reference within
/// [`F32_TOLERANCE`].
fn within_tolerance<W: crate::ops::FloatWeight>(
    table: &[crate::isa::Kernel<F32Kernel<W>>],
    op: &FullyConnectedF32<'_, W>,
) -> Result<usize, proptest::test_runner::TestCaseError> {
    let s = op.shape;
    let magnitude: Vec<f32> = (0..s.batch * s.out_features)
        .map(|i| {
            let (b, o) = (i / s.out_features, i % s.out_features);
            let dot: f32 = (0..s.in_features)
                .map(|k| {
                    (op.input[b * s.in_features + k] * op.weights[o * s.in_features + k].widen())
                        .abs()
                })
                .sum();
            dot + op.bias.map_or(0.0, |bias| bias[o].abs())
        })
        .collect();
    compare_kernels(
        table,
        |k| {
            let mut out = vec![0f32; s.batch * s.out_features];
            k(op, &mut out);
            out
        },
        |want, got| {
            for i in 0..want.len() {
                if !F32_TOLERANCE.accepts(want[i], got[i], s.in_features, magnitude[i]) {
                    return Err(format!("element {i}: want {}, got {}", want[i], got[i]));
                }
            }
            Ok(())
        },
    )
}

/// Named edge cases: zero points at both extremes, multipliers that saturate, reduction
/// lengths on either side of every vector width, and odd output counts.
#[test]
fn edge_cases_match_the_reference() {
    for &in_features in &[1usize, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 130] {
        for &out_features in &[1usize, 3, 4, 5, 9, 17] {
            for &(izp, ozp) in &[(-128, 127), (127, -128), (0, 0)] {
                for (&real, batch) in [1e-4f64, 0.5, 3.0].iter().zip([2, 1, 3]) {
                    let input: Vec<i8> = (0..batch * in_features)
                        .map(|i| if i % 3 == 0 { 127 } else { -128 })
                        .collect();
                    let weights: Vec<i8> = (0..out_features * in_features)
                        .map(|i| if i % 2 == 0 { -128 } else { 127 })
                        .collect();
                    let bias: Vec<i32> =
                        (0..out_features as i32).map(|o| o * 1000 - 2000).collect();
                    let m = [QuantizedMultiplier::from_real(real).unwrap()];
                    let op = FullyConnectedI8 {
                        shape: FullyConnectedShape {
                            batch,
                            in_features,
                            out_features,
                        },
                        params: FullyConnectedI8Params {
                            input_zero_point: izp,
                            output_zero_point: ozp,
                            multipliers: &m,
                            activation_min: -128,
                            activation_max: 127,
                        },
                        input: &input,
                        weights: &weights,
                        bias: Some(&bias),
                    };
                    compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact).unwrap();
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct F32Problem {
    shape: FullyConnectedShape,
    input: Vec<f32>,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    activation: (f32, f32),
}

impl F32Problem {
    fn op(&self) -> FullyConnectedF32<'_> {
        FullyConnectedF32 {
            shape: self.shape,
            input: &self.input,
            weights: &self.weights,
            bias: self.bias.as_deref(),
            activation: self.activation,
        }
    }

    /// The weights rounded to f16.
    fn weights_f16(&self) -> Vec<half::f16> {
        self.weights
            .iter()
            .map(|&w| half::f16::from_f32(w))
            .collect()
    }

    fn op_f16<'a>(&'a self, weights: &'a [half::f16]) -> FullyConnectedF32<'a, half::f16> {
        FullyConnectedF32 {
            shape: self.shape,
            input: &self.input,
            weights,
            bias: self.bias.as_deref(),
            activation: self.activation,
        }
    }
}

fn f32_problem() -> impl Strategy<Value = F32Problem> {
    (1usize..4, 1usize..80, 1usize..40, any::<bool>(), 0usize..3).prop_flat_map(
        |(batch, in_features, out_features, with_bias, act)| {
            let activation = [
                (f32::NEG_INFINITY, f32::INFINITY),
                (0.0, f32::INFINITY),
                (0.0, 6.0),
            ][act];
            (
                f32s(batch * in_features, 4.0),
                f32s(out_features * in_features, 1.0),
                f32s(out_features, 2.0),
            )
                .prop_map(move |(input, weights, bias)| F32Problem {
                    shape: FullyConnectedShape {
                        batch,
                        in_features,
                        out_features,
                    },
                    input,
                    weights,
                    bias: with_bias.then_some(bias),
                    activation,
                })
        },
    )
}

/// A model with one layer runs through the interpreter and gives what the kernel gives.
#[test]
fn a_one_layer_model_runs_like_the_kernel() {
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::quant::QuantParams;
    use crate::tensor::DType;

    let weights: Vec<f32> = (0..10 * 24)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let bias: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
    let input: Vec<f32> = (0..2 * 24).map(|i| (i as f32 * 0.37).sin()).collect();

    let mut b = ModelBuilder::new("fc");
    let x = b
        .tensor("x", DType::F32, &[2, 24], QuantSpec::None)
        .unwrap();
    b.input(x);
    let y = b
        .fully_connected_f32("fc", x, &weights, Some(&bias), FusedActivation::RELU)
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&input)]).unwrap();
    let got: &[f32] = bytemuck::cast_slice(&out[0]);
    let mut want = vec![0f32; 20];
    reference::fully_connected_f32(
        &FullyConnectedF32 {
            shape: FullyConnectedShape {
                batch: 2,
                in_features: 24,
                out_features: 10,
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
            activation: (0.0, f32::INFINITY),
        },
        &mut want,
    );
    for (w, g) in want.iter().zip(got) {
        assert!(
            Tolerance::DotProduct.accepts(*w, *g, 24, 24.0),
            "{w} vs {g}"
        );
    }

    // The same layer in int8: within a few output steps of the float result.
    let mut b = ModelBuilder::new("fc-i8");
    let in_q = QuantParams::i8_from_range(-1.0, 1.0);
    let out_q = QuantParams::i8_from_range(0.0, 4.0);
    let x = b
        .tensor(
            "x",
            DType::I8,
            &[2, 24],
            QuantSpec::PerTensor {
                scale: in_q.scale,
                zero_point: in_q.zero_point,
            },
        )
        .unwrap();
    b.input(x);
    let y = b
        .fully_connected_i8("fc", x, &weights, Some(&bias), out_q, FusedActivation::RELU)
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let qin: Vec<i8> = input
        .iter()
        .map(|&v| in_q.quantize(v, -128, 127) as i8)
        .collect();
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&qin)]).unwrap();
    let got: &[i8] = bytemuck::cast_slice(&out[0]);
    for (w, &g) in want.iter().zip(got) {
        let real = out_q.dequantize(i32::from(g));
        assert!((real - w).abs() < 4.0 * out_q.scale + 0.02, "{w} vs {real}");
    }
}

/// An interpreter whose arena has room for decoded records runs an int8 layer with a
/// non-ReLU input (zero point not -128) through its folded bias, and computes the bytes of one
/// that decodes everything as it runs; one without the room keeps nothing.
#[test]
fn kept_records_and_folded_bias_compute_the_same_bytes() {
    use crate::format::AlignedBytes;
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::quant::QuantParams;
    use crate::tensor::DType;
    use crate::{Interpreter, Model};

    let weights: Vec<f32> = (0..40 * 150)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let bias: Vec<f32> = (0..40).map(|i| i as f32 * 0.1 - 2.0).collect();
    let mut b = ModelBuilder::new("fc-i8");
    let in_q = QuantParams::i8_from_range(-1.0, 3.0);
    assert_ne!(in_q.zero_point, -128);
    let x = b
        .tensor(
            "x",
            DType::I8,
            &[1, 150],
            QuantSpec::PerTensor {
                scale: in_q.scale,
                zero_point: in_q.zero_point,
            },
        )
        .unwrap();
    b.input(x);
    let out_q = QuantParams::i8_from_range(-8.0, 8.0);
    let h = b
        .fully_connected_i8("fc", x, &weights, Some(&bias), out_q, FusedActivation::NONE)
        .unwrap();
    // A second layer without a bias, on an input whose zero point is not -128 either.
    let y = b
        .fully_connected_i8(
            "fc2",
            h,
            &weights[..40 * 40],
            None,
            out_q,
            FusedActivation::RELU,
        )
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let aligned = AlignedBytes::new(&built.bytes);
    let model = Model::from_bytes(&aligned).unwrap();
    let input: Vec<i8> = (0..150).map(|i| ((i * 37) % 256) as u8 as i8).collect();

    let run = |arena: &mut [u8], keeps: bool| -> Vec<i8> {
        let mut interpreter = Interpreter::new(&model, arena).unwrap();
        assert_eq!(interpreter.keeps_records_decoded(), keeps);
        assert_eq!(interpreter.prepared_words(), if keeps { 80 } else { 0 });
        interpreter
            .input_mut::<i8>(0)
            .unwrap()
            .copy_from_slice(&input);
        interpreter.invoke().unwrap();
        interpreter.output::<i8>(0).unwrap().to_vec()
    };
    let size = Interpreter::arena_size_with_records(&model);
    let mut arena = vec![0u8; size + 16];
    // Wherever the arena starts, that many bytes hold the plan and the records.
    let mut outputs = vec![];
    for start in 0..16 {
        outputs.push(run(&mut arena[start..start + size], true));
    }
    let skip = arena.as_ptr().align_offset(crate::format::ARENA_ALIGN);
    let plain = run(&mut arena[skip..skip + model.arena_size()], false);
    for kept in &outputs {
        assert_eq!(kept, &plain);
    }
    assert!(
        plain.iter().any(|&v| v != plain[0]),
        "a constant output tests little"
    );
}

proptest! {
    /// The 16x8 reference agrees bit for bit with the 64-bit TFLite requantization of an
    /// accumulator summed in the other order in i128, and within two steps of exact real
    /// arithmetic.
    #[test]
    fn i16_reference_matches_independent_model(
        (batch, n, o, input, weights, bias, reals, (a, b)) in (1usize..4, 1usize..2600, 1usize..12)
            .prop_flat_map(|(batch, n, o)| (
                Just(batch),
                Just(n),
                Just(o),
                prop::collection::vec(any::<i16>(), batch * n),
                prop::collection::vec(any::<i8>(), o * n),
                prop::option::of(prop::collection::vec(-(1i32 << 24)..(1 << 24), o)),
                prop::collection::vec(1e-7f64..1e-3, 1..=o),
                (any::<i16>(), any::<i16>()),
            ))
    ) {
        // One multiplier for all, or one per output.
        let reals = if reals.len() == o { reals } else { reals[..1].to_vec() };
        let multipliers: Vec<QuantizedMultiplier> = reals
            .into_iter()
            .map(|r| QuantizedMultiplier::from_real(r).unwrap())
            .collect();
        let (lo, hi) = (a.min(b), a.max(b));
        let op = FullyConnectedI16 {
            shape: FullyConnectedShape { batch, in_features: n, out_features: o },
            params: crate::ops::Requantize16Params {
                multipliers: &multipliers,
                activation_min: lo,
                activation_max: hi,
            },
            input: &input,
            weights: &weights,
            bias: bias.as_deref(),
        };
        let mut out = vec![0i16; batch * o];
        fully_connected_i16(&op, &mut out).unwrap();
        // Every 16x8 kernel this CPU runs gives the reference's values.
        crate::ops::testing::compare_kernels(
            I16_KERNELS,
            |k| {
                let mut got = vec![0i16; batch * o];
                k(&op, &mut got);
                got
            },
            crate::ops::testing::exact,
        )?;
        for r in 0..batch {
            for c in 0..o {
                let mut acc: i128 = bias.as_ref().map_or(0, |b| i128::from(b[c]));
                for k in (0..n).rev() {
                    acc += i128::from(input[r * n + k]) * i128::from(weights[c * n + k]);
                }
                let m = op.params.multiplier(c);
                let want = m.apply_wide(acc as i64).clamp(i32::from(lo), i32::from(hi)) as i16;
                prop_assert_eq!(out[r * o + c], want);
                let real = (acc as f64 * m.to_real()).round().clamp(f64::from(lo), f64::from(hi));
                prop_assert!((f64::from(out[r * o + c]) - real).abs() <= 2.0);
            }
        }
    }
}

/// The largest products, long enough that an i32 accumulator would overflow many times over
/// (4096 * 2^22 = 2^34): every 16x8 kernel keeps the reference's exact sum.
#[test]
fn i16_extremes_do_not_overflow_any_kernel() {
    let n = 4096;
    let input = vec![i16::MIN; n];
    let weights: Vec<i8> = (0..2 * n).map(|i| if i < n { -128 } else { 127 }).collect();
    let m = [QuantizedMultiplier::from_real(1.0 / f64::from(1u32 << 20)).unwrap()];
    let op = FullyConnectedI16 {
        shape: FullyConnectedShape {
            batch: 1,
            in_features: n,
            out_features: 2,
        },
        params: crate::ops::Requantize16Params {
            multipliers: &m,
            activation_min: i16::MIN,
            activation_max: i16::MAX,
        },
        input: &input,
        weights: &weights,
        bias: None,
    };
    let mut want = [0i16; 2];
    reference::fully_connected_i16(&op, &mut want);
    // 2^34 / 2^20 = 16384 and -(2^15 * 127 * 4096) / 2^20 = -16256.
    assert_eq!(want, [16384, -16256]);
    for k in I16_KERNELS {
        if k.isa.available() {
            let mut got = [0i16; 2];
            (k.run)(&op, &mut got);
            assert_eq!(got, want, "kernel {}", k.name);
        }
    }
}

/// f16 rows around the length the batched AVX2 path widens into its buffer (1024), with
/// several input rows, so both of its paths and their tails are compared.
#[test]
fn f16_rows_either_side_of_the_widening_buffer() {
    for in_features in [1023usize, 1024, 1025] {
        let (batch, out_features) = (3, 6);
        let input: Vec<f32> = (0..batch * in_features)
            .map(|i| ((i * 13) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let weights: Vec<f32> = (0..out_features * in_features)
            .map(|i| ((i * 7) % 23) as f32 / 23.0 - 0.5)
            .collect();
        let p = F32Problem {
            shape: FullyConnectedShape {
                batch,
                in_features,
                out_features,
            },
            input,
            weights,
            bias: Some(vec![0.25; out_features]),
            activation: (f32::NEG_INFINITY, f32::INFINITY),
        };
        let halves = p.weights_f16();
        within_tolerance(F16_KERNELS, &p.op_f16(&halves)).unwrap();
    }
}

/// Layers the AMX kernel takes (given AMX): depths of 8 to 1,024 bytes in chunks of 8 to
/// 64, a partial panel and a pass of one panel, channel slices (weights beyond one packing,
/// or beyond a requantization table's 256 channels), batches read in place with an
/// overlapping last block and batches shorter than a row tile (copied), zero points at
/// both extremes and multipliers above one (a left shift); varied values that do not all
/// saturate. Each must reach the tiles and give the reference's bytes.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_amx_kernel_takes_and_matches_its_layers() {
    let mut byte = crate::ops::testing::xorshift_bytes(0x510e_527f_ade6_82d1);
    let cases = [
        (125, 64, 64, (-3, 5), 2e-4),
        (70, 8, 16, (-128, 127), 3e-3),
        (100, 96, 48, (127, -128), 4e-4),
        // Inputs and weights of -4..=3 (see below), so that a multiplier above one does
        // not saturate every output.
        (64, 12, 20, (0, 0), 1.5),
        (9, 256, 256, (-128, -7), 2e-4),
        (20, 1024, 40, (11, 3), 5e-5),
        (300, 200, 300, (-100, 20), 1e-4),
    ];
    for (n, (batch, in_features, out_features, (izp, ozp), real)) in cases.into_iter().enumerate() {
        let shape = FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        assert!(
            super::x86_amx::amx_takes(&shape),
            "case {n}: {shape:?} must reach the tiles"
        );
        let narrow = real > 1.0;
        let mut value = || if narrow { byte() >> 5 } else { byte() };
        let input: Vec<i8> = (0..batch * in_features).map(|_| value()).collect();
        let weights: Vec<i8> = (0..out_features * in_features).map(|_| value()).collect();
        let bias_scale = if narrow { 1 } else { 300 };
        let bias: Vec<i32> = (0..out_features)
            .map(|_| i32::from(byte()) * bias_scale)
            .collect();
        let multipliers: Vec<QuantizedMultiplier> = (0..out_features)
            .map(|o| QuantizedMultiplier::from_real(real * (1.0 + o as f64 / 64.0)).unwrap())
            .collect();
        let op = FullyConnectedI8 {
            shape,
            params: FullyConnectedI8Params {
                input_zero_point: izp,
                output_zero_point: ozp,
                multipliers: &multipliers,
                activation_min: -128,
                activation_max: 127,
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
        };
        let want = run_i8(reference::fully_connected_i8, &op);
        let distinct = want.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct > 16, "case {n}: only {distinct} distinct outputs");
        if crate::isa::Isa::Amx.available() {
            let got = run_i8(super::x86_amx::fully_connected_i8, &op);
            assert!(got == want, "case {n}: the tiles' bytes differ");
        }
    }
}

/// Runs `p` through the packing an interpreter would prepare on this CPU (its words placed
/// one word past an aligned start, so that the panels' alignment is the module's own
/// work), or `None` where this CPU packs nothing for the shape.
#[cfg(target_arch = "x86_64")]
fn run_prepared(p: &Problem) -> Option<(x86_prepared::Kernel, Vec<i8>)> {
    let plan = x86_prepared::Plan::of(&p.shape)?;
    let len = x86_prepared::words(&p.shape);
    let mut storage = vec![0i32; len + 1];
    let words = &mut storage[1..];
    x86_prepared::prepare(
        &p.shape,
        &p.weights,
        p.bias.as_deref(),
        p.input_zero_point,
        words,
    )
    .expect("the words of the shape");
    let op = p.op();
    let mut out = vec![0i8; p.shape.batch * p.shape.out_features];
    op.validate(&out).unwrap();
    assert!(
        x86_prepared::fully_connected_i8(&op, words, &mut out),
        "the kernel took its own packing"
    );
    // Words tagged for the other kernel are refused, not misread.
    words[0] = match plan.kernel() {
        x86_prepared::Kernel::Vnni => x86_prepared::Kernel::Amx as i32,
        _ => x86_prepared::Kernel::Vnni as i32,
    };
    let mut untouched = vec![7i8; out.len()];
    assert!(!x86_prepared::fully_connected_i8(
        &op,
        words,
        &mut untouched
    ));
    assert!(untouched.iter().all(|&v| v == 7));
    Some((plan.kernel(), out))
}

#[cfg(target_arch = "x86_64")]
proptest! {
    /// The weights an interpreter packs when it is made give the reference's bytes through
    /// the kernel that reads them.
    #[test]
    fn prepared_packings_give_the_layers_bytes(p in problem()) {
        if let Some((_, got)) = run_prepared(&p) {
            let want = run_i8(I8_KERNELS[0].run, &p.op());
            prop_assert!(exact(&want, &got).is_ok(), "{:?}", exact(&want, &got));
        }
    }
}

/// Named shapes for the prepared packings: each GEMM this CPU has must take some of them
/// (the AMX tiles from 64 rows, VNNI below), with several slices of channels (over 256
/// channels, and over what the AMX packing holds), partial panels and tiles, and the zero
/// points at both ends.
#[cfg(target_arch = "x86_64")]
#[test]
fn prepared_packings_of_every_gemm_give_the_layers_bytes() {
    let mut byte = crate::ops::testing::xorshift_bytes(0x9e37_79b9_7f4a_7c15);
    let mut taken = std::collections::BTreeMap::new();
    for (n, &(batch, in_features, out_features)) in [
        (4, 64, 40),
        (9, 100, 300),
        (13, 1024, 20),
        (64, 64, 64),
        (70, 96, 300),
        (100, 256, 140),
        (200, 512, 33),
        (1, 64, 64),
    ]
    .iter()
    .enumerate()
    {
        let shape = FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        let multipliers: Vec<QuantizedMultiplier> = (0..out_features)
            .map(|o| QuantizedMultiplier::from_real(0.0004 * (1 + o % 9) as f64).unwrap())
            .collect();
        let p = Problem {
            shape,
            input_zero_point: [-128, 127, 3][n % 3],
            output_zero_point: [0, -20, 9][n % 3],
            multipliers,
            activation: (-128, 127),
            input: (0..batch * in_features).map(|_| byte()).collect(),
            weights: (0..out_features * in_features).map(|_| byte()).collect(),
            bias: (n % 2 == 0).then(|| (0..out_features as i32).map(|o| o * 37 - 900).collect()),
        };
        let Some((kernel, got)) = run_prepared(&p) else {
            assert_eq!(batch, 1, "case {n}: a batch GEMMs take");
            continue;
        };
        *taken.entry(format!("{kernel:?}")).or_insert(0) += 1;
        let want = run_i8(I8_KERNELS[0].run, &p.op());
        assert!(
            want.iter().any(|&v| v != want[0]),
            "case {n}: a constant output tests little"
        );
        exact(&want, &got).unwrap_or_else(|e| panic!("case {n} ({kernel:?}): {e:?}"));
    }
    if crate::isa::Isa::Avx512Vnni.available() {
        assert!(taken.get("Vnni").copied().unwrap_or(0) >= 2, "{taken:?}");
    }
    if crate::isa::Isa::Amx.available() {
        assert!(taken.get("Amx").copied().unwrap_or(0) >= 3, "{taken:?}");
    }
}

/// An interpreter whose arena has room for its records keeps, on x86 CPUs with AVX-512
/// VNNI, the packed weights of its batched int8 fully-connected layers and pointwise
/// convolutions (one of 150 inputs for the VNNI GEMM, one of 40 for the AMX tiles where
/// the CPU has them, a pointwise convolution of 16 channels), and computes the bytes of an
/// interpreter that keeps nothing.
#[test]
fn kept_packings_compute_the_bytes_of_packing_per_call() {
    use crate::format::AlignedBytes;
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::ops::conv2d::ConvSpec;
    use crate::quant::QuantParams;
    use crate::tensor::DType;
    use crate::{Interpreter, Model};

    let weights: Vec<f32> = (0..40 * 150)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let bias: Vec<f32> = (0..40).map(|i| i as f32 * 0.1 - 2.0).collect();
    let mut b = ModelBuilder::new("packed");
    let in_q = QuantParams::i8_from_range(-1.0, 3.0);
    let q = QuantSpec::PerTensor {
        scale: in_q.scale,
        zero_point: in_q.zero_point,
    };
    let x = b.tensor("x", DType::I8, &[70, 150], q.clone()).unwrap();
    b.input(x);
    let out_q = QuantParams::i8_from_range(-8.0, 8.0);
    let h = b
        .fully_connected_i8("fc", x, &weights, Some(&bias), out_q, FusedActivation::NONE)
        .unwrap();
    let y = b
        .fully_connected_i8(
            "fc2",
            h,
            &weights[..40 * 40],
            None,
            out_q,
            FusedActivation::RELU,
        )
        .unwrap();
    b.output(y);
    // A pointwise convolution: 8x9 pixels, 16 -> 24 channels.
    let image = b.tensor("image", DType::I8, &[1, 8, 9, 16], q).unwrap();
    b.input(image);
    let filter: Vec<f32> = (0..24 * 16)
        .map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let z = b
        .conv2d_i8(
            "pointwise",
            image,
            ConvSpec::new(24, 1),
            &filter,
            Some(&bias[..24]),
            out_q,
            FusedActivation::NONE,
        )
        .unwrap();
    b.output(z);
    let built = b.build().unwrap();
    let aligned = AlignedBytes::new(&built.bytes);
    let model = Model::from_bytes(&aligned).unwrap();
    let inputs: [Vec<i8>; 2] = [
        (0..70 * 150)
            .map(|i| ((i * 37) % 256) as u8 as i8)
            .collect(),
        (0..8 * 9 * 16)
            .map(|i| ((i * 53) % 256) as u8 as i8)
            .collect(),
    ];

    let run = |arena: &mut [u8]| -> (usize, Vec<Vec<i8>>) {
        let mut interpreter = Interpreter::new(&model, arena).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            interpreter
                .input_mut::<i8>(i)
                .unwrap()
                .copy_from_slice(input);
        }
        interpreter.invoke().unwrap();
        let outputs = (0..2)
            .map(|i| interpreter.output::<i8>(i).unwrap().to_vec())
            .collect();
        (interpreter.prepared_words(), outputs)
    };
    let mut roomy = vec![0u8; Interpreter::arena_size_with_records(&model)];
    let (words, kept) = run(&mut roomy);
    let mut plain = vec![0u8; model.arena_size() + 16];
    let skip = plain.as_ptr().align_offset(crate::format::ARENA_ALIGN);
    let (none, packed_per_call) = run(&mut plain[skip..skip + model.arena_size()]);
    assert_eq!(none, 0);
    assert_eq!(kept, packed_per_call);
    for output in &kept {
        assert!(
            output.iter().any(|&v| v != output[0]),
            "a constant output tests little"
        );
    }
    // The folded biases of both layers, then whatever this CPU packs.
    #[cfg(target_arch = "x86_64")]
    {
        let shape = |batch, in_features, out_features| FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        let packings = x86_prepared::words(&shape(70, 150, 40))
            + x86_prepared::words(&shape(70, 40, 40))
            + x86_prepared::words(&shape(72, 16, 24));
        assert_eq!(words, 80 + packings);
        if crate::isa::Isa::Avx512Vnni.available() {
            assert!(x86_prepared::Plan::of(&shape(72, 16, 24)).is_some());
            assert!(packings > 0);
        }
        if crate::isa::Isa::Amx.available() {
            let plan = x86_prepared::Plan::of(&shape(70, 40, 40)).unwrap();
            assert_eq!(plan.kernel(), x86_prepared::Kernel::Amx);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(words, 80);
}
