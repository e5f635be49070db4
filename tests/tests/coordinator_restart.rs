//! The coordinator is SIGKILLed while a worker is mid-trial and restarted on the same address
//! and database: the worker retries through the outage, keeps its lease, and the trial
//! completes on its first attempt with every epoch recorded.

use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn worker_rides_through_a_coordinator_restart() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut coordinator = Coordinator::start_on(&addr, &db, "30s");
    let study = format!(
        r#"name = "restart"
[objective]
metric = "eval_accuracy"
[budget]
parallel_trials = 1
[task]
model = "{model}"
train_file = "{train}"
validation_file = "{dev}"
max_seq_length = 64
max_train_samples = 160
[parameters.learning_rate]
value = 5e-5
[parameters.per_device_train_batch_size]
value = 16
[parameters.num_train_epochs]
value = 3
"#,
        model = model.display(),
        train = root.join("examples/data/reviews-train.tsv").display(),
        dev = root.join("examples/data/reviews-dev.tsv").display()
    );
    let file = dir.path().join("study.toml");
    std::fs::write(&file, study).unwrap();
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let mut worker = coordinator.worker("restart", &dir.path().join("artifacts"), &dir.path().join("worker.log"));
    eventually("the first epoch report", Duration::from_secs(300), || {
        coordinator.trials("restart").first().filter(|t| t["last_epoch"].as_u64() >= Some(1)).map(|_| ())
    });

    coordinator.child.kill().unwrap(); // SIGKILL
    coordinator.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let coordinator = Coordinator::start_on(&addr, &db, "30s");

    assert!(worker.wait().unwrap().success(), "the worker finishes the study after the restart");
    let t = coordinator.trials("restart")[0].clone();
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["attempt"], 1, "the lease survived the restart: {t}");
    assert_eq!(t["epochs"].as_array().unwrap().len(), 3, "every epoch recorded: {t}");
    assert_eq!(coordinator.study_state("restart"), "COMPLETED");
}
