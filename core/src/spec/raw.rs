//! The study file as serde reads it, before validation: every table with
//! `deny_unknown_fields`, every value optional where the file may leave it out.

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStudy {
    pub(super) name: String,
    pub(super) objective: RawObjective,
    #[serde(default)]
    pub(super) algorithm: RawAlgorithm,
    #[serde(default)]
    pub(super) early_stopping: Option<RawEarlyStopping>,
    #[serde(default)]
    pub(super) budget: RawBudget,
    #[serde(default)]
    pub(super) evaluation: RawEvaluation,
    pub(super) task: RawTask,
    pub(super) parameters: IndexMap<String, RawParam>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvaluation {
    pub(super) folds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjective {
    pub(super) metric: String,
    pub(super) direction: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlgorithm {
    pub(super) sampler: Option<String>,
    pub(super) seed: Option<i64>,
    pub(super) repeats: Option<i64>,
    pub(super) startup_trials: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEarlyStopping {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) min_epochs: Option<i64>,
    pub(super) reduction_factor: Option<i64>,
    pub(super) warmup_trials: Option<i64>,
    pub(super) mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    pub(super) max_trials: Option<i64>,
    pub(super) parallel_trials: Option<i64>,
    pub(super) max_failed_trials: Option<i64>,
    pub(super) max_attempts: Option<i64>,
    pub(super) keep_artifacts: Option<i64>,
    pub(super) checkpoints: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTask {
    pub(super) model: String,
    pub(super) train_file: String,
    pub(super) validation_file: Option<String>,
    pub(super) test_file: Option<String>,
    pub(super) text_column: Option<String>,
    pub(super) text_pair_column: Option<String>,
    pub(super) label_column: Option<String>,
    pub(super) max_seq_length: Option<i64>,
    pub(super) max_train_samples: Option<i64>,
    pub(super) class_weights: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    pub(super) value: Option<toml::Value>,
    pub(super) values: Option<Vec<toml::Value>>,
    pub(super) distribution: Option<String>,
    pub(super) min: Option<toml::Value>,
    pub(super) max: Option<toml::Value>,
    pub(super) step: Option<toml::Value>,
    pub(super) grid_points: Option<i64>,
}

/// How strictly a study file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strictness {
    /// `study create`: every rule.
    New,
    /// A study already in the database: rules added after it was accepted (safe names,
    /// `max_trials` within the grid) are not applied again, so an upgrade never locks a
    /// coordinator out of its own database.
    Stored,
}
