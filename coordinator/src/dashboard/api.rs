//! The dashboard's JSON API. Every reply is read from the registry under its lock, a bounded
//! page at a time (trials by number, studies by id), so no request holds the lock for long and
//! none touches SQLite. Errors are `{"error": "one line"}` with a 4xx/5xx status.
//!
//! Completed trials whose worker sent dev-set predictions carry the 95 % bootstrap interval
//! of the objective (`ci`), computed once when they completed. Rows say whether a trial's
//! interval overlaps the best trial's (`overlaps_best`: the two may be tied within noise);
//! per-class scores and the confusion matrix are derived for one trial at a time, on its own
//! page, outside the registry lock.
//!
//! Completed trials may also carry their kept model's scores on the study's held-out test set
//! (`test_metrics`, whole on the single-trial reply; rows carry the objective's counterpart as
//! `test_value`). They are shown beside the dev scores, never used to rank or choose: the
//! dev-to-test gap is the selection optimism of picking the best of many on the dev set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{CallerRole, Gate};
use super::AppState;
use crate::access::{Lookup, Role};
use crate::error::CoordinatorError;
use crate::evaluation::{class_name, summary_to_proto};
use crate::importance::{importances, ParamImportance};
use crate::model::{Metrics, StudySummary, Trial, TrialEvaluation, TrialState};
use crate::params::{ParamValue, Params};
use crate::registry::{blob_of, Registry};
use crate::spec::{Domain, SamplerKind, StudySpec};
use crate::text::{bounded, is_study_name, quote};
use bertsweep_evaluation::Interval;

/// Most studies one `/api/studies` page carries.
pub const MAX_STUDIES_PAGE: u64 = 500;
/// Most trials one `/api/studies/{name}/trials` page carries.
pub const MAX_TRIALS_PAGE: u64 = 2000;
/// Trials written to the CSV per lock (the lock is released between chunks).
const CSV_CHUNK: usize = 1000;
/// Seed of the importance forest: the same as `bertsweep importance`'s default.
const IMPORTANCE_SEED: u64 = 0;
/// Characters of a trial's error the trial rows carry (the trial page has it whole).
const ROW_ERROR_CHARS: usize = 200;

/// An error reply.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": bounded(&self.1) }))).into_response()
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        let status = match &e {
            CoordinatorError::NotFound(_) => StatusCode::NOT_FOUND,
            CoordinatorError::Spec(_) | CoordinatorError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            CoordinatorError::StudyExists(_) | CoordinatorError::FailedPrecondition(_) => StatusCode::CONFLICT,
        };
        ApiError(status, e.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        let status = match s.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, s.message().to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Refuses a name that cannot be a study before it reaches the registry.
pub fn check_name(name: &str) -> ApiResult<()> {
    if is_study_name(name) {
        Ok(())
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no study named {}; the studies page lists them", quote(name))))
    }
}

/// A numeric query parameter: absent → `default`; not a number or above `max` → a 400 that
/// says what is allowed.
fn number_param(query: &HashMap<String, String>, key: &str, default: u64, max: u64) -> ApiResult<u64> {
    let Some(text) = query.get(key) else { return Ok(default) };
    match text.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{key} must be a whole number from 0 to {max}, not {}", quote(text)),
        )),
    }
}

/// A study as the pages show it.
#[derive(Debug, Serialize)]
pub struct StudyRow {
    name: String,
    state: &'static str,
    reason: String,
    created_ms: i64,
    finished_ms: Option<i64>,
    sampler: &'static str,
    early_stopping: &'static str,
    objective: Value,
    counts: Value,
    max_trials: Option<u64>,
    repeats: u32,
    best_value: Option<f64>,
    best_trial: Option<u32>,
}

impl StudyRow {
    /// The row of `summary`, whose best trial is `best_trial`.
    pub fn new(summary: &StudySummary, best_trial: Option<u32>) -> Self {
        let spec = &summary.spec;
        let c = summary.counts;
        let max_trials = match spec.sampler {
            SamplerKind::Grid => u64::from(spec.budget.max_trials).min(summary.grid_size),
            _ => u64::from(spec.budget.max_trials),
        };
        StudyRow {
            name: summary.record.name.clone(),
            state: summary.record.state.as_str(),
            reason: summary.record.reason.clone(),
            created_ms: summary.record.created_ms,
            finished_ms: summary.record.finished_ms,
            sampler: spec.sampler.as_str(),
            early_stopping: spec.early_stopping.as_str(),
            objective: json!({
                "metric": spec.objective.metric,
                "direction": if spec.objective.maximize { "maximize" } else { "minimize" },
            }),
            counts: json!({
                "pending": c.pending, "running": c.running, "completed": c.completed,
                "pruned": c.pruned, "failed": c.failed, "stopped": c.stopped, "paused": c.paused,
            }),
            max_trials: (max_trials > 0).then_some(max_trials),
            repeats: spec.repeats,
            best_value: summary.best_value,
            best_trial,
        }
    }

