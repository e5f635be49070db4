//! Online backup, restore and study deletion against real coordinators (real sockets, real
//! SQLite files, real blob directories) driven through the `bertsweep` binary: a backup taken
//! while fake workers keep reporting, checkpointing and uploading models restores onto a new
//! data directory with every study, trial, checkpoint and kept model; a deleted study takes
//! exactly the blobs only it referred to.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bertsweep_coordinator::server::ServerConfig;
use bertsweep_proto::v1 as pb;
use bertsweep_testkit::StudyToml;
use bertsweep_transfer::blob_dir::BlobDir;
use bertsweep_transfer::remote::Remote;
use bertsweep_transfer::Digest;
use common::{eventually, TestServer};
use tonic::Code;

type Client = bertsweep_proto::Client;

/// A coordinator over `<root>/<name>.db` with its blobs in `<root>/<name>.data`.
async fn start(root: &Path, name: &str) -> (TestServer, PathBuf) {
    let data = root.join(format!("{name}.data"));
    let config = ServerConfig {
        db_url: format!("sqlite://{}", root.join(format!("{name}.db")).display()),
        long_poll: Duration::from_millis(500),
        data_dir: Some(data.clone()),
        ..ServerConfig::default()
    };
    (TestServer::start_config(config).await, data)
}

/// Runs the CLI (off the runtime: it waits for the server this test runs).
async fn bertsweep(url: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bertsweep"));
    command.arg("--coordinator").arg(url).args(args).env_remove("BERTSWEEP_TOKEN");
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn blob(d: Digest) -> String {
    format!("blob:sha256:{d}")
}

/// Uploads a model directory (a shared config plus weights of its own) and returns its manifest.
async fn upload_dir(remote: &Remote, root: &Path, tag: &str, size: usize) -> Digest {
    let dir = root.join("uploads").join(tag);
    write(&dir.join("config.json"), b"{\"shared\": true}");
    let weights: Vec<u8> =
        (0..size).map(|i| (i as u8).wrapping_mul(31) ^ tag.len() as u8 ^ tag.as_bytes()[tag.len() - 1]).collect();
    write(&dir.join("model.bin"), &weights);
    remote.upload_path(&dir, format!("t:/{tag}")).await.unwrap().digest
}

/// Uploads the three inputs and returns the study file for `name` over them.
async fn study_over_blobs(remote: &Remote, root: &Path, name: &str, budget: &str) -> String {
    let model = upload_dir(remote, root, "base-model", 5_000).await;
    write(&root.join("uploads/train.tsv"), b"sentence\tlabel\nfine\t1\nbad\t0\n");
    write(&root.join("uploads/dev.tsv"), b"sentence\tlabel\ngood\t1\n");
    let train = remote.upload_path(&root.join("uploads/train.tsv"), "t:/train".into()).await.unwrap().digest;
    let dev = remote.upload_path(&root.join("uploads/dev.tsv"), "t:/dev".into()).await.unwrap().digest;
    StudyToml::new(name)
        .budget(budget)
        .inputs(&blob(model), &blob(train), &blob(dev))
        .parameters("[parameters.learning_rate]\nvalues = [1e-5, 2e-5, 3e-5, 4e-5, 5e-5]")
        .parameters("[parameters.per_device_train_batch_size]\nvalues = [8, 16, 32, 64]")
        .to_string()
}

async fn register(c: &mut Client) -> String {
    let request = pb::RegisterWorkerRequest { hostname: "t".into(), devices: vec!["cpu".into()], version: "t".into() };
    c.register_worker(request).await.unwrap().into_inner().worker_id
}

async fn acquire(c: &mut Client, worker: &str, study: &str) -> Option<pb::Assignment> {
    let request = pb::AcquireTrialRequest { worker_id: worker.into(), study: study.into(), wait_ms: 200 };
    c.acquire_trial(request).await.unwrap().into_inner().assignment
}

async fn report(c: &mut Client, a: &pb::Assignment, epoch: u32, checkpoint: &str) -> Result<(), tonic::Status> {
    let metrics = [("eval_accuracy".to_string(), 0.5)].into_iter().collect();
    let request = pb::ReportProgressRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        epoch,
        metrics,
        checkpoint: checkpoint.into(),
        peak_device_memory_bytes: 0,
    };
    c.report_progress(request).await.map(|_| ())
}

