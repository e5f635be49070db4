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
//!
//! - this file: the worker's options, [`run`] and the device loop (acquire until told to stop).
//! - `trial`: one assignment — admission, inputs, the training thread, the report.
//! - `observer`: the training thread's [`crate::train::TrainObserver`] — epoch reports,
//!   checkpoints in the background, abort flags.
//! - `publish`: the exported model to `--artifacts`.
//! - `checkpoint_store`: where training checkpoints are stored and fetched from.
//! - [`inputs`] and [`cache_prune`]: the study's inputs made local, the cache kept in bounds.
//! - [`paths`], [`telemetry`]: path checks, the worker's metrics.

pub mod cache_prune;
mod checkpoint_store;
mod client;
mod convert;
pub mod coordinator;
pub mod inputs;
mod observer;
pub mod paths;
mod publish;
pub mod telemetry;
mod trial;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tch::Device;
use tokio::sync::watch;
use tracing::info;

use coordinator::{Acquired, Coordinator};
use trial::{run_assignment, Ran};

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
    /// The input cache directory could not be opened or created.
    #[error("opening --cache-dir failed: {}: {error}", dir.display())]
    CacheDir {
        /// `--cache-dir`.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A device loop's task panicked or was cancelled.
    #[error("device loop failed: {0}")]
    DeviceLoop(tokio::task::JoinError),
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

/// What every device loop of this worker shares.
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
        .map_err(|error| RuntimeError::CacheDir { dir: options.cache_dir.clone(), error })?;
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
                first_error.get_or_insert(RuntimeError::DeviceLoop(e));
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
