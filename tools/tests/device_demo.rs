//! The on-device learning demo's data (also what `loam quickstart` records): a user whose
//! camera sees digits mirrored, which the bundled digits model (trained on the host, deployed
//! frozen int8) mostly gets wrong. The recording `runtime/tests/data/digits-mirrored.lmus` packs that user's samples with the
//! figures the host's trainer reaches on them; the runtime tests (x86_64, aarch64, armv7) and
//! the Cortex-M firmware replay it and must reproduce those figures exactly.
//!
//! Regenerate after retraining `models/digits` with
//! `LOAM_WRITE_FIXTURES=digits-mirrored cargo test -p loam-tools --test device_demo`.

use std::path::Path;

use loam_tools::model_file::{ModelFile, write_atomically};
use loam_tools::project::{Project, pipeline};
use loam_tools::quickstart::{LEARN_CONFIG, LEARN_EPOCHS, LEARN_TRAIN, mirrored_digits};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn mirrored_digits_recording_is_current_and_learnable() {
    let project_dir = root().join("models/digits");
    let (project, _) = Project::load(&project_dir.join("loam.toml")).unwrap();
    let prepared = pipeline::prepare(&project, &project_dir).unwrap();
    let (samples, labels) = mirrored_digits(&prepared);
    let model = ModelFile::open(&project_dir.join("model.loam")).unwrap();
    let (bytes, report) = loam_tools::finetune::record(
        &model,
        &samples,
        &labels,
        LEARN_TRAIN,
        LEARN_EPOCHS,
        &LEARN_CONFIG,
    )
    .unwrap();
    let holdout = f64::from(report.holdout);
    let before = f64::from(report.correct_before) / holdout;
    let after = f64::from(report.correct_after) / holdout;
    println!(
        "mirrored digits: {} training samples, {} held out; accuracy {:.1}% -> {:.1}%, \
         loss {:.3} -> {:.3}, checkpoint {:#010x}",
        LEARN_TRAIN,
        report.holdout,
        100.0 * before,
        100.0 * after,
        report.first_loss,
        report.last_loss,
        report.digest
    );
    assert!(
        before < 0.5,
        "the shift must hurt the deployed model: {before}"
    );
    assert!(after >= 0.85, "on-device training must fix it: {after}");

    let path = root().join("runtime/tests/data/digits-mirrored.lmus");
    let writing = std::env::var("LOAM_WRITE_FIXTURES")
        .is_ok_and(|v| v.split(',').any(|n| n == "digits-mirrored"));
    if writing {
        write_atomically(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} is stale (models/digits changed?); regenerate it with \
         LOAM_WRITE_FIXTURES=digits-mirrored cargo test -p loam-tools --test device_demo",
        path.display()
    );
}

/// RAM the small-board learning demo may take for arena and training state: the micro:bit's
/// 16 KiB less the firmware's stack (6.4 KB measured on the Cortex-M0, whose soft-float calls
/// go deeper than the M4F's 4.7 KB) and about 1 KB to spare. (10 KiB fits 9 rows instead of
/// 8 and reaches 90.6%, but leaves the board 80 bytes.)
const SMALL_BOARD_TRAIN_RAM: usize = 9 * 1024;

