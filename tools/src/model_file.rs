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
