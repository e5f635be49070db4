//! Hyperparameter importance by fANOVA (Hutter et al., 2014, via the `fanova` crate): how much
//! of the variance of the objective over the completed trials each searched parameter explains
//! on its own. A random forest is fitted to (parameters → objective) and its prediction's
//! variance is decomposed; each parameter's share is normalised so that the shares sum to 1, as
//! Optuna's `FanovaImportanceEvaluator` reports them. Deterministic for a fixed seed: the same
//! study and seed always give the same numbers (the CLI's `importance` and the dashboard).
//!
//! Encoding: a range parameter is its value (its log10 for `log_uniform`), a list of values is
//! the index of the value in the list (a categorical, as Optuna treats `values = [..]`); fixed
//! parameters and the seed of seed repeats explain nothing and are left out.

use std::num::NonZeroUsize;

use crate::params::{ParamValue, Params};
use crate::spec::{Domain, StudySpec};

/// Trees in the forest (Optuna's default).
const TREES: usize = 64;

/// Most trials the forest is fitted to. Fitting grows faster than linearly (10,000 trials took
/// four minutes on one core), so a larger study is represented by this many of its completed
/// trials, evenly spaced in trial order: deterministic, and spread over the whole search.
pub const MAX_TRIALS: usize = 1000;

/// One parameter's importance.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamImportance {
    /// The parameter's name.
    pub name: String,
    /// Its share of the explained variance (all shares sum to 1).
    pub importance: f64,
    /// Standard deviation of the share over the forest's trees (same scale).
    pub stddev: f64,
}

/// Why importances cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportanceError {
    /// Nothing is searched: every parameter is fixed.
    #[error("study {0:?} searches no parameter (all are fixed); importance needs at least one searched parameter")]
    NothingSearched(String),
    /// Too few completed trials to fit anything.
    #[error("study {study:?} has {completed} completed trial(s) with a value; importance needs at least 2 — wait for more trials")]
    TooFewTrials {
        /// The study.
        study: String,
        /// Completed trials with an objective value.
        completed: usize,
    },
    /// The forest could not be fitted (e.g. a non-finite value).
    #[error("cannot fit the importance model: {0}")]
    Fit(String),
}

/// The searched parameters of `spec` and how each is encoded as a number.
fn searched(spec: &StudySpec) -> Vec<(&str, &Domain)> {
    spec.parameters
        .iter()
        .filter(|p| !matches!(p.domain, Domain::Fixed(_)))
        .map(|p| (p.name.as_str(), &p.domain))
        .collect()
}

/// `value` of a parameter with `domain` as a feature; None when it does not fit the domain.
fn encode(domain: &Domain, value: &ParamValue) -> Option<f64> {
    match domain {
        Domain::Fixed(_) => None,
        Domain::Categorical(values) => values.iter().position(|v| v == value).map(|i| i as f64),
        Domain::Range(range) => {
            let x = value.as_f64()?;
            Some(if range.log { x.log10() } else { x })
        }
    }
}

