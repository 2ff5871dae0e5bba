//! `loam tune`: hyperparameter search over a project's `[tune]` section.
//!
//! Every trial is an ordinary training run (the same [`pipeline::train_project`] `loam train`
//! uses) of a copy of the project with some settings replaced, scored on the validation
//! split or by k-fold cross-validation over the training and validation rows; the test rows
//! are never read. Trials run one after another, each on all cores. The draws, the folds
//! and the training are seeded, so the same file gives the same trials and scores.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use super::config::{Project, Scoring, SplitMethod, TaskKind, TuneMethod};
use super::pipeline::{self, Prepared};
use super::templates::{LayerSpec, TEMPLATES};
use crate::data::{self, Dataset, Split};
use crate::model_file::{write_atomically, write_folder_atomically};
use crate::train::{Monitor, Progress};

/// Draws per trial before a random search gives up finding settings it has not tried: a
/// space of a few `choice` lists runs out long before this.
const REDRAWS: usize = 100;

/// Trials a random search runs when neither `tune.trials` nor `--trials` says.
const DEFAULT_TRIALS: usize = 10;

/// Folds for `scoring = "kfold"` when `tune.folds` is not given.
const DEFAULT_FOLDS: usize = 5;

/// Beyond this many trials a search is a typo (or a month of training), not a plan.
const MAX_TRIALS: usize = 100_000;

/// Significant digits drawn real values keep, so tables, `results.csv` and the best file
/// show the value that was trained with, not 17 digits of noise.
const DIGITS: i32 = 3;

/// A setting `[tune.space]` can search, in the order trials set and show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    /// `model.template` (replaces `model.layers`).
    Template,
    /// `training.optimizer`.
    Optimizer,
    /// `training.schedule`.
    Schedule,
    /// `training.learning_rate`.
    LearningRate,
    /// `training.batch_size`.
    BatchSize,
    /// `training.epochs`.
    Epochs,
    /// `training.warmup_epochs`.
    WarmupEpochs,
    /// `training.l1`.
    L1,
    /// `training.l2`.
    L2,
    /// The rate of every dropout layer in `model.layers`.
    Dropout,
}

/// The values a [`Param`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Real numbers: `choice`, `uniform`, `log_uniform`.
    Real,
    /// Whole numbers: `choice`, `int_range`.
    Whole,
    /// Names or tables: `choice` only.
    Named,
}

impl Param {
    /// Every searchable setting.
    pub const ALL: [Param; 10] = [
        Param::Template,
        Param::Optimizer,
        Param::Schedule,
        Param::LearningRate,
        Param::BatchSize,
        Param::Epochs,
        Param::WarmupEpochs,
        Param::L1,
        Param::L2,
        Param::Dropout,
    ];

    /// The key in `[tune.space]`.
    pub fn key(self) -> &'static str {
        match self {
            Param::Template => "template",
            Param::Optimizer => "optimizer",
            Param::Schedule => "schedule",
            Param::LearningRate => "learning_rate",
            Param::BatchSize => "batch_size",
            Param::Epochs => "epochs",
            Param::WarmupEpochs => "warmup_epochs",
            Param::L1 => "l1",
            Param::L2 => "l2",
            Param::Dropout => "dropout",
        }
    }

    fn from_key(key: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.key() == key)
    }

    fn kind(self) -> Kind {
        match self {
            Param::Template | Param::Optimizer | Param::Schedule => Kind::Named,
            Param::BatchSize | Param::Epochs | Param::WarmupEpochs => Kind::Whole,
            Param::LearningRate | Param::L1 | Param::L2 | Param::Dropout => Kind::Real,
        }
    }

    /// Sets this setting of `project` to `value`, refusing values the setting cannot take.
    fn apply(self, project: &mut Project, value: &toml::Value) -> Result<()> {
        let t = &mut project.training;
        match self {
            Param::LearningRate => t.learning_rate = real(value, |x| x > 0.0, "positive")?,
            Param::L1 => t.l1 = real(value, |x| x >= 0.0, "zero or more")?,
            Param::L2 => t.l2 = real(value, |x| x >= 0.0, "zero or more")?,
            Param::BatchSize => t.batch_size = whole(value, 1)?,
            Param::Epochs => t.epochs = whole(value, 1)?,
            Param::WarmupEpochs => t.warmup_epochs = whole(value, 0)?,
            Param::Optimizer => t.optimizer = named(value, &t.optimizer)?,
            Param::Schedule => t.schedule = named(value, &t.schedule)?,
            Param::Template => {
                let name = value
                    .as_str()
                    .with_context(|| format!("{} is not a template name", literal(value)))?;
                if !TEMPLATES.contains(&name) {
                    bail!("unknown template `{name}`; known: {}", TEMPLATES.join(", "));
                }
                project.model.template = Some(name.to_string());
                project.model.layers = None;
            }
            Param::Dropout => {
                let rate = real(value, |x| (0.0..1.0).contains(&x), "in [0, 1)")?;
                let layers = project.model.layers.as_mut().context(
                    "sets the dropout layers of model.layers, and this model is a template",
                )?;
                let mut found = false;
                for layer in layers {
                    if let LayerSpec::Dropout { rate: r } = layer {
                        *r = rate;
                        found = true;
                    }
                }
                if !found {
                    bail!("model.layers has no dropout layer to set");
                }
            }
        }
        Ok(())
    }

    /// Whether `a` and `b` agree on this setting.
    fn same(self, a: &Project, b: &Project) -> bool {
        let (s, t) = (&a.training, &b.training);
        match self {
            Param::LearningRate => s.learning_rate == t.learning_rate,
            Param::L1 => s.l1 == t.l1,
            Param::L2 => s.l2 == t.l2,
            Param::BatchSize => s.batch_size == t.batch_size,
            Param::Epochs => s.epochs == t.epochs,
            Param::WarmupEpochs => s.warmup_epochs == t.warmup_epochs,
            Param::Optimizer => s.optimizer == t.optimizer,
            Param::Schedule => s.schedule == t.schedule,
            Param::Template | Param::Dropout => a.model == b.model,
        }
    }
}

/// A real number (an integer is one too) as f32, with `ok` as the condition.
fn real(value: &toml::Value, ok: impl Fn(f64) -> bool, what: &str) -> Result<f32> {
    let x = match value {
        toml::Value::Float(x) => *x,
        toml::Value::Integer(i) => *i as f64,
        other => bail!("{} is not a number", literal(other)),
    };
    if !ok(x) || !(x as f32).is_finite() {
        bail!("{} is not {what}", literal(value));
    }
    Ok(x as f32)
}

fn whole(value: &toml::Value, least: usize) -> Result<usize> {
    let n = value
        .as_integer()
        .with_context(|| format!("{} is not a whole number", literal(value)))?;
    match usize::try_from(n) {
        Ok(n) if n >= least => Ok(n),
        _ => bail!("{n} is below {least}"),
    }
}

