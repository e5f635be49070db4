//! The trial lifecycle: an in-memory state machine over every study, trial, lease and worker.
//!
//! The registry is the authority while the coordinator runs; SQLite is its durable image. Each
//! operation runs under one lock, checks everything first (so a refused request changes
//! nothing), applies its change, and returns the [`WriteOp`]s that persist it. The service sends
//! those ops to the store's group-commit writer *before* releasing the lock (so the database sees
//! changes in the order they happened) and answers the caller only after they are committed: an
//! acknowledged change is never lost, even to SIGKILL.

use std::collections::{HashMap, HashSet};

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
    /// ([`crate::evaluation::evaluate`]); `None` when the worker sent none.
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
    /// Its inputs' and kept models' blobs: deleted unless another study refers to them.
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
        let index_of: HashMap<u64, usize> = reg.studies.iter().enumerate().map(|(i, s)| (s.record.id, i)).collect();
        for mut trial in snapshot.trials {
            let Some(&si) = index_of.get(&trial.study_id) else { continue };
            reg.next_trial_id = reg.next_trial_id.max(trial.id + 1);
            reg.next_token = reg.next_token.max(trial.lease_token + 1);
            if trial.state == TrialState::Running {
                trial.lease_expires_ms = trial.lease_expires_ms.max(now + i64::from(lease.ttl_ms));
            }
            trial.study = reg.studies[si].record.name.clone();
            reg.trial_index.insert(trial.id, (si, trial.number));
            reg.studies[si].push_trial(trial);
        }
        for study in &mut reg.studies {
            if study.spec.sampler == SamplerKind::Grid
                && study.trials.len() as u64 >= study.grid_size * study.spec.trials_per_configuration() as u64
            {
                study.exhausted = true;
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
        let trial = &self.studies[si].trials[number as usize];
        if token == 0 || trial.lease_token != token {
            return Err(stale(trial));
        }
        Ok((si, number))
    }

    /// What scoring a leased trial's dev-set predictions needs: its study's objective metric
    /// and the seed of the trial's bootstrap interval. Fails as `complete` would for a stale
    /// lease, so a worker learns of it before any resampling is done.
    pub fn evaluation_context(&self, trial_id: u64, token: u64) -> Result<(String, u64)> {
        let (si, number) = self.leased(trial_id, token)?;
        let study = &self.studies[si];
        Ok((study.spec.objective.metric.clone(), crate::evaluation::interval_seed(study.spec.seed, number)))
    }

    /// The seed of a study's paired comparisons (its `algorithm.seed`).
    pub fn study_seed(&self, name: &str) -> Result<u64> {
        Ok(self.studies[self.study_index(name)?].spec.seed)
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
        let ops = vec![WriteOp::Study(study.record.clone())];
        self.by_name.insert(study.record.name.clone(), self.studies.len());
        self.studies.push(study);
        Ok(Outcome::new(summary, ops, true))
    }

    /// A study's summary.
    pub fn study(&self, name: &str) -> Result<StudySummary> {
        Ok(self.studies[self.study_index(name)?].summary())
    }

    /// Every study, oldest first.
    pub fn studies(&self) -> Vec<StudySummary> {
        self.studies.iter().map(LiveStudy::summary).collect()
    }

    /// A study's trials in number order.
    pub fn trials(&self, name: &str) -> Result<Vec<Trial>> {
        Ok(self.studies[self.study_index(name)?].trials.clone())
    }

    /// Up to `limit` of a study's trials from number `from` on, and how many trials it has.
    pub fn trials_page(&self, name: &str, from: u32, limit: usize) -> Result<(Vec<Trial>, u32)> {
        let trials = &self.studies[self.study_index(name)?].trials;
        let start = (from as usize).min(trials.len());
        let end = start.saturating_add(limit).min(trials.len());
        Ok((trials[start..end].to_vec(), trials.len() as u32))
    }

    /// Runs `f` over a study's spec and its trials (in number order) without copying them: for
    /// readers that derive something from many trials (the dashboard's CSV, seed points,
    /// importance inputs) while holding the lock only as long as that takes.
    pub fn with_trials<R>(&self, name: &str, f: impl FnOnce(&StudySpec, &[Trial]) -> R) -> Result<R> {
        let study = &self.studies[self.study_index(name)?];
        Ok(f(&study.spec, &study.trials))
    }

    /// Up to `limit` studies whose id is at least `from_id` (in `state` only, when given),
    /// oldest first, and the id of the next such study when there are more.
    pub fn studies_page(
        &self,
        from_id: u64,
        limit: usize,
        state: Option<StudyState>,
    ) -> (Vec<StudySummary>, Option<u64>) {
        // Studies are pushed in id order; a deleted one leaves the rest in order.
        let start = self.studies.partition_point(|s| s.record.id < from_id);
        let mut matching = self.studies[start..].iter().filter(|s| state.is_none_or(|state| s.record.state == state));
        let page = matching.by_ref().take(limit).map(LiveStudy::summary).collect();
        (page, matching.next().map(|s| s.record.id))
    }

    /// `Some((state, reason))` when the study has ended.
    pub fn study_end(&self, name: &str) -> Result<Option<(StudyState, String)>> {
        let record = &self.studies[self.study_index(name)?].record;
        Ok((record.state != StudyState::Running).then(|| (record.state, record.reason.clone())))
    }

    /// The best COMPLETED trial of a study, or None when none has completed.
    pub fn best_trial(&self, name: &str) -> Result<Option<Trial>> {
        Ok(self.studies[self.study_index(name)?].best().cloned())
    }

    /// A study's configurations ranked by mean objective (see `algorithm.repeats`).
    pub fn configurations(&self, name: &str) -> Result<Vec<Configuration>> {
        Ok(self.studies[self.study_index(name)?].configurations())
    }

    /// Stops a running study: PENDING and RUNNING trials become STOPPED; workers learn it on
    /// their next heartbeat or report.
    pub fn stop_study(&mut self, name: &str, now: i64) -> Result<Outcome<StudySummary>> {
        let si = self.study_index(name)?;
        let study = &mut self.studies[si];
        if study.record.state != StudyState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "study {name:?} is already {}; nothing to stop",
                study.record.state
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
        if study.record.state == StudyState::Running {
            if !force {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "study {} is running ({} trials in progress); stop it first (`bertsweep study stop {name}`) \
                     or pass --force to stop and delete it",
                    quote(name),
                    study.running.len()
                )));
            }
            study.end(StudyState::Stopped, "deleted by user".into(), now, &mut ops);
        }
        let study = self.studies.remove(si);
        let summary = study.summary();
        let task = &study.spec.task;
        let mut blobs: Vec<Digest> = task.inputs().iter().filter_map(|input| blob_of(input.reference)).collect();
        blobs.extend(study.trials.iter().filter_map(|t| blob_of(&t.artifact)));
        let mut checkpoints = study.dropped_checkpoints.clone();
        checkpoints.extend(study.trials.iter().filter(|t| !t.checkpoint.is_empty()).map(|t| t.checkpoint.clone()));
        let trial_ids: Vec<u64> = study.trials.iter().map(|t| t.id).collect();
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

    /// Registers a worker and returns its id.
    pub fn register_worker(
        &mut self,
        hostname: String,
        devices: Vec<String>,
        version: String,
        now: i64,
    ) -> Outcome<String> {
        let record =
            WorkerRecord { id: uuid::Uuid::new_v4().to_string(), hostname, devices, version, registered_ms: now };
        info!(worker = %record.id, hostname = %record.hostname, devices = ?record.devices, "worker registered");
        let id = record.id.clone();
        self.workers.insert(id.clone(), record.clone());
        Outcome::new(id, vec![WriteOp::Worker(record)], false)
    }

    /// Forgets workers neither registered, asking for work nor heartbeating since `idle_since`
    /// (wall-clock ms) and holding no running trial; returns how many. A forgotten worker that
    /// comes back is told its id is unknown and registers again.
    pub fn expire_workers(&mut self, idle_since: i64) -> Outcome<usize> {
        let busy: HashSet<&str> = self
            .studies
            .iter()
            .flat_map(|s| s.running.iter().map(|&n| s.trials[n as usize].worker_id.as_str()))
            .collect();
        let stale: Vec<String> = self
            .workers
            .values()
            .filter(|w| self.last_seen.get(&w.id).copied().unwrap_or(w.registered_ms).max(w.registered_ms) < idle_since)
            .filter(|w| !busy.contains(w.id.as_str()))
            .map(|w| w.id.clone())
            .collect();
        let mut ops = Vec::with_capacity(stale.len());
        for id in stale {
            info!(worker = %id, "worker forgotten: not seen within the expiry period");
            self.workers.remove(&id);
            self.last_seen.remove(&id);
            ops.push(WriteOp::ForgetWorker(id));
        }
        Outcome::new(ops.len(), ops, false)
    }

    /// Leases a trial to `worker_id`: a requeued trial first, else a new sample, from the oldest
    /// running study with spare `parallel_trials` capacity and `max_trials` budget.
    pub fn acquire(
        &mut self,
        worker_id: &str,
        study_filter: Option<&str>,
        now: i64,
    ) -> Result<Outcome<Option<Assignment>>> {
        if !self.workers.contains_key(worker_id) {
            return Err(CoordinatorError::NotFound(format!(
                "unknown worker id {}; call RegisterWorker first",
                quote(worker_id)
            )));
        }
        self.last_seen.insert(worker_id.to_string(), now);
        let candidates: Vec<usize> = match study_filter {
            Some(name) => vec![self.study_index(name)?],
            None => (0..self.studies.len()).collect(),
        };
        let mut ops = Vec::new();
        let mut wake = false;
        for si in candidates {
            let study = &mut self.studies[si];
            if study.record.state != StudyState::Running || study.counts.running >= study.spec.budget.parallel_trials {
                continue;
            }
            let mut promoted = false;
            let number = match study.pending.iter().next().copied().or_else(|| study.promotable()) {
                Some(n) => {
                    promoted = study.trials[n as usize].state == TrialState::Paused;
                    n
                }
                None => {
                    let next = study.trials.len() as u32;
                    if next >= study.spec.budget.max_trials || study.exhausted {
                        // No rung can gain a result any more: what is still paused is done.
                        if !study.paused.is_empty() && study.running.is_empty() {
                            study.prune_unpromoted(now, &mut ops);
                            wake = true;
                        }
                        continue;
                    }
                    let Some(params) = study.next_params(next) else {
                        study.exhausted = true;
                        study.maybe_finish(now, &mut ops);
                        wake = true;
                        continue;
                    };
                    let trial = new_trial(self.next_trial_id, study, next, params, now);
                    self.next_trial_id += 1;
                    self.trial_index.insert(trial.id, (si, next));
                    info!(study = %study.record.name, trial = next, params = %format_params(&trial.params), "trial sampled");
                    study.push_trial(trial);
                    next
                }
            };
            let token = self.next_token;
            self.next_token += 1;
            let ttl = self.lease.ttl_ms;
            let trial = study.trial_mut(number);
            // A promotion continues the same attempt (nothing was lost): its curve moves to the
            // new lease as it is.
            if promoted {
                for (&epoch, metrics) in &trial.intermediate {
                    ops.push(WriteOp::Epoch {
                        trial_id: trial.id,
                        lease_token: token,
                        attempt: trial.attempt,
                        epoch,
                        metrics: metrics.clone(),
                    });
                }
            } else {
                trial.attempt += 1;
            }
            trial.worker_id = worker_id.to_string();
            trial.lease_token = token;
            trial.lease_expires_ms = now + i64::from(ttl);
            trial.started_ms.get_or_insert(now);
            trial.error.clear();
            let detail = if promoted {
                format!("promoted from epoch {} (asha), leased to worker {worker_id}", trial.last_epoch())
            } else {
                format!("leased to worker {worker_id}")
            };
            study.transition(number, TrialState::Running, now, &detail);
            ops.push(study.trial_op(number));
            let trial = &study.trials[number as usize];
            let assignment = Assignment {
                trial_id: trial.id,
                study: study.record.name.clone(),
                number,
                params: trial.params.clone(),
                task: study.spec.task.clone(),
                folds: study.spec.folds,
                fold_seed: study.spec.seed,
                objective: study.spec.objective.clone(),
                lease_token: token,
                lease_ttl_ms: ttl,
                attempt: trial.attempt,
                checkpoints: study.spec.budget.checkpoints,
                resume_checkpoint: if study.spec.budget.checkpoints { trial.checkpoint.clone() } else { String::new() },
                resume_epoch: if study.spec.budget.checkpoints { trial.checkpoint_epoch } else { 0 },
                // Its own earlier attempts count too: the trial is of its shape.
                expected_peak_bytes: study.expected_peak(&study.shape_of(number)),
            };
            return Ok(Outcome::new(Some(assignment), ops, wake));
        }
        Ok(Outcome::new(None, ops, wake))
    }

    /// Extends a lease; tells the worker to stop when its trial was stopped or pruned.
    pub fn heartbeat(&mut self, trial_id: u64, token: u64, now: i64) -> Result<Outcome<HeartbeatAnswer>> {
        let (si, number) = self.leased(trial_id, token)?;
        let ttl = self.lease.ttl_ms;
        let study = &mut self.studies[si];
        let trial = study.trial_mut(number);
        if let Some(seen) = self.last_seen.get_mut(&trial.worker_id) {
            *seen = now;
        }
        match trial.state {
            TrialState::Running => {
                trial.lease_expires_ms = now + i64::from(ttl);
                let op = WriteOp::Lease { trial_id, expires_ms: trial.lease_expires_ms };
                Ok(Outcome::new(
                    HeartbeatAnswer { lease_ttl_ms: ttl, stop: false, reason: String::new(), paused: false },
                    vec![op],
                    false,
                ))
            }
            TrialState::Stopped | TrialState::Pruned | TrialState::Paused => {
                let reason = match trial.state {
                    TrialState::Pruned => "trial was pruned".to_string(),
                    TrialState::Paused => "trial is paused at an asha rung".to_string(),
                    _ => trial.error.clone(),
                };
                let paused = trial.state == TrialState::Paused;
                Ok(Outcome::new(HeartbeatAnswer { lease_ttl_ms: 0, stop: true, reason, paused }, vec![], false))
            }
            _ => Err(stale(trial)),
        }
    }

    /// Stores one epoch of the current attempt and returns the early-stopping decision.
    ///
    /// Epochs run from 1 to the trial's `num_train_epochs`, in order, counted afresh by every
    /// attempt — or, for an attempt that resumed from the trial's checkpoint, from the epoch
    /// after it: its first report brings the checkpointed attempt's epochs into its own curve.
    /// Repeating an epoch with the same metrics is answered like the first time (a worker
    /// retrying after a lost reply); with other metrics it is refused, as is an epoch before
    /// the last one. A non-empty `checkpoint` replaces the trial's previous one; a non-zero
    /// `peak_device_memory_bytes` (at most [`crate::model::MAX_PEAK_DEVICE_MEMORY_BYTES`])
    /// raises the trial's peak when it is larger.
    // The arguments are the report's fields, as `ReportProgressRequest` carries them.
    #[allow(clippy::too_many_arguments)]
    pub fn report_progress(
        &mut self,
        trial_id: u64,
        token: u64,
        epoch: u32,
        metrics: Metrics,
        checkpoint: String,
        peak_device_memory_bytes: u64,
        now: i64,
    ) -> Result<Outcome<Decision>> {
        let (si, number) = self.leased(trial_id, token)?;
        let ttl = self.lease.ttl_ms;
        let study = &mut self.studies[si];
        let objective = study.spec.objective.clone();
        let trial = &study.trials[number as usize];
        match trial.state {
            TrialState::Running => {}
            TrialState::Stopped => return Ok(Outcome::new(Decision::Stop(trial.error.clone()), vec![], false)),
            TrialState::Pruned => return Ok(Outcome::new(Decision::Stop("trial was pruned".into()), vec![], false)),
            TrialState::Paused => {
                return Ok(Outcome::new(Decision::Pause("trial is paused at an asha rung".into()), vec![], false))
            }
            _ => return Err(stale(trial)),
        }
        let max_epoch = stopping::planned_epochs(trial);
        if epoch == 0 || epoch > max_epoch {
            return Err(CoordinatorError::InvalidArgument(format!(
                "epoch {epoch} is outside 1..={max_epoch} (the trial's num_train_epochs); epochs are counted from 1"
            )));
        }
        check_metrics(&metrics, &objective.metric)?;
        validate_peak_device_memory(peak_device_memory_bytes).map_err(CoordinatorError::InvalidArgument)?;
        // An object storage or shared-filesystem checkpoint is deleted when the trial no longer
        // needs it: only the place the protocol gives this trial and lease may be named.
        if !checkpoint.is_empty() && blob_of(&checkpoint).is_none() {
            bertsweep_transfer::checkpoint_location::check(&checkpoint, &study.record.name, number, epoch, Some(token))
                .map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        }
        if let Some(earlier) = trial.intermediate.get(&epoch) {
            if *earlier == metrics {
                // A retried report: same answer, nothing new to store but a larger peak.
                let ops = if study.raise_peak(number, peak_device_memory_bytes) {
                    vec![study.trial_op(number)]
                } else {
                    vec![]
                };
                return Ok(Outcome::new(Decision::Continue, ops, false));
            }
            return Err(CoordinatorError::FailedPrecondition(format!(
                "epoch {epoch} of trial {number} (attempt {}) was already reported with other metrics; an epoch is reported once",
                trial.attempt
            )));
        }
        if epoch < trial.last_epoch() {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "epoch {epoch} reported after epoch {} in attempt {} of trial {number}; report epochs in order",
                trial.last_epoch(),
                trial.attempt
            )));
        }
        let value = metrics[&objective.metric];
        let attempt = trial.attempt;
        let mut ops = Vec::new();
        let resumed =
            trial.intermediate.is_empty() && trial.checkpoint_epoch > 0 && epoch == trial.checkpoint_epoch + 1;
        let trial = study.trial_mut(number);
        if resumed {
            // This attempt continued from the checkpoint: the epochs up to it are its own too.
            for (e, m) in trial.checkpointed_curve() {
                ops.push(WriteOp::Epoch { trial_id, lease_token: token, attempt, epoch: e, metrics: m.clone() });
                trial.intermediate.insert(e, m);
            }
        }
        trial.intermediate.insert(epoch, metrics.clone());
        trial.lease_expires_ms = now + i64::from(ttl);
        if !checkpoint.is_empty() && checkpoint != trial.checkpoint {
            let old = std::mem::replace(&mut trial.checkpoint, checkpoint);
            trial.checkpoint_epoch = epoch;
            study.drop_checkpoint(old);
        }
        ops.push(WriteOp::Epoch { trial_id, lease_token: token, attempt, epoch, metrics: metrics.clone() });
        study.raise_peak(number, peak_device_memory_bytes);
        // Under cross-validation a trial is judged against trials of its own fold only: folds
        // differ in difficulty, so mixing them would stop whole folds rather than configurations.
        let this = &study.trials[number as usize];
        let fold = (study.spec.folds > 1).then(|| this.params.get("fold"));
        let peers: Vec<&Trial> =
            study.trials.iter().filter(|t| fold.is_none_or(|f| t.params.get("fold") == f)).collect();
        let peers = peers.as_slice();
        let mut decision = study.stopper.decide(this, epoch, value, peers, &objective);
        if matches!(decision, Decision::Pause(_)) && this.checkpoint_epoch != epoch {
            // Nothing to resume from: this trial is judged as the stop-based rule would.
            decision = study.stopper.fallback(this, epoch, value, peers, &objective);
        }
        let mut wake = false;
        if let Decision::Pause(reason) = &decision {
            let detail = format!("{reason} ({} = {value})", objective.metric);
            study.transition(number, TrialState::Paused, now, &detail);
            ops.push(study.trial_op(number));
            // Its result may make another paused trial promotable.
            wake = true;
        } else if let Decision::Stop(reason) = &decision {
            let trial = study.trial_mut(number);
            trial.value = Some(value);
            trial.metrics = metrics;
            let detail = format!("{reason} at epoch {epoch} ({} = {value})", objective.metric);
            study.transition(number, TrialState::Pruned, now, &detail);
            ops.push(study.trial_op(number));
            study.maybe_finish(now, &mut ops);
            wake = true;
        } else {
            ops.push(study.trial_op(number));
        }
        Ok(Outcome::new(decision, ops, wake))
    }

    /// Whether `token` holds the lease of a RUNNING trial.
    pub fn is_running(&self, trial_id: u64, token: u64) -> bool {
        self.leased(trial_id, token)
            .is_ok_and(|(si, n)| self.studies[si].trials[n as usize].state == TrialState::Running)
    }

    /// Whether the trial, completing with `value`, should upload its model (see
    /// `budget.keep_artifacts`), and why.
    pub fn offer_artifact(&self, trial_id: u64, token: u64, value: f64) -> Result<(bool, String)> {
        let (si, number) = self.leased(trial_id, token)?;
        let study = &self.studies[si];
        let trial = &study.trials[number as usize];
        if trial.state != TrialState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "trial {number} of study {:?} is {} and can no longer offer a model",
                study.record.name, trial.state
            )));
        }
        if !value.is_finite() {
            return Err(CoordinatorError::InvalidArgument(format!("value {value} is not finite")));
        }
        Ok(study.would_keep(value))
    }

    /// Records a finished trial. Repeating the call with the same content is harmless; with
    /// other metrics or another artifact it is refused. A non-zero `peak_device_memory_bytes`
    /// raises the trial's peak as in [`Registry::report_progress`]. Returns the coordinator-kept
    /// models (`blob:` artifacts) this completion pushed out of the study's top K: their trials
    /// no longer name them, and the caller deletes the blobs nothing else refers to.
    pub fn complete(
        &mut self,
        trial_id: u64,
        token: u64,
        metrics: Metrics,
        artifact: String,
        measured: impl Into<Measured>,
        now: i64,
    ) -> Result<Outcome<Vec<Digest>>> {
        let Measured { peak_device_memory_bytes, evaluation, test_metrics } = measured.into();
        check_test_metrics(&test_metrics)?;
        let (si, number) = self.leased(trial_id, token)?;
        let study = &mut self.studies[si];
        let objective = study.spec.objective.clone();
        check_metrics(&metrics, &objective.metric)?;
        validate_peak_device_memory(peak_device_memory_bytes).map_err(CoordinatorError::InvalidArgument)?;
        let trial = &study.trials[number as usize];
        match trial.state {
            TrialState::Running => {}
            // The same completion again (a retried call), even if its model was pushed out since.
            TrialState::Completed
                if trial.metrics == metrics && (trial.artifact == artifact || trial.artifact.is_empty()) =>
            {
                let ops = if study.raise_peak(number, peak_device_memory_bytes) {
                    vec![study.trial_op(number)]
                } else {
                    vec![]
                };
                return Ok(Outcome::new(vec![], ops, false));
            }
            TrialState::Completed => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "trial {number} of study {:?} was already completed with other metrics or artifact; it is completed once",
                    study.record.name
                )))
            }
            _ => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "trial {} of study {:?} is {} and can no longer be completed",
                    number, study.record.name, trial.state
                )))
            }
        }
        let value = metrics[&objective.metric];
        study.raise_peak(number, peak_device_memory_bytes);
        let trial = study.trial_mut(number);
        trial.value = Some(value);
        trial.metrics = metrics;
        trial.artifact = artifact;
        trial.evaluation = evaluation;
        trial.test_metrics = test_metrics;
        let detail = format!("{} = {value}", objective.metric);
        study.transition(number, TrialState::Completed, now, &detail);
        let mut ops = vec![study.trial_op(number)];
        let mut evicted = Vec::new();
        if study.trials.iter().any(|t| blob_of(&t.artifact).is_some()) {
            let kept = study.kept_artifact_trials();
            let losing: Vec<u32> = study
                .trials
                .iter()
                .filter(|t| t.state == TrialState::Completed && !kept.contains(&t.number))
                .filter(|t| blob_of(&t.artifact).is_some())
                .map(|t| t.number)
                .collect();
            for n in losing {
                evicted.extend(blob_of(&study.trials[n as usize].artifact));
                study.trial_mut(n).artifact.clear();
                ops.push(study.trial_op(n));
            }
        }
        study.maybe_finish(now, &mut ops);
        Ok(Outcome::new(evicted, ops, true))
    }

    /// Every blob a study or trial refers to (inputs and kept models): the roots of the blob
    /// store's garbage collection.
    pub fn blob_roots(&self) -> Vec<Digest> {
        let mut roots = Vec::new();
        for study in &self.studies {
            let task = &study.spec.task;
            roots.extend(task.inputs().iter().filter_map(|input| blob_of(input.reference)));
            roots.extend(study.trials.iter().filter_map(|t| blob_of(&t.artifact)));
            roots.extend(study.trials.iter().filter_map(|t| blob_of(&t.checkpoint)));
        }
        roots
    }

    /// Checkpoints no trial needs any more (replaced by a later one, or their trial ended),
    /// since the last call: the caller deletes them.
    pub fn take_dropped_checkpoints(&mut self) -> Vec<String> {
        self.studies.iter_mut().flat_map(|s| std::mem::take(&mut s.dropped_checkpoints)).collect()
    }

    /// Records a failure: retryable ones are requeued while attempts remain, infeasible ones
    /// fail at once, released ones are requeued without using an attempt.
    pub fn fail(
        &mut self,
        trial_id: u64,
        token: u64,
        error: String,
        kind: FailureKind,
        now: i64,
    ) -> Result<Outcome<TrialState>> {
        let (si, number) = self.leased(trial_id, token)?;
        let study = &mut self.studies[si];
        let trial = &study.trials[number as usize];
        if trial.state != TrialState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "trial {} of study {:?} is {} and can no longer fail",
                number, study.record.name, trial.state
            )));
        }
        let mut error: String = error.trim().chars().take(4000).collect();
        if error.is_empty() {
            error = "worker reported a failure without a message".into();
        }
        let mut ops = Vec::new();
        match kind {
            FailureKind::Retryable => {
                study.requeue_or_fail(number, error, now, &mut ops);
                if study.trials[number as usize].state == TrialState::Pending {
                    crate::telemetry::requeued("retryable_error");
                }
            }
            FailureKind::Infeasible => {
                study.trial_mut(number).error = format!("infeasible: {error}");
                study.transition(number, TrialState::Failed, now, &error);
                ops.push(study.trial_op(number));
                study.maybe_finish(now, &mut ops);
            }
            FailureKind::Released => {
                let trial = study.trial_mut(number);
                trial.archive_attempt();
                trial.attempt = trial.attempt.saturating_sub(1);
                trial.error = format!("released: {error}");
                study.transition(number, TrialState::Pending, now, "released by worker");
                ops.push(study.trial_op(number));
                crate::telemetry::requeued("released");
            }
        }
        let state = study.trials[number as usize].state;
        Ok(Outcome::new(state, ops, true))
    }

    /// Requeues (or fails) every trial whose lease expired before `now`.
    pub fn reap(&mut self, now: i64) -> Outcome<usize> {
        let mut ops = Vec::new();
        let mut reaped = 0;
        for study in &mut self.studies {
            let expired: Vec<u32> =
                study.running.iter().copied().filter(|&n| study.trials[n as usize].lease_expires_ms < now).collect();
            for number in expired {
                let worker = study.trials[number as usize].worker_id.clone();
                study.requeue_or_fail(
                    number,
                    format!("lease expired: worker {worker} stopped heartbeating"),
                    now,
                    &mut ops,
                );
                crate::telemetry::lease_expired();
                if study.trials[number as usize].state == TrialState::Pending {
                    crate::telemetry::requeued("lease_expired");
                }
                reaped += 1;
            }
        }
        Outcome::new(reaped, ops, reaped > 0)
    }

    /// What the metrics endpoint shows: every study's name, state, trial counts and demand,
    /// and how many workers asked for work or heartbeated since `seen_since` (wall-clock ms).
    pub fn gauges(&self, seen_since: i64) -> (Vec<StudyGauges<'_>>, usize) {
        let studies = self
            .studies
            .iter()
            .map(|s| StudyGauges {
                name: &s.record.name,
                state: s.record.state,
                counts: s.counts,
                demand: s.demand(),
                finished_ms: s.record.finished_ms,
            })
            .collect();
        (studies, self.last_seen.values().filter(|&&at| at >= seen_since).count())
    }

    /// Earliest lease expiry among running trials (the reaper sleeps until then).
    pub fn next_expiry(&self) -> Option<i64> {
        self.studies.iter().flat_map(|s| s.running.iter().map(move |&n| s.trials[n as usize].lease_expires_ms)).min()
    }

    /// The state of a study (for streams deciding when to end).
    pub fn study_state(&self, name: &str) -> Result<StudyState> {
        Ok(self.studies[self.study_index(name)?].record.state)
    }
}

