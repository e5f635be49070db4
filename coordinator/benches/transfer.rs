//! Transfer throughput over loopback (plaintext gRPC, in-process coordinator): uploading a
//! 450 MB model directory (`study create`'s path: hash, FindMissingBlobs, chunked UploadBlob),
//! downloading it into a fresh cache (a worker's first trial: DownloadBlob, verify, lay out),
//! and the per-trial cost once it is cached. Prints figures; asserts nothing.
//!
//! Reference figures from the same run and the same files: `sha256` of the directory (the
//! verification both sides must do) and a plain `std::fs::copy` of it (local disk, no network,
//! no verification). Targets: ≥ 200 MB/s each way, < 1 s per trial once cached.
//!
//! Run: `cargo bench -p bertsweep-coordinator --bench transfer` (or `make bench-transfer`).

use std::path::Path;
use std::time::{Duration, Instant};

use bertsweep_coordinator::server::{self, ServerConfig};
use bertsweep_proto::auth::BearerToken;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::{materialize, Remote};
use bertsweep_transfer::Manifest;

const MODEL_BYTES: usize = 450_000_000;

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn write_model(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"model_type": "bert", "hidden_size": 1024}"#).unwrap();
    std::fs::write(dir.join("vocab.txt"), (0..30_000).map(|i| format!("tok{i}\n")).collect::<String>()).unwrap();
    let weights: Vec<u8> =
        (0..MODEL_BYTES as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let total = write_model(&model);
    println!("model directory: 3 files, {:.0} MB", total as f64 / 1e6);

    // References on the same files.
    let started = Instant::now();
    let _ = Manifest::of_path(&model, "bench".into()).unwrap();
    let hash = started.elapsed();
    let started = Instant::now();
    copy_dir(&model, &tmp.path().join("copy"));
    let copy = started.elapsed();
    std::fs::remove_dir_all(tmp.path().join("copy")).unwrap();
    println!("reference: sha256 of the directory   {:>7.0} MB/s ({hash:.2?})", mb_per_s(total, hash));
    println!("reference: std::fs::copy (local disk) {:>7.0} MB/s ({copy:.2?})", mb_per_s(total, copy));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig {
        db_url: format!("sqlite://{}", tmp.path().join("bench.db").display()),
        ..ServerConfig::default()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move { server::run_with_ready(listener, config, std::future::pending(), ready_tx).await });
    ready_rx.await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let remote = Remote::new(CoordinatorClient::with_interceptor(channel, BearerToken::new(None).unwrap()));

    let started = Instant::now();
    let up = remote.upload_path(&model, "bench:/model".into()).await.unwrap();
    let upload = started.elapsed();
    println!(
        "upload   (hash + send + verify + store)  {:>7.0} MB/s ({upload:.2?}; target >= 200 MB/s)",
        mb_per_s(total, upload)
    );
    let started = Instant::now();
    let again = remote.upload_path(&model, "bench:/model".into()).await.unwrap();
    println!("upload again (deduplicated: hash only, {} bytes sent)  {:.2?}", again.bytes_sent, started.elapsed());

    let cache = BlobDir::open(tmp.path().join("cache/blobs")).unwrap();
    let tree = tmp.path().join("cache/trees").join(up.digest.to_string());
    let started = Instant::now();
    let manifest = remote.fetch_manifest(&cache, up.digest).await.unwrap();
    remote.fetch_files(&cache, &manifest).await.unwrap();
    materialize(&cache, &manifest, &tree).unwrap();
    let download = started.elapsed();
    println!(
        "download (receive + verify + lay out)    {:>7.0} MB/s ({download:.2?}; target >= 200 MB/s)",
        mb_per_s(total, download)
    );

    // Once cached: a new worker process re-hashes the entry on first use; later trials only
    // read the manifest and find the tree (the in-process memo).
    let started = Instant::now();
    let m = cache.read_manifest(&up.digest).unwrap();
    for f in &m.files {
        let (d, _) = bertsweep_transfer::digest::hash_file(&tree.join(&f.path)).unwrap();
        assert_eq!(d, f.digest());
    }
    let first_use = started.elapsed();
    let started = Instant::now();
    let m = cache.read_manifest(&up.digest).unwrap();
    assert!(tree.exists() && m.files.iter().all(|f| tree.join(&f.path).exists()));
    let warm = started.elapsed();
    println!("per-trial overhead once cached: first trial of a worker process {first_use:.2?} (re-hash), later trials {warm:.2?} (target < 1 s)");
}
