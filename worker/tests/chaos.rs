//! Chaos run across the real binaries: a 24-point grid trained by three `bertsweep-worker`
//! processes on a tiny BERT, while the test SIGKILLs workers 20 times and the coordinator 5
//! times at random moments (before a trial's first report, between reports, right after
//! one, while the coordinator is down). Every killed process is started again. The study must
//! end with 24 distinct COMPLETED configurations and no FAILED trial, each with a whole curve
//! from its last attempt.
//!
//! `BERTSWEEP_CHAOS_SEED` replays a schedule (the seed is printed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use bertsweep_tests::{eventually, Coordinator};
use bertsweep_worker::testing::{write_tiny_bert, write_tiny_task};
use rand::{Rng, SeedableRng};

fn study(dir: &Path, model: &Path, train: &Path, dev: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"name = "chaos"
[objective]
metric = "eval_accuracy"
[budget]
parallel_trials = 3
max_attempts = 30
[task]
model = "{model}"
train_file = "{train}"
validation_file = "{dev}"
max_seq_length = 16
[parameters.learning_rate]
values = [1e-4, 2e-4, 3e-4]
[parameters.per_device_train_batch_size]
values = [8, 16]
[parameters.num_train_epochs]
values = [2, 3]
[parameters.warmup_ratio]
values = [0.0, 0.1]
"#,
        model = model.display(),
        train = train.display(),
        dev = dev.display()
    );
    let file = dir.join("chaos.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Pseudo-random pause of 100–900 ms between chaos events.
fn pause(rng: &mut impl Rng) {
    std::thread::sleep(Duration::from_millis(rng.gen_range(100..900)));
}

/// The id a worker registered under, read from its log (`registered worker=<id>`).
fn registered_id(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("registered"))?;
    let id = line.split_whitespace().find_map(|w| w.strip_prefix("worker=").or_else(|| w.strip_prefix("new=")))?;
    Some(id.trim_matches('"').to_string())
}

/// A worker process and its log.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

/// Picks the worker to kill: one whose trial is RUNNING with `reported` epochs reported (0 =
/// before its first report, 2 = after its second), waiting up to a few seconds for such a
/// moment; else any worker.
fn victim(coordinator: &Coordinator, workers: &[Worker], reported: u64, rng: &mut impl Rng) -> (usize, bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let running: Vec<String> = coordinator
            .trials("chaos")
            .into_iter()
            .filter(|t| t["state"] == "RUNNING" && t["last_epoch"].as_u64() == Some(reported))
            .filter_map(|t| t["worker_id"].as_str().map(String::from))
            .collect();
        if let Some(i) = workers.iter().position(|w| registered_id(&w.log).is_some_and(|id| running.contains(&id))) {
            return (i, true);
        }
        if coordinator.study_state("chaos") != "RUNNING" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (rng.gen_range(0..workers.len()), false)
}

#[test]
fn a_grid_survives_twenty_worker_kills_and_five_coordinator_kills() {
    let seed: u64 =
        std::env::var("BERTSWEEP_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (set BERTSWEEP_CHAOS_SEED to replay)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&dir.path().join("model"), 7).unwrap();
    let (train, dev) = write_tiny_task(dir.path(), 4000, 200).unwrap();
    let db = dir.path().join("chaos.db");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    // A short lease, so a killed worker's trial is requeued within a second or two.
    let ttl = "1500ms";
    let mut coordinator = Coordinator::start_on(&addr, &db, ttl);
    let file = study(dir.path(), &model, &train, &dev);
    let created = coordinator.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let artifacts = dir.path().join("artifacts");
    let mut spawned = 0;
    let mut start_worker = |coordinator: &Coordinator| -> Worker {
        spawned += 1;
        let log = dir.path().join(format!("worker{spawned}.log"));
        let child = coordinator.worker_with(&["--study", "chaos", "--no-export"], &artifacts, &log);
        Worker { child, log: log.with_extension("err") }
    };
    let mut workers: Vec<Worker> = (0..3).map(|_| start_worker(&coordinator)).collect();

    // 20 worker kills and 5 coordinator kills, shuffled.
    let mut schedule: Vec<bool> = [vec![false; 20], vec![true; 5]].concat();
    rand::seq::SliceRandom::shuffle(schedule.as_mut_slice(), &mut rng);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut mid_trial_kills = 0;
    for kill_coordinator in schedule {
        pause(&mut rng);
        if kill_coordinator {
            drop(coordinator); // SIGKILL
            pause(&mut rng);
            coordinator = Coordinator::start_on(&addr, &db, ttl);
        } else {
            // Before the first report, between reports, after the second one.
            let stage = rng.gen_range(0..3);
            let (i, targeted) = victim(&coordinator, &workers, stage, &mut rng);
            mid_trial_kills += usize::from(targeted);
            let _ = workers[i].child.kill(); // SIGKILL
            let _ = workers[i].child.wait();
            workers[i] = start_worker(&coordinator);
        }
        // Workers that finished (the study ended early) stay finished.
        assert!(Instant::now() < deadline, "the chaos schedule ran past its deadline");
    }

    eventually("the study to end", Duration::from_secs(900), || {
        let state = coordinator.study_state("chaos");
        (state != "RUNNING" && !state.is_empty()).then_some(())
    });
    for w in &mut workers {
        let _ = w.child.wait();
    }
    let trials = coordinator.trials("chaos");
    let states: Vec<&str> = trials.iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(coordinator.study_state("chaos"), "COMPLETED", "{states:?}");
    assert_eq!(trials.len(), 24);
    assert!(states.iter().all(|s| *s == "COMPLETED"), "no FAILED (or other) trial: {states:?}");
    let configurations: BTreeSet<String> = trials.iter().map(|t| t["params"].to_string()).collect();
    assert_eq!(configurations.len(), 24, "24 distinct configurations");
    for t in &trials {
        let planned = t["params"]["num_train_epochs"].as_u64().unwrap();
        let epochs: Vec<u64> = t["epochs"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
        assert_eq!(
            epochs,
            (1..=planned).collect::<Vec<_>>(),
            "trial {} has the whole curve of its last attempt: {t}",
            t["number"]
        );
    }
    let retried = trials.iter().filter(|t| t["attempt"].as_u64() > Some(1)).count();
    let lost_leases: u64 = trials.iter().map(|t| t["attempt"].as_u64().unwrap_or(1) - 1).sum();
    let lost_epochs: usize = trials.iter().map(|t| t["earlier_attempts"].as_array().map_or(0, Vec::len)).sum();
    eprintln!(
        "chaos: 24/24 completed; {mid_trial_kills} of 20 worker kills hit a running trial; {retried} trials retried \
         ({lost_leases} lost leases), {lost_epochs} epochs of lost attempts kept for the record"
    );
}
