//! Transfers interrupted by real process deaths: a coordinator SIGKILLed and restarted while
//! `study create` uploads a large model, and a worker SIGKILLed while it downloads it. Each
//! ends in a retry that completes, and no half-written file is ever used: what lands in the
//! coordinator's store and the worker's cache hashes to its name. Then a worker with a cache
//! size limit, on another study, evicts the first study's inputs (no trial holds them) and
//! keeps its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bertsweep_tests::*;
use sha2::{Digest, Sha256};

/// Files under `dir/tmp` with data in them: a transfer in flight.
fn transfer_in_flight(blob_root: &Path) -> bool {
    std::fs::read_dir(blob_root.join("tmp"))
        .map(|d| d.flatten().any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false)))
        .unwrap_or(false)
}

/// Every blob under `root/sha256` hashes to its own name.
fn assert_blobs_verify(root: &Path) {
    let mut n = 0;
    for shard in std::fs::read_dir(root.join("sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let blob = blob.unwrap();
            let digest = Sha256::digest(std::fs::read(blob.path()).unwrap());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, blob.file_name().to_string_lossy(), "{} does not match its name", blob.path().display());
            n += 1;
        }
    }
    assert!(n > 0, "no blobs under {}", root.display());
}

/// Waits until `study` has ended and its worker has exited; returns the study's final state
/// and the worker's log (stderr, `<log>.err`).
fn finish(coordinator: &Coordinator, study: &str, mut worker: std::process::Child, log: &Path) -> (String, String) {
    let state = eventually(&format!("study {study} to end"), Duration::from_secs(600), || {
        let s = coordinator.study_state(study);
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    let _ = worker.wait();
    (state, std::fs::read_to_string(log.with_extension("err")).unwrap_or_default())
}

/// A model directory made large (a 400 MB extra file) so transfers take long enough to be
/// interrupted, plus the demo data; returns the study file.
fn large_study(dir: &Path, model: &Path) -> PathBuf {
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("model")).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        if std::fs::metadata(entry.path()).unwrap().is_file() {
            std::fs::copy(entry.path(), source.join("model").join(entry.file_name())).unwrap();
        }
    }
    let padding: Vec<u8> = (0..400_000_000u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
    std::fs::write(source.join("model/padding.bin"), padding).unwrap();
    let root = workspace_root();
    let study = format!(
        "name = \"big\"\n[objective]\nmetric = \"eval_accuracy\"\n[budget]\nmax_attempts = 3\n[task]\nmodel = \"{}\"\ntrain_file = \"{}\"\nvalidation_file = \"{}\"\nmax_seq_length = 32\nmax_train_samples = 32\n[parameters.learning_rate]\nvalue = 5e-5\n[parameters.num_train_epochs]\nvalue = 1\n",
        source.join("model").display(),
        root.join("examples/data/reviews-train.tsv").display(),
        root.join("examples/data/reviews-dev.tsv").display()
    );
    let file = dir.join("big.toml");
    std::fs::write(&file, study).unwrap();
    file
}

#[test]
fn interrupted_uploads_and_downloads_retry_and_never_use_half_a_file() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let db = dir.path().join("c.db");
    let data_dir = dir.path().join("c.db.data");
    let file = large_study(dir.path(), &model);

    // 1. The coordinator dies mid-upload and comes back on the same address: the CLI retries.
    let mut coordinator = Coordinator::start_on(&addr, &db, "3s");
    let create = Command::new(binary("bertsweep"))
        .env("BERTSWEEP_COORDINATOR", &coordinator.url)
        .env("RUST_LOG", "warn")
        .args(["study", "create"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the upload to start", Duration::from_secs(120), || transfer_in_flight(&data_dir).then_some(()));
    let _ = coordinator.child.kill();
    let _ = coordinator.child.wait();
    assert!(transfer_in_flight(&data_dir), "the kill left a partial upload behind");
    drop(coordinator);
    let coordinator = Coordinator::start_on(&addr, &db, "3s");
    let out = create.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "study create did not survive the restart: {err}");
    assert!(err.contains("retrying"), "the CLI retried: {err}");
    assert!(!transfer_in_flight(&data_dir), "the restart deleted the partial upload");
    assert_blobs_verify(&data_dir);

    // 2. A worker dies mid-download; the next one with the same cache starts over cleanly.
    let artifacts = dir.path().join("artifacts");
    let cache = dir.path().join("worker-cache");
    let mut first = coordinator.worker_with(&["--study", "big", "--no-export"], &artifacts, &dir.path().join("w1.log"));
    eventually("the download to start", Duration::from_secs(120), || {
        transfer_in_flight(&cache.join("blobs")).then_some(())
    });
    let _ = first.kill();
    let _ = first.wait();
    let laid_out = std::fs::read_dir(cache.join("trees"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'));
    assert_eq!(laid_out.count(), 0, "nothing half-downloaded was laid out for use");

    let log2 = dir.path().join("w2.log");
    let second = coordinator.worker_with(&["--study", "big", "--no-export"], &artifacts, &log2);
    let (state, log) = finish(&coordinator, "big", second, &log2);
    assert_eq!(state, "COMPLETED", "{log}");
    assert!(log.contains("input ready"), "the second worker downloaded the inputs: {log}");
    assert_blobs_verify(&cache.join("blobs"));

    // 3. Another study on a worker whose cache may hold 1 MB: once the new trial's inputs are
    //    in, the first study's 400 MB model (held by no trial) goes; the new inputs stay until
    //    their trial ends, and the trial completes.
    let small = std::fs::read_to_string(&file)
        .unwrap()
        .replace("name = \"big\"", "name = \"small\"")
        .replace(&dir.path().join("source/model").display().to_string(), &model.display().to_string());
    let small_file = dir.path().join("small.toml");
    std::fs::write(&small_file, small).unwrap();
    let out = coordinator.cli(&["study", "create", small_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log3 = dir.path().join("w3.log");
    let third =
        coordinator.worker_with(&["--study", "small", "--no-export", "--cache-max-size", "1MB"], &artifacts, &log3);
    let (state, log) = finish(&coordinator, "small", third, &log3);
    assert_eq!(state, "COMPLETED", "{log}");
    assert!(log.contains("input cache pruned"), "{log}");
    let padded_trees = std::fs::read_dir(cache.join("trees"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("padding.bin").exists())
        .count();
    assert_eq!(padded_trees, 0, "the first study's model left the cache: {log}");
    let blob_bytes: u64 = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).unwrap().flatten())
        .map(|blob| blob.metadata().unwrap().len())
        .sum();
    assert!(blob_bytes < 400_000_000, "{blob_bytes} bytes of blobs left: {log}");
    assert_blobs_verify(&cache.join("blobs"));
}
