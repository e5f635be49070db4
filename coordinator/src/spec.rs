//! The study file (TOML): parsing, validation, and the validated [`StudySpec`].
//!
//! Parsing is strict: unknown keys, wrong types, empty or inverted ranges, unknown parameters
//! and oversized grids are rejected with one line that names the problem. The same code runs in
//! the CLI (for a `file:line` in the message) and in the coordinator (the authority).

use bertsweep_proto::contract::{
    DEFAULT_EPOCHS, DEFAULT_LABEL_COLUMN, DEFAULT_MAX_SEQ_LENGTH, DEFAULT_TEXT_COLUMN, OBJECTIVE_METRICS,
};
use indexmap::IndexMap;
use serde::Deserialize;

use crate::params::{known_param, known_param_names, KnownParam, ParamKind, ParamValue};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudy {
    name: String,
    objective: RawObjective,
    #[serde(default)]
    algorithm: RawAlgorithm,
    #[serde(default)]
    early_stopping: Option<RawEarlyStopping>,
    #[serde(default)]
    budget: RawBudget,
    #[serde(default)]
    evaluation: RawEvaluation,
    task: RawTask,
    parameters: IndexMap<String, RawParam>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvaluation {
    folds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjective {
    metric: String,
    direction: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlgorithm {
    sampler: Option<String>,
    seed: Option<i64>,
    repeats: Option<i64>,
    startup_trials: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEarlyStopping {
    #[serde(rename = "type")]
    kind: String,
    min_epochs: Option<i64>,
    reduction_factor: Option<i64>,
    warmup_trials: Option<i64>,
    mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    max_trials: Option<i64>,
    parallel_trials: Option<i64>,
    max_failed_trials: Option<i64>,
    max_attempts: Option<i64>,
    keep_artifacts: Option<i64>,
    checkpoints: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    model: String,
    train_file: String,
    validation_file: Option<String>,
    test_file: Option<String>,
    text_column: Option<String>,
    text_pair_column: Option<String>,
    label_column: Option<String>,
    max_seq_length: Option<i64>,
    max_train_samples: Option<i64>,
    class_weights: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    value: Option<toml::Value>,
    values: Option<Vec<toml::Value>>,
    distribution: Option<String>,
    min: Option<toml::Value>,
    max: Option<toml::Value>,
    step: Option<toml::Value>,
    grid_points: Option<i64>,
}

/// How strictly a study file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// `study create`: every rule.
    New,
    /// A study already in the database: rules added after it was accepted (safe names,
    /// `max_trials` within the grid) are not applied again, so an upgrade never locks a
    /// coordinator out of its own database.
    Stored,
}

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
    validate(raw, strictness)
}

fn validate(raw: RawStudy, strictness: Strictness) -> Result<StudySpec, SpecError> {
    let name = raw.name.trim().to_string();
    let name_ok = match strictness {
        Strictness::New => crate::text::is_study_name(&name),
        Strictness::Stored => !name.is_empty(),
    };
    if !name_ok {
        return Err(invalid(format!(
            "name {}: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
            crate::text::quote(&raw.name)
        )));
    }

    let metric = raw.objective.metric;
    if !OBJECTIVE_METRICS.contains(&metric.as_str()) {
        return Err(invalid(format!(
            "objective.metric {metric:?} is not a metric workers report; use one of {}",
            OBJECTIVE_METRICS.join(", ")
        )));
    }
    let maximize = match raw.objective.direction.as_deref() {
        None => !bertsweep_proto::contract::LOWER_IS_BETTER.contains(&metric.as_str()),
        Some("maximize") => true,
        Some("minimize") => false,
        Some(other) => {
            return Err(invalid(format!(
                "objective.direction {other:?} is not valid; use \"maximize\" or \"minimize\""
            )))
        }
    };

    let sampler = match raw.algorithm.sampler.as_deref().unwrap_or("grid") {
        "grid" => SamplerKind::Grid,
        "random" => SamplerKind::Random,
        "tpe" => SamplerKind::Tpe,
        other => {
            return Err(invalid(format!(
                "algorithm.sampler {other:?} is not a known sampler; use \"grid\", \"random\" or \"tpe\""
            )))
        }
    };
    let seed = match raw.algorithm.seed {
        None => 0,
        Some(s) if s >= 0 => s as u64,
        Some(s) => return Err(invalid(format!("algorithm.seed must be >= 0 (got {s})"))),
    };
    let repeats = match raw.algorithm.repeats {
        None => 1,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => return Err(invalid(format!("algorithm.repeats must be between 1 and 1000 (got {n})"))),
    };
    if raw.algorithm.startup_trials.is_some() && sampler != SamplerKind::Tpe {
        return Err(invalid("algorithm.startup_trials only applies to sampler = \"tpe\""));
    }
    let early_stopping = validate_early_stopping(raw.early_stopping)?;

    let folds = match raw.evaluation.folds {
        None => 1,
        Some(k) if (2..=20).contains(&k) => k as u32,
        Some(k) => {
            return Err(invalid(format!(
                "evaluation.folds must be between 2 and 20 (got {k}); leave it out to validate on task.validation_file"
            )))
        }
    };
    let task = validate_task(raw.task, folds)?;
    if raw.parameters.contains_key("fold") {
        return Err(invalid(
            "parameters.fold is not a hyperparameter; cross-validation folds are set by [evaluation] folds = K",
        ));
    }
    if folds > 1 && matches!(early_stopping, EarlyStopping::Asha { promotion: true, .. }) {
        return Err(invalid(
            "early_stopping.mode = \"promotion\" cannot be combined with evaluation.folds yet; use mode = \"stop\" or drop the folds",
        ));
    }

    if repeats > 1 && raw.parameters.contains_key("seed") {
        return Err(invalid(
            "parameters.seed cannot be searched together with algorithm.repeats (repeats set the seed); remove one",
        ));
    }
    if raw.parameters.is_empty() {
        return Err(invalid("[parameters] is empty; declare at least one parameter such as learning_rate"));
    }
    let mut parameters = Vec::with_capacity(raw.parameters.len());
    for (pname, rp) in raw.parameters {
        parameters.push(validate_param(&pname, rp)?);
    }

    let mut spec = StudySpec {
        name,
        objective: Objective { metric, maximize },
        sampler,
        seed,
        repeats,
        folds,
        startup_trials: 0,
        early_stopping,
        budget: Budget {
            max_trials: 0,
            parallel_trials: 0,
            max_failed_trials: 0,
            max_attempts: 0,
            keep_artifacts: 0,
            checkpoints: true,
        },
        task,
        parameters,
    };

    let grid_size = spec.grid_size();
    if sampler == SamplerKind::Grid {
        if let Some(p) =
            spec.parameters.iter().find(|p| matches!(&p.domain, Domain::Range(r) if r.grid_len().is_none()))
        {
            return Err(invalid(format!(
                "parameters.{}: a continuous range needs grid_points or step for the grid sampler",
                p.name
            )));
        }
        if grid_size > MAX_GRID_POINTS {
            let size = if grid_size == u64::MAX { "more than 2^64".to_string() } else { grid_size.to_string() };
            return Err(invalid(format!(
                "the grid has {size} points, more than the limit of {MAX_GRID_POINTS}; use fewer grid_points/values, a larger step, or sampler = \"random\""
            )));
        }
        if grid_size == 0 {
            return Err(invalid("the grid has no points, so the study could never run a trial; check the parameters"));
        }
    }
    let per_configuration = spec.trials_per_configuration();
    spec.budget = validate_budget(raw.budget, sampler, grid_size.saturating_mul(per_configuration as u64), strictness)?;
    if !spec.budget.max_trials.is_multiple_of(per_configuration) {
        let what = match (repeats > 1, folds > 1) {
            (true, true) => format!("algorithm.repeats × evaluation.folds ({repeats} × {folds})"),
            (false, true) => format!("evaluation.folds ({folds})"),
            _ => format!("algorithm.repeats ({repeats})"),
        };
        return Err(invalid(format!(
            "budget.max_trials ({}) must be a multiple of {what} so every configuration runs with every seed and fold",
            spec.budget.max_trials
        )));
    }
    let configurations = spec.budget.max_trials / per_configuration;
    spec.startup_trials = match raw.algorithm.startup_trials {
        None => (configurations / 10).max(5).min(configurations),
        Some(n) if n >= 1 && n <= u32::MAX as i64 => n as u32,
        Some(n) => return Err(invalid(format!("algorithm.startup_trials must be at least 1 (got {n})"))),
    };
    check_early_stopping_has_epochs(&spec)?;
    if matches!(spec.early_stopping, EarlyStopping::Asha { promotion: true, .. }) && !spec.budget.checkpoints {
        return Err(invalid(
            "early_stopping.mode = \"promotion\" resumes paused trials from their checkpoints; remove budget.checkpoints = false or use mode = \"stop\"",
        ));
    }
    Ok(spec)
}

fn positive(field: &str, v: Option<i64>, default: Option<u32>) -> Result<u32, SpecError> {
    match v {
        None => default.ok_or_else(|| invalid(format!("{field} is required"))),
        Some(v) if v >= 1 && v <= u32::MAX as i64 => Ok(v as u32),
        Some(v) => Err(invalid(format!("{field} must be at least 1 (got {v})"))),
    }
}

fn validate_budget(
    raw: RawBudget,
    sampler: SamplerKind,
    grid_size: u64,
    strictness: Strictness,
) -> Result<Budget, SpecError> {
    let max_trials = match sampler {
        SamplerKind::Grid => {
            let whole = grid_size.min(u32::MAX as u64) as u32;
            let asked = positive("budget.max_trials", raw.max_trials, Some(whole))?;
            if asked > whole && strictness == Strictness::New {
                return Err(invalid(format!(
                    "budget.max_trials = {asked} is more than the grid's {whole} trials (grid points × repeats × folds); use at most {whole}, or leave it out to run the whole grid"
                )));
            }
            asked.min(whole)
        }
        SamplerKind::Random | SamplerKind::Tpe => {
            positive("budget.max_trials", raw.max_trials, None).map_err(|e| match raw.max_trials {
                None => invalid(format!("budget.max_trials is required for sampler \"{}\"", sampler.as_str())),
                Some(_) => e,
            })?
        }
    };
    let parallel_trials = positive("budget.parallel_trials", raw.parallel_trials, Some(1))?;
    let max_attempts = positive("budget.max_attempts", raw.max_attempts, Some(3))?;
    let max_failed_trials = positive("budget.max_failed_trials", raw.max_failed_trials, Some(max_trials))?;
    let keep_artifacts = match raw.keep_artifacts {
        None => DEFAULT_KEEP_ARTIFACTS,
        Some(n) if (0..=1000).contains(&n) => n as u32,
        Some(n) => return Err(invalid(format!("budget.keep_artifacts must be between 0 and 1000 (got {n})"))),
    };
    let checkpoints = raw.checkpoints.unwrap_or(true);
    Ok(Budget { max_trials, parallel_trials, max_failed_trials, max_attempts, keep_artifacts, checkpoints })
}

fn validate_early_stopping(raw: Option<RawEarlyStopping>) -> Result<EarlyStopping, SpecError> {
    let Some(raw) = raw else { return Ok(EarlyStopping::None) };
    let min_epochs = match raw.min_epochs {
        None => 1,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => return Err(invalid(format!("early_stopping.min_epochs must be at least 1 (got {n})"))),
    };
    let only = |field: &str, kind: &str| invalid(format!("early_stopping.{field} only applies to type = \"{kind}\""));
    match raw.kind.as_str() {
        "none" => {
            if raw.min_epochs.is_some()
                || raw.reduction_factor.is_some()
                || raw.warmup_trials.is_some()
                || raw.mode.is_some()
            {
                return Err(invalid("early_stopping type \"none\" takes no other settings"));
            }
            Ok(EarlyStopping::None)
        }
        "asha" => {
            if raw.warmup_trials.is_some() {
                return Err(only("warmup_trials", "median"));
            }
            let reduction_factor = match raw.reduction_factor {
                None => 3,
                Some(n) if (2..=100).contains(&n) => n as u32,
                Some(n) => {
                    return Err(invalid(format!("early_stopping.reduction_factor must be at least 2 (got {n})")))
                }
            };
            let promotion = match raw.mode.as_deref() {
                None | Some("stop") => false,
                Some("promotion") => true,
                Some(other) => {
                    return Err(invalid(format!(
                        "early_stopping.mode {other:?} is not known; use \"stop\" (the default) or \"promotion\""
                    )))
                }
            };
            Ok(EarlyStopping::Asha { min_epochs, reduction_factor, promotion })
        }
        "median" => {
            if raw.reduction_factor.is_some() {
                return Err(only("reduction_factor", "asha"));
            }
            if raw.mode.is_some() {
                return Err(only("mode", "asha"));
            }
            let warmup_trials = match raw.warmup_trials {
                None => 5,
                Some(n) if (0..=100_000).contains(&n) => n as u32,
                Some(n) => return Err(invalid(format!("early_stopping.warmup_trials must be >= 0 (got {n})"))),
            };
            Ok(EarlyStopping::Median { min_epochs, warmup_trials })
        }
        other => {
            Err(invalid(format!("early_stopping.type {other:?} is not known; use \"none\", \"asha\" or \"median\"")))
        }
    }
}

/// Early stopping acts on the objective reported after every epoch; it needs trials that run
/// past the first decision point.
fn check_early_stopping_has_epochs(spec: &StudySpec) -> Result<(), SpecError> {
    let min_epochs = match spec.early_stopping {
        EarlyStopping::None => return Ok(()),
        EarlyStopping::Asha { min_epochs, .. } | EarlyStopping::Median { min_epochs, .. } => min_epochs,
    };
    let longest = spec
        .parameters
        .iter()
        .find(|p| p.name == "num_train_epochs")
        .map(|p| match &p.domain {
            Domain::Fixed(v) => v.as_f64().unwrap_or(0.0),
            Domain::Categorical(vs) => vs.iter().filter_map(ParamValue::as_f64).fold(0.0, f64::max),
            Domain::Range(r) => r.max,
        })
        .unwrap_or(DEFAULT_EPOCHS as f64) as u32;
    if longest <= min_epochs {
        return Err(invalid(format!(
            "early_stopping needs a per-epoch objective to act on, but no trial runs more than {longest} epochs (min_epochs = {min_epochs}); lower min_epochs or search longer num_train_epochs"
        )));
    }
    Ok(())
}

/// Models kept on the coordinator when the study does not set budget.keep_artifacts.
pub const DEFAULT_KEEP_ARTIFACTS: u32 = 3;

fn validate_task(raw: RawTask, folds: u32) -> Result<Task, SpecError> {
    match (&raw.validation_file, folds > 1) {
        (None, false) => {
            return Err(invalid(
                "task.validation_file is missing; name the dev set, or set [evaluation] folds = K to cross-validate on task.train_file",
            ))
        }
        (Some(_), true) => {
            return Err(invalid(
                "task.validation_file cannot be used with evaluation.folds: each trial validates on one fold of task.train_file; remove one of them",
            ))
        }
        _ => {}
    }
    let inputs = [
        ("task.model", Some(&raw.model)),
        ("task.train_file", Some(&raw.train_file)),
        ("task.validation_file", raw.validation_file.as_ref()),
        ("task.test_file", raw.test_file.as_ref()),
    ];
    for (field, value) in inputs.into_iter().filter_map(|(f, v)| Some((f, v?))) {
        if value.trim().is_empty() {
            return Err(invalid(format!("{field} is empty; give a path the workers can read")));
        }
        match bertsweep_transfer::InputRef::parse(value) {
            Err(e) => return Err(invalid(format!("{field}: {e}"))),
            Ok(bertsweep_transfer::InputRef::Hub { .. }) if field != "task.model" => {
                return Err(invalid(format!(
                    "{field}: hf: names a Hub model, not a data file; upload the file (a path) or name it worker:/path"
                )))
            }
            Ok(_) => {}
        }
    }
    let max_seq_length = match raw.max_seq_length {
        None => DEFAULT_MAX_SEQ_LENGTH,
        Some(n) if (8..=512).contains(&n) => n as u32,
        Some(n) => return Err(invalid(format!("task.max_seq_length must be between 8 and 512 (got {n})"))),
    };
    let max_train_samples = match raw.max_train_samples {
        None => None,
        Some(n) if n >= 1 && n <= u32::MAX as i64 => Some(n as u32),
        Some(n) => return Err(invalid(format!("task.max_train_samples must be at least 1 (got {n})"))),
    };
    let balanced_class_weights = match raw.class_weights.as_deref() {
        None | Some("none") => false,
        Some("balanced") => true,
        Some(other) => {
            return Err(invalid(format!(
                "task.class_weights {other:?} is not valid; use \"balanced\" (inverse class frequency) or leave it out"
            )))
        }
    };
    let column = |field: &str, v: Option<String>, default: &str| -> Result<String, SpecError> {
        let v = v.unwrap_or_else(|| default.to_string());
        if v.trim().is_empty() {
            Err(invalid(format!("{field} is empty")))
        } else {
            Ok(v)
        }
    };
    let text_column = column("task.text_column", raw.text_column, DEFAULT_TEXT_COLUMN)?;
    let label_column = column("task.label_column", raw.label_column, DEFAULT_LABEL_COLUMN)?;
    let text_pair_column = match raw.text_pair_column {
        None => None,
        Some(pair) => {
            let pair = column("task.text_pair_column", Some(pair), "")?;
            for (field, other) in [("task.text_column", &text_column), ("task.label_column", &label_column)] {
                if &pair == other {
                    return Err(invalid(format!(
                        "task.text_pair_column {pair:?} is also {field}; name the column holding each example's second text"
                    )));
                }
            }
            Some(pair)
        }
    };
    Ok(Task {
        model: raw.model,
        train_file: raw.train_file,
        validation_file: raw.validation_file.unwrap_or_default(),
        test_file: raw.test_file,
        text_column,
        text_pair_column,
        label_column,
        max_seq_length,
        max_train_samples,
        balanced_class_weights,
    })
}

/// Converts a TOML scalar to the parameter's kind, checking its allowed range.
fn scalar(known: &KnownParam, field: &str, v: &toml::Value) -> Result<ParamValue, SpecError> {
    let name = known.name;
    let value = match (known.kind, v) {
        (ParamKind::Int, toml::Value::Integer(i)) => ParamValue::Int(*i),
        (ParamKind::Int, toml::Value::Float(f)) if f.fract() == 0.0 && f.is_finite() => ParamValue::Int(*f as i64),
        (ParamKind::Float, toml::Value::Float(f)) if f.is_finite() => ParamValue::Float(*f),
        (ParamKind::Float, toml::Value::Integer(i)) => ParamValue::Float(*i as f64),
        (ParamKind::Int, other) => {
            return Err(invalid(format!("parameters.{name}.{field}: expected an integer, got {}", describe(other))))
        }
        (ParamKind::Float, other) => {
            return Err(invalid(format!("parameters.{name}.{field}: expected a number, got {}", describe(other))))
        }
    };
    let x = value.as_f64().unwrap_or(f64::NAN);
    let too_small = if known.min_exclusive { x <= known.min } else { x < known.min };
    if too_small || x > known.max {
        let lower = if known.min_exclusive { format!("> {}", known.min) } else { format!(">= {}", known.min) };
        return Err(invalid(format!(
            "parameters.{name}.{field}: {x} is out of range; {name} must be {lower} and <= {}",
            known.max
        )));
    }
    Ok(value)
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the datetime {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn validate_param(name: &str, raw: RawParam) -> Result<ParamSpec, SpecError> {
    let known = known_param(name).ok_or_else(|| {
        invalid(format!(
            "parameters.{}: unknown parameter; known parameters are {}",
            crate::text::shown(name),
            known_param_names()
        ))
    })?;
    let forms = [raw.value.is_some(), raw.values.is_some(), raw.distribution.is_some()].iter().filter(|b| **b).count();
    if forms != 1 {
        return Err(invalid(format!(
            "parameters.{name}: give exactly one of `value = x`, `values = [..]` or `distribution = \"uniform\"|\"log_uniform\"|\"int_uniform\"` with min/max"
        )));
    }
    let range_keys = raw.min.is_some() || raw.max.is_some() || raw.step.is_some() || raw.grid_points.is_some();
    if let Some(v) = raw.value {
        if range_keys {
            return Err(invalid(format!("parameters.{name}: min/max/step/grid_points only go with `distribution`")));
        }
        return Ok(ParamSpec { name: name.into(), domain: Domain::Fixed(scalar(known, "value", &v)?) });
    }
    if let Some(vs) = raw.values {
        if range_keys {
            return Err(invalid(format!("parameters.{name}: min/max/step/grid_points only go with `distribution`")));
        }
        if vs.is_empty() {
            return Err(invalid(format!("parameters.{name}.values is empty; list at least one value")));
        }
        let mut out: Vec<ParamValue> = Vec::with_capacity(vs.len());
        for v in &vs {
            let pv = scalar(known, "values", v)?;
            if out.iter().any(|o| o.key() == pv.key()) {
                return Err(invalid(format!("parameters.{name}.values lists {pv} twice")));
            }
            out.push(pv);
        }
        return Ok(ParamSpec { name: name.into(), domain: Domain::Categorical(out) });
    }
    let distribution = raw.distribution.unwrap_or_default();
    let (kind, log) = match distribution.as_str() {
        "uniform" => (known.kind, false),
        "log_uniform" => (known.kind, true),
        "int_uniform" => (ParamKind::Int, false),
        other => {
            return Err(invalid(format!(
                "parameters.{name}.distribution {other:?} is not known; use \"uniform\", \"log_uniform\" or \"int_uniform\""
            )))
        }
    };
    if kind == ParamKind::Int && known.kind == ParamKind::Float && distribution == "int_uniform" {
        return Err(invalid(format!(
            "parameters.{name}: {name} is a real-valued parameter; use \"uniform\" or \"log_uniform\""
        )));
    }
    let min =
        raw.min.as_ref().ok_or_else(|| invalid(format!("parameters.{name}: min is required with distribution")))?;
    let max =
        raw.max.as_ref().ok_or_else(|| invalid(format!("parameters.{name}: max is required with distribution")))?;
    let min = scalar(known, "min", min)?.as_f64().unwrap_or_default();
    let max = scalar(known, "max", max)?.as_f64().unwrap_or_default();
    if min >= max {
        return Err(invalid(format!(
            "parameters.{name}: the range is empty or inverted (min {min} >= max {max}); use min < max or `value = {min}`"
        )));
    }
    if log && min <= 0.0 {
        return Err(invalid(format!("parameters.{name}: log_uniform needs min > 0 (got {min})")));
    }
    let step = match &raw.step {
        None => None,
        Some(v) => {
            if log {
                return Err(invalid(format!("parameters.{name}: step does not apply to log_uniform; use grid_points")));
            }
            let s = match v {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => {
                    return Err(invalid(format!("parameters.{name}.step: expected a number, got {}", describe(other))))
                }
            };
            // Also refuses NaN (for which every comparison is false).
            if s.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !s.is_finite() {
                return Err(invalid(format!("parameters.{name}.step must be > 0 (got {s})")));
            }
            if kind == ParamKind::Int && s.fract() != 0.0 {
                return Err(invalid(format!("parameters.{name}.step must be a whole number for an integer parameter")));
            }
            Some(s)
        }
    };
    let grid_points = match raw.grid_points {
        None => None,
        Some(n) if n >= 2 && n <= MAX_GRID_POINTS as i64 => Some(n as u32),
        Some(n) => {
            return Err(invalid(format!(
                "parameters.{name}.grid_points must be between 2 and {MAX_GRID_POINTS} (got {n})"
            )))
        }
    };
    if step.is_some() && grid_points.is_some() {
        return Err(invalid(format!("parameters.{name}: give step or grid_points, not both")));
    }
    Ok(ParamSpec { name: name.into(), domain: Domain::Range(RangeDomain { kind, log, min, max, step, grid_points }) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "sst2-minilm"
[objective]
metric = "eval_accuracy"
direction = "maximize"
[algorithm]
sampler = "grid"
seed = 0
[budget]
parallel_trials = 4
max_failed_trials = 3
max_attempts = 3
[task]
model = "/models/bert"
train_file = "data/train.tsv"
validation_file = "data/dev.tsv"
[parameters.learning_rate]
distribution = "log_uniform"
min = 1e-5
max = 5e-5
grid_points = 3
[parameters.num_train_epochs]
values = [2, 3, 4]
[parameters.per_device_train_batch_size]
values = [16, 32]
"#;

    fn err(text: &str) -> String {
        parse_study(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let spec = parse_study(GOOD).unwrap();
        assert_eq!(spec.grid_size(), 18);
        assert_eq!(spec.budget.max_trials, 18);
        assert_eq!(spec.task.text_column, "sentence");
        let axes = spec.grid_axes().unwrap();
        assert_eq!(axes[0].0, "learning_rate");
        assert_eq!(axes[0].1[0], ParamValue::Float(1e-5));
        assert_eq!(axes[0].1[2], ParamValue::Float(5e-5));
        assert_eq!(axes[1].1, vec![ParamValue::Int(2), ParamValue::Int(3), ParamValue::Int(4)]);
    }

    #[test]
    fn rejects_unknown_and_misspelled_keys_with_a_line() {
        let e = err(&GOOD.replace("max_attempts = 3", "max_atempts = 3"));
        assert!(e.contains("unknown field `max_atempts`"), "{e}");
        assert!(e.starts_with("line "), "{e}");
        assert!(err(&format!("{GOOD}\n[extra]\nx = 1\n")).contains("unknown field `extra`"));
    }

    #[test]
    fn rejects_wrong_types() {
        let e = err(&GOOD.replace("parallel_trials = 4", "parallel_trials = \"four\""));
        assert!(e.contains("invalid type"), "{e}");
        let e = err(&GOOD.replace("values = [16, 32]", "values = [16, \"big\"]"));
        assert!(e.contains("expected an integer"), "{e}");
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(err(&GOOD.replace("max = 5e-5", "max = 1e-5")).contains("empty or inverted"));
        assert!(err(&GOOD.replace("max = 5e-5", "max = 1e-6")).contains("empty or inverted"));
        let e = err(&GOOD.replace("min = 1e-5\nmax = 5e-5", "min = 0.0\nmax = 5e-5"));
        assert!(e.contains("out of range"), "{e}");
        let text = GOOD
            .replace("[parameters.learning_rate]", "[parameters.warmup_ratio]")
            .replace("min = 1e-5", "min = 0.0")
            .replace("max = 5e-5", "max = 0.2");
        assert!(err(&text).contains("log_uniform needs min > 0"));
        assert!(err(&GOOD.replace("values = [2, 3, 4]", "values = []")).contains("is empty"));
    }

    #[test]
    fn rejects_unknown_parameters_and_huge_grids() {
        let e = err(&GOOD.replace("[parameters.num_train_epochs]", "[parameters.num_epochs]"));
        assert!(e.contains("parameters.num_epochs: unknown parameter"), "{e}");
        let e = err(&GOOD.replace("grid_points = 3", "grid_points = 50000"));
        assert!(e.contains("more than the limit of 100000"), "{e}");
        let e = err(&GOOD.replace("grid_points = 3\n", ""));
        assert!(e.contains("needs grid_points or step"), "{e}");
    }

    #[test]
    fn random_needs_max_trials_and_accepts_continuous_ranges() {
        let text = GOOD.replace("sampler = \"grid\"", "sampler = \"random\"").replace("grid_points = 3\n", "");
        assert!(err(&text).contains("max_trials is required"));
        let spec = parse_study(&text.replace("[budget]", "[budget]\nmax_trials = 7")).unwrap();
        assert_eq!(spec.budget.max_trials, 7);
        assert_eq!(spec.sampler, SamplerKind::Random);
    }

    #[test]
    fn class_weights_are_balanced_or_absent() {
        assert!(!parse_study(GOOD).unwrap().task.balanced_class_weights);
        let with = |v: &str| GOOD.replace("[task]\n", &format!("[task]\nclass_weights = {v}\n"));
        assert!(parse_study(&with("\"balanced\"")).unwrap().task.balanced_class_weights);
        assert!(!parse_study(&with("\"none\"")).unwrap().task.balanced_class_weights);
        let e = err(&with("\"inverse\""));
        assert!(e.contains("task.class_weights \"inverse\" is not valid") && e.contains("balanced"), "{e}");
    }

    #[test]
    fn text_pair_column_is_optional_and_distinct() {
        assert_eq!(parse_study(GOOD).unwrap().task.text_pair_column, None);
        let with = |v: &str| GOOD.replace("[task]\n", &format!("[task]\ntext_column = \"sentence1\"\n{v}\n"));
        let spec = parse_study(&with("text_pair_column = \"sentence2\"")).unwrap();
        assert_eq!(
            (spec.task.text_column.as_str(), spec.task.text_pair_column.as_deref()),
            ("sentence1", Some("sentence2"))
        );
        assert!(err(&with("text_pair_column = \" \"")).contains("task.text_pair_column is empty"));
        let e = err(&with("text_pair_column = \"sentence1\""));
        assert!(e.contains("task.text_pair_column \"sentence1\" is also task.text_column"), "{e}");
        let e = err(&with("text_pair_column = \"label\""));
        assert!(e.contains("is also task.label_column"), "{e}");
    }

    #[test]
    fn example_study_files_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                parse_study(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed += 1;
            }
        }
        assert!(parsed >= 4, "only {parsed} study files in {}", dir.display());
    }

    #[test]
    fn every_reported_metric_can_be_the_objective_with_its_natural_direction() {
        for metric in OBJECTIVE_METRICS {
            let spec =
                parse_study(&GOOD.replace("eval_accuracy", metric).replace("direction = \"maximize\"\n", "")).unwrap();
            let lower = ["eval_loss", "eval_log_loss", "eval_ece"].contains(metric);
            assert_eq!(spec.objective.maximize, !lower, "{metric}");
        }
    }

    #[test]
    fn rejects_unknown_sampler_metric_and_budget_zero() {
        assert!(err(&GOOD.replace("sampler = \"grid\"", "sampler = \"bayes\"")).contains("not a known sampler"));
        assert!(err(&GOOD.replace("eval_accuracy", "accuracy")).contains("not a metric"));
        assert!(err(&GOOD.replace("parallel_trials = 4", "parallel_trials = 0")).contains("at least 1"));
    }

    #[test]
    fn folds_replace_the_validation_file_and_multiply_the_trials() {
        let folded = GOOD.replace("validation_file = \"data/dev.tsv\"\n", "") + "[evaluation]\nfolds = 5\n";
        let spec = parse_study(&folded).unwrap();
        assert_eq!((spec.folds, spec.trials_per_configuration()), (5, 5));
        assert_eq!(spec.budget.max_trials, 18 * 5, "grid × folds");
        assert!(spec.task.validation_file.is_empty());
        assert_eq!(spec.task.inputs().iter().map(|i| i.key).collect::<Vec<_>>(), ["model", "train_file"]);
        let both = parse_study(
            &folded
                .replace("[evaluation]", "[algorithm.x]\n[evaluation]")
                .replace("[algorithm.x]\n", "")
                .replace("seed = 0", "seed = 0\nrepeats = 2"),
        )
        .unwrap();
        assert_eq!((both.trials_per_configuration(), both.budget.max_trials), (10, 180));
        assert!(
            err(&GOOD.replace("validation_file = \"data/dev.tsv\"\n", "")).contains("task.validation_file is missing")
        );
        assert!(err(&format!("{GOOD}[evaluation]\nfolds = 5\n")).contains("cannot be used with evaluation.folds"));
        for bad in ["1", "21", "-3"] {
            let e = err(&folded.replace("folds = 5", &format!("folds = {bad}")));
            assert!(e.contains("evaluation.folds must be between 2 and 20"), "{e}");
        }
        assert!(
            err(&folded.replace("[budget]", "[budget]\nmax_trials = 12")).contains("multiple of evaluation.folds (5)")
        );
        assert!(err(&format!("{folded}[parameters.fold]\nvalues = [0, 1]\n"))
            .contains("parameters.fold is not a hyperparameter"));
        let promotion = format!("{folded}[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n");
        assert!(err(&promotion).contains("cannot be combined with evaluation.folds"));
        assert!(err(&folded.replace("folds = 5", "folds = 5\nshuffle = true")).contains("shuffle"));
    }

    #[test]
    fn tpe_repeats_and_early_stopping() {
        let tpe = GOOD
            .replace("sampler = \"grid\"", "sampler = \"tpe\"\nrepeats = 2")
            .replace("[budget]", "[budget]\nmax_trials = 20");
        let spec = parse_study(&format!("{tpe}\n[early_stopping]\ntype = \"asha\"\nreduction_factor = 2\n")).unwrap();
        assert_eq!((spec.sampler, spec.repeats, spec.startup_trials), (SamplerKind::Tpe, 2, 5));
        assert_eq!(spec.early_stopping, EarlyStopping::Asha { min_epochs: 1, reduction_factor: 2, promotion: false });
        let promoting =
            parse_study(&format!("{tpe}\n[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n")).unwrap();
        assert_eq!(
            promoting.early_stopping,
            EarlyStopping::Asha { min_epochs: 1, reduction_factor: 3, promotion: true }
        );
        let refused = |extra: &str| parse_study(&format!("{tpe}\n{extra}")).unwrap_err().to_string();
        assert!(refused("[early_stopping]\ntype = \"asha\"\nmode = \"pause\"\n").contains("\"promotion\""));
        assert!(refused("[early_stopping]\ntype = \"median\"\nmode = \"promotion\"\n").contains("only applies"));
        let no_checkpoints = tpe.replace("[budget]", "[budget]\ncheckpoints = false");
        let err = parse_study(&format!("{no_checkpoints}\n[early_stopping]\ntype = \"asha\"\nmode = \"promotion\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkpoints"), "{err}");
        let grid = parse_study(&GOOD.replace("seed = 0", "seed = 0\nrepeats = 3")).unwrap();
        assert_eq!(grid.budget.max_trials, 54, "grid × repeats");
        let median =
            parse_study(&format!("{GOOD}\n[early_stopping]\ntype = \"median\"\nwarmup_trials = 2\nmin_epochs = 1\n"))
                .unwrap();
        assert_eq!(median.early_stopping, EarlyStopping::Median { min_epochs: 1, warmup_trials: 2 });
    }

    #[test]
    fn rejects_bad_search_settings() {
        let es = |body: &str| err(&format!("{GOOD}\n[early_stopping]\n{body}\n"));
        assert!(es("type = \"hyperband\"").contains("early_stopping.type \"hyperband\" is not known"));
        assert!(es("type = \"asha\"\nreduction_factor = 1").contains("reduction_factor must be at least 2"));
        assert!(es("type = \"asha\"\nmin_epochs = 0").contains("min_epochs must be at least 1"));
        assert!(es("type = \"asha\"\nmin_epochs = 4").contains("needs a per-epoch objective"));
        assert!(es("type = \"median\"\nreduction_factor = 3").contains("only applies to type = \"asha\""));
        assert!(es("type = \"asha\"\npatience = 3").contains("unknown field `patience`"));
        assert!(err(&GOOD.replace("seed = 0", "seed = 0\nrepeats = 0")).contains("repeats must be between 1 and 1000"));
        assert!(err(&GOOD.replace("sampler = \"grid\"", "sampler = \"optuna\"")).contains("not a known sampler"));
        let seeded = GOOD.replace("seed = 0", "seed = 0\nrepeats = 2") + "[parameters.seed]\nvalues = [1, 2]\n";
        assert!(err(&seeded).contains("cannot be searched together with algorithm.repeats"));
        let odd = GOOD.replace("seed = 0", "seed = 0\nrepeats = 2").replace("[budget]", "[budget]\nmax_trials = 5");
        assert!(err(&odd).contains("multiple of algorithm.repeats"));
    }

    #[test]
    fn int_steps_and_defaults() {
        let text = GOOD.replace("values = [2, 3, 4]", "distribution = \"int_uniform\"\nmin = 2\nmax = 4");
        let spec = parse_study(&text).unwrap();
        assert_eq!(spec.grid_size(), 18);
        let text = GOOD.replace("values = [16, 32]", "distribution = \"int_uniform\"\nmin = 16\nmax = 32\nstep = 16");
        assert_eq!(parse_study(&text).unwrap().grid_size(), 18);
    }
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
