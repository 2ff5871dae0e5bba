//! Cleaning and transforms that are fit on the training split and then applied, unchanged,
//! to every split, so no statistic of validation or test data leaks into training.
//!
//! [`Preprocessing::fit`] runs the steps in a fixed order, each fit on the training data as
//! the previous steps left it: missing values (drop or impute), outlier clipping, binning,
//! then scaling. The result serializes (serde) so it can be stored with a model, and
//! [`Preprocessing::affine`] reduces it to per-feature constants a device can apply.

use std::collections::HashSet;
use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{Dataset, Targets};

/// What to do about missing (NaN) feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Leave them as NaN.
    #[default]
    Keep,
    /// Drop every row that has one (in every split the preprocessing is applied to).
    DropRows,
    /// Replace them with the training mean of their column.
    Mean,
    /// Replace them with the training median of their column.
    Median,
    /// Replace them with the most frequent training value of their column (the smallest of
    /// equally frequent ones).
    Mode,
}

/// How to rescale features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Leave them as they are.
    #[default]
    None,
    /// To [0, 1] over the training range: `(x - min) / (max - min)`.
    MinMax,
    /// To zero mean and unit variance over the training data: `(x - mean) / std`.
    Standardize,
}

/// What to fit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PrepOptions {
    /// Missing-value handling.
    pub missing: Missing,
    /// Clip each column to these training percentiles (each in 0..=100, low below high),
    /// e.g. `(1.0, 99.0)`.
    pub clip: Option<(f32, f32)>,
    /// Replace each value by its bin index among this many equal-width bins spanning the
    /// training range (at least 2).
    pub bins: Option<usize>,
    /// Rescaling, last.
    pub scaling: Scaling,
    /// Fit one statistic over all features instead of one per feature (for images, where
    /// every pixel should be scaled alike).
    pub shared: bool,
}

/// One fitted step; every vector has one entry per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Drop rows with a missing value.
    DropMissing,
    /// Replace missing values of feature `j` by `values[j]`.
    Impute {
        /// How the values were computed.
        method: Missing,
        /// The replacement per feature.
        values: Vec<f32>,
    },
    /// Clip feature `j` to `[lo[j], hi[j]]`.
    Clip {
        /// The percentiles fit.
        percentiles: (f32, f32),
        /// Lower bounds.
        lo: Vec<f32>,
        /// Upper bounds.
        hi: Vec<f32>,
    },
    /// Replace feature `j` by `floor((x - min[j]) / (max[j] - min[j]) * bins)`, kept
    /// within `0..bins` (0 where `max[j] <= min[j]`).
    Bin {
        /// The number of bins.
        bins: usize,
        /// Training minimum per feature.
        min: Vec<f32>,
        /// Training maximum per feature.
        max: Vec<f32>,
    },
    /// Replace feature `j` by `(x - offset[j]) * scale[j]`.
    Scale {
        /// Which scaling was fit (min-max: offset = min; standardize: offset = mean).
        kind: Scaling,
        /// Subtracted first.
        offset: Vec<f32>,
        /// Then multiplied by.
        scale: Vec<f32>,
    },
}

/// A fitted chain of cleaning and transform steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// The number of features per sample it was fit on (and applies to).
    pub features: usize,
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
}

