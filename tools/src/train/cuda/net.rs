//! A [`Network`] on the GPU: its parameters in one flat buffer (so the optimizer, the gradient
//! norm and the best-weights copy are one launch each), every layer's output and gradient for
//! a batch, and the forward and backward pass of every layer kind the CPU engine trains.
//!
//! Layouts are the CPU's: NHWC activations, dense weights `[out][in]`, convolution filters
//! `[out][kh][kw][in / groups]`, depthwise filters `[kh][kw][out]`. The row-major matrices go
//! to column-major cuBLAS transposed: a row-major `r x c` buffer is a column-major `c x r`
//! matrix with leading dimension `c`, so `Y = X W^T` becomes `Y^T = W X^T`.

use anyhow::{Context, Result, bail};

use loam::ops::FusedActivation;
use loam::ops::conv2d::{ConvGeometry, ConvSpec};

use super::gpu::{Buf, ConvArgs, Gpu, PoolArgs, Span};
use crate::graph::Layer;
#[cfg(test)]
use crate::train::Gradients;
use crate::train::Network;
use crate::train::ops::conv;

/// A layer as the GPU runs it, its shapes per sample worked out once.
#[derive(Debug, Clone)]
enum Op {
    Input,
    Dense {
        from: usize,
        inputs: usize,
        outputs: usize,
        act: (f32, f32),
    },
    Conv {
        from: usize,
        g: ConvGeometry,
        act: (f32, f32),
        /// A 1x1 convolution with stride 1, no padding and one group reads its input as the
        /// patch matrix, so it skips im2col (and col2im).
        direct: bool,
    },
    Depthwise {
        from: usize,
        g: ConvGeometry,
        act: (f32, f32),
    },
    Pool {
        from: usize,
        max: bool,
        p: PoolArgs,
    },
    GlobalAvg {
        from: usize,
        pixels: usize,
        channels: usize,
    },
    Add {
        a: usize,
        b: usize,
        act: (f32, f32),
    },
    Reshape {
        from: usize,
    },
    Softmax {
        from: usize,
        depth: usize,
    },
    Dropout {
        from: usize,
        rate: f32,
    },
}

impl Op {
    /// The layers this one reads.
    fn inputs(&self) -> Vec<usize> {
        match *self {
            Op::Input => Vec::new(),
            Op::Add { a, b, .. } => vec![a, b],
            Op::Dense { from, .. }
            | Op::Conv { from, .. }
            | Op::Depthwise { from, .. }
            | Op::Pool { from, .. }
            | Op::GlobalAvg { from, .. }
            | Op::Reshape { from }
            | Op::Softmax { from, .. }
            | Op::Dropout { from, .. } => vec![from],
        }
    }
}

/// Whether a forward pass trains (dropout drops, with draws from `seed` and `step`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Dropout layers pass values through.
    Eval,
    /// Dropout layers drop.
    Train {
        /// The run's seed.
        seed: u64,
        /// The optimizer step.
        step: u64,
    },
}

fn clamp(a: FusedActivation) -> (f32, f32) {
    (a.min, a.max)
}

/// The per-sample geometry with `batch` images.
fn args(g: &ConvGeometry, batch: usize) -> ConvArgs {
    ConvArgs {
        batch,
        ih: g.in_height,
        iw: g.in_width,
        ic: g.in_channels,
        oh: g.out_height,
        ow: g.out_width,
        oc: g.out_channels,
        kh: g.kernel_height,
        kw: g.kernel_width,
        sh: g.stride_height,
        sw: g.stride_width,
        dh: g.dilation_height,
        dw: g.dilation_width,
        pt: g.pad_top,
        pl: g.pad_left,
    }
}

/// Where a layer's parameters sit in the flat buffer.
#[derive(Debug, Clone, Copy)]
struct Params {
    weights: usize,
    weights_len: usize,
    bias: usize,
    bias_len: usize,
}

/// What a [`GpuNet`] is sized for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizing {
    /// Samples per pass.
    pub batch: usize,
    /// The deepest layer a backward pass starts from.
    pub start: usize,
    /// Whether backward passes compute the input's gradient (tests compare it).
    pub input_grad: bool,
}

/// Bytes a [`GpuNet`] of `network` sized by `sizing` allocates, before allocating.
pub(crate) fn bytes_needed(network: &Network, sizing: Sizing) -> Result<u64> {
    let plan = Plan::new(network, sizing)?;
    Ok(plan.bytes())
}

