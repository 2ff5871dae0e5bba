use std::format;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::fixed_point::QuantizedMultiplier;
use crate::ops::testing::{compare_kernels, exact, f32s, i8s, run_model};

/// A random convolution: any stride, dilation, padding (also larger than the kernel) and
/// group count, with the output size those imply.
fn geometry() -> impl Strategy<Value = ConvGeometry> {
    (
        (1usize..3, 1usize..9, 1usize..9),
        (1usize..4, 1usize..20, 1usize..9),
        (
            1usize..4,
            1usize..4,
            1usize..3,
            1usize..3,
            1usize..3,
            1usize..3,
        ),
        (0usize..5, 0usize..5, 0usize..5, 0usize..5),
    )
        .prop_filter_map(
            "the dilated kernel must fit the padded input",
            |((batch, h, w), (groups, cg, og), (kh, kw, sh, sw, dh, dw), (pt, pl, pb, pr))| {
                let oh = output_size(h, kh, sh, dh, pt, pb)?;
                let ow = output_size(w, kw, sw, dw, pl, pr)?;
                Some(ConvGeometry {
                    batch,
                    in_height: h,
                    in_width: w,
                    in_channels: groups * cg,
                    out_height: oh,
                    out_width: ow,
                    out_channels: groups * og,
                    kernel_height: kh,
                    kernel_width: kw,
                    stride_height: sh,
                    stride_width: sw,
                    dilation_height: dh,
                    dilation_width: dw,
                    pad_top: pt,
                    pad_left: pl,
                    groups,
                })
            },
        )
}

#[derive(Debug, Clone)]
struct I8Problem {
    geometry: ConvGeometry,
    input_zero_point: i32,
    output_zero_point: i32,
    multipliers: Vec<QuantizedMultiplier>,
    activation: (i8, i8),
    input: Vec<i8>,
    filter: Vec<i8>,
    bias: Option<Vec<i32>>,
}

impl I8Problem {
    fn op(&self) -> Conv2dI8<'_> {
        Conv2dI8 {
            geometry: self.geometry,
            params: RequantizeParams {
                input_zero_point: self.input_zero_point,
                output_zero_point: self.output_zero_point,
                multipliers: &self.multipliers,
                activation_min: self.activation.0,
                activation_max: self.activation.1,
            },
            input: &self.input,
            filter: &self.filter,
            bias: self.bias.as_deref(),
        }
    }
}

fn i8_problem_for(g: ConvGeometry) -> impl Strategy<Value = I8Problem> {
    let channels = g.out_channels;
    (
        any::<i8>(),
        any::<i8>(),
        any::<bool>(),
        prop::collection::vec(1e-5f64..0.02, channels),
        (any::<i8>(), any::<i8>()),
        i8s(g.input_len().unwrap()),
        i8s(g.out_channels * g.patch_len()),
        prop::option::of(prop::collection::vec(-(1i32 << 15)..(1 << 15), channels)),
    )
        .prop_map(
            move |(izp, ozp, per_channel, reals, (a, b), input, filter, bias)| {
                let reals = if per_channel {
                    reals
                } else {
                    reals[..1].to_vec()
                };
                I8Problem {
                    geometry: g,
                    input_zero_point: izp.into(),
                    output_zero_point: ozp.into(),
                    multipliers: reals
                        .into_iter()
                        .map(|r| QuantizedMultiplier::from_real(r).unwrap())
                        .collect(),
                    activation: (a.min(b), a.max(b)),
                    input,
                    filter,
                    bias,
                }
            },
        )
}

fn i8_problem() -> impl Strategy<Value = I8Problem> {
    geometry().prop_flat_map(i8_problem_for)
}

fn run_i8(kernel: I8Kernel, op: &Conv2dI8<'_>) -> Vec<i8> {
    let mut out = vec![0i8; op.geometry.output_len().unwrap()];
    let mut scratch = vec![0i16; scratch_len(&op.geometry)];
    kernel(op, &mut out, &mut scratch);
    out
}

