//! Bridges the training thread to the coordinator: per-epoch reports, abort flags, progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tracing::{info, warn};

use super::checkpoint_store::CheckpointStore;
use super::coordinator::{Assignment, Lease, Verdict};
use super::Context;
use crate::train::{EpochDecision, TrainObserver};

/// Why training was told to stop early.
#[derive(Debug, Clone, PartialEq)]
pub enum AbortReason {
    /// SIGINT/SIGTERM: release the trial.
    Shutdown,
    /// The coordinator no longer recognises our lease (expired and requeued).
    LeaseLost(String),
    /// The coordinator said stop (pruned, or the study was stopped).
    Stopped(String),
    /// The coordinator paused the trial at an ASHA rung (it resumes later from its checkpoint).
    Paused(String),
    /// The coordinator refused our metrics (e.g. the objective is not finite).
    Rejected(String),
}

/// Shared between the training thread, the heartbeat task and the observer.
#[derive(Default)]
pub struct LeaseState {
    aborted: AtomicBool,
    reason: Mutex<Option<AbortReason>>,
}

impl LeaseState {
    /// Records the first reason and raises the flag.
    pub fn abort(&self, reason: AbortReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    /// Whether training should stop (polled between batches).
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// The first reason given, if any.
    pub fn reason(&self) -> Option<AbortReason> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The [`TrainObserver`] of a coordinator trial.
pub struct RemoteObserver {
    handle: Handle,
    ctx: Arc<Context>,
    trial: Lease,
    label: String,
    epochs: usize,
    lease: Arc<LeaseState>,
    bar: Option<indicatif::ProgressBar>,
    /// The device trained on (its name labels the worker's metrics; its peak memory is
    /// reported with every epoch).
    device: tch::Device,
    /// When the current epoch began.
    epoch_started: std::time::Instant,
    /// Checkpoints: where they are stored, and the staging directory they are written in.
    checkpoints: Option<(CheckpointStore, PathBuf)>,
    /// The assignment itself (checkpoint uploads name the study and trial).
    assignment: Assignment,
    /// The checkpoint fetched for this attempt, handed to training once.
    resume: Option<PathBuf>,
    /// The latest checkpoint this attempt reported or resumed from (replaced ones are deleted
    /// from object storage; the caller deletes all of an ended trial's).
    latest_checkpoint: Option<String>,
    /// The snapshot of the epoch that just ended, until its `on_epoch` sends it off.
    snapshot: Option<crate::training_checkpoint::Snapshot>,
    /// An epoch whose checkpoint is being written and stored (and then reported) while the
    /// next epoch trains.
    in_flight: Option<tokio::task::JoinHandle<Reported>>,
}

/// What a background checkpoint-and-report ended with.
struct Reported {
    epoch: usize,
    /// The stored checkpoint's reference ("" when it could not be stored).
    checkpoint: String,
    verdict: Verdict,
}

/// Test hook, `EPOCH:MS`: hold that epoch's background checkpoint this long between writing
/// and storing it, so a test can kill the worker while it is in flight.
const DELAY_ENV: &str = "BERTSWEEP_TEST_CHECKPOINT_DELAY_MS";

/// The delay [`DELAY_ENV`] sets for `epoch`'s checkpoint.
fn test_delay(epoch: usize) -> Option<std::time::Duration> {
    let value = std::env::var(DELAY_ENV).ok()?;
    let (e, ms) = value.split_once(':')?;
    (e.trim().parse::<usize>().ok()? == epoch).then(|| std::time::Duration::from_millis(ms.trim().parse().unwrap_or(0)))
}

impl RemoteObserver {
    /// An observer of assignment `a`, reporting on `handle`'s runtime, training on `device`.
    pub(super) fn new(
        handle: Handle,
        ctx: Arc<Context>,
        a: &Assignment,
        lease: Arc<LeaseState>,
        epochs: usize,
        device: tch::Device,
    ) -> Self {
        let label = a.label();
        let bar = ctx.bars.as_ref().map(|m| {
            let bar = m.add(indicatif::ProgressBar::new(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("trial {label}"));
            bar
        });
        let epoch_started = std::time::Instant::now();
        RemoteObserver {
            handle,
            ctx,
            trial: a.lease,
            label,
            epochs,
            lease,
            bar,
            device,
            epoch_started,
            checkpoints: None,
            assignment: a.clone(),
            resume: None,
            latest_checkpoint: None,
            snapshot: None,
            in_flight: None,
        }
    }

    /// Writes a checkpoint after every epoch into `staging` and stores it in `store`; resumes
    /// from `resume` (fetched from the assignment's checkpoint) if given.
    pub(super) fn with_checkpoints(
        mut self,
        store: CheckpointStore,
        staging: PathBuf,
        resume: Option<PathBuf>,
    ) -> Self {
        if resume.is_some() {
            self.latest_checkpoint = self.assignment.resume().map(|(reference, _)| reference);
        }
        self.checkpoints = Some((store, staging));
        self.resume = resume;
        self
    }

    /// Stores the checkpoint written after `epoch`, if training wrote one; its reference.
    fn store_checkpoint(&self, epoch: usize) -> String {
        let Some((store, staging)) = &self.checkpoints else { return String::new() };
        self.handle.block_on(store_dir(store, &self.assignment, &self.label, epoch, staging))
    }

    /// Writes `snapshot` and stores it, then reports `epoch` with it — on the runtime, while
    /// the next epoch trains.
    fn send_off(
        &mut self,
        snapshot: crate::training_checkpoint::Snapshot,
        epoch: usize,
        metrics: BTreeMap<String, f64>,
    ) {
        let Some((store, staging)) = self.checkpoints.clone() else { return };
        let (ctx, assignment, label, trial) =
            (self.ctx.clone(), self.assignment.clone(), self.label.clone(), self.trial);
        let (device, lease) = (self.device, self.lease.clone());
        let delay = test_delay(epoch);
        self.in_flight = Some(self.handle.spawn(async move {
            let dir = staging.join(format!("e{epoch}"));
            let target = dir.clone();
            let written = tokio::task::spawn_blocking(move || snapshot.write(&target)).await;
            let checkpoint = match written {
                Ok(Ok(w)) => {
                    info!(trial = %label, epoch, "checkpoint written in the background: {} in {:.2} s", bertsweep_transfer::human_bytes(w.bytes), w.seconds);
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    store_dir(&store, &assignment, &label, epoch, &staging).await
                }
                Ok(Err(e)) => {
                    warn!(trial = %label, epoch, "checkpoint not written (a retry would resume from the previous one): {e}");
                    let _ = std::fs::remove_dir_all(&dir);
                    String::new()
                }
                Err(e) => {
                    warn!(trial = %label, epoch, "checkpoint writer failed: {e}");
                    String::new()
                }
            };
            let peak = crate::device_memory::peak_bytes(device).unwrap_or(0);
            let verdict = ctx.coordinator.report(&trial, epoch, &metrics, &checkpoint, peak).await;
            // Stop the epoch training now, not when it ends.
            match &verdict {
                Verdict::Continue => {}
                Verdict::Stop(why) => lease.abort(AbortReason::Stopped(why.clone())),
                Verdict::Pause(why) => lease.abort(AbortReason::Paused(why.clone())),
                Verdict::LeaseLost(why) => lease.abort(AbortReason::LeaseLost(why.clone())),
                Verdict::Rejected(why) => {
                    lease.abort(AbortReason::Rejected(format!("metrics of epoch {epoch} refused: {why}")))
                }
            }
            Reported { epoch, checkpoint, verdict }
        }));
    }

    /// Waits for the epoch in flight, if any, and acts on the coordinator's answer to it.
    fn settle_in_flight(&mut self) -> EpochDecision {
        let Some(task) = self.in_flight.take() else { return EpochDecision::Continue };
        match self.handle.block_on(task) {
            Ok(Reported { epoch, checkpoint, verdict }) => self.conclude(epoch, checkpoint, verdict),
            Err(e) => {
                self.lease.abort(AbortReason::Rejected(format!("reporting in the background failed: {e}")));
                EpochDecision::Stop
            }
        }
    }

    /// Acts on the coordinator's answer to epoch `epoch`'s report (which named `checkpoint`).
    fn conclude(&mut self, epoch: usize, checkpoint: String, verdict: Verdict) -> EpochDecision {
        if !checkpoint.is_empty() && matches!(verdict, Verdict::Continue | Verdict::Stop(_) | Verdict::Pause(_)) {
            // The coordinator holds the new one: the previous one of this trial is not needed.
            let previous = self.latest_checkpoint.replace(checkpoint.clone());
            if let (Some(previous), Some((store, _))) = (previous, &self.checkpoints) {
                self.handle.block_on(store.discard(&self.assignment, &previous));
            }
        }
        match verdict {
            Verdict::Continue => EpochDecision::Continue,
            Verdict::Stop(why) => {
                self.lease.abort(AbortReason::Stopped(why));
                EpochDecision::Stop
            }
            Verdict::Pause(why) => {
                self.lease.abort(AbortReason::Paused(why));
                EpochDecision::Stop
            }
            Verdict::LeaseLost(why) => {
                self.lease.abort(AbortReason::LeaseLost(why));
                EpochDecision::Stop
            }
            Verdict::Rejected(why) => {
                self.lease.abort(AbortReason::Rejected(format!("metrics of epoch {epoch} refused: {why}")));
                EpochDecision::Stop
            }
        }
    }

    /// Waits for a checkpoint still in flight (its report's answer counts), then removes the
    /// progress bar.
    pub fn finish(&mut self) {
        self.settle_in_flight();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Stores the checkpoint written into `staging/e<epoch>` (then removes it); its reference, or
/// "" when there is none or it could not be stored.
async fn store_dir(
    store: &CheckpointStore,
    a: &Assignment,
    label: &str,
    epoch: usize,
    staging: &std::path::Path,
) -> String {
    let dir = staging.join(format!("e{epoch}"));
    if !dir.join(crate::training_checkpoint::STATE_FILE).exists() {
        return String::new();
    }
    let stored = store.put(a, epoch, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match stored {
        Ok(reference) => reference,
        Err(e) => {
            warn!(trial = %label, epoch, "checkpoint not stored (a retry would resume from the previous one): {e}");
            String::new()
        }
    }
}

fn summary(metrics: &BTreeMap<String, f64>) -> String {
    let pick = ["eval_accuracy", "eval_f1", "eval_loss", "train_loss", "train_samples_per_second"];
    pick.iter().filter_map(|k| metrics.get(*k).map(|v| format!("{k}={v:.4}"))).collect::<Vec<_>>().join(" ")
}

impl TrainObserver for RemoteObserver {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        super::telemetry::epoch(&super::device_name(self.device), self.epoch_started.elapsed().as_secs_f64(), metrics);
        let line = format!("epoch {epoch}/{}: {}", self.epochs, summary(metrics));
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.clone());
                bar.println(format!("trial {} {line}", self.label));
            }
            None => info!(trial = %self.label, "{line}"),
        }
        if let Some(link) = &self.ctx.options.slot {
            link.set_peak(crate::device_memory::peak_bytes(self.device).unwrap_or(0));
        }
        if let Some(snapshot) = self.snapshot.take().filter(|s| s.epoch() == epoch) {
            // Reported once stored, while the next epoch trains; its answer stops that one.
            self.send_off(snapshot, epoch, metrics.clone());
            self.epoch_started = std::time::Instant::now();
            return EpochDecision::Continue;
        }
        // Reports go in order: the epoch in flight first. If its answer was to stop, this
        // epoch is not reported.
        if self.settle_in_flight() == EpochDecision::Stop {
            return EpochDecision::Stop;
        }
        let checkpoint = self.store_checkpoint(epoch);
        let peak = crate::device_memory::peak_bytes(self.device).unwrap_or(0);
        let verdict = self.handle.block_on(self.ctx.coordinator.report(&self.trial, epoch, metrics, &checkpoint, peak));
        self.epoch_started = std::time::Instant::now();
        self.conclude(epoch, checkpoint, verdict)
    }

    fn should_abort(&self) -> bool {
        self.lease.is_aborted()
    }

    /// Only a model the coordinator will keep is scored on the test set (its answer to the
    /// same question the model's upload asks next); unreachable or refused: not scored.
    fn wants_test_scores(&mut self, best_value: f64) -> bool {
        match self.handle.block_on(self.ctx.coordinator.offer_artifact(&self.trial, best_value)) {
            Ok((kept, why)) => {
                info!(trial = %self.label, "test set {}: {why}", if kept { "scored" } else { "not scored" });
                kept
            }
            Err(why) => {
                warn!(trial = %self.label, "test set not scored: {why}");
                false
            }
        }
    }

    fn resume_from(&mut self) -> Option<PathBuf> {
        self.resume.take()
    }

    fn writes_checkpoints(&self) -> bool {
        self.checkpoints.is_some()
    }

    fn takes_snapshots(&self) -> bool {
        self.checkpoints.is_some()
    }

    fn settle(&mut self) {
        self.settle_in_flight();
    }

    fn on_snapshot(&mut self, snapshot: crate::training_checkpoint::Snapshot) {
        self.snapshot = Some(snapshot);
    }

    fn checkpoint_dir(&mut self, epoch: usize) -> Option<PathBuf> {
        self.checkpoints.as_ref().map(|(_, staging)| staging.join(format!("e{epoch}")))
    }

    fn on_samples(&mut self, samples: usize) {
        super::telemetry::train_samples(&super::device_name(self.device), samples);
        if let Some(link) = &self.ctx.options.slot {
            link.add_samples(samples);
        }
    }

    fn on_batch(&mut self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }
}