impl Preprocessing {
    /// Fits the steps `options` asks for on `train`.
    pub fn fit(train: &Dataset, options: &PrepOptions) -> Result<Preprocessing> {
        let n = train.sample_len();
        let mut prep = Preprocessing {
            features: n,
            steps: Vec::new(),
        };
        // Each step is fit on the data the earlier ones produced.
        let mut data = train.clone();
        let push = |prep: &mut Preprocessing, data: &mut Dataset, step: Step| {
            let one = Preprocessing {
                features: n,
                steps: vec![step],
            };
            one.apply(data)?;
            prep.steps.extend(one.steps);
            anyhow::Ok(())
        };
        if data.rows() == 0 {
            bail!("{}: no training rows to fit preprocessing on", train.name);
        }

        match options.missing {
            Missing::Keep => {}
            Missing::DropRows => {
                push(&mut prep, &mut data, Step::DropMissing)?;
                if data.rows() == 0 {
                    bail!(
                        "{}: every training row has a missing value; impute instead of \
                         dropping rows",
                        train.name
                    );
                }
            }
            method => {
                let columns = columns(&data, options.shared);
                let mut values = Vec::with_capacity(columns.len());
                for (j, col) in columns.iter().enumerate() {
                    let v = match method {
                        Missing::Mean => mean(col),
                        Missing::Median => percentile(col, 50.0),
                        _ => mode(col),
                    };
                    let Some(v) = v else {
                        bail!(
                            "{}: feature `{}` has no values in the training data to impute from",
                            train.name,
                            data.feature_names.get(j).map_or("?", String::as_str)
                        );
                    };
                    values.push(v);
                }
                let values = widen(values, n);
                push(&mut prep, &mut data, Step::Impute { method, values })?;
            }
        }

        if let Some((plo, phi)) = options.clip {
            if !(0.0 <= plo && plo < phi && phi <= 100.0) {
                bail!("clip percentiles ({plo}, {phi}) must satisfy 0 <= low < high <= 100");
            }
            let columns = columns(&data, options.shared);
            let lo = columns
                .iter()
                .map(|c| percentile(c, plo).unwrap_or(f32::NEG_INFINITY))
                .collect();
            let hi = columns
                .iter()
                .map(|c| percentile(c, phi).unwrap_or(f32::INFINITY))
                .collect();
            let step = Step::Clip {
                percentiles: (plo, phi),
                lo: widen(lo, n),
                hi: widen(hi, n),
            };
            push(&mut prep, &mut data, step)?;
        }

        if let Some(bins) = options.bins {
            if bins < 2 {
                bail!("binning needs at least 2 bins, not {bins}");
            }
            let (min, max) = min_max(&columns(&data, options.shared));
            let step = Step::Bin {
                bins,
                min: widen(min, n),
                max: widen(max, n),
            };
            push(&mut prep, &mut data, step)?;
        }

        let cols = || columns(&data, options.shared);
        let (offset, scale): (Vec<f32>, Vec<f32>) = match options.scaling {
            Scaling::None => (Vec::new(), Vec::new()),
            Scaling::MinMax => {
                let (min, max) = min_max(&cols());
                let scale = min
                    .iter()
                    .zip(&max)
                    .map(|(&lo, &hi)| if hi > lo { 1.0 / (hi - lo) } else { 1.0 })
                    .collect();
                (min, scale)
            }
            Scaling::Standardize => cols()
                .iter()
                .map(|c| match (mean(c), std(c)) {
                    (Some(m), Some(s)) if s > 0.0 => (m, 1.0 / s),
                    (Some(m), _) => (m, 1.0),
                    _ => (0.0, 1.0),
                })
                .unzip(),
        };
        if options.scaling != Scaling::None {
            let step = Step::Scale {
                kind: options.scaling,
                offset: widen(offset, n),
                scale: widen(scale, n),
            };
            push(&mut prep, &mut data, step)?;
        }
        Ok(prep)
    }

