//! Evaluation metrics for trained models: classification, regression and anomaly
//! detection.
//!
//! Every function here is pure: it takes model outputs and ground truth as flat
//! slices and returns a serialisable report whose `Display` prints a plain-text
//! table. Bad input (empty slices, mismatched lengths, NaN scores, labels out of
//! range) comes back as a [`MetricsError`] instead of a panic, because these run
//! at the end of long training jobs where a crash would lose the run.
//!
//! Conventions follow scikit-learn where it has one, so numbers can be compared
//! with notebooks: ROC-AUC is the Mann-Whitney statistic with tied scores counted
//! as half, and precision/recall/F1 of a class with nothing to divide by are 0.
//! Log loss clips probabilities to `[1e-15, 1 - 1e-15]` so one confident mistake
//! gives a large but finite loss.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// There were no samples at all.
    #[error("no samples to evaluate")]
    Empty,
    /// A classification was asked for with zero classes.
    #[error("the number of classes must be at least 1")]
    NoClasses,
    /// Two inputs that must line up have different lengths.
    #[error("{what} has {got} values but {expected} were expected")]
    LengthMismatch {
        /// Which input is the wrong length.
        what: &'static str,
        /// The length that matches the other inputs.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A score, probability or target is NaN or infinite.
    #[error("{what}[{index}] is {value}, not a finite number")]
    NonFinite {
        /// Which input holds the value.
        what: &'static str,
        /// Its position in that input.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// A label names a class that does not exist.
    #[error("label {label} of sample {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The sample's position.
        index: usize,
        /// Its label.
        label: u32,
        /// How many classes there are.
        classes: usize,
    },
    /// A probability lies outside `[0, 1]`, which usually means logits were
    /// passed where softmax or sigmoid outputs were expected.
    #[error(
        "probs[{index}] is {value}, not a probability in [0, 1] (were logits passed instead of softmax/sigmoid outputs?)"
    )]
    NotAProbability {
        /// Its position in the flat probability slice.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// Anomaly evaluation needs both anomalous and normal samples.
    #[error(
        "anomaly evaluation needs both anomalous and normal samples, got {anomalies} anomalies out of {samples}"
    )]
    OneSided {
        /// How many samples are marked anomalous.
        anomalies: usize,
        /// How many samples there are.
        samples: usize,
    },
}

/// Precision, recall and F1 of one class, or an average of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Of the samples predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// Metrics of one class, treating it as positive and every other class as negative.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Precision, recall and F1.
    #[serde(flatten)]
    pub scores: Scores,
    /// How many samples carry this label.
    pub support: usize,
    /// One-vs-rest ROC-AUC of this class's probability; `None` when the class is
    /// absent from the labels (or is the only one present), where it is undefined.
    pub roc_auc: Option<f64>,
}

/// The evaluation of a classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// How many samples were evaluated.
    pub samples: usize,
    /// Fraction of samples whose most probable class is the label.
    pub accuracy: f64,
    /// One entry per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean over the classes that occur in the labels or predictions
    /// (scikit-learn's default label set), so a class nobody saw does not drag it down.
    pub macro_avg: Scores,
    /// Mean over classes weighted by support.
    pub weighted_avg: Scores,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Mean of the defined per-class ROC-AUCs.
    pub macro_roc_auc: Option<f64>,
    /// Mean negative log-likelihood of the true class.
    pub log_loss: f64,
}

/// A sample the classifier got wrong, with how sure it was.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mistake {
    /// Position of the sample in the evaluated set.
    pub index: usize,
    /// Its true class.
    pub label: u32,
    /// The class the model picked.
    pub predicted: u32,
    /// The probability the model gave to its pick.
    pub confidence: f32,
}

/// The evaluation of a regressor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// How many values were compared (samples × outputs).
    pub samples: usize,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Root of the mean squared error, in the target's units.
    pub rmse: f64,
    /// Coefficient of determination. When the truth is constant it is 1 for a
    /// perfect prediction and 0 otherwise, as scikit-learn does, instead of NaN.
    pub r2: f64,
}

