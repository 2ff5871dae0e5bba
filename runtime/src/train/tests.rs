use super::check::{self, CHECK_CONFIG, check_network, train_seeded};
use super::*;
use crate::format::AlignedBytes;
use crate::format::writer::{ModelBuilder, QuantSpec};
use crate::ops::FusedActivation;
use crate::store::sim::SimulatedNorFlash;
use crate::store::{CheckpointStore, ModelId};
use std::vec;
use std::vec::Vec;

fn model_bytes(int8: bool) -> AlignedBytes {
    AlignedBytes::new(&check_network(int8).build().unwrap().bytes)
}

fn buffers(model: &Model<'_>, config: &TrainConfig) -> (Vec<u8>, Vec<f32>) {
    (
        vec![0u8; model.arena_size() + 16],
        vec![0f32; Trainer::state_len(model, config).unwrap()],
    )
}

/// Sample `i`: 16 values uniform in [-0.9, 0.9).
fn sample(i: usize) -> Vec<f32> {
    let mut rng = crate::selftest::SplitMix64(i as u64);
    (0..16)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 0.9)
        .collect()
}

#[test]
fn the_head_is_found_and_sized() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let head = Head::find(&model, 2).unwrap();
    assert_eq!(head.count, 2);
    assert_eq!((head.first().inputs, head.first().outputs), (24, 16));
    assert_eq!((head.last().inputs, head.last().outputs), (16, 4));
    assert_eq!(head.params, 24 * 16 + 16 + 16 * 4 + 4);
    assert_eq!(Trainer::state_len(&model, &CHECK_CONFIG).unwrap(), 1984);
    assert_eq!(
        Head::find(&model, 4).err(),
        Some(TrainError::NoTrainableHead(
            "the model has fewer fully-connected layers than asked to train"
        ))
    );
    assert!(matches!(
        Head::find(&model, 0),
        Err(TrainError::InvalidConfig(_))
    ));
}

#[test]
fn a_model_ending_in_something_else_has_no_head() {
    let mut b = ModelBuilder::new("relu");
    let x = b.tensor("x", DType::F32, &[1, 4], QuantSpec::None).unwrap();
    b.input(x);
    let y = b
        .activation_f32("relu", x, crate::ops::activation::Unary::Relu)
        .unwrap();
    b.output(y);
    let bytes = AlignedBytes::new(&b.build().unwrap().bytes);
    let model = Model::from_bytes(&bytes).unwrap();
    assert!(matches!(
        Trainer::state_len(&model, &CHECK_CONFIG),
        Err(TrainError::NoTrainableHead(_))
    ));
}

#[test]
fn before_training_the_head_computes_what_the_model_computes() {
    // f32: the same layers, so the logits match the interpreter's up to summation order.
    let bytes = model_bytes(false);
    let model = Model::from_bytes(&bytes).unwrap();
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    let x = sample(3);
    let logits = trainer.predict(&x).unwrap().to_vec();
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter = Interpreter::new(&model, &mut arena).unwrap();
    interpreter.input_mut::<f32>(0).unwrap().copy_from_slice(&x);
    interpreter.invoke().unwrap();
    let probabilities = interpreter.output::<f32>(0).unwrap();
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    for (l, p) in logits.iter().zip(probabilities) {
        assert!(
            ((l - max).exp() / sum - p).abs() < 1e-5,
            "{logits:?} {probabilities:?}"
        );
    }
}

/// The accumulated gradient of every parameter against a central difference of the loss.
#[test]
fn gradients_match_finite_differences() {
    let bytes = model_bytes(false);
    let model = Model::from_bytes(&bytes).unwrap();
    let config = TrainConfig {
        accumulate: 1000,
        clip_norm: None,
        ..CHECK_CONFIG
    };
    let (mut arena, mut state) = buffers(&model, &config);
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, config).unwrap();
    let x = sample(5);
    trainer.step(&x, Target::Class(2)).unwrap();
    let params = trainer.head.params;
    let grads_at = params * (1 + config.optimizer.moments());
    let analytic = trainer.state[grads_at..grads_at + params].to_vec();

    let loss_at = |trainer: &mut Trainer<'_, '_, '_>| -> f64 {
        let logits = trainer.predict(&x).unwrap();
        let logits: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        sum.ln() + max - logits[2]
    };
    let mut checked = 0;
    for i in (0..params).step_by(7) {
        let original = trainer.state[i];
        let h = 1e-2f32;
        trainer.state[i] = original + h;
        let plus = loss_at(&mut trainer);
        trainer.state[i] = original - h;
        let minus = loss_at(&mut trainer);
        trainer.state[i] = original;
        let numeric = (plus - minus) / (2.0 * h as f64);
        assert!(
            (numeric - analytic[i] as f64).abs() < 2e-3 + 2e-2 * numeric.abs(),
            "parameter {i}: analytic {} numeric {numeric}",
            analytic[i]
        );
        checked += 1;
    }
    assert!(checked > 60);
    assert!(analytic.iter().any(|&g| g != 0.0));
}

