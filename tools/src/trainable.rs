//! Choosing what a device trains, when the `.loam` is written: `loam export --trainable`
//! (the user names layers and how much of each) or `--train-ram` (the tools pick the most
//! parameters that fit a RAM budget), and the RAM either needs.
//!
//! Only the model's last fully-connected layers can be trained (the runtime's trained head;
//! see `runtime/FORMAT.md`, "Training plan"). In each, a plan trains everything, the bias
//! only (TinyTL), chosen output channels' weight rows and the bias (a sparse update), or
//! nothing (gradients pass through). What is not trained stays in flash, so a plan's RAM is
//! the arena, plus per trained parameter the value, its gradient and the optimizer's
//! moments, plus the head's activations.

use anyhow::{Context, Result, bail, ensure};
use loam::Model;
use loam::format::LayerUpdate;
use loam::format::WeightStorage;
use loam::format::writer::{PlannedLayer, PlannedTraining, PlannedUpdate};
use loam::train::export::{HeadLayer, head_layers, layer_parameters};
use loam::train::{Loss, Optimizer, TrainConfig, Trainer};
use serde::Serialize;

/// The optimizer a plan is sized for (its moments are part of the training RAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanOptimizer {
    /// Adam: two moments per parameter.
    Adam,
    /// SGD with momentum: one.
    Momentum,
    /// Plain SGD: none.
    Sgd,
}

impl PlanOptimizer {
    /// A runtime optimizer with these moments (the rates do not change the RAM).
    pub fn optimizer(self) -> Optimizer {
        match self {
            PlanOptimizer::Adam => Optimizer::adam(1e-3),
            PlanOptimizer::Momentum => Optimizer::sgd(1e-2, 0.9),
            PlanOptimizer::Sgd => Optimizer::sgd(1e-2, 0.0),
        }
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            PlanOptimizer::Adam => "Adam",
            PlanOptimizer::Momentum => "SGD with momentum",
            PlanOptimizer::Sgd => "SGD",
        }
    }

    fn moments(self) -> usize {
        self.optimizer().moments()
    }
}

/// How the device holds the weights it trains (`--train-weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainWeights {
    /// `f32`, dequantized from the file.
    F32,
    /// int8 on the layer's own scales.
    Int8,
}

impl TrainWeights {
    /// The format's name for it.
    pub fn storage(self) -> WeightStorage {
        match self {
            TrainWeights::F32 => WeightStorage::F32,
            TrainWeights::Int8 => WeightStorage::Int8,
        }
    }
}

/// Parses a RAM size: `65536`, `64K`, `64KiB`, `64KB` (all 65,536 bytes: memory sizes are
/// binary on every datasheet this is for), `1.5MiB`.
pub fn parse_ram(text: &str) -> Result<usize> {
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .with_context(|| format!("`{text}` is not a size in bytes (e.g. 65536, 64KiB, 1MiB)"))?;
    usize::try_from(bytes).context("the size does not fit this machine's address space")
}

/// The model's trainable head, with each layer's name; an error saying why when there is
/// none.
pub fn head(model: &Model<'_>) -> Result<Vec<(HeadLayer, String)>> {
    let layers = head_layers(model);
    ensure!(
        !layers.is_empty(),
        "the model does not end in a fully-connected layer (after which only softmax, \
         quantize, dequantize or reshape may follow): there is nothing on-device training can update"
    );
    Ok(layers
        .into_iter()
        .map(|l| (l, model.op(l.op).map_or("?", |o| o.name).to_string()))
        .collect())
}

