//! The one place where protobuf messages become worker types and back (worker side).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bertsweep_proto::v1 as pb;

use crate::data::FoldSpec;
use crate::train::TrialConfig;

/// Why an assignment cannot be turned into a training run (the trial is infeasible).
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// The coordinator sent no task spec.
    #[error("the assignment has no task")]
    NoTask,
    /// A task setting this worker does not know (mismatched versions).
    #[error("task.{name} = {value:?} is not known to this worker; upgrade it")]
    Task {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A parameter is unknown to this worker or has the wrong type.
    #[error("parameter {name}: {message}")]
    Param {
        /// The parameter's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

fn number(name: &str, v: &pb::ParamValue) -> Result<f64, AssignmentError> {
    match &v.kind {
        Some(pb::param_value::Kind::FloatValue(f)) => Ok(*f),
        Some(pb::param_value::Kind::IntValue(i)) => Ok(*i as f64),
        _ => Err(AssignmentError::Param { name: name.into(), message: "expected a number".into() }),
    }
}

fn whole(name: &str, v: &pb::ParamValue) -> Result<usize, AssignmentError> {
    let x = number(name, v)?;
    if x < 0.0 || x.fract() != 0.0 {
        return Err(AssignmentError::Param {
            name: name.into(),
            message: format!("expected a non-negative integer, got {x}"),
        });
    }
    Ok(x as usize)
}

/// Builds the training run for an assignment; unknown parameters are refused (the coordinator
/// validates them, so one here means mismatched versions).
pub fn trial_config(a: &pb::Assignment, group_by_length: bool) -> Result<TrialConfig, AssignmentError> {
    let task = a.task.as_ref().ok_or(AssignmentError::NoTask)?;
    let mut cfg = TrialConfig {
        model_dir: PathBuf::from(&task.model),
        train_file: PathBuf::from(&task.train_file),
        validation_file: PathBuf::from(&task.validation_file),
        test_file: (!task.test_file.is_empty()).then(|| PathBuf::from(&task.test_file)),
        text_column: task.text_column.clone(),
        text_pair_column: (!task.text_pair_column.is_empty()).then(|| task.text_pair_column.clone()),
        label_column: task.label_column.clone(),
        max_seq_length: task.max_seq_length as usize,
        max_train_samples: (task.max_train_samples > 0).then_some(task.max_train_samples as usize),
        objective_metric: task.objective_metric.clone(),
        maximize: task.maximize,
        group_by_length,
        balanced_class_weights: match task.class_weights.as_str() {
            "" | "none" => false,
            "balanced" => true,
            other => return Err(AssignmentError::Task { name: "class_weights", value: other.to_string() }),
        },
        ..TrialConfig::default()
    };
    let mut fold = None;
    use bertsweep_proto::contract::params as P;
    for (name, value) in &a.params {
        match name.as_str() {
            P::LEARNING_RATE => cfg.learning_rate = number(name, value)?,
            P::NUM_TRAIN_EPOCHS => cfg.num_train_epochs = whole(name, value)?,
            P::BATCH_SIZE => cfg.per_device_train_batch_size = whole(name, value)?,
            P::WARMUP_RATIO => cfg.warmup_ratio = number(name, value)?,
            P::WEIGHT_DECAY => cfg.weight_decay = number(name, value)?,
            P::SEED => cfg.seed = whole(name, value)? as u64,
            P::HEAD_LR_MULTIPLIER => cfg.head_lr_multiplier = number(name, value)?,
            P::FREEZE_LAYERS => cfg.freeze_layers = whole(name, value)?,
            P::FOLD => fold = Some(whole(name, value)?),
            other => {
                return Err(AssignmentError::Param {
                    name: other.into(),
                    message: "this worker does not know this parameter; upgrade it".into(),
                })
            }
        }
    }
    cfg.folds = match (task.folds, fold) {
        (0 | 1, None) => None,
        (count, Some(index)) if count >= 2 && index < count as usize => {
            Some(FoldSpec { index, count: count as usize, seed: task.fold_seed })
        }
        (count, index) => {
            return Err(AssignmentError::Param {
                name: "fold".into(),
                message: format!(
                    "fold {index:?} of task.folds = {count} is not a fold; the coordinator is inconsistent"
                ),
            })
        }
    };
    Ok(cfg)
}

/// The best epoch's dev-set predictions for CompleteTrial (class names cut to the
/// coordinator's 64 bytes at a character boundary); `None` when the trial kept none.
pub fn predictions_to_proto(outcome: &crate::train::TrialOutcome) -> Option<pb::DevPredictions> {
    let p = outcome.best_predictions.as_ref()?;
    let cut = |name: &String| -> String {
        let mut end = name.len().min(64);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_owned()
    };
    Some(pb::DevPredictions {
        epoch: outcome.best_epoch as u32,
        classes: p.classes() as u32,
        labels: p.labels().to_vec(),
        probabilities: p.probabilities().to_vec(),
        class_weights: p.class_weights().to_vec(),
        class_names: outcome.class_names.iter().map(cut).collect(),
    })
}

/// Metrics for the wire.
pub fn metrics_to_proto(m: &BTreeMap<String, f64>) -> HashMap<String, f64> {
    m.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.clone(), *v)).collect()
}

