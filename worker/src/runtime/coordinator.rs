//! The worker's one door to the coordinator: typed calls (acquire → [`Acquired`], report and
//! heartbeat → [`Verdict`], complete, fail, release) that own retries, backoff and the
//! classification of gRPC statuses. Protobuf types stay in here and in [`super::convert`]; the
//! rest of the runtime never sees a `Status` or a retry closure.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use tonic::{Code, Status};
use tracing::{info, warn};

use super::client::{self, Client};
use super::convert::{self, AssignmentError};
use super::RuntimeError;
use crate::train::TrialConfig;

/// The longest AcquireTrial long-poll a worker asks for.
pub const ACQUIRE_WAIT: Duration = Duration::from_secs(20);

/// What a completion carries besides the metrics: the best epoch's dev-set predictions and the
/// kept model's test-set scores.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// Dev-set predictions of the best epoch (`None`: not kept, e.g. over the size limit).
    pub predictions: Option<pb::DevPredictions>,
    /// `test_…` metrics; empty without a test file or when the model is not kept.
    pub test: BTreeMap<String, f64>,
}

/// How long completion and failure reports keep retrying an unreachable coordinator.
const FINAL_REPORT_PATIENCE: Duration = Duration::from_secs(600);

/// How long a release waits for the coordinator's answer.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// The coordinator's words when a completion names a model with a file it no longer holds
/// (`coordinator/src/blobs.rs`, `check_tree`): FAILED_PRECONDITION alone would not tell this
/// from a stale lease, so [`Coordinator::complete`] reads them, here and nowhere else, into
/// [`CallError::ArtifactMissing`].
const ARTIFACT_FILE_MISSING: &str = "missing on this coordinator";

/// Why a call about a trial did not go through (after the retries it is allowed). Shown as
/// the coordinator's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The coordinator refused the call, or stayed unreachable for longer than the call waits
    /// (then `code` is the last transient one).
    #[error("{message}")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The coordinator's message.
        message: String,
    },
    /// A completion named a model some file of which the coordinator no longer holds (pushed
    /// out with a model another completion replaced): upload it again and complete once more.
    #[error("{0}")]
    ArtifactMissing(String),
    /// No answer within this long (a release tries once, briefly).
    #[error("no answer within {} s", .0.as_secs())]
    NoAnswer(Duration),
}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        CallError::Status { code: status.code(), message: status.message().to_string() }
    }
}

/// How a refused completion reads: a model to upload again, or any other refusal.
fn completion_error(status: Status) -> CallError {
    if status.code() == Code::FailedPrecondition && status.message().contains(ARTIFACT_FILE_MISSING) {
        CallError::ArtifactMissing(status.message().to_string())
    } else {
        status.into()
    }
}

/// A lease on one trial: what every call about the trial quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The trial's id.
    pub trial_id: u64,
    /// The lease's fencing token.
    pub token: u64,
    /// How long the lease lives without a heartbeat.
    pub ttl: Duration,
}

/// A leased trial.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The lease to quote.
    pub lease: Lease,
    /// The study's name.
    pub study: String,
    /// The trial's number in the study.
    pub number: u32,
    /// 1 for the first lease, 2 for the first retry, …
    pub attempt: u32,
    /// The metric the study optimises.
    pub objective: String,
    /// What the coordinator sent, for [`Assignment::trial_config`] and logs.
    raw: pb::Assignment,
}

impl Assignment {
    /// An assignment of trial `number` of `study` under lease `token`, resuming from
    /// `resume` (a checkpoint reference and its epoch) when given: for tests.
    #[cfg(test)]
    pub(crate) fn for_test(study: &str, number: u32, token: u64, resume: Option<(&str, u32)>) -> Self {
        let (resume_checkpoint, resume_epoch) = resume.map_or((String::new(), 0), |(r, e)| (r.to_string(), e));
        let raw = pb::Assignment {
            study: study.into(),
            number,
            lease_token: token,
            checkpoints: true,
            resume_checkpoint,
            resume_epoch,
            ..Default::default()
        };
        Assignment {
            lease: Lease { trial_id: 1, token, ttl: Duration::from_secs(30) },
            study: study.into(),
            number,
            attempt: 1,
            objective: "eval_accuracy".into(),
            raw,
        }
    }

