//! A GPU emulated on the host, for tests on machines without one: kernels.cu compiled as C by
//! the host's C compiler behind a small shim (CUDA's thread indices as thread-locals, shared
//! memory as statics, `__syncthreads` as a barrier), and cuBLAS's products as reference loops
//! over the same column-major arguments.
//!
//! A launch runs its blocks one after another. Kernels that synchronise their threads (the
//! reductions) run each block's threads as real threads meeting at a barrier; every other kernel
//! runs its threads one after another, which computes the same (each thread writes its own
//! elements). What the emulation checks: the kernels' arithmetic and indexing, the launch
//! arguments the wrappers pass (the generated C unpacks them by the kernels' own parameter
//! types), and the engine's use of every kernel and product (shapes, leading dimensions,
//! offsets, accumulation). What it cannot: the CUDA driver and cuBLAS themselves, and races
//! between a real GPU's concurrent blocks.

use std::ffi::c_void;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cudarc::driver::LaunchConfig;
use libloading::Library;

use super::gpu::{KERNEL_NAMES, KERNELS_CU};

/// CUDA's built-ins and qualifiers in C.
const SHIM: &str = r#"
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { unsigned x, y, z; } dim3;
static _Thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static pthread_barrier_t emu_barrier;

#define __global__
#define __device__ static
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() pthread_barrier_wait(&emu_barrier)

static inline float __int_as_float(int v) {
    union { int i; float f; } u;
    u.i = v;
    return u.f;
}
"#;

/// Runs a kernel's blocks in order, each block's threads in order or (`threaded`) as real
/// threads meeting at `__syncthreads`.
const RUNNER: &str = r#"
typedef void (*emu_call)(void**);
typedef struct { emu_call call; void** args; dim3 thread, block; } emu_job;

static void* emu_thread(void* p) {
    emu_job* job = (emu_job*)p;
    threadIdx = job->thread;
    blockIdx = job->block;
    job->call(job->args);
    return 0;
}

static int emu_run(emu_call call, void** args, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, int threaded) {
    dim3 g = {gx, gy, gz}, b = {bx, by, bz};
    gridDim = g;
    blockDim = b;
    unsigned n = bx * by * bz;
    emu_job* jobs = threaded ? (emu_job*)calloc(n, sizeof(emu_job)) : 0;
    pthread_t* threads = threaded ? (pthread_t*)calloc(n, sizeof(pthread_t)) : 0;
    if (threaded && (!jobs || !threads)) return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 18);
    for (unsigned z = 0; z < gz; z++) for (unsigned y = 0; y < gy; y++) for (unsigned x = 0; x < gx; x++) {
        dim3 block = {x, y, z};
        if (!threaded) {
            blockIdx = block;
            for (unsigned tz = 0; tz < bz; tz++) for (unsigned ty = 0; ty < by; ty++) for (unsigned tx = 0; tx < bx; tx++) {
                dim3 t = {tx, ty, tz};
                threadIdx = t;
                call(args);
            }
            continue;
        }
        pthread_barrier_init(&emu_barrier, 0, n);
        unsigned k = 0;
        for (unsigned tz = 0; tz < bz; tz++) for (unsigned ty = 0; ty < by; ty++) for (unsigned tx = 0; tx < bx; tx++) {
            dim3 t = {tx, ty, tz};
            jobs[k].call = call;
            jobs[k].args = args;
            jobs[k].thread = t;
            jobs[k].block = block;
            // A block that cannot start all its threads would wait at its barrier forever.
            if (pthread_create(&threads[k], &attr, emu_thread, &jobs[k]) != 0) abort();
            k++;
        }
        for (unsigned j = 0; j < n; j++) pthread_join(threads[j], 0);
        pthread_barrier_destroy(&emu_barrier);
    }
    pthread_attr_destroy(&attr);
    free(jobs);
    free(threads);
    return 0;
}
"#;

/// A kernel's name, its parameters' C types, and whether it synchronises its threads.
struct Signature {
    name: String,
    types: Vec<String>,
    threaded: bool,
}

/// The `extern "C" __global__` kernels of kernels.cu.
fn signatures(source: &str) -> Result<Vec<Signature>> {
    const MARK: &str = "extern \"C\" __global__ void ";
    let mut out = Vec::new();
    let starts: Vec<usize> = source.match_indices(MARK).map(|(i, _)| i).collect();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(source.len());
        let text = &source[start + MARK.len()..end];
        let open = text.find('(').context("a kernel without parameters")?;
        let close = text.find(')').context("an unclosed parameter list")?;
        let name = text[..open].trim().to_string();
        let mut types = Vec::new();
        for param in text[open + 1..close].split(',') {
            let param = param.split_whitespace().collect::<Vec<_>>().join(" ");
            // The type is everything before the parameter's name.
            let cut = param
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .with_context(|| format!("{name}: parameter `{param}`"))?;
            types.push(param[..=cut].trim().to_string());
        }
        let threaded = text.contains("__syncthreads") || text.contains("block_sum(");
        out.push(Signature {
            name,
            types,
            threaded,
        });
    }
    Ok(out)
}

