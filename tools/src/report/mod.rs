//! Run reports: training history, charts, fit hints and a self-contained HTML page.
//!
//! The trainer fills a [`History`] epoch by epoch; at the end of a run
//! [`html`] draws the charts ([`loss_curves`], [`confusion_matrix`]) next to the
//! page and writes `report.html` with everything embedded, so the page can be
//! mailed or attached to an issue on its own.
//!
//! Charts are drawn with `plotters` without system fonts: text is rendered from
//! the Hack Regular typeface bundled in the `epaint_default_fonts` crate. Hack is
//! © 2018 Source Foundry Authors under the MIT licence, derived from DejaVu
//! (public domain changes) and Bitstream Vera (Bitstream Vera licence); both
//! licences allow embedding and redistribution. Nothing is downloaded at run time.
//!
//! Every file is written atomically (a temporary file in the same directory,
//! then a rename), so an interrupted or failed run never leaves a half-written
//! image or page behind.

mod charts;
mod hints;
mod html;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::metrics::{AnomalyReport, ClassificationReport, Mistake, RegressionReport};

pub use charts::{ChartFiles, confusion_matrix, loss_curves};
pub use hints::fit_hints;
pub use html::html;

/// What happened in each epoch of a training run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Name of the metric in `train_metric`/`val_metric`, such as `accuracy` or
    /// `mae`. Names containing `loss`, `error`, `mae`, `mse` or `rmse` are taken
    /// as lower-is-better, everything else as higher-is-better.
    pub metric_name: String,
    /// One record per finished epoch, in order.
    pub epochs: Vec<EpochRecord>,
}

/// The numbers of one training epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number as the trainer counts it.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Loss on the validation split, when there is one.
    pub val_loss: Option<f64>,
    /// The history's metric on the training split.
    pub train_metric: Option<f64>,
    /// The history's metric on the validation split.
    pub val_metric: Option<f64>,
    /// Learning rate used in the epoch.
    pub learning_rate: f64,
    /// Wall-clock time the epoch took.
    pub seconds: f64,
}

impl History {
    /// An empty history for the named metric.
    pub fn new(metric_name: impl Into<String>) -> Self {
        Self {
            metric_name: metric_name.into(),
            epochs: Vec::new(),
        }
    }

    /// Whether a larger value of the metric is better, judged from its name.
    pub fn higher_is_better(&self) -> bool {
        let name = self.metric_name.to_ascii_lowercase();
        !["loss", "error", "mae", "mse", "rmse"]
            .iter()
            .any(|w| name.contains(w))
    }
}

/// Final evaluation of one model variant (float or int8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evaluation {
    /// A classifier's report.
    Classification(ClassificationReport),
    /// A regressor's report.
    Regression(RegressionReport),
    /// An anomaly detector's report.
    Anomaly(AnomalyReport),
}

/// Everything a run's HTML page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's name, used as the page title.
    pub name: String,
    /// The configuration the run used (for example the `loam.toml` text), shown verbatim.
    pub config_text: String,
    /// Per-epoch training history; no curves are drawn when it has no epochs.
    pub history: History,
    /// Evaluation of the float model.
    pub float_eval: Option<Evaluation>,
    /// Evaluation of the int8 quantized model.
    pub int8_eval: Option<Evaluation>,
    /// Class names by index; indices are shown where a name is missing.
    pub class_names: Vec<String>,
    /// Most confident wrong predictions, as [`crate::metrics::most_confident_mistakes`] returns them.
    pub mistakes: Vec<Mistake>,
    /// Advice about the fit, usually from [`fit_hints`].
    pub hints: Vec<String>,
    /// Further facts worth a line each, such as flash and arena bytes.
    pub extra: Vec<(String, String)>,
}

/// `<path>.<ext>` without touching any dot already in the file name.
fn with_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// A temporary file in `target`'s directory whose name ends like `target`'s, so
/// that encoders choosing a format by extension see the right one and the final
/// rename stays on one file system.
fn temp_beside(target: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let suffix = target
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut builder = tempfile::Builder::new();
    builder.prefix(".loam-tmp-").suffix(&suffix);
    // Temporary files are private by default; the renamed result should get the
    // usual permissions of a new file (0o666 less the umask), like `File::create`.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file for {}", target.display()))
}

/// Moves a finished temporary file onto `target`.
fn persist(tmp: tempfile::NamedTempFile, target: &Path) -> anyhow::Result<()> {
    tmp.persist(target)
        .map(drop)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", target.display()))
}

/// Writes `bytes` to `target` so readers see either the old file or the whole new one.
fn write_atomic(target: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = temp_beside(target)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", target.display()))?;
    persist(tmp, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.txt");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("a.txt")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_ne!(
                mode & 0o044,
                0,
                "report files should be readable by others: {mode:o}"
            );
        }
    }

    #[test]
    fn atomic_write_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing").join("a.txt");
        let err = format!("{:#}", write_atomic(&target, b"x").unwrap_err());
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn extension_is_appended() {
        assert_eq!(
            with_ext(Path::new("out/loss.v2"), "png"),
            PathBuf::from("out/loss.v2.png")
        );
    }

    #[test]
    fn metric_direction_from_name() {
        assert!(History::new("accuracy").higher_is_better());
        assert!(!History::new("MAE").higher_is_better());
    }

    #[test]
    fn history_round_trips_through_json() {
        let mut h = History::new("accuracy");
        h.epochs.push(EpochRecord {
            epoch: 1,
            train_loss: 0.5,
            val_loss: Some(0.6),
            ..Default::default()
        });
        let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
