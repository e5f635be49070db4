//! The gRPC service: one method per RPC, each turning the request into a registry operation,
//! persisting its changes, and answering once they are committed.

pub mod convert;

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_server::Coordinator;
use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::Result as CoordResult;
use crate::model::{now_ms, StudyState};
use crate::registry::{Outcome, Registry};
use crate::spec::parse_study;
use crate::store::{CommittedChange, Writer};
use convert::*;

/// Longest AcquireTrial long-poll a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// State shared by every request handler, the reaper and the streams.
pub struct Shared {
    /// The lifecycle state machine; held only for microseconds, never across an await.
    pub registry: Mutex<Registry>,
    /// Group-commit writer; ops are submitted under the registry lock to keep their order.
    pub writer: Writer,
    /// Committed changes, for WatchStudy.
    pub events: broadcast::Sender<CommittedChange>,
    /// Bumped whenever waiting AcquireTrial calls should look for work again.
    pub work: watch::Sender<u64>,
    /// AcquireTrial long-poll when the client does not say.
    pub default_wait: Duration,
    /// How often workers should heartbeat (a third of the lease TTL).
    pub heartbeat_interval: Duration,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a registry operation, persists its changes, and returns its value once committed.
    pub async fn apply<T>(&self, op: impl FnOnce(&mut Registry, i64) -> CoordResult<Outcome<T>>) -> Result<T, Status> {
        let (value, commit) = {
            let mut registry = self.lock();
            let outcome = op(&mut registry, now_ms())?;
            let commit = self.writer.submit(outcome.ops);
            if outcome.wake {
                self.work.send_modify(|v| *v = v.wrapping_add(1));
            }
            (outcome.value, commit)
        };
        commit.wait().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(value)
    }
}

