use std::format;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::fixed_point::QuantizedMultiplier;
use crate::ops::testing::{compare_kernels, exact, f32s, i8s, run_model};

fn geometry() -> impl Strategy<Value = ConvGeometry> {
    (
        (1usize..3, 1usize..9, 1usize..9),
        (1usize..40, prop::sample::select(vec![1usize, 1, 1, 2, 3])),
        (
            1usize..5,
            1usize..5,
            1usize..3,
            1usize..3,
            1usize..3,
            1usize..3,
        ),
        (0usize..5, 0usize..5, 0usize..5, 0usize..5),
    )
        .prop_filter_map(
            "the dilated kernel must fit the padded input",
            |((batch, h, w), (c, m), (kh, kw, sh, sw, dh, dw), (pt, pl, pb, pr))| {
                Some(ConvGeometry {
                    batch,
                    in_height: h,
                    in_width: w,
                    in_channels: c,
                    out_height: output_size(h, kh, sh, dh, pt, pb)?,
                    out_width: output_size(w, kw, sw, dw, pl, pr)?,
                    out_channels: c * m,
                    kernel_height: kh,
                    kernel_width: kw,
                    stride_height: sh,
                    stride_width: sw,
                    dilation_height: dh,
                    dilation_width: dw,
                    pad_top: pt,
                    pad_left: pl,
                    groups: c,
                })
            },
        )
}

#[derive(Debug, Clone)]
struct I8Problem {
    geometry: ConvGeometry,
    zero_points: (i32, i32),
    multipliers: Vec<QuantizedMultiplier>,
    activation: (i8, i8),
    input: Vec<i8>,
    filter: Vec<i8>,
    bias: Option<Vec<i32>>,
}

