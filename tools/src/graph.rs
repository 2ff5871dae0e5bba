//! A float network as a list of layers, written as a `.loam` model in f32 or, after
//! calibration on sample inputs, in int8 with TFLite's quantization scheme.
//!
//! Calibration runs the float model with every intermediate tensor exposed as an output and
//! records each tensor's range; int8 activations take affine parameters covering those
//! ranges, weights are quantized symmetrically per output channel by the runtime's builder.
//! This is min/max post-training quantization; `loam quantize` adds better range choices.

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};

use loam::format::AlignedBytes;
use loam::format::writer::{Built, ModelBuilder, QuantSpec, TensorId};
use loam::ops::FusedActivation;
use loam::ops::conv2d::ConvSpec;
use loam::quant::QuantParams;
use loam::{DType, Interpreter, Model};

/// One layer; `from` fields name earlier layers by index (layer 0 is the input).
#[derive(Debug, Clone)]
pub enum Layer {
    /// The graph input.
    Input {
        /// Its dimensions (NHWC for images).
        dims: Vec<usize>,
    },
    /// 2-D convolution; `weights` are `[out][kh][kw][in/groups]`.
    Conv {
        /// Producer.
        from: usize,
        /// Hyperparameters.
        spec: ConvSpec,
        /// Filter.
        weights: Vec<f32>,
        /// Bias per output channel.
        bias: Vec<f32>,
        /// Fused activation.
        activation: FusedActivation,
    },
    /// Depthwise convolution; `weights` are `[kh][kw][out]`.
    Depthwise {
        /// Producer.
        from: usize,
        /// Hyperparameters (`out_channels` = in * multiplier).
        spec: ConvSpec,
        /// Filter.
        weights: Vec<f32>,
        /// Bias per output channel.
        bias: Vec<f32>,
        /// Fused activation.
        activation: FusedActivation,
    },
    /// Fully connected over the last dimension; `weights` are `[out][in]`.
    Dense {
        /// Producer.
        from: usize,
        /// Weights.
        weights: Vec<f32>,
        /// Bias.
        bias: Vec<f32>,
        /// Fused activation.
        activation: FusedActivation,
    },
    /// Max pooling.
    MaxPool {
        /// Producer.
        from: usize,
        /// Window `(h, w)`.
        kernel: (usize, usize),
        /// Stride `(h, w)`.
        stride: (usize, usize),
    },
    /// Average pooling (no padding).
    AvgPool {
        /// Producer.
        from: usize,
        /// Window `(h, w)`.
        kernel: (usize, usize),
        /// Stride `(h, w)`.
        stride: (usize, usize),
    },
    /// Mean over H and W.
    GlobalAvgPool {
        /// Producer.
        from: usize,
    },
    /// Elementwise sum.
    Add {
        /// First operand.
        a: usize,
        /// Second operand.
        b: usize,
        /// Fused activation.
        activation: FusedActivation,
    },
    /// New shape, same elements.
    Reshape {
        /// Producer.
        from: usize,
        /// Target dimensions.
        dims: Vec<usize>,
    },
    /// Softmax over the last dimension.
    Softmax {
        /// Producer.
        from: usize,
    },
    /// Inverted dropout while training (each element zeroed with probability `rate`, the rest
    /// scaled by `1 / (1 - rate)`); the identity in a written model.
    Dropout {
        /// Producer.
        from: usize,
        /// Probability of dropping an element, in `[0, 1)`.
        rate: f32,
    },
}

/// A network: layers in execution order, the last one is the output.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Model name.
    pub name: String,
    /// What the model is, for its metadata.
    pub description: String,
    /// Class names, for its metadata.
    pub labels: Vec<String>,
    /// Named constants for its metadata (preprocessing, drift statistics).
    pub constants: Vec<(String, Vec<f32>)>,
    /// Layers; `layers[0]` is the input.
    pub layers: Vec<Layer>,
}

/// The value range of each layer's output, from calibration.
pub type Ranges = Vec<(f32, f32)>;

/// The name the writer gives layer `i`'s op and tensor: its kind and index (`conv3`).
pub fn layer_name(i: usize, layer: &Layer) -> String {
    let kind = match layer {
        Layer::Input { .. } => "input",
        Layer::Conv { .. } => "conv",
        Layer::Depthwise { .. } => "depthwise",
        Layer::Dense { .. } => "dense",
        Layer::MaxPool { .. } => "maxpool",
        Layer::AvgPool { .. } => "avgpool",
        Layer::GlobalAvgPool { .. } => "gap",
        Layer::Add { .. } => "add",
        Layer::Reshape { .. } => "reshape",
        Layer::Softmax { .. } => "softmax",
        Layer::Dropout { .. } => "dropout",
    };
    format!("{kind}{i}")
}