/// The evaluation of an anomaly detector whose higher scores mean "more anomalous".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyReport {
    /// How many samples were scored.
    pub samples: usize,
    /// How many of them are anomalies.
    pub anomalies: usize,
    /// Probability that a random anomaly scores above a random normal sample.
    pub roc_auc: f64,
    /// Flagging every sample with `score >= best_threshold` gives the best F1.
    pub best_threshold: f32,
    /// F1 at that threshold.
    pub best_f1: f64,
    /// Precision at that threshold.
    pub precision: f64,
    /// Recall at that threshold.
    pub recall: f64,
}

/// Evaluates class probabilities against integer labels.
///
/// `probs` holds `labels.len()` rows of `classes` probabilities each (softmax
/// outputs). With `classes == 1` the single value is read as the sigmoid
/// probability of class 1 of a binary problem, and the report has two classes.
/// The prediction is the most probable class, the lowest index winning ties.
pub fn classification(
    probs: &[f32],
    classes: usize,
    labels: &[u32],
) -> Result<ClassificationReport, MetricsError> {
    let table = ProbTable::new(probs, classes, labels)?;
    let k = table.classes;
    let n = labels.len();

    let mut confusion = vec![vec![0u64; k]; k];
    let mut log_loss = 0.0f64;
    for (i, &label) in labels.iter().enumerate() {
        let (predicted, _) = table.argmax(i);
        confusion[label as usize][predicted] += 1;
        let p = f64::from(table.prob(i, label as usize)).clamp(1e-15, 1.0 - 1e-15);
        log_loss -= p.ln();
    }
    log_loss /= n as f64;

    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let mut per_class = Vec::with_capacity(k);
    for c in 0..k {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
        let scores = scores_from_counts(tp, predicted as f64, support as f64);
        let scores_c: Vec<f32> = (0..n).map(|i| table.prob(i, c)).collect();
        let positive: Vec<bool> = labels.iter().map(|&l| l as usize == c).collect();
        per_class.push(ClassMetrics {
            scores,
            support: support as usize,
            roc_auc: auc_unchecked(&scores_c, &positive),
        });
    }

    // A class counts towards the macro average when it was seen or predicted,
    // matching scikit-learn's label set.
    let present: Vec<&ClassMetrics> = per_class
        .iter()
        .enumerate()
        .filter(|&(c, m)| m.support > 0 || confusion.iter().any(|row| row[c] > 0))
        .map(|(_, m)| m)
        .collect();
    let macro_avg = average(present.iter().map(|m| (m.scores, 1.0)));
    let weighted_avg = average(per_class.iter().map(|m| (m.scores, m.support as f64)));
    let aucs: Vec<f64> = per_class.iter().filter_map(|m| m.roc_auc).collect();
    let macro_roc_auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);

    Ok(ClassificationReport {
        samples: n,
        accuracy: correct as f64 / n as f64,
        per_class,
        macro_avg,
        weighted_avg,
        confusion,
        macro_roc_auc,
        log_loss,
    })
}

/// The `k` wrong predictions the model was most sure of, most confident first.
///
/// Takes the same input as [`classification`]; ties keep sample order.
pub fn most_confident_mistakes(
    probs: &[f32],
    classes: usize,
    labels: &[u32],
    k: usize,
) -> Result<Vec<Mistake>, MetricsError> {
    let table = ProbTable::new(probs, classes, labels)?;
    let mut mistakes: Vec<Mistake> = labels
        .iter()
        .enumerate()
        .filter_map(|(index, &label)| {
            let (predicted, confidence) = table.argmax(index);
            (predicted != label as usize).then_some(Mistake {
                index,
                label,
                predicted: predicted as u32,
                confidence,
            })
        })
        .collect();
    // Stable sort so equally confident mistakes stay in sample order.
    mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    mistakes.truncate(k);
    Ok(mistakes)
}

/// Compares predictions with targets; multi-output values are compared flattened.
pub fn regression(pred: &[f32], truth: &[f32]) -> Result<RegressionReport, MetricsError> {
    if truth.is_empty() {
        return Err(MetricsError::Empty);
    }
    check_len("pred", truth.len(), pred.len())?;
    check_finite("pred", pred)?;
    check_finite("truth", truth)?;

    let n = truth.len() as f64;
    let mean = truth.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
    let (mut abs, mut sq, mut total) = (0.0f64, 0.0f64, 0.0f64);
    for (&p, &t) in pred.iter().zip(truth) {
        let e = f64::from(p) - f64::from(t);
        abs += e.abs();
        sq += e * e;
        total += (f64::from(t) - mean).powi(2);
    }
    let r2 = if total > 0.0 {
        1.0 - sq / total
    } else if sq == 0.0 {
        1.0
    } else {
        0.0
    };
    let mse = sq / n;
    Ok(RegressionReport {
        samples: truth.len(),
        mae: abs / n,
        mse,
        rmse: mse.sqrt(),
        r2,
    })
}

