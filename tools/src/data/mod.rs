//! Data sets for training: loaders (CSV, IDX, NumPy, folders of PNG images), cleaning and
//! transforms fit on a training split, seeded splits, and profiles for `loam data inspect`.
//!
//! Everything lands in one in-memory [`Dataset`]: a row-major `f32` matrix of samples (NaN
//! marks a missing value) with per-row targets. Loaders report bad input as errors naming
//! the file, the line or record and the column; none of them panics on any bytes.

#![warn(missing_docs)]

pub mod audio;
pub mod csv;
pub mod digits;
mod folders;
pub mod gestures;
pub mod idx;
pub mod images;
pub mod npy;
pub mod prep;
pub mod profile;
pub mod split;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use prep::{ClassBalance, PrepOptions, Preprocessing};
pub use profile::{Profile, profile};
pub use split::Split;

/// A data set held in memory: one sample per row, plus its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// A short name for reports, usually the file stem.
    pub name: String,
    /// The shape of one sample, e.g. `[64]` for a feature vector or `[8, 8, 1]` for an
    /// image (NHWC without N).
    pub sample_dims: Vec<usize>,
    /// `rows() * sample_len()` values, row-major; NaN marks a missing value.
    pub features: Vec<f32>,
    /// One name per value of a sample (`sample_len()` of them).
    pub feature_names: Vec<String>,
    /// What each row should predict.
    pub targets: Targets,
    /// For classification, the name of each class id (`class_names[id]`); empty otherwise.
    pub class_names: Vec<String>,
}

/// The targets of a [`Dataset`], one per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    /// A class id per row, indexing [`Dataset::class_names`].
    Classes(Vec<u32>),
    /// `width` real values per row (regression), row-major.
    Values {
        /// `rows * width` values.
        values: Vec<f32>,
        /// Values per row.
        width: usize,
    },
    /// No targets (unlabelled data).
    None,
}

/// What a label column holds, and so what a model learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Labels are classes: names or non-negative integers.
    #[default]
    Classification,
    /// Labels are real numbers.
    Regression,
}

impl Targets {
    /// The number of rows these targets cover, or `None` for [`Targets::None`].
    pub fn rows(&self) -> Option<usize> {
        match self {
            Targets::Classes(c) => Some(c.len()),
            Targets::Values { values, width } => {
                Some(if *width == 0 { 0 } else { values.len() / width })
            }
            Targets::None => None,
        }
    }

    /// The targets of the rows at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(indices.iter().map(|&i| c[i]).collect()),
            Targets::Values { values, width } => Targets::Values {
                values: indices
                    .iter()
                    .flat_map(|&i| &values[i * width..(i + 1) * width])
                    .copied()
                    .collect(),
                width: *width,
            },
            Targets::None => Targets::None,
        }
    }
}

impl Dataset {
    /// The number of values in one sample: the product of `sample_dims`.
    pub fn sample_len(&self) -> usize {
        self.sample_dims.iter().product()
    }

    /// The number of rows (samples).
    pub fn rows(&self) -> usize {
        match self.sample_len() {
            // Without features the targets alone say how many rows there are.
            0 => self.targets.rows().unwrap_or(0),
            n => self.features.len() / n,
        }
    }

