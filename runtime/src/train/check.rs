//! A self-checking fine-tune, the host/device parity test: a fixed number of training steps
//! on seeded samples, whose checkpoint bytes' CRC-32 must equal the one an x86_64 host
//! recorded in the model. The unit tests, the qemu-user runs and the Cortex-M firmware all run
//! [`check_model`], so every target proves it trains to the same bits.

use super::{Loss, Optimizer, Target, TrainConfig, TrainError, Trainer};
use crate::format::Model;
use crate::selftest::SplitMix64;
use crate::store::payload_crc;
use crate::tensor::DType;

/// Name of the constant recording a fine-tune check: seed (high, low 16 bits), steps, and the
/// checkpoint digest (high, low 16 bits), each an exactly representable `f32`.
pub const FINETUNE_CONSTANT: &str = "loam.finetune";

/// How the check trains: the last two layers, cross-entropy, Adam (learning rate 0.03),
/// gradients clipped to norm 5, batches of 4.
pub const CHECK_CONFIG: TrainConfig = TrainConfig {
    layers: 2,
    loss: Loss::CrossEntropy,
    optimizer: Optimizer::adam(0.03),
    clip_norm: Some(5.0),
    accumulate: 4,
};

/// What a fine-tune check computed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FinetuneCheck {
    /// CRC-32 of the checkpoint payload after training.
    pub digest: u32,
    /// The digest the model records.
    pub expected: u32,
    /// Samples trained on.
    pub steps: u32,
    /// Optimizer updates applied.
    pub updates: u32,
    /// Mean loss over the first tenth of the steps.
    pub first_loss: f32,
    /// Mean loss over the last tenth.
    pub last_loss: f32,
}

impl FinetuneCheck {
    /// Whether this target trained to the recorded bits.
    pub fn passed(&self) -> bool {
        self.digest == self.expected
    }
}

/// [`CHECK_CONFIG`], training what the model's stored plan says when it has one.
pub fn check_config(model: &Model<'_>) -> TrainConfig {
    TrainConfig {
        layers: if model.training_plan().is_some() {
            0
        } else {
            CHECK_CONFIG.layers
        },
        ..CHECK_CONFIG
    }
}

/// Trains `model` (its last two layers, or its stored plan, with [`check_config`]) for
/// `steps` seeded samples and
/// returns the checkpoint digest and the loss at the start and the end. A sample's class is
/// the segment of its input (one per output) with the largest sum, so there is something to
/// learn. `state` needs [`Trainer::state_len`] values.
pub fn train_seeded(
    model: &Model<'_>,
    arena: &mut [u8],
    state: &mut [f32],
    seed: u64,
    steps: u32,
) -> Result<FinetuneCheck, TrainError> {
    let mut trainer = Trainer::new(model, arena, state, check_config(model))?;
    train_seeded_into(&mut trainer, seed, steps)
}

/// [`train_seeded`] with a trainer the caller made (any configuration), which keeps what it
/// learned.
pub fn train_seeded_into(
    trainer: &mut Trainer<'_, '_, '_>,
    seed: u64,
    steps: u32,
) -> Result<FinetuneCheck, TrainError> {
    let classes = trainer.head.last().outputs;
    let mut rng = SplitMix64(seed);
    let window = (steps / 10).max(1);
    let (mut first, mut last) = (0.0f32, 0.0f32);
    for step in 0..steps {
        let interpreter = trainer.interpreter_mut();
        let dtype = interpreter.input_tensor(0)?.dtype;
        let bytes = interpreter.input_bytes_mut(0)?;
        let segment = (bytes.len() / classes.max(1)).max(1);
        let mut sums = [0i32; 64];
        match dtype {
            DType::I8 => {
                for (i, b) in bytes.iter_mut().enumerate() {
                    let v = rng.next_u64() as i8;
                    *b = v as u8;
                    sums[(i / segment).min(63)] += i32::from(v);
                }
            }
            DType::F32 => {
                for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                    let v = (rng.next_u64() >> 56) as i8;
                    chunk.copy_from_slice(&(f32::from(v) / 128.0).to_le_bytes());
                    sums[(i * 4 / segment).min(63)] += i32::from(v);
                }
            }
            _ => {
                return Err(TrainError::NoTrainableHead(
                    "the input is neither int8 nor f32",
                ));
            }
        }
        let class = (0..classes.min(64))
            .max_by_key(|&c| (sums[c], core::cmp::Reverse(c)))
            .unwrap_or(0);
        let loss = trainer.step_filled(Target::Class(class))?;
        if step < window {
            first += loss;
        }
        if step >= steps - window.min(steps) {
            last += loss;
        }
    }
    Ok(FinetuneCheck {
        digest: payload_crc(&trainer.checkpoint()),
        expected: 0,
        steps,
        updates: trainer.updates(),
        first_loss: first / window as f32,
        last_loss: last / window as f32,
    })
}

