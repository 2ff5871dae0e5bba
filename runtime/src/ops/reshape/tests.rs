use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::OpKind;
use crate::ops::testing::run_model;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

proptest! {
    /// The copy is the identity on the element sequence, whatever the type.
    #[test]
    fn reshape_keeps_every_element(x in prop::collection::vec(any::<i16>(), 1..200)) {
        let mut y = vec![0i16; x.len()];
        reshape(&x, &mut y).unwrap();
        prop_assert_eq!(&y, &x);
        let xf: Vec<f32> = x.iter().map(|&v| f32::from(v) * 0.25).collect();
        let mut yf = vec![0f32; x.len()];
        reshape(&xf, &mut yf).unwrap();
        prop_assert_eq!(yf, xf);
    }
}

#[test]
fn validation_catches_bad_lengths() {
    assert_eq!(
        reshape(&[1i8, 2, 3], &mut [0i8; 2]),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 3,
            actual: 2
        })
    );
}

/// One-op models: reshaping a graph input copies; reshaping an intermediate that dies at the
/// reshape runs in place (the planner gives both the same storage) and must leave the bytes
/// alone.
#[test]
fn models_run_with_and_without_sharing() {
    let q = QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: 4,
    };
    let x: Vec<i8> = (0..24).map(|i| i as i8 - 12).collect();
    let mut b = ModelBuilder::new("reshape");
    let t = b.tensor("x", DType::I8, &[2, 3, 4], q.clone()).unwrap();
    b.input(t);
    let y = b.reshape("flat", t, &[2, 12]).unwrap();
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&x));

    // x -> dequantize -> reshape -> output: the reshape's input dies there, so the planner
    // lets the output take its storage.
    let mut b = ModelBuilder::new("reshape-in-place");
    let t = b.tensor("x", DType::I8, &[2, 3, 4], q).unwrap();
    b.input(t);
    let d = b.dequantize("dq", t).unwrap();
    let y = b.reshape("unsqueeze", d, &[1, 2, 3, 4, 1]).unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let want: Vec<f32> = x.iter().map(|&v| 0.1 * (i32::from(v) - 4) as f32).collect();
    assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));
    let aligned = crate::format::AlignedBytes::new(&built.bytes);
    let model = crate::format::Model::from_bytes(&aligned).unwrap();
    let offset = |i: usize| model.tensor(i).map(|t| t.storage);
    assert_eq!(offset(1), offset(2), "the reshape should run in place");
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

#[test]
fn check_rejects_bad_models() {
    let q = |zp| QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: zp,
    };
    let build = |out: (DType, &[usize], QuantSpec)| {
        let mut b = ModelBuilder::new("bad");
        let x = b.tensor("x", DType::I8, &[2, 3], q(0)).unwrap();
        let y = b.tensor("y", out.0, out.1, out.2).unwrap();
        b.input(x);
        b.output(y);
        b.op(OpKind::Reshape, "r", &[Some(x)], &[y], &()).unwrap();
        b.build()
    };
    build((DType::I8, &[3, 2], q(0))).unwrap();
    assert!(matches!(
        op_problem(build((DType::I8, &[7], q(0)))),
        OpProblem::Shape(Slot::Output(0), _)
    ));
    assert_eq!(
        op_problem(build((DType::F32, &[6], QuantSpec::None))),
        OpProblem::DType(Slot::Output(0))
    );
    assert!(matches!(
        op_problem(build((DType::I8, &[6], q(1)))),
        OpProblem::Quantization(Slot::Output(0), _)
    ));
}
