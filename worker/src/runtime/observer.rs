//! Bridges the training thread to the coordinator: per-epoch reports, abort flags, progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tracing::{info, warn};

use super::checkpoints::CheckpointStore;
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

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

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
    /// The device's name, for the worker's metrics.
    device: String,
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
}

impl RemoteObserver {
    pub(super) fn new(
        handle: Handle,
        ctx: Arc<Context>,
        a: &Assignment,
        lease: Arc<LeaseState>,
        epochs: usize,
        device: String,
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
        let dir = staging.join(format!("e{epoch}"));
        if !dir.join(crate::resume::STATE_FILE).exists() {
            return String::new();
        }
        let stored = self.handle.block_on(store.put(&self.assignment, epoch, &dir));
        let _ = std::fs::remove_dir_all(&dir);
        match stored {
            Ok(reference) => reference,
            Err(e) => {
                warn!(trial = %self.label, epoch, "checkpoint not stored (a retry would resume from the previous one): {e}");
                String::new()
            }
        }
    }

    /// Removes the progress bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn summary(metrics: &BTreeMap<String, f64>) -> String {
    let pick = ["eval_accuracy", "eval_f1", "eval_loss", "train_loss", "train_samples_per_second"];
    pick.iter().filter_map(|k| metrics.get(*k).map(|v| format!("{k}={v:.4}"))).collect::<Vec<_>>().join(" ")
}

impl TrainObserver for RemoteObserver {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        super::telemetry::epoch(&self.device, self.epoch_started.elapsed().as_secs_f64(), metrics);
        let line = format!("epoch {epoch}/{}: {}", self.epochs, summary(metrics));
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.clone());
                bar.println(format!("trial {} {line}", self.label));
            }
            None => info!(trial = %self.label, "{line}"),
        }
        let checkpoint = self.store_checkpoint(epoch);
        let verdict = self.handle.block_on(self.ctx.coordinator.report(&self.trial, epoch, metrics, &checkpoint));
        if !checkpoint.is_empty() && matches!(verdict, Verdict::Continue | Verdict::Stop(_) | Verdict::Pause(_)) {
            // The coordinator holds the new one: the previous one of this trial is not needed.
            let previous = self.latest_checkpoint.replace(checkpoint.clone());
            if let (Some(previous), Some((store, _))) = (previous, &self.checkpoints) {
                self.handle.block_on(store.discard(&self.assignment, &previous));
            }
        }
        self.epoch_started = std::time::Instant::now();
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

    fn should_abort(&self) -> bool {
        self.lease.is_aborted()
    }

    fn resume_from(&mut self) -> Option<PathBuf> {
        self.resume.take()
    }

    fn writes_checkpoints(&self) -> bool {
        self.checkpoints.is_some()
    }

    fn checkpoint_dir(&mut self, epoch: usize) -> Option<PathBuf> {
        self.checkpoints.as_ref().map(|(_, staging)| staging.join(format!("e{epoch}")))
    }

    fn on_batch(&mut self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }
}
