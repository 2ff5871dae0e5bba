//! Reading `.loam` files from disk and writing any output file without ever leaving a
//! partial one behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use loam::Model;
use loam::format::AlignedBytes;

/// A `.loam` file read into aligned memory, ready to be viewed as a [`Model`].
pub struct ModelFile {
    /// Where it came from, for messages.
    pub path: PathBuf,
    bytes: AlignedBytes,
}

impl ModelFile {
    /// Reads and validates `path`; errors name the file and what is wrong with it.
    pub fn open(path: &Path) -> Result<ModelFile> {
        let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = ModelFile {
            path: path.to_path_buf(),
            bytes: AlignedBytes::new(&raw),
        };
        file.model()?;
        Ok(file)
    }

    /// A model already in memory (written by code, or read by the caller); `origin` names it
    /// in messages.
    pub fn from_bytes(origin: &str, bytes: &[u8]) -> Result<ModelFile> {
        let file = ModelFile {
            path: PathBuf::from(origin),
            bytes: AlignedBytes::new(bytes),
        };
        file.model()?;
        Ok(file)
    }

    /// The validated model.
    pub fn model(&self) -> Result<Model<'_>> {
        Model::from_bytes(&self.bytes)
            .with_context(|| format!("{} is not a valid .loam model", self.path.display()))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// that `path` holds either its old content or all of the new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // A temporary file is private (0600); the result is an ordinary file others may read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("renaming the temporary file to {}", path.display()))?;
    Ok(())
}

/// Creates the folder `dir` whole: `fill` writes into a hidden temporary folder beside it,
/// which becomes `dir` (by a rename) only once `fill` succeeds and is removed with whatever
/// it holds otherwise, so a failed or interrupted writer never leaves a half-filled `dir`.
/// Refuses a `dir` that already exists.
pub fn write_folder_atomically<T>(dir: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if dir.exists() {
        anyhow::bail!("{} already exists; not overwriting it", dir.display());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))?;
    // A temporary folder is private (0700); the result is an ordinary folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the permissions of {}", temp.path().display()))?;
    }
    // On an error `temp` is dropped here, removing the partial folder.
    let value = fill(temp.path())?;
    let partial = temp.keep();
    if let Err(e) = std::fs::rename(&partial, dir) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e)
            .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn folders_appear_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run-001");
        let e = write_folder_atomically(&dir, |p| -> Result<()> {
            write_atomically(&p.join("a"), b"1")?;
            anyhow::bail!("interrupted")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "interrupted");
        assert!(
            entries(root.path()).is_empty(),
            "{:?}",
            entries(root.path())
        );
        let n = write_folder_atomically(&dir, |p| {
            write_atomically(&p.join("a"), b"1")?;
            Ok(7)
        })
        .unwrap();
        assert_eq!(n, 7);
        assert_eq!(entries(root.path()), ["run-001"]);
        assert_eq!(entries(&dir), ["a"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755);
        }
        let e = write_folder_atomically(&dir, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }
}