#[test]
fn training_lowers_the_loss_and_is_deterministic() {
    for int8 in [true, false] {
        let bytes = model_bytes(int8);
        let model = Model::from_bytes(&bytes).unwrap();
        let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
        let first = train_seeded(&model, &mut arena, &mut state, 7, 2000).unwrap();
        assert_eq!(first.updates, 500);
        assert!(
            first.last_loss < 0.8 * first.first_loss,
            "int8={int8}: {first:?}"
        );
        let again = train_seeded(&model, &mut arena, &mut state, 7, 2000).unwrap();
        assert_eq!(first, again);
        let other = train_seeded(&model, &mut arena, &mut state, 8, 2000).unwrap();
        assert_ne!(first.digest, other.digest);
    }
}

/// Training interrupted by a checkpoint and a reboot continues exactly as if it had not
/// stopped: the payload saved through the flash store restores every bit that matters.
#[test]
fn a_restored_checkpoint_continues_training_bit_for_bit() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let id = ModelId::of(&model);
    let x: Vec<Vec<i8>> = (0..80)
        .map(|i| sample(i).iter().map(|v| (v * 127.0) as i8).collect())
        .collect();
    let label = |i: usize| i % 4;

    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let mut straight = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    for (i, x) in x.iter().enumerate() {
        straight.step(x, Target::Class(label(i))).unwrap();
    }
    let expected = straight.parameters().to_vec();

    let mut flash = vec![0xFFu8; 2 * 16384];
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let mut first = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    for (i, x) in x.iter().enumerate().take(40) {
        first.step(x, Target::Class(label(i))).unwrap();
    }
    {
        let mut sim = SimulatedNorFlash::<4, 4096>::new(&mut flash);
        let mut store = CheckpointStore::new(&mut sim, 0, 16384).unwrap();
        store.save(id, &first.checkpoint()).unwrap();
    }

    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let mut resumed = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    let mut payload = vec![0u8; resumed.checkpoint_len()];
    {
        let mut sim = SimulatedNorFlash::<4, 4096>::new(&mut flash);
        let mut store = CheckpointStore::new(&mut sim, 0, 16384).unwrap();
        store.load(id, &mut payload).unwrap().unwrap();
    }
    resumed.restore(&payload).unwrap();
    assert_eq!(resumed.updates(), 10);
    for (i, x) in x.iter().enumerate().skip(40) {
        resumed.step(x, Target::Class(label(i))).unwrap();
    }
    assert_eq!(resumed.parameters(), &expected[..]);
}

#[test]
fn payloads_of_another_trainer_are_refused() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    let good: Vec<u8> = trainer.checkpoint().concat();
    let before = trainer.parameters().to_vec();
    assert_eq!(
        trainer.restore(&good[..good.len() - 4]),
        Err(TrainError::BadCheckpoint)
    );
    let mut wrong_count = good.clone();
    wrong_count[0] ^= 1;
    assert_eq!(
        trainer.restore(&wrong_count),
        Err(TrainError::BadCheckpoint)
    );
    let mut nan = good.clone();
    nan[CHECKPOINT_PREFIX..CHECKPOINT_PREFIX + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(trainer.restore(&nan), Err(TrainError::BadCheckpoint));
    assert_eq!(trainer.parameters(), &before[..]);
    trainer.restore(&good).unwrap();
}

#[test]
fn a_diverging_step_changes_nothing() {
    let bytes = model_bytes(false);
    let model = Model::from_bytes(&bytes).unwrap();
    let config = TrainConfig {
        loss: Loss::MeanSquaredError,
        accumulate: 1,
        ..CHECK_CONFIG
    };
    let (mut arena, mut state) = buffers(&model, &config);
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, config).unwrap();
    let before = trainer.parameters().to_vec();
    let huge = [f32::MAX; 4];
    assert_eq!(
        trainer.step(&sample(1), Target::Values(&huge)),
        Err(TrainError::NonFinite)
    );
    assert_eq!(trainer.parameters(), &before[..]);
    assert_eq!(trainer.updates(), 0);
    trainer
        .step(&sample(1), Target::Values(&[0.0, 1.0, 0.0, 0.0]))
        .unwrap();
    assert_eq!(trainer.updates(), 1);
}

#[test]
fn bad_configurations_and_buffers_are_named() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let cases = [
        TrainConfig {
            accumulate: 0,
            ..CHECK_CONFIG
        },
        TrainConfig {
            clip_norm: Some(-1.0),
            ..CHECK_CONFIG
        },
        TrainConfig {
            optimizer: Optimizer::sgd(-0.1, 0.0),
            ..CHECK_CONFIG
        },
    ];
    for config in cases {
        assert!(matches!(
            Trainer::new(&model, &mut arena, &mut state, config),
            Err(TrainError::InvalidConfig(_))
        ));
    }
    let short = state.len() - 1;
    assert_eq!(
        Trainer::new(&model, &mut arena, &mut state[..short], CHECK_CONFIG).err(),
        Some(TrainError::StateTooSmall {
            required: short + 1,
            actual: short
        })
    );
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    assert!(matches!(
        trainer.step(&[0i8; 15], Target::Class(0)),
        Err(TrainError::Runtime(Error::ShapeMismatch { .. }))
    ));
    assert!(matches!(
        trainer.step(&[0f32; 16], Target::Class(0)),
        Err(TrainError::Runtime(Error::DTypeMismatch { .. }))
    ));
    assert_eq!(
        trainer.step(&[0i8; 16], Target::Class(4)),
        Err(TrainError::BadTarget {
            expected: 4,
            actual: 4
        })
    );
}

