//! The supervisor: one process per slot (this executable again, told its slot by
//! environment), restarted when it dies; admission for every slot through one
//! [`Ledger`]; the dead slot's trial handed back at once; SIGTERM turned into "release and
//! exit" for every slot by closing their stdin.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tch::Device;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::ledger::{Admission, Ledger, SlotId};
use super::probe::Probe;
use super::protocol::{decode, encode, ToSlot, ToSupervisor, MAX_LINE};
use super::{telemetry, SLOT_DEVICE_ENV, SLOT_ENV, SLOT_THREADS_ENV};
use crate::runtime::coordinator::{Coordinator, Failure, Lease};
use crate::runtime::device_name;

/// A slot that dies this many times in a row, each within [`QUICK_CRASH`] of its start, is
/// given up (the others go on).
const MAX_QUICK_CRASHES: u32 = 5;
/// A slot process that lived at least this long before dying starts the crash count anew.
const QUICK_CRASH: Duration = Duration::from_secs(60);
/// How long slots get to hand their trials back after a stop before they are killed.
const STOP_PATIENCE: Duration = Duration::from_secs(120);

/// Why a slot was given up (the other slots go on).
#[derive(Debug, thiserror::Error)]
enum SlotError {
    /// Its process could not be started.
    #[error("slot {slot}: cannot start its process: {error}")]
    Spawn {
        /// The slot's name.
        slot: String,
        /// Why.
        error: std::io::Error,
    },
    /// Its process kept dying soon after it started.
    #[error("slot {slot} gave up: its process died {crashes} times in a row within {QUICK_CRASH:?} of starting (last: {how})")]
    Crashing {
        /// The slot's name.
        slot: String,
        /// Quick crashes in a row.
        crashes: u32,
        /// How the last one ended.
        how: String,
    },
    /// The task watching it panicked.
    #[error("a slot task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// How the supervisor runs.
pub struct SupervisorOptions {
    /// Devices, each with `slots_per_device` slots.
    pub devices: Vec<Device>,
    /// Slot processes per device.
    pub slots_per_device: usize,
    /// `--threads` of each slot process.
    pub threads_per_slot: usize,
    /// Trials to start in all (all slots together).
    pub max_trials: Option<usize>,
    /// The coordinator, to hand back the trial of a slot that died.
    pub coordinator: String,
    /// Its bearer token.
    pub token: Option<String>,
    /// Its TLS settings.
    pub tls: bertsweep_proto::connect::ClientTls,
}

/// One slot: which device, and its name in logs and metrics (`cuda:0#1`).
#[derive(Debug, Clone)]
struct Slot {
    id: SlotId,
    device_pos: usize,
    device: Device,
    name: String,
}

/// The leased trial a slot was admitted to run.
#[derive(Debug, Clone)]
struct Admitted {
    trial_id: u64,
    lease_token: u64,
    label: String,
}

struct Shared {
    ledger: Mutex<Ledger>,
    probes: Mutex<Vec<Probe>>,
    /// Each live slot's process id.
    pids: Mutex<HashMap<SlotId, (usize, u32)>>,
    /// Where to send a wake to each live slot.
    wakers: Mutex<HashMap<SlotId, (usize, mpsc::Sender<ToSlot>)>>,
    /// Trials admitted in all (for `--max-trials`).
    admitted: AtomicUsize,
    max_trials: Option<usize>,
    coordinator: Coordinator,
    stopping: watch::Receiver<bool>,
    threads_per_slot: usize,
}

/// Runs every slot until each has exited cleanly (its study ended, `--max-trials`, or a stop)
/// or been given up. Err names the slots given up.
pub async fn run(options: SupervisorOptions, stopping: watch::Receiver<bool>) -> anyhow::Result<usize> {
    let coordinator =
        Coordinator::connect_unregistered(&options.coordinator, options.token.as_deref(), &options.tls).await?;
    let probes = options.devices.iter().map(|d| Probe::for_device(*d)).collect();
    let shared = Arc::new(Shared {
        ledger: Mutex::new(Ledger::default()),
        probes: Mutex::new(probes),
        pids: Mutex::new(HashMap::new()),
        wakers: Mutex::new(HashMap::new()),
        admitted: AtomicUsize::new(0),
        max_trials: options.max_trials,
        coordinator,
        stopping: stopping.clone(),
        threads_per_slot: options.threads_per_slot,
    });
    let mut slots = Vec::new();
    for (device_pos, device) in options.devices.iter().enumerate() {
        for k in 0..options.slots_per_device {
            let id = slots.len();
            slots.push(Slot { id, device_pos, device: *device, name: format!("{}#{k}", device_name(*device)) });
        }
    }
    info!(
        slots = slots.len(),
        threads_per_slot = options.threads_per_slot,
        "starting {} slot process(es): {}",
        slots.len(),
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let tasks: Vec<_> = slots.into_iter().map(|slot| tokio::spawn(run_slot(shared.clone(), slot))).collect();
    let mut given_up = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => given_up.push(why.to_string()),
            Err(e) => given_up.push(SlotError::Task(e).to_string()),
        }
    }
    let admitted = shared.admitted.load(Ordering::SeqCst);
    if given_up.is_empty() {
        Ok(admitted)
    } else {
        anyhow::bail!("{}", given_up.join("; "))
    }
}

