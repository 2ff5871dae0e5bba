//! The GPU trainer's tests. Without a GPU: NVRTC compiles every kernel the Rust side launches
//! (the nvrtc wheel is enough; `LOAM_REQUIRE_NVRTC=1` makes its absence a failure), and a
//! machine without the driver or a library gets the message that names it.
//!
//! The rest check the trainer against the CPU engine: every layer kind's forward and backward
//! pass, every optimizer step and loss, one epoch of training, repeatability, and the
//! out-of-memory and divergence messages. Each runs twice: `emulated_*` on the host's emulation
//! of a GPU (`super::emulator`: the same kernels compiled by `cc`, reference matrix products),
//! which any machine runs, and `gpu_*` on a real NVIDIA GPU (ignored; `cargo xtask test-gpu`
//! runs them), which checks cuBLAS, the driver and the kernels as NVRTC compiled them.

use std::sync::atomic::AtomicBool;

use loam::ops::FusedActivation;
use loam::ops::conv2d::ConvSpec;
use rand::{Rng, SeedableRng};

use super::emulator::Emulator;
use super::error::CudaUnavailable;
use super::gpu::{Gpu, KERNEL_NAMES, KERNELS_CU};
use super::libs;
use super::net::{GpuNet, Mode, Sizing};
use super::{OptimState, compile_kernels, fit_on_gpu};
use crate::graph::{Graph, GraphBuilder, Layer};
use crate::train::{
    Augmentation, Device, Fitted, Loss, LossFunction, Math, Network, Optimizer, OptimizerState,
    Regularization, Samples, Schedule, Selection, Targets, TrainOptions, fit_on,
    optim::clip_by_norm,
};

/// The machine's GPU (the `gpu_` tests need one).
fn real() -> &'static Gpu {
    match Gpu::get() {
        Ok(gpu) => gpu,
        Err(e) => panic!("{e}"),
    }
}

/// The host's emulation of a GPU, built once per test process.
fn emulated() -> &'static Gpu {
    static EMULATED: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    EMULATED.get_or_init(|| Gpu::emulated(Emulator::build().expect("the emulated GPU")))
}

/// `check` as two tests: `$gpu` on the machine's GPU (ignored without one) and `$emulated` on
/// the emulation.
macro_rules! on_both {
    ($check:ident, $gpu:ident, $emulated:ident) => {
        #[test]
        #[ignore = "needs an NVIDIA GPU: cargo xtask test-gpu"]
        fn $gpu() {
            $check(real());
        }

        #[test]
        fn $emulated() {
            $check(emulated());
        }
    };
}

const NONE: FusedActivation = FusedActivation::NONE;

/// The `extern "C" __global__` kernels kernels.cu defines.
fn kernels_in_source() -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = KERNELS_CU;
    while let Some(at) = rest.find("__global__ void ") {
        rest = &rest[at + "__global__ void ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        names.push(name);
    }
    names
}

#[test]
fn every_kernel_in_the_source_is_launched_and_every_launched_kernel_exists() {
    let mut defined = kernels_in_source();
    defined.sort();
    let mut launched: Vec<String> = KERNEL_NAMES.iter().map(|s| s.to_string()).collect();
    launched.sort();
    assert_eq!(defined, launched);
}

#[test]
fn nvrtc_compiles_every_kernel() {
    let required = std::env::var("LOAM_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    let ptx = match compile_kernels() {
        Ok(ptx) => ptx,
        Err(e @ CudaUnavailable::MissingLibrary { .. }) if !required => {
            eprintln!("NVRTC not found, kernels not compiled ({e}); LOAM_REQUIRE_NVRTC=1 fails");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for name in KERNEL_NAMES {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "no `.entry {name}` in the PTX"
        );
    }
    // Compiled for the oldest architecture CUDA 13 runs, so any supported GPU can load it.
    assert!(ptx.contains(".target sm_75"), "PTX target");
}

#[test]
fn a_missing_driver_or_library_is_named_with_the_way_back_to_the_cpu() {
    if !libs::driver_present() {
        let e = Gpu::get().err().expect("no driver, no GPU");
        assert_eq!(e, CudaUnavailable::NoDriver);
        let text = e.to_string();
        assert!(text.starts_with("no NVIDIA driver: libcuda.so.1"), "{text}");
        assert!(text.contains("--device cpu"), "{text}");
    } else {
        // With a driver the GPU opens, or the reason is one of the named ones (never a panic).
        match Gpu::get() {
            Ok(gpu) => assert!(!gpu.description.is_empty()),
            Err(e) => assert!(e.to_string().contains("--device cpu"), "{e}"),
        }
    }
    // SAFETY: the probe dlopens and closes cuBLAS's candidate names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        let e = libs::ensure(libs::CUBLAS).unwrap_err().to_string();
        assert!(e.starts_with("libcublas.so.13 not found"), "{e}");
        assert!(
            e.contains("pip install \"nvidia-cublas>=13,<14\"") && e.contains("LOAM_CUDA_LIB_DIR"),
            "{e}"
        );
    }
}

