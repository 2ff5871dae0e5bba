//! `loam init`: a commented `loam.toml` to start from, alone or with a bundled data set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::digits;
use crate::model_file::write_atomically;

/// The bundled data sets `loam init --example` sets up.
pub const EXAMPLES: [&str; 1] = ["digits"];

/// The bundled digits project, the same file as `models/digits/loam.toml`.
const DIGITS: &str = include_str!("../../../models/digits/loam.toml");
const GENERIC: &str = r#"# loam project file: `loam train` trains this model, `loam eval` scores the last run.
# Every path is relative to this file.
name = "my-model"

[task]
kind = "classification"          # classification | regression | anomaly

[data]
path = "data/train.csv"          # .csv/.tsv (optionally .gz), .npy (+ labels), IDX, or a folder of class folders of PNGs
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
    let text = match example {
        None => GENERIC,
        Some("digits") => {
            let data = dir.join("data");
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            write_atomically(&data.join("digits.csv.gz"), digits::BUNDLED)?;
            DIGITS
        }
        Some(other) => bail!(
            "no bundled example `{other}`; bundled: {}",
            EXAMPLES.join(", ")
        ),
    };
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Project;

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
}
