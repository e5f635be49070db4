//! Classification metrics with scikit-learn's semantics (what transformers' examples report),
//! checked against scikit-learn itself (`worker/tests/metrics_sklearn.rs`).
//!
//! Macro averages run over the classes present in the labels or the predictions (sklearn's
//! default `labels=None`); a precision or recall whose denominator is zero counts as 0
//! (`zero_division=0`).

use std::collections::BTreeMap;

/// Accuracy and macro precision, recall and F1 of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassificationScores {
    /// Fraction of exact matches.
    pub accuracy: f64,
    /// Unweighted mean of per-class precision.
    pub precision: f64,
    /// Unweighted mean of per-class recall.
    pub recall: f64,
    /// Unweighted mean of per-class F1 (not the F1 of the mean precision and recall).
    pub f1: f64,
}

/// Scores `predictions` against `labels` (equal lengths; empty gives all zeros).
pub fn classification_scores(predictions: &[i64], labels: &[i64]) -> ClassificationScores {
    assert_eq!(predictions.len(), labels.len(), "predictions and labels differ in length");
    if labels.is_empty() {
        return ClassificationScores { accuracy: 0.0, precision: 0.0, recall: 0.0, f1: 0.0 };
    }
    let counts = class_counts(predictions, labels);
    let correct: f64 = counts.values().map(|c| c.0).sum();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for &(tp, predicted, actual) in counts.values() {
        let (p, r) = (ratio(tp, predicted), ratio(tp, actual));
        precision += p;
        recall += r;
        f1 += ratio(2.0 * p * r, p + r);
    }
    let classes = counts.len() as f64;
    ClassificationScores {
        accuracy: correct / labels.len() as f64,
        precision: precision / classes,
        recall: recall / classes,
        f1: f1 / classes,
    }
}

/// Calibration bins of [`expected_calibration_error`] (as in Guo et al. 2017).
pub const ECE_BINS: usize = 15;

/// The further scores of one evaluation, from its predictions and its class probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbabilisticScores {
    /// Matthews correlation coefficient (GLUE's CoLA metric), multiclass as scikit-learn.
    pub mcc: f64,
    /// Per-class F1 weighted by each class's support in the labels.
    pub f1_weighted: f64,
    /// ROC-AUC: of class 1 for two classes, else one-vs-rest macro (NaN with one class).
    pub roc_auc: f64,
    /// Average precision (PR-AUC, scikit-learn's step-wise sum): of class 1 for two classes,
    /// else one-vs-rest macro.
    pub pr_auc: f64,
    /// Mean negative log-probability of the true class (probabilities clipped to [ε, 1-ε]).
    pub log_loss: f64,
    /// Expected calibration error over [`ECE_BINS`] equal-width bins of the top probability.
    pub ece: f64,
}

/// Scores `probabilities` (row-major, `classes` per example) against `labels`; predictions
/// are each row's first largest probability.
pub fn probabilistic_scores(probabilities: &[f64], classes: usize, labels: &[i64]) -> ProbabilisticScores {
    assert_eq!(probabilities.len(), labels.len() * classes, "probabilities and labels differ in length");
    let rows: Vec<&[f64]> = probabilities.chunks(classes.max(1)).collect();
    let predictions: Vec<i64> = rows.iter().map(|r| argmax(r) as i64).collect();
    let (roc_auc, pr_auc) = (roc_auc(&rows, labels), pr_auc(&rows, labels));
    ProbabilisticScores {
        mcc: matthews_corrcoef(&predictions, labels),
        f1_weighted: weighted_f1(&predictions, labels),
        roc_auc,
        pr_auc,
        log_loss: log_loss(&rows, labels),
        ece: expected_calibration_error(&rows, labels, ECE_BINS),
    }
}

