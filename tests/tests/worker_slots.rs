//! `bertsweep-worker --slots 2 --threads 1` on the CPU with real trials (MiniLM on the demo
//! reviews): two trials train at once, each in its own slot process under the supervisor;
//! killing one slot's process mid-trial hands back only that trial (at once, not after the
//! lease) and the supervisor starts the slot again; SIGTERM to the supervisor hands back
//! every slot's trial and exits cleanly.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use bertsweep_tests::*;

/// A two-trial study (two learning rates) with both trials allowed at once.
fn two_trial_study(dir: &Path, name: &str, model: &Path) -> std::path::PathBuf {
    StudyFile::reviews(name, model)
        .budget("parallel_trials = 2")
        .budget("max_attempts = 3")
        .task("max_seq_length = 64")
        .task("max_train_samples = 160")
        .parameter("learning_rate", "values = [5e-5, 3e-5]")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("num_train_epochs", "value = 3")
        .write_in(dir)
}

/// The live child processes of `parent` (from /proc).
fn children_of(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid …": comm may hold spaces, so read after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.insert(pid);
        }
    }
    out
}

/// Waits until both trials of `study` run and have reported at least one epoch.
fn wait_both_running(coordinator: &Coordinator, study: &str) {
    eventually("two trials training at once", Duration::from_secs(300), || {
        let trials = coordinator.trials(study);
        (trials.len() == 2 && trials.iter().all(|t| t["state"] == "RUNNING" && t["last_epoch"].as_u64() >= Some(1)))
            .then_some(())
    });
}

/// The body of `GET path` from `addr`, if it answered 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the series named exactly `series` (name and labels) in a scrape; 0 if absent.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn a_killed_slot_hands_back_only_its_trial_and_is_started_again() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    // A long lease: only the supervisor can requeue the killed slot's trial within the test.
    let coordinator = Coordinator::start(&dir.path().join("slots.db"), "10m");
    let file = two_trial_study(dir.path(), "slots", &model);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let artifacts = dir.path().join("artifacts");
    let log = dir.path().join("worker.log");
    let mut worker = coordinator.worker_with(&["--study", "slots", "--slots", "2"], &artifacts, &log);
    let supervisor = worker.id();

    wait_both_running(&coordinator, "slots");
    let slots = eventually("two slot processes", Duration::from_secs(30), || {
        let c = children_of(supervisor);
        (c.len() == 2).then_some(c)
    });
    let victim = *slots.iter().next().unwrap();
    signal(victim, "KILL");

    // Handed back at once (attempt 2 exists long before the 10-minute lease could expire),
    // while the other trial trains on in its first attempt.
    let (retried, untouched) = eventually("the killed slot's trial requeued", Duration::from_secs(60), || {
        let trials = coordinator.trials("slots");
        let retried = trials.iter().find(|t| t["attempt"].as_u64() == Some(2) || t["state"] == "PENDING")?.clone();
        let other = trials.iter().find(|t| t["number"] != retried["number"])?.clone();
        Some((retried, other))
    });
    assert_eq!(untouched["attempt"], 1, "the other slot's trial is not disturbed: {untouched}");
    assert_ne!(untouched["state"], "PENDING", "{untouched}");
    let restarted = eventually("the slot started again", Duration::from_secs(60), || {
        let now = children_of(supervisor);
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    });
    assert!(restarted.iter().any(|p| slots.contains(p)), "the surviving slot kept its process");

    let status = eventually("the worker to finish the study", Duration::from_secs(600), || worker.try_wait().unwrap());
    let stderr = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    assert!(status.success(), "the supervisor exits 0 when its study ends:\n{stderr}");
    assert!(stderr.contains("was killed by signal 9") && stderr.contains("restarting it"), "{stderr}");
    let trials = coordinator.trials("slots");
    assert!(trials.iter().all(|t| t["state"] == "COMPLETED"), "{trials:?}");
    let attempts: BTreeSet<u64> = trials.iter().map(|t| t["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, BTreeSet::from([1, 2]), "only the killed slot's trial ran twice: {trials:?}");
    let again = trials.iter().find(|t| t["number"] == retried["number"]).unwrap();
    assert_eq!(again["attempt"], 2, "{again}");
    for t in &trials {
        assert!(t["peak_device_memory_bytes"].as_u64().unwrap_or(0) > 0, "each trial's measured peak is kept: {t}");
    }
    assert_eq!(coordinator.study_state("slots"), "COMPLETED");
}

#[test]
fn sigterm_to_the_supervisor_hands_back_every_slots_trial() {
    let Some(model) = minilm_dir() else { return skip("no MiniLM checkpoint; run `make setup`") };
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start(&dir.path().join("term.db"), "10m");
    let file = two_trial_study(dir.path(), "term", &model);
    assert!(coordinator.cli(&["study", "create", file.to_str().unwrap()]).status.success());
    let artifacts = dir.path().join("artifacts");
    let log = dir.path().join("worker.log");
    let mut worker = coordinator.worker_with(
        &["--study", "term", "--slots", "2", "--metrics-listen", "127.0.0.1:0"],
        &artifacts,
        &log,
    );
    let supervisor = worker.id();
    wait_both_running(&coordinator, "term");
    let slots = children_of(supervisor);
    assert_eq!(slots.len(), 2, "one process per slot: {slots:?}");

    // The supervisor's metrics: both slots busy, each with examples counted and memory read.
    let err_log = log.with_extension("err");
    let addr = eventually("the metrics address in the log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&err_log).ok()?;
        let rest = text.split("metrics at http://").nth(1)?;
        Some(rest.split('/').next()?.to_string())
    });
    let scrape = eventually("per-slot metrics", Duration::from_secs(30), || {
        let text = http_get(&addr, "/metrics")?;
        let ready = ["cpu#0", "cpu#1"].iter().all(|slot| {
            sample(&text, &format!("bertsweep_worker_slot_train_samples_total{{slot=\"{slot}\"}}")) > 0.0
                && sample(&text, &format!("bertsweep_worker_slot_busy{{slot=\"{slot}\"}}")) == 1.0
                && sample(&text, &format!("bertsweep_worker_slot_device_memory_bytes{{slot=\"{slot}\"}}")) > 0.0
        });
        ready.then_some(text)
    });
    assert!(scrape.contains("bertsweep_worker_slot_restarts_total{slot=\"cpu#0\"} 0"), "{scrape}");

    signal(supervisor, "TERM");
    let status = eventually("the supervisor to exit", Duration::from_secs(180), || worker.try_wait().unwrap());
    let stderr = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    assert_eq!(status.code(), Some(75), "stopped by SIGTERM, it exits 75 with every trial handed back:\n{stderr}");
    for pid in &slots {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "slot process {pid} is gone");
    }
    let trials = coordinator.trials("term");
    assert_eq!(trials.len(), 2);
    for t in &trials {
        assert_eq!(t["state"], "PENDING", "handed back at once, not after the lease: {t}");
    }
    assert_eq!(stderr.matches("released: the worker is shutting down").count(), 2, "{stderr}");
}
