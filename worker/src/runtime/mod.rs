//! Coordinator mode: register, then on every device loop acquire → train → report → complete.
//!
//! Training runs on a blocking thread; heartbeats run on the async runtime beside it, so a
//! long epoch never starves them. A lost lease, a stop from the coordinator, or SIGINT/SIGTERM
//! sets an abort flag that training polls between batches. A clean shutdown releases the
//! trial (FailTrial RELEASED) so the coordinator requeues it at once.
//!
//! All talk with the coordinator goes through [`coordinator::Coordinator`], the typed client
//! that owns retries, backoff and status classification; `client` (connection and the retry
//! policy) and `convert` (the only protobuf ↔ worker-type mapping) sit behind it.

mod client;
mod convert;
pub mod coordinator;
mod observer;
pub mod paths;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tch::Device;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::train::run_trial;
use coordinator::{Acquired, Assignment, Coordinator, Failure, Verdict};
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
    coordinator: Coordinator,
    options: WorkerOptions,
    taken: AtomicUsize,
    done: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    bars: Option<indicatif::MultiProgress>,
}

/// Runs until `shutdown` turns true, `max_trials` are done, or the `--study` has ended.
pub async fn run(options: WorkerOptions, shutdown: watch::Receiver<bool>) -> Result<Summary, RuntimeError> {
    let devices = options.devices.iter().map(|d| device_name(*d)).collect();
    let coordinator = {
        let mut shutdown = shutdown.clone();
        tokio::select! {
            c = Coordinator::register(&options.coordinator, options.token.as_deref(), &options.tls, devices) => c?,
            _ = shutdown.wait_for(|s| *s) => return Ok(Summary::default()),
        }
    };
    let ctx = Arc::new(Context {
        coordinator,
        taken: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        shutdown,
        bars: options.progress.then(indicatif::MultiProgress::new),
        options,
    });
    let slots: Vec<_> =
        ctx.options.devices.clone().into_iter().map(|d| tokio::spawn(slot_loop(ctx.clone(), d))).collect();
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

/// One device: acquire and train until told to stop.
async fn slot_loop(ctx: Arc<Context>, device: Device) -> Result<(), RuntimeError> {
    let mut shutdown = ctx.shutdown.clone();
    let study = ctx.options.study.as_deref();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Some(max) = ctx.options.max_trials {
            if ctx.taken.fetch_add(1, Ordering::SeqCst) >= max {
                return Ok(());
            }
        }
        let acquired = tokio::select! {
            a = ctx.coordinator.acquire(study) => a?,
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        };
        let assignment = match acquired {
            Acquired::Trial(a) => a,
            Acquired::StudyEnded(reason) => {
                let reason = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
                info!(study = %study.unwrap_or_default(), "study has ended{reason}; nothing left to do");
                return Ok(());
            }
            Acquired::NoWork => {
                if ctx.options.max_trials.is_some() {
                    ctx.taken.fetch_sub(1, Ordering::SeqCst);
                }
                if let Some(study) = study {
                    if ctx.coordinator.study_ended(study).await? {
                        info!(study = %study, "study has ended; nothing left to do");
                        return Ok(());
                    }
                }
                continue;
            }
        };
        run_assignment(&ctx, device, *assignment).await;
        ctx.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// Trains one assignment and reports how it ended. Never fails the worker: every problem
/// becomes a reported trial failure.
async fn run_assignment(ctx: &Arc<Context>, device: Device, a: Assignment) {
    let label = a.label();
    info!(trial = %label, attempt = a.attempt, device = %device_name(device), "starting: {}", a.describe_params());
    let cfg = match a.trial_config(ctx.options.group_by_length) {
        Ok(cfg) => cfg,
        Err(e) => return fail(ctx, &a, Failure::Infeasible, e.to_string()).await,
    };
    let export_dir =
        match ctx.options.artifacts.as_ref().map(|dir| paths::join_inside(dir, &[&a.study, &a.number.to_string()])) {
            None => None,
            Some(Ok(dir)) => Some(dir),
            Some(Err(e)) => return fail(ctx, &a, Failure::Infeasible, e.to_string()).await,
        };
    let lease = Arc::new(LeaseState::default());
    let heartbeat = tokio::spawn(heartbeat_loop(ctx.clone(), a.clone(), lease.clone()));

    let observer =
        RemoteObserver::new(tokio::runtime::Handle::current(), ctx.clone(), &a, lease.clone(), cfg.num_train_epochs);
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
            if let Err(why) = ctx.coordinator.release(&a.lease).await {
                warn!("could not release the trial: {why}");
            }
        }
        (_, Some(AbortReason::LeaseLost(why))) => warn!(trial = %label, "abandoned: {why}"),
        (_, Some(AbortReason::Stopped(why))) => info!(trial = %label, "stopped by the coordinator: {why}"),
        // The coordinator refusing a report says nothing about the parameters: never infeasible.
        (_, Some(AbortReason::Rejected(why))) => fail(ctx, &a, Failure::Retryable, why).await,
        (Err(join), None) => fail(ctx, &a, Failure::Retryable, format!("training thread panicked: {join}")).await,
        (Ok(Err(e)), None) => {
            let kind = if e.is_infeasible() { Failure::Infeasible } else { Failure::Retryable };
            fail(ctx, &a, kind, format!("{e:#}")).await;
        }
        (Ok(Ok(outcome)), None) if outcome.epochs_run == 0 => {
            fail(ctx, &a, Failure::Retryable, "no epoch completed".into()).await;
        }
        (Ok(Ok(outcome)), None) => {
            let artifact = outcome.artifact.map(|p| std::path::absolute(&p).unwrap_or(p).display().to_string());
            match ctx.coordinator.complete(&a.lease, &outcome.best_metrics, artifact).await {
                Ok(()) => info!(
                    trial = %label,
                    "completed: best epoch {} {} = {:.4}",
                    outcome.best_epoch,
                    a.objective,
                    outcome.best_metrics.get(&a.objective).copied().unwrap_or(f64::NAN)
                ),
                Err(why) => error!(trial = %label, "could not report completion: {why}"),
            }
        }
    }
}

async fn fail(ctx: &Context, a: &Assignment, failure: Failure, message: String) {
    warn!(trial = %a.label(), kind = ?failure, "failed: {message}");
    if let Err(why) = ctx.coordinator.fail(&a.lease, failure, message).await {
        error!("could not report the failure: {why}");
    }
}

/// Keeps the lease alive; flags an abort when the coordinator says stop, the lease is lost, or
/// the worker is shutting down.
async fn heartbeat_loop(ctx: Arc<Context>, a: Assignment, lease: Arc<LeaseState>) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.coordinator.heartbeat_interval()) => {}
            _ = shutdown.wait_for(|s| *s) => {
                lease.abort(AbortReason::Shutdown);
                return;
            }
        }
        match ctx.coordinator.heartbeat(&a.lease).await {
            Verdict::Continue => {}
            Verdict::Stop(why) => return lease.abort(AbortReason::Stopped(why)),
            Verdict::LeaseLost(why) | Verdict::Rejected(why) => return lease.abort(AbortReason::LeaseLost(why)),
        }
    }
}