/// Evaluates anomaly scores (higher = more anomalous) against ground truth and
/// picks the threshold with the best F1.
pub fn anomaly(scores: &[f32], is_anomaly: &[bool]) -> Result<AnomalyReport, MetricsError> {
    if scores.is_empty() {
        return Err(MetricsError::Empty);
    }
    check_len("is_anomaly", scores.len(), is_anomaly.len())?;
    check_finite("scores", scores)?;
    let anomalies = is_anomaly.iter().filter(|&&a| a).count();
    let samples = scores.len();
    let Some(roc_auc) = auc_unchecked(scores, is_anomaly) else {
        return Err(MetricsError::OneSided { anomalies, samples });
    };

    let mut order: Vec<usize> = (0..samples).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut best = (f64::NEG_INFINITY, 0.0f32, 0.0f64, 0.0f64);
    let (mut tp, mut flagged) = (0usize, 0usize);
    let mut i = 0;
    // Walk thresholds from the highest score down; samples with equal scores are
    // flagged together, so each step is one distinct threshold.
    while i < samples {
        let threshold = scores[order[i]];
        while i < samples && scores[order[i]] == threshold {
            tp += usize::from(is_anomaly[order[i]]);
            flagged += 1;
            i += 1;
        }
        let s = scores_from_counts(tp as f64, flagged as f64, anomalies as f64);
        // Strictly greater keeps the highest threshold among equal F1s: it flags
        // fewer samples for the same quality.
        if s.f1 > best.0 {
            best = (s.f1, threshold, s.precision, s.recall);
        }
    }
    Ok(AnomalyReport {
        samples,
        anomalies,
        roc_auc,
        best_threshold: best.1,
        best_f1: best.0,
        precision: best.2,
        recall: best.3,
    })
}

/// Area under the ROC curve of `scores` for separating `positive` samples,
/// counting tied scores as half (the Mann-Whitney U statistic).
///
/// `Ok(None)` when all samples are positive or all negative: the area is undefined.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Result<Option<f64>, MetricsError> {
    if scores.is_empty() {
        return Err(MetricsError::Empty);
    }
    check_len("positive", scores.len(), positive.len())?;
    check_finite("scores", scores)?;
    Ok(auc_unchecked(scores, positive))
}

/// Mann-Whitney AUC on scores already checked finite and of matching length.
fn auc_unchecked(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        // Tied scores share the mean of the 1-based ranks i+1..=j.
        let rank = (i + 1 + j) as f64 / 2.0;
        let tied_pos = order[i..j].iter().filter(|&&s| positive[s]).count();
        rank_sum += rank * tied_pos as f64;
        i = j;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Validated view of a flat probability matrix.
struct ProbTable<'a> {
    probs: &'a [f32],
    /// Number of real classes: 2 for a single sigmoid output.
    classes: usize,
    sigmoid: bool,
}

