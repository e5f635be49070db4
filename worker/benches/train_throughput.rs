//! Train throughput of the worker against PyTorch + transformers (eager) on the same task:
//! MiniLM-L6, the first 2,000 SST-2 training sentences, batch 32, max_seq_length 128,
//! lr 5e-5, 1 epoch, the same number of CPU threads; then dev accuracy (872 sentences).
//!
//! `cargo bench -p bertsweep-worker --bench train_throughput`
//! Environment: SST2_DIR (default `<workspace>/../shared/data/sst2`), BENCH_THREADS (2),
//! BENCH_SAMPLES (2000), BENCH_REPEATS (3), BERTSWEEP_MODEL_DIR / BERTSWEEP_PYTHON (see tests/common).
//! The reference is `worker/bench/hf_train_throughput.py`. Like is compared with like: four
//! rows, the worker and PyTorch each without length grouping (both defaults) and each with
//! transformers' `LengthGroupedSampler` rule (the worker's `group_by_length`, PyTorch's
//! `LengthGroupedSampler`), repeated BENCH_REPEATS times (3) with the sides alternating, and
//! per row the medians, the ratio of medians and the range of per-repeat ratios. Prints
//! figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bertsweep_worker::device::set_cpu_threads;
use bertsweep_worker::{run_trial, RunToEnd, TrialConfig};
use tch::Device;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (Some(python), Some(model_dir)) = (common::python(), common::minilm_dir()) else {
        return;
    };
    let sst2 = std::env::var_os("SST2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::workspace_root().join("../shared/data/sst2"));
    let (train_file, dev_file) = (sst2.join("train.tsv"), sst2.join("dev.tsv"));
    if !train_file.is_file() || !dev_file.is_file() {
        eprintln!("skipping: no SST-2 train.tsv/dev.tsv in {} (set SST2_DIR)", sst2.display());
        return;
    }
    let threads: usize = env_or("BENCH_THREADS", 2);
    let samples: usize = env_or("BENCH_SAMPLES", 2000);
    let cfg = TrialConfig {
        model_dir: model_dir.clone(),
        train_file: train_file.clone(),
        validation_file: dev_file.clone(),
        max_seq_length: 128,
        max_train_samples: Some(samples),
        learning_rate: 5e-5,
        num_train_epochs: 1,
        per_device_train_batch_size: 32,
        seed: 42,
        ..TrialConfig::default()
    };
    println!("MiniLM-L6, {samples} SST-2 sentences, batch 32, max_seq_length 128, lr 5e-5, 1 epoch, {threads} threads, fp32 CPU");
    set_cpu_threads(Some(threads));

    // Rows alternate worker / PyTorch within each repeat, so drift on this shared machine
    // touches both sides alike; medians are reported (single runs vary by about ±15 %).
    let repeats: usize = env_or("BENCH_REPEATS", 3).max(1);
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for repeat in 1..=repeats {
        for (row, group_by_length) in [false, true].into_iter().enumerate() {
            let grouping = if group_by_length { "length-grouped" } else { "random order (default)" };
            let ours = worker_samples_per_second(&TrialConfig { group_by_length, ..cfg.clone() }, grouping, repeat);
            let theirs = pytorch_samples_per_second(
                &python,
                &model_dir,
                &train_file,
                &dev_file,
                samples,
                threads,
                group_by_length,
                grouping,
                repeat,
            );
            if rows.len() <= row {
                rows.push((grouping, Vec::new(), Vec::new()));
            }
            rows[row].1.push(ours);
            rows[row].2.push(theirs);
        }
    }
    for (grouping, ours, theirs) in rows {
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
        let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        println!(
            "{grouping}: worker median {:.1} samples/s, pytorch median {:.1}; ratio of medians {:.2}x (per repeat {low:.2}-{high:.2}x over {repeats}; target >= 1.25x)",
            median(&ours),
            median(&theirs),
            median(&ours) / median(&theirs)
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// One worker trial in this process; prints and returns its training samples/s.
fn worker_samples_per_second(cfg: &TrialConfig, grouping: &str, repeat: usize) -> f64 {
    let outcome = run_trial(cfg, Device::Cpu, &mut RunToEnd, None).expect("worker trial");
    let m = &outcome.last_metrics;
    let (ours, acc) = (m["train_samples_per_second"], m["eval_accuracy"]);
    println!("[{repeat}] worker (tch), {grouping}: {ours:.1} train samples/s, dev accuracy {acc:.4}");
    ours
}

/// One run of the reference script; prints and returns its training samples/s.
#[allow(clippy::too_many_arguments)]
fn pytorch_samples_per_second(
    python: &Path,
    model_dir: &Path,
    train_file: &Path,
    dev_file: &Path,
    samples: usize,
    threads: usize,
    group_by_length: bool,
    grouping: &str,
    repeat: usize,
) -> f64 {
    let mut command = Command::new(python);
    command
        .arg(common::workspace_root().join("worker/bench/hf_train_throughput.py"))
        .args(["--model".as_ref(), model_dir.as_os_str()])
        .args(["--train".as_ref(), train_file.as_os_str()])
        .args(["--dev".as_ref(), dev_file.as_os_str()])
        .args(["--samples", &samples.to_string(), "--threads", &threads.to_string()])
        .args(["--batch-size", "32", "--max-seq-length", "128", "--lr", "5e-5", "--epochs", "1", "--seed", "42"])
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false");
    if group_by_length {
        command.arg("--group-by-length");
    }
    let output = command.output().expect("run the reference python");
    if !output.status.success() {
        eprintln!("reference failed:\n{}", String::from_utf8_lossy(&output.stderr));
        std::process::exit(1);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reference: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("reference JSON line");
    let theirs = reference["train_samples_per_second"].as_f64().unwrap();
    println!(
        "[{repeat}] pytorch+transformers eager ({}), {grouping}: {theirs:.1} train samples/s, dev accuracy {:.4}",
        reference["optimizer"].as_str().unwrap_or("?"),
        reference["eval_accuracy"].as_f64().unwrap()
    );
    theirs
}
