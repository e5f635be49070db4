//! Views computed over a study's trials: configurations over seed repeats and folds, and
//! hyperparameter importance (cached per study until another trial completes).

use super::*;

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
pub(super) type CachedReply = (StatusCode, Value);

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

pub(super) fn importance_json(list: &[ParamImportance]) -> Vec<Value> {
    list.iter().map(|p| json!({ "name": p.name, "importance": p.importance, "stddev": p.stddev })).collect()
}
