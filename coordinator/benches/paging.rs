//! Paged listings at scale through the real binaries: a database with 10,000 one-trial studies
//! and a 100,000-trial study (3 epochs of 8 metrics each), served by `bertsweep serve`, and the
//! wall time of `bertsweep study list`, `trials --format csv`, `best --format json` and
//! `trials --follow --format csv` against it, plus the largest reply page in bytes (gRPC's
//! default limit is 4 MiB). Prints one JSON line.
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench paging` (STUDIES and TRIALS override the
//! sizes).

use std::process::Command;
use std::time::Instant;

use bertsweep_proto::v1 as pb;
use bertsweep_testkit::{populate, Population, ServeProcess};
use prost::Message;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs a CLI verb; returns (seconds, output lines).
fn timed(url: &str, args: &[&str]) -> (f64, usize) {
    let t0 = Instant::now();
    let out =
        Command::new(env!("CARGO_BIN_EXE_bertsweep")).env("BERTSWEEP_COORDINATOR", url).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let secs = t0.elapsed().as_secs_f64();
    ((secs * 100.0).round() / 100.0, String::from_utf8_lossy(&out.stdout).lines().count())
}

#[tokio::main]
async fn main() {
    let studies = env_or("STUDIES", 10_000);
    let trials = env_or("TRIALS", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paging.db");
    let t0 = Instant::now();
    populate(
        &format!("sqlite://{}", db.display()),
        Population { small_studies: studies, big_trials: trials, epochs: 3 },
    )
    .await
    .unwrap();
    let populate_s = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let serve = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), &db, &[]).unwrap();
    let start_s = t0.elapsed().as_secs_f64();
    let url = serve.url.clone();

    let (list_s, list_lines) = timed(&url, &["study", "list", "--format", "csv"]);
    let (trials_s, trial_lines) = timed(&url, &["trials", "big", "--format", "csv"]);
    let (best_s, _) = timed(&url, &["best", "big", "--format", "json"]);
    let (follow_s, follow_lines) = timed(&url, &["trials", "big", "--follow", "--format", "csv"]);

    // The largest page the server sends, asking for as much as it allows.
    let mut client = pb::coordinator_client::CoordinatorClient::connect(url.clone()).await.unwrap();
    let mut largest = 0usize;
    let mut token = String::new();
    loop {
        let page = client
            .list_trials(pb::ListTrialsRequest { study: "big".into(), page_size: u32::MAX, page_token: token })
            .await
            .unwrap()
            .into_inner();
        largest = largest.max(page.encoded_len());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    drop(serve);
    println!(
        "{}",
        serde_json::json!({
            "bench": "paging",
            "studies": studies + 1,
            "trials": trials,
            "populate_s": (populate_s * 10.0).round() / 10.0,
            "serve_start_s": (start_s * 100.0).round() / 100.0,
            "study_list_s": list_s,
            "study_list_rows": list_lines.saturating_sub(1),
            "trials_csv_s": trials_s,
            "trials_csv_rows": trial_lines.saturating_sub(1),
            "best_json_s": best_s,
            "follow_csv_s": follow_s,
            "follow_rows": follow_lines.saturating_sub(1),
            "largest_trials_page_bytes": largest,
            "grpc_default_limit_bytes": 4 << 20,
        })
    );
}
