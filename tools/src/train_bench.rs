//! `loam bench-train`: training throughput (samples per second) of the host trainer on the
//! issue's reference networks (the digits MLP, a LeNet-style CNN, DS-CNN; also the ResNet-8 and
//! MobileNetV1-0.25 templates) at a fixed batch size, on the CPU or an NVIDIA GPU, and with
//! `--vs-pytorch` the same networks rebuilt in PyTorch, trained in the same run on the same
//! device (and thread count): on the CPU, chains of layers by
//! `benches/pytorch/train_throughput.py`; on a GPU, or with residual adds, by
//! `train_bench_torch.py` (embedded here), which rebuilds any graph and trains on `cuda`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::graph::{Graph, Layer};
use crate::project::templates::{self, Activation, Head, LayerSpec};
use crate::train::{self, Device, LossFunction, Math, Network, Samples, Targets, TrainOptions};

/// The networks measured by default.
pub const NETWORKS: [&str; 3] = ["digits-mlp", "lenet", "ds-cnn"];

/// Every network [`network`] knows: the defaults and the MLPerf Tiny templates a GPU is for.
pub const ALL_NETWORKS: [&str; 5] = [
    "digits-mlp",
    "lenet",
    "ds-cnn",
    "resnet-8",
    "mobilenet-v1-alpha",
];

/// The PyTorch side for any graph and device (run with `python -c`).
const TORCH_GRAPH_SCRIPT: &str = include_str!("train_bench_torch.py");

/// A network by name, with its sample shape and class count.
pub fn network(name: &str) -> Result<(Graph, Vec<usize>, usize)> {
    Ok(match name {
        "digits-mlp" => (
            templates::template("mlp", &[64], Head::Classes(10), 1)?,
            vec![64],
            10,
        ),
        "lenet" => {
            let conv = |filters| LayerSpec::Conv {
                filters,
                kernel: templates::Window::Square(5),
                stride: 1,
                activation: Activation::Relu,
            };
            let dense = |units| LayerSpec::Dense {
                units,
                activation: Activation::Relu,
            };
            let layers = [
                conv(6),
                LayerSpec::MaxPool {
                    size: templates::Window::Square(2),
                },
                conv(16),
                LayerSpec::MaxPool {
                    size: templates::Window::Square(2),
                },
                LayerSpec::Flatten,
                dense(120),
                dense(84),
            ];
            let sample = vec![28, 28, 1];
            let g = templates::from_layers("lenet", &sample, &layers, Head::Classes(10), 1)?;
            (g, sample, 10)
        }
        "ds-cnn" => {
            let sample = vec![49, 10, 1];
            (
                templates::template("ds-cnn", &sample, Head::Classes(12), 1)?,
                sample,
                12,
            )
        }
        // MLPerf Tiny's image classification (CIFAR-10 shapes) and visual wake words.
        "resnet-8" => {
            let sample = vec![32, 32, 3];
            (
                templates::template("resnet-8", &sample, Head::Classes(10), 1)?,
                sample,
                10,
            )
        }
        "mobilenet-v1-alpha" => {
            let sample = vec![96, 96, 3];
            (
                templates::template("mobilenet-v1-alpha", &sample, Head::Classes(2), 1)?,
                sample,
                2,
            )
        }
        other => bail!(
            "unknown network `{other}`; known: {}",
            ALL_NETWORKS.join(", ")
        ),
    })
}

