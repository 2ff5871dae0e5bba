//! A [`Graph`] as something to train: forward passes that keep every layer's output, and a
//! backward pass that walks the layers in reverse, adding each parameter's gradient.

use anyhow::{Context, Result, bail};
use rand::Rng;
use rand::rngs::StdRng;

use loam::ops::pool::GlobalPoolShape;

use super::ops::{activation, conv, dense::Dense, depthwise, pool, softmax};
use crate::graph::{Graph, Layer};

/// Which parameter tensor of which layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSlot {
    /// Layer index.
    pub layer: usize,
    /// The bias rather than the weights.
    pub bias: bool,
}

/// A graph with its shapes worked out and its parameters enumerated.
#[derive(Debug, Clone)]
pub struct Network {
    /// The layers and their current weights.
    pub graph: Graph,
    dims: Vec<Vec<usize>>,
    slots: Vec<ParamSlot>,
}

/// Every layer's output for one batch, kept for the backward pass.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Samples in the batch.
    pub batch: usize,
    /// Each layer's output, `batch` samples back to back.
    pub outputs: Vec<Vec<f32>>,
    /// The dropout layers' masks (`0` or `1 / (1 - rate)` per element).
    masks: Vec<Option<Vec<f32>>>,
    /// Per layer, `0` or `1` per output element: where quantization-aware training saw the
    /// int8 output saturate, so the straight-through estimator passes no gradient.
    gates: Vec<Option<Vec<f32>>>,
}

impl Trace {
    /// A trace of outputs computed elsewhere (the int8 model's, dequantized), with
    /// `gates[i]` multiplying layer `i`'s output gradient before its backward pass. Dropout
    /// layers are taken to have passed their input through.
    pub(crate) fn with_gates(
        batch: usize,
        outputs: Vec<Vec<f32>>,
        gates: Vec<Option<Vec<f32>>>,
    ) -> Trace {
        let masks = vec![None; outputs.len()];
        Trace {
            batch,
            outputs,
            masks,
            gates,
        }
    }
}

/// One gradient per parameter tensor, in [`Network::slots`] order.
pub type Gradients = Vec<Vec<f32>>;

impl Network {
    /// Checks the graph's shapes and enumerates its parameters.
    pub fn new(graph: Graph) -> Result<Network> {
        let dims = graph
            .sample_dims()
            .with_context(|| format!("model `{}`", graph.name))?;
        let mut slots = Vec::new();
        for (layer, l) in graph.layers.iter().enumerate() {
            if matches!(
                l,
                Layer::Conv { .. } | Layer::Depthwise { .. } | Layer::Dense { .. }
            ) {
                slots.push(ParamSlot { layer, bias: false });
                slots.push(ParamSlot { layer, bias: true });
            }
            if let Layer::Dropout { rate, .. } = l
                && !(0.0..1.0).contains(rate)
            {
                bail!("layer {layer}: dropout rate {rate} is outside [0, 1)");
            }
        }
        Ok(Network { graph, dims, slots })
    }

    /// Layer `i`'s output dimensions for one sample.
    pub fn dims(&self, i: usize) -> &[usize] {
        &self.dims[i]
    }

    /// Values in one sample of layer `i`'s output.
    pub fn len(&self, i: usize) -> usize {
        self.dims[i].iter().product()
    }

    /// Values in one input sample.
    pub fn input_len(&self) -> usize {
        self.len(0)
    }

    /// The output layer's index.
    pub fn output_layer(&self) -> usize {
        self.graph.layers.len() - 1
    }

    /// The parameter tensors, in gradient order.
    pub fn slots(&self) -> &[ParamSlot] {
        &self.slots
    }

    /// The parameter tensor of `slot`.
    pub fn param(&self, slot: ParamSlot) -> &[f32] {
        match &self.graph.layers[slot.layer] {
            Layer::Conv { weights, bias, .. }
            | Layer::Depthwise { weights, bias, .. }
            | Layer::Dense { weights, bias, .. } => {
                if slot.bias {
                    bias
                } else {
                    weights
                }
            }
            _ => &[],
        }
    }

