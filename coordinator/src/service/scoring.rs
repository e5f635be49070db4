//! The service's two uses of dev-set predictions that cost CPU time: scoring a completing
//! trial's predictions (the objective's bootstrap interval) and `best`'s paired comparison.
//! Both gather what they need under the registry lock and resample on a blocking thread.

use std::sync::Arc;

use bertsweep_proto::v1 as pb;
use tonic::Status;

use super::convert::configuration_to_proto;
use super::CoordinatorService;
use crate::evaluation;
use crate::model::TrialEvaluation;
use crate::registry::Configuration;

impl CoordinatorService {
    /// Checks and scores the predictions sent with CompleteTrial for lease (`id`, `token`).
    pub(super) async fn score_predictions(
        &self,
        id: u64,
        token: u64,
        predictions: pb::DevPredictions,
    ) -> Result<Arc<TrialEvaluation>, Status> {
        let (metric, seed) = self.shared.lock().evaluation_context(id, token).map_err(super::convert::status)?;
        let scored = tokio::task::spawn_blocking(move || evaluation::evaluate(predictions, &metric, seed))
            .await
            .map_err(|e| Status::internal(format!("scoring the predictions stopped: {e}")))?;
        scored.map(Arc::new).map_err(Status::invalid_argument)
    }

    /// The best configuration against the runner-up (`configurations` ranked as the registry
    /// returns them): `Ok(Err(why))` when there is nothing to compare.
    pub(super) async fn compare_top_two(
        &self,
        study: &str,
        configurations: &[Configuration],
    ) -> Result<Result<pb::Comparison, String>, Status> {
        let gathered = self
            .shared
            .lock()
            .with_trials(study, |spec, trials| {
                let top = evaluation::top_two(configurations, trials);
                (top, spec.objective.metric.clone(), spec.objective.maximize, spec.seed)
            })
            .map_err(super::convert::status)?;
        let (top, metric, maximize, seed) = gathered;
        let (runner_up, best_runs, runner_up_runs) = match top {
            Ok(top) => top,
            Err(why) => return Ok(Err(why)),
        };
        let compared = tokio::task::spawn_blocking(move || {
            evaluation::compare(&best_runs, &runner_up_runs, &metric, maximize, seed)
        })
        .await
        .map_err(|e| Status::internal(format!("the paired comparison stopped: {e}")))?;
        Ok(compared.map(|c| pb::Comparison {
            runner_up: Some(configuration_to_proto(&runner_up)),
            difference: c.difference,
            difference_low: c.interval.low,
            difference_high: c.interval.high,
            verdict: c.verdict.as_str().to_owned(),
            paired_seeds: c.paired_seeds,
        }))
    }
}
