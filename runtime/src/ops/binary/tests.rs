use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec, TensorId};
use crate::ops::testing::{compare_kernels, exact, f32s, i8s, run_model};
use crate::quant::QuantParams;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// Which input, if any, the output shares storage with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum InPlace {
    No,
    A,
    B,
    Both,
}

/// A broadcast geometry: the output's dimensions and each input's.
#[derive(Debug, Clone)]
struct Geometry {
    a: Vec<usize>,
    b: Vec<usize>,
    in_place: InPlace,
}

impl Geometry {
    fn shape(&self) -> BinaryShape {
        BinaryShape::broadcast(&self.a, &self.b).unwrap()
    }
}

/// Output dimensions of rank 0..=4, each input a suffix of them with some dimensions set to
/// 1; an in-place operand is only chosen where it covers the output.
fn geometry() -> impl Strategy<Value = Geometry> {
    (0usize..=4).prop_flat_map(|rank| {
        (
            prop::collection::vec(1usize..=9, rank),
            prop::collection::vec(any::<bool>(), rank),
            prop::collection::vec(any::<bool>(), rank),
            0..=rank,
            0..=rank,
            0usize..4,
        )
            .prop_map(move |(out, keep_a, keep_b, ra, rb, place)| {
                let operand = |keep: &[bool], r: usize| -> Vec<usize> {
                    (rank - r..rank)
                        .map(|i| if keep[i] { out[i] } else { 1 })
                        .collect()
                };
                let (a, b) = (operand(&keep_a, ra), operand(&keep_b, rb));
                let shape = BinaryShape::broadcast(&a, &b).unwrap();
                let full = |d: &[usize]| d.iter().product::<usize>() == shape.output_elements();
                let in_place = match place {
                    1 if full(&a) => InPlace::A,
                    2 if full(&b) => InPlace::B,
                    3 if full(&a) && full(&b) => InPlace::Both,
                    _ => InPlace::No,
                };
                // `Both` reads one buffer for both operands, which must then hold equal data.
                let b = if in_place == InPlace::Both {
                    a.clone()
                } else {
                    b
                };
                Geometry { a, b, in_place }
            })
    })
}

/// Runs `kernel` on `a` and `b`, handing the in-place operand over through the output.
fn run_kernel<T: Copy + Default>(
    geometry: &Geometry,
    a: &[T],
    b: &[T],
    kernel: impl Fn(Source<'_, T>, Source<'_, T>, &mut [T]),
) -> Vec<T> {
    let n = geometry.shape().output_elements();
    match geometry.in_place {
        InPlace::No => {
            let mut out = vec![T::default(); n];
            kernel(Source::Slice(a), Source::Slice(b), &mut out);
            out
        }
        InPlace::A => {
            let mut out = a.to_vec();
            kernel(Source::Output, Source::Slice(b), &mut out);
            out
        }
        InPlace::B => {
            let mut out = b.to_vec();
            kernel(Source::Slice(a), Source::Output, &mut out);
            out
        }
        InPlace::Both => {
            let mut out = a.to_vec();
            kernel(Source::Output, Source::Output, &mut out);
            out
        }
    }
}

fn op_strategy() -> impl Strategy<Value = BinaryOp> {
    prop_oneof![
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul)
    ]
}

/// int8 parameters as a model gets them: from three scales and zero points.
fn params_from_scales() -> impl Strategy<Value = BinaryI8Params> {
    (
        op_strategy(),
        (-9.0f64..0.0, -9.0f64..0.0, -9.0f64..0.0),
        (any::<i8>(), any::<i8>(), any::<i8>()),
        (any::<i8>(), any::<i8>()),
    )
        .prop_map(|(op, (l1, l2, lo), (z1, z2, zo), (x, y))| {
            let s = |l: f64| libm::exp2(l) as f32;
            let requant = BinaryRequant::new(op, s(l1), s(l2), s(lo)).unwrap();
            BinaryI8Params::from_requant(
                op,
                &requant,
                [z1.into(), z2.into(), zo.into()],
                (x.min(y), x.max(y)),
            )
            .unwrap()
        })
}

