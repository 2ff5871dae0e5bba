//! Forward and backward passes of each trainable layer kind, one module per op. Forward
//! passes call the runtime's float kernels (with their SIMD fast paths), so a trained model
//! computes on the host exactly what `loam run` computes on its float export; backward passes
//! are written here, each tested against finite differences.

pub mod activation;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod pool;
pub mod softmax;

/// A fused activation's clamp as the runtime's kernels take it.
pub(crate) fn clamp(activation: loam::ops::FusedActivation) -> (f32, f32) {
    (activation.min, activation.max)
}