    /// The row of study `name` read from `registry`.
    pub fn read(registry: &Registry, name: &str) -> ApiResult<Self> {
        let summary = registry.study(name)?;
        let best = registry.best_trial(name)?.map(|t| t.number);
        Ok(StudyRow::new(&summary, best))
    }
}

/// A trial's place in its life, growing with every change a watcher can see, so a page that
/// receives an event older than what it already shows (read between the change and its
/// broadcast) can ignore it: `[lease token, step]` where the step is 1 + epochs while running
/// and grows again when the lease ends.
fn revision(trial: &Trial) -> [u64; 2] {
    let step = match trial.state {
        TrialState::Pending if trial.lease_token == 0 => 0,
        TrialState::Running => 1 + u64::from(trial.last_epoch()).min(999_999),
        TrialState::Pending => 1_000_000,
        _ => 2_000_000,
    };
    [trial.lease_token, step]
}

/// A trial in a page of rows: what the charts and the table need.
#[derive(Debug, Serialize)]
pub struct TrialRow {
    number: u32,
    state: &'static str,
    params: Params,
    value: Option<f64>,
    /// `[epoch, objective]` of the current attempt.
    curve: Vec<(u32, f64)>,
    attempt: u32,
    worker: String,
    created_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    error: String,
    has_model: bool,
    /// The most device memory an attempt reported, in bytes (0: none reported).
    peak_device_memory_bytes: u64,
    /// The 95 % bootstrap interval of the objective, `[low, high]`, from the dev-set
    /// predictions the trial's worker sent; null without predictions (or when the metric is
    /// undefined on most resamples).
    ci: Option<[f64; 2]>,
    /// Whether `ci` overlaps the best trial's interval, so the two may be tied within noise:
    /// false for the best trial itself and whenever either has no interval. Trial pages and
    /// the single-trial reply carry it; live `trial` events leave it out (the best can change
    /// with any event, so a page compares `ci` with the best row's itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    overlaps_best: Option<bool>,
    /// The kept model's score on the held-out test set for the objective's metric
    /// ([`test_counterpart`]); null when the trial has none. Shown only, never ranked by.
    test_value: Option<f64>,
    rev: [u64; 2],
}

/// The test-set name of dev metric `metric`: `eval_X` → `test_X`; None for other names.
fn test_counterpart(metric: &str) -> Option<String> {
    metric.strip_prefix("eval_").map(|m| format!("test_{m}"))
}

/// `trial`'s test-set score for `metric` (a dev metric), when it has one.
fn test_value_of(metric: &str, trial: &Trial) -> Option<f64> {
    if trial.test_metrics.is_empty() {
        return None;
    }
    trial.test_metrics.get(&test_counterpart(metric)?).copied()
}

/// A trial's objective interval, when it has one.
fn interval_of(trial: &Trial) -> Option<Interval> {
    trial.evaluation.as_ref().and_then(|e| e.interval)
}

/// The study's best trial (`Registry::best_trial`): its number and objective interval.
#[derive(Debug, Clone, Copy)]
pub struct BestInterval {
    number: u32,
    interval: Option<Interval>,
}

impl BestInterval {
    /// The best trial of study `name`, or None while no trial has completed with a value.
    fn read(registry: &Registry, name: &str) -> ApiResult<Option<Self>> {
        Ok(registry.best_trial(name)?.map(|t| BestInterval { number: t.number, interval: interval_of(&t) }))
    }

    /// Whether `trial` (not the best itself) has an interval overlapping the best's.
    fn overlapped_by(best: Option<&Self>, trial: &Trial) -> bool {
        match (best, interval_of(trial)) {
            (Some(b), Some(i)) => trial.number != b.number && b.interval.is_some_and(|bi| bi.overlaps(&i)),
            _ => false,
        }
    }
}

impl TrialRow {
    /// The row of `trial` under `spec`'s objective.
    pub fn new(spec: &StudySpec, trial: &Trial) -> Self {
        let metric = &spec.objective.metric;
        TrialRow {
            number: trial.number,
            state: trial.state.as_str(),
            params: trial.params.clone(),
            value: trial.value,
            curve: trial.intermediate.iter().filter_map(|(e, m)| Some((*e, *m.get(metric)?))).collect(),
            attempt: trial.attempt,
            worker: trial.worker_id.clone(),
            created_ms: trial.created_ms,
            started_ms: trial.started_ms,
            finished_ms: trial.finished_ms,
            error: trial.error.chars().take(ROW_ERROR_CHARS).collect(),
            has_model: blob_of(&trial.artifact).is_some(),
            peak_device_memory_bytes: trial.peak_device_memory_bytes,
            ci: interval_of(trial).map(|i| [i.low, i.high]),
            overlaps_best: None,
            test_value: test_value_of(metric, trial),
            rev: revision(trial),
        }
    }

