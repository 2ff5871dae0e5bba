//! Drift monitoring in the field: is the device still seeing the data it was trained on?
//!
//! A [`DriftMonitor`] keeps, in fixed memory, the running mean and variance of each model input
//! (or of any vector the application chooses, such as an embedding) and a histogram of
//! prediction confidence, and compares them with the training statistics the tools stored in
//! the `.loam` file as preprocessing constants:
//!
//! | constant | values |
//! |---|---|
//! | [`INPUT_MEAN`] | per-feature mean over the training set |
//! | [`INPUT_VAR`] | per-feature (population) variance |
//! | [`CONFIDENCE_HISTOGRAM`] | optional: the share of training predictions whose top probability falls in each of `B` equal bins of `[0, 1]` |
//!
//! [`DriftMonitor::report`] turns the comparison into three figures and one score, where a
//! score of 1 or more means "drifting" at the chosen [`DriftThresholds`]. The application
//! decides what to do: fine-tune on device, or report home.
//!
//! The statistics follow a window: over the first `window` samples they are exact (Welford's
//! algorithm); after that each new sample weighs `1/window` and older ones fade exponentially,
//! so the monitor tracks the present and its `f32` sums never stall however long it runs.

use core::fmt;

use crate::format::{ConstantRecord, Model};

/// Name of the per-feature training mean among a model's constants.
pub const INPUT_MEAN: &str = "drift.input.mean";
/// Name of the per-feature training variance among a model's constants.
pub const INPUT_VAR: &str = "drift.input.var";
/// Name of the training confidence histogram among a model's constants.
pub const CONFIDENCE_HISTOGRAM: &str = "drift.confidence.histogram";

/// Why a monitor could not be built or a sample not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DriftError {
    /// The model has no constant of this name (written by `loam` when it knows the training
    /// data).
    MissingReference(&'static str),
    /// A reference constant or a sample has the wrong length.
    LengthMismatch {
        /// What is wrong: a constant's name, or `"input"`.
        what: &'static str,
        /// The length the monitor was built for.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// A reference value is negative or not finite (a variance, a histogram share).
    InvalidReference(&'static str),
    /// The sample holds a NaN or an infinity; it was not counted, so one sensor glitch cannot
    /// poison the statistics.
    NonFinite,
}

impl fmt::Display for DriftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftError::MissingReference(name) => {
                write!(
                    f,
                    "the model has no `{name}` constant (training statistics)"
                )
            }
            DriftError::LengthMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what}: {actual} values, the monitor expects {expected}"),
            DriftError::InvalidReference(name) => {
                write!(f, "`{name}` holds a negative or non-finite value")
            }
            DriftError::NonFinite => f.write_str("sample holds NaN or infinity (not counted)"),
        }
    }
}

impl core::error::Error for DriftError {}

/// The training statistics, read in place from a model's constants.
#[derive(Debug, Clone, Copy)]
pub struct DriftReference<'a> {
    mean: ConstantRecord<'a>,
    var: ConstantRecord<'a>,
    confidence: Option<ConstantRecord<'a>>,
}

impl<'a> DriftReference<'a> {
    /// Reads [`INPUT_MEAN`], [`INPUT_VAR`] and (if present) [`CONFIDENCE_HISTOGRAM`].
    pub fn from_model(model: &Model<'a>) -> Result<Self, DriftError> {
        let mean = model
            .constant(INPUT_MEAN)
            .ok_or(DriftError::MissingReference(INPUT_MEAN))?;
        let var = model
            .constant(INPUT_VAR)
            .ok_or(DriftError::MissingReference(INPUT_VAR))?;
        let confidence = model.constant(CONFIDENCE_HISTOGRAM);
        let features = mean.values().count();
        if var.values().count() != features {
            return Err(DriftError::LengthMismatch {
                what: INPUT_VAR,
                expected: features,
                actual: var.values().count(),
            });
        }
        if mean.values().any(|m| !m.is_finite()) {
            return Err(DriftError::InvalidReference(INPUT_MEAN));
        }
        if var.values().any(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(DriftError::InvalidReference(INPUT_VAR));
        }
        if let Some(h) = &confidence {
            if h.values().any(|p| !(p.is_finite() && p >= 0.0)) || h.values().sum::<f32>() <= 0.0 {
                return Err(DriftError::InvalidReference(CONFIDENCE_HISTOGRAM));
            }
        }
        Ok(DriftReference {
            mean,
            var,
            confidence,
        })
    }