/// Starts, watches and restarts one slot's process. Err: given up after repeated crashes.
async fn run_slot(shared: Arc<Shared>, slot: Slot) -> Result<(), SlotError> {
    let mut stopping = shared.stopping.clone();
    let mut quick_crashes = 0u32;
    telemetry::slot_started(&slot.name);
    loop {
        if *stopping.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let mut child = match spawn(&shared, &slot) {
            Ok(child) => child,
            Err(error) => return Err(SlotError::Spawn { slot: slot.name.clone(), error }),
        };
        let (admitted, status) = watch_child(&shared, &slot, &mut child).await;
        shared.pids.lock().unwrap_or_else(|p| p.into_inner()).remove(&slot.id);
        shared.wakers.lock().unwrap_or_else(|p| p.into_inner()).remove(&slot.id);
        let clean = status.as_ref().is_ok_and(|s| s.success());
        // A slot stopped by a signal (or its closed stdin) hands its trial back itself.
        let released = status.as_ref().is_ok_and(|s| s.code() == Some(i32::from(crate::runtime::EXIT_RELEASED)));
        let how = match &status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("could not be waited for ({e})"),
        };
        if let Some(trial) = admitted {
            trial_ended(&shared, &slot, false);
            telemetry::slot_busy(&slot.name, false);
            if !clean && !released {
                let why = format!("the worker's slot {} process {how} during the trial", slot.name);
                warn!(trial = %trial.label, "{why}; handing the trial back");
                let lease = Lease { trial_id: trial.trial_id, token: trial.lease_token, ttl: Duration::from_secs(30) };
                if let Err(e) = shared.coordinator.fail(&lease, Failure::Retryable, why).await {
                    warn!(trial = %trial.label, "could not hand the trial back (its lease will expire): {e}");
                }
            }
        }
        if clean {
            info!(slot = %slot.name, "slot finished");
            return Ok(());
        }
        if *stopping.borrow() {
            warn!(slot = %slot.name, "slot process {how} while stopping");
            return Ok(());
        }
        quick_crashes = if started.elapsed() >= QUICK_CRASH { 1 } else { quick_crashes + 1 };
        if quick_crashes >= MAX_QUICK_CRASHES {
            return Err(SlotError::Crashing { slot: slot.name.clone(), crashes: quick_crashes, how });
        }
        let backoff = Duration::from_secs(1 << quick_crashes.min(5));
        warn!(slot = %slot.name, "slot process {how}; restarting it in {backoff:?}");
        telemetry::slot_restarted(&slot.name);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stopping) => return Ok(()),
        }
    }
}

/// Resolves once `stopping` is true (never, if its sender is gone while false).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        if stopping.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// This executable again, as a slot process: same arguments, told its slot, device and
/// threads by environment; stdin and stdout are its link to this supervisor.
fn spawn(shared: &Shared, slot: &Slot) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(SLOT_ENV, &slot.name)
        .env(SLOT_DEVICE_ENV, device_name(slot.device))
        .env(SLOT_THREADS_ENV, shared.threads_per_slot.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
}

/// Serves one slot process until it exits; returns the trial it held then, and how it
/// exited. A stop closes its stdin (it hands its trial back and exits); one that lingers past
/// [`STOP_PATIENCE`] is killed.
async fn watch_child(
    shared: &Arc<Shared>,
    slot: &Slot,
    child: &mut Child,
) -> (Option<Admitted>, std::io::Result<std::process::ExitStatus>) {
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.start_kill();
        return (None, child.wait().await);
    };
    let (tx, mut rx) = mpsc::channel::<ToSlot>(16);
    shared.wakers.lock().unwrap_or_else(|p| p.into_inner()).insert(slot.id, (slot.device_pos, tx.clone()));
    let mut stopping = shared.stopping.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    if stdin.write_all(encode(&message).as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                        break;
                    }
                }
                _ = stopped(&mut stopping) => break,
            }
        }
        // Dropping stdin closes it: the slot's signal to hand back its trial and exit.
    });
    let mut admitted: Option<Admitted> = None;
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut last_samples = 0u64;
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let message = match decode::<ToSupervisor>(&String::from_utf8_lossy(&line)) {
            Ok(m) => m,
            Err(why) => {
                warn!(slot = %slot.name, "slot process wrote something that is not its protocol ({why}); ending it");
                let _ = child.start_kill();
                break;
            }
        };
        let answer = handle(shared, slot, message, &mut admitted, &mut last_samples);
        if let Some(answer) = answer {
            if tx.send(answer).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let status = match tokio::time::timeout(STOP_PATIENCE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            warn!(slot = %slot.name, "slot process did not exit within {STOP_PATIENCE:?} of closing its output; killing it");
            let _ = child.start_kill();
            child.wait().await
        }
    };
    writer.abort();
    (admitted, status)
}

