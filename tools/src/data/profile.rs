//! A summary of a [`Dataset`] for `loam data inspect`: size, per-column types, missing
//! values and ranges, duplicates and the balance of classes or range of targets.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::prep::{ClassBalance, count_duplicates};
use super::{Dataset, Targets};

/// Above this many columns, [`Profile`]'s Display prints a summary line and only the
/// columns with missing values, not one line per column (images have hundreds).
const LIST_COLUMNS: usize = 40;

/// What a feature column came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// A number as read.
    Numeric,
    /// One category of a one-hot encoded column: named `column=category`, values 0 or 1.
    OneHot,
}

/// Statistics of one feature column, over its non-missing values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// The feature name.
    pub name: String,
    /// Numeric or derived from a categorical column.
    pub kind: ColumnKind,
    /// How many rows miss this value.
    pub missing: usize,
    /// Smallest value (`None` when every row misses it).
    pub min: Option<f32>,
    /// Mean value.
    pub mean: Option<f32>,
    /// Largest value.
    pub max: Option<f32>,
}

/// A summary of the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetProfile {
    /// Class targets and how many rows each class has.
    Classes(ClassBalance),
    /// Real-valued targets.
    Values {
        /// Values per row.
        width: usize,
        /// Smallest value.
        min: Option<f32>,
        /// Mean value.
        mean: Option<f32>,
        /// Largest value.
        max: Option<f32>,
    },
    /// No targets.
    None,
}

/// A summary of a data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The data set's name.
    pub name: String,
    /// Number of rows.
    pub rows: usize,
    /// The shape of one sample.
    pub sample_dims: Vec<usize>,
    /// One entry per feature.
    pub columns: Vec<ColumnProfile>,
    /// Rows with at least one missing value.
    pub rows_with_missing: usize,
    /// Rows that repeat an earlier row (features and target).
    pub duplicates: usize,
    /// The targets.
    pub targets: TargetProfile,
}

/// Profiles `data`.
pub fn profile(data: &Dataset) -> Profile {
    let n = data.sample_len();
    let rows = data.rows();
    let mut stats = vec![Stats::default(); n];
    let mut rows_with_missing = 0;
    for i in 0..rows {
        let sample = data.sample(i);
        if sample.iter().any(|x| x.is_nan()) {
            rows_with_missing += 1;
        }
        for (s, &x) in stats.iter_mut().zip(sample) {
            s.add(x);
        }
    }
    let columns = stats
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let name = data
                .feature_names
                .get(j)
                .cloned()
                .unwrap_or_else(|| format!("x{j}"));
            // The CSV loader's one-hot columns are named `column=category` and hold 0 or 1.
            let one_hot =
                name.contains('=') && s.count > 0 && s.min >= 0.0 && s.max <= 1.0 && s.integral;
            ColumnProfile {
                name,
                kind: if one_hot {
                    ColumnKind::OneHot
                } else {
                    ColumnKind::Numeric
                },
                missing: s.missing,
                min: s.min(),
                mean: s.mean(),
                max: s.max(),
            }
        })
        .collect();
    let targets = match &data.targets {
        Targets::Classes(_) => {
            ClassBalance::of(data).map_or(TargetProfile::None, TargetProfile::Classes)
        }
        Targets::Values { values, width } => {
            let mut s = Stats::default();
            for &x in values {
                s.add(x);
            }
            TargetProfile::Values {
                width: *width,
                min: s.min(),
                mean: s.mean(),
                max: s.max(),
            }
        }
        Targets::None => TargetProfile::None,
    };
    Profile {
        name: data.name.clone(),
        rows,
        sample_dims: data.sample_dims.clone(),
        columns,
        rows_with_missing,
        duplicates: count_duplicates(data),
        targets,
    }
}

/// Running statistics of one column.
#[derive(Debug, Clone)]
struct Stats {
    count: usize,
    missing: usize,
    sum: f64,
    min: f32,
    max: f32,
    integral: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            count: 0,
            missing: 0,
            sum: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            integral: true,
        }
    }
}

impl Stats {
    fn add(&mut self, x: f32) {
        if x.is_nan() {
            self.missing += 1;
            return;
        }
        self.count += 1;
        self.sum += f64::from(x);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.integral &= x.fract() == 0.0;
    }
    fn min(&self) -> Option<f32> {
        (self.count > 0).then_some(self.min)
    }
    fn max(&self) -> Option<f32> {
        (self.count > 0).then_some(self.max)
    }
    fn mean(&self) -> Option<f32> {
        (self.count > 0).then(|| (self.sum / self.count as f64) as f32)
    }
}