/// The chain of layers as the PyTorch script rebuilds it.
pub fn torch_spec(graph: &Graph) -> Result<Value> {
    let dims = graph.sample_dims()?;
    let mut layers = Vec::new();
    for (i, layer) in graph.layers.iter().enumerate().skip(1) {
        let from = match layer {
            Layer::Conv { from, .. }
            | Layer::Depthwise { from, .. }
            | Layer::Dense { from, .. }
            | Layer::MaxPool { from, .. }
            | Layer::AvgPool { from, .. }
            | Layer::GlobalAvgPool { from }
            | Layer::Reshape { from, .. }
            | Layer::Softmax { from }
            | Layer::Dropout { from, .. } => *from,
            Layer::Add { .. } | Layer::Input { .. } => {
                bail!("layer {i}: only chains of layers are rebuilt in PyTorch")
            }
        };
        if from != i - 1 {
            bail!("layer {i}: only chains of layers are rebuilt in PyTorch");
        }
        let activation = |a: &loam::ops::FusedActivation| match (a.min, a.max) {
            (0.0, f32::INFINITY) => "relu",
            (0.0, 6.0) => "relu6",
            _ => "none",
        };
        let input = &dims[from];
        layers.push(match layer {
            Layer::Conv {
                spec, activation: a, ..
            }
            | Layer::Depthwise {
                spec, activation: a, ..
            } => {
                let depthwise = matches!(layer, Layer::Depthwise { .. });
                let channels = input.last().copied().unwrap_or(1);
                json!({
                    "kind": if depthwise { "depthwise" } else { "conv" },
                    "in_channels": channels,
                    "out_channels": spec.out_channels,
                    "kernel": [spec.kernel.0, spec.kernel.1],
                    "stride": [spec.stride.0, spec.stride.1],
                    "dilation": [spec.dilation.0, spec.dilation.1],
                    "padding": spec.padding,
                    "groups": if depthwise { channels } else { spec.groups },
                    "activation": activation(a),
                })
            }
            Layer::Dense {
                bias, activation: a, ..
            } => json!({
                "kind": "dense",
                "in_features": input.last().copied().unwrap_or(1),
                "out_features": bias.len(),
                "activation": activation(a),
            }),
            Layer::MaxPool { kernel, stride, .. } => {
                json!({"kind": "max_pool", "kernel": [kernel.0, kernel.1], "stride": [stride.0, stride.1]})
            }
            Layer::AvgPool { kernel, stride, .. } => {
                json!({"kind": "avg_pool", "kernel": [kernel.0, kernel.1], "stride": [stride.0, stride.1]})
            }
            Layer::GlobalAvgPool { .. } => json!({"kind": "global_avg_pool"}),
            Layer::Reshape { .. } => json!({"kind": "flatten"}),
            Layer::Softmax { .. } => json!({"kind": "softmax"}),
            Layer::Dropout { rate, .. } => json!({"kind": "dropout", "rate": rate}),
            Layer::Add { .. } | Layer::Input { .. } => unreachable!("refused above"),
        });
    }
    Ok(json!({ "input": dims[0], "layers": layers }))
}

/// The graph as `train_bench_torch.py` rebuilds it: every layer with the earlier layers it
/// reads (`inputs`, 0 is the input), so residual adds come across too.
pub fn torch_graph_spec(graph: &Graph) -> Result<Value> {
    let dims = graph.sample_dims()?;
    let mut layers = Vec::new();
    for (i, layer) in graph.layers.iter().enumerate().skip(1) {
        let activation = |a: &loam::ops::FusedActivation| match (a.min, a.max) {
            (0.0, f32::INFINITY) => "relu",
            (0.0, 6.0) => "relu6",
            _ => "none",
        };
        let v = match layer {
            Layer::Conv {
                from,
                spec,
                activation: a,
                ..
            }
            | Layer::Depthwise {
                from,
                spec,
                activation: a,
                ..
            } => {
                let depthwise = matches!(layer, Layer::Depthwise { .. });
                let channels = dims[*from].last().copied().unwrap_or(1);
                json!({
                    "kind": if depthwise { "depthwise" } else { "conv" },
                    "inputs": [from],
                    "in_channels": channels,
                    "out_channels": spec.out_channels,
                    "kernel": [spec.kernel.0, spec.kernel.1],
                    "stride": [spec.stride.0, spec.stride.1],
                    "dilation": [spec.dilation.0, spec.dilation.1],
                    "padding": spec.padding,
                    "groups": if depthwise { channels } else { spec.groups },
                    "activation": activation(a),
                })
            }
            Layer::Dense {
                from,
                bias,
                activation: a,
                ..
            } => {
                if dims[*from].len() != 1 {
                    bail!("layer {i}: PyTorch's Linear reads NCHW, so only flat inputs carry over");
                }
                json!({
                    "kind": "dense",
                    "inputs": [from],
                    "in_features": dims[*from][0],
                    "out_features": bias.len(),
                    "activation": activation(a),
                })
            }
            Layer::MaxPool {
                from,
                kernel,
                stride,
            }
            | Layer::AvgPool {
                from,
                kernel,
                stride,
            } => json!({
                "kind": if matches!(layer, Layer::MaxPool { .. }) { "max_pool" } else { "avg_pool" },
                "inputs": [from],
                "kernel": [kernel.0, kernel.1],
                "stride": [stride.0, stride.1],
            }),
            Layer::GlobalAvgPool { from } => json!({"kind": "global_avg_pool", "inputs": [from]}),
            Layer::Reshape { from, .. } => json!({"kind": "flatten", "inputs": [from]}),
            Layer::Softmax { from } => json!({"kind": "softmax", "inputs": [from]}),
            Layer::Dropout { from, rate } => {
                json!({"kind": "dropout", "inputs": [from], "rate": rate})
            }
            Layer::Add {
                a,
                b,
                activation: act,
            } => json!({
                "kind": "add",
                "inputs": [a, b],
                "activation": activation(act),
            }),
            Layer::Input { .. } => bail!("layer {i}: a second input"),
        };
        layers.push(v);
    }
    Ok(json!({ "input": dims[0], "layers": layers }))
}

