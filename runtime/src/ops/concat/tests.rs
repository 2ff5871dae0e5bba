use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
use crate::ops::OpKind;
use crate::ops::testing::run_model;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// A random concatenation: the output's dims, the axis and each input's size on the axis.
fn problem() -> impl Strategy<Value = (Vec<usize>, usize, Vec<usize>)> {
    (prop::collection::vec(1usize..5, 1..6), 1usize..6).prop_flat_map(|(dims, n)| {
        let rank = dims.len();
        (Just(dims), 0..rank, prop::collection::vec(1usize..5, n))
    })
}

/// Independent model: output element at multi-index `idx` comes from the input whose range
/// along the axis contains `idx[axis]`.
fn model(dims: &[usize], axis: usize, sizes: &[usize], inputs: &[Vec<i32>]) -> Vec<i32> {
    let mut out_dims = dims.to_vec();
    out_dims[axis] = sizes.iter().sum();
    let total: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(total);
    for flat in 0..total {
        let mut idx = vec![0; out_dims.len()];
        let mut r = flat;
        for d in (0..out_dims.len()).rev() {
            idx[d] = r % out_dims[d];
            r /= out_dims[d];
        }
        let mut k = idx[axis];
        let mut which = 0;
        while k >= sizes[which] {
            k -= sizes[which];
            which += 1;
        }
        idx[axis] = k;
        let mut in_dims = dims.to_vec();
        in_dims[axis] = sizes[which];
        let offset = idx
            .iter()
            .zip(&in_dims)
            .fold(0, |acc, (&i, &d)| acc * d + i);
        out.push(inputs[which][offset]);
    }
    out
}

fn make_inputs(dims: &[usize], axis: usize, sizes: &[usize]) -> Vec<Vec<i32>> {
    sizes
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let n = dims.iter().product::<usize>() / dims[axis] * s;
            (0..n as i32).map(|i| (k as i32 + 1) * 10_000 + i).collect()
        })
        .collect()
}

proptest! {
    /// The block copies agree with the index model for every rank, axis and input count.
    #[test]
    fn reference_matches_the_index_model((dims, axis, sizes) in problem()) {
        let inputs = make_inputs(&dims, axis, &sizes);
        let want = model(&dims, axis, &sizes, &inputs);
        let outer: usize = dims[..axis].iter().product();
        let slices: Vec<&[i32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut got = vec![0i32; want.len()];
        concat(outer, &slices, &mut got).unwrap();
        prop_assert_eq!(&got, &want);
        // Element types other than i32 move the same way.
        let narrow: Vec<Vec<i8>> = inputs.iter().map(|v| v.iter().map(|&x| x as i8).collect()).collect();
        let slices: Vec<&[i8]> = narrow.iter().map(Vec::as_slice).collect();
        let mut got8 = vec![0i8; want.len()];
        concat(outer, &slices, &mut got8).unwrap();
        let want8: Vec<i8> = want.iter().map(|&x| x as i8).collect();
        prop_assert_eq!(got8, want8);
    }
}

#[test]
fn validation_catches_bad_lengths() {
    let a = [1i8, 2, 3, 4];
    let b = [5i8, 6];
    let mut out = [0i8; 6];
    concat(2, &[&a, &b], &mut out).unwrap();
    assert_eq!(out, [1, 2, 5, 3, 4, 6]);
    // Too short an output.
    assert!(concat(2, &[&a, &b], &mut out[..4]).is_err());
    // Too long an output.
    let mut long = [0i8; 8];
    assert!(concat(2, &[&a, &b], &mut long).is_err());
    // An input that does not split into `outer` blocks.
    assert_eq!(
        concat(2, &[&a, &b[..1]], &mut out),
        Err(Error::InvalidShape)
    );
    assert_eq!(concat(0, &[&a], &mut out), Err(Error::InvalidShape));
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

/// One-op models built with the helper run through the interpreter like the kernel: float
/// with a constant among the inputs, int8 along the last axis, and the most inputs allowed.
#[test]
fn one_op_models_run_like_the_kernel() {
    let a: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let c: Vec<f32> = (0..8).map(|i| -(i as f32)).collect();
    let mut b = ModelBuilder::new("cat");
    let x0 = b
        .tensor("a", DType::F32, &[2, 3, 4], QuantSpec::None)
        .unwrap();
    let x1 = b.constant("c", &[2, 1, 4], &c, QuantSpec::None).unwrap();
    b.input(x0);
    let y = b.concat("cat", &[x0, x1, x0], 1).unwrap();
    assert_eq!(b.shape(y).unwrap().dims(), [2, 7, 4]);
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&a)]).unwrap();
    let mut want = vec![0f32; 2 * 7 * 4];
    concat(2, &[&a, &c, &a], &mut want).unwrap();
    assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));

    let q = QuantSpec::PerTensor {
        scale: 0.5,
        zero_point: -3,
    };
    let mut b = ModelBuilder::new("cat-i8");
    let ids: Vec<TensorId> = (0..255)
        .map(|i| {
            b.tensor(&std::format!("x{i}"), DType::I8, &[2, 1], q.clone())
                .unwrap()
        })
        .collect();
    for &id in &ids {
        b.input(id);
    }
    let y = b.concat("cat", &ids, 1).unwrap();
    b.output(y);
    let data: Vec<Vec<u8>> = (0..255u8).map(|i| vec![i, i.wrapping_add(1)]).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let out = run_model(&b.build().unwrap().bytes, &refs).unwrap();
    let want: Vec<u8> = (0..255u8)
        .chain((0..255u8).map(|i| i.wrapping_add(1)))
        .collect();
    assert_eq!(out[0], want);
}

#[test]
fn check_rejects_bad_models() {
    let q = |zp| QuantSpec::PerTensor {
        scale: 0.5,
        zero_point: zp,
    };
    let build = |second: (DType, &[usize], QuantSpec), out: &[usize], axis: u8| {
        let mut b = ModelBuilder::new("bad");
        let x0 = b.tensor("x0", DType::I8, &[2, 3], q(1)).unwrap();
        let x1 = b.tensor("x1", second.0, second.1, second.2).unwrap();
        let y = b.tensor("y", DType::I8, out, q(1)).unwrap();
        b.input(x0);
        b.input(x1);
        b.output(y);
        b.op(
            OpKind::Concat,
            "cat",
            &[Some(x0), Some(x1)],
            &[y],
            &ConcatAttributes { axis },
        )
        .unwrap();
        b.build()
    };
    build((DType::I8, &[2, 5], q(1)), &[2, 8], 1).unwrap();
    assert!(matches!(
        op_problem(build((DType::I8, &[2, 5], q(2)), &[2, 8], 1)),
        OpProblem::Quantization(Slot::Input(1), _)
    ));
    assert!(matches!(
        op_problem(build((DType::I8, &[2, 5], QuantSpec::None), &[2, 8], 1)),
        OpProblem::Quantization(Slot::Input(1), _)
    ));
    assert!(matches!(
        op_problem(build((DType::I8, &[3, 5], q(1)), &[2, 8], 1)),
        OpProblem::Shape(Slot::Input(1), _)
    ));
    assert!(matches!(
        op_problem(build((DType::I8, &[2, 5], q(1)), &[2, 9], 1)),
        OpProblem::Shape(Slot::Output(0), _)
    ));
    assert_eq!(
        op_problem(build((DType::I8, &[2, 5], q(1)), &[2, 8], 2)),
        OpProblem::Attribute("axis")
    );
    assert_eq!(
        op_problem(build((DType::I16, &[2, 5], q(1)), &[2, 8], 1)),
        OpProblem::DType(Slot::Input(1))
    );
}
