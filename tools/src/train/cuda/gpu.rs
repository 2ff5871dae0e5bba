//! The GPU as the trainer uses it: one context and stream, loam's kernels compiled by NVRTC,
//! a cuBLAS handle, and a typed, length-checked wrapper for every kernel launch and matrix
//! product.
//!
//! Device buffers are [`Buf`]s; launches take [`Span`]s of them (a device address, a length,
//! and the buffer's lifetime), and every wrapper checks that each span holds what the kernel
//! will touch for the sizes it is given, so an inconsistent size is a panic in Rust (a bug in
//! the engine, as in `train::gemm`) instead of an out-of-bounds access on the GPU.
//!
//! Everything runs on the context's default stream, in order, so no event tracking is needed
//! (cudarc only tracks events once a second stream exists): buffers are freed in stream order,
//! after the work queued before.
//!
//! In tests the same wrappers can drive an emulated device instead (`super::emulator`: the
//! kernels compiled by the host's C compiler, the matrix products by reference loops), so the
//! whole GPU training path runs, and is compared with the CPU engine, on machines without a
//! GPU.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result, bail};
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::driver::sys::CUresult;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    DriverError, LaunchConfig, ValidAsZeroBits,
};
use cudarc::nvrtc::CompileOptions;

use super::error::{CudaUnavailable, mib};
use super::libs;
use crate::train::Math;

/// The kernels' source, compiled at run time by NVRTC.
pub const KERNELS_CU: &str = include_str!("kernels.cu");

/// Threads per block of every launch; the reductions in kernels.cu assume it
/// (`REDUCE_THREADS`).
const THREADS: u32 = 256;

/// The most blocks an elementwise launch uses: the kernels loop with a grid stride, so more
/// would only add scheduling work.
const MAX_BLOCKS: usize = 1 << 16;

/// The most partial sums a reduction writes (blocks of its first stage).
pub(crate) const MAX_PARTIALS: usize = 1024;

/// NVRTC's options: PTX for the oldest architecture CUDA 13 supports (Turing, sm_75), which the
/// driver compiles for the GPU at hand on first load (and caches), and IEEE arithmetic
/// throughout: no fused multiply-adds, correctly rounded division and square root, denormals
/// kept. That costs little in kernels bound by memory traffic and lets each kernel reproduce
/// the CPU engine's expressions exactly.
pub(crate) fn compile_options() -> CompileOptions {
    CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        use_fast_math: None,
        maxrregcount: None,
        include_paths: Vec::new(),
        arch: Some("compute_75"),
        options: vec!["-default-device".into()],
        name: Some("loam_kernels.cu".into()),
    }
}

/// Compiles [`KERNELS_CU`] to PTX (NVRTC needs no GPU and no driver).
pub(crate) fn compile_kernels() -> Result<cudarc::nvrtc::Ptx, CudaUnavailable> {
    libs::ensure(libs::NVRTC)?;
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS_CU, compile_options()).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => CudaUnavailable::Compile {
            log: log.to_string_lossy().into_owned(),
        },
        other => CudaUnavailable::cuda("compiling the kernels with NVRTC", other),
    })
}

macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        /// Every kernel of kernels.cu the trainer launches, by its index in [`KERNEL_NAMES`].
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum K {
            $($name,)*
        }

        /// The kernels' names, as kernels.cu spells them, in launch-table order.
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

kernels!(
    gather_batch,
    fill,
    add_into,
    bias_act,
    act_mask,
    add_forward,
    dropout_forward,
    dropout_backward,
    softmax_forward,
    softmax_backward,
    im2col,
    col2im,
    depthwise_forward,
    depthwise_backward_input,
    depthwise_filter_partial,
    sum_partials,
    max_pool_forward,
    max_pool_backward,
    avg_pool_forward,
    avg_pool_backward,
    global_avg_forward,
    global_avg_backward,
    loss_forward_backward,
    sum_f32_partial,
    sum_f64_partial,
    sum_squares_partial,
    sum_finish,
    clip_finish,
    sgd_step,
    adam_step,
);

/// A device buffer of `T`.
pub(crate) struct Buf<T> {
    _store: Store<T>,
    ptr: u64,
    len: usize,
}

/// What holds a [`Buf`]'s memory (kept only to free it when the buffer drops).
enum Store<T> {
    Cuda {
        _slice: CudaSlice<T>,
    },
    /// Host memory standing in for the device's, 8-byte aligned.
    #[cfg(test)]
    Host {
        _words: Vec<u64>,
    },
}

impl<T> Buf<T> {
    /// All of it.
    pub fn span(&self) -> Span<'_, T> {
        Span {
            ptr: self.ptr,
            len: self.len,
            _buf: PhantomData,
        }
    }

    /// Its first `len` elements.
    pub fn first(&self, len: usize) -> Span<'_, T> {
        self.span().at(0, len)
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// A run of a [`Buf`]: its device address and length, valid while the buffer is borrowed.
#[derive(Debug)]
pub(crate) struct Span<'a, T> {
    ptr: u64,
    len: usize,
    _buf: PhantomData<&'a [T]>,
}

impl<T> Clone for Span<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Span<'_, T> {}

impl<'a, T> Span<'a, T> {
    /// Elements `offset..offset + len`.
    ///
    /// # Panics
    /// If they are not all inside the span (a bug in the engine).
    pub fn at(self, offset: usize, len: usize) -> Span<'a, T> {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "GPU span {offset}..+{len} outside {} elements",
            self.len
        );
        Span {
            ptr: self.ptr + (offset * std::mem::size_of::<T>()) as u64,
            len,
            _buf: PhantomData,
        }
    }

    /// Everything from `offset` on.
    pub fn from(self, offset: usize) -> Span<'a, T> {
        self.at(offset, self.len.saturating_sub(offset))
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Asserts that the span holds `n` elements (a kernel will touch that many).
    fn need(&self, n: usize) {
        assert!(
            n <= self.len,
            "a GPU kernel needs {n} elements of a {}-element span",
            self.len
        );
    }
}

/// A size as the kernels' `int`.
fn int(v: usize) -> Result<i32> {
    i32::try_from(v).with_context(|| format!("{v} is too large for the GPU kernels' sizes"))
}

/// A size as the kernels' `long long`.
fn long(v: usize) -> Result<i64> {
    i64::try_from(v).with_context(|| format!("{v} is too large for the GPU kernels' sizes"))
}

/// A grid-stride launch over `n` elements.
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks of a reduction's first stage over `n` values: a function of `n` alone, so the
/// summation order (and the sum) is too.
pub(crate) fn partials(n: usize) -> usize {
    n.div_ceil(THREADS as usize).clamp(1, MAX_PARTIALS)
}