/// One-vs-rest macro over the classes present in `labels` of `score(column k, is k)`, or
/// class 1's alone with two classes; NaN with no class to score.
fn one_vs_rest(rows: &[&[f64]], labels: &[i64], score: fn(&[f64], &[bool]) -> f64) -> f64 {
    let classes = rows.first().map_or(0, |r| r.len());
    let column = |k: usize| -> Vec<f64> { rows.iter().map(|r| r[k]).collect() };
    let is = |k: usize| -> Vec<bool> { labels.iter().map(|&y| y == k as i64).collect() };
    if classes == 2 {
        return score(&column(1), &is(1));
    }
    let values: Vec<f64> =
        (0..classes).filter(|&k| labels.contains(&(k as i64))).map(|k| score(&column(k), &is(k))).collect();
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// ROC-AUC of probability rows: class 1's for two classes, else one-vs-rest macro over the
/// classes present in `labels` (scikit-learn's `multi_class="ovr", average="macro"`).
pub fn roc_auc(rows: &[&[f64]], labels: &[i64]) -> f64 {
    one_vs_rest(rows, labels, binary_roc_auc)
}

/// PR-AUC (average precision) of probability rows, chosen per class as [`roc_auc`].
pub fn pr_auc(rows: &[&[f64]], labels: &[i64]) -> f64 {
    one_vs_rest(rows, labels, average_precision)
}

/// Index of the first largest value (torch's and numpy's argmax).
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Per class over the classes in `labels` or `predictions`: (true positives, predicted, actual).
fn class_counts(predictions: &[i64], labels: &[i64]) -> BTreeMap<i64, (f64, f64, f64)> {
    let mut counts: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
    for (&p, &y) in predictions.iter().zip(labels) {
        counts.entry(p).or_default().1 += 1.0;
        counts.entry(y).or_default().2 += 1.0;
        if p == y {
            counts.entry(y).or_default().0 += 1.0;
        }
    }
    counts
}

/// scikit-learn's `matthews_corrcoef` (multiclass form; 0 when undefined).
pub fn matthews_corrcoef(predictions: &[i64], labels: &[i64]) -> f64 {
    let counts = class_counts(predictions, labels);
    let n = labels.len() as f64;
    let correct: f64 = counts.values().map(|c| c.0).sum();
    let (mut tp_sum, mut pp, mut tt) = (0.0, 0.0, 0.0);
    for &(_, predicted, actual) in counts.values() {
        tp_sum += predicted * actual;
        pp += predicted * predicted;
        tt += actual * actual;
    }
    let denominator = ((n * n - pp) * (n * n - tt)).sqrt();
    if denominator == 0.0 {
        0.0
    } else {
        (correct * n - tp_sum) / denominator
    }
}

/// scikit-learn's `f1_score(average="weighted", zero_division=0)`.
pub fn weighted_f1(predictions: &[i64], labels: &[i64]) -> f64 {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (mut sum, mut support) = (0.0, 0.0);
    for &(tp, predicted, actual) in class_counts(predictions, labels).values() {
        let (p, r) = (ratio(tp, predicted), ratio(tp, actual));
        sum += actual * ratio(2.0 * p * r, p + r);
        support += actual;
    }
    ratio(sum, support)
}

/// Area under the ROC curve of `scores` for `positive` examples (ties share their ranks, as
/// the trapezoidal curve scikit-learn draws); NaN without both positives and negatives.
pub fn binary_roc_auc(scores: &[f64], positive: &[bool]) -> f64 {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j + 1;
    }
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// scikit-learn's `average_precision_score`: Σ (Rₙ - Rₙ₋₁) Pₙ over the distinct thresholds,
/// highest first; NaN without positives.
pub fn average_precision(scores: &[f64], positive: &[bool]) -> f64 {
    let total = positive.iter().filter(|&&p| p).count() as f64;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut recall_before, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            if positive[k] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        let recall = tp / total;
        ap += (recall - recall_before) * tp / (tp + fp);
        recall_before = recall;
        i = j + 1;
    }
    ap
}

/// scikit-learn's `log_loss` (probabilities clipped to [ε, 1-ε], ε of f64).
pub fn log_loss(rows: &[&[f64]], labels: &[i64]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let eps = f64::EPSILON;
    let sum: f64 = rows.iter().zip(labels).map(|(r, &y)| -r[y as usize].clamp(eps, 1.0 - eps).ln()).sum();
    sum / labels.len() as f64
}

/// Expected calibration error: examples binned by their top probability into `bins` equal
/// bins ((k/bins, (k+1)/bins], as scikit-learn's `calibration_curve` bins), then the
/// size-weighted mean of |accuracy - mean top probability| over the bins.
pub fn expected_calibration_error(rows: &[&[f64]], labels: &[i64], bins: usize) -> f64 {
    if labels.is_empty() || bins == 0 {
        return f64::NAN;
    }
    // numpy's linspace(0, 1, bins + 1) inner edges: k * (1 / bins).
    let step = 1.0 / bins as f64;
    let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); bins]; // (count, correct, confidence)
    for (r, &y) in rows.iter().zip(labels) {
        let predicted = argmax(r);
        let confidence = r[predicted];
        let bin = (1..bins).filter(|&k| k as f64 * step < confidence).count();
        let s = &mut sums[bin];
        s.0 += 1.0;
        s.1 += if predicted as i64 == y { 1.0 } else { 0.0 };
        s.2 += confidence;
    }
    let n = labels.len() as f64;
    // (count / n) × |correct / count - confidence / count|, per bin.
    sums.iter().map(|&(_, correct, confidence)| (correct - confidence).abs() / n).sum()
}

