//! Output formats: aligned tables for people; json and csv that scripts can rely on.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use bertsweep_proto::v1 as pb;
use serde_json::{json, Map, Value};

use super::{BestFormat, Format};
use crate::params::ParamValue;

fn param_value(v: &pb::ParamValue) -> ParamValue {
    match &v.kind {
        Some(pb::param_value::Kind::IntValue(i)) => ParamValue::Int(*i),
        Some(pb::param_value::Kind::FloatValue(f)) => ParamValue::Float(*f),
        Some(pb::param_value::Kind::StringValue(s)) => ParamValue::Str(s.clone()),
        None => ParamValue::Str(String::new()),
    }
}

/// A trial's parameters as domain values (for computations over trials on the CLI side).
pub fn params_of(t: &pb::Trial) -> crate::params::Params {
    params_sorted(t)
}

fn params_sorted(t: &pb::Trial) -> BTreeMap<String, ParamValue> {
    t.params.iter().map(|(k, v)| (k.clone(), param_value(v))).collect()
}

fn trial_state(code: i32) -> &'static str {
    match pb::TrialState::try_from(code).unwrap_or(pb::TrialState::Unspecified) {
        pb::TrialState::Pending => "PENDING",
        pb::TrialState::Running => "RUNNING",
        pb::TrialState::Completed => "COMPLETED",
        pb::TrialState::Pruned => "PRUNED",
        pb::TrialState::Failed => "FAILED",
        pb::TrialState::Stopped => "STOPPED",
        pb::TrialState::Paused => "PAUSED",
        pb::TrialState::Unspecified => "UNKNOWN",
    }
}

fn study_state(code: i32) -> &'static str {
    match pb::StudyState::try_from(code).unwrap_or(pb::StudyState::Unspecified) {
        pb::StudyState::Running => "RUNNING",
        pb::StudyState::Completed => "COMPLETED",
        pb::StudyState::Failed => "FAILED",
        pb::StudyState::Stopped => "STOPPED",
        pb::StudyState::Unspecified => "UNKNOWN",
    }
}

fn fmt_value(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

/// A trial's peak device memory for people: "-" when none was reported.
fn fmt_peak(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        bertsweep_transfer::human_bytes(bytes)
    }
}

fn last_epoch(t: &pb::Trial) -> u32 {
    t.intermediate.iter().map(|e| e.epoch).max().unwrap_or(0)
}

/// Left-aligned columns separated by two spaces, header first.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(cells: &[String]) -> String {
    cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n"
}

fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Int(i) => json!(i),
        ParamValue::Float(f) => json!(f),
        ParamValue::Str(s) => json!(s),
    }
}

fn metrics_json(m: &std::collections::HashMap<String, f64>) -> Value {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    json!(sorted)
}

/// Trial number → its configuration, built once per listing (studies reach 100,000 trials).
struct ConfigIndex<'a>(std::collections::HashMap<u32, &'a pb::Configuration>);

impl<'a> ConfigIndex<'a> {
    fn new(configs: &'a [pb::Configuration]) -> Self {
        ConfigIndex(configs.iter().flat_map(|c| c.trials.iter().map(move |&n| (n, c))).collect())
    }

    /// The configuration a trial belongs to, if the listing has one.
    fn of(&self, number: u32) -> Option<&'a pb::Configuration> {
        self.0.get(&number).copied()
    }
}

fn config_json(c: Option<&pb::Configuration>) -> Value {
    match c {
        Some(c) => json!({"mean": c.mean, "std": c.std, "completed": c.completed, "trials": c.trials}),
        None => Value::Null,
    }
}

/// A trial as a stable JSON object; `config` is its configuration over seed repeats.
pub fn trial_json_with(t: &pb::Trial, config: Option<&pb::Configuration>) -> Value {
    let mut v = trial_json(t);
    v["config"] = config_json(config);
    v
}

