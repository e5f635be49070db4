//! Domain types: studies, trials, their states, and what a worker is handed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::params::Params;
use crate::spec::{Objective, StudySpec, Task};

/// Metric name → value, as workers report them (Hugging Face names).
pub type Metrics = BTreeMap<String, f64>;

/// The upper-case names of a state enum, spelled once: `as_str` (the database, logs and CLI
/// output), `Display`, and `FromStr` (what the store reads back; anything else is an error
/// naming the kind of state).
macro_rules! state_names {
    ($state:ident, $kind:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $state {
            /// Upper-case name used in the database, logs and CLI output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($state::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $state {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $state {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($state::$variant),)+
                    other => Err(format!(concat!("unknown ", $kind, " state {:?}"), other)),
                }
            }
        }
    };
}

/// Where a trial is in its life. PENDING and RUNNING are live; the rest are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// Waiting for a worker; a requeued trial goes out before new samples.
    Pending,
    /// Leased to a worker, under a fencing token, until it ends or the lease expires.
    Running,
    /// Ran all its epochs; its value counts towards the best trial.
    Completed,
    /// Stopped early by the study's early-stopping rule; its value is the last epoch's.
    Pruned,
    /// Infeasible, or out of attempts.
    Failed,
    /// Was still live when its study ended (stopped or failed).
    Stopped,
    /// Waiting at an ASHA rung (`mode = "promotion"`) with its checkpoint kept, until it is
    /// promoted (RUNNING again) or pruned.
    Paused,
}

impl TrialState {
    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TrialState::Pending | TrialState::Running | TrialState::Paused)
    }
}

state_names!(TrialState, "trial", {
    Pending => "PENDING",
    Running => "RUNNING",
    Completed => "COMPLETED",
    Pruned => "PRUNED",
    Failed => "FAILED",
    Stopped => "STOPPED",
    Paused => "PAUSED",
});

/// Where a study is in its life; everything but RUNNING is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyState {
    /// Trials are still being handed out or run.
    Running,
    /// Its budget (or its grid) is used up and no trial is live.
    Completed,
    /// `budget.max_failed_trials` trials failed.
    Failed,
    /// Stopped by `study stop`.
    Stopped,
}

state_names!(StudyState, "study", {
    Running => "RUNNING",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Stopped => "STOPPED",
});

/// One trial: a set of params, its lease, and its results.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Global id (database key); what workers quote in every call.
    pub id: u64,
    /// Owning study's id.
    pub study_id: u64,
    /// Owning study's name, carried so events and output need no lookup.
    pub study: String,
    /// 0-based number within the study, in creation order.
    pub number: u32,
    /// Where the trial is in its life.
    pub state: TrialState,
    /// Fixed at creation; a requeued trial keeps them.
    pub params: Params,
    /// Objective value: final for COMPLETED, at the stopping epoch for PRUNED.
    pub value: Option<f64>,
    /// The metrics `value` came from.
    pub metrics: Metrics,
    /// Per-epoch metrics of the current (or last) attempt, as reported (epoch starts at 1).
    /// Ordering, early stopping and the value go by these alone.
    pub intermediate: BTreeMap<u32, Metrics>,
    /// Epochs reported by earlier attempts whose lease was lost or released, kept for the
    /// record (a requeued trial starts a fresh curve).
    pub earlier_attempts: Vec<PastEpoch>,
    /// Leases handed out so far (a retry is attempt 2, …).
    pub attempt: u32,
    /// Worker holding (or last holding) the lease.
    pub worker_id: String,
    /// Fencing token of the current (or last) lease; calls quoting another are stale.
    pub lease_token: u64,
    /// Wall-clock ms when the lease expires unless heartbeated.
    pub lease_expires_ms: i64,
    /// Where the worker stored the model (empty when none).
    pub artifact: String,
    /// The latest resumable checkpoint a worker reported (`blob:sha256:…` or an object URL),
    /// handed to the next attempt; empty when none, and cleared once the trial is terminal.
    pub checkpoint: String,
    /// The epoch `checkpoint` was written after (0 when none).
    pub checkpoint_epoch: u32,
    /// The most device memory any attempt reported holding, in bytes (0: none reported). Reports
    /// only raise it.
    pub peak_device_memory_bytes: u64,
    /// Last error reported by a worker or the reaper.
    pub error: String,
    /// A completed trial's dev-set predictions and the interval of its objective (shared:
    /// trial rows are cloned for every write and event, the predictions are not).
    pub evaluation: Option<std::sync::Arc<TrialEvaluation>>,
    /// The kept model's scores on the study's test file (`test_…`); empty without one. Nothing
    /// that decides (sampler, early stopping, the best trial) reads them.
    pub test_metrics: Metrics,
    /// Wall-clock ms when the sampler created it.
    pub created_ms: i64,
    /// Wall-clock ms of its first lease (None while it never ran).
    pub started_ms: Option<i64>,
    /// Wall-clock ms when it reached a terminal state.
    pub finished_ms: Option<i64>,
}