    /// Applies the steps to `data` in place; returns how many rows were dropped for missing
    /// values.
    pub fn apply(&self, data: &mut Dataset) -> Result<usize> {
        let n = data.sample_len();
        if n != self.features {
            bail!(
                "{}: preprocessing was fit on samples of {} features, not {n}",
                data.name,
                self.features
            );
        }
        self.check()?;
        let mut dropped = 0;
        for step in &self.steps {
            if let Step::DropMissing = step {
                let keep: Vec<usize> = (0..data.rows())
                    .filter(|&i| !data.sample(i).iter().any(|x| x.is_nan()))
                    .collect();
                dropped += data.rows() - keep.len();
                if keep.len() < data.rows() {
                    *data = data.subset(&keep);
                }
                continue;
            }
            for row in data.features.chunks_exact_mut(n.max(1)) {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = match step {
                        Step::DropMissing => *x,
                        Step::Impute { values, .. } => {
                            if x.is_nan() {
                                values[j]
                            } else {
                                *x
                            }
                        }
                        Step::Clip { lo, hi, .. } => {
                            // Not f32::clamp: it panics on bounds that a hand-edited file
                            // could get out of order.
                            if *x < lo[j] {
                                lo[j]
                            } else if *x > hi[j] {
                                hi[j]
                            } else {
                                *x
                            }
                        }
                        Step::Bin { bins, min, max } => bin(*x, *bins, min[j], max[j]),
                        Step::Scale { offset, scale, .. } => (*x - offset[j]) * scale[j],
                    };
                }
            }
        }
        Ok(dropped)
    }

    /// Per-feature `(offset, scale)` with `x' = (x - offset) * scale`, when the chain is that
    /// affine map for every input a device sees; `None` when it is not (clipping, binning).
    ///
    /// Dropping and imputing missing values are left out: a device's inputs have none. An
    /// empty chain gives the identity (offsets 0, scales 1).
    pub fn affine(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let mut offset = vec![0.0f32; self.features];
        let mut scale = vec![1.0f32; self.features];
        for step in &self.steps {
            match step {
                Step::DropMissing | Step::Impute { .. } => {}
                Step::Clip { .. } | Step::Bin { .. } => return None,
                Step::Scale {
                    offset: o2,
                    scale: s2,
                    ..
                } => {
                    if o2.len() != self.features || s2.len() != self.features {
                        return None;
                    }
                    for j in 0..self.features {
                        // ((x - o) s - o2) s2 = (x - (o + o2 / s)) (s s2), for s != 0.
                        if scale[j] == 0.0 {
                            return None;
                        }
                        offset[j] += o2[j] / scale[j];
                        scale[j] *= s2[j];
                    }
                }
            }
        }
        Some((offset, scale))
    }

    /// Checks that every step has one entry per feature (a deserialized chain may not).
    pub fn check(&self) -> Result<()> {
        let n = self.features;
        for (i, step) in self.steps.iter().enumerate() {
            let lens: Vec<usize> = match step {
                Step::DropMissing => vec![],
                Step::Impute { values, .. } => vec![values.len()],
                Step::Clip { lo, hi, .. } => vec![lo.len(), hi.len()],
                Step::Bin { min, max, .. } => vec![min.len(), max.len()],
                Step::Scale { offset, scale, .. } => vec![offset.len(), scale.len()],
            };
            if lens.iter().any(|&l| l != n) {
                bail!("preprocessing step {i} has {lens:?} entries for {n} features");
            }
        }
        Ok(())
    }
}

impl fmt::Display for Preprocessing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return writeln!(f, "no preprocessing");
        }
        for step in &self.steps {
            match step {
                Step::DropMissing => writeln!(f, "drop rows with missing values")?,
                Step::Impute { method, .. } => writeln!(f, "impute missing values ({method:?})")?,
                Step::Clip {
                    percentiles: (lo, hi),
                    ..
                } => writeln!(f, "clip to percentiles {lo}..{hi}")?,
                Step::Bin { bins, .. } => writeln!(f, "bin into {bins} equal-width bins")?,
                Step::Scale { kind, .. } => writeln!(f, "scale ({kind:?})")?,
            }
        }
        Ok(())
    }
}

fn bin(x: f32, bins: usize, min: f32, max: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return 0.0;
    }
    let k = ((x - min) / (max - min) * bins as f32).floor();
    k.max(0.0).min(bins.saturating_sub(1) as f32)
}

/// The non-missing values of each feature column, or of all features pooled when `shared`.
fn columns(data: &Dataset, shared: bool) -> Vec<Vec<f32>> {
    let n = data.sample_len();
    if shared {
        return vec![
            data.features
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .collect(),
        ];
    }
    let mut cols = vec![Vec::with_capacity(data.rows()); n];
    for row in data.features.chunks_exact(n.max(1)) {
        for (j, &x) in row.iter().enumerate() {
            if !x.is_nan() {
                cols[j].push(x);
            }
        }
    }
    cols
}

