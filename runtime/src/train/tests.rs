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

/// f16 layers run frozen in front of a trained f32 head; asking to train one is refused with
/// the reason.
#[test]
fn f16_layers_run_frozen_and_are_not_trained() {
    let mut b = ModelBuilder::new("f16-body");
    let x = b.tensor("x", DType::F32, &[1, 8], QuantSpec::None).unwrap();
    b.input(x);
    let w1: Vec<f32> = (0..8 * 8)
        .map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let h = b
        .fully_connected_f16("body", x, &w1, Some(&[0.1; 8]), FusedActivation::RELU)
        .unwrap();
    let w2: Vec<f32> = (0..3 * 8)
        .map(|i| ((i * 3) % 7) as f32 / 7.0 - 0.5)
        .collect();
    let y = b
        .fully_connected_f32("head", h, &w2, Some(&[0.0; 3]), FusedActivation::NONE)
        .unwrap();
    b.output(y);
    let bytes = AlignedBytes::new(&b.build().unwrap().bytes);
    let model = Model::from_bytes(&bytes).unwrap();
    let head = Head::find(&model, 1).unwrap();
    assert_eq!((head.first().inputs, head.first().outputs), (8, 3));
    match Head::find(&model, 2) {
        Err(TrainError::NoTrainableHead(why)) => assert!(why.contains("f16"), "{why}"),
        other => panic!("an f16 layer to train: {:?}", other.map(|h| h.count)),
    }
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
    assert_gradients_match(&model, CHECK_CONFIG, 60);
}

/// Checks every seventh trained parameter's accumulated gradient; at least `least` of them.
fn assert_gradients_match(model: &Model<'_>, config: TrainConfig, least: usize) {
    let config = TrainConfig {
        accumulate: 1000,
        clip_norm: None,
        ..config
    };
    let (mut arena, mut state) = buffers(model, &config);
    let mut trainer = Trainer::new(model, &mut arena, &mut state, config).unwrap();
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
    assert!(checked > least, "{checked} checked");
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

// Training plans stored in the model (format 1.1).

use crate::error::LoadError;
use crate::format::WeightStorage;
use crate::format::writer::{
    BuildError, PlannedLayer, PlannedTraining, PlannedUpdate, with_training_plan,
};

/// The model's three fully-connected ops (16->24 frozen, 24->16, 16->4).
fn fc_ops(model: &Model<'_>) -> [usize; 3] {
    let head = Head::find(model, 3).unwrap();
    [
        head.layers()[0].op,
        head.layers()[1].op,
        head.layers()[2].op,
    ]
}

fn planned(model: &Model<'_>, plan: &[(usize, PlannedUpdate)]) -> Result<AlignedBytes, BuildError> {
    planned_as(model, plan, WeightStorage::F32)
}

fn planned_as(
    model: &Model<'_>,
    plan: &[(usize, PlannedUpdate)],
    weights: WeightStorage,
) -> Result<AlignedBytes, BuildError> {
    let layers: Vec<PlannedLayer> = plan
        .iter()
        .map(|(op, update)| PlannedLayer {
            op: *op,
            update: update.clone(),
        })
        .collect();
    with_training_plan(model, Some(&PlannedTraining { layers, weights }))
        .map(|b| AlignedBytes::new(&b))
}

const PLAN_CONFIG: TrainConfig = TrainConfig {
    layers: 0,
    ..CHECK_CONFIG
};

#[test]
fn a_plan_round_trips_and_removing_it_gives_back_the_file() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.format_version(), (1, 0));
    assert!(model.training_plan().is_none());
    let [_, fc1, fc2] = fc_ops(&model);
    let with = planned(
        &model,
        &[
            (fc1, PlannedUpdate::Channels(vec![1, 5, 9])),
            (fc2, PlannedUpdate::Bias),
        ],
    )
    .unwrap();
    let loaded = Model::from_bytes(&with).unwrap();
    assert_eq!(loaded.format_version(), (1, 1));
    assert_eq!(loaded.arena_size(), model.arena_size());
    let plan = loaded.training_plan().unwrap();
    assert_eq!(plan.len(), 2);
    let first = plan.layer(0).unwrap();
    assert_eq!(first.op as usize, fc1);
    let crate::format::LayerUpdate::Channels(channels) = first.update else {
        panic!("{first:?}");
    };
    assert_eq!(channels.iter().collect::<Vec<_>>(), [1, 5, 9]);
    assert_eq!(
        plan.layer(1).unwrap().update,
        crate::format::LayerUpdate::Bias
    );
    let without = with_training_plan(&loaded, None).unwrap();
    assert_eq!(
        &without[..],
        &bytes[..],
        "the 1.0 file comes back byte for byte"
    );
}

