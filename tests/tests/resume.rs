//! Preemption-proof trials, end to end with real processes: a 4-epoch MiniLM trial whose worker
//! dies after its second epoch report — SIGKILL (the lease expires) or SIGTERM (the worker
//! releases the trial) — is continued by another worker from epoch 3, from the checkpoint kept
//! on the coordinator, in object storage (a real S3-compatible server) or in a directory both
//! workers mount (`--artifacts DIR --local-checkpoints`), and ends with exactly
//! the metrics of the same trial run without interruption. The trial's curve is one history;
//! the checkpoints are gone once it has completed. A checkpoint lost from the coordinator means
//! a clean restart from epoch 1 with a warning, and the same result.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bertsweep_tests::*;
use serde_json::Value;

/// How the first worker is stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Interruption {
    Kill,
    Term,
    /// SIGKILL, then the checkpoint's manifest is deleted from the coordinator.
    KillAndLoseCheckpoint,
}

/// The four-epoch one-trial study `name` (same settings, hence same training, in every study).
fn study(dir: &Path, name: &str, model: &Path) -> PathBuf {
    StudyFile::reviews(name, model)
        .budget("parallel_trials = 1")
        .budget("max_attempts = 3")
        .task("max_seq_length = 48")
        .task("max_train_samples = 96")
        .parameter("learning_rate", "value = 5e-5")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 4")
        .write_in(dir)
}

/// A CPU worker for `study` storing artifacts (and checkpoints) in `artifacts` (None: on the
/// coordinator; a directory: there, with `--local-checkpoints`), with its own cache.
fn worker(c: &Coordinator, study: &str, artifacts: Option<&str>, dir: &Path, tag: &str) -> Child {
    worker_with_env(c, study, artifacts, dir, tag, &[])
}

/// [`worker`] with extra environment variables.
fn worker_with_env(
    c: &Coordinator,
    study: &str,
    artifacts: Option<&str>,
    dir: &Path,
    tag: &str,
    env: &[(&str, &str)],
) -> Child {
    let log = dir.join(format!("{tag}.log"));
    let mut command = Command::new(binary("bertsweep-worker"));
    command
        .envs(c.client_env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .args(["--coordinator", &c.url, "--device", "cpu", "--threads", "1", "--study", study])
        .arg("--cache-dir")
        .arg(dir.join(format!("{tag}-cache")))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    if let Some(a) = artifacts {
        command.args(["--artifacts", a]);
        if a.starts_with('/') {
            command.arg("--local-checkpoints");
        }
    }
    command.spawn().expect("start bertsweep-worker")
}

fn log_of(dir: &Path, tag: &str) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    read(dir.join(format!("{tag}.log"))) + &read(dir.join(format!("{tag}.err")))
}

fn only_trial(c: &Coordinator, study: &str) -> Value {
    let trials = c.trials(study);
    assert_eq!(trials.len(), 1, "{trials:?}");
    trials[0].clone()
}

/// Every epoch's metrics but the wall-clock throughput.
fn curve(t: &Value) -> Vec<Value> {
    t["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut m = e["metrics"].clone();
            m.as_object_mut().unwrap().remove("train_samples_per_second");
            serde_json::json!({"epoch": e["epoch"], "metrics": m})
        })
        .collect()
}

fn final_metrics(t: &Value) -> Value {
    let mut m = t["metrics"].clone();
    m.as_object_mut().unwrap().remove("train_samples_per_second");
    m
}

