//! `loam train` and `loam eval` over a project: load and split the data, fit the
//! preprocessing on the training split, train, then write a run folder with the float and
//! int8 models, the metrics, charts and an HTML report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::config::{Project, SplitMethod, TaskKind};
use super::templates::{self, Head};
use crate::data::{self, Dataset, Preprocessing, Split};
use crate::graph::Graph;
use crate::metrics;
use crate::model_file::{ModelFile, write_atomically, write_folder_atomically};
use crate::npy::{Array, Data};
use crate::quantize::{Calibration, LayerError};
use crate::report::{self, EpochRecord, Evaluation, History, RunReport};
use crate::train::{self, Fitted, LossFunction, Network, Progress, Samples, TrainOptions};
use loam::audio::FeatureConfig;

/// The data of a project, split and prepared.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The split of the loaded rows.
    pub split: Split,
    /// The preprocessing fit on the training rows.
    pub preprocessing: Preprocessing,
    /// Training rows, prepared.
    pub train: Dataset,
    /// Validation rows, prepared.
    pub val: Dataset,
    /// Test rows, prepared.
    pub test: Dataset,
    /// Duplicate rows dropped before splitting.
    pub duplicates_dropped: usize,
    /// The audio front end the features came from (a folder of clips), which the models
    /// store so that the device computes the same features.
    pub audio: Option<FeatureConfig>,
}

/// Loads `project`'s data (paths relative to `dir`).
pub fn load_data(project: &Project, dir: &Path) -> Result<Dataset> {
    let d = &project.data;
    let mut csv = d.csv.clone();
    if d.sample_dims.is_some() {
        csv.sample_dims.clone_from(&d.sample_dims);
    }
    if project.task.kind == TaskKind::Regression {
        csv.task = data::Task::Regression;
    }
    let path = Project::resolve(dir, &d.path);
    let labels = d.labels.as_ref().map(|l| Project::resolve(dir, l));
    let mut data = data::load(&path, labels.as_deref(), &csv, &d.audio)?;
    if let Some(dims) = &d.sample_dims {
        if dims.iter().product::<usize>() != data.sample_len() {
            bail!(
                "data.sample_dims {dims:?} hold {} values, but {} has {} per sample",
                dims.iter().product::<usize>(),
                path.display(),
                data.sample_len()
            );
        }
        data.sample_dims.clone_from(dims);
    }
    data.validate()?;
    Ok(data)
}

/// Loads and de-duplicates `project`'s data and splits it, before any preprocessing: the
/// rows, the split over them and how many duplicates were dropped.
pub fn load_and_split(project: &Project, dir: &Path) -> Result<(Dataset, Split, usize)> {
    let mut data = load_data(project, dir)?;
    let duplicates_dropped = if project.data.drop_duplicates {
        data::prep::drop_duplicates(&mut data)
    } else {
        0
    };
    let s = project.data.split;
    let split = match s.method {
        SplitMethod::Random => data::split::random(&data, s.validation, s.test, s.seed)?,
        SplitMethod::TimeOrdered => data::split::time_ordered(data.rows(), s.validation, s.test)?,
        SplitMethod::Lists => {
            let path = Project::resolve(dir, &project.data.path);
            if data::Format::detect(&path)? != data::Format::AudioFolder {
                bail!(
                    "data.split.method = \"lists\" takes the split from a folder of clips' \
                     validation_list.txt and testing_list.txt, but {} is not a folder of WAV \
                     clips",
                    path.display()
                );
            }
            if duplicates_dropped > 0 {
                bail!(
                    "data.split.method = \"lists\" names clips by file, which dropping \
                     duplicates renumbers; set data.drop_duplicates = false"
                );
            }
            data::audio::split_by_lists(&path)?
        }
    };
    Ok((data, split, duplicates_dropped))
}

/// The audio front end `project`'s data goes through: `Some` for a folder of WAV clips.
pub fn audio_front_end(project: &Project, dir: &Path) -> Result<Option<FeatureConfig>> {
    let path = Project::resolve(dir, &project.data.path);
    if path.is_dir() && data::Format::detect(&path)? == data::Format::AudioFolder {
        Ok(Some(project.data.audio.feature_config()?))
    } else {
        Ok(None)
    }
}

/// Loads, de-duplicates, splits and prepares `project`'s data.
pub fn prepare(project: &Project, dir: &Path) -> Result<Prepared> {
    let (data, split, duplicates_dropped) = load_and_split(project, dir)?;
    let mut prepared = prepare_split(project, &data, split, duplicates_dropped)?;
    add_audio(project, dir, &mut prepared)?;
    Ok(prepared)
}

/// For a folder of clips: records the front end in `prepared` and appends the perturbed
/// copies of its training clips (`data.audio.augment`), prepared like the rest, to its
/// training rows.
pub fn add_audio(project: &Project, dir: &Path, prepared: &mut Prepared) -> Result<()> {
    prepared.audio = audio_front_end(project, dir)?;
    let options = &project.data.audio;
    if prepared.audio.is_none() || options.augment.copies == 0 {
        return Ok(());
    }
    if project.data.drop_duplicates {
        bail!(
            "data.audio.augment copies clips by row, which dropping duplicates renumbers; set \
             data.drop_duplicates = false"
        );
    }
    let root = Project::resolve(dir, &project.data.path);
    let mut copies = data::audio::augmented_copies(&root, options, &prepared.split.train)?;
    prepared.preprocessing.apply(&mut copies)?;
    prepared.train.features.extend_from_slice(&copies.features);
    match (&mut prepared.train.targets, copies.targets) {
        (data::Targets::Classes(rows), data::Targets::Classes(extra)) => rows.extend(extra),
        _ => bail!("augmented copies of {} have no classes", root.display()),
    }
    prepared.train.validate()
}

