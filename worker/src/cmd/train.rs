//! `bertsweep-worker train`: one fine-tuning run from the command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bertsweep_worker::device::{parse_devices, set_cpu_threads};
use bertsweep_worker::{run_trial, EpochDecision, TrainObserver, TrialConfig};

/// Flags of `train`; defaults are transformers' Trainer defaults.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Hugging Face BERT directory (config.json, model.safetensors, tokenizer).
    #[arg(long)]
    model: PathBuf,
    /// Training data: .tsv (header row), .csv or .jsonl.
    #[arg(long)]
    train_file: PathBuf,
    /// Validation data, evaluated after every epoch.
    #[arg(long)]
    validation_file: PathBuf,
    /// Held-out test data: the best epoch's model is scored on it once, after training
    /// (`test_…` metrics), and never used to choose anything.
    #[arg(long)]
    test_file: Option<PathBuf>,
    /// Column holding the text.
    #[arg(long, default_value = bertsweep_proto::contract::DEFAULT_TEXT_COLUMN)]
    text_column: String,
    /// Column holding each example's second text, for sentence-pair tasks (MRPC, RTE, QNLI,
    /// MNLI, QQP): both texts are encoded as one BERT pair. Default: single sentences.
    #[arg(long)]
    text_pair_column: Option<String>,
    /// Column holding the label (integer or string).
    #[arg(long, default_value = bertsweep_proto::contract::DEFAULT_LABEL_COLUMN)]
    label_column: String,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = bertsweep_proto::contract::DEFAULT_MAX_SEQ_LENGTH as usize)]
    max_seq_length: usize,
    /// Train on the first N rows only.
    #[arg(long)]
    max_train_samples: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    learning_rate: f64,
    /// Passes over the training data.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Fraction of steps spent warming up the learning rate.
    #[arg(long, default_value_t = 0.0)]
    warmup_ratio: f64,
    /// Decoupled weight decay (not on biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Seeds initialisation, dropout and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The classifier's learning rate is learning-rate × this.
    #[arg(long, default_value_t = 1.0)]
    head_lr_multiplier: f64,
    /// Freeze the embeddings and the first N encoder layers.
    #[arg(long, default_value_t = 0)]
    freeze_layers: usize,
    /// Batch examples of similar length together, as transformers' `group_by_length`.
    #[arg(long)]
    group_by_length: bool,
    /// `balanced`: weight each class's loss by n / (classes × its training count), as
    /// scikit-learn's compute_class_weight (for imbalanced labels). Default: none.
    #[arg(long, value_parser = ["balanced", "none"], default_value = "none")]
    class_weights: String,
    /// Metric that picks the best epoch for --output.
    #[arg(long, default_value = "eval_accuracy")]
    objective: String,
    /// Lower objective values are better (e.g. for eval_loss).
    #[arg(long)]
    minimize: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads for torch (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Export the best epoch as a Hugging Face directory here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints each epoch's metrics as it completes.
struct EpochPrinter {
    json: bool,
    epochs: usize,
}

impl TrainObserver for EpochPrinter {
    fn on_epoch(&mut self, epoch: usize, metrics: &BTreeMap<String, f64>) -> EpochDecision {
        let line = if self.json {
            serde_json::to_string(metrics).unwrap_or_default()
        } else {
            let fields: Vec<String> = metrics
                .iter()
                .filter(|(name, _)| name.as_str() != "epoch")
                .map(|(name, value)| format!("{name}={value:.4}"))
                .collect();
            format!("epoch {epoch}/{} {}", self.epochs, fields.join(" "))
        };
        // A closed stdout (`| head`) must not stop training; the final line reports it.
        let _ = print_line(&line);
        EpochDecision::Continue
    }

    fn should_abort(&self) -> bool {
        false
    }
}

/// Runs the fine-tuning described by `args`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let devices = parse_devices(&args.device)?;
    let [device] = devices[..] else {
        bail!("--device {}: train runs on one device; name one (cuda:N)", args.device);
    };
    if let Some(pair) = args.text_pair_column.as_deref() {
        if pair == args.text_column || pair == args.label_column {
            bail!("--text-pair-column {pair:?} is also --text-column or --label-column; name the column holding each example's second text");
        }
    }
    set_cpu_threads(args.threads);
    let cfg = TrialConfig {
        model_dir: args.model,
        train_file: args.train_file,
        validation_file: args.validation_file,
        test_file: args.test_file,
        folds: None,
        text_column: args.text_column,
        text_pair_column: args.text_pair_column,
        label_column: args.label_column,
        max_seq_length: args.max_seq_length,
        max_train_samples: args.max_train_samples,
        learning_rate: args.learning_rate,
        num_train_epochs: args.epochs,
        per_device_train_batch_size: args.batch_size,
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        seed: args.seed,
        head_lr_multiplier: args.head_lr_multiplier,
        freeze_layers: args.freeze_layers,
        objective_metric: args.objective,
        maximize: !args.minimize,
        group_by_length: args.group_by_length,
        balanced_class_weights: args.class_weights == "balanced",
    };
    let mut printer = EpochPrinter { json: args.json, epochs: cfg.num_train_epochs };
    let outcome = run_trial(&cfg, device, &mut printer, args.output.as_deref())
        .with_context(|| format!("fine-tuning {}", cfg.model_dir.display()))?;
    let artifact = outcome.artifact.as_ref().map(|p| p.display().to_string());
    let line = if args.json {
        serde_json::json!({
            "best_epoch": outcome.best_epoch,
            "best_metrics": outcome.best_metrics,
            "test_metrics": (!outcome.test_metrics.is_empty()).then_some(&outcome.test_metrics),
            "artifact": artifact,
        })
        .to_string()
    } else {
        let objective = outcome.best_metrics.get(&cfg.objective_metric).copied().unwrap_or(f64::NAN);
        let exported = artifact.map(|dir| format!(" exported to {dir}")).unwrap_or_default();
        let test_name = cfg.objective_metric.replacen("eval_", "test_", 1);
        let tested = match outcome.test_metrics.get(&test_name) {
            Some(test) => format!(" ({test_name}={test:.4} on the held-out test set)"),
            None => String::new(),
        };
        format!("best epoch {}: {}={objective:.4}{tested}{exported}", outcome.best_epoch, cfg.objective_metric)
    };
    print_line(&line).context("writing to stdout")?;
    Ok(())
}

/// Writes one line to stdout and flushes; an error (closed pipe) is returned, never a panic.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
