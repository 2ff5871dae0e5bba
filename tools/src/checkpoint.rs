//! `loam checkpoint diff|export`: what a device learned, brought home. A checkpoint (a file
//! `loam finetune` or a board wrote, or a dump of a board's two flash slots) is matched to its
//! model, its trained layers compared with the model's own, and written into a new `.loam`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use loam::store::{CheckpointHeader, ModelId, decode_image};
use loam::train::export::{LayerChange, patch_model};
use loam::train::{CheckpointShape, Loss, Optimizer, TrainConfig, Trainer, layers_for};

use crate::model_file::ModelFile;

/// A checkpoint applied to its model.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The checkpoint's header (sequence number, model id).
    pub header: CheckpointHeader,
    /// Updates the device applied.
    pub updates: u32,
    /// Each trained layer's name and change.
    pub layers: Vec<(String, LayerChange)>,
    /// The model with the trained parameters written in.
    pub patched: Vec<u8>,
}

/// Reads a checkpoint of `model` from `path`: a checkpoint file, or a dump of a flash region
/// holding two slots (the newest valid slot of this model wins, as on the board).
pub fn read(path: &Path, model: ModelId) -> Result<(CheckpointHeader, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let whole = decode_image(&bytes);
    let mut candidates = vec![whole];
    if bytes.len() % 2 == 0 {
        let (a, b) = bytes.split_at(bytes.len() / 2);
        candidates.push(decode_image(a));
        candidates.push(decode_image(b));
    }
    let mut best: Option<(CheckpointHeader, &[u8])> = None;
    let mut foreign = None;
    for (header, payload) in candidates.into_iter().flatten() {
        if header.model != model {
            foreign = Some(header.model);
            continue;
        }
        if best.is_none_or(|(b, _)| header.is_newer_than(&b)) {
            best = Some((header, payload));
        }
    }
    match (best, foreign, whole) {
        (Some((h, p)), _, _) => Ok((h, p.to_vec())),
        (None, Some(other), _) => bail!(
            "{} is a checkpoint of another model ({other}); this model is {model}",
            path.display()
        ),
        (None, None, Err(problem)) => bail!("{}: {problem}", path.display()),
        (None, None, Ok(_)) => unreachable!("a whole image of this model would have been taken"),
    }
}

/// Matches `checkpoint` to `file`'s model and writes its trained layers into a copy.
pub fn apply(file: &ModelFile, checkpoint: &Path) -> Result<Applied> {
    let model = file.model()?;
    let (header, payload) = read(checkpoint, ModelId::of(&model))?;
    let shape = CheckpointShape::read(&payload)
        .with_context(|| format!("{}: payload too short", checkpoint.display()))?;
    let layers = layers_for(&model, shape.params).with_context(|| {
        format!(
            "{}: {} trained parameters match neither the training plan nor a run of final fully-connected layers of {}",
            checkpoint.display(),
            shape.params,
            file.path.display()
        )
    })?;
    let optimizer = match shape.moments {
        0 => Optimizer::sgd(0.01, 0.0),
        1 => Optimizer::sgd(0.01, 0.9),
        2 => Optimizer::adam(0.001),
        n => bail!(
            "{}: {n} optimizer moments per parameter",
            checkpoint.display()
        ),
    };
    // The loss and rates do not matter: the trainer only holds the parameters.
    let config = TrainConfig {
        layers,
        loss: Loss::CrossEntropy,
        optimizer,
        clip_norm: None,
        accumulate: 1,
    };
    let mut arena = vec![0u8; model.arena_size() + loam::format::ARENA_ALIGN];
    let mut state = vec![0f32; Trainer::state_len(&model, &config).map_err(anyhow::Error::msg)?];
    let mut trainer =
        Trainer::new(&model, &mut arena, &mut state, config).map_err(anyhow::Error::msg)?;
    trainer
        .restore(&payload)
        .map_err(|e| anyhow::anyhow!("{}: {e}", checkpoint.display()))?;
    let (patched, changes) = patch_model(file.bytes(), trainer.trained_layers())
        .map_err(|e| anyhow::anyhow!("writing the trained layers into the model: {e}"))?;
    let layers = changes
        .into_iter()
        .map(|c| {
            let name = model.op(c.op).map_or("?", |o| o.name).to_string();
            (name, c)
        })
        .collect();
    Ok(Applied {
        header,
        updates: shape.updates,
        layers,
        patched,
    })
}

impl Applied {
    /// The per-layer table `loam checkpoint diff` prints.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "checkpoint #{} of model {}, {} updates\n{:<24} {:>8} {:>12} {:>10} {:>8} {:>14}\n",
            self.header.sequence,
            self.header.model,
            self.updates,
            "layer",
            "params",
            "max change",
            "relative",
            "moved",
            "int8 rounding"
        );
        for (name, c) in &self.layers {
            out += &format!(
                "{:<24} {:>8} {:>12.5} {:>9.2}% {:>7.1}% {:>14.5}\n",
                name,
                c.params,
                c.max_change,
                100.0 * c.relative_change,
                100.0 * c.moved,
                c.encoding_error
            );
        }
        out
    }
}
