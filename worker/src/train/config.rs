//! A trial's settings ([`TrialConfig`]: the task and the hyperparameters) and how it ended
//! ([`TrialOutcome`]). Nothing here trains: the training checkpoints
//! ([`crate::training_checkpoint`]) fingerprint a [`TrialConfig`] without depending on the
//! training loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bertsweep_evaluation::Predictions;

use crate::data::{DataSpec, FoldSpec};

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
    /// [`TrainObserver::wants_test_scores`](crate::train::TrainObserver::wants_test_scores) says so (`test_…` metrics in the outcome). Never
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
    /// Metric that picks the best epoch (one of [`OBJECTIVE_METRICS`](crate::train::OBJECTIVE_METRICS)).
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
    /// The observer answered [`EpochDecision::Stop`](crate::train::EpochDecision::Stop).
    pub stopped_early: bool,
    /// [`TrainObserver::should_abort`](crate::train::TrainObserver::should_abort) said so; nothing was exported.
    pub aborted: bool,
    /// The exported directory, if an export directory was given and an epoch completed.
    pub artifact: Option<PathBuf>,
}