/// int8 parameters with arbitrary in-range multipliers and shifts, to reach the wrapping,
/// saturating and left-shifting corners of the fixed-point arithmetic.
fn params_raw() -> impl Strategy<Value = BinaryI8Params> {
    let multiplier =
        (0i32..=i32::MAX, -31i32..=30).prop_map(|(m, s)| QuantizedMultiplier::new(m, s).unwrap());
    (
        op_strategy(),
        (multiplier.clone(), multiplier.clone(), multiplier),
        0u32..=u32::from(BinaryRequant::MAX_LEFT_SHIFT),
        (any::<i8>(), any::<i8>(), any::<i8>()),
        (any::<i8>(), any::<i8>()),
    )
        .prop_map(
            |(op, (m1, m2, mo), left_shift, (z1, z2, zo), (x, y))| BinaryI8Params {
                op,
                input1_zero_point: z1.into(),
                input2_zero_point: z2.into(),
                output_zero_point: zo.into(),
                left_shift,
                input1_multiplier: m1,
                input2_multiplier: m2,
                output_multiplier: mo,
                activation_min: x.min(y),
                activation_max: x.max(y),
            },
        )
}

#[derive(Debug, Clone)]
struct I8Problem {
    geometry: Geometry,
    params: BinaryI8Params,
    a: Vec<i8>,
    b: Vec<i8>,
}

fn i8_problem(params: impl Strategy<Value = BinaryI8Params>) -> impl Strategy<Value = I8Problem> {
    (geometry(), params).prop_flat_map(|(geometry, params)| {
        let s = geometry.shape();
        let both = geometry.in_place == InPlace::Both;
        (i8s(s.a_elements()), i8s(s.b_elements())).prop_map(move |(a, b)| I8Problem {
            geometry: geometry.clone(),
            params,
            b: if both { a.clone() } else { b },
            a,
        })
    })
}

fn run_i8(kernel: I8Kernel, p: &I8Problem) -> Vec<i8> {
    let shape = p.geometry.shape();
    run_kernel(&p.geometry, &p.a, &p.b, |a, b, out| {
        let op = BinaryI8 {
            shape,
            params: p.params,
            a,
            b,
        };
        op.validate(out).unwrap();
        kernel(&op, out)
    })
}

#[derive(Debug, Clone)]
struct F32Problem {
    geometry: Geometry,
    op: BinaryOp,
    activation: (f32, f32),
    a: Vec<f32>,
    b: Vec<f32>,
}

fn f32_problem() -> impl Strategy<Value = F32Problem> {
    (geometry(), op_strategy(), 0usize..3).prop_flat_map(|(geometry, op, act)| {
        let s = geometry.shape();
        let both = geometry.in_place == InPlace::Both;
        let activation = [
            (f32::NEG_INFINITY, f32::INFINITY),
            (0.0, f32::INFINITY),
            (0.0, 6.0),
        ][act];
        (f32s(s.a_elements(), 4.0), f32s(s.b_elements(), 4.0)).prop_map(move |(a, b)| F32Problem {
            geometry: geometry.clone(),
            op,
            activation,
            b: if both { a.clone() } else { b },
            a,
        })
    })
}

fn run_f32(kernel: F32Kernel, p: &F32Problem) -> Vec<f32> {
    let shape = p.geometry.shape();
    run_kernel(&p.geometry, &p.a, &p.b, |a, b, out| {
        let op = BinaryF32 {
            shape,
            op: p.op,
            activation: p.activation,
            a,
            b,
        };
        op.validate(out).unwrap();
        kernel(&op, out)
    })
}

/// The flat index into an operand of `dims` (trailing-aligned) for output element `flat` of
/// `out`, computed independently of the kernels: unravel, then drop broadcast coordinates.
fn operand_index(out: &[usize], dims: &[usize], flat: usize) -> usize {
    let mut rest = flat;
    let mut coords = vec![0usize; out.len()];
    for i in (0..out.len()).rev() {
        coords[i] = rest % out[i];
        rest /= out[i];
    }
    let skip = out.len() - dims.len();
    let mut index = 0;
    for (j, &d) in dims.iter().enumerate() {
        let c = if d == 1 { 0 } else { coords[skip + j] };
        index = index * d + c;
    }
    index
}

