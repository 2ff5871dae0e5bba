use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::testing::{compare_kernels, exact, run_model};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// Bit-level equality for floats (so NaN and signed zeros count as well).
fn same_bits(want: &[f32], got: &[f32]) -> Result<(), std::string::String> {
    let w: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
    let g: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
    exact(&w, &g)
}

fn run_q<Q: Default + Clone>(k: QuantizeKernel<Q>, p: QuantParams, x: &[f32]) -> Vec<Q> {
    let mut out = vec![Q::default(); x.len()];
    k(p, x, &mut out);
    out
}

fn run_dq<Q>(k: DequantizeKernel<Q>, p: QuantParams, q: &[Q]) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    k(p, q, &mut out);
    out
}

/// Floats that stress the rounding: plain values, exact ties `(k + 0.5) * scale`, values a
/// hair either side of ties, huge values, infinities and NaN.
fn awkward_floats(scale: f32) -> Vec<f32> {
    let mut v = Vec::new();
    for k in -300i32..300 {
        let tie = (k as f32 + 0.5) * scale;
        v.push(tie);
        v.push(f32::from_bits(tie.to_bits() + 1));
        v.push(f32::from_bits(tie.to_bits().saturating_sub(1)));
        v.push(k as f32 * scale);
    }
    v.extend_from_slice(&[
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        3e9,
        -3e9,
        8_388_607.5,
        -8_388_607.5,
        8_388_608.0,
        16_777_217.0,
    ]);
    v
}

fn params() -> impl Strategy<Value = (f32, i32)> {
    (
        prop_oneof![1e-4f32..10.0, Just(0.5f32), Just(0.25), Just(1.0)],
        any::<i8>(),
    )
        .prop_map(|(s, z)| (s, i32::from(z)))
}

proptest! {
    /// Every quantizer agrees with the reference on random and awkward data.
    #[test]
    fn every_quantize_kernel_matches_the_reference(
        (scale, zp) in params(),
        zp16 in any::<i16>(),
        data in prop::collection::vec(-40_000f32..40_000.0, 0..80),
        n in 0usize..80,
    ) {
        let mut x = data;
        x.extend(awkward_floats(scale).into_iter().take(n * 20));
        let p = QuantParams { scale, zero_point: zp };
        compare_kernels(QUANTIZE_I8_KERNELS, |k| run_q(k, p, &x), exact)?;
        let p16 = QuantParams { scale: scale / 256.0, zero_point: zp16.into() };
        compare_kernels(QUANTIZE_I16_KERNELS, |k| run_q(k, p16, &x), exact)?;
    }

    /// Every dequantizer agrees bit for bit with the reference.
    #[test]
    fn every_dequantize_kernel_matches_the_reference(
        (scale, zp) in params(),
        zp16 in any::<i16>(),
        q8 in prop::collection::vec(any::<i8>(), 0..100),
        q16 in prop::collection::vec(any::<i16>(), 0..100),
    ) {
        let p = QuantParams { scale, zero_point: zp };
        compare_kernels(DEQUANTIZE_I8_KERNELS, |k| run_dq(k, p, &q8), same_bits)?;
        let p16 = QuantParams { scale, zero_point: zp16.into() };
        compare_kernels(DEQUANTIZE_I16_KERNELS, |k| run_dq(k, p16, &q16), same_bits)?;
    }

    /// The quantizer against real arithmetic: within one step of the f64 result (they can only
    /// differ where the f32 division rounds onto a tie), and exact where the scale is a power
    /// of two (the division is then exact).
    #[test]
    fn quantize_reference_matches_real_arithmetic(
        (scale, zp) in params(),
        x in prop::collection::vec(-300f32..300.0, 1..64),
    ) {
        let p = QuantParams { scale, zero_point: zp };
        let mut got = vec![0i8; x.len()];
        quantize_i8(p, &x, &mut got).unwrap();
        for (&v, &g) in x.iter().zip(&got) {
            let real = f64::from(v) / f64::from(scale);
            let want = (libm::round(real) + f64::from(zp)).clamp(-128.0, 127.0);
            prop_assert!((f64::from(g) - want).abs() <= 1.0, "{} -> {} want {}", v, g, want);
            if scale.log2().fract() == 0.0 {
                prop_assert_eq!(f64::from(g), want);
            }
        }
    }

    /// The dequantizer is TFLite's double-precision formula rounded once to f32.
    #[test]
    fn dequantize_reference_matches_double_arithmetic(
        (scale, zp) in params(),
        q in prop::collection::vec(any::<i16>(), 1..64),
        zp16 in any::<i16>(),
    ) {
        let p = QuantParams { scale, zero_point: zp16.into() };
        let mut got = vec![0f32; q.len()];
        dequantize_i16(p, &q, &mut got).unwrap();
        for (&v, &g) in q.iter().zip(&got) {
            let want = (f64::from(scale) * f64::from(i32::from(v) - i32::from(zp16))) as f32;
            prop_assert_eq!(g.to_bits(), want.to_bits());
        }
        let p = QuantParams { scale, zero_point: zp };
        let q8: Vec<i8> = q.iter().map(|&v| v as i8).collect();
        let mut got = vec![0f32; q8.len()];
        dequantize_i8(p, &q8, &mut got).unwrap();
        for (&v, &g) in q8.iter().zip(&got) {
            let want = (f64::from(scale) * f64::from(i32::from(v) - zp)) as f32;
            prop_assert_eq!(g.to_bits(), want.to_bits());
        }
    }
}

