//! Coordinator mode: register, then on every device loop acquire → train → report → complete.
//!
//! Training runs on a blocking thread; heartbeats run on the async runtime beside it, so a
//! long epoch never starves them. A lost lease, a stop from the coordinator, or SIGINT/SIGTERM
//! sets an abort flag that training polls between batches. A clean shutdown releases the
//! trial (FailTrial RELEASED) so the coordinator requeues it at once.

pub mod client;
pub mod convert;
mod observer;
pub mod paths;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use tch::Device;
use tokio::sync::watch;
use tonic::{Code, Status};
use tracing::{error, info, warn};

use crate::train::run_trial;
use client::{with_retry, Client};
use observer::{AbortReason, LeaseState, RemoteObserver};

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Coordinator URL.
    pub coordinator: String,
    /// Bearer token for a coordinator started with one.
    pub token: Option<String>,
    /// CA and client certificate for an https:// coordinator.
    pub tls: bertsweep_proto::connect::ClientTls,
    /// One trial at a time per device.
    pub devices: Vec<Device>,
    /// Only take trials of this study, and exit once it has ended.
    pub study: Option<String>,
    /// Stop after this many trials (all devices together).
    pub max_trials: Option<usize>,
    /// Models are exported to `<artifacts>/<study>/<trial number>/`; None exports nothing.
    pub artifacts: Option<PathBuf>,
    /// Batch similar lengths together (less padding, faster).
    pub group_by_length: bool,
    /// Draw progress bars (on a terminal) instead of log lines.
    pub progress: bool,
}

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The coordinator URL or token is unusable.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// Authentication failed (wrong or missing token).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// A call failed for a reason retrying cannot fix.
    #[error("{what} failed: {message}")]
    Rpc {
        /// Which call.
        what: &'static str,
        /// The coordinator's message.
        message: String,
    },
}

