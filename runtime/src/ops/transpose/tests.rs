use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::OpKind;
use crate::ops::testing::{compare_kernels, exact, run_model};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// Random dims (rank 1 to 6, often with ones) and a random permutation of them.
fn problem() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(prop_oneof![Just(1usize), 1usize..6, 7usize..10], 1..=6).prop_flat_map(
        |dims| {
            let rank = dims.len();
            let perm = Just((0..rank).collect::<Vec<usize>>()).prop_shuffle();
            (Just(dims), perm)
        },
    )
}

fn run(k: TransposeKernel<i32>, g: &TransposeGeometry, x: &[i32]) -> Vec<i32> {
    let mut out = vec![-1i32; x.len()];
    k(g, x, &mut out);
    out
}

/// Independent model: decompose each output position into its multi-index and read the
/// input at the un-permuted index.
fn model(dims: &[usize], perm: &[usize], x: &[i32]) -> Vec<i32> {
    let rank = dims.len();
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    (0..x.len())
        .map(|flat| {
            let mut out_idx = vec![0; rank];
            let mut r = flat;
            for a in (0..rank).rev() {
                out_idx[a] = r % out_dims[a];
                r /= out_dims[a];
            }
            let mut in_idx = vec![0; rank];
            for a in 0..rank {
                in_idx[perm[a]] = out_idx[a];
            }
            let offset = in_idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i);
            x[offset]
        })
        .collect()
}

proptest! {
    /// Every kernel gives the reference's result, and the reference the index model's.
    #[test]
    fn every_kernel_matches_the_reference((dims, perm) in problem()) {
        let g = TransposeGeometry::new(&dims, &perm).unwrap();
        let x: Vec<i32> = (0..g.elements() as i32).collect();
        prop_assert_eq!(run(reference::transpose, &g, &x), model(&dims, &perm, &x));
        let compared = compare_kernels(&kernels::<i32>(), |k| run(k, &g, &x), exact)?;
        prop_assert_eq!(compared, 1);
    }

    /// Simplifying keeps the element order: the simplified transpose moves the same elements.
    #[test]
    fn simplification_is_faithful((dims, perm) in problem()) {
        let g = TransposeGeometry::new(&dims, &perm).unwrap();
        let (rank, d, p) = blocked::simplify(&g);
        prop_assert!(rank <= dims.len());
        prop_assert_eq!(d[..rank].iter().product::<usize>(), g.elements());
        if rank > 0 {
            let simple = TransposeGeometry::new(&d[..rank], &p[..rank]).unwrap();
            let x: Vec<i32> = (0..g.elements() as i32).collect();
            prop_assert_eq!(run(reference::transpose, &simple, &x), run(reference::transpose, &g, &x));
        }
    }
}

/// Named cases: 2-D and NHWC <-> NCHW with sizes on either side of the tile width, and
/// transposes that simplify to a copy or a block swap.
#[test]
fn edge_cases_match_the_reference() {
    let sizes = [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33];
    let check = |dims: &[usize], perm: &[usize]| {
        let g = TransposeGeometry::new(dims, perm).unwrap();
        let x: Vec<i32> = (0..g.elements() as i32).collect();
        assert_eq!(run(reference::transpose, &g, &x), model(dims, perm, &x));
        compare_kernels(&kernels::<i32>(), |k| run(k, &g, &x), exact).unwrap();
    };
    for &a in &sizes {
        for &b in &sizes {
            check(&[a, b], &[1, 0]);
            check(&[2, a, 3, b], &[0, 3, 1, 2]);
            check(&[2, a, b, 3], &[0, 2, 3, 1]);
        }
    }
    check(&[1, 1, 1], &[2, 0, 1]);
    check(&[4, 5, 6], &[0, 1, 2]);
    check(&[4, 5, 6], &[1, 0, 2]);
    check(&[4, 1, 5, 6], &[2, 3, 1, 0]);
    check(&[2, 3, 4, 5, 6, 7], &[5, 4, 3, 2, 1, 0]);

    // The float path moves bits unchanged, NaN payloads included.
    let g = TransposeGeometry::new(&[3, 2], &[1, 0]).unwrap();
    let x = [1.0f32, f32::NAN, -0.0, f32::INFINITY, 5.0, -6.0];
    let mut y = [0f32; 6];
    transpose(&g, &x, &mut y).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    assert_eq!(
        bits(&y),
        bits(&[1.0, -0.0, 5.0, f32::NAN, f32::INFINITY, -6.0])
    );
}

