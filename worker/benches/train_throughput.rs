//! Train throughput of the worker against PyTorch + transformers (eager) on the same task:
//! MiniLM-L6, the first 2,000 SST-2 training sentences, batch 32, max_seq_length 128,
//! lr 5e-5, 1 epoch, the same number of CPU threads; then dev accuracy (872 sentences).
//!
//! `cargo bench -p bertsweep-worker --bench train_throughput`
//! Environment: SST2_DIR (default `<workspace>/../shared/data/sst2`), BENCH_THREADS (2),
//! BENCH_SAMPLES (2000), BERTSWEEP_MODEL_DIR / BERTSWEEP_PYTHON (see tests/common).
//! The reference is `worker/bench/hf_train_throughput.py`. Like is compared with like: four
//! rows, the worker and PyTorch each without length grouping (both defaults) and each with
//! transformers' `LengthGroupedSampler` rule (the worker's `group_by_length`, PyTorch's
//! `LengthGroupedSampler`), and one ratio per pair. Prints figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
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

    let mut ratios = Vec::new();
    for group_by_length in [false, true] {
        let cfg = TrialConfig { group_by_length, ..cfg.clone() };
        let outcome = run_trial(&cfg, Device::Cpu, &mut RunToEnd, None).expect("worker trial");
        let m = &outcome.last_metrics;
        let (ours, acc) = (m["train_samples_per_second"], m["eval_accuracy"]);
        let grouping = if group_by_length { "length-grouped" } else { "random order (default)" };
        println!("worker (tch), {grouping}: {ours:.1} train samples/s, dev accuracy {acc:.4}");

        let mut command = Command::new(&python);
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
            "pytorch+transformers eager ({}), {grouping}: {theirs:.1} train samples/s, dev accuracy {:.4}",
            reference["optimizer"].as_str().unwrap_or("?"),
            reference["eval_accuracy"].as_f64().unwrap()
        );
        ratios.push((grouping, ours / theirs));
    }
    for (grouping, ratio) in ratios {
        println!("ratio worker / pytorch, {grouping}: {ratio:.2}x (target >= 1.25x)");
    }
}
