//! One trial: fine-tune a BERT checkpoint on a classification task, evaluating after every
//! epoch, with transformers' Trainer defaults wherever the trial says nothing.
//!
//! AdamW (β 0.9/0.999, ε 1e-8; weight decay not on biases and LayerNorm weights), linear
//! warm-up then linear decay to 0, gradient-norm clipping at 1.0, dynamic padding. On CUDA
//! matrix products run in bf16 (see [`crate::bert`]); on the CPU in fp32.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{nn, Device, Kind, Reduction, TchError, Tensor};

use crate::bert::{self, BertForSequenceClassification};
use crate::checkpoint::{CheckpointError, Weights};
use crate::config::{BertConfig, ConfigError};
use crate::data::{batch_order, eval_batch_order, Batch, ClassificationData, DataError, DataSpec, FoldSpec, Split};
use crate::export::{export_classifier, ExportError};
use crate::metrics::classification_scores;
use crate::optim::AdamW;
use crate::phase_clock::{self, Phase, PhaseClock};
use crate::resume;
use crate::schedule::LinearSchedule;
use crate::tokenizer::{BertTokenizer, TokenizerError};
use bertsweep_evaluation::predictions::{MAX_CLASSES, MAX_VALUES};
use bertsweep_evaluation::Predictions;

/// Maximum L2 norm of all gradients together (transformers' `max_grad_norm`).
pub const MAX_GRAD_NORM: f64 = 1.0;
/// Examples per evaluation batch (evaluation order does not change the metrics).
pub const EVAL_BATCH_SIZE: usize = 64;
/// Metric names the objective may use.
pub use bertsweep_proto::contract::OBJECTIVE_METRICS;

/// Everything one trial needs: the task and the hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialConfig {
    /// Hugging Face BERT directory (config.json, weights, tokenizer).
    pub model_dir: PathBuf,
    /// Training data (.tsv with header, .csv, .jsonl).
    pub train_file: PathBuf,
    /// Validation data, evaluated after every epoch.
    pub validation_file: PathBuf,
    /// Held-out test file: after training, the best epoch's model is scored on it when
    /// [`TrainObserver::wants_test_scores`] says so (`test_…` metrics in the outcome). Never
    /// part of the resume fingerprint: it changes nothing in training.
    pub test_file: Option<PathBuf>,
    /// K-fold cross-validation: validate on fold `index` of `train_file` (stratified, shuffled
    /// with `seed`) and train on the others; `validation_file` is then unused.
    pub folds: Option<FoldSpec>,
    /// Column holding the text.
    pub text_column: String,
    /// Column holding each example's second text, for sentence pairs (encoded as
    /// `[CLS] a [SEP] b [SEP]` with token types, `longest_first` truncation); `None` = single
    /// sentences.
    pub text_pair_column: Option<String>,
    /// Column holding the label (integer or string).
    pub label_column: String,
    /// Examples are truncated to this many tokens, [CLS] and [SEP] included.
    pub max_seq_length: usize,
    /// Train on the first N rows only.
    pub max_train_samples: Option<usize>,
    /// Peak learning rate of the encoder.
    pub learning_rate: f64,
    /// Passes over the training data.
    pub num_train_epochs: usize,
    /// Examples per optimizer step.
    pub per_device_train_batch_size: usize,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// Decoupled weight decay of weights (never biases or LayerNorm weights).
    pub weight_decay: f64,
    /// Seeds initialisation, dropout and shuffling.
    pub seed: u64,
    /// The classifier's learning rate is `learning_rate × head_lr_multiplier`.
    pub head_lr_multiplier: f64,
    /// Embeddings and the first N encoder layers are not trained.
    pub freeze_layers: usize,
    /// Metric that picks the best epoch (one of [`OBJECTIVE_METRICS`]).
    pub objective_metric: String,
    /// Whether larger objective values are better.
    pub maximize: bool,
    /// Batch similar lengths together (transformers' `group_by_length`).
    pub group_by_length: bool,
    /// Weight the loss of each class by `n / (classes × count)` over the training labels
    /// (`task.class_weights = "balanced"`, scikit-learn's `compute_class_weight`).
    pub balanced_class_weights: bool,
}