/// A trial as a stable JSON object.
pub fn trial_json(t: &pb::Trial) -> Value {
    let params: Map<String, Value> = params_sorted(t).iter().map(|(k, v)| (k.clone(), param_json(v))).collect();
    let mut epochs: Vec<&pb::EpochMetrics> = t.intermediate.iter().collect();
    epochs.sort_by_key(|e| e.epoch);
    json!({
        "study": t.study,
        "number": t.number,
        "state": trial_state(t.state),
        "params": params,
        "value": t.value,
        "metrics": metrics_json(&t.metrics),
        "epochs": epochs.iter().map(|e| json!({"epoch": e.epoch, "metrics": metrics_json(&e.metrics)})).collect::<Vec<_>>(),
        "earlier_attempts": t
            .earlier_attempts
            .iter()
            .map(|e| json!({"attempt": e.attempt, "epoch": e.epoch, "metrics": metrics_json(&e.metrics)}))
            .collect::<Vec<_>>(),
        "last_epoch": last_epoch(t),
        "attempt": t.attempt,
        // 0 on the wire: no attempt measured it.
        "peak_device_memory_bytes": (t.peak_device_memory_bytes > 0).then_some(t.peak_device_memory_bytes),
        "worker_id": if t.worker_id.is_empty() { Value::Null } else { json!(t.worker_id) },
        "artifact": if t.artifact.is_empty() { Value::Null } else { json!(t.artifact) },
        "checkpoint": if t.checkpoint.is_empty() {
            Value::Null
        } else {
            json!({"reference": t.checkpoint, "epoch": t.checkpoint_epoch})
        },
        "error": if t.error.is_empty() { Value::Null } else { json!(t.error) },
        "evaluation": t.evaluation.as_ref().map(evaluation_json),
        "test_metrics": if t.test_metrics.is_empty() { Value::Null } else { metrics_json(&t.test_metrics) },
    })
}

