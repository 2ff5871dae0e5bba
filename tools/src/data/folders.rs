//! Data sets kept as one subfolder per class (images, audio clips): the listing both
//! loaders share, so that classes and rows come in the same order and hidden files are
//! treated alike.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One class subfolder and its files.
pub(crate) struct ClassFolder {
    /// The subfolder's name: the class name.
    pub name: String,
    /// Its files, sorted by name.
    pub files: Vec<PathBuf>,
}

/// Whether a file or folder is hidden (its name starts with a dot).
pub(crate) fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether `path` ends in `.extension`, in any case.
pub(crate) fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(extension))
}

/// The subfolders of `root` in sorted order, without hidden ones and those named in `skip`.
pub(crate) fn class_dirs(root: &Path, skip: &[&str]) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", root.display()))?
            .path();
        let skipped = path
            .file_name()
            .is_some_and(|n| skip.iter().any(|s| n == *s));
        if path.is_dir() && !hidden(&path) && !skipped {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The class subfolders of `root` (see [`class_dirs`]) with their files, all of which must
/// end in `.extension`; hidden files and nested folders are ignored. `what` names the files
/// in errors ("PNG images"): a folder without classes or files, or a file of another kind,
/// is an error naming it.
pub(crate) fn class_folders(
    root: &Path,
    extension: &str,
    what: &str,
    skip: &[&str],
) -> Result<Vec<ClassFolder>> {
    let dirs = class_dirs(root, skip)?;
    if dirs.is_empty() {
        bail!(
            "{}: no class subfolders (expected one folder of {what} per class)",
            root.display()
        );
    }
    let mut classes = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let mut files = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if hidden(&path) || path.is_dir() {
                continue;
            }
            if !has_extension(&path, extension) {
                bail!("{}: only {what} are read", path.display());
            }
            files.push(path);
        }
        files.sort();
        classes.push(ClassFolder {
            name: dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            files,
        });
    }
    if classes.iter().all(|c| c.files.is_empty()) {
        bail!("{}: the class subfolders hold no {what}", root.display());
    }
    Ok(classes)
}
