//! Across machines for real: a coordinator (TLS + token) in one network namespace and two
//! workers in two others, linked by veth pairs, sharing nothing but the coordinator's address.
//! The study is created from a third directory holding the data and the model, which are then
//! moved away, so only the coordinator can supply them. Every trial completes, only the kept
//! top K models remain in the coordinator's store, `bertsweep download` brings the best one
//! back, and transformers loads it and reproduces the accuracy the worker reported.
//!
//! Needs root and iproute2 (`.ci/run` installs it); elsewhere the test says SKIPPED.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bertsweep_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// Three namespaces: `<p>-c` (coordinator) linked to `<p>-w1` and `<p>-w2` (workers).
struct Hosts {
    prefix: String,
    /// The coordinator's address as each worker sees it.
    coordinator_ip: [String; 2],
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

impl Hosts {
    fn create() -> Option<Hosts> {
        // SAFETY: geteuid has no preconditions.
        let root = std::fs::read_to_string("/proc/self/status")
            .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
            .unwrap_or(false);
        if !root || !ip(&["-V"]) {
            skip("network namespaces need root and iproute2");
            return None;
        }
        let id = std::process::id() % 100_000;
        let prefix = format!("bs{id}");
        let subnet = 100 + (id % 100);
        let hosts =
            Hosts { prefix: prefix.clone(), coordinator_ip: [format!("10.{subnet}.1.1"), format!("10.{subnet}.2.1")] };
        let c = hosts.ns("c");
        assert!(ip(&["netns", "add", &c]), "ip netns add {c}");
        assert!(ip(&["-n", &c, "link", "set", "lo", "up"]));
        for i in 1..=2 {
            let w = hosts.ns(&format!("w{i}"));
            let (a, b) = (format!("{prefix}c{i}"), format!("{prefix}w{i}"));
            assert!(ip(&["netns", "add", &w]), "ip netns add {w}");
            assert!(ip(&["-n", &w, "link", "set", "lo", "up"]));
            assert!(ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]), "veth {a}");
            assert!(ip(&["link", "set", &a, "netns", &c]) && ip(&["link", "set", &b, "netns", &w]));
            assert!(ip(&["-n", &c, "addr", "add", &format!("10.{subnet}.{i}.1/24"), "dev", &a]));
            assert!(ip(&["-n", &w, "addr", "add", &format!("10.{subnet}.{i}.2/24"), "dev", &b]));
            assert!(ip(&["-n", &c, "link", "set", &a, "up"]) && ip(&["-n", &w, "link", "set", &b, "up"]));
        }
        Some(hosts)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn exec(&self, host: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(host)]
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in ["c", "w1", "w2"] {
            ip(&["netns", "del", &self.ns(host)]);
        }
    }
}

/// ca.pem, server.pem/key for `ips`, and a token file.
fn write_pki(dir: &Path, ips: &[String]) {
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "sweep CA");
    let ca = params.self_signed(&ca_key).unwrap();
    write("ca.pem", ca.pem());
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(ips.to_vec()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write("server.pem", params.signed_by(&key, &ca, &ca_key).unwrap().pem());
    write("server.key", key.serialize_pem());
    write("token", "across-machines-s3cret\n".into());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path()).unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Accuracy of transformers' predictions with the model in `dir` on the dev file.