    /// The values of row `i`.
    ///
    /// # Panics
    /// If `i >= rows()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.features[i * n..(i + 1) * n]
    }

    /// A new data set of the rows at `indices`, in that order (indices may repeat).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.sample_len());
        for &i in indices {
            features.extend_from_slice(self.sample(i));
        }
        Dataset {
            name: self.name.clone(),
            sample_dims: self.sample_dims.clone(),
            features,
            feature_names: self.feature_names.clone(),
            targets: self.targets.subset(indices),
            class_names: self.class_names.clone(),
        }
    }

    /// The class id of each row, or `None` when the targets are not classes.
    pub fn classes(&self) -> Option<&[u32]> {
        match &self.targets {
            Targets::Classes(c) => Some(c),
            _ => None,
        }
    }

    /// The number of classes: `class_names.len()`, or one more than the largest class id
    /// when that is larger (so ids always index a count); 0 without class targets.
    pub fn num_classes(&self) -> usize {
        match self.classes() {
            Some(c) => {
                let largest = c.iter().max().map_or(0, |&m| m as usize + 1);
                largest.max(self.class_names.len())
            }
            None => 0,
        }
    }

    /// Checks that the parts agree: whole rows of features, one name per feature, one
    /// target per row and class ids within `class_names`.
    pub fn validate(&self) -> Result<()> {
        let n = self.sample_len();
        if n > 0 && !self.features.len().is_multiple_of(n) {
            bail!(
                "{}: {} feature values are not a whole number of samples of {n}",
                self.name,
                self.features.len()
            );
        }
        if n == 0 && !self.features.is_empty() {
            bail!(
                "{}: samples have no values but features are not empty",
                self.name
            );
        }
        if self.feature_names.len() != n {
            bail!(
                "{}: {} feature names for samples of {n} values",
                self.name,
                self.feature_names.len()
            );
        }
        let rows = self.rows();
        if let Targets::Values { values, width } = &self.targets
            && values.len() != rows * width
        {
            bail!(
                "{}: {} target values for {rows} rows of width {width}",
                self.name,
                values.len()
            );
        }
        if let Some(t) = self.targets.rows()
            && t != rows
        {
            bail!("{}: {t} targets for {rows} rows", self.name);
        }
        if let Some(classes) = self.classes()
            && !self.class_names.is_empty()
            && let Some(bad) = classes
                .iter()
                .position(|&c| c as usize >= self.class_names.len())
        {
            bail!(
                "{}: row {bad} has class id {} but there are only {} class names",
                self.name,
                classes[bad],
                self.class_names.len()
            );
        }
        Ok(())
    }
}

/// The formats [`load`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values, optionally gzipped: [`csv`].
    Csv,
    /// MNIST-style IDX, optionally gzipped: [`idx`].
    Idx,
    /// A NumPy `.npy` array or `.npz` archive: [`npy`].
    Npy,
    /// A folder with one subfolder of PNG images per class: [`images`].
    ImageFolder,
    /// A folder with one subfolder of WAV clips per class: [`audio`].
    AudioFolder,
}