/// The accumulator computed independently: pad the input with its zero point explicitly,
/// then sum `(x - zp) * w` over the whole dilated window, in i64.
fn padded_accumulator(op: &Conv2dI8<'_>, b: usize, oy: usize, ox: usize, oc: usize) -> i64 {
    let g = &op.geometry;
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let group = oc / og;
    let zp = i64::from(op.params.input_zero_point);
    let mut acc = op.bias.map_or(0, |bias| i64::from(bias[oc]));
    for ky in 0..g.kernel_height {
        for kx in 0..g.kernel_width {
            let y = (oy * g.stride_height + ky * g.dilation_height) as i64 - g.pad_top as i64;
            let x = (ox * g.stride_width + kx * g.dilation_width) as i64 - g.pad_left as i64;
            let inside =
                y >= 0 && x >= 0 && (y as usize) < g.in_height && (x as usize) < g.in_width;
            for c in 0..cg {
                let value = if inside {
                    let i = ((b * g.in_height + y as usize) * g.in_width + x as usize)
                        * g.in_channels
                        + group * cg
                        + c;
                    i64::from(op.input[i])
                } else {
                    zp
                };
                let w = op.filter[((oc * g.kernel_height + ky) * g.kernel_width + kx) * cg + c];
                acc += (value - zp) * i64::from(w);
            }
        }
    }
    acc
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The reference agrees with an independent padded formulation, bit for bit after
    /// requantization, and within one step of exact real arithmetic.
    #[test]
    fn reference_matches_padded_formulation(p in i8_problem()) {
        let op = p.op();
        let g = op.geometry;
        let out = run_i8(reference::conv2d_i8, &op);
        let mut i = 0;
        for b in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    for oc in 0..g.out_channels {
                        let acc = padded_accumulator(&op, b, oy, ox, oc);
                        let want = op.params.output(i32::try_from(acc).unwrap(), oc);
                        prop_assert_eq!(out[i], want, "pixel ({}, {}, {}) channel {}", b, oy, ox, oc);
                        let real = (acc as f64 * op.params.multiplier(oc).to_real()).round()
                            + f64::from(op.params.output_zero_point);
                        let real = real.clamp(f64::from(p.activation.0), f64::from(p.activation.1));
                        prop_assert!((f64::from(out[i]) - real).abs() <= 1.0);
                        i += 1;
                    }
                }
            }
        }
    }

    /// Every int8 kernel this CPU runs gives the reference's bytes.
    #[test]
    fn every_i8_kernel_matches_the_reference(p in i8_problem()) {
        let op = p.op();
        compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact)?;
    }

    /// Every float kernel stays within the dot-product tolerance of the reference.
    #[test]
    fn every_f32_kernel_is_within_tolerance(
        (g, input, filter, bias, act) in geometry().prop_flat_map(|g| (
            Just(g),
            f32s(g.input_len().unwrap(), 3.0),
            f32s(g.out_channels * g.patch_len(), 1.0),
            prop::option::of(f32s(g.out_channels, 1.0)),
            0usize..3,
        ))
    ) {
        let activation = [(f32::NEG_INFINITY, f32::INFINITY), (0.0, f32::INFINITY), (0.0, 6.0)][act];
        let op = Conv2dF32 { geometry: g, input: &input, filter: &filter, bias: bias.as_deref(), activation };
        within_tolerance(F32_KERNELS, &op)?;
        // The same layer with the filter rounded to f16: its kernels against its reference,
        // and that reference against the f32 one on the widened filter, exactly.
        let halves: Vec<half::f16> = filter.iter().map(|&w| half::f16::from_f32(w)).collect();
        let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        let op16 = Conv2dF32 { geometry: g, input: &input, filter: &halves[..], bias: bias.as_deref(), activation };
        within_tolerance(F16_KERNELS, &op16)?;
        let run = |k: F32Kernel<half::f16>| {
            let mut out = vec![0f32; g.output_len().unwrap()];
            k(&op16, &mut out, &mut []);
            out
        };
        let mut want = vec![0f32; g.output_len().unwrap()];
        reference::conv2d_f32(&Conv2dF32 { filter: &widened, ..op }, &mut want, &mut []);
        prop_assert_eq!(want, run(reference::conv2d_f32));
    }
}