impl I8Problem {
    fn op(&self) -> DepthwiseConv2dI8<'_> {
        DepthwiseConv2dI8 {
            geometry: self.geometry,
            params: RequantizeParams {
                input_zero_point: self.zero_points.0,
                output_zero_point: self.zero_points.1,
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

fn filter_len(g: &ConvGeometry) -> usize {
    g.kernel_height * g.kernel_width * g.out_channels
}

fn i8_problem() -> impl Strategy<Value = I8Problem> {
    geometry().prop_flat_map(|g| {
        (
            (any::<i8>(), any::<i8>()),
            prop::collection::vec(1e-4f64..0.05, g.out_channels),
            any::<bool>(),
            (any::<i8>(), any::<i8>()),
            i8s(g.input_len().unwrap()),
            i8s(filter_len(&g)),
            prop::option::of(prop::collection::vec(
                -(1i32 << 14)..(1 << 14),
                g.out_channels,
            )),
        )
            .prop_map(
                move |((izp, ozp), reals, per_channel, (a, b), input, filter, bias)| {
                    let reals = if per_channel {
                        reals
                    } else {
                        reals[..1].to_vec()
                    };
                    I8Problem {
                        geometry: g,
                        zero_points: (izp.into(), ozp.into()),
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
    })
}

fn run_i8(kernel: I8Kernel, op: &DepthwiseConv2dI8<'_>) -> Vec<i8> {
    let mut out = vec![0i8; op.geometry.output_len().unwrap()];
    kernel(op, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The reference equals a grouped convolution with one input channel per group, an
    /// independent formulation of the same arithmetic (with the filter moved to OHWI).
    #[test]
    fn reference_matches_grouped_convolution(p in i8_problem()) {
        let op = p.op();
        let g = op.geometry;
        let k = g.kernel_height * g.kernel_width;
        let mut ohwi = vec![0i8; g.out_channels * k];
        for oc in 0..g.out_channels {
            for t in 0..k {
                ohwi[oc * k + t] = op.filter[t * g.out_channels + oc];
            }
        }
        let conv = crate::ops::conv2d::Conv2dI8 { geometry: g, params: op.params, input: op.input, filter: &ohwi, bias: op.bias };
        let mut want = vec![0i8; g.output_len().unwrap()];
        crate::ops::conv2d::reference::conv2d_i8(&conv, &mut want, &mut []);
        prop_assert_eq!(run_i8(reference::depthwise_conv2d_i8, &op), want);
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
        (g, input, filter, bias) in geometry().prop_flat_map(|g| (
            Just(g),
            f32s(g.input_len().unwrap(), 3.0),
            f32s(filter_len(&g), 1.0),
            prop::option::of(f32s(g.out_channels, 1.0)),
        ))
    ) {
        let activation = (f32::NEG_INFINITY, 6.0);
        let op = DepthwiseConv2dF32 { geometry: g, input: &input, filter: &filter, bias: bias.as_deref(), activation };
        within_tolerance(F32_KERNELS, &op)?;
        // The filter rounded to f16: its kernels against its reference, and that reference
        // against the f32 one on the widened filter, exactly.
        let halves: Vec<half::f16> = filter.iter().map(|&w| half::f16::from_f32(w)).collect();
        let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        let op16 = DepthwiseConv2dF32 { geometry: g, input: &input, filter: &halves[..], bias: bias.as_deref(), activation };
        within_tolerance(F16_KERNELS, &op16)?;
        let n = g.output_len().unwrap();
        let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
        reference::depthwise_conv2d_f32(&DepthwiseConv2dF32 { filter: &widened, ..op }, &mut want);
        reference::depthwise_conv2d_f32(&op16, &mut got);
        prop_assert_eq!(want, got);
    }
}

/// Runs every kernel of `table` on `op` and checks each against the reference within
/// [`F32_TOLERANCE`], for inputs within 3, weights and bias within 1.
fn within_tolerance<W: crate::ops::FloatWeight>(
    table: &[crate::isa::Kernel<F32Kernel<W>>],
    op: &DepthwiseConv2dF32<'_, W>,
) -> Result<usize, proptest::test_runner::TestCaseError> {
    let g = op.geometry;
    let terms = g.kernel_height * g.kernel_width;
    let magnitude = 3.0 * terms as f32 + 1.0;
    compare_kernels(
        table,
        |k| {
            let mut out = vec![0f32; g.output_len().unwrap()];
            k(op, &mut out);
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

/// Zero points at the extremes, saturating multipliers, channel counts around the vector
/// width, and padding larger than the kernel.
#[test]
fn edge_cases_match_the_reference() {
    // 264 channels: eight full blocks of 32 and one more vector of 8.
    for &c in &[1usize, 7, 8, 9, 15, 16, 17, 33, 264] {
        for &(pad, k) in &[(0usize, 1usize), (1, 3), (4, 3)] {
            let g = ConvGeometry {
                batch: 1,
                in_height: 3,
                in_width: 4,
                in_channels: c,
                out_height: output_size(3, k, 1, 1, pad, pad).unwrap(),
                out_width: output_size(4, k, 1, 1, pad, pad).unwrap(),
                out_channels: c,
                kernel_height: k,
                kernel_width: k,
                stride_height: 1,
                stride_width: 1,
                dilation_height: 1,
                dilation_width: 1,
                pad_top: pad,
                pad_left: pad,
                groups: c,
            };
            for &(izp, ozp) in &[(-128, 127), (127, -128)] {
                for &real in &[1e-4f64, 0.7, 3.0] {
                    let input: Vec<i8> = (0..g.input_len().unwrap())
                        .map(|i| if i % 2 == 0 { 127 } else { -128 })
                        .collect();
                    let filter: Vec<i8> = (0..filter_len(&g))
                        .map(|i| if i % 3 == 0 { -128 } else { 127 })
                        .collect();
                    let m = [QuantizedMultiplier::from_real(real).unwrap()];
                    let op = DepthwiseConv2dI8 {
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
                        bias: None,
                    };
                    compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact).unwrap();
                }
            }
        }
    }
}

/// Layers the fast paths split into several passes over the channels, or whose windows
/// are far larger than the random geometries': 520 channels of a 3x3 window, 136 of an 8x8
/// (the largest window kept on the stack) and 168 of an odd 7x7, each with the window
/// hanging over every edge of the image.
#[test]
fn many_channels_and_large_windows_match_the_reference() {
    for &(c, k) in &[(520usize, 3usize), (136, 8), (168, 7)] {
        let g = ConvGeometry {
            batch: 2,
            in_height: k + 1,
            in_width: k,
            in_channels: c,
            out_height: output_size(k + 1, k, 1, 1, k / 2, k - 1).unwrap(),
            out_width: output_size(k, k, 2, 1, k - 1, k / 2).unwrap(),
            out_channels: c,
            kernel_height: k,
            kernel_width: k,
            stride_height: 1,
            stride_width: 2,
            dilation_height: 1,
            dilation_width: 1,
            pad_top: k / 2,
            pad_left: k - 1,
            groups: c,
        };
        let input: Vec<i8> = (0..g.input_len().unwrap())
            .map(|i| (i * 37 % 256) as u8 as i8)
            .collect();
        let filter: Vec<i8> = (0..filter_len(&g))
            .map(|i| (i * 101 % 256) as u8 as i8)
            .collect();
        let bias: Vec<i32> = (0..c as i32).map(|o| o * 977 - 250_000).collect();
        let m: Vec<QuantizedMultiplier> = (0..c)
            .map(|o| QuantizedMultiplier::from_real(1e-4 + o as f64 * 1e-5).unwrap())
            .collect();
        for izp in [-128, 0, 127] {
            let op = DepthwiseConv2dI8 {
                geometry: g,
                params: RequantizeParams {
                    input_zero_point: izp,
                    output_zero_point: 3,
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

#[test]
fn a_depthwise_model_runs_like_the_kernel() {
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::ops::FusedActivation;
    use crate::ops::conv2d::ConvSpec;
    use crate::quant::QuantParams;

    let spec = ConvSpec::new(10, 3).same(6, 6);
    let filter: Vec<f32> = (0..9 * 10)
        .map(|i| ((i * 3) % 7) as f32 / 7.0 - 0.4)
        .collect();
    let input: Vec<f32> = (0..6 * 6 * 10).map(|i| (i as f32 * 0.7).sin()).collect();
    let in_q = QuantParams::i8_from_range(-1.0, 1.0);
    let out_q = QuantParams::i8_from_range(-3.0, 3.0);
    let mut b = ModelBuilder::new("dw");
    let x = b
        .tensor(
            "x",
            DType::I8,
            &[1, 6, 6, 10],
            QuantSpec::PerTensor {
                scale: in_q.scale,
                zero_point: in_q.zero_point,
            },
        )
        .unwrap();
    b.input(x);
    let y = b
        .depthwise_conv2d_i8("dw", x, spec, &filter, None, out_q, FusedActivation::NONE)
        .unwrap();
    b.output(y);
    let built = b.build().unwrap();
    let qin: Vec<i8> = input
        .iter()
        .map(|&v| in_q.quantize(v, -128, 127) as i8)
        .collect();
    let out = run_model(&built.bytes, &[bytemuck::cast_slice(&qin)]).unwrap();
    let got: &[i8] = bytemuck::cast_slice(&out[0]);

    let mut fb = ModelBuilder::new("dw-f32");
    let x = fb
        .tensor("x", DType::F32, &[1, 6, 6, 10], QuantSpec::None)
        .unwrap();
    fb.input(x);
    let y = fb
        .depthwise_conv2d_f32("dw", x, spec, &filter, None, FusedActivation::NONE)
        .unwrap();
    fb.output(y);
    let out_f = run_model(&fb.build().unwrap().bytes, &[bytemuck::cast_slice(&input)]).unwrap();
    let want: &[f32] = bytemuck::cast_slice(&out_f[0]);
    assert_eq!(want.len(), got.len());
    for (w, &q) in want.iter().zip(got) {
        let real = out_q.dequantize(i32::from(q));
        assert!((real - w).abs() < 3.0 * out_q.scale + 0.03, "{w} vs {real}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every 16x8 kernel gives the reference's values, the extremes included (they bound
    /// the i32 lanes the fast paths sum in).
    #[test]
    fn every_i16_kernel_matches_the_reference(
        (g, reals, (a, b), input, filter, bias) in geometry().prop_flat_map(|g| (
            Just(g),
            prop::collection::vec(1e-7f64..1e-3, g.out_channels),
            (any::<i16>(), any::<i16>()),
            prop::collection::vec(
                prop_oneof![any::<i16>(), Just(i16::MIN), Just(i16::MAX)],
                g.input_len().unwrap(),
            ),
            prop::collection::vec(
                prop_oneof![any::<i8>(), Just(i8::MIN), Just(i8::MAX)],
                g.kernel_height * g.kernel_width * g.out_channels,
            ),
            prop::option::of(prop::collection::vec(any::<i32>(), g.out_channels)),
        ))
    ) {
        let multipliers: Vec<QuantizedMultiplier> = reals
            .into_iter()
            .map(|r| QuantizedMultiplier::from_real(r).unwrap())
            .collect();
        let op = DepthwiseConv2dI16 {
            geometry: g,
            params: crate::ops::Requantize16Params {
                multipliers: &multipliers,
                activation_min: a.min(b),
                activation_max: a.max(b),
            },
            input: &input,
            filter: &filter,
            bias: bias.as_deref(),
        };
        let run = |k: I16Kernel| {
            let mut out = vec![0i16; g.output_len().unwrap()];
            k(&op, &mut out);
            out
        };
        compare_kernels(I16_KERNELS, run, exact)?;
    }

    /// The 16x8 reference agrees bit for bit with an independent formulation (the window
    /// walked with explicit bounds, summed in i128, requantized by TFLite's 64-bit rule) and
    /// within two steps of exact real arithmetic.
    #[test]
    fn i16_reference_matches_independent_model(
        (g, reals, (a, b), input, filter, bias) in geometry().prop_flat_map(|g| (
            Just(g),
            prop::collection::vec(1e-7f64..1e-3, g.out_channels),
            (any::<i16>(), any::<i16>()),
            prop::collection::vec(any::<i16>(), g.input_len().unwrap()),
            i8s(g.kernel_height * g.kernel_width * g.out_channels),
            prop::option::of(prop::collection::vec(-(1i32 << 24)..(1 << 24), g.out_channels)),
        ))
    ) {
        let multipliers: Vec<QuantizedMultiplier> = reals
            .into_iter()
            .map(|r| QuantizedMultiplier::from_real(r).unwrap())
            .collect();
        let (lo, hi) = (a.min(b), a.max(b));
        let op = DepthwiseConv2dI16 {
            geometry: g,
            params: crate::ops::Requantize16Params {
                multipliers: &multipliers,
                activation_min: lo,
                activation_max: hi,
            },
            input: &input,
            filter: &filter,
            bias: bias.as_deref(),
        };
        let mut out = vec![0i16; g.output_len().unwrap()];
        depthwise_conv2d_i16(&op, &mut out).unwrap();
        let per_input = g.out_channels / g.in_channels;
        let mut i = 0;
        for n in 0..g.batch {
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    for oc in 0..g.out_channels {
                        let mut acc: i128 = bias.as_ref().map_or(0, |b| i128::from(b[oc]));
                        for ky in 0..g.kernel_height {
                            for kx in 0..g.kernel_width {
                                let y = (oy * g.stride_height + ky * g.dilation_height) as i64
                                    - g.pad_top as i64;
                                let x = (ox * g.stride_width + kx * g.dilation_width) as i64
                                    - g.pad_left as i64;
                                if y < 0 || x < 0 || y as usize >= g.in_height || x as usize >= g.in_width {
                                    continue;
                                }
                                let v = input[((n * g.in_height + y as usize) * g.in_width + x as usize)
                                    * g.in_channels + oc / per_input];
                                let w = filter[(ky * g.kernel_width + kx) * g.out_channels + oc];
                                acc += i128::from(v) * i128::from(w);
                            }
                        }
                        let m = multipliers[oc];
                        let want = m.apply_wide(acc as i64).clamp(i32::from(lo), i32::from(hi)) as i16;
                        prop_assert_eq!(out[i], want, "pixel ({}, {}, {}) channel {}", n, oy, ox, oc);
                        let real = (acc as f64 * m.to_real()).round().clamp(f64::from(lo), f64::from(hi));
                        prop_assert!((f64::from(out[i]) - real).abs() <= 2.0);
                        i += 1;
                    }
                }
            }
        }
    }
}

/// The AVX-512 VNNI kernels' own layers, each of which must reach the kernel named for it
/// (`Quad`: the quad-row kernel; `Chunk`: the chunk kernel, for channel counts whose
/// pattern repeats only after more than 256 positions, and rows too long for the quad rows)
/// rather than
/// the AVX2 kernel: channel counts that divide 64, are multiples of it or repeat every few
/// chunks (3, 5, 12, 24, 40, 80, 96), strides of one and two (and a third, whose phases are copied
/// pixel by pixel) in either direction, dilation, 5x5 and 1x7 windows (two quads of taps
/// per kernel row), asymmetric padding, two images, rows whose last chunk is partial,
/// multipliers above one (the left shift) and below, and tight activation clamps.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_vnni_kernels_take_and_match_their_layers() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Reaches {
        Quad,
        Chunk,
    }
    use Reaches::{Chunk, Quad};
    #[allow(clippy::type_complexity)]
    let cases: &[(
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
        [usize; 4],
        Reaches,
    )] = &[
        // (channels, (h, w), kernel, (stride_h, stride_w), [top, left, bottom, right], kernel)
        (8, (9, 11), (3, 3), (1, 1), [1, 1, 1, 1], Quad),
        (16, (9, 10), (3, 3), (2, 2), [0, 1, 1, 0], Quad),
        (4, (7, 13), (3, 3), (2, 2), [1, 1, 1, 1], Quad),
        (32, (6, 9), (3, 3), (2, 2), [1, 0, 1, 1], Quad),
        (64, (5, 7), (3, 3), (1, 1), [1, 1, 1, 1], Quad),
        (128, (4, 4), (3, 3), (2, 1), [1, 1, 1, 1], Quad),
        (256, (3, 3), (3, 3), (1, 2), [1, 1, 1, 1], Quad),
        (3, (8, 9), (3, 3), (1, 1), [1, 2, 0, 1], Quad),
        (24, (6, 7), (5, 5), (1, 1), [2, 2, 2, 2], Quad),
        (96, (5, 6), (3, 3), (2, 2), [1, 1, 1, 1], Quad),
        (1, (6, 70), (3, 1), (1, 1), [1, 0, 1, 0], Quad),
        (48, (7, 8), (3, 3), (3, 3), [2, 1, 0, 2], Quad),
        (8, (4, 5), (1, 1), (1, 1), [0, 0, 0, 0], Quad),
        (8, (9, 12), (3, 3), (2, 2), [1, 1, 1, 1], Quad),
        (16, (7, 8), (5, 5), (1, 1), [2, 2, 2, 2], Quad),
        (8, (3, 20), (1, 7), (1, 1), [0, 3, 0, 3], Quad),
        (2, (5, 9), (3, 3), (2, 1), [1, 1, 1, 1], Quad),
        (12, (6, 9), (3, 3), (1, 2), [1, 1, 1, 1], Quad),
        (80, (5, 6), (3, 3), (1, 1), [1, 1, 1, 1], Chunk),
        (5, (7, 9), (3, 3), (2, 2), [1, 1, 1, 1], Chunk),
        (40, (6, 8), (5, 5), (2, 1), [2, 2, 2, 2], Chunk),
        (64, (4, 40), (3, 3), (1, 1), [1, 1, 1, 1], Chunk),
    ];
    let mut byte = crate::ops::testing::xorshift_bytes(0x2545_f491_4f6c_dd1d);
    for (n, &(c, (h, w), (kh, kw), (sh, sw), [pt, pl, pb, pr], reaches)) in cases.iter().enumerate()
    {
        let dilation = if n % 4 == 3 { 2 } else { 1 };
        let Some(out_height) = output_size(h, kh, sh, dilation, pt, pb) else {
            panic!("case {n}: the window must fit");
        };
        let Some(out_width) = output_size(w, kw, sw, dilation, pl, pr) else {
            panic!("case {n}: the window must fit");
        };
        let g = ConvGeometry {
            batch: 2,
            in_height: h,
            in_width: w,
            in_channels: c,
            out_height,
            out_width,
            out_channels: c,
            kernel_height: kh,
            kernel_width: kw,
            stride_height: sh,
            stride_width: sw,
            dilation_height: dilation,
            dilation_width: dilation,
            pad_top: pt,
            pad_left: pl,
            groups: c,
        };
        let reached = if x86_vnni_quad_rows::applies(&g) {
            Some(Quad)
        } else if x86_vnni::applies(&g) {
            Some(Chunk)
        } else {
            None
        };
        assert_eq!(reached, Some(reaches), "case {n}: {g:?}");
        let input: Vec<i8> = (0..g.input_len().unwrap()).map(|_| byte()).collect();
        let filter: Vec<i8> = (0..filter_len(&g)).map(|_| byte()).collect();
        let bias: Vec<i32> = (0..c as i32).map(|o| o * 97 - 2_000).collect();
        // Per channel, every fifth above one; or one for the whole layer.
        let per_channel: Vec<QuantizedMultiplier> = (0..c)
            .map(|o| {
                let real = if o % 5 == 4 {
                    1.5
                } else {
                    0.0008 * (1 + o % 7) as f64
                };
                QuantizedMultiplier::from_real(real).unwrap()
            })
            .collect();
        let per_tensor = [QuantizedMultiplier::from_real(0.002).unwrap()];
        for (multipliers, (izp, ozp), (lo, hi)) in [
            (&per_channel[..], (-128, 5), (-128, 127)),
            (&per_tensor[..], (127, 0), (-100, 90)),
            (&per_channel[..], (3, -7), (-7, 127)),
        ] {
            let op = DepthwiseConv2dI8 {
                geometry: g,
                params: RequantizeParams {
                    input_zero_point: izp,
                    output_zero_point: ozp,
                    multipliers,
                    activation_min: lo,
                    activation_max: hi,
                },
                input: &input,
                filter: &filter,
                bias: Some(&bias),
            };
            let want = run_i8(I8_KERNELS[0].run, &op);
            assert!(
                want.iter().any(|&v| v != lo && v != hi),
                "case {n}: the outputs must not all clamp, or the test could not tell"
            );
            compare_kernels(I8_KERNELS, |k| run_i8(k, &op), exact).unwrap();
        }
    }
}