    /// The row with `overlaps_best` against `best` (see the field).
    pub fn compared(mut self, best: Option<&BestInterval>, trial: &Trial) -> Self {
        self.overlaps_best = Some(BestInterval::overlapped_by(best, trial));
        self
    }
}

/// `GET /api/session`: whether the dashboard needs a token, the caller's role (`viewer`,
/// `admin`, or null when open) and whether the page should offer to stop studies (an admin's
/// session; stopping still takes the admin token itself).
pub async fn session(State(app): State<Arc<AppState>>, caller: Option<Extension<CallerRole>>) -> Json<Value> {
    let auth = app.gate.required();
    let role = caller.and_then(|c| c.0 .0);
    Json(json!({
        "auth": auth,
        "role": role.map(Role::name),
        "can_stop": role == Some(Role::Admin),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /api/studies?from=ID&limit=N`.
pub async fn studies(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let from = number_param(&query, "from", 0, u64::MAX)?;
    let limit = number_param(&query, "limit", 100, MAX_STUDIES_PAGE)?.max(1) as usize;
    let registry = app.shared.lock();
    let (page, next) = registry.studies_page(from, limit, None);
    let rows = page
        .iter()
        .map(|s| {
            let best = registry.best_trial(&s.record.name).ok().flatten().map(|t| t.number);
            StudyRow::new(s, best)
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({ "studies": rows, "next": next })))
}

/// One parameter's domain as the charts need it (log axes, categories).
fn parameter_json(name: &str, domain: &Domain) -> Value {
    match domain {
        Domain::Fixed(v) => {
            json!({"name": name, "kind": "fixed", "low": null, "high": null, "log": false, "integer": false, "values": [v]})
        }
        Domain::Categorical(values) => {
            json!({"name": name, "kind": "categorical", "low": null, "high": null, "log": false, "integer": false, "values": values})
        }
        Domain::Range(r) => json!({
            "name": name, "kind": "range", "low": r.min, "high": r.max, "log": r.log,
            "integer": r.kind == crate::params::ParamKind::Int, "values": [],
        }),
    }
}

/// The most epochs any trial of `spec` can train.
fn max_epochs(spec: &StudySpec) -> Option<f64> {
    let p = spec.parameters.iter().find(|p| p.name == "num_train_epochs")?;
    match &p.domain {
        Domain::Fixed(v) => v.as_f64(),
        Domain::Categorical(values) => values.iter().filter_map(ParamValue::as_f64).reduce(f64::max),
        Domain::Range(r) => Some(r.max),
    }
}

/// `GET /api/studies/{name}`.
pub async fn study(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let registry = app.shared.lock();
    let row = StudyRow::read(&registry, &name)?;
    let spec = registry.study(&name)?.spec;
    let parameters: Vec<Value> = spec.parameters.iter().map(|p| parameter_json(&p.name, &p.domain)).collect();
    Ok(Json(json!({ "study": row, "parameters": parameters, "max_epochs": max_epochs(&spec) })))
}

/// `GET /api/studies/{name}/trials?from=NUMBER&limit=N`.
pub async fn trials(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let from = number_param(&query, "from", 0, u64::from(u32::MAX))? as usize;
    let limit = number_param(&query, "limit", 500, MAX_TRIALS_PAGE)?.max(1) as usize;
    let registry = app.shared.lock();
    let best = BestInterval::read(&registry, &name)?;
    let (rows, total) = registry.with_trials(&name, |spec, trials| {
        let start = from.min(trials.len());
        let end = start.saturating_add(limit).min(trials.len());
        let rows = trials[start..end].iter().map(|t| TrialRow::new(spec, t).compared(best.as_ref(), t));
        (rows.collect::<Vec<_>>(), trials.len())
    })?;
    drop(registry);
    let next = (from + rows.len() < total && !rows.is_empty()).then_some(from + rows.len());
    Ok(Json(json!({ "trials": rows, "total": total, "next": next })))
}

/// The trial `number` of study `name` (cloned), with its study's spec.
fn one_trial(app: &AppState, name: &str, number: &str) -> ApiResult<(StudySpec, Trial)> {
    check_name(name)?;
    let n: u32 = number.parse().map_err(|_| {
        ApiError(StatusCode::NOT_FOUND, format!("trial numbers are whole numbers from 0; {} is not one", quote(number)))
    })?;
    app.shared
        .lock()
        .with_trials(name, |spec, trials| trials.get(n as usize).map(|t| (spec.clone(), t.clone())))?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("study {} has no trial {n}", quote(name))))
}

fn epochs_json(intermediate: &std::collections::BTreeMap<u32, Metrics>) -> Vec<Value> {
    intermediate.iter().map(|(epoch, metrics)| json!({ "epoch": epoch, "metrics": metrics })).collect()
}

/// The manifest of the model the coordinator keeps for `trial`, or None (no `blob:` artifact,
/// or its manifest is gone).
fn kept_manifest(app: &AppState, trial: &Trial) -> Option<bertsweep_transfer::Manifest> {
    app.shared.blobs.dir().read_manifest(&blob_of(&trial.artifact)?).ok()
}

/// Checks (off the runtime) that every file of a kept model matches its digest before any of
/// it is served: a corrupt blob is quarantined and the download refused in one line.
async fn check_model_intact(app: &Arc<AppState>, digests: Vec<bertsweep_transfer::Digest>) -> ApiResult<()> {
    let shared = app.shared.clone();
    let bad = tokio::task::spawn_blocking(move || {
        digests.into_iter().find(|d| shared.blobs.check_stored(d) != crate::blobs::Stored::Intact)
    })
    .await
    .map_err(internal)?;
    match bad {
        None => Ok(()),
        Some(d) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "blob {} of this model is missing or corrupted on the coordinator (a corrupt copy is quarantined); the model cannot be served whole",
                d.short()
            ),
        )),
    }
}

/// The files of a trial's model kept on the coordinator, or None.
fn model_files(app: &AppState, name: &str, trial: &Trial) -> Option<Vec<Value>> {
    let manifest = kept_manifest(app, trial)?;
    Some(
        manifest
            .files
            .iter()
            .map(|f| {
                let url = format!(
                    "/api/studies/{name}/trials/{}/model/{}",
                    trial.number,
                    f.path.split('/').map(percent_encode).collect::<Vec<_>>().join("/")
                );
                json!({ "path": f.path, "size": f.size, "url": url })
            })
            .collect(),
    )
}

/// Percent-encodes one path segment (file names in a model directory).
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/studies/{name}/trials/{number}`.
pub async fn trial(
    State(app): State<Arc<AppState>>,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (spec, trial) = one_trial(&app, &name, &number)?;
    // Read a moment after the trial (the lock is not held across both; a best that changed in
    // between shows on the next read, as with any live change).
    let best = BestInterval::read(&app.shared.lock(), &name)?;
    let row = TrialRow::new(&spec, &trial).compared(best.as_ref(), &trial);
    let mut detail = serde_json::to_value(row).map_err(internal)?;
    let earlier: Vec<Value> = trial
        .earlier_attempts
        .iter()
        .map(|e| json!({ "attempt": e.attempt, "epoch": e.epoch, "metrics": e.metrics }))
        .collect();
    let extra = json!({
        "error": trial.error,
        "metrics": trial.metrics,
        "epochs": epochs_json(&trial.intermediate),
        "earlier_attempts": earlier,
        "artifact": trial.artifact,
        "model_files": model_files(&app, &name, &trial),
        "model_tar_url": blob_of(&trial.artifact).map(|_| format!("/api/studies/{name}/trials/{}/model.tar", trial.number)),
        "lease_expires_ms": trial.lease_expires_ms,
        // O(examples × classes) for this one trial, outside the registry lock.
        "evaluation": trial.evaluation.as_deref().map(|e| evaluation_json(&spec.objective.metric, e)),
        // The kept model's held-out test scores (`test_…`), shown beside `metrics`; null without.
        "test_metrics": (!trial.test_metrics.is_empty()).then_some(&trial.test_metrics),
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut detail, extra) {
        d.extend(e);
    }
    Ok(Json(detail))
}

/// What the trial page shows of a trial's dev-set evaluation: the epoch it comes from, the
/// examples, the objective's interval, per-class scores (empty over
/// [`crate::evaluation::MAX_REPORTED_CLASSES`] classes) and the confusion matrix (rows: true
/// class, columns: predicted, both in class-id order and named by `confusion.classes`; null
/// over [`crate::evaluation::MAX_CONFUSION_CLASSES`] classes).
fn evaluation_json(metric: &str, e: &TrialEvaluation) -> Value {
    let summary = summary_to_proto(e);
    let classes = e.predictions.classes();
    let per_class: Vec<Value> = summary
        .classes
        .iter()
        .map(|c| json!({ "name": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support }))
        .collect();
    let confusion = (!summary.confusion.is_empty() && classes > 0).then(|| {
        let names: Vec<String> = (0..classes).map(|k| class_name(e, k)).collect();
        let matrix: Vec<&[u64]> = summary.confusion.chunks(classes).collect();
        json!({ "classes": names, "matrix": matrix })
    });
    json!({
        "epoch": summary.epoch,
        "examples": summary.examples,
        "metric": metric,
        "ci": e.interval.map(|i| [i.low, i.high]),
        "class_count": classes,
        "per_class": per_class,
        "confusion": confusion,
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `GET /api/studies/{name}/trials/{number}/model/{path}`: one file of a kept model.
pub async fn model_file(
    State(app): State<Arc<AppState>>,
    Path((name, number, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (_, trial) = one_trial(&app, &name, &number)?;
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("trial {} of study {} has no kept model file {}", trial.number, quote(&name), quote(&path)),
        )
    };
    let manifest = kept_manifest(&app, &trial).ok_or_else(missing)?;
    let entry = manifest.files.iter().find(|f| f.path == path).ok_or_else(missing)?;
    check_model_intact(&app, vec![entry.digest()]).await?;
    let file = tokio::fs::File::open(app.shared.blobs.dir().path(&entry.digest())).await.map_err(|_| missing())?;
    let base = path.rsplit('/').next().unwrap_or("model");
    let safe: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, entry.size.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{safe}\"")),
        ],
        body,
    )
        .into_response())
}

/// The header of one regular file in the archive: a ustar block, preceded by a pax extended
/// header (POSIX.1-2001, read by GNU tar, bsdtar and Python's `tarfile`) when the path is not
/// ASCII or does not fit ustar's name fields, or the size needs more than 11 octal digits.
fn tar_entry_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let split = if path.is_ascii() { ustar_split(path) } else { None };
    let big = size >= 8u64.pow(11);
    let mut out = Vec::with_capacity(1536);
    if split.is_none() || big {
        let mut records = Vec::new();
        if split.is_none() {
            records.extend(pax_record("path", path));
        }
        if big {
            records.extend(pax_record("size", &size.to_string()));
        }
        out.extend(ustar_block("", "PaxHeader", records.len() as u64, mtime, b'x'));
        let padded = records.len().div_ceil(512) * 512;
        records.resize(padded, 0);
        out.extend(records);
    }
    let fallback;
    let (prefix, name) = match split {
        Some(parts) => parts,
        None => {
            // Readers use the pax path; this is only what a ustar-only reader would show.
            fallback = ascii_tail(path, 100);
            ("", fallback.as_str())
        }
    };
    out.extend(ustar_block(prefix, name, if big { 0 } else { size }, mtime, b'0'));
    out
}

/// ustar's (prefix, name) for an ASCII path: the name alone when it fits 100 bytes, else split
/// at a `/` into a prefix of at most 155 bytes and a name of at most 100.
fn ustar_split(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && !name.is_empty() && name.len() <= 100)
}

/// The last characters of `path` (at most `max` bytes), non-ASCII ones as `_`.
fn ascii_tail(path: &str, max: usize) -> String {
    let ascii: String = path.chars().map(|c| if c.is_ascii() && c != '\0' { c } else { '_' }).collect();
    ascii[ascii.len().saturating_sub(max)..].trim_start_matches('/').to_string()
}

/// One pax record, `<length> <key>=<value>\n`, its length counting its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut length = body + body.to_string().len();
    if (body + length.to_string().len()) != length {
        length = body + length.to_string().len();
    }
    format!("{length} {key}={value}\n").into_bytes()
}

