//! The metrics the lifecycle moves where it happens (trial ends, lease expiries, requeues).
//! Every `metrics::` call is a no-op until a recorder is installed (the coordinator's
//! `--metrics-listen`), so tests and embedders pay nothing; the coordinator describes them.

use crate::model::TrialState;

/// Trials that ended, by final state (counter).
pub const TRIALS_ENDED: &str = "bertsweep_trials_ended_total";
/// Trials stopped early by the study's early-stopping rule, by study (counter).
pub const TRIALS_PRUNED: &str = "bertsweep_trials_pruned_total";
/// From a trial's first lease to its end, by final state (histogram, seconds).
pub const TRIAL_DURATION: &str = "bertsweep_trial_duration_seconds";
/// Leases that expired without a heartbeat (counter).
pub const LEASE_EXPIRIES: &str = "bertsweep_lease_expiries_total";
/// Trials put back in the queue, by reason (lease_expired, released, retryable_error).
pub const REQUEUES: &str = "bertsweep_requeues_total";

/// A trial reached a final state `state` after `seconds` since its first lease.
pub fn trial_ended(study: &str, state: TrialState, seconds: f64) {
    metrics::counter!(TRIALS_ENDED, "state" => state.as_str()).increment(1);
    metrics::histogram!(TRIAL_DURATION, "state" => state.as_str()).record(seconds.max(0.0));
    if state == TrialState::Pruned {
        metrics::counter!(TRIALS_PRUNED, "study" => study.to_string()).increment(1);
    }
}

/// A lease expired.
pub fn lease_expired() {
    metrics::counter!(LEASE_EXPIRIES).increment(1);
}

/// A trial went back to the queue for `reason`.
pub fn requeued(reason: &'static str) {
    metrics::counter!(REQUEUES, "reason" => reason).increment(1);
}