fn rpc_error(what: &'static str, status: Status) -> RuntimeError {
    match status.code() {
        Code::Unauthenticated => RuntimeError::Refused(status.message().to_string()),
        _ => RuntimeError::Rpc { what, message: status.message().to_string() },
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Trials this worker took to an end (completed, failed, released or stopped).
    pub trials: usize,
}

/// A device's name as the coordinator shows it.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

struct Context {
    client: Client,
    options: WorkerOptions,
    /// What RegisterWorker sent, to register again under a new id.
    registration: pb::RegisterWorkerRequest,
    /// This worker's id; replaced when the coordinator no longer knows it (a new database).
    worker_id: Mutex<String>,
    heartbeat_interval: Duration,
    taken: AtomicUsize,
    done: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    bars: Option<indicatif::MultiProgress>,
}

/// Runs until `shutdown` turns true, `max_trials` are done, or the `--study` has ended.
pub async fn run(options: WorkerOptions, shutdown: watch::Receiver<bool>) -> Result<Summary, RuntimeError> {
    let client = client::connect(&options.coordinator, options.token.as_deref(), &options.tls).await?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let request = pb::RegisterWorkerRequest {
        hostname,
        devices: options.devices.iter().map(|d| device_name(*d)).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let registered = {
        let mut shutdown = shutdown.clone();
        tokio::select! {
            r = register(&client, &request) => r?,
            _ = shutdown.wait_for(|s| *s) => return Ok(Summary::default()),
        }
    };
    info!(worker = %registered.worker_id, coordinator = %options.coordinator, devices = ?request.devices, "registered");
    let ctx = Arc::new(Context {
        client,
        heartbeat_interval: Duration::from_millis(registered.heartbeat_interval_ms.max(100) as u64),
        worker_id: Mutex::new(registered.worker_id),
        registration: request,
        taken: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        shutdown,
        bars: options.progress.then(indicatif::MultiProgress::new),
        options,
    });
    let slots: Vec<_> = ctx.options.devices.clone().into_iter().map(|d| tokio::spawn(slot_loop(ctx.clone(), d))).collect();
    let mut first_error = None;
    for slot in slots {
        match slot.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(RuntimeError::Rpc { what: "device loop", message: e.to_string() });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Summary { trials: ctx.done.load(Ordering::SeqCst) }),
    }
}

async fn register(client: &Client, request: &pb::RegisterWorkerRequest) -> Result<pb::RegisterWorkerResponse, RuntimeError> {
    let call = || {
        let mut c = client.clone();
        let req = request.clone();
        async move { c.register_worker(req).await }
    };
    Ok(with_retry("register", None, call).await.map_err(|s| rpc_error("RegisterWorker", s))?.into_inner())
}

impl Context {
    fn worker_id(&self) -> String {
        self.worker_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers again after the coordinator answered NOT_FOUND for `stale_id` (it runs on a
    /// new database). Device slots share the worker, so only the first to notice registers.
    async fn reregister(&self, stale_id: &str) -> Result<(), RuntimeError> {
        if self.worker_id() != stale_id {
            return Ok(());
        }
        let registered = register(&self.client, &self.registration).await?;
        let mut id = self.worker_id.lock().unwrap_or_else(|p| p.into_inner());
        if *id == stale_id {
            warn!(old = %stale_id, new = %registered.worker_id, "the coordinator no longer knew this worker; registered again");
            *id = registered.worker_id;
        }
        Ok(())
    }
}

/// Asks for a trial; a NOT_FOUND for this worker's id registers again once and retries (a
/// NOT_FOUND right after registering is about the study, and is returned).
async fn acquire(ctx: &Context, shutdown: &mut watch::Receiver<bool>) -> Option<Result<pb::AcquireTrialResponse, RuntimeError>> {
    let mut registered_again = false;
    loop {
        let worker_id = ctx.worker_id();
        let request = pb::AcquireTrialRequest { worker_id: worker_id.clone(), study: ctx.options.study.clone().unwrap_or_default(), wait_ms: 20_000 };
        let call = || {
            let mut c = ctx.client.clone();
            let req = request.clone();
            async move { c.acquire_trial(req).await }
        };
        let acquired = tokio::select! {
            r = with_retry("acquire", None, call) => r,
            _ = shutdown.wait_for(|s| *s) => return None,
        };
        match acquired {
            Ok(r) => return Some(Ok(r.into_inner())),
            Err(s) if s.code() == Code::NotFound && !registered_again => {
                registered_again = true;
                if let Err(e) = ctx.reregister(&worker_id).await {
                    return Some(Err(e));
                }
            }
            Err(s) => return Some(Err(rpc_error("AcquireTrial", s))),
        }
    }
}

/// One device: acquire and train until told to stop.
async fn slot_loop(ctx: Arc<Context>, device: Device) -> Result<(), RuntimeError> {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Some(max) = ctx.options.max_trials {
            if ctx.taken.fetch_add(1, Ordering::SeqCst) >= max {
                return Ok(());
            }
        }
        let Some(acquired) = acquire(&ctx, &mut shutdown).await else { return Ok(()) };
        let acquired = acquired?;
        let Some(assignment) = acquired.assignment else {
            if ctx.options.max_trials.is_some() {
                ctx.taken.fetch_sub(1, Ordering::SeqCst);
            }
            if acquired.study_state != pb::StudyState::Unspecified as i32 && acquired.study_state != pb::StudyState::Running as i32 {
                let study = ctx.options.study.clone().unwrap_or_default();
                let reason = if acquired.reason.is_empty() { String::new() } else { format!(" ({})", acquired.reason) };
                info!(study = %study, "study has ended{reason}; nothing left to do");
                return Ok(());
            }
            if let Some(study) = &ctx.options.study {
                if study_has_ended(&ctx.client, study).await? {
                    info!(study = %study, "study has ended; nothing left to do");
                    return Ok(());
                }
            }
            continue;
        };
        run_assignment(&ctx, device, assignment).await;
        ctx.done.fetch_add(1, Ordering::SeqCst);
    }
}

async fn study_has_ended(client: &Client, study: &str) -> Result<bool, RuntimeError> {
    let request = pb::GetStudyRequest { name: study.into() };
    let s = with_retry("get study", None, || { let mut c = client.clone(); let req = request.clone(); async move { c.get_study(req).await } })
        .await
        .map_err(|s| rpc_error("GetStudy", s))?
        .into_inner();
    Ok(s.state != pb::StudyState::Running as i32)
}

/// Trains one assignment and reports how it ended. Never fails the worker: every problem
/// becomes a reported trial failure.
async fn run_assignment(ctx: &Arc<Context>, device: Device, a: pb::Assignment) {
    let label = format!("{}/{}", a.study, a.number);
    info!(trial = %label, attempt = a.attempt, device = %device_name(device), "starting: {}", convert::describe_params(&a));
    let cfg = match convert::trial_config(&a, ctx.options.group_by_length) {
        Ok(cfg) => cfg,
        Err(e) => return fail(ctx, &a, pb::FailureKind::Infeasible, e.to_string()).await,
    };
    let export_dir = match ctx.options.artifacts.as_ref().map(|dir| paths::join_inside(dir, &[&a.study, &a.number.to_string()])) {
        None => None,
        Some(Ok(dir)) => Some(dir),
        Some(Err(e)) => return fail(ctx, &a, pb::FailureKind::Infeasible, e.to_string()).await,
    };
    let lease = Arc::new(LeaseState::default());
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone(), a.clone(), lease.clone()));

    let observer = RemoteObserver::new(
        tokio::runtime::Handle::current(),
        ctx.client.clone(),
        &a,
        lease.clone(),
        ctx.bars.as_ref(),
        cfg.num_train_epochs,
    );
    let trained = tokio::task::spawn_blocking(move || {
        let mut observer = observer;
        let result = run_trial(&cfg, device, &mut observer, export_dir.as_deref());
        observer.finish();
        result
    })
    .await;
    heartbeat.abort();

    // A trial that trained to the end is reported even if a shutdown arrived meanwhile.
    let finished = matches!(&trained, Ok(Ok(o)) if !o.aborted && !o.stopped_early && o.epochs_run > 0);
    let reason = lease.reason().filter(|r| !(finished && *r == AbortReason::Shutdown));
    match (trained, reason) {
        (_, Some(AbortReason::Shutdown)) => {
            info!(trial = %label, "released: the worker is shutting down");
            release(ctx, &a).await;
        }
        (_, Some(AbortReason::LeaseLost(why))) => warn!(trial = %label, "abandoned: {why}"),
        (_, Some(AbortReason::Stopped(why))) => info!(trial = %label, "stopped by the coordinator: {why}"),
        // The coordinator refusing a report says nothing about the parameters: never infeasible.
        (_, Some(AbortReason::Rejected(why))) => fail(ctx, &a, pb::FailureKind::Retryable, why).await,
        (Err(join), None) => fail(ctx, &a, pb::FailureKind::Retryable, format!("training thread panicked: {join}")).await,
        (Ok(Err(e)), None) => {
            let kind = if e.is_infeasible() { pb::FailureKind::Infeasible } else { pb::FailureKind::Retryable };
            fail(ctx, &a, kind, format!("{e:#}")).await;
        }
        (Ok(Ok(outcome)), None) if outcome.epochs_run == 0 => {
            fail(ctx, &a, pb::FailureKind::Retryable, "no epoch completed".into()).await;
        }
        (Ok(Ok(outcome)), None) => {
            let request = pb::CompleteTrialRequest {
                trial_id: a.trial_id,
                lease_token: a.lease_token,
                metrics: convert::metrics_to_proto(&outcome.best_metrics),
                artifact: outcome.artifact.map(|p| std::path::absolute(&p).unwrap_or(p).display().to_string()).unwrap_or_default(),
            };
            let result = with_retry("complete", Some(Duration::from_secs(600)), || {
                let mut c = ctx.client.clone();
                let req = request.clone();
                async move { c.complete_trial(req).await }
            })
            .await;
            let objective = a.task.as_ref().map(|t| t.objective_metric.clone()).unwrap_or_default();
            match result {
                Ok(_) => info!(
                    trial = %label,
                    "completed: best epoch {} {objective} = {:.4}",
                    outcome.best_epoch,
                    outcome.best_metrics.get(&objective).copied().unwrap_or(f64::NAN)
                ),
                Err(s) => error!(trial = %label, "could not report completion: {}", s.message()),
            }
        }
    }
}

