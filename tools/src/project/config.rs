//! `loam.toml`, the project file every lifecycle command reads: the task, the data and how to
//! prepare it, the model, training, quantization and the target board.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::templates::{LayerSpec, TEMPLATES};
use crate::data::audio::AudioOptions;
use crate::data::csv::CsvOptions;
use crate::data::prep::PrepOptions;
use crate::train::{
    Augmentation, Device, EarlyStopping, Loss, Math, Monitor, Optimizer, Regularization, Schedule,
    Selection,
};

/// A parsed `loam.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The model's name.
    pub name: String,
    /// What is learned.
    #[serde(default)]
    pub task: TaskConfig,
    /// Where the data is and how to prepare it.
    pub data: DataConfig,
    /// The architecture.
    pub model: ModelConfig,
    /// How to train.
    #[serde(default)]
    pub training: TrainingConfig,
    /// How to quantize.
    #[serde(default)]
    pub quantize: QuantizeConfig,
    /// The board it is for.
    #[serde(default)]
    pub target: TargetConfig,
    /// The hyperparameter search `loam tune` runs; other commands ignore it (but a broken
    /// one is still an error, as any typo in the file is).
    #[serde(default)]
    pub tune: Option<TuneConfig>,
}

/// `[task]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// The kind of task.
    #[serde(default)]
    pub kind: TaskKind,
}

/// What a model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A class per sample.
    #[default]
    Classification,
    /// Real values per sample.
    Regression,
    /// Reconstruct normal samples; the reconstruction error scores anomalies (labels, if
    /// any, are used only to evaluate: class 0 normal, others anomalous).
    Anomaly,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The data file or folder, relative to `loam.toml`.
    pub path: PathBuf,
    /// A separate label file (IDX, `.npy`), relative to `loam.toml`.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// The shape of one sample, e.g. `[8, 8, 1]` for 8x8 grey images.
    #[serde(default)]
    pub sample_dims: Option<Vec<usize>>,
    /// Drop exact duplicate rows before splitting.
    #[serde(default)]
    pub drop_duplicates: bool,
    /// How to read tables.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Cleaning and transforms, fit on the training split.
    #[serde(default)]
    pub prep: PrepOptions,
    /// The train/validation/test split.
    #[serde(default)]
    pub split: SplitConfig,
    /// How WAV clips become features (for a folder of clips; the defaults are the keyword
    /// models': 49 frames of 10 MFCCs per second of 16 kHz audio).
    #[serde(default)]
    pub audio: AudioOptions,
}

/// `[data.split]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Share of rows for validation.
    #[serde(default = "fifteen_percent")]
    pub validation: f32,
    /// Share of rows held out for the final test.
    #[serde(default = "fifteen_percent")]
    pub test: f32,
    /// How rows are assigned.
    #[serde(default)]
    pub method: SplitMethod,
    /// Seeds the random split.
    #[serde(default)]
    pub seed: u64,
}

fn fifteen_percent() -> f32 {
    0.15
}

impl Default for SplitConfig {
    fn default() -> SplitConfig {
        SplitConfig {
            validation: fifteen_percent(),
            test: fifteen_percent(),
            method: SplitMethod::default(),
            seed: 0,
        }
    }
}

/// How rows are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitMethod {
    /// Shuffled, stratified by class for classification.
    #[default]
    Random,
    /// In file order (time series): train, then validation, then test.
    TimeOrdered,
    /// As a folder of clips' `validation_list.txt` and `testing_list.txt` say (Speech
    /// Commands' convention, which keeps each speaker in one part); the fractions are unused.
    Lists,
}

/// `[model]`: a template or a layer list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A named architecture.
    #[serde(default)]
    pub template: Option<String>,
    /// Layers, in order; the output layer is added to fit the task.
    #[serde(default)]
    pub layers: Option<Vec<LayerSpec>>,
    /// Seeds the initial weights.
    #[serde(default)]
    pub seed: u64,
}

/// `[training]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Samples per update.
    pub batch_size: usize,
    /// Base learning rate.
    pub learning_rate: f32,
    /// The loss; by default cross-entropy for classification, MSE otherwise.
    pub loss: Option<Loss>,
    /// Huber's threshold.
    pub huber_delta: f32,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// L1 penalty on weights.
    pub l1: f32,
    /// L2 penalty on weights.
    pub l2: f32,
    /// Gradient norm clip.
    pub clip_norm: Option<f32>,
    /// Weight classes by inverse frequency.
    pub class_weights: bool,
    /// Stop when validation stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Training-time augmentation.
    pub augmentation: Augmentation,
    /// Seeds shuffling, dropout and augmentation.
    pub seed: u64,
    /// Worker threads (default: all cores). Weights do not depend on it.
    pub threads: Option<usize>,
    /// Epochs of quantization-aware training after the float epochs: the network trains
    /// through its int8 model (the runtime's kernels, straight-through gradients), and the
    /// int8 `.loam` keeps the activation ranges it trained for. 0 for none.
    pub qat_epochs: usize,
    /// Learning rate of the quantization-aware epochs (default: a tenth of `learning_rate`).
    pub qat_learning_rate: Option<f32>,
    /// Where the float epochs train: `"cpu"` (the default; every core, the same weights on any
    /// thread count) or `"cuda"` (the first NVIDIA GPU, through CUDA 13; needs a loam built
    /// with `--features cuda`). `loam train --device` overrides it. Quantization-aware epochs
    /// (`qat_epochs`) train on the CPU only for now, so they need `"cpu"`.
    pub device: Device,
    /// The GPU's matrix-product arithmetic: `"f32"` (the default; the CPU's results up to
    /// summation order) or `"tf32"` (tensor cores, Ampere or newer: faster, products rounded
    /// to 10 mantissa bits). Ignored on the CPU.
    pub math: Math,
}

