//! Workers and leases: registration and expiry, handing out trials (`acquire`, which issues
//! the fencing token), heartbeats, and the reaper that requeues trials whose lease lapsed.

use std::collections::HashSet;

use tracing::info;

use super::*;

impl Registry {
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
        let busy: HashSet<&str> =
            self.studies.iter().flat_map(|s| s.running().iter().map(|&n| s.trial(n).worker_id.as_str())).collect();
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
            if study.record().state != StudyState::Running
                || study.counts().running >= study.spec().budget.parallel_trials
            {
                continue;
            }
            let mut promoted = false;
            let number = match study.pending().iter().next().copied().or_else(|| study.promotable()) {
                Some(n) => {
                    promoted = study.trial(n).state == TrialState::Paused;
                    n
                }
                None => {
                    let next = study.trials().len() as u32;
                    if next >= study.spec().budget.max_trials || study.is_exhausted() {
                        // No rung can gain a result any more: what is still paused is done.
                        if !study.paused().is_empty() && study.running().is_empty() {
                            study.prune_unpromoted(now, &mut ops);
                            wake = true;
                        }
                        continue;
                    }
                    let Some(params) = study.next_params(next) else {
                        study.mark_exhausted();
                        study.maybe_finish(now, &mut ops);
                        wake = true;
                        continue;
                    };
                    let trial = new_trial(self.next_trial_id, study, next, params, now);
                    self.next_trial_id += 1;
                    self.trial_index.insert(trial.id, (si, next));
                    info!(study = %study.record().name, trial = next, params = %format_params(&trial.params), "trial sampled");
                    study.push_trial(trial);
                    next
                }
            };
            let token = self.next_token;
            self.next_token += 1;
            let assignment = study.lease(number, promoted, worker_id, token, self.lease.ttl_ms, now, &mut ops);
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

    /// Requeues (or fails) every trial whose lease expired before `now`.
    pub fn reap(&mut self, now: i64) -> Outcome<usize> {
        let mut ops = Vec::new();
        let mut reaped = 0;
        for study in &mut self.studies {
            let expired: Vec<u32> =
                study.running().iter().copied().filter(|&n| study.trial(n).lease_expires_ms < now).collect();
            for number in expired {
                let worker = study.trial(number).worker_id.clone();
                study.requeue_or_fail(
                    number,
                    format!("lease expired: worker {worker} stopped heartbeating"),
                    now,
                    &mut ops,
                );
                crate::telemetry::lease_expired();
                if study.trial(number).state == TrialState::Pending {
                    crate::telemetry::requeued("lease_expired");
                }
                reaped += 1;
            }
        }
        Outcome::new(reaped, ops, reaped > 0)
    }

    /// Earliest lease expiry among running trials (the reaper sleeps until then).
    pub fn next_expiry(&self) -> Option<i64> {
        self.studies.iter().flat_map(|s| s.running().iter().map(move |&n| s.trial(n).lease_expires_ms)).min()
    }
}