/// An optimizer or schedule from a kind (`"sgd"`; the project's own settings if it is
/// already of that kind) or a whole table (`{ kind = "sgd", momentum = 0.9 }`).
fn named<T: Serialize + DeserializeOwned + Clone>(value: &toml::Value, current: &T) -> Result<T> {
    let table = match value {
        toml::Value::String(kind) => {
            let current_kind = toml::Value::try_from(current).ok().and_then(|c| {
                c.as_table()
                    .and_then(|t| t.get("kind"))
                    .and_then(|k| k.as_str().map(String::from))
            });
            if current_kind.as_deref() == Some(kind.as_str()) {
                return Ok(current.clone());
            }
            let mut t = toml::Table::new();
            t.insert("kind".into(), value.clone());
            toml::Value::Table(t)
        }
        toml::Value::Table(_) => value.clone(),
        other => bail!(
            "{} is neither a kind (a string) nor a table",
            literal(other)
        ),
    };
    table.try_into::<T>().map_err(|e| {
        anyhow!(
            "{}: {}",
            literal(value),
            e.to_string().trim().replace('\n', " ")
        )
    })
}

/// How a key's values are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// One of these values.
    Choice(Vec<toml::Value>),
    /// Uniform between the two.
    Uniform(f64, f64),
    /// Uniform in the logarithm between the two (both positive).
    LogUniform(f64, f64),
    /// A whole number between the two, both included.
    IntRange(i64, i64),
}

impl Spec {
    fn parse(value: &toml::Value) -> Result<Spec> {
        const FORMS: &str = "`choice = [...]`, `uniform = [lo, hi]`, `log_uniform = [lo, hi]` \
                             or `int_range = [lo, hi]`";
        let table = value
            .as_table()
            .filter(|t| t.len() == 1)
            .with_context(|| format!("expected one of {FORMS}, not {}", literal(value)))?;
        let (form, args) = table.iter().next().context("an empty table")?;
        let list = args
            .as_array()
            .with_context(|| format!("`{form}` takes a list, not {}", literal(args)))?;
        let pair = |what: &str| -> Result<(f64, f64)> {
            match list.as_slice() {
                [lo, hi] => {
                    let number = |v: &toml::Value| match v {
                        toml::Value::Float(x) => Ok(*x),
                        toml::Value::Integer(i) => Ok(*i as f64),
                        other => Err(anyhow!("`{form}`: {} is not a number", literal(other))),
                    };
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                        bail!("`{form} = [{lo}, {hi}]` needs {what}lo < hi");
                    }
                    Ok((lo, hi))
                }
                _ => bail!("`{form}` takes two numbers, [lo, hi]"),
            }
        };
        Ok(match form.as_str() {
            "choice" if list.is_empty() => bail!("`choice` is empty"),
            "choice" => Spec::Choice(list.clone()),
            "uniform" => {
                let (lo, hi) = pair("")?;
                Spec::Uniform(lo, hi)
            }
            "log_uniform" => {
                let (lo, hi) = pair("0 < ")?;
                if lo <= 0.0 {
                    bail!("`log_uniform = [{lo}, {hi}]` needs 0 < lo < hi");
                }
                Spec::LogUniform(lo, hi)
            }
            "int_range" => match list.as_slice() {
                [toml::Value::Integer(lo), toml::Value::Integer(hi)] if lo <= hi => {
                    Spec::IntRange(*lo, *hi)
                }
                _ => bail!("`int_range` takes two whole numbers, [lo, hi] with lo <= hi"),
            },
            other => bail!("unknown spec `{other}`; give {FORMS}"),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Spec::Choice(_) => "choice",
            Spec::Uniform(..) => "uniform",
            Spec::LogUniform(..) => "log_uniform",
            Spec::IntRange(..) => "int_range",
        }
    }

    /// Values that stand for the whole spec when checking it against a setting: every
    /// choice, or both ends of a range.
    fn examples(&self) -> Vec<toml::Value> {
        match self {
            Spec::Choice(values) => values.clone(),
            Spec::Uniform(lo, hi) | Spec::LogUniform(lo, hi) => {
                vec![toml::Value::Float(*lo), toml::Value::Float(*hi)]
            }
            Spec::IntRange(lo, hi) => vec![toml::Value::Integer(*lo), toml::Value::Integer(*hi)],
        }
    }

    fn draw(&self, rng: &mut StdRng) -> toml::Value {
        match self {
            Spec::Choice(values) => values[rng.random_range(0..values.len())].clone(),
            Spec::Uniform(lo, hi) => {
                toml::Value::Float(significant(rng.random_range(*lo..*hi)).clamp(*lo, *hi))
            }
            Spec::LogUniform(lo, hi) => {
                let x = rng.random_range(lo.ln()..hi.ln()).exp();
                toml::Value::Float(significant(x).clamp(*lo, *hi))
            }
            Spec::IntRange(lo, hi) => toml::Value::Integer(rng.random_range(*lo..=*hi)),
        }
    }
}

/// `x` rounded to [`DIGITS`] significant digits, by dividing by an exact power of ten so
/// the result prints as those digits.
fn significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let shift = DIGITS - 1 - x.abs().log10().floor() as i32;
    if shift >= 0 {
        let p = 10f64.powi(shift);
        (x * p).round() / p
    } else {
        let p = 10f64.powi(-shift);
        (x / p).round() * p
    }
}

/// A trial's settings, in [`Param`] order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(pub Vec<(Param, toml::Value)>);

impl Params {
    /// The value of `param`, if searched.
    pub fn get(&self, param: Param) -> Option<&toml::Value> {
        self.0.iter().find(|(p, _)| *p == param).map(|(_, v)| v)
    }

    /// A key for duplicate detection: values compare by their text (toml values are not
    /// `Hash`, and `0.001` and `1e-3` are the same setting).
    fn identity(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (p, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", p.key(), show(v))?;
        }
        Ok(())
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // A map in search order (serde_json keeps the order it is given).
        s.collect_map(self.0.iter().map(|(p, v)| (p.key(), v)))
    }
}

/// A value as a person writes it: names bare, reals in short form, tables inline.
pub fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(x) if *x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) => {
            format!("{x:e}")
        }
        toml::Value::Float(x) => format!("{x}"),
        other => literal(other),
    }
}

/// A value as the file spells it (strings quoted), for messages.
fn literal(value: &toml::Value) -> String {
    to_edit(value).to_string().trim().to_string()
}

/// The same value for `toml_edit`, tables inline.
fn to_edit(value: &toml::Value) -> toml_edit::Value {
    match value {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(x) => (*x).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => {
            toml_edit::Value::Array(a.iter().map(to_edit).collect::<toml_edit::Array>())
        }
        toml::Value::Table(t) => {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in t {
                inline.insert(k, to_edit(v));
            }
            toml_edit::Value::InlineTable(inline)
        }
    }
}

/// A checked `[tune]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Random draws or a grid.
    pub method: TuneMethod,
    /// The searched settings and their specs, in [`Param`] order.
    pub space: Vec<(Param, Spec)>,
    /// `tune.trials`.
    pub trials: Option<usize>,
    /// Validation split or k-fold.
    pub scoring: Scoring,
    /// Folds per trial (1 when scoring on the validation split).
    pub folds: usize,
    /// The figure trials are ranked by.
    pub metric: Monitor,
    /// Seeds the draws and the folds.
    pub seed: u64,
}