/// One 512-byte ustar header block; `prefix` and `name` must fit (155 and 100 bytes).
fn ustar_block(prefix: &str, name: &str, size: u64, mtime: u64, kind: u8) -> [u8; 512] {
    let mut block = [0u8; 512];
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}", width = field.len() - 1);
        field[..text.len()].copy_from_slice(text.as_bytes());
    };
    block[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut block[100..108], 0o644);
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], mtime);
    block[156] = kind;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field as eight spaces.
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    block
}

/// `GET /api/studies/{name}/trials/{number}/model.tar`: the whole kept model as one tar
/// archive (uncompressed: safetensors weights do not compress), streamed file by file, which
/// `tar -xf` unpacks into the directory `transformers` loads.
pub async fn model_tar(
    State(app): State<Arc<AppState>>,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, trial) = one_trial(&app, &name, &number)?;
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("trial {} of study {} has no model kept on the coordinator", trial.number, quote(&name)),
        )
    };
    let manifest = kept_manifest(&app, &trial).ok_or_else(missing)?;
    let mtime = trial.finished_ms.unwrap_or(0).max(0) as u64 / 1000;
    check_model_intact(&app, manifest.files.iter().map(|f| f.digest()).collect()).await?;
    let mut parts = Vec::with_capacity(manifest.files.len());
    let mut total = 1024u64;
    for f in &manifest.files {
        let header = tar_entry_header(&f.path, f.size, mtime);
        total += header.len() as u64 + f.size.div_ceil(512) * 512;
        parts.push((header, app.shared.blobs.dir().path(&f.digest()), f.size));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        for (header, path, size) in parts {
            if tx.send(Ok(bytes::Bytes::from(header))).await.is_err() {
                return;
            }
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file.take(size),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(Ok(bytes::Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let pad = (512 - (size % 512) as usize) % 512;
            if pad > 0 && tx.send(Ok(bytes::Bytes::from(vec![0u8; pad]))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(bytes::Bytes::from(vec![0u8; 1024]))).await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, total.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}-trial-{}-model.tar\"", trial.number)),
        ],
        body,
    )
        .into_response())
}