/// Parses `--trainable`: `last:N` (the last N fully-connected layers in full) or a
/// comma-separated list of `LAYER[:HOW]`, where `LAYER` is an op name (as `loam inspect`
/// prints it) or index and `HOW` is `full` (the default), `bias`, or a share of the output
/// channels (`0.25` or `25%`: the rows with the largest weights, and the bias). Head layers
/// after the first named one that are not named pass gradients through, untrained.
pub fn parse_trainable(model: &Model<'_>, text: &str) -> Result<Vec<PlannedLayer>> {
    let head = head(model)?;
    let names = || {
        head.iter()
            .map(|(l, n)| format!("`{n}` (op {})", l.op))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = text.strip_prefix("last:") {
        let n: usize = n
            .trim()
            .parse()
            .with_context(|| format!("`{text}`: expected `last:N` with N a number"))?;
        ensure!(
            (1..=head.len()).contains(&n),
            "`{text}`: the model has {} fully-connected layer(s) training can reach: {}",
            head.len(),
            names()
        );
        return Ok(head[head.len() - n..]
            .iter()
            .map(|(l, _)| PlannedLayer {
                op: l.op,
                update: PlannedUpdate::Full,
            })
            .collect());
    }
    let mut chosen: Vec<Option<PlannedUpdate>> = vec![None; head.len()];
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (layer, how) = match item.rsplit_once(':') {
            Some((layer, how)) if !layer.is_empty() => (layer, how),
            _ => (item, "full"),
        };
        let position = head
            .iter()
            .position(|(l, name)| name == layer || layer.parse() == Ok(l.op))
            .with_context(|| {
                format!(
                    "`{layer}` is not one of the layers on-device training reaches (the \
                     model's last fully-connected layers): {}",
                    names()
                )
            })?;
        ensure!(
            chosen[position].is_none(),
            "`{layer}` is named twice in `{text}`"
        );
        let (info, _) = &head[position];
        let update = match how {
            "full" => PlannedUpdate::Full,
            "bias" => PlannedUpdate::Bias,
            share => {
                let share = match share.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
                    None => share.parse::<f64>(),
                }
                .ok()
                .filter(|s| *s > 0.0 && *s <= 1.0)
                .with_context(|| {
                    format!(
                        "`{item}`: after the layer comes `full`, `bias`, or a share of its \
                         output channels in (0, 1] such as `0.25` or `25%`"
                    )
                })?;
                let rows = ((share * info.outputs as f64).ceil() as usize).clamp(1, info.outputs);
                rows_update(model, info, rows)?
            }
        };
        ensure!(
            info.has_bias || matches!(update, PlannedUpdate::Full),
            "`{layer}` has no bias tensor, so only `full` can train it"
        );
        chosen[position] = Some(update);
    }
    let first = chosen
        .iter()
        .position(Option::is_some)
        .with_context(|| format!("`--trainable {text}` names no layer"))?;
    Ok(head[first..]
        .iter()
        .zip(&chosen[first..])
        .map(|((l, _), update)| PlannedLayer {
            op: l.op,
            update: update.clone().unwrap_or(PlannedUpdate::Frozen),
        })
        .collect())
}

/// `rows` of a layer's weight rows: those with the largest L2 norm (the channels the layer
/// leans on most), in channel order; all of them is a full update.
fn rows_update(model: &Model<'_>, layer: &HeadLayer, rows: usize) -> Result<PlannedUpdate> {
    if rows >= layer.outputs {
        return Ok(PlannedUpdate::Full);
    }
    if rows == 0 {
        return Ok(PlannedUpdate::Bias);
    }
    let (weights, _) = layer_parameters(model, layer.op).map_err(anyhow::Error::msg)?;
    let norm = |o: usize| -> f64 {
        weights[o * layer.inputs..][..layer.inputs]
            .iter()
            .map(|&w| f64::from(w) * f64::from(w))
            .sum()
    };
    let mut order: Vec<usize> = (0..layer.outputs).collect();
    // Largest first; ties to the lower channel so the choice is the same everywhere.
    order.sort_by(|&a, &b| norm(b).total_cmp(&norm(a)).then(a.cmp(&b)));
    let mut channels: Vec<u16> = order[..rows].iter().map(|&o| o as u16).collect();
    channels.sort_unstable();
    Ok(PlannedUpdate::Channels(channels))
}

/// What a plan trains in one layer: weight rows and whether the bias.
#[derive(Debug, Clone, Copy, Default)]
struct Trained {
    rows: usize,
    bias: bool,
}