/// Prepares the rows of `split` of `data`: the preprocessing is fit on its training rows
/// only and applied to all three parts.
pub fn prepare_split(
    project: &Project,
    data: &Dataset,
    split: Split,
    duplicates_dropped: usize,
) -> Result<Prepared> {
    let mut train = data.subset(&split.train);
    if train.rows() == 0 {
        bail!("the training split of {} is empty", data.name);
    }
    let preprocessing = Preprocessing::fit(&train, &project.data.prep)?;
    preprocessing.apply(&mut train)?;
    let mut val = data.subset(&split.val);
    preprocessing.apply(&mut val)?;
    let mut test = data.subset(&split.test);
    preprocessing.apply(&mut test)?;
    if train.features.iter().any(|x| !x.is_finite()) {
        bail!(
            "{} has missing or non-finite values after preprocessing; set data.prep.missing \
             (drop_rows, mean, median or mode)",
            data.name
        );
    }
    Ok(Prepared {
        split,
        preprocessing,
        train,
        val,
        test,
        duplicates_dropped,
        audio: None,
    })
}

/// The output head `project` needs for `data`.
fn head(project: &Project, data: &Dataset) -> Result<Head> {
    Ok(match (project.task.kind, &data.targets) {
        (TaskKind::Classification, data::Targets::Classes(_)) => Head::Classes(data.num_classes()),
        (TaskKind::Regression, data::Targets::Values { width, .. }) => Head::Values(*width),
        (TaskKind::Anomaly, _) => Head::Values(data.sample_len()),
        (kind, _) => bail!(
            "task {kind:?} needs labelled data of that kind in {}",
            data.name
        ),
    })
}

/// The untrained network `project` describes, sized for `data`.
pub fn build_graph(project: &Project, data: &Dataset) -> Result<Graph> {
    let head = head(project, data)?;
    let m = &project.model;
    match (&m.template, &m.layers) {
        (Some(t), _) => templates::template(t, &data.sample_dims, head, m.seed),
        (None, Some(layers)) => {
            templates::from_layers(&project.name, &data.sample_dims, layers, head, m.seed)
        }
        (None, None) => bail!("the model has neither a template nor layers"),
    }
}

/// Training targets of `data` for `project`'s task (an autoencoder reproduces its input).
fn targets<'a>(project: &Project, data: &'a Dataset) -> Result<train::Targets<'a>> {
    Ok(match (project.task.kind, &data.targets) {
        (TaskKind::Anomaly, _) => train::Targets::Values {
            values: &data.features,
            width: data.sample_len(),
        },
        (_, data::Targets::Classes(c)) => train::Targets::Classes(c),
        (_, data::Targets::Values { values, width }) => train::Targets::Values {
            values,
            width: *width,
        },
        (_, data::Targets::None) => bail!("{} has no labels to train on", data.name),
    })
}

fn samples<'a>(project: &Project, data: &'a Dataset) -> Result<Samples<'a>> {
    Ok(Samples {
        inputs: &data.features,
        targets: targets(project, data)?,
    })
}

/// `project`'s training options.
pub fn train_options(project: &Project, prepared: &Prepared) -> TrainOptions {
    let t = &project.training;
    let mut loss = LossFunction::new(project.loss());
    loss.huber_delta = t.huber_delta;
    if t.class_weights {
        loss.class_weights = data::prep::class_weights(&prepared.train);
    }
    TrainOptions {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        optimizer: t.optimizer,
        schedule: t.schedule,
        warmup_epochs: t.warmup_epochs,
        regularization: project.regularization(),
        clip_norm: t.clip_norm,
        loss,
        early_stopping: t.early_stopping,
        augmentation: t.augmentation,
        seed: t.seed,
    }
}

/// Trains `project` on `prepared`, reporting through `progress`; `stop` ends it early.
pub fn train_project(
    project: &Project,
    prepared: &Prepared,
    stop: &AtomicBool,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Fitted> {
    let graph = build_graph(project, &prepared.train)?;
    let network = Network::new(graph)?;
    let options = train_options(project, prepared);
    let (train, val) = train_and_validation(project, prepared)?;
    on_training_threads(project, || {
        train::fit(network, &train, val.as_ref(), &options, stop, progress)
    })
}

/// The training samples and, when the split has any, the validation samples.
fn train_and_validation<'a>(
    project: &Project,
    prepared: &'a Prepared,
) -> Result<(Samples<'a>, Option<Samples<'a>>)> {
    let train = samples(project, &prepared.train)?;
    let val = if prepared.val.rows() > 0 {
        Some(samples(project, &prepared.val)?)
    } else {
        None
    };
    Ok((train, val))
}

/// Runs `work` on `training.threads` threads, or on rayon's global pool (every core).
fn on_training_threads<T: Send>(
    project: &Project,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    match project.training.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .context("starting the training threads")?
            .install(work),
        None => work(),
    }
}

/// The history in the report's terms.
pub fn history(fitted: &Fitted) -> History {
    let mut h = History::new(fitted.metric_name);
    h.epochs = fitted
        .history
        .iter()
        .map(|e| EpochRecord {
            epoch: e.epoch,
            train_loss: e.train_loss,
            val_loss: e.val_loss,
            train_metric: Some(e.train_metric),
            val_metric: e.val_metric,
            learning_rate: e.learning_rate,
            seconds: e.seconds,
        })
        .collect();
    h
}