fn floats_equal(want: &[f32], got: &[f32]) -> Result<(), std::string::String> {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if !F32_TOLERANCE.accepts(*w, *g, 0, 0.0) {
            return Err(std::format!("element {i}: want {w}, got {g}"));
        }
    }
    if want.len() == got.len() {
        Ok(())
    } else {
        Err(std::format!("length {} vs {}", want.len(), got.len()))
    }
}

proptest! {
    /// Every int8 kernel gives the reference's bytes, with multipliers as a model has them.
    #[test]
    fn every_i8_kernel_matches_the_reference(p in i8_problem(params_from_scales())) {
        compare_kernels(I8_KERNELS, |k| run_i8(k, &p), exact)?;
    }

    /// ... and with arbitrary multipliers, shifts and headroom, where the arithmetic wraps
    /// and saturates.
    #[test]
    fn every_i8_kernel_matches_the_reference_at_the_extremes(p in i8_problem(params_raw())) {
        compare_kernels(I8_KERNELS, |k| run_i8(k, &p), exact)?;
    }

    /// Every float kernel gives the reference's values exactly.
    #[test]
    fn every_f32_kernel_matches_the_reference(p in f32_problem()) {
        compare_kernels(F32_KERNELS, |k| run_f32(k, &p), floats_equal)?;
    }

    /// The reference broadcasts as NumPy does (checked against an independent unravel of
    /// each output index) and each int8 element is within one step of real arithmetic on the
    /// dequantized inputs.
    #[test]
    fn reference_matches_real_arithmetic(p in i8_problem(params_from_scales())) {
        let shape = p.geometry.shape();
        let got = run_i8(reference::binary_i8, &p);
        let q = p.params;
        for (o, &g) in got.iter().enumerate() {
            let x1 = p.a[operand_index(shape.output_dims(), &p.geometry.a, o)];
            let x2 = p.b[operand_index(shape.output_dims(), &p.geometry.b, o)];
            prop_assert_eq!(g, reference::element_i8(&q, x1, x2));
        }
        // Real arithmetic needs the scales; rebuild them from a fresh set.
        let scales = [0.02f32, 0.05, 0.04];
        let requant = BinaryRequant::new(q.op, scales[0], scales[1], scales[2]).unwrap();
        let params = BinaryI8Params::from_requant(
            q.op,
            &requant,
            [q.input1_zero_point, q.input2_zero_point, q.output_zero_point],
            (-128, 127),
        ).unwrap();
        for (&x1, &x2) in p.a.iter().zip(&p.b) {
            let r1 = f64::from(scales[0]) * f64::from(i32::from(x1) - q.input1_zero_point);
            let r2 = f64::from(scales[1]) * f64::from(i32::from(x2) - q.input2_zero_point);
            let real = match q.op {
                BinaryOp::Add => r1 + r2,
                BinaryOp::Sub => r1 - r2,
                BinaryOp::Mul => r1 * r2,
            };
            let want = (real / f64::from(scales[2]) + f64::from(q.output_zero_point))
                .clamp(-128.0, 127.0);
            let got = f64::from(reference::element_i8(&params, x1, x2));
            prop_assert!((got - want).abs() <= 1.0, "{:?} {} {}: got {} want {}", q.op, x1, x2, got, want);
        }
    }

    /// The float reference broadcasts as NumPy does and rounds each result once.
    #[test]
    fn f32_reference_matches_real_arithmetic(p in f32_problem()) {
        let shape = p.geometry.shape();
        let got = run_f32(reference::binary_f32, &p);
        for (o, &g) in got.iter().enumerate() {
            let x1 = f64::from(p.a[operand_index(shape.output_dims(), &p.geometry.a, o)]);
            let x2 = f64::from(p.b[operand_index(shape.output_dims(), &p.geometry.b, o)]);
            let real = match p.op {
                BinaryOp::Add => x1 + x2,
                BinaryOp::Sub => x1 - x2,
                BinaryOp::Mul => x1 * x2,
            };
            let want = (real as f32).max(p.activation.0).min(p.activation.1);
            prop_assert_eq!(g, want);
        }
    }

    /// The vector `QuantizedMultiplier::apply` equals the scalar one lane for lane (the
    /// high multiply inside it is the requantization's, tested there).
    #[test]
    fn vector_fixed_point_matches_the_scalar(
        a in prop::array::uniform8(prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(0), any::<i32>()]),
        m in 0i32..=i32::MAX,
        shift in -31i32..=30,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let qm = QuantizedMultiplier::new(m, shift).unwrap();
            if let Some(applied) = super::x86::applied_lanes(a, qm) {
                for i in 0..8 {
                    prop_assert_eq!(applied[i], qm.apply(a[i]));
                }
            }
        }
        let _ = (a, m, shift);
    }
}

