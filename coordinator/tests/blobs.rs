//! Blob transfer against a real in-process coordinator (real socket, real files): uploads with
//! dedup and byte-exact round trips, the size limit, refused uploads (wrong digest, too many
//! bytes) that leave nothing behind, DownloadBlob errors and resume, `blob:` study inputs
//! checked at CreateStudy, the top-K kept models (OfferArtifact, eviction of pushed-out models
//! and their unshared blobs), what a restart keeps and clears, and the periodic sweep that
//! deletes what nothing refers to while the coordinator keeps running.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bertsweep_coordinator::server::ServerConfig;
use bertsweep_proto::v1 as pb;
use bertsweep_proto::Client;
use bertsweep_testkit::StudyToml;
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::{materialize, Remote, RemoteError};
use bertsweep_transfer::{Digest, Manifest};
use common::{eventually, TestServer};
use futures::StreamExt;
use tonic::Code;

/// A coordinator over `<root>/coord.db` with its blobs in `<root>/data`; one started again
/// over the same root finds both.
struct Server {
    server: TestServer,
    data: PathBuf,
}

impl Server {
    async fn start(root: &Path, max_blob_bytes: u64) -> Server {
        Server::start_with_grace(root, max_blob_bytes, ServerConfig::default().orphan_grace).await
    }

    async fn start_with_grace(root: &Path, max_blob_bytes: u64, orphan_grace: Duration) -> Server {
        let data = root.join("data");
        let config = ServerConfig {
            db_url: format!("sqlite://{}", root.join("coord.db").display()),
            long_poll: Duration::from_secs(1),
            data_dir: Some(data.clone()),
            max_blob_bytes,
            orphan_grace,
            ..ServerConfig::default()
        };
        Server { server: TestServer::start_config(config).await, data }
    }

    async fn client(&self) -> Client {
        self.server.intercepted_client().await
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }

    /// Where the store keeps a blob: `sha256/<2 hex>/<64 hex>`.
    fn blob(&self, d: &Digest) -> PathBuf {
        let hex = d.to_string();
        self.data.join("sha256").join(&hex[..2]).join(&hex)
    }

    fn tmp_files(&self) -> usize {
        std::fs::read_dir(self.data.join("tmp")).unwrap().count()
    }
}

/// Polls a condition on files for up to 10 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    eventually(what, Duration::from_secs(10), || std::future::ready(check().then_some(()))).await
}

/// Every file under `dir` by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let (mut out, mut dirs) = (BTreeMap::new(), vec![dir.to_path_buf()]);
    while let Some(d) = dirs.pop() {
        for path in std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `n` bytes that differ from chunk to chunk (a chunk boundary mix-up changes the digest).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + i / 1000) as u8) ^ seed).collect()
}

/// A UploadBlob stream announcing `digest` and `size`, then carrying `chunks`.
async fn raw_upload(
    c: &mut Client,
    digest: &str,
    size: u64,
    chunks: &[&[u8]],
) -> Result<pb::UploadBlobResponse, tonic::Status> {
    let mut messages: Vec<_> =
        chunks.iter().map(|d| pb::UploadBlobRequest { data: d.to_vec(), ..Default::default() }).collect();
    (messages[0].digest, messages[0].size) = (digest.into(), size);
    c.upload_blob(futures::stream::iter(messages)).await.map(|r| r.into_inner())
}

/// A whole DownloadBlob stream from `offset`: the announced size and the bytes.
async fn download(c: &mut Client, digest: &str, offset: u64) -> Result<(u64, Vec<u8>), tonic::Status> {
    let request = pb::DownloadBlobRequest { digest: digest.into(), offset };
    let mut stream = c.download_blob(request).await?.into_inner();
    let (mut size, mut bytes) = (None, Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        assert!(chunk.data.len() <= 1 << 20, "chunks are at most 1 MiB");
        size.get_or_insert(chunk.size);
        bytes.extend(chunk.data);
    }
    Ok((size.expect("at least one chunk"), bytes))
}

