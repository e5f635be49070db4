//! From the raw study file to a [`StudySpec`]: every check, each failing with one line that
//! names the key and what to write instead.

use super::raw::*;
use super::*;

pub(super) fn validate(raw: RawStudy, strictness: Strictness) -> Result<StudySpec, SpecError> {
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
    if raw.parameters.contains_key(bertsweep_proto::contract::params::FOLD) {
        return Err(invalid(
            "parameters.fold is not a hyperparameter; cross-validation folds are set by [evaluation] folds = K",
        ));
    }
    if folds > 1 && matches!(early_stopping, EarlyStopping::Asha { promotion: true, .. }) {
        return Err(invalid(
            "early_stopping.mode = \"promotion\" cannot be combined with evaluation.folds yet; use mode = \"stop\" or drop the folds",
        ));
    }

    if repeats > 1 && raw.parameters.contains_key(bertsweep_proto::contract::params::SEED) {
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
        .find(|p| p.name == bertsweep_proto::contract::params::NUM_TRAIN_EPOCHS)
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