#[test]
fn training_on_a_machine_without_a_gpu_fails_with_the_reason() {
    if Gpu::get().is_ok() {
        return;
    }
    let (x, y) = blobs(30, 1);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let e = fit_on(
        Selection {
            device: Device::Cuda,
            math: Math::F32,
        },
        mlp(),
        &train,
        None,
        &options(1, Optimizer::default()),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--device cpu"), "{e}");
}

#[test]
fn messages_give_the_figures() {
    let e = CudaUnavailable::OutOfMemory {
        need_mib: 2048,
        free_mib: 1000,
    }
    .to_string();
    assert!(
        e.starts_with(
            "not enough GPU memory: the model and data need 2048 MiB, the GPU has 1000 MiB free"
        ),
        "{e}"
    );
    let e = CudaUnavailable::NvrtcTooNew {
        nvrtc: "13.5".into(),
        driver: "13.0".into(),
    }
    .to_string();
    assert!(e.contains("nvidia-cuda-nvrtc==13.0.*"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Helpers for the GPU tests.

fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `|gpu - cpu| <= tol * max(1, max |cpu|)` element by element: summation order is the only
/// difference, and its error scales with the tensor's magnitude.
fn assert_close(gpu: &[f32], cpu: &[f32], tol: f32, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (j, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= tol * scale,
            "{what}[{j}]: GPU {g} vs CPU {c} (tolerance {tol} x {scale})"
        );
    }
}

/// Every layer's output, then every gradient (parameters and input) of `loss = sum(output *
/// probe)`, on the GPU and on the CPU, within 1e-4 of the tensor's largest value.
fn compare_layers(gpu: &Gpu, graph: Graph, batch: usize, seed: u64) {
    let cpu = Network::new(graph).unwrap();
    let out = cpu.output_layer();
    let x = uniform(batch * cpu.input_len(), seed);
    let probe = uniform(batch * cpu.len(out), seed ^ 1);
    let trace = cpu.forward(&x, batch, None).unwrap();
    let mut grads = cpu.zero_gradients();
    let dx = cpu
        .backward(&trace, out, probe.clone(), &mut grads)
        .unwrap();

    let sizing = Sizing {
        batch,
        start: out,
        input_grad: true,
    };
    let mut net = GpuNet::new(gpu, cpu.clone(), sizing).unwrap();
    gpu.write(&x, net.input_mut()).unwrap();
    net.forward(gpu, batch, out, Mode::Eval).unwrap();
    for (i, expected) in trace.outputs.iter().enumerate() {
        let got = read_span(gpu, &net, i, batch, false);
        assert_close(
            &got,
            expected,
            1e-4,
            &format!("{}: layer {i} output", cpu.graph.name),
        );
    }
    gpu.write(&probe, net.gradient_mut(out).unwrap()).unwrap();
    net.backward(gpu, batch, out, Mode::Eval).unwrap();
    let got = net.read_gradients(gpu).unwrap();
    for (s, (g, c)) in got.iter().zip(&grads).enumerate() {
        let slot = cpu.slots()[s];
        assert_close(g, c, 1e-4, &format!("{}: {slot:?}", cpu.graph.name));
    }
    let got = read_span(gpu, &net, 0, batch, true);
    assert_close(
        &got,
        &dx,
        1e-4,
        &format!("{}: input gradient", cpu.graph.name),
    );
}

/// Layer `i`'s output (or gradient) for `batch` samples, read back.
fn read_span(gpu: &Gpu, net: &GpuNet, i: usize, batch: usize, gradient: bool) -> Vec<f32> {
    let len = batch * net.len(i);
    let scratch = gpu.zeros::<f32>(len).unwrap();
    let span = if gradient {
        net.gradient(i, batch)
    } else {
        net.output(i, batch)
    };
    gpu.add_into(scratch.span(), span, len, false).unwrap();
    gpu.read(&scratch, len).unwrap()
}

fn conv_graph(spec: ConvSpec, input: [usize; 3], activation: FusedActivation) -> Graph {
    let mut g = GraphBuilder::new("conv", &[1, input[0], input[1], input[2]], 4);
    g.conv_spec(g.input(), spec, activation);
    g.finish()
}

on_both!(
    dense_layers_match_the_cpu,
    gpu_dense_layers_match_the_cpu,
    emulated_dense_layers_match_the_cpu
);

fn dense_layers_match_the_cpu(gpu: &Gpu) {
    let mut g = GraphBuilder::new("dense", &[1, 5], 1);
    let x = g.dense(g.input(), 7, FusedActivation::RELU);
    g.dense(x, 3, FusedActivation::RELU6);
    compare_layers(gpu, g.finish(), 9, 1);
    // Over the last dimension of an image: one row per pixel.
    let mut g = GraphBuilder::new("dense-pixels", &[1, 2, 3, 4], 2);
    g.dense(g.input(), 5, NONE);
    compare_layers(gpu, g.finish(), 3, 2);
    // A layer read by two dense layers: its gradient is the sum of theirs.
    let mut g = GraphBuilder::new("dense-fork", &[1, 6], 3);
    let x = g.dense(g.input(), 8, FusedActivation::RELU);
    let a = g.dense(x, 4, NONE);
    let b = g.dense(x, 4, NONE);
    g.add(a, b, NONE);
    compare_layers(gpu, g.finish(), 5, 3);
}

on_both!(
    convolutions_match_the_cpu,
    gpu_convolutions_match_the_cpu,
    emulated_convolutions_match_the_cpu
);

fn convolutions_match_the_cpu(gpu: &Gpu) {
    let mut spec = ConvSpec::new(3, 3).stride(2).same(5, 4);
    spec.kernel = (3, 2);
    compare_layers(
        gpu,
        conv_graph(spec, [5, 4, 2], FusedActivation::RELU),
        3,
        3,
    );
    let spec = ConvSpec {
        out_channels: 4,
        kernel: (2, 3),
        stride: (1, 2),
        dilation: (2, 1),
        padding: [1, 0, 0, 2],
        groups: 2,
    };
    compare_layers(gpu, conv_graph(spec, [5, 5, 4], NONE), 2, 4);
    // 1x1, stride 1, no padding: the direct path without im2col.
    compare_layers(gpu, conv_graph(ConvSpec::new(6, 1), [4, 3, 5], NONE), 4, 5);
    // Larger, to cover many blocks: 16 images of 12x12x8, 3x3 "same".
    let spec = ConvSpec::new(16, 3).same(12, 12);
    compare_layers(
        gpu,
        conv_graph(spec, [12, 12, 8], FusedActivation::RELU6),
        16,
        6,
    );
}

on_both!(
    depthwise_convolutions_match_the_cpu,
    gpu_depthwise_convolutions_match_the_cpu,
    emulated_depthwise_convolutions_match_the_cpu
);

fn depthwise_convolutions_match_the_cpu(gpu: &Gpu) {
    for (multiplier, stride, activation, seed) in
        [(1, 1, NONE, 7), (2, 2, FusedActivation::RELU6, 8)]
    {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let channels = 3;
        let out = channels * multiplier;
        let spec = ConvSpec::new(out, 3).stride(stride).same(7, 6);
        let graph = Graph {
            name: "depthwise".into(),
            description: String::new(),
            labels: Vec::new(),
            constants: Vec::new(),
            layers: vec![
                Layer::Input {
                    dims: vec![1, 7, 6, channels],
                },
                Layer::Depthwise {
                    from: 0,
                    spec,
                    weights: (0..9 * out).map(|_| rng.random_range(-0.5..0.5)).collect(),
                    bias: (0..out).map(|_| rng.random_range(-0.5..0.5)).collect(),
                    activation,
                },
            ],
        };
        compare_layers(gpu, graph, 5, seed);
    }
}

on_both!(
    pooling_matches_the_cpu,
    gpu_pooling_matches_the_cpu,
    emulated_pooling_matches_the_cpu
);

fn pooling_matches_the_cpu(gpu: &Gpu) {
    let mut g = GraphBuilder::new("pools", &[1, 8, 8, 3], 9);
    let x = g.conv(g.input(), 4, (3, 3), 1, NONE);
    let a = g.avg_pool(x, (2, 2));
    let m = g.max_pool(a, (2, 2));
    let c = g.global_avg_pool(m);
    let f = g.flatten(c);
    g.dense(f, 2, NONE);
    compare_layers(gpu, g.finish(), 4, 9);
    // One layer read by a max pool, an average pool, a global average and a flatten: each
    // backward pass adds to the gradient the others wrote.
    let mut g = GraphBuilder::new("pool-fork", &[1, 4, 4, 3], 12);
    let x = g.conv(g.input(), 2, (3, 3), 1, NONE);
    let m = g.max_pool(x, (2, 2));
    let a = g.avg_pool(x, (2, 2));
    let s = g.add(m, a, NONE);
    let fs = g.flatten(s);
    let hs = g.dense(fs, 3, NONE);
    let c = g.global_avg_pool(x);
    let fc = g.flatten(c);
    let hc = g.dense(fc, 3, NONE);
    let fx = g.flatten(x);
    let hx = g.dense(fx, 3, NONE);
    let t = g.add(hs, hc, NONE);
    g.add(t, hx, NONE);
    compare_layers(gpu, g.finish(), 3, 12);
    // Overlapping windows: 3x3 every 2, max and average.
    for max in [true, false] {
        let mut g = GraphBuilder::new("overlap", &[1, 7, 9, 2], 10).finish();
        g.layers.push(if max {
            Layer::MaxPool {
                from: 0,
                kernel: (3, 3),
                stride: (2, 2),
            }
        } else {
            Layer::AvgPool {
                from: 0,
                kernel: (3, 3),
                stride: (2, 2),
            }
        });
        compare_layers(gpu, g, 3, 10);
    }
}

on_both!(
    residual_add_reshape_softmax_and_dropout_match_the_cpu,
    gpu_residual_add_reshape_softmax_and_dropout_match_the_cpu,
    emulated_residual_add_reshape_softmax_and_dropout_match_the_cpu
);

fn residual_add_reshape_softmax_and_dropout_match_the_cpu(gpu: &Gpu) {
    // Residual branches: `a` gets gradients from an add and from a 3x3 convolution (col2im
    // adding to them), `s` from an add and a 1x1 convolution (the direct product adding), `d`
    // from an add and a depthwise convolution.
    let mut g = GraphBuilder::new("residual", &[1, 4, 4, 2], 11);
    let a = g.conv(g.input(), 2, (3, 3), 1, NONE);
    let b = g.conv(a, 2, (3, 3), 1, NONE);
    let s = g.add(a, b, FusedActivation::RELU);
    let c = g.conv(s, 2, (1, 1), 1, NONE);
    let d = g.add(s, c, NONE);
    let e = g.depthwise(d, 1, FusedActivation::RELU);
    let t = g.add(d, e, NONE);
    // The same layer added to itself: its gradient arrives twice.
    let t = g.add(t, t, NONE);
    let f = g.flatten(t);
    // Evaluation mode: dropout passes values and gradients through.
    let d = g.dropout(f, 0.5);
    let h = g.dense(d, 3, NONE);
    g.softmax(h);
    compare_layers(gpu, g.finish(), 3, 11);
}

on_both!(
    dropout_drops_at_its_rate_and_its_backward_uses_the_same_mask,
    gpu_dropout_drops_at_its_rate_and_its_backward_uses_the_same_mask,
    emulated_dropout_drops_at_its_rate_and_its_backward_uses_the_same_mask
);

fn dropout_drops_at_its_rate_and_its_backward_uses_the_same_mask(gpu: &Gpu) {
    let (batch, width, rate) = (64, 256, 0.3f32);
    let mut g = GraphBuilder::new("dropout", &[1, width], 12);
    let x = g.input();
    g.dropout(x, rate);
    let net_cpu = Network::new(g.finish()).unwrap();
    let sizing = Sizing {
        batch,
        start: 1,
        input_grad: true,
    };
    let mut net = GpuNet::new(gpu, net_cpu, sizing).unwrap();
    // No zeros, so a zero output means a dropped element.
    let x: Vec<f32> = (0..batch * width).map(|i| 1.0 + (i % 7) as f32).collect();
    gpu.write(&x, net.input_mut()).unwrap();
    let mode = Mode::Train { seed: 5, step: 3 };
    net.forward(gpu, batch, 1, mode).unwrap();
    let y = read_span(gpu, &net, 1, batch, false);
    let keep = 1.0 / (1.0 - rate);
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f32 / y.len() as f32;
    assert!((dropped - rate).abs() < 0.02, "dropped {dropped}");
    for (v, x) in y.iter().zip(&x) {
        assert!(*v == 0.0 || *v == x * keep, "{v} from {x}");
    }
    let ones = vec![1.0f32; batch * width];
    gpu.write(&ones, net.gradient_mut(1).unwrap()).unwrap();
    net.backward(gpu, batch, 1, mode).unwrap();
    let dx = read_span(gpu, &net, 0, batch, true);
    for (d, v) in dx.iter().zip(&y) {
        let mask = if *v == 0.0 { 0.0 } else { keep };
        assert_eq!(*d, mask, "the backward mask is the forward's");
    }
}

/// Three Gaussian blobs in 2-D.
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

fn mlp() -> Network {
    let mut g = GraphBuilder::new("blobs", &[1, 2], 9);
    let x = g.dense(g.input(), 16, FusedActivation::RELU);
    let x = g.dense(x, 3, NONE);
    g.softmax(x);
    Network::new(g.finish()).unwrap()
}

fn options(epochs: usize, optimizer: Optimizer) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 16,
        learning_rate: 0.02,
        optimizer,
        schedule: Schedule::Cosine { min_lr: 0.0 },
        warmup_epochs: 1,
        regularization: Regularization { l1: 1e-5, l2: 1e-4 },
        clip_norm: Some(5.0),
        loss: LossFunction::new(Loss::CrossEntropy),
        early_stopping: None,
        augmentation: Augmentation::default(),
        seed: 42,
    }
}

/// One run of `fit` on `gpu`.
fn train_gpu(
    gpu: &Gpu,
    network: Network,
    train: &Samples<'_>,
    val: Option<&Samples<'_>>,
    o: &TrainOptions,
) -> Result<Fitted, anyhow::Error> {
    fit_on_gpu(
        gpu,
        network,
        train,
        val,
        o,
        Math::F32,
        &AtomicBool::new(false),
        &mut |_| {},
    )
}

fn flat_weights(net: &Network) -> Vec<f32> {
    net.slots()
        .iter()
        .flat_map(|&s| net.param(s).to_vec())
        .collect()
}

on_both!(
    each_optimizer_step_matches_the_cpu_exactly,
    gpu_each_optimizer_step_matches_the_cpu_exactly,
    emulated_each_optimizer_step_matches_the_cpu_exactly
);

fn each_optimizer_step_matches_the_cpu_exactly(gpu: &Gpu) {
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.05,
    };
    let sgd = |momentum, nesterov| Optimizer::Sgd { momentum, nesterov };
    for optimizer in [
        sgd(0.0, false),
        sgd(0.9, false),
        sgd(0.9, true),
        Optimizer::default(),
        adamw,
    ] {
        let mut o = options(1, optimizer);
        o.regularization = Regularization { l1: 1e-3, l2: 1e-2 };
        o.clip_norm = None;
        let cpu_net = mlp();
        let sizing = Sizing {
            batch: 1,
            start: cpu_net.output_layer(),
            input_grad: false,
        };
        let mut net = GpuNet::new(gpu, cpu_net.clone(), sizing).unwrap();
        let mut state = OptimState::new(gpu, &net, optimizer).unwrap();
        let mut cpu = cpu_net.clone();
        let sizes: Vec<usize> = cpu.slots().iter().map(|&s| cpu.param(s).len()).collect();
        let decays: Vec<bool> = cpu.slots().iter().map(|s| !s.bias).collect();
        let mut cpu_state = OptimizerState::new(optimizer, &sizes);
        for step in 0..3 {
            let flat = uniform(net.params.len(), 100 + step);
            gpu.write(&flat, &mut net.grads).unwrap();
            let grads = net.split(&flat);
            cpu_state.step(
                &mut cpu.params_mut(),
                &grads,
                &decays,
                o.regularization,
                0.01,
            );
            state.step(gpu, &net, &o, 0.01).unwrap();
        }
        let got = gpu.read(&net.params, net.params.len()).unwrap();
        let expected = flat_weights(&cpu);
        let bits = |v: &[f32]| v.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&expected), "{optimizer:?}");
    }
}

