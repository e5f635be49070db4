//! The trial lifecycle: an in-memory state machine over every study, trial, lease and worker.
//!
//! The registry is the authority while the coordinator runs; SQLite is its durable image. Each
//! operation runs under one lock, checks everything first (so a refused request changes
//! nothing), applies its change, and returns the [`WriteOp`]s that persist it. The service sends
//! those ops to the store's group-commit writer *before* releasing the lock (so the database sees
//! changes in the order they happened) and answers the caller only after they are committed: an
//! acknowledged change is never lost, even to SIGKILL.

use std::collections::HashMap;

use bertsweep_transfer::Digest;
use tracing::info;

use crate::error::{CoordinatorError, Result};
use crate::model::{
    validate_metrics, validate_peak_device_memory, Assignment, Counts, Decision, FailureKind, Metrics, StudyRecord,
    StudyState, StudySummary, Trial, TrialState, WorkerRecord,
};
use crate::params::{format_params, Params};
use crate::spec::{SamplerKind, StudySpec};
use crate::stopping;
use crate::text::quote;

mod leases;
mod reads;
mod reports;
mod study;

pub use crate::ops::{Snapshot, WriteOp};
pub use study::Configuration;

/// One study as the metrics endpoint sees it.
#[derive(Debug, Clone, Copy)]
pub struct StudyGauges<'a> {
    /// Its name (a label).
    pub name: &'a str,
    /// Running or ended.
    pub state: StudyState,
    /// Trials by state.
    pub counts: Counts,
    /// Trials that could start now if a worker asked (0 unless running).
    pub demand: u32,
    /// When it ended (wall-clock ms), if it has.
    pub finished_ms: Option<i64>,
}

/// What a worker measured of a finished trial besides its metrics.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The attempt's peak device memory (0: not measured), as in `report_progress`.
    pub peak_device_memory_bytes: u64,
    /// Its best epoch's dev-set predictions, already checked and scored
    /// (the coordinator's `evaluation::evaluate`); `None` when the worker sent none.
    pub evaluation: Option<std::sync::Arc<crate::model::TrialEvaluation>>,
    /// The kept model's scores on the study's test file (names `test_…`); empty without one.
    pub test_metrics: Metrics,
}

impl From<u64> for Measured {
    fn from(peak_device_memory_bytes: u64) -> Self {
        Measured { peak_device_memory_bytes, ..Measured::default() }
    }
}
use study::LiveStudy;

/// The result of an operation plus what it changed.
#[derive(Debug)]
pub struct Outcome<T> {
    /// What the caller asked for (an assignment, a verdict, …).
    pub value: T,
    /// Changes to persist before answering.
    pub ops: Vec<WriteOp>,
    /// `true` when waiting AcquireTrial calls should look again (work or capacity appeared).
    pub wake: bool,
}

impl<T> Outcome<T> {
    fn new(value: T, ops: Vec<WriteOp>, wake: bool) -> Self {
        Outcome { value, ops, wake }
    }

    /// The same changes with another value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome { value: f(self.value), ops: self.ops, wake: self.wake }
    }
}

/// What deleting a study leaves for the caller to clean up once it is committed.
#[derive(Debug)]
pub struct DeletedStudy {
    /// The study as it was.
    pub summary: StudySummary,
    /// Its inputs', kept models' and checkpoints' blobs: deleted unless another study refers
    /// to them.
    pub blobs: Vec<Digest>,
    /// Its trials' checkpoints (blobs, object URLs, shared paths), as dropped checkpoints are.
    pub checkpoints: Vec<String>,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    /// How long the renewed lease lives.
    pub lease_ttl_ms: u32,
    /// Stop training now (study stopped or trial pruned).
    pub stop: bool,
    /// Why it should stop (empty otherwise).
    pub reason: String,
    /// With `stop`: the trial is PAUSED (resumed later), not ended.
    pub paused: bool,
}

/// Lease settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// How long a lease lives without a heartbeat.
    pub ttl_ms: u32,
}

/// Every study, trial, lease and worker the coordinator knows.
pub struct Registry {
    studies: Vec<LiveStudy>,
    by_name: HashMap<String, usize>,
    /// Trial id → (study index, number).
    trial_index: HashMap<u64, (usize, u32)>,
    workers: HashMap<String, WorkerRecord>,
    /// Worker id → when it last asked for work or heartbeated (wall-clock ms; not stored):
    /// the connected-workers gauge.
    last_seen: HashMap<String, i64>,
    next_study_id: u64,
    next_trial_id: u64,
    /// Fencing tokens only grow, across restarts too (restored from the largest stored token).
    next_token: u64,
    lease: LeaseConfig,
}