/// A convolution's geometry for one batch, as the kernels take it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvArgs {
    pub batch: usize,
    pub ih: usize,
    pub iw: usize,
    pub ic: usize,
    pub oh: usize,
    pub ow: usize,
    pub oc: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
}

impl ConvArgs {
    fn input_len(&self) -> usize {
        self.batch * self.ih * self.iw * self.ic
    }

    fn output_len(&self) -> usize {
        self.batch * self.oh * self.ow * self.oc
    }

    /// `[batch, ih, iw, ic, oh, ow]` and the kernel window's
    /// `[kh, kw, sh, sw, dh, dw, pt, pl]` as `int`s.
    fn ints(&self) -> Result<[i32; 14]> {
        Ok([
            int(self.batch)?,
            int(self.ih)?,
            int(self.iw)?,
            int(self.ic)?,
            int(self.oh)?,
            int(self.ow)?,
            int(self.kh)?,
            int(self.kw)?,
            int(self.sh)?,
            int(self.sw)?,
            int(self.dh)?,
            int(self.dw)?,
            int(self.pt)?,
            int(self.pl)?,
        ])
    }
}

/// A pooling window's geometry for one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolArgs {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
}

impl PoolArgs {
    fn ints(&self) -> Result<[i32; 10]> {
        Ok([
            int(self.batch)?,
            int(self.h)?,
            int(self.w)?,
            int(self.c)?,
            int(self.oh)?,
            int(self.ow)?,
            int(self.kh)?,
            int(self.kw)?,
            int(self.sh)?,
            int(self.sw)?,
        ])
    }
}

/// Augmentation and sampling of [`Gpu::gather_batch`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GatherArgs {
    /// `[h, w, c]` of a sample, or zeros when samples are not images (noise only).
    pub image: [usize; 3],
    pub shift_rows: usize,
    pub shift_cols: usize,
    pub flip: bool,
    pub noise: f32,
    pub seed: u64,
    pub step: u64,
}

/// The loss's settings for [`Gpu::loss`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossArgs {
    /// `LOSS_*` of kernels.cu.
    pub kind: i32,
    pub huber_delta: f32,
    /// `1 / batch` while training, 1 when scoring.
    pub scale: f32,
}