impl Trial {
    /// A new PENDING trial of study `(id, name)`, sampled at `now`: no lease, no results yet.
    pub fn pending(id: u64, study: (u64, &str), number: u32, params: Params, now: i64) -> Trial {
        Trial {
            id,
            study_id: study.0,
            study: study.1.to_string(),
            number,
            state: TrialState::Pending,
            params,
            value: None,
            metrics: Metrics::new(),
            intermediate: Default::default(),
            earlier_attempts: Vec::new(),
            attempt: 0,
            worker_id: String::new(),
            lease_token: 0,
            lease_expires_ms: 0,
            artifact: String::new(),
            checkpoint: String::new(),
            checkpoint_epoch: 0,
            peak_device_memory_bytes: 0,
            error: String::new(),
            evaluation: None,
            test_metrics: Metrics::new(),
            created_ms: now,
            started_ms: None,
            finished_ms: None,
        }
    }
}

/// A completed trial's dev-set predictions (of the epoch its value comes from) and the
/// bootstrap interval of its objective, computed once when it completed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialEvaluation {
    /// The epoch (from 1) that was evaluated.
    pub epoch: u32,
    /// Labels and class probabilities per dev example, in the validation file's order.
    pub predictions: bertsweep_evaluation::Predictions,
    /// Each class id's label as written in the data; empty when the worker sent none.
    pub class_names: Vec<String>,
    /// The 95 % bootstrap interval of the study's objective; `None` when the metric is
    /// undefined on most resamples.
    pub interval: Option<bertsweep_evaluation::Interval>,
    /// Per-class scores by class id, computed once (listings and events show them); empty over
    /// the coordinator's `MAX_REPORTED_CLASSES` (64) classes.
    pub per_class: Vec<bertsweep_evaluation::metrics::ClassScores>,
    /// The confusion matrix, row-major true × predicted, computed once; empty over
    /// its `MAX_CONFUSION_CLASSES` (32) classes.
    pub confusion: Vec<u64>,
}

impl Trial {
    /// The last epoch a worker reported, 0 when none.
    pub fn last_epoch(&self) -> u32 {
        self.intermediate.keys().next_back().copied().unwrap_or(0)
    }

    /// The epochs up to `checkpoint_epoch` of the attempt that wrote the checkpoint (the last
    /// earlier attempt that reported that epoch), which a resumed attempt continues.
    pub fn checkpointed_curve(&self) -> BTreeMap<u32, Metrics> {
        let Some(writer) =
            self.earlier_attempts.iter().rev().find(|e| e.epoch == self.checkpoint_epoch).map(|e| e.attempt)
        else {
            return BTreeMap::new();
        };
        // A released attempt and the one after it share a number; the later copy wins (equal).
        let mut curve = BTreeMap::new();
        for e in self.earlier_attempts.iter().filter(|e| e.attempt == writer && e.epoch <= self.checkpoint_epoch) {
            curve.insert(e.epoch, e.metrics.clone());
        }
        curve
    }

    /// Moves the current attempt's epochs to `earlier_attempts` (the lease is gone; the next
    /// attempt starts a fresh curve).
    pub fn archive_attempt(&mut self) {
        let attempt = self.attempt;
        for (epoch, metrics) in std::mem::take(&mut self.intermediate) {
            self.earlier_attempts.push(PastEpoch { attempt, epoch, metrics });
        }
    }
}

/// What decides how much device memory a trial of a study needs, as far as the coordinator can
/// tell: its batch size and its sequence length (the model is the study's). Trials of one study
/// with the same shape need about the same memory, so the largest peak one of them reported is
/// what the next one is told to expect (`Assignment.expected_peak_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrialShape {
    /// `per_device_train_batch_size` when the study sets it (searched or fixed); None when it
    /// does not, so every trial of the study trains with the worker's default.
    pub batch_size: Option<i64>,
    /// `task.max_seq_length` (its default filled in by the spec): a study-wide setting, not a
    /// searchable parameter, so all trials of a study share it.
    pub max_seq_length: u32,
}

/// The parameter that sets a trial's batch size.
pub const BATCH_SIZE_PARAM: &str = bertsweep_proto::contract::params::BATCH_SIZE;

