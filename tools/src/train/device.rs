//! Which processor trains: the CPU engine (every core) or, in a loam built with the `cuda`
//! feature, an NVIDIA GPU ([`super::cuda`]).
//!
//! [`super::fit()`] trains on the device selected for the process ([`select`]), the CPU unless
//! something chose otherwise. The choice is process-wide rather than a field of
//! [`TrainOptions`](super::TrainOptions) because it is a property of the machine a run is on,
//! not of the model: `loam train` selects it once from `--device` or `[training] device`, and
//! every training call below it (the project pipeline, each trial of `loam tune`) follows.
//! Code that must train on a given device whatever the process chose calls
//! [`super::fit_on`].

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// Where the float epochs of a training run compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// The host's cores, through the runtime's float kernels (bit-identical on any thread
    /// count).
    #[default]
    Cpu,
    /// The first NVIDIA GPU, through CUDA 13 (needs a loam built with `--features cuda`).
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// The arithmetic of the GPU's matrix products (the CPU always computes in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Math {
    /// IEEE f32 products and sums: the CPU's results up to summation order.
    #[default]
    F32,
    /// TF32 tensor cores (Ampere and later): inputs rounded to 10 mantissa bits, f32 sums;
    /// several times faster on large layers, weights no longer match the CPU's closely.
    Tf32,
}

/// A device and, for the GPU, its math.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// The processor.
    pub device: Device,
    /// The GPU's matrix-product arithmetic (ignored on the CPU).
    pub math: Math,
}

impl Selection {
    /// The CPU.
    pub const CPU: Selection = Selection {
        device: Device::Cpu,
        math: Math::F32,
    };
}

static SELECTED: RwLock<Selection> = RwLock::new(Selection::CPU);

/// Makes `selection` the device [`super::fit()`] trains on in this process.
pub fn select(selection: Selection) {
    // A poisoned lock still holds a whole `Selection` (a plain `Copy` value).
    *SELECTED.write().unwrap_or_else(|e| e.into_inner()) = selection;
}

/// The device [`super::fit()`] trains on in this process.
pub fn selected() -> Selection {
    *SELECTED.read().unwrap_or_else(|e| e.into_inner())
}

/// The error a loam built without the `cuda` feature gives for `--device cuda`.
pub const NO_CUDA_SUPPORT: &str = "this loam was built without CUDA support; rebuild with \
     `cargo install --path tools --features cuda` or use --device cpu";

/// The error for quantization-aware training on the GPU.
pub const QAT_CPU_ONLY: &str = "quantization-aware training runs on the CPU only for now: \
     train with --device cpu (or `device = \"cpu\"` in [training]), or set \
     training.qat_epochs = 0 to train on the GPU";

/// Fails unless this build can train on `device`.
pub fn check_supported(device: Device) -> anyhow::Result<()> {
    if device == Device::Cuda && !cfg!(feature = "cuda") {
        anyhow::bail!(NO_CUDA_SUPPORT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_math_read_from_toml() {
        #[derive(Deserialize)]
        struct T {
            device: Device,
            math: Math,
        }
        let t: T = toml::from_str("device = \"cuda\"\nmath = \"tf32\"").unwrap();
        assert_eq!((t.device, t.math), (Device::Cuda, Math::Tf32));
        let t: T = toml::from_str("device = \"cpu\"\nmath = \"f32\"").unwrap();
        assert_eq!((t.device, t.math), (Device::Cpu, Math::F32));
        assert!(toml::from_str::<T>("device = \"gpu\"\nmath = \"f32\"").is_err());
        assert_eq!(Device::Cuda.to_string(), "cuda");
    }

    #[test]
    fn the_cuda_device_needs_the_feature() {
        assert!(check_supported(Device::Cpu).is_ok());
        let cuda = check_supported(Device::Cuda);
        if cfg!(feature = "cuda") {
            assert!(cuda.is_ok());
        } else {
            let e = cuda.unwrap_err().to_string();
            assert!(e.contains("built without CUDA support"), "{e}");
            assert!(
                e.contains("--features cuda") && e.contains("--device cpu"),
                "{e}"
            );
        }
    }
}
