//! Coordinator throughput: full trial lifecycles (acquire → 2 progress reports → complete)
//! over loopback gRPC against a real `bertsweep serve` process on a file-backed SQLite, with 1,
//! 32 and 256 concurrent workers. Prints one JSON line per worker count, then Optuna's figure
//! for the same cycle on its SQLite storage (measured in the same run when the project's
//! virtual environment has optuna; otherwise the documented reference).
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench lifecycle` (BENCH_SECONDS sets the
//! measuring time per worker count, default 5).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_testkit::{ServeProcess, StudyToml, SEARCH_SPACE};
use tonic::transport::{Channel, Endpoint};

/// A random search as large as any run gets, with room for `workers` trials at once.
fn study(workers: usize) -> String {
    StudyToml::new("bench")
        .sampler("random")
        .budget(&format!("max_trials = 100000000\nparallel_trials = {workers}"))
        .parameters(SEARCH_SPACE)
        .parameters("[parameters.num_train_epochs]\nvalues = [2, 3, 4]")
        .to_string()
}

async fn connect(url: &str) -> CoordinatorClient<Channel> {
    let channel = Endpoint::from_shared(url.to_string()).unwrap().tcp_nodelay(true).connect().await.unwrap();
    CoordinatorClient::new(channel)
}

fn metrics(epoch: u32) -> HashMap<String, f64> {
    [
        ("eval_accuracy".to_string(), 0.5 + epoch as f64 / 10.0),
        ("eval_loss".to_string(), 0.7),
        ("train_loss".to_string(), 0.6),
    ]
    .into_iter()
    .collect()
}

/// One worker's loop: returns lifecycle latencies (ms) and the error count.
async fn worker(url: String, start_at: Instant, stop_at: Instant) -> (Vec<f64>, u64) {
    let mut c = connect(&url).await;
    let w = c
        .register_worker(pb::RegisterWorkerRequest {
            hostname: "bench".into(),
            devices: vec![],
            version: "bench".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < stop_at {
        let t0 = Instant::now();
        let result: Result<(), tonic::Status> = async {
            let a = c
                .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), study: String::new(), wait_ms: 1000 })
                .await?
                .into_inner()
                .assignment
                .ok_or_else(|| tonic::Status::not_found("no trial"))?;
            for epoch in 1..=2 {
                c.report_progress(pb::ReportProgressRequest {
                    trial_id: a.trial_id,
                    lease_token: a.lease_token,
                    epoch,
                    metrics: metrics(epoch),
                    checkpoint: String::new(),
                    peak_device_memory_bytes: 0,
                })
                .await?;
            }
            c.complete_trial(pb::CompleteTrialRequest {
                trial_id: a.trial_id,
                lease_token: a.lease_token,
                metrics: metrics(2),
                artifact: String::new(),
                peak_device_memory_bytes: 0,
                predictions: None,
                test_metrics: Default::default(),
            })
            .await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) if t0 >= start_at => latencies.push(t0.elapsed().as_secs_f64() * 1000.0),
            Ok(()) => {}
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(workers: usize, seconds: f64) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), &dir.path().join("bench.db"), &[])
        .expect("start bertsweep serve");
    let url = server.url.clone();
    let mut c = connect(&url).await;
    c.create_study(pb::CreateStudyRequest { spec_toml: study(workers) }).await.unwrap();
    let warmup = Duration::from_millis(500);
    let start_at = Instant::now() + warmup;
    let stop_at = start_at + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(url.clone(), start_at, stop_at))).collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await.unwrap();
        all.extend(lat);
        errors += err;
    }
    drop(server);
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    serde_json::json!({
        "workers": workers,
        "trials_per_s": (all.len() as f64 / seconds).round(),
        "p50_ms": (percentile(&all, 0.5) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&all, 0.99) * 100.0).round() / 100.0,
        "errors": errors,
    })
}

/// Optuna's ask → 2 × report → tell cycle on its RDB storage over SQLite, one process.
fn optuna_reference(seconds: f64) -> serde_json::Value {
    let python = std::env::var("BERTSWEEP_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_string());
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
import time, optuna, logging
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage="sqlite:///{db}", direction="maximize")
n = 0
t_end = time.time() + 0.5 + {seconds}
t0 = None
while time.time() < t_end:
    if t0 is None and time.time() > t_end - {seconds}:
        t0 = time.time(); n = 0
    t = study.ask()
    t.suggest_float("learning_rate", 1e-5, 5e-5, log=True)
    t.suggest_categorical("per_device_train_batch_size", [16, 32])
    t.suggest_categorical("num_train_epochs", [2, 3, 4])
    for epoch in (1, 2):
        t.report(0.5 + epoch / 10, epoch)
    study.tell(t, 0.7)
    n += 1
print(n / (time.time() - t0))
"#,
        db = dir.path().join("optuna.db").display()
    );
    match Command::new(&python).args(["-c", &script]).output() {
        Ok(out) if out.status.success() => {
            let rate: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(f64::NAN);
            serde_json::json!({"reference": "optuna RDBStorage sqlite, 1 process, measured now", "workers": 1, "trials_per_s": rate.round()})
        }
        _ => {
            serde_json::json!({"reference": "optuna RDBStorage sqlite (not installed here; figure measured on this machine with Optuna 5.0, see README)", "workers": 1, "trials_per_s": 33})
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run a tiny smoke then.
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 =
        std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if full { 5.0 } else { 0.3 });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for workers in [1, 32, 256] {
        let line = runtime.block_on(run(workers, seconds));
        println!("{line}");
    }
    if full {
        println!("{}", optuna_reference(seconds));
    }
}
