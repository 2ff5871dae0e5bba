//! Train / validation / test splits and k-fold cross-validation, as row indices.
//!
//! Random splits are seeded and deterministic (the same seed, data and `rand` version give
//! the same indices) and stratified by class when the targets are classes, so every part
//! keeps the class proportions. Indices within each part are sorted.

use anyhow::{Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::Dataset;

/// Row indices of the three parts of a data set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Rows to train on.
    pub train: Vec<usize>,
    /// Rows to choose epochs and settings by.
    pub val: Vec<usize>,
    /// Rows held out for the final score.
    pub test: Vec<usize>,
}

/// One fold of a cross-validation: rows to train on and rows to validate on.
pub type Fold = (Vec<usize>, Vec<usize>);

fn check_fractions(val: f32, test: f32) -> Result<()> {
    let ok = |f: f32| f.is_finite() && (0.0..1.0).contains(&f);
    if !ok(val) || !ok(test) || val + test >= 1.0 {
        bail!(
            "validation and test fractions ({val}, {test}) must each be in [0, 1) and leave \
             some rows for training"
        );
    }
    Ok(())
}

/// How many of `n` rows go to test and to validation, by rounding so that the two
/// together are also rounded (never more than `n`).
fn counts(n: usize, val: f32, test: f32) -> (usize, usize) {
    let n_test = (n as f64 * f64::from(test)).round() as usize;
    let n_both = (n as f64 * (f64::from(val) + f64::from(test))).round() as usize;
    (n_both.min(n).saturating_sub(n_test), n_test.min(n))
}

/// Row indices grouped by class (in class-id order), or all rows in one group when the
/// targets are not classes.
fn groups(data: &Dataset) -> Vec<Vec<usize>> {
    match data.classes() {
        Some(classes) => {
            let mut groups = vec![Vec::new(); data.num_classes()];
            for (i, &c) in classes.iter().enumerate() {
                groups[c as usize].push(i);
            }
            groups
        }
        None => vec![(0..data.rows()).collect()],
    }
}

