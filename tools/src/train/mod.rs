//! The host training engine behind `loam train`: a [`Graph`](crate::graph::Graph) trained on
//! the CPU with the runtime's forward kernels and backward passes written here, in parallel
//! over fixed slices of each batch so the same seed gives the same weights on any number of
//! threads. With the `cuda` feature, [`cuda`] trains the same networks on an NVIDIA GPU
//! through the same epoch loop.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod fit;
pub mod gemm;
pub mod loss;
pub mod network;
pub mod ops;
pub mod optim;
pub mod qat;
#[cfg(test)]
mod tests;

pub use device::{Device, Math, Selection};
pub use fit::{
    Augmentation, EarlyStopping, EpochStats, Fitted, Monitor, Progress, Samples, Targets,
    TrainOptions, evaluate, fit, fit_on, loss_layer, predict,
};
pub use loss::{Loss, LossFunction, Target};
pub use network::{Gradients, Network, ParamSlot, Trace};
pub use optim::{Optimizer, OptimizerState, Regularization, Schedule};