/// The five values of a [`FINETUNE_CONSTANT`].
pub fn record_values(seed: u32, steps: u32, digest: u32) -> [f32; 5] {
    [
        (seed >> 16) as f32,
        (seed & 0xffff) as f32,
        steps as f32,
        (digest >> 16) as f32,
        (digest & 0xffff) as f32,
    ]
}

/// The `(seed, steps, digest)` a model records, if it does.
pub fn read_record(model: &Model<'_>) -> Option<(u32, u32, u32)> {
    let c = model.constant(FINETUNE_CONSTANT)?;
    let mut v = c.values();
    let mut word = |limit: f32| -> Option<u32> {
        let x = v.next()?;
        ((0.0..limit).contains(&x) && x == libm::floorf(x)).then_some(x as u32)
    };
    let (s1, s0) = (word(65536.0)?, word(65536.0)?);
    let steps = word(1e7)?;
    let (d1, d0) = (word(65536.0)?, word(65536.0)?);
    Some(((s1 << 16) | s0, steps, (d1 << 16) | d0))
}

/// Runs the fine-tune a model records and compares its checkpoint digest with the record.
/// Fails with [`TrainError::NoTrainableHead`] for a model without a record.
pub fn check_model(
    model: &Model<'_>,
    arena: &mut [u8],
    state: &mut [f32],
) -> Result<FinetuneCheck, TrainError> {
    let (seed, steps, expected) = read_record(model).ok_or(TrainError::NoTrainableHead(
        "the model records no fine-tune check",
    ))?;
    let check = train_seeded(model, arena, state, u64::from(seed), steps)?;
    Ok(FinetuneCheck { expected, ..check })
}

/// The network `runtime/tests/data/finetune-int8.loam` is written from: int8 input `[1, 16]`,
/// a frozen 16->24 ReLU layer, then the trained 24->16 ReLU and 16->4 layers and a softmax
/// (state: 1,984 `f32`s with [`CHECK_CONFIG`], small enough for a 16 KiB Cortex-M0).
/// `int8 = false` gives the same network in f32.
#[cfg(feature = "alloc")]
pub fn check_network(int8: bool) -> crate::format::writer::ModelBuilder {
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::ops::FusedActivation;
    use crate::quant::QuantParams;
    use alloc::vec::Vec;

    let mut rng = SplitMix64(0x5eed);
    let mut weights = |n: usize, fan_in: usize| -> Vec<f32> {
        let bound = libm::sqrtf(6.0 / fan_in as f32);
        (0..n)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound)
            .collect()
    };
    let mut b = ModelBuilder::new(if int8 {
        "finetune-int8"
    } else {
        "finetune-f32"
    });
    b.metadata.description = "a small MLP whose last two layers the fine-tune check trains".into();
    b.metadata.labels = (0..4).map(|i| alloc::format!("segment {i}")).collect();
    let layers = [(16, 24, true), (24, 16, true), (16, 4, false)];
    let x = if int8 {
        let q = QuantParams::from_range(-1.0, 1.0, -128, 127);
        b.tensor(
            "x",
            DType::I8,
            &[1, 16],
            QuantSpec::PerTensor {
                scale: q.scale,
                zero_point: q.zero_point,
            },
        )
    } else {
        b.tensor("x", DType::F32, &[1, 16], QuantSpec::None)
    }
    .expect("valid input");
    b.input(x);
    let mut t = x;
    for (i, &(inputs, outputs, relu)) in layers.iter().enumerate() {
        let w = weights(inputs * outputs, inputs);
        let bias = weights(outputs, inputs * 8);
        let activation = if relu {
            FusedActivation::RELU
        } else {
            FusedActivation::NONE
        };
        let name = alloc::format!("fc{i}");
        t = if int8 {
            let range = if relu { (0.0, 4.0) } else { (-6.0, 6.0) };
            let q = QuantParams::from_range(range.0, range.1, -128, 127);
            b.fully_connected_i8(&name, t, &w, Some(&bias), q, activation)
        } else {
            b.fully_connected_f32(&name, t, &w, Some(&bias), activation)
        }
        .expect("valid layer");
    }
    let y = if int8 {
        b.softmax_i8("softmax", t, 1.0)
    } else {
        b.softmax_f32("softmax", t, 1.0)
    }
    .expect("valid softmax");
    b.output(y);
    b
}