/// Bytes of training state (beyond the arena) a plan over `layers` of the head needs: the
/// same sum as `Trainer::state_len` (trained weights, packed four to a word when int8, and
/// biases; a gradient and the optimizer's moments for each; each layer's input and output;
/// the head's output; two gradient vectors as wide as the widest layer). `plan_report`
/// checks the two agree.
fn state_bytes(
    layers: &[(HeadLayer, String)],
    trained: &[Trained],
    moments: usize,
    weights: WeightStorage,
) -> usize {
    let mut slots = 0;
    let mut params = 0;
    for ((l, _), t) in layers.iter().zip(trained) {
        let w = t.rows * l.inputs;
        let b = if t.bias { l.outputs } else { 0 };
        slots += b + match weights {
            WeightStorage::Int8 => w.div_ceil(4),
            _ => w,
        };
        params += w + b;
    }
    let activations: usize = layers
        .iter()
        .map(|(l, _)| l.inputs + l.outputs)
        .sum::<usize>()
        + layers.last().map_or(0, |(l, _)| l.outputs);
    let widest = layers
        .iter()
        .map(|(l, _)| l.inputs.max(l.outputs))
        .max()
        .unwrap_or(0);
    4 * (slots + params * (1 + moments) + activations + 2 * widest)
}

/// The plan that trains the most parameters within `budget` bytes of RAM (the inference
/// arena included), sized for `optimizer` and holding weights as `weights` says. For each
/// depth of the head it fills the budget in this order: the biases (last layer first;
/// cheap, and what TinyTL shows moves a model most per byte), then the last layer's weight
/// rows, then the earlier layers', largest rows first; the depth that trains most wins (the
/// shallower on a tie).
pub fn fit_ram(
    model: &Model<'_>,
    budget: usize,
    optimizer: PlanOptimizer,
    weights: WeightStorage,
) -> Result<PlannedTraining> {
    let head = head(model)?;
    let arena = model.arena_size();
    let moments = optimizer.moments();
    let per_bias = 4 * (2 + moments);
    let per_weight = 4 * (1 + moments)
        + match weights {
            WeightStorage::Int8 => 1,
            _ => 4,
        };
    let mut best: Option<(usize, Vec<PlannedLayer>)> = None;
    let mut smallest = usize::MAX;
    for depth in 1..=head.len() {
        let layers = &head[head.len() - depth..];
        let fixed = arena + state_bytes(layers, &[], moments, weights);
        smallest = smallest.min(fixed + per_bias * layers[depth - 1].0.outputs);
        // Packing int8 weights four to a word rounds each layer up by at most 3 bytes.
        let slack = if weights == WeightStorage::Int8 {
            3 * depth
        } else {
            0
        };
        let Some(mut left) = budget.checked_sub(fixed + slack) else {
            continue;
        };
        let mut trained = vec![Trained::default(); depth];
        for (t, (l, _)) in trained.iter_mut().zip(layers).rev() {
            if l.has_bias && left >= per_bias * l.outputs {
                t.bias = true;
                left -= per_bias * l.outputs;
            }
        }
        for (t, (l, _)) in trained.iter_mut().zip(layers).rev() {
            let row = per_weight * l.inputs.max(1);
            let affordable = (left / row).min(l.outputs);
            // A layer without a bias tensor is trained in full or not at all.
            if l.has_bias || affordable == l.outputs {
                t.rows = affordable;
                left -= affordable * row;
            }
        }
        if !trained[0].bias && trained[0].rows == 0 {
            // The deepest layer would only pass gradients: a shallower depth does the same
            // in less RAM.
            continue;
        }
        let count: usize = trained
            .iter()
            .zip(layers)
            .map(|(t, (l, _))| t.rows * l.inputs + if t.bias { l.outputs } else { 0 })
            .sum();
        if best.as_ref().is_some_and(|(c, _)| *c >= count) {
            continue;
        }
        let plan = trained
            .iter()
            .zip(layers)
            .map(|(t, (l, _))| {
                let update = match (t.bias, t.rows) {
                    (_, r) if r == l.outputs => PlannedUpdate::Full,
                    (false, _) => PlannedUpdate::Frozen,
                    (true, r) => rows_update(model, l, r)?,
                };
                Ok(PlannedLayer { op: l.op, update })
            })
            .collect::<Result<Vec<_>>>()?;
        best = Some((count, plan));
    }
    match best {
        Some((_, layers)) => Ok(PlannedTraining { layers, weights }),
        None => bail!(
            "{budget} bytes of RAM cannot hold training: the model's arena alone is {arena} \
             bytes, and the smallest plan (the last layer's bias) needs {smallest} bytes in all"
        ),
    }
}

