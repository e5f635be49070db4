//! `best`: the best trial with its interval, the comparison with the runner-up, per-class
//! scores, the confusion matrix and where its model is.

use super::*;

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
pub(super) fn comparison_line(best: &pb::BestTrial) -> String {
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
pub(super) fn comparison_json(best: &pb::BestTrial) -> Value {
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
pub(super) fn class_tables(e: &pb::TrialEvaluation) -> String {
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
pub(super) fn artifact_location(t: &pb::Trial) -> String {
    let fetch = format!("fetch it with `bertsweep download {} DIR --trial {}`", t.study, t.number);
    let a = &t.artifact;
    match bertsweep_transfer::ArtifactRef::parse(a) {
        Ok(bertsweep_transfer::ArtifactRef::None) => {
            "- (not kept: only the best budget.keep_artifacts trials keep their model)".into()
        }
        Ok(bertsweep_transfer::ArtifactRef::Blob(_)) => format!("{a} (kept on the coordinator; {fetch})"),
        Ok(bertsweep_transfer::ArtifactRef::Object(_)) => format!("{a} (object storage; {fetch})"),
        _ => format!("{a} (on the disk of worker {})", if t.worker_id.is_empty() { "?" } else { &t.worker_id }),
    }
}