/// A random split with `val` and `test` fractions of the rows (the rest train),
/// stratified by class when the targets are classes.
pub fn random(data: &Dataset, val: f32, test: f32, seed: u64) -> Result<Split> {
    check_fractions(val, test)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = Split::default();
    for mut group in groups(data) {
        group.shuffle(&mut rng);
        let (n_val, n_test) = counts(group.len(), val, test);
        split.test.extend_from_slice(&group[..n_test]);
        split.val.extend_from_slice(&group[n_test..n_test + n_val]);
        split.train.extend_from_slice(&group[n_test + n_val..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// A split that keeps row order: the first rows train, the next validate, the last test.
/// For time series, where shuffling would let a model see the future.
pub fn time_ordered(rows: usize, val: f32, test: f32) -> Result<Split> {
    check_fractions(val, test)?;
    let (n_val, n_test) = counts(rows, val, test);
    let n_train = rows - n_val - n_test;
    Ok(Split {
        train: (0..n_train).collect(),
        val: (n_train..n_train + n_val).collect(),
        test: (n_train + n_val..rows).collect(),
    })
}

/// `k` folds for cross-validation: every row validates in exactly one fold and trains in
/// the others. Stratified by class when the targets are classes.
pub fn kfold(data: &Dataset, k: usize, seed: u64) -> Result<Vec<Fold>> {
    let rows = data.rows();
    if k < 2 || k > rows {
        bail!("k-fold needs 2 <= k <= rows, not k = {k} with {rows} rows");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; rows];
    // Dealing continues across classes, so the classes' remainders spread over the folds
    // instead of all landing in the first ones.
    let mut dealt = 0usize;
    for mut group in groups(data) {
        group.shuffle(&mut rng);
        for i in group {
            fold_of[i] = dealt % k;
            dealt += 1;
        }
    }
    Ok((0..k)
        .map(|f| {
            let (val, train): (Vec<usize>, Vec<usize>) = (0..rows).partition(|&i| fold_of[i] == f);
            (train, val)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;

    fn labelled(classes: Vec<u32>) -> Dataset {
        let rows = classes.len();
        Dataset {
            name: "s".into(),
            sample_dims: vec![1],
            features: (0..rows).map(|i| i as f32).collect(),
            feature_names: vec!["i".into()],
            targets: Targets::Classes(classes),
            class_names: vec!["a".into(), "b".into()],
        }
    }

    fn count(data: &Dataset, rows: &[usize], class: u32) -> usize {
        let classes = data.classes().unwrap();
        rows.iter().filter(|&&i| classes[i] == class).count()
    }

    fn is_partition(split: &Split, rows: usize) {
        let mut all: Vec<usize> = [&split.train, &split.val, &split.test]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..rows).collect::<Vec<_>>());
    }

    #[test]
    fn stratified_split_keeps_class_proportions() {
        // 30 of class 0, 10 of class 1.
        let d = labelled((0..40).map(|i| u32::from(i >= 30)).collect());
        let s = random(&d, 0.2, 0.1, 7).unwrap();
        is_partition(&s, 40);
        assert_eq!((count(&d, &s.val, 0), count(&d, &s.val, 1)), (6, 2));
        assert_eq!((count(&d, &s.test, 0), count(&d, &s.test, 1)), (3, 1));
        assert_eq!(s.train.len(), 28);
        assert!(s.train.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn seeds_are_deterministic_and_matter() {
        let d = labelled((0..100).map(|i| i % 2).collect());
        let a = random(&d, 0.25, 0.25, 1).unwrap();
        assert_eq!(a, random(&d, 0.25, 0.25, 1).unwrap());
        assert_ne!(a, random(&d, 0.25, 0.25, 2).unwrap());
    }

    #[test]
    fn unlabelled_rows_split_by_count() {
        let mut d = labelled(vec![0; 10]);
        d.targets = Targets::None;
        let s = random(&d, 0.3, 0.2, 0).unwrap();
        is_partition(&s, 10);
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (5, 3, 2));
    }

    #[test]
    fn time_ordered_split_keeps_order() {
        let s = time_ordered(10, 0.2, 0.1).unwrap();
        assert_eq!(s.train, (0..7).collect::<Vec<_>>());
        assert_eq!(s.val, vec![7, 8]);
        assert_eq!(s.test, vec![9]);
        let s = time_ordered(1, 0.5, 0.4).unwrap();
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 1);
    }

    #[test]
    fn bad_fractions_and_folds() {
        let d = labelled(vec![0, 1, 0]);
        assert!(random(&d, 0.5, 0.5, 0).is_err());
        assert!(random(&d, -0.1, 0.1, 0).is_err());
        assert!(random(&d, f32::NAN, 0.1, 0).is_err());
        assert!(time_ordered(5, 1.0, 0.0).is_err());
        assert!(kfold(&d, 1, 0).is_err());
        let e = kfold(&d, 4, 0).unwrap_err().to_string();
        assert!(e.contains("k = 4") && e.contains("3 rows"), "{e}");
    }

    #[test]
    fn stratified_kfold_covers_every_row_once() {
        // 12 of class 0, 6 of class 1, 3 folds: 4 + 2 per validation fold.
        let d = labelled((0..18).map(|i| u32::from(i % 3 == 0)).collect());
        let folds = kfold(&d, 3, 11).unwrap();
        assert_eq!(folds.len(), 3);
        let mut seen = [0; 18];
        for (train, val) in &folds {
            assert_eq!(train.len() + val.len(), 18);
            assert!(train.iter().all(|i| !val.contains(i)));
            assert_eq!((count(&d, val, 0), count(&d, val, 1)), (4, 2));
            for &i in val {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        assert_eq!(folds, kfold(&d, 3, 11).unwrap());
    }
}