impl TrialShape {
    /// The shape of a trial with `params` in a study training on `task`.
    pub fn of(params: &Params, task: &Task) -> Self {
        TrialShape {
            batch_size: params.get(BATCH_SIZE_PARAM).and_then(crate::params::ParamValue::as_f64).map(|v| v as i64),
            max_seq_length: task.max_seq_length,
        }
    }
}

/// The largest peak device memory a report may carry: 2^50 bytes (1 PiB), far beyond any
/// device, so a larger number is a broken measurement rather than a trial's real peak.
pub const MAX_PEAK_DEVICE_MEMORY_BYTES: u64 = 1 << 50;

/// Checks a reported peak device memory (0: not measured).
pub fn validate_peak_device_memory(bytes: u64) -> Result<(), String> {
    if bytes > MAX_PEAK_DEVICE_MEMORY_BYTES {
        return Err(format!(
            "peak_device_memory_bytes {bytes} is over 2^50 bytes (1 PiB), more than any device holds; report the bytes measured, or 0 when not measured"
        ));
    }
    Ok(())
}

/// One epoch reported by an attempt that did not finish the trial.
#[derive(Debug, Clone, PartialEq)]
pub struct PastEpoch {
    /// The attempt that reported it.
    pub attempt: u32,
    /// Epoch within that attempt (from 1).
    pub epoch: u32,
    /// What it reported.
    pub metrics: Metrics,
}

/// Most metrics one report may carry (the worker sends about ten).
pub const MAX_METRICS_PER_REPORT: usize = 64;

/// Checks a reported metric map: 1–64 entries, names `[a-z0-9_]{1,64}`, finite values.
pub fn validate_metrics(metrics: &Metrics) -> Result<(), String> {
    if metrics.is_empty() {
        return Err("metrics is empty; report at least the study's objective".into());
    }
    if metrics.len() > MAX_METRICS_PER_REPORT {
        return Err(format!("{} metrics in one report; at most {MAX_METRICS_PER_REPORT} are accepted", metrics.len()));
    }
    for (name, v) in metrics {
        if !crate::text::is_metric_name(name) {
            return Err(format!("metric name {} is not 1-64 characters of a-z 0-9 _", crate::text::quote(name)));
        }
        if !v.is_finite() {
            return Err(format!("metric {name} is {v}, not a finite number; report the trial with FailTrial instead"));
        }
    }
    Ok(())
}

/// A study's row, as stored; the live state around it lives in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRecord {
    /// Database key, also carried by each of its trials.
    pub id: u64,
    /// Unique name; a safe path component (see `text::is_study_name`).
    pub name: String,
    /// Where the study is in its life.
    pub state: StudyState,
    /// The accepted study file, kept verbatim so a restart re-derives the same spec.
    pub spec_toml: String,
    /// Why the study failed or stopped.
    pub reason: String,
    /// Wall-clock ms of `study create`.
    pub created_ms: i64,
    /// Wall-clock ms when the study reached a terminal state.
    pub finished_ms: Option<i64>,
}

/// Counts of a study's trials by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// PENDING trials.
    pub pending: u32,
    /// RUNNING trials.
    pub running: u32,
    /// COMPLETED trials.
    pub completed: u32,
    /// PRUNED trials.
    pub pruned: u32,
    /// FAILED trials.
    pub failed: u32,
    /// STOPPED trials.
    pub stopped: u32,
    /// PAUSED trials.
    pub paused: u32,
}

impl Counts {
    /// Adds one trial in `state`.
    pub fn add(&mut self, state: TrialState) {
        match state {
            TrialState::Pending => self.pending += 1,
            TrialState::Running => self.running += 1,
            TrialState::Completed => self.completed += 1,
            TrialState::Pruned => self.pruned += 1,
            TrialState::Failed => self.failed += 1,
            TrialState::Stopped => self.stopped += 1,
            TrialState::Paused => self.paused += 1,
        }
    }

    /// Trials that are PENDING, RUNNING or PAUSED (the study is not done while any are).
    pub fn live(&self) -> u32 {
        self.pending + self.running + self.paused
    }
}

/// A read-only summary of a study for the API.
#[derive(Debug, Clone)]
pub struct StudySummary {
    /// The stored row.
    pub record: StudyRecord,
    /// The study file, parsed.
    pub spec: StudySpec,
    /// Its trials by state.
    pub counts: Counts,
    /// The best trial's objective value, once one has completed.
    pub best_value: Option<f64>,
    /// Grid size for grid studies, else 0.
    pub grid_size: u64,
}

