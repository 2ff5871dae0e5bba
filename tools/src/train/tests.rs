//! Gradient checks of every backward pass against central finite differences, and the
//! engine's end-to-end properties (learning, determinism, early stopping).

use std::sync::atomic::AtomicBool;

use loam::ops::FusedActivation;
use loam::ops::conv2d::ConvSpec;
use rand::{Rng, SeedableRng};

use super::*;
use crate::graph::{Graph, GraphBuilder, Layer};

/// `loss = sum(output * probe)` for a fixed random probe: every output's gradient is its
/// probe value, so the check covers every path through the layer.
fn probe_loss(net: &Network, x: &[f32], batch: usize, probe: &[f32]) -> f64 {
    let trace = net.forward(x, batch, None).unwrap();
    let out = &trace.outputs[net.output_layer()];
    out.iter()
        .zip(probe)
        .map(|(&o, &p)| f64::from(o) * f64::from(p))
        .sum()
}

/// Compares analytic gradients of every parameter and of the input with central
/// differences (computed in f32 with a step large enough for f32's precision).
fn check_gradients(graph: Graph, batch: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = Network::new(graph.clone()).unwrap().input_len() * batch;
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    check_gradients_at(graph, batch, seed, x);
}

fn check_gradients_at(graph: Graph, batch: usize, seed: u64, x: Vec<f32>) {
    let net = Network::new(graph).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
    let out_len = batch * net.len(net.output_layer());
    let probe: Vec<f32> = (0..out_len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let trace = net.forward(&x, batch, None).unwrap();
    let mut grads = net.zero_gradients();
    let dx = net
        .backward(&trace, net.output_layer(), probe.clone(), &mut grads)
        .unwrap();
    let eps = 1e-2f32;
    let close = |analytic: f32, numeric: f64, what: &str| {
        let tol = 2e-3 + 2e-2 * numeric.abs();
        assert!(
            (f64::from(analytic) - numeric).abs() <= tol,
            "{what}: analytic {analytic} vs numeric {numeric}"
        );
    };
    for (s, slot) in net.slots().iter().enumerate() {
        for (j, &analytic) in grads[s].iter().enumerate() {
            let mut plus = net.clone();
            plus.params_mut()[s][j] += eps;
            let mut minus = net.clone();
            minus.params_mut()[s][j] -= eps;
            let numeric = (probe_loss(&plus, &x, batch, &probe)
                - probe_loss(&minus, &x, batch, &probe))
                / f64::from(2.0 * eps);
            close(analytic, numeric, &format!("{slot:?}[{j}]"));
        }
    }
    for j in 0..x.len() {
        let mut xp = x.clone();
        xp[j] += eps;
        let mut xm = x.clone();
        xm[j] -= eps;
        let numeric = (probe_loss(&net, &xp, batch, &probe) - probe_loss(&net, &xm, batch, &probe))
            / f64::from(2.0 * eps);
        close(dx[j], numeric, &format!("input[{j}]"));
    }
}

const NONE: FusedActivation = FusedActivation::NONE;

#[test]
fn dense_gradients() {
    let mut g = GraphBuilder::new("dense", &[1, 5], 1);
    let x = g.dense(g.input(), 4, NONE);
    g.dense(x, 3, NONE);
    check_gradients(g.finish(), 3, 1);
}

#[test]
fn dense_on_images_gradients() {
    // A dense layer over the last dimension of an image: one row per pixel.
    let mut g = GraphBuilder::new("dense-pixels", &[1, 2, 3, 4], 2);
    g.dense(g.input(), 2, NONE);
    check_gradients(g.finish(), 2, 2);
}

#[test]
fn relu_gradients() {
    // Inputs in [-1, 1) keep most pre-activations away from the kink at the eps used.
    let mut g = GraphBuilder::new("relu", &[1, 6], 3);
    let x = g.dense(g.input(), 5, FusedActivation::RELU);
    g.dense(x, 2, NONE);
    check_gradients(g.finish(), 2, 3);
}

fn conv_graph(spec: ConvSpec, input: [usize; 3], seed: u64) -> Graph {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let patch = spec.kernel.0 * spec.kernel.1 * input[2] / spec.groups;
    let weights = (0..spec.out_channels * patch)
        .map(|_| rng.random_range(-0.5..0.5))
        .collect();
    let bias = (0..spec.out_channels)
        .map(|_| rng.random_range(-0.5..0.5))
        .collect();
    Graph {
        name: "conv".into(),
        description: String::new(),
        labels: Vec::new(),
        constants: Vec::new(),
        layers: vec![
            Layer::Input {
                dims: vec![1, input[0], input[1], input[2]],
            },
            Layer::Conv {
                from: 0,
                spec,
                weights,
                bias,
                activation: NONE,
            },
        ],
    }
}

#[test]
fn conv_gradients() {
    let mut spec = ConvSpec::new(3, 3).stride(2).same(5, 4);
    spec.kernel = (3, 2);
    check_gradients(conv_graph(spec, [5, 4, 2], 4), 2, 4);
}

#[test]
fn conv_gradients_with_dilation_groups_and_asymmetric_padding() {
    let spec = ConvSpec {
        out_channels: 4,
        kernel: (2, 3),
        stride: (1, 2),
        dilation: (2, 1),
        padding: [1, 0, 0, 2],
        groups: 2,
    };
    check_gradients(conv_graph(spec, [5, 5, 4], 5), 2, 5);
}

#[test]
fn depthwise_gradients() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    // Multiplier 2: 3 channels in, 6 out.
    let spec = ConvSpec::new(6, 3).stride(2).same(5, 5);
    let weights = (0..9 * 6).map(|_| rng.random_range(-0.5..0.5)).collect();
    let bias = (0..6).map(|_| rng.random_range(-0.5..0.5)).collect();
    let graph = Graph {
        name: "depthwise".into(),
        description: String::new(),
        labels: Vec::new(),
        constants: Vec::new(),
        layers: vec![
            Layer::Input {
                dims: vec![1, 5, 5, 3],
            },
            Layer::Depthwise {
                from: 0,
                spec,
                weights,
                bias,
                activation: NONE,
            },
        ],
    };
    check_gradients(graph, 2, 6);
}

