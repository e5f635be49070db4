//! A stored input corrupted on the coordinator's disk, end to end with real processes: a
//! worker with an empty cache is never handed the corrupt bytes (DATA_LOSS; the coordinator
//! quarantines the blob and its trial is retried, not failed as infeasible), `bertsweep study
//! create` run again with the same files (another study name) finds the blob missing and
//! uploads it again, and the next worker, again with an empty cache, trains the first
//! study's trial to completion.

use std::path::Path;
use std::time::Duration;

use bertsweep_tests::*;

/// The blob file under `data` holding exactly `content`.
fn blob_holding(data: &Path, content: &[u8]) -> std::path::PathBuf {
    for shard in std::fs::read_dir(data.join("sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = blob.unwrap().path();
            if std::fs::read(&path).unwrap() == content {
                return path;
            }
        }
    }
    panic!("no blob holds the given content under {}", data.display());
}

#[test]
fn a_corrupt_stored_input_is_never_served_and_study_create_repairs_it() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let coordinator = Coordinator::start(&db, "3s");
    let study = |name: &str| {
        StudyFile::reviews(name, &model)
            .budget("max_attempts = 3")
            .task("max_seq_length = 32")
            .task("max_train_samples = 32")
            .parameter("learning_rate", "value = 5e-5")
            .parameter("num_train_epochs", "value = 1")
            .write_in(dir.path())
    };
    let first = study("first");
    let out = coordinator.cli(&["study", "create", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // One flipped byte in the stored training file.
    let train = std::fs::read(workspace_root().join("examples/data/reviews-train.tsv")).unwrap();
    let stored = blob_holding(&dir.path().join("c.db.data"), &train);
    let mut bad = train.clone();
    bad[train.len() / 2] ^= 0x01;
    std::fs::write(&stored, &bad).unwrap();

    // A worker with an empty cache: refused the corrupt bytes, its trial goes back to the queue.
    let log1 = dir.path().join("w1.log");
    let mut w1 = coordinator.worker_with(
        &["--study", "first", "--max-trials", "1", "--no-export"],
        &dir.path().join("a1"),
        &log1,
    );
    let status = w1.wait().unwrap();
    let log = std::fs::read_to_string(log1.with_extension("err")).unwrap_or_default();
    assert!(log.contains("corrupted on the coordinator"), "status {status}: {log}");
    let trials = coordinator.trials("first");
    assert_eq!(trials[0]["state"], "PENDING", "retried, not failed as infeasible: {trials:?}");
    assert!(!stored.exists(), "the corrupt copy was quarantined");
    assert!(dir.path().join("c.db.data/quarantine").read_dir().unwrap().count() == 1);
    let cache = dir.path().join("worker-cache");
    let _ = std::fs::remove_dir_all(&cache);

    // The same files again (another study name): the missing blob is uploaded again.
    let second = study("second");
    let out = coordinator.cli(&["study", "create", second.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(std::fs::read(&stored).unwrap(), train, "repaired");

    // A fresh worker, empty cache, trains the first study's trial.
    let log2 = dir.path().join("w2.log");
    let w2 = coordinator.worker_with(&["--study", "first", "--no-export"], &dir.path().join("a2"), &log2);
    let state = eventually("study first to end", Duration::from_secs(600), || {
        let s = coordinator.study_state("first");
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    let mut w2 = w2;
    let _ = w2.wait();
    let log = std::fs::read_to_string(log2.with_extension("err")).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{log}");
}