impl Search {
    /// Checks `project`'s `[tune]` section: every error names the key (`tune.space.l2`).
    pub fn new(project: &Project) -> Result<Search> {
        let tune = project.tune.as_ref().context(
            "no [tune] section to search; add one, for example:\n\n[tune]\ntrials = 10\n\n\
                 [tune.space]\nlearning_rate = { log_uniform = [1e-4, 1e-2] }\n\
                 batch_size = { choice = [16, 32, 64] }\n",
        )?;
        match tune.trials {
            Some(0) => bail!("tune.trials must be positive"),
            Some(n) if n > MAX_TRIALS => bail!("tune.trials: at most {MAX_TRIALS}, not {n}"),
            _ => {}
        }
        let folds = match (tune.scoring, tune.folds) {
            (Scoring::Validation, None) => 1,
            (Scoring::Validation, Some(_)) => {
                bail!("tune.folds: only for scoring = \"kfold\"")
            }
            (Scoring::Kfold, folds) => {
                let k = folds.unwrap_or(DEFAULT_FOLDS);
                if k < 2 {
                    bail!("tune.folds must be at least 2, not {k}");
                }
                if project.data.split.method == SplitMethod::TimeOrdered {
                    bail!(
                        "tune.scoring: k-fold shuffles rows, which would let a time-ordered \
                         model see the future; use scoring = \"validation\""
                    );
                }
                if project.data.split.method == SplitMethod::Lists {
                    bail!(
                        "tune.scoring: k-fold shuffles clips, which would put one speaker's \
                         clips on both sides of a fold; use scoring = \"validation\" (the \
                         validation list)"
                    );
                }
                k
            }
        };
        if tune.space.is_empty() {
            bail!(
                "tune.space is empty; name the settings to search, e.g. \
                 learning_rate = {{ log_uniform = [1e-4, 1e-2] }}"
            );
        }
        let mut space = Vec::new();
        for (key, value) in &tune.space {
            let at = || format!("tune.space.{key}");
            let param = Param::from_key(key).with_context(|| {
                let known: Vec<&str> = Param::ALL.iter().map(|p| p.key()).collect();
                format!(
                    "{}: not a setting loam tune searches; known: {}",
                    at(),
                    known.join(", ")
                )
            })?;
            let spec = Spec::parse(value).with_context(at)?;
            let fits = matches!(
                (param.kind(), &spec),
                (_, Spec::Choice(_))
                    | (Kind::Real, Spec::Uniform(..) | Spec::LogUniform(..))
                    | (Kind::Whole, Spec::IntRange(..))
            );
            if !fits {
                let forms = match param.kind() {
                    Kind::Real => "choice, uniform or log_uniform",
                    Kind::Whole => "choice or int_range",
                    Kind::Named => "choice",
                };
                bail!(
                    "{}: `{}` does not fit this setting; use {forms}",
                    at(),
                    spec.name()
                );
            }
            if tune.method == TuneMethod::Grid && !matches!(spec, Spec::Choice(_)) {
                bail!(
                    "{}: a grid takes only `choice` lists, not `{}`",
                    at(),
                    spec.name()
                );
            }
            for example in spec.examples() {
                let mut trial = project.clone();
                param
                    .apply(&mut trial, &example)
                    .and_then(|()| trial.check_settings())
                    .with_context(at)?;
            }
            space.push((param, spec));
        }
        space.sort_by_key(|(p, _)| *p);
        let has = |p: Param| space.iter().any(|(q, _)| *q == p);
        if has(Param::Template) && has(Param::Dropout) {
            bail!(
                "tune.space.dropout: sets the dropout layers of model.layers, which a tuned \
                 template replaces; search one or the other"
            );
        }
        let search = Search {
            method: tune.method,
            space,
            trials: tune.trials,
            scoring: tune.scoring,
            folds,
            metric: tune.metric,
            seed: tune.seed,
        };
        if search.method == TuneMethod::Grid {
            search.grid_size()?;
        }
        Ok(search)
    }

    fn grid_size(&self) -> Result<usize> {
        let mut n = 1usize;
        for (_, spec) in &self.space {
            if let Spec::Choice(values) = spec {
                n = n.saturating_mul(values.len());
            }
        }
        if n > MAX_TRIALS {
            bail!(
                "tune.space: the grid has {n} combinations (at most {MAX_TRIALS}); use method = \"random\""
            );
        }
        Ok(n)
    }

    /// The settings to try, in order: `trials` (or `tune.trials`) seeded draws, or the grid
    /// in odometer order (the last key changes fastest), cut to `trials` if given. A random
    /// search never repeats settings; it ends early if the space has no new ones left.
    pub fn candidates(&self, trials: Option<usize>) -> Result<Vec<Params>> {
        let cap = trials.or(self.trials);
        match cap {
            Some(0) => bail!("the number of trials must be positive"),
            Some(n) if n > MAX_TRIALS => bail!("{n} trials is too many (at most {MAX_TRIALS})"),
            _ => {}
        }
        match self.method {
            TuneMethod::Random => {
                let n = cap.unwrap_or(DEFAULT_TRIALS);
                let mut rng = StdRng::seed_from_u64(self.seed);
                let mut seen = HashSet::new();
                let mut out = Vec::with_capacity(n);
                'trials: while out.len() < n {
                    for _ in 0..REDRAWS {
                        let params = Params(
                            self.space
                                .iter()
                                .map(|(p, spec)| (*p, spec.draw(&mut rng)))
                                .collect(),
                        );
                        if seen.insert(params.identity()) {
                            out.push(params);
                            continue 'trials;
                        }
                    }
                    break;
                }
                Ok(out)
            }
            TuneMethod::Grid => {
                let lists: Vec<(Param, &[toml::Value])> = self
                    .space
                    .iter()
                    .map(|(p, spec)| match spec {
                        Spec::Choice(values) => Ok((*p, values.as_slice())),
                        other => Err(anyhow!(
                            "tune.space.{}: a grid takes only `choice` lists, not `{}`",
                            p.key(),
                            other.name()
                        )),
                    })
                    .collect::<Result<_>>()?;
                let total = self.grid_size()?;
                let n = cap.map_or(total, |c| c.min(total));
                let mut digits = vec![0usize; lists.len()];
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(Params(
                        lists
                            .iter()
                            .zip(&digits)
                            .map(|((p, values), &d)| (*p, values[d].clone()))
                            .collect(),
                    ));
                    for (d, (_, values)) in digits.iter_mut().zip(&lists).rev() {
                        *d += 1;
                        if *d < values.len() {
                            break;
                        }
                        *d = 0;
                    }
                }
                Ok(out)
            }
        }
    }

    /// `base` with `params` set: the project a trial trains.
    pub fn apply(base: &Project, params: &Params) -> Result<Project> {
        let mut project = base.clone();
        for (param, value) in &params.0 {
            param
                .apply(&mut project, value)
                .with_context(|| format!("tune.space.{}", param.key()))?;
        }
        project.check_settings()?;
        Ok(project)
    }
}

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trial {
    /// Its place in the run order, from 1.
    pub trial: usize,
    /// The settings it trained with.
    pub params: Params,
    /// The mean score over folds; `None` if it failed.
    pub score: Option<f64>,
    /// The standard deviation of the fold scores (population form); k-fold only.
    pub std: Option<f64>,
    /// Each fold's score.
    pub fold_scores: Vec<f64>,
    /// Epochs trained, per fold.
    pub epochs_run: Vec<usize>,
    /// The epoch whose weights were kept (and scored), per fold.
    pub best_epochs: Vec<usize>,
    /// Wall time of the trial.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

impl Trial {
    /// The score as the table shows it: `0.9712`, `0.9712 ± 0.0041`, or `failed`.
    pub fn score_text(&self) -> String {
        match (self.score, self.std) {
            (Some(s), Some(d)) => format!("{s:.4} ± {d:.4}"),
            (Some(s), None) => format!("{s:.4}"),
            (None, _) => "failed".into(),
        }
    }

    /// Epochs run: one figure, or the fewest and most over folds.
    pub fn epochs_text(&self) -> String {
        let lo = self.epochs_run.iter().min();
        let hi = self.epochs_run.iter().max();
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
            _ => "-".into(),
        }
    }
}