impl<'a> ProbTable<'a> {
    fn new(probs: &'a [f32], classes: usize, labels: &[u32]) -> Result<Self, MetricsError> {
        if classes == 0 {
            return Err(MetricsError::NoClasses);
        }
        if labels.is_empty() {
            return Err(MetricsError::Empty);
        }
        let expected = labels
            .len()
            .checked_mul(classes)
            .ok_or(MetricsError::LengthMismatch {
                what: "probs",
                expected: usize::MAX,
                got: probs.len(),
            })?;
        check_len("probs", expected, probs.len())?;
        check_finite("probs", probs)?;
        // A little slack for rounding in softmax implementations.
        if let Some((index, &value)) = probs
            .iter()
            .enumerate()
            .find(|&(_, &p)| !(-1e-4..=1.0 + 1e-4).contains(&p))
        {
            return Err(MetricsError::NotAProbability { index, value });
        }
        let sigmoid = classes == 1;
        let real = if sigmoid { 2 } else { classes };
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= real)
        {
            return Err(MetricsError::LabelOutOfRange {
                index,
                label,
                classes: real,
            });
        }
        Ok(Self {
            probs,
            classes: real,
            sigmoid,
        })
    }

    fn prob(&self, sample: usize, class: usize) -> f32 {
        if self.sigmoid {
            let p = self.probs[sample];
            if class == 1 { p } else { 1.0 - p }
        } else {
            self.probs[sample * self.classes + class]
        }
    }

    fn argmax(&self, sample: usize) -> (usize, f32) {
        (0..self.classes).fold((0, f32::NEG_INFINITY), |best, c| {
            let p = self.prob(sample, c);
            if p > best.1 { (c, p) } else { best }
        })
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), MetricsError> {
    if expected == got {
        Ok(())
    } else {
        Err(MetricsError::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}

fn check_finite(what: &'static str, values: &[f32]) -> Result<(), MetricsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// Precision, recall and F1 from counts, 0 where a denominator is 0.
fn scores_from_counts(tp: f64, predicted: f64, actual: f64) -> Scores {
    let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
    let recall = if actual > 0.0 { tp / actual } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Scores {
        precision,
        recall,
        f1,
    }
}

fn average(items: impl Iterator<Item = (Scores, f64)>) -> Scores {
    let (mut p, mut r, mut f, mut w) = (0.0, 0.0, 0.0, 0.0);
    for (s, weight) in items {
        p += s.precision * weight;
        r += s.recall * weight;
        f += s.f1 * weight;
        w += weight;
    }
    if w == 0.0 {
        return Scores {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
    }
    Scores {
        precision: p / w,
        recall: r / w,
        f1: f / w,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

impl ClassificationReport {
    /// Renders the report as text tables, naming classes by `class_names` where
    /// given (indices otherwise).
    pub fn to_table(&self, class_names: &[String]) -> String {
        let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let width = (0..self.per_class.len())
            .map(|c| name(c).chars().count())
            .chain([12])
            .max()
            .unwrap_or(12);
        let mut s = format!(
            "accuracy {:.4} on {} samples, log loss {:.4}, macro ROC-AUC {}\n\n",
            self.accuracy,
            self.samples,
            self.log_loss,
            opt(self.macro_roc_auc)
        );
        s += &format!(
            "{:<width$}  precision  recall      f1  support  roc_auc\n",
            "class"
        );
        for (c, m) in self.per_class.iter().enumerate() {
            s += &format!(
                "{:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}  {:>7}\n",
                name(c),
                m.scores.precision,
                m.scores.recall,
                m.scores.f1,
                m.support,
                opt(m.roc_auc)
            );
        }
        for (label, a) in [
            ("macro avg", self.macro_avg),
            ("weighted avg", self.weighted_avg),
        ] {
            s += &format!(
                "{:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
                label, a.precision, a.recall, a.f1, self.samples
            );
        }
        s += "\nconfusion matrix (rows = true, columns = predicted)\n";
        let cell = self
            .confusion
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .chain((0..self.per_class.len()).map(|c| name(c).chars().count()))
            .max()
            .unwrap_or(1);
        s += &format!("{:<width$}", "");
        for c in 0..self.per_class.len() {
            s += &format!(" {:>cell$}", name(c));
        }
        s.push('\n');
        for (t, row) in self.confusion.iter().enumerate() {
            s += &format!("{:<width$}", name(t));
            for v in row {
                s += &format!(" {v:>cell$}");
            }
            s.push('\n');
        }
        s
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table(&[]))
    }
}

impl fmt::Display for RegressionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "values {:>12}", self.samples)?;
        writeln!(f, "mae    {:>12.6}", self.mae)?;
        writeln!(f, "mse    {:>12.6}", self.mse)?;
        writeln!(f, "rmse   {:>12.6}", self.rmse)?;
        writeln!(f, "r2     {:>12.6}", self.r2)
    }
}

impl fmt::Display for AnomalyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "samples         {:>10} ({} anomalies)",
            self.samples, self.anomalies
        )?;
        writeln!(f, "roc_auc         {:>10.4}", self.roc_auc)?;
        writeln!(f, "best threshold  {:>10.6}", self.best_threshold)?;
        writeln!(f, "best f1         {:>10.4}", self.best_f1)?;
        writeln!(f, "precision       {:>10.4}", self.precision)?;
        writeln!(f, "recall          {:>10.4}", self.recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    /// Turns predicted classes into one-hot-ish probability rows whose winner has
    /// probability `p` and the rest share the remainder.
    fn rows(pred: &[usize], classes: usize, p: f32) -> Vec<f32> {
        let rest = (1.0 - p) / (classes - 1) as f32;
        pred.iter()
            .flat_map(|&c| (0..classes).map(move |j| if j == c { p } else { rest }))
            .collect()
    }

    #[test]
    fn three_class_confusion_and_scores_by_hand() {
        // y_true 0 0 0 1 1 2 2 2 2 ; y_pred 0 1 0 1 2 2 2 0 2
        // confusion:      pred0 pred1 pred2
        //        true0      2     1     0
        //        true1      0     1     1
        //        true2      1     0     3
        let labels = [0, 0, 0, 1, 1, 2, 2, 2, 2];
        let pred = [0, 1, 0, 1, 2, 2, 2, 0, 2];
        let r = classification(&rows(&pred, 3, 0.8), 3, &labels).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]
        );
        close(r.accuracy, 6.0 / 9.0);
        // class 0: precision 2/3, recall 2/3; class 1: 1/2, 1/2; class 2: 3/4, 3/4.
        close(r.per_class[0].scores.precision, 2.0 / 3.0);
        close(r.per_class[1].scores.recall, 0.5);
        close(r.per_class[2].scores.f1, 0.75);
        assert_eq!(
            r.per_class.iter().map(|m| m.support).collect::<Vec<_>>(),
            [3, 2, 4]
        );
        close(r.macro_avg.f1, (2.0 / 3.0 + 0.5 + 0.75) / 3.0);
        close(
            r.weighted_avg.f1,
            (3.0 * 2.0 / 3.0 + 2.0 * 0.5 + 4.0 * 0.75) / 9.0,
        );
        // Every true class gets 0.8 when right and 0.1 when wrong.
        let expected_ll = -(6.0 * 0.8f64.ln() + 3.0 * 0.1f64.ln()) / 9.0;
        assert!((r.log_loss - expected_ll).abs() < 1e-6);
        let table = r.to_string();
        assert!(table.contains("weighted avg"), "{table}");
    }

    #[test]
    fn roc_auc_counts_ties_as_half() {
        // Positives score 0.5 and 0.5, negatives 0.5 and 0.2: of the four
        // positive/negative pairs two tie (1/2 each) and two are ordered right.
        let auc = roc_auc(&[0.5, 0.5, 0.5, 0.2], &[true, true, false, false]).unwrap();
        close(auc.unwrap(), 0.75);
        // scikit-learn's documented example: roc_auc_score([0,0,1,1], [.1,.4,.35,.8]).
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        close(auc.unwrap(), 0.75);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]).unwrap(), None);
    }

    #[test]
    fn per_class_auc_is_none_for_absent_class() {
        let probs = [0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.6, 0.3, 0.1];
        let r = classification(&probs, 3, &[0, 1, 1]).unwrap();
        assert_eq!(r.per_class[2].roc_auc, None);
        close(r.per_class[0].roc_auc.unwrap(), 1.0);
        // Class 1 scores: positives 0.7, 0.3, negative 0.2 -> both above.
        close(r.per_class[1].roc_auc.unwrap(), 1.0);
        close(r.macro_roc_auc.unwrap(), 1.0);
        // Class 2 was neither seen nor predicted, so it is left out of the macro mean.
        close(r.macro_avg.recall, (1.0 + 0.5) / 2.0);
    }

    #[test]
    fn single_sigmoid_output_is_binary() {
        let r = classification(&[0.9, 0.2, 0.6, 0.4], 1, &[1, 0, 0, 1]).unwrap();
        assert_eq!(r.per_class.len(), 2);
        assert_eq!(r.confusion, vec![vec![1, 1], vec![1, 1]]);
        close(r.accuracy, 0.5);
        // Positives 0.9, 0.4 vs negatives 0.2, 0.6: 3 of 4 pairs ordered right.
        close(r.per_class[1].roc_auc.unwrap(), 0.75);
        close(r.per_class[0].roc_auc.unwrap(), 0.75);
    }

    #[test]
    fn mistakes_sorted_by_confidence() {
        let probs = [
            0.9, 0.1, // label 1, wrong at 0.9
            0.4, 0.6, // label 1, right
            0.3, 0.7, // label 0, wrong at 0.7
            0.95, 0.05, // label 1, wrong at 0.95
        ];
        let m = most_confident_mistakes(&probs, 2, &[1, 1, 0, 1], 2).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].index, m[0].label, m[0].predicted), (3, 1, 0));
        assert_eq!(m[1].index, 0);
        assert!((m[0].confidence - 0.95).abs() < 1e-6);
        assert!(
            most_confident_mistakes(&probs, 2, &[0, 1, 1, 0], 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn regression_by_hand() {
        let r = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
        close(r.r2, 1.0);
        close(r.mae, 0.0);
        // errors 1, -1, 0, 2 on truth with mean 2.5: ss_tot = 2.25+.25+.25+2.25 = 5.
        let r = regression(&[2.0, 1.0, 3.0, 6.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        close(r.mae, 1.0);
        close(r.mse, 1.5);
        close(r.rmse, 1.5f64.sqrt());
        close(r.r2, 1.0 - 6.0 / 5.0);
        // Constant truth follows scikit-learn's finite convention.
        close(regression(&[2.0, 2.0], &[2.0, 2.0]).unwrap().r2, 1.0);
        close(regression(&[1.0, 2.0], &[2.0, 2.0]).unwrap().r2, 0.0);
    }

    #[test]
    fn anomaly_picks_best_f1_threshold() {
        // Sorted descending: 0.9 A, 0.8 A, 0.7 N, 0.6 A, 0.1 N.
        // t=0.9: P1 R1/3 F1 .5; t=0.8: P1 R2/3 F1 .8; t=0.7: P2/3 R2/3 F1 2/3;
        // t=0.6: P3/4 R1 F1 6/7 (best); t=0.1: P3/5 R1 F1 .75.
        let r = anomaly(
            &[0.1, 0.9, 0.6, 0.8, 0.7],
            &[false, true, true, true, false],
        )
        .unwrap();
        assert_eq!(r.best_threshold, 0.6);
        close(r.best_f1, 6.0 / 7.0);
        close(r.precision, 0.75);
        close(r.recall, 1.0);
        // Anomalies 0.9, 0.8, 0.6 vs normals 0.7, 0.1: 5 of 6 pairs right.
        close(r.roc_auc, 5.0 / 6.0);
        assert!(r.to_string().contains("best threshold"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(classification(&[], 3, &[]), Err(MetricsError::Empty));
        assert_eq!(
            classification(&[1.0], 0, &[0]),
            Err(MetricsError::NoClasses)
        );
        assert!(matches!(
            classification(&[0.5, 0.5, 0.5], 2, &[0, 1]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            classification(&[0.5, f32::NAN], 2, &[0]),
            Err(MetricsError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            classification(&[0.5, 0.5], 2, &[2]),
            Err(MetricsError::LabelOutOfRange { label: 2, .. })
        ));
        assert!(matches!(
            classification(&[3.0, -2.0], 2, &[0]),
            Err(MetricsError::NotAProbability { index: 0, .. })
        ));
        assert!(matches!(
            most_confident_mistakes(&[0.5, 0.5], usize::MAX, &[0, 1], 1),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert_eq!(regression(&[], &[]), Err(MetricsError::Empty));
        assert!(matches!(
            regression(&[1.0, f32::INFINITY], &[1.0, 2.0]),
            Err(MetricsError::NonFinite { what: "pred", .. })
        ));
        assert!(matches!(
            anomaly(&[f32::NAN, 1.0], &[true, false]),
            Err(MetricsError::NonFinite { what: "scores", .. })
        ));
        assert_eq!(
            anomaly(&[0.1, 0.2], &[false, false]),
            Err(MetricsError::OneSided {
                anomalies: 0,
                samples: 2
            })
        );
        assert_eq!(roc_auc(&[], &[]), Err(MetricsError::Empty));
        let msg = anomaly(&[1.0, f32::NAN], &[true, false])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("scores[1]"), "{msg}");
    }

    #[test]
    fn reports_serialise() {
        let r = classification(&rows(&[0, 1], 2, 0.9), 2, &[0, 1]).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"precision\""), "{json}");
        let back: ClassificationReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
