//! Trials' dev-set evaluations: checking the predictions a worker sends with CompleteTrial,
//! the bootstrap interval of the objective (computed once, off the registry lock), the
//! per-class scores and confusion matrix shown by `trials` and the dashboard, the bytes the
//! store keeps, and the paired comparison behind `best`.

use std::sync::Arc;

use bertsweep_evaluation::{bootstrap, Comparison, Predictions, Run};
use bertsweep_proto::v1 as pb;
use prost::Message;

use crate::model::{Trial, TrialEvaluation, TrialState};
use crate::params::ParamValue;
use crate::registry::Configuration;
pub use bertsweep_core::evaluation::interval_seed;

/// The longest class name kept, in bytes (workers cut longer labels).
pub const MAX_CLASS_NAME_BYTES: usize = 64;

/// Up to this many classes, trial listings carry the per-class scores.
pub const MAX_REPORTED_CLASSES: usize = 64;

/// Up to this many classes, trial listings carry the confusion matrix.
pub const MAX_CONFUSION_CLASSES: usize = 32;

/// Checks a worker's predictions and computes the objective's interval. CPU-bound (1,000
/// resamples): call it outside the registry lock, on a blocking thread.
pub fn evaluate(p: pb::DevPredictions, metric: &str, seed: u64) -> Result<TrialEvaluation, String> {
    let (epoch, predictions, class_names) = from_proto(p)?;
    let interval = bootstrap::confidence_interval(&predictions, metric, seed).map_err(|e| e.to_string())?;
    Ok(assemble(epoch, predictions, class_names, interval))
}

/// An evaluation with its per-class scores and confusion matrix worked out once, here, rather
/// than at every listing, event or page that shows them.
fn assemble(
    epoch: u32,
    predictions: Predictions,
    class_names: Vec<String>,
    interval: Option<bootstrap::Interval>,
) -> TrialEvaluation {
    let classes = predictions.classes();
    let per_class = if classes <= MAX_REPORTED_CLASSES { predictions.per_class() } else { Vec::new() };
    let confusion = if classes <= MAX_CONFUSION_CLASSES { predictions.confusion_matrix() } else { Vec::new() };
    TrialEvaluation { epoch, predictions, class_names, interval, per_class, confusion }
}

/// Decodes and checks predictions: `epoch` from 1, the [`Predictions::new`] limits, and either
/// no class names or one of at most [`MAX_CLASS_NAME_BYTES`] per class.
pub fn from_proto(p: pb::DevPredictions) -> Result<(u32, Predictions, Vec<String>), String> {
    if p.epoch == 0 {
        return Err("predictions.epoch is 0; epochs count from 1".into());
    }
    let classes = p.classes as usize;
    if !p.class_names.is_empty() && p.class_names.len() != classes {
        return Err(format!(
            "predictions carry {} class names for {classes} classes; send none or one per class",
            p.class_names.len()
        ));
    }
    if let Some(long) = p.class_names.iter().find(|n| n.len() > MAX_CLASS_NAME_BYTES) {
        return Err(format!(
            "class name {} is longer than {MAX_CLASS_NAME_BYTES} bytes",
            crate::text::quote(&long.chars().take(20).collect::<String>())
        ));
    }
    if p.class_names.iter().any(|n| n.chars().any(char::is_control)) {
        return Err("a class name contains control characters; send labels as printable text".into());
    }
    let predictions =
        Predictions::new(classes, p.labels, p.probabilities, p.class_weights).map_err(|e| e.to_string())?;
    Ok((p.epoch, predictions, p.class_names))
}

/// The predictions as the worker sent them (what the store keeps).
pub fn to_proto(e: &TrialEvaluation) -> pb::DevPredictions {
    pb::DevPredictions {
        epoch: e.epoch,
        classes: e.predictions.classes() as u32,
        labels: e.predictions.labels().to_vec(),
        probabilities: e.predictions.probabilities().to_vec(),
        class_weights: e.predictions.class_weights().to_vec(),
        class_names: e.class_names.clone(),
    }
}

/// The store's bytes for an evaluation (its interval is kept in columns of its own).
pub fn encode(e: &TrialEvaluation) -> Vec<u8> {
    to_proto(e).encode_to_vec()
}

/// An evaluation back from the store's bytes and interval columns.
pub fn decode(bytes: &[u8], interval: Option<bootstrap::Interval>) -> Result<TrialEvaluation, String> {
    let p = pb::DevPredictions::decode(bytes).map_err(|e| format!("undecodable predictions: {e}"))?;
    let (epoch, predictions, class_names) = from_proto(p)?;
    Ok(assemble(epoch, predictions, class_names, interval))
}

/// A class's display name: its label from the data, else its id.
pub fn class_name(e: &TrialEvaluation, class: usize) -> String {
    e.class_names.get(class).cloned().unwrap_or_else(|| class.to_string())
}