    /// `study/number`, for logs.
    pub fn label(&self) -> String {
        format!("{}/{}", self.study, self.number)
    }

    /// `name=value` pairs of the parameters, for logs.
    pub fn describe_params(&self) -> String {
        convert::describe_params(&self.raw)
    }

    /// The checkpoint to continue from and the epoch it ends, when the coordinator sent one.
    pub fn resume(&self) -> Option<(String, usize)> {
        (!self.raw.resume_checkpoint.is_empty() && self.raw.resume_epoch > 0)
            .then(|| (self.raw.resume_checkpoint.clone(), self.raw.resume_epoch as usize))
    }

    /// Whether the study wants a checkpoint after every epoch.
    pub fn checkpoints(&self) -> bool {
        self.raw.checkpoints
    }

    /// The largest peak device memory an earlier trial of this shape reported (0: none yet).
    pub fn expected_peak_bytes(&self) -> u64 {
        self.raw.expected_peak_bytes
    }

    /// The training run this assignment asks for.
    pub fn trial_config(&self, group_by_length: bool) -> Result<TrialConfig, AssignmentError> {
        convert::trial_config(&self.raw, group_by_length)
    }
}

/// What AcquireTrial gave.
#[derive(Debug)]
pub enum Acquired {
    /// A trial to train.
    Trial(Box<Assignment>),
    /// Nothing to do right now (the long-poll ran out).
    NoWork,
    /// The requested study has ended; why.
    StudyEnded(String),
}

/// The coordinator's answer to a report or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep training (also when the coordinator stayed unreachable for a lease's length:
    /// the final report retries for longer).
    Continue,
    /// Stop: the trial was pruned or its study stopped.
    Stop(String),
    /// Stop: the trial is paused at an ASHA rung; the coordinator resumes it later from the
    /// checkpoint just reported (nothing to fail, release or delete).
    Pause(String),
    /// The lease is gone (expired and requeued elsewhere): abandon the trial.
    LeaseLost(String),
    /// The report itself was refused (e.g. metrics out of bounds).
    Rejected(String),
}

/// How a trial failed, as the worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Another attempt might succeed.
    Retryable,
    /// These parameters can never work here (out of memory, invalid for the task).
    Infeasible,
}

/// A connected coordinator and this worker's registration.
pub struct Coordinator {
    client: Client,
    /// What RegisterWorker sent, to register again under a new id.
    registration: pb::RegisterWorkerRequest,
    /// This worker's id; replaced when the coordinator no longer knows it (a new database).
    worker_id: Mutex<String>,
    /// How often to heartbeat a lease.
    heartbeat_interval: Duration,
}

fn rpc_error(what: &'static str, status: Status) -> RuntimeError {
    match status.code() {
        Code::Unauthenticated => RuntimeError::Refused(status.message().to_string()),
        _ => RuntimeError::Rpc { what, message: status.message().to_string() },
    }
}

impl Coordinator {
    /// Connects (see [`client::connect`]) and registers this worker with its devices,
    /// retrying while the coordinator is unreachable.
    pub async fn register(
        url: &str,
        token: Option<&str>,
        tls: &bertsweep_proto::connect::ClientTls,
        devices: Vec<String>,
    ) -> Result<Self, RuntimeError> {
        let client = client::connect(url, token, tls).await?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let registration = pb::RegisterWorkerRequest { hostname, devices, version: env!("CARGO_PKG_VERSION").into() };
        let registered = register_call(&client, &registration).await?;
        info!(worker = %registered.worker_id, coordinator = %url, devices = ?registration.devices, "registered");
        Ok(Coordinator {
            client,
            heartbeat_interval: Duration::from_millis(registered.heartbeat_interval_ms.max(100) as u64),
            worker_id: Mutex::new(registered.worker_id),
            registration,
        })
    }