/// Named cases: ties round away from zero, saturation at both ends, NaN to the zero point,
/// zero points at the extremes, lengths on either side of the vector widths.
#[test]
fn edge_cases() {
    let p = QuantParams {
        scale: 0.5,
        zero_point: 0,
    };
    let x = [0.25f32, -0.25, 0.75, -0.75, 1.25, -1.25, 0.2, -0.2];
    let mut q = [0i8; 8];
    quantize_i8(p, &x, &mut q).unwrap();
    assert_eq!(q, [1, -1, 2, -2, 3, -3, 0, 0]);

    let x = [
        1e6f32,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        64.0,
        -64.5,
    ];
    for zp in [-128, 127, 0] {
        let p = QuantParams {
            scale: 0.5,
            zero_point: zp,
        };
        let mut q = [0i8; 7];
        quantize_i8(p, &x, &mut q).unwrap();
        let clamp = |v: i32| v.clamp(-128, 127) as i8;
        assert_eq!(
            q,
            [
                127,
                -128,
                127,
                -128,
                clamp(zp),
                clamp(128 + zp),
                clamp(zp - 129)
            ]
        );
        let mut q16 = [0i16; 7];
        quantize_i16(p, &x, &mut q16).unwrap();
        assert_eq!(q16[..5], [32767, -32768, 32767, -32768, zp as i16]);
    }

    for n in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65] {
        for zp in [-128, 127, 0, 5] {
            let x: Vec<f32> = (0..n)
                .map(|i| (i as f32 - n as f32 / 2.0) * 0.37 + 0.5)
                .collect();
            let p = QuantParams {
                scale: 0.05,
                zero_point: zp,
            };
            compare_kernels(QUANTIZE_I8_KERNELS, |k| run_q(k, p, &x), exact).unwrap();
            compare_kernels(QUANTIZE_I16_KERNELS, |k| run_q(k, p, &x), exact).unwrap();
            let q: Vec<i8> = (0..n).map(|i| (i * 37) as i8).collect();
            compare_kernels(DEQUANTIZE_I8_KERNELS, |k| run_dq(k, p, &q), same_bits).unwrap();
            let q: Vec<i16> = (0..n).map(|i| (i * 9001) as i16).collect();
            compare_kernels(DEQUANTIZE_I16_KERNELS, |k| run_dq(k, p, &q), same_bits).unwrap();
        }
    }
}

