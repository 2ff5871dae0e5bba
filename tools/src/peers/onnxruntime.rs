//! ONNX Runtime through `ort` with `load-dynamic`: the shared library is found at run time
//! (`ORT_DYLIB_PATH`, or the `onnxruntime` Python wheel's copy), so loam builds without it and
//! says clearly what is missing when a user asks for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor};

use super::{Peer, PeerModel};
use crate::npy::{Array, Data};

const INSTALL_HINT: &str = "install it with `pip install onnxruntime==1.31.1` or point \
                            ORT_DYLIB_PATH at libonnxruntime.so";

/// Where the ONNX Runtime shared library is: `ORT_DYLIB_PATH`, else the `capi` folder of the
/// `onnxruntime` Python package that `python3` imports.
pub fn library_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("ORT_DYLIB_PATH is {}, which is not a file", path.display());
        }
        return Ok(path);
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output();
    let package = match output {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => bail!("ONNX Runtime not found: python3 cannot import onnxruntime; {INSTALL_HINT}"),
    };
    find_library(&package.join("capi")).with_context(|| {
        format!(
            "ONNX Runtime not found in {}; {INSTALL_HINT}",
            package.display()
        )
    })
}

fn find_library(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    // The versioned name is the real file; the bare name, where present, is a link to it.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// The process's one ONNX Runtime environment (ONNX Runtime allows one per process).
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path().map_err(|e| format!("{e:#}"))?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("loam")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// A model loaded into ONNX Runtime.
pub struct OrtModel {
    session: Session,
    inputs: Vec<DynValue>,
}

impl OrtModel {
    /// Loads `onnx` with every graph optimization and one intra-op thread.
    pub fn load(onnx: &[u8]) -> Result<OrtModel> {
        let env = environment()?;
        let session = Session::builder(env)
            .map_err(|e| anyhow!("{e}"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| anyhow!("{e}"))?
            .with_intra_threads(1)
            .map_err(|e| anyhow!("{e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_memory(onnx)
            .map_err(|e| anyhow!("ONNX Runtime refused the model: {e}"))?;
        Ok(OrtModel {
            session,
            inputs: Vec::new(),
        })
    }
}

fn value(array: &Array) -> Result<DynValue> {
    let shape = array.shape.clone();
    let v = match &array.data {
        Data::F32(v) => Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
        Data::I8(v) => Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
        Data::I16(v) => Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
        Data::I32(v) => Tensor::from_array((shape, v.clone())).map(|t| t.into_dyn()),
    };
    v.map_err(|e| anyhow!("{e}"))
}

fn array(value: &DynValue) -> Result<Array> {
    use ort::value::TensorElementType as T;
    let dtype = value
        .dtype()
        .tensor_type()
        .context("an output is not a tensor")?;
    fn take<E: ort::value::PrimitiveTensorElementType + Copy>(
        value: &DynValue,
    ) -> Result<(Vec<usize>, Vec<E>)> {
        let (shape, data) = value
            .try_extract_tensor::<E>()
            .map_err(|e| anyhow!("{e}"))?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
    let (shape, data) = match dtype {
        T::Float32 => take::<f32>(value).map(|(s, d)| (s, Data::F32(d)))?,
        T::Int8 => take::<i8>(value).map(|(s, d)| (s, Data::I8(d)))?,
        T::Int16 => take::<i16>(value).map(|(s, d)| (s, Data::I16(d)))?,
        T::Int32 => take::<i32>(value).map(|(s, d)| (s, Data::I32(d)))?,
        other => bail!("output element type {other:?} has no loam equivalent"),
    };
    Ok(Array { shape, data })
}

/// One run of `session` on `inputs`.
fn run<'s>(session: &'s mut Session, inputs: &[DynValue]) -> Result<SessionOutputs<'s>> {
    let inputs: Vec<SessionInputValue<'_>> = inputs.iter().map(Into::into).collect();
    session
        .run(inputs.as_slice())
        .map_err(|e| anyhow!("ONNX Runtime: {e}"))
}

impl PeerModel for OrtModel {
    fn peer(&self) -> Peer {
        Peer::OnnxRuntime
    }

    fn set_inputs(&mut self, inputs: &[Array]) -> Result<()> {
        self.inputs = inputs.iter().map(value).collect::<Result<_>>()?;
        Ok(())
    }

    fn invoke(&mut self) -> Result<()> {
        run(&mut self.session, &self.inputs)?;
        Ok(())
    }

    fn outputs(&mut self) -> Result<Vec<Array>> {
        run(&mut self.session, &self.inputs)?
            .values()
            .map(|v| array(&v))
            .collect()
    }
}