/// Runs every kernel of `table` on `op` and checks each against the reference within
/// [`F32_TOLERANCE`], for inputs within 3, weights and bias within 1.
fn within_tolerance<W: crate::ops::FloatWeight>(
    table: &[crate::isa::Kernel<F32Kernel<W>>],
    op: &Conv2dF32<'_, W>,
) -> Result<usize, TestCaseError> {
    let g = op.geometry;
    let terms = g.patch_len();
    // Bound on every output: |x| <= 3, |w| <= 1, |b| <= 1.
    let magnitude = 3.0 * terms as f32 + 1.0;
    compare_kernels(
        table,
        |k| {
            let mut out = vec![0f32; g.output_len().unwrap()];
            let mut scratch = vec![0f32; scratch_len(&g)];
            k(op, &mut out, &mut scratch);
            out
        },
        |want, got| {
            for i in 0..want.len() {
                if !F32_TOLERANCE.accepts(want[i], got[i], terms, magnitude) {
                    return Err(format!("element {i}: want {}, got {}", want[i], got[i]));
                }
            }
            Ok(())
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn fixed_geometry(
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: [usize; 4],
    groups: usize,
) -> ConvGeometry {
    ConvGeometry {
        batch: 1,
        in_height: h,
        in_width: w,
        in_channels: cin,
        out_height: output_size(h, k, stride, 1, pad[0], pad[2]).unwrap(),
        out_width: output_size(w, k, stride, 1, pad[1], pad[3]).unwrap(),
        out_channels: cout,
        kernel_height: k,
        kernel_width: k,
        stride_height: stride,
        stride_width: stride,
        dilation_height: 1,
        dilation_width: 1,
        pad_top: pad[0],
        pad_left: pad[1],
        groups,
    }
}

/// Named edge cases: 1x1 images, padding larger than the kernel, pointwise layers of every
/// width around the vector sizes, odd channel counts, layers too large for packing, and zero
/// points at both extremes.
#[test]
fn edge_cases_match_the_reference() {
    let cases = [
        fixed_geometry(1, 1, 3, 5, 1, 1, [0; 4], 1),
        fixed_geometry(1, 1, 3, 5, 3, 1, [1; 4], 1),
        fixed_geometry(2, 2, 4, 4, 1, 1, [4, 4, 4, 4], 1),
        fixed_geometry(5, 5, 7, 9, 3, 2, [1, 0, 1, 0], 1),
        fixed_geometry(4, 4, 33, 17, 1, 1, [0; 4], 1),
        fixed_geometry(4, 4, 16, 16, 1, 1, [0; 4], 1),
        fixed_geometry(3, 3, 15, 8, 3, 1, [1; 4], 1),
        fixed_geometry(3, 3, 17, 8, 3, 1, [1; 4], 1),
        fixed_geometry(6, 6, 12, 6, 3, 1, [1; 4], 3),
        fixed_geometry(4, 1, 32, 32, 1, 2, [0; 4], 1),
        // Layers too large for the AVX-512 VNNI kernels' packed weights: patches over 1024
        // bytes (the unpacked path), then too many channels of 306 bytes (two slices of
        // the packed path), then a pointwise layer wider than 1024 channels.
        fixed_geometry(3, 3, 130, 6, 3, 1, [1; 4], 1),
        fixed_geometry(3, 3, 34, 120, 3, 1, [1; 4], 1),
        fixed_geometry(2, 2, 1100, 5, 1, 1, [0; 4], 1),
    ];
    for g in cases {
        for &(izp, ozp) in &[(-128, 127), (127, -128), (3, -5)] {
            for &real in &[1e-4f64, 0.3, 2.5] {
                let input: Vec<i8> = (0..g.input_len().unwrap())
                    .map(|i| if i % 3 == 0 { 127 } else { -128 })
                    .collect();
                let filter: Vec<i8> = (0..g.out_channels * g.patch_len())
                    .map(|i| if i % 2 == 0 { -128 } else { 127 })
                    .collect();
                let bias: Vec<i32> = (0..g.out_channels as i32).map(|o| o * 999 - 3000).collect();
                let m = [QuantizedMultiplier::from_real(real).unwrap()];
                let op = Conv2dI8 {
                    geometry: g,
                    params: RequantizeParams {
                        input_zero_point: izp,
                        output_zero_point: ozp,
                        multipliers: &m,
                        activation_min: -128,
                        activation_max: 127,
                    },
                    input: &input,
                    filter: &filter,
                    bias: Some(&bias),
                };
                compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact).unwrap();
            }
        }
    }
}

/// Grouped layers too large for one AVX-512 VNNI packing, with varied values that do not
/// saturate: each group must meet its own filter rows, bias and multipliers as in the
/// reference. The first has patches too long to pack (the unpacked path); the second's
/// groups of 70 channels of 900 inputs run as three slices, the last one partial.
#[test]
fn large_grouped_layers_match_the_reference() {
    for g in [
        fixed_geometry(3, 3, 262, 6, 3, 1, [1; 4], 2),
        fixed_geometry(4, 5, 200, 140, 3, 1, [1, 0, 1, 2], 2),
    ] {
        let mut byte = crate::ops::testing::xorshift_bytes(0x9e37_79b9_7f4a_7c15u64);
        varied_layer_matches_the_reference(g, &mut byte, (1e-4, 4.0), &[3], "grouped layer");
    }
}

/// Runs `g` with varied values through every kernel at each of `input_zero_points`, and on
/// x86 through the packing an interpreter would keep for it on this CPU (returning which
/// kernel's, if any): bytes from `byte`, biases `o * 7919 - 20000` and multipliers `scale *
/// (1 + o / spread)` for output channel `o`. The reference's outputs must not all saturate
/// (`case` names the layer), or the comparison could not tell the kernels apart.
fn varied_layer_matches_the_reference(
    g: ConvGeometry,
    byte: &mut impl FnMut() -> i8,
    (scale, spread): (f64, f64),
    input_zero_points: &[i32],
    case: &str,
) -> Option<std::string::String> {
    let mut prepared_kernel = None;
    let input: Vec<i8> = (0..g.input_len().unwrap()).map(|_| byte()).collect();
    let filter: Vec<i8> = (0..g.out_channels * g.patch_len())
        .map(|_| byte())
        .collect();
    let bias: Vec<i32> = (0..g.out_channels as i32)
        .map(|o| o * 7919 - 20000)
        .collect();
    let m: Vec<QuantizedMultiplier> = (0..g.out_channels)
        .map(|o| QuantizedMultiplier::from_real(scale * (1.0 + o as f64 / spread)).unwrap())
        .collect();
    for &input_zero_point in input_zero_points {
        let op = Conv2dI8 {
            geometry: g,
            params: RequantizeParams {
                input_zero_point,
                output_zero_point: -5,
                multipliers: &m,
                activation_min: -128,
                activation_max: 127,
            },
            input: &input,
            filter: &filter,
            bias: Some(&bias),
        };
        let want = run_i8(I8_KERNELS[0].run, &op);
        assert!(
            want.iter().any(|&v| v != -128 && v != 127),
            "{case}: the outputs must not all saturate, or the test could not tell the \
             kernels (and the groups) apart"
        );
        compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact).unwrap();
        #[cfg(target_arch = "x86_64")]
        if let Some(plan) = crate::ops::fully_connected::x86_prepared::Plan::conv(&g) {
            use crate::ops::fully_connected::x86_prepared;
            // One word past an aligned start: the panels' alignment is the module's work.
            let mut storage = vec![0i32; x86_prepared::conv_words(&g) + 1];
            let words = &mut storage[1..];
            x86_prepared::prepare_plan(&plan, &filter, Some(&bias), input_zero_point, words)
                .unwrap();
            let mut got = vec![0i8; want.len()];
            op.validate(&got).unwrap();
            assert!(
                super::x86_vnni::conv2d_i8_prepared(&op, words, &mut got),
                "{case}"
            );
            exact(&want, &got).unwrap_or_else(|e| panic!("{case}, prepared: {e:?}"));
            prepared_kernel = Some(format!("{:?}", plan.kernel()));
        }
    }
    prepared_kernel
}

#[test]
fn validation_names_the_operand() {
    let g = fixed_geometry(3, 3, 2, 2, 3, 1, [1; 4], 1);
    let input = vec![0f32; 18];
    let filter = vec![0f32; 36];
    let op = Conv2dF32 {
        geometry: g,
        input: &input,
        filter: &filter[..35],
        bias: None,
        activation: (f32::NEG_INFINITY, f32::INFINITY),
    };
    let mut out = vec![0f32; 18];
    let mut scratch = vec![0f32; scratch_len(&g)];
    assert_eq!(
        conv2d_f32(&op, &mut out, &mut scratch),
        Err(Error::ShapeMismatch {
            operand: Operand::Weights,
            expected: 36,
            actual: 35
        })
    );
    let op = Conv2dF32 {
        filter: &filter,
        ..op
    };
    assert_eq!(
        conv2d_f32(&op, &mut out, &mut scratch[..3]),
        Err(Error::ShapeMismatch {
            operand: Operand::Scratch,
            expected: scratch_len(&g),
            actual: 3
        })
    );
    assert_eq!(conv2d_f32(&op, &mut out, &mut scratch), Ok(()));
    let bad = Conv2dF32 {
        geometry: ConvGeometry { groups: 0, ..g },
        ..op
    };
    assert_eq!(
        conv2d_f32(&bad, &mut out, &mut scratch),
        Err(Error::InvalidShape)
    );
}

/// One-op models run through the interpreter like the kernels, and the model checks reject
/// operands that do not fit the attributes.
#[test]
fn one_conv_models_run_and_bad_ones_are_refused() {
    use crate::error::{LoadError, OpProblem, Slot};
    use crate::format::writer::{BuildError, ModelBuilder, QuantSpec};
    use crate::ops::{FusedActivation, OpKind, Tolerance};
    use crate::quant::QuantParams;

    let spec = ConvSpec::new(6, 3).stride(2).same(7, 5);
    let filter: Vec<f32> = (0..6 * 3 * 3 * 4)
        .map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let bias: Vec<f32> = (0..6).map(|i| i as f32 * 0.05).collect();
    let input: Vec<f32> = (0..7 * 5 * 4).map(|i| (i as f32 * 0.31).cos()).collect();

    let mut b = ModelBuilder::new("conv");
    let x = b
        .tensor("x", DType::F32, &[1, 7, 5, 4], QuantSpec::None)
        .unwrap();
    b.input(x);
    let y = b
        .conv2d_f32(
            "conv",
            x,
            spec,
            &filter,
            Some(&bias),
            FusedActivation::RELU6,
        )
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    assert!(built.plan.arena_size >= (7 * 5 * 4 + 4 * 3 * 6) * 4);
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&input)]).unwrap();
    let got: &[f32] = bytemuck::cast_slice(&out[0]);
    let g = fixed_geometry(7, 5, 4, 6, 3, 2, spec.padding, 1);
    assert_eq!(g.output_len().unwrap(), got.len());
    let mut want = vec![0f32; got.len()];
    reference::conv2d_f32(
        &Conv2dF32 {
            geometry: g,
            input: &input,
            filter: &filter,
            bias: Some(&bias),
            activation: (0.0, 6.0),
        },
        &mut want,
        &mut [],
    );
    for (w, g) in want.iter().zip(got) {
        assert!(
            Tolerance::DotProduct.accepts(*w, *g, 36, 40.0),
            "{w} vs {g}"
        );
    }

    // int8: within a few steps of the float result.
    let in_q = QuantParams::i8_from_range(-1.0, 1.0);
    let out_q = QuantParams::i8_from_range(0.0, 6.0);
    let mut b = ModelBuilder::new("conv-i8");
    let x = b
        .tensor(
            "x",
            DType::I8,
            &[1, 7, 5, 4],
            QuantSpec::PerTensor {
                scale: in_q.scale,
                zero_point: in_q.zero_point,
            },
        )
        .unwrap();
    b.input(x);
    let y = b
        .conv2d_i8(
            "conv",
            x,
            spec,
            &filter,
            Some(&bias),
            out_q,
            FusedActivation::RELU6,
        )
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let qin: Vec<i8> = input
        .iter()
        .map(|&v| in_q.quantize(v, -128, 127) as i8)
        .collect();
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&qin)]).unwrap();
    let got: &[i8] = bytemuck::cast_slice(&out[0]);
    for (w, &q) in want.iter().zip(got) {
        let real = out_q.dequantize(i32::from(q));
        assert!((real - w).abs() < 3.0 * out_q.scale + 0.05, "{w} vs {real}");
    }

    // A filter whose depth does not match the input channels is refused at load, naming it.
    let mut b = ModelBuilder::new("bad");
    let x = b
        .tensor("x", DType::F32, &[1, 4, 4, 3], QuantSpec::None)
        .unwrap();
    let w = b
        .constant("w", &[2, 3, 3, 2], &[0f32; 36], QuantSpec::None)
        .unwrap();
    let y = b
        .tensor("y", DType::F32, &[1, 2, 2, 2], QuantSpec::None)
        .unwrap();
    b.input(x);
    b.output(y);
    b.op(
        OpKind::Conv2d,
        "bad",
        &[Some(x), Some(w), None],
        &[y],
        &spec.attributes(FusedActivation::NONE).unwrap(),
    )
    .unwrap();
    match b.build() {
        Err(BuildError::Invalid(LoadError::Op {
            problem: OpProblem::Shape(Slot::Input(1), _),
            ..
        })) => {}
        other => panic!("expected a filter shape error, got {other:?}"),
    }
}