/// The same user and data on a board too small for a full last-layer update (16 KiB, the
/// BBC micro:bit's Cortex-M0): `loam export --train-ram 9KiB` picks the plan that trains the
/// most parameters in 9 KiB, with trained weights held as f32 and as int8. Both still learn
/// the mirrored digits; int8 fits more of the layer and learns more. Writes the int8 model
/// and recording the M0 firmware replays (`runtime/tests/data/digits-small-ram.{loam,lmus}`).
#[test]
fn a_training_plan_fitted_to_a_small_board_still_learns() {
    use loam::format::WeightStorage;
    use loam_tools::trainable::{PlanOptimizer, fit_ram, plan_report};
    let project_dir = root().join("models/digits");
    let (project, _) = Project::load(&project_dir.join("loam.toml")).unwrap();
    let prepared = pipeline::prepare(&project, &project_dir).unwrap();
    let (samples, labels) = mirrored_digits(&prepared);
    let original = ModelFile::open(&project_dir.join("model.loam")).unwrap();
    let model = original.model().unwrap();
    let mut accuracy = Vec::new();
    let mut fixture = Vec::new();
    for weights in [WeightStorage::F32, WeightStorage::Int8] {
        let plan = fit_ram(&model, SMALL_BOARD_TRAIN_RAM, PlanOptimizer::Adam, weights).unwrap();
        let planned = loam::format::writer::with_training_plan(&model, Some(&plan)).unwrap();
        let file = ModelFile::from_bytes("digits with a 9 KiB plan", &planned).unwrap();
        let report = plan_report(&file.model().unwrap(), PlanOptimizer::Adam)
            .unwrap()
            .unwrap();
        print!("{}", report.to_text());
        assert!(report.total_bytes <= SMALL_BOARD_TRAIN_RAM, "{report:?}");
        assert!(report.full_total_bytes > 12 * 1024, "{report:?}");
        let config = loam::train::TrainConfig {
            layers: 0,
            ..LEARN_CONFIG
        };
        let (bytes, result) = loam_tools::finetune::record(
            &file,
            &samples,
            &labels,
            LEARN_TRAIN,
            LEARN_EPOCHS,
            &config,
        )
        .unwrap();
        let holdout = f64::from(result.holdout);
        let before = f64::from(result.correct_before) / holdout;
        let after = f64::from(result.correct_after) / holdout;
        println!(
            "mirrored digits, 9 KiB plan, {weights:?} weights: accuracy {:.1}% -> {:.1}%, \
             loss {:.3} -> {:.3}, checkpoint {:#010x}",
            100.0 * before,
            100.0 * after,
            result.first_loss,
            result.last_loss,
            result.digest
        );
        assert!(before < 0.5, "{before}");
        accuracy.push(after);
        fixture = vec![planned, bytes];
    }
    // f32 weights: 6 of the 10 output rows fit (66.9%), four classes keep the weights they
    // had; int8: 8 of 10 (79.9%). The full last layer (12.4 KiB) reaches 93.5%.
    assert!(
        accuracy[0] >= 0.6,
        "f32 weights must still learn: {accuracy:?}"
    );
    assert!(
        accuracy[1] >= 0.75,
        "int8 weights must learn more: {accuracy:?}"
    );
    assert!(accuracy[1] > accuracy[0], "{accuracy:?}");
    let (planned, bytes) = (&fixture[0], &fixture[1]);

    let writing = std::env::var("LOAM_WRITE_FIXTURES")
        .is_ok_and(|v| v.split(',').any(|n| n == "digits-small-ram"));
    for (name, content) in [
        ("digits-small-ram.loam", &planned[..]),
        ("digits-small-ram.lmus", &bytes[..]),
    ] {
        let path = root().join("runtime/tests/data").join(name);
        if writing {
            write_atomically(&path, content).unwrap();
        }
        assert!(
            std::fs::read(&path).unwrap_or_default() == content,
            "{} is stale; regenerate it with \
             LOAM_WRITE_FIXTURES=digits-small-ram cargo test -p loam-tools --test device_demo",
            path.display()
        );
    }
}

/// The drift monitor, with the training statistics `loam train` stored in the digits model,
/// calls the mirrored user's data drifting and the model's own held-out digits not: what tells
/// a device it is time to fine-tune.
#[test]
fn the_drift_monitor_flags_the_mirrored_user_only() {
    use loam::monitor::{DriftMonitor, DriftReference};
    use loam::train::replay::Recording;
    let project_dir = root().join("models/digits");
    let file = ModelFile::open(&project_dir.join("model.loam")).unwrap();
    let model = file.model().unwrap();
    let input = loam_tools::run::io_records(&model, false).unwrap()[0];
    let output = loam_tools::run::io_records(&model, true).unwrap()[0];
    let params = |t: &loam::format::TensorRecord<'_>| match t.quantization {
        loam::Quantization::PerTensor { scale, zero_point } => (scale, zero_point),
        _ => panic!("int8 model expected"),
    };
    let ((in_scale, in_zero), (out_scale, out_zero)) = (params(&input), params(&output));
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter = loam::Interpreter::new(&model, &mut arena).unwrap();
    let mut score = |samples: &mut dyn Iterator<Item = Vec<i8>>| {
        let reference = DriftReference::from_model(&model).unwrap();
        let mut monitor = DriftMonitor::<64, 10>::new(reference, 256).unwrap();
        for x in samples {
            monitor.observe_input_i8(&x, in_scale, in_zero).unwrap();
            interpreter.input_mut::<i8>(0).unwrap().copy_from_slice(&x);
            interpreter.invoke().unwrap();
            let p = interpreter.output::<i8>(0).unwrap();
            monitor.observe_probabilities_i8(p, out_scale, out_zero);
        }
        monitor.report()
    };
    let (project, _) = Project::load(&project_dir.join("loam.toml")).unwrap();
    let test = pipeline::prepare(&project, &project_dir).unwrap().test;
    let q = loam::quant::QuantParams {
        scale: in_scale,
        zero_point: in_zero,
    };
    let own = score(&mut (0..test.rows()).map(|i| {
        test.sample(i)
            .iter()
            .map(|&x| q.quantize(x, -128, 127) as i8)
            .collect()
    }));
    let bytes = std::fs::read(root().join("runtime/tests/data/digits-mirrored.lmus")).unwrap();
    let recording = Recording::parse(&bytes).unwrap();
    let held_out = recording.train..recording.train + recording.holdout;
    let mirrored = score(&mut held_out.map(|i| recording.sample(i).to_vec()));
    println!("drift: own held-out digits {own:?}\ndrift: mirrored user {mirrored:?}");
    assert!(!own.is_drifting(), "{own:?}");
    assert!(mirrored.is_drifting(), "{mirrored:?}");
}
