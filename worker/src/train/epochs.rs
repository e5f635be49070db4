//! The epoch loop of one trial ([`Trainer`]): resume from a training checkpoint, train each
//! epoch over its seeded batch order with its seeded dropout stream, evaluate, keep the best
//! epoch, write or hand over a checkpoint, ask the observer whether to go on; then score the
//! test set and export the best epoch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::config::{TrialConfig, TrialOutcome};
use super::error::{torch, TrainError};
use super::observer::{EpochDecision, TrainObserver};
use super::step::StepTrainer;
use crate::config::BertConfig;
use crate::data::{batch_order, Batch, ClassificationData};
use crate::export::export_classifier;
use crate::phase_clock::{self, Phase};
use crate::training_checkpoint;

/// The data and progress of one running trial around its [`StepTrainer`].
pub(super) struct Trainer<'a> {
    /// The trial.
    pub(super) cfg: &'a TrialConfig,
    /// The model's config.json.
    pub(super) config: &'a BertConfig,
    /// The task's splits, tokenized.
    pub(super) data: &'a ClassificationData,
    /// The tokenizer's [PAD] id.
    pub(super) pad_id: i64,
    /// Where training runs.
    pub(super) device: Device,
    /// The model, optimizer and schedule.
    pub(super) stepper: StepTrainer,
    /// `balanced` class weights, when the trial asks for them.
    pub(super) class_weights: Option<Vec<f64>>,
}

impl<'a> Trainer<'a> {
    /// Builds the model and optimizer for `cfg` over `data` (see [`StepTrainer::new`]).
    pub(super) fn new(
        cfg: &'a TrialConfig,
        config: &'a BertConfig,
        data: &'a ClassificationData,
        pad_id: i64,
        device: Device,
    ) -> Result<Self, TrainError> {
        let steps_per_epoch = data.train.len().div_ceil(cfg.per_device_train_batch_size);
        let total_steps = steps_per_epoch * cfg.num_train_epochs;
        let mut stepper = StepTrainer::new(cfg, config, data.labels.len() as i64, total_steps, device)?;
        let class_weights = if cfg.balanced_class_weights {
            let weights = crate::data::balanced_class_weights(&data.train.label_ids, &data.labels)
                .map_err(|e| TrainError::InvalidTrial(e.to_string()))?;
            stepper.set_class_weights(&weights)?;
            Some(weights)
        } else {
            None
        };
        Ok(Trainer { cfg, config, data, pad_id, device, stepper, class_weights })
    }

