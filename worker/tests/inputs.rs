//! The worker's input cache against a real coordinator (the `bertsweep` binary): a study input
//! is downloaded once, verified, and laid out; a corrupted cache entry is noticed on first use
//! and downloaded again; what a killed download leaves behind is never used; a blob missing on
//! the coordinator is a clear, non-retryable failure. With a size limit, least recently used
//! inputs go first, never one a trial holds (until its process dies), and an evicted input
//! comes back on next use.

use std::path::Path;

use bertsweep_proto::auth::BearerToken;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_tests::Coordinator;
use bertsweep_transfer::remote::{Remote, RemoteError};
use bertsweep_worker::hub::HubEnv;
use bertsweep_worker::runtime::inputs::{InputError, Inputs};

fn hub_offline(dir: &Path) -> HubEnv {
    HubEnv { cache_dir: dir.join("hf"), endpoint: "http://127.0.0.1:9".into(), token: None, offline: true }
}

async fn remote(url: &str) -> Remote {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut r = Remote::new(CoordinatorClient::with_interceptor(channel, BearerToken::new(None).unwrap()));
    r.patience = std::time::Duration::from_secs(5);
    r
}

fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"model_type\": \"bert\"}").unwrap();
    let weights: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.join("sub/vocab.txt"), b"[PAD]\n[UNK]\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_cached_verified_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("c.db"), "30s");
    let remote = remote(&coordinator.url).await;
    let model = dir.path().join("model");
    write_model(&model);
    std::fs::write(dir.path().join("train.tsv"), b"sentence\tlabel\ngood\t1\n").unwrap();
    let model_ref = format!("blob:sha256:{}", remote.upload_path(&model, "test:/model".into()).await.unwrap().digest);
    let train_ref = format!(
        "blob:sha256:{}",
        remote.upload_path(&dir.path().join("train.tsv"), "test:/train.tsv".into()).await.unwrap().digest
    );

    // A download a killed worker left behind: a partial blob in tmp/ and a half-laid-out tree.
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("blobs/tmp")).unwrap();
    std::fs::write(cache.join("blobs/tmp/0123456789ab.1.0123456789abcdef.part"), b"half a blob").unwrap();
    std::fs::create_dir_all(cache.join("trees/.partial-leftover")).unwrap();

    let inputs = Inputs::open(&cache, hub_offline(dir.path())).unwrap();
    let got = inputs.resolve(&remote, "task.model", &model_ref).await.unwrap().path;
    for f in ["config.json", "model.safetensors", "sub/vocab.txt"] {
        assert_eq!(std::fs::read(got.join(f)).unwrap(), std::fs::read(model.join(f)).unwrap(), "{f}");
    }
    let train = inputs.resolve(&remote, "task.train_file", &train_ref).await.unwrap().path;
    assert_eq!(train.file_name().unwrap(), "train.tsv", "a data file keeps its name (and extension)");
    // The wrong kind for a field is refused in one line.
    let e = inputs.resolve(&remote, "task.train_file", &model_ref).await.unwrap_err();
    assert!(matches!(e, InputError::Invalid { .. }) && !e.to_string().contains('\n'), "{e}");

    // Corrupt the cached weights: the next process notices on first use and downloads again.
    std::fs::write(got.join("model.safetensors"), b"garbage").unwrap();
    drop(inputs);
    let inputs = Inputs::open(&cache, hub_offline(dir.path())).unwrap();
    let again = inputs.resolve(&remote, "task.model", &model_ref).await.unwrap().path;
    assert_eq!(
        std::fs::read(again.join("model.safetensors")).unwrap(),
        std::fs::read(model.join("model.safetensors")).unwrap(),
        "the corrupted entry was replaced by a verified download"
    );

    // A blob gone from the coordinator (and not cached here): a clear failure, not retried.
    let data_dir = dir.path().join("c.db.data");
    for shard in std::fs::read_dir(data_dir.join("sha256")).unwrap() {
        std::fs::remove_dir_all(shard.unwrap().path()).unwrap();
    }
    let fresh = Inputs::open(&dir.path().join("fresh-cache"), hub_offline(dir.path())).unwrap();
    let e = fresh.resolve(&remote, "task.model", &model_ref).await.unwrap_err();
    assert!(matches!(&e, InputError::Transfer { source: RemoteError::Missing(_), .. }), "{e:?}");
    assert!(!e.is_retryable() && !e.to_string().contains('\n') && e.to_string().contains("missing"), "{e}");
    assert!(!dir
        .path()
        .join("fresh-cache/trees")
        .read_dir()
        .unwrap()
        .any(|e| { !e.unwrap().file_name().to_string_lossy().starts_with('.') }));

    // An unknown hf: model offline: one line naming HF_HUB_OFFLINE, not retried.
    let e = fresh.resolve(&remote, "task.model", "hf:nobody/nothing").await.unwrap_err();
    assert!(!e.is_retryable() && e.to_string().contains("HF_HUB_OFFLINE") && !e.to_string().contains('\n'), "{e}");
}

fn write_weights(dir: &Path, seed: u32, bytes: u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), format!("{{\"model_type\": \"bert\", \"seed\": {seed}}}")).unwrap();
    let weights: Vec<u8> = (0..bytes).map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
}