impl Graph {
    /// Writes the float model. With `expose_all`, every layer's output is a graph output
    /// (for calibration).
    pub fn build_f32(&self, expose_all: bool) -> Result<Built> {
        self.build(None, expose_all)
    }

    /// Writes the int8 model: int8 input and output, activations quantized over `ranges`.
    pub fn build_i8(&self, ranges: &Ranges) -> Result<Built> {
        self.build(Some(ranges), false)
    }

    /// [`Graph::build_i8`] with every layer's output (dropout layers left out) a graph
    /// output, in layer order, for per-layer error measurements.
    pub fn build_i8_exposed(&self, ranges: &Ranges) -> Result<Built> {
        self.build(Some(ranges), true)
    }

    fn build(&self, ranges: Option<&Ranges>, expose_all: bool) -> Result<Built> {
        let mut b = ModelBuilder::new(&self.name);
        b.metadata.description = self.description.clone();
        b.metadata.labels = self.labels.clone();
        b.metadata.constants = self.constants.clone();
        let q = |i: usize| -> QuantParams {
            let (lo, hi) = ranges.map_or((0.0, 1.0), |r| r[i]);
            QuantParams::i8_from_range(lo, hi)
        };
        let mut ids: Vec<TensorId> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let name = layer_name(i, layer);
            let id = match layer {
                Layer::Input { dims } => {
                    let quant = match ranges {
                        Some(_) => {
                            let p = q(i);
                            QuantSpec::PerTensor {
                                scale: p.scale,
                                zero_point: p.zero_point,
                            }
                        }
                        None => QuantSpec::None,
                    };
                    let dtype = if ranges.is_some() {
                        DType::I8
                    } else {
                        DType::F32
                    };
                    let id = b.tensor("input", dtype, dims, quant)?;
                    b.input(id);
                    id
                }
                Layer::Conv {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => match ranges {
                    None => {
                        b.conv2d_f32(&name, ids[*from], *spec, weights, Some(bias), *activation)?
                    }
                    Some(_) => b.conv2d_i8(
                        &name,
                        ids[*from],
                        *spec,
                        weights,
                        Some(bias),
                        q(i),
                        *activation,
                    )?,
                },
                Layer::Depthwise {
                    from,
                    spec,
                    weights,
                    bias,
                    activation,
                } => match ranges {
                    None => b.depthwise_conv2d_f32(
                        &name,
                        ids[*from],
                        *spec,
                        weights,
                        Some(bias),
                        *activation,
                    )?,
                    Some(_) => b.depthwise_conv2d_i8(
                        &name,
                        ids[*from],
                        *spec,
                        weights,
                        Some(bias),
                        q(i),
                        *activation,
                    )?,
                },
                Layer::Dense {
                    from,
                    weights,
                    bias,
                    activation,
                } => match ranges {
                    None => {
                        b.fully_connected_f32(&name, ids[*from], weights, Some(bias), *activation)?
                    }
                    Some(_) => b.fully_connected_i8(
                        &name,
                        ids[*from],
                        weights,
                        Some(bias),
                        q(i),
                        *activation,
                    )?,
                },
                Layer::MaxPool {
                    from,
                    kernel,
                    stride,
                } => b.max_pool2d(
                    &name,
                    ids[*from],
                    *kernel,
                    *stride,
                    [0; 4],
                    FusedActivation::NONE,
                )?,
                Layer::AvgPool {
                    from,
                    kernel,
                    stride,
                } => b.average_pool2d(
                    &name,
                    ids[*from],
                    *kernel,
                    *stride,
                    [0; 4],
                    FusedActivation::NONE,
                )?,
                Layer::GlobalAvgPool { from } => {
                    b.global_average_pool(&name, ids[*from], ranges.map(|_| q(i)))?
                }
                Layer::Add {
                    a,
                    b: other,
                    activation,
                } => match ranges {
                    None => b.add_f32(&name, ids[*a], ids[*other], *activation)?,
                    Some(_) => b.add_i8(&name, ids[*a], ids[*other], q(i), *activation)?,
                },
                Layer::Reshape { from, dims } => b.reshape(&name, ids[*from], dims)?,
                Layer::Softmax { from } => match ranges {
                    None => b.softmax_f32(&name, ids[*from], 1.0)?,
                    Some(_) => b.softmax_i8(&name, ids[*from], 1.0)?,
                },
                // Inference sees the producer itself; with `expose_all` the same tensor is
                // exposed twice, which calibration reads as the same range.
                Layer::Dropout { from, .. } => ids[*from],
            };
            ids.push(id);
        }
        if expose_all {
            for (layer, &id) in self.layers.iter().zip(&ids).skip(1) {
                if !matches!(layer, Layer::Dropout { .. }) {
                    b.output(id);
                }
            }
        } else if let Some(&last) = ids.last() {
            b.output(last);
        }
        b.build()
            .with_context(|| format!("writing model `{}`", self.name))
    }