    /// Every parameter tensor, mutably, in gradient order.
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        let mut out = Vec::with_capacity(self.slots.len());
        for layer in &mut self.graph.layers {
            if let Layer::Conv { weights, bias, .. }
            | Layer::Depthwise { weights, bias, .. }
            | Layer::Dense { weights, bias, .. } = layer
            {
                out.push(weights.as_mut_slice());
                out.push(bias.as_mut_slice());
            }
        }
        out
    }

    /// Zero gradients shaped like the parameters.
    pub fn zero_gradients(&self) -> Gradients {
        self.slots
            .iter()
            .map(|&s| vec![0.0; self.param(s).len()])
            .collect()
    }

    /// Runs `batch` samples of `input`. With `dropout`, dropout layers drop (training);
    /// without, they pass values through (evaluation).
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        mut dropout: Option<&mut StdRng>,
    ) -> Result<Trace> {
        if input.len() != batch * self.input_len() {
            bail!(
                "{} input values for {batch} samples of {}",
                input.len(),
                self.input_len()
            );
        }
        let layers = &self.graph.layers;
        let mut outputs: Vec<Vec<f32>> = Vec::with_capacity(layers.len());
        let mut masks = vec![None; layers.len()];
        for (i, layer) in layers.iter().enumerate() {
            let mut out = vec![0.0f32; batch * self.len(i)];
            let image = |from: usize| self.image(from);
            match layer {
                Layer::Input { .. } => out.copy_from_slice(input),
                Layer::Dense {
                    from,
                    weights,
                    bias,
                    activation,
                } => {
                    let d = self.dense(*from, i, batch);
                    d.forward(&outputs[*from], weights, bias, *activation, &mut out)?;
                }
                Layer::Conv {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => {
                    let g = conv::geometry(spec, batch, image(*from))?;
                    conv::forward(&g, &outputs[*from], weights, bias, *activation, &mut out)?;
                }
                Layer::Depthwise {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => {
                    let g = depthwise_geometry(spec, batch, image(*from))?;
                    depthwise::forward(&g, &outputs[*from], weights, bias, *activation, &mut out)?;
                }
                Layer::MaxPool {
                    from,
                    kernel,
                    stride,
                } => {
                    let g = pool::geometry(batch, image(*from), *kernel, *stride);
                    pool::max_forward(&g, &outputs[*from], &mut out)?;
                }
                Layer::AvgPool {
                    from,
                    kernel,
                    stride,
                } => {
                    let g = pool::geometry(batch, image(*from), *kernel, *stride);
                    pool::average_forward(&g, &outputs[*from], &mut out)?;
                }
                Layer::GlobalAvgPool { from } => {
                    let s = self.global(*from, batch);
                    pool::global_forward(&s, &outputs[*from], &mut out)?;
                }
                Layer::Add {
                    a,
                    b,
                    activation: act,
                } => {
                    for ((o, &x), &y) in out.iter_mut().zip(&outputs[*a]).zip(&outputs[*b]) {
                        *o = (x + y).clamp(act.min, act.max);
                    }
                }
                Layer::Reshape { from, .. } => out.copy_from_slice(&outputs[*from]),
                Layer::Softmax { from } => {
                    let depth = self.dims[i].last().copied().unwrap_or(1);
                    let rows = out.len() / depth.max(1);
                    softmax::forward(rows, depth, &outputs[*from], &mut out)?;
                }
                Layer::Dropout { from, rate } => match dropout.as_deref_mut() {
                    Some(rng) if *rate > 0.0 => {
                        let keep = 1.0 / (1.0 - rate);
                        let mask: Vec<f32> = (0..out.len())
                            .map(|_| {
                                if rng.random::<f32>() < *rate {
                                    0.0
                                } else {
                                    keep
                                }
                            })
                            .collect();
                        for ((o, &x), &m) in out.iter_mut().zip(&outputs[*from]).zip(&mask) {
                            *o = x * m;
                        }
                        masks[i] = Some(mask);
                    }
                    _ => out.copy_from_slice(&outputs[*from]),
                },
            }
            outputs.push(out);
        }
        Ok(Trace {
            batch,
            outputs,
            masks,
            gates: Vec::new(),
        })
    }

    /// Layer `i`'s `[h, w, c]` sample dimensions (shape checks in [`Network::new`] put an
    /// image before every layer that asks).
    fn image(&self, i: usize) -> [usize; 3] {
        let d = &self.dims[i];
        [d[0], d[1], d[2]]
    }

    /// Weighted layer `i` (conv, depthwise or dense) applied to `input` (`batch` samples of
    /// its producer's output) with `weights` in place of its own, no bias and no activation:
    /// the layer's linear part alone, for measuring what a change of its weights does.
    pub fn linear_part(
        &self,
        i: usize,
        input: &[f32],
        batch: usize,
        weights: &[f32],
    ) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; batch * self.len(i)];
        let none = loam::ops::FusedActivation::NONE;
        match &self.graph.layers[i] {
            Layer::Conv { from, spec, .. } => {
                let zeros = vec![0.0; spec.out_channels];
                let g = conv::geometry(spec, batch, self.image(*from))?;
                conv::forward(&g, input, weights, &zeros, none, &mut out)?;
            }
            Layer::Depthwise { from, spec, .. } => {
                let zeros = vec![0.0; spec.out_channels];
                let g = depthwise_geometry(spec, batch, self.image(*from))?;
                depthwise::forward(&g, input, weights, &zeros, none, &mut out)?;
            }
            Layer::Dense { from, .. } => {
                let d = self.dense(*from, i, batch);
                let zeros = vec![0.0; d.outputs];
                d.forward(input, weights, &zeros, none, &mut out)?;
            }
            _ => bail!("layer {i} has no weights"),
        }
        Ok(out)
    }

    fn dense(&self, from: usize, i: usize, batch: usize) -> Dense {
        let inputs = self.dims[from].last().copied().unwrap_or(1);
        let outputs = self.dims[i].last().copied().unwrap_or(1);
        Dense {
            batch: batch * self.len(from) / inputs.max(1),
            inputs,
            outputs,
        }
    }

    fn global(&self, from: usize, batch: usize) -> GlobalPoolShape {
        let d = &self.dims[from];
        GlobalPoolShape {
            batch,
            height: d[0],
            width: d[1],
            channels: d[2],
        }
    }

    /// Back-propagates `d_start`, the loss's gradient with respect to layer `start`'s output,
    /// and adds every parameter's gradient to `grads`. Layers after `start` are not touched
    /// (a softmax folded into the loss). Returns the input's gradient.
    pub fn backward(
        &self,
        trace: &Trace,
        start: usize,
        d_start: Vec<f32>,
        grads: &mut Gradients,
    ) -> Result<Vec<f32>> {
        let batch = trace.batch;
        let layers = &self.graph.layers;
        let mut d: Vec<Option<Vec<f32>>> = vec![None; layers.len()];
        if d_start.len() != trace.outputs[start].len() {
            bail!(
                "output gradient has {} values, not {}",
                d_start.len(),
                trace.outputs[start].len()
            );
        }
        d[start] = Some(d_start);
        let slot_of = |layer: usize| {
            self.slots
                .iter()
                .position(|s| s.layer == layer && !s.bias)
                .unwrap_or(usize::MAX)
        };
        for i in (1..=start).rev() {
            let Some(mut dy) = d[i].take() else {
                continue;
            };
            if let Some(Some(gate)) = trace.gates.get(i) {
                dy.iter_mut().zip(gate).for_each(|(g, m)| *g *= m);
            }
            let out = &trace.outputs[i];
            let image = |from: usize| self.image(from);
            let pass =
                |d: &mut Vec<Option<Vec<f32>>>, from: usize, grad: Vec<f32>| match &mut d[from] {
                    Some(acc) => acc.iter_mut().zip(&grad).for_each(|(a, g)| *a += g),
                    slot => *slot = Some(grad),
                };
            match &layers[i] {
                Layer::Input { .. } => {}
                Layer::Dense {
                    from,
                    weights,
                    activation: act,
                    ..
                } => {
                    activation::backward(*act, out, &mut dy);
                    let s = slot_of(i);
                    let (dw, db) = two(grads, s);
                    let mut dx = vec![0.0; trace.outputs[*from].len()];
                    self.dense(*from, i, batch).backward(
                        &trace.outputs[*from],
                        weights,
                        &dy,
                        dw,
                        db,
                        Some(&mut dx),
                    );
                    pass(&mut d, *from, dx);
                }
                Layer::Conv {
                    from,
                    spec,
                    weights,
                    activation: act,
                    ..
                }
                | Layer::Depthwise {
                    from,
                    spec,
                    weights,
                    activation: act,
                    ..
                } => {
                    activation::backward(*act, out, &mut dy);
                    let depthwise = matches!(layers[i], Layer::Depthwise { .. });
                    let g = if depthwise {
                        depthwise_geometry(spec, batch, image(*from))?
                    } else {
                        conv::geometry(spec, batch, image(*from))?
                    };
                    let (dw, db) = two(grads, slot_of(i));
                    let mut dx = vec![0.0; trace.outputs[*from].len()];
                    let x = &trace.outputs[*from];
                    if depthwise {
                        depthwise::backward(&g, x, weights, &dy, dw, db, Some(&mut dx));
                    } else {
                        conv::backward(&g, x, weights, &dy, dw, db, Some(&mut dx));
                    }
                    pass(&mut d, *from, dx);
                }
                Layer::MaxPool {
                    from,
                    kernel,
                    stride,
                } => {
                    let g = pool::geometry(batch, image(*from), *kernel, *stride);
                    let mut dx = vec![0.0; trace.outputs[*from].len()];
                    pool::max_backward(&g, &trace.outputs[*from], &dy, &mut dx);
                    pass(&mut d, *from, dx);
                }
                Layer::AvgPool {
                    from,
                    kernel,
                    stride,
                } => {
                    let g = pool::geometry(batch, image(*from), *kernel, *stride);
                    let mut dx = vec![0.0; trace.outputs[*from].len()];
                    pool::average_backward(&g, &dy, &mut dx);
                    pass(&mut d, *from, dx);
                }
                Layer::GlobalAvgPool { from } => {
                    let mut dx = vec![0.0; trace.outputs[*from].len()];
                    pool::global_backward(&self.global(*from, batch), &dy, &mut dx);
                    pass(&mut d, *from, dx);
                }
                Layer::Add {
                    a,
                    b,
                    activation: act,
                } => {
                    activation::backward(*act, out, &mut dy);
                    pass(&mut d, *a, dy.clone());
                    pass(&mut d, *b, dy);
                }
                Layer::Reshape { from, .. } => pass(&mut d, *from, dy),
                Layer::Softmax { from } => {
                    let depth = self.dims[i].last().copied().unwrap_or(1);
                    let mut dx = vec![0.0; dy.len()];
                    softmax::backward(depth, out, &dy, &mut dx);
                    pass(&mut d, *from, dx);
                }
                Layer::Dropout { from, .. } => {
                    if let Some(mask) = &trace.masks[i] {
                        dy.iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
                    }
                    pass(&mut d, *from, dy);
                }
            }
        }
        Ok(d[0]
            .take()
            .unwrap_or_else(|| vec![0.0; trace.outputs[0].len()]))
    }
}

/// A depthwise layer's geometry: one group per input channel, whatever the spec says.
fn depthwise_geometry(
    spec: &loam::ops::conv2d::ConvSpec,
    batch: usize,
    input: [usize; 3],
) -> Result<loam::ops::conv2d::ConvGeometry> {
    let spec = loam::ops::conv2d::ConvSpec {
        groups: input[2],
        ..*spec
    };
    conv::geometry(&spec, batch, input)
}

/// The weights' and the bias's gradients of the layer whose weights are slot `s`.
fn two(grads: &mut Gradients, s: usize) -> (&mut [f32], &mut [f32]) {
    let (w, b) = grads[s..].split_at_mut(1);
    (&mut w[0], &mut b[0])
}
