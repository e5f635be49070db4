//! bertsweep-worker: fine-tunes BERT text classifiers on libtorch (through tch) for the
//! bertsweep coordinator, or alone from the command line.
//!
//! # Layout
//! - [`config`]: `config.json` of a Hugging Face BERT directory ([`config::BertConfig`]).
//! - [`tokenizer`]: `tokenizer.json`, or a WordPiece tokenizer built from `vocab.txt`.
//! - [`pretrained`]: pre-trained weights (safetensors, sharded safetensors, pytorch_model.bin)
//!   under the model's variable names, with name and shape checks.
//! - [`bert`]: BertForSequenceClassification with Hugging Face class and variable names.
//! - [`data`]: TSV/CSV/JSONL reading, in-process tokenization cache, batching.
//! - [`metrics`]: classification metrics (re-exported from `bertsweep-evaluation`).
//! - [`optim`]: AdamW with its state in reach (checkpoints carry it).
//! - [`aten`]: ATen operators tch does not wrap (fused AdamW, `_foreach` clipping,
//!   `set_to_none`, pinned asynchronous uploads), through a small C++ shim.
//! - [`training_checkpoint`]: a trial's resumable state after an epoch (checkpoint write,
//!   checks, load), for an exact resume.
//! - [`schedule`]: linear warm-up and decay of the learning rate.
//! - [`phase_clock`]: opt-in per-phase wall time of training steps (`BERTSWEEP_STEP_PROFILE=1`).
//! - [`train`]: one trial ([`train::run_trial`]), per-epoch evaluation, observer hooks.
//! - [`export`]: the best epoch as a Hugging Face directory.
//! - [`device`]: `--device` parsing and per-device settings.
//! - [`device_memory`]: a trial's measured peak device memory; emptying the CUDA cache.
//! - [`hub`]: Hugging Face Hub repo id and revision to a model directory in the Hub's cache.
//! - [`runtime`]: coordinator mode — register, acquire, train, heartbeat, report, complete.
//! - [`slots`]: several trials per device (`--slots`): a supervisor, one process per slot,
//!   memory-aware admission.
//! - [`testing`]: a tiny random BERT and task, for tests here and in other crates.
//!
//! **Invariant:** asking for CUDA where torch sees none is an error, never a silent CPU run.

pub mod aten;
pub mod bert;
pub mod config;
pub mod data;
pub mod device;
pub mod device_memory;
pub mod export;
pub mod hub;
/// The classification metrics (shared with the coordinator through `bertsweep-evaluation`).
pub use bertsweep_evaluation::metrics;
pub mod optim;
pub mod phase_clock;
pub mod pretrained;
pub mod runtime;
pub mod schedule;
pub mod slots;
pub mod testing;
pub mod tokenizer;
pub mod train;
pub mod training_checkpoint;

pub use train::{run_trial, EpochDecision, RunToEnd, TrainError, TrainObserver, TrialConfig, TrialOutcome};