    /// Runs the float model on `samples` seeded random inputs in `[-1, 1)` and returns each
    /// layer's output range (the input's included).
    pub fn calibrate(&self, samples: usize, seed: u64) -> Result<Ranges> {
        let len: usize = self.sample_dims()?[0].iter().product();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let inputs: Vec<f32> = (0..samples.max(1) * len)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut ranges = self.calibrate_on(&inputs)?;
        // The input's range is the sampling range, not what the samples happened to reach.
        ranges[0] = (-1.0, 1.0);
        Ok(ranges)
    }

    /// Runs the float model on `inputs` (whole samples, back to back) and returns each
    /// layer's output range (the input's included).
    pub fn calibrate_on(&self, inputs: &[f32]) -> Result<Ranges> {
        let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); self.layers.len()];
        self.for_each_output(inputs, &mut |layer, values| {
            let range = &mut ranges[layer];
            for &v in values {
                range.0 = range.0.min(v);
                range.1 = range.1.max(v);
            }
        })?;
        if ranges
            .iter()
            .any(|(lo, hi)| !(lo.is_finite() && hi.is_finite()))
        {
            bail!("calibration produced a non-finite range");
        }
        Ok(ranges)
    }

    /// Runs the float model on `inputs` (whole samples, back to back) and calls
    /// `visit(layer, values)` with every layer's output for every sample (the input's as
    /// layer 0; a dropout layer sees its producer's values).
    pub fn for_each_output(
        &self,
        inputs: &[f32],
        visit: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let built = self.build_f32(true)?;
        let bytes = AlignedBytes::new(&built.bytes);
        let model = Model::from_bytes(&bytes)?;
        let mut arena = vec![0u8; model.arena_size() + 16];
        let mut interpreter = Interpreter::new(&model, &mut arena)?;
        let len = interpreter.input::<f32>(0)?.len();
        if len == 0 || inputs.is_empty() || !inputs.len().is_multiple_of(len) {
            bail!(
                "calibration inputs hold {} values, not a whole number of {len}-value samples",
                inputs.len()
            );
        }
        // Which graph output carries each layer (dropout layers are their producer).
        let mut output_of = vec![0usize; self.layers.len()];
        let mut next = 0;
        for (i, layer) in self.layers.iter().enumerate().skip(1) {
            output_of[i] = match layer {
                Layer::Dropout { from, .. } => output_of[*from],
                _ => {
                    next += 1;
                    next - 1
                }
            };
        }
        for sample in inputs.chunks_exact(len) {
            interpreter.input_mut::<f32>(0)?.copy_from_slice(sample);
            visit(0, sample);
            interpreter.invoke()?;
            for (i, &output) in output_of.iter().enumerate().skip(1) {
                visit(i, interpreter.output::<f32>(output)?);
            }
        }
        Ok(())
    }

    /// Each layer's output dimensions for one sample (the batch dimension left out), checked
    /// layer by layer; the error names the layer that does not fit its producer.
    pub fn sample_dims(&self) -> Result<Vec<Vec<usize>>> {
        let mut dims: Vec<Vec<usize>> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let name = layer_name(i, layer);
            let of = |from: usize| -> Result<&Vec<usize>> {
                if from >= i {
                    bail!("layer `{name}` reads layer {from}, which does not come before it");
                }
                Ok(&dims[from])
            };
            let image = |from: usize| -> Result<[usize; 3]> {
                match of(from)?.as_slice() {
                    &[h, w, c] => Ok([h, w, c]),
                    other => bail!("layer `{name}` needs an [h, w, c] image, got {other:?}"),
                }
            };
            let d = match layer {
                Layer::Input { dims } => match dims.split_first() {
                    Some((_, rest)) if !rest.is_empty() => rest.to_vec(),
                    _ => bail!("the input needs a batch dimension and a sample shape"),
                },
                Layer::Conv { from, spec, .. } | Layer::Depthwise { from, spec, .. } => {
                    let [h, w, c] = image(*from)?;
                    let depthwise = matches!(layer, Layer::Depthwise { .. });
                    if depthwise && spec.out_channels % c.max(1) != 0 {
                        bail!(
                            "layer `{name}`: {} outputs are not a multiple of {c} channels",
                            spec.out_channels
                        );
                    }
                    if !depthwise && (c % spec.groups.max(1) != 0 || spec.groups == 0) {
                        bail!(
                            "layer `{name}`: {c} channels do not split into {} groups",
                            spec.groups
                        );
                    }
                    let [pt, pl, pb, pr] = spec.padding;
                    let size =
                        |input, k, s, d, a, b| loam::ops::conv2d::output_size(input, k, s, d, a, b);
                    let (Some(oh), Some(ow)) = (
                        size(h, spec.kernel.0, spec.stride.0, spec.dilation.0, pt, pb),
                        size(w, spec.kernel.1, spec.stride.1, spec.dilation.1, pl, pr),
                    ) else {
                        bail!("layer `{name}`: the kernel does not fit a {h}x{w} input");
                    };
                    vec![oh, ow, spec.out_channels]
                }
                Layer::Dense { from, bias, .. } => {
                    let mut d = of(*from)?.clone();
                    if let Some(last) = d.last_mut() {
                        *last = bias.len();
                    }
                    d
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
                    let [h, w, c] = image(*from)?;
                    if kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
                        bail!("layer `{name}`: kernel and stride must be positive");
                    }
                    if kernel.0 > h || kernel.1 > w {
                        bail!("layer `{name}`: a {kernel:?} window does not fit a {h}x{w} input");
                    }
                    vec![
                        (h - kernel.0) / stride.0 + 1,
                        (w - kernel.1) / stride.1 + 1,
                        c,
                    ]
                }
                Layer::GlobalAvgPool { from } => {
                    let [_, _, c] = image(*from)?;
                    vec![1, 1, c]
                }
                Layer::Add { a, b, .. } => {
                    if of(*a)? != of(*b)? {
                        bail!("layer `{name}` adds {:?} to {:?}", of(*a)?, of(*b)?);
                    }
                    of(*a)?.clone()
                }
                Layer::Reshape { from, dims } => {
                    let count = |d: &[usize]| d.iter().product::<usize>();
                    let rest = dims.get(1..).unwrap_or_default();
                    if count(of(*from)?) != count(rest) {
                        bail!("layer `{name}` reshapes {:?} to {dims:?}", of(*from)?);
                    }
                    rest.to_vec()
                }
                Layer::Softmax { from } | Layer::Dropout { from, .. } => of(*from)?.clone(),
            };
            dims.push(d);
        }
        Ok(dims)
    }
}