#[test]
fn validation_rejects_bad_geometry() {
    assert!(TransposeGeometry::new(&[2, 3], &[0, 0]).is_err());
    assert!(TransposeGeometry::new(&[2, 3], &[0, 2]).is_err());
    assert!(TransposeGeometry::new(&[2, 3], &[0]).is_err());
    assert!(TransposeGeometry::new(&[], &[]).is_err());
    assert!(TransposeGeometry::new(&[1; 7], &[0, 1, 2, 3, 4, 5, 6]).is_err());
    assert!(TransposeGeometry::new(&[2, 0], &[1, 0]).is_err());
    let g = TransposeGeometry::new(&[2, 3], &[1, 0]).unwrap();
    assert_eq!(
        transpose(&g, &[0i8; 6], &mut [0i8; 5]),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 6,
            actual: 5
        })
    );
}

/// A one-op model built with the helper runs through the interpreter like the kernel.
#[test]
fn one_op_models_run_like_the_kernel() {
    // NHWC -> NCHW, int8.
    let x: Vec<i8> = (0..2 * 5 * 3 * 7).map(|i| (i % 251) as i8).collect();
    let q = QuantSpec::PerTensor {
        scale: 0.2,
        zero_point: 9,
    };
    let mut b = ModelBuilder::new("t");
    let t = b.tensor("x", DType::I8, &[2, 5, 3, 7], q).unwrap();
    b.input(t);
    let y = b.transpose("nchw", t, &[0, 3, 1, 2]).unwrap();
    assert_eq!(b.shape(y).unwrap().dims(), [2, 7, 5, 3]);
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let g = TransposeGeometry::new(&[2, 5, 3, 7], &[0, 3, 1, 2]).unwrap();
    let mut want = vec![0i8; x.len()];
    reference::transpose(&g, &x, &mut want);
    assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&want));

    // 2-D, float.
    let x: Vec<f32> = (0..9 * 17).map(|i| i as f32 * 0.5).collect();
    let mut b = ModelBuilder::new("t");
    let t = b
        .tensor("x", DType::F32, &[9, 17], QuantSpec::None)
        .unwrap();
    b.input(t);
    let y = b.transpose("t", t, &[1, 0]).unwrap();
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let g = TransposeGeometry::new(&[9, 17], &[1, 0]).unwrap();
    let mut want = vec![0f32; x.len()];
    reference::transpose(&g, &x, &mut want);
    assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

#[test]
fn check_rejects_bad_models() {
    let build = |rank: u8, perm: [u8; 6], out: &[usize], out_dtype: DType| {
        let mut b = ModelBuilder::new("bad");
        let x = b
            .tensor("x", DType::F32, &[2, 3, 4], QuantSpec::None)
            .unwrap();
        let y = b.tensor("y", out_dtype, out, QuantSpec::None).unwrap();
        b.input(x);
        b.output(y);
        b.op(
            OpKind::Transpose,
            "t",
            &[Some(x)],
            &[y],
            &TransposeAttributes { rank, perm },
        )
        .unwrap();
        b.build()
    };
    build(3, [2, 0, 1, 0, 0, 0], &[4, 2, 3], DType::F32).unwrap();
    assert_eq!(
        op_problem(build(3, [2, 2, 1, 0, 0, 0], &[4, 4, 3], DType::F32)),
        OpProblem::Attribute("perm")
    );
    assert_eq!(
        op_problem(build(3, [2, 0, 1, 5, 0, 0], &[4, 2, 3], DType::F32)),
        OpProblem::Attribute("perm")
    );
    assert!(matches!(
        op_problem(build(2, [1, 0, 0, 0, 0, 0], &[3, 2], DType::F32)),
        OpProblem::Shape(Slot::Input(0), _)
    ));
    assert!(matches!(
        op_problem(build(3, [2, 0, 1, 0, 0, 0], &[2, 3, 4], DType::F32)),
        OpProblem::Shape(Slot::Output(0), _)
    ));
    assert_eq!(
        op_problem(build(3, [2, 0, 1, 0, 0, 0], &[4, 2, 3], DType::I32)),
        OpProblem::DType(Slot::Output(0))
    );
    assert_eq!(
        op_problem(build(7, [0; 6], &[2, 3, 4], DType::F32)),
        OpProblem::Attribute("rank")
    );
}
