use super::*;
use crate::format::AlignedBytes;
use crate::format::writer::{ModelBuilder, QuantSpec};
use crate::ops::activation::Unary;
use proptest::prelude::*;
use std::vec::Vec;

const FEATURES: usize = 6;
const BINS: usize = 10;

/// Deterministic standard normal samples (xorshift and Box-Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn sample(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        libm::sqrtf(-2.0 * libm::logf(u)) * libm::cosf(core::f32::consts::TAU * v)
    }
}

/// Training data: feature `i` has mean `i` and standard deviation `1 + i / 2`; the last
/// feature never varies, like an image border. Top probabilities cluster near 0.9.
fn training(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Normal(seed);
    let mut inputs = Vec::new();
    let mut confidences = Vec::new();
    for _ in 0..n {
        for i in 0..FEATURES - 1 {
            inputs.push(i as f32 + (1.0 + i as f32 / 2.0) * rng.sample());
        }
        inputs.push(0.0);
        confidences.push((0.9 + 0.05 * rng.sample()).clamp(0.0, 1.0));
    }
    (inputs, confidences)
}

fn model_with(constants: Vec<(std::string::String, Vec<f32>)>) -> AlignedBytes {
    let mut b = ModelBuilder::new("monitored");
    let x = b
        .tensor("x", crate::DType::F32, &[1, FEATURES], QuantSpec::None)
        .unwrap();
    b.input(x);
    let y = b.activation_f32("relu", x, Unary::Relu).unwrap();
    b.output(y);
    b.metadata.constants = constants;
    AlignedBytes::new(&b.build().unwrap().bytes)
}

fn reference_model() -> AlignedBytes {
    let (inputs, confidences) = training(20_000, 1);
    model_with(reference_constants(
        &inputs,
        FEATURES,
        Some((&confidences, BINS)),
    ))
}

fn monitor_over(
    bytes: &AlignedBytes,
    inputs: &[f32],
    confidences: &[f32],
    window: u32,
) -> DriftReport {
    let model = Model::from_bytes(bytes).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    let mut monitor = DriftMonitor::<FEATURES, BINS>::new(reference, window).unwrap();
    for row in inputs.chunks(FEATURES) {
        monitor.observe_input(row).unwrap();
    }
    for &p in confidences {
        monitor.observe_probabilities(&[p, 1.0 - p]).unwrap();
    }
    monitor.report()
}

#[test]
fn the_training_distribution_is_not_drift() {
    let bytes = reference_model();
    let (inputs, confidences) = training(2_000, 2);
    let report = monitor_over(&bytes, &inputs, &confidences, 4096);
    assert_eq!(report.samples, 2_000);
    assert!(!report.is_drifting(), "{report:?}");
    assert!(report.input_shift < 0.1, "{report:?}");
    assert!(report.input_spread < 0.1, "{report:?}");
    assert!(report.confidence_psi.unwrap() < 0.05, "{report:?}");
}

#[test]
fn a_shifted_mean_is_drift() {
    let bytes = reference_model();
    let (mut inputs, confidences) = training(2_000, 3);
    // Every varying feature moves by one training standard deviation.
    for row in inputs.chunks_mut(FEATURES) {
        for (i, x) in row[..FEATURES - 1].iter_mut().enumerate() {
            *x += 1.0 + i as f32 / 2.0;
        }
    }
    let report = monitor_over(&bytes, &inputs, &confidences, 4096);
    // Five of six features shift by 1 std: 5/6 on average.
    assert!((report.input_shift - 5.0 / 6.0).abs() < 0.1, "{report:?}");
    assert!(report.is_drifting());
}

#[test]
fn a_wider_spread_is_drift() {
    let bytes = reference_model();
    let (mut inputs, confidences) = training(2_000, 4);
    for row in inputs.chunks_mut(FEATURES) {
        for (i, x) in row[..FEATURES - 1].iter_mut().enumerate() {
            *x = i as f32 + (*x - i as f32) * 3.0;
        }
    }
    let report = monitor_over(&bytes, &inputs, &confidences, 4096);
    let expected = 5.0 / 6.0 * libm::logf(3.0);
    assert!((report.input_spread - expected).abs() < 0.1, "{report:?}");
    assert!(report.input_shift < 0.1, "{report:?}");
    assert!(report.is_drifting());
}