fn num(x: Option<f32>) -> String {
    match x {
        None => "-".to_string(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e7 => format!("{x}"),
        Some(x) => format!("{x:.4}"),
    }
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::OneHot => "one-hot",
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: usize = self.sample_dims.iter().product();
        writeln!(
            f,
            "{}: {} rows, samples of shape {:?} ({values} values)",
            self.name, self.rows, self.sample_dims
        )?;
        let missing: usize = self.columns.iter().map(|c| c.missing).sum();
        writeln!(
            f,
            "missing values: {missing} (in {} rows); duplicate rows: {}",
            self.rows_with_missing, self.duplicates
        )?;
        let one_hot = self
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::OneHot)
            .count();
        writeln!(
            f,
            "columns: {} ({} numeric, {one_hot} one-hot from categorical columns)",
            self.columns.len(),
            self.columns.len() - one_hot
        )?;
        let listed: Vec<&ColumnProfile> = if self.columns.len() <= LIST_COLUMNS {
            self.columns.iter().collect()
        } else {
            let min = self.columns.iter().filter_map(|c| c.min).reduce(f32::min);
            let max = self.columns.iter().filter_map(|c| c.max).reduce(f32::max);
            writeln!(
                f,
                "  values over all columns: min {}, max {}; columns with missing values:",
                num(min),
                num(max)
            )?;
            self.columns
                .iter()
                .filter(|c| c.missing > 0)
                .take(LIST_COLUMNS)
                .collect()
        };
        if !listed.is_empty() {
            let width = listed
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(6);
            writeln!(
                f,
                "  {:<width$}  {:<8}  {:>8}  {:>10}  {:>10}  {:>10}",
                "column", "type", "missing", "min", "mean", "max"
            )?;
            for c in listed {
                writeln!(
                    f,
                    "  {:<width$}  {:<8}  {:>8}  {:>10}  {:>10}  {:>10}",
                    c.name,
                    c.kind.to_string(),
                    c.missing,
                    num(c.min),
                    num(c.mean),
                    num(c.max)
                )?;
            }
        }
        match &self.targets {
            TargetProfile::Classes(balance) => {
                writeln!(f, "targets: {} classes", balance.counts.len())?;
                write!(f, "{balance}")
            }
            TargetProfile::Values {
                width,
                min,
                mean,
                max,
            } => writeln!(
                f,
                "targets: {width} real value(s) per row: min {}, mean {}, max {}",
                num(*min),
                num(*mean),
                num(*max)
            ),
            TargetProfile::None => writeln!(f, "targets: none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::csv::{Column, CsvOptions, read};

    #[test]
    fn profile_of_a_small_table() {
        let options = CsvOptions {
            categorical: vec![Column::Name("color".into())],
            ..CsvOptions::default()
        };
        let d = read(
            "size,color,y\n1,red,a\n?,blue,b\n3,red,a\n1,red,a\n".as_bytes(),
            "p.csv",
            &options,
        )
        .unwrap();
        let p = profile(&d);
        assert_eq!(p.rows, 4);
        assert_eq!(p.rows_with_missing, 1);
        assert_eq!(p.duplicates, 1);
        let size = &p.columns[0];
        assert_eq!(
            (size.kind, size.missing, size.min, size.max),
            (ColumnKind::Numeric, 1, Some(1.0), Some(3.0))
        );
        assert!((size.mean.unwrap() - 5.0 / 3.0).abs() < 1e-6);
        assert_eq!(p.columns[1].name, "color=blue");
        assert_eq!(p.columns[1].kind, ColumnKind::OneHot);
        assert_eq!(p.columns[2].mean, Some(0.75));
        let TargetProfile::Classes(balance) = &p.targets else {
            panic!("expected classes, got {:?}", p.targets);
        };
        assert_eq!(balance.counts, vec![3, 1]);
        let text = p.to_string();
        for want in [
            "p: 4 rows",
            "missing values: 1 (in 1 rows); duplicate rows: 1",
            "2 one-hot",
            "color=red",
            "targets: 2 classes",
            "imbalance ratio",
        ] {
            assert!(text.contains(want), "`{want}` not in:\n{text}");
        }
    }

    #[test]
    fn wide_data_is_summarised_and_regression_targets() {
        let rows = 3;
        let n = 50;
        let mut features: Vec<f32> = (0..rows * n).map(|i| (i % 7) as f32).collect();
        features[n + 4] = f32::NAN;
        let d = Dataset {
            name: "wide".into(),
            sample_dims: vec![n],
            features,
            feature_names: (0..n).map(|i| format!("x{i}")).collect(),
            targets: Targets::Values {
                values: vec![1.0, 2.0, 6.0],
                width: 1,
            },
            class_names: vec![],
        };
        let p = profile(&d);
        assert_eq!(
            p.targets,
            TargetProfile::Values {
                width: 1,
                min: Some(1.0),
                mean: Some(3.0),
                max: Some(6.0)
            }
        );
        let text = p.to_string();
        assert!(text.contains("min 0, max 6"), "{text}");
        assert!(text.contains("  x4 "), "{text}");
        assert!(!text.contains("  x5 "), "{text}");
        assert!(
            text.contains("targets: 1 real value(s) per row: min 1, mean 3, max 6"),
            "{text}"
        );
    }
}
