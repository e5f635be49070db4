//! Bridges the training thread to the coordinator: per-epoch reports, abort flags, progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use tokio::runtime::Handle;
use tonic::Code;
use tracing::info;

use super::client::{with_retry, Client};
use super::convert::metrics_to_proto;
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
    client: Client,
    trial_id: u64,
    lease_token: u64,
    lease_ttl: Duration,
    label: String,
    epochs: usize,
    lease: std::sync::Arc<LeaseState>,
    bar: Option<indicatif::ProgressBar>,
}

impl RemoteObserver {
    pub fn new(
        handle: Handle,
        client: Client,
        a: &pb::Assignment,
        lease: std::sync::Arc<LeaseState>,
        bars: Option<&indicatif::MultiProgress>,
        epochs: usize,
    ) -> Self {
        let label = format!("{}/{}", a.study, a.number);
        let bar = bars.map(|m| {
            let bar = m.add(indicatif::ProgressBar::new(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("trial {label}"));
            bar
        });
        RemoteObserver {
            handle,
            client,
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            lease_ttl: Duration::from_millis(a.lease_ttl_ms.max(1000) as u64),
            label,
            epochs,
            lease,
            bar,
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
    pick.iter()
        .filter_map(|k| metrics.get(*k).map(|v| format!("{k}={v:.4}")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl TrainObserver for RemoteObserver {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        let line = format!("epoch {epoch}/{}: {}", self.epochs, summary(metrics));
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.clone());
                bar.println(format!("trial {} {line}", self.label));
            }
            None => info!(trial = %self.label, "{line}"),
        }
        let request = pb::ReportProgressRequest {
            trial_id: self.trial_id,
            lease_token: self.lease_token,
            epoch: epoch as u32,
            metrics: metrics_to_proto(metrics),
        };
        let client = self.client.clone();
        let result = self.handle.block_on(with_retry("report progress", Some(self.lease_ttl), || {
            let mut c = client.clone();
            let req = request.clone();
            async move { c.report_progress(req).await }
        }));
        match result {
            Ok(r) if r.get_ref().decision == pb::Decision::Stop as i32 => {
                self.lease.abort(AbortReason::Stopped(r.into_inner().reason));
                EpochDecision::Stop
            }
            Ok(_) => EpochDecision::Continue,
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                self.lease.abort(AbortReason::LeaseLost(s.message().to_string()));
                EpochDecision::Stop
            }
            Err(s) if s.code() == Code::InvalidArgument => {
                self.lease.abort(AbortReason::Rejected(format!("metrics of epoch {epoch} refused: {}", s.message())));
                EpochDecision::Stop
            }
            // Still unreachable after a lease TTL: keep training; the completion call retries.
            Err(_) => EpochDecision::Continue,
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
