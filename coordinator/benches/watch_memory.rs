//! Server memory under idle WatchStudy streams: a `bertsweep serve` process over a
//! 10,000-trial study (4 epochs of 8 metrics each), its resident memory idle, with 50 watchers
//! that open the stream, read one event and then stop reading, and after they disconnect.
//! Prints one JSON line with the figures and the targets (under 300 MiB with the watchers,
//! back within 20 % of idle after they leave).
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench watch_memory` (WATCHERS and TRIALS
//! override 50 and 10,000).

use std::time::{Duration, Instant};

use bertsweep_proto::v1 as pb;
use bertsweep_testkit::{populate, Population, ServeProcess};

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let watchers = env_or("WATCHERS", 50);
    let trials = env_or("TRIALS", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("watch.db");
    populate(&format!("sqlite://{}", db.display()), Population { small_studies: 0, big_trials: trials, epochs: 4 })
        .await
        .unwrap();

    let serve = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), &db, &[]).unwrap();
    let url = serve.url.clone();

    // One full read first, as a user's `bertsweep trials` would, so idle includes warm caches.
    let mut client = pb::coordinator_client::CoordinatorClient::connect(url.clone()).await.unwrap();
    let mut token = String::new();
    loop {
        let page = client
            .list_trials(pb::ListTrialsRequest { study: "big".into(), page_size: 0, page_token: token })
            .await
            .unwrap()
            .into_inner();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let idle = serve.rss_mib();

    let mut streams = Vec::new();
    for _ in 0..watchers {
        let mut c = pb::coordinator_client::CoordinatorClient::connect(url.clone()).await.unwrap();
        let mut s = c.watch_study(pb::WatchStudyRequest { study: "big".into() }).await.unwrap().into_inner();
        s.message().await.unwrap();
        streams.push((c, s));
    }
    let with_watchers = serve.rss_mib();
    drop(streams);
    // Wait for the server to notice the disconnects and free what it held (settles in < 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = serve.rss_mib();
    while Instant::now() < deadline && after > idle * 1.2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = serve.rss_mib();
    }
    drop(serve);
    println!(
        "{}",
        serde_json::json!({
            "bench": "watch_memory",
            "trials": trials,
            "watchers": watchers,
            "rss_idle_mib": (idle * 10.0).round() / 10.0,
            "rss_with_watchers_mib": (with_watchers * 10.0).round() / 10.0,
            "rss_after_mib": (after * 10.0).round() / 10.0,
            "target_with_watchers_mib": 300,
            "target_after": "within 20 % of idle",
            "met": with_watchers < 300.0 && after <= idle * 1.2,
        })
    );
}