/// `GET /api/studies/{name}/configurations`: each configuration's seed repeats, with every
/// seed's point (and its objective interval, `ci`).
///
/// `best` marks the configuration holding the best trial. `overlaps_best` marks the others
/// when any of their completed trials' intervals overlaps the best trial's interval: each
/// interval is one trial's (one seed's) bootstrap over dev examples, and a hull or union of
/// several seeds' intervals would be no confidence interval of anything, so configurations
/// are compared trial by trial against the best trial. False for the best configuration
/// itself, and wherever intervals are missing.
pub async fn configurations(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let registry = app.shared.lock();
    let configurations = registry.configurations(&name)?;
    let best = BestInterval::read(&registry, &name)?;
    let list = registry.with_trials(&name, |_, trials| {
        configurations
            .iter()
            .map(|c| {
                let completed = || {
                    c.trials.iter().filter_map(|&n| trials.get(n as usize)).filter(|t| t.state == TrialState::Completed)
                };
                let points: Vec<Value> = completed()
                    .filter_map(|t| {
                        let ci = interval_of(t).map(|i| [i.low, i.high]);
                        Some(json!({ "trial": t.number, "seed": t.params.get("seed"), "value": t.value?, "ci": ci }))
                    })
                    .collect();
                let is_best = best.as_ref().is_some_and(|b| c.trials.contains(&b.number));
                let overlaps = !is_best && completed().any(|t| BestInterval::overlapped_by(best.as_ref(), t));
                json!({
                    "params": c.params, "trials": c.trials, "points": points, "mean": c.mean, "std": c.std,
                    "best": is_best, "overlaps_best": overlaps,
                })
            })
            .collect::<Vec<_>>()
    })?;
    Ok(Json(json!({ "configurations": list })))
}