/// One layer of a plan, for people and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    /// Op position.
    pub op: usize,
    /// Op name.
    pub name: String,
    /// `full`, `bias`, `N of M channels` or `frozen`.
    pub update: String,
    /// Parameters trained.
    pub params: usize,
    /// Parameters of the layer.
    pub layer_params: usize,
}

/// What a model's training plan trains and the RAM it needs, beside a full update of the
/// same layers.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The optimizer the figures are for.
    pub optimizer: PlanOptimizer,
    /// How trained weights are held in RAM: `f32` or `int8`.
    pub weights: String,
    /// Per layer, in graph order.
    pub layers: Vec<PlanRow>,
    /// Parameters trained.
    pub params: usize,
    /// Training state bytes (beyond the arena).
    pub state_bytes: usize,
    /// The inference arena, which training uses too.
    pub arena_bytes: usize,
    /// Arena plus state: the RAM a device needs to train with this plan.
    pub total_bytes: usize,
    /// State bytes of training every parameter of the same layers.
    pub full_state_bytes: usize,
    /// Arena plus that.
    pub full_total_bytes: usize,
}

/// The report for `model`'s stored plan; `None` when it has none.
pub fn plan_report(model: &Model<'_>, optimizer: PlanOptimizer) -> Result<Option<PlanReport>> {
    let Some(plan) = model.training_plan() else {
        return Ok(None);
    };
    let head = head(model)?;
    let config = |layers| TrainConfig {
        layers,
        loss: Loss::CrossEntropy,
        optimizer: optimizer.optimizer(),
        clip_norm: None,
        accumulate: 1,
    };
    let state = Trainer::state_len(model, &config(0)).map_err(anyhow::Error::msg)?;
    let full = Trainer::state_len(model, &config(plan.len())).map_err(anyhow::Error::msg)?;
    let mut layers = Vec::new();
    let mut trained = Vec::new();
    for i in 0..plan.len() {
        let record = plan.layer(i).context("a plan record does not decode")?;
        let (info, name) = head
            .iter()
            .find(|(l, _)| l.op == record.op as usize)
            .context("the plan names a layer outside the head")?;
        let (update, t) = match record.update {
            LayerUpdate::Full => (
                "full".to_string(),
                Trained {
                    rows: info.outputs,
                    bias: true,
                },
            ),
            LayerUpdate::Bias => (
                "bias".to_string(),
                Trained {
                    rows: 0,
                    bias: true,
                },
            ),
            LayerUpdate::Frozen => ("frozen".to_string(), Trained::default()),
            LayerUpdate::Channels(c) => (
                format!("{} of {} channels", c.len(), info.outputs),
                Trained {
                    rows: c.len(),
                    bias: true,
                },
            ),
        };
        let params = t.rows * info.inputs + if t.bias { info.outputs } else { 0 };
        trained.push(t);
        layers.push(PlanRow {
            op: info.op,
            name: name.clone(),
            update,
            params,
            layer_params: info.outputs * (info.inputs + 1),
        });
    }
    let params: usize = layers.iter().map(|l| l.params).sum();
    let planned = &head[head.len() - plan.len()..];
    ensure!(
        4 * state == state_bytes(planned, &trained, optimizer.moments(), plan.weights),
        "the tools' training RAM formula disagrees with the runtime's ({} bytes)",
        4 * state
    );
    let arena = model.arena_size();
    Ok(Some(PlanReport {
        optimizer,
        weights: match plan.weights {
            WeightStorage::Int8 => "int8",
            _ => "f32",
        }
        .to_string(),
        layers,
        params,
        state_bytes: 4 * state,
        arena_bytes: arena,
        total_bytes: arena + 4 * state,
        full_state_bytes: 4 * full,
        full_total_bytes: arena + 4 * full,
    }))
}