async fn complete(c: &mut Client, a: &pb::Assignment, value: f64, artifact: &str) -> Result<(), tonic::Status> {
    let metrics = [("eval_accuracy".to_string(), value)].into_iter().collect();
    let request = pb::CompleteTrialRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        metrics,
        artifact: artifact.into(),
        peak_device_memory_bytes: 0,
        predictions: None,
        test_metrics: Default::default(),
    };
    c.complete_trial(request).await.map(|_| ())
}

async fn trials(c: &mut Client, study: &str) -> Vec<pb::Trial> {
    let request = pb::ListTrialsRequest { study: study.into(), page_size: 1000, page_token: String::new() };
    c.list_trials(request).await.unwrap().into_inner().trials
}

/// A fake worker that keeps training `study`'s trials: a checkpoint after epoch 1, then a model.
fn keep_working(
    mut c: Client,
    remote: Remote,
    root: PathBuf,
    study: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let worker = register(&mut c).await;
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(a) = acquire(&mut c, &worker, study).await else { continue };
            let checkpoint = upload_dir(&remote, &root, &format!("ckpt-{}", a.trial_id), 3_000).await;
            report(&mut c, &a, 1, &blob(checkpoint)).await.unwrap();
            let model = upload_dir(&remote, &root, &format!("model-{}", a.trial_id), 4_000).await;
            complete(&mut c, &a, 0.6 + a.number as f64 / 100.0, &blob(model)).await.unwrap();
            done += 1;
        }
        done
    })
}

/// Every file a manifest lists, fetched from the coordinator at `c` into a fresh directory.
async fn fetch_tree(c: &Client, manifest: Digest, into: &Path) -> Vec<(String, Vec<u8>)> {
    let remote = Remote::new(c.clone());
    let cache = BlobDir::open(into).unwrap();
    let path = remote.fetch_blob(&cache, manifest).await.unwrap();
    let manifest = bertsweep_transfer::Manifest::parse(&std::fs::read(path).unwrap()).unwrap();
    let mut files = Vec::new();
    for f in &manifest.files {
        let path = remote.fetch_blob(&cache, f.digest()).await.unwrap();
        files.push((f.path.clone(), std::fs::read(path).unwrap()));
    }
    files
}