impl Default for TrialConfig {
    /// transformers' defaults for the hyperparameters (weight decay 0.01, as bertsweep's
    /// default); paths and columns are placeholders to fill in.
    fn default() -> Self {
        TrialConfig {
            model_dir: PathBuf::new(),
            train_file: PathBuf::new(),
            validation_file: PathBuf::new(),
            test_file: None,
            folds: None,
            text_column: bertsweep_proto::contract::DEFAULT_TEXT_COLUMN.to_owned(),
            text_pair_column: None,
            label_column: bertsweep_proto::contract::DEFAULT_LABEL_COLUMN.to_owned(),
            max_seq_length: bertsweep_proto::contract::DEFAULT_MAX_SEQ_LENGTH as usize,
            max_train_samples: None,
            learning_rate: 5e-5,
            num_train_epochs: bertsweep_proto::contract::DEFAULT_EPOCHS as usize,
            per_device_train_batch_size: 8,
            warmup_ratio: 0.0,
            weight_decay: 0.01,
            seed: 42,
            head_lr_multiplier: 1.0,
            freeze_layers: 0,
            objective_metric: "eval_accuracy".to_owned(),
            maximize: true,
            group_by_length: false,
            balanced_class_weights: false,
        }
    }
}

impl TrialConfig {
    /// The data files and columns of this trial, as the data loader wants them.
    pub fn data_spec(&self) -> DataSpec {
        DataSpec {
            train_file: self.train_file.clone(),
            validation_file: self.validation_file.clone(),
            test_file: self.test_file.clone(),
            folds: self.folds,
            text_column: self.text_column.clone(),
            text_pair_column: self.text_pair_column.clone(),
            label_column: self.label_column.clone(),
            max_train_samples: self.max_train_samples,
        }
    }
}

/// What the observer wants after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochDecision {
    /// Train the next epoch.
    Continue,
    /// Stop now (early stopping); the trial ends with what it has.
    Stop,
}

/// Hooks the caller (the gRPC runtime, the CLI) uses to follow and steer a trial.
pub trait TrainObserver {
    /// Called after each epoch's evaluation with the epoch (1-based) and its metrics.
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision;
    /// Polled between batches: true ends the trial at once (lost lease, SIGTERM).
    fn should_abort(&self) -> bool;
    /// Called after each optimizer step with steps done and total steps of the whole run.
    fn on_batch(&mut self, _done: usize, _total: usize) {}
    /// Called after each optimizer step with the number of examples it trained on.
    fn on_samples(&mut self, _samples: usize) {}
    /// Asked once before training: a checkpoint directory ([`crate::resume`]) to continue
    /// from. One that cannot be used is logged and the trial starts from epoch 1.
    fn resume_from(&mut self) -> Option<PathBuf> {
        None
    }
    /// Whether [`TrainObserver::checkpoint_dir`] may ask for checkpoints (the best epoch's
    /// weights are then kept, so a resumed trial can still export them).
    fn writes_checkpoints(&self) -> bool {
        false
    }
    /// Asked after each epoch's evaluation, before [`TrainObserver::on_epoch`]: where to write
    /// that epoch's checkpoint (a directory that does not exist yet), or `None` for none.
    fn checkpoint_dir(&mut self, _epoch: usize) -> Option<PathBuf> {
        None
    }
    /// Whether checkpoints are handed over as host [`resume::Snapshot`]s
    /// ([`TrainObserver::on_snapshot`]) to be written and stored off the training thread,
    /// instead of being written into [`TrainObserver::checkpoint_dir`] before the next epoch.
    fn takes_snapshots(&self) -> bool {
        false
    }
    /// Called before a snapshot is taken: returns once the earlier epochs' checkpoints are
    /// dealt with (one snapshot in host memory at a time).
    fn settle(&mut self) {}

    /// Whether to score the best epoch's model on the test file (when the trial has one),
    /// given its objective value: a coordinator's worker asks whether the model will be kept.
    fn wants_test_scores(&mut self, _best_value: f64) -> bool {
        true
    }
    /// Epoch `snapshot.epoch()`'s checkpoint, before [`TrainObserver::on_epoch`] of that epoch.
    fn on_snapshot(&mut self, _snapshot: resume::Snapshot) {}
}

/// An observer that lets every trial run to its last epoch (benchmarks, tests, library use).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToEnd;

impl TrainObserver for RunToEnd {
    fn on_epoch(&mut self, _epoch: usize, _metrics: &BTreeMap<String, f64>) -> EpochDecision {
        EpochDecision::Continue
    }