/// Runs a `.loam` model on every sample of `data`; outputs as real numbers, sample after
/// sample.
pub fn infer(file: &ModelFile, data: &Dataset) -> Result<Vec<f32>> {
    let mut shape = vec![data.rows()];
    shape.extend_from_slice(&data.sample_dims);
    let input = Array {
        shape,
        data: Data::F32(data.features.clone()),
    };
    let outputs = crate::run::run(file, &[input])?;
    let first = outputs
        .first()
        .with_context(|| format!("{} has no output", file.path.display()))?;
    Ok(crate::run::real_values(first)
        .into_iter()
        .map(|v| v as f32)
        .collect())
}

/// Scores `outputs` of `data` for `project`'s task.
pub fn evaluate(project: &Project, data: &Dataset, outputs: &[f32]) -> Result<Evaluation> {
    Ok(match project.task.kind {
        TaskKind::Classification => {
            let labels = data
                .classes()
                .context("classification needs class labels")?;
            Evaluation::Classification(metrics::classification(
                outputs,
                data.num_classes(),
                labels,
            )?)
        }
        TaskKind::Regression => {
            let truth = match &data.targets {
                data::Targets::Values { values, .. } => values,
                _ => bail!("regression needs value targets"),
            };
            Evaluation::Regression(metrics::regression(outputs, truth)?)
        }
        TaskKind::Anomaly => {
            let n = data.sample_len().max(1);
            let scores: Vec<f32> = outputs
                .chunks_exact(n)
                .zip(data.features.chunks_exact(n))
                .map(|(y, x)| {
                    y.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / n as f32
                })
                .collect();
            let labels: Vec<bool> = match data.classes() {
                Some(c) => c.iter().map(|&c| c != 0).collect(),
                None => bail!("anomaly evaluation needs labels (class 0 normal, others anomalous)"),
            };
            Evaluation::Anomaly(metrics::anomaly(&scores, &labels)?)
        }
    })
}

/// The figures `metrics.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Per-epoch history.
    pub history: History,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Early stopping ended training.
    pub stopped_early: bool,
    /// Ctrl-C ended training.
    pub interrupted: bool,
    /// Rows in each split.
    pub rows: [usize; 3],
    /// The float model on the test split (validation split if the test split is empty).
    pub float: Evaluation,
    /// The int8 model on the same rows.
    pub int8: Evaluation,
    /// Size of the int8 `.loam` (flash).
    pub flash_bytes: usize,
    /// Tensor arena of the int8 model (RAM).
    pub arena_bytes: usize,
    /// How the int8 model was calibrated, once `loam quantize` has run (`loam train`
    /// calibrates by min/max).
    #[serde(default)]
    pub quantization: Option<QuantizationInfo>,
    /// The classes' names, in class order (empty for other tasks, and in runs written before
    /// names were kept, whose tables then show class numbers).
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// What `loam quantize` did to a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantizationInfo {
    /// The range calibration.
    pub calibration: Calibration,
    /// Training samples calibrated on.
    pub samples: usize,
    /// The int8 model's figures before.
    pub int8_before: Evaluation,
    /// Each layer's SQNR on held-out rows.
    pub layers: Vec<LayerError>,
    /// The biases moved by bias correction (`loam quantize --bias-correction`), per layer;
    /// empty without it.
    #[serde(default)]
    pub bias_correction: Vec<crate::quantize::BiasShift>,
}

/// What `loam train` wrote.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run folder.
    pub dir: PathBuf,
    /// Its figures.
    pub metrics: RunMetrics,
}

/// The float model, its ONNX export and the int8 model of a trained graph.
struct Models {
    float: Vec<u8>,
    onnx: Vec<u8>,
    int8: Vec<u8>,
}

fn build_models(
    project: &Project,
    fitted: &Fitted,
    prepared: &Prepared,
    trained_ranges: Option<&crate::graph::Ranges>,
) -> Result<Models> {
    let mut graph = fitted.network.graph.clone();
    graph.name.clone_from(&project.name);
    graph.labels.clone_from(&prepared.train.class_names);
    if let Some((offset, scale)) = prepared.preprocessing.affine() {
        graph.constants.push(("preprocess.offset".into(), offset));
        graph.constants.push(("preprocess.scale".into(), scale));
    }
    if let Some(audio) = &prepared.audio {
        graph.constants.extend(
            audio
                .constants()
                .into_iter()
                .map(|(name, value)| (name.to_string(), vec![value])),
        );
    }
    let train = &prepared.train;
    let confidences = match project.task.kind {
        TaskKind::Classification => {
            let probs = train::predict(&fitted.network, &train.features)?;
            let k = train.num_classes().max(1);
            Some(
                probs
                    .chunks_exact(k)
                    .map(|p| p.iter().copied().fold(0.0f32, f32::max))
                    .collect::<Vec<f32>>(),
            )
        }
        _ => None,
    };
    graph.constants.extend(loam::monitor::reference_constants(
        &train.features,
        train.sample_len(),
        confidences.as_deref().map(|c| (c, 10)),
    ));
    let float = graph.build_f32(false)?.bytes;
    let onnx = {
        let file = ModelFile::from_bytes("float model", &float)?;
        crate::onnx::export_bytes(&file.model()?, Default::default())?
    };
    let ranges = match trained_ranges {
        Some(r) => r.clone(),
        None => graph.calibrate_on(calibration_inputs(project, train))?,
    };
    let int8 = graph.build_i8(&ranges)?.bytes;
    Ok(Models { float, onnx, int8 })
}