    /// Connects without registering: for a slot supervisor, which trains nothing itself and
    /// only fails the leases of slot processes that died mid-trial.
    pub async fn connect_unregistered(
        url: &str,
        token: Option<&str>,
        tls: &bertsweep_proto::connect::ClientTls,
    ) -> Result<Self, RuntimeError> {
        let client = client::connect(url, token, tls).await?;
        Ok(Coordinator {
            client,
            heartbeat_interval: Duration::from_secs(10),
            worker_id: Mutex::new(String::new()),
            registration: pb::RegisterWorkerRequest::default(),
        })
    }

    /// How often leases should be heartbeated.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn worker_id(&self) -> String {
        self.worker_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers again after the coordinator answered NOT_FOUND for `stale_id`. Device slots
    /// share the worker, so only the first to notice registers.
    async fn reregister(&self, stale_id: &str) -> Result<(), RuntimeError> {
        if self.worker_id() != stale_id {
            return Ok(());
        }
        let registered = register_call(&self.client, &self.registration).await?;
        let mut id = self.worker_id.lock().unwrap_or_else(|p| p.into_inner());
        if *id == stale_id {
            warn!(old = %stale_id, new = %registered.worker_id, "the coordinator no longer knew this worker; registered again");
            *id = registered.worker_id;
        }
        Ok(())
    }

    /// Asks for a trial (long-polling up to 20 s), retrying while the coordinator is
    /// unreachable. A NOT_FOUND for this worker's id registers again once and retries; one
    /// right after registering is about the study, and is returned.
    pub async fn acquire(&self, study: Option<&str>, wait: Duration) -> Result<Acquired, RuntimeError> {
        let mut registered_again = false;
        loop {
            let worker_id = self.worker_id();
            let request = pb::AcquireTrialRequest {
                worker_id: worker_id.clone(),
                study: study.unwrap_or_default().into(),
                wait_ms: wait.min(ACQUIRE_WAIT).as_millis().max(1) as u32,
            };
            let acquire = |mut c: Client, r| async move { c.acquire_trial(r).await };
            match client::call(&self.client, "acquire", None, &request, acquire).await {
                Ok(r) => return Ok(acquired(r)),
                Err(s) if s.code() == Code::NotFound && !registered_again => {
                    registered_again = true;
                    self.reregister(&worker_id).await?;
                }
                Err(s) => return Err(rpc_error("AcquireTrial", s)),
            }
        }
    }

    /// Whether `study` has ended (for coordinators that do not say so in AcquireTrial).
    pub async fn study_ended(&self, study: &str) -> Result<bool, RuntimeError> {
        let request = pb::GetStudyRequest { name: study.into() };
        let get_study = |mut c: Client, r| async move { c.get_study(r).await };
        let s = client::call(&self.client, "get study", None, &request, get_study)
            .await
            .map_err(|s| rpc_error("GetStudy", s))?;
        Ok(s.state != pb::StudyState::Running as i32)
    }

    /// Extends the lease, retrying for up to a lease's length.
    pub async fn heartbeat(&self, lease: &Lease) -> Verdict {
        let request = pb::HeartbeatRequest { trial_id: lease.trial_id, lease_token: lease.token };
        let heartbeat = |mut c: Client, r| async move { c.heartbeat(r).await };
        match client::call(&self.client, "heartbeat", Some(lease.ttl), &request, heartbeat).await {
            Ok(r) if r.stop && r.paused => Verdict::Pause(r.reason),
            Ok(r) if r.stop => Verdict::Stop(r.reason),
            Ok(_) => Verdict::Continue,
            Err(s) => verdict_of_error("heartbeat", s),
        }
    }