impl PlanReport {
    /// The table `loam export` and `loam inspect` print.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "training plan ({} weights in RAM; RAM for {}):\n  {:<24} {:>4} {:<22} {:>10}\n",
            self.weights,
            self.optimizer.label(),
            "layer",
            "op",
            "update",
            "params"
        );
        for l in &self.layers {
            out += &format!(
                "  {:<24} {:>4} {:<22} {:>10}\n",
                l.name,
                l.op,
                l.update,
                format!("{}/{}", l.params, l.layer_params)
            );
        }
        out += &format!(
            "  training RAM: {} B state + {} B arena = {} B; a full update of these layers \
             needs {} B ({:.2}x)\n",
            self.state_bytes,
            self.arena_bytes,
            self.total_bytes,
            self.full_total_bytes,
            self.full_total_bytes as f64 / self.total_bytes.max(1) as f64
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_file::ModelFile;

    fn digits() -> ModelFile {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/model.loam");
        ModelFile::open(&path).unwrap()
    }

    #[test]
    fn ram_sizes_are_binary_as_on_datasheets() {
        for (text, bytes) in [
            ("65536", 65_536),
            ("64K", 65_536),
            ("64KiB", 65_536),
            ("64KB", 65_536),
            ("1.5MiB", 1_572_864),
        ] {
            assert_eq!(parse_ram(text).unwrap(), bytes, "{text}");
        }
        assert!(parse_ram("some").is_err());
    }

    /// Over a sweep of budgets, every fitted plan fits (by the runtime's own state count,
    /// which `plan_report` checks the planner's formula against), and more RAM never trains
    /// fewer parameters.
    #[test]
    fn fitted_plans_fit_and_grow_with_the_budget() {
        let file = digits();
        let model = file.model().unwrap();
        for (optimizer, weights) in [
            (PlanOptimizer::Adam, WeightStorage::F32),
            (PlanOptimizer::Sgd, WeightStorage::F32),
            (PlanOptimizer::Adam, WeightStorage::Int8),
        ] {
            let mut previous = 0;
            let mut depths = std::collections::BTreeSet::new();
            for budget in (2_500..200_000).step_by(3_989) {
                let plan = fit_ram(&model, budget, optimizer, weights).unwrap();
                let bytes = loam::format::writer::with_training_plan(&model, Some(&plan)).unwrap();
                let planned = ModelFile::from_bytes("planned", &bytes).unwrap();
                let report = plan_report(&planned.model().unwrap(), optimizer)
                    .unwrap()
                    .unwrap();
                assert!(report.total_bytes <= budget, "{budget}: {report:?}");
                assert!(report.params >= previous, "{budget}: {report:?}");
                previous = report.params;
                depths.insert(plan.layers.len());
            }
            // Small budgets train part of the last layer, large ones reach the layer before.
            assert_eq!(
                depths.into_iter().collect::<Vec<_>>(),
                [1, 2],
                "{optimizer:?}"
            );
        }
        assert!(fit_ram(&model, 2_000, PlanOptimizer::Adam, WeightStorage::F32).is_err());
    }

    #[test]
    fn named_layers_shares_and_last_n_become_plans() {
        let file = digits();
        let model = file.model().unwrap();
        assert_eq!(
            parse_trainable(&model, "last:2").unwrap(),
            [
                PlannedLayer {
                    op: 5,
                    update: PlannedUpdate::Full
                },
                PlannedLayer {
                    op: 6,
                    update: PlannedUpdate::Full
                },
            ]
        );
        // Unnamed layers after the first named one pass gradients through.
        let plan = parse_trainable(&model, "dense7:25%").unwrap();
        assert_eq!(plan.len(), 2);
        let PlannedUpdate::Channels(rows) = &plan[0].update else {
            panic!("{plan:?}");
        };
        assert_eq!(rows.len(), 16);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(plan[1].update, PlannedUpdate::Frozen);
        assert_eq!(
            parse_trainable(&model, "6:bias").unwrap(),
            [PlannedLayer {
                op: 6,
                update: PlannedUpdate::Bias
            }]
        );
        for (spec, says) in [
            ("dense7,dense7:bias", "named twice"),
            ("conv3", "`dense7` (op 5)"),
            ("dense8:0", "a share of its output channels"),
            ("", "names no layer"),
        ] {
            let error = parse_trainable(&model, spec).unwrap_err().to_string();
            assert!(error.contains(says), "{spec}: {error}");
        }
    }
}
