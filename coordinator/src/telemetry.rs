//! The coordinator's Prometheus metrics (served by `serve --metrics-listen`): names, the
//! counters bumped where things happen, and the gauges read from the registry at scrape time.
//! Every `metrics::` call is a no-op until [`bertsweep_telemetry::install`] ran, so tests and
//! servers without a metrics address pay nothing.

use crate::model::{Counts, StudyState, TrialState};
pub use bertsweep_core::telemetry::{
    lease_expired, requeued, trial_ended, LEASE_EXPIRIES, REQUEUES, TRIALS_ENDED, TRIALS_PRUNED, TRIAL_DURATION,
};

/// Trials by study and state (gauge, refreshed at scrape time).
pub const TRIALS: &str = "bertsweep_trials";
/// Running trials over all studies (gauge).
pub const RUNNING_TRIALS: &str = "bertsweep_running_trials";
/// Studies by state (gauge).
pub const STUDIES: &str = "bertsweep_studies";
/// Workers that asked for work or heartbeated within a long-poll plus a lease TTL (gauge).
pub const CONNECTED_WORKERS: &str = "bertsweep_connected_workers";
/// Trials that could start now, by running study: pending, promotable and not yet sampled
/// within the budget, capped by free `parallel_trials` places; 0 once the study has ended
/// (gauge; what KEDA scales on).
pub const TRIAL_DEMAND: &str = "bertsweep_trial_demand";
/// 1 while the database cannot commit (health NOT_SERVING, state changes refused), else 0.
pub const DATABASE_FAILING: &str = "bertsweep_database_failing";
/// Free bytes on the data disk (database and blobs), as the coordinator may use them (gauge).
pub const DATA_DISK_FREE: &str = "bertsweep_data_disk_free_bytes";
/// Size of the data disk (gauge).
pub const DATA_DISK_SIZE: &str = "bertsweep_data_disk_size_bytes";
/// One write batch's SQLite transaction, begin to commit (histogram, seconds).
pub const DB_COMMIT: &str = "bertsweep_db_commit_seconds";

/// Blob collections that deleted nothing because a root's manifest could not be read (counter).
pub const COLLECTIONS_REFUSED: &str = "bertsweep_blob_collections_refused_total";
/// Stored blobs found not to match their digest and quarantined (counter).
pub const BLOBS_CORRUPT: &str = "bertsweep_blobs_corrupt_total";

/// Describes every metric (the `# HELP` lines).
pub fn describe() {
    metrics::describe_gauge!(TRIALS, "Trials by study and state.");
    metrics::describe_gauge!(RUNNING_TRIALS, "Running trials over all studies.");
    metrics::describe_gauge!(STUDIES, "Studies by state.");
    metrics::describe_gauge!(CONNECTED_WORKERS, "Workers seen (asking for work or heartbeating) recently.");
    metrics::describe_gauge!(TRIAL_DEMAND, "Trials that could start now if workers asked, by running study.");
    metrics::describe_gauge!(DATABASE_FAILING, "1 while the database cannot commit, else 0.");
    metrics::describe_gauge!(DATA_DISK_FREE, metrics::Unit::Bytes, "Free bytes on the data disk.");
    metrics::describe_gauge!(DATA_DISK_SIZE, metrics::Unit::Bytes, "Size of the data disk.");
    metrics::describe_counter!(TRIALS_ENDED, "Trials that reached a final state, by state.");
    metrics::describe_counter!(TRIALS_PRUNED, "Trials stopped by early stopping, by study.");
    metrics::describe_histogram!(TRIAL_DURATION, metrics::Unit::Seconds, "First lease to final state.");
    metrics::describe_counter!(LEASE_EXPIRIES, "Leases that expired without a heartbeat.");
    metrics::describe_counter!(REQUEUES, "Trials put back in the queue, by reason.");
    metrics::describe_histogram!(DB_COMMIT, metrics::Unit::Seconds, "SQLite write batch, begin to commit.");
    metrics::describe_counter!(COLLECTIONS_REFUSED, "Blob collections that deleted nothing: a root was unreadable.");
    metrics::describe_counter!(BLOBS_CORRUPT, "Stored blobs that did not match their sha256 and were quarantined.");
    // Counters exist from the start, at 0.
    metrics::counter!(COLLECTIONS_REFUSED).increment(0);
    metrics::counter!(BLOBS_CORRUPT).increment(0);
    metrics::counter!(LEASE_EXPIRIES).increment(0);
    for reason in ["lease_expired", "released", "retryable_error"] {
        metrics::counter!(REQUEUES, "reason" => reason).increment(0);
    }
    for state in [TrialState::Completed, TrialState::Pruned, TrialState::Failed, TrialState::Stopped] {
        metrics::counter!(TRIALS_ENDED, "state" => state.as_str()).increment(0);
    }
    metrics::describe_histogram!(
        bertsweep_telemetry::rpc::RPC_DURATION,
        metrics::Unit::Seconds,
        "Unary gRPC calls by method and status code."
    );
    metrics::describe_histogram!(
        bertsweep_telemetry::rpc::RPC_STREAM_DURATION,
        metrics::Unit::Seconds,
        "gRPC streams and long polls (AcquireTrial) by method and status code: their whole life."
    );
}