    /// Reports one epoch's metrics, the checkpoint written after it (empty: none) and the
    /// attempt's peak device memory so far (0: not measured), retrying for up to a lease's
    /// length.
    pub async fn report(
        &self,
        lease: &Lease,
        epoch: usize,
        metrics: &BTreeMap<String, f64>,
        checkpoint: &str,
        peak_device_memory_bytes: u64,
    ) -> Verdict {
        let request = pb::ReportProgressRequest {
            trial_id: lease.trial_id,
            lease_token: lease.token,
            epoch: epoch as u32,
            metrics: convert::metrics_to_proto(metrics),
            checkpoint: checkpoint.to_string(),
            peak_device_memory_bytes,
        };
        let report = |mut c: Client, r| async move { c.report_progress(r).await };
        match client::call(&self.client, "report progress", Some(lease.ttl), &request, report).await {
            Ok(r) if r.decision == pb::Decision::Stop as i32 => Verdict::Stop(r.reason),
            Ok(r) if r.decision == pb::Decision::Pause as i32 => Verdict::Pause(r.reason),
            Ok(_) => Verdict::Continue,
            Err(s) => verdict_of_error("report", s),
        }
    }

    /// Whether the coordinator wants this trial's model (it would be among the study's kept
    /// top K with `value`), and why. An unreachable coordinator is retried for the lease TTL;
    /// a refusal is Err.
    pub async fn offer_artifact(&self, lease: &Lease, value: f64) -> Result<(bool, String), CallError> {
        let request = pb::OfferArtifactRequest { trial_id: lease.trial_id, lease_token: lease.token, value };
        let offer = |mut c: Client, r| async move { c.offer_artifact(r).await };
        let r = client::call(&self.client, "offer artifact", Some(FINAL_REPORT_PATIENCE), &request, offer).await?;
        Ok((r.wanted, r.reason))
    }

    /// Blob uploads and downloads over the same connection (their own retries and resume).
    pub fn remote(&self) -> bertsweep_transfer::remote::Remote {
        let mut remote = bertsweep_transfer::remote::Remote::new(self.client.clone());
        remote.patience = FINAL_REPORT_PATIENCE;
        remote
    }

    /// Completes the trial with its final metrics, exported model path, peak device memory
    /// (0: not measured) and dev/test scores, retrying an unreachable coordinator for up to ten
    /// minutes. Err is the coordinator's refusal ([`CallError::ArtifactMissing`] when a file of
    /// the model has to be uploaded again).
    pub async fn complete(
        &self,
        lease: &Lease,
        metrics: &BTreeMap<String, f64>,
        artifact: Option<String>,
        peak_device_memory_bytes: u64,
        scores: Scores,
    ) -> Result<(), CallError> {
        let request = pb::CompleteTrialRequest {
            trial_id: lease.trial_id,
            lease_token: lease.token,
            metrics: convert::metrics_to_proto(metrics),
            artifact: artifact.unwrap_or_default(),
            peak_device_memory_bytes,
            predictions: scores.predictions,
            test_metrics: convert::metrics_to_proto(&scores.test),
        };
        let complete = |mut c: Client, r| async move { c.complete_trial(r).await };
        client::call(&self.client, "complete", Some(FINAL_REPORT_PATIENCE), &request, complete)
            .await
            .map(drop)
            .map_err(completion_error)
    }

    /// Reports a failed trial, retrying an unreachable coordinator for up to ten minutes.
    pub async fn fail(&self, lease: &Lease, failure: Failure, message: String) -> Result<(), CallError> {
        let kind = match failure {
            Failure::Retryable => pb::FailureKind::Retryable,
            Failure::Infeasible => pb::FailureKind::Infeasible,
        };
        let request = pb::FailTrialRequest {
            trial_id: lease.trial_id,
            lease_token: lease.token,
            error: message,
            kind: kind as i32,
        };
        let fail = |mut c: Client, r| async move { c.fail_trial(r).await };
        Ok(client::call(&self.client, "fail", Some(FINAL_REPORT_PATIENCE), &request, fail).await.map(drop)?)
    }

