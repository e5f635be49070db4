//! Resuming a trial from its checkpoint: a run cut after epoch 2 and resumed from that
//! epoch's checkpoint ends exactly (every metric but the wall-clock throughput, and the
//! exported weights byte for byte) where an uninterrupted run ends; a corrupt, torn, foreign
//! or missing checkpoint means a clean restart from epoch 1 with the uninterrupted result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bertsweep_worker::testing::{write_tiny_bert, write_tiny_task};
use bertsweep_worker::training_checkpoint::{read_state, STATE_FILE, TENSORS_FILE};
use bertsweep_worker::{run_trial, EpochDecision, TrainObserver, TrialConfig, TrialOutcome};
use tch::Device;

/// Torch's random generator is one per process: runs compared bit for bit take turns.
static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Writes a checkpoint after every epoch into `<root>/e<N>`, resumes from `resume`,
/// records each reported epoch and aborts once `abort_after` epochs are reported.
struct Checkpointing {
    root: PathBuf,
    resume: Option<PathBuf>,
    abort_after: Option<usize>,
    reported: Vec<(usize, BTreeMap<String, f64>)>,
}

impl Checkpointing {
    fn new(root: &Path, resume: Option<PathBuf>, abort_after: Option<usize>) -> Self {
        Checkpointing { root: root.to_path_buf(), resume, abort_after, reported: Vec::new() }
    }
}

impl TrainObserver for Checkpointing {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        self.reported.push((epoch, metrics.clone()));
        EpochDecision::Continue
    }
    fn should_abort(&self) -> bool {
        self.abort_after.is_some_and(|n| self.reported.len() >= n)
    }
    fn resume_from(&mut self) -> Option<PathBuf> {
        self.resume.take()
    }
    fn writes_checkpoints(&self) -> bool {
        true
    }
    fn checkpoint_dir(&mut self, epoch: usize) -> Option<PathBuf> {
        Some(self.root.join(format!("e{epoch}")))
    }
}

fn trial(dir: &Path) -> TrialConfig {
    let model_dir = write_tiny_bert(&dir.join("model"), 5).unwrap();
    let (train_file, validation_file) = write_tiny_task(dir, 64, 40).unwrap();
    TrialConfig {
        model_dir,
        train_file,
        validation_file,
        learning_rate: 3e-3,
        num_train_epochs: 4,
        per_device_train_batch_size: 8,
        warmup_ratio: 0.1,
        seed: 7,
        ..TrialConfig::default()
    }
}

/// Every metric but the throughput, which is a wall-clock figure.
fn comparable(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter().filter(|(k, _)| k.as_str() != "train_samples_per_second").map(|(k, v)| (k.clone(), *v)).collect()
}

fn same_outcome(a: &TrialOutcome, b: &TrialOutcome) {
    assert_eq!(a.epochs_run, b.epochs_run);
    assert_eq!(a.best_epoch, b.best_epoch);
    assert_eq!(comparable(&a.best_metrics), comparable(&b.best_metrics));
    assert_eq!(comparable(&a.last_metrics), comparable(&b.last_metrics));
    // The best epoch's dev-set predictions too, even when that epoch was before the checkpoint.
    assert!(a.best_predictions.is_some());
    assert_eq!(a.best_predictions, b.best_predictions);
}

fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn a_trial_stopped_after_epoch_two_resumes_to_exactly_the_uninterrupted_result() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let cfg = trial(dir.path());
    let mut whole = Checkpointing::new(&dir.path().join("whole"), None, None);
    let uninterrupted = run_trial(&cfg, Device::Cpu, &mut whole, Some(&dir.path().join("out-whole"))).unwrap();
    assert_eq!(uninterrupted.epochs_run, 4);
    assert!(!dir.path().join("whole/e4").exists(), "no checkpoint after the last epoch");

    // Killed after its second report: the checkpoint of epoch 2 is what it leaves.
    let mut first = Checkpointing::new(&dir.path().join("first"), None, Some(2));
    let cut = run_trial(&cfg, Device::Cpu, &mut first, None).unwrap();
    assert!(cut.aborted);
    let checkpoint = dir.path().join("first/e2");
    let state = read_state(&checkpoint, &cfg).unwrap();
    assert_eq!((state.epoch, state.steps), (2, 16));

    let mut second = Checkpointing::new(&dir.path().join("second"), Some(checkpoint), None);
    let resumed = run_trial(&cfg, Device::Cpu, &mut second, Some(&dir.path().join("out-resumed"))).unwrap();
    assert_eq!(second.reported.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [3, 4], "starts at epoch 3");
    for (epoch, metrics) in &second.reported {
        assert_eq!(comparable(metrics), comparable(&whole.reported[epoch - 1].1), "epoch {epoch}");
    }
    same_outcome(&uninterrupted, &resumed);
    assert_eq!(
        weights(&dir.path().join("out-whole")),
        weights(&dir.path().join("out-resumed")),
        "the exported best model is byte for byte the same"
    );
}

#[test]
fn a_corrupt_foreign_or_missing_checkpoint_means_a_clean_restart() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let cfg = trial(dir.path());
    let mut whole = Checkpointing::new(&dir.path().join("whole"), None, None);
    let uninterrupted = run_trial(&cfg, Device::Cpu, &mut whole, None).unwrap();
    let good = dir.path().join("whole/e2");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::copy(good.join(STATE_FILE), corrupt.join(STATE_FILE)).unwrap();
    let mut bytes = std::fs::read(good.join(TENSORS_FILE)).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(corrupt.join(TENSORS_FILE), bytes).unwrap();

    let torn = dir.path().join("torn");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::copy(good.join(TENSORS_FILE), torn.join(TENSORS_FILE)).unwrap();

    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join(STATE_FILE), "{not json").unwrap();

    let other = TrialConfig { learning_rate: 1e-3, ..cfg.clone() };
    let foreign = dir.path().join("foreign");
    let mut writer = Checkpointing::new(&foreign, None, Some(2));
    run_trial(&other, Device::Cpu, &mut writer, None).unwrap();
    assert!(read_state(&foreign.join("e2"), &cfg).unwrap_err().to_string().contains("another configuration"));

    for bad in [corrupt, torn, junk, foreign.join("e2"), dir.path().join("missing")] {
        let mut restart = Checkpointing::new(&dir.path().join("restart"), Some(bad.clone()), None);
        let outcome = run_trial(&cfg, Device::Cpu, &mut restart, None).unwrap();
        assert_eq!(restart.reported.first().map(|(e, _)| *e), Some(1), "{}: restarts at epoch 1", bad.display());
        same_outcome(&uninterrupted, &outcome);
        let _ = std::fs::remove_dir_all(dir.path().join("restart"));
    }
}