#[test]
fn plans_the_runtime_cannot_train_are_refused_with_the_layer_and_reason() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let [fc0, fc1, fc2] = fc_ops(&model);
    let softmax = model.op_count() - 1;
    let problem = |plan: &[(usize, PlannedUpdate)]| match planned(&model, plan) {
        Err(BuildError::Invalid(LoadError::Training { layer, problem })) => (layer, problem),
        other => panic!("{plan:?}: {:?}", other.map(|b| b.len())),
    };
    use PlannedUpdate::*;
    assert_eq!(
        problem(&[]).1,
        "a plan names 1 to MAX_TRAINED_LAYERS layers"
    );
    assert_eq!(problem(&[(99, Full)]).1, "names an op past the last");
    assert_eq!(
        problem(&[(fc2, Full), (softmax, Full)]),
        (1, "names an op that is not FullyConnected")
    );
    assert_eq!(
        problem(&[(fc2, Full), (fc1, Full)]),
        (1, "layers are not in increasing op order")
    );
    assert_eq!(
        problem(&[(fc1, Frozen), (fc2, Full)]).1,
        "the first layer of a plan must be updated"
    );
    let not_increasing = "channels are not increasing or exceed the layer's outputs";
    assert_eq!(problem(&[(fc1, Channels(vec![5, 3]))]).1, not_increasing);
    assert_eq!(problem(&[(fc1, Channels(vec![16]))]).1, not_increasing);
    assert_eq!(
        problem(&[(fc1, Channels(vec![]))]).1,
        "a channel list is empty or not whole u16s"
    );
    // Loadable, but not a head the trainer can train: it says why.
    let early = planned(&model, &[(fc0, Full)]).unwrap();
    let early = Model::from_bytes(&early).unwrap();
    assert_eq!(
        Trainer::state_len(&early, &PLAN_CONFIG).err(),
        Some(TrainError::NoTrainableHead(
            "the training plan's layers are not the model's last fully-connected layers"
        ))
    );
    assert_eq!(
        Trainer::state_len(&model, &PLAN_CONFIG).err(),
        Some(TrainError::NoTrainableHead(
            "the model stores no training plan (write one with `loam export --trainable`)"
        ))
    );
}

/// A plan training both layers in full is exactly `layers: 2`.
#[test]
fn a_full_plan_trains_bit_for_bit_like_the_last_layers() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let [_, fc1, fc2] = fc_ops(&model);
    let with = planned(
        &model,
        &[(fc1, PlannedUpdate::Full), (fc2, PlannedUpdate::Full)],
    )
    .unwrap();
    let with = Model::from_bytes(&with).unwrap();
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let layers = train_seeded(&model, &mut arena, &mut state, 3, 300).unwrap();
    let mut trainer = Trainer::new(&with, &mut arena, &mut state, PLAN_CONFIG).unwrap();
    let plan = check::train_seeded_into(&mut trainer, 3, 300).unwrap();
    assert_eq!(layers.digest, plan.digest);
    // Both mean the same parameters; the stored plan is found first.
    assert_eq!(layers_for(&with, trainer.head.params), Some(0));
    assert_eq!(layers_for(&model, trainer.head.params), Some(2));
}

