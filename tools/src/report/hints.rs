//! Plain-language advice on how well a training run fit its data.

use super::{EpochRecord, History};

/// Epochs without a new best validation loss before rising validation loss
/// counts as overfitting rather than noise.
const PATIENCE: usize = 3;
/// How far above its best the validation loss must end, relatively.
const RISE: f64 = 0.02;
/// Train-minus-validation gap of a 0..1 score (accuracy, F1, R²) that counts as large.
const SCORE_GAP: f64 = 0.10;
/// Validation/train ratio of an error metric (MAE, MSE) that counts as large.
const ERROR_RATIO: f64 = 1.5;
/// A 0..1 training score below this means the model cannot fit even its training data.
const LOW_SCORE: f64 = 0.70;
/// Relative training-loss drop per epoch over the last few epochs that means
/// training stopped too early.
const STEEP: f64 = 0.02;

/// Reads a training history and returns advice, one sentence per finding.
///
/// Each hint starts with a keyword a script can match: `Diverged`, `Overfitting`,
/// `Underfitting`, `Train longer`, `Too short` or `Looks fine`; the last comes
/// alone when nothing else was found.
///
/// Overfitting is validation loss rising for several epochs after its best while
/// training loss falls, or a large train/validation metric gap. Underfitting is a
/// low training score; "train longer" is training loss still falling steeply at
/// the end. Whether the metric is higher- or lower-is-better comes from
/// [`History::higher_is_better`].
pub fn fit_hints(history: &History) -> Vec<String> {
    let epochs = &history.epochs;
    let Some(last) = epochs.last() else {
        return vec!["Too short: no epochs were recorded, so there is nothing to judge.".into()];
    };
    if let Some(e) = epochs
        .iter()
        .find(|e| !e.train_loss.is_finite() || e.val_loss.is_some_and(|v| !v.is_finite()))
    {
        return vec![format!(
            "Diverged: the loss stopped being a finite number at epoch {} (learning rate {:e}). \
             Lower the learning rate, or check the inputs for NaN or infinite values.",
            e.epoch, e.learning_rate
        )];
    }
    if epochs.len() < PATIENCE {
        return vec![format!(
            "Too short: {} epoch(s) are too few to judge the fit; train for more epochs.",
            epochs.len()
        )];
    }

    let mut hints = Vec::new();
    let overfit_loss = rising_validation(epochs);
    if let Some(hint) = &overfit_loss {
        hints.push(hint.clone());
    }
    let name = if history.metric_name.is_empty() {
        "metric"
    } else {
        history.metric_name.as_str()
    };
    let higher = history.higher_is_better();
    if let (Some(train), Some(val)) = (last.train_metric, last.val_metric) {
        let fraction = (0.0..=1.0).contains(&train) && (0.0..=1.0).contains(&val);
        let large_gap = if higher {
            let gap = train - val;
            if fraction {
                gap > SCORE_GAP
            } else {
                gap > SCORE_GAP * train.abs().max(val.abs())
            }
        } else {
            val > ERROR_RATIO * train && val - train > 0.0
        };
        if large_gap {
            hints.push(format!(
                "Overfitting: training {name} ({train:.4}) is well ahead of validation {name} \
                 ({val:.4}). Regularise (dropout, weight decay), augment the data, use a \
                 smaller model, or get more data."
            ));
        }
    }
    if let Some(train) = last.train_metric
        && higher
        && (0.0..=1.0).contains(&train)
        && train < LOW_SCORE
    {
        hints.push(format!(
            "Underfitting: training {name} is only {train:.4}, so the model cannot fit even \
             its training data. Try a bigger model, another learning rate or more epochs, and \
             check the labels and input scaling."
        ));
    }
    if overfit_loss.is_none() {
        let window = PATIENCE.min(epochs.len() - 1);
        let before = epochs[epochs.len() - 1 - window].train_loss;
        if before.abs() > 0.0 {
            let per_epoch = (before - last.train_loss) / before.abs() / window as f64;
            if per_epoch > STEEP {
                hints.push(format!(
                    "Train longer: training loss is still falling by {:.1}% per epoch over the \
                     last {window} epochs, so more epochs should help.",
                    per_epoch * 100.0
                ));
            }
        }
    }
    if hints.is_empty() {
        let val = last
            .val_loss
            .map(|v| format!(", validation loss {v:.4}"))
            .unwrap_or_default();
        hints.push(format!(
            "Looks fine: no sign of over- or underfitting (final training loss {:.4}{val}).",
            last.train_loss
        ));
    }
    hints
}