/// What `loam tune` found, best trial first (failed trials last).
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// The project's name.
    pub project: String,
    /// Random draws or a grid.
    pub method: TuneMethod,
    /// Validation split or k-fold.
    pub scoring: Scoring,
    /// Folds per trial.
    pub folds: usize,
    /// What the score is, e.g. `validation accuracy`.
    pub metric: String,
    /// Whether a higher score is better.
    pub higher_is_better: bool,
    /// `tune.seed`.
    pub seed: u64,
    /// `[tune.space]` as written.
    pub space: BTreeMap<String, toml::Value>,
    /// Trials planned.
    pub planned: usize,
    /// Ctrl-C ended the search early (the trial it stopped is not counted).
    pub interrupted: bool,
    /// The trials, ranked.
    pub trials: Vec<Trial>,
}

/// What `loam tune` wrote.
#[derive(Debug, Clone)]
pub struct TuneSummary {
    /// `runs/tune-NNN`, with `results.json` and `results.csv`.
    pub dir: PathBuf,
    /// The project file with the best trial's settings (`loam.best.toml` beside
    /// `loam.toml`), unless no trial succeeded (or it could not be written: see `notes`).
    pub best_file: Option<PathBuf>,
    /// The results.
    pub report: TuneReport,
    /// Things worth saying about the run (a cut grid, a space with fewer settings than
    /// trials asked for).
    pub notes: Vec<String>,
}

/// What [`tune`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum TuneEvent<'a> {
    /// A trial starts.
    Trial {
        /// Its number, from 1.
        trial: usize,
        /// Trials planned.
        of: usize,
        /// Its settings.
        params: &'a Params,
    },
    /// Training progress of one fold of the current trial.
    Training {
        /// The fold, from 1.
        fold: usize,
        /// Folds per trial.
        folds: usize,
        /// The training loop's report.
        progress: Progress<'a>,
    },
    /// A trial ended: scored, or failed.
    Done(&'a Trial),
}

/// `loam tune` options from the command line.
#[derive(Debug, Clone, Default)]
pub struct TuneOptions {
    /// Overrides `tune.trials`.
    pub trials: Option<usize>,
}

/// The `k` folds of a k-fold search: the training and validation rows of `split` (indices
/// into `data`) dealt into folds, stratified by class; the test rows are in none of them.
pub fn fold_splits(data: &Dataset, split: &Split, k: usize, seed: u64) -> Result<Vec<Split>> {
    let mut pool: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
    pool.sort_unstable();
    let folds = data::split::kfold(&data.subset(&pool), k, seed).context("tune.folds")?;
    Ok(folds
        .into_iter()
        .map(|(train, val)| Split {
            train: train.iter().map(|&i| pool[i]).collect(),
            val: val.iter().map(|&i| pool[i]).collect(),
            test: Vec::new(),
        })
        .collect())
}

/// The prepared data of each fold (one for validation scoring), with the preprocessing fit
/// on that fold's training rows. Tuned settings never touch the data, so this is done once.
fn prepare_folds(project: &Project, dir: &Path, search: &Search) -> Result<Vec<Prepared>> {
    let (data, split, duplicates) = pipeline::load_and_split(project, dir)?;
    let splits = match search.scoring {
        Scoring::Validation => {
            if split.val.is_empty() {
                bail!(
                    "tune.scoring = \"validation\" needs validation rows, and \
                     data.split.validation leaves none; raise it or use scoring = \"kfold\""
                );
            }
            // The test rows stay out of the search entirely.
            vec![Split {
                test: Vec::new(),
                ..split
            }]
        }
        Scoring::Kfold => fold_splits(&data, &split, search.folds, search.seed)?,
    };
    splits
        .into_iter()
        .map(|s| {
            let mut prepared = pipeline::prepare_split(project, &data, s, duplicates)?;
            pipeline::add_audio(project, dir, &mut prepared)?;
            Ok(prepared)
        })
        .collect()
}

/// The scoring figure: its name and whether higher is better.
fn metric_of(project: &Project, monitor: Monitor) -> (&'static str, bool) {
    match (monitor, project.task.kind) {
        (Monitor::ValidationLoss, _) => ("validation loss", false),
        (Monitor::ValidationMetric, TaskKind::Classification) => ("validation accuracy", true),
        (Monitor::ValidationMetric, _) => ("validation MAE", false),
    }
}

