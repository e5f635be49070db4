//! Tests of one trial end to end on a tiny BERT: learning, stopping, aborting, freezing,
//! weight decay groups, the test set, invalid and out-of-memory trials, clipping.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{nn, Device, Kind, TchError, Tensor};

use super::epochs::Trainer;
use super::*;
use crate::bert;
use crate::data::{batch_order, Batch};
use crate::testing::{write_tiny_bert, write_tiny_task};

/// Records every epoch; stops or aborts on request.
#[derive(Default)]
struct Recorder {
    epochs: Vec<BTreeMap<String, f64>>,
    stop_after: Option<usize>,
    abort_after_steps: Option<usize>,
    steps: usize,
}

impl TrainObserver for Recorder {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        self.epochs.push(metrics.clone());
        if self.stop_after == Some(epoch) {
            EpochDecision::Stop
        } else {
            EpochDecision::Continue
        }
    }
    fn should_abort(&self) -> bool {
        self.abort_after_steps.is_some_and(|n| self.steps >= n)
    }
    fn on_batch(&mut self, done: usize, _total: usize) {
        self.steps = done;
    }
}

fn tiny_trial(dir: &Path) -> TrialConfig {
    let model_dir = write_tiny_bert(&dir.join("model"), 3).unwrap();
    let (train_file, validation_file) = write_tiny_task(dir, 96, 40).unwrap();
    TrialConfig {
        model_dir,
        train_file,
        validation_file,
        learning_rate: 3e-3,
        num_train_epochs: 6,
        per_device_train_batch_size: 8,
        warmup_ratio: 0.1,
        seed: 1,
        ..TrialConfig::default()
    }
}

#[test]
fn training_lowers_the_loss_and_learns_the_task() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_trial(dir.path());
    let mut recorder = Recorder::default();
    let outcome = run_trial(&cfg, Device::Cpu, &mut recorder, None).unwrap();
    assert_eq!(outcome.epochs_run, 6);
    assert!(!outcome.stopped_early && !outcome.aborted && outcome.artifact.is_none());
    let first = &recorder.epochs[0];
    let last = recorder.epochs.last().unwrap();
    for name in [
        "eval_accuracy",
        "eval_f1",
        "eval_precision",
        "eval_recall",
        "eval_loss",
        "train_loss",
        "epoch",
        "train_samples_per_second",
    ] {
        assert!(last.contains_key(name), "no {name}");
    }
    assert!(last["train_loss"] < first["train_loss"] * 0.8, "{:?}", recorder.epochs);
    assert!(last["eval_accuracy"] >= 0.9, "{:?}", recorder.epochs);
    assert_eq!(
        outcome.best_metrics["eval_accuracy"],
        recorder.epochs.iter().map(|m| m["eval_accuracy"]).fold(0.0, f64::max)
    );
    assert_eq!(&outcome.last_metrics, last);
    // The best epoch's predictions, in the validation file's order: they score exactly the
    // reported accuracy and loss, and their labels are the file's.
    let kept = outcome.best_predictions.as_ref().expect("the best epoch's predictions");
    assert_eq!(kept.len(), 40);
    assert_eq!(outcome.class_names.len(), kept.classes());
    assert_eq!(kept.score("eval_accuracy").unwrap(), outcome.best_metrics["eval_accuracy"]);
    assert!((kept.score("eval_loss").unwrap() - outcome.best_metrics["eval_loss"]).abs() < 1e-4);
    assert!((kept.score("eval_roc_auc").unwrap() - outcome.best_metrics["eval_roc_auc"]).abs() < 1e-6);
    let tokenizer = crate::tokenizer::BertTokenizer::from_dir(&cfg.model_dir, cfg.max_seq_length).unwrap();
    let data = crate::data::ClassificationData::load(&cfg.data_spec(), &tokenizer).unwrap();
    let in_file_order: Vec<u32> = data.validation.label_ids.iter().map(|&y| y as u32).collect();
    assert_eq!(kept.labels(), in_file_order.as_slice());
}

/// Scores the test set only when asked.
struct TestGate(bool);

impl TrainObserver for TestGate {
    fn on_epoch(&mut self, _epoch: usize, _metrics: &BTreeMap<String, f64>) -> EpochDecision {
        EpochDecision::Continue
    }
    fn should_abort(&self) -> bool {
        false
    }
    fn wants_test_scores(&mut self, _best_value: f64) -> bool {
        self.0
    }
}

