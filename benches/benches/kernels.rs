//! Per-kernel throughput: each compute-heavy kernel's reference and the kernel this machine
//! dispatches to, side by side in one run, on layer shapes from the benchmark models.
//! criterion's "elements" are multiply-accumulates, so its throughput reads as MAC/s.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loam::fixed_point::QuantizedMultiplier;
use loam::ops::RequantizeParams;
use loam::ops::conv2d::{self, Conv2dF32, Conv2dI8, Conv2dI16, ConvGeometry, output_size};
use loam::ops::depthwise_conv2d::{self, DepthwiseConv2dI8, DepthwiseConv2dI16};
use loam::ops::fully_connected::{self, FullyConnectedI8, FullyConnectedI16, FullyConnectedShape};
use loam::ops::softmax::{self, SoftmaxI8, SoftmaxQuant, SoftmaxShape};

fn pattern(len: usize, seed: usize) -> Vec<i8> {
    (0..len)
        .map(|i| ((i * 37 + seed * 11) % 255) as i8)
        .collect()
}

fn multipliers(n: usize) -> Vec<QuantizedMultiplier> {
    (0..n)
        .map(|o| QuantizedMultiplier::from_real(0.0005 + o as f64 * 1e-6).unwrap())
        .collect()
}

/// int16 activations spread over the whole range, for the 16x8 kernels.
fn pattern_i16(len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| ((i * 7919) % 65536) as u16 as i16)
        .collect()
}

/// Multipliers the size of a 16x8 layer's (int16 activations need smaller ones).
fn wide_multipliers(n: usize) -> Vec<QuantizedMultiplier> {
    (0..n)
        .map(|o| QuantizedMultiplier::from_real(1e-5 + o as f64 * 1e-8).unwrap())
        .collect()
}

fn params(m: &[QuantizedMultiplier]) -> RequantizeParams<'_> {
    RequantizeParams {
        input_zero_point: -3,
        output_zero_point: 5,
        multipliers: m,
        activation_min: -128,
        activation_max: 127,
    }
}

fn geometry(
    hw: (usize, usize),
    cin: usize,
    cout: usize,
    k: (usize, usize),
    stride: usize,
    groups: usize,
) -> ConvGeometry {
    let pad = (k.0 / 2, k.1 / 2);
    ConvGeometry {
        batch: 1,
        in_height: hw.0,
        in_width: hw.1,
        in_channels: cin,
        out_height: output_size(hw.0, k.0, stride, 1, pad.0, pad.0).unwrap(),
        out_width: output_size(hw.1, k.1, stride, 1, pad.1, pad.1).unwrap(),
        out_channels: cout,
        kernel_height: k.0,
        kernel_width: k.1,
        stride_height: stride,
        stride_width: stride,
        dilation_height: 1,
        dilation_width: 1,
        pad_top: pad.0,
        pad_left: pad.1,
        groups,
    }
}

