//! A real `bertsweep serve` process killed with SIGKILL and restarted on the same file keeps
//! every acknowledged change, keeps running leases alive, and resumes the study.

mod common;

use std::path::Path;
use std::process::Command;

use bertsweep_testkit::ServeProcess;

use bertsweep_proto::v1 as pb;
use common::*;

/// Starts `bertsweep serve` on a free port and returns the process and its URL.
fn spawn_serve(db: &Path) -> (ServeProcess, String) {
    let serve = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), db, &["--lease-ttl", "20s"]).unwrap();
    let url = serve.url.clone();
    (serve, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("coord.db");
    let (mut first, url) = spawn_serve(&db);
    let mut c = Client::connect(url.clone()).await.unwrap();
    create(&mut c, &study_toml("durable", "parallel_trials = 2", &grid_params(2))).await;
    let w = register(&mut c).await;
    for acc in [0.7, 0.8] {
        let a = acquire(&mut c, &w, 1000).await.unwrap();
        report(&mut c, &a, 1, acc - 0.1).await.unwrap();
        complete(&mut c, &a, acc).await.unwrap();
    }
    let running = acquire(&mut c, &w, 1000).await.unwrap();
    report(&mut c, &running, 1, 0.55).await.unwrap();
    let before = trials(&mut c, "durable").await;

    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let (second, url) = spawn_serve(&db);
    // Only one coordinator may open the file.
    let third = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!third.status.success());
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");

    let mut c = Client::connect(url).await.unwrap();
    let after = trials(&mut c, "durable").await;
    assert_eq!(after.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.number, b.state, b.value, &b.params, &b.intermediate),
            (a.number, a.state, a.value, &a.params, &a.intermediate)
        );
    }
    // The running lease survived: the old token still heartbeats, and the worker finishes.
    let hb = c
        .heartbeat(pb::HeartbeatRequest { trial_id: running.trial_id, lease_token: running.lease_token })
        .await
        .unwrap()
        .into_inner();
    assert!(!hb.stop);
    complete(&mut c, &running, 0.75).await.unwrap();
    // The worker id survived too, and the study resumes with the next grid point.
    let last = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!(last.number, 3);
    assert!(last.lease_token > running.lease_token, "fencing tokens keep growing across restarts");
    complete(&mut c, &last, 0.9).await.unwrap();
    let s = study(&mut c, "durable").await;
    assert_eq!(s.state, pb::StudyState::Completed as i32);
    assert_eq!(s.best_value, Some(0.9));
    drop(second);
}
