//! `loam finetune`: the runtime's on-device trainer ([`loam::train::Trainer`]) run on the host
//! over NPY data, with the same arithmetic, so what it reports (accuracy gained, RAM needed) is
//! what a board will see, and its checkpoint file is the one a board would write.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use loam::store::{ModelId, file as checkpoint_file};
use loam::train::{Loss, Optimizer, Target, TrainConfig, Trainer};
use loam::{DType, Model};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::model_file::ModelFile;
use crate::npy::{Array, Data};
use crate::run::split_samples;

/// How to fine-tune.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// Fully-connected layers trained in full, counted from the end; 0 for the model's stored
    /// training plan.
    pub layers: usize,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Gradient norm clip.
    pub clip_norm: Option<f32>,
    /// Samples per update.
    pub batch: u32,
    /// Passes over the training samples.
    pub epochs: usize,
    /// Share of the samples held out to measure accuracy before and after (0 to keep none).
    pub holdout: f32,
    /// Seeds the hold-out split and the shuffling.
    pub seed: u64,
    /// Checkpoint file to resume from (if it exists) and to write at the end.
    pub checkpoint: Option<PathBuf>,
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epoch {
    /// Mean training loss.
    pub loss: f32,
    /// Accuracy (classification) or mean squared error (regression) on the held-out samples.
    pub holdout_metric: Option<f32>,
}

/// What a fine-tune did.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    /// Whether the targets were class labels (metric: accuracy) or vectors (metric: MSE).
    pub classification: bool,
    /// Held-out metric with the model's own weights (or the resumed checkpoint's).
    pub before: Option<f32>,
    /// Per epoch.
    pub epochs: Vec<Epoch>,
    /// Training samples and held-out samples.
    pub samples: (usize, usize),
    /// Bytes of the model's arena.
    pub arena_bytes: usize,
    /// Bytes of training state (parameters, moments, gradients, head activations).
    pub state_bytes: usize,
    /// Estimated bytes a full update of every weight would need: all weights in f32 with
    /// their gradients and moments, and every activation kept in f32 for the backward pass.
    pub full_update_bytes: usize,
    /// Checkpoint payload bytes.
    pub checkpoint_bytes: usize,
    /// Updates applied in total (including those of a resumed checkpoint).
    pub updates: u32,
    /// Whether training resumed from a checkpoint.
    pub resumed: bool,
}

impl FinetuneReport {
    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let metric = |m: Option<f32>| match (m, self.classification) {
            (Some(a), true) => format!("accuracy {:.1}%", 100.0 * a),
            (Some(e), false) => format!("MSE {e:.5}"),
            (None, _) => "no hold-out".into(),
        };
        let mut out = format!(
            "{} training samples, {} held out{}\n",
            self.samples.0,
            self.samples.1,
            if self.resumed {
                " (resumed from checkpoint)"
            } else {
                ""
            }
        );
        out += &format!("before: {}\n", metric(self.before));
        for (i, e) in self.epochs.iter().enumerate() {
            out += &format!(
                "epoch {:>3}: loss {:.4}, {}\n",
                i + 1,
                e.loss,
                metric(e.holdout_metric)
            );
        }
        out += &format!(
            "RAM: arena {} B + training state {} B = {} B (a full update would need about {} B, {:.1}x more)\n",
            self.arena_bytes,
            self.state_bytes,
            self.arena_bytes + self.state_bytes,
            self.full_update_bytes,
            self.full_update_bytes as f64 / (self.arena_bytes + self.state_bytes).max(1) as f64
        );
        out += &format!(
            "checkpoint: {} B payload, {} updates\n",
            self.checkpoint_bytes, self.updates
        );
        out
    }
}

/// Targets of the samples: class indices or per-sample vectors.
enum Targets {
    Classes(Vec<usize>),
    Values { width: usize, values: Vec<f32> },
}

impl Targets {
    fn read(labels: &Array, count: usize) -> Result<Targets> {
        ensure!(
            labels.shape.first() == Some(&count),
            "the labels hold {:?} but there are {count} samples",
            labels.shape
        );
        Ok(match &labels.data {
            Data::I32(v) if labels.shape.len() == 1 => Targets::Classes(
                v.iter()
                    .map(|&c| usize::try_from(c).context("a class label is negative"))
                    .collect::<Result<_>>()?,
            ),
            Data::I8(v) if labels.shape.len() == 1 => Targets::Classes(
                v.iter()
                    .map(|&c| usize::try_from(c).context("a class label is negative"))
                    .collect::<Result<_>>()?,
            ),
            Data::F32(v) => Targets::Values {
                width: v.len() / count.max(1),
                values: v.clone(),
            },
            other => bail!(
                "labels must be integer class indices [N] or float targets [N, ...], not {} {:?}",
                other.dtype(),
                labels.shape
            ),
        })
    }