    /// Hands the trial back (`why`: the worker is shutting down, or it cannot run it now):
    /// requeued at once without using an attempt. One quick try (the lease expires anyway
    /// when the coordinator is unreachable).
    pub async fn release(&self, lease: &Lease, why: &str) -> Result<(), CallError> {
        let request = pb::FailTrialRequest {
            trial_id: lease.trial_id,
            lease_token: lease.token,
            error: why.into(),
            kind: pb::FailureKind::Released as i32,
        };
        let mut c = self.client.clone();
        match tokio::time::timeout(RELEASE_PATIENCE, c.fail_trial(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(s.into()),
            Err(_) => Err(CallError::NoAnswer(RELEASE_PATIENCE)),
        }
    }
}

async fn register_call(
    client: &Client,
    request: &pb::RegisterWorkerRequest,
) -> Result<pb::RegisterWorkerResponse, RuntimeError> {
    let register = |mut c: Client, r| async move { c.register_worker(r).await };
    client::call(client, "register", None, request, register).await.map_err(|s| rpc_error("RegisterWorker", s))
}

fn acquired(response: pb::AcquireTrialResponse) -> Acquired {
    match response.assignment {
        Some(a) => Acquired::Trial(Box::new(Assignment {
            lease: Lease {
                trial_id: a.trial_id,
                token: a.lease_token,
                ttl: Duration::from_millis(a.lease_ttl_ms.max(1000) as u64),
            },
            study: a.study.clone(),
            number: a.number,
            attempt: a.attempt,
            objective: a.task.as_ref().map(|t| t.objective_metric.clone()).unwrap_or_default(),
            raw: a,
        })),
        None if response.study_state != pb::StudyState::Unspecified as i32
            && response.study_state != pb::StudyState::Running as i32 =>
        {
            Acquired::StudyEnded(response.reason)
        }
        None => Acquired::NoWork,
    }
}

/// How a failed report or heartbeat reads: a lost lease, a refused report, or (still
/// unreachable after a lease's length) carry on.
fn verdict_of_error(what: &str, status: Status) -> Verdict {
    match status.code() {
        Code::FailedPrecondition | Code::NotFound => Verdict::LeaseLost(status.message().to_string()),
        Code::InvalidArgument => Verdict::Rejected(status.message().to_string()),
        _ => {
            warn!("{what} failed: {}", status.message());
            Verdict::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_verdicts() {
        assert_eq!(verdict_of_error("r", Status::failed_precondition("stale")), Verdict::LeaseLost("stale".into()));
        assert_eq!(verdict_of_error("r", Status::not_found("gone")), Verdict::LeaseLost("gone".into()));
        assert_eq!(
            verdict_of_error("r", Status::invalid_argument("65 metrics")),
            Verdict::Rejected("65 metrics".into())
        );
        assert_eq!(verdict_of_error("r", Status::unavailable("down")), Verdict::Continue);
    }

    #[test]
    fn refused_completions_become_typed() {
        let missing =
            "artifact blob:sha256:ab: its file \"model.safetensors\" is missing on this coordinator; upload it again";
        assert_eq!(completion_error(Status::failed_precondition(missing)), CallError::ArtifactMissing(missing.into()));
        let stale = completion_error(Status::failed_precondition("stale lease"));
        assert_eq!(stale, CallError::Status { code: Code::FailedPrecondition, message: "stale lease".into() });
        assert_eq!(stale.to_string(), "stale lease", "shown as the coordinator's message");
        assert_eq!(CallError::NoAnswer(RELEASE_PATIENCE).to_string(), "no answer within 5 s");
    }

    #[test]
    fn acquire_answers_become_typed() {
        let ended = pb::AcquireTrialResponse {
            assignment: None,
            study_state: pb::StudyState::Stopped as i32,
            reason: "stopped by user".into(),
        };
        assert!(matches!(acquired(ended), Acquired::StudyEnded(r) if r == "stopped by user"));
        assert!(matches!(acquired(pb::AcquireTrialResponse::default()), Acquired::NoWork));
        let a = pb::Assignment {
            trial_id: 7,
            lease_token: 9,
            lease_ttl_ms: 30_000,
            study: "s".into(),
            number: 3,
            attempt: 2,
            ..Default::default()
        };
        let Acquired::Trial(t) = acquired(pb::AcquireTrialResponse { assignment: Some(a), ..Default::default() })
        else {
            panic!()
        };
        assert_eq!(t.lease, Lease { trial_id: 7, token: 9, ttl: Duration::from_secs(30) });
        assert_eq!((t.label(), t.attempt), ("s/3".to_string(), 2));
    }
}
