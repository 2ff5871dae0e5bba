//! Quantization-aware training: the forward pass is the int8 model itself, so what the
//! network is trained on is, bit for bit, what `loam` will run.
//!
//! Every update writes the int8 model from the current float weights with
//! [`Graph::build_i8`](crate::graph::Graph::build_i8) (the runtime's builder quantizes
//! weights and biases and derives the requantization multipliers), runs it one op at a time
//! in the runtime's interpreter and reads each layer's int8 output before the arena reuses
//! its memory. The dequantized
//! outputs become the trace the float backward passes read. Gradients follow the
//! straight-through estimator: identity through rounding, zero where an output saturated
//! at the int8 limits (outside the layer's calibrated range), and the float weights get the
//! gradients their quantized copies would.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};

use loam::format::{ARENA_ALIGN, AlignedBytes};
use loam::quant::QuantParams;
use loam::tensor::Quantization;
use loam::{DType, Interpreter, Model};

use super::fit::{Fitted, Progress, Samples, TrainOptions, evaluate_with, fit_with};
use super::loss::LossFunction;
use super::network::{Network, Trace};
use crate::graph::{Layer, Ranges};

/// Where a layer's int8 output lives in the written model.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The graph input, quantized here.
    Input,
    /// Tensor `tensor`, read right after the op that writes it.
    Op { tensor: usize },
    /// The same values as an earlier layer (dropout is the identity in a written model).
    Alias(usize),
}

/// The int8 model of a network's current weights, ready to run batches through.
#[derive(Debug)]
pub struct Int8Forward {
    bytes: AlignedBytes,
    sources: Vec<Source>,
    /// Each layer's output quantization.
    params: Vec<QuantParams>,
    /// Values per sample of each layer's output.
    lens: Vec<usize>,
    /// Layers whose output is requantized to its own range, where saturation clips.
    gated: Vec<bool>,
    /// For each op, the layers whose output it writes.
    captures: Vec<Vec<usize>>,
}

/// One batch through the int8 model.
#[derive(Debug, Clone)]
pub struct QuantTrace {
    /// Dequantized outputs of every layer, with the straight-through gates, for
    /// [`Network::backward`].
    pub trace: Trace,
    /// Every layer's int8 output, `batch` samples back to back.
    pub int8: Vec<Vec<i8>>,
    /// Every layer's output quantization.
    pub params: Vec<QuantParams>,
}

