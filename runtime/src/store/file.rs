//! Checkpoints in a file, for hosts and Linux boards. The file holds exactly what one flash
//! slot holds (header, then payload), so a slot dumped from a board reads the same way.
//!
//! A save writes a temporary file beside the target, syncs it, renames it over the target and
//! syncs the directory: a crash leaves the old file or the new one, never a mix.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::vec::Vec;

use super::{CheckpointHeader, ModelId, SlotProblem, decode_image, payload_crc};

/// Why a checkpoint file could not be saved or loaded. The caller knows the path and adds it
/// to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileStoreError {
    /// The file system failed.
    Io(io::ErrorKind),
    /// The file is not a complete checkpoint.
    Invalid(SlotProblem),
    /// The file holds a checkpoint of another model.
    OtherModel {
        /// The model it belongs to.
        found: ModelId,
    },
    /// The payload is longer than a checkpoint can record (4 GiB).
    TooLarge,
}

impl From<io::Error> for FileStoreError {
    fn from(e: io::Error) -> Self {
        FileStoreError::Io(e.kind())
    }
}

impl core::fmt::Display for FileStoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FileStoreError::Io(kind) => write!(f, "{kind}"),
            FileStoreError::Invalid(problem) => write!(f, "{problem}"),
            FileStoreError::OtherModel { found } => {
                write!(f, "checkpoint belongs to another model ({found})")
            }
            FileStoreError::TooLarge => f.write_str("payload larger than 4 GiB"),
        }
    }
}

impl std::error::Error for FileStoreError {}

/// Reads the checkpoint at `path`: `None` when there is no file.
pub fn load(
    path: &Path,
    model: ModelId,
) -> Result<Option<(CheckpointHeader, Vec<u8>)>, FileStoreError> {
    let image = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (header, payload) = decode_image(&image).map_err(FileStoreError::Invalid)?;
    if header.model != model {
        return Err(FileStoreError::OtherModel {
            found: header.model,
        });
    }
    Ok(Some((header, payload.to_vec())))
}

/// Saves a checkpoint of `model` (the payload is `parts` concatenated) to `path`, replacing
/// what was there atomically. The sequence number continues the file's, if it held a valid
/// checkpoint.
pub fn save(
    path: &Path,
    model: ModelId,
    parts: &[&[u8]],
) -> Result<CheckpointHeader, FileStoreError> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let len = u32::try_from(len).map_err(|_| FileStoreError::TooLarge)?;
    let previous = fs::read(path)
        .ok()
        .and_then(|image| decode_image(&image).ok().map(|(h, _)| h.sequence));
    let sequence = previous.map_or(1, |s| s.wrapping_add(1));
    let header = CheckpointHeader::new(sequence, model, len, payload_crc(parts));

    let temp = temp_path(path);
    let written = (|| -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&header.encode())?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(header)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(std::format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Makes the rename durable: on POSIX file systems a rename lives in the directory.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HEADER_LEN;

    #[test]
    fn saves_replace_atomically_and_count_up() {
        let dir = std::env::temp_dir().join(std::format!("loam-ckpt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.ckpt");
        let _ = fs::remove_file(&path);
        let id = ModelId(42);

        assert_eq!(load(&path, id), Ok(None));
        let first = save(&path, id, &[b"abc", b"def"]).unwrap();
        assert_eq!(first.sequence, 1);
        assert_eq!(load(&path, id), Ok(Some((first, b"abcdef".to_vec()))));
        let second = save(&path, id, &[b"xyz"]).unwrap();
        assert_eq!(second.sequence, 2);
        assert_eq!(load(&path, id), Ok(Some((second, b"xyz".to_vec()))));
        // Nothing but the checkpoint is left in the directory.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        assert_eq!(
            load(&path, ModelId(7)),
            Err(FileStoreError::OtherModel { found: id })
        );
        let mut image = fs::read(&path).unwrap();
        image[HEADER_LEN] ^= 0x10;
        fs::write(&path, &image).unwrap();
        assert_eq!(
            load(&path, id),
            Err(FileStoreError::Invalid(SlotProblem::PayloadChecksum))
        );
        fs::write(&path, &image[..HEADER_LEN + 1]).unwrap();
        assert_eq!(
            load(&path, id),
            Err(FileStoreError::Invalid(SlotProblem::Truncated))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_save_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(std::format!("loam-ckpt-ro-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("missing-dir").join("model.ckpt");
        assert!(matches!(
            save(&path, ModelId(1), &[b"x"]),
            Err(FileStoreError::Io(io::ErrorKind::NotFound))
        ));
        assert!(!path.exists());
    }
}
