//! A study's trials as CSV, streamed in chunks.

use super::*;

/// One CSV field: quoted when it holds a separator, quote or line break; text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
pub(super) fn csv_field(text: &str, is_text: bool) -> String {
    let guarded = if is_text && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

pub(super) fn csv_row(spec: &StudySpec, trial: &Trial) -> String {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut fields = vec![
        trial.number.to_string(),
        trial.state.as_str().to_string(),
        trial.value.map(|v| v.to_string()).unwrap_or_default(),
    ];
    for p in &spec.parameters {
        fields.push(match trial.params.get(&p.name) {
            Some(ParamValue::Str(s)) => csv_field(s, true),
            Some(v) => v.to_string(),
            None => String::new(),
        });
    }
    let duration = match (trial.started_ms, trial.finished_ms) {
        (Some(s), Some(f)) => format!("{:.3}", (f - s) as f64 / 1000.0),
        _ => String::new(),
    };
    fields.extend([
        trial.last_epoch().to_string(),
        trial.attempt.to_string(),
        csv_field(&trial.worker_id, true),
        trial.created_ms.to_string(),
        opt(trial.started_ms),
        opt(trial.finished_ms),
        duration,
        if trial.peak_device_memory_bytes > 0 { trial.peak_device_memory_bytes.to_string() } else { String::new() },
        csv_field(&trial.error, true),
    ]);
    fields.join(",") + "\n"
}

/// `GET /api/studies/{name}/trials.csv`: every trial, one row each, the lock released between
/// chunks of rows.
pub async fn trials_csv(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<Response> {
    check_name(&name)?;
    let mut out = app.shared.lock().with_trials(&name, |spec, _| {
        let mut header = vec!["number".to_string(), "state".into(), "value".into()];
        header.extend(spec.parameters.iter().map(|p| csv_field(&p.name, true)));
        header.extend(
            [
                "epochs",
                "attempt",
                "worker",
                "created_ms",
                "started_ms",
                "finished_ms",
                "duration_s",
                "peak_device_memory_bytes",
                "error",
            ]
            .map(String::from),
        );
        header.join(",") + "\n"
    })?;
    let mut from = 0usize;
    loop {
        let (chunk, done) = app.shared.lock().with_trials(&name, |spec, trials| {
            let start = from.min(trials.len());
            let end = (start + CSV_CHUNK).min(trials.len());
            (trials[start..end].iter().map(|t| csv_row(spec, t)).collect::<String>(), end >= trials.len())
        })?;
        out.push_str(&chunk);
        from += CSV_CHUNK;
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}-trials.csv\"")),
        ],
        out,
    )
        .into_response())
}