fn digest_of(reference: &str) -> Option<Digest> {
    reference.strip_prefix("blob:sha256:").map(|hex| hex.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_study_trial_checkpoint_and_kept_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (old, _) = start(root, "old").await;
    let c = old.intercepted_client().await;
    let remote = Remote::new(c.clone());
    let busy = study_over_blobs(&remote, root, "busy", "parallel_trials = 3\nkeep_artifacts = 20").await;
    let done = study_over_blobs(&remote, root, "done", "max_trials = 2\nkeep_artifacts = 2").await;
    c.clone().create_study(pb::CreateStudyRequest { spec_toml: busy }).await.unwrap();
    c.clone().create_study(pb::CreateStudyRequest { spec_toml: done }).await.unwrap();
    // "done" finishes before the backup: two trials with kept models.
    let mut w = c.clone();
    let worker = register(&mut w).await;
    for i in 0..2 {
        let a = acquire(&mut w, &worker, "done").await.unwrap();
        let model = upload_dir(&remote, root, &format!("done-{i}"), 2_000).await;
        complete(&mut w, &a, 0.7, &blob(model)).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (1..=3)
        .map(|i| keep_working(c.clone(), remote.clone(), root.join(format!("w{i}")), "busy", stop.clone()))
        .collect();
    eventually("trials to complete before the backup", Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            let t = trials(&mut c, "busy").await;
            (t.iter().filter(|t| t.state == pb::TrialState::Completed as i32).count() >= 3).then_some(())
        }
    })
    .await;
    let completed_before: Vec<u32> = trials(&mut c.clone(), "busy")
        .await
        .iter()
        .filter(|t| t.state == pb::TrialState::Completed as i32)
        .map(|t| t.number)
        .collect();

    // The backup runs while the workers keep writing.
    let file = root.join("backups/nightly.db");
    let blobs_dir = root.join("backups/blobs");
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let out = bertsweep(&old.url, &["backup", file.to_str().unwrap(), "--blobs", blobs_dir.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("blobs") && file.exists() && root.join("backups/nightly.db.blobs").exists(),
        "{}",
        text(&out)
    );
    let again = bertsweep(&old.url, &["backup", file.to_str().unwrap()]).await;
    assert!(!again.status.success() && text(&again).contains("already exists"), "{}", text(&again));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let old_busy = trials(&mut c.clone(), "busy").await;

    // Restore refuses what it cannot do completely, and changes nothing then.
    let new_db = root.join("new/coord.db");
    std::fs::create_dir_all(root.join("new")).unwrap();
    let new_data = root.join("new/data");
    let (db_arg, data_arg) = (new_db.to_str().unwrap(), new_data.to_str().unwrap());
    let no_blobs =
        bertsweep(&old.url, &["restore", file.to_str().unwrap(), "--db", db_arg, "--data-dir", data_arg]).await;
    assert!(!no_blobs.status.success() && text(&no_blobs).contains("--blobs"), "{}", text(&no_blobs));
    assert!(!new_db.exists() && !new_data.exists(), "a refused restore writes nothing");
    let damaged = root.join("backups/damaged.db");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::copy(root.join("backups/nightly.db.blobs"), root.join("backups/damaged.db.blobs")).unwrap();
    let out = bertsweep(
        &old.url,
        &["restore", damaged.to_str().unwrap(), "--db", db_arg, "--blobs", blobs_dir.to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success() && text(&out).contains("damaged"), "{}", text(&out));
    assert!(!new_db.exists());

    let args = [
        "restore",
        file.to_str().unwrap(),
        "--db",
        db_arg,
        "--data-dir",
        data_arg,
        "--blobs",
        blobs_dir.to_str().unwrap(),
    ];
    let out = bertsweep(&old.url, &args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("restored 2 studies"), "{}", text(&out));
    let out = bertsweep(&old.url, &args).await;
    assert!(!out.status.success() && text(&out).contains("already exists"), "{}", text(&out));

    // A coordinator on the restored files has everything the backup saw.
    let config = ServerConfig {
        db_url: format!("sqlite://{}", new_db.display()),
        long_poll: Duration::from_millis(500),
        // The restored running trials' workers are gone: their leases lapse soon.
        lease_ttl: Duration::from_secs(2),
        data_dir: Some(new_data.clone()),
        ..ServerConfig::default()
    };
    let new = TestServer::start_config(config).await;
    let mut n = new.intercepted_client().await;
    let new_done = trials(&mut n, "done").await;
    assert_eq!(new_done, trials(&mut c.clone(), "done").await, "the finished study is whole");
    let new_busy = trials(&mut n, "busy").await;
    for number in &completed_before {
        assert_eq!(
            new_busy[*number as usize].state,
            pb::TrialState::Completed as i32,
            "trial {number} was done before"
        );
    }
    let mut models = 0;
    for (restored, original) in new_busy.iter().zip(&old_busy) {
        if restored.state == pb::TrialState::Completed as i32 {
            // Finished trials never change: identical, and their models download intact.
            assert_eq!(restored, original);
            let manifest = digest_of(&restored.artifact).expect("a kept model");
            let here = fetch_tree(&n, manifest, &root.join(format!("check/new-{}", restored.number))).await;
            let there = fetch_tree(&c, manifest, &root.join(format!("check/old-{}", restored.number))).await;
            assert_eq!(here, there);
            models += 1;
        }
        if let Some(checkpoint) = digest_of(&restored.checkpoint) {
            // A trial running at backup time resumes from a checkpoint the restore brought.
            assert!(BlobDir::open(&new_data).unwrap().contains(&checkpoint), "checkpoint of trial {}", restored.number);
        }
    }
    assert!(models >= 3, "{models} models checked");
    // The inputs came along: a new worker can train the restored study.
    let worker = register(&mut n).await;
    let a = eventually("a trial on the restored coordinator", Duration::from_secs(40), || {
        let (mut n, worker) = (n.clone(), worker.clone());
        async move { acquire(&mut n, &worker, "busy").await }
    })
    .await;
    let task = a.task.clone().unwrap();
    for input in [&task.model, &task.train_file, &task.validation_file] {
        fetch_tree(&n, digest_of(input).unwrap(), &root.join("check/inputs")).await;
    }
    new.shutdown().await;
    old.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_study_removes_only_what_it_alone_referred_to() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (server, data) = start(root, "coord").await;
    let store = BlobDir::open(&data).unwrap();
    let mut c = server.intercepted_client().await;
    let remote = Remote::new(c.clone());
    let gone_toml = study_over_blobs(&remote, root, "gone", "parallel_trials = 2\nkeep_artifacts = 4").await;
    let stays_toml = study_over_blobs(&remote, root, "stays", "max_trials = 1").await;
    c.create_study(pb::CreateStudyRequest { spec_toml: gone_toml.clone() }).await.unwrap();
    c.create_study(pb::CreateStudyRequest { spec_toml: stays_toml }).await.unwrap();
    let worker = register(&mut c).await;

    // "gone": one finished trial with a model, one running with a checkpoint.
    let first = acquire(&mut c, &worker, "gone").await.unwrap();
    let gone_model = upload_dir(&remote, root, "gone-model", 6_000).await;
    complete(&mut c, &first, 0.7, &blob(gone_model)).await.unwrap();
    let running = acquire(&mut c, &worker, "gone").await.unwrap();
    let checkpoint = upload_dir(&remote, root, "gone-ckpt", 7_000).await;
    report(&mut c, &running, 1, &blob(checkpoint)).await.unwrap();
    // "stays": a model of its own, and the same inputs.
    let kept = acquire(&mut c, &worker, "stays").await.unwrap();
    let stays_model = upload_dir(&remote, root, "stays-model", 8_000).await;
    complete(&mut c, &kept, 0.8, &blob(stays_model)).await.unwrap();
    let inputs = kept.task.clone().unwrap();
    let files = |m: Digest| -> Vec<Digest> {
        let manifest = bertsweep_transfer::Manifest::parse(&std::fs::read(store.path(&m)).unwrap()).unwrap();
        manifest.files.iter().map(|f| f.digest()).chain([m]).collect()
    };
    let weights_of = |m: Digest| files(m).into_iter().find(|d| store.size(d) > Some(1000)).unwrap();
    let (gone_weights, ckpt_weights) = (weights_of(gone_model), weights_of(checkpoint));

    let url = server.url.clone();
    let listed = bertsweep(&url, &["study", "list", "--state", "completed", "--format", "json"]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains("\"stays\"") && !text(&listed).contains("\"gone\""), "{}", text(&listed));

    let refused = bertsweep(&url, &["study", "delete", "gone"]).await;
    assert!(!refused.status.success(), "{}", text(&refused));
    let line = text(&refused);
    assert!(line.contains("running") && line.contains("--force") && line.trim().lines().count() == 1, "{line}");
    assert!(store.contains(&gone_weights) && store.contains(&ckpt_weights), "a refused delete deletes nothing");

    // A backup in progress pins what its copy refers to, even across a delete.
    let mut pinned = c.clone().backup(pb::BackupRequest {}).await.unwrap().into_inner();
    while let Some(chunk) = pinned.message().await.unwrap() {
        if chunk.done {
            break;
        }
    }
    let busy = c.clone().backup(pb::BackupRequest {}).await.unwrap_err();
    assert_eq!(busy.code(), Code::ResourceExhausted, "one backup at a time: {busy:?}");

    let deleted = bertsweep(&url, &["study", "delete", "gone", "--force"]).await;
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(text(&deleted).contains("deleted study gone ("), "{}", text(&deleted));
    let status = c.get_study(pb::GetStudyRequest { name: "gone".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let heartbeat = pb::HeartbeatRequest { trial_id: running.trial_id, lease_token: running.lease_token };
    assert_eq!(c.heartbeat(heartbeat).await.unwrap_err().code(), Code::NotFound, "its worker learns the trial is gone");
    assert!(store.contains(&gone_weights), "pinned by the open backup");

    drop(pinned);
    eventually("what only the backup kept to go once it ends", Duration::from_secs(10), || {
        std::future::ready((!store.contains(&gone_weights) && !store.contains(&ckpt_weights)).then_some(()))
    })
    .await;
    // The name is free again.
    c.create_study(pb::CreateStudyRequest { spec_toml: gone_toml }).await.unwrap();
    let again = bertsweep(&url, &["study", "delete", "gone", "--force"]).await;
    assert!(again.status.success(), "{}", text(&again));
    for d in files(stays_model) {
        assert!(store.contains(&d), "the other study's model stays");
    }
    for input in [&inputs.model, &inputs.train_file, &inputs.validation_file] {
        assert!(store.contains(&digest_of(input).unwrap()), "inputs the other study shares stay");
    }

    // A finished study needs no --force; the deletions survive a restart.
    let out = bertsweep(&url, &["study", "list", "--state", "running"]).await;
    assert!(out.status.success() && !text(&out).contains("stays"), "{}", text(&out));
    let dir = server.stop_keeping_files().await;
    drop(dir);
    let (server, _) = start(root, "coord").await;
    let mut c = server.intercepted_client().await;
    assert_eq!(c.get_study(pb::GetStudyRequest { name: "gone".into() }).await.unwrap_err().code(), Code::NotFound);
    let out = bertsweep(&server.url, &["study", "delete", "stays"]).await;
    assert!(out.status.success(), "{}", text(&out));
    for input in [&inputs.model, &inputs.train_file, &inputs.validation_file] {
        assert!(!store.contains(&digest_of(input).unwrap()), "no study refers to the inputs any more");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_backups_keep_the_newest_and_only_the_blobs_their_lists_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (server, _) = start(root, "coord").await;
    let mut c = server.intercepted_client().await;
    let remote = Remote::new(c.clone());
    let worker = register(&mut c).await;
    let mut weights = Vec::new();
    for name in ["first", "second"] {
        let toml = study_over_blobs(&remote, root, name, "max_trials = 1").await;
        c.create_study(pb::CreateStudyRequest { spec_toml: toml }).await.unwrap();
        let a = acquire(&mut c, &worker, name).await.unwrap();
        let model = upload_dir(&remote, root, &format!("{name}-model"), 9_000).await;
        complete(&mut c, &a, 0.9, &blob(model)).await.unwrap();
        let manifest = bertsweep_transfer::Manifest::parse(
            &std::fs::read(BlobDir::open(root.join("coord.data")).unwrap().path(&model)).unwrap(),
        )
        .unwrap();
        weights.push(manifest.files.iter().find(|f| f.size == 9_000).unwrap().digest());
    }
    let dir = root.join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    let blobs = root.join("backups/blobs");
    let (dir_arg, blobs_arg) = (dir.to_str().unwrap(), blobs.to_str().unwrap());
    let not_a_dir = bertsweep(&server.url, &["backup", root.join("x.db").to_str().unwrap(), "--keep", "2"]).await;
    assert!(!not_a_dir.status.success() && text(&not_a_dir).contains("--keep needs"), "{}", text(&not_a_dir));

    let scheduled = ["backup", dir_arg, "--blobs", blobs_arg, "--keep", "2"];
    let run = || bertsweep(&server.url, &scheduled);
    let out = run().await;
    assert!(out.status.success(), "{}", text(&out));
    // "first" goes: only the oldest backup names its model now.
    let out = bertsweep(&server.url, &["study", "delete", "first"]).await;
    assert!(out.status.success(), "{}", text(&out));
    for _ in 0..2 {
        let out = run().await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let dated: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bertsweep-") && n.ends_with(".db"))
        .collect();
    assert_eq!(dated.len(), 2, "{dated:?}");
    let kept = BlobDir::open(&blobs).unwrap();
    assert!(!kept.contains(&weights[0]), "the deleted study's model went with the last backup naming it");
    assert!(kept.contains(&weights[1]));

    // A list that cannot be read stops the pruning of blobs: nothing is deleted then.
    let stray = Digest::of(b"a blob no list names");
    let mut w = kept.writer(stray, 20).await.unwrap();
    w.write(b"a blob no list names").await.unwrap();
    w.finish().await.unwrap();
    let mut dated = dated;
    dated.sort();
    std::fs::write(dir.join(format!("{}.blobs", dated[1])), "not a list\n").unwrap();
    let out = run().await;
    assert!(!out.status.success() && text(&out).contains("no blob was pruned"), "{}", text(&out));
    assert!(kept.contains(&stray) && kept.contains(&weights[1]), "a pass that cannot read its lists deletes nothing");
    server.shutdown().await;
}
