use super::*;
use crate::error::{LoadError, Slot};
use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
use crate::ops::testing::{compare_kernels, exact, f32s, i8s, run_model};
use crate::quant::QuantParams;
use proptest::prelude::*;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// A valid random pooling geometry, padding up to 4 per side (often past the kernel).
fn geometry() -> impl Strategy<Value = Pool2dGeometry> {
    (
        (1usize..3, 1usize..9, 1usize..9, 1usize..40),
        (1usize..5, 1usize..5, 1usize..4, 1usize..4),
        (0usize..4, 0usize..4, 0usize..5, 0usize..5),
    )
        .prop_map(
            |((batch, height, width, channels), (kh, kw, sh, sw), (top, left, bottom, right))| {
                Pool2dGeometry {
                    batch,
                    height,
                    width,
                    channels,
                    kernel: (kh, kw),
                    stride: (sh, sw),
                    padding: Padding2d {
                        top,
                        left,
                        bottom,
                        right,
                    },
                }
            },
        )
        .prop_filter("a window lies in padding alone", |g| {
            g.output_size().is_ok()
        })
}

fn lengths(g: &Pool2dGeometry) -> (usize, usize) {
    let (oh, ow) = g.output_size().unwrap();
    (
        g.batch * g.height * g.width * g.channels,
        g.batch * oh * ow * g.channels,
    )
}

fn run_i8(k: PoolI8Kernel, g: &Pool2dGeometry, act: (i8, i8), x: &[i8]) -> Vec<i8> {
    let mut out = vec![0i8; lengths(g).1];
    k(g, act, x, &mut out);
    out
}

fn run_f32(k: PoolF32Kernel, g: &Pool2dGeometry, act: (f32, f32), x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; lengths(g).1];
    k(g, act, x, &mut out);
    out
}

/// Float comparison within the module's promised tolerance.
fn within_tolerance(want: &[f32], got: &[f32]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(std::format!("length {} vs {}", want.len(), got.len()));
    }
    for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
        if !F32_TOLERANCE.accepts(w, g, 0, 0.0) {
            return Err(std::format!("element {i}: want {w}, got {g}"));
        }
    }
    Ok(())
}

const F32_ACTIVATIONS: [(f32, f32); 3] = [
    (f32::NEG_INFINITY, f32::INFINITY),
    (0.0, f32::INFINITY),
    (-1.5, 2.0),
];

fn i8_problem() -> impl Strategy<Value = (Pool2dGeometry, Vec<i8>, (i8, i8))> {
    geometry().prop_flat_map(|g| {
        let n = lengths(&g).0;
        (Just(g), i8s(n), any::<(i8, i8)>()).prop_map(|(g, x, (a, b))| (g, x, (a.min(b), a.max(b))))
    })
}

fn f32_problem() -> impl Strategy<Value = (Pool2dGeometry, Vec<f32>, (f32, f32))> {
    geometry().prop_flat_map(|g| {
        let n = lengths(&g).0;
        (Just(g), f32s(n, 10.0), 0usize..3).prop_map(|(g, x, a)| (g, x, F32_ACTIVATIONS[a]))
    })
}

fn global_shape() -> impl Strategy<Value = GlobalPoolShape> {
    (1usize..3, 1usize..9, 1usize..9, 1usize..40).prop_map(|(batch, height, width, channels)| {
        GlobalPoolShape {
            batch,
            height,
            width,
            channels,
        }
    })
}

fn run_global_i8(
    k: GlobalI8Kernel,
    s: &GlobalPoolShape,
    p: &GlobalAveragePoolI8Params,
    x: &[i8],
) -> Vec<i8> {
    let mut out = vec![0i8; s.batch * s.channels];
    k(s, p, x, &mut out);
    out
}

fn run_global_f32(k: GlobalF32Kernel, s: &GlobalPoolShape, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; s.batch * s.channels];
    k(s, x, &mut out);
    out
}

