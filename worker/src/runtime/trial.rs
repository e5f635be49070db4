//! One assignment from acquisition to its report: the slot's admission, the study's inputs
//! made local, the export and checkpoint places, heartbeats beside a training thread, and
//! how the trial ended told to the coordinator (complete, fail, release).

use std::path::PathBuf;
use std::sync::Arc;

use tch::Device;
use tracing::{error, info, warn};

use super::checkpoint_store::{fetch_resume, CheckpointStore};
use super::coordinator::{Assignment, CallError, Failure, Scores, Verdict};
use super::observer::{AbortReason, LeaseState, RemoteObserver};
use super::publish::{publish, remove_staging};
use super::{convert, device_name, paths, telemetry, ArtifactSink, Context};
use crate::train::{run_trial, TrainError, TrialConfig, TrialOutcome};

/// How long a slot whose trial was not admitted waits for memory to be freed on its device
/// before it asks for a trial again.
const DEFER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What became of an assignment.
pub(super) enum Ran {
    /// It was trained, or failed, or was released: the worker dealt with it.
    Trained,
    /// The supervisor did not admit it (not enough free device memory): handed back.
    Deferred,
    /// The supervisor said the worker has started `--max-trials`: handed back; exit.
    Stop,
}

/// In a slot process, asks the supervisor whether the trial may start now; hands it back when
/// it may not. `None`: go ahead.
async fn admission(ctx: &Context, a: &Assignment, cfg: &TrialConfig) -> Option<Ran> {
    use crate::slots::{estimate, link::Decision};
    let link = ctx.options.slot.as_ref()?;
    let shape = estimate::shape(cfg.per_device_train_batch_size, cfg.max_seq_length);
    let expected = match a.expected_peak_bytes() {
        0 => crate::config::BertConfig::from_dir(&cfg.model_dir)
            .map(|c| estimate::peak_bytes(&c, cfg.per_device_train_batch_size, cfg.max_seq_length, 2))
            .unwrap_or(u64::MAX / 4),
        measured => measured,
    };
    let decision = link.admit(a.lease.trial_id, a.lease.token, &a.label(), &shape, expected).await;
    let (why, ran) = match decision {
        Decision::Admit => return None,
        Decision::Defer(why) => {
            (format!("not enough free device memory beside the trials running there: {why}"), Ran::Deferred)
        }
        Decision::Stop => ("the worker has started --max-trials trials".to_string(), Ran::Stop),
    };
    info!(trial = %a.label(), "handed back: {why}");
    if let Err(e) = ctx.coordinator.release(&a.lease, &why).await {
        warn!("could not hand the trial back: {e}");
    }
    if let Ran::Deferred = ran {
        link.defer_and_wait(DEFER_PATIENCE).await;
    }
    Some(ran)
}

/// Trains one assignment and reports how it ended. Never fails the worker: every problem
/// becomes a reported trial failure.
pub(super) async fn run_assignment(ctx: &Arc<Context>, device: Device, a: Assignment) -> Ran {
    run_admitted(ctx, device, a).await.unwrap_or(Ran::Trained)
}