#[test]
fn broadcast_shapes_follow_numpy() {
    let s = BinaryShape::broadcast(&[2, 3, 4], &[4]).unwrap();
    assert_eq!(s.output_dims(), &[2, 3, 4]);
    assert_eq!((s.a_elements(), s.b_elements()), (24, 4));
    let s = BinaryShape::broadcast(&[2, 1], &[1, 3]).unwrap();
    assert_eq!(s.output_dims(), &[2, 3]);
    let s = BinaryShape::broadcast(&[], &[5]).unwrap();
    assert_eq!(s.output_dims(), &[5]);
    let s = BinaryShape::broadcast(&[], &[]).unwrap();
    assert_eq!((s.output_dims(), s.output_elements()), (&[][..], 1));
    assert_eq!(
        BinaryShape::broadcast(&[2, 3], &[4]),
        Err(Error::InvalidShape)
    );
    assert_eq!(BinaryShape::broadcast(&[0], &[1]), Err(Error::InvalidShape));
    assert_eq!(
        BinaryShape::broadcast(&[1; 7], &[1]),
        Err(Error::InvalidShape)
    );
    assert_eq!(
        BinaryShape::broadcast(&[usize::MAX / 2, 3], &[1]),
        Err(Error::InvalidShape)
    );
}

#[test]
fn rows_merge_dimensions_that_broadcast_alike() {
    // Same shape: one row of everything.
    let r = BinaryShape::broadcast(&[2, 3, 4], &[2, 3, 4])
        .unwrap()
        .rows();
    assert_eq!(
        (r.count, r.len, r.a_advances, r.b_advances),
        (1, 24, true, true)
    );
    // A scalar operand repeats along one long row.
    let r = BinaryShape::broadcast(&[2, 3, 4], &[1]).unwrap().rows();
    assert_eq!(
        (r.count, r.len, r.a_advances, r.b_advances),
        (1, 24, true, false)
    );
    // A per-channel operand: rows of C, the operand restarting each row.
    let r = BinaryShape::broadcast(&[2, 3, 4], &[4]).unwrap().rows();
    assert_eq!((r.count, r.len), (6, 4));
    let offsets: Vec<_> = r.iter().collect();
    assert_eq!(offsets[0], (0, 0, 0));
    assert_eq!(offsets[5], (20, 0, 20));
    // A per-row operand ([.., 1]): rows of C, the operand one value per row.
    let r = BinaryShape::broadcast(&[2, 3, 4], &[2, 3, 1])
        .unwrap()
        .rows();
    assert_eq!((r.count, r.len, r.b_advances), (6, 4, false));
    assert_eq!(r.iter().nth(4), Some((16, 4, 16)));
}

#[test]
fn validation_names_the_wrong_operand() {
    let shape = BinaryShape::broadcast(&[2, 3], &[3]).unwrap();
    let requant = BinaryRequant::new(BinaryOp::Add, 0.1, 0.1, 0.1).unwrap();
    let params =
        BinaryI8Params::from_requant(BinaryOp::Add, &requant, [0, 0, 0], (-128, 127)).unwrap();
    let (a, b) = ([0i8; 6], [0i8; 3]);
    let good = BinaryI8 {
        shape,
        params,
        a: Source::Slice(&a),
        b: Source::Slice(&b),
    };
    let mut out = [0i8; 6];
    assert_eq!(binary_i8(&good, &mut out), Ok(()));
    assert_eq!(
        binary_i8(&good, &mut out[..5]),
        Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 6,
            actual: 5
        })
    );
    let op = BinaryI8 {
        b: Source::Slice(&b[..2]),
        ..good
    };
    assert_eq!(
        binary_i8(&op, &mut out),
        Err(Error::ShapeMismatch {
            operand: Operand::Input,
            expected: 3,
            actual: 2
        })
    );
    // A broadcast operand cannot be read in place.
    let op = BinaryI8 {
        b: Source::Output,
        ..good
    };
    assert_eq!(binary_i8(&op, &mut out), Err(Error::InvalidShape));
    let op = BinaryI8 {
        params: BinaryI8Params {
            input2_zero_point: 128,
            ..params
        },
        ..good
    };
    assert_eq!(
        binary_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::InputZeroPoint))
    );
    let op = BinaryI8 {
        params: BinaryI8Params {
            left_shift: 24,
            ..params
        },
        ..good
    };
    assert_eq!(
        binary_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::Scale))
    );
    let op = BinaryI8 {
        params: BinaryI8Params {
            activation_min: 3,
            activation_max: 2,
            ..params
        },
        ..good
    };
    assert_eq!(
        binary_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::ActivationRange))
    );
    assert_eq!(
        BinaryRequant::new(BinaryOp::Mul, 0.1, 0.0, 0.1),
        Err(Error::InvalidQuantization(QuantField::Scale))
    );
}

