//! The study file (TOML): parsing, validation, and the validated [`StudySpec`].
//!
//! Parsing is strict: unknown keys, wrong types, empty or inverted ranges, unknown parameters
//! and oversized grids are rejected with one line that names the problem. The same code runs in
//! the CLI (for a `file:line` in the message) and in the coordinator (the authority).

use crate::params::{known_param, known_param_names, KnownParam, ParamKind, ParamValue};
use bertsweep_proto::contract::{
    DEFAULT_EPOCHS, DEFAULT_LABEL_COLUMN, DEFAULT_MAX_SEQ_LENGTH, DEFAULT_TEXT_COLUMN, OBJECTIVE_METRICS,
};

mod raw;
#[cfg(test)]
mod tests;
mod validate;

use raw::{RawStudy, Strictness};

/// The largest grid a study may ask for; a bigger one is almost certainly a mistake.
pub const MAX_GRID_POINTS: u64 = 100_000;

/// Why a study file was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// TOML syntax, unknown keys or wrong types, with the 1-based line when known.
    #[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Syntax {
        /// Where toml's parser stopped, when it says.
        line: Option<usize>,
        /// toml's first line of explanation, bounded.
        message: String,
    },
    /// A semantically invalid value.
    #[error("{0}")]
    Invalid(String),
}

/// A semantic error; bounded, since messages quote values from the file.
fn invalid(message: impl Into<String>) -> SpecError {
    SpecError::Invalid(crate::text::bounded(&message.into()))
}

/// Which search algorithm proposes parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Every point of the grid exactly once, in a stable order.
    Grid,
    /// Independent seeded draws.
    Random,
    /// Tree-structured Parzen Estimator (after random start-up trials).
    Tpe,
}

impl SamplerKind {
    /// Name as written in study files.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Grid => "grid",
            SamplerKind::Random => "random",
            SamplerKind::Tpe => "tpe",
        }
    }
}

/// What to optimise.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// One of [`OBJECTIVE_METRICS`].
    pub metric: String,
    /// `true` for maximize.
    pub maximize: bool,
}

impl Objective {
    /// `true` when `a` is strictly better than `b` under this objective.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximize {
            a > b
        } else {
            a < b
        }
    }
}

/// When to stop trials early, from their per-epoch objective.
#[derive(Debug, Clone, PartialEq)]
pub enum EarlyStopping {
    /// Every trial runs all its epochs.
    None,
    /// Asynchronous successive halving: rungs at `min_epochs × reduction_factor^k`; at each rung
    /// a trial continues only if it is in the top 1/`reduction_factor` of the trials there.
    Asha {
        /// The first rung (epochs).
        min_epochs: u32,
        /// Rung spacing and the fraction kept at each (at least 2).
        reduction_factor: u32,
        /// `mode = "promotion"`: a trial pauses at a rung (its checkpoint kept) until it is among
        /// the top 1/η there, then resumes; `false` (`mode = "stop"`, the default) stops it.
        promotion: bool,
    },
    /// Stop a trial worse than the median of completed trials at the same epoch, once
    /// `warmup_trials` trials have completed and from epoch `min_epochs` on.
    Median {
        /// The first epoch a trial can be stopped at.
        min_epochs: u32,
        /// Completed trials needed before any trial is stopped.
        warmup_trials: u32,
    },
}

impl EarlyStopping {
    /// Name as written in study files.
    pub fn as_str(&self) -> &'static str {
        match self {
            EarlyStopping::None => "none",
            EarlyStopping::Asha { .. } => "asha",
            EarlyStopping::Median { .. } => "median",
        }
    }
}

/// Limits on how many trials run and fail.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Trials to create in total (for grid: at most the grid size).
    pub max_trials: u32,
    /// Trials leased at the same time, across all workers.
    pub parallel_trials: u32,
    /// FAILED trials after which the study fails.
    pub max_failed_trials: u32,
    /// Leases a trial may lose (expired or retryable failures) before it counts as FAILED.
    pub max_attempts: u32,
    /// Models kept on the coordinator: those of the best K completed trials by objective
    /// (0 keeps none). Workers upload only while a trial is among them; a trial pushed out
    /// loses its artifact and its blobs are deleted.
    pub keep_artifacts: u32,
    /// Workers write a resumable checkpoint after each epoch, and a requeued trial continues
    /// from the last one (default true; only workers with a shared artifact store write them).
    pub checkpoints: bool,
}