/// The training samples int8 ranges are calibrated on.
fn calibration_inputs<'a>(project: &Project, train: &'a Dataset) -> &'a [f32] {
    let n = project
        .quantize
        .calibration_samples
        .min(train.rows())
        .max(1);
    &train.features[..n * train.sample_len()]
}

/// Quantization-aware epochs after the float ones (`training.qat_epochs`): returns the
/// network trained through its int8 model, its combined history, and the ranges it trained
/// for.
fn train_qat(
    project: &Project,
    prepared: &Prepared,
    fitted: Fitted,
    stop: &AtomicBool,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(Fitted, crate::graph::Ranges)> {
    let t = &project.training;
    let mut options = train_options(project, prepared);
    options.epochs = t.qat_epochs;
    options.learning_rate = t.qat_learning_rate.unwrap_or(t.learning_rate / 10.0);
    options.warmup_epochs = 0;
    let (train, val) = train_and_validation(project, prepared)?;
    let calibration = calibration_inputs(project, &prepared.train);
    let float_epochs = fitted.history.len();
    let mut history = fitted.history;
    let qat = on_training_threads(project, || {
        train::qat::fit_qat(
            fitted.network,
            &train,
            val.as_ref(),
            &options,
            calibration,
            stop,
            progress,
        )
    })
    .context("quantization-aware training")?;
    let mut tuned = qat.fitted;
    for mut e in tuned.history.drain(..) {
        e.epoch += float_epochs;
        history.push(e);
    }
    tuned.best_epoch += float_epochs;
    tuned.history = history;
    Ok((tuned, qat.ranges))
}

/// The next free `runs/<name>-NNN` under `runs` (created if missing).
pub fn next_run_dir(runs: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(runs).with_context(|| format!("creating {}", runs.display()))?;
    for n in 1..10_000 {
        let dir = runs.join(format!("{name}-{n:03}"));
        if !dir.exists() {
            return Ok(dir);
        }
    }
    bail!("{} holds 9999 runs of {name}; clear some", runs.display())
}

/// The most recent run of the project at `project_file`, in `runs/` beside it.
pub fn latest_run_of(project_file: &Path) -> Result<PathBuf> {
    let (project, _) = Project::load(project_file)?;
    let dir = project_file.parent().unwrap_or(Path::new("."));
    latest_run(&dir.join("runs"), &project.name)
}

/// The most recent run of `name` under `runs`.
pub fn latest_run(runs: &Path, name: &str) -> Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    let entries = std::fs::read_dir(runs)
        .with_context(|| format!("reading {} (run `loam train` first)", runs.display()))?;
    for entry in entries {
        let path = entry?.path();
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let number = file
            .as_deref()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = number
            && best.as_ref().is_none_or(|(b, _)| n > *b)
        {
            best = Some((n, path));
        }
    }
    best.map(|(_, p)| p)
        .with_context(|| format!("no run of `{name}` in {}", runs.display()))
}

/// The rows the final figures come from: the test split, or validation if there is none.
fn held_out(prepared: &Prepared) -> &Dataset {
    if prepared.test.rows() > 0 {
        &prepared.test
    } else {
        &prepared.val
    }
}

/// Evaluates the float and int8 models of a run folder on `rows`, and writes the report.
fn evaluate_models(
    project: &Project,
    config_text: &str,
    dir: &Path,
    rows: &Dataset,
    history: History,
) -> Result<(Evaluation, Evaluation, usize, usize)> {
    let float = ModelFile::open(&dir.join("model-f32.loam"))?;
    let int8 = ModelFile::open(&dir.join("model.loam"))?;
    let float_out = infer(&float, rows)?;
    let int8_out = infer(&int8, rows)?;
    let float_eval = evaluate(project, rows, &float_out)?;
    let int8_eval = evaluate(project, rows, &int8_out)?;
    // One inspection gives the sizes and says whether they fit the project's board.
    let inspection = crate::inspect::inspect(&int8)?;
    let (flash, arena) = (inspection.flash_bytes, inspection.arena_bytes);
    let mut mistakes = Vec::new();
    if let (Some(labels), Evaluation::Classification(r)) = (rows.classes(), &float_eval) {
        mistakes = metrics::most_confident_mistakes(&float_out, rows.num_classes(), labels, 10)?;
        report::confusion_matrix(&r.confusion, &rows.class_names, &dir.join("confusion"))?;
    }
    if !history.epochs.is_empty() {
        report::loss_curves(&history, &dir.join("curves"))?;
    }
    let hints = report::fit_hints(&history);
    let mut extra = vec![
        ("Flash (int8 .loam)".into(), format!("{flash} bytes")),
        ("Tensor arena (int8)".into(), format!("{arena} bytes")),
        (
            "Evaluated on".into(),
            format!("{} held-out rows", rows.rows()),
        ),
        ("Target".into(), project.target.board.clone()),
    ];
    let board = crate::boards::board(&project.target.board)?;
    let labels = ["Fits (inference)", "Fits (fine-tuning)"];
    for (label, line) in labels.iter().zip(inspection.fit_lines(&board)) {
        extra.push(((*label).into(), line));
    }
    let page = RunReport {
        name: project.name.clone(),
        config_text: config_text.to_string(),
        history,
        float_eval: Some(float_eval.clone()),
        int8_eval: Some(int8_eval.clone()),
        class_names: rows.class_names.clone(),
        mistakes,
        hints,
        extra,
    };
    report::html(&page, dir)?;
    Ok((float_eval, int8_eval, flash, arena))
}