/// How many fast paths of `table` this CPU runs, so a test can tell they were compared.
fn fast_paths<F>(table: &[crate::isa::Kernel<F>]) -> usize {
    table[1..].iter().filter(|k| k.isa.available()).count()
}

/// Row lengths on either side of the vector width, each broadcast pattern, zero points at
/// the extremes and multipliers that saturate, in place and not.
#[test]
fn edge_cases_match_the_reference() {
    let patterns = |n: usize| -> Vec<(Vec<usize>, Vec<usize>)> {
        vec![
            (vec![2, n], vec![2, n]),
            (vec![2, n], vec![]),
            (vec![1], vec![3, n]),
            (vec![3, n], vec![n]),
            (vec![3, n], vec![3, 1]),
            (vec![n, 1], vec![1, 5]),
        ]
    };
    let zero_points = [(-128, 127, -128), (127, -128, 127), (0, 0, 0)];
    let scale_sets = [
        (0.05f32, 0.05f32, 0.1f32),
        (1.0, 1e-3, 1e-4),
        (1e-4, 1.0, 0.5),
        (0.02, 0.03, 1e-7),
    ];
    for &n in &[1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
        for (a_dims, b_dims) in patterns(n) {
            let shape = BinaryShape::broadcast(&a_dims, &b_dims).unwrap();
            let data = |len: usize, seed: usize| -> Vec<i8> {
                (0..len)
                    .map(|i| match (i + seed) % 5 {
                        0 => -128,
                        1 => 127,
                        2 => 0,
                        _ => ((i * 37 + seed) % 256) as u8 as i8,
                    })
                    .collect()
            };
            let a = data(shape.a_elements(), 1);
            let b = data(shape.b_elements(), 3);
            let full_a = shape.a_elements() == shape.output_elements();
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
                for &(z1, z2, zo) in &zero_points {
                    for &(s1, s2, so) in &scale_sets {
                        for act in [(-128i8, 127i8), (-100, 50)] {
                            let requant = BinaryRequant::new(op, s1, s2, so).unwrap();
                            let params =
                                BinaryI8Params::from_requant(op, &requant, [z1, z2, zo], act)
                                    .unwrap();
                            for in_place in [InPlace::No, InPlace::A] {
                                if in_place == InPlace::A && !full_a {
                                    continue;
                                }
                                let p = I8Problem {
                                    geometry: Geometry {
                                        a: a_dims.clone(),
                                        b: b_dims.clone(),
                                        in_place,
                                    },
                                    params,
                                    a: a.clone(),
                                    b: b.clone(),
                                };
                                let compared =
                                    compare_kernels(I8_KERNELS, |k| run_i8(k, &p), exact).unwrap();
                                assert_eq!(compared, fast_paths(I8_KERNELS));
                            }
                        }
                    }
                }
            }
            let fa: Vec<f32> = a.iter().map(|&x| f32::from(x) * 0.37).collect();
            let fb: Vec<f32> = b.iter().map(|&x| f32::from(x) * -0.11).collect();
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
                for activation in [(f32::NEG_INFINITY, f32::INFINITY), (-3.0, 6.0)] {
                    let p = F32Problem {
                        geometry: Geometry {
                            a: a_dims.clone(),
                            b: b_dims.clone(),
                            in_place: if full_a { InPlace::A } else { InPlace::No },
                        },
                        op,
                        activation,
                        a: fa.clone(),
                        b: fb.clone(),
                    };
                    let compared =
                        compare_kernels(F32_KERNELS, |k| run_f32(k, &p), floats_equal).unwrap();
                    assert_eq!(compared, fast_paths(F32_KERNELS));
                }
            }
        }
    }
}