impl Format {
    /// Guesses the format from the path: a directory is an audio folder if a class subfolder
    /// holds a `.wav` file and an image folder otherwise, then by file name
    /// (`.csv`, `.tsv`, `.txt`; `.npy`; names ending `ubyte` or holding `.idx`; each
    /// optionally `.gz`).
    pub fn detect(path: &Path) -> Result<Format> {
        if path.is_dir() {
            return Ok(if audio::is_audio_folder(path) {
                Format::AudioFolder
            } else {
                Format::ImageFolder
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Ok(Format::Csv)
        } else if name.ends_with(".npy") || name.ends_with(".npz") {
            Ok(Format::Npy)
        } else if name.ends_with("ubyte") || name.contains(".idx") {
            Ok(Format::Idx)
        } else {
            bail!(
                "{}: cannot tell the data format from the name (expected .csv, .tsv, .npy, \
                 an IDX file such as train-images-idx3-ubyte, each optionally .gz, or a folder \
                 of class subfolders of PNG images or WAV clips)",
                path.display()
            )
        }
    }
}

/// Loads a data set in any supported format, chosen by [`Format::detect`].
///
/// `labels` is the separate label file of the formats that keep labels apart (IDX, `.npy`);
/// CSV takes its label column from `options`, and image and audio folders from subfolder
/// names; `audio` says how clips become features.
pub fn load(
    path: &Path,
    labels: Option<&Path>,
    options: &csv::CsvOptions,
    audio: &audio::AudioOptions,
) -> Result<Dataset> {
    let format = Format::detect(path)?;
    if labels.is_some()
        && matches!(
            format,
            Format::Csv | Format::ImageFolder | Format::AudioFolder
        )
    {
        bail!(
            "{}: a separate label file only goes with IDX or .npy data",
            path.display()
        );
    }
    match format {
        Format::Csv => csv::load(path, options),
        Format::Idx => idx::load(path, labels),
        Format::Npy => npy::load(path, labels, options.task),
        Format::ImageFolder => images::load(path, &images::ImageOptions::default()),
        Format::AudioFolder => audio::load(path, audio),
    }
}

/// Opens `path` for reading, undoing gzip when the file starts with the gzip magic bytes
/// (whatever its name), so every loader takes `.gz` files too.
pub(crate) fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .with_context(|| format!("reading {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads all of `path` (gunzipped if need be) into memory.
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// The file name without directories and without `.gz` and one more extension, for
/// [`Dataset::name`].
pub(crate) fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset {
            name: "tiny".into(),
            sample_dims: vec![2],
            features: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            feature_names: vec!["a".into(), "b".into()],
            targets: Targets::Classes(vec![1, 0, 1]),
            class_names: vec!["no".into(), "yes".into()],
        }
    }

    #[test]
    fn rows_sample_and_subset() {
        let d = tiny();
        assert_eq!(d.rows(), 3);
        assert_eq!(d.sample_len(), 2);
        assert_eq!(d.sample(1), &[2.0, 3.0]);
        let s = d.subset(&[2, 0, 2]);
        assert_eq!(s.features, vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
        assert_eq!(s.classes(), Some(&[1, 1, 1][..]));
        assert_eq!(d.num_classes(), 2);
        d.validate().unwrap();
    }

    #[test]
    fn subset_of_regression_targets_keeps_rows_whole() {
        let mut d = tiny();
        d.targets = Targets::Values {
            values: vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5],
            width: 2,
        };
        let s = d.subset(&[2, 1]);
        assert_eq!(
            s.targets,
            Targets::Values {
                values: vec![4.5, 5.5, 2.5, 3.5],
                width: 2
            }
        );
    }

    #[test]
    fn validate_catches_mismatched_parts() {
        let mut d = tiny();
        d.targets = Targets::Classes(vec![0, 1]);
        assert!(
            d.validate()
                .unwrap_err()
                .to_string()
                .contains("2 targets for 3 rows")
        );
        let mut d = tiny();
        d.targets = Targets::Classes(vec![0, 1, 2]);
        let err = d.validate().unwrap_err().to_string();
        assert!(err.contains("row 2 has class id 2"), "{err}");
        let mut d = tiny();
        d.features.pop();
        assert!(d.validate().is_err());
    }

    #[test]
    fn format_detection_and_stems() {
        let p = Path::new;
        assert_eq!(Format::detect(p("a/b.csv.gz")).unwrap(), Format::Csv);
        assert_eq!(Format::detect(p("x.NPY")).unwrap(), Format::Npy);
        assert_eq!(
            Format::detect(p("train-images-idx3-ubyte.gz")).unwrap(),
            Format::Idx
        );
        assert_eq!(Format::detect(p("d.npz")).unwrap(), Format::Npy);
        assert!(Format::detect(p("model.onnx")).is_err());
        assert_eq!(stem(p("dir/digits.csv.gz")), "digits");
        assert_eq!(
            stem(p("train-images-idx3-ubyte")),
            "train-images-idx3-ubyte"
        );
    }

    #[test]
    fn open_undoes_gzip_by_content() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain-name.dat");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read_all(&path).unwrap(), b"hello");
        let missing = dir.path().join("nope.csv");
        let err = format!("{:#}", read_all(&missing).unwrap_err());
        assert!(err.contains("nope.csv"), "{err}");
    }
}
