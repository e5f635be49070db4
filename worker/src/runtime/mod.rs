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

pub mod cache_prune;
mod checkpoints;
mod client;
mod convert;
pub mod coordinator;
pub mod inputs;
mod observer;
pub mod paths;
pub mod telemetry;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tch::Device;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::train::run_trial;
use coordinator::{Acquired, Assignment, Coordinator, Failure, Scores, Verdict};
use observer::{AbortReason, LeaseState, RemoteObserver};

/// Exit status of a worker stopped by SIGTERM/SIGINT (or, in a slot, by its supervisor) before
/// its work was done, its trial handed back: `EX_TEMPFAIL` from sysexits.h, "try again later".
/// Kubernetes' podFailurePolicy and the Slurm script start it again without counting a
/// failure; 0 means "done, do not restart".
pub const EXIT_RELEASED: u8 = 75;

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Coordinator URL.
    pub coordinator: String,
    /// `--exit-when-idle`: a device loop that got no trial for this long ends (exit 0), so
    /// that autoscaled workers give their GPU back when the study has nothing for them.
    pub exit_when_idle: Option<std::time::Duration>,
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
    /// Where exported models go.
    pub artifacts: ArtifactSink,
    /// The input cache (downloaded study inputs, models waiting to be uploaded).
    pub cache_dir: PathBuf,
    /// Most bytes of downloaded inputs the cache keeps (`--cache-max-size`); `None`: no limit.
    pub cache_max_bytes: Option<u64>,
    /// Batch similar lengths together (less padding, faster).
    pub group_by_length: bool,
    /// With `ArtifactSink::Local`: write checkpoints there too (`--local-checkpoints`).
    pub local_checkpoints: bool,
    /// Draw progress bars (on a terminal) instead of log lines.
    pub progress: bool,
    /// In a slot process (`--slots`): the link to the supervisor, which admits each trial and
    /// counts `--max-trials` for all slots.
    pub slot: Option<Arc<crate::slots::link::SlotLink>>,
}

/// Where a trial's exported model goes (`--artifacts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSink {
    /// Uploaded to the coordinator while the trial is among its study's kept top K (default).
    Coordinator,
    /// `<dir>/<study>/<trial number>/` on this machine, every trial (`--artifacts DIR`).
    Local(PathBuf),
    /// `<url>/<study>/<trial number>/` in object storage, while among the kept top K
    /// (`--artifacts s3://…|gs://…|az://…`).
    Object(String),
    /// Nothing is exported (`--no-export`).
    None,
}

impl ArtifactSink {
    /// Parses `--artifacts`: a URL of object storage, or a local directory.
    pub fn parse(text: &str) -> Self {
        if bertsweep_transfer::object::is_object_url(text) {
            ArtifactSink::Object(text.trim_end_matches('/').to_string())
        } else {
            ArtifactSink::Local(PathBuf::from(text))
        }
    }
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
    inputs: inputs::Inputs,
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
    let inputs = inputs::Inputs::open(&options.cache_dir, crate::hub::HubEnv::from_env())
        .map(|i| i.with_size_limit(options.cache_max_bytes))
        .map_err(|e| RuntimeError::Rpc {
            what: "opening --cache-dir",
            message: format!("{}: {e}", options.cache_dir.display()),
        })?;
    let ctx = Arc::new(Context {
        coordinator,
        inputs,
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
    // Since the last trial ended (or the start): what --exit-when-idle measures.
    let mut idle_since = std::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if let Some(max) = ctx.options.max_trials {
            if ctx.taken.fetch_add(1, Ordering::SeqCst) >= max {
                return Ok(());
            }
        }
        // Long-poll, but no longer than --exit-when-idle has left to run.
        let wait = match ctx.options.exit_when_idle {
            Some(limit) => limit.saturating_sub(idle_since.elapsed()).max(std::time::Duration::from_millis(100)),
            None => coordinator::ACQUIRE_WAIT,
        };
        let acquired = tokio::select! {
            a = ctx.coordinator.acquire(study, wait) => a?,
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
                if let Some(limit) = ctx.options.exit_when_idle {
                    if idle_since.elapsed() >= limit {
                        info!(device = %device_name(device), "no trial for {limit:?}: exiting (--exit-when-idle)");
                        return Ok(());
                    }
                }
                continue;
            }
        };
        match run_assignment(&ctx, device, *assignment).await {
            Ran::Trained => {
                ctx.done.fetch_add(1, Ordering::SeqCst);
            }
            Ran::Deferred => {}
            Ran::Stop => return Ok(()),
        }
        idle_since = std::time::Instant::now();
    }
}

