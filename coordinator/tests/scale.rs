//! Replies and streams stay bounded at scale: `study list` over 10,000 studies and
//! `trials` / `best` / `trials --follow` over a 100,000-trial study work through the real
//! `bertsweep` binary (paged replies), and idle WatchStudy streams on a 10,000-trial study do
//! not hold the study in memory per watcher.

use std::process::{Command, Output};

use bertsweep_proto::v1 as pb;
use bertsweep_testkit::{populate, Population, ServeProcess};

/// `bertsweep serve` over `db`, killed on drop.
struct Serve(ServeProcess);

impl Serve {
    fn start(db: &std::path::Path) -> Self {
        Serve(ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), db, &[]).unwrap())
    }

    fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
            .env("BERTSWEEP_COORDINATOR", &self.0.url)
            .env_remove("BERTSWEEP_TOKEN")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

fn lines(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_studies_and_a_hundred_thousand_trials_list_through_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scale.db");
    populate(
        &format!("sqlite://{}", db.display()),
        Population { small_studies: 10_000, big_trials: 100_000, epochs: 3 },
    )
    .await
    .unwrap();
    let serve = Serve::start(&db);

    assert_eq!(lines(&serve.cli(&["study", "list", "--format", "csv"])), 1 + 10_001, "header + every study");
    assert_eq!(lines(&serve.cli(&["trials", "big", "--format", "csv"])), 1 + 100_000, "header + every trial");
    let best: serde_json::Value =
        serde_json::from_slice(&serve.cli(&["best", "big", "--format", "json"]).stdout).unwrap();
    assert_eq!(best["state"], "COMPLETED");
    assert_eq!(best["epochs"].as_array().map(Vec::len), Some(3));
    // --follow on an ended study: the whole snapshot, then it returns.
    let follow = serve.cli(&["trials", "big", "--follow", "--format", "csv"]);
    assert!(lines(&follow) >= 100_000, "{} lines", lines(&follow));

    // Each page of the raw API stays far under the 4 MiB default limit.
    let mut client = pb::coordinator_client::CoordinatorClient::connect(serve.0.url.clone()).await.unwrap();
    let page = client
        .list_trials(pb::ListTrialsRequest { study: "big".into(), page_size: 1_000_000, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.trials.is_empty() && page.trials.len() <= 1000, "{}", page.trials.len());
    assert!(!page.next_page_token.is_empty());
    let err = client
        .list_trials(pb::ListTrialsRequest { study: "big".into(), page_size: 10, page_token: "not-a-token".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_of_a_large_study_hold_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("watch.db");
    populate(&format!("sqlite://{}", db.display()), Population { small_studies: 0, big_trials: 10_000, epochs: 4 })
        .await
        .unwrap();
    let serve = Serve::start(&db);
    // Warm the server up with one full read, as a user's first `trials` would.
    serve.cli(&["trials", "big", "--format", "csv"]);
    let idle = serve.0.rss_mib();

    // Twenty watchers that read one event (so their stream is running) and then stop reading.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = pb::coordinator_client::CoordinatorClient::connect(serve.0.url.clone()).await.unwrap();
        let mut stream = client.watch_study(pb::WatchStudyRequest { study: "big".into() }).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().is_some_and(|e| e.snapshot));
        streams.push((client, stream));
    }
    let peak = serve.0.rss_mib();
    drop(streams);
    // Before the fix every watcher cloned the whole study (about 50 MiB here) and kept it.
    assert!(peak - idle < 120.0, "20 idle watchers took the server from {idle:.0} MiB to {peak:.0} MiB");
    // And what they used goes back to the system once they leave.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut after = serve.0.rss_mib();
    while after > idle * 1.2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = serve.0.rss_mib();
    }
    assert!(after <= idle * 1.2, "after the watchers left: {after:.0} MiB against {idle:.0} MiB idle");
}
