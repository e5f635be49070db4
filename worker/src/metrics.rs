//! Classification metrics with scikit-learn's semantics (what transformers' examples report).
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
    // Per class: (true positives, predicted count, actual count).
    let mut counts: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
    let mut correct = 0.0;
    for (&p, &y) in predictions.iter().zip(labels) {
        counts.entry(p).or_default().1 += 1.0;
        counts.entry(y).or_default().2 += 1.0;
        if p == y {
            counts.entry(y).or_default().0 += 1.0;
            correct += 1.0;
        }
    }
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
}
