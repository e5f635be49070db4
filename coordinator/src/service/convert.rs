//! The one place where protobuf messages become domain types and back (coordinator side).

use std::collections::HashMap;

use bertsweep_proto::v1 as pb;
use tonic::Status;

use crate::error::CoordinatorError;
use crate::model::{Assignment, Decision, FailureKind, Metrics, StudyState, StudySummary, Trial, TrialState};
use crate::params::{ParamValue, Params};
use crate::registry::Configuration;

/// A parameter value for the wire; integers stay integers.
pub fn param_to_proto(v: &ParamValue) -> pb::ParamValue {
    let kind = match v {
        ParamValue::Int(i) => pb::param_value::Kind::IntValue(*i),
        ParamValue::Float(f) => pb::param_value::Kind::FloatValue(*f),
        ParamValue::Str(s) => pb::param_value::Kind::StringValue(s.clone()),
    };
    pb::ParamValue { kind: Some(kind) }
}

/// A trial's parameters for the wire.
pub fn params_to_proto(params: &Params) -> HashMap<String, pb::ParamValue> {
    params.iter().map(|(k, v)| (k.clone(), param_to_proto(v))).collect()
}

/// The wire name of a trial state.
pub fn trial_state_to_proto(s: TrialState) -> pb::TrialState {
    match s {
        TrialState::Pending => pb::TrialState::Pending,
        TrialState::Running => pb::TrialState::Running,
        TrialState::Completed => pb::TrialState::Completed,
        TrialState::Pruned => pb::TrialState::Pruned,
        TrialState::Failed => pb::TrialState::Failed,
        TrialState::Stopped => pb::TrialState::Stopped,
        TrialState::Paused => pb::TrialState::Paused,
    }
}

/// The wire name of a study state.
pub fn study_state_to_proto(s: StudyState) -> pb::StudyState {
    match s {
        StudyState::Running => pb::StudyState::Running,
        StudyState::Completed => pb::StudyState::Completed,
        StudyState::Failed => pb::StudyState::Failed,
        StudyState::Stopped => pb::StudyState::Stopped,
    }
}

/// A study state a client asked about (`study list --state`); UNSPECIFIED is not a state.
pub fn study_state_from_proto(s: pb::StudyState) -> Result<StudyState, Status> {
    match s {
        pb::StudyState::Running => Ok(StudyState::Running),
        pb::StudyState::Completed => Ok(StudyState::Completed),
        pb::StudyState::Failed => Ok(StudyState::Failed),
        pb::StudyState::Stopped => Ok(StudyState::Stopped),
        pb::StudyState::Unspecified => Err(Status::invalid_argument("study state is unspecified")),
    }
}

/// A trial with both curves (current attempt, earlier attempts) for `ListTrials`, `GetBest` and watchers.
pub fn trial_to_proto(t: &Trial) -> pb::Trial {
    pb::Trial {
        study: t.study.clone(),
        number: t.number,
        state: trial_state_to_proto(t.state) as i32,
        params: params_to_proto(&t.params),
        value: t.value,
        metrics: metrics_to_proto(&t.metrics),
        intermediate: t
            .intermediate
            .iter()
            .map(|(epoch, m)| pb::EpochMetrics { epoch: *epoch, metrics: metrics_to_proto(m), attempt: t.attempt })
            .collect(),
        earlier_attempts: t
            .earlier_attempts
            .iter()
            .map(|e| pb::EpochMetrics { epoch: e.epoch, metrics: metrics_to_proto(&e.metrics), attempt: e.attempt })
            .collect(),
        attempt: t.attempt,
        worker_id: t.worker_id.clone(),
        artifact: t.artifact.clone(),
        error: t.error.clone(),
        created_at_ms: t.created_ms,
        started_at_ms: t.started_ms.unwrap_or(0),
        finished_at_ms: t.finished_ms.unwrap_or(0),
        trial_id: t.id,
        checkpoint: t.checkpoint.clone(),
        checkpoint_epoch: t.checkpoint_epoch,
        peak_device_memory_bytes: t.peak_device_memory_bytes,
        evaluation: t.evaluation.as_deref().map(crate::evaluation::summary_to_proto),
        test_metrics: metrics_to_proto(&t.test_metrics),
    }
}

/// A study's summary for `ListStudies` and `GetStudy`.
pub fn study_to_proto(s: &StudySummary) -> pb::Study {
    let c = s.counts;
    pb::Study {
        name: s.record.name.clone(),
        state: study_state_to_proto(s.record.state) as i32,
        sampler: s.spec.sampler.as_str().to_string(),
        objective_metric: s.spec.objective.metric.clone(),
        maximize: s.spec.objective.maximize,
        max_trials: s.spec.budget.max_trials,
        parallel_trials: s.spec.budget.parallel_trials,
        counts: Some(pb::StudyCounts {
            pending: c.pending,
            running: c.running,
            completed: c.completed,
            pruned: c.pruned,
            failed: c.failed,
            stopped: c.stopped,
            paused: c.paused,
        }),
        spec_toml: s.record.spec_toml.clone(),
        created_at_ms: s.record.created_ms,
        reason: s.record.reason.clone(),
        best_value: s.best_value,
        grid_size: s.grid_size.min(u32::MAX as u64) as u32,
        repeats: s.spec.repeats,
        folds: s.spec.folds,
        early_stopping: s.spec.early_stopping.as_str().to_string(),
    }
}