/// How long a slot whose trial was not admitted waits for memory to be freed on its device
/// before it asks for a trial again.
const DEFER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// What became of an assignment.
enum Ran {
    /// It was trained, or failed, or was released: the worker dealt with it.
    Trained,
    /// The supervisor did not admit it (not enough free device memory): handed back.
    Deferred,
    /// The supervisor said the worker has started `--max-trials`: handed back; exit.
    Stop,
}

/// In a slot process, asks the supervisor whether the trial may start now; hands it back when
/// it may not. `None`: go ahead.
async fn admission(ctx: &Context, a: &Assignment, cfg: &crate::train::TrialConfig) -> Option<Ran> {
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
async fn run_assignment(ctx: &Arc<Context>, device: Device, a: Assignment) -> Ran {
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
    let (cfg, _input_leases) = match resolve_inputs(ctx, cfg).await {
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
    let store = checkpoints::CheckpointStore::for_sink(
        &ctx.options.artifacts,
        ctx.options.local_checkpoints,
        ctx.coordinator.remote(),
    )
    .filter(|_| a.checkpoints());
    let checkpoint_staging = ctx.inputs.staging_dir(&format!("{}-{}-{}-checkpoints", a.study, a.number, a.lease.token));
    let resume = checkpoints::fetch_resume(store.as_ref(), &a, &checkpoint_staging).await;
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
    // Whether the trial ended for good (its checkpoint is then of no use to anyone).
    let mut ended = false;
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
    // A trial that trained to the end is reported even if a shutdown arrived meanwhile.
    let finished = matches!(&trained, Ok(Ok(o)) if !o.aborted && !o.stopped_early && o.epochs_run > 0);
    let reason = lease.reason().filter(|r| !(finished && *r == AbortReason::Shutdown));
    match (trained, reason) {
        (_, Some(AbortReason::Shutdown)) => {
            info!(trial = %label, "released: the worker is shutting down");
            telemetry::trial_ended("released");
            if let Err(why) = ctx.coordinator.release(&a.lease, "worker shut down").await {
                warn!("could not release the trial: {why}");
            }
        }
        (_, Some(AbortReason::LeaseLost(why))) => {
            telemetry::trial_ended("abandoned");
            warn!(trial = %label, "abandoned: {why}")
        }
        (_, Some(AbortReason::Paused(why))) => {
            telemetry::trial_ended("paused");
            info!(trial = %label, "paused by the coordinator ({why}); it resumes from its checkpoint when promoted")
        }
        (_, Some(AbortReason::Stopped(why))) => {
            ended = true;
            telemetry::trial_ended("stopped");
            info!(trial = %label, "stopped by the coordinator: {why}")
        }
        // The coordinator refusing a report says nothing about the parameters: never infeasible.
        (_, Some(AbortReason::Rejected(why))) => fail(ctx, &a, Failure::Retryable, why).await,
        (Err(join), None) => fail(ctx, &a, Failure::Retryable, format!("training thread panicked: {join}")).await,
        (Ok(Err(e)), None) if shared_oom => {
            let why = format!(
                "ran out of device memory beside other trials ({e:#}); handed back to run with fewer neighbours"
            );
            warn!(trial = %label, "{why}");
            telemetry::trial_ended("released");
            if let Err(e) = ctx.coordinator.release(&a.lease, &why).await {
                warn!("could not hand the trial back: {e}");
            }
        }
        (Ok(Err(e)), None) => {
            ended = e.is_infeasible();
            let kind = if e.is_infeasible() { Failure::Infeasible } else { Failure::Retryable };
            fail(ctx, &a, kind, format!("{e:#}")).await;
        }
        (Ok(Ok(outcome)), None) if outcome.epochs_run == 0 => {
            fail(ctx, &a, Failure::Retryable, "no epoch completed".into()).await;
        }
        (Ok(Ok(outcome)), None) => {
            let value = outcome.best_metrics.get(&a.objective).copied().unwrap_or(f64::NAN);
            let artifact = match publish(ctx, &a, outcome.artifact.clone(), value).await {
                Ok(artifact) => artifact,
                Err(why) => {
                    remove_staging(staged);
                    fail(ctx, &a, Failure::Retryable, why).await;
                    return None;
                }
            };
            let peak = crate::device_memory::peak_bytes(device).unwrap_or(0);
            let scores =
                Scores { predictions: convert::predictions_to_proto(&outcome), test: outcome.test_metrics.clone() };
            let mut completed =
                ctx.coordinator.complete(&a.lease, &outcome.best_metrics, artifact.clone(), peak, scores.clone()).await;
            // A blob shared with a model another completion just pushed out can vanish between
            // upload and completion: send what is missing once more.
            if matches!(&completed, Err(why) if why.contains("missing on this coordinator")) {
                if let Ok(again) = publish(ctx, &a, outcome.artifact.clone(), value).await {
                    completed = ctx.coordinator.complete(&a.lease, &outcome.best_metrics, again, peak, scores).await;
                }
            }
            remove_staging(staged);
            match completed {
                Ok(()) => {
                    ended = true;
                    telemetry::trial_ended("completed");
                    info!(
                        trial = %label,
                        "completed: best epoch {} {} = {:.4}",
                        outcome.best_epoch,
                        a.objective,
                        outcome.best_metrics.get(&a.objective).copied().unwrap_or(f64::NAN)
                    )
                }
                Err(why) => error!(trial = %label, "could not report completion: {why}"),
            }
        }
    }
    if ended {
        if let Some(store) = store {
            store.discard_trial(&a).await;
        }
    }
    None
}

/// Removes a directory when dropped (whichever way the function returns).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the study's inputs local: downloads `blob:` inputs into the cache, resolves `hf:`
/// models; paths stay as they are. Returns the inputs' cache leases with the config, then
/// brings the cache back under its size limit (this trial's inputs are spared).
async fn resolve_inputs(
    ctx: &Context,
    mut cfg: crate::train::TrialConfig,
) -> Result<(crate::train::TrialConfig, Vec<inputs::Resolved>), inputs::InputError> {
    let remote = ctx.coordinator.remote();
    let text = |p: &PathBuf| p.to_string_lossy().into_owned();
    let model = ctx.inputs.resolve(&remote, "task.model", &text(&cfg.model_dir)).await?;
    let train = ctx.inputs.resolve(&remote, "task.train_file", &text(&cfg.train_file)).await?;
    cfg.model_dir = model.path.clone();
    cfg.train_file = train.path.clone();
    let mut resolved = vec![model, train];
    // Under cross-validation the validation split is a fold of the training file.
    if cfg.folds.is_none() {
        let validation = ctx.inputs.resolve(&remote, "task.validation_file", &text(&cfg.validation_file)).await?;
        cfg.validation_file = validation.path.clone();
        resolved.push(validation);
    }
    if let Some(test_file) = &cfg.test_file {
        let test = ctx.inputs.resolve(&remote, "task.test_file", &text(test_file)).await?;
        cfg.test_file = Some(test.path.clone());
        resolved.push(test);
    }
    match ctx.inputs.prune().await {
        Some(Ok(p)) if p.trees > 0 || p.blobs > 0 => info!(
            trees = p.trees,
            blobs = p.blobs,
            in_use = p.in_use,
            "input cache pruned: {} → {}",
            bertsweep_transfer::human_bytes(p.bytes_before),
            bertsweep_transfer::human_bytes(p.bytes_after)
        ),
        Some(Ok(p)) if p.bytes_after > ctx.options.cache_max_bytes.unwrap_or(u64::MAX) => warn!(
            in_use = p.in_use,
            "input cache holds {}, over --cache-max-size: everything left is in use",
            bertsweep_transfer::human_bytes(p.bytes_after)
        ),
        Some(Err(e)) => warn!("pruning the input cache: {e}"),
        _ => {}
    }
    Ok((cfg, resolved))
}

/// Puts the exported model where `--artifacts` says and returns what to complete with: a
/// local path, or (while the coordinator wants it) a `blob:` reference or an object URL.
/// Err is why publishing failed (the trial is retried).
async fn publish(
    ctx: &Context,
    a: &Assignment,
    exported: Option<PathBuf>,
    value: f64,
) -> Result<Option<String>, String> {
    let Some(dir) = exported else { return Ok(None) };
    let sink = &ctx.options.artifacts;
    if let ArtifactSink::Local(_) = sink {
        return Ok(Some(std::path::absolute(&dir).unwrap_or(dir).display().to_string()));
    }
    let (wanted, why) = ctx.coordinator.offer_artifact(&a.lease, value).await?;
    if !wanted {
        info!(trial = %a.label(), "model not kept: {why}");
        return Ok(None);
    }
    let source = format!("{}:trial {}", bertsweep_transfer::manifest::this_host(), a.label());
    let started = std::time::Instant::now();
    let artifact = match sink {
        ArtifactSink::Object(base) => {
            let url = format!("{base}/{}/{}", a.study, a.number);
            bertsweep_transfer::object::upload_dir(&dir, &url, source)
                .await
                .map_err(|e| format!("uploading the model to {url}: {e}"))?;
            url
        }
        _ => {
            let up = ctx
                .coordinator
                .remote()
                .upload_path(&dir, source)
                .await
                .map_err(|e| format!("uploading the model to the coordinator: {e}"))?;
            format!("blob:sha256:{}", up.digest)
        }
    };
    info!(trial = %a.label(), "model kept ({why}): {artifact} in {:.1?}", started.elapsed());
    Ok(Some(artifact))
}

/// Aborts a task when dropped (whichever way the function returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn remove_staging(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

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