impl Default for TrainingConfig {
    fn default() -> TrainingConfig {
        TrainingConfig {
            epochs: 20,
            batch_size: 32,
            learning_rate: 1e-3,
            loss: None,
            huber_delta: 1.0,
            optimizer: Optimizer::default(),
            schedule: Schedule::default(),
            warmup_epochs: 0,
            l1: 0.0,
            l2: 0.0,
            clip_norm: None,
            class_weights: false,
            early_stopping: None,
            augmentation: Augmentation::default(),
            seed: 0,
            threads: None,
            qat_epochs: 0,
            qat_learning_rate: None,
            device: Device::Cpu,
            math: Math::F32,
        }
    }
}

/// `[quantize]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantizeConfig {
    /// Training samples the int8 ranges are calibrated on.
    pub calibration_samples: usize,
}

impl Default for QuantizeConfig {
    fn default() -> QuantizeConfig {
        QuantizeConfig {
            calibration_samples: 256,
        }
    }
}

/// `[target]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// The board (for reports: `cortex-m4`, `cortex-m0`, `raspberry-pi-4`, `x86_64`).
    pub board: String,
}

impl Default for TargetConfig {
    fn default() -> TargetConfig {
        TargetConfig {
            board: "cortex-m4".into(),
        }
    }
}

/// `[tune]`: the search `loam tune` runs. Every trial is an ordinary training run of this
/// project with some settings replaced; trials run one after another.
///
/// ```toml
/// [tune]
/// method = "random"                # random (seeded draws) | grid (every combination)
/// trials = 12                      # random: draws (default 10); grid: at most this many
/// scoring = "validation"           # validation | kfold (over train + validation rows)
/// # folds = 5                      # kfold only (default 5)
/// metric = "validation-loss"       # validation-loss | validation-metric (accuracy, or MAE)
/// seed = 3                         # seeds the draws and the folds
///
/// [tune.space]
/// learning_rate = { log_uniform = [1e-4, 1e-2] }
/// batch_size = { choice = [16, 32, 64] }
/// l2 = { choice = [0.0, 1e-4, 1e-3] }
/// epochs = { int_range = [10, 30] }
/// optimizer = { choice = ["adam", "sgd", { kind = "adam-w", weight_decay = 0.05 }] }
/// template = { choice = ["mlp", "cnn-small"] }
/// ```
///
/// Keys of `[tune.space]`: `learning_rate`, `l1`, `l2`, `dropout` (real numbers); `epochs`,
/// `batch_size`, `warmup_epochs` (whole numbers); `optimizer`, `schedule` (a kind, as a
/// string, or a whole table as in `[training]`); `template` (a template name; it replaces
/// `model.layers`). `dropout` sets the rate of every dropout layer of `model.layers`, so it
/// needs such a list. Each takes one spec: `choice = [...]` (any key), `uniform = [lo, hi]`
/// or `log_uniform = [lo, hi]` (real keys; drawn values keep 3 significant digits), or
/// `int_range = [lo, hi]` (whole-number keys, both ends included). A grid takes only
/// `choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// How settings are picked.
    #[serde(default)]
    pub method: TuneMethod,
    /// Random: how many draws (default 10). Grid: the most combinations to run.
    #[serde(default)]
    pub trials: Option<usize>,
    /// How a trial is scored.
    #[serde(default)]
    pub scoring: Scoring,
    /// Folds for `scoring = "kfold"` (default 5).
    #[serde(default)]
    pub folds: Option<usize>,
    /// The figure trials are ranked by: the validation loss, or the task's metric
    /// (accuracy for classification, mean absolute error otherwise).
    #[serde(default)]
    pub metric: Monitor,
    /// Seeds the random draws and the fold assignment.
    #[serde(default)]
    pub seed: u64,
    /// The settings searched, by key; checked by [`super::tune::Search::new`], which names
    /// the key in every error.
    #[serde(default)]
    pub space: BTreeMap<String, toml::Value>,
}

/// How `loam tune` picks settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TuneMethod {
    /// Seeded random draws from each key's spec.
    #[default]
    Random,
    /// Every combination of the keys' `choice` lists.
    Grid,
}

