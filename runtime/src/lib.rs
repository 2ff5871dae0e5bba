//! loam: a `no_std` neural-network runtime for microcontrollers, single-board computers and
//! phones.
//!
//! The runtime never allocates: every buffer it touches is handed in by the caller. Kernels
//! come in two kinds that live side by side in each op's module: a portable *reference* that
//! defines the result bit for bit, and per-ISA fast paths that must reproduce it exactly (int8)
//! or within a named tolerance (f32).
//!
//! Integer arithmetic follows TensorFlow Lite's quantization specification (asymmetric int8
//! activations, symmetric per-channel int8 weights, int32 bias, requantization by a fixed-point
//! multiplier and shift), so an int8 model gives the same bytes here as in TFLite's reference
//! kernels and CMSIS-NN.
//!
//! # Features
//! - `alloc`, `std`: heap-backed conveniences for hosted targets; the core never needs them.
//! - `std` also adds `store::file`, checkpoints in a file.
//! - `defmt`: implements `defmt::Format` for the public types, for logging on microcontrollers.
#![no_std]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod audio;
mod error;
pub mod fixed_point;
pub mod format;
#[cfg(feature = "alloc")]
#[doc(hidden)]
pub mod fuzzing;
mod interpreter;
pub mod isa;
pub mod monitor;
pub mod ops;
#[cfg(feature = "alloc")]
pub mod planner;
pub mod preprocess;
pub mod quant;
pub mod selftest;
pub mod store;
pub mod tensor;
pub mod train;

pub use error::{
    Error, LoadError, OpProblem, Operand, PlanProblem, QuantField, Slot, TensorProblem,
};
pub use format::Model;
pub use interpreter::{Interpreter, OpProfile};
pub use tensor::{DType, Element, Quantization, Shape};

#[cfg(target_endian = "big")]
compile_error!("loam reads models and weights in place and assumes a little-endian target");
