//! Named model architectures sized to a data set's samples and outputs, and the layer lists a
//! `loam.toml` may spell out instead.

use anyhow::{Result, bail};
use loam::ops::FusedActivation;
use loam::ops::conv2d::ConvSpec;
use serde::{Deserialize, Serialize};

use crate::graph::{Graph, GraphBuilder};

/// The templates `model.template` accepts.
pub const TEMPLATES: [&str; 6] = [
    "mlp",
    "cnn-small",
    "ds-cnn",
    "mobilenet-v1-alpha",
    "resnet-8",
    "autoencoder",
];

const RELU: FusedActivation = FusedActivation::RELU;
const NONE: FusedActivation = FusedActivation::NONE;

/// A fused activation by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `min(max(0, x), 6)`.
    Relu6,
    /// The identity.
    None,
}

impl Activation {
    fn fused(self) -> FusedActivation {
        match self {
            Activation::Relu => RELU,
            Activation::Relu6 => FusedActivation::RELU6,
            Activation::None => NONE,
        }
    }
}

fn one() -> usize {
    1
}
fn three() -> Window {
    Window::Square(3)
}
fn two() -> Window {
    Window::Square(2)
}

/// A kernel or pooling window: `3` in `loam.toml` for 3x3, `[5, 1]` for 5 rows by 1 column
/// (a 1-D window over time when samples are `[time, 1, channels]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a window size: a number such as 3, or [rows, columns]"
)]
pub enum Window {
    /// `n` x `n`.
    Square(usize),
    /// `[rows, columns]`.
    Rect([usize; 2]),
}

impl Window {
    /// `(rows, columns)`.
    pub fn dims(self) -> (usize, usize) {
        match self {
            Window::Square(n) => (n, n),
            Window::Rect([h, w]) => (h, w),
        }
    }
}

