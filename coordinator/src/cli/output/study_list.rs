//! Studies as tables, json and csv, the line `study create` prints, and the lines
//! `trials --follow` prints as trials change.

use super::*;

pub(super) fn study_json(s: &pb::Study) -> Value {
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

pub(super) fn done(s: &pb::Study) -> u32 {
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