/// Runs `name` with a first worker stopped by `how` after its second epoch report, then a second
/// worker to the end; returns the completed trial and the checkpoint references seen.
fn interrupted_run(
    c: &Coordinator,
    dir: &Path,
    model: &Path,
    name: &str,
    artifacts: Option<&str>,
    how: Interruption,
    data_dir: &Path,
) -> (Value, Vec<String>) {
    let file = study(dir, name, model);
    assert!(c.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let mut first = worker(c, name, artifacts, dir, &format!("{name}-first"));
    let mut seen = Vec::new();
    let at_cut = eventually("the second epoch report", Duration::from_secs(600), || {
        // The trial is sampled when the worker first asks for work.
        let t = c.trials(name).first()?.clone();
        if let Some(r) = t["checkpoint"]["reference"].as_str() {
            if !seen.iter().any(|s| s == r) {
                seen.push(r.to_string());
            }
        }
        (t["state"] == "RUNNING" && t["last_epoch"].as_u64() >= Some(2)).then_some(t)
    });
    match how {
        Interruption::Kill | Interruption::KillAndLoseCheckpoint => first.kill().unwrap(),
        Interruption::Term => {
            assert!(Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap().success())
        }
    }
    let status = first.wait().unwrap();
    if let Interruption::Term = how {
        let log = log_of(dir, &format!("{name}-first"));
        assert_eq!(status.code(), Some(75), "SIGTERM ends the worker with 75, its trial handed back: {log}");
    }
    let cut_epoch = at_cut["checkpoint"]["epoch"].as_u64().expect("a checkpoint after epoch 2");
    assert_eq!(cut_epoch, at_cut["last_epoch"].as_u64().unwrap(), "{at_cut}");

    if how == Interruption::KillAndLoseCheckpoint {
        let reference = at_cut["checkpoint"]["reference"].as_str().unwrap();
        let hex = reference.strip_prefix("blob:sha256:").unwrap();
        std::fs::remove_file(data_dir.join("sha256").join(&hex[..2]).join(hex)).unwrap();
    }

    let mut second = worker(c, name, artifacts, dir, &format!("{name}-second"));
    assert!(second.wait().unwrap().success(), "{}", log_of(dir, &format!("{name}-second")));
    let log = log_of(dir, &format!("{name}-second"));
    if how == Interruption::KillAndLoseCheckpoint {
        assert!(log.contains("cannot fetch the checkpoint") && log.contains("starting from epoch 1"), "{log}");
    } else {
        assert!(log.contains(&format!("resuming after epoch {cut_epoch}")), "the retry resumed: {log}");
        assert!(!log.contains("cannot resume"), "{log}");
    }
    let t = only_trial(c, name);
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert!(t["checkpoint"].is_null(), "a completed trial keeps no checkpoint: {t}");
    (t, seen)
}

#[test]
fn a_trial_interrupted_after_epoch_two_resumes_on_another_worker_with_the_same_result() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let moto = Moto::start();
    moto.create_bucket("sweeps");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("resume.db");
    let mut c = Coordinator::start(&db, "3s");
    c.client_env = moto.env();

    // The reference: the same trial, never interrupted.
    let file = study(dir.path(), "whole", &model);
    assert!(c.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    assert!(worker(&c, "whole", None, dir.path(), "whole").wait().unwrap().success());
    let whole = only_trial(&c, "whole");
    assert_eq!(whole["state"], "COMPLETED", "{whole}");
    assert_eq!(whole["epochs"].as_array().unwrap().len(), 4);

    let data_dir = PathBuf::from(format!("{}.data", db.display()));
    // A directory both workers mount, as a cluster filesystem would be.
    let shared = dir.path().join("shared-fs");
    let shared = shared.to_str().unwrap();
    for (name, artifacts, how) in [
        ("killed", None, Interruption::Kill),
        ("terminated", None, Interruption::Term),
        ("s3killed", Some("s3://sweeps/runs"), Interruption::Kill),
        ("localkilled", Some(shared), Interruption::Kill),
        ("lost", None, Interruption::KillAndLoseCheckpoint),
    ] {
        let (t, seen) = interrupted_run(&c, dir.path(), &model, name, artifacts, how, &data_dir);
        let epochs: Vec<u64> = t["epochs"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
        assert_eq!(epochs, [1, 2, 3, 4], "{name}: one continuous curve: {t}");
        assert_eq!(curve(&t), curve(&whole), "{name}: every epoch as in the uninterrupted run");
        assert_eq!(final_metrics(&t), final_metrics(&whole), "{name}: the same final metrics");
        assert_eq!(t["value"], whole["value"], "{name}");
        let earlier = t["earlier_attempts"].as_array().unwrap();
        assert!(earlier.iter().any(|e| e["epoch"] == 2), "{name}: the first attempt's record stays: {t}");
        match how {
            Interruption::Term => assert_eq!(t["attempt"], 1, "{name}: a released trial keeps its attempt: {t}"),
            _ => assert_eq!(t["attempt"], 2, "{name}: a lost lease costs an attempt: {t}"),
        }
        assert!(!seen.is_empty(), "{name}: checkpoints were reported");
        for reference in &seen {
            if let Some(path) = reference.strip_prefix("worker:") {
                assert!(path.starts_with(&format!("{shared}/localkilled/0/checkpoints/")), "{reference}");
                assert!(!Path::new(path).exists(), "{name}: {reference} deleted");
                continue;
            }
            match reference.strip_prefix("blob:sha256:") {
                Some(hex) => {
                    let blob = data_dir.join("sha256").join(&hex[..2]).join(hex);
                    assert!(!blob.exists(), "{name}: checkpoint {reference} deleted from the coordinator");
                }
                None => {
                    assert!(reference.starts_with("s3://sweeps/runs/s3killed/0/checkpoints/"), "{reference}");
                    let key = reference.trim_start_matches("s3://sweeps/");
                    assert_eq!(object_keys(&moto, "sweeps", key), Vec::<String>::new(), "{name}: {reference} deleted");
                }
            }
        }
    }
    // Checkpoints are written and stored while the next epoch trains: a worker killed while
    // epoch 2's is on its way (held there by the test hook) has reported epoch 1 with its
    // checkpoint and not epoch 2, and the retry resumes after epoch 1 with the same result.
    let file = study(dir.path(), "inflight", &model);
    assert!(c.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let hold = [("BERTSWEEP_TEST_CHECKPOINT_DELAY_MS", "2:600000")];
    let mut first = worker_with_env(&c, "inflight", None, dir.path(), "inflight-first", &hold);
    eventually("epoch 2's checkpoint in flight", Duration::from_secs(600), || {
        let log = log_of(dir.path(), "inflight-first");
        log.lines().any(|l| l.contains("checkpoint written in the background") && l.contains("epoch=2")).then_some(())
    });
    let at_cut = only_trial(&c, "inflight");
    assert_eq!(at_cut["last_epoch"], 1, "epoch 2 is reported only once its checkpoint is stored: {at_cut}");
    assert_eq!(at_cut["checkpoint"]["epoch"], 1, "{at_cut}");
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = worker(&c, "inflight", None, dir.path(), "inflight-second");
    assert!(second.wait().unwrap().success(), "{}", log_of(dir.path(), "inflight-second"));
    let log = log_of(dir.path(), "inflight-second");
    assert!(log.contains("resuming after epoch 1"), "the retry resumed from the stored checkpoint: {log}");
    let t = only_trial(&c, "inflight");
    assert_eq!(t["state"], "COMPLETED", "{t}");
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(curve(&t), curve(&whole), "inflight: every epoch as in the uninterrupted run");
    assert_eq!(final_metrics(&t), final_metrics(&whole), "inflight: the same final metrics");

    // Nothing of any checkpoint is left in object storage, nor on the coordinator (whose blobs
    // now are the kept models only).
    let left = object_keys(&moto, "sweeps", "runs/s3killed/0/checkpoints/");
    assert!(left.is_empty(), "{left:?}");
    assert!(!Path::new(shared).join("localkilled/0/checkpoints").exists(), "local checkpoints deleted");
    assert!(Path::new(shared).join("localkilled/0/model.safetensors").exists(), "the model stays");
    let manifests = checkpoint_manifests(&data_dir.join("sha256"));
    assert!(manifests.is_empty(), "checkpoint blobs left on the coordinator: {manifests:?}");
}

/// Blob files under `dir` that are manifests of checkpoints (their source names an epoch).
fn checkpoint_manifests(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(checkpoint_manifests(&path));
        } else if entry.metadata().map(|m| m.len() < 64 * 1024).unwrap_or(false) {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            if text.contains("state.json") && text.contains(" epoch ") {
                found.push(path);
            }
        }
    }
    found
}

/// Keys under `prefix` in `bucket` (S3 ListObjectsV2 through the project's Python).
fn object_keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let script = "import re, sys, urllib.parse as p, urllib.request as u\n\
                  url = sys.argv[1] + '/' + sys.argv[2] + '?list-type=2&prefix=' + p.quote(sys.argv[3])\n\
                  body = u.urlopen(url).read().decode()\n\
                  print('\\n'.join(re.findall('<Key>([^<]*)</Key>', body)))";
    let out = Command::new(workspace_root().join(".venv/bin/python"))
        .args(["-c", script, &moto.endpoint, bucket, prefix])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn asha_promotion_pauses_a_trial_and_resumes_it_on_promotion_with_the_same_result() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("promotion.db"), "10s");
    let two_epochs = |name: &str, lrs: &str| {
        StudyFile::reviews(name, &model)
            .budget("parallel_trials = 1")
            .task("max_seq_length = 48")
            .task("max_train_samples = 96")
            .parameter("learning_rate", lrs)
            .parameter("per_device_train_batch_size", "value = 16")
            .parameter("num_train_epochs", "value = 2")
    };
    // The reference: trial 0's configuration, uninterrupted.
    let file = two_epochs("straight", "values = [5e-5]").write_in(dir.path());
    let on_loss = |file: &Path| {
        let text = std::fs::read_to_string(file).unwrap().replace("\"eval_accuracy\"", "\"eval_loss\"");
        std::fs::write(file, text).unwrap();
    };
    on_loss(&file);
    assert!(c.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    assert!(worker(&c, "straight", None, dir.path(), "straight").wait().unwrap().success());
    let straight = only_trial(&c, "straight");

    // Rung at epoch 1, η = 2: trial 0 is alone there and pauses; once trial 1 has reported
    // epoch 1, trial 0 ranks in the top half and is promoted from its checkpoint.
    let file = two_epochs("promo", "values = [5e-5, 1e-7]").budget("max_trials = 2").write_in(dir.path());
    // Judged on eval_loss: both trials start from the same weights (same seed), and after one
    // epoch at 5e-5 the loss is lower than at 1e-7, so trial 0 is the one promoted (a
    // deterministic order: same data, seed and thread count every run).
    on_loss(&file);
    let text = std::fs::read_to_string(&file).unwrap()
        + "[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\nmin_epochs = 1\nreduction_factor = 2\n";
    std::fs::write(&file, text).unwrap();
    let created = c.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(worker(&c, "promo", None, dir.path(), "promo").wait().unwrap().success());
    let log = log_of(dir.path(), "promo");
    assert_eq!(c.study_state("promo"), "COMPLETED", "{log}");
    let trials = c.trials("promo");
    let t0 = &trials[0];
    assert_eq!(t0["state"], "COMPLETED", "{t0}");
    assert!(log.contains("paused by the coordinator"), "{log}");
    assert!(log.contains("resuming after epoch 1"), "{log}");
    assert_eq!(t0["attempt"], 1, "a promotion is no new attempt: {t0}");
    assert!(t0["earlier_attempts"].as_array().unwrap().is_empty(), "{t0}");
    assert_eq!(curve(t0), curve(&straight), "paused and promoted, the same curve as uninterrupted");
    assert_eq!(final_metrics(t0), final_metrics(&straight));
    assert_eq!(trials[1]["state"], "PRUNED", "never promoted: {}", trials[1]);
    assert!(trials.iter().all(|t| t["checkpoint"].is_null()), "{trials:?}");
}