/// Independent model of one window: every position of the unclamped window, `None` where it
/// falls in padding.
fn window_values<T: Copy>(
    g: &Pool2dGeometry,
    x: &[T],
    b: usize,
    oy: usize,
    ox: usize,
    c: usize,
) -> Vec<Option<T>> {
    let mut v = Vec::new();
    for ky in 0..g.kernel.0 {
        for kx in 0..g.kernel.1 {
            let y = (oy * g.stride.0 + ky) as isize - g.padding.top as isize;
            let xx = (ox * g.stride.1 + kx) as isize - g.padding.left as isize;
            let inside = y >= 0 && xx >= 0 && (y as usize) < g.height && (xx as usize) < g.width;
            v.push(inside.then(|| {
                x[((b * g.height + y as usize) * g.width + xx as usize) * g.channels + c]
            }));
        }
    }
    v
}

proptest! {
    /// Every int8 kernel gives the reference's bytes.
    #[test]
    fn every_i8_kernel_matches_the_reference((g, x, act) in i8_problem()) {
        compare_kernels(MAX_I8_KERNELS, |k| run_i8(k, &g, act, &x), exact)?;
        compare_kernels(AVERAGE_I8_KERNELS, |k| run_i8(k, &g, act, &x), exact)?;
    }

    /// Every float kernel agrees with the reference within `F32_TOLERANCE` (exactly).
    #[test]
    fn every_f32_kernel_matches_the_reference((g, x, act) in f32_problem()) {
        compare_kernels(MAX_F32_KERNELS, |k| run_f32(k, &g, act, &x), within_tolerance)?;
        compare_kernels(AVERAGE_F32_KERNELS, |k| run_f32(k, &g, act, &x), within_tolerance)?;
    }

    /// Every global-average kernel matches the reference.
    #[test]
    fn every_global_kernel_matches_the_reference(
        (s, x8, x32) in global_shape().prop_flat_map(|s| {
            let n = s.batch * s.height * s.width * s.channels;
            (Just(s), i8s(n), f32s(n, 10.0))
        }),
        izp in any::<i8>(),
        ozp in any::<i8>(),
        real in 0.05f64..20.0,
    ) {
        let p = GlobalAveragePoolI8Params {
            input_zero_point: izp.into(),
            output_zero_point: ozp.into(),
            multiplier: QuantizedMultiplier::from_real(real).unwrap(),
        };
        compare_kernels(GLOBAL_I8_KERNELS, |k| run_global_i8(k, &s, &p, &x8), exact)?;
        compare_kernels(GLOBAL_F32_KERNELS, |k| run_global_f32(k, &s, &x32), within_tolerance)?;
    }

    /// The references against an independent model built from the unclamped window: max of
    /// the real elements; int8 average = the real average rounded half away from zero
    /// (computed in f64, exact here); float average within a few ulps of the f64 mean.
    #[test]
    fn references_match_an_independent_model(
        (g, x, act) in i8_problem(),
        scale in 0.01f32..2.0,
    ) {
        let (oh, ow) = g.output_size().unwrap();
        let max = run_i8(reference::max_pool2d_i8, &g, act, &x);
        let avg = run_i8(reference::average_pool2d_i8, &g, act, &x);
        let xf: Vec<f32> = x.iter().map(|&v| f32::from(v) * scale).collect();
        let favg = run_f32(reference::average_pool2d_f32, &g, F32_ACTIVATIONS[0], &xf);
        let (lo, hi) = (i32::from(act.0), i32::from(act.1));
        let mut o = 0;
        for b in 0..g.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for c in 0..g.channels {
                        let w: Vec<i8> = window_values(&g, &x, b, oy, ox, c).into_iter().flatten().collect();
                        prop_assert!(!w.is_empty());
                        let m = i32::from(*w.iter().max().unwrap());
                        prop_assert_eq!(i32::from(max[o]), m.clamp(lo, hi));
                        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / w.len() as f64;
                        let rounded = (libm::round(mean) as i32).clamp(lo, hi);
                        prop_assert_eq!(i32::from(avg[o]), rounded);
                        let fmean = mean * f64::from(scale);
                        prop_assert!((f64::from(favg[o]) - fmean).abs() <= 1e-5 * (1.0 + fmean.abs()));
                        o += 1;
                    }
                }
            }
        }
    }

    /// The int8 global average is within one step of real arithmetic:
    /// `out_zp + mean(q - in_zp) * in_scale / out_scale`.
    #[test]
    fn global_reference_matches_real_arithmetic(
        (s, x) in global_shape().prop_flat_map(|s| {
            (Just(s), i8s(s.batch * s.height * s.width * s.channels))
        }),
        izp in any::<i8>(),
        ozp in any::<i8>(),
        real in 0.05f64..20.0,
    ) {
        let m = QuantizedMultiplier::from_real(real).unwrap();
        let p = GlobalAveragePoolI8Params {
            input_zero_point: izp.into(),
            output_zero_point: ozp.into(),
            multiplier: m,
        };
        let got = run_global_i8(reference::global_average_pool_i8, &s, &p, &x);
        let area = s.height * s.width;
        for b in 0..s.batch {
            for c in 0..s.channels {
                let sum: f64 = (0..area)
                    .map(|i| f64::from(x[(b * area + i) * s.channels + c]) - f64::from(izp))
                    .sum();
                let want = (sum / area as f64 * m.to_real() + f64::from(ozp)).clamp(-128.0, 127.0);
                let g = f64::from(got[b * s.channels + c]);
                prop_assert!((g - want).abs() <= 1.0, "got {} want {}", g, want);
            }
        }
    }
}

