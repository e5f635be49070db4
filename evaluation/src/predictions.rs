//! One evaluation's predictions on the dev set, in the data set's row order, and every
//! objective metric scored from them on any subset of the examples (what the bootstrap
//! resamples).

use crate::metrics::{self, ECE_BINS};
use crate::EvaluationError;

/// The most classes a prediction set may have.
pub const MAX_CLASSES: usize = 256;

/// The most probabilities (examples × classes) one prediction set may carry: 2 MiB of `f32`,
/// so that one set fits a gRPC message (4 MiB by default) with its labels, and a coordinator
/// holding a thousand trials' sets stays within megabytes for GLUE-sized dev sets (SST-2:
/// 872 × 2; MNLI-matched: 9,815 × 3).
pub const MAX_VALUES: usize = 1 << 19;

/// Dev-set predictions of one epoch: labels and class probabilities per example, in the data
/// set's row order (so that two trials' sets pair example by example).
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Classes per example (the width of each probability row).
    classes: usize,
    /// True class of each example.
    labels: Vec<u32>,
    /// Row-major `labels.len() × classes` softmax probabilities.
    probabilities: Vec<f32>,
    /// The loss weight of each class (`task.class_weights`); empty when unweighted.
    class_weights: Vec<f32>,
}

impl Predictions {
    /// Checks and wraps one evaluation's predictions: at least one example, 2 to
    /// [`MAX_CLASSES`] classes, one probability row per label, labels below `classes`, finite
    /// probabilities in [0, 1], at most [`MAX_VALUES`] probabilities, and either no class
    /// weights or one positive finite weight per class.
    pub fn new(
        classes: usize,
        labels: Vec<u32>,
        probabilities: Vec<f32>,
        class_weights: Vec<f32>,
    ) -> Result<Self, EvaluationError> {
        let invalid = |what: String| Err(EvaluationError::InvalidPredictions(what));
        if !(2..=MAX_CLASSES).contains(&classes) {
            return invalid(format!("{classes} classes; between 2 and {MAX_CLASSES} are supported"));
        }
        if labels.is_empty() {
            return invalid("no examples".into());
        }
        if labels.len().saturating_mul(classes) > MAX_VALUES {
            return invalid(format!(
                "{} examples × {classes} classes is more than {MAX_VALUES} probabilities",
                labels.len()
            ));
        }
        if probabilities.len() != labels.len() * classes {
            return invalid(format!(
                "{} probabilities for {} examples of {classes} classes (expected {})",
                probabilities.len(),
                labels.len(),
                labels.len() * classes
            ));
        }
        if let Some(y) = labels.iter().find(|&&y| y as usize >= classes) {
            return invalid(format!("label {y} is not below the {classes} classes"));
        }
        if let Some(p) = probabilities.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return invalid(format!("probability {p} is not in [0, 1]"));
        }
        if !class_weights.is_empty()
            && (class_weights.len() != classes || class_weights.iter().any(|w| !(w.is_finite() && *w > 0.0)))
        {
            return invalid(format!(
                "{} class weights for {classes} classes (expected none, or one positive weight per class)",
                class_weights.len()
            ));
        }
        Ok(Predictions { classes, labels, probabilities, class_weights })
    }

    /// Classes per example.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Examples in the set.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Never true for a constructed set (it has at least one example); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The true class of each example.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Row-major probabilities, `classes` per example.
    pub fn probabilities(&self) -> &[f32] {
        &self.probabilities
    }

    /// Per-class loss weights; empty when the loss was unweighted.
    pub fn class_weights(&self) -> &[f32] {
        &self.class_weights
    }

    /// Whether `other` was scored on the same examples (same labels in the same order and
    /// the same classes), the precondition of a paired comparison.
    pub fn same_examples(&self, other: &Predictions) -> bool {
        self.classes == other.classes && self.labels == other.labels
    }

    /// The predicted class of each example (first largest probability, as torch's argmax).
    pub fn predicted(&self) -> Vec<i64> {
        self.probabilities.chunks(self.classes).map(|row| argmax_f32(row) as i64).collect()
    }

    /// Per-class precision, recall, F1 and support over every class.
    pub fn per_class(&self) -> Vec<metrics::ClassScores> {
        metrics::per_class_scores(&self.predicted(), &self.labels_i64(), self.classes)
    }

    /// The confusion matrix, row-major true × predicted.
    pub fn confusion_matrix(&self) -> Vec<u64> {
        metrics::confusion_matrix(&self.predicted(), &self.labels_i64(), self.classes)
    }

    /// `metric` (one of the objective metrics, e.g. `eval_accuracy`) over every example.
    pub fn score(&self, metric: &str) -> Result<f64, EvaluationError> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.score_on(metric, &all)
    }

    /// `metric` over the examples at `indices` (repeats allowed: a bootstrap resample).
    /// `eval_loss` is the mean cross-entropy, class-weighted as in training
    /// (Σ w_y·(−ln p_y) / Σ w_y), computed from the stored probabilities.
    pub fn score_on(&self, metric: &str, indices: &[usize]) -> Result<f64, EvaluationError> {
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        let predicted = || -> Vec<i64> { indices.iter().map(|&i| argmax_f32(self.row(i)) as i64).collect() };
        let rows =
            || -> Vec<Vec<f64>> { indices.iter().map(|&i| self.row(i).iter().map(|&p| p as f64).collect()).collect() };
        let value = match metric {
            "eval_accuracy" => metrics::classification_scores(&predicted(), &labels).accuracy,
            "eval_precision" => metrics::classification_scores(&predicted(), &labels).precision,
            "eval_recall" => metrics::classification_scores(&predicted(), &labels).recall,
            "eval_f1" => metrics::classification_scores(&predicted(), &labels).f1,
            "eval_mcc" => metrics::matthews_corrcoef(&predicted(), &labels),
            "eval_f1_weighted" => metrics::weighted_f1(&predicted(), &labels),
            "eval_loss" => self.weighted_loss(indices),
            "eval_roc_auc" | "eval_pr_auc" | "eval_log_loss" | "eval_ece" => {
                let owned = rows();
                let rows: Vec<&[f64]> = owned.iter().map(Vec::as_slice).collect();
                match metric {
                    "eval_roc_auc" => metrics::roc_auc(&rows, &labels),
                    "eval_pr_auc" => metrics::pr_auc(&rows, &labels),
                    "eval_log_loss" => metrics::log_loss(&rows, &labels),
                    _ => metrics::expected_calibration_error(&rows, &labels, ECE_BINS),
                }
            }
            other => return Err(EvaluationError::UnknownMetric(other.to_owned())),
        };
        Ok(value)
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.probabilities[i * self.classes..(i + 1) * self.classes]
    }

    fn labels_i64(&self) -> Vec<i64> {
        self.labels.iter().map(|&y| y as i64).collect()
    }

    /// Σ w_y·(−ln p_y) / Σ w_y over `indices` (w = 1 when unweighted); p clipped at f64's ε as
    /// scikit-learn's log loss.
    fn weighted_loss(&self, indices: &[usize]) -> f64 {
        let (mut sum, mut weights) = (0.0, 0.0);
        for &i in indices {
            let y = self.labels[i] as usize;
            let w = self.class_weights.get(y).map_or(1.0, |&w| w as f64);
            let p = (self.row(i)[y] as f64).clamp(f64::EPSILON, 1.0);
            sum -= w * p.ln();
            weights += w;
        }
        if weights > 0.0 {
            sum / weights
        } else {
            f64::NAN
        }
    }
}