/// Builds layer lists with seeded He-initialised weights, tracking each layer's shape.
pub struct GraphBuilder {
    graph: Graph,
    dims: Vec<Vec<usize>>,
    rng: rand::rngs::StdRng,
}

impl GraphBuilder {
    /// A graph called `name` with one input of `dims`.
    pub fn new(name: &str, dims: &[usize], seed: u64) -> GraphBuilder {
        GraphBuilder {
            graph: Graph {
                name: name.into(),
                description: "reference architecture with seeded, untrained weights".into(),
                labels: Vec::new(),
                constants: Vec::new(),
                layers: vec![Layer::Input {
                    dims: dims.to_vec(),
                }],
            },
            dims: vec![dims.to_vec()],
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// The input layer's index.
    pub fn input(&self) -> usize {
        0
    }

    /// The dimensions of layer `i`'s output.
    pub fn dims(&self, i: usize) -> &[usize] {
        &self.dims[i]
    }

    fn push(&mut self, layer: Layer, dims: Vec<usize>) -> usize {
        self.graph.layers.push(layer);
        self.dims.push(dims);
        self.graph.layers.len() - 1
    }

    fn he(&mut self, n: usize, fan_in: usize) -> Vec<f32> {
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect()
    }

    fn bias(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(-0.05..0.05)).collect()
    }

    /// A convolution with "same" padding.
    pub fn conv(
        &mut self,
        from: usize,
        out: usize,
        kernel: (usize, usize),
        stride: usize,
        activation: FusedActivation,
    ) -> usize {
        let d = self.dims[from].clone();
        let mut spec = ConvSpec::new(out, 1);
        spec.kernel = kernel;
        let spec = spec.stride(stride).same(d[1], d[2]);
        let fan_in = kernel.0 * kernel.1 * d[3];
        let weights = self.he(out * fan_in, fan_in);
        let bias = self.bias(out);
        let oh = d[1].div_ceil(stride);
        let ow = d[2].div_ceil(stride);
        self.push(
            Layer::Conv {
                from,
                spec,
                weights,
                bias,
                activation,
            },
            vec![d[0], oh, ow, out],
        )
    }

    /// A depthwise 3x3 convolution with "same" padding and multiplier 1.
    pub fn depthwise(&mut self, from: usize, stride: usize, activation: FusedActivation) -> usize {
        let d = self.dims[from].clone();
        let c = d[3];
        let spec = ConvSpec::new(c, 3).stride(stride).same(d[1], d[2]);
        let weights = self.he(9 * c, 9);
        let bias = self.bias(c);
        self.push(
            Layer::Depthwise {
                from,
                spec,
                weights,
                bias,
                activation,
            },
            vec![d[0], d[1].div_ceil(stride), d[2].div_ceil(stride), c],
        )
    }

    /// A fully-connected layer over the last dimension.
    pub fn dense(&mut self, from: usize, out: usize, activation: FusedActivation) -> usize {
        let mut d = self.dims[from].clone();
        let n = *d.last().unwrap_or(&1);
        let weights = self.he(out * n, n);
        let bias = self.bias(out);
        if let Some(last) = d.last_mut() {
            *last = out;
        }
        self.push(
            Layer::Dense {
                from,
                weights,
                bias,
                activation,
            },
            d,
        )
    }

    /// Average pooling with a `kernel` x `kernel` window and equal stride.
    pub fn avg_pool(&mut self, from: usize, kernel: (usize, usize)) -> usize {
        let d = self.dims[from].clone();
        self.push(
            Layer::AvgPool {
                from,
                kernel,
                stride: kernel,
            },
            vec![d[0], d[1] / kernel.0, d[2] / kernel.1, d[3]],
        )
    }

    /// Max pooling with a `kernel` x `kernel` window and equal stride.
    pub fn max_pool(&mut self, from: usize, kernel: (usize, usize)) -> usize {
        let d = self.dims[from].clone();
        self.push(
            Layer::MaxPool {
                from,
                kernel,
                stride: kernel,
            },
            vec![d[0], d[1] / kernel.0, d[2] / kernel.1, d[3]],
        )
    }

    /// Mean over H and W.
    pub fn global_avg_pool(&mut self, from: usize) -> usize {
        let d = self.dims[from].clone();
        self.push(Layer::GlobalAvgPool { from }, vec![d[0], 1, 1, d[3]])
    }

    /// Elementwise sum of two layers of the same shape.
    pub fn add(&mut self, a: usize, b: usize, activation: FusedActivation) -> usize {
        let d = self.dims[a].clone();
        self.push(Layer::Add { a, b, activation }, d)
    }

    /// `[N, ...]` to `[N, rest]`.
    pub fn flatten(&mut self, from: usize) -> usize {
        let d = self.dims[from].clone();
        let dims = vec![d[0], d[1..].iter().product()];
        self.push(
            Layer::Reshape {
                from,
                dims: dims.clone(),
            },
            dims,
        )
    }

    /// Dropout while training.
    pub fn dropout(&mut self, from: usize, rate: f32) -> usize {
        let d = self.dims[from].clone();
        self.push(Layer::Dropout { from, rate }, d)
    }

    /// A convolution with explicit hyperparameters.
    pub fn conv_spec(&mut self, from: usize, spec: ConvSpec, activation: FusedActivation) -> usize {
        let d = self.dims[from].clone();
        let fan_in = spec.kernel.0 * spec.kernel.1 * d[3] / spec.groups.max(1);
        let weights = self.he(spec.out_channels * fan_in, fan_in);
        let bias = self.bias(spec.out_channels);
        let [pt, pl, pb, pr] = spec.padding;
        let size =
            |n, k, s, dl, a, b| loam::ops::conv2d::output_size(n, k, s, dl, a, b).unwrap_or(0);
        let oh = size(d[1], spec.kernel.0, spec.stride.0, spec.dilation.0, pt, pb);
        let ow = size(d[2], spec.kernel.1, spec.stride.1, spec.dilation.1, pl, pr);
        self.push(
            Layer::Conv {
                from,
                spec,
                weights,
                bias,
                activation,
            },
            vec![d[0], oh, ow, spec.out_channels],
        )
    }

    /// Softmax over the last dimension.
    pub fn softmax(&mut self, from: usize) -> usize {
        let d = self.dims[from].clone();
        self.push(Layer::Softmax { from }, d)
    }

    /// The finished graph.
    pub fn finish(self) -> Graph {
        self.graph
    }
}