/// The first [`crate::ops::OpProblem`] of a model that should not build.
fn op_problem(b: &ModelBuilder) -> OpProblem {
    match b.build() {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

fn i8_tensor(b: &mut ModelBuilder, name: &str, dims: &[usize], q: QuantParams) -> TensorId {
    b.tensor(
        name,
        DType::I8,
        dims,
        QuantSpec::PerTensor {
            scale: q.scale,
            zero_point: q.zero_point,
        },
    )
    .unwrap()
}

#[test]
fn check_rejects_bad_operands() {
    let f32_attributes = BinaryAttributes {
        activation: FusedActivation::NONE,
        requant: None,
    };
    let q = QuantParams::i8_from_range(-1.0, 1.0);

    // Mixed element types.
    let mut b = ModelBuilder::new("mixed");
    let x = b.tensor("x", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    let y = i8_tensor(&mut b, "y", &[2, 3], q);
    let z = b.tensor("z", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    b.input(x);
    b.input(y);
    b.op(
        OpKind::Add,
        "add",
        &[Some(x), Some(y)],
        &[z],
        &f32_attributes,
    )
    .unwrap();
    b.output(z);
    assert_eq!(op_problem(&b), OpProblem::DType(Slot::Input(1)));

    // Shapes that do not broadcast.
    let mut b = ModelBuilder::new("shapes");
    let x = b.tensor("x", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[4], QuantSpec::None).unwrap();
    let z = b.tensor("z", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    b.input(x);
    b.input(y);
    b.op(
        OpKind::Sub,
        "sub",
        &[Some(x), Some(y)],
        &[z],
        &f32_attributes,
    )
    .unwrap();
    b.output(z);
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Input(1), _)
    ));

    // An output that is not the broadcast shape.
    let mut b = ModelBuilder::new("output");
    let x = b.tensor("x", DType::F32, &[2, 3], QuantSpec::None).unwrap();
    let y = b.tensor("y", DType::F32, &[3], QuantSpec::None).unwrap();
    let z = b.tensor("z", DType::F32, &[6], QuantSpec::None).unwrap();
    b.input(x);
    b.input(y);
    b.op(
        OpKind::Mul,
        "mul",
        &[Some(x), Some(y)],
        &[z],
        &f32_attributes,
    )
    .unwrap();
    b.output(z);
    assert!(matches!(
        op_problem(&b),
        OpProblem::Shape(Slot::Output(0), _)
    ));

    // int8 without its fixed-point parameters.
    let mut b = ModelBuilder::new("requant");
    let x = i8_tensor(&mut b, "x", &[4], q);
    let y = i8_tensor(&mut b, "y", &[4], q);
    let z = i8_tensor(&mut b, "z", &[4], q);
    b.input(x);
    b.input(y);
    b.op(
        OpKind::Add,
        "add",
        &[Some(x), Some(y)],
        &[z],
        &f32_attributes,
    )
    .unwrap();
    b.output(z);
    assert!(matches!(op_problem(&b), OpProblem::Attribute(_)));

    // int8 with an unquantized operand.
    let mut b = ModelBuilder::new("quant");
    let x = i8_tensor(&mut b, "x", &[4], q);
    let y = b.tensor("y", DType::I8, &[4], QuantSpec::None).unwrap();
    let z = i8_tensor(&mut b, "z", &[4], q);
    b.input(x);
    b.input(y);
    let attributes = BinaryAttributes {
        activation: FusedActivation::NONE,
        requant: Some(BinaryRequant::new(BinaryOp::Add, 0.1, 0.1, 0.1).unwrap()),
    };
    b.op(OpKind::Add, "add", &[Some(x), Some(y)], &[z], &attributes)
        .unwrap();
    b.output(z);
    assert!(matches!(
        op_problem(&b),
        OpProblem::Quantization(Slot::Input(1), _)
    ));

    // A multiplier out of range.
    let mut b = ModelBuilder::new("multiplier");
    let x = i8_tensor(&mut b, "x", &[4], q);
    let y = i8_tensor(&mut b, "y", &[4], q);
    let z = i8_tensor(&mut b, "z", &[4], q);
    b.input(x);
    b.input(y);
    let mut requant = BinaryRequant::new(BinaryOp::Add, 0.1, 0.1, 0.1).unwrap();
    requant.output = [-5, 0];
    let attributes = BinaryAttributes {
        activation: FusedActivation::NONE,
        requant: Some(requant),
    };
    b.op(OpKind::Add, "add", &[Some(x), Some(y)], &[z], &attributes)
        .unwrap();
    b.output(z);
    assert!(matches!(op_problem(&b), OpProblem::Attribute(_)));
}

/// Reads a built model's tensor records, to see what the planner shared.
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

/// Float models: a broadcast add of a constant, then ops the planner runs in place (the
/// intermediate tensor dies at the op that reads it), including `t + t`.
#[test]
fn float_models_run_like_the_kernel() {
    let x: Vec<f32> = (0..2 * 3 * 8)
        .map(|i| (i as f32 * 0.37).sin() * 3.0)
        .collect();
    let c: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();

    let mut b = ModelBuilder::new("binary-f32");
    let xt = b
        .tensor("x", DType::F32, &[2, 3, 8], QuantSpec::None)
        .unwrap();
    b.input(xt);
    let ct = b.constant("c", &[8], &c, QuantSpec::None).unwrap();
    let t = b.mul_f32("t", xt, ct, FusedActivation::NONE).unwrap();
    let u = b.add_f32("u", t, ct, FusedActivation::RELU6).unwrap();
    let v = b.add_f32("v", u, u, FusedActivation::NONE).unwrap();
    let y = b.sub_f32("y", v, ct, FusedActivation::NONE).unwrap();
    b.output(y);
    let built = b.build().unwrap();
    // Both in-place shapes happen: `u` takes `t`'s storage, `v` takes `u`'s.
    assert_eq!(
        arena_offset(&built.bytes, "t"),
        arena_offset(&built.bytes, "u")
    );
    assert_eq!(
        arena_offset(&built.bytes, "u"),
        arena_offset(&built.bytes, "v")
    );
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let got: &[f32] = bytemuck::cast_slice(&out[0]);

    let step =
        |op, a: &[f32], a_dims: &[usize], b: &[f32], b_dims: &[usize], act: FusedActivation| {
            let shape = BinaryShape::broadcast(a_dims, b_dims).unwrap();
            let mut out = vec![0f32; shape.output_elements()];
            reference::binary_f32(
                &BinaryF32 {
                    shape,
                    op,
                    activation: (act.min, act.max),
                    a: Source::Slice(a),
                    b: Source::Slice(b),
                },
                &mut out,
            );
            out
        };
    let d = [2usize, 3, 8];
    let t = step(BinaryOp::Mul, &x, &d, &c, &[8], FusedActivation::NONE);
    let u = step(BinaryOp::Add, &t, &d, &c, &[8], FusedActivation::RELU6);
    let v = step(BinaryOp::Add, &u, &d, &u, &d, FusedActivation::NONE);
    let want = step(BinaryOp::Sub, &v, &d, &c, &[8], FusedActivation::NONE);
    assert_eq!(got, &want[..]);
}

/// int8 models: the same chain quantized, compared with the kernels run by hand and with the
/// float result.
#[test]
fn int8_models_run_like_the_kernel() {
    let qx = QuantParams::i8_from_range(-3.0, 3.0);
    let qc = QuantParams::i8_from_range(-1.0, 1.0);
    let qt = QuantParams::i8_from_range(-3.0, 3.0);
    let qu = QuantParams::i8_from_range(0.0, 6.0);
    let qy = QuantParams::i8_from_range(-4.0, 10.0);
    let x: Vec<i8> = (0..4 * 17).map(|i| ((i * 53) % 256) as u8 as i8).collect();
    let c: Vec<i8> = (0..17).map(|i| (i * 15 - 128) as i8).collect();

    let mut b = ModelBuilder::new("binary-i8");
    let xt = i8_tensor(&mut b, "x", &[4, 17], qx);
    b.input(xt);
    let ct = b
        .constant(
            "c",
            &[17],
            &c,
            QuantSpec::PerTensor {
                scale: qc.scale,
                zero_point: qc.zero_point,
            },
        )
        .unwrap();
    let t = b.mul_i8("t", xt, ct, qt, FusedActivation::NONE).unwrap();
    let u = b.add_i8("u", t, ct, qu, FusedActivation::RELU6).unwrap();
    let y = b.sub_i8("y", u, t, qy, FusedActivation::NONE).unwrap();
    b.output(y);
    let built = b.build().unwrap();
    assert_eq!(
        arena_offset(&built.bytes, "u"),
        arena_offset(&built.bytes, "y")
    );
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let got: &[i8] = bytemuck::cast_slice(&out[0]);

    let step = |op,
                a: &[i8],
                qa: QuantParams,
                a_dims: &[usize],
                b: &[i8],
                qb: QuantParams,
                b_dims: &[usize],
                qo: QuantParams,
                act: FusedActivation| {
        let shape = BinaryShape::broadcast(a_dims, b_dims).unwrap();
        let requant = BinaryRequant::new(op, qa.scale, qb.scale, qo.scale).unwrap();
        let (lo, hi) = act.quantized(qo.scale, qo.zero_point, -128, 127);
        let params = BinaryI8Params::from_requant(
            op,
            &requant,
            [qa.zero_point, qb.zero_point, qo.zero_point],
            (lo as i8, hi as i8),
        )
        .unwrap();
        let mut out = vec![0i8; shape.output_elements()];
        reference::binary_i8(
            &BinaryI8 {
                shape,
                params,
                a: Source::Slice(a),
                b: Source::Slice(b),
            },
            &mut out,
        );
        out
    };
    let d = [4usize, 17];
    let t = step(
        BinaryOp::Mul,
        &x,
        qx,
        &d,
        &c,
        qc,
        &[17],
        qt,
        FusedActivation::NONE,
    );
    let u = step(
        BinaryOp::Add,
        &t,
        qt,
        &d,
        &c,
        qc,
        &[17],
        qu,
        FusedActivation::RELU6,
    );
    let want = step(
        BinaryOp::Sub,
        &u,
        qu,
        &d,
        &t,
        qt,
        &d,
        qy,
        FusedActivation::NONE,
    );
    assert_eq!(got, &want[..]);

    // Within a few output steps of the float computation.
    for (i, &g) in got.iter().enumerate() {
        let xv = qx.dequantize(i32::from(x[i]));
        let cv = qc.dequantize(i32::from(c[i % 17]));
        let tv = (xv * cv).clamp(-3.0, 3.0);
        let uv = (tv + cv).clamp(0.0, 6.0);
        let yv = uv - tv;
        let real = qy.dequantize(i32::from(g));
        assert!(
            (real - yv).abs() <= 3.0 * (qt.scale + qu.scale + qy.scale),
            "{i}: {real} vs {yv}"
        );
    }
}

/// A NaN result passes every kernel's clamp unchanged, as it passes the reference's
/// compare-and-select, in the vector body and in the tail.
#[test]
fn nan_passes_the_clamp_in_every_kernel() {
    let a = vec![f32::NAN, 1.0, -9.0, 9.0, f32::NAN, 0.5, -0.0, 7.0, f32::NAN];
    let p = F32Problem {
        geometry: Geometry {
            a: vec![a.len()],
            b: vec![a.len()],
            in_place: InPlace::No,
        },
        op: BinaryOp::Add,
        activation: (-3.0, 6.0),
        b: vec![0.0; a.len()],
        a,
    };
    let want = run_f32(F32_KERNELS[0].run, &p);
    for k in F32_KERNELS.iter().filter(|k| k.isa.available()) {
        let got = run_f32(k.run, &p);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()),
                "kernel {}: element {i}: want {w}, got {g}",
                k.name
            );
        }
        assert!(
            got[0].is_nan() && got[4].is_nan() && got[8].is_nan(),
            "kernel {}",
            k.name
        );
    }
}