    /// Features per sample.
    pub fn features(&self) -> usize {
        self.mean.values().count()
    }

    /// Bins of the confidence histogram, if the model has one.
    pub fn confidence_bins(&self) -> Option<usize> {
        self.confidence.map(|h| h.values().count())
    }
}

/// When a figure counts as drift. A report's score is the largest figure divided by its
/// threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DriftThresholds {
    /// Mean shift in training standard deviations, averaged over features.
    pub input_shift: f32,
    /// `|ln(std / training std)|` averaged over features; `ln 2` is a doubling or halving.
    pub input_spread: f32,
    /// Population stability index of the confidence histogram; 0.25 is the usual "the
    /// population has changed" mark in credit scoring, where PSI comes from.
    pub confidence_psi: f32,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds {
            input_shift: 0.5,
            input_spread: core::f32::consts::LN_2,
            confidence_psi: 0.25,
        }
    }
}

/// How far the recent data is from the training data.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DriftReport {
    /// Samples seen since the monitor started (or was reset).
    pub samples: u32,
    /// Mean over features of `|mean - training mean| / training std`.
    pub input_shift: f32,
    /// Mean over features of `|ln(std / training std)|`.
    pub input_spread: f32,
    /// Population stability index of prediction confidence, when the model has a reference
    /// histogram and predictions were observed.
    pub confidence_psi: Option<f32>,
    /// The largest figure over its threshold: 1 or more means drifting.
    pub score: f32,
}

impl DriftReport {
    /// Whether any figure reached its threshold.
    pub fn is_drifting(&self) -> bool {
        self.score >= 1.0
    }
}

/// Running input statistics and a confidence histogram for a model with `FEATURES` inputs
/// and a `BINS`-bin reference histogram (use `BINS = 0` when the model has none). Memory:
/// `8 * FEATURES + 4 * BINS` bytes plus a few words; no heap.
#[derive(Debug, Clone)]
pub struct DriftMonitor<'a, const FEATURES: usize, const BINS: usize> {
    reference: DriftReference<'a>,
    thresholds: DriftThresholds,
    window: u32,
    samples: u32,
    mean: [f32; FEATURES],
    var: [f32; FEATURES],
    histogram: [f32; BINS],
    predictions: u32,
}

impl<'a, const FEATURES: usize, const BINS: usize> DriftMonitor<'a, FEATURES, BINS> {
    /// A monitor comparing with `reference`, exact over the first `window` samples and
    /// exponentially fading after (see the module docs). Checks that `FEATURES` and `BINS`
    /// match the model's statistics.
    pub fn new(reference: DriftReference<'a>, window: u32) -> Result<Self, DriftError> {
        if reference.features() != FEATURES {
            return Err(DriftError::LengthMismatch {
                what: INPUT_MEAN,
                expected: FEATURES,
                actual: reference.features(),
            });
        }
        let bins = reference.confidence_bins().unwrap_or(0);
        if bins != BINS {
            return Err(DriftError::LengthMismatch {
                what: CONFIDENCE_HISTOGRAM,
                expected: BINS,
                actual: bins,
            });
        }
        Ok(DriftMonitor {
            reference,
            thresholds: DriftThresholds::default(),
            window: window.max(1),
            samples: 0,
            mean: [0.0; FEATURES],
            var: [0.0; FEATURES],
            histogram: [0.0; BINS],
            predictions: 0,
        })
    }