    /// Trains every epoch left (after resuming, when the observer names a checkpoint),
    /// evaluating and checkpointing after each, then scores the test set and exports the best
    /// epoch as asked.
    pub(super) fn run(
        &mut self,
        observer: &mut dyn TrainObserver,
        export_dir: Option<&Path>,
    ) -> Result<TrialOutcome, TrainError> {
        let mut outcome = TrialOutcome {
            epochs_run: 0,
            best_epoch: 0,
            best_metrics: BTreeMap::new(),
            best_predictions: None,
            class_names: self.data.labels.clone(),
            last_metrics: BTreeMap::new(),
            test_metrics: BTreeMap::new(),
            stopped_early: false,
            aborted: false,
            artifact: None,
        };
        let mut best_weights: Option<HashMap<String, Tensor>> = None;
        let mut best_value: Option<f64> = None;
        let mut first_epoch = 1;
        if let Some(dir) = observer.resume_from() {
            let wants_best = export_dir.is_some() || observer.writes_checkpoints() || self.data.test.is_some();
            match self.resume(&dir, wants_best) {
                Ok((state, best)) => {
                    tracing::info!(checkpoint = %dir.display(), epoch = state.epoch, "resuming after epoch {}", state.epoch);
                    first_epoch = state.epoch + 1;
                    outcome.epochs_run = state.epoch;
                    outcome.best_epoch = state.best_epoch;
                    outcome.best_metrics = state.best_metrics;
                    outcome.best_predictions =
                        state.best_predictions.and_then(training_checkpoint::SavedPredictions::restore);
                    outcome.last_metrics = state.last_metrics;
                    best_value = Some(state.best_value);
                    best_weights = best;
                }
                Err(e) => {
                    tracing::warn!("cannot resume from the checkpoint, starting again from epoch 1: {e:#}");
                    // A fresh start from a model the failed load may have touched.
                    let total = self.stepper.schedule.total_steps;
                    self.stepper =
                        StepTrainer::new(self.cfg, self.config, self.data.labels.len() as i64, total, self.device)?;
                    if let Some(weights) = &self.class_weights {
                        self.stepper.set_class_weights(weights)?;
                    }
                }
            }
        }
        for epoch in first_epoch..=self.cfg.num_train_epochs {
            let Some(train) = self.train_epoch(epoch, observer)? else {
                outcome.aborted = true;
                return Ok(outcome);
            };
            let (mut metrics, predictions) = self.evaluate()?;
            metrics.insert("train_loss".to_owned(), train.loss);
            metrics.insert("train_samples_per_second".to_owned(), train.samples_per_second);
            metrics.insert("epoch".to_owned(), epoch as f64);
            outcome.epochs_run = epoch;
            let value = metrics[&self.cfg.objective_metric];
            let improved = match best_value {
                None => true,
                Some(best) if self.cfg.maximize => value > best,
                Some(best) => value < best,
            };
            if improved {
                best_value = Some(value);
                outcome.best_epoch = epoch;
                outcome.best_metrics = metrics.clone();
                outcome.best_predictions = predictions;
                if export_dir.is_some() || observer.writes_checkpoints() || self.data.test.is_some() {
                    best_weights = Some(self.weights_on_cpu()?);
                }
            }
            outcome.last_metrics = metrics.clone();
            if epoch < self.cfg.num_train_epochs {
                let best = best_weights.as_ref().filter(|_| outcome.best_epoch != epoch);
                if observer.takes_snapshots() {
                    observer.settle();
                    if !observer.should_abort() {
                        let state = self.resume_state(epoch, &outcome, best_value.unwrap_or(value));
                        match training_checkpoint::Snapshot::take(
                            state,
                            &self.stepper.vs.variables(),
                            &self.stepper.optimizer,
                            best,
                        ) {
                            Ok(snapshot) => observer.on_snapshot(snapshot),
                            Err(e) => tracing::warn!(epoch, "checkpoint not taken: {e}"),
                        }
                    }
                } else if let Some(dir) = observer.checkpoint_dir(epoch) {
                    self.write_checkpoint(&dir, epoch, &outcome, best_value.unwrap_or(value), best);
                }
            }
            if observer.on_epoch(epoch, &metrics) == EpochDecision::Stop {
                outcome.stopped_early = epoch < self.cfg.num_train_epochs;
                break;
            }
        }
        if let (Some(test), Some(value)) = (&self.data.test, best_value) {
            if !observer.should_abort() && observer.wants_test_scores(value) {
                outcome.test_metrics =
                    self.score_test_set(test, outcome.best_epoch, outcome.epochs_run, &best_weights)?;
            }
        }
        if let (Some(dir), Some(weights)) = (export_dir, best_weights) {
            let dir = export_classifier(dir, self.config, &self.data.labels, &weights, &self.cfg.model_dir)?;
            outcome.artifact = Some(dir);
        }
        Ok(outcome)
    }

    /// Loads the checkpoint in `dir`; returns where the trial stood and, when `export` and
    /// the best epoch was an earlier one, that epoch's weights.
    fn resume(
        &mut self,
        dir: &Path,
        export: bool,
    ) -> Result<(training_checkpoint::ResumeState, Option<HashMap<String, Tensor>>), training_checkpoint::ResumeError>
    {
        let variables = self.stepper.vs.variables();
        let restored = training_checkpoint::load(dir, self.cfg, &variables, &mut self.stepper.optimizer)?;
        let best = match (export, restored.best_weights) {
            (false, _) => None,
            (true, Some(best)) => Some(best),
            // The best epoch is the checkpoint's own: its weights are the current ones.
            (true, None) if restored.state.best_epoch == restored.state.epoch => {
                Some(self.weights_on_cpu().map_err(|e| training_checkpoint::ResumeError::Invalid {
                    dir: dir.to_path_buf(),
                    message: e.to_string(),
                })?)
            }
            (true, None) => {
                return Err(training_checkpoint::ResumeError::Invalid {
                    dir: dir.to_path_buf(),
                    message: "the best epoch's weights are not in the checkpoint".into(),
                })
            }
        };
        Ok((restored.state, best))
    }