/// Where and how workers train; paths are resolved on the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// A BERT directory: `blob:sha256:…` once uploaded, `worker:/path`, `hf:org/name[@rev]`.
    pub model: String,
    /// Training data, in the same forms as `model` (except `hf:`).
    pub train_file: String,
    /// Validation data, evaluated after every epoch; empty under `[evaluation] folds`, where
    /// each trial validates on one fold of the training file instead.
    pub validation_file: String,
    /// Held-out test data (same forms as `train_file`): the kept models are scored on it once,
    /// after training; the search never sees those scores. `None` = no test set.
    pub test_file: Option<String>,
    /// Column holding the text.
    pub text_column: String,
    /// Column holding each example's second text (sentence pairs: MRPC, RTE, QNLI, MNLI,
    /// QQP); `None` = single sentences.
    pub text_pair_column: Option<String>,
    /// Column holding the label (integer or string).
    pub label_column: String,
    /// Examples are truncated to this many tokens (8–512).
    pub max_seq_length: u32,
    /// Only the first N training rows (None = all); handy for smoke tests.
    pub max_train_samples: Option<u32>,
    /// `class_weights = "balanced"`: each class's loss weighted by n / (classes × count) over
    /// the training labels (scikit-learn's `compute_class_weight`), for imbalanced data.
    pub balanced_class_weights: bool,
}

/// One input a worker fetches for every trial of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInput<'a> {
    /// Its key under `[task]` (`model`, `train_file`, …).
    pub key: &'static str,
    /// The reference as the study file gives it (a path, `blob:`, `worker:`, `hf:`).
    pub reference: &'a str,
    /// Whether it is a directory (the model) rather than one file.
    pub is_dir: bool,
}

impl Task {
    /// The study's inputs: the model, the training and validation files, and the test file
    /// when there is one; the one list uploads, input checks and blob roots go by.
    pub fn inputs(&self) -> Vec<TaskInput<'_>> {
        let mut inputs = vec![
            TaskInput { key: "model", reference: &self.model, is_dir: true },
            TaskInput { key: "train_file", reference: &self.train_file, is_dir: false },
        ];
        if !self.validation_file.is_empty() {
            inputs.push(TaskInput { key: "validation_file", reference: &self.validation_file, is_dir: false });
        }
        inputs.extend(self.test_file.as_deref().map(|t| TaskInput { key: "test_file", reference: t, is_dir: false }));
        inputs
    }
}

/// The values one parameter may take.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// Always this value.
    Fixed(ParamValue),
    /// One of these values (order kept for the grid).
    Categorical(Vec<ParamValue>),
    /// A numeric range.
    Range(RangeDomain),
}

/// A numeric range with its optional discretisation.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeDomain {
    /// The parameter's kind: integer ranges are discrete without `step`.
    pub kind: ParamKind,
    /// Sample (and space grid points) uniformly in log space (`distribution = "log_uniform"`).
    pub log: bool,
    /// Smallest value (inclusive).
    pub min: f64,
    /// Largest value (inclusive).
    pub max: f64,
    /// Lattice spacing (linear ranges only).
    pub step: Option<f64>,
    /// Number of evenly spaced (log-spaced for log ranges) grid points.
    pub grid_points: Option<u32>,
}

impl RangeDomain {
    /// The discrete points of this range, or None when it is continuous and undiscretised.
    pub fn grid(&self) -> Option<Vec<ParamValue>> {
        let value = |x: f64| match self.kind {
            ParamKind::Int => ParamValue::Int(x.round() as i64),
            ParamKind::Float => ParamValue::Float(round_sig(x)),
        };
        if let Some(step) = self.step {
            let count = step_count(self.min, self.max, step);
            return Some((0..count).map(|i| value(self.min + step * i as f64)).collect());
        }
        if let Some(n) = self.grid_points {
            let n = n as usize;
            if n == 1 {
                return Some(vec![value(self.min)]);
            }
            let mut out: Vec<ParamValue> = (0..n)
                .map(|i| {
                    let t = i as f64 / (n - 1) as f64;
                    if self.log {
                        value((self.min.ln() + t * (self.max.ln() - self.min.ln())).exp())
                    } else {
                        value(self.min + t * (self.max - self.min))
                    }
                })
                .collect();
            out.dedup();
            return Some(out);
        }
        if self.kind == ParamKind::Int {
            return Some((self.min as i64..=self.max as i64).map(ParamValue::Int).collect());
        }
        None
    }

    /// Number of grid points without materialising them (for the size check).
    fn grid_len(&self) -> Option<u64> {
        if let Some(step) = self.step {
            return Some(step_count(self.min, self.max, step));
        }
        if let Some(n) = self.grid_points {
            return Some(n as u64);
        }
        if self.kind == ParamKind::Int {
            return Some((self.max - self.min) as u64 + 1);
        }
        None
    }
}

