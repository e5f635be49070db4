//! Trials and configurations as tables, json and csv.

use super::*;

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
pub(super) fn dev_and_test(t: &pb::Trial) -> Vec<(String, f64, f64)> {
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
pub(super) fn dev_test_table(t: &pb::Trial) -> String {
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
pub(super) fn evaluation_json(e: &pb::TrialEvaluation) -> Value {
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
pub(super) fn interval_of(e: &pb::TrialEvaluation) -> Option<(f64, f64)> {
    e.objective_low.zip(e.objective_high)
}

/// `[low, high]` of a trial's objective, or "" without one.
pub(super) fn fmt_interval(t: &pb::Trial) -> String {
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
pub(super) fn configurations_table(configs: &[pb::Configuration]) -> String {
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