#[test]
fn unsure_predictions_are_drift() {
    let bytes = reference_model();
    let (inputs, _) = training(2_000, 5);
    let unsure: Vec<f32> = (0..2_000)
        .map(|i| 0.4 + 0.2 * (i % 7) as f32 / 7.0)
        .collect();
    let report = monitor_over(&bytes, &inputs, &unsure, 4096);
    assert!(report.input_shift < 0.1);
    assert!(report.confidence_psi.unwrap() > 1.0, "{report:?}");
    assert!(report.is_drifting());
}

#[test]
fn the_window_forgets_old_data() {
    let bytes = reference_model();
    let model = Model::from_bytes(&bytes).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    let mut monitor = DriftMonitor::<FEATURES, BINS>::new(reference, 256).unwrap();
    let (mut inputs, _) = training(3_000, 6);
    for row in inputs.chunks(FEATURES).take(1_000) {
        monitor.observe_input(row).unwrap();
    }
    assert!(!monitor.report().is_drifting());
    for row in inputs.chunks_mut(FEATURES).skip(1_000) {
        row[0] += 5.0;
        monitor.observe_input(row).unwrap();
    }
    // 2000 samples = about 8 windows after the change: the old data weighs e^-8.
    assert!(
        (monitor.mean()[0] - 5.0).abs() < 0.2,
        "{:?}",
        monitor.mean()
    );
    assert!(monitor.report().is_drifting());
    monitor.reset();
    assert_eq!(monitor.report().samples, 0);
    assert_eq!(monitor.report().score, 0.0);
}

#[test]
fn int8_inputs_and_outputs_are_dequantized() {
    let bytes = reference_model();
    let model = Model::from_bytes(&bytes).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    let mut float = DriftMonitor::<FEATURES, BINS>::new(reference, 100).unwrap();
    let mut int8 = float.clone();
    let q = [-128i8, -3, 0, 7, 50, 127];
    let (scale, zero_point) = (0.05, -3);
    let x: Vec<f32> = q
        .iter()
        .map(|&v| scale * (v as i32 - zero_point) as f32)
        .collect();
    float.observe_input(&x).unwrap();
    int8.observe_input_i8(&q, scale, zero_point).unwrap();
    float.observe_probabilities(&[0.25, 0.75]).unwrap();
    int8.observe_probabilities_i8(&[-64, 64], 1.0 / 256.0, -128);
    assert_eq!(float.report(), int8.report());
}

#[test]
fn welford_is_exact_within_the_window() {
    let bytes = reference_model();
    let model = Model::from_bytes(&bytes).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    let mut monitor = DriftMonitor::<FEATURES, BINS>::new(reference, 1000).unwrap();
    let (inputs, _) = training(500, 7);
    for row in inputs.chunks(FEATURES) {
        monitor.observe_input(row).unwrap();
    }
    let exact = reference_constants(&inputs, FEATURES, None);
    for i in 0..FEATURES {
        assert!((monitor.mean()[i] - exact[0].1[i]).abs() < 1e-4);
        assert!((monitor.variance()[i] - exact[1].1[i]).abs() < 1e-3 * (1.0 + exact[1].1[i]));
    }
}

