//! Operators. Each op has its own module holding its attributes, the checks done once when a
//! model loads, a portable `reference` kernel that defines the result, and the per-ISA fast
//! paths beside it.
//!
//! The kernels are public and usable without a model file (each takes plain slices and a
//! geometry struct); the interpreter reaches them through `check` and `run` here, which
//! dispatch on [`OpKind`].

pub mod activation;
#[cfg(all(target_arch = "arm", loam_arm_dsp))]
pub(crate) mod arm_dsp;
#[cfg(all(target_arch = "arm", loam_arm_neon))]
pub(crate) mod arm_neon;
pub mod binary;
pub mod concat;
pub mod conv2d;
pub mod depthwise_conv2d;
pub mod float_weight;
pub mod fully_connected;
mod layer;
pub mod pad;
pub mod pool;
pub mod quantize;
pub(crate) mod requantize;
pub mod reshape;
pub mod softmax;
pub mod transpose;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni;

/// The `N` elements of `s` from `at`, as an array the SIMD kernels load whole.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", loam_arm_neon))]
#[inline(always)]
pub(crate) fn lanes<T, const N: usize>(s: &[T], at: usize) -> &[T; N] {
    s[at..at + N].try_into().expect("a slice of N")
}

pub(crate) mod node;
#[cfg(test)]
pub(crate) mod testing;

pub use float_weight::FloatWeight;
pub use layer::{Requantize16Params, RequantizeParams};
pub(crate) use node::{Ctx, Node, Operand};

use serde::{Deserialize, Serialize};

use crate::error::{Error, OpProblem};

macro_rules! op_kinds {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// The operators a `.loam` file can hold; the code is what the file stores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[non_exhaustive]
        pub enum OpKind {
            $($(#[$doc])* $name = $code,)*
        }

        impl OpKind {
            /// Every kind this runtime knows, in code order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$name,)*];

            /// The kind stored as `code`, if this runtime knows it.
            pub const fn from_code(code: u16) -> Option<OpKind> {
                match code {
                    $($code => Some(OpKind::$name),)*
                    _ => None,
                }
            }

            /// The name used in reports and error messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $(OpKind::$name => stringify!($name),)*
                }
            }
        }
    };
}

op_kinds! {
    /// `y = x W^T + b` over the last dimension (Gemm, MatMul with a constant right-hand side).
    FullyConnected = 0,
    /// 2-D convolution, NHWC, with groups; Conv1D is H = 1.
    Conv2d = 1,
    /// Depthwise 2-D convolution with a channel multiplier.
    DepthwiseConv2d = 2,
    /// Elementwise addition with broadcasting.
    Add = 3,
    /// Elementwise subtraction with broadcasting.
    Sub = 4,
    /// Elementwise multiplication with broadcasting.
    Mul = 5,
    /// Concatenation along an axis.
    Concat = 6,
    /// Reshape, Flatten, Squeeze and Unsqueeze: same bytes, new shape.
    Reshape = 7,
    /// Permutation of dimensions.
    Transpose = 8,
    /// Constant padding.
    Pad = 9,
    /// 2-D max pooling, NHWC.
    MaxPool2d = 10,
    /// 2-D average pooling, NHWC.
    AveragePool2d = 11,
    /// Mean over H and W, NHWC.
    GlobalAveragePool = 12,
    /// `max(x, 0)`.
    Relu = 13,
    /// `min(max(x, lo), hi)`: ReLU6 and Clip.
    Clip = 14,
    /// `x` if positive else `alpha * x`.
    LeakyRelu = 15,
    /// `x` if positive else `slope[c] * x`, slope a constant tensor.
    PRelu = 16,
    /// `1 / (1 + exp(-x))`.
    Sigmoid = 17,
    /// `tanh(x)`.
    Tanh = 18,
    /// `clamp(alpha * x + beta, 0, 1)`.
    HardSigmoid = 19,
    /// `x * relu6(x + 3) / 6`.
    HardSwish = 20,
    /// Softmax over the last dimension.
    Softmax = 21,
    /// Log-softmax over the last dimension.
    LogSoftmax = 22,
    /// f32 to int8/int16.
    Quantize = 23,
    /// int8/int16 to f32.
    Dequantize = 24,
    /// Batch normalization (inference form) over the last (channel) dimension.
    BatchNorm = 25,
}

