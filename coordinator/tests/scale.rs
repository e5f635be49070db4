//! Replies and streams stay bounded at scale: `study list` over 10,000 studies and
//! `trials` / `best` / `trials --follow` over a 100,000-trial study work through the real
//! `bertsweep` binary (paged replies), and idle WatchStudy streams on a 10,000-trial study do
//! not hold the study in memory per watcher.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use bertsweep_coordinator::fixtures::{populate, Population};
use bertsweep_proto::v1 as pb;

/// `bertsweep serve` over `db`, killed on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(db: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.split_whitespace().nth(4).unwrap_or_else(|| panic!("banner {line:?}")).to_string();
        Serve { child, url: format!("http://{addr}") }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_bertsweep"))
            .env("BERTSWEEP_COORDINATOR", &self.url)
            .env_remove("BERTSWEEP_TOKEN")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Resident memory of the server process in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib / 1024.0
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_studies_and_a_hundred_thousand_trials_list_through_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scale.db");
    let t0 = std::time::Instant::now();
    populate(&format!("sqlite://{}", db.display()), Population { small_studies: 10_000, big_trials: 100_000, epochs: 3 })
        .await
        .unwrap();
    eprintln!("populated {:?}", t0.elapsed());
    let serve = Serve::start(&db);
    eprintln!("started {:?}", t0.elapsed());

    assert_eq!(lines(&serve.cli(&["study", "list", "--format", "csv"])), 1 + 10_001, "header + every study");
    assert_eq!(lines(&serve.cli(&["trials", "big", "--format", "csv"])), 1 + 100_000, "header + every trial");
    eprintln!("listed {:?}", t0.elapsed());
    let best: serde_json::Value = serde_json::from_slice(&serve.cli(&["best", "big", "--format", "json"]).stdout).unwrap();
    assert_eq!(best["state"], "COMPLETED");
    assert_eq!(best["epochs"].as_array().map(Vec::len), Some(3));
    // --follow on an ended study: the whole snapshot, then it returns.
    let follow = serve.cli(&["trials", "big", "--follow", "--format", "csv"]);
    assert!(lines(&follow) >= 100_000, "{} lines", lines(&follow));

    eprintln!("followed {:?}", t0.elapsed());
    // Each page of the raw API stays far under the 4 MiB default limit.
    let mut client = pb::coordinator_client::CoordinatorClient::connect(serve.url.clone()).await.unwrap();
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
    let idle = serve.rss_mib();

    // Twenty watchers that read one event (so their stream is running) and then stop reading.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = pb::coordinator_client::CoordinatorClient::connect(serve.url.clone()).await.unwrap();
        let mut stream = client.watch_study(pb::WatchStudyRequest { study: "big".into() }).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().is_some_and(|e| e.snapshot));
        streams.push((client, stream));
    }
    let peak = serve.rss_mib();
    drop(streams);
    // Before the fix every watcher cloned the whole study (about 50 MiB here) and kept it.
    assert!(peak - idle < 120.0, "20 idle watchers took the server from {idle:.0} MiB to {peak:.0} MiB");
}