    /// Where the trial stands after `epoch`, for its checkpoint.
    fn resume_state(&self, epoch: usize, outcome: &TrialOutcome, best_value: f64) -> training_checkpoint::ResumeState {
        training_checkpoint::ResumeState {
            format: training_checkpoint::FORMAT,
            fingerprint: training_checkpoint::fingerprint(self.cfg),
            epoch,
            steps: self.stepper.optimizer.steps(),
            best_epoch: outcome.best_epoch,
            best_value,
            best_metrics: outcome.best_metrics.clone(),
            best_predictions: outcome.best_predictions.as_ref().map(training_checkpoint::SavedPredictions::from),
            last_metrics: outcome.last_metrics.clone(),
            has_best_weights: false,
            tensors_sha256: String::new(),
        }
    }

    /// Writes epoch `epoch`'s checkpoint into `dir`; a failure is logged (the trial goes on,
    /// and a retry would start from the previous checkpoint).
    fn write_checkpoint(
        &self,
        dir: &Path,
        epoch: usize,
        outcome: &TrialOutcome,
        best_value: f64,
        best: Option<&HashMap<String, Tensor>>,
    ) {
        let state = self.resume_state(epoch, outcome, best_value);
        match training_checkpoint::save(dir, state, &self.stepper.vs.variables(), &self.stepper.optimizer, best) {
            Ok(w) => tracing::info!(
                epoch,
                bytes = w.bytes,
                "checkpoint written: {} in {:.2} s",
                bertsweep_transfer::human_bytes(w.bytes),
                w.seconds
            ),
            Err(e) => {
                tracing::warn!(epoch, "checkpoint not written: {e}");
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// One pass over the training data; `None` if the observer aborted.
    fn train_epoch(
        &mut self,
        epoch: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<Option<EpochStats>, TrainError> {
        let split = &self.data.train;
        let seed = self.cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch as u64);
        let batches =
            batch_order(&split.lengths(), self.cfg.per_device_train_batch_size, seed, self.cfg.group_by_length);
        let total_steps = self.stepper.schedule.total_steps;
        // Dropout draws from a stream fixed by (seed, epoch), so an epoch trained after a
        // resume draws what it would have drawn in an uninterrupted run.
        let dropout_seed = (seed ^ 0xD1B5_4A32_D192_ED03).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1;
        tch::manual_seed(dropout_seed as i64);
        if self.device.is_cuda() {
            tch::Cuda::manual_seed_all(dropout_seed);
        }
        let started = Instant::now();
        // Summed on the device so the loop never waits for the GPU.
        let mut loss_sum = Tensor::zeros([], (Kind::Float, self.device));
        let mut samples = 0;
        for indices in &batches {
            if observer.should_abort() {
                return Ok(None);
            }
            self.stepper.start_step_clock();
            let batch = Batch::new(split, indices, self.pad_id, self.device).map_err(torch("building a batch"))?;
            self.stepper.mark(Phase::Batch);
            let stats = self.stepper.step(&batch)?;
            loss_sum = loss_sum.f_add(&stats.loss).map_err(torch("training step"))?;
            samples += batch.size;
            observer.on_batch(self.stepper.steps_done(), total_steps);
            observer.on_samples(batch.size);
        }
        let loss_sum = f64::try_from(&loss_sum).map_err(torch("reading the training loss"))?;
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        if let Some(clock) = &mut self.stepper.clock {
            tracing::info!(epoch, "step profile ({}): {}", phase_clock::ENV, clock.report_and_reset());
        }
        Ok(Some(EpochStats {
            loss: loss_sum / batches.len().max(1) as f64,
            samples_per_second: samples as f64 / seconds,
        }))
    }

    /// A CPU copy of every variable, by checkpoint name (for exporting the best epoch).
    pub(super) fn weights_on_cpu(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let _no_grad = tch::no_grad_guard();
        self.stepper
            .vs
            .variables()
            .into_iter()
            .map(|(name, tensor)| {
                let mut copy = Tensor::f_empty(tensor.size(), (Kind::Float, Device::Cpu))
                    .map_err(torch("copying the best weights"))?;
                copy.f_copy_(&tensor).map_err(torch("copying the best weights"))?;
                Ok((name, copy))
            })
            .collect()
    }
}

/// Loss and throughput of one training epoch.
struct EpochStats {
    /// Mean of the step losses.
    loss: f64,
    /// Training examples per second, evaluation excluded.
    samples_per_second: f64,
}