/// Each dev metric with a test counterpart: (name without `eval_`, dev, test).
fn dev_and_test(t: &pb::Trial) -> Vec<(String, f64, f64)> {
    let mut rows: Vec<(String, f64, f64)> = t
        .metrics
        .iter()
        .filter_map(|(k, dev)| {
            let name = k.strip_prefix("eval_")?;
            Some((name.to_string(), *dev, *t.test_metrics.get(&format!("test_{name}"))?))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Dev and test side by side; the dev-to-test gap is the selection optimism the winner's dev
/// score carries from being the best of many on that same set.
fn dev_test_table(t: &pb::Trial) -> String {
    let rows: Vec<Vec<String>> = dev_and_test(t)
        .into_iter()
        .map(|(name, dev, test)| vec![name, format!("{dev:.4}"), format!("{test:.4}"), format!("{:+.4}", dev - test)])
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let header = ["METRIC", "DEV", "TEST", "DEV - TEST (selection optimism)"].map(String::from);
    format!("\nheld-out test set (never used to choose):\n{}", table(&header, &rows))
}

/// What the coordinator derived from a trial's dev-set predictions.
fn evaluation_json(e: &pb::TrialEvaluation) -> Value {
    let classes = e.classes.len();
    json!({
        "epoch": e.epoch,
        "examples": e.examples,
        "value_interval": interval_of(e).map(|(low, high)| json!({"low": low, "high": high, "confidence": 0.95})),
        "classes": e.classes.iter().map(|c| json!({
            "name": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support,
        })).collect::<Vec<_>>(),
        // Rows are true classes, columns predicted ones.
        "confusion_matrix": if classes > 0 && e.confusion.len() == classes * classes {
            json!(e.confusion.chunks(classes).collect::<Vec<_>>())
        } else {
            Value::Null
        },
    })
}

/// The 95 % interval of a trial's objective, when it has one.
fn interval_of(e: &pb::TrialEvaluation) -> Option<(f64, f64)> {
    e.objective_low.zip(e.objective_high)
}

/// `[low, high]` of a trial's objective, or "" without one.
fn fmt_interval(t: &pb::Trial) -> String {
    match t.evaluation.as_ref().and_then(interval_of) {
        Some((low, high)) => format!("[{low:.4}, {high:.4}]"),
        None => String::new(),
    }
}

/// Lists trials in the requested format; with seed repeats, tables also rank configurations
/// by their mean objective and json/csv carry each trial's configuration mean and std.
pub fn trials(trials: &[pb::Trial], configs: &[pb::Configuration], format: Format) -> Result<String> {
    let names: BTreeSet<String> = trials.iter().flat_map(|t| t.params.keys().cloned()).collect();
    let repeated = configs.iter().any(|c| c.trials.len() > 1);
    let index = ConfigIndex::new(configs);
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(
            &trials.iter().map(|t| trial_json_with(t, index.of(t.number).filter(|_| repeated))).collect::<Vec<_>>(),
        )? + "\n"),
        Format::Table => {
            let mut header = vec!["#".to_string(), "STATE".into()];
            header.extend(names.iter().cloned());
            header.extend([
                "VALUE".into(),
                "95% CI".into(),
                "EPOCH".into(),
                "ATTEMPT".into(),
                "PEAK MEM".into(),
                "NOTE".into(),
            ]);
            let rows: Vec<Vec<String>> = trials
                .iter()
                .map(|t| {
                    let params = params_sorted(t);
                    let mut row = vec![t.number.to_string(), trial_state(t.state).to_string()];
                    row.extend(names.iter().map(|n| params.get(n).map(|v| v.to_string()).unwrap_or_default()));
                    let note = if trial_state(t.state) == "PRUNED" {
                        format!("pruned at epoch {}", last_epoch(t))
                    } else {
                        t.error.lines().next().unwrap_or("").chars().take(60).collect()
                    };
                    row.extend([
                        fmt_value(t.value),
                        fmt_interval(t),
                        last_epoch(t).to_string(),
                        t.attempt.to_string(),
                        fmt_peak(t.peak_device_memory_bytes),
                        note,
                    ]);
                    row
                })
                .collect();
            if rows.is_empty() {
                return Ok("no trials yet\n".into());
            }
            let mut out = table(&header, &rows);
            if repeated {
                out.push_str(&configurations_table(configs));
            }
            Ok(out)
        }
        Format::Csv => {
            let metric_names: BTreeSet<String> =
                trials.iter().flat_map(|t| t.metrics.keys().chain(t.test_metrics.keys()).cloned()).collect();
            let mut header = vec!["number".to_string(), "state".into()];
            header.extend(names.iter().cloned());
            header.extend(["value".into(), "value_ci_low".into(), "value_ci_high".into()]);
            header.extend(metric_names.iter().cloned());
            header.extend([
                "last_epoch".into(),
                "attempt".into(),
                "peak_device_memory_bytes".into(),
                "artifact".into(),
                "error".into(),
            ]);
            if repeated {
                header.extend(["config_mean".into(), "config_std".into()]);
            }
            let mut out = csv_line(&header);
            for t in trials {
                let params = params_sorted(t);
                let mut row = vec![t.number.to_string(), trial_state(t.state).to_string()];
                row.extend(names.iter().map(|n| params.get(n).map(|v| v.to_string()).unwrap_or_default()));
                row.push(t.value.map(|v| v.to_string()).unwrap_or_default());
                let interval = t.evaluation.as_ref().and_then(interval_of);
                row.push(interval.map(|i| i.0.to_string()).unwrap_or_default());
                row.push(interval.map(|i| i.1.to_string()).unwrap_or_default());
                row.extend(metric_names.iter().map(|m| {
                    t.metrics.get(m).or_else(|| t.test_metrics.get(m)).map(|v| v.to_string()).unwrap_or_default()
                }));
                row.extend([
                    last_epoch(t).to_string(),
                    t.attempt.to_string(),
                    if t.peak_device_memory_bytes > 0 { t.peak_device_memory_bytes.to_string() } else { String::new() },
                    t.artifact.clone(),
                    t.error.clone(),
                ]);
                if repeated {
                    let c = index.of(t.number);
                    row.push(c.and_then(|c| c.mean).map(|v| v.to_string()).unwrap_or_default());
                    row.push(c.and_then(|c| c.std).map(|v| v.to_string()).unwrap_or_default());
                }
                out.push_str(&csv_line(&row));
            }
            Ok(out)
        }
    }
}

/// Configurations ranked by mean objective over their seeds.
fn configurations_table(configs: &[pb::Configuration]) -> String {
    let names: BTreeSet<String> = configs.iter().flat_map(|c| c.params.keys().cloned()).collect();
    let mut header = vec!["RANK".to_string()];
    header.extend(names.iter().cloned());
    header.extend(["DONE".into(), "MEAN".into(), "STD".into(), "TRIALS".into()]);
    let rows: Vec<Vec<String>> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let params: BTreeMap<String, ParamValue> =
                c.params.iter().map(|(k, v)| (k.clone(), param_value(v))).collect();
            let mut row = vec![(i + 1).to_string()];
            row.extend(names.iter().map(|n| params.get(n).map(|v| v.to_string()).unwrap_or_default()));
            row.extend([
                format!("{}/{}", c.completed, c.trials.len()),
                fmt_value(c.mean),
                fmt_value(c.std),
                c.trials.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
            ]);
            row
        })
        .collect();
    format!("\nconfigurations ranked by mean over seeds and folds:\n{}", table(&header, &rows))
}