    /// The same monitor judging with other thresholds.
    pub fn with_thresholds(mut self, thresholds: DriftThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Forgets everything observed (after a fine-tune has adapted the model, say).
    pub fn reset(&mut self) {
        self.samples = 0;
        self.mean = [0.0; FEATURES];
        self.var = [0.0; FEATURES];
        self.histogram = [0.0; BINS];
        self.predictions = 0;
    }

    /// Counts one input sample.
    pub fn observe_input(&mut self, x: &[f32]) -> Result<(), DriftError> {
        self.check_input(x.len())?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DriftError::NonFinite);
        }
        let weight = self.next_weight();
        for ((m, v), &x) in self.mean.iter_mut().zip(&mut self.var).zip(x) {
            update(m, v, x, weight);
        }
        Ok(())
    }

    /// Counts one int8 input sample, dequantized with the input tensor's parameters.
    pub fn observe_input_i8(
        &mut self,
        x: &[i8],
        scale: f32,
        zero_point: i32,
    ) -> Result<(), DriftError> {
        self.check_input(x.len())?;
        if !scale.is_finite() {
            return Err(DriftError::NonFinite);
        }
        let weight = self.next_weight();
        for ((m, v), &q) in self.mean.iter_mut().zip(&mut self.var).zip(x) {
            update(m, v, scale * (q as i32 - zero_point) as f32, weight);
        }
        Ok(())
    }

    /// Counts one prediction by its top probability (the largest of `probabilities`).
    pub fn observe_probabilities(&mut self, probabilities: &[f32]) -> Result<(), DriftError> {
        let top = probabilities
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if !top.is_finite() {
            return Err(DriftError::NonFinite);
        }
        self.observe_confidence(top);
        Ok(())
    }

    /// Counts one int8 prediction (an int8 softmax output with its scale and zero point).
    pub fn observe_probabilities_i8(&mut self, probabilities: &[i8], scale: f32, zero_point: i32) {
        if let Some(&top) = probabilities.iter().max() {
            self.observe_confidence(scale * (top as i32 - zero_point) as f32);
        }
    }

    fn observe_confidence(&mut self, p: f32) {
        if BINS == 0 {
            return;
        }
        let bin = ((p.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1);
        // The histogram fades like the moments: shares, each update weighing 1/n.
        self.predictions = self.predictions.saturating_add(1);
        let weight = 1.0 / self.predictions.min(self.window) as f32;
        for (i, h) in self.histogram.iter_mut().enumerate() {
            let hit = if i == bin { 1.0 } else { 0.0 };
            *h += (hit - *h) * weight;
        }
    }

    /// Per-feature running mean.
    pub fn mean(&self) -> &[f32; FEATURES] {
        &self.mean
    }

    /// Per-feature running (population) variance.
    pub fn variance(&self) -> &[f32; FEATURES] {
        &self.var
    }

    /// How far the observed data is from the training data; all zeros before any sample.
    pub fn report(&self) -> DriftReport {
        let mut report = DriftReport {
            samples: self.samples,
            input_shift: 0.0,
            input_spread: 0.0,
            confidence_psi: None,
            score: 0.0,
        };
        if self.samples > 0 && FEATURES > 0 {
            // Features that never vary in training (an image's border) would divide by zero;
            // their spread is floored at 1% of the typical training spread.
            let typical = libm::sqrtf(self.reference.var.values().sum::<f32>() / FEATURES as f32);
            let floor = 0.01 * typical + f32::MIN_POSITIVE;
            let (mut shift, mut spread) = (0.0f32, 0.0f32);
            let reference = self
                .reference
                .mean
                .values()
                .zip(self.reference.var.values());
            for ((&m, &v), (ref_m, ref_v)) in self.mean.iter().zip(&self.var).zip(reference) {
                let ref_std = libm::sqrtf(ref_v).max(floor);
                shift += libm::fabsf(m - ref_m) / ref_std;
                spread += libm::fabsf(libm::logf(libm::sqrtf(v).max(floor) / ref_std));
            }
            report.input_shift = shift / FEATURES as f32;
            report.input_spread = spread / FEATURES as f32;
        }
        if let (Some(reference), true) = (self.reference.confidence, self.predictions > 0) {
            let total = reference.values().sum::<f32>();
            // A share of zero on either side would make the index infinite.
            const SMOOTHING: f32 = 1e-4;
            let psi = reference
                .values()
                .zip(&self.histogram)
                .map(|(r, &o)| {
                    let (r, o) = (r / total + SMOOTHING, o + SMOOTHING);
                    (o - r) * libm::logf(o / r)
                })
                .sum::<f32>();
            report.confidence_psi = Some(psi);
        }
        let t = &self.thresholds;
        report.score = (report.input_shift / t.input_shift)
            .max(report.input_spread / t.input_spread)
            .max(report.confidence_psi.unwrap_or(0.0) / t.confidence_psi);
        report
    }

    fn check_input(&self, len: usize) -> Result<(), DriftError> {
        if len != FEATURES {
            return Err(DriftError::LengthMismatch {
                what: "input",
                expected: FEATURES,
                actual: len,
            });
        }
        Ok(())
    }

    fn next_weight(&mut self) -> f32 {
        self.samples = self.samples.saturating_add(1);
        1.0 / self.samples.min(self.window) as f32
    }
}

