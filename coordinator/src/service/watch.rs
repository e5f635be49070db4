//! One WatchStudy stream: the study's trials as a snapshot read in small chunks, then every
//! committed change, then a final event without a trial once the study has ended.
//!
//! Memory per watcher is bounded whatever the study's size or the client's speed: the task holds
//! at most one chunk of trials and [`WATCH_BUFFER`] encoded events, and a client that stops
//! reading only stalls its own task (which then falls behind the broadcast and later resyncs
//! from a fresh snapshot instead of queueing events).

use std::sync::Arc;

use bertsweep_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::convert::{study_state_to_proto, trial_to_proto};
use super::Shared;
use crate::model::StudyState;
use crate::store::CommittedChange;

/// Events queued for one watcher before its task waits for the client.
pub const WATCH_BUFFER: usize = 32;

/// Trials read from the registry (under its lock) at a time while sending a snapshot.
const SNAPSHOT_CHUNK: usize = 64;

type Sink = mpsc::Sender<Result<pb::TrialEvent, Status>>;

/// Runs the stream until the study ends, the client leaves, or the server shuts down, then
/// lets the allocator hand what the stream used back to the system.
pub async fn run(shared: Arc<Shared>, name: String, events: broadcast::Receiver<CommittedChange>, tx: Sink) {
    stream(&shared, &name, events, &tx).await;
    drop(tx);
    super::memory::release_freed_memory();
}

async fn stream(shared: &Shared, name: &str, mut events: broadcast::Receiver<CommittedChange>, tx: &Sink) {
    match send_snapshot(shared, name, tx).await {
        Some(StudyState::Running) => {}
        Some(ended) => return send_final(tx, ended).await,
        None => return,
    }
    loop {
        match events.recv().await {
            Ok(CommittedChange::Trial { trial, study_state }) if trial.study == name => {
                let event = pb::TrialEvent {
                    trial: Some(trial_to_proto(&trial)),
                    snapshot: false,
                    study_state: study_state_to_proto(study_state) as i32,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            Ok(CommittedChange::Study(record)) if record.name == name && record.state != StudyState::Running => {
                return send_final(tx, record.state).await;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                crate::store::warn_lagged(skipped);
                match send_snapshot(shared, name, tx).await {
                    Some(StudyState::Running) => {}
                    Some(ended) => return send_final(tx, ended).await,
                    None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends every trial as a snapshot row, a chunk at a time; returns the study's state after the
/// last chunk, or None when the client left.
async fn send_snapshot(shared: &Shared, name: &str, tx: &Sink) -> Option<StudyState> {
    let mut from = 0u32;
    loop {
        let (chunk, total, state) = {
            let registry = shared.lock();
            let (chunk, total) = registry.trials_page(name, from, SNAPSHOT_CHUNK).ok()?;
            (chunk, total, registry.study_state(name).ok()?)
        };
        let study_state = study_state_to_proto(state) as i32;
        for trial in &chunk {
            let event = pb::TrialEvent { trial: Some(trial_to_proto(trial)), snapshot: true, study_state };
            tx.send(Ok(event)).await.ok()?;
        }
        from += chunk.len() as u32;
        if chunk.is_empty() || from >= total {
            return Some(state);
        }
    }
}

/// The last event of a stream: no trial, the study's terminal state.
async fn send_final(tx: &Sink, state: StudyState) {
    let event = pb::TrialEvent { trial: None, snapshot: false, study_state: study_state_to_proto(state) as i32 };
    let _ = tx.send(Ok(event)).await;
}