/// A random 16x8 convolution: full-range int16 input, multipliers with the small shifts
/// TFLite's 16x8 kernels allow, and an int32 bias.
/// Geometry, multipliers, clamp, input, filter and bias of a 16x8 convolution.
type I16Problem = (
    ConvGeometry,
    Vec<QuantizedMultiplier>,
    (i16, i16),
    Vec<i16>,
    Vec<i8>,
    Option<Vec<i32>>,
);

fn i16_problem() -> impl Strategy<Value = I16Problem> {
    geometry().prop_flat_map(|g| {
        (
            Just(g),
            prop::collection::vec(1e-7f64..1e-3, g.out_channels),
            (any::<i16>(), any::<i16>()),
            prop::collection::vec(any::<i16>(), g.input_len().unwrap()),
            i8s(g.out_channels * g.patch_len()),
            prop::option::of(prop::collection::vec(
                -(1i32 << 24)..(1 << 24),
                g.out_channels,
            )),
        )
            .prop_map(|(g, reals, (a, b), input, filter, bias)| {
                let m = reals
                    .into_iter()
                    .map(|r| QuantizedMultiplier::from_real(r).unwrap())
                    .collect();
                (g, m, (a.min(b), a.max(b)), input, filter, bias)
            })
    })
}

/// The operation of a 16x8 problem.
fn i16_op(p: &I16Problem) -> Conv2dI16<'_> {
    let (g, multipliers, activation, input, filter, bias) = p;
    Conv2dI16 {
        geometry: *g,
        params: crate::ops::Requantize16Params {
            multipliers,
            activation_min: activation.0,
            activation_max: activation.1,
        },
        input,
        filter,
        bias: bias.as_deref(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every 16x8 kernel gives the reference's values.
    #[test]
    fn every_i16_kernel_matches_the_reference(
        p in i16_problem()
    ) {
        let g = p.0;
        let op = i16_op(&p);
        op.validate(&vec![0i16; g.output_len().unwrap()]).unwrap();
        compare_kernels(I16_KERNELS, |k| {
            let mut out = vec![0i16; g.output_len().unwrap()];
            k(&op, &mut out);
            out
        }, exact)?;
    }

    /// The 16x8 reference agrees with the independent padded formulation (zero point 0)
    /// requantized by TFLite's 64-bit rule, bit for bit, and within two steps of exact real
    /// arithmetic (the 15-bit multiplier costs one).
    #[test]
    fn i16_reference_matches_padded_formulation(
        p in i16_problem()
    ) {
        let (g, _, activation, ..) = p;
        let op = i16_op(&p);
        let mut out = vec![0i16; g.output_len().unwrap()];
        conv2d_i16(&op, &mut out).unwrap();
        let mut i = 0;
        for b in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    for oc in 0..g.out_channels {
                        let acc = padded_accumulator_i16(&op, b, oy, ox, oc);
                        let m = op.params.multiplier(oc);
                        let (lo, hi) = (i32::from(activation.0), i32::from(activation.1));
                        let want = m.apply_wide(acc).clamp(lo, hi) as i16;
                        prop_assert_eq!(out[i], want, "pixel ({}, {}, {}) channel {}", b, oy, ox, oc);
                        let real = (acc as f64 * m.to_real()).round().clamp(f64::from(lo), f64::from(hi));
                        prop_assert!((f64::from(out[i]) - real).abs() <= 2.0);
                        i += 1;
                    }
                }
            }
        }
    }
}

