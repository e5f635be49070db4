//! A worker killed with SIGKILL mid-trial: its lease expires, the trial is requeued with the
//! same params, and the other worker completes it. Uses the project's demo reviews and MiniLM.

use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn killed_worker_trial_is_requeued_and_completed_by_another() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("crash.db"), "2s");
    let study = format!(
        r#"name = "crash"
[objective]
metric = "eval_accuracy"
[algorithm]
sampler = "grid"
[budget]
parallel_trials = 1
max_attempts = 3
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

    let artifacts = dir.path().join("artifacts");
    let mut first = coordinator.worker("crash", &artifacts, &dir.path().join("first.log"));
    // Wait until the first worker is mid-trial (an epoch reported), then SIGKILL it.
    eventually("the first epoch report", Duration::from_secs(300), || {
        let trials = coordinator.trials("crash");
        trials.first().filter(|t| t["state"] == "RUNNING" && t["last_epoch"].as_u64() >= Some(1)).map(|_| ())
    });
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = coordinator.worker("crash", &artifacts, &dir.path().join("second.log"));
    let status = second.wait().unwrap();
    assert!(status.success());
    let trials = coordinator.trials("crash");
    assert_eq!(trials.len(), 1);
    let t = &trials[0];
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["attempt"], 2, "the trial was leased a second time: {t}");
    assert_eq!(coordinator.study_state("crash"), "COMPLETED");
}