/// Repeats a pooled statistic for every feature; per-feature statistics pass through.
fn widen(values: Vec<f32>, n: usize) -> Vec<f32> {
    match values.as_slice() {
        [one] if n != 1 => vec![*one; n],
        _ => values,
    }
}

fn mean(values: &[f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    // f64 sums: a million f32 pixels would lose digits.
    Some((values.iter().map(|&x| f64::from(x)).sum::<f64>() / values.len() as f64) as f32)
}

/// Population standard deviation.
fn std(values: &[f32]) -> Option<f32> {
    let m = f64::from(mean(values)?);
    let var = values
        .iter()
        .map(|&x| (f64::from(x) - m).powi(2))
        .sum::<f64>()
        / values.len() as f64;
    Some(var.sqrt() as f32)
}

/// The `p`-th percentile (0..=100), interpolating linearly between order statistics (as
/// NumPy's default does).
fn percentile(values: &[f32], p: f32) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = f64::from(p.clamp(0.0, 100.0)) / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let t = rank - lo as f64;
    Some((f64::from(sorted[lo]) * (1.0 - t) + f64::from(sorted[hi]) * t) as f32)
}

fn mode(values: &[f32]) -> Option<f32> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let mut best: Option<(f32, usize)> = None;
    for run in sorted.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, count)| run.len() > count) {
            best = Some((run[0], run.len()));
        }
    }
    best.map(|(v, _)| v)
}

/// Per column (min, max); columns without values get (0, 0).
fn min_max(columns: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    columns
        .iter()
        .map(|c| {
            let lo = c.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if lo <= hi { (lo, hi) } else { (0.0, 0.0) }
        })
        .unzip()
}

/// Drops repeated rows (same feature values and same target), keeping the first of each;
/// returns how many were dropped. Do this before splitting, so that copies of one row
/// cannot land in both training and test data.
pub fn drop_duplicates(data: &mut Dataset) -> usize {
    let rows = data.rows();
    let mut seen = HashSet::with_capacity(rows);
    let mut keep = Vec::with_capacity(rows);
    for i in 0..rows {
        if seen.insert(row_key(data, i)) {
            keep.push(i);
        }
    }
    let dropped = rows - keep.len();
    if dropped > 0 {
        *data = data.subset(&keep);
    }
    dropped
}

/// The number of repeated rows [`drop_duplicates`] would drop.
pub fn count_duplicates(data: &Dataset) -> usize {
    let mut seen = HashSet::with_capacity(data.rows());
    (0..data.rows())
        .filter(|&i| !seen.insert(row_key(data, i)))
        .count()
}

/// A row's values as bits, with -0 folded into 0 and every NaN into one NaN so equal
/// values hash alike.
fn row_key(data: &Dataset, i: usize) -> Vec<u32> {
    let bits = |x: f32| {
        if x == 0.0 {
            0
        } else if x.is_nan() {
            f32::NAN.to_bits()
        } else {
            x.to_bits()
        }
    };
    let mut key: Vec<u32> = data.sample(i).iter().map(|&x| bits(x)).collect();
    match &data.targets {
        Targets::Classes(c) => key.push(c[i]),
        Targets::Values { values, width } => {
            key.extend(values[i * width..(i + 1) * width].iter().map(|&x| bits(x)))
        }
        Targets::None => {}
    }
    key
}

/// How many rows each class has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassBalance {
    /// Class names, by id.
    pub names: Vec<String>,
    /// Rows per class, by id.
    pub counts: Vec<usize>,
    /// The largest count over the smallest non-zero one (1 when balanced).
    pub ratio: f32,
}