on_both!(
    gradient_clipping_matches_the_cpu,
    gpu_gradient_clipping_matches_the_cpu,
    emulated_gradient_clipping_matches_the_cpu
);

fn gradient_clipping_matches_the_cpu(gpu: &Gpu) {
    let optimizer = Optimizer::Sgd {
        momentum: 0.0,
        nesterov: false,
    };
    let mut o = options(1, optimizer);
    o.regularization = Regularization::default();
    o.clip_norm = Some(0.5);
    let cpu_net = mlp();
    let sizing = Sizing {
        batch: 1,
        start: cpu_net.output_layer(),
        input_grad: false,
    };
    let mut net = GpuNet::new(gpu, cpu_net.clone(), sizing).unwrap();
    let mut state = OptimState::new(gpu, &net, optimizer).unwrap();
    let flat = uniform(net.params.len(), 7);
    gpu.write(&flat, &mut net.grads).unwrap();
    let mut grads = net.split(&flat);
    clip_by_norm(&mut grads, 0.5);
    let mut cpu = cpu_net.clone();
    let sizes: Vec<usize> = cpu.slots().iter().map(|&s| cpu.param(s).len()).collect();
    let decays: Vec<bool> = cpu.slots().iter().map(|s| !s.bias).collect();
    OptimizerState::new(optimizer, &sizes).step(
        &mut cpu.params_mut(),
        &grads,
        &decays,
        o.regularization,
        1.0,
    );
    state.step(gpu, &net, &o, 1.0).unwrap();
    let got = gpu.read(&net.params, net.params.len()).unwrap();
    // The norm is summed in a different order: 1e-6 of the largest weight.
    assert_close(&got, &flat_weights(&cpu), 1e-6, "clipped step");
}

