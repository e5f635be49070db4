//! The hooks a caller (the gRPC runtime, the CLI, tests) follows and steers a trial with:
//! [`TrainObserver`], its per-epoch answer [`EpochDecision`], and [`RunToEnd`], which lets a
//! trial run to its last epoch.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::training_checkpoint::Snapshot;

/// What the observer wants after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochDecision {
    /// Train the next epoch.
    Continue,
    /// Stop now (early stopping); the trial ends with what it has.
    Stop,
}

/// Hooks the caller (the gRPC runtime, the CLI) uses to follow and steer a trial.
pub trait TrainObserver {
    /// Called after each epoch's evaluation with the epoch (1-based) and its metrics.
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision;
    /// Polled between batches: true ends the trial at once (lost lease, SIGTERM).
    fn should_abort(&self) -> bool;
    /// Called after each optimizer step with steps done and total steps of the whole run.
    fn on_batch(&mut self, _done: usize, _total: usize) {}
    /// Called after each optimizer step with the number of examples it trained on.
    fn on_samples(&mut self, _samples: usize) {}
    /// Asked once before training: a training checkpoint's directory
    /// ([`crate::training_checkpoint`]) to continue from. One that cannot be used is logged and
    /// the trial starts from epoch 1.
    fn resume_from(&mut self) -> Option<PathBuf> {
        None
    }
    /// Whether [`TrainObserver::checkpoint_dir`] may ask for checkpoints (the best epoch's
    /// weights are then kept, so a resumed trial can still export them).
    fn writes_checkpoints(&self) -> bool {
        false
    }
    /// Asked after each epoch's evaluation, before [`TrainObserver::on_epoch`]: where to write
    /// that epoch's checkpoint (a directory that does not exist yet), or `None` for none.
    fn checkpoint_dir(&mut self, _epoch: usize) -> Option<PathBuf> {
        None
    }
    /// Whether checkpoints are handed over as host [`Snapshot`]s
    /// ([`TrainObserver::on_snapshot`]) to be written and stored off the training thread,
    /// instead of being written into [`TrainObserver::checkpoint_dir`] before the next epoch.
    fn takes_snapshots(&self) -> bool {
        false
    }
    /// Called before a snapshot is taken: returns once the earlier epochs' checkpoints are
    /// dealt with (one snapshot in host memory at a time).
    fn settle(&mut self) {}

    /// Whether to score the best epoch's model on the test file (when the trial has one),
    /// given its objective value: a coordinator's worker asks whether the model will be kept.
    fn wants_test_scores(&mut self, _best_value: f64) -> bool {
        true
    }
    /// Epoch `snapshot.epoch()`'s checkpoint, before [`TrainObserver::on_epoch`] of that epoch.
    fn on_snapshot(&mut self, _snapshot: Snapshot) {}
}

/// An observer that lets every trial run to its last epoch (benchmarks, tests, library use).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToEnd;

impl TrainObserver for RunToEnd {
    fn on_epoch(&mut self, _epoch: usize, _metrics: &BTreeMap<String, f64>) -> EpochDecision {
        EpochDecision::Continue
    }

    fn should_abort(&self) -> bool {
        false
    }
}