/// Trains and scores one trial; `None` if `stop` cut it short.
fn run_trial(
    base: &Project,
    number: usize,
    params: &Params,
    folds: &[Prepared],
    monitor: Monitor,
    stop: &AtomicBool,
    events: &mut (dyn FnMut(TuneEvent<'_>) + Send),
) -> Option<Trial> {
    let started = Instant::now();
    let mut trial = Trial {
        trial: number,
        params: params.clone(),
        score: None,
        std: None,
        fold_scores: Vec::new(),
        epochs_run: Vec::new(),
        best_epochs: Vec::new(),
        seconds: 0.0,
        error: None,
    };
    let outcome = (|| -> Result<bool> {
        let project = Search::apply(base, params)?;
        for (f, prepared) in folds.iter().enumerate() {
            let fitted = pipeline::train_project(&project, prepared, stop, &mut |progress| {
                events(TuneEvent::Training {
                    fold: f + 1,
                    folds: folds.len(),
                    progress,
                })
            })?;
            if fitted.interrupted {
                return Ok(false);
            }
            // The kept epoch's validation figures are those of the weights training keeps.
            let kept = fitted
                .history
                .iter()
                .find(|e| e.epoch == fitted.best_epoch)
                .context("training kept no epoch")?;
            let score = match monitor {
                Monitor::ValidationLoss => kept.val_loss,
                Monitor::ValidationMetric => kept.val_metric,
            }
            .context("training reported no validation figures")?;
            if !score.is_finite() {
                bail!("the score is not a number ({score}); lower the learning rate");
            }
            trial.fold_scores.push(score);
            trial.epochs_run.push(fitted.history.len());
            trial.best_epochs.push(fitted.best_epoch);
        }
        Ok(true)
    })();
    trial.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(false) => return None,
        Ok(true) => {
            let n = trial.fold_scores.len() as f64;
            let mean = trial.fold_scores.iter().sum::<f64>() / n;
            trial.score = Some(mean);
            if trial.fold_scores.len() > 1 {
                let var = trial
                    .fold_scores
                    .iter()
                    .map(|s| (s - mean) * (s - mean))
                    .sum::<f64>()
                    / n;
                trial.std = Some(var.sqrt());
            }
        }
        // A stop during a trial is not its failure.
        Err(_) if stop.load(Ordering::Relaxed) => return None,
        Err(e) => trial.error = Some(format!("{e:#}")),
    }
    events(TuneEvent::Done(&trial));
    Some(trial)
}

/// `loam tune`: runs the search in `project_file`'s `[tune]` section, then writes
/// `runs/tune-NNN/results.json` and `results.csv` beside it, and the project file with the
/// best settings as `<stem>.best.toml` (`loam.best.toml`) beside the project file, so its
/// data paths still resolve. `stop` (Ctrl-C) ends the search; the trials done are kept.
pub fn tune(
    project_file: &Path,
    options: &TuneOptions,
    stop: &AtomicBool,
    events: &mut (dyn FnMut(TuneEvent<'_>) + Send),
) -> Result<TuneSummary> {
    let (project, text) = Project::load(project_file)?;
    let origin = || format!("in {}", project_file.display());
    let search = Search::new(&project).with_context(origin)?;
    let candidates = search.candidates(options.trials).with_context(origin)?;
    let mut notes = Vec::new();
    let asked = options.trials.or(search.trials);
    match search.method {
        TuneMethod::Random if asked.unwrap_or(DEFAULT_TRIALS) > candidates.len() => {
            notes.push(format!(
                "the space holds only {} distinct settings; each is tried once",
                candidates.len()
            ));
        }
        TuneMethod::Grid if candidates.len() < search.grid_size()? => notes.push(format!(
            "trials caps the grid at its first {} of {} combinations",
            candidates.len(),
            search.grid_size()?
        )),
        _ => {}
    }
    let dir = project_file.parent().unwrap_or(Path::new("."));
    let folds = prepare_folds(&project, dir, &search).with_context(origin)?;
    let (metric, higher_is_better) = metric_of(&project, search.metric);

    let mut trials = Vec::new();
    let mut interrupted = false;
    for (i, params) in candidates.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        events(TuneEvent::Trial {
            trial: i + 1,
            of: candidates.len(),
            params,
        });
        match run_trial(&project, i + 1, params, &folds, search.metric, stop, events) {
            Some(t) => trials.push(t),
            None => {
                interrupted = true;
                break;
            }
        }
    }
    if trials.is_empty() {
        bail!("stopped before the first trial finished; nothing written");
    }
    rank(&mut trials, higher_is_better);
    let report = TuneReport {
        project: project.name.clone(),
        method: search.method,
        scoring: search.scoring,
        folds: search.folds,
        metric: metric.into(),
        higher_is_better,
        seed: search.seed,
        space: project
            .tune
            .as_ref()
            .map(|t| t.space.clone())
            .unwrap_or_default(),
        planned: candidates.len(),
        interrupted,
        trials,
    };
    let out = write_results(&dir.join("runs"), &search, &report)?;
    let best_file = match report.trials.first().filter(|t| t.score.is_some()) {
        Some(best) => {
            let path = best_path(project_file);
            let run = out.strip_prefix(dir).unwrap_or(&out).display().to_string();
            let header = format!(
                "# Written by `loam tune` ({run}): {} with the settings of its best trial\n\
                 # (trial {}, {} {}): {}\n\
                 # Train it: `loam train --project {}`\n",
                display_name(project_file),
                best.trial,
                metric,
                best.score_text(),
                best.params,
                display_name(&path),
            );
            // The results are on disk by now: a best file that cannot be written is a note,
            // not a reason to report the whole search as failed.
            let written = Search::apply(&project, &best.params)
                .and_then(|b| best_file_text(&text, &project, &b, &best.params, &header))
                .and_then(|t| write_atomically(&path, t.as_bytes()));
            match written {
                Ok(()) => Some(path),
                Err(e) => {
                    notes.push(format!("{} not written: {e:#}", path.display()));
                    None
                }
            }
        }
        None => None,
    };
    Ok(TuneSummary {
        dir: out,
        best_file,
        report,
        notes,
    })
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `loam.toml` -> `loam.best.toml`, in the same folder.
fn best_path(project_file: &Path) -> PathBuf {
    let stem = project_file
        .file_stem()
        .map_or_else(|| "loam".into(), |s| s.to_string_lossy().into_owned());
    project_file.with_file_name(format!("{stem}.best.toml"))
}

/// Best first; failed trials last; ties keep the run order.
fn rank(trials: &mut [Trial], higher_is_better: bool) {
    trials.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => {
            let order = x.total_cmp(&y);
            let order = if higher_is_better {
                order.reverse()
            } else {
                order
            };
            order.then(a.trial.cmp(&b.trial))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.trial.cmp(&b.trial),
    });
}

/// Writes `results.json` and `results.csv` into the next `runs/tune-NNN`, which appears
/// only once both are complete.
fn write_results(runs: &Path, search: &Search, report: &TuneReport) -> Result<PathBuf> {
    let out = pipeline::next_run_dir(runs, "tune")?;
    write_folder_atomically(&out, |partial| {
        write_atomically(
            &partial.join("results.json"),
            serde_json::to_string_pretty(report)?.as_bytes(),
        )?;
        write_atomically(&partial.join("results.csv"), &csv_bytes(search, report)?)
    })?;
    Ok(out)
}

/// Reals in full (what a spreadsheet parses back exactly); the rest as the table shows them.
fn csv_value(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(x) => format!("{x}"),
        other => show(other),
    }
}

fn csv_bytes(search: &Search, report: &TuneReport) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["rank".to_string(), "trial".into()];
    header.extend(search.space.iter().map(|(p, _)| p.key().to_string()));
    header.extend(
        [
            "score",
            "std",
            "epochs_run",
            "best_epoch",
            "seconds",
            "error",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for (rank, t) in report.trials.iter().enumerate() {
        let mut row = vec![(rank + 1).to_string(), t.trial.to_string()];
        row.extend(
            search
                .space
                .iter()
                .map(|(p, _)| t.params.get(*p).map(csv_value).unwrap_or_default()),
        );
        let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(";");
        row.push(t.score.map(|s| s.to_string()).unwrap_or_default());
        row.push(t.std.map(|s| s.to_string()).unwrap_or_default());
        row.push(join(&t.epochs_run));
        row.push(join(&t.best_epochs));
        row.push(format!("{:.3}", t.seconds));
        row.push(t.error.clone().unwrap_or_default());
        w.write_record(&row)?;
    }
    w.into_inner()
        .map_err(|e| anyhow!("writing results.csv: {e}"))
}

/// The results as a table, best first, with failed trials' errors below it.
pub fn table_text(report: &TuneReport) -> String {
    use std::fmt::Write;
    let keys: Vec<&str> = {
        let mut keys: Vec<Param> = report
            .trials
            .iter()
            .flat_map(|t| t.params.0.iter().map(|(p, _)| *p))
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(Param::key).collect()
    };
    let mut rows: Vec<Vec<String>> = vec![
        ["rank", "trial"]
            .into_iter()
            .chain(keys.iter().copied())
            .chain([report.metric.as_str(), "epochs run", "seconds"])
            .map(String::from)
            .collect(),
    ];
    for (rank, t) in report.trials.iter().enumerate() {
        let mut row = vec![(rank + 1).to_string(), t.trial.to_string()];
        row.extend(t.params.0.iter().map(|(_, v)| show(v)));
        row.push(t.score_text());
        row.push(t.epochs_text());
        row.push(format!("{:.1}", t.seconds));
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", cells.join("  ").trim_end());
    }
    for t in report.trials.iter().filter(|t| t.error.is_some()) {
        let _ = writeln!(
            s,
            "trial {} failed: {}",
            t.trial,
            t.error.as_deref().unwrap_or_default()
        );
    }
    let better = if report.higher_is_better {
        "higher"
    } else {
        "lower"
    };
    let scoring = match report.scoring {
        Scoring::Validation => "on the validation split".to_string(),
        Scoring::Kfold => format!("mean ± std over {} folds", report.folds),
    };
    let _ = writeln!(
        s,
        "{} of {} trials; {} {scoring} ({better} is better){}",
        report.trials.len(),
        report.planned,
        report.metric,
        if report.interrupted {
            "; interrupted"
        } else {
            ""
        }
    );
    s
}

/// `base_text` with the settings of `best` that differ from `base` written in; comments and
/// layout stay. Checked by parsing the result back.
fn best_file_text(
    base_text: &str,
    base: &Project,
    best: &Project,
    params: &Params,
    header: &str,
) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = base_text.parse().context("parsing it for editing")?;
    for (param, value) in &params.0 {
        if param.same(base, best) {
            continue;
        }
        match param {
            Param::Template => {
                let model = table_like(&mut doc, "model")?;
                set(model, "template", to_edit(value));
                model.remove("layers");
            }
            Param::Dropout => {
                let model = table_like(&mut doc, "model")?;
                let layers = model
                    .get_mut("layers")
                    .context("model.layers is not in the file")?;
                let set_rate = |t: &mut dyn toml_edit::TableLike| {
                    if t.get("type").and_then(|v| v.as_str()) == Some("dropout") {
                        set(t, "rate", to_edit(value));
                    }
                };
                match layers {
                    toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
                        for v in a.iter_mut() {
                            if let Some(t) = v.as_inline_table_mut() {
                                set_rate(t);
                            }
                        }
                    }
                    toml_edit::Item::ArrayOfTables(a) => {
                        for t in a.iter_mut() {
                            set_rate(t);
                        }
                    }
                    _ => bail!("model.layers is not a list of tables"),
                }
            }
            Param::Optimizer | Param::Schedule => {
                let form = match value {
                    // A bare kind as the file writes it: `{ kind = "sgd" }`.
                    toml::Value::String(_) => {
                        let mut t = toml::Table::new();
                        t.insert("kind".into(), value.clone());
                        toml::Value::Table(t)
                    }
                    other => other.clone(),
                };
                set(
                    table_like(&mut doc, "training")?,
                    param.key(),
                    to_edit(&form),
                );
            }
            _ => set(
                table_like(&mut doc, "training")?,
                param.key(),
                to_edit(value),
            ),
        }
    }
    let text = format!("{header}{doc}");
    let reread = Project::parse(&text, Path::new("the best settings"))?;
    if reread != *best {
        bail!("the edited file does not read back as the best trial's settings");
    }
    Ok(text)
}