/// What a worker receives with a lease.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The trial's global id, quoted in every later call about it.
    pub trial_id: u64,
    /// The study's name (for logs and export paths).
    pub study: String,
    /// The trial's number within the study.
    pub number: u32,
    /// The hyperparameters to train with; unset ones take the worker's defaults.
    pub params: Params,
    /// What to train on.
    pub task: Task,
    /// `evaluation.folds` (1: validate on `task.validation_file`); the trial's own fold is
    /// its `fold` parameter.
    pub folds: u32,
    /// Seed of the stratified split into folds (the study's `algorithm.seed`): every trial of
    /// a study splits the training file the same way.
    pub fold_seed: u64,
    /// The metric that picks the best epoch, and its direction.
    pub objective: Objective,
    /// Fencing token of this lease; a call quoting an older one changes nothing.
    pub lease_token: u64,
    /// How long the lease lives without a heartbeat.
    pub lease_ttl_ms: u32,
    /// Which lease of the trial this is (1 for the first).
    pub attempt: u32,
    /// Whether the worker writes and reports a checkpoint after each epoch.
    pub checkpoints: bool,
    /// The checkpoint to continue from (empty: start at epoch 1).
    pub resume_checkpoint: String,
    /// The epoch `resume_checkpoint` was written after.
    pub resume_epoch: u32,
    /// The largest peak device memory reported by a trial of this study with the same
    /// [`TrialShape`] (this trial's earlier attempts included), 0 when none reported one.
    pub expected_peak_bytes: u64,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    /// Id the coordinator gave the worker at registration.
    pub id: String,
    /// The machine the worker says it runs on (for people reading logs).
    pub hostname: String,
    /// The devices it trains on (`cpu`, `cuda:0`, …).
    pub devices: Vec<String>,
    /// The worker's version string.
    pub version: String,
    /// Wall-clock ms of its (latest) registration.
    pub registered_ms: i64,
}

/// How a worker says a trial went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Might work on another try: counts an attempt, requeued while attempts remain.
    Retryable,
    /// Will never work with these params (e.g. CUDA out of memory): FAILED at once.
    Infeasible,
    /// The worker is shutting down cleanly: requeued at once, no attempt used.
    Released,
}

/// The early-stopping verdict returned to a worker after an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Train the next epoch.
    Continue,
    /// Stop training; the reason is shown to the user.
    Stop(String),
    /// Stop training and wait at this rung, checkpoint kept, until promoted (ASHA promotion).
    Pause(String),
}

/// A trial with the given params and state and nothing else, for unit tests of samplers and
/// stoppers.
#[cfg(any(test, feature = "testing"))]
pub fn test_trial(number: u32, params: Params, state: TrialState) -> Trial {
    Trial { state, attempt: 1, ..Trial::pending(number as u64 + 1, (1, "s"), number, params, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    fn task(max_seq_length: u32) -> Task {
        Task {
            model: "m".into(),
            train_file: "t".into(),
            validation_file: "v".into(),
            text_column: "sentence".into(),
            text_pair_column: None,
            test_file: None,
            label_column: "label".into(),
            max_seq_length,
            max_train_samples: None,
            balanced_class_weights: false,
        }
    }

    #[test]
    fn a_shape_is_the_batch_size_and_the_tasks_sequence_length() {
        let with = |batch: Option<i64>, lr: f64| {
            let mut p: Params = [("learning_rate".to_string(), ParamValue::Float(lr))].into_iter().collect();
            if let Some(b) = batch {
                p.insert(BATCH_SIZE_PARAM.into(), ParamValue::Int(b));
            }
            p
        };
        let shape = TrialShape::of(&with(Some(16), 1e-5), &task(128));
        assert_eq!(shape, TrialShape { batch_size: Some(16), max_seq_length: 128 });
        assert_eq!(TrialShape::of(&with(Some(16), 5e-5), &task(128)), shape, "other params do not matter");
        assert_ne!(TrialShape::of(&with(Some(32), 1e-5), &task(128)), shape);
        assert_ne!(TrialShape::of(&with(Some(16), 1e-5), &task(256)), shape);
        // Unset: the worker's default, the same for every trial of the study.
        assert_eq!(TrialShape::of(&with(None, 1e-5), &task(128)).batch_size, None);
    }

    #[test]
    fn peaks_up_to_two_to_the_fifty_bytes_are_accepted() {
        assert!(validate_peak_device_memory(0).is_ok());
        assert!(validate_peak_device_memory(80 << 30).is_ok());
        assert!(validate_peak_device_memory(MAX_PEAK_DEVICE_MEMORY_BYTES).is_ok());
        let e = validate_peak_device_memory(MAX_PEAK_DEVICE_MEMORY_BYTES + 1).unwrap_err();
        assert!(
            e.starts_with("peak_device_memory_bytes 1125899906842625 is over 2^50 bytes") && !e.contains('\n'),
            "{e}"
        );
    }
}