#[test]
fn the_test_set_scores_the_best_epochs_model_and_nothing_else() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    // The validation file as the test file: the test scores must be the best epoch's dev
    // scores exactly, which holds only if the best epoch's weights were the ones scored.
    // A high learning rate makes a later epoch worse than the best one.
    let base = tiny_trial(dir.path());
    let cfg = TrialConfig { test_file: Some(base.validation_file.clone()), learning_rate: 2e-2, ..base.clone() };
    let mut recorder = Recorder::default();
    let plain = run_trial(&base, Device::Cpu, &mut recorder, None).unwrap();
    assert!(plain.test_metrics.is_empty(), "no test file, no test scores");
    let tested = run_trial(&cfg, Device::Cpu, &mut TestGate(true), None).unwrap();
    assert!(tested.best_epoch < tested.epochs_run, "best epoch {} of {}", tested.best_epoch, tested.epochs_run);
    for (name, dev) in &tested.best_metrics {
        if let Some(metric) = name.strip_prefix("eval_") {
            assert_eq!(tested.test_metrics[&format!("test_{metric}")], *dev, "{name}");
        }
    }
    assert_eq!(tested.test_metrics.len(), tested.best_metrics.keys().filter(|k| k.starts_with("eval_")).count());
    let refused = run_trial(&cfg, Device::Cpu, &mut TestGate(false), None).unwrap();
    assert!(refused.test_metrics.is_empty(), "a model that is not kept is not scored");
    assert_eq!(
        refused.best_metrics,
        tested
            .best_metrics
            .clone()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "train_samples_per_second" { refused.best_metrics[&k] } else { v };
                (k, v)
            })
            .collect::<BTreeMap<_, _>>(),
        "scoring the test set changes nothing in training"
    );
}

#[test]
fn observer_can_stop_early_and_abort() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrialConfig { num_train_epochs: 3, ..tiny_trial(dir.path()) };
    let mut stop = Recorder { stop_after: Some(1), ..Default::default() };
    let outcome = run_trial(&cfg, Device::Cpu, &mut stop, Some(&dir.path().join("out"))).unwrap();
    assert!(outcome.stopped_early && outcome.epochs_run == 1 && outcome.best_epoch == 1);
    assert!(outcome.artifact.is_some());
    let mut abort = Recorder { abort_after_steps: Some(3), ..Default::default() };
    let outcome = run_trial(&cfg, Device::Cpu, &mut abort, Some(&dir.path().join("aborted"))).unwrap();
    assert!(outcome.aborted && outcome.epochs_run == 0 && outcome.artifact.is_none());
    assert_eq!(abort.steps, 3);
    assert!(!dir.path().join("aborted").exists());
}

fn trainer_parts(cfg: &TrialConfig) -> (BertConfig, ClassificationData, i64) {
    let config = BertConfig::from_dir(&cfg.model_dir).unwrap();
    let tokenizer = BertTokenizer::from_dir(&cfg.model_dir, cfg.max_seq_length).unwrap();
    let spec = cfg.data_spec();
    (config, ClassificationData::load(&spec, &tokenizer).unwrap(), tokenizer.pad_id)
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

#[test]
fn frozen_layers_do_not_move() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrialConfig { freeze_layers: 1, ..tiny_trial(dir.path()) };
    let (config, data, pad_id) = trainer_parts(&cfg);
    let mut trainer = Trainer::new(&cfg, &config, &data, pad_id, Device::Cpu).unwrap();
    let before = snapshot(&trainer.stepper.vs);
    for indices in batch_order(&data.train.lengths(), 8, 0, false).iter().take(3) {
        let batch = Batch::new(&data.train, indices, pad_id, Device::Cpu).unwrap();
        let _ = trainer.stepper.step(&batch).unwrap();
    }
    for (name, after) in trainer.stepper.vs.variables() {
        let frozen = name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        assert_eq!(after.equal(&before[&name]), frozen, "{name}");
    }
}