/// The best trial: `json` carries study, number, state, params, value, metrics, artifact, and
/// `config` (mean/std over seed repeats, or null).
pub fn best(best: &pb::BestTrial, format: BestFormat) -> Result<String> {
    let Some(t) = &best.trial else { return Ok(String::new()) };
    let config = best.configuration.as_ref().filter(|c| c.trials.len() > 1);
    match format {
        BestFormat::Json => {
            let mut v = trial_json_with(t, config);
            v["comparison"] = comparison_json(best);
            v["selection_optimism"] = dev_and_test(t)
                .into_iter()
                .map(|(name, dev, test)| (name, json!(dev - test)))
                .collect::<Map<_, _>>()
                .into();
            Ok(serde_json::to_string(&v)? + "\n")
        }
        BestFormat::Table => {
            let mut rows = vec![
                vec!["study".to_string(), t.study.clone()],
                vec!["trial".into(), t.number.to_string()],
                vec!["state".into(), trial_state(t.state).into()],
                vec!["value".into(), fmt_value(t.value)],
            ];
            if let Some(e) = &t.evaluation {
                let interval = fmt_interval(t);
                rows.push(vec![
                    "value 95% CI".into(),
                    if interval.is_empty() { "- (undefined on most resamples)".into() } else { interval },
                ]);
                rows.push(vec!["dev examples".into(), format!("{} (epoch {})", e.examples, e.epoch)]);
            }
            rows.push(vec!["vs runner-up".into(), comparison_line(best)]);
            for (k, v) in params_sorted(t) {
                rows.push(vec![format!("param {k}"), v.to_string()]);
            }
            let metrics: BTreeMap<_, _> = t.metrics.iter().collect();
            for (k, v) in metrics {
                rows.push(vec![format!("metric {k}"), format!("{v:.4}")]);
            }
            rows.push(vec!["artifact".into(), artifact_location(t)]);
            if let Some(pb::ParamValue { kind: Some(pb::param_value::Kind::IntValue(fold)) }) = t.params.get("fold") {
                let kept = best
                    .configuration
                    .as_ref()
                    .map(|c| c.trials.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","));
                rows.push(vec![
                    "cross-validation".into(),
                    format!(
                        "this is fold {fold}'s model (validated on fold {fold}, trained on the others); the value to quote is the configuration's mean over folds; its fold models are kept together (trials {})",
                        kept.unwrap_or_default()
                    ),
                ]);
            }
            if let Some(c) = config {
                rows.push(vec!["config mean".into(), fmt_value(c.mean)]);
                rows.push(vec!["config std".into(), fmt_value(c.std)]);
                rows.push(vec![
                    "config trials".into(),
                    format!(
                        "{} ({} completed)",
                        c.trials.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
                        c.completed
                    ),
                ]);
            }
            let mut out = table(&["FIELD".into(), "VALUE".into()], &rows);
            out.push_str(&dev_test_table(t));
            if let Some(e) = &t.evaluation {
                out.push_str(&class_tables(e));
            }
            Ok(out)
        }
    }
}

/// `best`'s verdict on the runner-up, one line.
fn comparison_line(best: &pb::BestTrial) -> String {
    let Some(c) = &best.comparison else {
        return format!("- ({})", best.comparison_unavailable);
    };
    let trials = c.runner_up.as_ref().map(|r| r.trials.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","));
    format!(
        "{}: difference {:+.4}, 95% CI [{:+.4}, {:+.4}] (paired bootstrap over the dev examples{}; runner-up trial {})",
        c.verdict,
        c.difference,
        c.difference_low,
        c.difference_high,
        if c.paired_seeds { " and seeds" } else { "" },
        trials.unwrap_or_default(),
    )
}

/// `best`'s comparison as JSON: the numbers, or why there are none.
fn comparison_json(best: &pb::BestTrial) -> Value {
    match &best.comparison {
        Some(c) => json!({
            "verdict": c.verdict,
            "difference": c.difference,
            "interval": {"low": c.difference_low, "high": c.difference_high, "confidence": 0.95},
            "paired_seeds": c.paired_seeds,
            "runner_up": config_json(c.runner_up.as_ref()),
        }),
        None => json!({"unavailable": best.comparison_unavailable}),
    }
}