#[test]
fn validation_rejects_bad_parameters() {
    let mut q = [0i8; 2];
    let good = QuantParams {
        scale: 1.0,
        zero_point: 0,
    };
    assert_eq!(
        quantize_i8(good, &[0.0; 3], &mut q),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 3,
            actual: 2
        })
    );
    let bad_scale = QuantParams {
        scale: 0.0,
        zero_point: 0,
    };
    assert_eq!(
        quantize_i8(bad_scale, &[0.0; 2], &mut q),
        Err(Error::InvalidQuantization(QuantField::Scale))
    );
    let bad_zp = QuantParams {
        scale: 1.0,
        zero_point: 128,
    };
    assert_eq!(
        quantize_i8(bad_zp, &[0.0; 2], &mut q),
        Err(Error::InvalidQuantization(QuantField::OutputZeroPoint))
    );
    assert_eq!(
        dequantize_i8(bad_zp, &[0; 2], &mut [0.0; 2]),
        Err(Error::InvalidQuantization(QuantField::InputZeroPoint))
    );
    assert!(quantize_i16(bad_zp, &[0.0; 2], &mut [0; 2]).is_ok());
}

/// One-op models built with the helpers run through the interpreter like the kernels.
#[test]
fn one_op_models_run_like_the_kernels() {
    let x: Vec<f32> = (0..2 * 3 * 19)
        .map(|i| (i as f32 * 0.61).sin() * 3.0)
        .collect();
    for dtype in [DType::I8, DType::I16] {
        let p = QuantParams {
            scale: 0.03,
            zero_point: -7,
        };
        let mut b = ModelBuilder::new("q");
        let t = b
            .tensor("x", DType::F32, &[2, 3, 19], QuantSpec::None)
            .unwrap();
        b.input(t);
        let q = b.quantize("q", t, p, dtype).unwrap();
        b.output(q);
        let built = b.build().unwrap();
        let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
        let q_bytes = if dtype == DType::I8 {
            let mut want = vec![0i8; x.len()];
            reference::quantize_i8(p, &x, &mut want);
            assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&want));
            want.iter().map(|&v| v as u8).collect::<Vec<u8>>()
        } else {
            let mut want = vec![0i16; x.len()];
            reference::quantize_i16(p, &x, &mut want);
            assert_eq!(out[0], bytemuck::cast_slice::<i16, u8>(&want));
            bytemuck::cast_slice::<i16, u8>(&want).to_vec()
        };

        let mut b = ModelBuilder::new("dq");
        let t = b
            .tensor(
                "q",
                dtype,
                &[2, 3, 19],
                QuantSpec::PerTensor {
                    scale: p.scale,
                    zero_point: p.zero_point,
                },
            )
            .unwrap();
        b.input(t);
        let y = b.dequantize("dq", t).unwrap();
        b.output(y);
        let built = b.build().unwrap();
        let out = run_model(&built.bytes, &[&q_bytes]).unwrap();
        let got: &[f32] = bytemuck::cast_slice(&out[0]);
        for (&g, &v) in got.iter().zip(&x) {
            assert!((g - v).abs() <= p.scale / 2.0 + 1e-6, "{g} vs {v}");
        }
    }
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

#[test]
fn check_rejects_bad_models() {
    let q8 = QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: 0,
    };
    // Quantize into a float tensor.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::F32, &[4], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[4], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(OpKind::Quantize, "q", &[Some(x)], &[y], &()).unwrap();
    assert_eq!(op_problem(b.build()), OpProblem::DType(Slot::Output(0)));

    // Quantize to another shape.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::F32, &[4], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::I8, &[2, 2], q8.clone()).unwrap();
    b.input(x);
    b.output(y);
    b.op(OpKind::Quantize, "q", &[Some(x)], &[y], &()).unwrap();
    assert!(matches!(
        op_problem(b.build()),
        OpProblem::Shape(Slot::Output(0), _)
    ));

    // Dequantize an int8 tensor without a scale.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::I8, &[4], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[4], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(OpKind::Dequantize, "dq", &[Some(x)], &[y], &())
        .unwrap();
    assert!(matches!(
        op_problem(b.build()),
        OpProblem::Quantization(Slot::Input(0), _)
    ));

    // Dequantize from a float tensor.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::F32, &[4], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[4], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(OpKind::Dequantize, "dq", &[Some(x)], &[y], &())
        .unwrap();
    assert_eq!(op_problem(b.build()), OpProblem::DType(Slot::Input(0)));

    // Attributes where there should be none.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::F32, &[4], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::I8, &[4], q8).unwrap();
    b.input(x);
    b.output(y);
    b.op(OpKind::Quantize, "q", &[Some(x)], &[y], &7u8).unwrap();
    assert_eq!(op_problem(b.build()), OpProblem::Attributes);
}
