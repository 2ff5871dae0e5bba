//! Tensor descriptions: element types, shapes and quantization, as a `.loam` file stores them
//! and as the kernels see them.

use serde::{Deserialize, Serialize};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16; weights only, widened to f32 on the fly.
    F16,
    /// Signed 8-bit integer, quantized activations and weights.
    I8,
    /// Signed 16-bit integer, quantized activations.
    I16,
    /// Signed 32-bit integer: biases and requantization multipliers.
    I32,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I8 => 1,
        }
    }

    /// The lowercase name used in reports and error messages.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
        }
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust element types that a tensor's bytes can be viewed as.
pub trait Element: bytemuck::Pod + Default + PartialEq + core::fmt::Debug + 'static {
    /// The `DType` whose elements are `Self`.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for i8 {
    const DTYPE: DType = DType::I8;
}
impl Element for i16 {
    const DTYPE: DType = DType::I16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}

/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 6;

/// A tensor shape: up to [`MAX_RANK`] dimensions, row-major, activations in NHWC order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    rank: u8,
    dims: [u32; MAX_RANK],
}

impl Shape {
    /// A shape from its dimensions; `None` if there are more than [`MAX_RANK`] or one does not
    /// fit in `u32`.
    pub fn new(dims: &[usize]) -> Option<Shape> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut stored = [0u32; MAX_RANK];
        for (s, &d) in stored.iter_mut().zip(dims) {
            *s = u32::try_from(d).ok()?;
        }
        Some(Shape {
            rank: dims.len() as u8,
            dims: stored,
        })
    }

    /// The stored form: the rank and every dimension slot (unused ones zero).
    pub(crate) fn stored(&self) -> (u8, [u32; MAX_RANK]) {
        (self.rank, self.dims)
    }

    /// A shape from its stored form ([`Shape::stored`]); `None` for a rank past [`MAX_RANK`].
    pub(crate) fn from_stored(rank: u8, dims: [u32; MAX_RANK]) -> Option<Shape> {
        (usize::from(rank) <= MAX_RANK).then_some(Shape { rank, dims })
    }

    /// The shape of a scalar (rank 0, one element).
    pub const fn scalar() -> Shape {
        Shape {
            rank: 0,
            dims: [0; MAX_RANK],
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        usize::from(self.rank).min(MAX_RANK)
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.rank()]
    }

    /// Dimension `i` as `usize`, or 0 when `i` is out of range.
    pub fn dim(&self, i: usize) -> usize {
        self.dims().get(i).map_or(0, |&d| d as usize)
    }

    /// The element count, or `None` when it overflows `usize`. A zero dimension gives 0.
    pub fn elements(&self) -> Option<usize> {
        self.dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
    }

    /// Whether the stored form is canonical: rank in range, unused dimensions zero, no zero
    /// dimension. Files are checked with this when they load.
    pub fn is_well_formed(&self) -> bool {
        usize::from(self.rank) <= MAX_RANK
            && self.dims[self.rank()..].iter().all(|&d| d == 0)
            && self.dims().iter().all(|&d| d > 0)
    }

    /// Whether this shape has exactly these dimensions.
    pub fn is(&self, dims: &[usize]) -> bool {
        self.rank() == dims.len() && self.dims().iter().zip(dims).all(|(&a, &b)| a as usize == b)
    }
}

impl core::fmt::Debug for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.dims()).finish()
    }
}

impl core::fmt::Display for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// How a tensor's integers map to real numbers: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Quantization {
    /// Not quantized (float tensors, or integers that are plain integers such as multipliers).
    None,
    /// One scale and zero point for the whole tensor.
    PerTensor {
        /// Real value of one step; positive and finite.
        scale: f32,
        /// The integer that stands for real 0; inside the storage type's range.
        zero_point: i32,
    },
    /// Symmetric (zero point 0) with one scale per slice along `axis`, TFLite's int8 weight
    /// scheme. The scales are `dim(axis)` little-endian f32 at `scales_offset` in the blob.
    PerChannel {
        /// The channel dimension.
        axis: u8,
        /// Byte offset of the scales in the model's weight blob; a multiple of 4.
        scales_offset: u32,
    },
}

impl Quantization {
    /// The per-tensor zero point (0 for per-channel and unquantized tensors).
    pub fn zero_point(&self) -> i32 {
        match *self {
            Quantization::PerTensor { zero_point, .. } => zero_point,
            _ => 0,
        }
    }

    /// The per-tensor scale, if this is per-tensor quantization.
    pub fn scale(&self) -> Option<f32> {
        match *self {
            Quantization::PerTensor { scale, .. } => Some(scale),
            _ => None,
        }
    }
}
