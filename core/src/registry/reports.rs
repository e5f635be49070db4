//! What workers report about a leased trial: per-epoch progress (early stopping, checkpoints),
//! whether a model would be kept, completion and failure.

use super::*;

impl Registry {
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
        let objective = study.spec().objective.clone();
        let trial = &study.trial(number);
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
            bertsweep_transfer::checkpoint_location::check(
                &checkpoint,
                &study.record().name,
                number,
                epoch,
                Some(token),
            )
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
        let this = &study.trial(number);
        let fold = (study.spec().folds > 1).then(|| this.params.get(bertsweep_proto::contract::params::FOLD));
        let peers: Vec<&Trial> = study
            .trials()
            .iter()
            .filter(|t| fold.is_none_or(|f| t.params.get(bertsweep_proto::contract::params::FOLD) == f))
            .collect();
        let peers = peers.as_slice();
        let mut decision = study.stopper().decide(this, epoch, value, peers, &objective);
        if matches!(decision, Decision::Pause(_)) && this.checkpoint_epoch != epoch {
            // Nothing to resume from: this trial is judged as the stop-based rule would.
            decision = study.stopper().fallback(this, epoch, value, peers, &objective);
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
            .is_ok_and(|(si, n)| self.studies[si].trials()[n as usize].state == TrialState::Running)
    }

    /// Whether the trial, completing with `value`, should upload its model (see
    /// `budget.keep_artifacts`), and why.
    pub fn offer_artifact(&self, trial_id: u64, token: u64, value: f64) -> Result<(bool, String)> {
        let (si, number) = self.leased(trial_id, token)?;
        let study = &self.studies[si];
        let trial = &study.trial(number);
        if trial.state != TrialState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "trial {number} of study {:?} is {} and can no longer offer a model",
                study.record().name,
                trial.state
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
        let objective = study.spec().objective.clone();
        check_metrics(&metrics, &objective.metric)?;
        validate_peak_device_memory(peak_device_memory_bytes).map_err(CoordinatorError::InvalidArgument)?;
        let trial = &study.trial(number);
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
                    study.record().name
                )))
            }
            _ => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "trial {} of study {:?} is {} and can no longer be completed",
                    number, study.record().name, trial.state
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
        if study.trials().iter().any(|t| blob_of(&t.artifact).is_some()) {
            let kept = study.kept_artifact_trials();
            let losing: Vec<u32> = study
                .trials()
                .iter()
                .filter(|t| t.state == TrialState::Completed && !kept.contains(&t.number))
                .filter(|t| blob_of(&t.artifact).is_some())
                .map(|t| t.number)
                .collect();
            for n in losing {
                evicted.extend(blob_of(&study.trial(n).artifact));
                study.trial_mut(n).artifact.clear();
                ops.push(study.trial_op(n));
            }
        }
        study.maybe_finish(now, &mut ops);
        Ok(Outcome::new(evicted, ops, true))
    }

    /// Checkpoints no trial needs any more (replaced by a later one, or their trial ended),
    /// since the last call: the caller deletes them.
    pub fn take_dropped_checkpoints(&mut self) -> Vec<String> {
        self.studies.iter_mut().flat_map(|s| s.take_dropped_checkpoints()).collect()
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
        let trial = &study.trial(number);
        if trial.state != TrialState::Running {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "trial {} of study {:?} is {} and can no longer fail",
                number,
                study.record().name,
                trial.state
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
                if study.trial(number).state == TrialState::Pending {
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
        let state = study.trial(number).state;
        Ok(Outcome::new(state, ops, true))
    }
}