#[test]
fn sgd_trains_a_single_layer_too() {
    let mut b = ModelBuilder::new("linear");
    let x = b
        .tensor("x", DType::F32, &[1, 16], QuantSpec::None)
        .unwrap();
    b.input(x);
    let y = b
        .fully_connected_f32("fc", x, &[0.0; 64], None, FusedActivation::NONE)
        .unwrap();
    b.output(y);
    let bytes = AlignedBytes::new(&b.build().unwrap().bytes);
    let model = Model::from_bytes(&bytes).unwrap();
    let config = TrainConfig {
        layers: 1,
        loss: Loss::MeanSquaredError,
        optimizer: Optimizer::Sgd {
            learning_rate: 0.02,
            momentum: 0.9,
            nesterov: true,
        },
        clip_norm: Some(10.0),
        accumulate: 2,
    };
    let (mut arena, mut state) = buffers(&model, &config);
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, config).unwrap();
    // Learn y = [sum of x's first half, sum of second half, 0, 1].
    let target = |x: &[f32]| [x[..8].iter().sum(), x[8..].iter().sum(), 0.0, 1.0];
    let mut recent = 0.0;
    for i in 0..3000 {
        let x = sample(i);
        let loss = trainer.step(&x, Target::Values(&target(&x))).unwrap();
        if i >= 3000 - 100 {
            recent += loss / 100.0;
        }
    }
    assert!(recent < 1e-4, "{recent}");
    let x = sample(1000);
    let y = trainer.predict(&x).unwrap();
    for (a, b) in y.iter().zip(target(&x)) {
        assert!((a - b).abs() < 0.05, "{y:?} vs {:?}", target(&x));
    }
}

/// The trained parameters written back into the file: the patched f32 model computes what
/// the trainer predicts, and the patched int8 model (requantized) picks the same class on
/// almost every sample.
#[test]
fn trained_layers_patched_into_the_model_compute_what_the_trainer_predicts() {
    for int8 in [false, true] {
        let bytes = model_bytes(int8);
        let model = Model::from_bytes(&bytes).unwrap();
        let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
        let payload: Vec<u8> = {
            let mut t = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
            check::train_seeded_into(&mut t, 11, 400).unwrap();
            t.checkpoint().concat()
        };
        let shape = CheckpointShape::read(&payload).unwrap();
        assert_eq!(layers_for(&model, shape.params), Some(2));
        assert_eq!((shape.moments, shape.updates), (2, 100));
        let mut trainer = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
        trainer.restore(&payload).unwrap();
        let (patched, changes) = export::patch_model(&bytes, trainer.trained_layers()).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(
            changes.iter().all(|c| c.max_change > 0.0 && c.moved > 0.0),
            "{changes:?}"
        );
        if !int8 {
            assert!(changes.iter().all(|c| c.encoding_error == 0.0));
        }
        let patched = AlignedBytes::new(&patched);
        let patched_model = Model::from_bytes(&patched).unwrap();
        assert_eq!(patched_model.arena_size(), model.arena_size());
        let mut run_arena = vec![0u8; model.arena_size() + 16];
        let mut interpreter = Interpreter::new(&patched_model, &mut run_arena).unwrap();
        let mut agree = 0;
        for i in 0..50 {
            let x = sample(100 + i);
            let best = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0
            };
            if int8 {
                let q: Vec<i8> = x.iter().map(|v| (v * 127.5).round() as i8).collect();
                let logits = trainer.predict(&q).unwrap().to_vec();
                interpreter.input_mut::<i8>(0).unwrap().copy_from_slice(&q);
                interpreter.invoke().unwrap();
                let out: Vec<f32> = interpreter
                    .output::<i8>(0)
                    .unwrap()
                    .iter()
                    .map(|&v| f32::from(v))
                    .collect();
                agree += usize::from(best(&out) == best(&logits));
            } else {
                let logits = trainer.predict(&x).unwrap().to_vec();
                interpreter.input_mut::<f32>(0).unwrap().copy_from_slice(&x);
                interpreter.invoke().unwrap();
                let probabilities = interpreter.output::<f32>(0).unwrap();
                let max = logits.iter().copied().fold(f32::MIN, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                for (l, p) in logits.iter().zip(probabilities) {
                    assert!(((l - max).exp() / sum - p).abs() < 1e-5);
                }
                agree += 1;
            }
        }
        assert!(agree >= 45, "int8={int8}: {agree} of 50 agree");
    }
}
