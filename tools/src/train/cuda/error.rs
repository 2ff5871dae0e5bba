//! Why the GPU cannot train: one message per cause, each naming what is missing and how to
//! fall back to the CPU.

/// The fallback every message ends with.
const FALLBACK: &str =
    "or train on the CPU with `--device cpu` (or `device = \"cpu\"` in [training])";

/// What stands between this machine and training on its GPU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaUnavailable {
    /// `libcuda.so.1`, which only NVIDIA's driver installs, is not in the library path.
    #[error(
        "no NVIDIA driver: libcuda.so.1 was not found in the library path, so CUDA cannot run \
         here; install the NVIDIA driver (580 or newer, for CUDA 13), {FALLBACK}"
    )]
    NoDriver,
    /// The driver predates CUDA 13.
    #[error(
        "the NVIDIA driver supports CUDA {found}, but loam's GPU trainer needs CUDA 13 \
         (driver 580 or newer); update the driver, {FALLBACK}"
    )]
    DriverTooOld {
        /// The CUDA version the driver supports, `major.minor`.
        found: String,
    },
    /// A CUDA library loam loads at run time is neither in the library path nor in an NVIDIA
    /// Python wheel loam looked in.
    #[error(
        "{soname} not found: `pip install \"{wheel}>=13,<14\"` or set LOAM_CUDA_LIB_DIR to the \
         folder that holds it (looked in the library path{searched}); {FALLBACK}"
    )]
    MissingLibrary {
        /// The library's soname, `libcublas.so.13`.
        soname: &'static str,
        /// The PyPI package that carries it.
        wheel: &'static str,
        /// `, then DIR, DIR` for the folders searched beyond the library path.
        searched: String,
    },
    /// The driver is there but reports no usable GPU.
    #[error("no CUDA device: {detail}; {FALLBACK}")]
    NoDevice {
        /// What the driver said.
        detail: String,
    },
    /// The model, its training state and the data do not fit the GPU's free memory.
    #[error(
        "not enough GPU memory: the model and data need {need_mib} MiB, the GPU has \
         {free_mib} MiB free; lower training.batch_size, free the GPU, {FALLBACK}"
    )]
    OutOfMemory {
        /// What training needs, MiB.
        need_mib: u64,
        /// What the GPU had free, MiB.
        free_mib: u64,
    },
    /// NVRTC writes PTX for a newer CUDA than the driver runs.
    #[error(
        "the NVRTC library (CUDA {nvrtc}) is newer than the NVIDIA driver (CUDA {driver}), \
         which cannot load the kernels it compiles; install a matching NVRTC \
         (`pip install \"nvidia-cuda-nvrtc=={driver}.*\"`) or update the driver, {FALLBACK}"
    )]
    NvrtcTooNew {
        /// NVRTC's CUDA version.
        nvrtc: String,
        /// The driver's CUDA version.
        driver: String,
    },
    /// NVRTC refused loam's kernels: a bug in loam, not in the machine.
    #[error("NVRTC could not compile loam's GPU kernels (a bug in loam): {log}")]
    Compile {
        /// NVRTC's log.
        log: String,
    },
    /// Any other CUDA failure while setting up.
    #[error("CUDA failed while {what}: {detail}; {FALLBACK}")]
    Cuda {
        /// What loam was doing.
        what: String,
        /// The error CUDA gave.
        detail: String,
    },
}

impl CudaUnavailable {
    /// A failure of `what`, with CUDA's error.
    pub(crate) fn cuda(what: &str, detail: impl std::fmt::Debug) -> CudaUnavailable {
        CudaUnavailable::Cuda {
            what: what.to_string(),
            detail: format!("{detail:?}"),
        }
    }
}

/// Bytes as whole MiB, rounded up.
pub(crate) fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