/// [`padded_accumulator`] for a 16x8 problem (zero point 0).
fn padded_accumulator_i16(op: &Conv2dI16<'_>, b: usize, oy: usize, ox: usize, oc: usize) -> i64 {
    let g = &op.geometry;
    let (cg, og) = (g.group_in_channels(), g.group_out_channels());
    let group = oc / og;
    let mut acc = op.bias.map_or(0, |bias| i64::from(bias[oc]));
    for ky in 0..g.kernel_height {
        for kx in 0..g.kernel_width {
            let y = (oy * g.stride_height + ky * g.dilation_height) as i64 - g.pad_top as i64;
            let x = (ox * g.stride_width + kx * g.dilation_width) as i64 - g.pad_left as i64;
            if y < 0 || x < 0 || y as usize >= g.in_height || x as usize >= g.in_width {
                continue;
            }
            for c in 0..cg {
                let i = ((b * g.in_height + y as usize) * g.in_width + x as usize) * g.in_channels
                    + group * cg
                    + c;
                let w = op.filter[((oc * g.kernel_height + ky) * g.kernel_width + kx) * cg + c];
                acc += i64::from(op.input[i]) * i64::from(w);
            }
        }
    }
    acc
}

/// A 16x8 layer saturates at the int16 bounds and clamps to its fused activation; a shift
/// above 7 is refused.
#[test]
fn i16_saturates_clamps_and_refuses_large_shifts() {
    let g = ConvGeometry {
        batch: 1,
        in_height: 1,
        in_width: 1,
        in_channels: 4,
        out_height: 1,
        out_width: 1,
        out_channels: 2,
        kernel_height: 1,
        kernel_width: 1,
        stride_height: 1,
        stride_width: 1,
        dilation_height: 1,
        dilation_width: 1,
        pad_top: 0,
        pad_left: 0,
        groups: 1,
    };
    let input = [i16::MAX, i16::MAX, i16::MIN, i16::MAX];
    let filter = [127i8, 127, -128, 127, -128, -128, 127, -128];
    let m = [QuantizedMultiplier::from_real(0.5).unwrap()];
    let op = Conv2dI16 {
        geometry: g,
        params: crate::ops::Requantize16Params {
            multipliers: &m,
            activation_min: i16::MIN,
            activation_max: i16::MAX,
        },
        input: &input,
        filter: &filter,
        bias: None,
    };
    let mut out = [0i16; 2];
    conv2d_i16(&op, &mut out).unwrap();
    assert_eq!(out, [i16::MAX, i16::MIN]);
    let relu = Conv2dI16 {
        params: crate::ops::Requantize16Params {
            activation_min: 0,
            ..op.params
        },
        ..op
    };
    conv2d_i16(&relu, &mut out).unwrap();
    assert_eq!(out, [i16::MAX, 0]);
    let big = [QuantizedMultiplier::from_real(300.0).unwrap()];
    assert!(big[0].shift() > QuantizedMultiplier::MAX_WIDE_SHIFT);
    let op = Conv2dI16 {
        params: crate::ops::Requantize16Params {
            multipliers: &big,
            ..op.params
        },
        ..op
    };
    assert_eq!(
        conv2d_i16(&op, &mut out),
        Err(Error::InvalidQuantization(crate::error::QuantField::Scale))
    );
}

