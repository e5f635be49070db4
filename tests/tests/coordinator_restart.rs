//! The coordinator is SIGKILLed while a worker is mid-trial and restarted on the same address
//! and database: the worker retries through the outage, keeps its lease, and the trial
//! completes on its first attempt with every epoch recorded.

use std::time::Duration;

use bertsweep_tests::*;

#[test]
fn worker_rides_through_a_coordinator_restart() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut coordinator = Coordinator::start_on(&addr, &db, "30s");
    let file = one_trial_review_study(dir.path(), "restart", &model, 3);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let mut worker = coordinator.worker("restart", &dir.path().join("artifacts"), &dir.path().join("worker.log"));
    eventually("the first epoch report", Duration::from_secs(300), || {
        coordinator.trials("restart").first().filter(|t| t["last_epoch"].as_u64() >= Some(1)).map(|_| ())
    });

    coordinator.child.kill().unwrap(); // SIGKILL
    coordinator.child.wait().unwrap();
    // The restart needs the address back (the database lock went with the process). The
    // worker's connection died with the coordinator, so its next call meets the outage.
    eventually("the coordinator's address to be free", Duration::from_secs(10), || {
        std::net::TcpListener::bind(&addr).ok().map(drop)
    });
    let coordinator = Coordinator::start_on(&addr, &db, "30s");

    assert!(worker.wait().unwrap().success(), "the worker finishes the study after the restart");
    let t = coordinator.trials("restart")[0].clone();
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["attempt"], 1, "the lease survived the restart: {t}");
    assert_eq!(t["epochs"].as_array().unwrap().len(), 3, "every epoch recorded: {t}");
    assert_eq!(coordinator.study_state("restart"), "COMPLETED");
}
