//! The contract between the registry and the store: the changes an operation asks to persist
//! ([`WriteOp`]) and the rows the store hands back at start-up ([`Snapshot`]). Both modules
//! depend on this one, and neither on the other.

use crate::model::{Metrics, StudyRecord, StudyState, Trial, WorkerRecord};

/// One change to persist.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Insert or replace a study row.
    Study(StudyRecord),
    /// Insert or replace a trial row (not its epochs); also published to watchers.
    Trial {
        /// The trial as it is now (boxed: it is far larger than the other variants).
        trial: Box<Trial>,
        /// Its study's state, for the watchers' events.
        study_state: StudyState,
    },
    /// Insert one epoch's metrics of the lease `lease_token` (attempt `attempt`).
    Epoch {
        /// The trial's global id.
        trial_id: u64,
        /// The lease that reported it; epochs are keyed by lease, so attempts stay apart.
        lease_token: u64,
        /// The attempt that lease was.
        attempt: u32,
        /// The epoch (from 1).
        epoch: u32,
        /// What was reported.
        metrics: Metrics,
    },
    /// Move a running trial's lease expiry (heartbeats; not published).
    Lease {
        /// The trial's global id.
        trial_id: u64,
        /// The new expiry, wall-clock ms.
        expires_ms: i64,
    },
    /// Insert a worker.
    Worker(WorkerRecord),
    /// Delete a worker not seen for the expiry period.
    ForgetWorker(String),
    /// Delete a study with its trials and their epochs (`study delete`).
    DeleteStudy {
        /// The study's id.
        study_id: u64,
        /// Its trials' ids: their epochs and lease moves queued in the same commit are dropped
        /// rather than written after the rows they belong to are gone.
        trial_ids: Vec<u64>,
    },
}

/// Rows loaded from the store at start-up.
pub struct Snapshot {
    /// Every study row.
    pub studies: Vec<StudyRecord>,
    /// Trials with their epochs, in (study id, number) order.
    pub trials: Vec<Trial>,
    /// Every registered worker.
    pub workers: Vec<WorkerRecord>,
    /// The first lease token this run may issue (a range above it was reserved durably).
    pub lease_tokens_from: u64,
}