async fn fail(ctx: &Context, a: &pb::Assignment, kind: pb::FailureKind, message: String) {
    warn!(trial = %format!("{}/{}", a.study, a.number), kind = ?kind, "failed: {message}");
    let request = pb::FailTrialRequest { trial_id: a.trial_id, lease_token: a.lease_token, error: message, kind: kind as i32 };
    let result = with_retry("fail", Some(Duration::from_secs(600)), || {
        let mut c = ctx.client.clone();
        let req = request.clone();
        async move { c.fail_trial(req).await }
    })
    .await;
    if let Err(s) = result {
        error!("could not report the failure: {}", s.message());
    }
}

async fn release(ctx: &Context, a: &pb::Assignment) {
    let request = pb::FailTrialRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        error: "worker shut down".into(),
        kind: pb::FailureKind::Released as i32,
    };
    let mut c = ctx.client.clone();
    // Best effort and quick: the lease expires anyway if the coordinator is unreachable.
    if let Err(s) = tokio::time::timeout(Duration::from_secs(5), c.fail_trial(request)).await.unwrap_or_else(|_| Err(Status::deadline_exceeded("timeout"))) {
        warn!("could not release the trial: {}", s.message());
    }
}

/// Keeps the lease alive; flags an abort when the coordinator says stop, the lease is lost, or
/// the worker is shutting down.
async fn heartbeat_loop(ctx: Arc<Context>, a: pb::Assignment, lease: Arc<LeaseState>) {
    let mut shutdown = ctx.shutdown.clone();
    let request = pb::HeartbeatRequest { trial_id: a.trial_id, lease_token: a.lease_token };
    let ttl = Duration::from_millis(a.lease_ttl_ms.max(1000) as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.heartbeat_interval) => {}
            _ = shutdown.wait_for(|s| *s) => {
                lease.abort(AbortReason::Shutdown);
                return;
            }
        }
        let result = with_retry("heartbeat", Some(ttl), || {
            let mut c = ctx.client.clone();
            let req = request.clone();
            async move { c.heartbeat(req).await }
        })
        .await;
        match result {
            Ok(r) if r.get_ref().stop => {
                lease.abort(AbortReason::Stopped(r.into_inner().reason));
                return;
            }
            Ok(_) => {}
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                lease.abort(AbortReason::LeaseLost(s.message().to_string()));
                return;
            }
            Err(s) => warn!("heartbeat failed: {}", s.message()),
        }
    }
}