impl ClassBalance {
    /// The balance of `data`'s classes, or `None` when its targets are not classes.
    pub fn of(data: &Dataset) -> Option<ClassBalance> {
        let classes = data.classes()?;
        let mut counts = vec![0usize; data.num_classes()];
        for &c in classes {
            counts[c as usize] += 1;
        }
        let names = (0..counts.len())
            .map(|i| {
                data.class_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| i.to_string())
            })
            .collect();
        let max = counts.iter().copied().max().unwrap_or(0);
        let min = counts.iter().copied().filter(|&c| c > 0).min().unwrap_or(0);
        let ratio = if min == 0 {
            1.0
        } else {
            max as f32 / min as f32
        };
        Some(ClassBalance {
            names,
            counts,
            ratio,
        })
    }

    /// Inverse-frequency weights, scaled so that their mean over the classes present is
    /// 1; classes with no rows get 0.
    pub fn weights(&self) -> Vec<f32> {
        let inverse: Vec<f64> = self
            .counts
            .iter()
            .map(|&c| if c == 0 { 0.0 } else { 1.0 / c as f64 })
            .collect();
        let present = self.counts.iter().filter(|&&c| c > 0).count();
        let sum: f64 = inverse.iter().sum();
        if present == 0 || sum == 0.0 {
            return vec![0.0; self.counts.len()];
        }
        let mean = sum / present as f64;
        inverse.iter().map(|&w| (w / mean) as f32).collect()
    }
}

impl fmt::Display for ClassBalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.counts.iter().sum();
        let width = self
            .names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0);
        for (name, &count) in self.names.iter().zip(&self.counts) {
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * count as f64 / total as f64
            };
            writeln!(f, "  {name:<width$}  {count:>8}  {pct:5.1}%")?;
        }
        writeln!(
            f,
            "  imbalance ratio (largest / smallest class): {:.2}",
            self.ratio
        )
    }
}