fn fully_connected(c: &mut Criterion) {
    let mut group = c.benchmark_group("fully_connected_i8");
    // A digits MLP layer, the autoencoder's layers (its input layer, then layers after a
    // ReLU, whose input zero point is -128: the 128-wide middle, the bottleneck's way out and
    // the 640-wide output), a KWS head, and a pointwise convolution seen as a batch of pixels
    // (DS-CNN: 125 pixels, 64 -> 64), and MobileNetV1-0.25's widest, middle and deepest
    // pointwise layers (2,304 pixels, 8 -> 16; 36, 128 -> 128; 9, 256 -> 256).
    for (batch, in_features, out_features, input_zero_point) in [
        (1, 64, 32, -3),
        (1, 640, 128, -3),
        (1, 128, 128, -128),
        (1, 8, 128, -128),
        (1, 128, 640, -128),
        (1, 1024, 12, -3),
        (125, 64, 64, -3),
        (2304, 8, 16, -128),
        (36, 128, 128, -128),
        (9, 256, 256, -128),
    ] {
        let shape = FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        let input = pattern(batch * in_features, 1);
        let weights = pattern(in_features * out_features, 2);
        let bias: Vec<i32> = (0..out_features as i32).map(|o| o * 100 - 500).collect();
        let m = multipliers(out_features);
        let op = FullyConnectedI8 {
            shape,
            params: RequantizeParams {
                input_zero_point,
                ..params(&m)
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
        };
        let mut output = vec![0i8; batch * out_features];
        group.throughput(Throughput::Elements(shape.macs() as u64));
        let relu_input = if input_zero_point == -128 {
            "-relu"
        } else {
            ""
        };
        let id = format!("{batch}x{in_features}x{out_features}{relu_input}");
        group.bench_function(BenchmarkId::new("dispatch", &id), |b| {
            b.iter(|| {
                fully_connected::fully_connected_i8(black_box(&op), black_box(&mut output)).unwrap()
            })
        });
        // Every kernel this CPU runs, side by side (the dispatch picks among them).
        for (kernel, run) in fully_connected::i8_kernels() {
            group.bench_function(BenchmarkId::new(kernel, &id), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// 16x8 fully connected (int16 activations, int8 weights): each kernel this CPU runs, on the
/// same shapes as the int8 group.
fn fully_connected_16x8(c: &mut Criterion) {
    let mut group = c.benchmark_group("fully_connected_i16");
    for (batch, in_features, out_features) in [(1, 64, 32), (1, 640, 128), (1, 1024, 12)] {
        let shape = FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        let input = pattern_i16(batch * in_features);
        let weights = pattern(in_features * out_features, 2);
        let bias: Vec<i32> = (0..out_features as i32).map(|o| o * 1000 - 5000).collect();
        let m = wide_multipliers(out_features);
        let op = FullyConnectedI16 {
            shape,
            params: loam::ops::Requantize16Params {
                multipliers: &m,
                activation_min: i16::MIN,
                activation_max: i16::MAX,
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
        };
        let mut output = vec![0i16; batch * out_features];
        group.throughput(Throughput::Elements(shape.macs() as u64));
        let id = format!("{batch}x{in_features}x{out_features}");
        for (kernel, run) in fully_connected::i16_kernels() {
            group.bench_function(BenchmarkId::new(kernel, &id), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// 16x8 convolutions (int16 activations, int8 weights): each kernel this CPU runs, on a
/// ResNet-8 3x3 layer and DS-CNN's pointwise layer.
fn convolution_16x8(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_i16");
    let cases = [
        ("resnet-3x3", geometry((16, 16), 32, 32, (3, 3), 1, 1)),
        ("dscnn-1x1", geometry((25, 5), 64, 64, (1, 1), 1, 1)),
    ];
    for (name, g) in cases {
        let input = pattern_i16(g.input_len().unwrap());
        let filter = pattern(g.out_channels * g.patch_len(), 4);
        let m = wide_multipliers(g.out_channels);
        let op = Conv2dI16 {
            geometry: g,
            params: loam::ops::Requantize16Params {
                multipliers: &m,
                activation_min: i16::MIN,
                activation_max: i16::MAX,
            },
            input: &input,
            filter: &filter,
            bias: None,
        };
        let mut output = vec![0i16; g.output_len().unwrap()];
        group.throughput(Throughput::Elements(g.macs() as u64));
        for (kernel, run) in conv2d::i16_kernels() {
            group.bench_function(BenchmarkId::new(kernel, name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

fn convolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    // DS-CNN's first layer and a pointwise layer, ResNet-8's 3x3 layers, MobileNet-0.25's
    // first layer (three input channels), its first three pointwise layers (8 -> 16,
    // 16 -> 32, 32 -> 32) and a late one.
    let cases = [
        ("dscnn-10x4", geometry((49, 10), 1, 64, (10, 4), 2, 1)),
        ("dscnn-1x1", geometry((25, 5), 64, 64, (1, 1), 1, 1)),
        ("resnet-3x3", geometry((16, 16), 32, 32, (3, 3), 1, 1)),
        ("resnet-3x3-16", geometry((32, 32), 16, 16, (3, 3), 1, 1)),
        ("resnet-3x3-s2", geometry((32, 32), 16, 32, (3, 3), 2, 1)),
        ("mobilenet-3x3-c3", geometry((96, 96), 3, 8, (3, 3), 2, 1)),
        ("mobilenet-1x1-8", geometry((48, 48), 8, 16, (1, 1), 1, 1)),
        ("mobilenet-1x1-16", geometry((24, 24), 16, 32, (1, 1), 1, 1)),
        ("mobilenet-1x1-32", geometry((24, 24), 32, 32, (1, 1), 1, 1)),
        ("mobilenet-1x1", geometry((12, 12), 64, 128, (1, 1), 1, 1)),
    ];
    for (name, g) in cases {
        let input = pattern(g.input_len().unwrap(), 3);
        let filter = pattern(g.out_channels * g.patch_len(), 4);
        let m = multipliers(g.out_channels);
        let op = Conv2dI8 {
            geometry: g,
            params: params(&m),
            input: &input,
            filter: &filter,
            bias: None,
        };
        let mut output = vec![0i8; g.output_len().unwrap()];
        let mut scratch = vec![0i16; conv2d::scratch_len(&g)];
        group.throughput(Throughput::Elements(g.macs() as u64));
        group.bench_function(BenchmarkId::new("i8/dispatch", name), |b| {
            b.iter(|| {
                conv2d::conv2d_i8(black_box(&op), black_box(&mut output), &mut scratch).unwrap()
            })
        });
        // Every int8 kernel this CPU runs, side by side (the dispatch picks among them).
        for (kernel, run) in conv2d::i8_kernels() {
            group.bench_function(BenchmarkId::new(format!("i8/{kernel}"), name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output), &mut scratch))
            });
        }
        let input_f: Vec<f32> = input.iter().map(|&v| f32::from(v) / 64.0).collect();
        let filter_f: Vec<f32> = filter.iter().map(|&v| f32::from(v) / 128.0).collect();
        let op = Conv2dF32 {
            geometry: g,
            input: &input_f,
            filter: &filter_f,
            bias: None,
            activation: (f32::NEG_INFINITY, f32::INFINITY),
        };
        let mut output = vec![0f32; g.output_len().unwrap()];
        let mut scratch = vec![0f32; conv2d::scratch_len(&g)];
        group.bench_function(BenchmarkId::new("f32/dispatch", name), |b| {
            b.iter(|| {
                conv2d::conv2d_f32(black_box(&op), black_box(&mut output), &mut scratch).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("f32/reference", name), |b| {
            b.iter(|| {
                conv2d::reference::conv2d_f32(black_box(&op), black_box(&mut output), &mut scratch)
            })
        });
    }
    group.finish();
}

fn depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise_conv2d_i8");
    let cases = [
        ("dscnn-3x3x64", geometry((25, 5), 64, 64, (3, 3), 1, 64)),
        ("mobilenet-3x3x8", geometry((48, 48), 8, 8, (3, 3), 1, 8)),
        (
            "mobilenet-3x3x16-s2",
            geometry((48, 48), 16, 16, (3, 3), 2, 16),
        ),
        (
            "mobilenet-3x3x32-s2",
            geometry((48, 48), 32, 32, (3, 3), 2, 32),
        ),
    ];
    for (name, g) in cases {
        let input = pattern(g.input_len().unwrap(), 5);
        let filter = pattern(g.kernel_height * g.kernel_width * g.out_channels, 6);
        let m = multipliers(g.out_channels);
        let op = DepthwiseConv2dI8 {
            geometry: g,
            params: params(&m),
            input: &input,
            filter: &filter,
            bias: None,
        };
        let mut output = vec![0i8; g.output_len().unwrap()];
        group.throughput(Throughput::Elements(g.macs() as u64));
        group.bench_function(BenchmarkId::new("dispatch", name), |b| {
            b.iter(|| {
                depthwise_conv2d::depthwise_conv2d_i8(black_box(&op), black_box(&mut output))
                    .unwrap()
            })
        });
        for (kernel, run) in depthwise_conv2d::i8_kernels() {
            group.bench_function(BenchmarkId::new(kernel, name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// 16x8 depthwise convolutions: each kernel this CPU runs, on DS-CNN's and MobileNet's
/// depthwise shapes.
fn depthwise_16x8(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise_conv2d_i16");
    let cases = [
        ("dscnn-3x3x64", geometry((25, 5), 64, 64, (3, 3), 1, 64)),
        ("mobilenet-3x3x8", geometry((48, 48), 8, 8, (3, 3), 1, 8)),
        (
            "mobilenet-3x3x16-s2",
            geometry((48, 48), 16, 16, (3, 3), 2, 16),
        ),
        (
            "mobilenet-3x3x32-s2",
            geometry((48, 48), 32, 32, (3, 3), 2, 32),
        ),
    ];
    for (name, g) in cases {
        let input = pattern_i16(g.input_len().unwrap());
        let filter = pattern(g.kernel_height * g.kernel_width * g.out_channels, 6);
        let m = wide_multipliers(g.out_channels);
        let op = DepthwiseConv2dI16 {
            geometry: g,
            params: loam::ops::Requantize16Params {
                multipliers: &m,
                activation_min: i16::MIN,
                activation_max: i16::MAX,
            },
            input: &input,
            filter: &filter,
            bias: None,
        };
        let mut output = vec![0i16; g.output_len().unwrap()];
        group.throughput(Throughput::Elements(g.macs() as u64));
        for (kernel, run) in depthwise_conv2d::i16_kernels() {
            group.bench_function(BenchmarkId::new(kernel, name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// int8 Add and Sub: every kernel side by side, on ResNet-8's residual Add (two same-shape
/// tensors), a Sub of the same shape, and an Add with a per-channel operand repeated over
/// the pixels (rows of sixteen); "elements" are outputs.
fn binary_int8(c: &mut Criterion) {
    use loam::ops::binary::{
        self, BinaryI8, BinaryI8Params, BinaryOp, BinaryRequant, BinaryShape, Source,
    };
    let mut group = c.benchmark_group("binary_i8");
    let cases = [
        (
            "add-32x32x16",
            BinaryOp::Add,
            [1usize, 32, 32, 16],
            [1usize, 32, 32, 16],
        ),
        (
            "sub-32x32x16",
            BinaryOp::Sub,
            [1, 32, 32, 16],
            [1, 32, 32, 16],
        ),
        (
            "add-32x32x16-by-16",
            BinaryOp::Add,
            [1, 32, 32, 16],
            [1, 1, 1, 16],
        ),
    ];
    for (name, op, da, db) in cases {
        let shape = BinaryShape::broadcast(&da, &db).unwrap();
        let requant = BinaryRequant::new(op, 0.05, 0.07, 0.09).unwrap();
        let params = BinaryI8Params::from_requant(op, &requant, [3, -5, -2], (-128, 127)).unwrap();
        let a = pattern(da.iter().product(), 1);
        let b = pattern(db.iter().product(), 2);
        let op = BinaryI8 {
            shape,
            params,
            a: Source::Slice(&a),
            b: Source::Slice(&b),
        };
        let mut output = vec![0i8; a.len()];
        group.throughput(Throughput::Elements(a.len() as u64));
        for (kernel, run) in binary::i8_kernels() {
            group.bench_function(BenchmarkId::new(kernel, name), |bench| {
                bench.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// int8 softmax: every kernel side by side; criterion's "elements" here are output values.
fn softmax_int8(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_i8");
    // A classifier's logits (one short row, wide spread), keyword-spotting-sized rows, a
    // vocabulary-sized row, and attention-like rows.
    let cases = [
        ("1x10", 1, 10, false),
        ("49x12-log", 49, 12, true),
        ("1x1000", 1, 1000, false),
        ("64x64", 64, 64, false),
    ];
    for (name, rows, depth, log) in cases {
        let input = pattern(rows * depth, 7);
        let params = if log {
            SoftmaxQuant::log_softmax(1.0, 0.1).unwrap()
        } else {
            SoftmaxQuant::softmax(1.0, 0.1).unwrap()
        };
        let op = SoftmaxI8 {
            shape: SoftmaxShape { rows, depth },
            log,
            params,
            input: &input,
        };
        let mut output = vec![0i8; input.len()];
        group.throughput(Throughput::Elements((rows * depth) as u64));
        for (kernel, run) in softmax::i8_kernels() {
            group.bench_function(BenchmarkId::new(kernel, name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
    }
    group.finish();
}

/// f16 weights against f32 weights for the float layers: each kernel this CPU runs for
/// either weight type, same layer, same inputs (the f16 weights are the f32 ones rounded).
fn float_weights(c: &mut Criterion) {
    use half::f16;
    use loam::ops::depthwise_conv2d::DepthwiseConv2dF32;
    use loam::ops::fully_connected::FullyConnectedF32;

    let floats =
        |v: &[i8], scale: f32| -> Vec<f32> { v.iter().map(|&x| f32::from(x) / scale).collect() };
    let halves = |v: &[f32]| -> Vec<f16> { v.iter().map(|&x| f16::from_f32(x)).collect() };
    let mut group = c.benchmark_group("float_weights");
    for (batch, in_features, out_features) in [(1, 640, 128), (1, 1024, 12), (125, 64, 64)] {
        let shape = FullyConnectedShape {
            batch,
            in_features,
            out_features,
        };
        let input = floats(&pattern(batch * in_features, 1), 64.0);
        let weights = floats(&pattern(in_features * out_features, 2), 128.0);
        let weights16 = halves(&weights);
        let activation = (f32::NEG_INFINITY, f32::INFINITY);
        let op = FullyConnectedF32 {
            shape,
            input: &input,
            weights: &weights,
            bias: None,
            activation,
        };
        let op16 = FullyConnectedF32 {
            shape,
            input: &input,
            weights: &weights16[..],
            bias: None,
            activation,
        };
        let mut output = vec![0f32; batch * out_features];
        group.throughput(Throughput::Elements(shape.macs() as u64));
        let id = format!("fc-{batch}x{in_features}x{out_features}");
        for (kernel, run) in fully_connected::f32_kernels() {
            group.bench_function(BenchmarkId::new(format!("f32/{kernel}"), &id), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output)))
            });
        }
        for (kernel, run) in fully_connected::f16_kernels() {
            group.bench_function(BenchmarkId::new(format!("f16/{kernel}"), &id), |b| {
                b.iter(|| run(black_box(&op16), black_box(&mut output)))
            });
        }
        // Inputs rounded to f16 as well (opt-in; FEAT_FHM's `fmlal` on aarch64).
        for (kernel, run) in fully_connected::half_input_kernels() {
            group.bench_function(BenchmarkId::new(format!("f16-inputs/{kernel}"), &id), |b| {
                b.iter(|| run(black_box(&op16), black_box(&mut output)))
            });
        }
    }
    for (name, g) in [
        ("conv-dscnn-10x4", geometry((49, 10), 1, 64, (10, 4), 2, 1)),
        ("conv-resnet-3x3", geometry((16, 16), 32, 32, (3, 3), 1, 1)),
    ] {
        let input = floats(&pattern(g.input_len().unwrap(), 3), 64.0);
        let filter = floats(&pattern(g.out_channels * g.patch_len(), 4), 128.0);
        let filter16 = halves(&filter);
        let activation = (f32::NEG_INFINITY, f32::INFINITY);
        let op = Conv2dF32 {
            geometry: g,
            input: &input,
            filter: &filter,
            bias: None,
            activation,
        };
        let op16 = Conv2dF32 {
            geometry: g,
            input: &input,
            filter: &filter16[..],
            bias: None,
            activation,
        };
        let mut output = vec![0f32; g.output_len().unwrap()];
        let mut scratch = vec![0f32; conv2d::scratch_len(&g)];
        group.throughput(Throughput::Elements(g.macs() as u64));
        for (kernel, run) in conv2d::f32_kernels() {
            group.bench_function(BenchmarkId::new(format!("f32/{kernel}"), name), |b| {
                b.iter(|| run(black_box(&op), black_box(&mut output), &mut scratch))
            });
        }
        for (kernel, run) in conv2d::f16_kernels() {
            group.bench_function(BenchmarkId::new(format!("f16/{kernel}"), name), |b| {
                b.iter(|| run(black_box(&op16), black_box(&mut output), &mut scratch))
            });
        }
    }
    let g = geometry((25, 5), 64, 64, (3, 3), 1, 64);
    let input = floats(&pattern(g.input_len().unwrap(), 5), 64.0);
    let filter = floats(
        &pattern(g.kernel_height * g.kernel_width * g.out_channels, 6),
        128.0,
    );
    let filter16 = halves(&filter);
    let activation = (f32::NEG_INFINITY, f32::INFINITY);
    let op = DepthwiseConv2dF32 {
        geometry: g,
        input: &input,
        filter: &filter,
        bias: None,
        activation,
    };
    let op16 = DepthwiseConv2dF32 {
        geometry: g,
        input: &input,
        filter: &filter16[..],
        bias: None,
        activation,
    };
    let mut output = vec![0f32; g.output_len().unwrap()];
    group.throughput(Throughput::Elements(g.macs() as u64));
    for (kernel, run) in depthwise_conv2d::f32_kernels() {
        group.bench_function(
            BenchmarkId::new(format!("f32/{kernel}"), "dw-dscnn-3x3x64"),
            |b| b.iter(|| run(black_box(&op), black_box(&mut output))),
        );
    }
    for (kernel, run) in depthwise_conv2d::f16_kernels() {
        group.bench_function(
            BenchmarkId::new(format!("f16/{kernel}"), "dw-dscnn-3x3x64"),
            |b| b.iter(|| run(black_box(&op16), black_box(&mut output))),
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    float_weights,
    fully_connected,
    fully_connected_16x8,
    convolution_16x8,
    convolution,
    depthwise,
    depthwise_16x8,
    binary_int8,
    softmax_int8
);
criterion_main!(benches);