#[test]
fn gradients_of_a_sparse_plan_match_finite_differences() {
    let bytes = model_bytes(false);
    let model = Model::from_bytes(&bytes).unwrap();
    let [_, fc1, fc2] = fc_ops(&model);
    for plan in [
        vec![
            (fc1, PlannedUpdate::Channels(vec![0, 3, 4, 10, 15])),
            (fc2, PlannedUpdate::Bias),
        ],
        vec![(fc1, PlannedUpdate::Bias), (fc2, PlannedUpdate::Frozen)],
    ] {
        let with = planned(&model, &plan).unwrap();
        let with = Model::from_bytes(&with).unwrap();
        assert_gradients_match(&with, PLAN_CONFIG, 2);
    }
}

/// Bias-only and sparse plans need less state, still learn, and export only what they
/// trained: every weight row they did not train keeps its bytes.
#[test]
fn bias_only_and_sparse_plans_learn_in_less_state_and_export_only_what_they_trained() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let full_state = Trainer::state_len(&model, &CHECK_CONFIG).unwrap();
    let [_, fc1, fc2] = fc_ops(&model);
    use PlannedUpdate::*;
    let plans = [
        (vec![(fc1, Bias), (fc2, Bias)], 16 + 4),
        (
            vec![(fc1, Channels(vec![0, 2, 4, 6])), (fc2, Full)],
            4 * 24 + 16 + 68,
        ),
        (vec![(fc2, Channels(vec![1, 3]))], 2 * 16 + 4),
    ];
    for (plan, params) in plans {
        let with_bytes = planned(&model, &plan).unwrap();
        let with = Model::from_bytes(&with_bytes).unwrap();
        let state_len = Trainer::state_len(&with, &PLAN_CONFIG).unwrap();
        assert!(
            state_len < full_state,
            "{plan:?}: {state_len} of {full_state}"
        );
        let (mut arena, mut state) = buffers(&with, &PLAN_CONFIG);
        let mut trainer = Trainer::new(&with, &mut arena, &mut state, PLAN_CONFIG).unwrap();
        assert_eq!(trainer.parameters().len(), params, "{plan:?}");
        let result = check::train_seeded_into(&mut trainer, 5, 1600).unwrap();
        assert!(
            result.last_loss < 0.95 * result.first_loss,
            "{plan:?}: {result:?}"
        );
        let payload = trainer.checkpoint().concat();
        let shape = CheckpointShape::read(&payload).unwrap();
        assert_eq!(layers_for(&with, shape.params), Some(0), "{plan:?}");

        let (patched, changes) =
            export::patch_model(&with_bytes, trainer.trained_layers()).unwrap();
        assert_eq!(changes.iter().map(|c| c.params).sum::<usize>(), params);
        let patched = AlignedBytes::new(&patched);
        let patched_model = Model::from_bytes(&patched).unwrap();
        // Rows not trained keep their bytes; trained ones (some) moved.
        for (op, update) in &plan {
            let weights = |m: &Model<'_>| {
                let record = m.op(*op).unwrap();
                let node = crate::ops::Node::new(m, record);
                let w = node.input(1).unwrap();
                node.constant::<i8>(&w).unwrap().to_vec()
            };
            let (old, new) = (weights(&with), weights(&patched_model));
            let inputs =
                Head::find(&with, 3).unwrap().layers()[if *op == fc1 { 1 } else { 2 }].inputs;
            for (o, (a, b)) in old.chunks(inputs).zip(new.chunks(inputs)).enumerate() {
                let trained = match update {
                    Full => true,
                    Channels(c) => c.contains(&(o as u16)),
                    _ => false,
                };
                if !trained {
                    assert_eq!(a, b, "{plan:?}: row {o} of op {op} was not trained");
                }
            }
        }
        let mut run_arena = vec![0u8; model.arena_size() + 16];
        let mut interpreter = Interpreter::new(&patched_model, &mut run_arena).unwrap();
        let mut agree = 0;
        for i in 0..50 {
            let q: Vec<i8> = sample(300 + i)
                .iter()
                .map(|v| (v * 127.5).round() as i8)
                .collect();
            let logits = trainer.predict(&q).unwrap().to_vec();
            interpreter.input_mut::<i8>(0).unwrap().copy_from_slice(&q);
            interpreter.invoke().unwrap();
            let out = interpreter.output::<i8>(0).unwrap();
            let best_logit = (0..4)
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            agree += usize::from(out[best_logit] == *out.iter().max().unwrap());
        }
        assert!(agree >= 45, "{plan:?}: {agree} of 50 agree");
    }
}