/// One epoch of `network` on the CPU and on the GPU: weights within `tol` of the largest, the
/// final validation metric within `metric_tol`.
#[allow(clippy::too_many_arguments)]
fn compare_epoch(
    gpu: &Gpu,
    network: Network,
    train: &Samples<'_>,
    val: &Samples<'_>,
    o: &TrainOptions,
    tol: f32,
    metric_tol: f64,
    what: &str,
) {
    let cpu = fit_on(
        Selection::CPU,
        network.clone(),
        train,
        Some(val),
        o,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let gpu = train_gpu(gpu, network, train, Some(val), o).unwrap();
    assert_close(
        &flat_weights(&gpu.network),
        &flat_weights(&cpu.network),
        tol,
        what,
    );
    let (c, g) = (cpu.history[0], gpu.history[0]);
    assert!(
        (c.train_loss - g.train_loss).abs() <= 1e-4 * c.train_loss.abs().max(1.0),
        "{what}: training loss {} vs {}",
        g.train_loss,
        c.train_loss
    );
    let (cv, gv) = (c.val_metric.unwrap(), g.val_metric.unwrap());
    assert!(
        (cv - gv).abs() <= metric_tol,
        "{what}: validation metric {gv} vs {cv}"
    );
}

on_both!(
    one_epoch_matches_the_cpu_on_a_classification_problem,
    gpu_one_epoch_matches_the_cpu_on_a_classification_problem,
    emulated_one_epoch_matches_the_cpu_on_a_classification_problem
);

fn one_epoch_matches_the_cpu_on_a_classification_problem(gpu: &Gpu) {
    // SGD with momentum: Adam divides by each gradient's own size, so it magnifies the
    // summation-order differences of near-zero gradients into whole steps.
    let optimizer = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    let (x, y) = blobs(600, 1);
    let (vx, vy) = blobs(300, 2);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let val = Samples {
        inputs: &vx,
        targets: Targets::Classes(&vy),
    };
    let mut o = options(1, optimizer);
    o.warmup_epochs = 0;
    // Weights within 1e-4 of the largest; accuracy within half a point.
    compare_epoch(gpu, mlp(), &train, &val, &o, 1e-4, 0.005, "mlp");

    // A small CNN on 8x8 images of two classes (bright top or bright bottom), with class
    // weights in the loss.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let images = |n: usize, rng: &mut rand::rngs::StdRng| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let class = (i % 2) as u32;
            for r in 0..8 {
                for _ in 0..8 {
                    let bright = (r < 4) == (class == 0);
                    x.push(if bright { 1.0 } else { 0.0 } + rng.random_range(-0.3..0.3));
                }
            }
            y.push(class);
        }
        (x, y)
    };
    let (x, y) = images(256, &mut rng);
    let (vx, vy) = images(128, &mut rng);
    let mut g = GraphBuilder::new("cnn", &[1, 8, 8, 1], 13);
    let c = g.conv(g.input(), 4, (3, 3), 1, FusedActivation::RELU);
    let p = g.max_pool(c, (2, 2));
    let d = g.depthwise(p, 1, FusedActivation::RELU6);
    let a = g.avg_pool(d, (2, 2));
    let f = g.flatten(a);
    let h = g.dense(f, 2, NONE);
    g.softmax(h);
    let cnn = Network::new(g.finish()).unwrap();
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let val = Samples {
        inputs: &vx,
        targets: Targets::Classes(&vy),
    };
    o.loss.class_weights = Some(vec![1.0, 1.5]);
    compare_epoch(gpu, cnn, &train, &val, &o, 1e-4, 0.005, "cnn");
}