    fn should_abort(&self) -> bool {
        false
    }
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialOutcome {
    /// Epochs completed (trained and evaluated).
    pub epochs_run: usize,
    /// The epoch (1-based) with the best objective; 0 if none completed.
    pub best_epoch: usize,
    /// Metrics of the best epoch.
    pub best_metrics: BTreeMap<String, f64>,
    /// The best epoch's dev-set predictions, in the validation file's order (what the
    /// coordinator derives per-class scores and confidence intervals from); `None` before an
    /// epoch completes, or after resuming from a checkpoint that predates them.
    pub best_predictions: Option<Predictions>,
    /// Each class id's label, for reading the predictions.
    pub class_names: Vec<String>,
    /// Metrics of the last completed epoch.
    pub last_metrics: BTreeMap<String, f64>,
    /// The best epoch's model scored on the test file (`test_accuracy`, …): empty without a
    /// test file, or when the observer did not want them.
    pub test_metrics: BTreeMap<String, f64>,
    /// The observer answered [`EpochDecision::Stop`].
    pub stopped_early: bool,
    /// [`TrainObserver::should_abort`] said so; nothing was exported.
    pub aborted: bool,
    /// The exported directory, if an export directory was given and an epoch completed.
    pub artifact: Option<PathBuf>,
}

/// Why a trial failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The hyperparameters cannot work with this model or data (retrying will not help).
    #[error("invalid trial: {0}")]
    InvalidTrial(String),
    /// config.json could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The weights could not be loaded.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A data file could not be used.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing the artifact failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A torch operation failed (out of memory, device error...). Shown as one line: libtorch's
    /// messages go on with a C++ backtrace that says nothing to a user.
    #[error("{context}: {}", first_line(&error.to_string()))]
    Torch {
        /// What the trial was doing.
        context: String,
        /// The torch error, whole (not the error's `source`, so that no report prints the
        /// backtrace after the one-line message).
        error: TchError,
    },
    /// A torch call inside tch panicked (some tch calls have no fallible form).
    #[error("{context}: {}", first_line(message))]
    Panic {
        /// What the trial was doing.
        context: String,
        /// The panic message.
        message: String,
    },
}

impl TrainError {
    /// True when retrying the same configuration cannot succeed: out of memory (the batch
    /// or sequence length does not fit the device) or hyperparameters invalid for the task.
    pub fn is_infeasible(&self) -> bool {
        matches!(self, TrainError::InvalidTrial(_)) || self.is_out_of_memory()
    }

    /// True when the device (or the host) ran out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        let out_of_memory = |message: &str| {
            let message = message.to_ascii_lowercase();
            message.contains("out of memory") || message.contains("can't allocate memory")
        };
        match self {
            TrainError::Torch { error, .. } => out_of_memory(&error.to_string()),
            TrainError::Panic { message, .. } => out_of_memory(message),
            _ => false,
        }
    }
}

fn torch(context: &str) -> impl FnOnce(TchError) -> TrainError + '_ {
    move |error| TrainError::Torch { context: context.to_owned(), error }
}

/// The first non-blank line of a libtorch message (the rest is "Exception raised from …" and
/// C++ stack frames).
fn first_line(message: &str) -> &str {
    message.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("")
}

/// Fine-tunes `cfg.model_dir` on `device` and, if `export_dir` is given, exports the best
/// epoch there. Device memory is released before it returns, whatever the outcome.
pub fn run_trial(
    cfg: &TrialConfig,
    device: Device,
    observer: &mut dyn TrainObserver,
    export_dir: Option<&Path>,
) -> Result<TrialOutcome, TrainError> {
    validate(cfg)?;
    let config = BertConfig::from_dir(&cfg.model_dir)?;
    if cfg.max_seq_length as i64 > config.max_position_embeddings {
        return Err(TrainError::InvalidTrial(format!(
            "max_seq_length {} exceeds the model's max_position_embeddings {}",
            cfg.max_seq_length, config.max_position_embeddings
        )));
    }
    if cfg.freeze_layers as i64 > config.num_hidden_layers {
        return Err(TrainError::InvalidTrial(format!(
            "freeze_layers {} exceeds the model's {} layers",
            cfg.freeze_layers, config.num_hidden_layers
        )));
    }
    let tokenizer = BertTokenizer::from_dir(&cfg.model_dir, cfg.max_seq_length)?;
    let spec = cfg.data_spec();
    let data = ClassificationData::load(&spec, &tokenizer)?;
    if device.is_cuda() {
        crate::device::prepare_cuda();
    }
    // Everything on the device lives inside `Trainer` and is dropped when this returns.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut trainer = Trainer::new(cfg, &config, &data, tokenizer.pad_id, device)?;
        trainer.run(observer, export_dir)
    }));
    match result {
        Ok(result) => result,
        Err(panic) => Err(TrainError::Panic { context: "training".to_owned(), message: panic_message(&panic) }),
    }
}