/// Per-class loss weights for `data` (see [`ClassBalance::weights`]), or `None` when its
/// targets are not classes.
pub fn class_weights(data: &Dataset) -> Option<Vec<f32>> {
    ClassBalance::of(data).map(|b| b.weights())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f32 = f32::NAN;

    /// Two features, four rows.
    fn table(features: Vec<f32>) -> Dataset {
        let rows = features.len() / 2;
        Dataset {
            name: "t".into(),
            sample_dims: vec![2],
            features,
            feature_names: vec!["a".into(), "b".into()],
            targets: Targets::Classes((0..rows as u32).map(|i| i % 2).collect()),
            class_names: vec!["x".into(), "y".into()],
        }
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() < 1e-5 || (g.is_nan() && w.is_nan()),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn statistics_by_hand() {
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(std(&[1.0, 3.0]), Some(1.0));
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[0.0, 10.0], 25.0), Some(2.5));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(mode(&[3.0, 1.0, 3.0, 1.0, 2.0]), Some(1.0));
        assert_eq!(mode(&[]), None);
        assert_eq!(bin(0.99, 4, 0.0, 1.0), 3.0);
        assert_eq!(bin(1.0, 4, 0.0, 1.0), 3.0);
        assert_eq!(bin(-5.0, 4, 0.0, 1.0), 0.0);
        assert_eq!(bin(0.3, 4, 0.0, 1.0), 1.0);
        assert_eq!(bin(7.0, 4, 2.0, 2.0), 0.0);
    }

    #[test]
    fn impute_mean_then_standardize_fit_on_train_only() {
        let train = table(vec![1.0, 10.0, 3.0, NAN, NAN, 30.0, 5.0, 20.0]);
        let options = PrepOptions {
            missing: Missing::Mean,
            scaling: Scaling::Standardize,
            ..PrepOptions::default()
        };
        let prep = Preprocessing::fit(&train, &options).unwrap();
        // a: mean 3 (of 1, 3, 5); b: mean 20 (of 10, 30, 20).
        assert_eq!(
            prep.steps[0],
            Step::Impute {
                method: Missing::Mean,
                values: vec![3.0, 20.0]
            }
        );
        // After imputing: a = 1 3 3 5 (mean 3, var 2); b = 10 20 30 20 (mean 20, var 50).
        let (offset, scale) = prep.affine().unwrap();
        close(&offset, &[3.0, 20.0]);
        close(&scale, &[1.0 / 2f32.sqrt(), 1.0 / 50f32.sqrt()]);

        let mut test = table(vec![3.0, 20.0, NAN, 40.0]);
        assert_eq!(prep.apply(&mut test).unwrap(), 0);
        close(&test.features, &[0.0, 0.0, 0.0, 20.0 / 50f32.sqrt()]);
        // Test data never changes the fit.
        let refit = Preprocessing::fit(&train, &options).unwrap();
        assert_eq!(refit, prep);
    }

    #[test]
    fn median_and_mode_imputation_and_all_missing_column() {
        let train = table(vec![1.0, 7.0, 2.0, 7.0, 10.0, 8.0, NAN, NAN]);
        let median = Preprocessing::fit(
            &train,
            &PrepOptions {
                missing: Missing::Median,
                ..PrepOptions::default()
            },
        )
        .unwrap();
        let mut d = train.clone();
        median.apply(&mut d).unwrap();
        assert_eq!(&d.features[6..], &[2.0, 7.0]);
        let mode = Preprocessing::fit(
            &train,
            &PrepOptions {
                missing: Missing::Mode,
                ..PrepOptions::default()
            },
        )
        .unwrap();
        let mut d = train.clone();
        mode.apply(&mut d).unwrap();
        assert_eq!(&d.features[6..], &[1.0, 7.0]);

        let empty = table(vec![1.0, NAN, 2.0, NAN]);
        let e = Preprocessing::fit(
            &empty,
            &PrepOptions {
                missing: Missing::Mean,
                ..PrepOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`b`") && e.contains("no values"), "{e}");
    }

    #[test]
    fn drop_rows_with_missing_values_in_every_split() {
        let train = table(vec![1.0, 2.0, NAN, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let prep = Preprocessing::fit(
            &train,
            &PrepOptions {
                missing: Missing::DropRows,
                scaling: Scaling::MinMax,
                ..PrepOptions::default()
            },
        )
        .unwrap();
        // Min-max fit on rows 0, 2, 3 only: a in 1..7, b in 2..8.
        let (offset, scale) = prep.affine().unwrap();
        close(&offset, &[1.0, 2.0]);
        close(&scale, &[1.0 / 6.0, 1.0 / 6.0]);
        let mut test = table(vec![4.0, NAN, 4.0, 5.0]);
        assert_eq!(prep.apply(&mut test).unwrap(), 1);
        assert_eq!(test.rows(), 1);
        close(&test.features, &[0.5, 0.5]);
        assert_eq!(test.targets, Targets::Classes(vec![1]));
    }

    #[test]
    fn clipping_percentiles_then_binning() {
        // Column a: 0..=100 step 1 has percentiles equal to the values.
        let mut features = Vec::new();
        for i in 0..=100 {
            features.extend([i as f32, 1.0]);
        }
        let train = table(features);
        let prep = Preprocessing::fit(
            &train,
            &PrepOptions {
                clip: Some((10.0, 90.0)),
                bins: Some(4),
                ..PrepOptions::default()
            },
        )
        .unwrap();
        assert!(prep.affine().is_none());
        let mut test = table(vec![-50.0, 1.0, 10.0, 1.0, 49.0, 3.0, 500.0, 0.0]);
        prep.apply(&mut test).unwrap();
        // Clipped a: 10, 10, 49, 90 -> bins of width 20 over 10..90: 0, 0, 1, 3.
        // b is constant 1 in training: always bin 0.
        assert_eq!(test.features, vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 3.0, 0.0]);
    }

    #[test]
    fn shared_statistics_and_affine_composition() {
        let train = table(vec![0.0, 16.0, 8.0, 4.0]);
        let prep = Preprocessing::fit(
            &train,
            &PrepOptions {
                scaling: Scaling::MinMax,
                shared: true,
                ..PrepOptions::default()
            },
        )
        .unwrap();
        let (offset, scale) = prep.affine().unwrap();
        assert_eq!(offset, vec![0.0, 0.0]);
        assert_eq!(scale, vec![1.0 / 16.0, 1.0 / 16.0]);

        // Two scale steps compose: ((x - 1) * 2 - 4) * 0.5 = (x - 3) * 1.
        let chain = Preprocessing {
            features: 1,
            steps: vec![
                Step::Scale {
                    kind: Scaling::MinMax,
                    offset: vec![1.0],
                    scale: vec![2.0],
                },
                Step::Scale {
                    kind: Scaling::Standardize,
                    offset: vec![4.0],
                    scale: vec![0.5],
                },
            ],
        };
        assert_eq!(chain.affine(), Some((vec![3.0], vec![1.0])));
        let empty = Preprocessing {
            features: 2,
            steps: vec![],
        };
        assert_eq!(empty.affine(), Some((vec![0.0, 0.0], vec![1.0, 1.0])));
    }

    #[test]
    fn serde_round_trip_and_bad_chains() {
        let train = table(vec![1.0, 2.0, 3.0, 4.0]);
        let prep = Preprocessing::fit(
            &train,
            &PrepOptions {
                missing: Missing::Median,
                clip: Some((0.0, 100.0)),
                scaling: Scaling::Standardize,
                ..PrepOptions::default()
            },
        )
        .unwrap();
        let json = serde_json::to_string(&prep).unwrap();
        assert!(json.contains("\"step\":\"impute\""), "{json}");
        let back: Preprocessing = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prep);

        let mut wrong = table(vec![1.0, 2.0, 3.0, 4.0]);
        wrong.sample_dims = vec![1];
        wrong.feature_names.pop();
        let e = prep.apply(&mut wrong).unwrap_err().to_string();
        assert!(e.contains("2 features, not 1"), "{e}");

        let short: Preprocessing = serde_json::from_str(
            r#"{"features":2,"steps":[{"step":"clip","percentiles":[0,1],"lo":[5],"hi":[1,2]}]}"#,
        )
        .unwrap();
        assert!(short.apply(&mut table(vec![0.0, 0.0])).is_err());
        // Bounds out of order clip without panicking.
        let crossed = Preprocessing {
            features: 1,
            steps: vec![Step::Clip {
                percentiles: (0.0, 1.0),
                lo: vec![5.0],
                hi: vec![1.0],
            }],
        };
        let mut one = Dataset {
            sample_dims: vec![1],
            features: vec![3.0],
            feature_names: vec!["a".into()],
            targets: Targets::None,
            ..table(vec![])
        };
        crossed.apply(&mut one).unwrap();

        let bad = PrepOptions {
            clip: Some((50.0, 10.0)),
            ..PrepOptions::default()
        };
        assert!(Preprocessing::fit(&train, &bad).is_err());
        let bad = PrepOptions {
            bins: Some(1),
            ..PrepOptions::default()
        };
        assert!(Preprocessing::fit(&train, &bad).is_err());
    }

    #[test]
    fn duplicates_compare_features_and_targets() {
        let mut d = table(vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, -0.0, NAN]);
        // Targets 0 1 0 1: row 2 repeats row 0; row 1 has row 0's features but another
        // class, so it stays.
        assert_eq!(count_duplicates(&d), 1);
        assert_eq!(drop_duplicates(&mut d), 1);
        assert_eq!(d.rows(), 3);
        assert_eq!(d.targets, Targets::Classes(vec![0, 1, 1]));
        let mut z = table(vec![0.0, NAN, -0.0, NAN]);
        z.targets = Targets::None;
        assert_eq!(drop_duplicates(&mut z), 1);
    }

    #[test]
    fn class_balance_and_weights() {
        let mut d = table(vec![0.0; 8]);
        d.targets = Targets::Classes(vec![0, 1, 1, 1]);
        d.class_names = vec!["x".into(), "y".into(), "z".into()];
        let b = ClassBalance::of(&d).unwrap();
        assert_eq!(b.counts, vec![1, 3, 0]);
        assert_eq!(b.ratio, 3.0);
        // Inverse counts 1 and 1/3, mean 2/3 over the two present classes.
        close(&b.weights(), &[1.5, 0.5, 0.0]);
        assert_eq!(class_weights(&d), Some(b.weights()));
        let text = b.to_string();
        assert!(text.contains("75.0%") && text.contains("3.00"), "{text}");
        d.targets = Targets::None;
        assert_eq!(ClassBalance::of(&d), None);
    }
}