/// The layers as ops, which of them backward passes reach, and the buffer sizes.
struct Plan {
    ops: Vec<Op>,
    lens: Vec<usize>,
    params: Vec<Option<Params>>,
    total_params: usize,
    /// Whether layer i gets a gradient buffer.
    grad: Vec<bool>,
    /// Values of the shared scratch (im2col patches, depthwise partial sums).
    scratch: usize,
    /// Values of the all-ones vector the bias gradients sum rows with.
    ones: usize,
    batch: usize,
}

impl Plan {
    fn new(network: &Network, sizing: Sizing) -> Result<Plan> {
        let layers = &network.graph.layers;
        if sizing.start >= layers.len() {
            bail!("backward start {} beyond the last layer", sizing.start);
        }
        let batch = sizing.batch.max(1);
        let image = |i: usize| -> [usize; 3] {
            let d = network.dims(i);
            [d[0], d[1], d[2]]
        };
        let mut ops = Vec::with_capacity(layers.len());
        let mut params = vec![None; layers.len()];
        let mut total_params = 0usize;
        let (mut scratch, mut ones) = (1usize, 1usize);
        for (i, layer) in layers.iter().enumerate() {
            let mut take = |weights: &[f32], bias: &[f32]| {
                let p = Params {
                    weights: total_params,
                    weights_len: weights.len(),
                    bias: total_params + weights.len(),
                    bias_len: bias.len(),
                };
                total_params += weights.len() + bias.len();
                params[i] = Some(p);
            };
            let op = match layer {
                Layer::Input { .. } => Op::Input,
                Layer::Dense {
                    from,
                    weights,
                    bias,
                    activation,
                } => {
                    take(weights, bias);
                    let inputs = network.dims(*from).last().copied().unwrap_or(1);
                    let outputs = network.dims(i).last().copied().unwrap_or(1);
                    ones = ones.max(batch * network.len(*from) / inputs.max(1));
                    Op::Dense {
                        from: *from,
                        inputs,
                        outputs,
                        act: clamp(*activation),
                    }
                }
                Layer::Conv {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => {
                    take(weights, bias);
                    let g = conv::geometry(spec, 1, image(*from))?;
                    let direct = g.kernel_height == 1
                        && g.kernel_width == 1
                        && g.stride_height == 1
                        && g.stride_width == 1
                        && spec.padding == [0; 4]
                        && g.groups == 1;
                    let pixels = batch * g.out_height * g.out_width;
                    if !direct {
                        scratch = scratch.max(pixels * g.patch_len());
                    }
                    ones = ones.max(pixels);
                    Op::Conv {
                        from: *from,
                        g,
                        act: clamp(*activation),
                        direct,
                    }
                }
                Layer::Depthwise {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => {
                    take(weights, bias);
                    let input = image(*from);
                    let spec = ConvSpec {
                        groups: input[2],
                        ..*spec
                    };
                    let g = conv::geometry(&spec, 1, input)?;
                    let a = args(&g, batch);
                    scratch = scratch
                        .max(Gpu::depthwise_splits(&a) * g.kernel_height * g.kernel_width * a.oc);
                    ones = ones.max(batch * g.out_height * g.out_width);
                    Op::Depthwise {
                        from: *from,
                        g,
                        act: clamp(*activation),
                    }
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
                } => {
                    let [h, w, c] = image(*from);
                    let out = network.dims(i);
                    Op::Pool {
                        from: *from,
                        max: matches!(layer, Layer::MaxPool { .. }),
                        p: PoolArgs {
                            batch: 0,
                            h,
                            w,
                            c,
                            oh: out[0],
                            ow: out[1],
                            kh: kernel.0,
                            kw: kernel.1,
                            sh: stride.0,
                            sw: stride.1,
                        },
                    }
                }
                Layer::GlobalAvgPool { from } => {
                    let [h, w, c] = image(*from);
                    Op::GlobalAvg {
                        from: *from,
                        pixels: h * w,
                        channels: c,
                    }
                }
                Layer::Add { a, b, activation } => Op::Add {
                    a: *a,
                    b: *b,
                    act: clamp(*activation),
                },
                Layer::Reshape { from, .. } => Op::Reshape { from: *from },
                Layer::Softmax { from } => Op::Softmax {
                    from: *from,
                    depth: network.dims(i).last().copied().unwrap_or(1),
                },
                Layer::Dropout { from, rate } => Op::Dropout {
                    from: *from,
                    rate: *rate,
                },
            };
            ops.push(op);
        }
        let lens: Vec<usize> = (0..layers.len()).map(|i| network.len(i)).collect();
        // Which layers a backward pass from `start` reaches.
        let mut grad = vec![false; layers.len()];
        grad[sizing.start] = true;
        for i in (1..=sizing.start).rev() {
            if grad[i] {
                for from in ops[i].inputs() {
                    grad[from] = true;
                }
            }
        }
        grad[0] = sizing.input_grad;
        for (i, &len) in lens.iter().enumerate() {
            super::gpu::check_int(len, &format!("layer {i}'s values per sample"))?;
        }
        Ok(Plan {
            ops,
            lens,
            params,
            total_params,
            grad,
            scratch,
            ones,
            batch,
        })
    }

    fn bytes(&self) -> u64 {
        let f = std::mem::size_of::<f32>() as u64;
        let acts: u64 = self.lens.iter().map(|&l| (self.batch * l) as u64).sum();
        let grads: u64 = self
            .lens
            .iter()
            .zip(&self.grad)
            .filter(|&(_, &g)| g)
            .map(|(&l, _)| (self.batch * l) as u64)
            .sum();
        f * (acts + grads + 2 * self.total_params as u64 + self.scratch as u64 + self.ones as u64)
    }
}

/// A network's parameters, gradients and activations on the GPU.
pub(crate) struct GpuNet {
    /// The host network: graph, dimensions and slots (its weights are the initial ones until
    /// [`GpuNet::download_into`]).
    network: Network,
    ops: Vec<Op>,
    lens: Vec<usize>,
    params_of: Vec<Option<Params>>,
    grad: Vec<bool>,
    batch: usize,
    /// Every parameter, in slot order.
    pub params: Buf<f32>,
    /// Their gradients for the last batch, same layout.
    pub grads: Buf<f32>,
    acts: Vec<Buf<f32>>,
    dacts: Vec<Option<Buf<f32>>>,
    scratch: Buf<f32>,
    ones: Buf<f32>,
}

impl GpuNet {
    /// Uploads `network`'s parameters and allocates what passes of `sizing.batch` samples
    /// need.
    pub fn new(gpu: &Gpu, network: Network, sizing: Sizing) -> Result<GpuNet> {
        let plan = Plan::new(&network, sizing)?;
        let mut flat = Vec::with_capacity(plan.total_params);
        for &slot in network.slots() {
            flat.extend_from_slice(network.param(slot));
        }
        let params = gpu.upload(&flat)?;
        // Zero, so a parameter no backward pass reaches has a zero gradient, as on the CPU.
        let grads = gpu.zeros::<f32>(plan.total_params)?;
        let acts = plan
            .lens
            .iter()
            .map(|&l| gpu.zeros::<f32>(plan.batch * l))
            .collect::<Result<Vec<_>>>()?;
        let dacts = plan
            .lens
            .iter()
            .zip(&plan.grad)
            .map(|(&l, &g)| g.then(|| gpu.zeros::<f32>(plan.batch * l)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let scratch = gpu.zeros::<f32>(plan.scratch)?;
        let ones = gpu.zeros::<f32>(plan.ones)?;
        gpu.fill(ones.span(), 1.0)?;
        Ok(GpuNet {
            network,
            ops: plan.ops,
            lens: plan.lens,
            params_of: plan.params,
            grad: plan.grad,
            batch: plan.batch,
            params,
            grads,
            acts,
            dacts,
            scratch,
            ones,
        })
    }

    /// The host network (initial weights until downloaded).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Samples per pass at most.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Layer `i`'s output for the last pass, `batch` samples.
    pub fn output(&self, i: usize, batch: usize) -> Span<'_, f32> {
        self.acts[i].first(batch * self.lens[i])
    }

    /// Layer `i`'s gradient buffer, `batch` samples.
    ///
    /// # Panics
    /// If backward passes do not reach layer `i`.
    pub fn gradient(&self, i: usize, batch: usize) -> Span<'_, f32> {
        match &self.dacts[i] {
            Some(d) => d.first(batch * self.lens[i]),
            None => panic!("layer {i} has no gradient buffer"),
        }
    }

    /// The input buffer, mutably, to write a batch into (tests).
    #[cfg(test)]
    pub fn input_mut(&mut self) -> &mut Buf<f32> {
        &mut self.acts[0]
    }

    /// Layer `i`'s gradient buffer, mutably, to write a gradient into (tests).
    #[cfg(test)]
    pub fn gradient_mut(&mut self, i: usize) -> Option<&mut Buf<f32>> {
        self.dacts[i].as_mut()
    }

    /// Values per sample of layer `i`.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    fn weights(&self, i: usize) -> (Span<'_, f32>, Span<'_, f32>) {
        let p = self.params_of[i].expect("a layer with parameters");
        let all = self.params.span();
        (all.at(p.weights, p.weights_len), all.at(p.bias, p.bias_len))
    }

    fn weight_grads(&self, i: usize) -> (Span<'_, f32>, Span<'_, f32>) {
        let p = self.params_of[i].expect("a layer with parameters");
        let all = self.grads.span();
        (all.at(p.weights, p.weights_len), all.at(p.bias, p.bias_len))
    }

    /// Runs layers `1..=upto` on the `batch` samples in the input buffer.
    pub fn forward(&self, gpu: &Gpu, batch: usize, upto: usize, mode: Mode) -> Result<()> {
        assert!(
            batch <= self.batch,
            "{batch} samples in a net sized for {}",
            self.batch
        );
        for i in 1..=upto {
            let out = self.output(i, batch);
            let n = batch * self.lens[i];
            match &self.ops[i] {
                Op::Input => {}
                Op::Dense {
                    from,
                    inputs,
                    outputs,
                    act,
                } => {
                    let x = self.output(*from, batch);
                    let rows = batch * self.lens[*from] / inputs;
                    let (w, b) = self.weights(i);
                    // Y^T (outputs x rows) = W (outputs x inputs) * X^T (inputs x rows).
                    gpu.gemm(
                        (true, false),
                        (*outputs, rows, *inputs),
                        w,
                        *inputs,
                        x,
                        *inputs,
                        0.0,
                        out,
                        *outputs,
                    )?;
                    gpu.bias_act(out, b, rows, *outputs, *act)?;
                }
                Op::Conv {
                    from,
                    g,
                    act,
                    direct,
                } => {
                    let x = self.output(*from, batch);
                    let (w, b) = self.weights(i);
                    let a = args(g, batch);
                    let pixels = batch * g.out_height * g.out_width;
                    let (patch, gin, gout) =
                        (g.patch_len(), g.group_in_channels(), g.group_out_channels());
                    for group in 0..g.groups {
                        let cols = if *direct {
                            x
                        } else {
                            let cols = self.scratch.first(pixels * patch);
                            gpu.im2col(x, cols, &a, gin, group)?;
                            cols
                        };
                        // Y_g^T (gout x pixels, columns of Y) = W_g (gout x patch) * cols^T.
                        gpu.gemm(
                            (true, false),
                            (gout, pixels, patch),
                            w.at(group * gout * patch, gout * patch),
                            patch,
                            cols,
                            patch,
                            0.0,
                            out.from(group * gout),
                            g.out_channels,
                        )?;
                    }
                    gpu.bias_act(out, b, pixels, g.out_channels, *act)?;
                }
                Op::Depthwise { from, g, act } => {
                    let (w, b) = self.weights(i);
                    gpu.depthwise_forward(
                        self.output(*from, batch),
                        w,
                        b,
                        out,
                        &args(g, batch),
                        *act,
                    )?;
                }
                Op::Pool { from, max, p } => {
                    let p = PoolArgs { batch, ..*p };
                    gpu.pool_forward(*max, self.output(*from, batch), out, &p)?;
                }
                Op::GlobalAvg {
                    from,
                    pixels,
                    channels,
                } => {
                    gpu.global_avg_forward(
                        self.output(*from, batch),
                        out,
                        batch,
                        *pixels,
                        *channels,
                    )?;
                }
                Op::Add { a, b, act } => {
                    gpu.add_forward(self.output(*a, batch), self.output(*b, batch), out, n, *act)?;
                }
                Op::Reshape { from } => {
                    gpu.add_into(out, self.output(*from, batch), n, false)?;
                }
                Op::Softmax { from, depth } => {
                    gpu.softmax_forward(self.output(*from, batch), out, n / depth, *depth)?;
                }
                Op::Dropout { from, rate } => match mode {
                    Mode::Train { seed, step } if *rate > 0.0 => {
                        let x = self.output(*from, batch);
                        gpu.dropout_forward(x, out, n, *rate, seed, step, i as u64)?;
                    }
                    _ => gpu.add_into(out, self.output(*from, batch), n, false)?,
                },
            }
        }
        Ok(())
    }

    /// Back-propagates the gradient in layer `start`'s buffer through layers `start..=1`,
    /// writing every parameter's gradient (and the input's, when sized for it). `mode` must
    /// be the forward pass's, so dropout masks repeat.
    pub fn backward(&self, gpu: &Gpu, batch: usize, start: usize, mode: Mode) -> Result<()> {
        assert!(
            batch <= self.batch,
            "{batch} samples in a net sized for {}",
            self.batch
        );
        // Whether a layer's gradient buffer holds a contribution yet this pass: the first
        // writes, later ones add (a layer read by two others, as a residual branch is).
        let mut written = vec![false; self.ops.len()];
        written[start] = true;
        let mut first_write = |from: usize| -> Option<bool> {
            if !self.grad[from] {
                return None;
            }
            let acc = written[from];
            written[from] = true;
            Some(acc)
        };
        for i in (1..=start).rev() {
            if self.dacts[i].is_none() {
                continue;
            }
            let dy = self.gradient(i, batch);
            let y = self.output(i, batch);
            let n = batch * self.lens[i];
            match &self.ops[i] {
                Op::Input => {}
                Op::Dense {
                    from,
                    inputs,
                    outputs,
                    act,
                } => {
                    gpu.act_mask(dy, y, n, *act)?;
                    let x = self.output(*from, batch);
                    let rows = batch * self.lens[*from] / inputs;
                    let (dw, db) = self.weight_grads(i);
                    // dW^T (inputs x outputs) = X^T (inputs x rows) * dY (rows x outputs).
                    gpu.gemm(
                        (false, true),
                        (*inputs, *outputs, rows),
                        x,
                        *inputs,
                        dy,
                        *outputs,
                        0.0,
                        dw,
                        *inputs,
                    )?;
                    gpu.row_sums(*outputs, rows, dy, self.ones.span(), db)?;
                    if let Some(acc) = first_write(*from) {
                        let (w, _) = self.weights(i);
                        // dX^T (inputs x rows) = W^T (inputs x outputs) * dY^T.
                        gpu.gemm(
                            (false, false),
                            (*inputs, rows, *outputs),
                            w,
                            *inputs,
                            dy,
                            *outputs,
                            if acc { 1.0 } else { 0.0 },
                            self.gradient(*from, batch),
                            *inputs,
                        )?;
                    }
                }
                Op::Conv {
                    from,
                    g,
                    act,
                    direct,
                } => {
                    gpu.act_mask(dy, y, n, *act)?;
                    let x = self.output(*from, batch);
                    let (w, _) = self.weights(i);
                    let (dw, db) = self.weight_grads(i);
                    let a = args(g, batch);
                    let pixels = batch * g.out_height * g.out_width;
                    let (patch, gin, gout, oc) = (
                        g.patch_len(),
                        g.group_in_channels(),
                        g.group_out_channels(),
                        g.out_channels,
                    );
                    gpu.row_sums(oc, pixels, dy, self.ones.span(), db)?;
                    let acc = first_write(*from);
                    for group in 0..g.groups {
                        let cols = if *direct {
                            x
                        } else {
                            let cols = self.scratch.first(pixels * patch);
                            gpu.im2col(x, cols, &a, gin, group)?;
                            cols
                        };
                        let dy_g = dy.from(group * gout);
                        let w_g = w.at(group * gout * patch, gout * patch);
                        // dW_g^T (patch x gout) = cols^T (patch x pixels) * dY_g (pixels x gout).
                        gpu.gemm(
                            (false, true),
                            (patch, gout, pixels),
                            cols,
                            patch,
                            dy_g,
                            oc,
                            0.0,
                            dw.at(group * gout * patch, gout * patch),
                            patch,
                        )?;
                        let Some(acc) = acc else {
                            continue;
                        };
                        let dx = self.gradient(*from, batch);
                        // dcols^T (patch x pixels) = W_g^T (patch x gout) * dY_g^T.
                        if *direct {
                            gpu.gemm(
                                (false, false),
                                (patch, pixels, gout),
                                w_g,
                                patch,
                                dy_g,
                                oc,
                                if acc { 1.0 } else { 0.0 },
                                dx,
                                patch,
                            )?;
                        } else {
                            // The patches are no longer needed: their gradients reuse the
                            // scratch (the stream runs the products in order).
                            let dcols = self.scratch.first(pixels * patch);
                            gpu.gemm(
                                (false, false),
                                (patch, pixels, gout),
                                w_g,
                                patch,
                                dy_g,
                                oc,
                                0.0,
                                dcols,
                                patch,
                            )?;
                            gpu.col2im(dcols, dx, &a, gin, group, acc)?;
                        }
                    }
                }
                Op::Depthwise { from, g, act } => {
                    gpu.act_mask(dy, y, n, *act)?;
                    let x = self.output(*from, batch);
                    let (w, _) = self.weights(i);
                    let (dw, db) = self.weight_grads(i);
                    let a = args(g, batch);
                    gpu.depthwise_filter_grad(x, dy, dw, self.scratch.span(), &a)?;
                    let pixels = batch * g.out_height * g.out_width;
                    gpu.row_sums(g.out_channels, pixels, dy, self.ones.span(), db)?;
                    if let Some(acc) = first_write(*from) {
                        gpu.depthwise_backward_input(dy, w, self.gradient(*from, batch), &a, acc)?;
                    }
                }
                Op::Pool { from, max, p } => {
                    let Some(acc) = first_write(*from) else {
                        continue;
                    };
                    let p = PoolArgs { batch, ..*p };
                    let dx = self.gradient(*from, batch);
                    if *max {
                        gpu.max_pool_backward(self.output(*from, batch), dy, dx, &p, acc)?;
                    } else {
                        gpu.avg_pool_backward(dy, dx, &p, acc)?;
                    }
                }
                Op::GlobalAvg {
                    from,
                    pixels,
                    channels,
                } => {
                    if let Some(acc) = first_write(*from) {
                        let dx = self.gradient(*from, batch);
                        gpu.global_avg_backward(dy, dx, batch, *pixels, *channels, acc)?;
                    }
                }
                Op::Add { a, b, act } => {
                    gpu.act_mask(dy, y, n, *act)?;
                    for from in [*a, *b] {
                        if let Some(acc) = first_write(from) {
                            gpu.add_into(self.gradient(from, batch), dy, n, acc)?;
                        }
                    }
                }
                Op::Reshape { from } => {
                    if let Some(acc) = first_write(*from) {
                        gpu.add_into(self.gradient(*from, batch), dy, n, acc)?;
                    }
                }
                Op::Softmax { from, depth } => {
                    if let Some(acc) = first_write(*from) {
                        let dx = self.gradient(*from, batch);
                        gpu.softmax_backward(y, dy, dx, n / depth, *depth, acc)?;
                    }
                }
                Op::Dropout { from, rate } => {
                    let Some(acc) = first_write(*from) else {
                        continue;
                    };
                    let dx = self.gradient(*from, batch);
                    match mode {
                        Mode::Train { seed, step } if *rate > 0.0 => {
                            gpu.dropout_backward(dy, dx, n, *rate, seed, step, i as u64, acc)?;
                        }
                        _ => gpu.add_into(dx, dy, n, acc)?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads every parameter gradient, in slot order (for tests).
    #[cfg(test)]
    pub fn read_gradients(&self, gpu: &Gpu) -> Result<Gradients> {
        let flat = gpu.read(&self.grads, self.grads.len())?;
        Ok(self.split(&flat))
    }

    /// Splits a flat parameter-shaped vector by slot.
    #[cfg(test)]
    pub fn split(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(self.network.slots().len());
        let mut at = 0;
        for &slot in self.network.slots() {
            let len = self.network.param(slot).len();
            out.push(flat[at..at + len].to_vec());
            at += len;
        }
        out
    }

    /// Writes the parameters in `source` (the live ones, or a copy of them) into the host
    /// network and returns it.
    pub fn download_into(mut self, gpu: &Gpu, source: Option<&Buf<f32>>) -> Result<Network> {
        let buf = source.unwrap_or(&self.params);
        let flat = gpu
            .read(buf, self.params.len())
            .context("reading the trained weights back")?;
        let mut at = 0;
        for p in self.network.params_mut() {
            let len = p.len();
            p.copy_from_slice(&flat[at..at + len]);
            at += len;
        }
        Ok(self.network)
    }
}