/// Layers the AMX im2col kernel takes (patches of at least 256 bytes that the implicit
/// kernel does not: fewer than 16 outputs, groups, runs of a kernel row that are not whole
/// quads): both row tiles full and partial, one and two
/// panels per pass and a partial panel, stride two, two groups, two images and padding,
/// with varied values that do not saturate.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_amx_kernel_takes_and_matches_its_layers() {
    let mut byte = crate::ops::testing::xorshift_bytes(0x6a09_e667_f3bc_c908);
    let cases = [
        (fixed_geometry(9, 7, 32, 12, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(8, 8, 64, 12, 3, 2, [1; 4], 1), 1),
        (fixed_geometry(7, 9, 48, 12, 3, 2, [1, 0, 1, 1], 1), 2),
        (fixed_geometry(6, 6, 80, 36, 3, 1, [0, 1, 1, 0], 2), 1),
        (fixed_geometry(5, 13, 30, 48, 3, 1, [1; 4], 1), 1),
    ];
    for (n, (mut g, batch)) in cases.into_iter().enumerate() {
        g.batch = batch;
        assert!(
            super::x86_vnni::amx_takes(&g) && super::x86_amx_implicit::runs(&g).is_none(),
            "case {n}: {g:?} must reach the im2col tiles"
        );
        let case = format!("case {n}");
        let prepared =
            varied_layer_matches_the_reference(g, &mut byte, (2e-4, 8.0), &[-128, 9], &case);
        if crate::isa::Isa::Amx.available() {
            assert_eq!(prepared.as_deref(), Some("ConvAmx"), "{case}");
        }
    }
}