/// Importances per study, keyed by how many trials had completed when they were computed
/// (completed trials never change, so the count identifies the input).
#[derive(Default)]
pub struct ImportanceCache {
    entries: Mutex<HashMap<String, (usize, Arc<CachedReply>)>>,
}

/// A computed reply: its status and body.
type CachedReply = (StatusCode, Value);

impl ImportanceCache {
    fn get(&self, name: &str, completed: usize) -> Option<Arc<CachedReply>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(name).filter(|(n, _)| *n == completed).map(|(_, v)| v.clone())
    }

    fn put(&self, name: &str, completed: usize, reply: Arc<CachedReply>) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), (completed, reply));
    }
}

/// `GET /api/studies/{name}/importance`: fANOVA importances (the same numbers as
/// `bertsweep importance NAME`), or 422 with why they cannot be computed yet.
pub async fn importance(State(app): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<Response> {
    check_name(&name)?;
    let (spec, completed): (StudySpec, Vec<(Params, f64)>) = app.shared.lock().with_trials(&name, |spec, trials| {
        let completed = trials
            .iter()
            .filter(|t| t.state == TrialState::Completed)
            .filter_map(|t| Some((t.params.clone(), t.value?)))
            .collect();
        (spec.clone(), completed)
    })?;
    let count = completed.len();
    let reply = match app.importance.get(&name, count) {
        Some(reply) => reply,
        None => {
            let computed = tokio::task::spawn_blocking(move || {
                match importances(&spec, completed.iter().map(|(p, v)| (p, *v)), IMPORTANCE_SEED) {
                    Ok(list) => {
                        (StatusCode::OK, json!({ "importances": importance_json(&list), "trials_used": count.min(crate::importance::MAX_TRIALS) }))
                    }
                    Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": e.to_string() })),
                }
            })
            .await
            .map_err(internal)?;
            let reply = Arc::new(computed);
            app.importance.put(&name, count, reply.clone());
            reply
        }
    };
    Ok((reply.0, Json(reply.1.clone())).into_response())
}

fn importance_json(list: &[ParamImportance]) -> Vec<Value> {
    list.iter().map(|p| json!({ "name": p.name, "importance": p.importance, "stddev": p.stddev })).collect()
}

/// One CSV field: quoted when it holds a separator, quote or line break; text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
fn csv_field(text: &str, is_text: bool) -> String {
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

fn csv_row(spec: &StudySpec, trial: &Trial) -> String {
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

/// `POST /api/studies/{name}/stop`: needs an admin's token in a bearer header on this very
/// request; a session cookie alone only reads.
pub async fn stop(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    if !app.gate.required() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("this coordinator has no token, so its dashboard only reads; stop the study with `bertsweep study stop {name}`"),
        ));
    }
    match Gate::bearer(&headers).map(|token| app.gate.lookup(token)) {
        Some(Lookup::Role(Role::Admin)) => {}
        Some(Lookup::Role(role)) => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("this token has role {role}; stopping a study needs admin"),
            ))
        }
        Some(Lookup::Wrong | Lookup::Open) => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "wrong token; stopping needs the coordinator's token".into(),
            ))
        }
        None => {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "stopping a study needs the coordinator's token in Authorization: Bearer TOKEN".into(),
            ))
        }
    }
    app.shared.apply(|r, now| r.stop_study(&name, now)).await?;
    let row = StudyRow::read(&app.shared.lock(), &name)?;
    Ok(Json(json!({ "study": row })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_follow_ustar() {
        let h = tar_entry_header("config.json", 1234, 1_700_000_000);
        assert_eq!(h.len(), 512, "a short ASCII name needs no pax header");
        assert_eq!(&h[..11], b"config.json");
        assert_eq!(&h[124..135], format!("{:011o}", 1234).as_bytes());
        assert_eq!(&h[257..263], b"ustar\0");
        let sum: u32 =
            h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let h = tar_entry_header(&long, 1, 0);
        assert_eq!(h.len(), 512);
        assert_eq!(&h[..90], "f".repeat(90).as_bytes());
        assert_eq!(&h[345..465], "d".repeat(120).as_bytes());
        assert_eq!(tar_entry_header(&"x".repeat(101), 1, 0).len(), 1536, "pax header, its data, the entry");
        for n in [1usize, 5, 90, 95, 96, 97, 990, 995, 996] {
            let record = pax_record("path", &"p".repeat(n));
            let text = String::from_utf8(record.clone()).unwrap();
            let length: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(length, record.len(), "{text:?}");
        }
    }

    /// Archives with long, deep and non-ASCII names (a multi-byte character across ustar's
    /// 100- and 155-byte marks among them) unpack to the same names and bytes with GNU tar and
    /// Python's tarfile.
    #[test]
    fn odd_names_round_trip_through_gnu_tar_and_python() {
        let names = [
            "config.json".to_string(),
            format!("{}é/{}", "d".repeat(154), "f".repeat(20)),
            format!("{}/{}ü.bin", "e".repeat(60), "g".repeat(99)),
            format!("{}/{}", "ß".repeat(80), "h".repeat(120)),
            "日本語/モデル.safetensors".to_string(),
            format!("{}/x", ["deep"; 60].join("/")),
        ];
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("model.tar");
        let mut bytes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let content = format!("file {i}").repeat(i + 1);
            bytes.extend(tar_entry_header(name, content.len() as u64, 1_700_000_000));
            bytes.extend(content.as_bytes());
            bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        }
        bytes.extend([0u8; 1024]);
        std::fs::write(&archive, &bytes).unwrap();
        let check = |out: &std::path::Path| {
            for (i, name) in names.iter().enumerate() {
                let got = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got, format!("file {i}").repeat(i + 1), "{name}");
            }
        };
        let gnu = dir.path().join("gnu");
        std::fs::create_dir(&gnu).unwrap();
        let status = std::process::Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&gnu).status();
        match status {
            Ok(s) => {
                assert!(s.success(), "GNU tar refused the archive");
                check(&gnu);
            }
            Err(e) => eprintln!("skipping GNU tar: {e}"),
        }
        let py = dir.path().join("py");
        let script =
            "import sys, tarfile\nwith tarfile.open(sys.argv[1]) as t:\n    t.extractall(sys.argv[2], filter='data')\n";
        match std::process::Command::new("python3").args(["-c", script]).arg(&archive).arg(&py).status() {
            Ok(s) => {
                assert!(s.success(), "Python's tarfile refused the archive");
                check(&py);
            }
            Err(e) => eprintln!("skipping Python: {e}"),
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_formula_guarded() {
        assert_eq!(csv_field("plain", true), "plain");
        assert_eq!(csv_field("a,b", true), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()", true), "'=cmd()");
        assert_eq!(csv_field("-0.5", false), "-0.5");
    }

    #[test]
    fn revisions_grow_through_a_trial_life() {
        let mut t = crate::model::test_trial(0, Params::new(), TrialState::Pending);
        let mut seen = vec![revision(&t)];
        t.state = TrialState::Running;
        t.lease_token = 7;
        seen.push(revision(&t));
        t.intermediate.insert(1, Metrics::new());
        seen.push(revision(&t));
        t.state = TrialState::Pending; // lease lost, requeued
        t.archive_attempt();
        seen.push(revision(&t));
        t.state = TrialState::Running;
        t.lease_token = 9;
        seen.push(revision(&t));
        t.state = TrialState::Completed;
        seen.push(revision(&t));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    fn evaluated(number: u32, interval: Option<(f64, f64)>) -> Trial {
        let mut t = crate::model::test_trial(number, Params::new(), TrialState::Completed);
        let predictions = bertsweep_testkit::dev_predictions(0.8, 2, 30, number);
        let mut e = crate::evaluation::evaluate(predictions, "eval_accuracy", 0).unwrap();
        e.interval = interval.map(|(low, high)| Interval { low, high });
        t.evaluation = Some(Arc::new(e));
        t
    }

    #[test]
    fn rows_say_whether_their_interval_overlaps_the_bests() {
        let best = evaluated(0, Some((0.80, 0.90)));
        let best = BestInterval { number: best.number, interval: interval_of(&best) };
        let spec = crate::spec::parse_study(&bertsweep_testkit::random_study("r", 4, 1)).unwrap();
        let row = |t: &Trial| serde_json::to_value(TrialRow::new(&spec, t).compared(Some(&best), t)).unwrap();
        let itself = row(&evaluated(0, Some((0.80, 0.90))));
        assert_eq!((itself["ci"].clone(), itself["overlaps_best"].clone()), (json!([0.80, 0.90]), json!(false)));
        assert_eq!(row(&evaluated(1, Some((0.85, 0.95))))["overlaps_best"], json!(true));
        assert_eq!(row(&evaluated(2, Some((0.90, 0.91))))["overlaps_best"], json!(true), "touching ends share a point");
        assert_eq!(row(&evaluated(3, Some((0.70, 0.79))))["overlaps_best"], json!(false));
        let none = row(&evaluated(4, None));
        assert_eq!((none["ci"].clone(), none["overlaps_best"].clone()), (Value::Null, json!(false)));
        let plain = crate::model::test_trial(5, Params::new(), TrialState::Completed);
        assert_eq!(row(&plain)["overlaps_best"], json!(false));
        let no_best_interval = BestInterval { number: 0, interval: None };
        let t = evaluated(1, Some((0.85, 0.95)));
        assert!(!BestInterval::overlapped_by(Some(&no_best_interval), &t));
        assert!(!BestInterval::overlapped_by(None, &t));
        // Live events carry no view of the best: the field is left out.
        assert!(serde_json::to_value(TrialRow::new(&spec, &t)).unwrap().get("overlaps_best").is_none());
    }

    #[test]
    fn rows_carry_the_objectives_test_score_only() {
        let spec = crate::spec::parse_study(&bertsweep_testkit::random_study("r", 4, 1)).unwrap();
        let row = |t: &Trial| serde_json::to_value(TrialRow::new(&spec, t)).unwrap();
        let mut t = crate::model::test_trial(0, Params::new(), TrialState::Completed);
        assert_eq!(row(&t)["test_value"], Value::Null, "no test scores");
        t.test_metrics = [("test_accuracy", 0.81), ("test_loss", 0.4)].map(|(k, v)| (k.to_string(), v)).into();
        assert_eq!(row(&t)["test_value"], json!(0.81), "eval_accuracy's counterpart");
        t.test_metrics.remove("test_accuracy");
        assert_eq!(row(&t)["test_value"], Value::Null, "scored, but not on the objective's metric");
        assert_eq!(test_counterpart("eval_f1").as_deref(), Some("test_f1"));
        assert_eq!(test_counterpart("accuracy"), None, "only eval_ metrics have a test counterpart");
    }

    #[test]
    fn evaluations_show_per_class_scores_and_a_named_confusion_matrix() {
        let t = evaluated(1, Some((0.7, 0.9)));
        let e = t.evaluation.as_deref().unwrap();
        let v = evaluation_json("eval_accuracy", e);
        assert_eq!(
            (v["epoch"].as_u64(), v["examples"].as_u64(), v["class_count"].as_u64()),
            (Some(2), Some(30), Some(3))
        );
        assert_eq!(v["ci"], json!([0.7, 0.9]));
        let per_class = v["per_class"].as_array().unwrap();
        assert_eq!(
            per_class.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(),
            bertsweep_testkit::DEV_CLASSES
        );
        assert_eq!(per_class.iter().map(|c| c["support"].as_u64().unwrap()).sum::<u64>(), 30);
        assert_eq!(v["confusion"]["classes"], json!(bertsweep_testkit::DEV_CLASSES));
        let matrix = v["confusion"]["matrix"].as_array().unwrap();
        assert_eq!(matrix.len(), 3);
        let flat: Vec<u64> =
            matrix.iter().flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap())).collect();
        assert_eq!(flat, e.predictions.confusion_matrix(), "rows are true classes, columns predicted");
        for (k, row) in matrix.iter().enumerate() {
            let total: u64 = row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
            assert_eq!(total, per_class[k]["support"].as_u64().unwrap(), "row {k} sums to its support");
        }
        // Past 32 classes there is no matrix (and past 64 no per-class rows).
        let wide = crate::evaluation::evaluate(pb_predictions(40), "eval_accuracy", 0).unwrap();
        let v = evaluation_json("eval_accuracy", &wide);
        assert!(v["confusion"].is_null());
        assert_eq!(v["per_class"].as_array().unwrap().len(), 40);
        assert_eq!(v["per_class"][39]["name"], "39", "unnamed classes go by their id");
    }

    fn pb_predictions(classes: u32) -> bertsweep_proto::v1::DevPredictions {
        let n = classes as usize;
        let mut probabilities = vec![0.0f32; n * n];
        (0..n).for_each(|i| probabilities[i * n + i] = 1.0);
        bertsweep_proto::v1::DevPredictions {
            epoch: 1,
            classes,
            labels: (0..classes).collect(),
            probabilities,
            class_weights: vec![],
            class_names: vec![],
        }
    }

    #[test]
    fn model_file_names_are_percent_encoded() {
        assert_eq!(percent_encode("model.safetensors"), "model.safetensors");
        assert_eq!(percent_encode("a b#?"), "a%20b%23%3F");
    }
}
