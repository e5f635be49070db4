//! The default mode: serve a coordinator's trials until stopped.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use bertsweep_worker::device::{parse_devices, set_cpu_threads};
use bertsweep_worker::runtime::{self, WorkerOptions};
use bertsweep_worker::slots;
use tokio::sync::watch;
use tracing::{info, warn};

/// Flags of the coordinator mode.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the coordinator is and how to reach it (shared with the `bertsweep` CLI).
    #[command(flatten)]
    connection: bertsweep_proto::connect::ConnectionArgs,
    /// cpu, cuda, cuda:N, or all (one trial at a time on every visible GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Only take trials of this study, and exit once it has ended.
    #[arg(long)]
    study: Option<String>,
    /// Exit after this many trials.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_trials: Option<u64>,
    /// Exit (status 0) once no trial has come for this long (30s, 5m, …): autoscaled workers
    /// give their GPU back when the study has nothing left for them.
    #[arg(long, env = "BERTSWEEP_EXIT_WHEN_IDLE", value_parser = bertsweep_proto::values::parse_duration)]
    exit_when_idle: Option<std::time::Duration>,
    /// Where exported models go. By default they are uploaded to the coordinator while the
    /// trial is among its study's best `budget.keep_artifacts`; a directory keeps every trial's
    /// model at DIR/<study>/<trial number>/ on this machine; s3://, gs:// or az:// URLs write
    /// the kept ones to object storage (credentials from the standard variables).
    #[arg(long, env = "BERTSWEEP_ARTIFACTS")]
    artifacts: Option<String>,
    /// Cache of downloaded study inputs and models waiting to be uploaded (default:
    /// $XDG_CACHE_HOME/bertsweep or ~/.cache/bertsweep).
    #[arg(long, env = "BERTSWEEP_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Most space downloaded inputs may take in the cache (e.g. 50GB, 200GiB): after each
    /// download, least recently used inputs that no running trial uses are deleted (by any
    /// worker sharing the cache). Default: no limit.
    #[arg(long, env = "BERTSWEEP_CACHE_MAX_SIZE", value_parser = bertsweep_transfer::parse_size)]
    cache_max_size: Option<u64>,
    /// Do not export models (metrics only; e.g. for recording learning curves).
    #[arg(long)]
    no_export: bool,
    /// With --artifacts DIR: also write each epoch's resumable checkpoint under
    /// DIR/<study>/<trial number>/checkpoints/ and name it to the coordinator as worker:<path>,
    /// so a retry on any worker that mounts DIR (a cluster filesystem) resumes from it.
    #[arg(long, env = "BERTSWEEP_LOCAL_CHECKPOINTS")]
    local_checkpoints: bool,
    /// CPU threads for torch (default: every core this process may use, cgroup quota
    /// included; with --slots, per slot, and by default those cores shared among the slots).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Trials to train at once on each device, each in its own process under this one (a
    /// supervisor that restarts a slot that dies and hands its trial back): a number, or auto
    /// (one per 10 GiB of device memory, at most 8; one on the CPU). A trial starts beside
    /// others only when the device's free memory covers its expected peak (measured on earlier
    /// trials of its batch size and sequence length) and a margin. Default: one trial per
    /// device, in this process.
    #[arg(long, env = "BERTSWEEP_SLOTS")]
    slots: Option<bertsweep_worker::slots::SlotCount>,
    /// Batch examples of similar length together, as transformers' `group_by_length` (less
    /// padding, faster; off by default, as in transformers, because it changes what is learned).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    group_by_length: bool,
    /// Serve this worker's Prometheus metrics (samples/s, epoch time, trial outcomes, GPU
    /// memory) at http://ADDR/metrics (plain HTTP; off unless set).
    #[arg(long, env = "BERTSWEEP_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// How a worker ended, for its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its study ended, its `--max-trials` are done, or nothing is left: exit 0.
    Finished,
    /// A signal (or, in a slot, its supervisor) stopped it first; its trial went back to the
    /// coordinator: exit [`EXIT_RELEASED`], so that schedulers start it again.
    Released,
}