/// Weights kept int8 while training: a quarter of the weight RAM, still learning, the
/// checkpoint restoring every bit (int8 bytes that read as NaN floats included), and the
/// trained bytes written back into the file exactly.
#[test]
fn int8_weights_train_in_less_ram_and_come_home_exactly() {
    let bytes = model_bytes(true);
    let model = Model::from_bytes(&bytes).unwrap();
    let [_, fc1, fc2] = fc_ops(&model);
    let plan = [
        (fc1, PlannedUpdate::Channels(vec![1, 2, 3, 5, 8, 13])),
        (fc2, PlannedUpdate::Full),
    ];
    let f32_bytes = planned(&model, &plan).unwrap();
    let int8_bytes = planned_as(&model, &plan, WeightStorage::Int8).unwrap();
    let (f32_model, int8_model) = (
        Model::from_bytes(&f32_bytes).unwrap(),
        Model::from_bytes(&int8_bytes).unwrap(),
    );
    let weights = 6 * 24 + 4 * 16;
    assert_eq!(
        Trainer::state_len(&f32_model, &PLAN_CONFIG).unwrap()
            - Trainer::state_len(&int8_model, &PLAN_CONFIG).unwrap(),
        weights - (6 * 24usize).div_ceil(4) - (4 * 16usize).div_ceil(4)
    );

    let (mut arena, mut state) = buffers(&int8_model, &PLAN_CONFIG);
    let mut trainer = Trainer::new(&int8_model, &mut arena, &mut state, PLAN_CONFIG).unwrap();
    let result = check::train_seeded_into(&mut trainer, 9, 1600).unwrap();
    assert!(result.last_loss < 0.85 * result.first_loss, "{result:?}");
    // Checkpoint, restore into a fresh trainer, train on: the same bits as straight through.
    let payload = trainer.checkpoint().concat();
    let straight = check::train_seeded_into(&mut trainer, 10, 200).unwrap();
    let (mut arena2, mut state2) = buffers(&int8_model, &PLAN_CONFIG);
    let mut resumed = Trainer::new(&int8_model, &mut arena2, &mut state2, PLAN_CONFIG).unwrap();
    resumed.restore(&payload).unwrap();
    assert_eq!(
        check::train_seeded_into(&mut resumed, 10, 200).unwrap(),
        straight
    );

    let layers: Vec<TrainedLayer<'_>> = resumed.trained_layers().collect();
    let (patched, changes) = export::patch_model(&int8_bytes, layers.iter().copied()).unwrap();
    assert!(
        changes.iter().all(|c| c.encoding_error == 0.0),
        "{changes:?}"
    );
    let patched = AlignedBytes::new(&patched);
    let patched_model = Model::from_bytes(&patched).unwrap();
    for layer in &layers {
        let TrainedWeights::I8(q) = layer.weights else {
            panic!("int8 weights expected");
        };
        let record = patched_model.op(layer.op).unwrap();
        let node = crate::ops::Node::new(&patched_model, record);
        let file = node.constant::<i8>(&node.input(1).unwrap()).unwrap();
        let rows: Vec<usize> = match layer.rows {
            TrainedRows::All => (0..layer.outputs).collect(),
            TrainedRows::Channels(c) => c.iter().map(usize::from).collect(),
            TrainedRows::None => vec![],
        };
        for (r, &o) in rows.iter().enumerate() {
            assert_eq!(
                &file[o * layer.inputs..][..layer.inputs],
                &q[r * layer.inputs..][..layer.inputs]
            );
        }
    }

    // Int8 storage needs int8 weights in the file.
    let f32_model_bytes = model_bytes(false);
    let float = Model::from_bytes(&f32_model_bytes).unwrap();
    let [_, _, fc2] = fc_ops(&float);
    let float_plan =
        planned_as(&float, &[(fc2, PlannedUpdate::Full)], WeightStorage::Int8).unwrap();
    assert!(matches!(
        Trainer::state_len(&Model::from_bytes(&float_plan).unwrap(), &PLAN_CONFIG),
        Err(TrainError::NoTrainableHead(_))
    ));
}

