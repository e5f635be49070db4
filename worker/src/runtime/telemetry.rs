//! The worker's own Prometheus metrics (`bertsweep-worker --metrics-listen ADDR`, opt-in):
//! training speed and epoch time per device, trial outcomes, and GPU memory read from NVML at
//! scrape time. Every call is a no-op unless the recorder was installed.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Train samples per second of the last epoch, by device (gauge).
pub const SAMPLES_PER_SECOND: &str = "bertsweep_worker_train_samples_per_second";
/// Wall time of one epoch, training and evaluation, by device (histogram, seconds).
pub const EPOCH_SECONDS: &str = "bertsweep_worker_epoch_seconds";
/// Trials this worker ended, by outcome (counter).
pub const TRIALS: &str = "bertsweep_worker_trials_total";
/// Training samples this worker has stepped through, by device (counter: `rate()` gives the
/// throughput over any window, where the gauge above shows only the last epoch's).
pub const TRAIN_SAMPLES: &str = "bertsweep_worker_train_samples_total";
/// Device memory in use on each GPU this worker trains on, as NVML reports it (gauge).
pub const GPU_MEMORY_USED: &str = "bertsweep_worker_gpu_memory_used_bytes";
/// Each GPU's total memory (gauge).
pub const GPU_MEMORY_TOTAL: &str = "bertsweep_worker_gpu_memory_total_bytes";

/// Describes the metrics (the `# HELP` lines).
pub fn describe() {
    metrics::describe_gauge!(SAMPLES_PER_SECOND, "Train samples per second of the last epoch, by device.");
    metrics::describe_histogram!(EPOCH_SECONDS, metrics::Unit::Seconds, "One epoch (train + evaluate), by device.");
    metrics::describe_counter!(TRIALS, "Trials this worker ended, by outcome.");
    metrics::describe_counter!(TRAIN_SAMPLES, "Training samples stepped through, by device.");
    // Counters exist from the start, at 0.
    for outcome in ["completed", "failed", "infeasible", "released", "stopped", "paused", "abandoned"] {
        metrics::counter!(TRIALS, "outcome" => outcome).increment(0);
    }
    metrics::describe_gauge!(GPU_MEMORY_USED, metrics::Unit::Bytes, "GPU memory in use (NVML), by device.");
    metrics::describe_gauge!(GPU_MEMORY_TOTAL, metrics::Unit::Bytes, "GPU memory in all (NVML), by device.");
}

/// One epoch on `device` took `seconds`; `metrics` are what it reported.
pub fn epoch(device: &str, seconds: f64, metrics: &BTreeMap<String, f64>) {
    metrics::histogram!(EPOCH_SECONDS, "device" => device.to_string()).record(seconds);
    if let Some(speed) = metrics.get("train_samples_per_second") {
        metrics::gauge!(SAMPLES_PER_SECOND, "device" => device.to_string()).set(*speed);
    }
}

/// `samples` more training samples were stepped through on `device`.
pub fn train_samples(device: &str, samples: usize) {
    metrics::counter!(TRAIN_SAMPLES, "device" => device.to_string()).increment(samples as u64);
}

/// A trial ended here as `outcome` (completed, failed, released, stopped, abandoned).
pub fn trial_ended(outcome: &'static str) {
    metrics::counter!(TRIALS, "outcome" => outcome).increment(1);
}

/// A refresher for the GPU memory gauges of CUDA devices `indices`, for the metrics endpoint.
/// NVML is loaded once, on the first scrape; without an NVIDIA driver the gauges stay absent.
pub fn gpu_memory_refresher(indices: Vec<u32>) -> Arc<dyn Fn() + Send + Sync> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    Arc::new(move || {
        if indices.is_empty() {
            return;
        }
        let Some(nvml) = NVML.get_or_init(|| nvml_wrapper::Nvml::init().ok()) else { return };
        for &index in &indices {
            let Ok(info) = nvml.device_by_index(index).and_then(|d| d.memory_info()) else { continue };
            let device = format!("cuda:{index}");
            metrics::gauge!(GPU_MEMORY_USED, "device" => device.clone()).set(info.used as f64);
            metrics::gauge!(GPU_MEMORY_TOTAL, "device" => device).set(info.total as f64);
        }
    })
}