impl OpKind {
    /// The code stored in the file.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Whether this is a weighted layer (FullyConnected, Conv2d, DepthwiseConv2d): operands
    /// `[input, weights, bias?, multipliers?]`, weights in f32, f16 or int8.
    pub const fn is_weighted_layer(self) -> bool {
        matches!(
            self,
            OpKind::FullyConnected | OpKind::Conv2d | OpKind::DepthwiseConv2d
        )
    }

    /// The input an output may share arena storage with (computing in place), if the op
    /// allows it. The planner uses this to reuse memory; validation allows exactly this
    /// overlap and no other.
    pub const fn in_place_inputs(self) -> &'static [u8] {
        match self {
            OpKind::Relu
            | OpKind::Clip
            | OpKind::LeakyRelu
            | OpKind::PRelu
            | OpKind::Sigmoid
            | OpKind::Tanh
            | OpKind::HardSigmoid
            | OpKind::HardSwish
            | OpKind::BatchNorm
            | OpKind::Reshape => &[0],
            OpKind::Add | OpKind::Sub | OpKind::Mul => &[0, 1],
            _ => &[],
        }
    }
}

impl core::fmt::Display for OpKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fused activation as a clamp range in real numbers: `(-inf, inf)` for none, `(0, inf)`
/// for ReLU, `(0, 6)` for ReLU6. Quantized kernels map it onto the output's integer range the
/// way TFLite's `CalculateActivationRangeQuantized` does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FusedActivation {
    /// Lower bound (may be `-inf`).
    pub min: f32,
    /// Upper bound (may be `inf`).
    pub max: f32,
}

impl FusedActivation {
    /// No activation.
    pub const NONE: FusedActivation = FusedActivation {
        min: f32::NEG_INFINITY,
        max: f32::INFINITY,
    };
    /// ReLU.
    pub const RELU: FusedActivation = FusedActivation {
        min: 0.0,
        max: f32::INFINITY,
    };
    /// ReLU6.
    pub const RELU6: FusedActivation = FusedActivation { min: 0.0, max: 6.0 };

    pub(crate) fn check(&self) -> Result<(), OpProblem> {
        if self.min.is_nan() || self.max.is_nan() || self.min > self.max {
            return Err(OpProblem::Attribute("activation range"));
        }
        Ok(())
    }

    /// The clamp range on a quantized output with this scale and zero point, within the
    /// storage range `[qmin, qmax]`.
    pub fn quantized(&self, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> (i32, i32) {
        let q = |r: f32| -> i64 {
            let steps = libm::roundf(r / scale);
            // Infinite or huge bounds saturate; the clamp below brings them into range.
            i64::from(zero_point) + steps.clamp(-4e9, 4e9) as i64
        };
        let lo = if self.min == f32::NEG_INFINITY {
            i64::from(qmin)
        } else {
            q(self.min).max(i64::from(qmin))
        };
        let hi = if self.max == f32::INFINITY {
            i64::from(qmax)
        } else {
            q(self.max).min(i64::from(qmax))
        };
        // A minimum above the output range (possible in a hand-made file) must not make the
        // range empty: the bounds are ordered before the upper one is clamped.
        let lo = lo.clamp(i64::from(qmin), i64::from(qmax));
        (lo as i32, hi.clamp(lo, i64::from(qmax)) as i32)
    }
}

/// How close a float fast path must come to its reference kernel. Named, not scattered
/// epsilons: each op states which one it promises.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Tolerance {
    /// Bit for bit (all integer kernels; float kernels that only move or compare values).
    Exact,
    /// A reordered sum of `n` products: `|got - want| <= 2 n eps * sum|terms| + 1e-30`, the
    /// classic bound for floating-point summation in any order.
    DotProduct,
    /// `|got - want| <= abs + rel * |want|`, for approximated transcendental functions.
    Relative {
        /// Absolute slack.
        abs: f32,
        /// Relative slack.
        rel: f32,
    },
}