/// The `bertsweep.v1.Coordinator` implementation.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    pub fn new(shared: Arc<Shared>) -> Self {
        CoordinatorService { shared }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TrialEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn create_study(&self, request: Request<pb::CreateStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let text = request.into_inner().spec_toml;
        if text.len() > 1 << 20 {
            return Err(Status::invalid_argument("study file is larger than 1 MiB"));
        }
        let spec = parse_study(&text).map_err(crate::error::CoordinatorError::from)?;
        let summary = self.shared.apply(|r, now| r.create_study(spec, text, now)).await?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn get_study(&self, request: Request<pb::GetStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let name = request.into_inner().name;
        let summary = self.shared.lock().study(require_name("name", &name)?)?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn list_studies(&self, _request: Request<pb::ListStudiesRequest>) -> Result<Response<pb::ListStudiesResponse>, Status> {
        let studies = self.shared.lock().studies();
        Ok(Response::new(pb::ListStudiesResponse { studies: studies.iter().map(study_to_proto).collect() }))
    }

    async fn stop_study(&self, request: Request<pb::StopStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let name = request.into_inner().name;
        require_name("name", &name)?;
        let summary = self.shared.apply(|r, now| r.stop_study(&name, now)).await?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn list_trials(&self, request: Request<pb::ListTrialsRequest>) -> Result<Response<pb::ListTrialsResponse>, Status> {
        let name = request.into_inner().study;
        let (trials, configurations) = {
            let registry = self.shared.lock();
            (registry.trials(require_name("study", &name)?)?, registry.configurations(&name)?)
        };
        Ok(Response::new(pb::ListTrialsResponse {
            trials: trials.iter().map(trial_to_proto).collect(),
            configurations: configurations.iter().map(configuration_to_proto).collect(),
        }))
    }

    async fn get_best_trial(&self, request: Request<pb::GetBestTrialRequest>) -> Result<Response<pb::BestTrial>, Status> {
        let name = request.into_inner().study;
        let (best, configurations) = {
            let registry = self.shared.lock();
            (registry.best_trial(require_name("study", &name)?)?, registry.configurations(&name)?)
        };
        match best {
            Some(t) => {
                let configuration = configurations.iter().find(|c| c.trials.contains(&t.number)).map(configuration_to_proto);
                Ok(Response::new(pb::BestTrial { trial: Some(trial_to_proto(&t)), configuration }))
            }
            None => Err(Status::not_found(format!("study {name:?} has no completed trial yet"))),
        }
    }

    type WatchStudyStream = EventStream;

    async fn watch_study(&self, request: Request<pb::WatchStudyRequest>) -> Result<Response<Self::WatchStudyStream>, Status> {
        let name = request.into_inner().study;
        require_name("study", &name)?;
        // Subscribe before the snapshot so no change falls between the two.
        let mut events = self.shared.events.subscribe();
        let (snapshot, state) = {
            let registry = self.shared.lock();
            (registry.trials(&name)?, registry.study_state(&name)?)
        };
        let (tx, rx) = mpsc::channel(256);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let send_snapshot = |trials: Vec<crate::model::Trial>, state: StudyState| {
                let tx = tx.clone();
                async move {
                    for t in &trials {
                        let event = pb::TrialEvent { trial: Some(trial_to_proto(t)), snapshot: true, study_state: study_state_to_proto(state) as i32 };
                        if tx.send(Ok(event)).await.is_err() {
                            return false;
                        }
                    }
                    true
                }
            };
            if !send_snapshot(snapshot, state).await {
                return;
            }
            if state != StudyState::Running {
                let _ = tx.send(Ok(pb::TrialEvent { trial: None, snapshot: false, study_state: study_state_to_proto(state) as i32 })).await;
                return;
            }
            loop {
                match events.recv().await {
                    Ok(CommittedChange::Trial { trial, study_state }) if trial.study == name => {
                        let event = pb::TrialEvent { trial: Some(trial_to_proto(&trial)), snapshot: false, study_state: study_state_to_proto(study_state) as i32 };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Ok(CommittedChange::Study(record)) if record.name == name && record.state != StudyState::Running => {
                        let _ = tx.send(Ok(pb::TrialEvent { trial: None, snapshot: false, study_state: study_state_to_proto(record.state) as i32 })).await;
                        return;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        crate::store::warn_lagged(skipped);
                        let snapshot = {
                            let registry = shared.lock();
                            registry.trials(&name).ok().zip(registry.study_state(&name).ok())
                        };
                        let Some((trials, state)) = snapshot else { return };
                        if !send_snapshot(trials, state).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register_worker(&self, request: Request<pb::RegisterWorkerRequest>) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let r = request.into_inner();
        if r.hostname.len() > 256 || r.version.len() > 64 || r.devices.len() > 64 {
            return Err(Status::invalid_argument("hostname, version or devices are too long"));
        }
        let worker_id = self.shared.apply(|reg, now| Ok(reg.register_worker(r.hostname, r.devices, r.version, now))).await?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id,
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u32,
        }))
    }

    async fn acquire_trial(&self, request: Request<pb::AcquireTrialRequest>) -> Result<Response<pb::AcquireTrialResponse>, Status> {
        let r = request.into_inner();
        require_name("worker_id", &r.worker_id)?;
        let wait = match r.wait_ms {
            0 => self.shared.default_wait,
            ms if Duration::from_millis(ms as u64) > MAX_WAIT => {
                return Err(Status::invalid_argument(format!("wait_ms {ms} is over the maximum of {} ms", MAX_WAIT.as_millis())))
            }
            ms => Duration::from_millis(ms as u64),
        };
        let study = (!r.study.is_empty()).then_some(r.study.as_str());
        let deadline = tokio::time::Instant::now() + wait;
        let mut work = self.shared.work.subscribe();
        loop {
            work.borrow_and_update();
            let assignment = self.shared.apply(|reg, now| reg.acquire(&r.worker_id, study, now)).await?;
            if let Some(a) = assignment {
                return Ok(Response::new(pb::AcquireTrialResponse { assignment: Some(assignment_to_proto(&a)) }));
            }
            match tokio::time::timeout_at(deadline, work.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(Response::new(pb::AcquireTrialResponse { assignment: None })),
            }
        }
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let answer = self.shared.apply(|reg, now| reg.heartbeat(id, token, now)).await?;
        Ok(Response::new(pb::HeartbeatResponse { lease_ttl_ms: answer.lease_ttl_ms, stop: answer.stop, reason: answer.reason }))
    }

    async fn report_progress(&self, request: Request<pb::ReportProgressRequest>) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let metrics = metrics_from_proto(r.metrics)?;
        let decision = self.shared.apply(|reg, now| reg.report_progress(id, token, r.epoch, metrics, now)).await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }

    async fn complete_trial(&self, request: Request<pb::CompleteTrialRequest>) -> Result<Response<pb::CompleteTrialResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let metrics = metrics_from_proto(r.metrics)?;
        if r.artifact.len() > 4096 {
            return Err(Status::invalid_argument("artifact path is longer than 4096 bytes"));
        }
        self.shared.apply(|reg, now| reg.complete(id, token, metrics, r.artifact, now)).await?;
        Ok(Response::new(pb::CompleteTrialResponse {}))
    }

    async fn fail_trial(&self, request: Request<pb::FailTrialRequest>) -> Result<Response<pb::FailTrialResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let kind = failure_kind_from_proto(r.kind)?;
        let state = self.shared.apply(|reg, now| reg.fail(id, token, r.error, kind, now)).await?;
        Ok(Response::new(pb::FailTrialResponse { state: trial_state_to_proto(state) as i32 }))
    }
}
