use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::testing::{compare_kernels, exact, f32s, i8s, run_model};
use crate::quant::QuantParams;
use proptest::prelude::*;
use std::string::String;
use std::vec;
use std::vec::Vec;

fn run_f32(kernel: F32Kernel, op: &SoftmaxF32<'_>) -> Vec<f32> {
    let mut out = vec![0f32; op.input.len()];
    kernel(op, &mut out);
    out
}

fn within_tolerance(want: &[f32], got: &[f32]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(std::format!("length {} vs {}", want.len(), got.len()));
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        // Equal values pass (`Tolerance::Relative` alone rejects equal infinities, whose
        // difference is NaN).
        if w != g && !F32_TOLERANCE.accepts(*w, *g, 0, 0.0) {
            return Err(std::format!("element {i}: want {w}, got {g}"));
        }
    }
    Ok(())
}

/// How many fast paths of `table` this CPU runs, so a test can tell they were compared.
fn fast_paths<F>(table: &[crate::isa::Kernel<F>]) -> usize {
    table[1..].iter().filter(|k| k.isa.available()).count()
}

/// Softmax in double precision, the independent model of the float reference.
fn softmax_f64(row: &[f32], beta: f32, log: bool) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let z: Vec<f64> = row
        .iter()
        .map(|&x| (f64::from(x) - max) * f64::from(beta))
        .collect();
    let sum: f64 = z.iter().map(|&v| libm::exp(v)).sum();
    z.iter()
        .map(|&v| {
            if log {
                v - libm::log(sum)
            } else {
                libm::exp(v) / sum
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct F32Problem {
    shape: SoftmaxShape,
    beta: f32,
    log: bool,
    input: Vec<f32>,
}

impl F32Problem {
    fn op(&self) -> SoftmaxF32<'_> {
        SoftmaxF32 {
            shape: self.shape,
            beta: self.beta,
            log: self.log,
            input: &self.input,
        }
    }
}

fn f32_problem() -> impl Strategy<Value = F32Problem> {
    (
        1usize..4,
        1usize..120,
        0.05f32..4.0,
        any::<bool>(),
        0.5f32..30.0,
    )
        .prop_flat_map(|(rows, depth, beta, log, range)| {
            f32s(rows * depth, range).prop_map(move |input| F32Problem {
                shape: SoftmaxShape { rows, depth },
                beta,
                log,
                input,
            })
        })
}

proptest! {
    /// Every float kernel stays within the named tolerance of the reference.
    #[test]
    fn every_f32_kernel_is_within_tolerance(p in f32_problem()) {
        compare_kernels(F32_KERNELS, |k| run_f32(k, &p.op()), within_tolerance)?;
    }

    /// The float reference against double-precision softmax.
    #[test]
    fn f32_reference_matches_f64(p in f32_problem()) {
        let got = run_f32(reference::softmax_f32, &p.op());
        let d = p.shape.depth;
        for (r, row) in p.input.chunks(d).enumerate() {
            let want = softmax_f64(row, p.beta, p.log);
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for (i, &w) in want.iter().enumerate() {
                let g = f64::from(got[r * d + i]);
                // `(x - max) * beta` is rounded twice in f32, an error relative to its size
                // that exp turns into a relative error of the result; libm's exp and the
                // division add a few more roundings.
                let z = f64::from((row[i] - max).abs() * p.beta);
                let rel = 2.0 * f64::from(f32::EPSILON) * (z + 4.0);
                let slack = if p.log { rel } else { rel * w + 1e-37 };
                prop_assert!((g - w).abs() <= slack, "row {} element {}: got {} want {}", r, i, g, w);
            }
        }
    }

    /// The vector exp against libm's.
    #[test]
    fn vector_exp_is_within_a_few_ulps(x in prop::array::uniform8(-87.3f32..0.0)) {
        if let Some(got) = vector_exp_lanes(x) {
            for i in 0..8 {
                let want = libm::expf(x[i]);
                prop_assert!((got[i] - want).abs() <= 4.0 * f32::EPSILON * want, "exp({}) = {} want {}", x[i], got[i], want);
            }
        }
        let _ = x;
    }

    /// Every int8 kernel gives the reference's bytes, for softmax and log-softmax, on inputs
    /// narrow and wide in spread, short and long (the lookup kernel tables the exponentials
    /// where that is cheaper and hands the rest to the reference).
    #[test]
    fn every_i8_kernel_matches_the_reference(
        rows in 1usize..6,
        depth in prop_oneof![1usize..12, 12usize..300],
        spread in prop_oneof![0i32..8, 8i32..64, 64i32..=255],
        base in any::<i8>(),
        scale in prop_oneof![0.001f32..0.05, 0.05f32..0.5],
        beta in prop_oneof![Just(1.0f32), 0.2f32..3.0],
        log in any::<bool>(),
        seed in i8s(1800),
    ) {
        let input: Vec<i8> = seed
            .iter()
            .cycle()
            .take(rows * depth)
            .map(|&v| (i32::from(base) + (i32::from(v) + 128) * spread / 255).clamp(-128, 127) as i8)
            .collect();
        let params = if log {
            SoftmaxQuant::log_softmax(beta, scale).unwrap()
        } else {
            SoftmaxQuant::softmax(beta, scale).unwrap()
        };
        let op = SoftmaxI8 { shape: SoftmaxShape { rows, depth }, log, params, input: &input };
        let run = |k: I8Kernel| {
            let mut out = vec![0i8; input.len()];
            k(&op, &mut out);
            out
        };
        let compared = compare_kernels(I8_KERNELS, run, exact)?;
        prop_assert_eq!(compared, fast_paths(I8_KERNELS));
        // The full table an interpreter keeps serves any input of these parameters.
        let mut table = [0i32; lookup::TABLE_LEN];
        prop_assert!(lookup::fill_table(&params, log, &mut table).is_some());
        let mut kept = vec![0i8; input.len()];
        lookup::softmax_i8_with_table(&op, &mut kept, &table);
        prop_assert_eq!(kept, run(I8_KERNELS[0].run));
    }

    /// int8 softmax is within one output step of the real softmax of the dequantized input,
    /// and log-softmax within one step of the real log-softmax.
    #[test]
    fn i8_reference_matches_real_softmax(
        rows in 1usize..4,
        depth in 1usize..70,
        scale in prop_oneof![0.001f32..0.05, 0.05f32..0.5],
        beta in prop_oneof![Just(1.0f32), 0.2f32..3.0],
        zero_point in any::<i8>(),
        log in any::<bool>(),
        seed in i8s(280),
    ) {
        let input: Vec<i8> = seed.iter().cycle().take(rows * depth).copied().collect();
        let params = if log {
            SoftmaxQuant::log_softmax(beta, scale).unwrap()
        } else {
            SoftmaxQuant::softmax(beta, scale).unwrap()
        };
        let op = SoftmaxI8 { shape: SoftmaxShape { rows, depth }, log, params, input: &input };
        let mut out = vec![0i8; input.len()];
        softmax_i8(&op, &mut out).unwrap();
        let q = QuantParams { scale, zero_point: i32::from(zero_point) };
        let out_q = if log { LOG_SOFTMAX_OUTPUT } else { SOFTMAX_OUTPUT };
        for (r, row) in input.chunks(depth).enumerate() {
            let real: Vec<f32> = row.iter().map(|&v| q.dequantize(i32::from(v))).collect();
            let want = softmax_f64(&real, beta, log);
            let max = row.iter().copied().max().unwrap_or(i8::MIN);
            for (i, &w) in want.iter().enumerate() {
                let got = f64::from(out[r * depth + i]);
                // TFLite drops differences below diff_min (15.5 to 31 real units below the
                // maximum) as negligible: their output is the minimum.
                if i32::from(row[i]) - i32::from(max) < params.diff_min {
                    prop_assert_eq!(got, -128.0);
                    continue;
                }
                let expected = (w / f64::from(out_q.scale) + f64::from(out_q.zero_point)).clamp(-128.0, 127.0);
                prop_assert!((got - expected).abs() <= 1.0, "row {} element {}: got {} want {}", r, i, got, expected);
            }
        }
    }
}

/// Lengths on either side of the vector width, rows with ties, huge gaps, infinities.
#[test]
fn f32_edge_cases_are_within_tolerance() {
    for &depth in &[1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100] {
        let rows: Vec<Vec<f32>> = vec![
            vec![0.0; depth],
            (0..depth).map(|i| i as f32).collect(),
            (0..depth).map(|i| -(i as f32) * 40.0).collect(),
            (0..depth)
                .map(|i| {
                    if i % 4 == 1 {
                        f32::NEG_INFINITY
                    } else {
                        (i as f32).sin()
                    }
                })
                .collect(),
            (0..depth).map(|i| 1e30 * (i as f32).cos()).collect(),
        ];
        for input in rows {
            for beta in [1.0f32, 0.3, 7.0] {
                for log in [false, true] {
                    let op = SoftmaxF32 {
                        shape: SoftmaxShape { rows: 1, depth },
                        beta,
                        log,
                        input: &input,
                    };
                    let compared =
                        compare_kernels(F32_KERNELS, |k| run_f32(k, &op), within_tolerance)
                            .unwrap();
                    assert_eq!(compared, fast_paths(F32_KERNELS));
                }
            }
        }
    }
    // NaN and +inf poison their row in every kernel alike.
    for bad in [f32::NAN, f32::INFINITY] {
        let mut input = vec![0.5f32; 19];
        input[3] = bad;
        let op = SoftmaxF32 {
            shape: SoftmaxShape { rows: 1, depth: 19 },
            beta: 1.0,
            log: false,
            input: &input,
        };
        compare_kernels(F32_KERNELS, |k| run_f32(k, &op), within_tolerance).unwrap();
    }
}

#[test]
fn vector_exp_edges() {
    let x = [
        0.0,
        -0.0,
        -87.33,
        -87.34,
        -100.0,
        f32::NEG_INFINITY,
        f32::NAN,
        -1e-8,
    ];
    if let Some(got) = vector_exp_lanes(x) {
        assert_eq!(got[0], 1.0);
        assert_eq!(got[1], 1.0);
        assert!((got[2] - libm::expf(-87.33)).abs() <= 4.0 * f32::EPSILON * got[2]);
        assert_eq!(got[3], 0.0);
        assert_eq!(got[4], 0.0);
        assert_eq!(got[5], 0.0);
        assert!(got[6].is_nan());
        assert!((got[7] - 1.0).abs() <= f32::EPSILON);
    }
}

/// The parameters TFLite computes for input scale 0.1 (as f32, 13421773 * 2^-27) and beta 1:
/// `scale * 2^26` is `6710886.5 = 0.80000001192 * 2^23`, so the multiplier is
/// `round(0.80000001192 * 2^31) = 1717986944` with shift 23, and `diff_min` is
/// `-floor(31 * 2^26 / 2^23) = -248`.
#[test]
fn parameters_match_tflite() {
    let q = SoftmaxQuant::softmax(1.0, 0.1).unwrap();
    assert_eq!(q.input_multiplier, 1_717_986_944);
    assert_eq!(q.input_left_shift, 23);
    assert_eq!(q.diff_min, -248);
    assert_eq!((q.reverse_multiplier, q.reverse_shift), (0, 0));
    let l = SoftmaxQuant::log_softmax(1.0, 0.1).unwrap();
    assert_eq!(
        (l.input_multiplier, l.input_left_shift, l.diff_min),
        (q.input_multiplier, q.input_left_shift, q.diff_min)
    );
    // The reverse scaling undoes the input scaling: 2^(31 - 23) / multiplier.
    let reverse = l.reverse().unwrap().to_real();
    let want = 256.0 / 1_717_986_944.0;
    assert!((reverse - want).abs() <= want * 1e-9, "{reverse} vs {want}");
    assert!(l.reverse_shift <= 0);
    // A huge beta * scale saturates the shift at 30 (a diff_min of -1 or -2 then).
    let big = SoftmaxQuant::softmax(100.0, 1.0).unwrap();
    assert_eq!(big.input_left_shift, 30);
    assert!(big.validate(false).is_ok());
    assert!(SoftmaxQuant::softmax(1.0, 1e-9).is_err());
    assert!(SoftmaxQuant::softmax(-1.0, 0.1).is_err());
}

#[test]
fn validation_rejects_out_of_range_parameters() {
    let good = SoftmaxQuant::softmax(1.0, 0.1).unwrap();
    let input = [0i8; 6];
    let mut out = [0i8; 6];
    let op = SoftmaxI8 {
        shape: SoftmaxShape { rows: 2, depth: 3 },
        log: false,
        params: good,
        input: &input,
    };
    assert_eq!(softmax_i8(&op, &mut out), Ok(()));
    assert_eq!(
        softmax_i8(&op, &mut out[..5]),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 6,
            actual: 5
        })
    );
    for params in [
        SoftmaxQuant {
            diff_min: -(1 << 9),
            ..good
        },
        SoftmaxQuant {
            diff_min: 1,
            ..good
        },
        SoftmaxQuant {
            input_left_shift: -1,
            ..good
        },
        SoftmaxQuant {
            input_multiplier: -1,
            ..good
        },
    ] {
        assert_eq!(
            softmax_i8(&SoftmaxI8 { params, ..op }, &mut out),
            Err(Error::InvalidQuantization(QuantField::Scale)),
            "{params:?}"
        );
    }
    // Log-softmax needs its reverse multiplier.
    let log = SoftmaxI8 {
        log: true,
        params: SoftmaxQuant {
            reverse_shift: -40,
            ..good
        },
        ..op
    };
    assert_eq!(
        softmax_i8(&log, &mut out),
        Err(Error::InvalidQuantization(QuantField::Scale))
    );
    let op = SoftmaxF32 {
        shape: SoftmaxShape { rows: 2, depth: 3 },
        beta: 0.0,
        log: false,
        input: &[0.0; 6],
    };
    assert_eq!(
        softmax_f32(&op, &mut [0.0; 6]),
        Err(Error::InvalidQuantization(QuantField::Scale))
    );
}