impl Tolerance {
    /// Whether `got` is acceptable for `want`. For [`Tolerance::DotProduct`], `terms` is the
    /// number of summed products and `magnitude` the sum of their absolute values.
    pub fn accepts(&self, want: f32, got: f32, terms: usize, magnitude: f32) -> bool {
        if want.is_nan() || got.is_nan() {
            return want.is_nan() && got.is_nan();
        }
        if got == want {
            return true;
        }
        let diff = (got - want).abs();
        match *self {
            Tolerance::Exact => got.to_bits() == want.to_bits() || got == want,
            Tolerance::DotProduct => {
                diff <= 2.0 * (terms as f32 + 1.0) * f32::EPSILON * magnitude + 1e-30
            }
            Tolerance::Relative { abs, rel } => diff <= abs + rel * want.abs(),
        }
    }
}

/// The kernel this build and CPU run for `kind` on `dtype` elements: `"reference"` or the
/// fast path's name (`"avx2"`, `"neon"`, `"dotprod"`, `"dsp"`), for reports such as
/// `loam bench`. `dtype` is the type the op computes on: its input's, except for Quantize,
/// whose integer output type picks the kernel.
pub fn kernel_name(kind: OpKind, dtype: crate::tensor::DType) -> &'static str {
    use crate::isa::best_name;
    use crate::tensor::DType;
    match (kind, dtype) {
        (OpKind::FullyConnected, DType::I8) => best_name(fully_connected::I8_KERNELS),
        (OpKind::FullyConnected, DType::I16) => best_name(fully_connected::I16_KERNELS),
        (OpKind::Conv2d, DType::I16) => best_name(conv2d::I16_KERNELS),
        (OpKind::DepthwiseConv2d, DType::I16) => best_name(depthwise_conv2d::I16_KERNELS),
        (OpKind::FullyConnected, DType::F32) => best_name(fully_connected::F32_KERNELS),
        (OpKind::Conv2d, DType::I8) => best_name(conv2d::I8_KERNELS),
        (OpKind::Conv2d, DType::F32) => best_name(conv2d::F32_KERNELS),
        (OpKind::DepthwiseConv2d, DType::I8) => best_name(depthwise_conv2d::I8_KERNELS),
        (OpKind::DepthwiseConv2d, DType::F32) => best_name(depthwise_conv2d::F32_KERNELS),
        (OpKind::Add | OpKind::Sub | OpKind::Mul, DType::I8) => best_name(binary::I8_KERNELS),
        (OpKind::Add | OpKind::Sub | OpKind::Mul, DType::F32) => best_name(binary::F32_KERNELS),
        (OpKind::MaxPool2d, DType::I8) => best_name(pool::MAX_I8_KERNELS),
        (OpKind::MaxPool2d, DType::F32) => best_name(pool::MAX_F32_KERNELS),
        (OpKind::AveragePool2d, DType::I8) => best_name(pool::AVERAGE_I8_KERNELS),
        (OpKind::AveragePool2d, DType::F32) => best_name(pool::AVERAGE_F32_KERNELS),
        (OpKind::GlobalAveragePool, DType::I8) => best_name(pool::GLOBAL_I8_KERNELS),
        (OpKind::GlobalAveragePool, DType::F32) => best_name(pool::GLOBAL_F32_KERNELS),
        (OpKind::Softmax | OpKind::LogSoftmax, DType::F32) => best_name(softmax::F32_KERNELS),
        (OpKind::Softmax | OpKind::LogSoftmax, DType::I8) => best_name(softmax::I8_KERNELS),
        (OpKind::Quantize, DType::I8) => best_name(quantize::QUANTIZE_I8_KERNELS),
        (OpKind::Quantize, DType::I16) => best_name(quantize::QUANTIZE_I16_KERNELS),
        (OpKind::Dequantize, DType::I8) => best_name(quantize::DEQUANTIZE_I8_KERNELS),
        (OpKind::Dequantize, DType::I16) => best_name(quantize::DEQUANTIZE_I16_KERNELS),
        (OpKind::Relu | OpKind::Clip | OpKind::LeakyRelu, DType::F32) => {
            best_name(activation::UNARY_F32_KERNELS)
        }
        _ => "reference",
    }
}