/// The per-class scores and the confusion matrix under `best`'s table.
fn class_tables(e: &pb::TrialEvaluation) -> String {
    if e.classes.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = e
        .classes
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                format!("{:.4}", c.precision),
                format!("{:.4}", c.recall),
                format!("{:.4}", c.f1),
                c.support.to_string(),
            ]
        })
        .collect();
    let header = ["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"].map(String::from);
    let mut out = format!("\nper class (dev set, epoch {}):\n{}", e.epoch, table(&header, &rows));
    let n = e.classes.len();
    if e.confusion.len() == n * n {
        let mut header = vec!["TRUE \\ PREDICTED".to_string()];
        header.extend(e.classes.iter().map(|c| c.name.clone()));
        let rows: Vec<Vec<String>> = e
            .confusion
            .chunks(n)
            .zip(&e.classes)
            .map(|(counts, c)| std::iter::once(c.name.clone()).chain(counts.iter().map(u64::to_string)).collect())
            .collect();
        out.push_str(&format!("\nconfusion matrix:\n{}", table(&header, &rows)));
    }
    out
}

/// Where a trial's model is, and how to get it.
fn artifact_location(t: &pb::Trial) -> String {
    let fetch = format!("fetch it with `bertsweep download {} DIR --trial {}`", t.study, t.number);
    match t.artifact.as_str() {
        "" => "- (not kept: only the best budget.keep_artifacts trials keep their model)".into(),
        a if a.starts_with("blob:") => format!("{a} (kept on the coordinator; {fetch})"),
        a if bertsweep_transfer::object::is_object_url(a) => format!("{a} (object storage; {fetch})"),
        a => format!("{a} (on the disk of worker {})", if t.worker_id.is_empty() { "?" } else { &t.worker_id }),
    }
}

fn study_json(s: &pb::Study) -> Value {
    let c = s.counts.unwrap_or_default();
    json!({
        "name": s.name,
        "state": study_state(s.state),
        "sampler": s.sampler,
        "objective": s.objective_metric,
        "direction": if s.maximize { "maximize" } else { "minimize" },
        "max_trials": s.max_trials,
        "parallel_trials": s.parallel_trials,
        "counts": {"pending": c.pending, "running": c.running, "completed": c.completed, "pruned": c.pruned, "failed": c.failed, "stopped": c.stopped},
        "best_value": s.best_value,
        "repeats": s.repeats,
        "folds": s.folds.max(1),
        "early_stopping": s.early_stopping,
        "reason": if s.reason.is_empty() { Value::Null } else { json!(s.reason) },
    })
}

fn done(s: &pb::Study) -> u32 {
    let c = s.counts.unwrap_or_default();
    c.completed + c.pruned + c.failed + c.stopped
}

/// The study list.
pub fn studies(list: &[pb::Study], format: Format) -> Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(&list.iter().map(study_json).collect::<Vec<_>>())? + "\n"),
        Format::Table | Format::Csv => {
            let header: Vec<String> = ["NAME", "STATE", "SAMPLER", "DONE", "RUNNING", "FAILED", "BEST", "OBJECTIVE"]
                .map(String::from)
                .to_vec();
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    let c = s.counts.unwrap_or_default();
                    vec![
                        s.name.clone(),
                        study_state(s.state).into(),
                        s.sampler.clone(),
                        format!("{}/{}", done(s), s.max_trials),
                        c.running.to_string(),
                        c.failed.to_string(),
                        fmt_value(s.best_value),
                        format!("{} {}", if s.maximize { "max" } else { "min" }, s.objective_metric),
                    ]
                })
                .collect();
            if format == Format::Csv {
                let mut out = csv_line(&header.iter().map(|h| h.to_lowercase()).collect::<Vec<_>>());
                for r in &rows {
                    out.push_str(&csv_line(r));
                }
                return Ok(out);
            }
            if rows.is_empty() {
                return Ok("no studies yet; create one with `bertsweep study create FILE.toml`\n".into());
            }
            Ok(table(&header, &rows))
        }
    }
}