fn validate(cfg: &TrialConfig) -> Result<(), TrainError> {
    let invalid = |m: String| Err(TrainError::InvalidTrial(m));
    if cfg.per_device_train_batch_size == 0 {
        return invalid("per_device_train_batch_size must be at least 1".into());
    }
    if cfg.num_train_epochs == 0 {
        return invalid("num_train_epochs must be at least 1".into());
    }
    if cfg.max_seq_length < 2 {
        return invalid(format!("max_seq_length {} leaves no room for [CLS] and [SEP]", cfg.max_seq_length));
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return invalid(format!("learning_rate must be positive, got {}", cfg.learning_rate));
    }
    if !(0.0..=1.0).contains(&cfg.warmup_ratio) {
        return invalid(format!("warmup_ratio must be in [0, 1], got {}", cfg.warmup_ratio));
    }
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        return invalid(format!("weight_decay must be non-negative, got {}", cfg.weight_decay));
    }
    if !(cfg.head_lr_multiplier.is_finite() && cfg.head_lr_multiplier > 0.0) {
        return invalid(format!("head_lr_multiplier must be positive, got {}", cfg.head_lr_multiplier));
    }
    if cfg.max_train_samples == Some(0) {
        return invalid("max_train_samples must be at least 1".into());
    }
    if !OBJECTIVE_METRICS.contains(&cfg.objective_metric.as_str()) {
        return invalid(format!("objective metric {:?} is not one of {OBJECTIVE_METRICS:?}", cfg.objective_metric));
    }
    Ok(())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic without message".to_owned())
}

/// One optimizer step at a time, exactly as every trial takes them: the model (pre-trained
/// weights loaded), AdamW with transformers' parameter groups, the linear schedule and
/// gradient clipping. [`run_trial`] drives it over its epochs; it is public so parity tests
/// can drive it over explicit batches and compare each step with PyTorch + transformers.
pub struct StepTrainer {
    vs: nn::VarStore,
    model: BertForSequenceClassification,
    optimizer: AdamW,
    schedule: LinearSchedule,
    learning_rate: f64,
    head_lr_multiplier: f64,
    /// Per-class loss weights (`torch.nn.CrossEntropyLoss(weight=…)`), on the device.
    class_weights: Option<Tensor>,
    /// Per-phase wall time, when asked for (`BERTSWEEP_STEP_PROFILE=1`; adds device waits).
    clock: Option<PhaseClock>,
}

/// What one optimizer step measured (detached, on the training device: reading them syncs).
pub struct StepStats {
    /// The batch's mean cross-entropy loss before the step.
    pub loss: Tensor,
    /// The joint L2 norm of all gradients before clipping (what `clip_grad_norm_` returns).
    pub grad_norm: Tensor,
}

impl StepTrainer {
    /// Seeds torch with `cfg.seed`, builds the model for `config` (whose dropout rates are
    /// used as given) with `num_labels` classes, loads `cfg.model_dir`'s weights and sets up
    /// AdamW and a schedule over `total_steps`.
    pub fn new(
        cfg: &TrialConfig,
        config: &BertConfig,
        num_labels: i64,
        total_steps: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(cfg.seed as i64);
        if device.is_cuda() {
            tch::Cuda::manual_seed_all(cfg.seed);
        }
        let vs = nn::VarStore::new(device);
        let kind = bert::compute_kind_for(device);
        let model = BertForSequenceClassification::new(&vs.root(), config, num_labels, cfg.freeze_layers, kind);
        let weights = Weights::from_dir(&cfg.model_dir)?;
        let report = weights.load_into(&vs)?;
        drop(weights);
        tracing::info!(initialized = ?report.initialized, unused = report.unused.len(), "loaded checkpoint");

        let optimizer = AdamW::new(&vs, cfg.weight_decay).map_err(torch("creating the optimizer"))?;
        Ok(StepTrainer {
            vs,
            model,
            optimizer,
            schedule: LinearSchedule::new(total_steps, cfg.warmup_ratio),
            learning_rate: cfg.learning_rate,
            head_lr_multiplier: cfg.head_lr_multiplier,
            class_weights: None,
            clock: PhaseClock::from_env(device),
        })
    }

