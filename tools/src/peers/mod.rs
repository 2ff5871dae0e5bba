//! The runtimes loam is checked and measured against: ONNX Runtime (through the `ort` crate,
//! loading the `libonnxruntime` shared library at run time) and tract. Both run the ONNX file
//! [`crate::onnx::export`] writes for a `.loam`, single-threaded, on the same inputs.

mod onnxruntime;
mod tract;

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

use crate::npy::Array;

pub use onnxruntime::library_path as onnxruntime_library;

/// A peer runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Microsoft's ONNX Runtime, CPU execution provider.
    OnnxRuntime,
    /// Sonos' tract.
    Tract,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 2] = [Peer::OnnxRuntime, Peer::Tract];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::OnnxRuntime => "onnxruntime",
            Peer::Tract => "tract",
        }
    }

    /// Loads an ONNX model for single-threaded inference.
    pub fn load(self, onnx: &[u8]) -> Result<Box<dyn PeerModel>> {
        match self {
            Peer::OnnxRuntime => Ok(Box::new(onnxruntime::OrtModel::load(onnx)?)),
            Peer::Tract => Ok(Box::new(tract::TractModel::load(onnx)?)),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Peer {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Peer> {
        match s.to_ascii_lowercase().as_str() {
            "onnxruntime" | "ort" | "onnx-runtime" => Ok(Peer::OnnxRuntime),
            "tract" => Ok(Peer::Tract),
            other => bail!("unknown peer runtime `{other}`; known: onnxruntime, tract"),
        }
    }
}

/// A model loaded into a peer runtime.
pub trait PeerModel {
    /// The peer's name.
    fn peer(&self) -> Peer;

    /// Sets the inputs of the following [`invoke`](Self::invoke) calls (one array per graph
    /// input, in order, each exactly the input's shape and element type).
    fn set_inputs(&mut self, inputs: &[Array]) -> Result<()>;

    /// Runs the model once on the inputs set last; outputs are discarded (for timing).
    fn invoke(&mut self) -> Result<()>;

    /// Runs the model once on the inputs set last and returns its outputs in order.
    fn outputs(&mut self) -> Result<Vec<Array>>;
}
