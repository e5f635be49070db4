//! Search efficiency on recorded SST-2 learning curves: replays the table recorded by
//! `scripts/record_curves.sh` (bench/curves/sst2-minilm-curves.json: MiniLM, 1,000 SST-2
//! sentences, every learning_rate × num_train_epochs × batch × seed with per-epoch dev
//! accuracy) through the real coordinator (in-process server, file-backed SQLite, gRPC over
//! loopback) with simulated workers that "train" by reporting the recorded per-epoch metrics,
//! then through Optuna by the same rules (`bench/curves/optuna_replay.py`, in the same run).
//!
//! The rules both sides share: a configuration is (learning_rate, num_train_epochs, batch
//! size) and runs with every recorded seed as its own trial (`algorithm.repeats = 2`); WORKERS
//! workers (default 4) run trials in parallel; the budget is TRIALS trials (default 24, i.e. 12
//! configurations; the grid runs all 48); cost = epochs reported. A configuration's true
//! quality is the mean over its seeds of the accuracy a worker reports (its best epoch). The
//! pick at any moment is the configuration with the best mean over its completed trials (what
//! `bertsweep best` returns with repeats); a run has "found" the optimum once its pick's true
//! quality is within 0.5 accuracy points of the table's best configuration. For each strategy
//! over 20 sampler seeds it prints the median epochs spent until then, how many runs got
//! there, and the median final pick's true quality.
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench search_efficiency`
//! (CURVES=path overrides the table; SEEDS=n the number of sampler seeds; WORKERS=n the
//! simulated workers; TRIALS=n the budget; PYTHON=path the interpreter with optuna, default
//! .venv/bin/python).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_coordinator::server::{self, ServerConfig};
use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_testkit::StudyToml;
use serde::Deserialize;
use tonic::transport::Channel;

#[derive(Deserialize)]
struct Table {
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    learning_rate: f64,
    num_train_epochs: i64,
    per_device_train_batch_size: i64,
    seed: i64,
    epochs: Vec<HashMap<String, f64>>,
}

impl Record {
    /// What a worker reports at completion: its best epoch's metrics.
    fn best_epoch(&self) -> &HashMap<String, f64> {
        self.epochs.iter().max_by(|a, b| a["eval_accuracy"].total_cmp(&b["eval_accuracy"])).expect("epochs")
    }
}

fn key(lr: f64, epochs: i64, batch: i64, seed: i64) -> String {
    format!("{}/{seed}", config(lr, epochs, batch))
}

/// A configuration without its seed.
fn config(lr: f64, epochs: i64, batch: i64) -> String {
    format!("{:e}/{epochs}/{batch}", lr)
}

const SPACE: &str = r#"
[parameters.learning_rate]
values = [1e-5, 2e-5, 3e-5, 5e-5]
[parameters.num_train_epochs]
values = [2, 3, 4]
[parameters.per_device_train_batch_size]
values = [16, 32]
"#;

/// Seeds per configuration (the table's seeds 0 and 1).
const REPEATS: usize = 2;

struct Strategy {
    name: &'static str,
    sampler: &'static str,
    early_stopping: &'static str,
}

const ASHA: &str = "[early_stopping]\ntype = \"asha\"\nmin_epochs = 1\nreduction_factor = 3\n";
const ASHA_PROMOTION: &str =
    "[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\nmin_epochs = 1\nreduction_factor = 3\n";
const MEDIAN: &str = "[early_stopping]\ntype = \"median\"\nwarmup_trials = 5\n";

const STRATEGIES: &[Strategy] = &[
    Strategy { name: "grid", sampler: "grid", early_stopping: "" },
    Strategy { name: "random", sampler: "random", early_stopping: "" },
    Strategy { name: "tpe", sampler: "tpe", early_stopping: "" },
    Strategy { name: "random+asha", sampler: "random", early_stopping: ASHA },
    Strategy { name: "tpe+asha", sampler: "tpe", early_stopping: ASHA },
    Strategy { name: "random+asha-promotion", sampler: "random", early_stopping: ASHA_PROMOTION },
    Strategy { name: "tpe+asha-promotion", sampler: "tpe", early_stopping: ASHA_PROMOTION },
    Strategy { name: "tpe+median", sampler: "tpe", early_stopping: MEDIAN },
];

fn study_toml(name: &str, s: &Strategy, seed: u64, max_trials: usize, workers: usize) -> String {
    StudyToml::new(name)
        .sampler(s.sampler)
        .repeats(REPEATS as u32)
        .seed(seed)
        .budget(&format!("max_trials = {max_trials}\nparallel_trials = {workers}"))
        .inputs("replay", "replay", "replay")
        .parameters(SPACE)
        .section(s.early_stopping)
        .to_string()
}

fn number(v: &pb::ParamValue) -> f64 {
    match v.kind {
        Some(pb::param_value::Kind::FloatValue(f)) => f,
        Some(pb::param_value::Kind::IntValue(i)) => i as f64,
        _ => f64::NAN,
    }
}

/// (cost in epochs when the trial ended, its value and configuration if it completed)
type Event = (u64, Option<(f64, String)>);

async fn simulated_worker(
    url: String,
    study: String,
    table: Arc<HashMap<String, Record>>,
    cost: Arc<Mutex<u64>>,
    log: Arc<Mutex<Vec<Event>>>,
) {
    let mut c = CoordinatorClient::<Channel>::connect(url).await.unwrap();
    let w = c.register_worker(pb::RegisterWorkerRequest::default()).await.unwrap().into_inner().worker_id;
    loop {
        let r = c
            .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), study: study.clone(), wait_ms: 200 })
            .await
            .unwrap()
            .into_inner();
        let Some(a) = r.assignment else {
            let s = c.get_study(pb::GetStudyRequest { name: study.clone() }).await.unwrap().into_inner();
            if s.state != pb::StudyState::Running as i32 {
                return;
            }
            continue;
        };
        let p = &a.params;
        let (lr, epochs, batch) = (
            number(&p["learning_rate"]),
            number(&p["num_train_epochs"]) as i64,
            number(&p["per_device_train_batch_size"]) as i64,
        );
        let record = &table[&key(lr, epochs, batch, number(&p["seed"]) as i64)];
        let (mut pruned, mut paused) = (false, false);
        // A promoted (or requeued) trial resumes after its checkpoint: those epochs cost nothing
        // again. Checkpoints are named as object storage URLs, never read: the curves are recorded.
        for (i, metrics) in record.epochs.iter().enumerate().skip(a.resume_epoch as usize) {
            *cost.lock().unwrap() += 1;
            let epoch = i as u32 + 1;
            let last = i + 1 == record.epochs.len();
            let checkpoint = if a.checkpoints && !last {
                format!("s3://replay/{study}/{}/e{epoch}-{}", a.number, a.lease_token)
            } else {
                String::new()
            };
            let answer = c
                .report_progress(pb::ReportProgressRequest {
                    trial_id: a.trial_id,
                    lease_token: a.lease_token,
                    epoch,
                    metrics: metrics.clone(),
                    checkpoint,
                    peak_device_memory_bytes: 0,
                })
                .await
                .unwrap()
                .into_inner();
            if answer.decision == pb::Decision::Stop as i32 {
                pruned = true;
                break;
            }
            if answer.decision == pb::Decision::Pause as i32 {
                paused = true;
                break;
            }
        }
        if paused {
            continue;
        }
        if pruned {
            log.lock().unwrap().push((*cost.lock().unwrap(), None));
            continue;
        }
        let best = record.best_epoch().clone();
        let value = best["eval_accuracy"];
        c.complete_trial(pb::CompleteTrialRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            metrics: best,
            artifact: String::new(),
            peak_device_memory_bytes: 0,
            predictions: None,
            test_metrics: Default::default(),
        })
        .await
        .unwrap();
        log.lock().unwrap().push((*cost.lock().unwrap(), Some((value, config(lr, epochs, batch)))));
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn main() {
    // The replayed checkpoints are s3:// names that were never written: the coordinator's
    // background deletion of replaced ones must fail fast, locally, instead of asking AWS.
    for (k, v) in [
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "replay"),
        ("AWS_SECRET_ACCESS_KEY", "replay"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    let path = std::env::var("CURVES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/curves/sst2-minilm-curves.json").into());
    let seeds: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let workers: usize = std::env::var("WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let budget: usize = std::env::var("TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            println!("{{\"skipped\": \"cannot read {path}: {e}; record it with scripts/record_curves.sh\"}}");
            return;
        }
    };
    let table: Table = serde_json::from_str(&text).expect("curve table");
    let n_records = table.records.len();
    let grid_epochs: u64 = table.records.iter().map(|r| r.epochs.len() as u64).sum();
    let mut by_config: HashMap<String, Vec<f64>> = HashMap::new();
    for r in &table.records {
        by_config
            .entry(config(r.learning_rate, r.num_train_epochs, r.per_device_train_batch_size))
            .or_default()
            .push(r.best_epoch()["eval_accuracy"]);
    }
    let quality: HashMap<String, f64> =
        by_config.iter().map(|(k, v)| (k.clone(), v.iter().sum::<f64>() / v.len() as f64)).collect();
    let (best_config, table_best) =
        quality.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| (k.clone(), *v)).expect("records");
    let single_best = table.records.iter().map(|r| r.best_epoch()["eval_accuracy"]).fold(f64::MIN, f64::max);
    let target = table_best - 0.005;
    let table: Arc<HashMap<String, Record>> = Arc::new(
        table
            .records
            .into_iter()
            .map(|r| (key(r.learning_rate, r.num_train_epochs, r.per_device_train_batch_size, r.seed), r))
            .collect(),
    );
    println!(
        "{}",
        serde_json::json!({"table": path, "records": n_records, "configurations": quality.len(), "best_configuration": best_config, "best_configuration_mean_accuracy": table_best, "best_single_trial_accuracy": single_best, "target_quality": target, "grid_total_epochs": grid_epochs, "sampler_seeds": seeds, "workers": workers, "trial_budget": budget, "seeds_per_configuration": REPEATS})
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = ServerConfig {
            db_url: format!("sqlite://{}", dir.path().join("replay.db").display()),
            token: None,
            lease_ttl: Duration::from_secs(60),
            long_poll: Duration::from_secs(1),
            tls: None,
            ..ServerConfig::default()
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { server::run_with_ready(listener, config, std::future::pending(), ready_tx).await.unwrap() });
        ready_rx.await.unwrap();
        let mut c = CoordinatorClient::<Channel>::connect(url.clone()).await.unwrap();
        let mut tpe_asha_epochs = f64::NAN;
        for strategy in STRATEGIES {
            let mut to_target = Vec::new();
            let mut finals = Vec::new();
            let mut final_quality = Vec::new();
            let mut totals = Vec::new();
            let mut reached = 0;
            let runs = if strategy.sampler == "grid" { 1 } else { seeds };
            for seed in 0..runs {
                let name = format!("{}-{seed}", strategy.name.replace('+', "-"));
                // The grid is the reference: every configuration with every seed.
                let max_trials = if strategy.sampler == "grid" { n_records } else { budget };
                c.create_study(pb::CreateStudyRequest { spec_toml: study_toml(&name, strategy, seed, max_trials, workers) }).await.unwrap();
                let cost = Arc::new(Mutex::new(0u64));
                let log: Arc<Mutex<Vec<Event>>> = Arc::default();
                let tasks: Vec<_> = (0..workers)
                    .map(|_| tokio::spawn(simulated_worker(url.clone(), name.clone(), table.clone(), cost.clone(), log.clone())))
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let log = log.lock().unwrap().clone();
                // The pick: the configuration with the best mean over its completed trials.
                let mut completed_values: HashMap<String, Vec<f64>> = HashMap::new();
                let mut best = f64::MIN;
                let mut pick_quality = f64::NAN;
                let mut hit = None;
                for (spent, completed) in &log {
                    if let Some((v, cfg)) = completed {
                        completed_values.entry(cfg.clone()).or_default().push(*v);
                        let (pick, mean) = completed_values
                            .iter()
                            .map(|(cfg, vs)| (cfg, vs.iter().sum::<f64>() / vs.len() as f64))
                            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                            .expect("one completed");
                        best = mean;
                        pick_quality = quality[pick];
                        if hit.is_none() && pick_quality >= target {
                            hit = Some(*spent);
                        }
                    }
                }
                final_quality.push(pick_quality);
                let total = *cost.lock().unwrap();
                if hit.is_some() {
                    reached += 1;
                }
                // A run that never got within reach counts as "more than it spent".
                to_target.push(hit.map(|h| h as f64).unwrap_or(f64::INFINITY));
                finals.push(best);
                totals.push(total as f64);
            }
            let epochs = median(to_target);
            if strategy.name == "tpe+asha" {
                tpe_asha_epochs = epochs;
            }
            println!(
                "{}",
                serde_json::json!({
                    "strategy": strategy.name,
                    "runs": runs,
                    "median_epochs_to_within_0.5pt": if epochs.is_finite() { serde_json::json!(epochs) } else { serde_json::json!(null) },
                    "reached": format!("{reached}/{runs}"),
                    "median_final_pick_observed_mean": (median(finals) * 10000.0).round() / 10000.0,
                    "median_final_pick_quality": (median(final_quality) * 10000.0).round() / 10000.0,
                    "median_total_epochs": median(totals),
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({"target": "tpe+asha within 0.5pt using <= 1/3 of the grid's epochs", "tpe_asha_epochs": tpe_asha_epochs, "grid_epochs": grid_epochs, "fraction": tpe_asha_epochs / grid_epochs as f64, "met": tpe_asha_epochs <= grid_epochs as f64 / 3.0})
        );
    });
    optuna_reference(&path, seeds, workers, budget);
}

/// The same table, budget, workers and rules through Optuna (bench/curves/optuna_replay.py).
fn optuna_reference(table: &str, seeds: u64, workers: usize, budget: usize) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| format!("{root}/.venv/bin/python"));
    let output = std::process::Command::new(&python)
        .arg(format!("{root}/bench/curves/optuna_replay.py"))
        .args(["--table", table])
        .args(["--seeds", &seeds.to_string(), "--workers", &workers.to_string(), "--trials", &budget.to_string()])
        .output();
    match output {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!(
            "{}",
            serde_json::json!({"optuna": "failed", "stderr": String::from_utf8_lossy(&out.stderr).lines().last()})
        ),
        Err(e) => {
            println!("{}", serde_json::json!({"optuna": format!("skipped: cannot run {python}: {e}; run make setup")}))
        }
    }
}
