//! Reference architectures in the shapes of the MLPerf Tiny benchmarks and a digits MLP, with
//! seeded untrained weights: for sizing a board (arena, flash) and for benchmarks before a
//! trained model exists. Each is written as f32 or, calibrated on random inputs, as int8.

use anyhow::{Result, bail};
use loam::format::writer::Built;
use loam::ops::FusedActivation;

use crate::graph::{Graph, GraphBuilder};

/// The architectures, by the names `loam template` accepts.
pub const NAMES: [&str; 5] = [
    "digits-mlp",
    "ds-cnn",
    "resnet-8",
    "autoencoder",
    "mobilenet-v1-0.25",
];

const RELU: FusedActivation = FusedActivation::RELU;
const NONE: FusedActivation = FusedActivation::NONE;
const SEED: u64 = 0x6c6f_616d;

/// The architecture called `name`.
pub fn graph(name: &str) -> Result<Graph> {
    Ok(match name {
        "digits-mlp" => digits_mlp(),
        "ds-cnn" => ds_cnn(),
        "resnet-8" => resnet8(),
        "autoencoder" => autoencoder(),
        "mobilenet-v1-0.25" => mobilenet_v1_025(),
        other => bail!(
            "unknown architecture `{other}`; known: {}",
            NAMES.join(", ")
        ),
    })
}

/// Writes `name` as f32 or int8 (calibrated on 8 random inputs).
pub fn build(name: &str, int8: bool) -> Result<Built> {
    build_graph(&graph(name)?, int8)
}

/// Writes `g` as f32 or int8, calibrated as [`build`] calibrates.
pub fn build_graph(g: &Graph, int8: bool) -> Result<Built> {
    if int8 {
        let ranges = g.calibrate(8, SEED)?;
        g.build_i8(&ranges)
    } else {
        g.build_f32(false)
    }
}

/// 8x8 digits: 64 -> 64 -> 32 -> 10.
pub fn digits_mlp() -> Graph {
    let mut g = GraphBuilder::new("digits-mlp", &[1, 64], SEED);
    let x = g.dense(g.input(), 64, RELU);
    let x = g.dense(x, 32, RELU);
    let x = g.dense(x, 10, NONE);
    g.softmax(x);
    g.finish()
}

/// MLPerf Tiny keyword spotting (DS-CNN small): 49x10 MFCC, a 10x4 stride-2 convolution,
/// four depthwise-separable blocks of 64 channels, average pooling, 12 classes.
pub fn ds_cnn() -> Graph {
    let mut g = GraphBuilder::new("ds-cnn", &[1, 49, 10, 1], SEED);
    let mut x = g.conv(g.input(), 64, (10, 4), 2, RELU);
    for _ in 0..4 {
        x = g.depthwise(x, 1, RELU);
        x = g.conv(x, 64, (1, 1), 1, RELU);
    }
    let d = g.dims(x).to_vec();
    x = g.avg_pool(x, (d[1], d[2]));
    x = g.flatten(x);
    x = g.dense(x, 12, NONE);
    g.softmax(x);
    g.finish()
}

/// MLPerf Tiny image classification (ResNet-8 on 32x32x3): three residual stacks of 16, 32
/// and 64 channels, average pooling, 10 classes.
pub fn resnet8() -> Graph {
    let mut g = GraphBuilder::new("resnet-8", &[1, 32, 32, 3], SEED);
    let mut x = g.conv(g.input(), 16, (3, 3), 1, RELU);
    // Stack 1: identity shortcut.
    let y = g.conv(x, 16, (3, 3), 1, RELU);
    let y = g.conv(y, 16, (3, 3), 1, NONE);
    x = g.add(x, y, RELU);
    // Stacks 2 and 3: strided, with a 1x1 projection shortcut.
    for channels in [32, 64] {
        let y = g.conv(x, channels, (3, 3), 2, RELU);
        let y = g.conv(y, channels, (3, 3), 1, NONE);
        let shortcut = g.conv(x, channels, (1, 1), 2, NONE);
        x = g.add(shortcut, y, RELU);
    }
    let d = g.dims(x).to_vec();
    x = g.avg_pool(x, (d[1], d[2]));
    x = g.flatten(x);
    x = g.dense(x, 10, NONE);
    g.softmax(x);
    g.finish()
}

/// MLPerf Tiny anomaly detection (fully-connected autoencoder on 640 log-mel values):
/// 640 -> 128 x4 -> 8 -> 128 x4 -> 640.
pub fn autoencoder() -> Graph {
    let mut g = GraphBuilder::new("autoencoder", &[1, 640], SEED);
    let mut x = g.input();
    for _ in 0..4 {
        x = g.dense(x, 128, RELU);
    }
    x = g.dense(x, 8, RELU);
    for _ in 0..4 {
        x = g.dense(x, 128, RELU);
    }
    g.dense(x, 640, NONE);
    g.finish()
}

/// MobileNetV1 at width 0.25: `(output channels, stride)` of its thirteen
/// depthwise-separable blocks.
pub const MOBILENET_V1_025_BLOCKS: [(usize, usize); 13] = [
    (16, 1),
    (32, 2),
    (32, 1),
    (64, 2),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (128, 1),
    (128, 1),
    (128, 1),
    (256, 2),
    (256, 1),
];

/// MLPerf Tiny visual wake words (MobileNetV1, width 0.25, 96x96x3): a stride-2 convolution,
/// thirteen depthwise-separable blocks, average pooling, 2 classes.
pub fn mobilenet_v1_025() -> Graph {
    let mut g = GraphBuilder::new("mobilenet-v1-0.25", &[1, 96, 96, 3], SEED);
    let mut x = g.conv(g.input(), 8, (3, 3), 2, FusedActivation::RELU6);
    for (channels, stride) in MOBILENET_V1_025_BLOCKS {
        x = g.depthwise(x, stride, FusedActivation::RELU6);
        x = g.conv(x, channels, (1, 1), 1, FusedActivation::RELU6);
    }
    let d = g.dims(x).to_vec();
    x = g.avg_pool(x, (d[1], d[2]));
    x = g.flatten(x);
    x = g.dense(x, 2, NONE);
    g.softmax(x);
    g.finish()
}
