//! One trial: fine-tune a BERT checkpoint on a classification task, evaluating after every
//! epoch, with transformers' Trainer defaults wherever the trial says nothing.
//!
//! AdamW (β 0.9/0.999, ε 1e-8; weight decay not on biases and LayerNorm weights), linear
//! warm-up then linear decay to 0, gradient-norm clipping at 1.0, dynamic padding. On CUDA
//! matrix products run in bf16 (see [`crate::bert`]); on the CPU in fp32.
//!
//! - [`run_trial`] (here): checks the trial, loads config, tokenizer and data, and runs the
//!   epoch loop with device memory released whatever the outcome.
//! - [`config`]: what a trial is ([`TrialConfig`]) and how it ended ([`TrialOutcome`]).
//! - `observer`: the hooks a caller follows and steers a trial with ([`TrainObserver`]).
//! - `error`: why a trial failed ([`TrainError`]), classified where the error is made.
//! - `step`: one optimizer step ([`StepTrainer`]), public for the parity tests.
//! - `epochs`: the epoch loop — resume, train, evaluate, checkpoint, export.
//! - `evaluate`: dev-set metrics and predictions, test-set scores.

pub mod config;
mod epochs;
mod error;
mod evaluate;
mod observer;
mod step;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use tch::Device;

use crate::config::BertConfig;
use crate::data::ClassificationData;
use crate::tokenizer::BertTokenizer;
use epochs::Trainer;

/// Metric names the objective may use.
pub use bertsweep_proto::contract::OBJECTIVE_METRICS;
pub use config::{TrialConfig, TrialOutcome};
pub use error::TrainError;
pub use evaluate::EVAL_BATCH_SIZE;
pub use observer::{EpochDecision, RunToEnd, TrainObserver};
pub use step::{clip_grad_norm, StepStats, StepTrainer, MAX_GRAD_NORM};

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
        Err(panic) => Err(TrainError::panic("training", panic_message(&panic))),
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