/// One study in detail.
pub fn study(s: &pb::Study, format: Format) -> Result<String> {
    if format == Format::Json {
        // One study: with the study file as accepted (inputs as blob references).
        let mut v = study_json(s);
        v["spec_toml"] = json!(s.spec_toml);
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let c = s.counts.unwrap_or_default();
    let mut rows = vec![
        vec!["name".to_string(), s.name.clone()],
        vec!["state".into(), study_state(s.state).into()],
        vec!["sampler".into(), s.sampler.clone()],
        vec![
            "objective".into(),
            format!("{} {}", if s.maximize { "maximize" } else { "minimize" }, s.objective_metric),
        ],
        vec![
            "trials".into(),
            format!("{} done of {} ({} running, {} pending)", done(s), s.max_trials, c.running, c.pending),
        ],
        vec!["completed".into(), c.completed.to_string()],
        vec!["pruned".into(), c.pruned.to_string()],
        vec!["failed".into(), c.failed.to_string()],
        vec!["stopped".into(), c.stopped.to_string()],
        vec!["parallel_trials".into(), s.parallel_trials.to_string()],
        vec!["early stopping".into(), s.early_stopping.clone()],
        vec!["seed repeats".into(), s.repeats.to_string()],
        vec![
            "folds".into(),
            if s.folds > 1 {
                format!("{} (cross-validation on the training file)", s.folds)
            } else {
                "none (validation_file)".into()
            },
        ],
        vec!["best".into(), fmt_value(s.best_value)],
    ];
    if s.grid_size > 0 {
        rows.push(vec!["grid size".into(), s.grid_size.to_string()]);
    }
    if !s.reason.is_empty() {
        rows.push(vec!["reason".into(), s.reason.clone()]);
    }
    if format == Format::Csv {
        let mut out = csv_line(&["field".into(), "value".into()]);
        for r in &rows {
            out.push_str(&csv_line(r));
        }
        return Ok(out);
    }
    Ok(table(&["FIELD".into(), "VALUE".into()], &rows))
}

/// The confirmation line of `study create`.
pub fn created_line(s: &pb::Study) -> String {
    format!(
        "created study {} ({} sampler, {} trials, {} in parallel, {} {})",
        s.name,
        s.sampler,
        s.max_trials,
        s.parallel_trials,
        if s.maximize { "maximize" } else { "minimize" },
        s.objective_metric
    )
}

/// Prints `trials --follow` events as they arrive.
pub struct FollowPrinter {
    format: Format,
    header_done: bool,
}

impl FollowPrinter {
    pub fn new(format: Format) -> Self {
        FollowPrinter { format, header_done: false }
    }

    /// The line(s) for one event, or None.
    pub fn event(&mut self, e: &pb::TrialEvent) -> Result<Option<String>> {
        let Some(t) = &e.trial else {
            return Ok(match self.format {
                Format::Json => Some(json!({"study_state": study_state(e.study_state)}).to_string()),
                _ => Some(format!("study {}", study_state(e.study_state))),
            });
        };
        Ok(Some(match self.format {
            Format::Json => trial_json(t).to_string(),
            Format::Csv => {
                let header = !self.header_done;
                self.header_done = true;
                let full = trials(std::slice::from_ref(t), &[], Format::Csv)?;
                let mut lines = full.lines();
                let head = lines.next().unwrap_or_default().to_string();
                let row = lines.next().unwrap_or_default().to_string();
                if header {
                    format!("{head}\n{row}")
                } else {
                    row
                }
            }
            Format::Table => {
                let params = params_sorted(t).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
                let epoch = last_epoch(t);
                format!(
                    "trial {:<4} {:<9} epoch {:<3} value {:<8} {}",
                    t.number,
                    trial_state(t.state),
                    epoch,
                    fmt_value(t.value),
                    params
                )
            }
        }))
    }
}

/// `bertsweep importance`: one row per searched parameter, most important first.
pub fn importances(list: &[crate::importance::ParamImportance], format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => {
            let rows: Vec<Value> = list
                .iter()
                .map(|p| json!({"parameter": p.name, "importance": p.importance, "stddev": p.stddev}))
                .collect();
            serde_json::to_string_pretty(&rows)? + "\n"
        }
        Format::Csv => {
            let mut out = csv_line(&["parameter".into(), "importance".into(), "stddev".into()]);
            for p in list {
                out.push_str(&csv_line(&[p.name.clone(), p.importance.to_string(), p.stddev.to_string()]));
            }
            out
        }
        Format::Table => {
            let header = ["parameter".to_string(), "importance".to_string(), String::new()];
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    let bar = "#".repeat((p.importance * 40.0).round().clamp(0.0, 40.0) as usize);
                    vec![p.name.clone(), format!("{:.3} ± {:.3}", p.importance, p.stddev), bar]
                })
                .collect();
            table(&header, &rows)
        }
    })
}