/// Bytes of every blob in a cache.
fn blob_bytes(cache: &Path) -> u64 {
    let mut total = 0;
    for shard in std::fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            total += blob.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_limit_evicts_least_recently_used_inputs_that_no_trial_holds() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("c.db"), "30s");
    let remote = remote(&coordinator.url).await;
    let mut refs = Vec::new();
    for seed in 0..3 {
        let model = dir.path().join(format!("model{seed}"));
        write_weights(&model, seed, 1_000_000);
        let up = remote.upload_path(&model, format!("test:/model{seed}")).await.unwrap();
        refs.push((model, format!("blob:sha256:{}", up.digest), up.digest.to_string()));
    }
    let cache = dir.path().join("cache");
    // Room for two models, not three.
    let inputs = Inputs::open(&cache, hub_offline(dir.path())).unwrap().with_size_limit(Some(2_500_000));
    let tree = |i: usize| cache.join("trees").join(&refs[i].2);

    // Two trials hold models 0 and 1: over no limit yet, nothing goes.
    let held0 = inputs.resolve(&remote, "task.model", &refs[0].1).await.unwrap();
    let held1 = inputs.resolve(&remote, "task.model", &refs[1].1).await.unwrap();
    let p = inputs.prune().await.unwrap().unwrap();
    assert_eq!((p.trees, p.blobs), (0, 0), "{p:?}");

    // A third model while both are held: over the limit, but everything is in use.
    let held2 = inputs.resolve(&remote, "task.model", &refs[2].1).await.unwrap();
    let p = inputs.prune().await.unwrap().unwrap();
    assert_eq!((p.trees, p.blobs, p.in_use), (0, 0, 3), "{p:?}");
    assert!(p.bytes_after > 2_500_000 && tree(0).exists() && tree(1).exists() && tree(2).exists());

    // Trials on models 0 and 1 end (0 first used, so least recently); model 2's still runs.
    drop(held0);
    drop(held1);
    let p = inputs.prune().await.unwrap().unwrap();
    assert_eq!((p.trees, p.in_use), (1, 0), "only as much as the limit needs: {p:?}");
    assert!(!tree(0).exists() && tree(1).exists() && tree(2).exists(), "model 0 was used least recently");
    assert!(p.bytes_after <= 2_500_000 && blob_bytes(&cache) == p.bytes_after, "{p:?}");
    assert_eq!(
        std::fs::read(held2.path.join("model.safetensors")).unwrap(),
        std::fs::read(refs[2].0.join("model.safetensors")).unwrap(),
        "the held model is intact"
    );

    // Model 0 is wanted again: downloaded again, verified; now model 1 is the oldest unheld.
    let back = inputs.resolve(&remote, "task.model", &refs[0].1).await.unwrap();
    assert_eq!(
        std::fs::read(back.path.join("model.safetensors")).unwrap(),
        std::fs::read(refs[0].0.join("model.safetensors")).unwrap()
    );
    let p = inputs.prune().await.unwrap().unwrap();
    assert_eq!(p.trees, 1, "{p:?}");
    assert!(tree(0).exists() && !tree(1).exists() && tree(2).exists());

    // A second worker process sharing the cache holds model 2 (its own lease, its own file
    // handle); this one's trial on it ends: model 2 still stays.
    let other = Inputs::open(&cache, hub_offline(dir.path())).unwrap().with_size_limit(Some(1));
    let other_held = other.resolve(&remote, "task.model", &refs[2].1).await.unwrap();
    drop(held2);
    drop(back);
    let p = other.prune().await.unwrap().unwrap();
    assert!(!tree(0).exists() && tree(2).exists(), "held by the other worker: {p:?}");
    assert_eq!(p.in_use, 1, "{p:?}");
    assert_eq!(blob_bytes(&cache), p.bytes_after, "no blob without a tree is left: {p:?}");
    drop(other_held);
    let p = other.prune().await.unwrap().unwrap();
    assert_eq!((p.bytes_after, blob_bytes(&cache)), (0, 0), "{p:?}");
    assert!(!tree(2).exists());

    // A worker process killed while it holds an input (SIGKILL: no clean-up runs): the kernel
    // drops its lock with the process, and the input becomes evictable.
    drop(other.resolve(&remote, "task.model", &refs[1].1).await.unwrap());
    let lease_file = cache.join("leases").join(&refs[1].2);
    let mut holder = std::process::Command::new("flock")
        // --no-fork: the process killed below is the one holding the lock.
        .args(["--shared".as_ref(), "--no-fork".as_ref(), lease_file.as_os_str(), "sleep".as_ref(), "600".as_ref()])
        .spawn()
        .expect("run flock (util-linux)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let f = std::fs::File::options().write(true).open(&lease_file).unwrap();
        match f.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => break, // the other process holds it
            _ => assert!(std::time::Instant::now() < deadline, "flock never took the lease"),
        }
        drop(f);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let p = other.prune().await.unwrap().unwrap();
    assert_eq!((p.trees, p.in_use), (0, 1), "held by a live process: {p:?}");
    assert!(tree(1).exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    let p = other.prune().await.unwrap().unwrap();
    assert_eq!((p.trees, p.in_use, p.bytes_after), (1, 0, 0), "its holder was killed: {p:?}");
    assert!(!tree(1).exists());

    // No limit, no pruning.
    let unlimited = Inputs::open(&cache, hub_offline(dir.path())).unwrap();
    assert!(unlimited.prune().await.is_none());
}