/// Named cases: channel counts on either side of the vector widths, 1x1 images, zero points
/// and activations at the extremes, padding past the kernel, all-equal (saturating) inputs.
/// Height, width, kernel, stride and padding of a named case.
type Case = (usize, usize, (usize, usize), (usize, usize), Padding2d);

#[test]
fn edge_cases_match_the_reference() {
    let mut compared = 0;
    for &channels in &[1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65] {
        let shapes: [Case; 4] = [
            // A 1x1 image under a 1x1 window.
            (1, 1, (1, 1), (1, 1), Padding2d::default()),
            // A 1x1 image in a 3x3 window padded all round.
            (
                1,
                1,
                (3, 3),
                (1, 1),
                Padding2d {
                    top: 1,
                    left: 1,
                    bottom: 1,
                    right: 1,
                },
            ),
            // Bottom/right padding past the kernel (stride keeps every window real).
            (
                5,
                5,
                (3, 3),
                (4, 4),
                Padding2d {
                    top: 0,
                    left: 2,
                    bottom: 4,
                    right: 3,
                },
            ),
            // Overlapping windows, asymmetric padding.
            (
                6,
                7,
                (3, 2),
                (2, 1),
                Padding2d {
                    top: 2,
                    left: 0,
                    bottom: 1,
                    right: 1,
                },
            ),
        ];
        for &(height, width, kernel, stride, padding) in &shapes {
            let g = Pool2dGeometry {
                batch: 2,
                height,
                width,
                channels,
                kernel,
                stride,
                padding,
            };
            g.output_size().unwrap();
            let n = lengths(&g).0;
            let fills: [fn(usize) -> i8; 4] = [
                |i| if i % 3 == 0 { 127 } else { -128 },
                |_| 127,
                |_| -128,
                |i| (i * 37 % 256) as i8,
            ];
            for fill in fills {
                let x: Vec<i8> = (0..n).map(fill).collect();
                for act in [(-128i8, 127i8), (-128, -128), (127, 127), (-3, 5)] {
                    compared +=
                        compare_kernels(MAX_I8_KERNELS, |k| run_i8(k, &g, act, &x), exact).unwrap();
                    compared +=
                        compare_kernels(AVERAGE_I8_KERNELS, |k| run_i8(k, &g, act, &x), exact)
                            .unwrap();
                }
                let xf: Vec<f32> = x.iter().map(|&v| f32::from(v) * 0.37).collect();
                for act in F32_ACTIVATIONS {
                    compared += compare_kernels(
                        MAX_F32_KERNELS,
                        |k| run_f32(k, &g, act, &xf),
                        within_tolerance,
                    )
                    .unwrap();
                    compared += compare_kernels(
                        AVERAGE_F32_KERNELS,
                        |k| run_f32(k, &g, act, &xf),
                        within_tolerance,
                    )
                    .unwrap();
                }
            }
            let s = GlobalPoolShape {
                batch: 2,
                height,
                width,
                channels,
            };
            let x: Vec<i8> = (0..2 * height * width * channels)
                .map(|i| if i % 2 == 0 { 127 } else { -128 })
                .collect();
            for (izp, ozp, real) in [(-128, 127, 1.0), (127, -128, 1.0), (-128, -128, 7.5)] {
                let p = GlobalAveragePoolI8Params {
                    input_zero_point: izp,
                    output_zero_point: ozp,
                    multiplier: QuantizedMultiplier::from_real(real).unwrap(),
                };
                compared +=
                    compare_kernels(GLOBAL_I8_KERNELS, |k| run_global_i8(k, &s, &p, &x), exact)
                        .unwrap();
            }
        }
    }
    // Fast paths really ran where this CPU has them.
    if crate::isa::Isa::Avx2.available() {
        assert!(compared > 0);
    }
}

