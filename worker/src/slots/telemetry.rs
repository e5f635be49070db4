//! The supervisor's per-slot metrics (`--metrics-listen` with `--slots`): training examples
//! per slot as a counter, so `rate()` measures every slot over one common window; device
//! memory each slot's process holds and its trial's peak; whether it trains; restarts.

/// Training examples each slot stepped through (counter, by slot).
pub const SLOT_SAMPLES: &str = "bertsweep_worker_slot_train_samples_total";
/// Device memory a slot's process holds now (gauge, by slot; NVML or resident set).
pub const SLOT_MEMORY: &str = "bertsweep_worker_slot_device_memory_bytes";
/// The running trial's peak device memory (gauge, by slot).
pub const SLOT_PEAK: &str = "bertsweep_worker_slot_trial_peak_memory_bytes";
/// 1 while a slot trains an admitted trial (gauge, by slot).
pub const SLOT_BUSY: &str = "bertsweep_worker_slot_busy";
/// Times a slot's process died and was started again (counter, by slot).
pub const SLOT_RESTARTS: &str = "bertsweep_worker_slot_restarts_total";

/// Describes the metrics (the `# HELP` lines).
pub fn describe() {
    metrics::describe_counter!(SLOT_SAMPLES, "Training examples each slot stepped through; rate() gives examples/s.");
    metrics::describe_gauge!(SLOT_MEMORY, metrics::Unit::Bytes, "Device memory a slot's process holds now.");
    metrics::describe_gauge!(SLOT_PEAK, metrics::Unit::Bytes, "Peak device memory of a slot's running trial.");
    metrics::describe_gauge!(SLOT_BUSY, "1 while the slot trains a trial.");
    metrics::describe_counter!(SLOT_RESTARTS, "Times a slot's process died and was started again.");
}

/// Declares a slot's series at zero, so they exist before its first trial.
pub fn slot_started(slot: &str) {
    metrics::counter!(SLOT_SAMPLES, "slot" => slot.to_string()).increment(0);
    metrics::counter!(SLOT_RESTARTS, "slot" => slot.to_string()).increment(0);
    metrics::gauge!(SLOT_BUSY, "slot" => slot.to_string()).set(0.0);
}

/// `n` more training examples on `slot`.
pub fn slot_samples(slot: &str, n: u64) {
    metrics::counter!(SLOT_SAMPLES, "slot" => slot.to_string()).increment(n);
}

/// What `slot`'s process holds now.
pub fn slot_memory(slot: &str, bytes: u64) {
    metrics::gauge!(SLOT_MEMORY, "slot" => slot.to_string()).set(bytes as f64);
}

/// The peak of `slot`'s running trial.
pub fn slot_peak(slot: &str, bytes: u64) {
    metrics::gauge!(SLOT_PEAK, "slot" => slot.to_string()).set(bytes as f64);
}

/// Whether `slot` trains now.
pub fn slot_busy(slot: &str, busy: bool) {
    metrics::gauge!(SLOT_BUSY, "slot" => slot.to_string()).set(if busy { 1.0 } else { 0.0 });
}

/// `slot`'s process was started again.
pub fn slot_restarted(slot: &str) {
    metrics::counter!(SLOT_RESTARTS, "slot" => slot.to_string()).increment(1);
}