    /// Weights each class's loss by `weights` (one per class; the batch loss is then the
    /// weighted mean, as `torch.nn.CrossEntropyLoss(weight=…)`).
    pub fn set_class_weights(&mut self, weights: &[f64]) -> Result<(), TrainError> {
        let device = self.vs.device();
        let tensor = Tensor::from_slice(weights)
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_to_device(device))
            .map_err(torch("class weights"))?;
        self.class_weights = Some(tensor);
        Ok(())
    }

    /// Forward, backward, clip, AdamW step at the scheduled learning rate.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats, TrainError> {
        let factor = self.schedule.factor(self.steps_done());
        let lr = self.learning_rate * factor;
        let head_lr = lr * self.head_lr_multiplier;
        let mut rates = [0.0; bert::NUM_GROUPS];
        rates[bert::GROUP_DECAY] = lr;
        rates[bert::GROUP_NO_DECAY] = lr;
        rates[bert::GROUP_HEAD_DECAY] = head_lr;
        rates[bert::GROUP_HEAD_NO_DECAY] = head_lr;

        let logits = self
            .model
            .forward_unpadded_t(
                &batch.input_ids,
                batch.token_type_ids.as_ref(),
                batch.attention_mask.as_ref(),
                batch.tokens.as_ref(),
                true,
            )
            .map_err(torch("forward pass"))?;
        let loss = logits
            .f_cross_entropy_loss(&batch.labels, self.class_weights.as_ref(), Reduction::Mean, -100, 0.0)
            .map_err(torch("computing the loss"))?;
        self.mark(Phase::Forward);
        self.optimizer.zero_grad().map_err(torch("dropping gradients"))?;
        loss.f_backward().map_err(torch("backward pass"))?;
        self.mark(Phase::Backward);
        let grad_norm =
            clip_grad_norm(&self.optimizer.parameters(), MAX_GRAD_NORM).map_err(torch("clipping gradients"))?;
        self.mark(Phase::Clip);
        self.optimizer.step(&rates).map_err(torch("optimizer step"))?;
        self.mark(Phase::Optimizer);
        Ok(StepStats { loss: loss.f_detach().map_err(torch("training step"))?, grad_norm })
    }

    /// Charges the time since the last mark to `phase`, if profiling.
    fn mark(&mut self, phase: Phase) {
        if let Some(clock) = &mut self.clock {
            clock.mark(phase);
        }
    }

    /// Restarts the phase clock at the start of a step, if profiling.
    fn start_step_clock(&mut self) {
        if let Some(clock) = &mut self.clock {
            clock.start();
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        // The optimizer's count is the one truth (a resume restores it with the moments).
        self.optimizer.steps() as usize
    }

    /// The model (for evaluation).
    pub fn model(&self) -> &BertForSequenceClassification {
        &self.model
    }

    /// Every variable by checkpoint name (shared with the model: copy before changing).
    pub fn variables(&self) -> HashMap<String, Tensor> {
        self.vs.variables()
    }
}

/// The data and progress of one running trial around its [`StepTrainer`].
struct Trainer<'a> {
    cfg: &'a TrialConfig,
    config: &'a BertConfig,
    data: &'a ClassificationData,
    pad_id: i64,
    device: Device,
    stepper: StepTrainer,
    /// `balanced` class weights, when the trial asks for them.
    class_weights: Option<Vec<f64>>,
}