/// Where a loss reads its targets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TargetSpans<'a> {
    /// A class per sample.
    Classes(Span<'a, u32>),
    /// `width` values per sample.
    Values(Span<'a, f32>),
}

/// The GPU, opened once per process.
pub(crate) struct Gpu {
    engine: Engine,
    /// A line describing the device, for logs.
    pub description: String,
    /// One training run at a time: the cuBLAS handle and the stream are shared.
    busy: Mutex<()>,
}

/// What runs the work.
enum Engine {
    /// A CUDA device.
    Cuda {
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        blas: CudaBlas,
        /// In [`K`]'s order.
        kernels: Vec<CudaFunction>,
    },
    /// The host, emulating one (tests).
    #[cfg(test)]
    Emulated(super::emulator::Emulator),
}

static GPU: OnceLock<Gpu> = OnceLock::new();
static OPENING: Mutex<()> = Mutex::new(());

/// The address of a kernel argument, as cuLaunchKernel takes its parameters.
fn arg<T>(value: &T) -> *mut c_void {
    value as *const T as *mut c_void
}

/// `CUDA major.minor` of a version number as the driver and NVRTC report them (13000 -> 13.0).
fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

impl Gpu {
    /// The process's GPU, opened on first use; the error says what is missing.
    pub fn get() -> Result<&'static Gpu, CudaUnavailable> {
        if let Some(gpu) = GPU.get() {
            return Ok(gpu);
        }
        let _opening = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gpu) = GPU.get() {
            return Ok(gpu);
        }
        // Every library is probed before cudarc touches it, but a driver that lacks a symbol
        // cudarc expects would still panic inside cudarc: turn that into an error too.
        let gpu = std::panic::catch_unwind(Gpu::open).unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(CudaUnavailable::cuda("opening the GPU", detail))
        })?;
        Ok(GPU.get_or_init(|| gpu))
    }

    fn open() -> Result<Gpu, CudaUnavailable> {
        if !libs::driver_present() {
            return Err(CudaUnavailable::NoDriver);
        }
        let mut driver = 0i32;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer; it needs no cuInit.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) }
            .result()
            .map_err(|e| CudaUnavailable::cuda("asking the driver's version", e))?;
        if driver < 13000 {
            return Err(CudaUnavailable::DriverTooOld {
                found: cuda_version(driver),
            });
        }
        let no_device = |e: DriverError| CudaUnavailable::NoDevice {
            detail: format!("the NVIDIA driver reports {e}"),
        };
        cudarc::driver::result::init().map_err(no_device)?;
        let count = CudaContext::device_count().map_err(no_device)?;
        if count < 1 {
            return Err(CudaUnavailable::NoDevice {
                detail: "the NVIDIA driver is installed but sees no GPU".into(),
            });
        }
        let ctx = CudaContext::new(0).map_err(no_device)?;
        libs::ensure(libs::NVRTC)?;
        libs::ensure(libs::CUBLAS)?;
        let ptx = compile_kernels()?;
        let module = ctx.load_module(ptx).map_err(|e| {
            if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                let (mut major, mut minor) = (0, 0);
                // SAFETY: nvrtcVersion writes two ints through valid pointers; NVRTC is loaded
                // (it just compiled the kernels).
                let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
                CudaUnavailable::NvrtcTooNew {
                    nvrtc: format!("{major}.{minor}"),
                    driver: cuda_version(driver),
                }
            } else {
                CudaUnavailable::cuda("loading the kernels", e)
            }
        })?;
        let kernels = load_kernels(&module)
            .map_err(|e| CudaUnavailable::cuda("finding the kernels in their module", e))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| CudaUnavailable::cuda("starting cuBLAS", e))?;
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        let total = ctx.total_mem().unwrap_or(0) as u64;
        let description = format!(
            "{name} ({} MiB, driver for CUDA {})",
            mib(total),
            cuda_version(driver)
        );
        Ok(Gpu {
            engine: Engine::Cuda {
                ctx,
                stream,
                blas,
                kernels,
            },
            description,
            busy: Mutex::new(()),
        })
    }

    /// A device emulated on the host (tests).
    #[cfg(test)]
    pub fn emulated(emulator: super::emulator::Emulator) -> Gpu {
        Gpu {
            engine: Engine::Emulated(emulator),
            description: "emulated GPU".into(),
            busy: Mutex::new(()),
        }
    }

    /// Holds the GPU for one training run.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Free and total device memory, bytes.
    pub fn memory(&self) -> Result<(u64, u64)> {
        match &self.engine {
            Engine::Cuda { ctx, .. } => {
                let (free, total) = ctx.mem_get_info().context("asking the GPU's free memory")?;
                Ok((free as u64, total as u64))
            }
            #[cfg(test)]
            Engine::Emulated(e) => Ok((e.memory, e.memory)),
        }
    }

    /// The matrix products' arithmetic from now on.
    pub fn set_math(&self, math: Math) -> Result<()> {
        let mode = match math {
            Math::F32 => cublasMath_t::CUBLAS_DEFAULT_MATH,
            Math::Tf32 => cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
        };
        match &self.engine {
            // SAFETY: the handle is this Gpu's live cuBLAS handle, used by one run at a time.
            Engine::Cuda { ctx, blas, .. } => {
                ctx.bind_to_thread()?;
                unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), mode) }
                    .result()
                    .context("setting cuBLAS's math mode")
            }
            #[cfg(test)]
            Engine::Emulated(_) => Ok(()),
        }
    }

    /// A zeroed buffer of `len` values (one at least, so every buffer has an address).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<Buf<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        match &self.engine {
            Engine::Cuda { stream, .. } => {
                let slice = stream
                    .alloc_zeros::<T>(len.max(1))
                    .map_err(|e| alloc_error(e, bytes))?;
                // The address is fixed for the allocation's life; the guard cudarc returns
                // records an event only in multi-stream mode, which this trainer never enters.
                let ptr = {
                    let (ptr, _record) = slice.device_ptr(stream);
                    ptr
                };
                Ok(Buf {
                    _store: Store::Cuda { _slice: slice },
                    ptr,
                    len,
                })
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                let words = vec![0u64; bytes.div_ceil(8)];
                let ptr = words.as_ptr() as u64;
                Ok(Buf {
                    _store: Store::Host { _words: words },
                    ptr,
                    len,
                })
            }
        }
    }

    /// A buffer holding `values`.
    pub fn upload<T: DeviceRepr + ValidAsZeroBits + Copy>(&self, values: &[T]) -> Result<Buf<T>> {
        let mut buf = self.zeros::<T>(values.len())?;
        self.write(values, &mut buf)?;
        Ok(buf)
    }

    /// Copies `values` into the start of `buf` (after the work queued before).
    pub fn write<T: DeviceRepr + Copy>(&self, values: &[T], buf: &mut Buf<T>) -> Result<()> {
        assert!(
            values.len() <= buf.len,
            "{} values into {}",
            values.len(),
            buf.len
        );
        if values.is_empty() {
            return Ok(());
        }
        match &self.engine {
            Engine::Cuda { ctx, stream, .. } => {
                // Training runs on whichever thread calls it (a rayon worker, say).
                ctx.bind_to_thread()?;
                // SAFETY: the destination is `buf`'s allocation, which holds at least
                // `values.len()` elements (asserted above) and is borrowed mutably; a copy from
                // pageable memory returns once `values` has been read.
                unsafe {
                    cudarc::driver::result::memcpy_htod_async(buf.ptr, values, stream.cu_stream())
                }
                .context("copying to the GPU")
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                let bytes = std::mem::size_of_val(values);
                // SAFETY: `buf` is host memory of at least `bytes` bytes (asserted above),
                // distinct from `values`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        values.as_ptr() as *const u8,
                        buf.ptr as *mut u8,
                        bytes,
                    )
                };
                Ok(())
            }
        }
    }

    /// The first `len` values of `buf` (waits for the work queued before).
    pub fn read<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &Buf<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        assert!(len <= buf.len, "{len} values from {}", buf.len);
        let mut out = vec![T::default(); len];
        if len == 0 {
            return Ok(out);
        }
        match &self.engine {
            Engine::Cuda { ctx, stream, .. } => {
                ctx.bind_to_thread()?;
                // SAFETY: `buf` holds at least `len` elements (asserted above); `out` is a host
                // vector of `len`, and a copy into pageable memory returns once complete.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(&mut out, buf.ptr, stream.cu_stream())
                }
                .context("copying from the GPU (a kernel may have failed)")?;
                stream
                    .synchronize()
                    .context("waiting for the GPU (a kernel may have failed)")?;
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                // SAFETY: `buf` is host memory holding at least `len` values of T.
                unsafe {
                    std::ptr::copy_nonoverlapping(buf.ptr as *const T, out.as_mut_ptr(), len)
                };
            }
        }
        Ok(out)
    }

    /// `dst[..src.len()] = src`, on the device.
    pub fn copy(&self, src: &Buf<f32>, dst: &mut Buf<f32>) -> Result<()> {
        assert!(src.len <= dst.len, "{} values into {}", src.len, dst.len);
        let bytes = src.len * std::mem::size_of::<f32>();
        match &self.engine {
            Engine::Cuda { ctx, stream, .. } => {
                ctx.bind_to_thread()?;
                // SAFETY: both are live allocations of this context, dst at least as long as
                // src (asserted above) and borrowed mutably, so they do not overlap.
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(
                        dst.ptr,
                        src.ptr,
                        bytes,
                        stream.cu_stream(),
                    )
                }
                .context("copying on the GPU")
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                // SAFETY: distinct host buffers, dst at least as long as src.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.ptr as *const u8, dst.ptr as *mut u8, bytes)
                };
                Ok(())
            }
        }
    }

    /// Launches kernel `k` on the stream.
    ///
    /// # Safety
    /// `args` must be the addresses of values matching the kernel's parameter list in
    /// kernels.cu in number, order and type, and every device address among them must hold
    /// what the kernel touches for the sizes passed.
    unsafe fn run(&self, k: K, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        let name = KERNEL_NAMES[k as usize];
        match &self.engine {
            Engine::Cuda {
                ctx,
                stream,
                kernels,
                ..
            } => {
                ctx.bind_to_thread()?;
                // SAFETY: as the caller guarantees; the function belongs to this context.
                unsafe {
                    cudarc::driver::result::launch_kernel(
                        kernels[k as usize].cu_function(),
                        cfg.grid_dim,
                        cfg.block_dim,
                        cfg.shared_mem_bytes,
                        stream.cu_stream(),
                        args,
                    )
                }
                .with_context(|| format!("launching {name}"))
            }
            #[cfg(test)]
            // SAFETY: as the caller guarantees, with host addresses.
            Engine::Emulated(e) => unsafe { e.launch(k as usize, cfg, args) },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Matrix products (column-major, as cuBLAS sees the row-major buffers).

    /// `c = op(a) * op(b) + beta * c`, column-major: `op(a)` is `m x k`, `op(b)` `k x n`, `c`
    /// `m x n` with leading dimensions `lda`, `ldb`, `ldc`; `ta`/`tb` transpose.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: Span<'_, f32>,
        lda: usize,
        b: Span<'_, f32>,
        ldb: usize,
        beta: f32,
        c: Span<'_, f32>,
        ldc: usize,
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        // Column-major storage: `rows x cols` with leading dimension `ld` spans
        // ld * (cols - 1) + rows elements.
        let extent = |rows: usize, cols: usize, ld: usize| {
            assert!(
                ld >= rows.max(1),
                "leading dimension {ld} below {rows} rows"
            );
            if cols == 0 { 0 } else { ld * (cols - 1) + rows }
        };
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        a.need(extent(ar, ac, lda));
        b.need(extent(br, bc, ldb));
        c.need(extent(m, n, ldc));
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let alpha = 1.0f32;
        let (mi, ni, ki, la, lb, lc) = (int(m)?, int(n)?, int(k)?, int(lda)?, int(ldb)?, int(ldc)?);
        match &self.engine {
            Engine::Cuda { ctx, blas, .. } => {
                ctx.bind_to_thread()?;
                // SAFETY: the handle is live and bound to this Gpu's stream (its context made
                // current first); a, b and c hold the extents asserted above for their shapes and
                // leading dimensions; alpha and beta are host values (cuBLAS's default pointer
                // mode).
                unsafe {
                    cudarc::cublas::result::sgemm(
                        *blas.handle(),
                        op(ta),
                        op(tb),
                        mi,
                        ni,
                        ki,
                        &alpha,
                        a.ptr as *const f32,
                        la,
                        b.ptr as *const f32,
                        lb,
                        &beta,
                        c.ptr as *mut f32,
                        lc,
                    )
                }
                .context("cuBLAS sgemm")
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                // SAFETY: host buffers holding the extents asserted above.
                unsafe {
                    super::emulator::sgemm(
                        (ta, tb),
                        (m, n, k),
                        a.ptr as *const f32,
                        lda,
                        b.ptr as *const f32,
                        ldb,
                        beta,
                        c.ptr as *mut f32,
                        ldc,
                    )
                };
                Ok(())
            }
        }
    }

    /// `y = a * ones` for a column-major `m x n` matrix `a` (leading dimension `m`): the sum
    /// of each row, which is a bias's gradient over a batch's rows. cuBLAS's gemv sums in a
    /// fixed order.
    pub fn row_sums(
        &self,
        m: usize,
        n: usize,
        a: Span<'_, f32>,
        ones: Span<'_, f32>,
        y: Span<'_, f32>,
    ) -> Result<()> {
        if m == 0 {
            return Ok(());
        }
        a.need(m * n);
        ones.need(n);
        y.need(m);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (mi, ni) = (int(m)?, int(n)?);
        match &self.engine {
            Engine::Cuda { ctx, blas, .. } => {
                ctx.bind_to_thread()?;
                // SAFETY: a holds m * n values, ones n, y m (asserted above); the handle is live
                // (its context made current first); alpha and beta are host values.
                unsafe {
                    cudarc::cublas::result::sgemv(
                        *blas.handle(),
                        cublasOperation_t::CUBLAS_OP_N,
                        mi,
                        ni,
                        &alpha,
                        a.ptr as *const f32,
                        mi,
                        ones.ptr as *const f32,
                        1,
                        &beta,
                        y.ptr as *mut f32,
                        1,
                    )
                }
                .context("cuBLAS sgemv")
            }
            #[cfg(test)]
            Engine::Emulated(_) => {
                // SAFETY: host buffers holding the lengths asserted above.
                unsafe {
                    super::emulator::row_sums(
                        m,
                        n,
                        a.ptr as *const f32,
                        ones.ptr as *const f32,
                        y.ptr as *mut f32,
                    )
                };
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Kernels. Each wrapper asserts the lengths the kernel relies on, then launches it with
    // arguments in the order and of the types of its signature in kernels.cu (u64 device
    // addresses for pointers, i64 for `long long`, i32 for `int`, f32 for `float`).

    /// `out[b] = data[order[first + b]]` for `count` samples of `sample_len`, augmented.
    #[allow(clippy::too_many_arguments)]
    pub fn gather_batch(
        &self,
        data: Span<'_, f32>,
        set_len: usize,
        order: Span<'_, u32>,
        first: usize,
        count: usize,
        sample_len: usize,
        a: &GatherArgs,
        out: Span<'_, f32>,
    ) -> Result<()> {
        let n = count * sample_len;
        if n == 0 {
            return Ok(());
        }
        data.need(set_len * sample_len);
        order.need(first + count);
        out.need(n);
        let [h, w, c] = a.image;
        if h > 0 {
            assert_eq!(h * w * c, sample_len, "an image sample's dimensions");
        }
        let cap = |v: usize| int(v.min(1 << 20));
        let (first, count, sample_len) = (long(first)?, int(count)?, long(sample_len)?);
        let (h, w, c) = (int(h)?, int(w)?, int(c.max(1))?);
        let (rows, cols, flip) = (cap(a.shift_rows)?, cap(a.shift_cols)?, i32::from(a.flip));
        let mut args = [
            arg(&data.ptr),
            arg(&order.ptr),
            arg(&first),
            arg(&count),
            arg(&sample_len),
            arg(&h),
            arg(&w),
            arg(&c),
            arg(&rows),
            arg(&cols),
            arg(&flip),
            arg(&a.noise),
            arg(&a.seed),
            arg(&a.step),
            arg(&out.ptr),
        ];
        // SAFETY: (const float*, const unsigned*, i64, int, i64, int x6, float, u64, u64,
        // float*) as gather_batch declares; every order entry the kernel reads (first..first +
        // count) is inside `order`, and the caller's order holds indices below set_len, whose
        // samples `data` holds; out holds count * sample_len.
        unsafe { self.run(K::gather_batch, grid(n), &mut args) }?;
        Ok(())
    }

    /// `x[..n] = value`.
    pub fn fill(&self, x: Span<'_, f32>, value: f32) -> Result<()> {
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let nn = long(n)?;
        let mut args = [arg(&x.ptr), arg(&nn), arg(&value)];
        // SAFETY: (float*, i64, float); x holds n values.
        unsafe { self.run(K::fill, grid(n), &mut args) }?;
        Ok(())
    }

    /// `dst = src` or `dst += src` over `n` values.
    pub fn add_into(
        &self,
        dst: Span<'_, f32>,
        src: Span<'_, f32>,
        n: usize,
        acc: bool,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        dst.need(n);
        src.need(n);
        let (nn, acc) = (long(n)?, i32::from(acc));
        let mut args = [arg(&dst.ptr), arg(&src.ptr), arg(&nn), arg(&acc)];
        // SAFETY: (float*, const float*, i64, int); both hold n values.
        unsafe { self.run(K::add_into, grid(n), &mut args) }?;
        Ok(())
    }

    /// `y = clamp(y + bias)` over `rows x channels`.
    pub fn bias_act(
        &self,
        y: Span<'_, f32>,
        bias: Span<'_, f32>,
        rows: usize,
        channels: usize,
        (lo, hi): (f32, f32),
    ) -> Result<()> {
        let n = rows * channels;
        if n == 0 {
            return Ok(());
        }
        y.need(n);
        bias.need(channels);
        let (rows, channels) = (long(rows)?, int(channels)?);
        let mut args = [
            arg(&y.ptr),
            arg(&bias.ptr),
            arg(&rows),
            arg(&channels),
            arg(&lo),
            arg(&hi),
        ];
        // SAFETY: (float*, const float*, i64, int, float, float); y holds rows * channels,
        // bias channels.
        unsafe { self.run(K::bias_act, grid(n), &mut args) }?;
        Ok(())
    }

    /// Zeroes `dy` where `y` sits on a bound of the clamp.
    pub fn act_mask(
        &self,
        dy: Span<'_, f32>,
        y: Span<'_, f32>,
        n: usize,
        (lo, hi): (f32, f32),
    ) -> Result<()> {
        if n == 0 || (lo == f32::NEG_INFINITY && hi == f32::INFINITY) {
            return Ok(());
        }
        dy.need(n);
        y.need(n);
        let nn = long(n)?;
        let mut args = [arg(&dy.ptr), arg(&y.ptr), arg(&nn), arg(&lo), arg(&hi)];
        // SAFETY: (float*, const float*, i64, float, float); both hold n values.
        unsafe { self.run(K::act_mask, grid(n), &mut args) }?;
        Ok(())
    }

    /// `y = clamp(a + b)`.
    pub fn add_forward(
        &self,
        a: Span<'_, f32>,
        b: Span<'_, f32>,
        y: Span<'_, f32>,
        n: usize,
        (lo, hi): (f32, f32),
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        a.need(n);
        b.need(n);
        y.need(n);
        let nn = long(n)?;
        let mut args = [
            arg(&a.ptr),
            arg(&b.ptr),
            arg(&y.ptr),
            arg(&nn),
            arg(&lo),
            arg(&hi),
        ];
        // SAFETY: (const float*, const float*, float*, i64, float, float); all hold n.
        unsafe { self.run(K::add_forward, grid(n), &mut args) }?;
        Ok(())
    }

    /// Inverted dropout of layer `layer` at `step`.
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_forward(
        &self,
        x: Span<'_, f32>,
        y: Span<'_, f32>,
        n: usize,
        rate: f32,
        seed: u64,
        step: u64,
        layer: u64,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        x.need(n);
        y.need(n);
        let (nn, keep) = (long(n)?, 1.0 / (1.0 - rate));
        let mut args = [
            arg(&x.ptr),
            arg(&y.ptr),
            arg(&nn),
            arg(&rate),
            arg(&keep),
            arg(&seed),
            arg(&step),
            arg(&layer),
        ];
        // SAFETY: (const float*, float*, i64, float, float, u64, u64, u64); both hold n.
        unsafe { self.run(K::dropout_forward, grid(n), &mut args) }?;
        Ok(())
    }

    /// `dx (+)= dy * mask` with the mask of [`Gpu::dropout_forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_backward(
        &self,
        dy: Span<'_, f32>,
        dx: Span<'_, f32>,
        n: usize,
        rate: f32,
        seed: u64,
        step: u64,
        layer: u64,
        acc: bool,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        dy.need(n);
        dx.need(n);
        let (nn, keep, acc) = (long(n)?, 1.0 / (1.0 - rate), i32::from(acc));
        let mut args = [
            arg(&dy.ptr),
            arg(&dx.ptr),
            arg(&nn),
            arg(&rate),
            arg(&keep),
            arg(&seed),
            arg(&step),
            arg(&layer),
            arg(&acc),
        ];
        // SAFETY: (const float*, float*, i64, float, float, u64, u64, u64, int); both hold n.
        unsafe { self.run(K::dropout_backward, grid(n), &mut args) }?;
        Ok(())
    }

    /// Softmax over `rows` rows of `depth`.
    pub fn softmax_forward(
        &self,
        x: Span<'_, f32>,
        y: Span<'_, f32>,
        rows: usize,
        depth: usize,
    ) -> Result<()> {
        if rows * depth == 0 {
            return Ok(());
        }
        x.need(rows * depth);
        y.need(rows * depth);
        let (r, d) = (long(rows)?, int(depth)?);
        let mut args = [arg(&x.ptr), arg(&y.ptr), arg(&r), arg(&d)];
        // SAFETY: (const float*, float*, i64, int); both hold rows * depth.
        unsafe { self.run(K::softmax_forward, grid(rows), &mut args) }?;
        Ok(())
    }

    /// `dx (+)= p * (dy - sum(dy * p))` per row.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_backward(
        &self,
        p: Span<'_, f32>,
        dy: Span<'_, f32>,
        dx: Span<'_, f32>,
        rows: usize,
        depth: usize,
        acc: bool,
    ) -> Result<()> {
        if rows * depth == 0 {
            return Ok(());
        }
        for s in [p, dy, dx] {
            s.need(rows * depth);
        }
        let (r, d, acc) = (long(rows)?, int(depth)?, i32::from(acc));
        let mut args = [
            arg(&p.ptr),
            arg(&dy.ptr),
            arg(&dx.ptr),
            arg(&r),
            arg(&d),
            arg(&acc),
        ];
        // SAFETY: (const float*, const float*, float*, i64, int, int); all hold rows * depth.
        unsafe { self.run(K::softmax_backward, grid(rows), &mut args) }?;
        Ok(())
    }

    /// Group `group`'s patches of `x`: `pixels x (kh * kw * gin)`.
    pub fn im2col(
        &self,
        x: Span<'_, f32>,
        cols: Span<'_, f32>,
        g: &ConvArgs,
        gin: usize,
        group: usize,
    ) -> Result<()> {
        let n = g.batch * g.oh * g.ow * g.kh * g.kw * gin;
        if n == 0 {
            return Ok(());
        }
        assert!((group + 1) * gin <= g.ic, "group {group} of {gin} channels");
        x.need(g.input_len());
        cols.need(n);
        let v = g.ints()?;
        let (gin, group) = (int(gin)?, int(group)?);
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&x.ptr), arg(&cols.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&gin), arg(&group)]);
        // SAFETY: (const float*, float*, 14 ints of geometry, int, int) as im2col declares; x
        // holds the batch's images, cols every patch of the group, and the group's channels
        // lie inside the image's (asserted above).
        unsafe { self.run(K::im2col, grid(n), &mut args) }?;
        Ok(())
    }

    /// The transpose of [`Gpu::im2col`]: `dx (+)=` the patch gradients `dcols`.
    pub fn col2im(
        &self,
        dcols: Span<'_, f32>,
        dx: Span<'_, f32>,
        g: &ConvArgs,
        gin: usize,
        group: usize,
        acc: bool,
    ) -> Result<()> {
        let n = g.batch * g.ih * g.iw * gin;
        if n == 0 {
            return Ok(());
        }
        assert!((group + 1) * gin <= g.ic, "group {group} of {gin} channels");
        dcols.need(g.batch * g.oh * g.ow * g.kh * g.kw * gin);
        dx.need(g.input_len());
        let v = g.ints()?;
        let (gin, group, acc) = (int(gin)?, int(group)?, i32::from(acc));
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&dcols.ptr), arg(&dx.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&gin), arg(&group), arg(&acc)]);
        // SAFETY: (const float*, float*, 14 ints, int, int, int) as col2im declares; dcols
        // holds every patch gradient of the group, dx the batch's images.
        unsafe { self.run(K::col2im, grid(n), &mut args) }?;
        Ok(())
    }

    /// Depthwise convolution forward with bias and clamp.
    #[allow(clippy::too_many_arguments)]
    pub fn depthwise_forward(
        &self,
        x: Span<'_, f32>,
        w: Span<'_, f32>,
        bias: Span<'_, f32>,
        y: Span<'_, f32>,
        g: &ConvArgs,
        (lo, hi): (f32, f32),
    ) -> Result<()> {
        let n = g.output_len();
        if n == 0 {
            return Ok(());
        }
        assert!(g.ic > 0 && g.oc.is_multiple_of(g.ic), "depthwise channels");
        x.need(g.input_len());
        w.need(g.kh * g.kw * g.oc);
        bias.need(g.oc);
        y.need(n);
        let v = depthwise_ints(g)?;
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&x.ptr), arg(&w.ptr), arg(&bias.ptr), arg(&y.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&lo), arg(&hi)]);
        // SAFETY: (const float* x3, float*, 15 ints of geometry, float, float) as
        // depthwise_forward declares; the lengths match the geometry (asserted above).
        unsafe { self.run(K::depthwise_forward, grid(n), &mut args) }?;
        Ok(())
    }

    /// The depthwise input gradient, `dx (+)=`.
    pub fn depthwise_backward_input(
        &self,
        dy: Span<'_, f32>,
        w: Span<'_, f32>,
        dx: Span<'_, f32>,
        g: &ConvArgs,
        acc: bool,
    ) -> Result<()> {
        let n = g.input_len();
        if n == 0 {
            return Ok(());
        }
        assert!(g.ic > 0 && g.oc.is_multiple_of(g.ic), "depthwise channels");
        dy.need(g.output_len());
        w.need(g.kh * g.kw * g.oc);
        dx.need(n);
        let v = depthwise_ints(g)?;
        let acc = i32::from(acc);
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&dy.ptr), arg(&w.ptr), arg(&dx.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&acc)]);
        // SAFETY: (const float*, const float*, float*, 15 ints, int) as declared; lengths as
        // asserted above.
        unsafe { self.run(K::depthwise_backward_input, grid(n), &mut args) }?;
        Ok(())
    }

    /// How many shares of the output pixels the depthwise filter gradient sums separately.
    pub fn depthwise_splits(g: &ConvArgs) -> usize {
        (g.batch * g.oh * g.ow / 2048).clamp(1, 64)
    }

    /// The depthwise filter gradient `dw = sum over pixels of dy * x`, through `scratch`
    /// (`depthwise_splits * kh * kw * oc` values).
    pub fn depthwise_filter_grad(
        &self,
        x: Span<'_, f32>,
        dy: Span<'_, f32>,
        dw: Span<'_, f32>,
        scratch: Span<'_, f32>,
        g: &ConvArgs,
    ) -> Result<()> {
        let taps = g.kh * g.kw;
        let len = taps * g.oc;
        if len == 0 {
            return Ok(());
        }
        assert!(g.ic > 0 && g.oc.is_multiple_of(g.ic), "depthwise channels");
        let splits = Gpu::depthwise_splits(g);
        x.need(g.input_len());
        dy.need(g.output_len());
        dw.need(len);
        scratch.need(splits * len);
        let v = depthwise_ints(g)?;
        let cfg = LaunchConfig {
            grid_dim: (g.oc.div_ceil(32) as u32, taps as u32, splits as u32),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&x.ptr), arg(&dy.ptr), arg(&scratch.ptr)]);
        args.extend(v.iter().map(arg));
        // SAFETY: (const float*, const float*, float*, 15 ints) as declared, launched with the
        // 32 x 8 blocks its shared array is sized for; blockIdx.z < splits, so every partial
        // written lies in scratch's splits * taps * oc values.
        unsafe { self.run(K::depthwise_filter_partial, cfg, &mut args) }?;
        let (s, ln) = (int(splits)?, long(len)?);
        let mut args = [arg(&scratch.ptr), arg(&s), arg(&ln), arg(&dw.ptr)];
        // SAFETY: (const float*, int, i64, float*); scratch holds splits * len, dw len.
        unsafe { self.run(K::sum_partials, grid(len), &mut args) }?;
        Ok(())
    }

    /// Max or average pooling forward.
    pub fn pool_forward(
        &self,
        max: bool,
        x: Span<'_, f32>,
        y: Span<'_, f32>,
        p: &PoolArgs,
    ) -> Result<()> {
        let n = p.batch * p.oh * p.ow * p.c;
        if n == 0 {
            return Ok(());
        }
        pool_check(p);
        x.need(p.batch * p.h * p.w * p.c);
        y.need(n);
        let v = p.ints()?;
        let f = if max {
            K::max_pool_forward
        } else {
            K::avg_pool_forward
        };
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&x.ptr), arg(&y.ptr)]);
        args.extend(v.iter().map(arg));
        // SAFETY: (const float*, float*, 10 ints) as both pool forwards declare; every window
        // lies inside the image (checked by pool_check) and the lengths are asserted above.
        unsafe { self.run(f, grid(n), &mut args) }?;
        Ok(())
    }

    /// Max pooling backward, `dx (+)=`.
    pub fn max_pool_backward(
        &self,
        x: Span<'_, f32>,
        dy: Span<'_, f32>,
        dx: Span<'_, f32>,
        p: &PoolArgs,
        acc: bool,
    ) -> Result<()> {
        let n = p.batch * p.h * p.w * p.c;
        if n == 0 {
            return Ok(());
        }
        pool_check(p);
        x.need(n);
        dx.need(n);
        dy.need(p.batch * p.oh * p.ow * p.c);
        let v = p.ints()?;
        let acc = i32::from(acc);
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&x.ptr), arg(&dy.ptr), arg(&dx.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&acc)]);
        // SAFETY: (const float*, const float*, float*, 10 ints, int) as declared; lengths and
        // windows checked above.
        unsafe { self.run(K::max_pool_backward, grid(n), &mut args) }?;
        Ok(())
    }

    /// Average pooling backward, `dx (+)=`.
    pub fn avg_pool_backward(
        &self,
        dy: Span<'_, f32>,
        dx: Span<'_, f32>,
        p: &PoolArgs,
        acc: bool,
    ) -> Result<()> {
        let n = p.batch * p.h * p.w * p.c;
        if n == 0 {
            return Ok(());
        }
        pool_check(p);
        dx.need(n);
        dy.need(p.batch * p.oh * p.ow * p.c);
        let v = p.ints()?;
        let acc = i32::from(acc);
        let mut args: Vec<*mut c_void> = Vec::new();
        args.extend([arg(&dy.ptr), arg(&dx.ptr)]);
        args.extend(v.iter().map(arg));
        args.extend([arg(&acc)]);
        // SAFETY: (const float*, float*, 10 ints, int) as declared; lengths checked above.
        unsafe { self.run(K::avg_pool_backward, grid(n), &mut args) }?;
        Ok(())
    }

    /// Global average pooling forward over `pixels` positions of `c` channels.
    pub fn global_avg_forward(
        &self,
        x: Span<'_, f32>,
        y: Span<'_, f32>,
        batch: usize,
        pixels: usize,
        c: usize,
    ) -> Result<()> {
        let n = batch * c;
        if n == 0 || pixels == 0 {
            return Ok(());
        }
        x.need(batch * pixels * c);
        y.need(n);
        let (b, p, cc) = (int(batch)?, int(pixels)?, int(c)?);
        let mut args = [arg(&x.ptr), arg(&y.ptr), arg(&b), arg(&p), arg(&cc)];
        // SAFETY: (const float*, float*, int, int, int); x holds batch * pixels * c, y batch * c.
        unsafe { self.run(K::global_avg_forward, grid(n), &mut args) }?;
        Ok(())
    }

    /// Global average pooling backward, `dx (+)=`.
    #[allow(clippy::too_many_arguments)]
    pub fn global_avg_backward(
        &self,
        dy: Span<'_, f32>,
        dx: Span<'_, f32>,
        batch: usize,
        pixels: usize,
        c: usize,
        acc: bool,
    ) -> Result<()> {
        let n = batch * pixels * c;
        if n == 0 {
            return Ok(());
        }
        dy.need(batch * c);
        dx.need(n);
        let (b, p, cc, acc) = (int(batch)?, int(pixels)?, int(c)?, i32::from(acc));
        let mut args = [
            arg(&dy.ptr),
            arg(&dx.ptr),
            arg(&b),
            arg(&p),
            arg(&cc),
            arg(&acc),
        ];
        // SAFETY: (const float*, float*, int, int, int, int); lengths asserted above.
        unsafe { self.run(K::global_avg_backward, grid(n), &mut args) }?;
        Ok(())
    }

    /// The loss of `count` samples `order[first..first + count]` of a set of `set_len`
    /// samples from their predictions `pred` (`width` each): per-sample loss and metric into
    /// `sample_loss[first..]` and `sample_metric[first..]`, the gradient (times the scale) into
    /// `grad` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        pred: Span<'_, f32>,
        width: usize,
        count: usize,
        set_len: usize,
        order: Span<'_, u32>,
        first: usize,
        targets: TargetSpans<'_>,
        class_weights: Span<'_, f32>,
        n_weights: usize,
        a: &LossArgs,
        grad: Option<Span<'_, f32>>,
        sample_loss: Span<'_, f32>,
        sample_metric: Span<'_, f64>,
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        pred.need(count * width);
        order.need(first + count);
        sample_loss.need(first + count);
        sample_metric.need(first + count);
        class_weights.need(n_weights);
        // A stand-in for the absent kind of target, never read.
        let (has_classes, classes, values) = match targets {
            TargetSpans::Classes(c) => {
                c.need(set_len);
                (1i32, c.ptr, class_weights.ptr)
            }
            TargetSpans::Values(v) => {
                v.need(set_len * width);
                (0i32, class_weights.ptr, v.ptr)
            }
        };
        let write_grad = i32::from(grad.is_some());
        let grad_ptr = match grad {
            Some(g) => {
                g.need(count * width);
                g.ptr
            }
            None => sample_loss.ptr,
        };
        let (w, c, f, nw) = (int(width)?, int(count)?, long(first)?, int(n_weights)?);
        let mut args = [
            arg(&pred.ptr),
            arg(&w),
            arg(&c),
            arg(&order.ptr),
            arg(&f),
            arg(&has_classes),
            arg(&classes),
            arg(&values),
            arg(&class_weights.ptr),
            arg(&nw),
            arg(&a.kind),
            arg(&a.huber_delta),
            arg(&a.scale),
            arg(&write_grad),
            arg(&grad_ptr),
            arg(&sample_loss.ptr),
            arg(&sample_metric.ptr),
        ];
        // SAFETY: the argument list of loss_forward_backward in kernels.cu, in order; pred
        // holds count * width, order first + count entries (indices below set_len, whose
        // targets the class or value span holds), class_weights n_weights, grad count * width
        // when written, and the per-sample outputs first + count.
        unsafe { self.run(K::loss_forward_backward, grid(count), &mut args) }?;
        Ok(())
    }

    /// `out[slot] = sum(x)` (f32 values summed in double), through `partial`.
    pub fn sum_f32(
        &self,
        x: Span<'_, f32>,
        partial: Span<'_, f64>,
        out: Span<'_, f64>,
        slot: usize,
    ) -> Result<()> {
        self.sum(K::sum_f32_partial, x.ptr, x.len(), partial, out, slot)
    }

    /// `out[slot] = sum(x)`, through `partial`.
    pub fn sum_f64(
        &self,
        x: Span<'_, f64>,
        partial: Span<'_, f64>,
        out: Span<'_, f64>,
        slot: usize,
    ) -> Result<()> {
        self.sum(K::sum_f64_partial, x.ptr, x.len(), partial, out, slot)
    }

    fn sum(
        &self,
        first_stage: K,
        x: u64,
        n: usize,
        partial: Span<'_, f64>,
        out: Span<'_, f64>,
        slot: usize,
    ) -> Result<()> {
        let blocks = partials(n);
        partial.need(blocks);
        out.need(slot + 1);
        let nn = long(n)?;
        let mut args = [arg(&x), arg(&nn), arg(&partial.ptr)];
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const float* or const double*, i64, double*) as the sum_*_partial kernels
        // declare; x holds n values of the kernel's type (the callers pass a span of it) and
        // partial one value per block.
        unsafe { self.run(first_stage, cfg, &mut args) }?;
        self.finish_sum(partial, blocks, out, slot)
    }

    fn finish_sum(
        &self,
        partial: Span<'_, f64>,
        count: usize,
        out: Span<'_, f64>,
        slot: usize,
    ) -> Result<()> {
        let (c, s) = (int(count)?, int(slot)?);
        let mut args = [arg(&partial.ptr), arg(&c), arg(&out.ptr), arg(&s)];
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const double*, int, double*, int); partial holds count values and out
        // slot + 1 (asserted by the callers).
        unsafe { self.run(K::sum_finish, one, &mut args) }?;
        Ok(())
    }

    /// The gradients' squared norm: sets `diverged` if a gradient is not finite and `scale`
    /// to the clipping factor for `max_norm`.
    pub fn clip(
        &self,
        grads: Span<'_, f32>,
        partial: Span<'_, f64>,
        max_norm: Option<f32>,
        scale: Span<'_, f32>,
        diverged: Span<'_, i32>,
    ) -> Result<()> {
        let n = grads.len();
        let blocks = partials(n);
        partial.need(blocks);
        scale.need(1);
        diverged.need(1);
        let nn = long(n)?;
        let mut args = [arg(&grads.ptr), arg(&nn), arg(&partial.ptr)];
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const float*, i64, double*); grads holds n values, partial one per block.
        unsafe { self.run(K::sum_squares_partial, cfg, &mut args) }?;
        let (c, clip, max) = (
            int(blocks)?,
            i32::from(max_norm.is_some()),
            max_norm.unwrap_or(0.0),
        );
        let mut args = [
            arg(&partial.ptr),
            arg(&c),
            arg(&clip),
            arg(&max),
            arg(&scale.ptr),
            arg(&diverged.ptr),
        ];
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const double*, int, int, float, float*, int*); partial holds `blocks`
        // values, scale and diverged one each.
        unsafe { self.run(K::clip_finish, one, &mut args) }?;
        Ok(())
    }

    /// One SGD update of every parameter.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_step(
        &self,
        w: Span<'_, f32>,
        grad: Span<'_, f32>,
        velocity: Span<'_, f32>,
        decay: Span<'_, u8>,
        (rate, momentum, nesterov): (f32, f32, bool),
        (l1, l2): (f32, f32),
        scale: Span<'_, f32>,
        diverged: Span<'_, i32>,
    ) -> Result<()> {
        let n = w.len();
        if n == 0 {
            return Ok(());
        }
        grad.need(n);
        velocity.need(n);
        decay.need(n);
        scale.need(1);
        diverged.need(1);
        let (nn, nesterov) = (long(n)?, i32::from(nesterov));
        let mut args = [
            arg(&w.ptr),
            arg(&grad.ptr),
            arg(&velocity.ptr),
            arg(&decay.ptr),
            arg(&nn),
            arg(&rate),
            arg(&momentum),
            arg(&nesterov),
            arg(&l1),
            arg(&l2),
            arg(&scale.ptr),
            arg(&diverged.ptr),
        ];
        // SAFETY: the argument list of sgd_step, in order; w, grad, velocity and decay hold n
        // values, scale and diverged one.
        unsafe { self.run(K::sgd_step, grid(n), &mut args) }?;
        Ok(())
    }

    /// One Adam (or AdamW, with a weight decay) update of every parameter.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_step(
        &self,
        w: Span<'_, f32>,
        grad: Span<'_, f32>,
        (m1, m2): (Span<'_, f32>, Span<'_, f32>),
        decay: Span<'_, u8>,
        rate: f32,
        (beta1, beta2, epsilon, c1, c2, weight_decay): (f32, f32, f32, f32, f32, f32),
        (l1, l2): (f32, f32),
        scale: Span<'_, f32>,
        diverged: Span<'_, i32>,
    ) -> Result<()> {
        let n = w.len();
        if n == 0 {
            return Ok(());
        }
        for s in [grad, m1, m2] {
            s.need(n);
        }
        decay.need(n);
        scale.need(1);
        diverged.need(1);
        let nn = long(n)?;
        let mut args = [
            arg(&w.ptr),
            arg(&grad.ptr),
            arg(&m1.ptr),
            arg(&m2.ptr),
            arg(&decay.ptr),
            arg(&nn),
            arg(&rate),
            arg(&beta1),
            arg(&beta2),
            arg(&epsilon),
            arg(&c1),
            arg(&c2),
            arg(&weight_decay),
            arg(&l1),
            arg(&l2),
            arg(&scale.ptr),
            arg(&diverged.ptr),
        ];
        // SAFETY: the argument list of adam_step, in order; w, grad, both moments and decay
        // hold n values, scale and diverged one.
        unsafe { self.run(K::adam_step, grid(n), &mut args) }?;
        Ok(())
    }
}

