//! The gRPC service: one method per RPC, each turning the request into a registry operation,
//! persisting its changes, and answering once they are committed.

pub mod convert;
mod memory;
pub mod operations;
pub mod paging;
mod scoring;
mod transfer;
mod watch;
pub mod wire_errors;

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_server::Coordinator;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::clock::now_ms;
use crate::error::Result as CoordResult;
use crate::registry::{Measured, Outcome, Registry};
use crate::spec::parse_study;
use crate::store::{CommittedChange, Writer};
use convert::*;
use watch::WATCH_BUFFER;

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
    pub work: tokio::sync::watch::Sender<u64>,
    /// AcquireTrial long-poll when the client does not say.
    pub default_wait: Duration,
    /// How often workers should heartbeat (a third of the lease TTL).
    pub heartbeat_interval: Duration,
    /// Uploaded inputs and kept models.
    pub blobs: crate::blobs::BlobStore,
    /// One permit: one backup at a time (each pins blobs and copies the database).
    pub backups: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The registry; a panic while it was held (a bug) does not take the coordinator down,
    /// since every operation validates before it mutates.
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a registry operation, persists its changes, and returns its value once committed;
    /// then deletes the checkpoints the change left without a trial (whichever call ended or
    /// superseded them: reports, completions, failures, the reaper, a stopped study).
    pub async fn apply<T>(&self, op: impl FnOnce(&mut Registry, i64) -> CoordResult<Outcome<T>>) -> Result<T, Status> {
        self.apply_referencing(None, op).await
    }

    /// [`Shared::apply`] for heartbeats: a lease extension is kept in memory and answered even
    /// while the database cannot commit (it is written once it can), so a full disk does not
    /// expire every running trial's lease; it acknowledges nothing a crash could lose that a
    /// restarted coordinator does not re-grant anyway.
    pub async fn apply_heartbeat<T>(
        &self,
        op: impl FnOnce(&mut Registry, i64) -> CoordResult<Outcome<T>>,
    ) -> Result<T, Status> {
        let (value, commit) = {
            let mut registry = self.lock();
            let outcome = op(&mut registry, now_ms()).map_err(status)?;
            (outcome.value, self.writer.submit(outcome.ops))
        };
        match self.writer.wait(commit).await {
            Ok(()) | Err(crate::store::StoreError::Unwritable(_)) => Ok(value),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// [`Shared::apply`] for a change that refers to blobs checked just before under `refs`
    /// (see [`crate::blobs::BlobStore::referencing`]): the guard is released once the registry
    /// holds the reference (what a collection reads its roots from), before the commit is
    /// awaited and before any checkpoint deletion (which takes the lock exclusively).
    pub async fn apply_referencing<T>(
        &self,
        refs: Option<tokio::sync::RwLockReadGuard<'_, ()>>,
        op: impl FnOnce(&mut Registry, i64) -> CoordResult<Outcome<T>>,
    ) -> Result<T, Status> {
        // A database that cannot commit takes no new changes: they would be lost on a crash
        // while the caller believed them (it is told to retry instead, with the reason).
        if let Some(why) = self.writer.failing() {
            return Err(Status::unavailable(crate::store::StoreError::Unwritable(why).to_string()));
        }
        let (value, commit, dropped) = {
            let mut registry = self.lock();
            let outcome = op(&mut registry, now_ms());
            drop(refs);
            let outcome = outcome.map_err(status)?;
            let commit = self.writer.submit(outcome.ops);
            if outcome.wake {
                self.work.send_modify(|v| *v = v.wrapping_add(1));
            }
            (outcome.value, commit, registry.take_dropped_checkpoints())
        };
        self.writer.wait(commit).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if !dropped.is_empty() {
            transfer::delete_checkpoints(self, dropped).await;
        }
        Ok(value)
    }
}

/// The `bertsweep.v1.Coordinator` implementation.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    /// A service over the state `server::run` built.
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
        let spec = parse_study(&text).map_err(crate::error::CoordinatorError::from).map_err(status)?;
        // From checking the inputs to committing the study, no blob collection runs.
        let refs = self.shared.blobs.referencing().await;
        let spec = transfer::off_runtime(&self.shared, move |shared| {
            transfer::check_inputs(shared, &spec)?;
            Ok(spec)
        })
        .await?;
        let summary = self.shared.apply_referencing(Some(refs), |r, now| r.create_study(spec, text, now)).await?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn get_study(&self, request: Request<pb::GetStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let name = request.into_inner().name;
        let summary = self.shared.lock().study(require_name("name", &name)?).map_err(status)?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn list_studies(
        &self,
        request: Request<pb::ListStudiesRequest>,
    ) -> Result<Response<pb::ListStudiesResponse>, Status> {
        let r = request.into_inner();
        let page = paging::page_request(r.page_size, &r.page_token)?;
        let state = match pb::StudyState::try_from(r.state) {
            Ok(pb::StudyState::Unspecified) => None,
            Ok(state) => Some(study_state_from_proto(state)?),
            Err(_) => return Err(Status::invalid_argument(format!("unknown study state {}", r.state))),
        };
        let (studies, mut next) = self.shared.lock().studies_page(page.start, page.size, state);
        let ids: Vec<u64> = studies.iter().map(|s| s.record.id).collect();
        let (studies, kept) = paging::fit(studies.iter().map(study_to_proto).collect());
        if kept < ids.len() {
            next = Some(ids[kept]);
        }
        Ok(Response::new(pb::ListStudiesResponse { studies, next_page_token: paging::next_token(next) }))
    }

    async fn stop_study(&self, request: Request<pb::StopStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let name = request.into_inner().name;
        require_name("name", &name)?;
        let summary = self.shared.apply(|r, now| r.stop_study(&name, now)).await?;
        Ok(Response::new(study_to_proto(&summary)))
    }

    async fn delete_study(
        &self,
        request: Request<pb::DeleteStudyRequest>,
    ) -> Result<Response<pb::DeleteStudyResponse>, Status> {
        let r = request.into_inner();
        require_name("name", &r.name)?;
        Ok(Response::new(operations::delete_study(&self.shared, &r.name, r.force).await?))
    }

    type BackupStream = operations::BackupStream;

    async fn backup(&self, _request: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        Ok(Response::new(operations::backup(&self.shared).await?))
    }

    async fn list_trials(
        &self,
        request: Request<pb::ListTrialsRequest>,
    ) -> Result<Response<pb::ListTrialsResponse>, Status> {
        let r = request.into_inner();
        let page = paging::page_request(r.page_size, &r.page_token)?;
        let from = u32::try_from(page.start).unwrap_or(u32::MAX);
        let (trials, total) =
            self.shared.lock().trials_page(require_name("study", &r.study)?, from, page.size).map_err(status)?;
        let (trials, kept) = paging::fit(trials.iter().map(trial_to_proto).collect());
        let next = paging::next_offset(from as u64, kept, total as u64);
        Ok(Response::new(pb::ListTrialsResponse { trials, next_page_token: paging::next_token(next) }))
    }

    async fn list_configurations(
        &self,
        request: Request<pb::ListConfigurationsRequest>,
    ) -> Result<Response<pb::ListConfigurationsResponse>, Status> {
        let r = request.into_inner();
        let page = paging::page_request(r.page_size, &r.page_token)?;
        let configurations = self.shared.lock().configurations(require_name("study", &r.study)?).map_err(status)?;
        let total = configurations.len() as u64;
        let start = page.start.min(total) as usize;
        let end = start.saturating_add(page.size).min(configurations.len());
        let (configurations, kept) =
            paging::fit(configurations[start..end].iter().map(configuration_to_proto).collect());
        let next = paging::next_offset(start as u64, kept, total);
        Ok(Response::new(pb::ListConfigurationsResponse { configurations, next_page_token: paging::next_token(next) }))
    }

    async fn get_best_trial(
        &self,
        request: Request<pb::GetBestTrialRequest>,
    ) -> Result<Response<pb::BestTrial>, Status> {
        let name = request.into_inner().study;
        let (best, configurations) = {
            let registry = self.shared.lock();
            (
                registry.best_trial(require_name("study", &name)?).map_err(status)?,
                registry.configurations(&name).map_err(status)?,
            )
        };
        let Some(t) = best else {
            return Err(Status::not_found(format!("study {name:?} has no completed trial yet")));
        };
        let configuration = configurations.iter().find(|c| c.trials.contains(&t.number)).map(configuration_to_proto);
        let (comparison, comparison_unavailable) = match self.compare_top_two(&name, &configurations).await? {
            Ok(c) => (Some(c), String::new()),
            Err(why) => (None, why),
        };
        Ok(Response::new(pb::BestTrial {
            trial: Some(trial_to_proto(&t)),
            configuration,
            comparison,
            comparison_unavailable,
        }))
    }

    type WatchStudyStream = EventStream;

    async fn watch_study(
        &self,
        request: Request<pb::WatchStudyRequest>,
    ) -> Result<Response<Self::WatchStudyStream>, Status> {
        let name = request.into_inner().study;
        require_name("study", &name)?;
        // Subscribe before the snapshot so no change falls between the two.
        let events = self.shared.events.subscribe();
        self.shared.lock().study_state(&name).map_err(status)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch::run(self.shared.clone(), name, events, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let r = request.into_inner();
        if r.hostname.len() > 256 || r.version.len() > 64 || r.devices.len() > 64 {
            return Err(Status::invalid_argument("hostname, version or devices are too long"));
        }
        if let Some(d) = r.devices.iter().find(|d| d.is_empty() || d.len() > 128 || d.contains([',', '\n'])) {
            return Err(Status::invalid_argument(format!(
                "device {} is not a device name (1 to 128 characters, no comma or newline)",
                crate::text::quote(d)
            )));
        }
        let worker_id =
            self.shared.apply(|reg, now| Ok(reg.register_worker(r.hostname, r.devices, r.version, now))).await?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id,
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u32,
        }))
    }

    async fn acquire_trial(
        &self,
        request: Request<pb::AcquireTrialRequest>,
    ) -> Result<Response<pb::AcquireTrialResponse>, Status> {
        let r = request.into_inner();
        require_name("worker_id", &r.worker_id)?;
        if !r.study.is_empty() {
            require_name("study", &r.study)?;
        }
        let wait = match r.wait_ms {
            0 => self.shared.default_wait,
            ms if Duration::from_millis(ms as u64) > MAX_WAIT => {
                return Err(Status::invalid_argument(format!(
                    "wait_ms {ms} is over the maximum of {} ms",
                    MAX_WAIT.as_millis()
                )))
            }
            ms => Duration::from_millis(ms as u64),
        };
        let study = (!r.study.is_empty()).then_some(r.study.as_str());
        let deadline = tokio::time::Instant::now() + wait;
        let mut work = self.shared.work.subscribe();
        let empty = pb::AcquireTrialResponse {
            assignment: None,
            study_state: pb::StudyState::Unspecified as i32,
            reason: String::new(),
        };
        loop {
            work.borrow_and_update();
            let (assignment, ended) = self
                .shared
                .apply(|reg, now| {
                    let outcome = reg.acquire(&r.worker_id, study, now)?;
                    // A worker waiting on one study learns at once that it has ended.
                    let ended = match (&outcome.value, study) {
                        (None, Some(name)) => reg.study_end(name)?,
                        _ => None,
                    };
                    Ok(outcome.map(|a| (a, ended)))
                })
                .await?;
            if let Some(a) = assignment {
                return Ok(Response::new(pb::AcquireTrialResponse {
                    assignment: Some(assignment_to_proto(&a)),
                    ..empty
                }));
            }
            if let Some((state, reason)) = ended {
                let study_state = study_state_to_proto(state) as i32;
                return Ok(Response::new(pb::AcquireTrialResponse { study_state, reason, ..empty }));
            }
            match tokio::time::timeout_at(deadline, work.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(Response::new(empty)),
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let answer = self.shared.apply_heartbeat(|reg, now| reg.heartbeat(id, token, now)).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            lease_ttl_ms: answer.lease_ttl_ms,
            stop: answer.stop,
            reason: answer.reason,
            paused: answer.paused,
        }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let metrics = metrics_from_proto(r.metrics)?;
        let peak = peak_from_proto(r.peak_device_memory_bytes)?;
        let check = move |shared: &Shared, c: &str| transfer::check_checkpoint(shared, id, token, c);
        let (refs, checkpoint) = transfer::checked_reference(&self.shared, r.checkpoint, check).await?;
        let decision = self
            .shared
            .apply_referencing(refs, |reg, now| reg.report_progress(id, token, r.epoch, metrics, checkpoint, peak, now))
            .await?;
        Ok(Response::new(decision_to_proto(&decision)))
    }

    async fn complete_trial(
        &self,
        request: Request<pb::CompleteTrialRequest>,
    ) -> Result<Response<pb::CompleteTrialResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let metrics = metrics_from_proto(r.metrics)?;
        let peak = peak_from_proto(r.peak_device_memory_bytes)?;
        if r.artifact.len() > 4096 {
            return Err(Status::invalid_argument("artifact path is longer than 4096 bytes"));
        }
        let evaluation = match r.predictions {
            Some(predictions) => Some(self.score_predictions(id, token, predictions).await?),
            None => None,
        };
        // Checked by the registry (empty is fine: no test file, or a model not kept).
        let test_metrics = r.test_metrics.into_iter().collect();
        let measured = Measured { peak_device_memory_bytes: peak, evaluation, test_metrics };
        let check = move |shared: &Shared, a: &str| transfer::check_artifact(shared, id, token, a);
        let (refs, artifact) = transfer::checked_reference(&self.shared, r.artifact, check).await?;
        let evicted = self
            .shared
            .apply_referencing(refs, |reg, now| reg.complete(id, token, metrics, artifact, measured, now))
            .await?;
        transfer::collect_evicted(&self.shared, evicted);
        Ok(Response::new(pb::CompleteTrialResponse {}))
    }

    async fn offer_artifact(
        &self,
        request: Request<pb::OfferArtifactRequest>,
    ) -> Result<Response<pb::OfferArtifactResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let (wanted, reason) = self.shared.lock().offer_artifact(id, token, r.value).map_err(status)?;
        Ok(Response::new(pb::OfferArtifactResponse { wanted, reason }))
    }

    async fn find_missing_blobs(
        &self,
        request: Request<pb::FindMissingBlobsRequest>,
    ) -> Result<Response<pb::FindMissingBlobsResponse>, Status> {
        Ok(Response::new(transfer::find_missing(&self.shared, request.into_inner()).await?))
    }

    async fn upload_blob(
        &self,
        request: Request<Streaming<pb::UploadBlobRequest>>,
    ) -> Result<Response<pb::UploadBlobResponse>, Status> {
        Ok(Response::new(transfer::upload(&self.shared, request.into_inner()).await?))
    }

    type DownloadBlobStream = transfer::ChunkStream;

    async fn download_blob(
        &self,
        request: Request<pb::DownloadBlobRequest>,
    ) -> Result<Response<Self::DownloadBlobStream>, Status> {
        Ok(Response::new(transfer::download(&self.shared, request.into_inner()).await?))
    }

    async fn fail_trial(
        &self,
        request: Request<pb::FailTrialRequest>,
    ) -> Result<Response<pb::FailTrialResponse>, Status> {
        let r = request.into_inner();
        let (id, token) = (require_nonzero("trial_id", r.trial_id)?, require_nonzero("lease_token", r.lease_token)?);
        let kind = failure_kind_from_proto(r.kind)?;
        let state = self.shared.apply(|reg, now| reg.fail(id, token, r.error, kind, now)).await?;
        Ok(Response::new(pb::FailTrialResponse { state: trial_state_to_proto(state) as i32 }))
    }
}