/// Acts on one message from a slot; the answer to send back, if it wants one.
fn handle(
    shared: &Shared,
    slot: &Slot,
    message: ToSupervisor,
    admitted: &mut Option<Admitted>,
    last_samples: &mut u64,
) -> Option<ToSlot> {
    match message {
        ToSupervisor::Hello { pid, pci_bus_id } => {
            shared.pids.lock().unwrap_or_else(|p| p.into_inner()).insert(slot.id, (slot.device_pos, pid));
            if let Some(bus) = pci_bus_id {
                let mut probes = shared.probes.lock().unwrap_or_else(|p| p.into_inner());
                if let Probe::Gpu { bus_id, .. } = &mut probes[slot.device_pos] {
                    *bus_id = Some(bus);
                }
            }
            None
        }
        ToSupervisor::Admit { trial_id, lease_token, label, shape, bytes } => {
            let pids: HashMap<SlotId, u32> = shared
                .pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, (pos, _))| *pos == slot.device_pos)
                .map(|(id, (_, pid))| (*id, *pid))
                .collect();
            let probe = shared.probes.lock().unwrap_or_else(|p| p.into_inner())[slot.device_pos].clone();
            // Unmeasurable (no NVML): no free memory is assumed, so only a lone trial starts.
            let now = probe.snapshot(&pids).unwrap_or_default();
            // The count and the ledger change together, so concurrent slots cannot both take
            // the last of --max-trials.
            let decision = {
                let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
                if shared.max_trials.is_some_and(|max| shared.admitted.load(Ordering::SeqCst) >= max) {
                    return Some(ToSlot::Admitted { yes: false, reason: "--max-trials reached".into(), stop: true });
                }
                let decision = ledger.admit(slot.device_pos, slot.id, &shape, bytes, &now);
                if decision == Admission::Admit {
                    shared.admitted.fetch_add(1, Ordering::SeqCst);
                }
                decision
            };
            match decision {
                Admission::Admit => {
                    info!(slot = %slot.name, trial = %label, shape = %shape, "admitted (expects {})", bertsweep_transfer::human_bytes(bytes));
                    telemetry::slot_busy(&slot.name, true);
                    *admitted = Some(Admitted { trial_id, lease_token, label });
                    Some(ToSlot::Admitted { yes: true, reason: String::new(), stop: false })
                }
                Admission::Defer(reason) => {
                    info!(slot = %slot.name, trial = %label, "not admitted now: {reason}");
                    Some(ToSlot::Admitted { yes: false, reason, stop: false })
                }
            }
        }
        ToSupervisor::Progress { samples, peak_bytes } => {
            telemetry::slot_samples(&slot.name, samples.saturating_sub(*last_samples));
            *last_samples = samples.max(*last_samples);
            if peak_bytes > 0 {
                shared.ledger.lock().unwrap_or_else(|p| p.into_inner()).measured(slot.device_pos, slot.id, peak_bytes);
                telemetry::slot_peak(&slot.name, peak_bytes);
            }
            let pid = shared.pids.lock().unwrap_or_else(|p| p.into_inner()).get(&slot.id).map(|(_, pid)| *pid);
            if let Some(pid) = pid {
                let probe = shared.probes.lock().unwrap_or_else(|p| p.into_inner())[slot.device_pos].clone();
                if let Some(used) =
                    probe.snapshot(&HashMap::from([(slot.id, pid)])).and_then(|s| s.used_by_slot.get(&slot.id).copied())
                {
                    telemetry::slot_memory(&slot.name, used);
                }
            }
            None
        }
        ToSupervisor::Ended { oom } => {
            let shared_device = admitted.take().is_some() && trial_ended(shared, slot, oom);
            telemetry::slot_busy(&slot.name, false);
            Some(ToSlot::Ended { shared: shared_device })
        }
        ToSupervisor::Deferred => None,
    }
}

/// Books the end of `slot`'s trial and wakes the other slots of its device (memory was
/// freed there). Whether it shared the device.
fn trial_ended(shared: &Shared, slot: &Slot, oom: bool) -> bool {
    let was_shared = shared.ledger.lock().unwrap_or_else(|p| p.into_inner()).ended(slot.device_pos, slot.id, oom);
    if oom && was_shared {
        warn!(slot = %slot.name, "a trial ran out of device memory while sharing it: fewer trials of its shape run together on this device from now on");
    }
    for (id, (pos, tx)) in shared.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if *pos == slot.device_pos && *id != slot.id {
            let _ = tx.try_send(ToSlot::Wake);
        }
    }
    was_shared
}