/// The overfitting hint when validation loss has risen since its best epoch
/// while training loss kept falling.
fn rising_validation(epochs: &[EpochRecord]) -> Option<String> {
    let with_val: Vec<(&EpochRecord, f64)> = epochs
        .iter()
        .filter_map(|e| e.val_loss.map(|v| (e, v)))
        .collect();
    let (best_at, &(best, best_val)) = with_val
        .iter()
        .enumerate()
        .reduce(|a, b| if b.1.1 < a.1.1 { b } else { a })?;
    let &(last, last_val) = with_val.last()?;
    let since = with_val.len() - 1 - best_at;
    let rose = last_val > best_val + RISE * best_val.abs();
    let train_fell = last.train_loss < best.train_loss;
    (since >= PATIENCE && rose && train_fell).then(|| {
        format!(
            "Overfitting: validation loss rose from {best_val:.4} at epoch {} to {last_val:.4} \
             over {since} epochs while training loss fell from {:.4} to {:.4}. Early stopping \
             on the validation loss would keep the epoch-{} weights; or add regularisation \
             (dropout, weight decay), augmentation or more data.",
            best.epoch, best.train_loss, last.train_loss, best.epoch
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history from per-epoch (train loss, val loss, train metric, val metric).
    fn history(name: &str, rows: &[(f64, f64, f64, f64)]) -> History {
        History {
            metric_name: name.into(),
            epochs: rows
                .iter()
                .enumerate()
                .map(|(i, &(tl, vl, tm, vm))| EpochRecord {
                    epoch: i + 1,
                    train_loss: tl,
                    val_loss: Some(vl),
                    train_metric: Some(tm),
                    val_metric: Some(vm),
                    learning_rate: 0.01,
                    seconds: 1.0,
                })
                .collect(),
        }
    }

    fn starts(hints: &[String], prefix: &str) -> bool {
        hints.iter().any(|h| h.starts_with(prefix))
    }

    /// Converged: both losses flat for the last epochs, small metric gap.
    fn converged() -> Vec<(f64, f64, f64, f64)> {
        vec![
            (1.0, 1.1, 0.60, 0.58),
            (0.5, 0.6, 0.85, 0.83),
            (0.3, 0.35, 0.92, 0.90),
            (0.25, 0.3, 0.94, 0.92),
            (0.248, 0.299, 0.945, 0.925),
            (0.247, 0.298, 0.946, 0.926),
            (0.246, 0.298, 0.947, 0.927),
        ]
    }

    #[test]
    fn healthy_run_looks_fine() {
        let hints = fit_hints(&history("accuracy", &converged()));
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(starts(&hints, "Looks fine"), "{hints:?}");
    }

    #[test]
    fn rising_validation_loss_is_overfitting() {
        let rows: Vec<_> = (1..=12)
            .map(|e| {
                let t = f64::from(e);
                // Validation bottoms out at epoch 5 then climbs.
                (1.0 / t, 0.5 + 0.02 * (t - 5.0).powi(2), 0.9, 0.88)
            })
            .collect();
        let hints = fit_hints(&history("accuracy", &rows));
        assert!(starts(&hints, "Overfitting: validation loss"), "{hints:?}");
        assert!(hints[0].contains("epoch 5"), "{hints:?}");
        // Still-falling training loss is the symptom here, not a reason to go on.
        assert!(!starts(&hints, "Train longer"), "{hints:?}");
    }

    #[test]
    fn metric_gap_is_overfitting() {
        let mut rows = converged();
        for r in &mut rows {
            r.2 = 0.99;
            r.3 = 0.80;
        }
        let hints = fit_hints(&history("accuracy", &rows));
        assert!(
            starts(&hints, "Overfitting: training accuracy"),
            "{hints:?}"
        );

        // For an error metric the gap runs the other way.
        for r in &mut rows {
            r.2 = 0.1;
            r.3 = 0.3;
        }
        let hints = fit_hints(&history("mae", &rows));
        assert!(starts(&hints, "Overfitting: training mae"), "{hints:?}");
    }

    #[test]
    fn low_training_score_is_underfitting() {
        let mut rows = converged();
        for r in &mut rows {
            r.2 = 0.45;
            r.3 = 0.44;
        }
        let hints = fit_hints(&history("accuracy", &rows));
        assert!(starts(&hints, "Underfitting"), "{hints:?}");
        assert!(!starts(&hints, "Looks fine"), "{hints:?}");
    }

    #[test]
    fn steep_loss_at_the_end_means_train_longer() {
        let rows: Vec<_> = (0..6)
            .map(|e| {
                let l = 0.85f64.powi(e);
                (l, l * 1.1, 0.9, 0.89)
            })
            .collect();
        let hints = fit_hints(&history("accuracy", &rows));
        assert!(starts(&hints, "Train longer"), "{hints:?}");
    }

    #[test]
    fn diverged_empty_and_short_histories() {
        let mut rows = converged();
        rows[4].0 = f64::NAN;
        let hints = fit_hints(&history("accuracy", &rows));
        assert_eq!(hints.len(), 1);
        assert!(
            starts(&hints, "Diverged") && hints[0].contains("epoch 5"),
            "{hints:?}"
        );
        assert!(starts(&fit_hints(&History::new("accuracy")), "Too short"));
        let short = fit_hints(&history("accuracy", &converged()[..2]));
        assert!(starts(&short, "Too short"), "{short:?}");
    }

    #[test]
    fn history_without_validation_or_metric() {
        let mut h = history("accuracy", &converged());
        for e in &mut h.epochs {
            e.val_loss = None;
            e.train_metric = None;
            e.val_metric = None;
        }
        let hints = fit_hints(&h);
        assert!(starts(&hints, "Looks fine"), "{hints:?}");
    }
}
