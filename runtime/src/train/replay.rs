//! A user's own data, recorded, replayed through on-device training: the fine-tuning session
//! a device runs after deployment (accuracy of the frozen int8 model on the user's held-out
//! samples, training on the user's samples, accuracy after), packed with the figures the host
//! computed for it so a board proves it learned exactly what the laptop learned.
//!
//! The recording is one little-endian byte string, read in place from flash:
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `LMUS` |
//! | 4 | version `u16` (1) |
//! | 6 | features per sample `u16` |
//! | 8 | classes `u16` |
//! | 10 | training samples `u16` |
//! | 12 | held-out samples `u16` |
//! | 14 | epochs `u16` |
//! | 16 | samples per update `u16` |
//! | 18 | layers trained `u16` |
//! | 20 | Adam learning rate `f32` |
//! | 24 | expected correct before `u16` |
//! | 26 | expected correct after `u16` |
//! | 28 | expected checkpoint CRC-32 `u32` |
//! | 32 | samples, training then held-out, `features` int8 values each |
//! | … | labels, one `u8` per sample |

use super::{Loss, Optimizer, Target, TrainConfig, TrainError, Trainer};
use crate::store::payload_crc;

/// The magic bytes a recording starts with.
pub const MAGIC: [u8; 4] = *b"LMUS";
/// The format version written and read.
pub const VERSION: u16 = 1;
/// Bytes before the samples.
pub const HEADER_LEN: usize = 32;

/// What the host computed for a recording, which a device must reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Expected {
    /// Held-out samples the frozen int8 model classifies correctly.
    pub correct_before: u16,
    /// Held-out samples classified correctly after training.
    pub correct_after: u16,
    /// CRC-32 of the checkpoint payload after training.
    pub digest: u32,
}

/// A parsed recording, borrowing its samples.
#[derive(Debug, Clone, Copy)]
pub struct Recording<'a> {
    /// Values per sample.
    pub features: usize,
    /// Classes (the model's outputs).
    pub classes: usize,
    /// Samples trained on.
    pub train: usize,
    /// Samples held out to measure accuracy.
    pub holdout: usize,
    /// Passes over the training samples.
    pub epochs: usize,
    /// The training configuration.
    pub config: TrainConfig,
    /// The host's figures.
    pub expected: Expected,
    samples: &'a [u8],
    labels: &'a [u8],
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, TrainError> {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(TrainError::BadRecording("truncated header"))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, TrainError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(TrainError::BadRecording("truncated header"))
}

impl<'a> Recording<'a> {
    /// Reads a recording, checking every length; never panics on any bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Recording<'a>, TrainError> {
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(TrainError::BadRecording("not a recording (magic)"));
        }
        if u16_at(bytes, 4)? != VERSION {
            return Err(TrainError::BadRecording("unsupported version"));
        }
        let field = |at: usize| u16_at(bytes, at).map(usize::from);
        let (features, classes, train, holdout) = (field(6)?, field(8)?, field(10)?, field(12)?);
        let (epochs, accumulate, layers) = (field(14)?, field(16)?, field(18)?);
        let learning_rate = f32::from_bits(u32_at(bytes, 20)?);
        if features == 0 || classes == 0 || train == 0 || holdout == 0 || epochs == 0 {
            return Err(TrainError::BadRecording("a count is zero"));
        }
        let expected = Expected {
            correct_before: u16_at(bytes, 24)?,
            correct_after: u16_at(bytes, 26)?,
            digest: u32_at(bytes, 28)?,
        };
        let count = train + holdout;
        // At most 2^17 samples of 2^16 values: no overflow on 32-bit targets.
        let samples_end = HEADER_LEN + count * features;
        let (Some(samples), Some(labels)) = (
            bytes.get(HEADER_LEN..samples_end),
            bytes.get(samples_end..samples_end + count),
        ) else {
            return Err(TrainError::BadRecording("shorter than its counts say"));
        };
        if bytes.len() != samples_end + count {
            return Err(TrainError::BadRecording("longer than its counts say"));
        }
        if labels.iter().any(|&l| usize::from(l) >= classes) {
            return Err(TrainError::BadRecording("a label is not a class"));
        }
        let config = TrainConfig {
            layers,
            loss: Loss::CrossEntropy,
            optimizer: Optimizer::adam(learning_rate),
            clip_norm: None,
            accumulate: u32::try_from(accumulate).unwrap_or(u32::MAX),
        };
        Ok(Recording {
            features,
            classes,
            train,
            holdout,
            epochs,
            config,
            expected,
            samples,
            labels,
        })
    }

    /// Sample `i` (training samples first, then held-out), as int8.
    pub fn sample(&self, i: usize) -> &'a [i8] {
        bytemuck::cast_slice(&self.samples[i * self.features..(i + 1) * self.features])
    }

    /// The class of sample `i`.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.labels[i])
    }
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayReport {
    /// Held-out samples the frozen int8 model got right.
    pub correct_before: u16,
    /// Held-out samples right after training.
    pub correct_after: u16,
    /// Held-out samples.
    pub holdout: u16,
    /// CRC-32 of the checkpoint payload after training.
    pub digest: u32,
    /// Training steps (one sample each).
    pub steps: u32,
    /// Mean loss of the first epoch.
    pub first_loss: f32,
    /// Mean loss of the last epoch.
    pub last_loss: f32,
    /// Sum over the steps of `clock()` differences (0 when the clock is a constant).
    pub step_ticks: u64,
}