#[test]
fn max_pooling_gradients() {
    // Inputs a whole step apart, so no perturbation changes which element is largest.
    let mut g = GraphBuilder::new("max", &[1, 4, 6, 2], 7);
    let x = g.max_pool(g.input(), (2, 3));
    let f = g.flatten(x);
    g.dense(f, 2, NONE);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut x: Vec<f32> = (0..2 * 48).map(|i| i as f32 * 0.1 - 4.8).collect();
    rand::seq::SliceRandom::shuffle(x.as_mut_slice(), &mut rng);
    check_gradients_at(g.finish(), 2, 7, x);
}

#[test]
fn average_pooling_gradients() {
    let mut g = GraphBuilder::new("pools", &[1, 6, 6, 2], 7);
    let x = g.conv(g.input(), 3, (3, 3), 1, NONE);
    let a = g.avg_pool(x, (2, 2));
    let b = g.avg_pool(a, (3, 3));
    let c = g.global_avg_pool(b);
    let f = g.flatten(c);
    g.dense(f, 2, NONE);
    check_gradients(g.finish(), 2, 7);
}

#[test]
fn residual_add_and_softmax_gradients() {
    let mut g = GraphBuilder::new("residual", &[1, 4, 4, 2], 8);
    let a = g.conv(g.input(), 2, (3, 3), 1, NONE);
    let b = g.conv(a, 2, (1, 1), 1, NONE);
    let s = g.add(a, b, NONE);
    let f = g.flatten(s);
    let d = g.dense(f, 3, NONE);
    g.softmax(d);
    check_gradients(g.finish(), 2, 8);
}

/// Three Gaussian blobs in 2-D: separable, so a small MLP must reach high accuracy.
fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres = [(-2.0, 0.0), (2.0, 0.0), (0.0, 2.5)];
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 3;
        x.push(centres[c].0 + rng.random_range(-1.0..1.0));
        x.push(centres[c].1 + rng.random_range(-1.0..1.0));
        y.push(c as u32);
    }
    (x, y)
}

fn mlp(dropout: f32) -> Network {
    let mut g = GraphBuilder::new("blobs", &[1, 2], 9);
    let x = g.dense(g.input(), 16, FusedActivation::RELU);
    let mut graph = {
        let x = g.dense(x, 3, NONE);
        g.softmax(x);
        g.finish()
    };
    if dropout > 0.0 {
        // Insert dropout between the hidden and the output layer.
        graph.layers.insert(
            2,
            Layer::Dropout {
                from: 1,
                rate: dropout,
            },
        );
        if let Layer::Dense { from, .. } = &mut graph.layers[3] {
            *from = 2;
        }
        if let Layer::Softmax { from } = &mut graph.layers[4] {
            *from = 3;
        }
    }
    Network::new(graph).unwrap()
}

fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 16,
        learning_rate: 0.02,
        optimizer: Optimizer::default(),
        schedule: Schedule::Cosine { min_lr: 0.0 },
        warmup_epochs: 1,
        regularization: Regularization { l1: 0.0, l2: 1e-4 },
        clip_norm: Some(5.0),
        loss: LossFunction::new(Loss::CrossEntropy),
        early_stopping: None,
        augmentation: Augmentation {
            noise: 0.05,
            ..Augmentation::default()
        },
        seed: 42,
    }
}

fn train_blobs(dropout: f32, epochs: usize) -> Fitted {
    let (x, y) = blobs(300, 1);
    let (vx, vy) = blobs(90, 2);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let val = Samples {
        inputs: &vx,
        targets: Targets::Classes(&vy),
    };
    fit(
        mlp(dropout),
        &train,
        Some(&val),
        &options(epochs),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn training_learns_separable_classes() {
    let fitted = train_blobs(0.2, 15);
    let last = fitted.history.last().unwrap();
    assert!(last.val_metric.unwrap() > 0.95, "{:?}", fitted.history);
    assert!(fitted.history[0].train_loss > last.train_loss);
    // Predictions are probabilities after the softmax.
    let p = predict(&fitted.network, &[2.0, 0.0]).unwrap();
    assert!(
        (p.iter().sum::<f32>() - 1.0).abs() < 1e-5 && p[1] > 0.8,
        "{p:?}"
    );
}

#[test]
fn the_same_seed_gives_identical_weights_on_any_thread_count() {
    let weights = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let fitted = pool.install(|| train_blobs(0.3, 3));
        fitted
            .network
            .slots()
            .iter()
            .flat_map(|&s| {
                fitted
                    .network
                    .param(s)
                    .iter()
                    .map(|w| w.to_bits())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<u32>>()
    };
    let one = weights(1);
    assert_eq!(one, weights(3));
    assert_eq!(one, weights(1));
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    let (x, y) = blobs(60, 3);
    // Validation labels that disagree with training: validation loss rises as training
    // succeeds, so the best epoch is early and the run stops after `patience` more.
    let wrong: Vec<u32> = y.iter().map(|&c| (c + 1) % 3).collect();
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let val = Samples {
        inputs: &x,
        targets: Targets::Classes(&wrong),
    };
    let mut o = options(50);
    o.early_stopping = Some(EarlyStopping {
        patience: 3,
        monitor: Monitor::ValidationLoss,
    });
    let fitted = fit(
        mlp(0.0),
        &train,
        Some(&val),
        &o,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(fitted.stopped_early);
    assert_eq!(fitted.history.len(), fitted.best_epoch + 3);
    let best = fitted.history[fitted.best_epoch - 1].val_loss.unwrap();
    let (loss, _) = evaluate(&fitted.network, &val, &o.loss).unwrap();
    assert!((loss - best).abs() < 1e-9, "restored {loss}, best {best}");
}

#[test]
fn a_raised_stop_flag_ends_training_at_once() {
    let (x, y) = blobs(30, 4);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let fitted = fit(
        mlp(0.0),
        &train,
        None,
        &options(5),
        &AtomicBool::new(true),
        &mut |_| {},
    )
    .unwrap();
    assert!(fitted.interrupted && fitted.history.is_empty());
}

#[test]
fn mismatched_data_is_refused_with_its_name() {
    let train = Samples {
        inputs: &[0.0; 5],
        targets: Targets::Classes(&[0, 1]),
    };
    let e = fit(
        mlp(0.0),
        &train,
        None,
        &options(1),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("training set: 5 input values"),
        "{e}"
    );
}

#[test]
fn augmentation_shifts_and_flips_images() {
    let aug = Augmentation {
        shift_rows: 0,
        shift_cols: 0,
        flip_horizontal: true,
        noise: 0.0,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let original = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut seen_flip = false;
    for _ in 0..20 {
        let mut s = original;
        aug.apply(&[2, 3, 1], &mut s, &mut rng);
        if s != original {
            assert_eq!(s, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
            seen_flip = true;
        }
    }
    assert!(seen_flip);
    let shift = Augmentation {
        shift_rows: 1,
        ..Augmentation::default()
    };
    let mut s = original;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..10 {
        s = original;
        shift.apply(&[2, 3, 1], &mut s, &mut rng);
        if s != original {
            break;
        }
    }
    assert!(
        s == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0] || s == [4.0, 5.0, 6.0, 0.0, 0.0, 0.0],
        "{s:?}"
    );
}