/// A blob collection deleted nothing because a root was unreadable.
pub fn collection_refused() {
    metrics::counter!(COLLECTIONS_REFUSED).increment(1);
}

/// A stored blob did not match its digest and was quarantined.
pub fn blob_corrupt() {
    metrics::counter!(BLOBS_CORRUPT).increment(1);
}

/// A write batch took `seconds` from begin to commit.
pub fn db_commit(seconds: f64) {
    metrics::histogram!(DB_COMMIT).record(seconds);
}

const TRIAL_STATES: [TrialState; 7] = [
    TrialState::Pending,
    TrialState::Running,
    TrialState::Completed,
    TrialState::Pruned,
    TrialState::Failed,
    TrialState::Stopped,
    TrialState::Paused,
];

fn count_of(counts: &Counts, state: TrialState) -> u32 {
    match state {
        TrialState::Pending => counts.pending,
        TrialState::Running => counts.running,
        TrialState::Completed => counts.completed,
        TrialState::Pruned => counts.pruned,
        TrialState::Failed => counts.failed,
        TrialState::Stopped => counts.stopped,
        TrialState::Paused => counts.paused,
    }
}

/// Whether a study that ended at `finished_ms` (None: running) still has per-study series.
fn shows_series(finished_ms: Option<i64>, now_ms: i64) -> bool {
    finished_ms.is_none_or(|at| now_ms - at <= ENDED_STUDY_SERIES_MS)
}

/// Sets the health gauges: whether the database is failing to commit, and the data disk's
/// (free, total) bytes when they could be read.
pub fn set_health(database_failing: bool, disk: Option<(u64, u64)>) {
    metrics::gauge!(DATABASE_FAILING).set(if database_failing { 1.0 } else { 0.0 });
    if let Some((free, total)) = disk {
        metrics::gauge!(DATA_DISK_FREE).set(free as f64);
        metrics::gauge!(DATA_DISK_SIZE).set(total as f64);
    }
}

/// How long an ended study keeps its per-study series (at their final values, demand 0) before
/// they leave /metrics: long enough for a scrape or two to see the end.
pub const ENDED_STUDY_SERIES_MS: i64 = 5 * 60 * 1000;

/// A gauge not set for this long leaves /metrics (every gauge still wanted is set at each
/// scrape, so only ended studies' series age out).
pub const GAUGE_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// Sets the state gauges from the registry's `studies` and `connected` workers at wall-clock
/// `now_ms`; per-study series are set for studies running or ended less than
/// [`ENDED_STUDY_SERIES_MS`] ago, so that a long-lived coordinator's /metrics does not grow with
/// every study it ever ran.
pub fn set_gauges(studies: &[crate::registry::StudyGauges<'_>], connected: usize, now_ms: i64) {
    let mut running = 0u64;
    let mut by_state = std::collections::BTreeMap::<&'static str, u64>::new();
    for state in [StudyState::Running, StudyState::Completed, StudyState::Stopped, StudyState::Failed] {
        by_state.insert(state.as_str(), 0);
    }
    for study in studies {
        let (name, state, counts) = (study.name, study.state, &study.counts);
        *by_state.entry(state.as_str()).or_default() += 1;
        running += u64::from(counts.running);
        if !shows_series(study.finished_ms, now_ms) {
            continue;
        }
        // 0 once the study has ended, so that an autoscaler stops at once.
        metrics::gauge!(TRIAL_DEMAND, "study" => name.to_string()).set(f64::from(study.demand));
        for trial_state in TRIAL_STATES {
            metrics::gauge!(TRIALS, "study" => name.to_string(), "state" => trial_state.as_str())
                .set(f64::from(count_of(counts, trial_state)));
        }
    }
    for (state, n) in by_state {
        metrics::gauge!(STUDIES, "state" => state).set(n as f64);
    }
    metrics::gauge!(RUNNING_TRIALS).set(running as f64);
    metrics::gauge!(CONNECTED_WORKERS).set(connected as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_studies_keep_their_series_for_a_while_only() {
        assert!(shows_series(None, 10_000_000), "a running study always");
        assert!(shows_series(Some(1_000), 1_000 + ENDED_STUDY_SERIES_MS), "just ended: the end is seen");
        assert!(!shows_series(Some(1_000), 1_001 + ENDED_STUDY_SERIES_MS), "then its series go");
    }
}