/// One entry of `model.layers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution with "same" padding.
    Conv {
        /// Output channels.
        filters: usize,
        /// Kernel size.
        #[serde(default = "three")]
        kernel: Window,
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Depthwise 3x3 convolution with "same" padding.
    Depthwise {
        /// Stride.
        #[serde(default = "one")]
        stride: usize,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Fully connected over the last dimension.
    Dense {
        /// Output features.
        units: usize,
        /// Activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Max pooling, window = stride.
    MaxPool {
        /// Window size.
        #[serde(default = "two")]
        size: Window,
    },
    /// Average pooling, window = stride.
    AvgPool {
        /// Window size.
        #[serde(default = "two")]
        size: Window,
    },
    /// Mean over rows and columns.
    GlobalAvgPool,
    /// To one dimension.
    Flatten,
    /// Dropout while training.
    Dropout {
        /// Drop probability.
        rate: f32,
    },
}

/// The output head a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `classes` outputs and a softmax.
    Classes(usize),
    /// `n` linear outputs.
    Values(usize),
}

fn finish(mut g: GraphBuilder, mut x: usize, head: Head) -> Graph {
    if g.dims(x).len() > 2 {
        x = g.flatten(x);
    }
    match head {
        Head::Classes(n) => {
            let x = g.dense(x, n, NONE);
            g.softmax(x);
        }
        Head::Values(n) => {
            g.dense(x, n, NONE);
        }
    }
    g.finish()
}

fn image(name: &str, sample: &[usize]) -> Result<()> {
    if sample.len() != 3 {
        bail!(
            "template `{name}` needs image samples [height, width, channels]; these are {sample:?} (set data.sample_dims)"
        );
    }
    Ok(())
}

/// Builds template `name` for samples of `sample` dims and the `head`, with seeded weights.
pub fn template(name: &str, sample: &[usize], head: Head, seed: u64) -> Result<Graph> {
    let dims: Vec<usize> = std::iter::once(1).chain(sample.iter().copied()).collect();
    let mut g = GraphBuilder::new(name, &dims, seed);
    let mut x = g.input();
    let graph = match name {
        "mlp" => {
            if sample.len() > 1 {
                x = g.flatten(x);
            }
            x = g.dense(x, 64, RELU);
            x = g.dense(x, 32, RELU);
            finish(g, x, head)
        }
        "cnn-small" => {
            image(name, sample)?;
            x = g.conv(x, 16, (3, 3), 1, RELU);
            if g.dims(x)[1] >= 2 && g.dims(x)[2] >= 2 {
                x = g.max_pool(x, (2, 2));
            }
            x = g.conv(x, 32, (3, 3), 1, RELU);
            if g.dims(x)[1] >= 4 && g.dims(x)[2] >= 4 {
                x = g.max_pool(x, (2, 2));
            }
            x = g.flatten(x);
            x = g.dropout(x, 0.25);
            x = g.dense(x, 64, RELU);
            finish(g, x, head)
        }
        "ds-cnn" => {
            image(name, sample)?;
            let (h, w) = (sample[0], sample[1]);
            let mut spec = ConvSpec::new(64, 1);
            spec.kernel = (h.min(10), w.min(4));
            let spec = spec.stride(2).same(h, w);
            x = g.conv_spec(x, spec, RELU);
            for _ in 0..4 {
                x = g.depthwise(x, 1, RELU);
                x = g.conv(x, 64, (1, 1), 1, RELU);
            }
            x = g.global_avg_pool(x);
            finish(g, x, head)
        }
        "mobilenet-v1-alpha" => {
            image(name, sample)?;
            x = g.conv(x, 8, (3, 3), 2, FusedActivation::RELU6);
            for (channels, stride) in crate::zoo::MOBILENET_V1_025_BLOCKS {
                // Small inputs stop shrinking at one pixel.
                let stride = if g.dims(x)[1] > 1 { stride } else { 1 };
                x = g.depthwise(x, stride, FusedActivation::RELU6);
                x = g.conv(x, channels, (1, 1), 1, FusedActivation::RELU6);
            }
            x = g.global_avg_pool(x);
            finish(g, x, head)
        }
        "resnet-8" => {
            image(name, sample)?;
            x = g.conv(x, 16, (3, 3), 1, RELU);
            let y = g.conv(x, 16, (3, 3), 1, RELU);
            let y = g.conv(y, 16, (3, 3), 1, NONE);
            x = g.add(x, y, RELU);
            for channels in [32, 64] {
                let y = g.conv(x, channels, (3, 3), 2, RELU);
                let y = g.conv(y, channels, (3, 3), 1, NONE);
                let shortcut = g.conv(x, channels, (1, 1), 2, NONE);
                x = g.add(shortcut, y, RELU);
            }
            x = g.global_avg_pool(x);
            finish(g, x, head)
        }
        "autoencoder" => {
            if sample.len() > 1 {
                x = g.flatten(x);
            }
            let n: usize = sample.iter().product();
            let wide = 128.min(n.max(8));
            for _ in 0..2 {
                x = g.dense(x, wide, RELU);
            }
            x = g.dense(x, 8, RELU);
            for _ in 0..2 {
                x = g.dense(x, wide, RELU);
            }
            finish(g, x, Head::Values(n))
        }
        other => bail!(
            "unknown model template `{other}`; known: {}",
            TEMPLATES.join(", ")
        ),
    };
    let mut graph = graph;
    graph.description = format!("{name} trained by loam");
    Ok(graph)
}

/// Builds a network from a layer list, then the `head`.
pub fn from_layers(
    name: &str,
    sample: &[usize],
    layers: &[LayerSpec],
    head: Head,
    seed: u64,
) -> Result<Graph> {
    let dims: Vec<usize> = std::iter::once(1).chain(sample.iter().copied()).collect();
    let mut g = GraphBuilder::new(name, &dims, seed);
    let mut x = g.input();
    for (i, layer) in layers.iter().enumerate() {
        let needs_image = !matches!(
            layer,
            LayerSpec::Dense { .. } | LayerSpec::Flatten | LayerSpec::Dropout { .. }
        );
        let d = g.dims(x).to_vec();
        if needs_image && d.len() != 4 {
            bail!(
                "model.layers[{i}] ({layer:?}) needs an image input, but gets {:?}",
                &d[1..]
            );
        }
        x = match *layer {
            LayerSpec::Conv {
                filters,
                kernel,
                stride,
                activation,
            } => {
                let kernel = kernel.dims();
                if kernel.0 == 0 || kernel.1 == 0 || stride == 0 || filters == 0 {
                    bail!("model.layers[{i}]: filters, kernel and stride must be positive");
                }
                g.conv(x, filters, kernel, stride, activation.fused())
            }
            LayerSpec::Depthwise { stride, activation } => {
                if stride == 0 {
                    bail!("model.layers[{i}]: stride must be positive");
                }
                g.depthwise(x, stride, activation.fused())
            }
            LayerSpec::Dense { units, activation } => {
                if units == 0 {
                    bail!("model.layers[{i}]: units must be positive");
                }
                g.dense(x, units, activation.fused())
            }
            LayerSpec::MaxPool { size } | LayerSpec::AvgPool { size } => {
                let (h, w) = size.dims();
                if h == 0 || w == 0 || h > d[1] || w > d[2] {
                    bail!(
                        "model.layers[{i}]: a {h}x{w} window does not fit {:?}",
                        &d[1..]
                    );
                }
                if matches!(layer, LayerSpec::MaxPool { .. }) {
                    g.max_pool(x, (h, w))
                } else {
                    g.avg_pool(x, (h, w))
                }
            }
            LayerSpec::GlobalAvgPool => g.global_avg_pool(x),
            LayerSpec::Flatten => g.flatten(x),
            LayerSpec::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    bail!("model.layers[{i}]: dropout rate {rate} is outside [0, 1)");
                }
                g.dropout(x, rate)
            }
        };
    }
    let mut graph = finish(g, x, head);
    graph.description = format!("{name} trained by loam");
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_fits_small_and_large_samples() {
        for name in TEMPLATES {
            for sample in [[8usize, 8, 1], [49, 10, 1], [32, 32, 3]] {
                let g = template(name, &sample, Head::Classes(10), 1).unwrap();
                let dims = g.sample_dims().unwrap();
                let out = dims.last().unwrap();
                let want = if name == "autoencoder" {
                    sample.iter().product()
                } else {
                    10
                };
                assert_eq!(out.iter().product::<usize>(), want, "{name} on {sample:?}");
                g.build_f32(false).unwrap();
            }
        }
        assert!(template("cnn-small", &[64], Head::Classes(3), 1).is_err());
        let e = template("lenet", &[8, 8, 1], Head::Classes(3), 1).unwrap_err();
        assert!(e.to_string().contains("known: mlp"), "{e}");
    }

    #[test]
    fn layer_lists_read_from_toml() {
        #[derive(Deserialize)]
        struct M {
            layers: Vec<LayerSpec>,
        }
        let m: M = toml::from_str(
            r#"layers = [
                { type = "conv", filters = 8 },
                { type = "max-pool" },
                { type = "flatten" },
                { type = "dropout", rate = 0.1 },
                { type = "dense", units = 16, activation = "relu6" },
            ]"#,
        )
        .unwrap();
        let g = from_layers("custom", &[8, 8, 1], &m.layers, Head::Classes(4), 1).unwrap();
        assert_eq!(g.sample_dims().unwrap().last().unwrap(), &vec![4]);
        let bad = [LayerSpec::MaxPool {
            size: Window::Square(9),
        }];
        let e = from_layers("custom", &[8, 8, 1], &bad, Head::Classes(4), 1).unwrap_err();
        assert!(e.to_string().contains("model.layers[0]"), "{e}");
        assert!(toml::from_str::<M>(r#"layers = [{ type = "conv", filter = 8 }]"#).is_err());
    }

    /// Time series as `[time, 1, channels]`: windows that span time only.
    #[test]
    fn rectangular_windows_slide_along_one_dimension() {
        #[derive(Deserialize)]
        struct M {
            layers: Vec<LayerSpec>,
        }
        let m: M = toml::from_str(
            r#"layers = [
                { type = "conv", filters = 8, kernel = [5, 1] },
                { type = "max-pool", size = [2, 1] },
                { type = "conv", filters = 4, kernel = [3, 1], stride = 2 },
                { type = "avg-pool", size = [5, 1] },
            ]"#,
        )
        .unwrap();
        assert_eq!(
            m.layers[0],
            LayerSpec::Conv {
                filters: 8,
                kernel: Window::Rect([5, 1]),
                stride: 1,
                activation: Activation::Relu,
            }
        );
        let g = from_layers("series", &[100, 1, 3], &m.layers, Head::Classes(6), 1).unwrap();
        let dims = g.sample_dims().unwrap();
        // conv [100, 1, 8], pool [50, 1, 8], strided conv [25, 1, 4], pool [5, 1, 4].
        assert_eq!(dims[1], vec![100, 1, 8]);
        assert_eq!(dims[2], vec![50, 1, 8]);
        assert_eq!(dims[4], vec![5, 1, 4]);
        // 5x1 kernels: 5 * 3 weights per filter, not 25 * 3.
        let crate::graph::Layer::Conv { weights, .. } = &g.layers[1] else {
            panic!("layer 1 is the first convolution")
        };
        assert_eq!(weights.len(), 8 * 5 * 3);
        g.build_f32(false).unwrap();
        // A square window that is too wide for one column is refused, naming the layer.
        let square = [LayerSpec::MaxPool {
            size: Window::Square(2),
        }];
        let e = from_layers("series", &[100, 1, 3], &square, Head::Classes(6), 1).unwrap_err();
        assert!(e.to_string().contains("2x2 window does not fit"), "{e}");
        let e = toml::from_str::<M>(r#"layers = [{ type = "conv", filters = 8, kernel = "5" }]"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("[rows, columns]"), "{e}");
    }
}
