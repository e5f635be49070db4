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
    Trial { trial: Trial, study_state: StudyState },
    /// Insert one epoch's metrics of the lease `lease_token` (attempt `attempt`).
    Epoch { trial_id: u64, lease_token: u64, attempt: u32, epoch: u32, metrics: Metrics },
    /// Move a running trial's lease expiry (heartbeats; not published).
    Lease { trial_id: u64, expires_ms: i64 },
    /// Insert a worker.
    Worker(WorkerRecord),
}

/// Rows loaded from the store at start-up.
pub struct Snapshot {
    pub studies: Vec<StudyRecord>,
    /// Trials with their epochs, in (study id, number) order.
    pub trials: Vec<Trial>,
    pub workers: Vec<WorkerRecord>,
}
