//! A checkpoint location is a deletion target, so a worker can name only its trial's own place
//! (`…/<study>/<trial>/checkpoints/e<epoch>-<lease>`). Against a real S3-compatible server
//! (moto) and real directories: reports naming a bucket root, another prefix, another study's
//! or trial's checkpoint, `worker:/` or `worker:/etc` are refused (INVALID_ARGUMENT, nothing
//! recorded), and every object and file outside the trial's own checkpoints survives the
//! trial's end, its retry and the study's end, while the trial's own checkpoints are deleted.

mod common;

use std::path::Path;
use std::time::Duration;

use bertsweep_proto::v1 as pb;
use bertsweep_testkit::StudyToml;
use bertsweep_transfer::object;
use common::{acquire, eventually, register, TestServer};
use tonic::Code;

fn write_dir(dir: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

async fn report(
    c: &mut common::Client,
    a: &pb::Assignment,
    epoch: u32,
    checkpoint: &str,
) -> Result<pb::ReportProgressResponse, tonic::Status> {
    c.report_progress(pb::ReportProgressRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        epoch,
        metrics: common::metrics(0.5 + f64::from(epoch) / 100.0),
        checkpoint: checkpoint.to_string(),
        peak_device_memory_bytes: 0,
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trials_own_checkpoint_place_is_accepted_and_nothing_else_is_ever_deleted() {
    if !bertsweep_tests::workspace_root().join(".venv/bin/moto_server").exists() {
        return bertsweep_tests::skip("moto_server is not installed (make setup)");
    }
    let moto = bertsweep_tests::Moto::start();
    moto.create_bucket("ckpt");
    // The coordinator runs in this process and deletes with this process's credentials.
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    let study = "victim";
    let toml = StudyToml::new(study)
        .budget("max_trials = 2\nparallel_trials = 1\nmax_attempts = 3")
        .parameters(
            "[parameters.num_train_epochs]\nvalue = 3\n[parameters.per_device_train_batch_size]\nvalues = [8, 16]",
        )
        .to_string();
    c.create_study(pb::CreateStudyRequest { spec_toml: toml }).await.unwrap();
    let worker = register(&mut c).await;
    let a = acquire(&mut c, &worker, 1000).await.expect("a trial");

    // What must survive: bertsweep directories (with manifests) at the bucket root, under
    // another prefix, as another study's and another trial's checkpoints, and local files.
    let files: &[(&str, &[u8])] = &[("state.json", b"{}"), ("weights.safetensors", b"tensors")];
    let src = tmp.path().join("src");
    write_dir(&src, files);
    let bystanders = [
        "s3://ckpt".to_string(),
        "s3://ckpt/some-prefix".to_string(),
        format!("s3://ckpt/base/other-study/{}/checkpoints/e1-{}", a.number, a.lease_token),
        format!("s3://ckpt/base/{study}/{}/checkpoints/e1-{}", a.number + 1, a.lease_token),
    ];
    for url in &bystanders {
        object::upload_dir(&src, url, "bystander".into()).await.unwrap();
    }
    let local = tmp.path().join("etc");
    write_dir(&local, files);
    let m = bertsweep_transfer::Manifest::of_path(&local, "t".into()).unwrap();
    std::fs::write(local.join(object::MANIFEST_NAME), m.to_bytes()).unwrap();

    let own = |a: &pb::Assignment, epoch: u32| {
        format!("s3://ckpt/base/{study}/{}/checkpoints/e{epoch}-{}", a.number, a.lease_token)
    };
    let refused = [
        "s3://ckpt/".to_string(),
        "s3://ckpt".to_string(),
        "s3://ckpt/some-prefix".to_string(),
        bystanders[2].clone(),
        bystanders[3].clone(),
        own(&a, 2), // another epoch's place
        format!("s3://ckpt/base/{study}/{}/checkpoints/../../../some-prefix", a.number),
        "worker:/".to_string(),
        "worker:/etc".to_string(),
        format!("worker:{}", local.display()),
    ];
    for bad in &refused {
        let status = report(&mut c, &a, 1, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(!status.message().contains('\n'), "{status:?}");
    }
    let t = &common::trials(&mut c, study).await[a.number as usize];
    assert!(t.intermediate.is_empty() && t.checkpoint.is_empty(), "refused reports recorded nothing");

    // The trial's own checkpoint is accepted; the attempt fails (retryable) and the retry
    // reports its own, which replaces the first; the trial completes; the study ends.
    object::upload_dir(&src, &own(&a, 1), "t".into()).await.unwrap();
    report(&mut c, &a, 1, &own(&a, 1)).await.unwrap();
    assert_eq!(common::fail(&mut c, &a, pb::FailureKind::Retryable).await, pb::TrialState::Pending);
    let b = acquire(&mut c, &worker, 1000).await.expect("the retry");
    assert_eq!((b.number, b.resume_checkpoint.as_str()), (a.number, own(&a, 1).as_str()));
    for bad in &refused {
        assert_eq!(report(&mut c, &b, 2, bad).await.unwrap_err().code(), Code::InvalidArgument, "{bad}");
    }
    object::upload_dir(&src, &own(&b, 2), "t".into()).await.unwrap();
    report(&mut c, &b, 2, &own(&b, 2)).await.unwrap();
    common::complete(&mut c, &b, 0.9).await.unwrap();
    let other = acquire(&mut c, &worker, 1000).await.expect("the second trial");
    common::complete(&mut c, &other, 0.8).await.unwrap();
    assert_eq!(common::study(&mut c, study).await.state, pb::StudyState::Completed as i32);

    // The trial's own checkpoints go (by their manifests)...
    let own_prefix = format!("s3://ckpt/base/{study}/{}/checkpoints", a.number);
    eventually("the trial's own checkpoints are deleted", Duration::from_secs(30), || {
        let url = own_prefix.clone();
        async move { object::list_dirs(&url, 10).await.unwrap().is_empty().then_some(()) }
    })
    .await;
    // ...and everything else is intact.
    for (i, url) in bystanders.iter().enumerate() {
        let dest = tmp.path().join(format!("check{i}"));
        object::download_dir(url, &dest).await.unwrap_or_else(|e| panic!("{url} was damaged: {e}"));
        assert_eq!(std::fs::read(dest.join("weights.safetensors")).unwrap(), b"tensors");
    }
    for (name, bytes) in files {
        assert_eq!(std::fs::read(local.join(name)).unwrap(), *bytes, "{name}");
    }
    server.shutdown().await;
}