on_both!(
    every_loss_trains_as_on_the_cpu,
    gpu_every_loss_trains_as_on_the_cpu,
    emulated_every_loss_trains_as_on_the_cpu
);

fn every_loss_trains_as_on_the_cpu(gpu: &Gpu) {
    // Regression onto two targets from four inputs.
    let x = uniform(4 * 128, 20);
    let targets: Vec<f32> = x
        .chunks_exact(4)
        .flat_map(|s| [s[0] + 0.5 * s[1], (s[2] * s[3] > 0.0) as u8 as f32])
        .collect();
    let train = Samples {
        inputs: &x,
        targets: Targets::Values {
            values: &targets,
            width: 2,
        },
    };
    let mut g = GraphBuilder::new("regression", &[1, 4], 21);
    let h = g.dense(g.input(), 8, FusedActivation::RELU);
    g.dense(h, 2, NONE);
    let network = Network::new(g.finish()).unwrap();
    for loss in [
        Loss::MeanSquaredError,
        Loss::MeanAbsoluteError,
        Loss::Huber,
        Loss::BinaryCrossEntropy,
        Loss::CrossEntropy,
    ] {
        let mut o = options(
            1,
            Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
        );
        o.loss = LossFunction::new(loss);
        o.loss.huber_delta = 0.3;
        o.warmup_epochs = 0;
        compare_epoch(
            gpu,
            network.clone(),
            &train,
            &train,
            &o,
            1e-4,
            1e-4,
            &format!("{loss:?}"),
        );
    }
}