    fn get(&self, i: usize) -> Target<'_> {
        match self {
            Targets::Classes(c) => Target::Class(c[i]),
            Targets::Values { width, values } => {
                Target::Values(&values[i * width..(i + 1) * width])
            }
        }
    }
}

/// Bytes an estimate of a full update of `model` needs (see [`FinetuneReport`]).
fn full_update_bytes(model: &Model<'_>, moments: usize) -> usize {
    let mut weights = 0;
    let mut activations = 0;
    for i in 0..model.tensor_count() {
        let Some(t) = model.tensor(i) else { continue };
        let elements = t.shape.elements().unwrap_or(0);
        if t.is_constant() {
            if matches!(t.dtype, DType::F32 | DType::I8) {
                weights += elements;
            }
        } else {
            activations += elements;
        }
    }
    4 * (weights * (2 + moments) + 2 * activations)
}

fn input_bytes(array: &Array) -> Vec<u8> {
    match &array.data {
        Data::F32(v) => bytemuck::cast_slice(v).to_vec(),
        Data::I8(v) => bytemuck::cast_slice(v).to_vec(),
        Data::I16(v) => bytemuck::cast_slice(v).to_vec(),
        Data::I32(v) => bytemuck::cast_slice(v).to_vec(),
    }
}

/// Fine-tunes `file`'s last layers on `inputs` (one array, samples along the first
/// dimension) and `labels`.
pub fn finetune(
    file: &ModelFile,
    inputs: &Array,
    labels: &Array,
    options: &FinetuneOptions,
) -> Result<FinetuneReport> {
    let model = file.model()?;
    ensure!(
        model.inputs().len() == 1,
        "{} has {} inputs; fine-tuning takes models with one",
        file.path.display(),
        model.inputs().len()
    );
    let samples: Vec<Vec<u8>> = split_samples(&model, std::slice::from_ref(inputs))?
        .into_iter()
        .map(|s| input_bytes(&s[0]))
        .collect();
    let targets = Targets::read(labels, samples.len())?;
    let classification = matches!(targets, Targets::Classes(_));
    let config = TrainConfig {
        layers: options.layers,
        loss: if classification {
            Loss::CrossEntropy
        } else {
            Loss::MeanSquaredError
        },
        optimizer: options.optimizer,
        clip_norm: options.clip_norm,
        accumulate: options.batch,
    };
    let state_len = Trainer::state_len(&model, &config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.path.display()))?;
    let mut arena = vec![0u8; model.arena_size() + loam::format::ARENA_ALIGN];
    let mut state = vec![0f32; state_len];
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.path.display()))?;

    let id = ModelId::of(&model);
    let mut resumed = false;
    if let Some(path) = &options.checkpoint
        && let Some((_, payload)) = checkpoint_file::load(path, id)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    {
        trainer.restore(&payload).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (was it written with other --layers or --optimizer?)",
                path.display()
            )
        })?;
        resumed = true;
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.shuffle(&mut rng);
    let held = ((samples.len() as f32 * options.holdout.clamp(0.0, 0.9)) as usize)
        .min(samples.len().saturating_sub(1));
    let (holdout, mut train) = (order[..held].to_vec(), order[held..].to_vec());
    ensure!(!train.is_empty(), "no samples to train on");

    let evaluate = |trainer: &mut Trainer<'_, '_, '_>| -> Result<Option<f32>> {
        if holdout.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0f64;
        for &i in &holdout {
            trainer
                .interpreter_mut()
                .input_bytes_mut(0)?
                .copy_from_slice(&samples[i]);
            let output = trainer
                .predict_filled()
                .map_err(|e| anyhow::anyhow!("sample {i}: {e}"))?;
            total += match targets.get(i) {
                Target::Class(c) => {
                    let best = output
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(k, _)| k);
                    f64::from(u8::from(best == c))
                }
                Target::Values(v) => {
                    output
                        .iter()
                        .zip(v)
                        .map(|(a, b)| f64::from((a - b) * (a - b)))
                        .sum::<f64>()
                        / v.len().max(1) as f64
                }
            };
        }
        Ok(Some((total / holdout.len() as f64) as f32))
    };

    let before = evaluate(&mut trainer)?;
    let mut epochs = Vec::with_capacity(options.epochs);
    for _ in 0..options.epochs {
        train.shuffle(&mut rng);
        let mut loss = 0.0f64;
        for &i in &train {
            trainer
                .interpreter_mut()
                .input_bytes_mut(0)?
                .copy_from_slice(&samples[i]);
            loss += f64::from(
                trainer
                    .step_filled(targets.get(i))
                    .map_err(|e| anyhow::anyhow!("sample {i}: {e}"))?,
            );
        }
        epochs.push(Epoch {
            loss: (loss / train.len() as f64) as f32,
            holdout_metric: evaluate(&mut trainer)?,
        });
    }

    let checkpoint_bytes = trainer.checkpoint_len();
    if let Some(path) = &options.checkpoint {
        save_checkpoint(path, id, &mut trainer)?;
    }
    Ok(FinetuneReport {
        classification,
        before,
        epochs,
        samples: (train.len(), holdout.len()),
        arena_bytes: model.arena_size(),
        state_bytes: 4 * state_len,
        full_update_bytes: full_update_bytes(&model, config.optimizer.moments()),
        checkpoint_bytes,
        updates: trainer.updates(),
        resumed,
    })
}