#[test]
fn weight_decay_skips_biases_and_layernorm_and_head_gets_its_own_lr() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrialConfig { learning_rate: 0.1, weight_decay: 0.5, head_lr_multiplier: 3.0, ..tiny_trial(dir.path()) };
    let (config, data, pad_id) = trainer_parts(&cfg);
    let mut trainer = Trainer::new(&cfg, &config, &data, pad_id, Device::Cpu).unwrap();
    // All-zero gradients: Adam moves nothing, so only the decoupled decay p *= 1 - lr·wd acts.
    let zero = trainer
        .stepper
        .vs
        .trainable_variables()
        .iter()
        .map(|t| t.sum(Kind::Float) * 0.0)
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    let before = snapshot(&trainer.stepper.vs);
    let (lr, head_lr) = (0.1, 0.3);
    let mut rates = [lr; bert::NUM_GROUPS];
    rates[bert::GROUP_HEAD_DECAY] = head_lr;
    rates[bert::GROUP_HEAD_NO_DECAY] = head_lr;
    trainer.stepper.optimizer.zero_grad().unwrap();
    zero.backward();
    trainer.stepper.optimizer.step(&rates).unwrap();
    for (name, after) in trainer.stepper.vs.variables() {
        let expected = match bert::param_group(&name) {
            bert::GROUP_DECAY => 1.0 - lr * 0.5,
            bert::GROUP_HEAD_DECAY => 1.0 - head_lr * 0.5,
            _ => 1.0,
        };
        let diff = f64::try_from((&after - &before[&name] * expected).abs().max()).unwrap();
        assert!(diff < 1e-6, "{name}: expected factor {expected}, off by {diff}");
    }
}

#[test]
fn invalid_trials_fail_fast_and_are_infeasible() {
    let _turn = crate::testing::torch_turn();
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_trial(dir.path());
    let cases = [
        (TrialConfig { freeze_layers: 3, ..base.clone() }, "freeze_layers 3 exceeds"),
        (TrialConfig { max_seq_length: 129, ..base.clone() }, "max_position_embeddings 128"),
        (TrialConfig { per_device_train_batch_size: 0, ..base.clone() }, "per_device_train_batch_size"),
        (TrialConfig { objective_metric: "bleu".into(), ..base.clone() }, "bleu"),
    ];
    for (cfg, expected) in cases {
        let err = run_trial(&cfg, Device::Cpu, &mut Recorder::default(), None).unwrap_err();
        assert!(err.is_infeasible() && err.to_string().contains(expected), "{err}");
    }
    let missing = TrialConfig { train_file: dir.path().join("nope.tsv"), ..base };
    let err = run_trial(&missing, Device::Cpu, &mut Recorder::default(), None).unwrap_err();
    assert!(!err.is_infeasible() && err.to_string().contains("nope.tsv"), "{err}");
}

#[test]
fn out_of_memory_is_infeasible() {
    let oom = TrainError::torch(
        "forward pass",
        TchError::Torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB\nException raised from malloc at \
             CUDACachingAllocator.cpp:1\nframe #0: c10::Error::Error() + 0x1"
                .into(),
        ),
    );
    assert!(oom.is_infeasible());
    assert_eq!(oom.to_string(), "forward pass: Internal torch error: CUDA out of memory. Tried to allocate 2.00 GiB");
    assert!(std::error::Error::source(&oom).is_none(), "no cause that would print the backtrace");
    let other = TrainError::torch("x", TchError::Torch("device-side assert".into()));
    assert!(!other.is_infeasible());
}

#[test]
fn clipping_scales_gradients_to_the_max_norm() {
    let a = Tensor::from_slice(&[3.0f32, 0.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
    (a.dot(&a) * 0.5 + b.dot(&b) * 0.5).backward(); // grads (3, 0) and (4): norm 5
    let norm = clip_grad_norm(&[&a, &b], 1.0).unwrap();
    assert!((f64::try_from(norm).unwrap() - 5.0).abs() < 1e-5, "the norm before clipping");
    let ga = Vec::<f32>::try_from(a.grad()).unwrap();
    assert!((ga[0] - 0.6).abs() < 1e-5 && ga[1] == 0.0, "{ga:?}");
    let _ = clip_grad_norm(&[&a, &b], 10.0).unwrap();
    assert!((Vec::<f32>::try_from(b.grad()).unwrap()[0] - 0.8).abs() < 1e-5);
}

#[test]
fn an_out_of_memory_panic_is_infeasible_and_other_panics_are_not() {
    let oom = TrainError::panic("training", "DefaultCPUAllocator: can't allocate memory: you tried 9 GB".into());
    assert!(oom.is_out_of_memory() && oom.is_infeasible());
    assert_eq!(oom.to_string(), "training: DefaultCPUAllocator: can't allocate memory: you tried 9 GB");
    let other = TrainError::panic("training", "index out of range\nbacktrace".into());
    assert!(!other.is_out_of_memory() && !other.is_infeasible());
    assert_eq!(other.to_string(), "training: index out of range");
}