/// The C file: the shim, the kernels, and per kernel `emu_NAME(args, grid, block)`, which
/// unpacks cuLaunchKernel-style arguments by the kernel's parameter types.
fn c_source() -> Result<String> {
    let mut c = String::from(SHIM);
    c.push_str(&KERNELS_CU.replace("extern \"C\" __global__", "__global__"));
    c.push_str(RUNNER);
    for s in signatures(KERNELS_CU)? {
        let args: Vec<String> = s
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("*({t}*)a[{i}]"))
            .collect();
        c.push_str(&format!(
            "static void call_{n}(void** a) {{ {n}({args}); }}\n\
             int emu_{n}(void** a, unsigned gx, unsigned gy, unsigned gz, unsigned bx, \
             unsigned by, unsigned bz) {{ return emu_run(call_{n}, a, gx, gy, gz, bx, by, bz, \
             {threaded}); }}\n",
            n = s.name,
            args = args.join(", "),
            threaded = i32::from(s.threaded),
        ));
    }
    Ok(c)
}

type EmuFn = unsafe extern "C" fn(*mut *mut c_void, u32, u32, u32, u32, u32, u32) -> i32;

/// The emulated kernels, loaded.
pub(crate) struct Emulator {
    fns: Vec<EmuFn>,
    /// One launch at a time: the C side keeps the launch's geometry, barrier and shared
    /// memory in globals.
    running: std::sync::Mutex<()>,
    /// The "free memory" the emulated device reports, bytes.
    pub memory: u64,
    _lib: Library,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Compiles kernels.cu for the host with `cc` and loads it.
    pub fn build() -> Result<Emulator> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("kernels.c");
        let lib = dir.path().join("libkernels.so");
        std::fs::write(&src, c_source()?)?;
        compile(&src, &lib)?;
        // SAFETY: loading the library just built from the generated source; its only
        // initialisers are the C runtime's.
        let library = unsafe { Library::new(&lib) }.context("loading the emulated kernels")?;
        let mut fns = Vec::new();
        for name in KERNEL_NAMES {
            let symbol = format!("emu_{name}");
            // SAFETY: every emu_ function of the generated source has this signature.
            let f: libloading::Symbol<'_, EmuFn> = unsafe { library.get(symbol.as_bytes()) }
                .with_context(|| format!("no {symbol} in the emulated kernels"))?;
            fns.push(*f);
        }
        Ok(Emulator {
            fns,
            running: std::sync::Mutex::new(()),
            memory: 16 << 30,
            _lib: library,
            _dir: dir,
        })
    }

    /// Runs kernel `k` over `cfg`'s grid.
    ///
    /// # Safety
    /// As [`super::gpu::Gpu`]'s launches: `args` match the kernel's parameters, and every
    /// address among them is host memory holding what the kernel touches.
    pub unsafe fn launch(
        &self,
        k: usize,
        cfg: LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as the caller guarantees; the function unpacks exactly the kernel's
        // parameters from `args`.
        let failed = unsafe { (self.fns[k])(args.as_mut_ptr(), g.0, g.1, g.2, b.0, b.1, b.2) };
        if failed != 0 {
            bail!(
                "the emulated {} could not start its threads",
                KERNEL_NAMES[k]
            );
        }
        Ok(())
    }
}

fn compile(src: &Path, lib: &Path) -> Result<()> {
    // No contraction into fused multiply-adds and no fast math: what NVRTC is told.
    let out = Command::new("cc")
        .args(["-std=gnu11", "-O1", "-shared", "-fPIC", "-pthread"])
        .args(["-ffp-contract=off", "-fno-fast-math", "-Wall", "-Werror"])
        .args(["-Wno-unused-function", "-Wno-unused-variable"])
        .arg("-o")
        .arg(lib)
        .arg(src)
        .arg("-lm")
        .output()
        .context("running the C compiler `cc` (the emulated GPU needs one)")?;
    if !out.status.success() {
        bail!(
            "cc could not compile the emulated kernels:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// cuBLAS's `sgemm` with alpha 1, by definition: `c = op(a) op(b) + beta c`, column-major.
///
/// # Safety
/// Each pointer addresses the extent of its column-major operand (checked by the caller).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    for j in 0..n {
        for i in 0..m {
            let mut sum = 0.0f32;
            for p in 0..k {
                // SAFETY: inside the operands' extents, as the caller guarantees.
                let (x, y) = unsafe {
                    (
                        *a.add(if ta { p + i * lda } else { i + p * lda }),
                        *b.add(if tb { j + p * ldb } else { p + j * ldb }),
                    )
                };
                sum += x * y;
            }
            // SAFETY: as above; BLAS does not read c when beta is 0.
            unsafe {
                let at = c.add(i + j * ldc);
                *at = if beta == 0.0 { sum } else { sum + beta * *at };
            }
        }
    }
}

/// cuBLAS's `sgemv` (no transpose, alpha 1, beta 0) of an `m x n` matrix with leading
/// dimension `m` and a vector of ones: each row's sum.
///
/// # Safety
/// `a` holds `m * n` values, `ones` `n`, `y` `m`.
pub unsafe fn row_sums(m: usize, n: usize, a: *const f32, ones: *const f32, y: *mut f32) {
    for i in 0..m {
        let mut sum = 0.0f32;
        for j in 0..n {
            // SAFETY: inside the extents the caller guarantees.
            sum += unsafe { *a.add(i + j * m) * *ones.add(j) };
        }
        // SAFETY: as above.
        unsafe { *y.add(i) = sum };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_signature_is_read() {
        let sigs = signatures(KERNELS_CU).unwrap();
        assert_eq!(sigs.len(), KERNEL_NAMES.len());
        let bias = sigs.iter().find(|s| s.name == "bias_act").unwrap();
        assert_eq!(
            bias.types,
            ["float*", "const float*", "i64", "int", "float", "float"]
        );
        assert!(
            sigs.iter()
                .find(|s| s.name == "sum_finish")
                .unwrap()
                .threaded
        );
        assert!(!sigs.iter().find(|s| s.name == "im2col").unwrap().threaded);
    }
}