/// Lattice points `min, min + step, …` up to `max`, saturating at `u64::MAX` (a step of 1e-300
/// must read as "too many points", never wrap around to zero).
fn step_count(min: f64, max: f64, step: f64) -> u64 {
    let count = ((max - min) / step + 1e-9).floor() + 1.0;
    if count.is_finite() && count < u64::MAX as f64 {
        count as u64
    } else {
        u64::MAX
    }
}

/// Rounds to 12 significant digits so log-spaced points print as users expect (2.236e-5, not
/// 2.2360679774997898e-5 noise from ln/exp).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let text = format!("{x:.11e}");
    text.parse().unwrap_or(x)
}

/// One searched (or fixed) parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// One of the known parameters (`params::KNOWN_PARAMS`).
    pub name: String,
    /// The values it may take.
    pub domain: Domain,
}

/// A validated study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySpec {
    /// Unique name, `[A-Za-z0-9._-]`, at most 64 characters.
    pub name: String,
    /// What the study optimises.
    pub objective: Objective,
    /// How it proposes parameters.
    pub sampler: SamplerKind,
    /// Seed of the sampler's random streams.
    pub seed: u64,
    /// Each sampled configuration runs as this many trials with seeds 0..repeats.
    pub repeats: u32,
    /// `[evaluation] folds`: K-fold cross-validation on the training file (K = 2–20); each
    /// configuration (and seed) runs as K trials, trial `fold = k` validating on fold k.
    /// 1 = a fixed validation file.
    pub folds: u32,
    /// TPE: configurations drawn at random before the model takes over.
    pub startup_trials: u32,
    /// Which rule stops trials after an epoch (none by default).
    pub early_stopping: EarlyStopping,
    /// How many trials run, at once and in all, and how many may fail.
    pub budget: Budget,
    /// Model and data, handed to every worker with each trial.
    pub task: Task,
    /// Parameters in file order (the grid's first parameter varies slowest).
    pub parameters: Vec<ParamSpec>,
}

impl StudySpec {
    /// Trials per sampled configuration: one per seed repeat and fold (`repeats × folds`).
    pub fn trials_per_configuration(&self) -> u32 {
        self.repeats.max(1) * self.folds.max(1)
    }

    /// Every grid point in order, when each parameter is discrete.
    pub fn grid_axes(&self) -> Option<Vec<(String, Vec<ParamValue>)>> {
        self.parameters
            .iter()
            .map(|p| {
                let values = match &p.domain {
                    Domain::Fixed(v) => Some(vec![v.clone()]),
                    Domain::Categorical(vs) => Some(vs.clone()),
                    Domain::Range(r) => r.grid(),
                }?;
                Some((p.name.clone(), values))
            })
            .collect()
    }

    /// Product of the axis sizes (0 when some parameter is not discrete).
    pub fn grid_size(&self) -> u64 {
        let mut size: u64 = 1;
        for p in &self.parameters {
            let n = match &p.domain {
                Domain::Fixed(_) => 1,
                Domain::Categorical(vs) => vs.len() as u64,
                Domain::Range(r) => match r.grid_len() {
                    Some(n) => n,
                    None => return 0,
                },
            };
            size = size.saturating_mul(n);
        }
        size
    }
}

// ---- raw TOML shape ------------------------------------------------------------------------

/// Models kept on the coordinator when the study does not set budget.keep_artifacts.
pub const DEFAULT_KEEP_ARTIFACTS: u32 = 3;

/// Parses and validates a study file.
pub fn parse_study(text: &str) -> Result<StudySpec, SpecError> {
    parse(text, Strictness::New)
}

/// Parses a study file the coordinator accepted earlier (see [`Strictness::Stored`]).
pub fn parse_stored_study(text: &str) -> Result<StudySpec, SpecError> {
    parse(text, Strictness::Stored)
}

fn parse(text: &str, strictness: Strictness) -> Result<StudySpec, SpecError> {
    let raw: RawStudy = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        // toml's message can span lines; keep the first, it is the one that says what is wrong.
        // It may quote the input (an unknown key), so it is bounded like every other message.
        let message = crate::text::bounded(e.message().lines().next().unwrap_or("invalid TOML").trim());
        SpecError::Syntax { line, message }
    })?;
    validate::validate(raw, strictness)
}

/// Study files shared by unit tests across modules.
#[cfg(test)]
pub(crate) mod test_support {
    /// A 2×2 grid over the README's example task.
    pub const SMALL_GRID: &str = r#"
name = "small"
[objective]
metric = "eval_accuracy"
[algorithm]
sampler = "grid"
[budget]
parallel_trials = 2
[task]
model = "m"
train_file = "t.tsv"
validation_file = "v.tsv"
[parameters.learning_rate]
values = [3e-5, 5e-5]
[parameters.per_device_train_batch_size]
values = [16, 32]
"#;
}