fn transformers_accuracy(python: &Path, dir: &Path, dev: &Path, max_len: u32) -> f64 {
    let script = r#"
import csv, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model_dir, dev, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
rows = list(csv.DictReader(open(dev, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
enc = tok([r["sentence"] for r in rows], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
with torch.no_grad():
    pred = model(**enc).logits.argmax(-1).tolist()
ids = [model.config.label2id[r["label"]] for r in rows]
print(sum(p == y for p, y in zip(pred, ids)) / len(rows))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .arg(dev)
        .arg(max_len.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .expect("run python");
    assert!(out.status.success(), "transformers could not load the model:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("accuracy")
}

/// Every blob file in the coordinator's data directory, with its size.
fn stored_blobs(data_dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(data_dir.join("sha256")).unwrap() {
        for blob in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let blob = blob.unwrap();
            out.push((blob.path(), blob.metadata().unwrap().len()));
        }
    }
    out
}

#[test]
fn workers_that_share_only_the_address_train_and_the_best_model_comes_home() {
    let (Some(model), Some(python)) = (minilm_dir(), Some(workspace_root().join(".venv/bin/python"))) else {
        panic!("the MiniLM checkpoint is missing: run `make setup`");
    };
    let Some(hosts) = Hosts::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let mut sans = hosts.coordinator_ip.to_vec();
    sans.push("127.0.0.1".into());
    write_pki(dir.path(), &sans);

    let mut coordinator = Coordinator::start_in(
        &hosts.exec("c"),
        "0.0.0.0:0",
        &p("coordinator.db"),
        "20s",
        &[
            "--tls-cert",
            &p("server.pem").display().to_string(),
            "--tls-key",
            &p("server.key").display().to_string(),
            "--token-file",
            &p("token").display().to_string(),
        ],
    );
    let port = coordinator.url.rsplit(':').next().unwrap().to_string();
    coordinator.url = format!("https://127.0.0.1:{port}");
    coordinator.client_env = vec![
        ("BERTSWEEP_CA_CERT".into(), p("ca.pem").display().to_string()),
        ("BERTSWEEP_TOKEN_FILE".into(), p("token").display().to_string()),
    ];

    // The study's own directory: the data and the model, named by relative paths.
    let source = p("source");
    copy_dir(&model, &source.join("model"));
    let root = workspace_root();
    std::fs::copy(root.join("examples/data/reviews-train.tsv"), source.join("train.tsv")).unwrap();
    std::fs::copy(root.join("examples/data/reviews-dev.tsv"), source.join("dev.tsv")).unwrap();
    StudyFile::reviews("far", Path::new("model"))
        .inputs("model", "train.tsv", "dev.tsv")
        .budget("parallel_trials = 2")
        .budget("keep_artifacts = 2")
        .task("max_seq_length = 32")
        .task("max_train_samples = 48")
        .parameter("learning_rate", "values = [2e-5, 5e-5, 1e-4]")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 1")
        .write_in(&source);
    let created = coordinator.cli_in(Some(&source), &["study", "create", "far.toml"]);
    assert!(created.status.success(), "study create: {}", String::from_utf8_lossy(&created.stderr));
    let shown = coordinator.cli(&["study", "show", "far", "--format", "json"]);
    let spec: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let spec_toml = spec["spec_toml"].as_str().unwrap_or_default().to_string();
    assert!(spec_toml.contains("model = \"blob:sha256:") && spec_toml.contains("# uploaded from"), "{spec_toml}");
    // Nothing but the coordinator can supply the inputs now.
    let moved = p("moved-away");
    std::fs::rename(&source, &moved).unwrap();

    let start_worker = |i: usize| -> Child {
        let home = p(&format!("worker{i}"));
        std::fs::create_dir_all(&home).unwrap();
        command_in(&hosts.exec(&format!("w{i}")), &binary("bertsweep-worker"))
            .current_dir(&home)
            .env("BERTSWEEP_COORDINATOR", format!("https://{}:{port}", hosts.coordinator_ip[i - 1]))
            .env("BERTSWEEP_CA_CERT", p("ca.pem"))
            .env("BERTSWEEP_TOKEN_FILE", p("token"))
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .args(["--device", "cpu", "--threads", "1", "--study", "far"])
            .stdout(std::fs::File::create(home.join("worker.log")).unwrap())
            .stderr(std::fs::File::create(home.join("worker.err")).unwrap())
            .spawn()
            .expect("start a worker")
    };
    let mut workers = [start_worker(1), start_worker(2)];
    let state = eventually("the study to end", Duration::from_secs(900), || {
        let s = coordinator.study_state("far");
        (s != "RUNNING" && !s.is_empty()).then_some(s)
    });
    for w in &mut workers {
        let _ = w.wait();
    }
    let logs = |i: usize| std::fs::read_to_string(p(&format!("worker{i}/worker.err"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "worker 1:\n{}\nworker 2:\n{}", logs(1), logs(2));

    let trials = coordinator.trials("far");
    assert_eq!(trials.len(), 3);
    assert!(trials.iter().all(|t| t["state"] == "COMPLETED"), "{trials:?}");
    let kept: Vec<_> = trials.iter().filter(|t| t["artifact"].is_string()).collect();
    assert!(!kept.is_empty() && kept.len() <= 2, "at most keep_artifacts models are kept: {trials:?}");
    assert!(kept.iter().all(|t| t["artifact"].as_str().unwrap().starts_with("blob:sha256:")));
    // Each kept model has its own weights blob; pushed-out ones are gone from the store.
    let weights = std::fs::metadata(moved.join("model/model.safetensors")).map(|m| m.len()).unwrap_or(0);
    let data_dir = PathBuf::from(format!("{}.data", p("coordinator.db").display()));
    let classifier_weights =
        stored_blobs(&data_dir).into_iter().filter(|(_, size)| *size > 1_000_000 && *size != weights).count();
    assert_eq!(classifier_weights, kept.len(), "one weights blob per kept model");
    // Both workers fetched the inputs from the coordinator into their own caches.
    for i in 1..=2 {
        let trees = p(&format!("worker{i}/.cache/bertsweep/trees"));
        let n = std::fs::read_dir(&trees).map(|d| d.count()).unwrap_or(0);
        assert!(n == 0 || n == 3, "worker {i} cache {}: {n} trees", trees.display());
    }

    let best = coordinator.cli(&["best", "far", "--format", "json"]);
    let best: serde_json::Value = serde_json::from_slice(&best.stdout).unwrap();
    let home = p("home");
    let downloaded = coordinator.cli(&["download", "far", &home.join("best-model").display().to_string()]);
    assert!(downloaded.status.success(), "download: {}", String::from_utf8_lossy(&downloaded.stderr));
    let line = String::from_utf8_lossy(&downloaded.stdout).to_string();
    assert!(line.starts_with(&format!("downloaded trial {} of study \"far\"", best["number"])), "{line}");
    let accuracy = transformers_accuracy(&python, &home.join("best-model"), &moved.join("dev.tsv"), 32);
    let reported = best["metrics"]["eval_accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - reported).abs() <= 1.0 / 320.0 + 1e-9,
        "transformers gets {accuracy} with the downloaded model, the worker reported {reported}"
    );
    // A non-empty destination is refused in one line, and nothing is written into it.
    let again = coordinator.cli(&["download", "far", &home.join("best-model").display().to_string()]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("not empty") && err.trim().lines().count() == 1, "{err}");
}