/// How a `loam tune` trial is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// Train on the training split, score on the validation split.
    #[default]
    Validation,
    /// k-fold cross-validation over the training and validation rows (the test rows stay
    /// out); the score is the mean over folds.
    Kfold,
}

impl Project {
    /// Parses `text` (from `origin`, for messages) and checks what serde cannot.
    pub fn parse(text: &str, origin: &Path) -> Result<Project> {
        let project: Project =
            toml::from_str(text).with_context(|| format!("reading {}", origin.display()))?;
        project
            .check()
            .with_context(|| format!("in {}", origin.display()))?;
        Ok(project)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<(Project, String)> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading {} (run `loam init` to write one)", path.display())
        })?;
        Ok((Project::parse(&text, path)?, text))
    }

    fn check(&self) -> Result<()> {
        self.check_settings()?;
        if self.tune.is_some() {
            super::tune::Search::new(self)?;
        }
        Ok(())
    }

    /// The checks of [`Project::parse`] short of `[tune]`, for a trial's settings.
    pub(crate) fn check_settings(&self) -> Result<()> {
        match (&self.model.template, &self.model.layers) {
            (Some(_), Some(_)) => bail!("model: give `template` or `layers`, not both"),
            (None, None) => bail!(
                "model: give `template` ({}) or `layers`",
                TEMPLATES.join(", ")
            ),
            (Some(t), None) if !TEMPLATES.contains(&t.as_str()) => bail!(
                "model.template: unknown template `{t}`; known: {}",
                TEMPLATES.join(", ")
            ),
            _ => {}
        }
        let t = &self.training;
        if t.epochs == 0 || t.batch_size == 0 {
            bail!("training: epochs and batch_size must be positive");
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            bail!("training.learning_rate must be a positive number");
        }
        if t.threads == Some(0) {
            bail!("training.threads must be positive");
        }
        crate::boards::board(&self.target.board)
            .map_err(|e| anyhow::anyhow!("target.board: {e}"))?;
        if self.quantize.calibration_samples == 0 {
            bail!("quantize.calibration_samples must be positive");
        }
        Ok(())
    }

    /// The device `[training]` asks for, with `device` (a command line's `--device`) taking
    /// precedence; fails if this build cannot train there, or if quantization-aware epochs
    /// would need the GPU.
    pub fn device(&self, device: Option<Device>) -> Result<Selection> {
        let selection = Selection {
            device: device.unwrap_or(self.training.device),
            math: self.training.math,
        };
        crate::train::device::check_supported(selection.device)?;
        if selection.device != Device::Cpu && self.training.qat_epochs > 0 {
            bail!(crate::train::device::QAT_CPU_ONLY);
        }
        Ok(selection)
    }

    /// The weight penalties.
    pub fn regularization(&self) -> Regularization {
        Regularization {
            l1: self.training.l1,
            l2: self.training.l2,
        }
    }

    /// The loss the task trains with.
    pub fn loss(&self) -> Loss {
        self.training.loss.unwrap_or(match self.task.kind {
            TaskKind::Classification => Loss::CrossEntropy,
            TaskKind::Regression | TaskKind::Anomaly => Loss::MeanSquaredError,
        })
    }

    /// The data path resolved against the project directory.
    pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"t\"\n[data]\npath = \"d.csv\"\n[model]\ntemplate = \"mlp\"\n";

    fn project(training: &str) -> Project {
        Project::parse(
            &format!("{BASE}[training]\n{training}"),
            Path::new("loam.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_device_defaults_to_the_cpu_and_the_command_line_overrides_it() {
        let p = project("epochs = 3");
        assert_eq!(p.training.device, Device::Cpu);
        assert_eq!(p.device(None).unwrap(), Selection::CPU);
        let p = project("device = \"cuda\"\nmath = \"tf32\"");
        assert_eq!(
            (p.training.device, p.training.math),
            (Device::Cuda, Math::Tf32)
        );
        assert_eq!(p.device(Some(Device::Cpu)).unwrap().device, Device::Cpu);
        let cuda = p.device(None);
        if cfg!(feature = "cuda") {
            assert_eq!(cuda.unwrap().math, Math::Tf32);
        } else {
            let e = cuda.unwrap_err().to_string();
            assert!(e.contains("built without CUDA support"), "{e}");
        }
        assert!(
            Project::parse(
                &format!("{BASE}[training]\ndevice = \"tpu\""),
                Path::new("loam.toml")
            )
            .is_err()
        );
    }

    #[test]
    fn quantization_aware_epochs_need_the_cpu() {
        let p = project("qat_epochs = 2");
        assert!(p.device(None).is_ok());
        let e = p.device(Some(Device::Cuda)).unwrap_err().to_string();
        let expected = if cfg!(feature = "cuda") {
            "quantization-aware training runs on the CPU only"
        } else {
            "built without CUDA support"
        };
        assert!(e.contains(expected), "{e}");
    }
}