impl<'a> Trainer<'a> {
    fn new(
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
                .map_err(TrainError::InvalidTrial)?;
            stepper.set_class_weights(&weights)?;
            Some(weights)
        } else {
            None
        };
        Ok(Trainer { cfg, config, data, pad_id, device, stepper, class_weights })
    }

    fn run(&mut self, observer: &mut dyn TrainObserver, export_dir: Option<&Path>) -> Result<TrialOutcome, TrainError> {
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
                    outcome.best_predictions = state.best_predictions.and_then(resume::SavedPredictions::restore);
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
                        match resume::Snapshot::take(state, &self.stepper.vs.variables(), &self.stepper.optimizer, best)
                        {
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
    ) -> Result<(resume::ResumeState, Option<HashMap<String, Tensor>>), resume::ResumeError> {
        let variables = self.stepper.vs.variables();
        let restored = resume::load(dir, self.cfg, &variables, &mut self.stepper.optimizer)?;
        let best = match (export, restored.best_weights) {
            (false, _) => None,
            (true, Some(best)) => Some(best),
            // The best epoch is the checkpoint's own: its weights are the current ones.
            (true, None) if restored.state.best_epoch == restored.state.epoch => Some(
                self.weights_on_cpu()
                    .map_err(|e| resume::ResumeError::Invalid { dir: dir.to_path_buf(), message: e.to_string() })?,
            ),
            (true, None) => {
                return Err(resume::ResumeError::Invalid {
                    dir: dir.to_path_buf(),
                    message: "the best epoch's weights are not in the checkpoint".into(),
                })
            }
        };
        Ok((restored.state, best))
    }

    /// Where the trial stands after `epoch`, for its checkpoint.
    fn resume_state(&self, epoch: usize, outcome: &TrialOutcome, best_value: f64) -> resume::ResumeState {
        resume::ResumeState {
            format: resume::FORMAT,
            fingerprint: resume::fingerprint(self.cfg),
            epoch,
            steps: self.stepper.optimizer.steps(),
            best_epoch: outcome.best_epoch,
            best_value,
            best_metrics: outcome.best_metrics.clone(),
            best_predictions: outcome.best_predictions.as_ref().map(resume::SavedPredictions::from),
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
        match resume::save(dir, state, &self.stepper.vs.variables(), &self.stepper.optimizer, best) {
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

    /// Validation metrics with transformers' names.
    /// Scores the dev set: every epoch metric, and the predictions in the file's row order
    /// (`None` for sets over [`bertsweep_evaluation::predictions`]' size limits).
    fn evaluate(&self) -> Result<(BTreeMap<String, f64>, Option<Predictions>), TrainError> {
        self.evaluate_split(&self.data.validation)
    }

    /// [`Self::evaluate`] on any split of this task.
    fn evaluate_split(&self, split: &Split) -> Result<(BTreeMap<String, f64>, Option<Predictions>), TrainError> {
        let classes = self.data.labels.len();
        let keep = (2..=MAX_CLASSES).contains(&classes) && split.len().saturating_mul(classes) <= MAX_VALUES;
        // Probabilities in the file's row order (evaluation runs in length order).
        let mut ordered = if keep { vec![0f32; split.len() * classes] } else { Vec::new() };
        let mut predictions = Vec::with_capacity(split.len());
        let mut labels = Vec::with_capacity(split.len());
        let mut probabilities = Vec::with_capacity(split.len() * classes);
        let mut loss_sum = 0.0;
        // With class weights: the weighted mean over the whole set, Σ w_y·loss / Σ w_y.
        let mut weight_sum = 0.0;
        let _no_grad = tch::no_grad_guard();
        for indices in eval_batch_order(&split.lengths(), EVAL_BATCH_SIZE) {
            let batch = Batch::new(split, &indices, self.pad_id, self.device).map_err(torch("building a batch"))?;
            let logits = self
                .stepper
                .model
                .forward_unpadded_t(
                    &batch.input_ids,
                    batch.token_type_ids.as_ref(),
                    batch.attention_mask.as_ref(),
                    batch.tokens.as_ref(),
                    false,
                )
                .map_err(torch("evaluation"))?;
            let loss = logits
                .f_cross_entropy_loss(&batch.labels, self.stepper.class_weights.as_ref(), Reduction::Sum, -100, 0.0)
                .and_then(|l| f64::try_from(&l))
                .map_err(torch("evaluation loss"))?;
            loss_sum += loss;
            weight_sum += match &self.class_weights {
                Some(w) => indices.iter().map(|&i| w[split.label_ids[i] as usize]).sum::<f64>(),
                None => indices.len() as f64,
            };
            let predicted = logits
                .f_argmax(-1, false)
                .and_then(|p| p.f_to_device(Device::Cpu))
                .and_then(|p| Vec::<i64>::try_from(&p))
                .map_err(torch("evaluation"))?;
            predictions.extend(predicted);
            let rows = logits
                .f_softmax(-1, Kind::Double)
                .and_then(|p| p.f_to_device(Device::Cpu))
                .and_then(|p| p.f_flatten(0, -1))
                .and_then(|p| Vec::<f64>::try_from(&p))
                .map_err(torch("evaluation probabilities"))?;
            if keep {
                for (row, &i) in rows.chunks(classes).zip(&indices) {
                    for (slot, &p) in ordered[i * classes..(i + 1) * classes].iter_mut().zip(row) {
                        *slot = p as f32;
                    }
                }
            }
            probabilities.extend(rows);
            labels.extend(indices.iter().map(|&i| split.label_ids[i]));
        }
        let weights: Vec<f32> = self.class_weights.iter().flatten().map(|&w| w as f32).collect();
        let in_order = split.label_ids.iter().map(|&y| y as u32).collect();
        let kept = match keep.then(|| Predictions::new(classes, in_order, ordered, weights)) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                tracing::warn!("dev-set predictions not kept: {e}");
                None
            }
            None => None,
        };
        let scores = classification_scores(&predictions, &labels);
        let more = crate::metrics::probabilistic_scores(&probabilities, classes, &labels);
        let metrics = BTreeMap::from([
            ("eval_accuracy".to_owned(), scores.accuracy),
            ("eval_f1".to_owned(), scores.f1),
            ("eval_precision".to_owned(), scores.precision),
            ("eval_recall".to_owned(), scores.recall),
            ("eval_loss".to_owned(), if weight_sum > 0.0 { loss_sum / weight_sum } else { 0.0 }),
            ("eval_mcc".to_owned(), more.mcc),
            ("eval_f1_weighted".to_owned(), more.f1_weighted),
            ("eval_roc_auc".to_owned(), more.roc_auc),
            ("eval_pr_auc".to_owned(), more.pr_auc),
            ("eval_log_loss".to_owned(), more.log_loss),
            ("eval_ece".to_owned(), more.ece),
        ]);
        Ok((metrics, kept))
    }

    /// The best epoch's model on the test split, metrics renamed `eval_…` → `test_…`. The
    /// best epoch's weights are loaded first when a later epoch trained past them (training is
    /// over: the model's own weights are not needed again).
    fn score_test_set(
        &mut self,
        test: &Split,
        best_epoch: usize,
        last_epoch: usize,
        best_weights: &Option<HashMap<String, Tensor>>,
    ) -> Result<BTreeMap<String, f64>, TrainError> {
        if best_epoch != last_epoch {
            let Some(weights) = best_weights else {
                // Resumed from a checkpoint without the best epoch's weights: nothing to score.
                tracing::warn!("the best epoch's weights are not at hand; the test set is not scored");
                return Ok(BTreeMap::new());
            };
            let _no_grad = tch::no_grad_guard();
            for (name, mut variable) in self.stepper.vs.variables() {
                if let Some(w) = weights.get(&name) {
                    variable.f_copy_(w).map_err(torch("loading the best epoch's weights"))?;
                }
            }
        }
        let (metrics, _) = self.evaluate_split(test)?;
        Ok(metrics.into_iter().map(|(k, v)| (k.replacen("eval_", "test_", 1), v)).collect())
    }

    /// A CPU copy of every variable, by checkpoint name (for exporting the best epoch).
    fn weights_on_cpu(&self) -> Result<HashMap<String, Tensor>, TrainError> {
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

/// Scales gradients so their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (one `_foreach` pass, no host synchronisation); returns
/// the norm before clipping (a 0-d tensor).
pub fn clip_grad_norm(variables: &[&Tensor], max_norm: f64) -> Result<Tensor, TchError> {
    crate::aten::clip_grad_norm(variables, max_norm)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let cfg =
            TrialConfig { learning_rate: 0.1, weight_decay: 0.5, head_lr_multiplier: 3.0, ..tiny_trial(dir.path()) };
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
        let oom = TrainError::Torch {
            context: "forward pass".into(),
            error: TchError::Torch(
                "CUDA out of memory. Tried to allocate 2.00 GiB\nException raised from malloc at \
                 CUDACachingAllocator.cpp:1\nframe #0: c10::Error::Error() + 0x1"
                    .into(),
            ),
        };
        assert!(oom.is_infeasible());
        assert_eq!(
            oom.to_string(),
            "forward pass: Internal torch error: CUDA out of memory. Tried to allocate 2.00 GiB"
        );
        assert!(std::error::Error::source(&oom).is_none(), "no cause that would print the backtrace");
        let other = TrainError::Torch { context: "x".into(), error: TchError::Torch("device-side assert".into()) };
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
}