/// Layers the AMX implicit-GEMM kernel takes: ResNet-8's 16 -> 32 and 32 -> 64 strided
/// layers (rows of sixteen pixels, and of eight in planes), its 16 -> 16 (one panel, two
/// bands), 32 -> 32 and 64 -> 64 layers (two slices of the packing), rows across several bands (a 40-pixel image of 32
/// channels), strided rows of twenty pixels (planes), planes across two bands and with
/// vertical dilation, two images, vertical dilation, asymmetric padding, a 5x5 window of 16
/// channels (runs of 80 bytes padded to 128), a 3x1 window (runs of one pixel), 40 and 48
/// outputs (partial panels), a run of two lines and a patch of 27 steps; each must reach
/// the kernel on an AMX CPU, run through its packing, and give the reference's bytes.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_amx_implicit_kernel_takes_and_matches_its_layers() {
    let mut byte = crate::ops::testing::xorshift_bytes(0x510e_527f_ade6_82d1);
    let dilated = |mut g: ConvGeometry, d: usize| {
        g.dilation_height = d;
        let (s, pad) = (g.stride_height, g.pad_top);
        g.out_height = output_size(g.in_height, g.kernel_height, s, d, pad, pad).unwrap();
        g
    };
    let tall = |mut g: ConvGeometry| {
        g.kernel_width = 1;
        g.out_width = g.in_width;
        g.pad_left = 0;
        g
    };
    let cases = [
        (fixed_geometry(32, 32, 16, 32, 3, 2, [0, 0, 1, 1], 1), 1),
        (fixed_geometry(16, 16, 32, 32, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(8, 8, 64, 64, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(40, 40, 32, 32, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(33, 40, 16, 48, 3, 2, [1, 1, 1, 0], 1), 2),
        (fixed_geometry(11, 9, 16, 40, 3, 1, [1, 1, 1, 1], 1), 2),
        (
            dilated(fixed_geometry(12, 10, 32, 32, 3, 1, [2, 1, 2, 1], 1), 2),
            1,
        ),
        (fixed_geometry(9, 19, 16, 32, 5, 1, [2, 0, 2, 3], 1), 1),
        (
            tall(fixed_geometry(10, 7, 32, 32, 3, 1, [1, 0, 1, 0], 1)),
            1,
        ),
        (fixed_geometry(7, 6, 96, 32, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(16, 16, 32, 64, 3, 2, [0, 0, 1, 1], 1), 1),
        (fixed_geometry(32, 32, 16, 16, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(40, 20, 32, 32, 3, 2, [1, 1, 1, 1], 1), 2),
        (
            dilated(fixed_geometry(13, 9, 32, 48, 3, 2, [2, 0, 2, 1], 1), 2),
            1,
        ),
    ];
    for (n, (mut g, batch)) in cases.into_iter().enumerate() {
        g.batch = batch;
        let case = format!("case {n}");
        if crate::isa::Isa::Amx.available() {
            assert!(
                super::x86_amx_implicit::takes(&g),
                "{case}: {g:?} must reach the kernel"
            );
        }
        let prepared =
            varied_layer_matches_the_reference(g, &mut byte, (2e-4, 8.0), &[-128, 127, 5], &case);
        if crate::isa::Isa::Amx.available() {
            assert_eq!(prepared.as_deref(), Some("ConvImplicit"), "{case}");
        }
    }
}

/// Layers the VNNI im2col GEMM takes (patches under the AMX kernel's 256 bytes, or any
/// patch on CPUs without AMX), run also through the packing an interpreter keeps: one and
/// several slices, groups, stride two, padding, and a patch too long to pack (nothing
/// kept).
#[cfg(target_arch = "x86_64")]
#[test]
fn prepared_packings_of_the_vnni_gemm_give_the_layers_bytes() {
    let mut byte = crate::ops::testing::xorshift_bytes(0xbb67_ae85_84ca_a73b);
    let cases = [
        (fixed_geometry(9, 7, 10, 16, 3, 1, [1; 4], 1), true),
        (fixed_geometry(8, 9, 3, 40, 3, 2, [1, 0, 1, 1], 1), true),
        (fixed_geometry(6, 6, 10, 300, 3, 1, [0, 1, 1, 0], 1), true),
        (fixed_geometry(7, 5, 24, 36, 3, 1, [1; 4], 3), true),
        (fixed_geometry(3, 3, 262, 6, 3, 1, [1; 4], 2), false),
    ];
    for (n, (g, packs)) in cases.into_iter().enumerate() {
        let case = format!("case {n}");
        let prepared =
            varied_layer_matches_the_reference(g, &mut byte, (2e-4, 8.0), &[-128, 4], &case);
        if crate::isa::Isa::Avx512Vnni.available() && !super::x86_vnni::amx_takes(&g) {
            let want = packs.then_some("ConvVnni");
            assert_eq!(prepared.as_deref(), want, "{case}");
        }
    }
}

/// First layers the AVX-512 VBMI kernel takes (few input channels, at most sixteen
/// outputs or a few passes of sixteen, pixels in lanes): MobileNet's (3 -> 8, 3x3, stride
/// two), ResNet-8's (3 -> 16), DS-CNN's (1 -> 64, 10x4, stride two; its rows of five
/// pixels run as a plane, as do two more narrow images) and its shape on wider rows,
/// MobileNet's first pointwise layer (8 -> 16), 32 and 48 outputs
/// (several passes, stored pixel by pixel), one and five output channels, one and two input channels, strides one to three,
/// a 5x5 window (two quads per kernel row), rows whose last block is partial and rows of
/// one block, asymmetric padding, and two images; each must reach the kernel on a CPU
/// with VBMI (every CPU with AMX has it) and give the reference's bytes on every kernel.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_vbmi_first_layer_kernel_takes_and_matches_its_layers() {
    let mut byte = crate::ops::testing::xorshift_bytes(0x3c6e_f372_fe94_f82b);
    let cases = [
        (fixed_geometry(20, 21, 3, 8, 3, 2, [0, 0, 1, 1], 1), 1),
        (fixed_geometry(12, 33, 3, 16, 3, 1, [1; 4], 1), 2),
        (fixed_geometry(9, 17, 1, 1, 3, 1, [1, 0, 1, 2], 1), 1),
        (fixed_geometry(7, 40, 2, 5, 3, 3, [1; 4], 1), 1),
        (fixed_geometry(10, 21, 2, 12, 5, 2, [2; 4], 1), 2),
        (fixed_geometry(5, 9, 3, 16, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(9, 23, 3, 32, 3, 2, [1; 4], 1), 1),
        (fixed_geometry(6, 17, 2, 48, 3, 1, [0, 1, 1, 0], 1), 2),
        (wide_first_layer(), 1),
        (dscnn_first_layer(), 2),
        (fixed_geometry(12, 20, 8, 16, 1, 1, [0; 4], 1), 1),
        (fixed_geometry(9, 6, 1, 16, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(4, 3, 2, 8, 3, 1, [1, 1, 1, 0], 1), 3),
    ];
    for (n, (mut g, batch)) in cases.into_iter().enumerate() {
        g.batch = batch;
        if crate::isa::Isa::Amx.available() {
            assert!(crate::isa::avx512_vbmi(), "a CPU with AMX has VBMI");
        }
        if crate::isa::avx512_vbmi() {
            assert!(
                super::x86_vbmi::takes(&g),
                "case {n}: {g:?} must reach the kernel"
            );
        }
        let case = format!("case {n}");
        let prepared =
            varied_layer_matches_the_reference(g, &mut byte, (2e-4, 8.0), &[-128, 11], &case);
        if crate::isa::avx512_vbmi() {
            assert_eq!(prepared, None, "{case}: the kernel packs nothing");
        }
    }
}

/// A first layer of one channel and 64 outputs with a 10x4 window of stride two, as
/// DS-CNN's, on a spectrogram four times as wide (DS-CNN's own rows, five pixels, are too
/// narrow for the kernel).
#[cfg(target_arch = "x86_64")]
fn wide_first_layer() -> ConvGeometry {
    ConvGeometry {
        batch: 1,
        in_height: 25,
        in_width: 40,
        in_channels: 1,
        out_height: output_size(25, 10, 2, 1, 4, 5).unwrap(),
        out_width: output_size(40, 4, 2, 1, 1, 2).unwrap(),
        out_channels: 64,
        kernel_height: 10,
        kernel_width: 4,
        stride_height: 2,
        stride_width: 2,
        dilation_height: 1,
        dilation_width: 1,
        pad_top: 4,
        pad_left: 1,
        groups: 1,
    }
}

/// DS-CNN's first layer: a 49x10 spectrogram of one channel, 64 outputs, a 10x4 window of
/// stride two, padded as "same" (rows of five output pixels: the kernel's plane mode).
#[cfg(target_arch = "x86_64")]
fn dscnn_first_layer() -> ConvGeometry {
    ConvGeometry {
        in_height: 49,
        in_width: 10,
        out_height: output_size(49, 10, 2, 1, 4, 5).unwrap(),
        out_width: output_size(10, 4, 2, 1, 1, 2).unwrap(),
        ..wide_first_layer()
    }
}

/// Layers the VBMI kernel takes as quad planes (a multiple of four input channels, too many
/// for runs of bytes, at most sixteen outputs): ResNet-8's 3x3 layers of sixteen channels
/// (and the same with stride two), eight channels to sixteen, twelve to five with stride
/// three, four channels with a 5x5
/// window, stride two with padding on one side, two images; each must reach the kernel
/// that way on a CPU with VBMI and give the reference's bytes on every kernel (on a CPU
/// with AMX, the AMX kernel takes ResNet-8's layers through its implicit GEMM, and the VBMI
/// kernel runs them as the VNNI kernel).
#[cfg(target_arch = "x86_64")]
#[test]
fn the_vbmi_kernel_takes_deeper_inputs_as_quad_planes() {
    let mut byte = crate::ops::testing::xorshift_bytes(0xa54f_f53a_5f1d_36f1);
    let cases = [
        (fixed_geometry(32, 32, 16, 16, 3, 1, [1; 4], 1), 1),
        (fixed_geometry(32, 32, 16, 16, 3, 2, [0, 0, 1, 1], 1), 1),
        (fixed_geometry(9, 21, 8, 16, 3, 1, [1; 4], 1), 2),
        (fixed_geometry(11, 19, 4, 12, 5, 2, [2, 1, 2, 2], 1), 1),
        (fixed_geometry(6, 40, 12, 5, 3, 3, [1; 4], 1), 1),
    ];
    for (n, (mut g, batch)) in cases.into_iter().enumerate() {
        g.batch = batch;
        assert!(
            super::x86_vbmi::takes_as_quad_planes(&g),
            "case {n}: {g:?} must reach the quad planes"
        );
        if crate::isa::avx512_vbmi() {
            assert!(super::x86_vbmi::takes(&g), "case {n}");
        }
        let case = format!("case {n}");
        let prepared =
            varied_layer_matches_the_reference(g, &mut byte, (1e-4, 8.0), &[-128, 6], &case);
        if crate::isa::avx512_vbmi() && !super::x86_vnni::amx_takes(&g) {
            let want = super::x86_amx_implicit::takes(&g).then_some("ConvImplicit");
            assert_eq!(
                prepared.as_deref(),
                want,
                "{case}: the kernel packs nothing"
            );
        }
    }
}