/// Downloads a manifest and its files into a fresh cache and lays them out at `dest`.
async fn fetch_tree(remote: &Remote, manifest: Digest, dest: &Path) {
    let cache = BlobDir::open(dest.with_extension("cache")).unwrap();
    let m = remote.fetch_manifest(&cache, manifest).await.unwrap();
    remote.fetch_files(&cache, &m).await.unwrap();
    materialize(&cache, &m, dest).unwrap();
}

/// A four-trial grid study (inputs on the workers unless `.inputs(…)` says otherwise).
fn study(name: &str, budget: &str) -> StudyToml {
    StudyToml::new(name).budget(budget).parameters("[parameters.per_device_train_batch_size]\nvalues = [8, 16, 32, 64]")
}

async fn lease_all(c: &mut Client, n: usize) -> Vec<pb::Assignment> {
    let register = pb::RegisterWorkerRequest { hostname: "t".into(), devices: vec!["cpu".into()], version: "t".into() };
    let worker = c.register_worker(register).await.unwrap().into_inner().worker_id;
    let mut out = Vec::new();
    for _ in 0..n {
        let request = pb::AcquireTrialRequest { worker_id: worker.clone(), study: String::new(), wait_ms: 1000 };
        out.push(c.acquire_trial(request).await.unwrap().into_inner().assignment.expect("a trial"));
    }
    out
}

async fn complete(c: &mut Client, a: &pb::Assignment, acc: f64, artifact: &str) -> Result<(), tonic::Status> {
    let (trial_id, lease_token, artifact) = (a.trial_id, a.lease_token, artifact.to_string());
    let metrics = [("eval_accuracy".to_string(), acc)].into_iter().collect();
    c.complete_trial(pb::CompleteTrialRequest {
        trial_id,
        lease_token,
        metrics,
        artifact,
        peak_device_memory_bytes: 0,
        predictions: None,
        test_metrics: Default::default(),
    })
    .await
    .map(|_| ())
}