#[test]
fn known_values() {
    // 1x3x3x1 image 1..=9, 2x2 windows, stride 2, padding bottom/right 1: windows
    // {1,2,4,5}, {3,6}, {7,8}, {9}.
    let g = Pool2dGeometry {
        batch: 1,
        height: 3,
        width: 3,
        channels: 1,
        kernel: (2, 2),
        stride: (2, 2),
        padding: Padding2d {
            top: 0,
            left: 0,
            bottom: 1,
            right: 1,
        },
    };
    let x: Vec<i8> = (1..=9).collect();
    let mut out = [0i8; 4];
    max_pool2d_i8(&g, (-128, 127), &x, &mut out).unwrap();
    assert_eq!(out, [5, 6, 8, 9]);
    average_pool2d_i8(&g, (-128, 127), &x, &mut out).unwrap();
    // 12/4 = 3, 9/2 = 4.5 -> 5, 15/2 = 7.5 -> 8, 9.
    assert_eq!(out, [3, 5, 8, 9]);
    let neg: Vec<i8> = x.iter().map(|v| -v).collect();
    average_pool2d_i8(&g, (-128, 127), &neg, &mut out).unwrap();
    assert_eq!(out, [-3, -5, -8, -9]);
    let xf: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
    let mut outf = [0f32; 4];
    average_pool2d_f32(&g, (f32::NEG_INFINITY, f32::INFINITY), &xf, &mut outf).unwrap();
    assert_eq!(outf, [3.0, 4.5, 7.5, 9.0]);

    // Equal scales and zero points: the global mean is the rounded average.
    let s = GlobalPoolShape {
        batch: 1,
        height: 2,
        width: 2,
        channels: 1,
    };
    let p = GlobalAveragePoolI8Params {
        input_zero_point: 3,
        output_zero_point: 3,
        multiplier: QuantizedMultiplier::from_real(1.0).unwrap(),
    };
    let mut o = [0i8; 1];
    global_average_pool_i8(&s, &p, &[1, 2, 3, 5], &mut o).unwrap();
    // mean(q - 3) = (-2 - 1 + 0 + 2) / 4 = -0.25 -> 0, plus 3.
    assert_eq!(o, [3]);
    global_average_pool_i8(&s, &p, &[4, 4, 4, 5], &mut o).unwrap();
    // 4/4... (1 + 1 + 1 + 2) / 4 = 1.25 -> 1, plus 3.
    assert_eq!(o, [4]);
}

#[test]
fn validation_rejects_windows_of_padding_alone() {
    let base = Pool2dGeometry {
        batch: 1,
        height: 4,
        width: 4,
        channels: 1,
        kernel: (2, 2),
        stride: (1, 1),
        padding: Padding2d::default(),
    };
    assert_eq!(base.output_size(), Ok((3, 3)));
    let top = Pool2dGeometry {
        padding: Padding2d {
            top: 2,
            ..Padding2d::default()
        },
        ..base
    };
    assert_eq!(top.output_size(), Err(Error::InvalidShape));
    let bottom = Pool2dGeometry {
        padding: Padding2d {
            bottom: 2,
            ..Padding2d::default()
        },
        ..base
    };
    assert_eq!(bottom.output_size(), Err(Error::InvalidShape));
    let big = Pool2dGeometry {
        kernel: (5, 5),
        ..base
    };
    assert_eq!(big.output_size(), Err(Error::InvalidShape));
    let mut out = [0i8; 9];
    assert_eq!(
        max_pool2d_i8(&base, (-128, 127), &[0; 15], &mut out),
        Err(Error::ShapeMismatch {
            operand: Operand::Input,
            expected: 16,
            actual: 15
        })
    );
    assert_eq!(
        max_pool2d_i8(&base, (1, 0), &[0; 16], &mut out),
        Err(Error::InvalidQuantization(QuantField::ActivationRange))
    );
}

