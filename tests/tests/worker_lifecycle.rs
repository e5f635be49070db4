//! Workers and the study's end, and workers and a coordinator that forgot them:
//! - a worker parked on a study (`--study`) exits promptly when the study is stopped, and a
//!   worker started on an ended study exits at once;
//! - a worker whose id the coordinator no longer knows (a coordinator restarted on a fresh
//!   database at the same address) registers again and goes on taking trials.

use std::process::Child;
use std::time::{Duration, Instant};

use bertsweep_tests::*;

/// Waits for `child` to exit within `limit`; returns its success, or None if it is still running.
fn exit_within(child: &mut Child, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn workers_on_a_study_exit_promptly_when_it_ends() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("end.db"), "30s");
    // One trial at a time: the first worker trains it, the second parks in AcquireTrial.
    let file = one_trial_review_study(dir.path(), "end", &model, 3);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let artifacts = dir.path().join("artifacts");
    let mut training = coordinator.worker("end", &artifacts, &dir.path().join("training.log"));
    eventually("the trial to be leased", Duration::from_secs(120), || {
        coordinator.trials("end").first().filter(|t| t["state"] == "RUNNING").map(|_| ())
    });
    let mut parked = coordinator.worker("end", &artifacts, &dir.path().join("parked.log"));
    // Give the parked worker time to register and park (its long-poll is 20 s).
    eventually("the parked worker to register", Duration::from_secs(60), || {
        std::fs::read_to_string(dir.path().join("parked.err")).ok().filter(|log| log.contains("registered")).map(|_| ())
    });

    assert!(coordinator.cli(&["study", "stop", "end"]).status.success());
    // Woken at once by the stop (before, it slept out its 20 s long-poll).
    assert_eq!(exit_within(&mut parked, Duration::from_secs(5)), Some(true), "the parked worker exits promptly");
    // The training one learns it at its next heartbeat (a third of the 30 s lease), then exits.
    assert_eq!(exit_within(&mut training, Duration::from_secs(60)), Some(true), "the training worker exits");

    // A worker started on an ended study exits at once.
    let mut late = coordinator.worker("end", &artifacts, &dir.path().join("late.log"));
    assert_eq!(exit_within(&mut late, Duration::from_secs(10)), Some(true), "a worker on an ended study exits at once");
}

#[test]
fn a_worker_the_coordinator_forgot_registers_again() {
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let first = Coordinator::start_on(&addr, &dir.path().join("first.db"), "30s");
    let mut worker = first.worker_with(&[], &dir.path().join("artifacts"), &dir.path().join("worker.log"));
    eventually("the worker to register", Duration::from_secs(60), || {
        std::fs::read_to_string(dir.path().join("worker.err")).ok().filter(|log| log.contains("registered")).map(|_| ())
    });
    drop(first); // SIGKILL

    // A new coordinator on the same address with an empty database: the worker's id is unknown.
    let second = Coordinator::start_on(&addr, &dir.path().join("second.db"), "30s");
    let file = unrunnable_study(dir.path(), "fresh");
    assert!(second.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let t = eventually("the worker to lease the new coordinator's trial", Duration::from_secs(120), || {
        second.trials("fresh").into_iter().next().filter(|t| t["attempt"].as_u64() >= Some(1))
    });
    assert!(!t["worker_id"].is_null(), "leased by the re-registered worker: {t}");
    assert_eq!(worker.try_wait().unwrap(), None, "the worker is still running");
    let _ = worker.kill();
    let _ = worker.wait();
    let log = std::fs::read_to_string(dir.path().join("worker.err")).unwrap_or_default();
    assert!(log.contains("registered again"), "{log}");
}