on_both!(
    training_repeats_bit_for_bit_with_dropout_and_augmentation,
    gpu_training_repeats_bit_for_bit_with_dropout_and_augmentation,
    emulated_training_repeats_bit_for_bit_with_dropout_and_augmentation
);

fn training_repeats_bit_for_bit_with_dropout_and_augmentation(gpu: &Gpu) {
    let (x, y) = blobs(200, 4);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let mut g = GraphBuilder::new("blobs", &[1, 2], 9);
    let h = g.dense(g.input(), 16, FusedActivation::RELU);
    let d = g.dropout(h, 0.3);
    let o = g.dense(d, 3, NONE);
    g.softmax(o);
    let network = Network::new(g.finish()).unwrap();
    let mut o = options(3, Optimizer::default());
    o.augmentation.noise = 0.1;
    let a = train_gpu(gpu, network.clone(), &train, None, &o).unwrap();
    let b = train_gpu(gpu, network, &train, None, &o).unwrap();
    let bits = |n: &Network| {
        flat_weights(n)
            .iter()
            .map(|w| w.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a.network), bits(&b.network));
    assert!(a.history[2].train_loss < a.history[0].train_loss);
}

on_both!(
    image_augmentation_shifts_and_flips_on_the_device,
    gpu_image_augmentation_shifts_and_flips_on_the_device,
    emulated_image_augmentation_shifts_and_flips_on_the_device
);