/// One step of Welford's update, in the form `var' = (1 - w)(var + w * delta^2)`: with
/// `w = 1/n` it gives the exact population mean and variance of the first `n` samples; with a
/// fixed `w`, exponentially weighted ones. Unlike the textbook form it cannot go negative
/// through rounding.
fn update(mean: &mut f32, var: &mut f32, x: f32, weight: f32) {
    let delta = x - *mean;
    *mean += delta * weight;
    *var = (1.0 - weight) * (*var + weight * delta * delta);
}

/// The constants a model needs for drift monitoring, computed from training inputs (`rows`
/// samples of `features` values, row-major) and, optionally, the top probability of each
/// training prediction (`bins` equal bins of `[0, 1]`). Sums in `f64`, so the reference is as
/// exact as the data. Add them to the builder's `metadata.constants`.
#[cfg(feature = "alloc")]
pub fn reference_constants(
    inputs: &[f32],
    features: usize,
    confidences: Option<(&[f32], usize)>,
) -> alloc::vec::Vec<(alloc::string::String, alloc::vec::Vec<f32>)> {
    use alloc::string::ToString;
    use alloc::vec;
    let rows = inputs.len().checked_div(features).unwrap_or(0).max(1) as f64;
    let mut mean = vec![0f64; features];
    for row in inputs.chunks_exact(features.max(1)) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    let mut var = vec![0f64; features];
    for row in inputs.chunks_exact(features.max(1)) {
        for ((v, &m), &x) in var.iter_mut().zip(&mean).zip(row) {
            *v += (x as f64 - m) * (x as f64 - m);
        }
    }
    let to_f32 = |v: alloc::vec::Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    let var: alloc::vec::Vec<f64> = var.into_iter().map(|v| v / rows).collect();
    let mut constants = vec![
        (INPUT_MEAN.to_string(), to_f32(mean)),
        (INPUT_VAR.to_string(), to_f32(var)),
    ];
    if let Some((top, bins)) = confidences {
        let mut histogram = vec![0f32; bins.max(1)];
        for &p in top {
            let bin = ((p.clamp(0.0, 1.0) * bins as f32) as usize).min(bins.max(1) - 1);
            histogram[bin] += 1.0;
        }
        let n = top.len().max(1) as f32;
        histogram.iter_mut().for_each(|h| *h /= n);
        constants.push((CONFIDENCE_HISTOGRAM.to_string(), histogram));
    }
    constants
}

#[cfg(test)]
mod tests;
