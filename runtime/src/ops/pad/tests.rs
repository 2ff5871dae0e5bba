use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::OpKind;
use crate::ops::testing::run_model;
use crate::quant::QuantParams;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// Random dims (rank 1 to 6) with padding up to 5 per side, often past the dimension.
fn problem() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>)> {
    (1usize..=6).prop_flat_map(|rank| {
        let max = if rank > 4 { 3 } else { 6 };
        (
            prop::collection::vec(1usize..max, rank),
            prop::collection::vec((0usize..max, 0usize..max), rank),
        )
    })
}

/// Independent model: each output element's multi-index, shifted by `before`, is inside the
/// input or not.
fn model(dims: &[usize], pads: &[(usize, usize)], value: i32, x: &[i32]) -> Vec<i32> {
    let rank = dims.len();
    let out_dims: Vec<usize> = (0..rank).map(|d| pads[d].0 + dims[d] + pads[d].1).collect();
    let total: usize = out_dims.iter().product();
    (0..total)
        .map(|flat| {
            let mut r = flat;
            let mut offset = 0;
            let mut inside = true;
            let mut idx = vec![0; rank];
            for d in (0..rank).rev() {
                idx[d] = r % out_dims[d];
                r /= out_dims[d];
            }
            for d in 0..rank {
                let i = idx[d] as isize - pads[d].0 as isize;
                inside &= i >= 0 && (i as usize) < dims[d];
                offset = offset * dims[d] + i.max(0) as usize;
            }
            if inside { x[offset] } else { value }
        })
        .collect()
}

proptest! {
    /// The reference agrees with the index model for every rank and padding.
    #[test]
    fn reference_matches_the_index_model((dims, pads) in problem(), value in any::<i32>()) {
        let g = PadGeometry::new(&dims, &pads).unwrap();
        let x: Vec<i32> = (1..=g.input_elements() as i32).collect();
        let mut got = vec![0i32; g.output_elements()];
        pad(&g, value, &x, &mut got).unwrap();
        prop_assert_eq!(got, model(&dims, &pads, value, &x));
    }
}

/// Named cases: no padding (a copy), padding larger than the input on every side, a single
/// element, rank 6, and lengths around the vector widths along the last dimension.
#[test]
fn edge_cases() {
    let check = |dims: &[usize], pads: &[(usize, usize)]| {
        let g = PadGeometry::new(dims, pads).unwrap();
        let x: Vec<i32> = (1..=g.input_elements() as i32).collect();
        let mut got = vec![0i32; g.output_elements()];
        pad(&g, -7, &x, &mut got).unwrap();
        assert_eq!(got, model(dims, pads, -7, &x), "{dims:?} {pads:?}");
    };
    check(&[3, 4], &[(0, 0), (0, 0)]);
    check(&[1], &[(5, 9)]);
    check(&[2, 1, 3], &[(4, 4), (3, 0), (0, 5)]);
    check(
        &[1, 2, 1, 2, 1, 2],
        &[(1, 0), (0, 1), (1, 1), (0, 0), (2, 0), (0, 2)],
    );
    for n in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
        check(&[2, n], &[(1, 1), (3, 2)]);
        check(&[1, n, n, 3], &[(0, 0), (1, 2), (2, 1), (0, 0)]);
    }
    // Floats are copied bit for bit.
    let g = PadGeometry::new(&[2], &[(1, 1)]).unwrap();
    let mut y = [0f32; 4];
    pad(&g, f32::NEG_INFINITY, &[-0.0, 2.5], &mut y).unwrap();
    assert_eq!(
        y.map(f32::to_bits),
        [f32::NEG_INFINITY, -0.0, 2.5, f32::NEG_INFINITY].map(f32::to_bits)
    );
}

#[test]
fn validation_rejects_bad_geometry() {
    assert!(PadGeometry::new(&[], &[]).is_err());
    assert!(PadGeometry::new(&[2, 0], &[(0, 0), (0, 0)]).is_err());
    assert!(PadGeometry::new(&[2], &[(0, 0), (0, 0)]).is_err());
    assert!(PadGeometry::new(&[2], &[(usize::MAX, 0)]).is_err());
    let g = PadGeometry::new(&[2], &[(1, 0)]).unwrap();
    assert_eq!(
        pad(&g, 0i8, &[1, 2], &mut [0; 2]),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 3,
            actual: 2
        })
    );
}

/// One-op models built with the helper: float with a pad value, int8 with real 0 (the zero
/// point).
#[test]
fn one_op_models_run_like_the_kernel() {
    let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
    let pads = [(0, 1), (2, 0), (1, 3)];
    let mut b = ModelBuilder::new("pad");
    let t = b
        .tensor("x", DType::F32, &[2, 3, 4], QuantSpec::None)
        .unwrap();
    b.input(t);
    let y = b.pad("pad", t, &pads, 1.5).unwrap();
    assert_eq!(b.shape(y).unwrap().dims(), [3, 5, 8]);
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let g = PadGeometry::new(&[2, 3, 4], &pads).unwrap();
    let mut want = vec![0f32; g.output_elements()];
    pad(&g, 1.5, &x, &mut want).unwrap();
    assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));

    let q = QuantParams {
        scale: 0.25,
        zero_point: -100,
    };
    let xq: Vec<i8> = (0..24).map(|i| i as i8).collect();
    let mut b = ModelBuilder::new("pad-i8");
    let spec = QuantSpec::PerTensor {
        scale: q.scale,
        zero_point: q.zero_point,
    };
    let t = b.tensor("x", DType::I8, &[2, 3, 4], spec).unwrap();
    b.input(t);
    let y = b.pad("pad", t, &pads, 0.0).unwrap();
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&xq)]).unwrap();
    let mut want = vec![0i8; g.output_elements()];
    pad(&g, -100i8, &xq, &mut want).unwrap();
    assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&want));
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

#[test]
fn check_rejects_bad_models() {
    let q = QuantSpec::PerTensor {
        scale: 0.5,
        zero_point: 0,
    };
    let build = |pads: [[u32; 2]; 6], value: PadValue, out: &[usize]| {
        let mut b = ModelBuilder::new("bad");
        let x = b.tensor("x", DType::I8, &[2, 3], q.clone()).unwrap();
        let y = b.tensor("y", DType::I8, out, q.clone()).unwrap();
        b.input(x);
        b.output(y);
        b.op(
            OpKind::Pad,
            "pad",
            &[Some(x)],
            &[y],
            &PadAttributes {
                rank: 2,
                pads,
                value,
            },
        )
        .unwrap();
        b.build()
    };
    let mut pads = [[0u32; 2]; 6];
    pads[1] = [1, 2];
    build(pads, PadValue::Integer(-128), &[2, 6]).unwrap();
    assert_eq!(
        op_problem(build(pads, PadValue::Float(0.0), &[2, 6])),
        OpProblem::Attribute("value")
    );
    assert_eq!(
        op_problem(build(pads, PadValue::Integer(128), &[2, 6])),
        OpProblem::Attribute("value")
    );
    assert!(matches!(
        op_problem(build(pads, PadValue::Integer(0), &[2, 5])),
        OpProblem::Shape(Slot::Output(0), _)
    ));
    let mut extra = pads;
    extra[4] = [1, 0];
    assert_eq!(
        op_problem(build(extra, PadValue::Integer(0), &[2, 6])),
        OpProblem::Attribute("pads")
    );
}