/// What trial listings show of an evaluation.
pub fn summary_to_proto(e: &TrialEvaluation) -> pb::TrialEvaluation {
    let per_class = e
        .per_class
        .iter()
        .enumerate()
        .map(|(k, s)| pb::ClassScores {
            name: class_name(e, k),
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            support: s.support,
        })
        .collect();
    pb::TrialEvaluation {
        epoch: e.epoch,
        examples: e.predictions.len() as u32,
        objective_low: e.interval.map(|i| i.low),
        objective_high: e.interval.map(|i| i.high),
        classes: per_class,
        confusion: e.confusion.clone(),
    }
}

/// The evaluations of one configuration's completed trials, with the fold and seed each ran.
pub type Runs = Vec<(u32, u64, Arc<TrialEvaluation>)>;

/// The two top-ranked configurations' evaluations (`configurations` ranked by mean, as
/// [`crate::registry::Registry::configurations`] returns them), or why they cannot be compared.
pub fn top_two(configurations: &[Configuration], trials: &[Trial]) -> Result<(Configuration, Runs, Runs), String> {
    let ranked: Vec<&Configuration> = configurations.iter().filter(|c| c.mean.is_some()).collect();
    let [best, runner_up, ..] = ranked.as_slice() else {
        return Err("only one configuration has completed; there is no runner-up to compare with".into());
    };
    let runs = |c: &Configuration| -> Result<Runs, String> {
        let runs: Runs = c
            .trials
            .iter()
            .filter_map(|&n| trials.get(n as usize))
            .filter(|t| t.state == TrialState::Completed)
            .filter_map(|t| t.evaluation.clone().map(|e| (per_trial(t, "fold") as u32, per_trial(t, "seed"), e)))
            .collect();
        if runs.is_empty() {
            Err(format!(
                "trial {} has no dev-set predictions (its worker predates them); no paired comparison",
                c.trials.first().copied().unwrap_or(0)
            ))
        } else {
            Ok(runs)
        }
    };
    Ok(((*runner_up).clone(), runs(best)?, runs(runner_up)?))
}

/// The paired bootstrap of the best configuration's runs against the runner-up's. CPU-bound:
/// call it on a blocking thread.
pub fn compare(best: &Runs, runner_up: &Runs, metric: &str, maximize: bool, seed: u64) -> Result<Comparison, String> {
    bootstrap::paired_comparison(&view(best), &view(runner_up), metric, maximize, seed).map_err(|e| e.to_string())
}

fn view(runs: &Runs) -> Vec<Run<'_>> {
    runs.iter().map(|(fold, seed, e)| Run { fold: *fold, seed: *seed, predictions: &e.predictions }).collect()
}

/// A per-trial parameter the registry set (`seed` under `algorithm.repeats`, `fold` under
/// `evaluation.folds`), else 0.
fn per_trial(t: &Trial, name: &str) -> u64 {
    match t.params.get(name) {
        Some(ParamValue::Int(v)) => *v as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> pb::DevPredictions {
        pb::DevPredictions {
            epoch: 2,
            classes: 2,
            labels: vec![0, 1, 1, 0],
            probabilities: vec![0.9, 0.1, 0.3, 0.7, 0.6, 0.4, 0.2, 0.8],
            class_weights: vec![],
            class_names: vec!["negative".into(), "positive".into()],
        }
    }

    #[test]
    fn round_trips_through_the_stores_bytes() {
        let e = evaluate(sent(), "eval_accuracy", interval_seed(0, 3)).unwrap();
        assert_eq!(e.epoch, 2);
        assert!(e.interval.is_some());
        assert_eq!(decode(&encode(&e), e.interval).unwrap(), e);
        let summary = summary_to_proto(&e);
        assert_eq!(summary.examples, 4);
        assert_eq!(summary.confusion, vec![1, 1, 1, 1]);
        assert_eq!(summary.classes[1].name, "positive");
        assert_eq!(summary.classes[1].support, 2);
    }

    #[test]
    fn every_objective_metric_is_scored_from_predictions() {
        let e = evaluate(sent(), "eval_accuracy", 0).unwrap();
        for metric in bertsweep_proto::contract::OBJECTIVE_METRICS {
            assert!(e.predictions.score(metric).unwrap().is_finite(), "{metric}");
        }
    }

    #[test]
    fn bad_predictions_get_one_line() {
        let cases: Vec<(pb::DevPredictions, &str)> = vec![
            (pb::DevPredictions { epoch: 0, ..sent() }, "epochs count from 1"),
            (pb::DevPredictions { class_names: vec!["x".into()], ..sent() }, "1 class names for 2 classes"),
            (pb::DevPredictions { class_names: vec!["x".repeat(65), "y".into()], ..sent() }, "longer than 64 bytes"),
            (pb::DevPredictions { labels: vec![0, 1, 5, 0], ..sent() }, "label 5"),
            (pb::DevPredictions { probabilities: vec![0.5; 7], ..sent() }, "7 probabilities"),
        ];
        for (p, expected) in cases {
            let e = evaluate(p, "eval_accuracy", 0).unwrap_err();
            assert!(e.contains(expected) && !e.contains('\n'), "{e}");
        }
        assert!(decode(b"\xff\xff", None).unwrap_err().starts_with("undecodable predictions"));
    }
}