/// [`run_assignment`]; `Some` when the supervisor did not admit the trial.
async fn run_admitted(ctx: &Arc<Context>, device: Device, a: Assignment) -> Option<Ran> {
    let label = a.label();
    info!(trial = %label, attempt = a.attempt, device = %device_name(device), "starting: {}", a.describe_params());
    // The study name becomes part of cache, staging and artifact paths: one plain name only.
    if !paths::is_study_name(&a.study) {
        let shown: String = a.study.chars().take(64).collect();
        let why = format!("the coordinator sent the study name {shown:?}, which is not a plain study name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}); refusing to build paths from it");
        fail(ctx, &a, Failure::Infeasible, why).await;
        return None;
    }
    let cfg = match a.trial_config(ctx.options.group_by_length) {
        Ok(cfg) => cfg,
        Err(e) => {
            fail(ctx, &a, Failure::Infeasible, e.to_string()).await;
            return None;
        }
    };
    let lease = Arc::new(LeaseState::default());
    // Heartbeats run from before the inputs download until the trial is reported.
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(ctx.clone(), a.clone(), lease.clone())));
    // The leases keep this trial's inputs in the cache until the trial ends.
    let (cfg, _input_leases) = match ctx.inputs.resolve_trial(&ctx.coordinator.remote(), cfg).await {
        Ok(resolved) => resolved,
        Err(e) => {
            let kind = if e.is_retryable() { Failure::Retryable } else { Failure::Infeasible };
            fail(ctx, &a, kind, e.to_string()).await;
            return None;
        }
    };
    let export_dir = match &ctx.options.artifacts {
        ArtifactSink::None => None,
        ArtifactSink::Local(dir) => match paths::join_inside(dir, &[&a.study, &a.number.to_string()]) {
            Ok(dir) => Some(dir),
            Err(e) => {
                fail(ctx, &a, Failure::Infeasible, e.to_string()).await;
                return None;
            }
        },
        ArtifactSink::Coordinator | ArtifactSink::Object(_) => {
            Some(ctx.inputs.staging_dir(&format!("{}-{}-{}", a.study, a.number, a.lease.token)))
        }
    };
    let staged = export_dir.clone().filter(|_| !matches!(ctx.options.artifacts, ArtifactSink::Local(_)));

    // Checkpoints go where models go, when that store is shared and the study wants them.
    let store =
        CheckpointStore::for_sink(&ctx.options.artifacts, ctx.options.local_checkpoints, ctx.coordinator.remote())
            .filter(|_| a.checkpoints());
    let checkpoint_staging = ctx.inputs.staging_dir(&format!("{}-{}-{}-checkpoints", a.study, a.number, a.lease.token));
    let resume = fetch_resume(store.as_ref(), &a, &checkpoint_staging).await;
    let mut observer = RemoteObserver::new(
        tokio::runtime::Handle::current(),
        ctx.clone(),
        &a,
        lease.clone(),
        cfg.num_train_epochs,
        device,
    );
    if let Some(store) = store.clone() {
        observer = observer.with_checkpoints(store, checkpoint_staging.clone(), resume);
    }
    let _staging_cleanup = RemoveOnDrop(checkpoint_staging);
    if let Some(ran) = admission(ctx, &a, &cfg).await {
        return Some(ran);
    }
    crate::device_memory::reset_peak(device);
    let trained = tokio::task::spawn_blocking(move || {
        let mut observer = observer;
        let result = run_trial(&cfg, device, &mut observer, export_dir.as_deref());
        observer.finish();
        result
    })
    .await;

    crate::device_memory::release_cached(device);
    let out_of_memory = matches!(&trained, Ok(Err(e)) if e.is_out_of_memory());
    // Out of memory beside other trials may be their doing: hand it back, not infeasible.
    let shared_oom = match &ctx.options.slot {
        Some(link) => link.ended(out_of_memory).await && out_of_memory,
        None => false,
    };
    // Whether the trial ended for good (its checkpoint is then of no use to anyone).
    let ended = report(ctx, &a, device, trained, &lease, shared_oom, staged).await;
    if ended {
        if let Some(store) = store {
            store.discard_trial(&a).await;
        }
    }
    None
}