/// Edge rows for int8: a single element, ties, the extremes, a saturated shift, and a row
/// long enough to overflow TFLite's Q12.19 accumulator (which must still not panic).
#[test]
fn i8_edge_rows() {
    let run = |input: &[i8], depth: usize, params: SoftmaxQuant, log: bool| -> Vec<i8> {
        let mut out = vec![0i8; input.len()];
        let op = SoftmaxI8 {
            shape: SoftmaxShape {
                rows: input.len() / depth,
                depth,
            },
            log,
            params,
            input,
        };
        softmax_i8(&op, &mut out).unwrap();
        out
    };
    let q = SoftmaxQuant::softmax(1.0, 0.05).unwrap();
    let l = SoftmaxQuant::log_softmax(1.0, 0.05).unwrap();
    // One element: probability 1 saturates at 127; its log is 0, i.e. 127.
    assert_eq!(run(&[-128], 1, q, false), [127]);
    assert_eq!(run(&[5], 1, l, true), [127]);
    // Two equal elements: 1/2 is 0 in the output's steps; log(1/2) = -0.693 is -11 steps.
    assert_eq!(run(&[7, 7], 2, q, false), [0, 0]);
    assert_eq!(run(&[7, 7], 2, l, true), [116, 116]);
    // The extremes: -128 is 255 steps (12.75) below 127, so exp is ~3e-6 of the max.
    assert_eq!(run(&[127, -128], 2, q, false), [127, -128]);
    let lo = run(&[127, -128], 2, l, true);
    assert_eq!(lo[0], 127);
    assert!((i32::from(lo[1]) - (127 - 204)).abs() <= 1, "{lo:?}");
    // A saturated shift: every non-maximum difference is below diff_min.
    let big = SoftmaxQuant::softmax(100.0, 1.0).unwrap();
    assert_eq!(run(&[1, 0, 1, -5], 4, big, false), [0, -128, 0, -128]);
    let big_log = SoftmaxQuant::log_softmax(100.0, 1.0).unwrap();
    let out = run(&[1, 0, 1, -5], 4, big_log, true);
    assert_eq!(out[1], -128);
    assert_eq!(out[0], out[2]);
    // 5000 equal values overflow the Q12.19 sum as they do in TFLite; no panic.
    let long = vec![3i8; 5000];
    run(&long, 5000, q, false);
    run(&long, 5000, l, true);
}