async fn list_trials(c: &mut Client, study: &str) -> Vec<pb::Trial> {
    let request = pb::ListTrialsRequest { study: study.into(), page_size: 100, page_token: String::new() };
    c.list_trials(request).await.unwrap().into_inner().trials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_uploads_once_and_downloads_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let src = tmp.path().join("model");
    write(&src.join("config.json"), b"{\"hidden\": 8}");
    write(&src.join("weights.bin"), &pattern(3 * 1024 * 1024 + 123, 7));
    write(&src.join("sub/vocab.txt"), b"[PAD]\n[UNK]\nhello\n");
    write(&src.join("sub/copy.json"), b"{\"hidden\": 8}"); // same content as config.json
    write(&src.join("sub/empty"), b"");

    let remote = Remote::new(c.clone());
    let first = remote.upload_path(&src, "test:/model".into()).await.unwrap();
    let unique: u64 = tree(&src).into_values().filter(|b| b != b"{\"hidden\": 8}").map(|b| b.len() as u64).sum();
    let manifest_len = first.manifest.to_bytes().len() as u64;
    assert_eq!(first.bytes_sent, unique + 13 + manifest_len, "each distinct blob once, plus the manifest");
    assert_eq!(first.manifest.files.len(), 5);

    let again = remote.upload_path(&src, "test:/model".into()).await.unwrap();
    assert_eq!((again.digest, again.bytes_sent), (first.digest, 0), "nothing is sent twice");
    let mut digests: Vec<String> = first.manifest.files.iter().map(|f| f.sha256.clone()).collect();
    digests.push(first.digest.to_string());
    let reply = c.find_missing_blobs(pb::FindMissingBlobsRequest { digests }).await.unwrap().into_inner();
    assert!(reply.missing.is_empty(), "{:?}", reply.missing);
    assert_eq!(reply.max_blob_bytes, 1 << 30);
    for f in &first.manifest.files {
        assert_eq!(std::fs::read(server.blob(&f.digest())).unwrap(), std::fs::read(src.join(&f.path)).unwrap());
    }
    assert_eq!(std::fs::read(server.blob(&first.digest)).unwrap(), first.manifest.to_bytes());
    assert_eq!(server.tmp_files(), 0);

    let dest = tmp.path().join("out/model");
    fetch_tree(&remote, first.digest, &dest).await;
    assert_eq!(tree(&dest), tree(&src));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_size_limit_are_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1_000_000).await;
    let mut c = server.client().await;
    let big = tmp.path().join("big/train.tsv");
    write(&big, &pattern(2_000_000, 1));

    let err = Remote::new(c.clone()).upload_path(&big, "test:/big".into()).await.unwrap_err();
    assert!(matches!(err, RemoteError::TooLarge { size: 2_000_000, limit: 1_000_000, .. }), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains('\n') && text.contains("worker:/path") && text.contains("hf:"), "{text}");
    assert!(text.contains(&big.display().to_string()), "{text}");

    let d = Digest::of(&pattern(2_000_000, 1));
    let chunk = pattern(1 << 20, 1);
    let status = raw_upload(&mut c, &d.to_string(), 2_000_000, &[&chunk]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(!status.message().contains('\n') && status.message().contains("worker:/path"), "{}", status.message());
    assert!(!server.blob(&d).exists());
    assert!(tree(&server.data.join("sha256")).is_empty(), "no blob at all");
    assert_eq!(server.tmp_files(), 0);

    // At the limit is fine.
    let at_limit = pattern(1_000_000, 2);
    let ok = raw_upload(&mut c, &Digest::of(&at_limit).to_string(), 1_000_000, &[&at_limit]).await.unwrap();
    assert!(ok.stored);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_do_not_match_their_digest_or_size_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let (hello, world) = (Digest::of(b"hello"), Digest::of(b"world"));

    let status = raw_upload(&mut c, &world.to_string(), 5, &[&b"hello"[..]]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("does not match") && !status.message().contains('\n'), "{}", status.message());
    for (chunks, why) in [(&[&b"hel"[..], b"lo!!"][..], "more bytes than announced"), (&[&b"hell"[..]][..], "fewer")] {
        let status = raw_upload(&mut c, &hello.to_string(), 5, chunks).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{why}: {status:?}");
    }
    assert!(!server.blob(&hello).exists() && !server.blob(&world).exists());
    assert_eq!(server.tmp_files(), 0);

    let stored = raw_upload(&mut c, &hello.to_string(), 5, &[&b"he"[..], b"llo"]).await.unwrap();
    assert!(stored.stored && stored.size == 5 && stored.digest == hello.to_string());
    assert!(!raw_upload(&mut c, &hello.to_string(), 5, &[&b"hello"[..]]).await.unwrap().stored, "already there");
    assert_eq!(std::fs::read(server.blob(&hello)).unwrap(), b"hello");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_of_missing_or_malformed_digests_fail_and_offsets_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let unknown = Digest::of(b"never uploaded");
    assert_eq!(download(&mut c, &unknown.to_string(), 0).await.unwrap_err().code(), Code::NotFound);
    let cache = BlobDir::open(tmp.path().join("cache")).unwrap();
    let err = Remote::new(c.clone()).fetch_blob(&cache, unknown).await.unwrap_err();
    assert!(matches!(err, RemoteError::Missing(d) if d == unknown), "{err:?}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let (upper, long) = (unknown.to_string().to_uppercase(), format!("{unknown}0"));
    for bad in ["xyz", "", upper.as_str(), long.as_str()] {
        assert_eq!(download(&mut c, bad, 0).await.unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
    }

    let bytes = pattern(2_500_000, 3);
    let d = Digest::of(&bytes);
    let chunks: Vec<&[u8]> = bytes.chunks(1 << 20).collect();
    raw_upload(&mut c, &d.to_string(), bytes.len() as u64, &chunks).await.unwrap();
    assert_eq!(download(&mut c, &d.to_string(), 0).await.unwrap(), (2_500_000, bytes.clone()));
    assert_eq!(download(&mut c, &d.to_string(), 1_500_001).await.unwrap(), (2_500_000, bytes[1_500_001..].to_vec()));
    assert_eq!(download(&mut c, &d.to_string(), 2_500_000).await.unwrap(), (2_500_000, vec![]));
    // Past the end is refused (the code is not asserted: OUT_OF_RANGE is renamed on the wire).
    let past = download(&mut c, &d.to_string(), 2_500_001).await.unwrap_err();
    assert!(past.message().contains("past the blob"), "{past:?}");
    let path = Remote::new(c.clone()).fetch_blob(&cache, d).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_inputs_must_be_uploaded_and_of_the_right_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let remote = Remote::new(c.clone());
    write(&tmp.path().join("m/config.json"), b"{}");
    write(&tmp.path().join("m/model.bin"), b"weights");
    write(&tmp.path().join("train.tsv"), b"sentence\tlabel\nhi\t1\n");
    write(&tmp.path().join("dev.tsv"), b"sentence\tlabel\nho\t0\n");
    let blob = |d: Digest| format!("blob:sha256:{d}");
    let model = blob(remote.upload_path(&tmp.path().join("m"), "t:/m".into()).await.unwrap().digest);
    let train = blob(remote.upload_path(&tmp.path().join("train.tsv"), "t:/train".into()).await.unwrap().digest);
    let dev = blob(remote.upload_path(&tmp.path().join("dev.tsv"), "t:/dev".into()).await.unwrap().digest);
    // A manifest whose file never arrived.
    write(&tmp.path().join("lost.tsv"), b"lost");
    let orphan = Manifest::of_path(&tmp.path().join("lost.tsv"), "t:/lost".into()).unwrap().to_bytes();
    raw_upload(&mut c, &Digest::of(&orphan).to_string(), orphan.len() as u64, &[&orphan]).await.unwrap();
    let (absent, incomplete) = (blob(Digest::of(b"absent")), blob(Digest::of(&orphan)));

    let cases = [
        (model.as_str(), Code::InvalidArgument, "not a single file"),
        (absent.as_str(), Code::FailedPrecondition, "not on this coordinator"),
        (incomplete.as_str(), Code::FailedPrecondition, "missing"),
    ];
    for (bad_train, code, text) in cases {
        let spec_toml = study("inputs", "").inputs(&model, bad_train, &dev).to_string();
        let status = c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        let m = status.message();
        assert!(m.contains("task.train_file") && m.contains(text) && !m.contains('\n'), "{m}");
        let get = c.get_study(pb::GetStudyRequest { name: "inputs".into() }).await.unwrap_err();
        assert_eq!(get.code(), Code::NotFound, "nothing was created");
    }
    // A single file is not a model directory.
    let spec_toml = study("inputs", "").inputs(&train, &train, &dev).to_string();
    let status = c.create_study(pb::CreateStudyRequest { spec_toml });
    assert_eq!(status.await.unwrap_err().code(), Code::InvalidArgument);

    let spec_toml = study("inputs", "").inputs(&model, &train, &dev).to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap();
    let task = lease_all(&mut c, 1).await[0].task.clone().unwrap();
    assert_eq!((task.model, task.train_file, task.validation_file), (model, train, dev));
    server.stop().await;
}

/// A fake model: the shared config.json plus weights of its own.
async fn upload_model(remote: &Remote, root: &Path, i: u8) -> bertsweep_transfer::remote::Uploaded {
    let dir = root.join(format!("model{i}"));
    write(&dir.join("config.json"), b"{\"shared\": true}");
    write(&dir.join("weights/model.bin"), &pattern(10_000 + i as usize, i));
    remote.upload_path(&dir, format!("t:/model{i}")).await.unwrap()
}

async fn offer(c: &mut Client, a: &pb::Assignment, value: f64) -> bool {
    let request = pb::OfferArtifactRequest { trial_id: a.trial_id, lease_token: a.lease_token, value };
    c.offer_artifact(request).await.unwrap().into_inner().wanted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_top_k_models_are_kept_and_pushed_out_blobs_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let remote = Remote::new(c.clone());
    let spec_toml = study("topk", "parallel_trials = 4\nkeep_artifacts = 2").to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap();
    let leases = lease_all(&mut c, 4).await;

    let mut models = Vec::new();
    for (i, a) in leases.iter().enumerate() {
        let value = 0.6 + i as f64 / 10.0; // each better than the last
        if i == 3 {
            assert!(!offer(&mut c, a, 0.5).await, "worse than the 2 kept: not wanted");
            let unknown = format!("blob:sha256:{}", Digest::of(b"never uploaded"));
            let status = complete(&mut c, a, value, &unknown).await.unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert_eq!(list_trials(&mut c, "topk").await[3].state, pb::TrialState::Running as i32);
        }
        assert!(offer(&mut c, a, value).await, "trial {i} would rank first");
        let m = upload_model(&remote, tmp.path(), i as u8).await;
        complete(&mut c, a, value, &format!("blob:sha256:{}", m.digest)).await.unwrap();
        models.push(m);
    }

    let listed = list_trials(&mut c, "topk").await;
    let artifacts: Vec<&str> = listed.iter().map(|t| t.artifact.as_str()).collect();
    let kept = [2, 3].map(|i| format!("blob:sha256:{}", models[i].digest));
    assert_eq!(artifacts, ["", "", kept[0].as_str(), kept[1].as_str()]);
    let weights = |i: usize| models[i].manifest.files.iter().find(|f| f.path == "weights/model.bin").unwrap().digest();
    until("pushed-out models to be deleted", || {
        (0..2).all(|i| !server.blob(&weights(i)).exists() && !server.blob(&models[i].digest).exists())
    })
    .await;
    let present = |i: usize| server.blob(&weights(i)).exists() && server.blob(&models[i].digest).exists();
    assert!(present(2) && present(3), "the kept models stay");
    let config = models[0].manifest.files.iter().find(|f| f.path == "config.json").unwrap().digest();
    assert!(server.blob(&config).exists(), "config.json is shared by the kept models");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_models_survive_a_restart_and_unfinished_uploads_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let spec_toml = study("restart", "keep_artifacts = 1\nparallel_trials = 2").to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap();
    let mut models = Vec::new();
    for (i, a) in lease_all(&mut c, 2).await.iter().enumerate() {
        let m = upload_model(&Remote::new(c.clone()), tmp.path(), 8 + i as u8).await;
        complete(&mut c, a, 0.8 + i as f64 / 10.0, &format!("blob:sha256:{}", m.digest)).await.unwrap();
        models.push(m.digest);
    }
    let artifact = format!("blob:sha256:{}", models[1]);
    until("the pushed-out model to be deleted", || !server.blob(&models[0]).exists()).await;
    // A blob no one refers to yet (a study being created) is young: a restart keeps it.
    let young = Digest::of(b"young");
    raw_upload(&mut c, &young.to_string(), 5, &[&b"young"[..]]).await.unwrap();
    drop(c);
    server.stop().await;

    write(&tmp.path().join("data/tmp/0123456789ab.1234.00000000deadbeef.part"), b"half an upload");
    let server = Server::start(tmp.path(), 1 << 30).await;
    assert_eq!(server.tmp_files(), 0, "the killed upload's file is gone");
    let c = server.client().await;
    let listed = list_trials(&mut c.clone(), "restart").await;
    assert_eq!([listed[0].artifact.as_str(), &listed[1].artifact], ["", &artifact], "the eviction was stored");
    let dest = tmp.path().join("downloaded/model9");
    fetch_tree(&Remote::new(c), models[1], &dest).await;
    assert_eq!(tree(&dest), tree(&tmp.path().join("model9")));
    assert!(server.blob(&young).exists() && !server.blob(&models[0]).exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_coordinator_sweeps_unreferenced_blobs_and_abandoned_uploads_once_they_are_old() {
    let tmp = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(2);
    let server = Server::start_with_grace(tmp.path(), 1 << 30, grace).await;
    let mut c = server.client().await;
    let remote = Remote::new(c.clone());
    // Inputs a study refers to, and blobs nothing refers to: an upload whose study was never
    // created, and a manifest naming a file that never arrived.
    write(&tmp.path().join("m/config.json"), b"{}");
    write(&tmp.path().join("train.tsv"), b"sentence\tlabel\nhi\t1\n");
    write(&tmp.path().join("dev.tsv"), b"sentence\tlabel\nho\t0\n");
    let model = remote.upload_path(&tmp.path().join("m"), "t:/m".into()).await.unwrap().digest;
    let train = remote.upload_path(&tmp.path().join("train.tsv"), "t:/train".into()).await.unwrap().digest;
    let dev = remote.upload_path(&tmp.path().join("dev.tsv"), "t:/dev".into()).await.unwrap().digest;
    let blob = |d: Digest| format!("blob:sha256:{d}");
    let spec_toml = study("kept", "").inputs(&blob(model), &blob(train), &blob(dev)).to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap();
    let stray = Digest::of(b"never used");
    raw_upload(&mut c, &stray.to_string(), 10, &[&b"never used"[..]]).await.unwrap();
    write(&tmp.path().join("lost.tsv"), b"lost");
    let lost = Manifest::of_path(&tmp.path().join("lost.tsv"), "t:/lost".into()).unwrap().to_bytes();
    let lost_manifest = Digest::of(&lost);
    raw_upload(&mut c, &lost_manifest.to_string(), lost.len() as u64, &[&lost]).await.unwrap();
    // A client died half-way through an upload (nothing writes to its file any more).
    write(&server.data.join("tmp/ba9876543210.4321.00000000feedface.part"), b"half an upload");
    // A blob a client keeps being told is present (so it will not upload it again) is spared.
    let asked = Digest::of(b"asked about");
    raw_upload(&mut c, &asked.to_string(), 11, &[&b"asked about"[..]]).await.unwrap();
    let asking = {
        let mut c = c.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                let digests = vec![asked.to_string()];
                let reply = c.find_missing_blobs(pb::FindMissingBlobsRequest { digests }).await.unwrap();
                assert!(reply.into_inner().missing.is_empty(), "the blob asked about is present");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    until("the stray blob, the lost manifest and the abandoned upload to go", || {
        !server.blob(&stray).exists() && !server.blob(&lost_manifest).exists() && server.tmp_files() == 0
    })
    .await;
    // Several sweeps later (8 s, grace 2 s), what the study refers to is all still there, and
    // so is the blob asked about every 200 ms.
    asking.await.unwrap();
    assert!(server.blob(&asked).exists());
    let inputs = Manifest::parse(&std::fs::read(server.blob(&model)).unwrap()).unwrap();
    for d in [model, train, dev].into_iter().chain(inputs.files.iter().map(|f| f.digest())) {
        assert!(server.blob(&d).exists(), "{d} is referenced and must stay");
    }
    server.stop().await;
}

/// Flips one byte of a stored blob in place (its size unchanged).
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_never_served_reads_missing_and_a_new_upload_repairs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), 1 << 30).await;
    let mut c = server.client().await;
    let remote = Remote::new(c.clone());
    // Three chunks and a bit, so the corrupt byte is streamed long before the end.
    let content = pattern(3 * (1 << 20) + 123, 7);
    write(&tmp.path().join("train.tsv"), &content);
    let up = remote.upload_path(&tmp.path().join("train.tsv"), "t:/train".into()).await.unwrap();
    let file = up.manifest.files[0].digest();
    let hex = file.to_string();
    let find = |c: &mut Client| {
        let mut c = c.clone();
        let digests = vec![hex.clone()];
        async move { c.find_missing_blobs(pb::FindMissingBlobsRequest { digests }).await.unwrap().into_inner().missing }
    };
    assert!(find(&mut c).await.is_empty());
    assert_eq!(download(&mut c, &hex, 0).await.unwrap().1, content);

    // One flipped byte: the download stops with DATA_LOSS instead of its last chunk, from
    // any offset, and the blob is quarantined.
    corrupt(&server.blob(&file));
    for offset in [0, 2 << 20] {
        if offset > 0 {
            // The same corrupt copy, put back under its name.
            std::fs::rename(tmp.path().join("data/quarantine").join(&hex), server.blob(&file)).unwrap();
        }
        let mut stream =
            c.download_blob(pb::DownloadBlobRequest { digest: hex.clone(), offset }).await.unwrap().into_inner();
        let (mut received, mut error) = (0usize, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => received += chunk.data.len(),
                Err(status) => error = Some(status),
            }
        }
        let status = error.expect("the stream ends in an error");
        assert_eq!(status.code(), Code::DataLoss, "{status:?}");
        assert!(status.message().contains("corrupted") && !status.message().contains('\n'), "{status:?}");
        assert!(received < content.len() - offset as usize, "the whole corrupt blob was never sent");
        assert!(!server.blob(&file).exists(), "quarantined");
        assert!(tmp.path().join("data/quarantine").join(&hex).is_file());
    }
    assert_eq!(find(&mut c).await, std::slice::from_ref(&hex), "reported missing from then on");
    assert_eq!(download(&mut c, &hex, 0).await.unwrap_err().code(), Code::NotFound);

    // Corrupt in place again (restored under its name) and found by FindMissingBlobs alone.
    let quarantined = tmp.path().join("data/quarantine").join(&hex);
    std::fs::rename(&quarantined, server.blob(&file)).unwrap();
    assert_eq!(find(&mut c).await, std::slice::from_ref(&hex), "a corrupt copy is not vouched for");
    // The right content uploaded again replaces it, and it is served whole.
    let again = remote.upload_path(&tmp.path().join("train.tsv"), "t:/train".into()).await.unwrap();
    assert_eq!(again.digest, up.digest);
    assert!(find(&mut c).await.is_empty());
    assert_eq!(download(&mut c, &hex, 0).await.unwrap().1, content);
    // A duplicate upload over a corrupt copy of the same size is stored, not skipped.
    corrupt(&server.blob(&file));
    let reply = raw_upload(&mut c, &hex, content.len() as u64, &[&content]).await.unwrap();
    assert!(reply.stored, "the corrupt copy was replaced");
    assert_eq!(std::fs::read(server.blob(&file)).unwrap(), content);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_cannot_read_a_root_deletes_nothing_until_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(300);
    let mut server = Server::start_with_grace(tmp.path(), 1 << 30, grace).await;
    let mut c = server.client().await;
    let remote = Remote::new(c.clone());
    write(&tmp.path().join("m/config.json"), b"{}");
    write(&tmp.path().join("m/model.bin"), &pattern(5000, 1));
    write(&tmp.path().join("train.tsv"), b"sentence\tlabel\nhi\t1\n");
    let model = remote.upload_path(&tmp.path().join("m"), "t:/m".into()).await.unwrap();
    let train = remote.upload_path(&tmp.path().join("train.tsv"), "t:/train".into()).await.unwrap();
    let blob = |d: Digest| format!("blob:sha256:{d}");
    let spec_toml =
        study("rooted", "").inputs(&blob(model.digest), &blob(train.digest), &blob(train.digest)).to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml }).await.unwrap();
    // An orphan the sweep would delete, and the model's manifest made unreadable.
    let orphan = Digest::of(b"orphan");
    raw_upload(&mut c, &orphan.to_string(), 6, &[b"orphan"]).await.unwrap();
    let manifest_path = server.blob(&model.digest);
    let good = std::fs::read(&manifest_path).unwrap();
    std::fs::write(&manifest_path, b"{ torn").unwrap();
    server.stop().await;
    // Restarted: the start-up sweep and the periodic ones meet the unreadable root.
    server = Server::start_with_grace(tmp.path(), 1 << 30, grace).await;
    tokio::time::sleep(grace * 4).await; // several sweeps, which must all do nothing
    for f in &model.manifest.files {
        assert!(server.blob(&f.digest()).is_file(), "{} survived", f.path);
    }
    assert!(server.blob(&orphan).is_file(), "nothing at all was deleted");
    // Readable again: the next sweep proceeds, deleting only the orphan.
    std::fs::write(&manifest_path, good).unwrap();
    let orphan_path = server.blob(&orphan);
    until("the orphan is swept", || !orphan_path.exists()).await;
    for f in &model.manifest.files {
        assert!(server.blob(&f.digest()).is_file(), "{} survived", f.path);
    }
    server.stop().await;
}