impl ReplayReport {
    /// Whether this device reproduced the host's figures exactly.
    pub fn matches(&self, expected: &Expected) -> bool {
        self.digest == expected.digest
            && self.correct_before == expected.correct_before
            && self.correct_after == expected.correct_after
    }
}

fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// Replays `recording` with a fresh `trainer` (made with [`Recording::config`]): held-out
/// accuracy of the deployed int8 model, `epochs` passes of training over the training
/// samples in order, held-out accuracy of the trained model. The trainer keeps what it
/// learned (for a checkpoint). `clock` is read around every step (a cycle or tick counter on
/// a board) and the differences summed, wrapping.
pub fn replay(
    trainer: &mut Trainer<'_, '_, '_>,
    recording: &Recording<'_>,
    clock: &mut dyn FnMut() -> u32,
) -> Result<ReplayReport, TrainError> {
    if trainer.updates() != 0 {
        return Err(TrainError::InvalidConfig(
            "replay needs an untrained trainer",
        ));
    }
    let holdout = recording.train..recording.train + recording.holdout;
    let mut correct_before = 0u16;
    for i in holdout.clone() {
        let interpreter = trainer.interpreter_mut();
        interpreter
            .input_mut::<i8>(0)?
            .copy_from_slice(recording.sample(i));
        interpreter.invoke()?;
        let out = interpreter.output::<i8>(0)?;
        correct_before += u16::from(argmax(out) == recording.label(i));
    }
    let (mut first_loss, mut last_loss, mut ticks, mut steps) = (0.0f32, 0.0f32, 0u64, 0u32);
    for epoch in 0..recording.epochs {
        let mut sum = 0.0f32;
        for i in 0..recording.train {
            let start = clock();
            let loss = trainer.step(recording.sample(i), Target::Class(recording.label(i)))?;
            ticks += u64::from(clock().wrapping_sub(start));
            sum += loss;
            steps += 1;
        }
        let mean = sum / recording.train as f32;
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
    }
    let mut correct_after = 0u16;
    for i in holdout {
        let p = trainer.predict(recording.sample(i))?;
        correct_after += u16::from(argmax(p) == recording.label(i));
    }
    Ok(ReplayReport {
        correct_before,
        correct_after,
        holdout: recording.holdout as u16,
        digest: payload_crc(&trainer.checkpoint()),
        steps,
        first_loss,
        last_loss,
        step_ticks: ticks,
    })
}

/// Writes a recording (the header, then `samples` and `labels`), for the tools.
#[cfg(feature = "alloc")]
#[allow(clippy::too_many_arguments)]
pub fn write(
    features: u16,
    classes: u16,
    train: u16,
    epochs: u16,
    config: &TrainConfig,
    expected: Expected,
    samples: &[i8],
    labels: &[u8],
) -> alloc::vec::Vec<u8> {
    let count = labels.len() as u16;
    let learning_rate = match config.optimizer {
        Optimizer::Adam { learning_rate, .. } => learning_rate,
        Optimizer::Sgd { learning_rate, .. } => learning_rate,
    };
    let mut out = alloc::vec::Vec::with_capacity(HEADER_LEN + samples.len() + labels.len());
    out.extend_from_slice(&MAGIC);
    for v in [
        VERSION,
        features,
        classes,
        train,
        count.saturating_sub(train),
        epochs,
        config.accumulate as u16,
        config.layers as u16,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&learning_rate.to_bits().to_le_bytes());
    out.extend_from_slice(&expected.correct_before.to_le_bytes());
    out.extend_from_slice(&expected.correct_after.to_le_bytes());
    out.extend_from_slice(&expected.digest.to_le_bytes());
    out.extend_from_slice(bytemuck::cast_slice(samples));
    out.extend_from_slice(labels);
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn tiny() -> alloc::vec::Vec<u8> {
        let config = TrainConfig {
            layers: 1,
            loss: Loss::CrossEntropy,
            optimizer: Optimizer::adam(0.01),
            clip_norm: None,
            accumulate: 2,
        };
        let expected = Expected {
            correct_before: 1,
            correct_after: 2,
            digest: 0xdead_beef,
        };
        write(
            2,
            3,
            2,
            4,
            &config,
            expected,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[0, 1, 2, 0],
        )
    }

    #[test]
    fn round_trips() {
        let bytes = tiny();
        let r = Recording::parse(&bytes).unwrap();
        assert_eq!(
            (r.features, r.classes, r.train, r.holdout, r.epochs),
            (2, 3, 2, 2, 4)
        );
        assert_eq!(r.config.accumulate, 2);
        assert_eq!(r.config.optimizer, Optimizer::adam(0.01));
        assert_eq!(r.sample(3), &[7, 8]);
        assert_eq!(r.label(2), 2);
        assert_eq!(r.expected.digest, 0xdead_beef);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let bytes = tiny();
        for len in 0..bytes.len() {
            assert!(Recording::parse(&bytes[..len]).is_err(), "length {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Recording::parse(&long).unwrap_err(),
            TrainError::BadRecording("longer than its counts say")
        );
        let mut bad_label = bytes.clone();
        *bad_label.last_mut().unwrap() = 3;
        assert_eq!(
            Recording::parse(&bad_label).unwrap_err(),
            TrainError::BadRecording("a label is not a class")
        );
        for at in 0..HEADER_LEN {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            let _ = Recording::parse(&b);
        }
    }
}