/// One class's row of scikit-learn's `classification_report`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    /// Of the examples predicted as this class, the fraction that are (0 when none were).
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
    /// Examples of this class in the labels.
    pub support: u64,
}

/// Per-class precision, recall, F1 and support for classes `0..classes`, as scikit-learn's
/// `precision_recall_fscore_support(labels=range(classes), zero_division=0)`. Predictions or
/// labels outside `0..classes` are counted nowhere.
pub fn per_class_scores(predictions: &[i64], labels: &[i64], classes: usize) -> Vec<ClassScores> {
    let matrix = confusion_matrix(predictions, labels, classes);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    (0..classes)
        .map(|k| {
            let tp = matrix[k * classes + k] as f64;
            let actual: u64 = matrix[k * classes..(k + 1) * classes].iter().sum();
            let predicted: u64 = (0..classes).map(|y| matrix[y * classes + k]).sum();
            let (precision, recall) = (ratio(tp, predicted as f64), ratio(tp, actual as f64));
            ClassScores { precision, recall, f1: ratio(2.0 * precision * recall, precision + recall), support: actual }
        })
        .collect()
}

/// The confusion matrix, row-major: entry `true × classes + predicted` counts the examples of
/// class `true` predicted as `predicted` (scikit-learn's `confusion_matrix` layout).
pub fn confusion_matrix(predictions: &[i64], labels: &[i64], classes: usize) -> Vec<u64> {
    let mut matrix = vec![0u64; classes * classes];
    let in_range = |v: i64| usize::try_from(v).ok().filter(|&v| v < classes);
    for (&p, &y) in predictions.iter().zip(labels) {
        if let (Some(p), Some(y)) = (in_range(p), in_range(y)) {
            matrix[y * classes + p] += 1;
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn perfect_and_all_wrong() {
        let s = classification_scores(&[0, 1, 1], &[0, 1, 1]);
        assert_eq!(s, ClassificationScores { accuracy: 1.0, precision: 1.0, recall: 1.0, f1: 1.0 });
        let s = classification_scores(&[1, 0], &[0, 1]);
        assert_eq!(s, ClassificationScores { accuracy: 0.0, precision: 0.0, recall: 0.0, f1: 0.0 });
    }

    #[test]
    fn matches_sklearn_on_a_hand_made_case() {
        // y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,2,0]:
        // class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 4/5; class 2: P 1 R 1/2 F1 2/3.
        let s = classification_scores(&[0, 1, 1, 1, 2, 0], &[0, 0, 1, 1, 2, 2]);
        assert!(close(s.accuracy, 4.0 / 6.0));
        assert!(close(s.precision, (0.5 + 2.0 / 3.0 + 1.0) / 3.0));
        assert!(close(s.recall, (0.5 + 1.0 + 0.5) / 3.0));
        assert!(close(s.f1, (0.5 + 0.8 + 2.0 / 3.0) / 3.0));
    }

    #[test]
    fn constant_predictor_gets_zero_for_the_unpredicted_class() {
        // sklearn: precision_score([0,0,1,1],[1,1,1,1], average="macro", zero_division=0) = 0.25
        let s = classification_scores(&[1, 1, 1, 1], &[0, 0, 1, 1]);
        assert!(close(s.accuracy, 0.5));
        assert!(close(s.precision, 0.25));
        assert!(close(s.recall, 0.5));
        assert!(close(s.f1, (0.0 + 2.0 / 3.0) / 2.0));
    }

    #[test]
    fn per_class_rows_and_the_confusion_matrix() {
        // The hand-made case above, plus class 3 that never occurs.
        let (pred, y) = ([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]);
        assert_eq!(confusion_matrix(&pred, &y, 4), vec![1, 1, 0, 0, 0, 2, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]);
        let rows = per_class_scores(&pred, &y, 4);
        assert_eq!(rows.len(), 4);
        assert!(close(rows[1].precision, 2.0 / 3.0) && close(rows[1].recall, 1.0) && close(rows[1].f1, 0.8));
        assert_eq!(rows.iter().map(|r| r.support).collect::<Vec<_>>(), vec![2, 2, 2, 0]);
        assert_eq!(rows[3], ClassScores { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
        // Out-of-range values are not counted.
        assert_eq!(confusion_matrix(&[5, -1], &[0, 0], 2), vec![0, 0, 0, 0]);
    }
}
