//! Bridges the training thread to the coordinator: per-epoch reports, abort flags, progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tracing::info;

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
        RemoteObserver { handle, ctx, trial: a.lease, label, epochs, lease, bar, device, epoch_started }
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
        let verdict = self.handle.block_on(self.ctx.coordinator.report(&self.trial, epoch, metrics));
        self.epoch_started = std::time::Instant::now();
        match verdict {
            Verdict::Continue => EpochDecision::Continue,
            Verdict::Stop(why) => {
                self.lease.abort(AbortReason::Stopped(why));
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

    fn on_batch(&mut self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }
}