fn image_augmentation_shifts_and_flips_on_the_device(gpu: &Gpu) {
    // A 2x3 image through an identity network: with flips only, every augmented copy is the
    // image or its mirror.
    let image = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let data = gpu.upload(&image).unwrap();
    let order = gpu.upload(&[0u32; 64]).unwrap();
    let out = gpu.zeros::<f32>(64 * 6).unwrap();
    let mut a = super::gpu::GatherArgs {
        image: [2, 3, 1],
        flip: true,
        seed: 1,
        ..Default::default()
    };
    gpu.gather_batch(data.span(), 1, order.span(), 0, 64, 6, &a, out.span())
        .unwrap();
    let got = gpu.read(&out, 64 * 6).unwrap();
    let mirror = [3.0, 2.0, 1.0, 6.0, 5.0, 4.0];
    let flips = got.chunks_exact(6).filter(|s| *s == mirror).count();
    assert!(got.chunks_exact(6).all(|s| s == image || s == mirror));
    assert!((16..=48).contains(&flips), "{flips} of 64 flipped");
    a.flip = false;
    a.shift_rows = 1;
    gpu.gather_batch(data.span(), 1, order.span(), 0, 64, 6, &a, out.span())
        .unwrap();
    let got = gpu.read(&out, 64 * 6).unwrap();
    for s in got.chunks_exact(6) {
        assert!(
            s == image
                || s == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
                || s == [4.0, 5.0, 6.0, 0.0, 0.0, 0.0],
            "{s:?}"
        );
    }
}