#[test]
fn stochastic_rounding_is_unbiased_and_keeps_integers() {
    for x in [-3.0f32, 0.0, 5.0, 127.0] {
        assert!((0..100).all(|i| stochastic_round(x, 1, i) == x));
    }
    for x in [0.25f32, -1.7, 42.9] {
        let n = 20_000;
        let mean = (0..n).map(|i| stochastic_round(x, 7, i)).sum::<f32>() / n as f32;
        assert!((mean - x).abs() < 0.02, "{x}: {mean}");
        assert!((0..n).all(|i| {
            let r = stochastic_round(x, 3, i);
            r == x.floor() || r == x.ceil()
        }));
    }
}

/// A head of 16x8 layers (int16 activations, int8 weights) trains like an int8 one: the
/// int16 boundary is read in real units, the loss falls, and the trained weights patched
/// into the model compute what the trainer predicts.
#[test]
fn a_head_of_int16_layers_trains_and_comes_home() {
    use crate::quant::QuantParams;
    let mut b = ModelBuilder::new("int16-head");
    let x = b
        .tensor("x", DType::F32, &[1, 16], QuantSpec::None)
        .unwrap();
    b.input(x);
    let q = b
        .quantize("x.q", x, QuantParams::i16_from_range(-1.0, 1.0), DType::I16)
        .unwrap();
    let mut rng = crate::selftest::SplitMix64(5);
    let mut weights = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    };
    let (w1, b1, w2, b2) = (
        weights(24 * 16, 0.5),
        weights(24, 0.1),
        weights(4 * 24, 0.5),
        weights(4, 0.1),
    );
    let h = b
        .fully_connected_i16(
            "fc1",
            q,
            &w1,
            Some(&b1),
            QuantParams::i16_from_range(-4.0, 4.0),
            FusedActivation::RELU,
        )
        .unwrap();
    let y = b
        .fully_connected_i16(
            "fc2",
            h,
            &w2,
            Some(&b2),
            QuantParams::i16_from_range(-8.0, 8.0),
            FusedActivation::NONE,
        )
        .unwrap();
    let out = b.dequantize("y", y).unwrap();
    b.output(out);
    let bytes = AlignedBytes::new(&b.build().unwrap().bytes);
    let model = Model::from_bytes(&bytes).unwrap();
    let (mut arena, mut state) = buffers(&model, &CHECK_CONFIG);
    let payload: Vec<u8> = {
        let mut t = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
        let run = check::train_seeded_into(&mut t, 3, 1200).unwrap();
        assert!(run.last_loss < 0.8 * run.first_loss, "{run:?}");
        t.checkpoint().concat()
    };
    let mut trainer = Trainer::new(&model, &mut arena, &mut state, CHECK_CONFIG).unwrap();
    trainer.restore(&payload).unwrap();
    let (patched, changes) = export::patch_model(&bytes, trainer.trained_layers()).unwrap();
    assert_eq!(changes.len(), 2);
    let patched = AlignedBytes::new(&patched);
    let patched_model = Model::from_bytes(&patched).unwrap();
    assert_eq!(
        patched_model.format_version().1,
        crate::format::MINOR_INT16_LAYERS
    );
    let mut run_arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter = Interpreter::new(&patched_model, &mut run_arena).unwrap();
    let best = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let mut agree = 0;
    for i in 0..50 {
        let x = sample(300 + i);
        let logits = trainer.predict(&x).unwrap().to_vec();
        interpreter.input_mut::<f32>(0).unwrap().copy_from_slice(&x);
        interpreter.invoke().unwrap();
        agree += usize::from(best(interpreter.output::<f32>(0).unwrap()) == best(&logits));
    }
    assert!(agree >= 48, "{agree} of 50 agree");
}