pub use bertsweep_worker::runtime::EXIT_RELEASED;

/// Runs the worker until SIGINT/SIGTERM, --max-trials, --exit-when-idle or the end of --study:
/// as a slot process when a supervisor started this one, as a supervisor with `--slots`, else
/// alone.
pub fn run(args: ServeArgs) -> anyhow::Result<Ended> {
    if let Some(slot) = slots::SlotSettings::from_env() {
        return run_worker(args, Some(slot));
    }
    if args.slots.is_some() {
        return run_supervisor(args);
    }
    run_worker(args, None)
}

/// Starts one process per slot and watches them.
fn run_supervisor(args: ServeArgs) -> anyhow::Result<Ended> {
    let devices = parse_devices(&args.device)?;
    let count = args.slots.unwrap_or(slots::SlotCount::Fixed(1));
    let per_device = count.per_device(&devices);
    let threads = slots::threads_per_slot(args.threads.map(|t| t as usize), per_device * devices.len());
    // Checked here once, so a bad flag is one error and not one per slot process.
    artifact_sink(&args)?;
    if devices.iter().any(|d| d.is_cuda()) {
        match slots::mps_pipe_directory() {
            Some(dir) => {
                info!("CUDA MPS daemon found at {}: the slots' kernels share each GPU through it", dir.display())
            }
            None => {
                info!("no CUDA MPS daemon running: the slots time-share each GPU (see deploy/README.md, \"CUDA MPS\")")
            }
        }
    }
    let token = args.connection.token()?;
    let options = slots::supervisor::SupervisorOptions {
        devices: devices.clone(),
        slots_per_device: per_device,
        threads_per_slot: threads,
        max_trials: args.max_trials.map(|n| n as usize),
        coordinator: args.connection.coordinator.clone(),
        token,
        tls: args.connection.tls(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        if let Some(addr) = args.metrics_listen {
            serve_metrics(addr, &devices, true).await?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = stop_rx.clone();
        stop_on_signal(stop_tx, "every slot hands its trial back");
        let admitted = slots::supervisor::run(options, stop_rx).await?;
        info!(trials = admitted, "worker finished");
        Ok(ended(&stopped))
    })
}

/// [`Ended::Released`] when the stop signal was raised, else [`Ended::Finished`].
fn ended(stopped: &watch::Receiver<bool>) -> Ended {
    if *stopped.borrow() {
        info!("exiting with status {EXIT_RELEASED}: stopped before the work was done; run again to continue");
        Ended::Released
    } else {
        Ended::Finished
    }
}

/// Where exported models go (`--artifacts`, `--no-export`), checked against
/// `--local-checkpoints`.
fn artifact_sink(args: &ServeArgs) -> anyhow::Result<runtime::ArtifactSink> {
    let sink = match (&args.artifacts, args.no_export) {
        (_, true) => runtime::ArtifactSink::None,
        (None, false) => runtime::ArtifactSink::Coordinator,
        (Some(text), false) => runtime::ArtifactSink::parse(text),
    };
    if args.local_checkpoints && !matches!(sink, runtime::ArtifactSink::Local(_)) {
        anyhow::bail!(
            "--local-checkpoints needs --artifacts DIR (a directory every worker can read); with the default or an object storage URL checkpoints are shared already"
        );
    }
    Ok(sink)
}

/// Serves the worker's metrics at `addr` (`slots`: the supervisor's per-slot series too).
async fn serve_metrics(addr: std::net::SocketAddr, devices: &[tch::Device], slots: bool) -> anyhow::Result<()> {
    let gpus: Vec<u32> = devices
        .iter()
        .filter_map(|d| match d {
            tch::Device::Cuda(i) => u32::try_from(*i).ok(),
            _ => None,
        })
        .collect();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?;
    let handle = bertsweep_telemetry::install("worker", None)?;
    runtime::telemetry::describe();
    if slots {
        slots::telemetry::describe();
    }
    info!("metrics at http://{}/metrics", listener.local_addr()?);
    let refresh = runtime::telemetry::gpu_memory_refresher(gpus);
    tokio::spawn(async move {
        if let Err(e) = bertsweep_telemetry::serve(listener, handle, refresh, std::future::pending()).await {
            warn!("{e}");
        }
    });
    Ok(())
}

/// Acquires and trains on this process's devices (one, in a slot process).
fn run_worker(args: ServeArgs, slot: Option<slots::SlotSettings>) -> anyhow::Result<Ended> {
    let device_spec = slot.as_ref().map_or(args.device.as_str(), |s| s.device.as_str());
    let devices = parse_devices(device_spec)?;
    let threads = slot.as_ref().map(|s| s.threads).or(args.threads.map(|t| t as usize));
    set_cpu_threads(threads);
    let artifacts = artifact_sink(&args)?;
    if let runtime::ArtifactSink::Local(dir) = &artifacts {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --artifacts {}", dir.display()))?;
    }
    let cache_dir = args.cache_dir.unwrap_or_else(runtime::inputs::default_cache_dir);
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create --cache-dir {}", cache_dir.display()))?;
    let token = args.connection.token()?;
    let tls = args.connection.tls();
    let options = WorkerOptions {
        exit_when_idle: args.exit_when_idle,
        coordinator: args.connection.coordinator,
        token,
        tls,
        devices,
        study: args.study,
        max_trials: args.max_trials.map(|n| n as usize),
        artifacts,
        cache_dir,
        cache_max_bytes: args.cache_max_size,
        group_by_length: args.group_by_length,
        local_checkpoints: args.local_checkpoints,
        // Slots share one terminal: log lines, not bars.
        progress: slot.is_none() && std::io::stderr().is_terminal(),
        slot: None,
    };
    let mut options = options;
    if slot.is_some() {
        // The supervisor counts --max-trials for all slots.
        options.max_trials = None;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        if let (Some(addr), None) = (args.metrics_listen, &slot) {
            serve_metrics(addr, &options.devices, false).await?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(slot) = &slot {
            // Stdin closing is the supervisor's stop; a signal (Ctrl-C reaches the whole
            // process group) stops the slot the same way.
            let bus_id = match options.devices.first() {
                Some(tch::Device::Cuda(i)) => bertsweep_worker::aten::cuda_pci_bus_id(*i).ok(),
                _ => None,
            };
            info!(slot = %slot.name, threads = slot.threads, "slot process started");
            options.slot = Some(slots::link::SlotLink::start(bus_id, stop_tx.clone()));
        }
        let stopped = stop_rx.clone();
        stop_on_signal(stop_tx, "releasing the current trial");
        let summary = runtime::run(options, stop_rx).await?;
        info!(trials = summary.trials, "worker finished");
        Ok(ended(&stopped))
    });
    // A slot's stdin reader sits in a blocking read the runtime would wait for forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

/// The first SIGINT/SIGTERM turns `stop` true (`what` says what stopping does); a second one
/// exits at once, unless it comes within [`DUPLICATE_SIGNAL_WINDOW`] of the first: schedulers
/// signal a job's processes along several paths at once (Slurm's step daemon and the batch
/// script passing it on, a container runtime and a process group), and one request to stop
/// must not turn into "exit now" and lose the trial's release.
fn stop_on_signal(stop: watch::Sender<bool>, what: &'static str) {
    tokio::spawn(async move {
        wait_for_signal().await;
        let first = std::time::Instant::now();
        warn!("stopping: {what} (press Ctrl-C again to exit at once)");
        let _ = stop.send(true);
        loop {
            wait_for_signal().await;
            if first.elapsed() >= DUPLICATE_SIGNAL_WINDOW {
                std::process::exit(130);
            }
            info!("a second signal right after the first is taken as the same request to stop");
        }
    });
}

/// Signals this soon after the first are the same request to stop, not an insistence.
const DUPLICATE_SIGNAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