/// The error for a call quoting a lease that is no longer the trial's.
fn stale(trial: &Trial) -> CoordinatorError {
    CoordinatorError::FailedPrecondition(format!(
        "stale lease for trial {} of study {:?}: it is {} under another lease now; stop working on it",
        trial.number, trial.study, trial.state
    ))
}

impl Registry {
    /// Rebuilds the registry from stored rows. Running trials stay leased to their workers with
    /// the same fencing tokens; each lease gets at least one TTL from now, so workers that were
    /// retrying during the outage can heartbeat again before the reaper requeues their trials.
    pub fn restore(snapshot: Snapshot, lease: LeaseConfig, now: i64) -> Result<Self> {
        let mut reg = Registry::new(lease);
        reg.next_token = reg.next_token.max(snapshot.lease_tokens_from);
        for record in snapshot.studies {
            let spec = crate::spec::parse_stored_study(&record.spec_toml)?;
            reg.next_study_id = reg.next_study_id.max(record.id + 1);
            reg.by_name.insert(record.name.clone(), reg.studies.len());
            reg.studies.push(LiveStudy::new(record, spec));
        }
        let index_of: HashMap<u64, usize> = reg.studies.iter().enumerate().map(|(i, s)| (s.record().id, i)).collect();
        for mut trial in snapshot.trials {
            let Some(&si) = index_of.get(&trial.study_id) else { continue };
            reg.next_trial_id = reg.next_trial_id.max(trial.id + 1);
            reg.next_token = reg.next_token.max(trial.lease_token + 1);
            if trial.state == TrialState::Running {
                trial.lease_expires_ms = trial.lease_expires_ms.max(now + i64::from(lease.ttl_ms));
            }
            trial.study = reg.studies[si].record().name.clone();
            reg.trial_index.insert(trial.id, (si, trial.number));
            reg.studies[si].push_trial(trial);
        }
        for study in &mut reg.studies {
            if study.spec().sampler == SamplerKind::Grid
                && study.trials().len() as u64 >= study.grid_size() * study.spec().trials_per_configuration() as u64
            {
                study.mark_exhausted();
            }
        }
        for w in snapshot.workers {
            // Restarted: every known worker gets a whole expiry period to show up again.
            reg.last_seen.insert(w.id.clone(), now);
            reg.workers.insert(w.id.clone(), w);
        }
        Ok(reg)
    }

    /// An empty registry.
    pub fn new(lease: LeaseConfig) -> Self {
        Registry {
            studies: Vec::new(),
            by_name: HashMap::new(),
            trial_index: HashMap::new(),
            workers: HashMap::new(),
            last_seen: HashMap::new(),
            next_study_id: 1,
            next_trial_id: 1,
            next_token: 1,
            lease,
        }
    }

    /// Lease settings in force.
    pub fn lease_config(&self) -> LeaseConfig {
        self.lease
    }

    fn study_index(&self, name: &str) -> Result<usize> {
        self.by_name.get(name).copied().ok_or_else(|| {
            CoordinatorError::NotFound(format!(
                "unknown study {}; `bertsweep study list` shows the studies",
                quote(name)
            ))
        })
    }

    fn trial_location(&self, trial_id: u64) -> Result<(usize, u32)> {
        self.trial_index
            .get(&trial_id)
            .copied()
            .ok_or_else(|| CoordinatorError::NotFound(format!("unknown trial id {trial_id}")))
    }

    /// Looks a trial up and checks the caller's fencing token against its lease.
    fn leased(&self, trial_id: u64, token: u64) -> Result<(usize, u32)> {
        let (si, number) = self.trial_location(trial_id)?;
        let trial = &self.studies[si].trials()[number as usize];
        if token == 0 || trial.lease_token != token {
            return Err(stale(trial));
        }
        Ok((si, number))
    }

