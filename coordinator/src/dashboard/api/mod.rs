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

mod analysis;
mod csv;
mod models;
pub use analysis::*;
pub use csv::*;
pub use models::*;

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
mod tests;
