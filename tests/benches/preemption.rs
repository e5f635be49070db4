//! Preemption benchmark: the same 12-trial MiniLM study (4 epochs each) run twice by two CPU
//! workers while one worker is SIGKILLed every `KILL_EVERY_SECS` (default 40) seconds and
//! replaced at once, as a preempted spot instance would be — once with checkpoints (the
//! default: a retry resumes after the last finished epoch) and once with
//! `budget.checkpoints = false` (a retry starts from epoch 1). The kill schedule and the victims
//! are the same in both runs. Prints epochs trained (counted from the workers' logs), epochs
//! lost, wall time and both best values, which must be equal.
//!
//!   make bench-preemption      (release build; about 10 minutes on 2 cores)
//!   SAMPLES=320 KILL_EVERY_SECS=60 make bench-preemption   (longer epochs)

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bertsweep_tests::*;

const TRIALS: usize = 12;

/// Training sentences per trial (`SAMPLES`, default 96: epochs of about 4 s on 2 cores; more
/// makes epochs longer next to the per-epoch checkpoint).
fn samples() -> usize {
    std::env::var("SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(96)
}
const EPOCHS: usize = 4;

/// What one run measured.
struct Run {
    wall: Duration,
    epochs_trained: usize,
    kills: usize,
    resumed: usize,
    best: f64,
}

fn study(dir: &Path, name: &str, model: &Path, checkpoints: bool) -> PathBuf {
    StudyFile::reviews(name, model)
        .budget(&format!("max_trials = {TRIALS}"))
        .budget("parallel_trials = 2")
        .budget("max_attempts = 20")
        .budget(&format!("checkpoints = {checkpoints}"))
        .task("max_seq_length = 48")
        .task(&format!("max_train_samples = {}", samples()))
        .parameter("learning_rate", "values = [2e-5, 3e-5, 5e-5]")
        .parameter("per_device_train_batch_size", "value = 16")
        .parameter("seed", "values = [1, 2, 3, 4]")
        .parameter("num_train_epochs", &format!("value = {EPOCHS}"))
        .write_in(dir)
}

fn worker(c: &Coordinator, study: &str, dir: &Path, n: usize) -> Child {
    let log = dir.join(format!("{study}-worker{n}.log"));
    Command::new(binary("bertsweep-worker"))
        .env("RUST_LOG", "info")
        .args(["--coordinator", &c.url, "--device", "cpu", "--threads", "1", "--study", study])
        .arg("--cache-dir")
        .arg(dir.join(format!("cache{}", n % 2)))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("start bertsweep-worker")
}

fn run(c: &Coordinator, dir: &Path, model: &Path, name: &str, checkpoints: bool, every: Duration) -> Run {
    let file = study(dir, name, model, checkpoints);
    let created = c.cli(&["study", "create", file.to_str().unwrap()]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let started = Instant::now();
    let mut spawned = 0;
    let mut slots: Vec<Child> = (0..2)
        .map(|_| {
            spawned += 1;
            worker(c, name, dir, spawned)
        })
        .collect();
    let mut victim_seed: u64 = 0x5EED;
    let mut kills = 0;
    let mut next_kill = started + every;
    loop {
        let state = c.study_state(name);
        if state != "RUNNING" && !state.is_empty() {
            assert_eq!(state, "COMPLETED");
            break;
        }
        if Instant::now() >= next_kill {
            victim_seed = victim_seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let victim = (victim_seed >> 33) as usize % slots.len();
            let _ = slots[victim].kill();
            let _ = slots[victim].wait();
            kills += 1;
            spawned += 1;
            slots[victim] = worker(c, name, dir, spawned);
            next_kill += every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = started.elapsed();
    for mut w in slots {
        let _ = w.wait();
    }
    let (mut epochs_trained, mut resumed) = (0, 0);
    for n in 1..=spawned {
        let log = std::fs::read_to_string(dir.join(format!("{name}-worker{n}.log"))).unwrap_or_default()
            + &std::fs::read_to_string(dir.join(format!("{name}-worker{n}.err"))).unwrap_or_default();
        epochs_trained += log.lines().filter(|l| l.contains(&format!("/{EPOCHS}: eval_accuracy="))).count();
        resumed += log.lines().filter(|l| l.contains("resuming after epoch")).count();
    }
    let best = c.trials(name).iter().filter_map(|t| t["value"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    Run { wall, epochs_trained, kills, resumed, best }
}

fn main() {
    let Some(model) = minilm_dir() else { panic!("the MiniLM checkpoint is missing: run `make setup`") };
    let every = Duration::from_secs(std::env::var("KILL_EVERY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40));
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("preempt.db"), "3s");
    println!(
        "preemption: {TRIALS} trials × {EPOCHS} epochs (MiniLM, {} reviews, 2 CPU workers with 1 thread each), \
         one worker SIGKILLed and replaced every {} s",
        samples(),
        every.as_secs()
    );
    let with = run(&c, dir.path(), &model, "resume", true, every);
    let without = run(&c, dir.path(), &model, "restart", false, every);
    let needed = TRIALS * EPOCHS;
    println!("| run | kills | epochs trained (needed {needed}) | epochs lost | resumed attempts | wall time | best eval_accuracy |");
    println!("|---|---|---|---|---|---|---|");
    for (label, r) in [("checkpoints on (resume)", &with), ("checkpoints off (restart)", &without)] {
        println!(
            "| {label} | {} | {} | {} | {} | {:.1} s | {:.4} |",
            r.kills,
            r.epochs_trained,
            r.epochs_trained.saturating_sub(needed),
            r.resumed,
            r.wall.as_secs_f64(),
            r.best
        );
    }
    assert_eq!(with.best, without.best, "the best value does not depend on the interruptions");
    println!("best values identical: {}", with.best);
}
