//! int8 fully-connected throughput. criterion's "elements" are multiply-accumulates, so its
//! throughput line reads directly as MAC/s.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loam::fixed_point::QuantizedMultiplier;
use loam::ops::fully_connected::{
    FullyConnectedI8, FullyConnectedI8Params, FullyConnectedShape, fully_connected_i8, reference,
};

fn pattern(len: usize, seed: usize) -> Vec<i8> {
    (0..len)
        .map(|i| ((i * 37 + seed * 11) % 255) as i8)
        .collect()
}

fn fully_connected(c: &mut Criterion) {
    let mut group = c.benchmark_group("fully_connected_i8");
    // (in, out): a digits MLP layer, the autoencoder's 640-wide layers, a KWS classifier head.
    for (in_features, out_features) in [(64, 32), (640, 128), (128, 640), (1024, 12)] {
        let shape = FullyConnectedShape {
            batch: 1,
            in_features,
            out_features,
        };
        let input = pattern(in_features, 1);
        let weights = pattern(in_features * out_features, 2);
        let bias: Vec<i32> = (0..out_features as i32).map(|o| o * 100 - 500).collect();
        let multipliers: Vec<_> = (0..out_features)
            .map(|o| QuantizedMultiplier::from_real(0.001 + o as f64 * 1e-5).unwrap())
            .collect();
        let op = FullyConnectedI8 {
            shape,
            params: FullyConnectedI8Params {
                input_zero_point: -3,
                output_zero_point: 5,
                multipliers: &multipliers,
                activation_min: -128,
                activation_max: 127,
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
        };
        let mut output = vec![0i8; out_features];
        group.throughput(Throughput::Elements(shape.macs() as u64));
        let id = format!("{in_features}x{out_features}");
        group.bench_function(BenchmarkId::new("dispatch", &id), |b| {
            b.iter(|| fully_connected_i8(black_box(&op), black_box(&mut output)).unwrap())
        });
        group.bench_function(BenchmarkId::new("reference", &id), |b| {
            b.iter(|| reference::fully_connected_i8(black_box(&op), black_box(&mut output)))
        });
    }
    group.finish();
}

criterion_group!(benches, fully_connected);
criterion_main!(benches);