    /// Registers a new study from a validated spec.
    pub fn create_study(&mut self, spec: StudySpec, spec_toml: String, now: i64) -> Result<Outcome<StudySummary>> {
        if self.by_name.contains_key(&spec.name) {
            return Err(CoordinatorError::StudyExists(spec.name));
        }
        let record = StudyRecord {
            id: self.next_study_id,
            name: spec.name.clone(),
            state: StudyState::Running,
            spec_toml,
            reason: String::new(),
            created_ms: now,
            finished_ms: None,
        };
        self.next_study_id += 1;
        info!(study = %record.name, sampler = spec.sampler.as_str(), max_trials = spec.budget.max_trials, "study created");
        let study = LiveStudy::new(record, spec);
        let summary = study.summary();
        let ops = vec![WriteOp::Study(study.record().clone())];
        self.by_name.insert(study.record().name.clone(), self.studies.len());
        self.studies.push(study);
        Ok(Outcome::new(summary, ops, true))
    }

    /// Stops a running study: PENDING and RUNNING trials become STOPPED; workers learn it on
    /// their next heartbeat or report.
    pub fn stop_study(&mut self, name: &str, now: i64) -> Result<Outcome<StudySummary>> {
        let si = self.study_index(name)?;
        let study = &mut self.studies[si];
        if study.record().state != StudyState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "study {name:?} is already {}; nothing to stop",
                study.record().state
            )));
        }
        let mut ops = Vec::new();
        study.end(StudyState::Stopped, "stopped by user".into(), now, &mut ops);
        Ok(Outcome::new(study.summary(), ops, true))
    }

    /// Deletes a study and its trials. A running study is refused unless `force`, which ends it
    /// as STOPPED first (in the same commit, so watchers see it end). The returned blobs and
    /// checkpoints are the caller's to delete once the change is committed; the study's name
    /// is free again at once.
    pub fn delete_study(&mut self, name: &str, force: bool, now: i64) -> Result<Outcome<DeletedStudy>> {
        let si = self.study_index(name)?;
        let study = &mut self.studies[si];
        let mut ops = Vec::new();
        if study.record().state == StudyState::Running {
            if !force {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "study {} is running ({} trials in progress); stop it first (`bertsweep study stop {name}`) \
                     or pass --force to stop and delete it",
                    quote(name),
                    study.running().len()
                )));
            }
            study.end(StudyState::Stopped, "deleted by user".into(), now, &mut ops);
        }
        let study = self.studies.remove(si);
        let summary = study.summary();
        let blobs: Vec<Digest> = study.blob_roots().collect();
        let mut checkpoints = study.dropped_checkpoints().to_vec();
        checkpoints.extend(study.trials().iter().filter(|t| !t.checkpoint.is_empty()).map(|t| t.checkpoint.clone()));
        let trial_ids: Vec<u64> = study.trials().iter().map(|t| t.id).collect();
        for id in &trial_ids {
            self.trial_index.remove(id);
        }
        for location in self.trial_index.values_mut() {
            if location.0 > si {
                location.0 -= 1;
            }
        }
        self.by_name.remove(name);
        for index in self.by_name.values_mut() {
            if *index > si {
                *index -= 1;
            }
        }
        info!(study = %name, trials = trial_ids.len(), "study deleted");
        ops.push(WriteOp::DeleteStudy { study_id: summary.record.id, trial_ids });
        Ok(Outcome::new(DeletedStudy { summary, blobs, checkpoints }, ops, true))
    }
}

fn new_trial(id: u64, study: &LiveStudy, number: u32, params: Params, now: i64) -> Trial {
    Trial::pending(id, (study.record().id, &study.record().name), number, params, now)
}

/// The blob a trial's or study's reference names, if any ([`bertsweep_transfer::ArtifactRef`]).
pub fn blob_of(text: &str) -> Option<Digest> {
    bertsweep_transfer::ArtifactRef::blob_of(text)
}

/// Test-set scores are none, or well-formed metrics named `test_…`.
fn check_test_metrics(metrics: &Metrics) -> Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    validate_metrics(metrics).map_err(|m| CoordinatorError::InvalidArgument(format!("test_metrics: {m}")))?;
    match metrics.keys().find(|k| !k.starts_with("test_")) {
        Some(k) => Err(CoordinatorError::InvalidArgument(format!(
            "test_metrics: {} does not start with test_; send the test set's scores as test_accuracy, test_f1, …",
            crate::text::quote(k)
        ))),
        None => Ok(()),
    }
}

/// Metrics must be well-formed (see [`validate_metrics`]) and include the objective.
fn check_metrics(metrics: &Metrics, objective: &str) -> Result<()> {
    validate_metrics(metrics).map_err(CoordinatorError::InvalidArgument)?;
    if !metrics.contains_key(objective) {
        return Err(CoordinatorError::InvalidArgument(format!(
            "metrics lack the study's objective {objective:?} (got: {})",
            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
