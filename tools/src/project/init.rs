//! `loam init`: a commented `loam.toml` to start from, alone or with a bundled data set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::{digits, gestures};
use crate::model_file::write_atomically;

/// The bundled data sets `loam init --example` sets up.
pub const EXAMPLES: [&str; 3] = ["digits", "gestures", "keywords"];

/// The bundled digits project, the same file as `models/digits/loam.toml`.
const DIGITS: &str = include_str!("../../../models/digits/loam.toml");
/// The bundled gestures project, the same file as `models/gestures/loam.toml`.
const GESTURES: &str = include_str!("../../../models/gestures/loam.toml");
/// The bundled keyword-spotting project, the same file as `models/keywords/loam.toml`.
const KEYWORDS: &str = include_str!("../../../models/keywords/loam.toml");
/// Where the keyword clips are: a folder of hundreds of WAV files is too much to build into
/// the binary (the two table-shaped examples are), so `init` copies it from the checkout
/// loam was built from.
const KEYWORDS_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/keywords/data");
const GENERIC: &str = r#"# loam project file: `loam train` trains this model, `loam eval` scores the last run.
# Every path is relative to this file.
name = "my-model"

[task]
kind = "classification"          # classification | regression | anomaly

[data]
path = "data/train.csv"          # .csv/.tsv (optionally .gz), .npy (+ labels), .npz, IDX, or a folder of class folders of PNGs or WAVs
# labels = "data/labels.npy"     # for .npy and IDX data
# sample_dims = [8, 8, 1]        # reshape each row, e.g. into an image

[data.csv]
has_header = true
label = "last"                   # or { name = "species" } or { index = 0 }
# categorical = [{ name = "colour" }]   # one-hot encoded

[data.prep]
scaling = "standardize"          # none | min_max | standardize
missing = "mean"                 # keep | drop_rows | mean | median | mode

[data.split]
validation = 0.15
test = 0.15
seed = 0

[model]
template = "mlp"                 # mlp | cnn-small | ds-cnn | mobilenet-v1-alpha | resnet-8 | autoencoder

[training]
epochs = 20
batch_size = 32
learning_rate = 0.001
optimizer = { kind = "adam" }
early_stopping = { patience = 5 }

[target]
board = "cortex-m4"
"#;

/// Writes `dir/loam.toml` (never over an existing one), and with `example` its data set.
pub fn init(dir: &Path, example: Option<&str>) -> Result<PathBuf> {
    let path = dir.join("loam.toml");
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (text, data) = match example {
        None => (GENERIC, None),
        Some("digits") => (DIGITS, Some(("digits.csv.gz", digits::BUNDLED))),
        Some("gestures") => (GESTURES, Some(("gestures.csv.gz", gestures::BUNDLED))),
        Some("keywords") => {
            copy_folder(Path::new(KEYWORDS_DATA), &dir.join("data")).with_context(|| {
                format!(
                    "copying the keyword clips from {KEYWORDS_DATA} (the loam checkout this \
                     binary was built from)"
                )
            })?;
            (KEYWORDS, None)
        }
        Some(other) => bail!(
            "no bundled example `{other}`; bundled: {}",
            EXAMPLES.join(", ")
        ),
    };
    if let Some((file, bytes)) = data {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        write_atomically(&data.join(file), bytes)?;
    }
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Copies the files of `from` into `to`, one level of subfolders deep (class folders),
/// each file written whole.
fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        bail!("{} already exists; not overwriting it", to.display());
    }
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let path = entry?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_folder(&path, &target)?;
        } else {
            std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            write_atomically(&target, &bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Project;

    /// The clips make_data.py writes (see models/keywords/MODEL_CARD.md).
    const KEYWORD_CLIPS: usize = 1144;

    #[test]
    fn written_files_parse_and_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = init(dir.path(), Some("digits")).unwrap();
        let (project, _) = Project::load(&path).unwrap();
        assert_eq!(project.name, "digits");
        assert!(dir.path().join("data/digits.csv.gz").exists());
        let e = init(dir.path(), None).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let other = tempfile::tempdir().unwrap();
        Project::load(&init(other.path(), None).unwrap()).unwrap();
        assert!(init(other.path(), Some("mnist")).is_err());
    }

    /// Every example's `loam.toml` finds its data where `init` puts it, and the data fits
    /// the sample shape the file declares.
    #[test]
    fn every_example_loads_its_data() {
        for example in EXAMPLES {
            let dir = tempfile::tempdir().unwrap();
            let path = init(dir.path(), Some(example)).unwrap();
            let (project, _) = Project::load(&path).unwrap();
            assert_eq!(project.name, example);
            let prepared = crate::project::pipeline::prepare(&project, dir.path()).unwrap();
            // Counted by the split: the training rows may hold augmented copies too.
            let split = &prepared.split;
            let rows = split.train.len() + split.val.len() + split.test.len();
            let want = match example {
                "digits" => 1797,
                "gestures" => 1800,
                "keywords" => KEYWORD_CLIPS,
                other => panic!("no row count for example `{other}`"),
            };
            assert_eq!(rows, want, "{example}");
            let dims = match example {
                "keywords" => vec![49, 40, 1],
                _ => project.data.sample_dims.clone().unwrap(),
            };
            assert_eq!(prepared.train.sample_dims, dims, "{example}");
        }
    }
}