/// `name=value` pairs for logs.
pub fn describe_params(a: &pb::Assignment) -> String {
    let mut items: Vec<String> = a
        .params
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(pb::param_value::Kind::FloatValue(f)) if *f != 0.0 && f.abs() < 1e-3 => format!("{k}={f:e}"),
            Some(pb::param_value::Kind::FloatValue(f)) => format!("{k}={f}"),
            Some(pb::param_value::Kind::IntValue(i)) => format!("{k}={i}"),
            Some(pb::param_value::Kind::StringValue(s)) => format!("{k}={s}"),
            None => format!("{k}=?"),
        })
        .collect();
    items.sort();
    items.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(params: &[(&str, pb::param_value::Kind)]) -> pb::Assignment {
        pb::Assignment {
            params: params.iter().map(|(k, v)| (k.to_string(), pb::ParamValue { kind: Some(v.clone()) })).collect(),
            task: Some(pb::TaskSpec {
                model: "m".into(),
                max_seq_length: 64,
                objective_metric: "eval_f1".into(),
                maximize: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_every_known_parameter() {
        use pb::param_value::Kind::*;
        let a = assignment(&[
            ("learning_rate", FloatValue(3e-5)),
            ("num_train_epochs", IntValue(2)),
            ("per_device_train_batch_size", IntValue(16)),
            ("seed", IntValue(7)),
            ("head_lr_multiplier", FloatValue(10.0)),
            ("freeze_layers", IntValue(2)),
            ("warmup_ratio", FloatValue(0.1)),
            ("weight_decay", FloatValue(0.0)),
        ]);
        let cfg = trial_config(&a, true).unwrap();
        assert_eq!(
            (cfg.learning_rate, cfg.num_train_epochs, cfg.per_device_train_batch_size, cfg.seed),
            (3e-5, 2, 16, 7)
        );
        assert_eq!(
            (cfg.head_lr_multiplier, cfg.freeze_layers, cfg.warmup_ratio, cfg.weight_decay),
            (10.0, 2, 0.1, 0.0)
        );
        assert_eq!((cfg.max_seq_length, cfg.objective_metric.as_str()), (64, "eval_f1"));
    }

    #[test]
    fn class_weights_come_from_the_task() {
        let mut a = assignment(&[]);
        assert!(!trial_config(&a, false).unwrap().balanced_class_weights);
        a.task.as_mut().unwrap().class_weights = "balanced".into();
        assert!(trial_config(&a, false).unwrap().balanced_class_weights);
        a.task.as_mut().unwrap().class_weights = "focal".into();
        let err = trial_config(&a, false).unwrap_err().to_string();
        assert!(err.contains("task.class_weights") && err.contains("upgrade"), "{err}");
    }

    #[test]
    fn text_pair_column_comes_from_the_task() {
        let mut a = assignment(&[]);
        assert_eq!(trial_config(&a, false).unwrap().text_pair_column, None);
        a.task.as_mut().unwrap().text_pair_column = "sentence2".into();
        assert_eq!(trial_config(&a, false).unwrap().text_pair_column.as_deref(), Some("sentence2"));
    }

    #[test]
    fn the_fold_parameter_and_the_tasks_folds_make_a_fold_spec() {
        use pb::param_value::Kind::*;
        let mut a = assignment(&[("fold", IntValue(2))]);
        a.task.as_mut().unwrap().folds = 5;
        a.task.as_mut().unwrap().fold_seed = 9;
        assert_eq!(trial_config(&a, false).unwrap().folds, Some(FoldSpec { index: 2, count: 5, seed: 9 }));
        assert_eq!(trial_config(&assignment(&[]), false).unwrap().folds, None);
        // A fold outside the task's folds, or one without folds, is an inconsistent coordinator.
        a.task.as_mut().unwrap().folds = 2;
        assert!(trial_config(&a, false).is_err());
        assert!(trial_config(&assignment(&[("fold", IntValue(0))]), false).is_err());
    }

    #[test]
    fn refuses_unknown_or_mistyped_parameters() {
        use pb::param_value::Kind::*;
        assert!(trial_config(&assignment(&[("dropout", FloatValue(0.1))]), true).is_err());
        assert!(trial_config(&assignment(&[("num_train_epochs", FloatValue(2.5))]), true).is_err());
        assert!(trial_config(&assignment(&[("learning_rate", StringValue("x".into()))]), true).is_err());
    }
}