/// The top-level table `name` of `doc` (created if missing), whatever its form.
fn table_like<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    name: &str,
) -> Result<&'a mut dyn toml_edit::TableLike> {
    doc.as_table_mut()
        .entry(name)
        .or_insert(toml_edit::table())
        .as_table_like_mut()
        .with_context(|| format!("`{name}` is not a table"))
}

/// Sets `key`, keeping the old value's surrounding whitespace and trailing comment.
fn set(table: &mut dyn toml_edit::TableLike, key: &str, mut value: toml_edit::Value) {
    match table.get(key).and_then(toml_edit::Item::as_value) {
        Some(old) => *value.decor_mut() = old.decor().clone(),
        None => value.decor_mut().set_prefix(" "),
    }
    table.insert(key, toml_edit::Item::Value(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"t\"\n[data]\npath = \"d.csv\"\n[model]\ntemplate = \"mlp\"\n";

    fn project(tune: &str) -> Result<Project> {
        Project::parse(&format!("{BASE}[tune]\n{tune}"), Path::new("loam.toml"))
    }

    fn search(tune: &str) -> Search {
        Search::new(&project(tune).unwrap()).unwrap()
    }

    fn real_of(p: &Params, param: Param) -> f64 {
        match p.get(param).unwrap() {
            toml::Value::Float(x) => *x,
            toml::Value::Integer(i) => *i as f64,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_draws_stay_in_range_and_repeat_with_the_seed() {
        let space = "method = \"random\"\nseed = 3\n[tune.space]\n\
                     learning_rate = { log_uniform = [1e-4, 1e-2] }\n\
                     l2 = { uniform = [0, 0.01] }\n\
                     epochs = { int_range = [2, 5] }\n\
                     batch_size = { choice = [16, 32, 64] }\n\
                     optimizer = { choice = [\"adam\", \"sgd\"] }\n";
        let s = search(space);
        let a = s.candidates(Some(200)).unwrap();
        assert_eq!(a.len(), 200);
        let keys: Vec<Param> = a[0].0.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            keys,
            [
                Param::Optimizer,
                Param::LearningRate,
                Param::BatchSize,
                Param::Epochs,
                Param::L2
            ]
        );
        let mut small_rates = 0;
        for p in &a {
            let lr = real_of(p, Param::LearningRate);
            assert!((1e-4..=1e-2).contains(&lr), "{p}");
            assert_eq!(lr, significant(lr), "3 significant digits: {lr}");
            small_rates += usize::from(lr < 1e-3);
            assert!((0.0..=0.01).contains(&real_of(p, Param::L2)), "{p}");
            let epochs = p.get(Param::Epochs).unwrap().as_integer().unwrap();
            assert!((2..=5).contains(&epochs), "{p}");
            let batch = p.get(Param::BatchSize).unwrap().as_integer().unwrap();
            assert!([16, 32, 64].contains(&batch), "{p}");
            let opt = p.get(Param::Optimizer).unwrap().as_str().unwrap();
            assert!(["adam", "sgd"].contains(&opt), "{p}");
            Search::apply(&project(space).unwrap(), p).unwrap();
        }
        // Log-uniform: half the draws below the geometric middle, not a tenth.
        assert!(
            (70..130).contains(&small_rates),
            "{small_rates} of 200 below 1e-3"
        );
        assert_eq!(a, s.candidates(Some(200)).unwrap(), "same seed, same draws");
        let other = search(&space.replace("seed = 3", "seed = 4"));
        assert_ne!(a, other.candidates(Some(200)).unwrap());
        // `tune.trials` is the default; the command line overrides it.
        let t = search(&space.replace("seed = 3", "seed = 3\ntrials = 7"));
        assert_eq!(t.candidates(None).unwrap().len(), 7);
        assert_eq!(t.candidates(Some(2)).unwrap(), a[..2].to_vec());
        let e = t.candidates(Some(usize::MAX)).unwrap_err().to_string();
        assert!(e.contains("too many"), "{e}");
    }

    #[test]
    fn a_small_random_space_runs_each_setting_once() {
        let s = search(
            "trials = 20\n[tune.space]\nbatch_size = { choice = [16, 32] }\nl2 = { choice = [0, 1e-3, 1e-2] }\n",
        );
        let c = s.candidates(None).unwrap();
        assert_eq!(c.len(), 6);
        let distinct: HashSet<String> = c.iter().map(Params::identity).collect();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn grid_enumerates_the_product() {
        let s = search(
            "method = \"grid\"\n[tune.space]\n\
             template = { choice = [\"mlp\", \"cnn-small\"] }\n\
             batch_size = { choice = [16, 32] }\n\
             l2 = { choice = [0.0, 1e-4, 1e-3] }\n",
        );
        let c = s.candidates(None).unwrap();
        assert_eq!(c.len(), 12);
        let text: Vec<String> = c.iter().map(Params::to_string).collect();
        assert_eq!(text[0], "template=mlp batch_size=16 l2=0");
        assert_eq!(text[1], "template=mlp batch_size=16 l2=1e-4");
        assert_eq!(text[3], "template=mlp batch_size=32 l2=0");
        assert_eq!(text[11], "template=cnn-small batch_size=32 l2=0.001");
        let distinct: HashSet<&String> = text.iter().collect();
        assert_eq!(distinct.len(), 12);
        assert_eq!(s.candidates(Some(5)).unwrap(), c[..5].to_vec());
        assert_eq!(s.candidates(Some(50)).unwrap(), c);
    }

    #[test]
    fn bad_specs_name_the_key() {
        let cases = [
            (
                "[tune.space]\nmomentum = { choice = [0.9] }",
                "tune.space.momentum",
            ),
            (
                "[tune.space]\nlearning_rate = 0.1",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { gaussian = [0, 1] }",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { uniform = [0.1] }",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { uniform = [0.1, 0.01] }",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { uniform = [0, 0.01] }",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { log_uniform = [0, 0.01] }",
                "tune.space.learning_rate",
            ),
            (
                "[tune.space]\nlearning_rate = { choice = [\"fast\"] }",
                "tune.space.learning_rate",
            ),
            ("[tune.space]\nl2 = { choice = [] }", "tune.space.l2"),
            (
                "[tune.space]\nl2 = { choice = [0.1], uniform = [0, 1] }",
                "tune.space.l2",
            ),
            (
                "[tune.space]\nbatch_size = { uniform = [8, 64] }",
                "tune.space.batch_size",
            ),
            (
                "[tune.space]\nbatch_size = { choice = [16, 0] }",
                "tune.space.batch_size",
            ),
            (
                "[tune.space]\nepochs = { choice = [2.5] }",
                "tune.space.epochs",
            ),
            (
                "[tune.space]\nepochs = { int_range = [5, 2] }",
                "tune.space.epochs",
            ),
            (
                "[tune.space]\ntemplate = { choice = [\"lenet\"] }",
                "tune.space.template",
            ),
            (
                "[tune.space]\noptimizer = { choice = [\"adagrad\"] }",
                "tune.space.optimizer",
            ),
            (
                "[tune.space]\noptimizer = { int_range = [1, 2] }",
                "tune.space.optimizer",
            ),
            (
                "[tune.space]\nschedule = { choice = [\"step\"] }",
                "tune.space.schedule",
            ),
            (
                "[tune.space]\ndropout = { choice = [0.1] }",
                "tune.space.dropout",
            ),
            (
                "method = \"grid\"\n[tune.space]\nl2 = { uniform = [0, 1] }",
                "tune.space.l2",
            ),
            (
                "trials = 0\n[tune.space]\nl2 = { choice = [0] }",
                "tune.trials",
            ),
            (
                "trials = 1000000000000\n[tune.space]\nl2 = { uniform = [0, 1] }",
                "tune.trials",
            ),
            (
                "folds = 3\n[tune.space]\nl2 = { choice = [0] }",
                "tune.folds",
            ),
            (
                "scoring = \"kfold\"\nfolds = 1\n[tune.space]\nl2 = { choice = [0] }",
                "tune.folds",
            ),
            ("[tune.space]\n", "tune.space"),
        ];
        for (tune, key) in cases {
            let e = format!("{:#}", project(tune).unwrap_err());
            assert!(e.contains(key) && e.contains("loam.toml"), "{tune}\n-> {e}");
        }
        let e = format!("{:#}", project("method = \"anneal\"\n").unwrap_err());
        assert!(e.contains("anneal"), "{e}");
        let e = format!(
            "{:#}",
            project("[tune.space]\nlearning_rate = { log_uniform = [0, 0.01] }").unwrap_err()
        );
        assert!(e.contains("0 < lo < hi"), "{e}");
    }

    #[test]
    fn dropout_sets_every_dropout_layer_and_tables_set_optimizers() {
        let text = "name = \"t\"\n[data]\npath = \"d.csv\"\n[model]\nlayers = [\n  \
                    { type = \"dense\", units = 8 },\n  { type = \"dropout\", rate = 0.5 },  # keep me\n  \
                    { type = \"dense\", units = 4 },\n  { type = \"dropout\", rate = 0.5 },\n]\n\
                    [training]\noptimizer = { kind = \"sgd\", momentum = 0.9 }   # momentum!\n\
                    [tune]\n[tune.space]\ndropout = { uniform = [0.1, 0.3] }\n\
                    optimizer = { choice = [\"sgd\", { kind = \"adam-w\", weight_decay = 0.05 }] }\n";
        let base = Project::parse(text, Path::new("loam.toml")).unwrap();
        let value = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone()
        };
        let params = Params(vec![
            (
                Param::Optimizer,
                value("{ kind = \"adam-w\", weight_decay = 0.05 }"),
            ),
            (Param::Dropout, value("0.25")),
        ]);
        let best = Search::apply(&base, &params).unwrap();
        let rates: Vec<f32> = best
            .model
            .layers
            .iter()
            .flatten()
            .filter_map(|l| match l {
                LayerSpec::Dropout { rate } => Some(*rate),
                _ => None,
            })
            .collect();
        assert_eq!(rates, [0.25, 0.25]);
        assert!(matches!(
            best.training.optimizer,
            crate::train::Optimizer::AdamW { weight_decay, .. } if weight_decay == 0.05
        ));
        let written = best_file_text(text, &base, &best, &params, "# best\n").unwrap();
        assert!(written.starts_with("# best\n"), "{written}");
        assert!(written.contains("  # keep me"), "{written}");
        assert!(written.contains("# momentum!"), "{written}");
        assert_eq!(Project::parse(&written, Path::new("b")).unwrap(), best);
        // Choosing the kind the project already has keeps its settings (the momentum).
        let sgd = Params(vec![(Param::Optimizer, value("\"sgd\""))]);
        assert_eq!(Search::apply(&base, &sgd).unwrap(), base);
    }

    #[test]
    fn the_best_file_adds_missing_tables_and_swaps_layers_for_a_template() {
        let text = "# mine\nname = \"t\"\n[data]\npath = \"d.csv\"\n\
                    [[model.layers]]\ntype = \"dense\"\nunits = 8\n\
                    [[model.layers]]\ntype = \"dropout\"\nrate = 0.5\n\
                    [tune.space]\ntemplate = { choice = [\"mlp\"] }\nepochs = { choice = [3] }\n\
                    schedule = { choice = [\"cosine\", \"one-cycle\"] }\n";
        let base = Project::parse(text, Path::new("loam.toml")).unwrap();
        let params = search_of(&base).candidates(Some(1)).unwrap().remove(0);
        let best = Search::apply(&base, &params).unwrap();
        assert_eq!(best.model.template.as_deref(), Some("mlp"));
        assert_eq!(best.training.epochs, 3);
        let written = best_file_text(text, &base, &best, &params, "").unwrap();
        assert!(written.starts_with("# mine\n"), "{written}");
        assert!(!written.contains("model.layers"), "{written}");
        assert_eq!(Project::parse(&written, Path::new("b")).unwrap(), best);
    }

    fn search_of(project: &Project) -> Search {
        Search::new(project).unwrap()
    }

    fn labelled(rows: usize) -> Dataset {
        Dataset {
            name: "s".into(),
            sample_dims: vec![1],
            features: (0..rows).map(|i| i as f32).collect(),
            feature_names: vec!["i".into()],
            targets: data::Targets::Classes((0..rows).map(|i| (i % 2) as u32).collect()),
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn kfold_splits_leave_the_test_rows_out() {
        let d = labelled(40);
        let split = data::split::random(&d, 0.2, 0.25, 1).unwrap();
        let folds = fold_splits(&d, &split, 4, 9).unwrap();
        assert_eq!(folds.len(), 4);
        let mut validated = Vec::new();
        for f in &folds {
            assert!(f.test.is_empty());
            assert!(
                f.train
                    .iter()
                    .chain(&f.val)
                    .all(|i| !split.test.contains(i))
            );
            assert_eq!(f.train.len() + f.val.len(), 30);
            assert!(f.train.iter().all(|i| !f.val.contains(i)));
            validated.extend_from_slice(&f.val);
        }
        validated.sort_unstable();
        let mut pool: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
        pool.sort_unstable();
        assert_eq!(validated, pool, "every pooled row validates once");
        assert_eq!(folds, fold_splits(&d, &split, 4, 9).unwrap());
    }

    #[test]
    fn significant_keeps_three_digits() {
        assert_eq!(significant(0.000123456), 0.000123);
        assert_eq!(significant(123456.0), 123000.0);
        assert_eq!(significant(0.0), 0.0);
        assert_eq!(format!("{}", significant(0.0098765)), "0.00988");
    }

    /// The digits example with the MLP, 2 epochs, and `tune` as its `[tune]` section.
    fn digits_with(tune: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::init::init(dir.path(), Some("digits")).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("template = \"cnn-small\"", "template = \"mlp\"")
            .replace("epochs = 30", "epochs = 2");
        std::fs::write(&path, format!("{text}\n[tune]\n{tune}")).unwrap();
        (dir, path)
    }

    #[test]
    fn a_tiny_tune_ranks_trials_writes_its_files_and_repeats() {
        let (dir, path) = digits_with(
            "trials = 2\nseed = 5\nmetric = \"validation-metric\"\n[tune.space]\n\
             learning_rate = { log_uniform = [1e-3, 3e-2] }\n",
        );
        let mut events = Vec::new();
        let a = tune(
            &path,
            &TuneOptions::default(),
            &AtomicBool::new(false),
            &mut |e| {
                if let TuneEvent::Trial { trial, of, .. } = e {
                    events.push((trial, of));
                }
            },
        )
        .unwrap();
        assert_eq!(events, [(1, 2), (2, 2)]);
        assert_eq!(a.dir, dir.path().join("runs/tune-001"));
        let r = &a.report;
        assert_eq!(
            (r.trials.len(), r.metric.as_str()),
            (2, "validation accuracy")
        );
        let scores: Vec<f64> = r.trials.iter().map(|t| t.score.unwrap()).collect();
        assert!(scores[0] >= scores[1], "best first: {scores:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(
            scores[0] > 0.2,
            "above chance (0.1) after two epochs: {scores:?}"
        );
        assert!(
            r.trials
                .iter()
                .all(|t| t.epochs_run == [2] && t.std.is_none())
        );

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.dir.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(json["trials"][0]["score"].as_f64(), Some(scores[0]));
        assert!(json["trials"][0]["params"]["learning_rate"].is_f64());
        let csv = std::fs::read_to_string(a.dir.join("results.csv")).unwrap();
        assert!(
            csv.starts_with("rank,trial,learning_rate,score,std,epochs_run,"),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 3);

        // The best file trains the best trial's settings and keeps the file's comments.
        let best = a.best_file.clone().unwrap();
        assert_eq!(best, dir.path().join("loam.best.toml"));
        let (p, text) = Project::load(&best).unwrap();
        let (base, _) = Project::load(&path).unwrap();
        assert_eq!(p, Search::apply(&base, &r.trials[0].params).unwrap());
        assert!(text.contains("# 1797 8x8 hand-written digits"), "{text}");
        assert!(
            text.starts_with("# Written by `loam tune` (runs/tune-001)"),
            "{text}"
        );
        let table = table_text(r);
        assert!(table.contains("validation accuracy") && table.contains("2 of 2 trials"));

        // The same file gives the same trials and scores.
        let b = tune(
            &path,
            &TuneOptions::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(b.dir, dir.path().join("runs/tune-002"));
        let key = |s: &TuneSummary| -> Vec<(usize, String, Option<f64>)> {
            s.report
                .trials
                .iter()
                .map(|t| (t.trial, t.params.to_string(), t.score))
                .collect()
        };
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn kfold_scores_every_fold_and_ctrl_c_keeps_the_trials_done() {
        let (dir, path) = digits_with(
            "method = \"grid\"\nscoring = \"kfold\"\nfolds = 2\n[tune.space]\n\
             batch_size = { choice = [64, 128, 256] }\nepochs = { choice = [1] }\n",
        );
        let stop = AtomicBool::new(false);
        let s = tune(&path, &TuneOptions::default(), &stop, &mut |e| {
            // Ctrl-C during the second trial: it is dropped, the first is kept.
            if let TuneEvent::Training {
                progress: Progress::Batch { .. },
                ..
            } = e
                && stop.load(Ordering::Relaxed)
            {
                unreachable!("training went on after the stop");
            }
            if let TuneEvent::Trial { trial: 2, .. } = e {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
        let r = &s.report;
        assert!(r.interrupted);
        assert_eq!((r.trials.len(), r.planned, r.folds), (1, 3, 2));
        let t = &r.trials[0];
        assert_eq!(t.fold_scores.len(), 2);
        assert_eq!(t.epochs_run, [1, 1]);
        let mean = (t.fold_scores[0] + t.fold_scores[1]) / 2.0;
        assert!((t.score.unwrap() - mean).abs() < 1e-12);
        assert!((t.std.unwrap() - (t.fold_scores[0] - mean).abs()).abs() < 1e-12);
        assert!(t.score_text().contains('±'));
        assert!(dir.path().join("runs/tune-001/results.json").is_file());

        // Stopped before any trial finished: nothing written.
        let e = tune(
            &path,
            &TuneOptions::default(),
            &AtomicBool::new(true),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("nothing written"), "{e}");
        assert!(!dir.path().join("runs/tune-002").exists());
    }

    #[test]
    fn failed_trials_rank_last_and_say_why() {
        // A learning rate near f32's largest sends the weights to infinity at once.
        let (_dir, path) = digits_with(
            "method = \"grid\"\n[tune.space]\nlearning_rate = { choice = [1e38, 0.003] }\n\
             epochs = { choice = [1] }\n",
        );
        let s = tune(
            &path,
            &TuneOptions::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
        let t = &s.report.trials;
        assert_eq!(t.len(), 2);
        assert!(t[0].score.is_some() && t[0].params.to_string().contains("0.003"));
        assert!(t[1].score.is_none() && t[1].error.is_some(), "{t:?}");
        assert!(table_text(&s.report).contains("trial 1 failed"));
    }
}