fn op_problem(result: Result<crate::format::writer::Built, BuildError>) -> OpProblem {
    match result {
        Err(BuildError::Invalid(LoadError::Op { problem, .. })) => problem,
        other => panic!("expected an op problem, got {other:?}"),
    }
}

fn image(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
        .collect()
}

/// One-op models built with the helpers run through the interpreter like the kernels.
#[test]
fn one_op_models_run_like_the_kernels() {
    let g = Pool2dGeometry {
        batch: 1,
        height: 7,
        width: 6,
        channels: 11,
        kernel: (3, 3),
        stride: (2, 2),
        padding: Padding2d {
            top: 1,
            left: 1,
            bottom: 1,
            right: 0,
        },
    };
    let (n, m) = lengths(&g);
    let (oh, ow) = g.output_size().unwrap();
    let x = image(n);
    let q = QuantParams::i8_from_range(-5.0, 5.0);
    let xq: Vec<i8> = x.iter().map(|&v| q.quantize(v, -128, 127) as i8).collect();
    let p = [1usize, 1, 1, 0];
    for kind in [OpKind::MaxPool2d, OpKind::AveragePool2d] {
        for activation in [FusedActivation::NONE, FusedActivation::RELU6] {
            // Float.
            let mut b = ModelBuilder::new("pool");
            let t = b
                .tensor("x", DType::F32, &[1, 7, 6, 11], QuantSpec::None)
                .unwrap();
            b.input(t);
            let y = if kind == OpKind::MaxPool2d {
                b.max_pool2d("p", t, (3, 3), (2, 2), p, activation)
            } else {
                b.average_pool2d("p", t, (3, 3), (2, 2), p, activation)
            }
            .unwrap();
            assert_eq!(b.shape(y).unwrap().dims(), [1, oh as u32, ow as u32, 11]);
            b.output(y);
            let built = b.build().unwrap();
            let out = run_model(&built.bytes, &[bytemuck::cast_slice(&x)]).unwrap();
            let act = (activation.min, activation.max);
            let want = if kind == OpKind::MaxPool2d {
                run_f32(reference::max_pool2d_f32, &g, act, &x)
            } else {
                run_f32(reference::average_pool2d_f32, &g, act, &x)
            };
            assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));

            // int8.
            let mut b = ModelBuilder::new("pool-i8");
            let spec = QuantSpec::PerTensor {
                scale: q.scale,
                zero_point: q.zero_point,
            };
            let t = b.tensor("x", DType::I8, &[1, 7, 6, 11], spec).unwrap();
            b.input(t);
            let y = if kind == OpKind::MaxPool2d {
                b.max_pool2d("p", t, (3, 3), (2, 2), p, activation)
            } else {
                b.average_pool2d("p", t, (3, 3), (2, 2), p, activation)
            }
            .unwrap();
            b.output(y);
            let built = b.build().unwrap();
            let out = run_model(&built.bytes, &[bytemuck::cast_slice(&xq)]).unwrap();
            let act = activation.quantized(q.scale, q.zero_point, -128, 127);
            let act = (act.0 as i8, act.1 as i8);
            let want = if kind == OpKind::MaxPool2d {
                run_i8(reference::max_pool2d_i8, &g, act, &xq)
            } else {
                run_i8(reference::average_pool2d_i8, &g, act, &xq)
            };
            assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&want));
            assert_eq!(out[0].len(), m);
        }
    }

    // Global average, float and int8 with a different output scale.
    let s = GlobalPoolShape {
        batch: 1,
        height: 7,
        width: 6,
        channels: 11,
    };
    let mut b = ModelBuilder::new("gap");
    let t = b
        .tensor("x", DType::F32, &[1, 7, 6, 11], QuantSpec::None)
        .unwrap();
    b.input(t);
    let y = b.global_average_pool("gap", t, None).unwrap();
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&x)]).unwrap();
    let want = run_global_f32(reference::global_average_pool_f32, &s, &x);
    assert_eq!(out[0], bytemuck::cast_slice::<f32, u8>(&want));

    let out_q = QuantParams::i8_from_range(-1.0, 1.0);
    let mut b = ModelBuilder::new("gap-i8");
    let spec = QuantSpec::PerTensor {
        scale: q.scale,
        zero_point: q.zero_point,
    };
    let t = b.tensor("x", DType::I8, &[1, 7, 6, 11], spec).unwrap();
    b.input(t);
    let y = b.global_average_pool("gap", t, Some(out_q)).unwrap();
    b.output(y);
    let out = run_model(&b.build().unwrap().bytes, &[bytemuck::cast_slice(&xq)]).unwrap();
    let p = GlobalAveragePoolI8Params {
        input_zero_point: q.zero_point,
        output_zero_point: out_q.zero_point,
        multiplier: QuantizedMultiplier::from_real(f64::from(q.scale) / f64::from(out_q.scale))
            .unwrap(),
    };
    let want = run_global_i8(reference::global_average_pool_i8, &s, &p, &xq);
    assert_eq!(out[0], bytemuck::cast_slice::<i8, u8>(&want));
    // And it means what it says: each output near the float mean.
    let fwant = run_global_f32(reference::global_average_pool_f32, &s, &x);
    for (&g, &w) in want.iter().zip(&fwant) {
        let real = out_q.dequantize(i32::from(g));
        assert!(
            (real - w.clamp(-1.0, 1.0)).abs() <= q.scale + out_q.scale,
            "{real} vs {w}"
        );
    }
}