/// One network's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    /// Network name.
    pub network: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// loam's samples per second.
    pub loam: f64,
    /// PyTorch's samples per second, when measured.
    pub pytorch: Option<f64>,
    /// PyTorch's version.
    pub pytorch_version: Option<String>,
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// Samples per update.
    pub batch: usize,
    /// Samples per timed epoch.
    pub samples: usize,
    /// Worker threads for both.
    pub threads: usize,
    /// The Python interpreter with `torch`, to compare with PyTorch.
    pub python: Option<String>,
    /// `benches/pytorch/train_throughput.py`.
    pub script: std::path::PathBuf,
    /// Where both train.
    pub device: Device,
    /// The networks measured ([`NETWORKS`] when empty).
    pub networks: Vec<String>,
}

/// loam's samples per second training `graph` for one epoch of random data (after one
/// untimed epoch, which on a GPU also opens it and compiles the kernels), on `threads` threads
/// or the GPU.
pub fn loam_throughput(graph: &Graph, classes: usize, options: &TrainBenchOptions) -> Result<f64> {
    let network = Network::new(graph.clone())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..options.samples * network.input_len())
        .map(|_| rng.random::<f32>())
        .collect();
    let y: Vec<u32> = (0..options.samples)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    let samples = Samples {
        inputs: &x,
        targets: Targets::Classes(&y),
    };
    let train_options = TrainOptions {
        epochs: 1,
        batch_size: options.batch,
        learning_rate: 1e-3,
        optimizer: train::Optimizer::default(),
        schedule: train::Schedule::Constant,
        warmup_epochs: 0,
        regularization: train::Regularization::default(),
        clip_norm: None,
        loss: LossFunction::new(train::Loss::CrossEntropy),
        early_stopping: None,
        augmentation: train::Augmentation::default(),
        seed: 0,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .context("starting the training threads")?;
    let stop = AtomicBool::new(false);
    let device = train::Selection {
        device: options.device,
        math: Math::F32,
    };
    pool.install(|| -> Result<f64> {
        let once = |network: Network| {
            train::fit_on(
                device,
                network,
                &samples,
                None,
                &train_options,
                &stop,
                &mut |_| {},
            )
        };
        once(network.clone())?;
        // On a GPU, `fit` returns only after reading the weights back, so the time covers all
        // of the epoch's work.
        let start = Instant::now();
        once(network)?;
        Ok(options.samples as f64 / start.elapsed().as_secs_f64())
    })
}