fn save_checkpoint(path: &Path, id: ModelId, trainer: &mut Trainer<'_, '_, '_>) -> Result<()> {
    checkpoint_file::save(path, id, &trainer.checkpoint())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Records a fine-tuning session for a board to replay ([`loam::train::replay`]): `samples`
/// (float, preprocessed as the model expects; quantized here with the model's input
/// parameters), their `labels`, the first `train` of them trained on for `epochs` passes with
/// `config`, the rest held out. The host runs the session once with the runtime's own trainer
/// and stores its figures in the recording, so a board that replays it must reproduce them
/// bit for bit.
pub fn record(
    file: &ModelFile,
    samples: &[f32],
    labels: &[u8],
    train: usize,
    epochs: u16,
    config: &TrainConfig,
) -> Result<(Vec<u8>, loam::train::replay::ReplayReport)> {
    use loam::train::replay::{Expected, Recording, replay, write};
    let model = file.model()?;
    let input = crate::run::io_records(&model, false)?
        .into_iter()
        .next()
        .context("the model has no input")?;
    let features = input.shape.elements().unwrap_or(0);
    let loam::Quantization::PerTensor { scale, zero_point } = input.quantization else {
        bail!(
            "{}: recordings are for int8 models with a per-tensor quantized input",
            file.path.display()
        );
    };
    ensure!(
        input.dtype == DType::I8 && features > 0 && samples.len() == labels.len() * features,
        "{} samples of {features} values do not match {} labels",
        samples.len(),
        labels.len()
    );
    ensure!(
        train > 0 && train < labels.len() && labels.len() <= usize::from(u16::MAX),
        "{train} training samples of {}: both parts need samples",
        labels.len()
    );
    let q = loam::quant::QuantParams { scale, zero_point };
    let quantized: Vec<i8> = samples
        .iter()
        .map(|&x| q.quantize(x, -128, 127) as i8)
        .collect();
    let outputs = crate::run::io_records(&model, true)?
        .first()
        .and_then(|t| t.shape.elements())
        .unwrap_or(0);
    let narrow = |n: usize, what: &str| u16::try_from(n).with_context(|| format!("{what} {n}"));
    let bytes = |expected| -> Result<Vec<u8>> {
        Ok(write(
            narrow(features, "features")?,
            narrow(outputs, "classes")?,
            narrow(train, "training samples")?,
            epochs,
            config,
            expected,
            &quantized,
            labels,
        ))
    };
    let draft = bytes(Expected {
        correct_before: 0,
        correct_after: 0,
        digest: 0,
    })?;
    let recording = Recording::parse(&draft).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state_len = Trainer::state_len(&model, config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut arena = vec![0u8; model.arena_size() + loam::format::ARENA_ALIGN];
    let mut state = vec![0.0f32; state_len];
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, recording.config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = replay(&mut trainer, &recording, &mut || 0)
        .map_err(|e| anyhow::anyhow!("replaying the session: {e}"))?;
    let expected = Expected {
        correct_before: report.correct_before,
        correct_after: report.correct_after,
        digest: report.digest,
    };
    Ok((bytes(expected)?, report))
}