fn argmax_f32(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Predictions {
        // Rows: predicted 0, 1, 1, 0; labels 0, 1, 0, 0.
        Predictions::new(2, vec![0, 1, 0, 0], vec![0.9, 0.1, 0.2, 0.8, 0.4, 0.6, 0.7, 0.3], vec![]).unwrap()
    }

    #[test]
    fn scores_every_objective_metric_by_name() {
        let p = three();
        assert_eq!(p.score("eval_accuracy").unwrap(), 0.75);
        assert_eq!(p.predicted(), vec![0, 1, 1, 0]);
        // Every name in the contract's OBJECTIVE_METRICS is scored: coordinator/src/evaluation.rs.
        assert!(p.score("eval_roc_auc").unwrap().is_finite() && p.score("eval_ece").unwrap().is_finite());
        let loss = -(0.9f32.ln() as f64 + 0.8f32.ln() as f64 + 0.4f32.ln() as f64 + 0.7f32.ln() as f64) / 4.0;
        assert!((p.score("eval_loss").unwrap() - loss).abs() < 1e-6);
        assert!((p.score("eval_log_loss").unwrap() - loss).abs() < 1e-6, "unweighted loss is the log loss");
        assert!(matches!(p.score("eval_bleu"), Err(EvaluationError::UnknownMetric(_))));
    }

    #[test]
    fn class_weights_weight_the_loss() {
        let p = Predictions::new(2, vec![0, 1], vec![0.5, 0.5, 0.25, 0.75], vec![1.0, 3.0]).unwrap();
        let expected = (-(0.5f64.ln()) + 3.0 * -(0.75f64.ln())) / 4.0;
        assert!((p.score("eval_loss").unwrap() - expected).abs() < 1e-7);
    }

    #[test]
    fn resamples_repeat_examples() {
        let p = three();
        assert_eq!(p.score_on("eval_accuracy", &[2, 2, 2]).unwrap(), 0.0);
        assert_eq!(p.score_on("eval_accuracy", &[0, 0, 1]).unwrap(), 1.0);
    }

    #[test]
    fn refuses_inconsistent_sets() {
        let bad = |r: Result<Predictions, EvaluationError>| r.unwrap_err().to_string();
        assert!(bad(Predictions::new(1, vec![0], vec![1.0], vec![])).contains("1 classes"));
        assert!(bad(Predictions::new(2, vec![], vec![], vec![])).contains("no examples"));
        assert!(bad(Predictions::new(2, vec![0], vec![0.5], vec![])).contains("1 probabilities for 1 examples"));
        assert!(bad(Predictions::new(2, vec![2], vec![0.5, 0.5], vec![])).contains("label 2"));
        assert!(bad(Predictions::new(2, vec![0], vec![f32::NAN, 0.5], vec![])).contains("not in [0, 1]"));
        assert!(bad(Predictions::new(2, vec![0], vec![0.5, 0.5], vec![1.0])).contains("class weights"));
        assert!(bad(Predictions::new(2, vec![0; MAX_VALUES], vec![], vec![])).contains("more than"));
    }

    #[test]
    fn per_class_and_confusion_come_from_the_argmax() {
        let p = three();
        assert_eq!(p.confusion_matrix(), vec![2, 1, 0, 1]);
        let rows = p.per_class();
        assert_eq!((rows[0].support, rows[1].support), (3, 1));
        assert_eq!(rows[1].precision, 0.5);
    }
}