fn new_trial(id: u64, study: &LiveStudy, number: u32, params: Params, now: i64) -> Trial {
    Trial {
        id,
        study_id: study.record.id,
        study: study.record.name.clone(),
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

/// Metrics must be well-formed (see [`validate_metrics`]) and include the objective.
/// The manifest digest of a `blob:sha256:…` reference.
pub fn blob_of(text: &str) -> Option<Digest> {
    match bertsweep_transfer::InputRef::parse(text) {
        Ok(bertsweep_transfer::InputRef::Blob(d)) => Some(d),
        _ => None,
    }
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
mod tests {
    use super::*;
    use crate::params::{config_key, ParamValue};
    use crate::spec::parse_study;

    const TTL: u32 = 1000;

    fn registry_with(text: &str) -> (Registry, String) {
        let mut reg = Registry::new(LeaseConfig { ttl_ms: TTL });
        let spec = parse_study(text).unwrap();
        reg.create_study(spec, text.into(), 0).unwrap();
        let worker = reg.register_worker("h".into(), vec![], "t".into(), 0).value;
        (reg, worker)
    }

    fn metrics(acc: f64) -> Metrics {
        [("eval_accuracy".to_string(), acc)].into_iter().collect()
    }

    #[test]
    fn full_lifecycle_completes_the_study() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        for i in 0..4 {
            let a = reg.acquire(&w, None, 1).unwrap().value.unwrap();
            assert_eq!(a.number, i);
            assert_eq!(
                reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 0, 2).unwrap().value,
                Decision::Continue
            );
            reg.complete(a.trial_id, a.lease_token, metrics(0.6 + i as f64 / 100.0), String::new(), 0, 3).unwrap();
        }
        assert!(reg.acquire(&w, None, 4).unwrap().value.is_none());
        let s = reg.study("small").unwrap();
        assert_eq!(s.record.state, StudyState::Completed);
        assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 3);
    }

    fn ckpt(n: u8) -> String {
        format!("blob:sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn deleting_a_study_refuses_a_running_one_unless_forced_and_leaves_the_others_working() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let other = crate::spec::test_support::SMALL_GRID.replace("name = \"small\"", "name = \"other\"");
        reg.create_study(parse_study(&other).unwrap(), other.clone(), 0).unwrap();
        let a = reg.acquire(&w, Some("small"), 1).unwrap().value.unwrap();
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 2).unwrap();
        let b = reg.acquire(&w, Some("other"), 1).unwrap().value.unwrap();

        let e = reg.delete_study("small", false, 3).unwrap_err().to_string();
        assert!(e.contains("running") && e.contains("--force"), "{e}");
        assert!(reg.study("small").is_ok(), "a refused delete changes nothing");

        let deleted = reg.delete_study("small", true, 4).unwrap();
        assert_eq!(deleted.value.summary.record.state, StudyState::Stopped, "forced: stopped first");
        assert_eq!(deleted.value.checkpoints, [ckpt(1)]);
        assert!(matches!(deleted.ops.first(), Some(WriteOp::Study(r)) if r.state == StudyState::Stopped));
        assert!(
            matches!(deleted.ops.last(), Some(WriteOp::DeleteStudy { trial_ids, .. }) if trial_ids.contains(&a.trial_id))
        );
        assert!(reg.study("small").is_err() && reg.heartbeat(a.trial_id, a.lease_token, 5).is_err());
        assert!(!reg.blob_roots().contains(&blob_of(&ckpt(1)).unwrap()));

        // The study after it moved down one place: its lease and listing still work.
        assert!(!reg.heartbeat(b.trial_id, b.lease_token, 5).unwrap().value.stop);
        let (page, _) = reg.studies_page(0, 10, None);
        assert_eq!(page.iter().map(|s| s.record.name.as_str()).collect::<Vec<_>>(), ["other"]);
        assert!(reg.studies_page(0, 10, Some(StudyState::Stopped)).0.is_empty());
        reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 6).unwrap();

        // The name is free again; a stopped study deletes without --force.
        let small = crate::spec::test_support::SMALL_GRID;
        reg.create_study(parse_study(small).unwrap(), small.into(), 7).unwrap();
        reg.stop_study("small", 8).unwrap();
        assert!(reg.delete_study("small", false, 9).is_ok());
        assert!(reg.delete_study("small", false, 9).is_err(), "gone");
    }

    const GB: u64 = 1_000_000_000;

    /// The peak a trial op carries for trial `number` (the last such op in `ops`).
    fn peak_in(ops: &[WriteOp], number: u32) -> Option<u64> {
        ops.iter().rev().find_map(|op| match op {
            WriteOp::Trial { trial, .. } if trial.number == number => Some(trial.peak_device_memory_bytes),
            _ => None,
        })
    }

    #[test]
    fn a_trials_peak_only_rises_and_new_leases_expect_the_peak_of_their_shape() {
        // Grid order: (3e-5, 16), (3e-5, 32), (5e-5, 16), (5e-5, 32).
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        let b = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert_eq!((a.expected_peak_bytes, b.expected_peak_bytes), (0, 0), "nothing reported yet");
        let peak = |reg: &Registry, n: u32| reg.trials("small").unwrap()[n as usize].peak_device_memory_bytes;

        let out = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 3 * GB, 1).unwrap();
        assert_eq!((peak(&reg, 0), peak_in(&out.ops, 0)), (3 * GB, Some(3 * GB)), "persisted with the trial row");
        reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), String::new(), 2 * GB, 2).unwrap();
        assert_eq!(peak(&reg, 0), 3 * GB, "a lower peak never lowers it");
        // A retried report with a larger peak raises it (and says so to the store).
        let out =
            reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), String::new(), 3 * GB + 1, 3).unwrap();
        assert_eq!(peak_in(&out.ops, 0), Some(3 * GB + 1));
        let out = reg.complete(a.trial_id, a.lease_token, metrics(0.6), String::new(), 0, 4).unwrap();
        assert_eq!((peak(&reg, 0), peak_in(&out.ops, 0)), (3 * GB + 1, Some(3 * GB + 1)), "0 is not measured");
        reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 5).unwrap();
        assert_eq!(peak(&reg, 1), 0);

        // Trial 2 has trial 0's batch size; trial 3 has trial 1's, which reported nothing.
        let c = reg.acquire(&w, None, 6).unwrap().value.unwrap();
        let d = reg.acquire(&w, None, 6).unwrap().value.unwrap();
        assert_eq!((c.number, c.expected_peak_bytes), (2, 3 * GB + 1));
        assert_eq!((d.number, d.expected_peak_bytes), (3, 0));
        // Trial 3 completes with a peak: it is its shape's now, not trial 2's.
        reg.complete(d.trial_id, d.lease_token, metrics(0.7), String::new(), 5 * GB, 7).unwrap();
        assert_eq!(peak(&reg, 3), 5 * GB);
    }

    #[test]
    fn a_retried_trial_expects_its_own_earlier_attempts_peak() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 4 * GB, 1).unwrap();
        assert_eq!(reg.reap(1 + TTL as i64 + 1).value, 1);
        let again = reg.acquire(&w, None, 5000).unwrap().value.unwrap();
        assert_eq!((again.number, again.attempt, again.expected_peak_bytes), (a.number, 2, 4 * GB));
        // The new attempt's lower peak leaves the trial's.
        reg.report_progress(again.trial_id, again.lease_token, 1, metrics(0.5), String::new(), GB, 5001).unwrap();
        assert_eq!(reg.trials("small").unwrap()[0].peak_device_memory_bytes, 4 * GB);
    }

    #[test]
    fn a_peak_over_the_cap_is_refused_and_changes_nothing() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        let cap = crate::model::MAX_PEAK_DEVICE_MEMORY_BYTES;
        for bad in [cap + 1, u64::MAX] {
            let e = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), bad, 1).unwrap_err();
            assert!(matches!(e, CoordinatorError::InvalidArgument(_)) && e.to_string().contains("2^50"), "{e}");
            let e = reg.complete(a.trial_id, a.lease_token, metrics(0.5), String::new(), bad, 1).unwrap_err();
            assert!(matches!(e, CoordinatorError::InvalidArgument(_)), "{e}");
            let t = &reg.trials("small").unwrap()[0];
            assert!(t.intermediate.is_empty() && t.state == TrialState::Running && t.peak_device_memory_bytes == 0);
        }
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), cap, 1).unwrap();
        assert_eq!(reg.trials("small").unwrap()[0].peak_device_memory_bytes, cap, "the cap itself is accepted");
    }

    #[test]
    fn a_restored_registry_keeps_peaks_and_their_shapes() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        reg.complete(a.trial_id, a.lease_token, metrics(0.5), String::new(), 3 * GB, 1).unwrap();
        let snapshot = Snapshot {
            studies: vec![reg.study("small").unwrap().record],
            trials: reg.trials("small").unwrap(),
            workers: vec![],
            lease_tokens_from: 100,
        };
        let mut restored = Registry::restore(snapshot, LeaseConfig { ttl_ms: TTL }, 2).unwrap();
        assert_eq!(restored.trials("small").unwrap()[0].peak_device_memory_bytes, 3 * GB);
        let w = restored.register_worker("h".into(), vec![], "t".into(), 2).value;
        let b = restored.acquire(&w, None, 3).unwrap().value.unwrap();
        let c = restored.acquire(&w, None, 3).unwrap().value.unwrap();
        assert_eq!((b.number, b.expected_peak_bytes), (1, 0));
        assert_eq!((c.number, c.expected_peak_bytes), (2, 3 * GB));
    }

    #[test]
    fn idle_workers_expire_unless_they_hold_a_trial() {
        let (mut reg, busy) = registry_with(crate::spec::test_support::SMALL_GRID);
        let idle = reg.register_worker("h2".into(), vec![], "t".into(), 0).value;
        let fresh = reg.register_worker("h3".into(), vec![], "t".into(), 0).value;
        reg.acquire(&busy, None, 10).unwrap();
        reg.acquire(&fresh, None, 5000).unwrap();
        let out = reg.expire_workers(1000);
        assert_eq!(out.value, 1, "only the idle worker without a trial");
        assert!(matches!(out.ops.as_slice(), [WriteOp::ForgetWorker(id)] if *id == idle));
        let e = reg.acquire(&idle, None, 6000).unwrap_err();
        assert!(matches!(e, CoordinatorError::NotFound(_)) && e.to_string().contains("RegisterWorker"), "{e}");
        assert!(reg.acquire(&fresh, None, 6000).is_ok());
    }

    #[test]
    fn a_checkpoint_outside_the_trials_own_place_is_refused_and_changes_nothing() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        let own = |epoch: u32| format!("s3://bucket/base/small/{}/checkpoints/e{epoch}-{}", a.number, a.lease_token);
        for bad in [
            "s3://bucket/".to_string(),
            "s3://bucket".to_string(),
            "s3://bucket/some-prefix".to_string(),
            format!("s3://bucket/base/other/{}/checkpoints/e1-{}", a.number, a.lease_token),
            format!("s3://bucket/base/small/{}/checkpoints/e1-{}", a.number + 1, a.lease_token),
            format!("s3://bucket/base/small/{}/checkpoints/e1-{}", a.number, a.lease_token + 1),
            own(2),
            "worker:/".to_string(),
            "worker:/etc".to_string(),
            format!("worker:/x/../small/{}/checkpoints/e1-{}", a.number, a.lease_token),
        ] {
            let e = reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), bad.clone(), 0, 1).unwrap_err();
            assert!(matches!(e, CoordinatorError::InvalidArgument(_)), "{bad}: {e}");
            let t = &reg.trials("small").unwrap()[a.number as usize];
            assert!(t.intermediate.is_empty() && t.checkpoint.is_empty(), "{bad} changed the trial");
        }
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), own(1), 0, 1).unwrap();
        let local = format!("worker:/shared/small/{}/checkpoints/e2-{}", a.number, a.lease_token);
        reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), local, 0, 2).unwrap();
        assert_eq!(reg.take_dropped_checkpoints(), [own(1)]);
    }

    #[test]
    fn a_requeued_trial_resumes_from_its_last_checkpoint_with_one_curve() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert!(a.checkpoints && a.resume_checkpoint.is_empty() && a.resume_epoch == 0);
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
        assert!(reg.take_dropped_checkpoints().is_empty());
        reg.report_progress(a.trial_id, a.lease_token, 2, metrics(0.6), ckpt(2), 0, 2).unwrap();
        assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)], "only the latest is kept");
        assert!(reg.blob_roots().contains(&blob_of(&ckpt(2)).unwrap()));

        // The worker dies: the lease expires, the checkpoint stays with the requeued trial.
        assert_eq!(reg.reap(2 + TTL as i64 + 1).value, 1);
        assert!(reg.take_dropped_checkpoints().is_empty());
        let b = reg.acquire(&w, None, 5000).unwrap().value.unwrap();
        assert_eq!((b.number, b.attempt), (a.number, 2));
        assert_eq!((b.resume_checkpoint.as_str(), b.resume_epoch), (ckpt(2).as_str(), 2));
        reg.report_progress(b.trial_id, b.lease_token, 3, metrics(0.7), String::new(), 0, 5001).unwrap();
        let t = &reg.trials("small").unwrap()[a.number as usize];
        assert_eq!(t.intermediate.keys().copied().collect::<Vec<_>>(), [1, 2, 3], "one continuous curve");
        assert_eq!(t.intermediate[&2], metrics(0.6));
        assert_eq!(t.earlier_attempts.len(), 2, "the first attempt's record stays");

        reg.complete(b.trial_id, b.lease_token, metrics(0.7), String::new(), 0, 5002).unwrap();
        assert_eq!(reg.take_dropped_checkpoints(), [ckpt(2)], "a terminal trial's checkpoint goes");
        let t = &reg.trials("small").unwrap()[a.number as usize];
        assert!(t.checkpoint.is_empty() && t.checkpoint_epoch == 0);
        assert!(!reg.blob_roots().contains(&blob_of(&ckpt(2)).unwrap()));
    }

    #[test]
    fn a_resumed_attempt_may_restart_from_epoch_one_and_studies_may_turn_checkpoints_off() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
        reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 2).unwrap();
        let b = reg.acquire(&w, None, 3).unwrap().value.unwrap();
        assert_eq!(b.resume_epoch, 1);
        // The checkpoint was unusable: the worker starts over and reports epoch 1.
        reg.report_progress(b.trial_id, b.lease_token, 1, metrics(0.4), String::new(), 0, 4).unwrap();
        let t = &reg.trials("small").unwrap()[a.number as usize];
        assert_eq!(t.intermediate, [(1, metrics(0.4))].into_iter().collect());
        // Pruned, failed or stopped trials drop theirs too.
        reg.stop_study("small", 5).unwrap();
        assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)]);

        let off = crate::spec::test_support::SMALL_GRID
            .replace("parallel_trials = 2", "parallel_trials = 2\ncheckpoints = false");
        let (mut reg, w) = registry_with(&off);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert!(!a.checkpoints);
        reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), ckpt(1), 0, 1).unwrap();
        reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 2).unwrap();
        let b = reg.acquire(&w, None, 3).unwrap().value.unwrap();
        assert!(b.resume_checkpoint.is_empty() && b.resume_epoch == 0);
    }

    /// Four trials of 4 epochs, asha promotion with η = 2 from epoch 1, all in parallel.
    const PROMOTING: &str = r#"
