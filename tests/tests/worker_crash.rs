//! A worker killed with SIGKILL mid-trial: its lease expires, the trial is requeued with the
//! same params, and the other worker completes it, reporting its epochs from 1 again on a
//! curve of its own. Uses the project's demo reviews and MiniLM.

use std::time::Duration;

use bertsweep_tests::*;

/// The one-trial study these tests interrupt.
fn one_trial_study(dir: &std::path::Path, model: &std::path::Path) -> std::path::PathBuf {
    one_trial_review_study(dir, "crash", model, 3)
}

/// Waits until the study's only trial has reported `epochs` epochs and is still running.
fn wait_mid_trial(coordinator: &Coordinator, epochs: u64) {
    eventually("epoch reports", Duration::from_secs(300), || {
        let trials = coordinator.trials("crash");
        trials.first().filter(|t| t["state"] == "RUNNING" && t["last_epoch"].as_u64() >= Some(epochs)).map(|_| ())
    });
}

/// (attempt, epoch) pairs of a trial's earlier attempts, in order.
fn earlier(t: &serde_json::Value) -> Vec<(u64, u64)> {
    let mut pairs: Vec<(u64, u64)> = t["earlier_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["attempt"].as_u64().unwrap(), e["epoch"].as_u64().unwrap()))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn killed_worker_trial_is_requeued_and_completed_by_another() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("crash.db"), "2s");
    let file = one_trial_study(dir.path(), &model);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());

    let artifacts = dir.path().join("artifacts");
    let mut first = coordinator.worker("crash", &artifacts, &dir.path().join("first.log"));
    // Killed after its second epoch report: the retry must be able to report epoch 1 again.
    wait_mid_trial(&coordinator, 2);
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = coordinator.worker("crash", &artifacts, &dir.path().join("second.log"));
    let status = second.wait().unwrap();
    assert!(status.success());
    let trials = coordinator.trials("crash");
    assert_eq!(trials.len(), 1);
    let t = &trials[0];
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["attempt"], 2, "the trial was leased a second time: {t}");
    let epochs: Vec<u64> = t["epochs"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2, 3], "the retry's own curve: {t}");
    let lost = earlier(t);
    assert!(lost.len() >= 2 && lost.iter().all(|&(attempt, _)| attempt == 1), "attempt 1's epochs kept: {t}");
    assert_eq!(coordinator.study_state("crash"), "COMPLETED");
}

#[test]
fn sigterm_releases_the_trial_for_immediate_requeue() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only the worker's release can requeue the trial within the test.
    let coordinator = Coordinator::start(&dir.path().join("term.db"), "10m");
    let file = one_trial_study(dir.path(), &model);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let artifacts = dir.path().join("artifacts");
    let mut first = coordinator.worker("crash", &artifacts, &dir.path().join("first.log"));
    wait_mid_trial(&coordinator, 1);
    let term = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(75), "a worker stopped by SIGTERM exits 75 (EX_TEMPFAIL): run it again");
    let t = coordinator.trials("crash")[0].clone();
    assert_eq!(t["state"], "PENDING", "released at once, not after the lease: {t}");
    assert_eq!(t["attempt"], 0, "a release does not use an attempt: {t}");
    assert!(t["error"].as_str().unwrap_or_default().contains("released"), "{t}");
    let mut second = coordinator.worker("crash", &artifacts, &dir.path().join("second.log"));
    assert!(second.wait().unwrap().success());
    let t = coordinator.trials("crash")[0].clone();
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["epochs"].as_array().unwrap().len(), 3, "the released attempt's epochs do not block the retry: {t}");
}