/// Float and int8 softmax and log-softmax as one-op models, against the kernels.
#[test]
fn models_run_like_the_kernels() {
    let x: Vec<f32> = (0..3 * 21).map(|i| (i as f32 * 0.83).sin() * 4.0).collect();
    for log in [false, true] {
        let mut b = ModelBuilder::new("softmax-f32");
        let xt = b
            .tensor("x", DType::F32, &[3, 21], QuantSpec::None)
            .unwrap();
        b.input(xt);
        let y = if log {
            b.log_softmax_f32("y", xt).unwrap()
        } else {
            b.softmax_f32("y", xt, 0.7).unwrap()
        };
        b.output(y);
        let built = b.build().unwrap();
        let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
        let got: &[f32] = bytemuck::cast_slice(&out[0]);
        let op = SoftmaxF32 {
            shape: SoftmaxShape { rows: 3, depth: 21 },
            beta: if log { 1.0 } else { 0.7 },
            log,
            input: &x,
        };
        let want = run_f32(reference::softmax_f32, &op);
        within_tolerance(&want, got).unwrap();
    }

    let qx = QuantParams::i8_from_range(-5.0, 5.0);
    let xq: Vec<i8> = x.iter().map(|&v| qx.quantize(v, -128, 127) as i8).collect();
    for log in [false, true] {
        let mut b = ModelBuilder::new("softmax-i8");
        let xt = b
            .tensor(
                "x",
                DType::I8,
                &[3, 21],
                QuantSpec::PerTensor {
                    scale: qx.scale,
                    zero_point: qx.zero_point,
                },
            )
            .unwrap();
        b.input(xt);
        let y = if log {
            b.log_softmax_i8("y", xt).unwrap()
        } else {
            b.softmax_i8("y", xt, 0.7).unwrap()
        };
        b.output(y);
        let built = b.build().unwrap();
        let out = run_model(&built.bytes, &[bytemuck::cast_slice(&xq)]).unwrap();
        let got: &[i8] = bytemuck::cast_slice(&out[0]);
        let params = if log {
            SoftmaxQuant::log_softmax(1.0, qx.scale).unwrap()
        } else {
            SoftmaxQuant::softmax(0.7, qx.scale).unwrap()
        };
        let mut want = vec![0i8; xq.len()];
        softmax_i8(
            &SoftmaxI8 {
                shape: SoftmaxShape { rows: 3, depth: 21 },
                log,
                params,
                input: &xq,
            },
            &mut want,
        )
        .unwrap();
        assert_eq!(got, &want[..]);
    }
}

