//! The worker's metrics against scikit-learn itself (the pinned reference package `make setup`
//! installs): Matthews correlation, weighted F1, ROC-AUC, PR-AUC (average precision), log loss
//! and the expected calibration error (sklearn's `calibration_curve` binning, which has no ECE
//! of its own), on fixed fixtures with two and three classes, tied scores, a class never
//! predicted, and probabilities at 0 and 1.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use bertsweep_worker::metrics::{probabilistic_scores, ProbabilisticScores, ECE_BINS};

/// A fixed pseudo-random stream (64-bit LCG), so the fixtures never change.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` examples of `classes` classes: labels, and probabilities leaning towards the label with
/// `skill`, rounded to two decimals so that scores tie.
fn fixture(seed: u64, n: usize, classes: usize, skill: f64) -> (Vec<i64>, Vec<f64>) {
    let mut r = Lcg(seed);
    let mut labels = Vec::new();
    let mut probabilities = Vec::new();
    for _ in 0..n {
        let y = ((r.next() * classes as f64) as usize).min(classes - 1);
        let mut row: Vec<f64> = (0..classes).map(|k| r.next() + if k == y { skill } else { 0.0 }).collect();
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|p| *p = (*p / total * 100.0).round() / 100.0);
        // Rounded rows still sum to one: the last class takes the remainder.
        let head: f64 = row[..classes - 1].iter().sum();
        row[classes - 1] = ((1.0 - head) * 100.0).round() / 100.0;
        labels.push(y as i64);
        probabilities.extend(row);
    }
    (labels, probabilities)
}

/// What scikit-learn says for the same fixture.
fn sklearn(python: &std::path::Path, labels: &[i64], probabilities: &[f64], classes: usize) -> ProbabilisticScores {
    let script = format!(
        r#"
import json, sys
import numpy as np
from sklearn.metrics import matthews_corrcoef, f1_score, roc_auc_score, average_precision_score, log_loss
from sklearn.preprocessing import label_binarize
d = json.load(sys.stdin)
y = np.array(d["labels"]); p = np.array(d["probabilities"]).reshape(len(y), {classes})
pred = p.argmax(axis=1)
if {classes} == 2:
    roc, ap = roc_auc_score(y, p[:, 1]), average_precision_score(y, p[:, 1])
else:
    roc = roc_auc_score(y, p, multi_class="ovr", average="macro")
    ap = average_precision_score(label_binarize(y, classes=list(range({classes}))), p, average="macro")
conf = p.max(axis=1); correct = (pred == y).astype(float)
bins = np.linspace(0.0, 1.0, {bins} + 1)
ids = np.searchsorted(bins[1:-1], conf)
ece = sum(abs(correct[ids == b].sum() - conf[ids == b].sum()) for b in range({bins})) / len(y)
print(json.dumps([matthews_corrcoef(y, pred), f1_score(y, pred, average="weighted", zero_division=0), roc, ap,
                  log_loss(y, p, labels=list(range({classes}))), ece]))
"#,
        bins = ECE_BINS
    );
    let mut child = Command::new(python)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the reference python");
    let input = serde_json::json!({"labels": labels, "probabilities": probabilities}).to_string();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scikit-learn failed (run `make setup`, which installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<f64> = serde_json::from_slice(&out.stdout).expect("six numbers");
    ProbabilisticScores { mcc: v[0], f1_weighted: v[1], roc_auc: v[2], pr_auc: v[3], log_loss: v[4], ece: v[5] }
}

fn assert_close(ours: ProbabilisticScores, theirs: ProbabilisticScores, what: &str) {
    let pairs = [
        ("mcc", ours.mcc, theirs.mcc),
        ("f1_weighted", ours.f1_weighted, theirs.f1_weighted),
        ("roc_auc", ours.roc_auc, theirs.roc_auc),
        ("pr_auc", ours.pr_auc, theirs.pr_auc),
        ("log_loss", ours.log_loss, theirs.log_loss),
        ("ece", ours.ece, theirs.ece),
    ];
    for (name, a, b) in pairs {
        assert!((a - b).abs() < 1e-9, "{what}: {name} {a} (worker) vs {b} (scikit-learn)");
    }
}

#[test]
fn every_metric_matches_scikit_learn() {
    let Some(python) = common::python() else { return };
    for (seed, n, classes, skill) in [(1, 200, 2, 0.6), (2, 57, 2, 0.0), (3, 300, 3, 0.8), (4, 90, 4, 0.3)] {
        let (labels, probabilities) = fixture(seed, n, classes, skill);
        let ours = probabilistic_scores(&probabilities, classes, &labels);
        assert_close(ours, sklearn(&python, &labels, &probabilities, classes), &format!("fixture {seed}"));
    }
    // Hard cases: certain predictions (0 and 1: log loss clipped), a class never predicted,
    // every score tied.
    let labels = vec![0, 1, 1, 0, 2, 2, 1, 0];
    let probabilities = vec![
        1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.2, 0.8, 0.0, 1.0, 0.0, 0.0, 0.6, 0.4, 0.0, 0.5, 0.5, 0.0, 0.1, 0.9, 0.0, 0.0,
        1.0, 0.0,
    ];
    let ours = probabilistic_scores(&probabilities, 3, &labels);
    assert_close(ours, sklearn(&python, &labels, &probabilities, 3), "hard cases");
    let tied = vec![0.5; 8];
    let labels = vec![0, 1, 0, 1];
    assert_close(probabilistic_scores(&tied, 2, &labels), sklearn(&python, &labels, &tied, 2), "all tied");
}