/// The straight-through gate of int8 values: `0` where a value sits on an int8 limit (the
/// real value was clipped to the range, or reached its edge), `1` elsewhere.
pub fn saturation_gate(values: &[i8]) -> Vec<f32> {
    values
        .iter()
        .map(|&q| {
            if q == i8::MIN || q == i8::MAX {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

impl Int8Forward {
    /// Writes `network`'s int8 model over `ranges` (one per layer, as
    /// [`Graph::calibrate_on`](crate::graph::Graph::calibrate_on) returns) and maps each
    /// layer to the op that computes it.
    pub fn new(network: &Network, ranges: &Ranges) -> Result<Int8Forward> {
        let layers = &network.graph.layers;
        if ranges.len() != layers.len() {
            bail!(
                "{} activation ranges for {} layers",
                ranges.len(),
                layers.len()
            );
        }
        let built = network
            .graph
            .build_i8(ranges)
            .context("writing the int8 model for quantization-aware training")?;
        let bytes = AlignedBytes::new(&built.bytes);
        let model = Model::from_bytes(&bytes)?;
        // The last op of a name wins, should a layer ever be written as several ops.
        let mut op_of: HashMap<&str, usize> = HashMap::new();
        for (k, op) in model.ops().enumerate() {
            op_of.insert(op.name, k);
        }
        let mut sources = Vec::with_capacity(layers.len());
        let mut params = Vec::with_capacity(layers.len());
        let mut captures = vec![Vec::new(); model.op_count()];
        let lens: Vec<usize> = (0..layers.len()).map(|i| network.len(i)).collect();
        for (i, layer) in layers.iter().enumerate() {
            let (source, tensor) = match layer {
                Layer::Input { .. } => {
                    let id = model
                        .inputs()
                        .get(0)
                        .context("the int8 model has no input")?;
                    (Source::Input, usize::from(id))
                }
                Layer::Dropout { from, .. } => {
                    sources.push(Source::Alias(*from));
                    params.push(params[*from]);
                    continue;
                }
                _ => {
                    let name = crate::graph::layer_name(i, layer);
                    let &op = op_of
                        .get(name.as_str())
                        .with_context(|| format!("the int8 model has no op `{name}`"))?;
                    let record = model.op(op).context("op out of range")?;
                    let id = record
                        .outputs
                        .get(0)
                        .with_context(|| format!("op `{name}` has no output"))?;
                    captures[op].push(i);
                    let tensor = usize::from(id);
                    (Source::Op { tensor }, tensor)
                }
            };
            let record = model
                .tensor(tensor)
                .with_context(|| format!("layer {i}: no tensor {tensor}"))?;
            let Quantization::PerTensor { scale, zero_point } = record.quantization else {
                bail!("layer {i}: the int8 output is not quantized per tensor");
            };
            if record.dtype != DType::I8 || record.shape.elements() != Some(lens[i]) {
                bail!(
                    "layer {i}: the int8 model's tensor `{}` does not hold {} int8 values",
                    record.name,
                    lens[i]
                );
            }
            sources.push(source);
            params.push(QuantParams { scale, zero_point });
        }
        let gated = layers
            .iter()
            .map(|l| {
                matches!(
                    l,
                    Layer::Conv { .. }
                        | Layer::Depthwise { .. }
                        | Layer::Dense { .. }
                        | Layer::GlobalAvgPool { .. }
                        | Layer::Add { .. }
                )
            })
            .collect();
        Ok(Int8Forward {
            bytes,
            sources,
            params,
            lens,
            gated,
            captures,
        })
    }

    /// Runs `batch` samples of `input` (float, quantized with the input's parameters as the
    /// deployed model's caller would) through the int8 model.
    pub fn run(&self, input: &[f32], batch: usize) -> Result<QuantTrace> {
        let len = self.lens[0];
        if len == 0 || input.len() != batch * len {
            bail!("{} input values for {batch} samples of {len}", input.len());
        }
        let model = Model::from_bytes(&self.bytes)?;
        let mut arena = vec![0u8; model.arena_size() + ARENA_ALIGN];
        let mut interpreter = Interpreter::new(&model, &mut arena)?;
        let mut int8: Vec<Vec<i8>> = self
            .lens
            .iter()
            .map(|l| Vec::with_capacity(batch * l))
            .collect();
        let input_params = self.params[0];
        for sample in input.chunks_exact(len) {
            let x = interpreter.input_mut::<i8>(0)?;
            for (q, &v) in x.iter_mut().zip(sample) {
                *q = input_params.quantize(v, -128, 127) as i8;
            }
            int8[0].extend_from_slice(x);
            for (op, layers) in self.captures.iter().enumerate() {
                interpreter.invoke_ops(op..op + 1)?;
                for &layer in layers {
                    let Source::Op { tensor, .. } = self.sources[layer] else {
                        continue;
                    };
                    let record = model.tensor(tensor).context("tensor out of range")?;
                    // Read now: a later op may reuse this memory.
                    let bytes = interpreter.tensor_bytes(&record)?;
                    int8[layer].extend(bytes.iter().map(|&b| b as i8));
                }
            }
        }
        for (i, source) in self.sources.iter().enumerate() {
            if let Source::Alias(from) = *source {
                int8[i] = int8[from].clone();
            }
        }
        let outputs: Vec<Vec<f32>> = int8
            .iter()
            .zip(&self.params)
            .map(|(q, p)| q.iter().map(|&v| p.dequantize(i32::from(v))).collect())
            .collect();
        let gates = int8
            .iter()
            .zip(&self.gated)
            .map(|(q, &gated)| gated.then(|| saturation_gate(q)))
            .collect();
        Ok(QuantTrace {
            trace: Trace::with_gates(batch, outputs, gates),
            int8,
            params: self.params.clone(),
        })
    }
}

/// Mean loss and metric of `network`'s int8 model over `ranges` on `samples`.
pub fn evaluate_int8(
    network: &Network,
    ranges: &Ranges,
    samples: &Samples<'_>,
    loss: &LossFunction,
) -> Result<(f64, f64)> {
    let int8 = Int8Forward::new(network, ranges)?;
    evaluate_with(network, samples, loss, Some(&int8))
}

/// The result of [`fit_qat`].
#[derive(Debug, Clone)]
pub struct QatFitted {
    /// The trained network and its history; validation figures are the int8 model's.
    pub fitted: Fitted,
    /// The activation ranges the network was trained for: write the model with
    /// [`Graph::build_i8`](crate::graph::Graph::build_i8) over these, not fresh ones.
    pub ranges: Ranges,
}

/// Fine-tunes a (usually float-trained) network for its int8 model: calibrates activation
/// ranges on `calibration` (whole input samples) with the float model, then trains through
/// the int8 model over those ranges with `options`. Dropout layers pass values through,
/// since the int8 model has none. A smaller learning rate than the float run's suits it.
pub fn fit_qat(
    network: Network,
    train: &Samples<'_>,
    validation: Option<&Samples<'_>>,
    options: &TrainOptions,
    calibration: &[f32],
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<QatFitted> {
    // The int8 forward pass is the runtime's CPU kernels; there is no GPU version of it yet.
    if super::device::selected().device != super::Device::Cpu {
        bail!(super::device::QAT_CPU_ONLY);
    }
    let ranges = network
        .graph
        .calibrate_on(calibration)
        .context("calibrating activation ranges for quantization-aware training")?;
    let fitted = fit_with(
        network,
        train,
        validation,
        options,
        Some(&ranges),
        stop,
        progress,
    )?;
    Ok(QatFitted { fitted, ranges })
}

#[cfg(test)]
mod tests {
    use loam::ops::FusedActivation;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::graph::{Graph, GraphBuilder};
    use crate::train::{Augmentation, Loss, Optimizer, Regularization, Schedule, Targets, fit};

    const NONE: FusedActivation = FusedActivation::NONE;

    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The int8 model of `graph` over `ranges` run by the plain interpreter on one sample:
    /// its output, int8 and dequantized.
    fn reference(graph: &Graph, ranges: &Ranges, sample: &[f32]) -> (Vec<i8>, Vec<f32>) {
        let built = graph.build_i8(ranges).unwrap();
        let bytes = AlignedBytes::new(&built.bytes);
        let model = Model::from_bytes(&bytes).unwrap();
        let mut arena = vec![0u8; model.arena_size() + ARENA_ALIGN];
        let mut interpreter = Interpreter::new(&model, &mut arena).unwrap();
        let input = interpreter.input_tensor(0).unwrap();
        let Quantization::PerTensor { scale, zero_point } = input.quantization else {
            panic!("int8 input")
        };
        let p = QuantParams { scale, zero_point };
        for (q, &v) in interpreter
            .input_mut::<i8>(0)
            .unwrap()
            .iter_mut()
            .zip(sample)
        {
            *q = p.quantize(v, -128, 127) as i8;
        }
        interpreter.invoke().unwrap();
        let output = interpreter.output_tensor(0).unwrap();
        let Quantization::PerTensor { scale, zero_point } = output.quantization else {
            panic!("int8 output")
        };
        let p = QuantParams { scale, zero_point };
        let q = interpreter.output::<i8>(0).unwrap().to_vec();
        let real = q.iter().map(|&v| p.dequantize(i32::from(v))).collect();
        (q, real)
    }

    /// Checks the fake-quant forward against the interpreter: the final output on several
    /// seeded batches, and every layer's output against the model of the graph cut after it.
    fn check_bit_exact(graph: Graph, seed: u64) {
        let net = Network::new(graph.clone()).unwrap();
        let len = net.input_len();
        let ranges = graph.calibrate_on(&uniform(16 * len, seed)).unwrap();
        let forward = Int8Forward::new(&net, &ranges).unwrap();
        let last = net.output_layer();
        for s in 0..4 {
            let batch = 3;
            let x = uniform(batch * len, seed * 100 + s);
            let run = forward.run(&x, batch).unwrap();
            let width = net.len(last);
            for (b, sample) in x.chunks_exact(len).enumerate() {
                let (q, real) = reference(&graph, &ranges, sample);
                let at = b * width..(b + 1) * width;
                assert_eq!(run.int8[last][at.clone()], q[..], "batch {s} sample {b}");
                let ours = &run.trace.outputs[last][at];
                assert!(
                    ours.iter()
                        .zip(&real)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "batch {s} sample {b}: {ours:?} vs {real:?}"
                );
            }
        }
        // Intermediate layers: the same values as a model whose output is that layer.
        let x = uniform(len, seed ^ 0xabc);
        let run = forward.run(&x, 1).unwrap();
        for i in 1..=last {
            let mut cut = graph.clone();
            cut.layers.truncate(i + 1);
            let (q, _) = reference(&cut, &ranges[..=i].to_vec(), &x);
            assert_eq!(run.int8[i], q, "layer {i}");
        }
    }

    #[test]
    fn fake_quant_forward_matches_the_int8_model_mlp() {
        let mut g = GraphBuilder::new("mlp", &[1, 12], 3);
        let h = g.dense(g.input(), 16, FusedActivation::RELU);
        let d = g.dropout(h, 0.3);
        let o = g.dense(d, 5, NONE);
        g.softmax(o);
        check_bit_exact(g.finish(), 1);
    }

    #[test]
    fn fake_quant_forward_matches_the_int8_model_cnn() {
        let mut g = GraphBuilder::new("cnn", &[1, 8, 8, 2], 4);
        let a = g.conv(g.input(), 4, (3, 3), 1, FusedActivation::RELU);
        let b = g.depthwise(a, 1, FusedActivation::RELU6);
        let c = g.conv(b, 4, (1, 1), 1, NONE);
        let s = g.add(a, c, FusedActivation::RELU);
        let m = g.max_pool(s, (2, 2));
        let p = g.avg_pool(m, (2, 2));
        let gap = g.global_avg_pool(p);
        let f = g.flatten(gap);
        let o = g.dense(f, 3, NONE);
        g.softmax(o);
        check_bit_exact(g.finish(), 2);
    }

    #[test]
    fn straight_through_gradient_is_zero_where_clipped_and_identity_inside() {
        let mut g = GraphBuilder::new("ste", &[1, 6], 5);
        g.dense(g.input(), 8, NONE);
        let net = Network::new(g.finish()).unwrap();
        let x = uniform(6, 7);
        let mut ranges = net.graph.calibrate_on(&x).unwrap();
        // A range half as wide as the values: the extremes must clip.
        ranges[1] = (ranges[1].0 * 0.5, ranges[1].1 * 0.5);
        let run = Int8Forward::new(&net, &ranges).unwrap().run(&x, 1).unwrap();
        let probe: Vec<f32> = (0..8).map(|j| 1.0 + j as f32).collect();
        let mut grads = net.zero_gradients();
        let dx = net
            .backward(&run.trace, 1, probe.clone(), &mut grads)
            .unwrap();
        let clipped: Vec<bool> = run.int8[1].iter().map(|&q| q == -128 || q == 127).collect();
        assert!(clipped.iter().any(|&c| c), "{:?}", run.int8[1]);
        assert!(clipped.iter().any(|&c| !c), "{:?}", run.int8[1]);
        let (dw, db) = (&grads[0], &grads[1]);
        let xq = &run.trace.outputs[0];
        for j in 0..8 {
            let expected = if clipped[j] { 0.0 } else { probe[j] };
            assert_eq!(db[j], expected, "bias {j}");
            for k in 0..6 {
                // Weights learn from the fake-quantized input, as if unquantized themselves.
                assert_eq!(dw[j * 6 + k], expected * xq[k], "weight {j},{k}");
            }
        }
        let Layer::Dense { weights, .. } = &net.graph.layers[1] else {
            unreachable!()
        };
        for k in 0..6 {
            let e: f32 = (0..8)
                .filter(|&j| !clipped[j])
                .map(|j| probe[j] * weights[j * 6 + k])
                .sum();
            assert!((dx[k] - e).abs() <= 1e-5 * (1.0 + e.abs()), "input {k}");
        }
        assert_eq!(
            saturation_gate(&[-128, -127, 0, 126, 127]),
            [0., 1., 1., 1., 0.]
        );
    }

    #[test]
    fn bad_ranges_are_errors() {
        let mut g = GraphBuilder::new("bad", &[1, 4], 6);
        g.dense(g.input(), 2, NONE);
        let net = Network::new(g.finish()).unwrap();
        assert!(Int8Forward::new(&net, &vec![(0.0, 1.0)]).is_err());
        let f = Int8Forward::new(&net, &vec![(-1.0, 1.0); 2]).unwrap();
        assert!(f.run(&[0.0; 3], 1).is_err());
    }

    fn train_options(epochs: usize, learning_rate: f32) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size: 32,
            learning_rate,
            optimizer: Optimizer::default(),
            schedule: Schedule::Cosine { min_lr: 0.0 },
            warmup_epochs: 0,
            regularization: Regularization { l1: 0.0, l2: 0.0 },
            clip_norm: Some(5.0),
            loss: LossFunction::new(Loss::CrossEntropy),
            early_stopping: None,
            augmentation: Augmentation::default(),
            seed: 11,
        }
    }

    #[test]
    fn qat_keeps_int8_accuracy_on_digits() {
        let data = crate::data::digits::bundled().unwrap();
        let crate::data::Targets::Classes(classes) = &data.targets else {
            panic!("digits have classes")
        };
        let len = 64;
        let x: Vec<f32> = data.features.iter().map(|v| v / 16.0).collect();
        let split = 1400;
        let train = Samples {
            inputs: &x[..split * len],
            targets: Targets::Classes(&classes[..split]),
        };
        let val = Samples {
            inputs: &x[split * len..],
            targets: Targets::Classes(&classes[split..]),
        };
        let mut g = GraphBuilder::new("digits", &[1, 64], 12);
        let h = g.dense(g.input(), 24, FusedActivation::RELU);
        let o = g.dense(h, 10, NONE);
        g.softmax(o);
        let stop = AtomicBool::new(false);
        let float = fit(
            Network::new(g.finish()).unwrap(),
            &train,
            None,
            &train_options(4, 0.01),
            &stop,
            &mut |_| {},
        )
        .unwrap()
        .network;
        let loss = LossFunction::new(Loss::CrossEntropy);
        let calibration = &x[..split * len];
        let ptq_ranges = float.graph.calibrate_on(calibration).unwrap();
        let (ptq_loss, ptq) = evaluate_int8(&float, &ptq_ranges, &val, &loss).unwrap();
        let qat = fit_qat(
            float,
            &train,
            Some(&val),
            &train_options(2, 0.002),
            calibration,
            &stop,
            &mut |_| {},
        )
        .unwrap();
        let (after_loss, after) =
            evaluate_int8(&qat.fitted.network, &qat.ranges, &val, &loss).unwrap();
        assert!(ptq > 0.85, "post-training int8 accuracy {ptq}");
        assert!(after >= ptq - 0.01, "QAT int8 accuracy {after} < PTQ {ptq}");
        // Same float ranges at the start, so an unchanged loss would mean QAT learnt nothing.
        assert!(
            after_loss < ptq_loss,
            "QAT int8 loss {after_loss} >= PTQ {ptq_loss}"
        );
        // The history's validation figure is the int8 model's.
        let reported = qat.fitted.history[qat.fitted.best_epoch - 1].val_metric;
        assert_eq!(reported, Some(after));
    }
}