#[test]
fn check_rejects_bad_models() {
    let spec = |zp| QuantSpec::PerTensor {
        scale: 0.1,
        zero_point: zp,
    };
    let attrs = |padding: [u32; 4]| Pool2dAttributes {
        kernel: [2, 2],
        stride: [1, 1],
        padding,
        activation: FusedActivation::NONE,
    };
    let model = |dtype, qi: QuantSpec, qo: QuantSpec, out: &[usize], a: Pool2dAttributes| {
        let mut b = ModelBuilder::new("bad");
        let x = b.tensor("x", dtype, &[1, 4, 4, 3], qi).unwrap();
        let y = b.tensor("y", dtype, out, qo).unwrap();
        b.input(x);
        b.output(y);
        b.op(OpKind::AveragePool2d, "p", &[Some(x)], &[y], &a)
            .unwrap();
        b.build()
    };
    // The good model builds.
    model(DType::I8, spec(0), spec(0), &[1, 3, 3, 3], attrs([0; 4])).unwrap();
    // Output shape disagrees with the geometry.
    assert!(matches!(
        op_problem(model(
            DType::F32,
            QuantSpec::None,
            QuantSpec::None,
            &[1, 4, 4, 3],
            attrs([0; 4])
        )),
        OpProblem::Shape(Slot::Output(0), _)
    ));
    // Output quantization differs from the input's.
    assert!(matches!(
        op_problem(model(
            DType::I8,
            spec(0),
            spec(1),
            &[1, 3, 3, 3],
            attrs([0; 4])
        )),
        OpProblem::Quantization(Slot::Output(0), _)
    ));
    // Top padding as large as the kernel: the first window is padding alone.
    assert_eq!(
        op_problem(model(
            DType::F32,
            QuantSpec::None,
            QuantSpec::None,
            &[1, 5, 3, 3],
            attrs([2, 0, 0, 0])
        )),
        OpProblem::Attribute("padding")
    );
    // Zero stride.
    let mut a = attrs([0; 4]);
    a.stride = [0, 1];
    assert_eq!(
        op_problem(model(
            DType::F32,
            QuantSpec::None,
            QuantSpec::None,
            &[1, 3, 3, 3],
            a
        )),
        OpProblem::Attribute("stride")
    );
    // int16 pools like int8: one quantization in and out.
    assert!(model(DType::I16, spec(0), spec(0), &[1, 3, 3, 3], attrs([0; 4])).is_ok());
    assert!(matches!(
        op_problem(model(
            DType::I16,
            spec(0),
            spec(1),
            &[1, 3, 3, 3],
            attrs([0; 4])
        )),
        OpProblem::Quantization(..)
    ));
    // An int32 tensor is not pooled.
    assert_eq!(
        op_problem(model(
            DType::I32,
            QuantSpec::None,
            QuantSpec::None,
            &[1, 3, 3, 3],
            attrs([0; 4])
        )),
        OpProblem::DType(Slot::Input(0))
    );
    // Global average: int8 without its multiplier.
    let mut b = ModelBuilder::new("bad");
    let x = b.tensor("x", DType::I8, &[1, 4, 4, 3], spec(0)).unwrap();
    let y = b.tensor("y", DType::I8, &[1, 1, 1, 3], spec(0)).unwrap();
    b.input(x);
    b.output(y);
    b.op(
        OpKind::GlobalAveragePool,
        "g",
        &[Some(x)],
        &[y],
        &GlobalAveragePoolAttributes { requant: None },
    )
    .unwrap();
    assert_eq!(op_problem(b.build()), OpProblem::Attribute("requant"));
    // Global average: output not [N, 1, 1, C].
    let mut b = ModelBuilder::new("bad");
    let x = b
        .tensor("x", DType::F32, &[1, 4, 4, 3], QuantSpec::None)
        .unwrap();
    let y = b.tensor("y", DType::F32, &[1, 3], QuantSpec::None).unwrap();
    b.input(x);
    b.output(y);
    b.op(
        OpKind::GlobalAveragePool,
        "g",
        &[Some(x)],
        &[y],
        &GlobalAveragePoolAttributes { requant: None },
    )
    .unwrap();
    assert!(matches!(
        op_problem(b.build()),
        OpProblem::Shape(Slot::Output(0), _)
    ));
}