/// Tells the coordinator how the trial ended (released, abandoned, paused, stopped, failed or
/// completed); true when it ended for good.
async fn report(
    ctx: &Context,
    a: &Assignment,
    device: Device,
    trained: Result<Result<TrialOutcome, TrainError>, tokio::task::JoinError>,
    lease: &LeaseState,
    shared_oom: bool,
    staged: Option<PathBuf>,
) -> bool {
    // A trial that trained to the end is reported even if a shutdown arrived meanwhile.
    let finished = matches!(&trained, Ok(Ok(o)) if !o.aborted && !o.stopped_early && o.epochs_run > 0);
    let reason = lease.reason().filter(|r| !(finished && *r == AbortReason::Shutdown));
    match (trained, reason) {
        (_, Some(AbortReason::Shutdown)) => {
            info!(trial = %a.label(), "released: the worker is shutting down");
            telemetry::trial_ended("released");
            if let Err(why) = ctx.coordinator.release(&a.lease, "worker shut down").await {
                warn!("could not release the trial: {why}");
            }
            false
        }
        (_, Some(AbortReason::LeaseLost(why))) => {
            telemetry::trial_ended("abandoned");
            warn!(trial = %a.label(), "abandoned: {why}");
            false
        }
        (_, Some(AbortReason::Paused(why))) => {
            telemetry::trial_ended("paused");
            info!(trial = %a.label(), "paused by the coordinator ({why}); it resumes from its checkpoint when promoted");
            false
        }
        (_, Some(AbortReason::Stopped(why))) => {
            telemetry::trial_ended("stopped");
            info!(trial = %a.label(), "stopped by the coordinator: {why}");
            true
        }
        // The coordinator refusing a report says nothing about the parameters: never infeasible.
        (_, Some(AbortReason::Rejected(why))) => {
            fail(ctx, a, Failure::Retryable, why).await;
            false
        }
        (Err(join), None) => {
            fail(ctx, a, Failure::Retryable, format!("training thread panicked: {join}")).await;
            false
        }
        (Ok(Err(e)), None) if shared_oom => {
            let why = format!(
                "ran out of device memory beside other trials ({e:#}); handed back to run with fewer neighbours"
            );
            warn!(trial = %a.label(), "{why}");
            telemetry::trial_ended("released");
            if let Err(e) = ctx.coordinator.release(&a.lease, &why).await {
                warn!("could not hand the trial back: {e}");
            }
            false
        }
        (Ok(Err(e)), None) => {
            let kind = if e.is_infeasible() { Failure::Infeasible } else { Failure::Retryable };
            fail(ctx, a, kind, format!("{e:#}")).await;
            e.is_infeasible()
        }
        (Ok(Ok(outcome)), None) if outcome.epochs_run == 0 => {
            fail(ctx, a, Failure::Retryable, "no epoch completed".into()).await;
            false
        }
        (Ok(Ok(outcome)), None) => complete(ctx, a, device, &outcome, staged).await,
    }
}

/// Publishes the trained model and completes the trial with it; true when the coordinator
/// took the completion.
async fn complete(
    ctx: &Context,
    a: &Assignment,
    device: Device,
    outcome: &TrialOutcome,
    staged: Option<PathBuf>,
) -> bool {
    let value = outcome.best_metrics.get(&a.objective).copied().unwrap_or(f64::NAN);
    let artifact = match publish(ctx, a, outcome.artifact.clone(), value).await {
        Ok(artifact) => artifact,
        Err(why) => {
            remove_staging(staged);
            fail(ctx, a, Failure::Retryable, why.to_string()).await;
            return false;
        }
    };
    let peak = crate::device_memory::peak_bytes(device).unwrap_or(0);
    let scores = Scores { predictions: convert::predictions_to_proto(outcome), test: outcome.test_metrics.clone() };
    let mut completed =
        ctx.coordinator.complete(&a.lease, &outcome.best_metrics, artifact.clone(), peak, scores.clone()).await;
    // A blob shared with a model another completion just pushed out can vanish between
    // upload and completion: send what is missing once more.
    if matches!(&completed, Err(CallError::ArtifactMissing(_))) {
        if let Ok(again) = publish(ctx, a, outcome.artifact.clone(), value).await {
            completed = ctx.coordinator.complete(&a.lease, &outcome.best_metrics, again, peak, scores).await;
        }
    }
    remove_staging(staged);
    match completed {
        Ok(()) => {
            telemetry::trial_ended("completed");
            info!(
                trial = %a.label(),
                "completed: best epoch {} {} = {:.4}",
                outcome.best_epoch,
                a.objective,
                outcome.best_metrics.get(&a.objective).copied().unwrap_or(f64::NAN)
            );
            true
        }
        Err(why) => {
            error!(trial = %a.label(), "could not report completion: {why}");
            false
        }
    }
}

/// Removes a directory when dropped (whichever way the function returns).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Aborts a task when dropped (whichever way the function returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports `a` failed (logged, and counted in the worker's metrics).
async fn fail(ctx: &Context, a: &Assignment, failure: Failure, message: String) {
    warn!(trial = %a.label(), kind = ?failure, "failed: {message}");
    telemetry::trial_ended(if matches!(failure, Failure::Infeasible) { "infeasible" } else { "failed" });
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
            Verdict::Pause(why) => return lease.abort(AbortReason::Paused(why)),
            Verdict::LeaseLost(why) | Verdict::Rejected(why) => return lease.abort(AbortReason::LeaseLost(why)),
        }
    }
}