name = "promo"
[objective]
metric = "eval_accuracy"
[algorithm]
sampler = "grid"
[budget]
parallel_trials = 4
[early_stopping]
type = "asha"
mode = "promotion"
reduction_factor = 2
[task]
model = "m"
train_file = "t.tsv"
validation_file = "v.tsv"
[parameters.learning_rate]
values = [1e-5, 2e-5, 3e-5, 4e-5]
[parameters.num_train_epochs]
value = 4
"#;

    #[test]
    fn promotion_mode_pauses_at_a_rung_and_promotes_once_the_trial_ranks() {
        let (mut reg, w) = registry_with(PROMOTING);
        let a: Vec<Assignment> = (0..3).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
        let report = |reg: &mut Registry, a: &Assignment, epoch: u32, acc: f64, ck: String| {
            reg.report_progress(a.trial_id, a.lease_token, epoch, metrics(acc), ck, 0, 1).unwrap().value
        };
        // Alone at the rung: nothing ranks yet (⌊1/2⌋ = 0 kept), so it pauses.
        assert!(matches!(report(&mut reg, &a[0], 1, 0.6, ckpt(1)), Decision::Pause(_)));
        // Second of two, and the better: continues at once.
        assert_eq!(report(&mut reg, &a[1], 1, 0.7, ckpt(2)), Decision::Continue);
        // Without a checkpoint a trial cannot pause: the stop-based rule judges it (pruned).
        assert!(matches!(report(&mut reg, &a[2], 1, 0.1, String::new()), Decision::Stop(_)));
        let t = &reg.trials("promo").unwrap()[0];
        assert_eq!((t.state, t.checkpoint.as_str()), (TrialState::Paused, ckpt(1).as_str()), "checkpoint kept");
        assert_eq!(reg.study("promo").unwrap().counts.paused, 1);
        // A heartbeat of the paused lease says stop, paused.
        let hb = reg.heartbeat(a[0].trial_id, a[0].lease_token, 2).unwrap().value;
        assert!(hb.stop && hb.paused);

        // Trial 0 ranks 2nd of 3 at rung 1: not yet (⌊3/2⌋ = 1). A new trial is sampled instead.
        let d = reg.acquire(&w, None, 3).unwrap().value.unwrap();
        assert_eq!(d.number, 3);
        assert!(matches!(report(&mut reg, &d, 1, 0.5, ckpt(4)), Decision::Pause(_)));
        // Four results at rung 1 keep two: 0.7 (running) and 0.6 (trial 0, paused) → promoted.
        let p = reg.acquire(&w, None, 4).unwrap().value.unwrap();
        assert_eq!((p.number, p.attempt), (0, 1), "a promotion is the same attempt");
        assert_eq!((p.resume_checkpoint.as_str(), p.resume_epoch), (ckpt(1).as_str(), 1));
        // Rung 2: alone there, it pauses again; trial 1 arrives second and worse, and pauses too.
        assert!(matches!(report(&mut reg, &p, 2, 0.8, ckpt(5)), Decision::Pause(_)));
        let t = &reg.trials("promo").unwrap()[0];
        assert_eq!(t.intermediate.keys().copied().collect::<Vec<_>>(), [1, 2], "one curve across the pause");
        assert_eq!(reg.take_dropped_checkpoints(), [ckpt(1)], "the rung-1 checkpoint was replaced");
        assert!(matches!(report(&mut reg, &a[1], 2, 0.7, ckpt(6)), Decision::Pause(_)));
        // The highest rung goes first: trial 0 (best of 2 at epoch 2) is promoted and finishes.
        let q = reg.acquire(&w, None, 5).unwrap().value.unwrap();
        assert_eq!((q.number, q.resume_epoch), (0, 2));
        assert_eq!(report(&mut reg, &q, 3, 0.85, ckpt(7)), Decision::Continue);
        assert_eq!(report(&mut reg, &q, 4, 0.9, String::new()), Decision::Continue);
        reg.complete(q.trial_id, q.lease_token, metrics(0.9), String::new(), 0, 6).unwrap();
        // Trials 1 and 3 can never rank now: they are pruned and the study completes.
        assert!(reg.acquire(&w, None, 7).unwrap().value.is_none());
        for n in [1, 3] {
            let t = &reg.trials("promo").unwrap()[n];
            assert_eq!(t.state, TrialState::Pruned, "{t:?}");
            assert!(t.checkpoint.is_empty() && t.value.is_some());
        }
        assert_eq!(reg.study("promo").unwrap().record.state, StudyState::Completed);
    }

    #[test]
    fn parallel_limit_and_stale_tokens() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        let _b = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert!(reg.acquire(&w, None, 0).unwrap().value.is_none(), "parallel_trials = 2");
        // Expire a's lease: requeued with the same params, the old token is refused.
        reg.heartbeat(a.trial_id, a.lease_token, 500).unwrap();
        let reaped = reg.reap(500 + TTL as i64 + 1);
        assert_eq!(reaped.value, 2);
        let err = reg.complete(a.trial_id, a.lease_token, metrics(0.9), String::new(), 0, 2000).unwrap_err();
        assert!(matches!(err, CoordinatorError::FailedPrecondition(_)), "{err}");
        let again = reg.acquire(&w, None, 2000).unwrap().value.unwrap();
        assert_eq!(again.number, a.number, "requeued trials go out first");
        assert_eq!(again.params, a.params);
        assert_eq!(again.attempt, 2);
        assert!(again.lease_token > a.lease_token);
        assert!(reg.heartbeat(a.trial_id, a.lease_token, 2000).is_err());
    }

    #[test]
    fn attempts_run_out_and_failures_fail_the_study() {
        let text = crate::spec::test_support::SMALL_GRID
            .replace("parallel_trials = 2", "parallel_trials = 2\nmax_attempts = 2\nmax_failed_trials = 2");
        let (mut reg, w) = registry_with(&text);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert_eq!(
            reg.fail(a.trial_id, a.lease_token, "boom".into(), FailureKind::Retryable, 1).unwrap().value,
            TrialState::Pending
        );
        let a2 = reg.acquire(&w, None, 2).unwrap().value.unwrap();
        assert_eq!(
            reg.fail(a2.trial_id, a2.lease_token, "boom".into(), FailureKind::Retryable, 3).unwrap().value,
            TrialState::Failed
        );
        let b = reg.acquire(&w, None, 4).unwrap().value.unwrap();
        let c = reg.acquire(&w, None, 4).unwrap().value.unwrap();
        assert_eq!(
            reg.fail(b.trial_id, b.lease_token, "oom".into(), FailureKind::Infeasible, 5).unwrap().value,
            TrialState::Failed
        );
        let s = reg.study("small").unwrap();
        assert_eq!(s.record.state, StudyState::Failed);
        assert!(s.record.reason.contains("2 trials failed"));
        let hb = reg.heartbeat(c.trial_id, c.lease_token, 6).unwrap().value;
        assert!(hb.stop);
    }

    #[test]
    fn released_trials_do_not_use_an_attempt_and_bad_reports_change_nothing() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        assert!(reg.report_progress(a.trial_id, a.lease_token, 0, metrics(0.5), String::new(), 0, 1).is_err());
        let nan = metrics(f64::NAN);
        assert!(reg.report_progress(a.trial_id, a.lease_token, 1, nan, String::new(), 0, 1).is_err());
        assert!(reg.trials("small").unwrap()[0].intermediate.is_empty());
        reg.fail(a.trial_id, a.lease_token, "SIGTERM".into(), FailureKind::Released, 1).unwrap();
        let again = reg.acquire(&w, None, 2).unwrap().value.unwrap();
        assert_eq!((again.number, again.attempt), (0, 1));
    }

    #[test]
    fn folds_run_each_configuration_on_every_fold_and_keep_the_best_configurations_models() {
        let text = crate::spec::test_support::SMALL_GRID
            .replace("validation_file = \"v.tsv\"\n", "")
            .replace("parallel_trials = 2", "parallel_trials = 8\nkeep_artifacts = 1")
            + "[evaluation]\nfolds = 3\n";
        let (mut reg, w) = registry_with(&text);
        let mut leases = Vec::new();
        for _ in 0..6 {
            leases.push(reg.acquire(&w, None, 0).unwrap().value.unwrap());
        }
        let folds: Vec<_> = leases.iter().map(|a| a.params["fold"].clone()).collect();
        assert_eq!(folds, [0, 1, 2, 0, 1, 2].map(ParamValue::Int));
        assert!(leases.iter().all(|a| (a.folds, a.fold_seed) == (3, 0) && !a.params.contains_key("seed")));
        assert_eq!(config_key(&leases[0].params), config_key(&leases[2].params));
        assert_ne!(config_key(&leases[2].params), config_key(&leases[3].params));
        // Config 0: 0.70, 0.90, 0.80 (mean 0.80); config 1: 0.95, 0.60, 0.70 (mean 0.75).
        for (a, v) in leases.iter().zip([0.70, 0.90, 0.80, 0.95, 0.60, 0.70]) {
            reg.complete(a.trial_id, a.lease_token, metrics(v), format!("blob:sha256:{:064x}", a.number + 1), 0, 1)
                .unwrap();
        }
        let configs = reg.configurations("small").unwrap();
        assert_eq!(configs[0].trials, vec![0, 1, 2]);
        assert!((configs[0].mean.unwrap() - 0.80).abs() < 1e-12);
        // The best configuration by mean, not the single best trial (0.95); and with
        // keep_artifacts = 1, all three of its fold models are kept besides the top trial.
        assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 1);
        let kept: Vec<u32> =
            reg.trials("small").unwrap().iter().filter(|t| !t.artifact.is_empty()).map(|t| t.number).collect();
        assert_eq!(kept, [0, 1, 2, 3]);
    }

    #[test]
    fn early_stopping_compares_trials_of_the_same_fold() {
        let text = crate::spec::test_support::SMALL_GRID
            .replace("validation_file = \"v.tsv\"\n", "")
            .replace("parallel_trials = 2", "parallel_trials = 8")
            .replace("values = [16, 32]", "values = [16, 32]\n[parameters.num_train_epochs]\nvalue = 3")
            + "[evaluation]\nfolds = 2\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n";
        let (mut reg, w) = registry_with(&text);
        let a: Vec<_> = (0..4).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
        // Fold 1 is much harder: 0.55 there is a fine score, fold 0's 0.80 a poor one.
        let report = |reg: &mut Registry, t: &Assignment, v: f64| {
            reg.report_progress(t.trial_id, t.lease_token, 1, metrics(v), String::new(), 0, 1).unwrap().value
        };
        assert_eq!(report(&mut reg, &a[0], 0.90), Decision::Continue); // config 0, fold 0
        assert_eq!(report(&mut reg, &a[1], 0.50), Decision::Continue); // config 0, fold 1
                                                                       // Config 1, fold 1 at 0.55 beats fold 1's 0.50: it continues, though every fold-0
                                                                       // score is higher. Config 1, fold 0 at 0.80 is below fold 0's 0.90: stopped.
        assert_eq!(report(&mut reg, &a[3], 0.55), Decision::Continue);
        assert!(matches!(report(&mut reg, &a[2], 0.80), Decision::Stop(_)));
    }

    #[test]
    fn repeats_run_each_configuration_with_every_seed_and_rank_by_mean() {
        let text =
            crate::spec::test_support::SMALL_GRID.replace("sampler = \"grid\"", "sampler = \"grid\"\nrepeats = 2");
        let (mut reg, w) = registry_with(&text);
        // Config 0 (two seeds: 0.80, 0.70 → mean 0.75); config 1 (0.78, 0.77 → mean 0.775).
        let values = [0.80, 0.70, 0.78, 0.77];
        // The best mean after each completion: read between changes, so the cached
        // configurations must follow every completion.
        let best_means = [0.80, 0.75, 0.78, 0.775];
        let mut seen = Vec::new();
        for (v, best) in values.into_iter().zip(best_means) {
            let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
            seen.push(a.params.clone());
            assert_eq!(reg.configurations("small").unwrap().iter().map(|c| c.trials.len()).sum::<usize>(), seen.len());
            reg.complete(a.trial_id, a.lease_token, metrics(v), String::new(), 0, 1).unwrap();
            assert!((reg.study("small").unwrap().best_value.unwrap() - best).abs() < 1e-12, "after {v}");
        }
        assert_eq!(seen[0]["seed"], ParamValue::Int(0));
        assert_eq!(seen[1]["seed"], ParamValue::Int(1));
        assert_eq!(config_key(&seen[0]), config_key(&seen[1]));
        assert_ne!(config_key(&seen[1]), config_key(&seen[2]));
        let configs = reg.configurations("small").unwrap();
        assert_eq!(configs[0].trials, vec![2, 3]);
        assert!((configs[0].mean.unwrap() - 0.775).abs() < 1e-12);
        assert!((configs[0].std.unwrap() - (0.00005f64).sqrt()).abs() < 1e-9);
        // The best trial comes from the best configuration, not the single best trial (0.80).
        assert_eq!(reg.best_trial("small").unwrap().unwrap().number, 2);
        assert!((reg.study("small").unwrap().best_value.unwrap() - 0.775).abs() < 1e-12);
    }

    #[test]
    fn asha_prunes_through_report_progress_and_pruned_trials_keep_metrics() {
        let text = crate::spec::test_support::SMALL_GRID.replace("parallel_trials = 2", "parallel_trials = 4")
            + "[parameters.num_train_epochs]\nvalue = 3\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n";
        let (mut reg, w) = registry_with(&text);
        let a: Vec<Assignment> = (0..4).map(|_| reg.acquire(&w, None, 0).unwrap().value.unwrap()).collect();
        assert_eq!(
            reg.report_progress(a[0].trial_id, a[0].lease_token, 1, metrics(0.8), String::new(), 0, 1).unwrap().value,
            Decision::Continue
        );
        let d =
            reg.report_progress(a[1].trial_id, a[1].lease_token, 1, metrics(0.5), String::new(), 0, 1).unwrap().value;
        assert!(matches!(d, Decision::Stop(_)), "{d:?}");
        let pruned = &reg.trials("small").unwrap()[1];
        assert_eq!(pruned.state, TrialState::Pruned);
        assert_eq!((pruned.value, pruned.last_epoch()), (Some(0.5), 1));
        // A pruned trial is terminal: further reports answer stop, completion is refused.
        assert!(matches!(
            reg.report_progress(a[1].trial_id, a[1].lease_token, 2, metrics(0.9), String::new(), 0, 2).unwrap().value,
            Decision::Stop(_)
        ));
        assert!(reg.complete(a[1].trial_id, a[1].lease_token, metrics(0.9), String::new(), 0, 2).is_err());
        // It counts toward the budget: the grid's 4 trials end the study.
        for t in [&a[0], &a[2], &a[3]] {
            reg.report_progress(t.trial_id, t.lease_token, 2, metrics(0.9), String::new(), 0, 3).unwrap();
            reg.complete(t.trial_id, t.lease_token, metrics(0.9), String::new(), 0, 3).unwrap();
        }
        let s = reg.study("small").unwrap();
        assert_eq!((s.record.state, s.counts.pruned, s.counts.completed), (StudyState::Completed, 1, 3));
    }

    #[test]
    fn stop_study_stops_live_trials() {
        let (mut reg, w) = registry_with(crate::spec::test_support::SMALL_GRID);
        let a = reg.acquire(&w, None, 0).unwrap().value.unwrap();
        reg.stop_study("small", 1).unwrap();
        assert_eq!(
            reg.report_progress(a.trial_id, a.lease_token, 1, metrics(0.5), String::new(), 0, 2).unwrap().value,
            Decision::Stop("study stopped".into())
        );
        assert!(reg.acquire(&w, None, 2).unwrap().value.is_none());
        assert!(reg.stop_study("small", 3).is_err());
    }
}