/// Checks an op's operands and attributes when a model loads.
pub(crate) fn check(kind: OpKind, node: &Node<'_>) -> Result<(), OpProblem> {
    match kind {
        OpKind::FullyConnected => fully_connected::check(node),
        OpKind::Conv2d => conv2d::check(node),
        OpKind::DepthwiseConv2d => depthwise_conv2d::check(node),
        OpKind::Add | OpKind::Sub | OpKind::Mul => binary::check(kind, node),
        OpKind::Concat => concat::check(node),
        OpKind::Reshape => reshape::check(node),
        OpKind::Transpose => transpose::check(node),
        OpKind::Pad => pad::check(node),
        OpKind::MaxPool2d | OpKind::AveragePool2d | OpKind::GlobalAveragePool => {
            pool::check(kind, node)
        }
        OpKind::Relu
        | OpKind::Clip
        | OpKind::LeakyRelu
        | OpKind::PRelu
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::BatchNorm => activation::check(kind, node),
        OpKind::Softmax | OpKind::LogSoftmax => softmax::check(kind, node),
        OpKind::Quantize | OpKind::Dequantize => quantize::check(kind, node),
    }
}

/// Scratch bytes an op needs while it runs (the largest any of its kernels needs on any ISA,
/// so a file plans the same arena for every target).
/// Words of data the op keeps from one run to the next when its interpreter has room for
/// them ([`crate::Interpreter::arena_size_with_records`]): constants derived from the model
/// that the op would otherwise derive again on every run. Zero for most ops.
pub(crate) fn prepared_len(kind: OpKind, node: &Node<'_>) -> usize {
    match kind {
        OpKind::FullyConnected => fully_connected::prepared_len(node),
        OpKind::Conv2d => conv2d::prepared_len(node),
        OpKind::Softmax | OpKind::LogSoftmax => softmax::prepared_len(node),
        _ => 0,
    }
}

/// Fills the op's [`prepared_len`] words; `None` for a node that does not check out (which a
/// validated model does not have).
pub(crate) fn prepare(kind: OpKind, node: &Node<'_>, words: &mut [i32]) -> Option<()> {
    if words.is_empty() {
        return Some(());
    }
    match kind {
        OpKind::FullyConnected => fully_connected::prepare(node, words),
        OpKind::Conv2d => conv2d::prepare(node, words),
        OpKind::Softmax | OpKind::LogSoftmax => softmax::prepare(kind, node, words),
        _ => Some(()),
    }
}

pub(crate) fn scratch_bytes(kind: OpKind, node: &Node<'_>) -> Result<usize, OpProblem> {
    match kind {
        OpKind::Conv2d => conv2d::scratch_bytes(node),
        OpKind::DepthwiseConv2d => depthwise_conv2d::scratch_bytes(node),
        _ => Ok(0),
    }
}

/// Runs an op whose operands passed [`check`].
pub(crate) fn run(kind: OpKind, ctx: &Ctx<'_, '_>) -> Result<(), Error> {
    match kind {
        OpKind::FullyConnected => fully_connected::run(ctx),
        OpKind::Conv2d => conv2d::run(ctx),
        OpKind::DepthwiseConv2d => depthwise_conv2d::run(ctx),
        OpKind::Add | OpKind::Sub | OpKind::Mul => binary::run(kind, ctx),
        OpKind::Concat => concat::run(ctx),
        OpKind::Reshape => reshape::run(ctx),
        OpKind::Transpose => transpose::run(ctx),
        OpKind::Pad => pad::run(ctx),
        OpKind::MaxPool2d | OpKind::AveragePool2d | OpKind::GlobalAveragePool => {
            pool::run(kind, ctx)
        }
        OpKind::Relu
        | OpKind::Clip
        | OpKind::LeakyRelu
        | OpKind::PRelu
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::BatchNorm => activation::run(kind, ctx),
        OpKind::Softmax | OpKind::LogSoftmax => softmax::run(kind, ctx),
        OpKind::Quantize | OpKind::Dequantize => quantize::run(kind, ctx),
    }
}