/// Importances of the searched parameters of `spec` over `completed` (each trial's parameters
/// and objective value; at most [`MAX_TRIALS`] of them, evenly spaced, are used), most
/// important first (ties by name).
pub fn importances<'a>(
    spec: &StudySpec,
    completed: impl IntoIterator<Item = (&'a Params, f64)>,
    seed: u64,
) -> Result<Vec<ParamImportance>, ImportanceError> {
    let params = searched(spec);
    if params.is_empty() {
        return Err(ImportanceError::NothingSearched(spec.name.clone()));
    }
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); params.len()];
    let mut target = Vec::new();
    for (trial, value) in completed {
        if !value.is_finite() {
            continue;
        }
        let row: Option<Vec<f64>> = params.iter().map(|(name, domain)| encode(domain, trial.get(*name)?)).collect();
        let Some(row) = row else { continue };
        for (column, x) in columns.iter_mut().zip(row) {
            column.push(x);
        }
        target.push(value);
    }
    if target.len() > MAX_TRIALS {
        let n = target.len();
        let keep: Vec<usize> = (0..MAX_TRIALS).map(|i| i * n / MAX_TRIALS).collect();
        for column in &mut columns {
            *column = keep.iter().map(|&i| column[i]).collect();
        }
        target = keep.iter().map(|&i| target[i]).collect();
    }
    if target.len() < 2 {
        return Err(ImportanceError::TooFewTrials { study: spec.name.clone(), completed: target.len() });
    }
    let forest = fanova::RandomForestOptions::new().seed(seed).trees(NonZeroUsize::new(TREES).expect("non-zero"));
    let features: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
    let mut model = fanova::FanovaOptions::new()
        .random_forest(forest)
        .fit(features, &target)
        .map_err(|e| ImportanceError::Fit(format!("{e:?}")))?;
    let raw: Vec<fanova::Importance> = (0..params.len()).map(|i| model.quantify_importance(&[i])).collect();
    let total: f64 = raw.iter().map(|r| r.mean).sum();
    let mut out: Vec<ParamImportance> = params
        .iter()
        .zip(raw)
        .map(|((name, _), r)| {
            // All trials alike (no variance to explain): every parameter explains nothing.
            let scale = if total > 0.0 { 1.0 / total } else { 0.0 };
            ParamImportance { name: name.to_string(), importance: r.mean * scale, stddev: r.stddev * scale }
        })
        .collect();
    out.sort_by(|a, b| b.importance.total_cmp(&a.importance).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StudyToml;

    fn spec() -> StudySpec {
        let text = StudyToml::new("imp")
            .sampler("random")
            .budget("max_trials = 200")
            .parameters(
                "[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-5\nmax = 1e-3\n\
                 [parameters.per_device_train_batch_size]\nvalues = [16, 32]\n\
                 [parameters.num_train_epochs]\nvalue = 3\n",
            )
            .to_string();
        crate::spec::parse_study(&text).unwrap()
    }

    /// The objective depends on the learning rate only: it gets (nearly) all the importance,
    /// the batch size (nearly) none, the fixed epochs are not listed, and a second run with the
    /// same seed gives the same numbers.
    #[test]
    fn the_parameter_that_matters_gets_the_importance_and_results_repeat() {
        let spec = spec();
        let trials: Vec<(Params, f64)> = (0..60)
            .map(|i| {
                let lr = 1e-5 * 100f64.powf(i as f64 / 59.0);
                let batch = if i % 2 == 0 { 16 } else { 32 };
                let params: Params = [
                    ("learning_rate".to_string(), ParamValue::Float(lr)),
                    ("per_device_train_batch_size".to_string(), ParamValue::Int(batch)),
                    ("num_train_epochs".to_string(), ParamValue::Int(3)),
                ]
                .into_iter()
                .collect();
                (params, -(lr.log10() + 4.0).powi(2))
            })
            .collect();
        let run = || importances(&spec, trials.iter().map(|(p, v)| (p, *v)), 7).unwrap();
        let first = run();
        assert_eq!(first, run(), "same seed, same numbers");
        assert_eq!(
            first.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["learning_rate", "per_device_train_batch_size"]
        );
        assert!(first[0].importance > 0.9, "{first:?}");
        assert!((first.iter().map(|p| p.importance).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn too_few_trials_and_nothing_searched_are_explained() {
        let spec = spec();
        let one: Params = [
            ("learning_rate".to_string(), ParamValue::Float(1e-4)),
            ("per_device_train_batch_size".to_string(), ParamValue::Int(16)),
        ]
        .into_iter()
        .collect();
        let err = importances(&spec, [(&one, 0.5)], 0).unwrap_err();
        assert!(err.to_string().contains("1 completed trial(s)"), "{err}");
        let mut fixed = spec.clone();
        fixed.parameters.retain(|p| matches!(p.domain, Domain::Fixed(_)));
        assert!(matches!(importances(&fixed, [(&one, 0.5)], 0), Err(ImportanceError::NothingSearched(_))));
    }
}
