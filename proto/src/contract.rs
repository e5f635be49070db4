//! The coordinator–worker contract that is not a protobuf message: names and defaults both
//! sides must agree on, kept here once so that they cannot drift apart.
//!
//! The coordinator validates study files against these (`core/src/spec/`); the worker
//! trains with them (`worker/src/train/`). A study that leaves a hyperparameter unset sends
//! nothing for it, so the worker's default *is* the study's value: whenever the coordinator
//! reasons about such a value (early stopping needs the longest run), it must use the same
//! number, and that number lives here.

/// Metrics a study may optimise: Hugging Face-style names that every worker reports after
/// every epoch (the coordinator refuses any other `objective.metric`). `eval_f1`,
/// `eval_precision` and `eval_recall` are macro averages; `eval_mcc` is Matthews correlation;
/// `eval_roc_auc` and `eval_pr_auc` are of class 1 with two classes, one-vs-rest macro
/// otherwise; `eval_ece` is the expected calibration error over 15 bins.
pub const OBJECTIVE_METRICS: &[&str] = &[
    "eval_accuracy",
    "eval_f1",
    "eval_precision",
    "eval_recall",
    "eval_loss",
    "eval_mcc",
    "eval_f1_weighted",
    "eval_roc_auc",
    "eval_pr_auc",
    "eval_log_loss",
    "eval_ece",
];

/// Of [`OBJECTIVE_METRICS`], those where lower is better (a study's default direction).
pub const LOWER_IS_BETTER: &[&str] = &["eval_loss", "eval_log_loss", "eval_ece"];

/// Epochs a trial trains when the study does not set `num_train_epochs` (transformers'
/// Trainer default).
pub const DEFAULT_EPOCHS: u32 = 3;

/// Column holding the text when a study's `[task]` does not name one (GLUE's SST-2 layout).
pub const DEFAULT_TEXT_COLUMN: &str = "sentence";

/// Column holding the label when a study's `[task]` does not name one.
pub const DEFAULT_LABEL_COLUMN: &str = "label";

/// Tokens per example, `[CLS]` and `[SEP]` included, when a study's `[task]` does not say.
pub const DEFAULT_MAX_SEQ_LENGTH: u32 = 128;

/// Study names: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, so a name is always one safe path component
/// (never `.`, `..` or an option such as `-rf`) and short enough to quote whole. The
/// coordinator accepts no other, and a worker checks the name it is sent before building any
/// path from it.
pub fn is_study_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The parameter names a study may search and a worker applies, spelled once: the coordinator
/// validates study files against them (`bertsweep_core::params::KNOWN_PARAMS`) and the worker
/// maps each onto its training configuration.
pub mod params {
    /// Peak learning rate of AdamW (after warmup).
    pub const LEARNING_RATE: &str = "learning_rate";
    /// Passes over the training data.
    pub const NUM_TRAIN_EPOCHS: &str = "num_train_epochs";
    /// Examples per optimizer step.
    pub const BATCH_SIZE: &str = "per_device_train_batch_size";
    /// Fraction of the steps spent warming the learning rate up.
    pub const WARMUP_RATIO: &str = "warmup_ratio";
    /// AdamW's decoupled weight decay.
    pub const WEIGHT_DECAY: &str = "weight_decay";
    /// The trial's random seed (set per trial by `algorithm.repeats`, or searched).
    pub const SEED: &str = "seed";
    /// The classification head's learning rate over the encoder's.
    pub const HEAD_LR_MULTIPLIER: &str = "head_lr_multiplier";
    /// Encoder layers (from the bottom, embeddings included) kept frozen.
    pub const FREEZE_LAYERS: &str = "freeze_layers";
    /// The cross-validation fold a trial trains on (set per trial by `evaluation.folds`).
    pub const FOLD: &str = "fold";
}