/// PyTorch's samples per second for the same network, and its version.
pub fn pytorch_throughput(
    graph: &Graph,
    classes: usize,
    python: &str,
    options: &TrainBenchOptions,
) -> Result<(f64, String)> {
    // The chain script on the CPU keeps the figures comparable with earlier runs; a GPU, or
    // a graph that is not a chain, needs the graph script.
    let chain = (options.device == Device::Cpu)
        .then(|| torch_spec(graph).ok())
        .flatten();
    let mut command = Command::new(python);
    let (spec, script) = match chain {
        Some(spec) => {
            command.arg(&options.script);
            (spec, options.script.display().to_string())
        }
        None => {
            command
                .args(["-c", TORCH_GRAPH_SCRIPT])
                .args(["--device", &options.device.to_string()]);
            (
                torch_graph_spec(graph)?,
                "loam's PyTorch graph script".into(),
            )
        }
    };
    let mut child = command
        .args(["--batch", &options.batch.to_string()])
        .args(["--threads", &options.threads.to_string()])
        .args(["--samples", &options.samples.to_string()])
        .args(["--classes", &classes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {python} ({script})"))?;
    child
        .stdin
        .take()
        .context("the script's stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{script} failed (is torch installed for {python}{}?): {}",
            if options.device == Device::Cuda {
                ", with CUDA"
            } else {
                ""
            },
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading {script}'s output"))?;
    let rate = v["samples_per_s"]
        .as_f64()
        .context("no samples_per_s in the output")?;
    Ok((rate, v["torch"].as_str().unwrap_or("?").to_string()))
}

/// Measures every network of `options`.
pub fn run(options: &TrainBenchOptions) -> Result<Vec<ThroughputRow>> {
    let names: Vec<&str> = if options.networks.is_empty() {
        NETWORKS.to_vec()
    } else {
        options.networks.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .map(|name| {
            let (graph, _, classes) = network(name)?;
            let network = Network::new(graph.clone())?;
            let parameters = network
                .slots()
                .iter()
                .map(|&s| network.param(s).len())
                .sum();
            let loam = loam_throughput(&graph, classes, options)?;
            let (pytorch, pytorch_version) = match &options.python {
                Some(python) => {
                    let (rate, version) = pytorch_throughput(&graph, classes, python, options)?;
                    (Some(rate), Some(version))
                }
                None => (None, None),
            };
            Ok(ThroughputRow {
                network: name.to_string(),
                parameters,
                loam,
                pytorch,
                pytorch_version,
            })
        })
        .collect()
}

/// The table the CLI prints.
pub fn table(rows: &[ThroughputRow], options: &TrainBenchOptions) -> String {
    let on = match options.device {
        Device::Cpu => format!("{} thread(s)", options.threads),
        Device::Cuda => "GPU (cuda)".to_string(),
    };
    let mut s = format!(
        "training throughput, batch {}, {on}, {} samples per timed epoch\n{:<18} {:>10} {:>14} {:>14} {:>8}\n",
        options.batch,
        options.samples,
        "network",
        "params",
        "loam (smp/s)",
        "torch (smp/s)",
        "ratio"
    );
    for r in rows {
        let (torch, ratio) = match r.pytorch {
            Some(t) => (format!("{t:.0}"), format!("{:.2}x", r.loam / t)),
            None => ("-".into(), "-".into()),
        };
        s += &format!(
            "{:<18} {:>10} {:>14.0} {:>14} {:>8}\n",
            r.network, r.parameters, r.loam, torch, ratio
        );
    }
    if let Some(v) = rows.iter().find_map(|r| r.pytorch_version.as_deref()) {
        s += &format!("PyTorch {v}; ratio = loam / PyTorch\n");
    }
    s
}

/// Where the PyTorch script lives in a checkout.
pub fn default_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/pytorch/train_throughput.py")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_trains_and_exports_its_spec() {
        let options = TrainBenchOptions {
            batch: 8,
            samples: 16,
            threads: 1,
            python: None,
            script: default_script(),
            device: Device::Cpu,
            networks: Vec::new(),
        };
        for name in NETWORKS {
            let (graph, sample, _) = network(name).unwrap();
            let spec = torch_spec(&graph).unwrap();
            assert_eq!(spec["input"], json!(sample), "{name}");
            assert!(loam_throughput(&graph, 10, &options).unwrap() > 0.0);
        }
        assert!(network("vgg").is_err());
        assert!(options.script.is_file());
    }

    #[test]
    fn the_graph_spec_carries_residual_adds_and_every_template() {
        for name in ALL_NETWORKS {
            let (graph, sample, _) = network(name).unwrap();
            let spec = torch_graph_spec(&graph).unwrap();
            assert_eq!(spec["input"], json!(sample), "{name}");
            let layers = spec["layers"].as_array().unwrap();
            assert_eq!(layers.len(), graph.layers.len() - 1, "{name}");
            for (i, layer) in layers.iter().enumerate() {
                for from in layer["inputs"].as_array().unwrap() {
                    assert!(
                        from.as_u64().unwrap() <= i as u64,
                        "{name}: layer {}",
                        i + 1
                    );
                }
            }
        }
        let (resnet, _, _) = network("resnet-8").unwrap();
        // A chain script cannot rebuild it; the graph script gets its adds.
        assert!(torch_spec(&resnet).is_err());
        let spec = torch_graph_spec(&resnet).unwrap();
        let adds = spec["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "add")
            .count();
        assert_eq!(adds, 3);
        assert!(TORCH_GRAPH_SCRIPT.contains("\"--device\""));
    }
}