/// The first op problem of a model that should not build.
fn op_problem(b: &ModelBuilder) -> OpProblem {
    match b.build() {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

#[test]
fn check_rejects_bad_operands() {
    let qx = QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: 0,
    };
    let quant = |q: QuantParams| QuantSpec::PerTensor {
        scale: q.scale,
        zero_point: q.zero_point,
    };
    let good = SoftmaxAttributes {
        beta: 1.0,
        quantized: Some(SoftmaxQuant::softmax(1.0, 0.1).unwrap()),
    };
    let model = |out_q: QuantSpec, kind: OpKind, attributes: SoftmaxAttributes, dims: &[usize]| {
        let mut b = ModelBuilder::new("bad");
        let x = b.tensor("x", DType::I8, dims, qx.clone()).unwrap();
        let y = b.tensor("y", DType::I8, dims, out_q).unwrap();
        b.input(x);
        b.output(y);
        b.op(kind, "s", &[Some(x)], &[y], &attributes).unwrap();
        b
    };
    // The good model builds.
    model(quant(SOFTMAX_OUTPUT), OpKind::Softmax, good, &[2, 5])
        .build()
        .unwrap();
    // Softmax's output must be (1/256, -128); log-softmax's (16/256, 127).
    assert!(matches!(
        op_problem(&model(qx.clone(), OpKind::Softmax, good, &[2, 5])),
        OpProblem::Quantization(Slot::Output(0), _)
    ));
    assert!(matches!(
        op_problem(&model(
            quant(SOFTMAX_OUTPUT),
            OpKind::LogSoftmax,
            good,
            &[2, 5]
        )),
        OpProblem::Quantization(Slot::Output(0), _)
    ));
    // beta must be positive.
    let bad_beta = SoftmaxAttributes { beta: 0.0, ..good };
    assert!(matches!(
        op_problem(&model(
            quant(SOFTMAX_OUTPUT),
            OpKind::Softmax,
            bad_beta,
            &[2, 5]
        )),
        OpProblem::Attribute(_)
    ));
    // int8 needs its parameters, in range.
    let none = SoftmaxAttributes {
        quantized: None,
        ..good
    };
    assert!(matches!(
        op_problem(&model(
            quant(SOFTMAX_OUTPUT),
            OpKind::Softmax,
            none,
            &[2, 5]
        )),
        OpProblem::Attribute(_)
    ));
    let wide = SoftmaxAttributes {
        quantized: Some(SoftmaxQuant {
            diff_min: -100_000,
            ..SoftmaxQuant::softmax(1.0, 0.1).unwrap()
        }),
        ..good
    };
    assert!(matches!(
        op_problem(&model(
            quant(SOFTMAX_OUTPUT),
            OpKind::Softmax,
            wide,
            &[2, 5]
        )),
        OpProblem::Attribute(_)
    ));
    // A scalar has no last dimension.
    assert!(matches!(
        op_problem(&model(quant(SOFTMAX_OUTPUT), OpKind::Softmax, good, &[])),
        OpProblem::Shape(Slot::Input(0), _)
    ));
    // Float with a float output of another shape.
    let mut b = ModelBuilder::new("shape");
    let x = b.tensor("x", DType::F32, &[2, 5], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[10], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(
        OpKind::Softmax,
        "s",
        &[Some(x)],
        &[y],
        &SoftmaxAttributes {
            beta: 1.0,
            quantized: None,
        },
    )
    .unwrap();
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Output(0), _)
    ));
}

/// The fast paths' vector `exp` on eight lanes, where this ISA has one.
fn vector_exp_lanes(x: [f32; 8]) -> Option<[f32; 8]> {
    #[cfg(target_arch = "x86_64")]
    return super::x86::exp_lanes(x);
    #[cfg(target_arch = "aarch64")]
    return super::aarch64::exp_lanes(x);
    #[cfg(all(target_arch = "arm", loam_arm_neon))]
    return super::arm_neon::exp_lanes(x);
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        all(target_arch = "arm", loam_arm_neon)
    )))]
    {
        let _ = x;
        None
    }
}
