//! The worker's input cache against a real coordinator (the `bertsweep` binary): a study input
//! is downloaded once, verified, and laid out; a corrupted cache entry is noticed on first use
//! and downloaded again; what a killed download leaves behind is never used; a blob missing on
//! the coordinator is a clear, non-retryable failure.

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
    std::fs::write(cache.join("blobs/tmp/abc.1.0000.part"), b"half a blob").unwrap();
    std::fs::create_dir_all(cache.join("trees/.partial-leftover")).unwrap();

    let inputs = Inputs::open(&cache, hub_offline(dir.path())).unwrap();
    let got = inputs.resolve(&remote, "task.model", &model_ref).await.unwrap();
    for f in ["config.json", "model.safetensors", "sub/vocab.txt"] {
        assert_eq!(std::fs::read(got.join(f)).unwrap(), std::fs::read(model.join(f)).unwrap(), "{f}");
    }
    let train = inputs.resolve(&remote, "task.train_file", &train_ref).await.unwrap();
    assert_eq!(train.file_name().unwrap(), "train.tsv", "a data file keeps its name (and extension)");
    // The wrong kind for a field is refused in one line.
    let e = inputs.resolve(&remote, "task.train_file", &model_ref).await.unwrap_err();
    assert!(matches!(e, InputError::Invalid { .. }) && !e.to_string().contains('\n'), "{e}");

    // Corrupt the cached weights: the next process notices on first use and downloads again.
    std::fs::write(got.join("model.safetensors"), b"garbage").unwrap();
    drop(inputs);
    let inputs = Inputs::open(&cache, hub_offline(dir.path())).unwrap();
    let again = inputs.resolve(&remote, "task.model", &model_ref).await.unwrap();
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
