//! One live study: its record, spec, sampler and stopper, its trials with the indexes the
//! lifecycle needs (pending, running, counts), and what it derives from them (configurations,
//! the best trial, its end).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tracing::info;

use bertsweep_transfer::Digest;

use super::{blob_of, WriteOp};
use crate::model::{Assignment, Counts, StudyRecord, StudyState, StudySummary, Trial, TrialShape, TrialState};
use crate::params::{config_key, ParamValue, Params};
use crate::sampler::{self, Sampler};
use crate::spec::{EarlyStopping, SamplerKind, StudySpec};
use crate::stopping::{self, EarlyStopper};

/// A configuration (params without the seed) and how its seed repeats did.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    /// Its parameters, `seed` left out.
    pub params: Params,
    /// Trial numbers running this configuration.
    pub trials: Vec<u32>,
    /// Objective values of its COMPLETED trials.
    pub values: Vec<f64>,
    /// Mean and sample standard deviation of `values`.
    pub mean: Option<f64>,
    /// Sample standard deviation of `values` (0 for one value).
    pub std: Option<f64>,
}

/// A study with its live machinery.
pub(super) struct LiveStudy {
    record: StudyRecord,
    spec: StudySpec,
    sampler: Box<dyn Sampler>,
    stopper: Box<dyn EarlyStopper>,
    /// Index = trial number.
    trials: Vec<Trial>,
    /// Requeued or not-yet-leased trials, lowest number first (they go out before new samples).
    pending: BTreeSet<u32>,
    /// Leased trials (the reaper's scan set).
    running: BTreeSet<u32>,
    /// Trials waiting at an ASHA rung for promotion.
    paused: BTreeSet<u32>,
    counts: Counts,
    /// The sampler has no new params left.
    exhausted: bool,
    grid_size: u64,
    /// The configurations as last computed, under the (trials, completed) count they were
    /// computed at. Both counts only grow and together decide the configurations (params are
    /// fixed at creation, a completed trial never changes), so a read between changes (every
    /// study row, every `best`) costs a clone of an `Arc` instead of a pass over all trials.
    configurations_cache: RefCell<Option<CachedConfigurations>>,
    /// Checkpoints replaced or left by ended trials, until the service deletes them.
    dropped_checkpoints: Vec<String>,
    /// The largest peak device memory reported per trial shape (peaks only grow, so the
    /// maximum is kept as they arrive): what a new lease of that shape is told to expect.
    peaks_by_shape: HashMap<TrialShape, u64>,
}

/// Configurations and the (trial count, completed count) they were computed at.
type CachedConfigurations = ((usize, u32), Arc<Vec<Configuration>>);

impl LiveStudy {
    /// The stored row (name, state, reason, times).
    pub(super) fn record(&self) -> &StudyRecord {
        &self.record
    }

    /// The validated study file.
    pub(super) fn spec(&self) -> &StudySpec {
        &self.spec
    }

    /// Every trial, by number.
    pub(super) fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// Trial `number`.
    pub(super) fn trial(&self, number: u32) -> &Trial {
        &self.trials[number as usize]
    }

    /// Trials waiting for a worker, lowest number first.
    pub(super) fn pending(&self) -> &BTreeSet<u32> {
        &self.pending
    }

    /// Leased trials.
    pub(super) fn running(&self) -> &BTreeSet<u32> {
        &self.running
    }

    /// Trials paused at an ASHA rung.
    pub(super) fn paused(&self) -> &BTreeSet<u32> {
        &self.paused
    }

    /// Trials by state.
    pub(super) fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether the sampler has nothing new left.
    pub(super) fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// The sampler has nothing new left (a grid walked, or no unseen configuration found).
    pub(super) fn mark_exhausted(&mut self) {
        self.exhausted = true;
    }

    /// Grid points (grid studies), else 0.
    pub(super) fn grid_size(&self) -> u64 {
        self.grid_size
    }