/// `loam train`: trains the project at `project_file` and writes its run folder under
/// `runs` (default: `runs/` beside the project file).
pub fn train(
    project_file: &Path,
    runs: Option<&Path>,
    stop: &AtomicBool,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<RunSummary> {
    let (project, text) = Project::load(project_file)?;
    let dir = project_file.parent().unwrap_or(Path::new("."));
    let prepared = prepare(&project, dir)?;
    let mut fitted = train_project(&project, &prepared, stop, progress)?;
    if fitted.history.is_empty() {
        bail!("stopped before the first epoch finished; nothing written");
    }
    let mut ranges = None;
    if project.training.qat_epochs > 0 && !fitted.interrupted {
        let (tuned, trained) = train_qat(&project, &prepared, fitted, stop, progress)?;
        fitted = tuned;
        ranges = Some(trained);
    }
    let models = build_models(&project, &fitted, &prepared, ranges.as_ref())?;
    let runs = runs.map_or_else(|| dir.join("runs"), Path::to_path_buf);
    let final_dir = next_run_dir(&runs, &project.name)?;
    let metrics = write_folder_atomically(&final_dir, |partial| {
        write_atomically(&partial.join("loam.toml"), text.as_bytes())?;
        write_atomically(&partial.join("model-f32.loam"), &models.float)?;
        write_atomically(&partial.join("model.onnx"), &models.onnx)?;
        write_atomically(&partial.join("model.loam"), &models.int8)?;
        write_atomically(
            &partial.join("preprocessing.json"),
            json(&prepared.preprocessing)?.as_bytes(),
        )?;
        write_atomically(
            &partial.join("split.json"),
            json(&prepared.split)?.as_bytes(),
        )?;
        let history = history(&fitted);
        let rows = held_out(&prepared);
        let (float, int8, flash_bytes, arena_bytes) =
            evaluate_models(&project, &text, partial, rows, history.clone())?;
        let metrics = RunMetrics {
            history,
            best_epoch: fitted.best_epoch,
            stopped_early: fitted.stopped_early,
            interrupted: fitted.interrupted,
            rows: [
                prepared.train.rows(),
                prepared.val.rows(),
                prepared.test.rows(),
            ],
            float,
            int8,
            flash_bytes,
            arena_bytes,
            quantization: None,
            class_names: prepared.train.class_names.clone(),
        };
        write_atomically(&partial.join("metrics.json"), json(&metrics)?.as_bytes())?;
        Ok(metrics)
    })?;
    Ok(RunSummary {
        dir: final_dir,
        metrics,
    })
}

/// A run folder read back: its project, the project file's text, its metrics, and its data
/// split and prepared exactly as when it trained.
struct Reloaded {
    project: Project,
    text: String,
    metrics: RunMetrics,
    prepared: Prepared,
}

fn reload(run: &Path) -> Result<Reloaded> {
    let (project, text) = Project::load(&run.join("loam.toml"))?;
    let metrics_path = run.join("metrics.json");
    let metrics: RunMetrics = serde_json::from_str(
        &std::fs::read_to_string(&metrics_path)
            .with_context(|| format!("reading {}", metrics_path.display()))?,
    )
    .with_context(|| format!("parsing {}", metrics_path.display()))?;
    let split: Split = read_json(&run.join("split.json"))?;
    // Data paths in the copied loam.toml are relative to the project, two levels up.
    let project_dir = run
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut data = load_data(&project, project_dir)?;
    if project.data.drop_duplicates {
        data::prep::drop_duplicates(&mut data);
    }
    let largest = split
        .train
        .iter()
        .chain(&split.val)
        .chain(&split.test)
        .max();
    if largest.is_some_and(|&i| i >= data.rows()) {
        bail!(
            "{} no longer matches the data it was trained on ({} rows now)",
            run.join("split.json").display(),
            data.rows()
        );
    }
    let mut prepared = prepare_split(&project, &data, split, 0)?;
    // Scoring needs the held-out rows only: no augmented training copies.
    prepared.audio = audio_front_end(&project, project_dir)?;
    let saved: Preprocessing = read_json(&run.join("preprocessing.json"))?;
    if saved != prepared.preprocessing {
        bail!(
            "the data behind {} changed since training (its preprocessing differs); train again",
            run.display()
        );
    }
    Ok(Reloaded {
        project,
        text,
        metrics,
        prepared,
    })
}

/// `loam eval`: re-evaluates a run folder's float and int8 models on the same held-out rows
/// (the split and preprocessing it saved), rewriting its report.
pub fn eval_run(run: &Path) -> Result<RunMetrics> {
    let Reloaded {
        project,
        text,
        mut metrics,
        prepared,
    } = reload(run)?;
    let metrics_path = run.join("metrics.json");
    let (float, int8, flash, arena) = evaluate_models(
        &project,
        &text,
        run,
        held_out(&prepared),
        metrics.history.clone(),
    )?;
    metrics.float = float;
    metrics.int8 = int8;
    metrics.flash_bytes = flash;
    metrics.arena_bytes = arena;
    write_atomically(
        &metrics_path,
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;
    Ok(metrics)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

/// Pretty JSON text of `value`.
fn json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// The headline figures of an evaluation, for a side-by-side table.
fn headline(e: &Evaluation) -> Vec<(&'static str, f64)> {
    match e {
        Evaluation::Classification(r) => vec![
            ("accuracy", r.accuracy),
            ("macro F1", r.macro_avg.f1),
            ("log loss", r.log_loss),
        ],
        Evaluation::Regression(r) => vec![("MAE", r.mae), ("RMSE", r.rmse), ("R^2", r.r2)],
        Evaluation::Anomaly(r) => vec![("ROC-AUC", r.roc_auc), ("best F1", r.best_f1)],
    }
}

/// A run's figures as the CLI prints them: float and int8 side by side, then the float
/// model's full table.
pub fn summary_text(metrics: &RunMetrics) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let [train, val, test] = metrics.rows;
    let _ = writeln!(s, "rows: {train} train, {val} validation, {test} test");
    if !metrics.history.epochs.is_empty() {
        let _ = writeln!(
            s,
            "kept epoch {} of {}{}{}",
            metrics.best_epoch,
            metrics.history.epochs.len(),
            if metrics.stopped_early {
                " (early stopping)"
            } else {
                ""
            },
            if metrics.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "{:<12} {:>10} {:>10}", "", "float", "int8");
    for ((name, f), (_, q)) in headline(&metrics.float)
        .into_iter()
        .zip(headline(&metrics.int8))
    {
        let _ = writeln!(s, "{name:<12} {f:>10.4} {q:>10.4}");
    }
    let _ = writeln!(
        s,
        "int8 model: {} bytes of flash, {} bytes of tensor arena",
        metrics.flash_bytes, metrics.arena_bytes
    );
    let full = match &metrics.float {
        Evaluation::Classification(r) => r.to_table(&metrics.class_names),
        Evaluation::Regression(r) => r.to_string(),
        Evaluation::Anomaly(r) => r.to_string(),
    };
    let _ = write!(s, "\nfloat model on held-out rows:\n{full}");
    s
}

/// `loam quantize`: recalibrates a run's int8 model from its float model with `calibration`
/// on `samples` training rows (default: the project's `quantize.calibration_samples`), with
/// the biases corrected for the int8 weights' rounding on the same rows if `bias_correction`,
/// replaces `model.loam`, and re-scores both side by side with each layer's SQNR.
pub fn quantize_run(
    run: &Path,
    calibration: Calibration,
    samples: Option<usize>,
    bias_correction: bool,
) -> Result<RunMetrics> {
    let Reloaded {
        project,
        text,
        mut metrics,
        prepared,
    } = reload(run)?;
    let float = ModelFile::open(&run.join("model-f32.loam"))?;
    let graph = crate::quantize::lift(&float.model()?)
        .with_context(|| format!("reading {} back as a graph", float.path.display()))?;
    let train = &prepared.train;
    let n = samples
        .unwrap_or(project.quantize.calibration_samples)
        .clamp(1, train.rows());
    let inputs = &train.features[..n * train.sample_len()];
    let ranges = crate::quantize::calibrate(&graph, inputs, calibration)?;
    let (int8_graph, shifts) = if bias_correction {
        crate::quantize::correct_biases(&graph, inputs).context("bias correction")?
    } else {
        (graph.clone(), Vec::new())
    };
    let rows = held_out(&prepared);
    let probe = rows.rows().min(256) * rows.sample_len();
    let layers =
        crate::quantize::layer_errors(&graph, &int8_graph, &ranges, &rows.features[..probe])?;
    write_atomically(
        &run.join("model.loam"),
        &int8_graph.build_i8(&ranges)?.bytes,
    )?;
    let (float_eval, int8, flash, arena) =
        evaluate_models(&project, &text, run, rows, metrics.history.clone())?;
    let before = std::mem::replace(&mut metrics.int8, int8);
    metrics.float = float_eval;
    metrics.flash_bytes = flash;
    metrics.arena_bytes = arena;
    metrics.quantization = Some(QuantizationInfo {
        calibration,
        samples: n,
        int8_before: before,
        layers,
        bias_correction: shifts,
    });
    write_atomically(
        &run.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;
    Ok(metrics)
}

/// The quantization part of a run's figures as the CLI prints it.
pub fn quantization_text(metrics: &RunMetrics) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let Some(q) = &metrics.quantization else {
        return s;
    };
    let _ = writeln!(
        s,
        "calibration: {} on {} training samples",
        q.calibration, q.samples
    );
    let _ = writeln!(
        s,
        "{:<12} {:>10} {:>10} {:>10}",
        "", "float", "int8 before", "int8 now"
    );
    for (((name, f), (_, b)), (_, a)) in headline(&metrics.float)
        .into_iter()
        .zip(headline(&q.int8_before))
        .zip(headline(&metrics.int8))
    {
        let _ = writeln!(s, "{name:<12} {f:>10.4} {b:>10.4} {a:>10.4}");
    }
    let _ = writeln!(
        s,
        "\nper-layer SQNR on held-out rows (higher is better; ~6 dB per bit):"
    );
    for l in &q.layers {
        let _ = writeln!(s, "  {:<20} {:>7.1} dB", l.name, l.sqnr_db);
    }
    if !q.bias_correction.is_empty() {
        let _ = writeln!(
            s,
            "\nbias correction (the mean shift of the int8 weights' rounding, taken off each bias):"
        );
        for b in &q.bias_correction {
            let _ = writeln!(
                s,
                "  layer {:<3} largest {:.3e}, mean {:.3e}",
                b.layer, b.largest, b.mean
            );
        }
    }
    s
}

/// `loam data prepare`: writes the project's prepared splits (`x_train.npy`, `y_train.npy`,
/// and the same for `val` and `test`; features `[rows, ...sample_dims]` in f32, class labels
/// in i32 or target values in f32), `preprocessing.json`, `split.json` and `profile.txt` to
/// `out`, which appears only when complete. Returns the rows of each split.
pub fn prepare_to(project_file: &Path, out: &Path) -> Result<[usize; 3]> {
    let (project, _) = Project::load(project_file)?;
    let dir = project_file.parent().unwrap_or(Path::new("."));
    let prepared = prepare(&project, dir)?;
    write_folder_atomically(out, |partial| {
        for (name, part) in [
            ("train", &prepared.train),
            ("val", &prepared.val),
            ("test", &prepared.test),
        ] {
            let mut shape = vec![part.rows()];
            shape.extend_from_slice(&part.sample_dims);
            crate::npy::write(
                &partial.join(format!("x_{name}.npy")),
                &Array {
                    shape,
                    data: Data::F32(part.features.clone()),
                },
            )?;
            let labels = match &part.targets {
                data::Targets::Classes(c) => Some(Array {
                    shape: vec![c.len()],
                    data: Data::I32(c.iter().map(|&c| c as i32).collect()),
                }),
                data::Targets::Values { values, width } => Some(Array {
                    shape: vec![values.len() / (*width).max(1), *width],
                    data: Data::F32(values.clone()),
                }),
                data::Targets::None => None,
            };
            if let Some(labels) = labels {
                crate::npy::write(&partial.join(format!("y_{name}.npy")), &labels)?;
            }
        }
        write_atomically(
            &partial.join("preprocessing.json"),
            json(&prepared.preprocessing)?.as_bytes(),
        )?;
        write_atomically(
            &partial.join("split.json"),
            json(&prepared.split)?.as_bytes(),
        )?;
        write_atomically(
            &partial.join("profile.txt"),
            crate::data::profile(&prepared.train).to_string().as_bytes(),
        )?;
        Ok(())
    })?;
    Ok([
        prepared.train.rows(),
        prepared.val.rows(),
        prepared.test.rows(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits example with a small, fast model.
    fn small_digits(epochs: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::init::init(dir.path(), Some("digits")).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("template = \"cnn-small\"", "template = \"mlp\"")
            .replace("epochs = 30", &format!("epochs = {epochs}"));
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn train_quietly(path: &Path) -> Result<RunSummary> {
        train(path, None, &AtomicBool::new(false), &mut |_| {})
    }

    #[test]
    fn the_same_config_trains_to_identical_models() {
        let (dir, path) = small_digits(8);
        let a = train_quietly(&path).unwrap();
        let b = train_quietly(&path).unwrap();
        assert_eq!(a.dir, dir.path().join("runs/digits-001"));
        assert_eq!(b.dir, dir.path().join("runs/digits-002"));
        for file in ["model-f32.loam", "model.loam", "model.onnx", "split.json"] {
            let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
            assert!(read(&a.dir) == read(&b.dir), "{file} differs between runs");
        }
        let Evaluation::Classification(r) = &a.metrics.int8 else {
            panic!("not a classification report")
        };
        assert!(r.accuracy > 0.8, "8 epochs of an MLP: {}", r.accuracy);
    }

    #[test]
    fn eval_reproduces_the_run_and_notices_changed_data() {
        let (dir, path) = small_digits(2);
        let run = train_quietly(&path).unwrap();
        assert_eq!(
            latest_run(&dir.path().join("runs"), "digits").unwrap(),
            run.dir
        );
        let again = eval_run(&run.dir).unwrap();
        assert_eq!(
            serde_json::to_string(&again.int8).unwrap(),
            serde_json::to_string(&run.metrics.int8).unwrap()
        );
        // Different data behind the same run: refused, not silently scored.
        let data = dir.path().join("data/digits.csv.gz");
        let mut d = crate::data::digits::load(&data).unwrap();
        d.features.iter_mut().for_each(|x| *x = (*x * 0.5).floor());
        let mut text = String::new();
        for i in 0..d.rows() {
            let row: Vec<String> = d.sample(i).iter().map(|x| x.to_string()).collect();
            text += &format!("{},{}\n", row.join(","), d.classes().unwrap()[i]);
        }
        std::fs::write(&data, text).unwrap();
        let e = eval_run(&run.dir).unwrap_err();
        assert!(format!("{e:#}").contains("changed since training"), "{e:#}");
    }

    /// The committed `models/keywords/model.loam` still scores what its model card says on
    /// the held-out voices of `testing_list.txt`, computing features from the WAV clips with
    /// the front end stored in the model itself, as a device would.
    #[test]
    fn the_bundled_keywords_model_keeps_its_accuracy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/keywords");
        let (project, _) = Project::load(&dir.join("loam.toml")).unwrap();
        let (data, split, _) = load_and_split(&project, &dir).unwrap();
        let mut prepared = prepare_split(&project, &data, split, 0).unwrap();
        prepared.audio = audio_front_end(&project, &dir).unwrap();
        assert_eq!(prepared.test.rows(), 104);
        let model = ModelFile::open(&dir.join("model.loam")).unwrap();
        let stored = loam::audio::FeatureConfig::from_model(&model.model().unwrap()).unwrap();
        assert_eq!(
            stored, prepared.audio,
            "the model's front end is the project's"
        );
        let outputs = infer(&model, &prepared.test).unwrap();
        let Evaluation::Classification(r) = evaluate(&project, &prepared.test, &outputs).unwrap()
        else {
            panic!("not a classification report")
        };
        // The model card's figure: 100 of the 104 clips (96.15%); the data set's goal is 90%.
        let correct: u64 = r.confusion.iter().enumerate().map(|(c, row)| row[c]).sum();
        assert_eq!(correct, 100, "accuracy {}", r.accuracy);
        assert_eq!(
            model.bytes().len(),
            KEYWORDS_FLASH,
            "the model card's flash figure"
        );
        assert_eq!(
            model.model().unwrap().arena_size(),
            KEYWORDS_ARENA,
            "the model card's arena figure"
        );
    }

    /// `models/keywords/MODEL_CARD.md`'s figures.
    const KEYWORDS_FLASH: usize = 65_472;
    const KEYWORDS_ARENA: usize = 64_320;

    /// The committed `models/digits/model.loam` still scores what its model card says on the
    /// test split its `loam.toml` defines.
    #[test]
    fn the_bundled_digits_model_keeps_its_accuracy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
        let (project, _) = Project::load(&dir.join("loam.toml")).unwrap();
        let prepared = prepare(&project, &dir).unwrap();
        assert_eq!(prepared.test.rows(), 269);
        let model = ModelFile::open(&dir.join("model.loam")).unwrap();
        let outputs = infer(&model, &prepared.test).unwrap();
        let Evaluation::Classification(r) = evaluate(&project, &prepared.test, &outputs).unwrap()
        else {
            panic!("not a classification report")
        };
        assert!(r.accuracy >= 0.97, "{}", r.accuracy);
        assert_eq!(model.bytes().len(), 17_920, "the model card's flash figure");
        assert_eq!(
            model.model().unwrap().arena_size(),
            1_408,
            "the model card's arena figure"
        );
    }

    #[test]
    fn quantization_aware_epochs_follow_the_float_ones() {
        let (_dir, path) = small_digits(3);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("seed = 42", "seed = 42\nqat_epochs = 2");
        std::fs::write(&path, text).unwrap();
        let run = train_quietly(&path).unwrap();
        let epochs: Vec<usize> = run.metrics.history.epochs.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [1, 2, 3, 4, 5]);
        let Evaluation::Classification(r) = &run.metrics.int8 else {
            panic!("not a classification report")
        };
        // Three float epochs of an MLP reach about 60%; the int8 model must not lose that.
        assert!(r.accuracy > 0.5, "{}", r.accuracy);
        // A later `loam quantize` recalibrates from the float model and says what it did.
        let m = quantize_run(
            &run.dir,
            Calibration::Percentile { percentile: 99.9 },
            Some(64),
            false,
        )
        .unwrap();
        let q = m.quantization.unwrap();
        assert_eq!((q.samples, q.layers.len()), (64, 5));
        assert!(q.layers.iter().all(|l| l.sqnr_db > 10.0), "{:?}", q.layers);
        assert!(q.bias_correction.is_empty());
        // With bias correction: every weighted layer's shift is reported, and the int8 model
        // still scores as well (three epochs: about 60%).
        let m = quantize_run(&run.dir, Calibration::Mse, Some(64), true).unwrap();
        let q = m.quantization.as_ref().unwrap();
        assert_eq!(q.bias_correction.len(), 3, "{:?}", q.bias_correction);
        assert!(quantization_text(&m).contains("bias correction"));
        let Evaluation::Classification(r) = &m.int8 else {
            panic!("not a classification report")
        };
        assert!(r.accuracy > 0.5, "{}", r.accuracy);
    }

    #[test]
    fn prepared_splits_are_written_whole() {
        let (dir, path) = small_digits(1);
        let out = dir.path().join("prepared");
        assert_eq!(prepare_to(&path, &out).unwrap(), [1258, 270, 269]);
        let x = crate::npy::read(&out.join("x_train.npy")).unwrap();
        assert_eq!(x.shape, vec![1258, 8, 8, 1]);
        let Data::F32(values) = &x.data else {
            panic!("features are not f32")
        };
        // Scaled by the training split's shared min-max: 0..16 becomes 0..1.
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        let y = crate::npy::read(&out.join("y_test.npy")).unwrap();
        assert_eq!(y.shape, vec![269]);
        assert!(out.join("preprocessing.json").is_file() && out.join("profile.txt").is_file());
        let e = prepare_to(&path, &out).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        // Nothing half-written beside it.
        let stray: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(stray.is_empty());
    }

    #[test]
    fn an_interrupted_first_epoch_writes_nothing() {
        let (dir, path) = small_digits(2);
        let e = train(&path, None, &AtomicBool::new(true), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("nothing written"), "{e}");
        let runs = dir.path().join("runs");
        assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
    }

    #[test]
    fn project_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loam.toml");
        std::fs::write(
            &path,
            "name = \"x\"\n[data]\npath = \"d.csv\"\n[model]\ntemplate = \"lenet\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Project::load(&path).unwrap_err());
        assert!(
            e.contains("loam.toml") && e.contains("model.template"),
            "{e}"
        );
        std::fs::write(
            &path,
            "name = \"x\"\n[data]\npath = \"d.csv\"\nshape = [1]\n[model]\ntemplate = \"mlp\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Project::load(&path).unwrap_err());
        assert!(e.contains("shape"), "{e}");
        std::fs::write(
            &path,
            "name = \"x\"\n[data]\npath = \"missing.csv\"\n[model]\ntemplate = \"mlp\"\n",
        )
        .unwrap();
        let e = format!("{:#}", train_quietly(&path).unwrap_err());
        assert!(e.contains("missing.csv"), "{e}");
        std::fs::write(
            &path,
            "name = \"x\"\n[data]\npath = \"d.csv\"\n[model]\ntemplate = \"mlp\"\n[target]\nboard = \"esp32\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Project::load(&path).unwrap_err());
        assert!(e.contains("target.board") && e.contains("cortex-m0"), "{e}");
    }
}
