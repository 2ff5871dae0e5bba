//! Finding CUDA's libraries at run time. cudarc (`dynamic-loading`) opens them by soname and
//! panics when one is missing, so every library is probed with its `is_culib_present` first.
//! Besides the system library path, NVRTC and cuBLAS are looked for in NVIDIA's Python wheels
//! (`pip install nvidia-cublas nvidia-cuda-nvrtc`: `site-packages/nvidia/cu13/lib`, or
//! `nvidia/<name>/lib` in older layouts), which is how most machines with PyTorch have them. A
//! library found there is loaded by its full path with `RTLD_GLOBAL` and kept loaded: glibc
//! matches a later `dlopen("libcublas.so.13")` against objects already loaded by their
//! `DT_SONAME`, so cudarc's own open then finds it.
//!
//! Where loam looks, in order: `$LOAM_CUDA_LIB_DIR` (folders, `:`-separated), `$VIRTUAL_ENV`
//! and `$CONDA_PREFIX` (their `lib` and `site-packages`), and the site-packages folders of
//! `python3`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use super::error::CudaUnavailable;

/// A CUDA library loam needs besides the driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CudaLib {
    /// Its soname, which cudarc opens.
    pub soname: &'static str,
    /// The PyPI package that carries it.
    pub wheel: &'static str,
    /// Libraries it loads from its own folder, by file-name prefix, preloaded before it.
    pub companions: &'static [&'static str],
    /// cudarc's probe for it.
    present: unsafe fn() -> bool,
}

/// NVRTC, which compiles the kernels. Its builtins library is opened by NVRTC itself.
pub(crate) const NVRTC: CudaLib = CudaLib {
    soname: "libnvrtc.so.13",
    wheel: "nvidia-cuda-nvrtc",
    companions: &["libnvrtc-builtins.so.13"],
    present: cudarc::nvrtc::sys::is_culib_present,
};

/// cuBLAS, for the matrix products; it needs cuBLASLt from the same release.
pub(crate) const CUBLAS: CudaLib = CudaLib {
    soname: "libcublas.so.13",
    wheel: "nvidia-cublas",
    companions: &["libcublasLt.so.13"],
    present: cudarc::cublas::sys::is_culib_present,
};

/// Libraries loaded by path, kept open for the life of the process.
static PRELOADED: Mutex<Vec<Library>> = Mutex::new(Vec::new());

/// Whether the driver library (`libcuda.so.1`) can be opened.
pub(crate) fn driver_present() -> bool {
    // SAFETY: the probe only dlopens candidate names of NVIDIA's driver library (running its
    // initialisers, which have no preconditions) and closes them again.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Makes `lib` loadable by cudarc, from the library path or a wheel, or says where it looked.
pub(crate) fn ensure(lib: CudaLib) -> Result<(), CudaUnavailable> {
    // SAFETY: as in `driver_present`: dlopen and dlclose of the library's candidate names.
    if unsafe { (lib.present)() } {
        return Ok(());
    }
    let dirs = search_dirs();
    for dir in &dirs {
        let path = dir.join(lib.soname);
        if !path.is_file() {
            continue;
        }
        for prefix in lib.companions {
            if let Some(companion) = find_prefixed(dir, prefix) {
                preload(&companion);
            }
        }
        if preload(&path) {
            // SAFETY: as above.
            if unsafe { (lib.present)() } {
                return Ok(());
            }
        }
    }
    let searched: String = dirs.iter().map(|d| format!(", {}", d.display())).collect();
    Err(CudaUnavailable::MissingLibrary {
        soname: lib.soname,
        wheel: lib.wheel,
        searched: if searched.is_empty() {
            " and found no NVIDIA wheels".into()
        } else {
            format!(", then{}", &searched[1..])
        },
    })
}

/// Opens `path` with `RTLD_NOW | RTLD_GLOBAL` and keeps it open; false if it cannot be.
fn preload(path: &Path) -> bool {
    // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions; the
    // handle is kept for the life of the process, so nothing it exports is ever unmapped.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(library) => {
            PRELOADED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(library);
            true
        }
        Err(_) => false,
    }
}

/// The first file in `dir` whose name starts with `prefix` (`libnvrtc-builtins.so.13` for
/// `libnvrtc-builtins.so.13.5`), by name order.
fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The folders that may hold CUDA libraries, in search order, existing ones only.
pub(crate) fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("LOAM_CUDA_LIB_DIR") {
        dirs.extend(std::env::split_paths(&v));
    }
    let mut sites: Vec<PathBuf> = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = std::env::var_os(var).map(PathBuf::from) {
            // Conda installs CUDA's libraries straight into the environment's lib.
            dirs.push(prefix.join("lib"));
            sites.extend(python_sites_under(&prefix.join("lib")));
        }
    }
    sites.extend(python_site_dirs().iter().cloned());
    for site in sites {
        let nvidia = site.join("nvidia");
        // CUDA 13 wheels share one folder; older layouts have one per library.
        dirs.push(nvidia.join("cu13").join("lib"));
        if let Ok(entries) = std::fs::read_dir(&nvidia) {
            let mut own: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join("lib")))
                .collect();
            own.sort();
            dirs.extend(own);
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

/// `lib/python3*/site-packages` under a virtual environment's or Conda's `lib`.
fn python_sites_under(lib: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib) else {
        return Vec::new();
    };
    let mut sites: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages"))
        .collect();
    sites.sort();
    sites
}

/// `python3`'s site-packages folders (system and user), asked once; none without Python.
fn python_site_dirs() -> &'static [PathBuf] {
    static SITES: OnceLock<Vec<PathBuf>> = OnceLock::new();
    SITES.get_or_init(|| {
        const ASK: &str = "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))";
        Command::new("python3")
            .args(["-c", ASK])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}