proptest! {
    /// int16 pooling against an independent model: the window walked from the output
    /// coordinates, the average rounded half away from zero in exact arithmetic.
    #[test]
    fn i16_pooling_matches_an_independent_model(
        (h, w, c) in (1usize..7, 1usize..7, 1usize..5),
        (kh, kw, sh, sw) in (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        seed in any::<u64>(),
        (a, b) in (any::<i16>(), any::<i16>()),
    ) {
        prop_assume!(kh <= h && kw <= w);
        let g = Pool2dGeometry {
            batch: 1,
            height: h,
            width: w,
            channels: c,
            kernel: (kh, kw),
            stride: (sh, sw),
            padding: Padding2d { top: 0, left: 0, bottom: 0, right: 0 },
        };
        let mut state = seed;
        let input: Vec<i16> = (0..h * w * c)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 48) as i16
            })
            .collect();
        let (lo, hi) = (a.min(b), a.max(b));
        let (oh, ow) = g.output_size().unwrap();
        let mut max = vec![0i16; oh * ow * c];
        let mut average = vec![0i16; oh * ow * c];
        max_pool2d_i16(&g, (lo, hi), &input, &mut max).unwrap();
        average_pool2d_i16(&g, (lo, hi), &input, &mut average).unwrap();
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let window: Vec<i64> = (0..kh)
                        .flat_map(|ky| (0..kw).map(move |kx| (oy * sh + ky, ox * sw + kx)))
                        .map(|(y, x)| i64::from(input[(y * w + x) * c + ch]))
                        .collect();
                    let i = (oy * ow + ox) * c + ch;
                    let want_max = window.iter().copied().max().unwrap().clamp(lo.into(), hi.into());
                    prop_assert_eq!(i64::from(max[i]), want_max);
                    let n = window.len() as f64;
                    let mean = window.iter().sum::<i64>() as f64 / n;
                    let rounded = (mean.abs() + 0.5).floor().copysign(mean) as i64;
                    prop_assert_eq!(i64::from(average[i]), rounded.clamp(lo.into(), hi.into()));
                }
            }
        }
    }
}