#[test]
fn bad_samples_and_references_are_named() {
    let bytes = reference_model();
    let model = Model::from_bytes(&bytes).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    assert_eq!(reference.features(), FEATURES);
    assert_eq!(reference.confidence_bins(), Some(BINS));
    let mut monitor = DriftMonitor::<FEATURES, BINS>::new(reference, 10).unwrap();
    assert_eq!(
        monitor.observe_input(&[0.0; 5]),
        Err(DriftError::LengthMismatch {
            what: "input",
            expected: FEATURES,
            actual: 5
        })
    );
    let mut nan = [0.0; FEATURES];
    nan[2] = f32::NAN;
    assert_eq!(monitor.observe_input(&nan), Err(DriftError::NonFinite));
    assert_eq!(
        monitor.report().samples,
        0,
        "a refused sample is not counted"
    );
    assert_eq!(
        DriftMonitor::<5, BINS>::new(reference, 10).err(),
        Some(DriftError::LengthMismatch {
            what: INPUT_MEAN,
            expected: 5,
            actual: FEATURES
        })
    );
    assert_eq!(
        DriftMonitor::<FEATURES, 0>::new(reference, 10).err(),
        Some(DriftError::LengthMismatch {
            what: CONFIDENCE_HISTOGRAM,
            expected: 0,
            actual: BINS
        })
    );

    let plain = model_with(Vec::new());
    let model = Model::from_bytes(&plain).unwrap();
    assert_eq!(
        DriftReference::from_model(&model).err(),
        Some(DriftError::MissingReference(INPUT_MEAN))
    );
    let short = model_with(std::vec![
        (INPUT_MEAN.into(), std::vec![0.0; FEATURES]),
        (INPUT_VAR.into(), std::vec![1.0; FEATURES - 1]),
    ]);
    let model = Model::from_bytes(&short).unwrap();
    assert_eq!(
        DriftReference::from_model(&model).err(),
        Some(DriftError::LengthMismatch {
            what: INPUT_VAR,
            expected: FEATURES,
            actual: FEATURES - 1
        })
    );
    let negative = model_with(std::vec![
        (INPUT_MEAN.into(), std::vec![0.0; FEATURES]),
        (INPUT_VAR.into(), std::vec![-1.0; FEATURES]),
    ]);
    let model = Model::from_bytes(&negative).unwrap();
    assert_eq!(
        DriftReference::from_model(&model).err(),
        Some(DriftError::InvalidReference(INPUT_VAR))
    );
    // Without a histogram the monitor judges inputs alone.
    let inputs_only = model_with(std::vec![
        (INPUT_MEAN.into(), std::vec![0.0; FEATURES]),
        (INPUT_VAR.into(), std::vec![1.0; FEATURES]),
    ]);
    let model = Model::from_bytes(&inputs_only).unwrap();
    let reference = DriftReference::from_model(&model).unwrap();
    let mut monitor = DriftMonitor::<FEATURES, 0>::new(reference, 10).unwrap();
    monitor.observe_input(&[0.0; FEATURES]).unwrap();
    monitor.observe_probabilities(&[0.1, 0.9]).unwrap();
    assert_eq!(monitor.report().confidence_psi, None);
}

proptest! {
    /// Any finite samples give finite, non-negative figures.
    #[test]
    fn reports_stay_finite(
        rows in proptest::collection::vec(proptest::array::uniform6(-1e6f32..1e6), 1..50),
        tops in proptest::collection::vec(0f32..=1.0, 0..50),
        window in 1u32..100,
    ) {
        let bytes = reference_model_cached();
        let model = Model::from_bytes(bytes).unwrap();
        let reference = DriftReference::from_model(&model).unwrap();
        let mut monitor = DriftMonitor::<FEATURES, BINS>::new(reference, window).unwrap();
        for row in &rows {
            monitor.observe_input(row).unwrap();
        }
        for &p in &tops {
            monitor.observe_probabilities(&[p]).unwrap();
        }
        let r = monitor.report();
        prop_assert!(r.score.is_finite() && r.score >= 0.0, "{:?}", r);
        prop_assert!(r.input_shift.is_finite() && r.input_spread.is_finite());
        prop_assert!(monitor.variance().iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}

fn reference_model_cached() -> &'static AlignedBytes {
    static MODEL: std::sync::OnceLock<AlignedBytes> = std::sync::OnceLock::new();
    MODEL.get_or_init(reference_model)
}