on_both!(
    a_model_too_big_for_the_gpu_is_refused_with_the_figures,
    gpu_a_model_too_big_for_the_gpu_is_refused_with_the_figures,
    emulated_a_model_too_big_for_the_gpu_is_refused_with_the_figures
);

fn a_model_too_big_for_the_gpu_is_refused_with_the_figures(gpu: &Gpu) {
    // A 1x1 input padded to 4097x4097 with 64 channels: 4 GiB of activations per sample, 64
    // samples a batch, far beyond any GPU.
    let spec = ConvSpec {
        out_channels: 64,
        kernel: (1, 1),
        stride: (1, 1),
        dilation: (1, 1),
        padding: [2048; 4],
        groups: 1,
    };
    let network = Network::new(conv_graph(spec, [1, 1, 1], NONE)).unwrap();
    // Class targets, so the host holds nothing of the model's size.
    let x = vec![0.5f32; 64];
    let y = vec![0u32; 64];
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let mut o = options(1, Optimizer::default());
    o.batch_size = 64;
    let e = train_gpu(gpu, network, &train, None, &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("not enough GPU memory: the model and data need"),
        "{e}"
    );
    assert!(e.contains("MiB free") && e.contains("--device cpu"), "{e}");
}

on_both!(
    divergence_stops_training_with_the_cpu_message,
    gpu_divergence_stops_training_with_the_cpu_message,
    emulated_divergence_stops_training_with_the_cpu_message
);

fn divergence_stops_training_with_the_cpu_message(gpu: &Gpu) {
    let (x, y) = blobs(60, 5);
    let train = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let mut o = options(
        2,
        Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
    );
    o.learning_rate = 1e30;
    o.clip_norm = None;
    o.warmup_epochs = 0;
    let e = train_gpu(gpu, mlp(), &train, None, &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("training diverged at epoch"), "{e}");
}