/// The 15 `int`s of the depthwise kernels: the geometry with `oc` after `ow`.
fn depthwise_ints(g: &ConvArgs) -> Result<[i32; 15]> {
    let v = g.ints()?;
    Ok([
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        int(g.oc)?,
        v[6],
        v[7],
        v[8],
        v[9],
        v[10],
        v[11],
        v[12],
        v[13],
    ])
}

/// Every kernel of [`K`], in order, from the compiled module.
fn load_kernels(module: &Arc<CudaModule>) -> Result<Vec<CudaFunction>, DriverError> {
    KERNEL_NAMES
        .iter()
        .map(|name| module.load_function(name))
        .collect()
}

/// Every pooling window lies inside the image.
fn pool_check(p: &PoolArgs) {
    assert!(
        p.kh >= 1
            && p.kw >= 1
            && p.sh >= 1
            && p.sw >= 1
            && p.oh >= 1
            && p.ow >= 1
            && (p.oh - 1) * p.sh + p.kh <= p.h
            && (p.ow - 1) * p.sw + p.kw <= p.w,
        "pooling windows outside a {}x{} image",
        p.h,
        p.w
    );
}

/// An allocation failure: out of memory says so in loam's words.
fn alloc_error(e: DriverError, bytes: usize) -> anyhow::Error {
    if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        anyhow::Error::new(CudaUnavailable::OutOfMemory {
            need_mib: mib(bytes as u64),
            free_mib: 0,
        })
        .context("allocating GPU memory")
    } else {
        anyhow::Error::new(e).context(format!("allocating {bytes} bytes of GPU memory"))
    }
}

/// Fails unless every value fits a kernel `int` (shapes beyond 2^31 elements per dimension).
pub(crate) fn check_int(v: usize, what: &str) -> Result<()> {
    if i32::try_from(v).is_err() {
        bail!("{what} ({v}) is too large for the GPU trainer");
    }
    Ok(())
}