    /// The study's early-stopping rule.
    pub(super) fn stopper(&self) -> &dyn EarlyStopper {
        self.stopper.as_ref()
    }

    /// Checkpoints no trial needs any more, not yet handed to the caller.
    pub(super) fn dropped_checkpoints(&self) -> &[String] {
        &self.dropped_checkpoints
    }

    /// Every blob this study refers to: its inputs, its kept models and its trials'
    /// checkpoints (roots of the blob store's collection).
    pub(super) fn blob_roots(&self) -> impl Iterator<Item = Digest> + '_ {
        let inputs = self.spec.task.inputs().into_iter().filter_map(|input| blob_of(input.reference));
        let trials = self.trials.iter().flat_map(|t| [blob_of(&t.artifact), blob_of(&t.checkpoint)]).flatten();
        inputs.chain(trials)
    }

    /// Hands the dropped checkpoints to the caller (who deletes them).
    pub(super) fn take_dropped_checkpoints(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dropped_checkpoints)
    }

    pub(super) fn new(record: StudyRecord, spec: StudySpec) -> Self {
        let grid_size = if spec.sampler == SamplerKind::Grid { spec.grid_size() } else { 0 };
        LiveStudy {
            sampler: sampler::for_spec(&spec),
            stopper: stopping::for_spec(&spec),
            record,
            spec,
            trials: Vec::new(),
            pending: BTreeSet::new(),
            running: BTreeSet::new(),
            paused: BTreeSet::new(),
            counts: Counts::default(),
            exhausted: false,
            grid_size,
            configurations_cache: RefCell::new(None),
            dropped_checkpoints: Vec::new(),
            peaks_by_shape: HashMap::new(),
        }
    }

    /// The shape of trial `number` (see [`TrialShape`]).
    pub(super) fn shape_of(&self, number: u32) -> TrialShape {
        TrialShape::of(&self.trials[number as usize].params, &self.spec.task)
    }

    /// The largest peak device memory a trial of `shape` reported, 0 when none did.
    pub(super) fn expected_peak(&self, shape: &TrialShape) -> u64 {
        self.peaks_by_shape.get(shape).copied().unwrap_or(0)
    }

    /// Raises trial `number`'s peak device memory to `bytes` if that is more (0, or less than
    /// what it reported before, changes nothing); returns whether it changed.
    pub(super) fn raise_peak(&mut self, number: u32, bytes: u64) -> bool {
        if bytes <= self.trials[number as usize].peak_device_memory_bytes {
            return false;
        }
        let shape = self.shape_of(number);
        self.trials[number as usize].peak_device_memory_bytes = bytes;
        let known = self.peaks_by_shape.entry(shape).or_insert(0);
        *known = (*known).max(bytes);
        true
    }

    /// Adds a trial in whatever state it is, keeping the indexes right.
    pub(super) fn push_trial(&mut self, trial: Trial) {
        self.counts.add(trial.state);
        if trial.peak_device_memory_bytes > 0 {
            let known = self.peaks_by_shape.entry(TrialShape::of(&trial.params, &self.spec.task)).or_insert(0);
            *known = (*known).max(trial.peak_device_memory_bytes);
        }
        match trial.state {
            TrialState::Pending => {
                self.pending.insert(trial.number);
            }
            TrialState::Running => {
                self.running.insert(trial.number);
            }
            TrialState::Paused => {
                self.paused.insert(trial.number);
            }
            _ => {}
        }
        self.trials.push(trial);
    }

    /// Moves trial `number` to `to`, keeping counts and sets right and logging the change.
    pub(super) fn transition(&mut self, number: u32, to: TrialState, now: i64, detail: &str) {
        let trial = &mut self.trials[number as usize];
        let from = trial.state;
        if from == to {
            return;
        }
        trial.state = to;
        match from {
            TrialState::Pending => self.counts.pending -= 1,
            TrialState::Running => self.counts.running -= 1,
            TrialState::Completed => self.counts.completed -= 1,
            TrialState::Pruned => self.counts.pruned -= 1,
            TrialState::Failed => self.counts.failed -= 1,
            TrialState::Stopped => self.counts.stopped -= 1,
            TrialState::Paused => self.counts.paused -= 1,
        }
        self.counts.add(to);
        self.pending.remove(&number);
        self.running.remove(&number);
        self.paused.remove(&number);
        match to {
            TrialState::Pending => {
                self.pending.insert(number);
            }
            TrialState::Running => {
                self.running.insert(number);
            }
            TrialState::Paused => {
                self.paused.insert(number);
            }
            _ => {
                trial.finished_ms = Some(now);
                let started = trial.started_ms.unwrap_or(now);
                crate::telemetry::trial_ended(&self.record.name, to, (now - started) as f64 / 1000.0);
                // A terminal trial is never resumed: its checkpoint goes.
                trial.checkpoint_epoch = 0;
                let checkpoint = std::mem::take(&mut trial.checkpoint);
                if !checkpoint.is_empty() {
                    self.dropped_checkpoints.push(checkpoint);
                }
            }
        }
        info!(
            study = %self.record.name,
            trial = number,
            attempt = trial.attempt,
            "trial {from} -> {to}{}{detail}",
            if detail.is_empty() { "" } else { ": " }
        );
    }

    pub(super) fn trial_op(&self, number: u32) -> WriteOp {
        WriteOp::Trial { trial: Box::new(self.trials[number as usize].clone()), study_state: self.record.state }
    }

    /// Ends the study when its rules say so, stopping live trials of a failed study.
    pub(super) fn maybe_finish(&mut self, now: i64, ops: &mut Vec<WriteOp>) {
        if self.record.state != StudyState::Running {
            return;
        }
        if self.counts.failed >= self.spec.budget.max_failed_trials {
            let reason = format!(
                "{} trials failed (max_failed_trials = {})",
                self.counts.failed, self.spec.budget.max_failed_trials
            );
            self.end(StudyState::Failed, reason, now, ops);
        } else if self.counts.live() == 0 && (self.trials.len() as u32 >= self.spec.budget.max_trials || self.exhausted)
        {
            self.end(StudyState::Completed, String::new(), now, ops);
        }
    }

    /// Moves the study to a terminal state; its live trials become STOPPED.
    pub(super) fn end(&mut self, state: StudyState, reason: String, now: i64, ops: &mut Vec<WriteOp>) {
        self.record.state = state;
        self.record.reason = reason.clone();
        self.record.finished_ms = Some(now);
        info!(study = %self.record.name, "study RUNNING -> {state}{}{reason}", if reason.is_empty() { "" } else { ": " });
        ops.push(WriteOp::Study(self.record.clone()));
        let live: Vec<u32> = self.pending.iter().chain(&self.running).chain(&self.paused).copied().collect();
        for number in live {
            self.trial_mut(number).error = format!("study {}", state.as_str().to_lowercase());
            self.transition(number, TrialState::Stopped, now, "");
            ops.push(self.trial_op(number));
        }
    }

    /// Params for new trial `number`: the first trial of each configuration asks the sampler;
    /// the rest copy them with `seed` = 0, 1, … (`algorithm.repeats`) for each `fold` = 0, 1, …
    /// (`evaluation.folds`): trial `c × repeats × folds + f × repeats + r` is configuration c,
    /// fold f, seed r.
    pub(super) fn next_params(&self, number: u32) -> Option<Params> {
        let (repeats, folds) = (self.spec.repeats.max(1), self.spec.folds.max(1));
        let per_configuration = repeats * folds;
        let (config, within) = (number / per_configuration, number % per_configuration);
        let mut params = if within == 0 {
            self.sampler.sample(config, &self.trials, &self.spec.objective)?
        } else {
            self.trials[(number - within) as usize].params.clone()
        };
        if repeats > 1 {
            params.insert(bertsweep_proto::contract::params::SEED.into(), ParamValue::Int((within % repeats) as i64));
        }
        if folds > 1 {
            params.insert(bertsweep_proto::contract::params::FOLD.into(), ParamValue::Int((within / repeats) as i64));
        }
        Some(params)
    }

    /// Configurations (params without `seed`) ranked by the mean objective of their COMPLETED
    /// trials; configurations with no completed trial come last.
    pub(super) fn configurations(&self) -> Vec<Configuration> {
        self.configurations_shared().as_ref().clone()
    }

    /// [`Self::configurations`], shared: computed once per change of the trial or completed
    /// count.
    pub(super) fn configurations_shared(&self) -> Arc<Vec<Configuration>> {
        let key = (self.trials.len(), self.counts.completed);
        if let Some((at, cached)) = self.configurations_cache.borrow().as_ref() {
            if *at == key {
                return cached.clone();
            }
        }
        let computed = Arc::new(self.compute_configurations());
        *self.configurations_cache.borrow_mut() = Some((key, computed.clone()));
        computed
    }

    fn compute_configurations(&self) -> Vec<Configuration> {
        let mut configs: Vec<Configuration> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for t in &self.trials {
            let key = config_key(&t.params);
            let i = *index.entry(key).or_insert_with(|| {
                let mut params = t.params.clone();
                params.retain(|k, _| !crate::params::PER_TRIAL_PARAMS.contains(&k.as_str()));
                configs.push(Configuration { params, trials: Vec::new(), values: Vec::new(), mean: None, std: None });
                configs.len() - 1
            });
            configs[i].trials.push(t.number);
            if let (TrialState::Completed, Some(v)) = (t.state, t.value) {
                configs[i].values.push(v);
            }
        }
        for c in &mut configs {
            if !c.values.is_empty() {
                let n = c.values.len() as f64;
                let mean = c.values.iter().sum::<f64>() / n;
                // Sample standard deviation (n - 1), 0 for a single value.
                let var = if c.values.len() > 1 {
                    c.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
                } else {
                    0.0
                };
                c.mean = Some(mean);
                c.std = Some(var.sqrt());
            }
        }
        let objective = &self.spec.objective;
        configs.sort_by(|a, b| match (a.mean, b.mean) {
            (Some(x), Some(y)) if objective.better(x, y) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) if objective.better(y, x) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => a.trials[0].cmp(&b.trials[0]),
        });
        configs
    }

    pub(super) fn trial_mut(&mut self, number: u32) -> &mut Trial {
        &mut self.trials[number as usize]
    }

    pub(super) fn summary(&self) -> StudySummary {
        StudySummary {
            record: self.record.clone(),
            spec: self.spec.clone(),
            counts: self.counts,
            best_value: if self.spec.trials_per_configuration() > 1 {
                self.configurations_shared().first().and_then(|c| c.mean)
            } else {
                self.best().and_then(|t| t.value)
            },
            grid_size: self.grid_size,
        }
    }

    /// The best COMPLETED trial (ties go to the lower number). With seed repeats or folds, the
    /// best trial of the configuration with the best mean.
    pub(super) fn best(&self) -> Option<&Trial> {
        if self.spec.trials_per_configuration() > 1 {
            let configs = self.configurations_shared();
            let best_config = configs.first().filter(|c| c.mean.is_some())?;
            return self.best_of(best_config.trials.iter().map(|&n| &self.trials[n as usize]));
        }
        self.best_of(self.trials.iter())
    }

    pub(super) fn best_of<'a>(&'a self, trials: impl Iterator<Item = &'a Trial>) -> Option<&'a Trial> {
        let objective = &self.spec.objective;
        trials.filter(|t| t.state == TrialState::Completed && t.value.is_some()).fold(
            None,
            |best: Option<&Trial>, t| match best {
                Some(b) if !objective.better(t.value.unwrap_or_default(), b.value.unwrap_or_default()) => Some(b),
                _ => Some(t),
            },
        )
    }

    /// Trials whose models the coordinator keeps: the best `budget.keep_artifacts` COMPLETED
    /// trials by objective (ties to the lower number), plus the study's best trial (with seed
    /// repeats it need not be among them).
    pub(super) fn kept_artifact_trials(&self) -> std::collections::HashSet<u32> {
        let objective = &self.spec.objective;
        let mut done: Vec<&Trial> =
            self.trials.iter().filter(|t| t.state == TrialState::Completed && t.value.is_some()).collect();
        done.sort_by(|a, b| {
            let (x, y) = (a.value.unwrap_or_default(), b.value.unwrap_or_default());
            let order = if objective.better(x, y) {
                std::cmp::Ordering::Less
            } else if objective.better(y, x) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            };
            order.then(a.number.cmp(&b.number))
        });
        let mut kept: std::collections::HashSet<u32> =
            done.iter().take(self.spec.budget.keep_artifacts as usize).map(|t| t.number).collect();
        if self.spec.budget.keep_artifacts > 0 {
            kept.extend(self.best().map(|t| t.number));
            // Cross-validation: a configuration's mean is known only once every fold has ended,
            // so a configuration still running keeps its fold models, and the best of the
            // finished ones (ranked by mean) keeps all of its fold models together, so that any
            // of them, or their ensemble, can be exported. Evictions cannot be undone, so
            // nothing is dropped on a partial mean.
            if self.spec.folds > 1 {
                let per_configuration = self.spec.trials_per_configuration() as usize;
                let ended = |c: &Configuration| {
                    c.trials.len() == per_configuration
                        && c.trials.iter().all(|&n| self.trials[n as usize].state.is_terminal())
                };
                let completed = |n: &&u32| self.trials[**n as usize].state == TrialState::Completed;
                let configs = self.configurations_shared();
                for c in configs.iter().filter(|c| !ended(c)) {
                    kept.extend(c.trials.iter().filter(completed).copied());
                }
                if let Some(best) = configs.iter().find(|c| c.mean.is_some() && ended(c)) {
                    kept.extend(best.trials.iter().filter(completed).copied());
                }
            }
        }
        kept
    }

    /// Whether a trial completing with `value` now would have its model kept.
    pub(super) fn would_keep(&self, value: f64) -> (bool, String) {
        let keep = self.spec.budget.keep_artifacts;
        if keep == 0 {
            return (false, "the study keeps no models (budget.keep_artifacts = 0)".into());
        }
        if self.spec.trials_per_configuration() > 1 {
            // The best trial is picked by its configuration's mean, which the value alone does
            // not decide: upload, and let completion keep or drop it.
            return (true, "seed repeats or folds: kept if among the best or of the best configuration".into());
        }
        let objective = &self.spec.objective;
        let better = self
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Completed && t.value.is_some_and(|v| !objective.better(value, v)))
            .count();
        if better < keep as usize {
            (true, format!("would rank {} of the {keep} kept", better + 1))
        } else {
            (false, format!("{better} completed trials are at least as good; the study keeps {keep}"))
        }
    }

    /// Requeues a trial that lost its lease, or fails it when attempts are used up.
    /// The PAUSED trial to promote now (ASHA promotion mode), if any.
    /// Trials that could start now if a worker asked: pending (requeued or not yet leased)
    /// ones, a paused one that ranks for promotion, and configurations not sampled yet within
    /// the budget, capped by the free `parallel_trials` places. 0 unless the study runs. What an
    /// autoscaler (KEDA) turns into worker pods.
    pub(super) fn demand(&self) -> u32 {
        if self.record.state != StudyState::Running {
            return 0;
        }
        let free = self.spec.budget.parallel_trials.saturating_sub(self.counts.running);
        let unsampled =
            if self.exhausted { 0 } else { self.spec.budget.max_trials.saturating_sub(self.trials.len() as u32) };
        let promotable = u32::from(self.promotable().is_some());
        free.min((self.pending.len() as u32).saturating_add(unsampled).saturating_add(promotable))
    }

    pub(super) fn promotable(&self) -> Option<u32> {
        match self.spec.early_stopping {
            EarlyStopping::Asha { reduction_factor, promotion: true, .. } if !self.paused.is_empty() => {
                stopping::promotable(&self.trials, reduction_factor, &self.spec.objective)
            }
            _ => None,
        }
    }

    /// Prunes the PAUSED trials once nothing can promote them any more: no trial is pending or
    /// running and no new one will be sampled, so no rung will gain a result.
    pub(super) fn prune_unpromoted(&mut self, now: i64, ops: &mut Vec<WriteOp>) {
        if self.paused.is_empty() || !self.pending.is_empty() || !self.running.is_empty() {
            return;
        }
        let stranded: Vec<u32> = self.paused.iter().copied().collect();
        for number in stranded {
            let trial = &self.trials[number as usize];
            let epoch = trial.last_epoch();
            let value = trial.intermediate.get(&epoch).and_then(|m| m.get(&self.spec.objective.metric)).copied();
            let trial = self.trial_mut(number);
            trial.value = value;
            trial.metrics = trial.intermediate.get(&epoch).cloned().unwrap_or_default();
            let detail = format!("asha: not promoted from epoch {epoch} before the study ran out of trials");
            self.transition(number, TrialState::Pruned, now, &detail);
            ops.push(self.trial_op(number));
        }
        self.maybe_finish(now, ops);
    }

    /// Queues a checkpoint no trial needs any more for deletion (empty: nothing).
    pub(super) fn drop_checkpoint(&mut self, checkpoint: String) {
        if !checkpoint.is_empty() {
            self.dropped_checkpoints.push(checkpoint);
        }
    }

    pub(super) fn requeue_or_fail(&mut self, number: u32, error: String, now: i64, ops: &mut Vec<WriteOp>) {
        let attempts_left = self.trials[number as usize].attempt < self.spec.budget.max_attempts;
        self.trial_mut(number).error = error.clone();
        if attempts_left {
            self.trial_mut(number).archive_attempt();
            self.transition(number, TrialState::Pending, now, &error);
        } else {
            let max = self.spec.budget.max_attempts;
            self.trial_mut(number).error = format!("{error} (gave up after {max} attempts)");
            self.transition(number, TrialState::Failed, now, &error);
        }
        ops.push(self.trial_op(number));
        self.maybe_finish(now, ops);
    }

    /// Leases trial `number` to `worker_id` under fencing token `token` (a promoted trial
    /// continues its attempt, its curve moving to the new lease; any other starts a new
    /// attempt): the RUNNING transition, its ops, and what the worker is handed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lease(
        &mut self,
        number: u32,
        promoted: bool,
        worker_id: &str,
        token: u64,
        ttl: u32,
        now: i64,
        ops: &mut Vec<WriteOp>,
    ) -> Assignment {
        let trial = self.trial_mut(number);
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
        self.transition(number, TrialState::Running, now, &detail);
        ops.push(self.trial_op(number));
        let trial = &self.trial(number);
        let assignment = Assignment {
            trial_id: trial.id,
            study: self.record().name.clone(),
            number,
            params: trial.params.clone(),
            task: self.spec().task.clone(),
            folds: self.spec().folds,
            fold_seed: self.spec().seed,
            objective: self.spec().objective.clone(),
            lease_token: token,
            lease_ttl_ms: ttl,
            attempt: trial.attempt,
            checkpoints: self.spec().budget.checkpoints,
            resume_checkpoint: if self.spec().budget.checkpoints { trial.checkpoint.clone() } else { String::new() },
            resume_epoch: if self.spec().budget.checkpoints { trial.checkpoint_epoch } else { 0 },
            // Its own earlier attempts count too: the trial is of its shape.
            expected_peak_bytes: self.expected_peak(&self.shape_of(number)),
        };
        assignment
    }
}