/// A configuration's seed repeats and their mean and spread.
pub fn configuration_to_proto(c: &Configuration) -> pb::Configuration {
    pb::Configuration {
        params: params_to_proto(&c.params),
        trials: c.trials.clone(),
        completed: c.values.len() as u32,
        mean: c.mean,
        std: c.std,
    }
}

/// A lease for `AcquireTrial`: the study's task and objective travel with every trial.
pub fn assignment_to_proto(a: &Assignment) -> pb::Assignment {
    pb::Assignment {
        trial_id: a.trial_id,
        study: a.study.clone(),
        number: a.number,
        params: params_to_proto(&a.params),
        task: Some(pb::TaskSpec {
            model: a.task.model.clone(),
            train_file: a.task.train_file.clone(),
            validation_file: a.task.validation_file.clone(),
            text_column: a.task.text_column.clone(),
            label_column: a.task.label_column.clone(),
            max_seq_length: a.task.max_seq_length,
            objective_metric: a.objective.metric.clone(),
            maximize: a.objective.maximize,
            max_train_samples: a.task.max_train_samples.unwrap_or(0),
            class_weights: if a.task.balanced_class_weights { "balanced" } else { "" }.into(),
            text_pair_column: a.task.text_pair_column.clone().unwrap_or_default(),
            test_file: a.task.test_file.clone().unwrap_or_default(),
            folds: if a.folds > 1 { a.folds } else { 0 },
            fold_seed: a.fold_seed,
        }),
        lease_token: a.lease_token,
        lease_ttl_ms: a.lease_ttl_ms,
        attempt: a.attempt,
        checkpoints: a.checkpoints,
        resume_checkpoint: a.resume_checkpoint.clone(),
        resume_epoch: a.resume_epoch,
        expected_peak_bytes: a.expected_peak_bytes,
    }
}

/// The early-stopping verdict a `ReportProgress` answers with.
pub fn decision_to_proto(d: &Decision) -> pb::ReportProgressResponse {
    match d {
        Decision::Continue => {
            pb::ReportProgressResponse { decision: pb::Decision::Continue as i32, reason: String::new() }
        }
        Decision::Stop(reason) => {
            pb::ReportProgressResponse { decision: pb::Decision::Stop as i32, reason: reason.clone() }
        }
        Decision::Pause(reason) => {
            pb::ReportProgressResponse { decision: pb::Decision::Pause as i32, reason: reason.clone() }
        }
    }
}

fn metrics_to_proto(m: &Metrics) -> HashMap<String, f64> {
    m.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// Metric maps from workers, checked by [`crate::model::validate_metrics`].
pub fn metrics_from_proto(m: HashMap<String, f64>) -> Result<Metrics, Status> {
    let metrics: Metrics = m.into_iter().collect();
    crate::model::validate_metrics(&metrics).map_err(Status::invalid_argument)?;
    Ok(metrics)
}

/// A reported peak device memory (0: not measured), checked by
/// [`crate::model::validate_peak_device_memory`].
pub fn peak_from_proto(bytes: u64) -> Result<u64, Status> {
    crate::model::validate_peak_device_memory(bytes).map_err(Status::invalid_argument)?;
    Ok(bytes)
}

/// A `FailTrial` kind; 0 and unknown numbers are refused (INVALID_ARGUMENT).
pub fn failure_kind_from_proto(kind: i32) -> Result<FailureKind, Status> {
    match pb::FailureKind::try_from(kind) {
        Ok(pb::FailureKind::Retryable) => Ok(FailureKind::Retryable),
        Ok(pb::FailureKind::Infeasible) => Ok(FailureKind::Infeasible),
        Ok(pb::FailureKind::Released) => Ok(FailureKind::Released),
        _ => Err(Status::invalid_argument(format!(
            "kind {kind} is not a failure kind; use RETRYABLE (1), INFEASIBLE (2) or RELEASED (3)"
        ))),
    }
}

/// Ids and tokens are never 0 on the wire.
pub fn require_nonzero(field: &str, v: u64) -> Result<u64, Status> {
    if v == 0 {
        Err(Status::invalid_argument(format!("{field} is missing (0)")))
    } else {
        Ok(v)
    }
}

/// Longest name (study or worker id) a request may carry; no stored name is longer.
pub const MAX_NAME_BYTES: usize = 64;

/// A required name field (a study name or worker id): non-empty and at most 64 bytes, so a
/// lookup of an oversized name is refused without echoing it.
pub fn require_name<'a>(field: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.trim().is_empty() {
        Err(Status::invalid_argument(format!("{field} is empty")))
    } else if v.len() > MAX_NAME_BYTES {
        Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; names are at most {MAX_NAME_BYTES} characters",
            v.len()
        )))
    } else {
        Ok(v)
    }
}

/// The one place domain errors become statuses; messages are bounded here, whatever they
/// quote.
pub fn status(e: CoordinatorError) -> Status {
    {
        let msg = crate::text::bounded(&e.to_string());
        match e {
            CoordinatorError::Spec(_) | CoordinatorError::InvalidArgument(_) => Status::invalid_argument(msg),
            CoordinatorError::StudyExists(_) => Status::already_exists(msg),
            CoordinatorError::NotFound(_) => Status::not_found(msg),
            CoordinatorError::FailedPrecondition(_) => Status::failed_precondition(msg),
        }
    }
}
