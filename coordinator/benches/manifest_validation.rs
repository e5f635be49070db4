//! What one very large input costs the coordinator: a model directory of 100,000 files
//! (BENCH_ENTRIES) named by `CreateStudy` against a real `bertsweep serve` process, while
//! another study's worker heartbeats in a loop. Prints one JSON line each for:
//! - `manifest_parse`: `Manifest::parse` of that manifest in this process (validation alone);
//! - `quadratic_reference`: the pairwise "is this path another's directory?" check the
//!   coordinator used before (one allocation per pair), on 20,000 entries (the size the issue
//!   reported at 23 s), same machine, same run;
//! - `heartbeats_idle` and `heartbeats_during_create`: heartbeat round trips (p50/p99/max)
//!   without and while the `CreateStudy` is checked, and how long it took.
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench manifest_validation`.

use std::time::{Duration, Instant};

use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_testkit::{ServeProcess, StudyToml};
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::manifest::{Entry, Manifest, ManifestKind, FORMAT};
use bertsweep_transfer::Digest;
use tonic::transport::{Channel, Endpoint};

async fn connect(url: &str) -> CoordinatorClient<Channel> {
    let channel = Endpoint::from_shared(url.to_string()).unwrap().tcp_nodelay(true).connect().await.unwrap();
    CoordinatorClient::new(channel)
}

fn manifest(entries: usize, file: Digest) -> Manifest {
    let files = (0..entries)
        .map(|i| Entry { path: format!("shard{:03}/file{i:06}.bin", i / 1000), sha256: file.to_string(), size: 1 })
        .collect();
    let mut m = Manifest { format: FORMAT, kind: ManifestKind::Dir, source: "bench:/model".into(), files };
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    m
}

/// The check as it was: every path against every other, with a formatted prefix per pair.
fn quadratic_reference(m: &Manifest) -> bool {
    m.files.iter().all(|f| !m.files.iter().any(|g| g.path.starts_with(&format!("{}/", f.path))))
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| if ms.is_empty() { f64::NAN } else { ms[((ms.len() - 1) as f64 * p).round() as usize] };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "heartbeats": ms.len(),
        "p50_ms": round(at(0.5)),
        "p99_ms": round(at(0.99)),
        "max_ms": round(ms.last().copied().unwrap_or(f64::NAN)),
    })
}

/// Heartbeats one lease every 5 ms until `stop` turns true, returning each round trip in ms.
async fn heartbeats(
    mut c: CoordinatorClient<Channel>,
    a: pb::Assignment,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<f64> {
    let mut out = Vec::new();
    while !*stop.borrow() {
        let t0 = Instant::now();
        c.heartbeat(pb::HeartbeatRequest { trial_id: a.trial_id, lease_token: a.lease_token }).await.unwrap();
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let entries: usize = std::env::var("BENCH_ENTRIES").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    // The model's one-byte file and its 100,000-entry manifest, put straight into the data
    // directory the server will use (uploading 100,000 files is not what is measured).
    let blobs = BlobDir::open(dir.path().join("bench.db.data")).unwrap();
    let file = blobs.put_bytes(b"x").await.unwrap();
    let m = manifest(entries, file);
    let bytes = m.to_bytes();
    let root = blobs.put_bytes(&bytes).await.unwrap();

    let t0 = Instant::now();
    Manifest::parse(&bytes).expect("a valid manifest");
    let parse_ms = t0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({"bench": "manifest_parse", "entries": entries, "bytes": bytes.len(), "ms": (parse_ms * 10.0).round() / 10.0})
    );
    let reference = manifest(20_000, file);
    let t0 = Instant::now();
    assert!(quadratic_reference(&reference));
    println!(
        "{}",
        serde_json::json!({"bench": "quadratic_reference", "entries": 20_000, "ms": (t0.elapsed().as_secs_f64() * 1000.0).round()})
    );

    let server = ServeProcess::start(env!("CARGO_BIN_EXE_bertsweep"), &db, &["--lease-ttl", "30s"]).unwrap();
    let mut c = connect(&server.url).await;
    let busy = StudyToml::new("busy").parameters("[parameters.per_device_train_batch_size]\nvalues = [8]").to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml: busy }).await.unwrap();
    let register = pb::RegisterWorkerRequest { hostname: "bench".into(), devices: vec![], version: "bench".into() };
    let worker = c.register_worker(register).await.unwrap().into_inner().worker_id;
    let acquire = pb::AcquireTrialRequest { worker_id: worker, study: "busy".into(), wait_ms: 1000 };
    let a = c.acquire_trial(acquire).await.unwrap().into_inner().assignment.expect("a trial");

    // Two seconds of heartbeats with nothing else going on.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(heartbeats(connect(&server.url).await, a.clone(), stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let mut line = summary(sampler.await.unwrap());
    line["bench"] = "heartbeats_idle".into();
    println!("{line}");

    // The same while the big study is created (its 100,000-file model checked).
    let model = format!("blob:sha256:{root}");
    let big = StudyToml::new("big")
        .inputs(&model, "worker:/data/train.tsv", "worker:/data/dev.tsv")
        .parameters("[parameters.per_device_train_batch_size]\nvalues = [8]")
        .to_string();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(heartbeats(connect(&server.url).await, a, stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    c.create_study(pb::CreateStudyRequest { spec_toml: big }).await.unwrap();
    let create_ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop_tx.send_replace(true);
    let mut line = summary(sampler.await.unwrap());
    line["bench"] = "heartbeats_during_create".into();
    line["entries"] = entries.into();
    line["create_study_ms"] = ((create_ms * 10.0).round() / 10.0).into();
    println!("{line}");
    drop(server);
}
