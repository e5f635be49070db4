//! Scoring a trial's model: the dev set after every epoch (transformers' metric names, and
//! the predictions in the file's row order) and, after training, the best epoch's model on
//! the test set.

use std::collections::{BTreeMap, HashMap};

use bertsweep_evaluation::predictions::{MAX_CLASSES, MAX_VALUES};
use bertsweep_evaluation::Predictions;
use tch::{Device, Kind, Reduction, Tensor};

use super::epochs::Trainer;
use super::error::{torch, TrainError};
use crate::data::{eval_batch_order, Batch, Split};
use crate::metrics::classification_scores;

/// Examples per evaluation batch (evaluation order does not change the metrics).
pub const EVAL_BATCH_SIZE: usize = 64;

impl Trainer<'_> {
    /// Scores the dev set: every epoch metric, and the predictions in the file's row order
    /// (`None` for sets over [`bertsweep_evaluation::predictions`]' size limits).
    pub(super) fn evaluate(&self) -> Result<(BTreeMap<String, f64>, Option<Predictions>), TrainError> {
        self.evaluate_split(&self.data.validation)
    }

    /// [`Self::evaluate`] on any split of this task.
    fn evaluate_split(&self, split: &Split) -> Result<(BTreeMap<String, f64>, Option<Predictions>), TrainError> {
        let classes = self.data.labels.len();
        let keep = (2..=MAX_CLASSES).contains(&classes) && split.len().saturating_mul(classes) <= MAX_VALUES;
        // Probabilities in the file's row order (evaluation runs in length order).
        let mut ordered = if keep { vec![0f32; split.len() * classes] } else { Vec::new() };
        let mut predictions = Vec::with_capacity(split.len());
        let mut labels = Vec::with_capacity(split.len());
        let mut probabilities = Vec::with_capacity(split.len() * classes);
        let mut loss_sum = 0.0;
        // With class weights: the weighted mean over the whole set, Σ w_y·loss / Σ w_y.
        let mut weight_sum = 0.0;
        let _no_grad = tch::no_grad_guard();
        for indices in eval_batch_order(&split.lengths(), EVAL_BATCH_SIZE) {
            let batch = Batch::new(split, &indices, self.pad_id, self.device).map_err(torch("building a batch"))?;
            let logits = self.stepper.logits(&batch, false).map_err(torch("evaluation"))?;
            let loss = logits
                .f_cross_entropy_loss(&batch.labels, self.stepper.class_weights.as_ref(), Reduction::Sum, -100, 0.0)
                .and_then(|l| f64::try_from(&l))
                .map_err(torch("evaluation loss"))?;
            loss_sum += loss;
            weight_sum += match &self.class_weights {
                Some(w) => indices.iter().map(|&i| w[split.label_ids[i] as usize]).sum::<f64>(),
                None => indices.len() as f64,
            };
            let predicted = logits
                .f_argmax(-1, false)
                .and_then(|p| p.f_to_device(Device::Cpu))
                .and_then(|p| Vec::<i64>::try_from(&p))
                .map_err(torch("evaluation"))?;
            predictions.extend(predicted);
            let rows = logits
                .f_softmax(-1, Kind::Double)
                .and_then(|p| p.f_to_device(Device::Cpu))
                .and_then(|p| p.f_flatten(0, -1))
                .and_then(|p| Vec::<f64>::try_from(&p))
                .map_err(torch("evaluation probabilities"))?;
            if keep {
                for (row, &i) in rows.chunks(classes).zip(&indices) {
                    for (slot, &p) in ordered[i * classes..(i + 1) * classes].iter_mut().zip(row) {
                        *slot = p as f32;
                    }
                }
            }
            probabilities.extend(rows);
            labels.extend(indices.iter().map(|&i| split.label_ids[i]));
        }
        let weights: Vec<f32> = self.class_weights.iter().flatten().map(|&w| w as f32).collect();
        let in_order = split.label_ids.iter().map(|&y| y as u32).collect();
        let kept = match keep.then(|| Predictions::new(classes, in_order, ordered, weights)) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                tracing::warn!("dev-set predictions not kept: {e}");
                None
            }
            None => None,
        };
        let scores = classification_scores(&predictions, &labels);
        let more = crate::metrics::probabilistic_scores(&probabilities, classes, &labels);
        let metrics = BTreeMap::from([
            ("eval_accuracy".to_owned(), scores.accuracy),
            ("eval_f1".to_owned(), scores.f1),
            ("eval_precision".to_owned(), scores.precision),
            ("eval_recall".to_owned(), scores.recall),
            ("eval_loss".to_owned(), if weight_sum > 0.0 { loss_sum / weight_sum } else { 0.0 }),
            ("eval_mcc".to_owned(), more.mcc),
            ("eval_f1_weighted".to_owned(), more.f1_weighted),
            ("eval_roc_auc".to_owned(), more.roc_auc),
            ("eval_pr_auc".to_owned(), more.pr_auc),
            ("eval_log_loss".to_owned(), more.log_loss),
            ("eval_ece".to_owned(), more.ece),
        ]);
        Ok((metrics, kept))
    }

    /// The best epoch's model on the test split, metrics renamed `eval_…` → `test_…`. The
    /// best epoch's weights are loaded first when a later epoch trained past them (training is
    /// over: the model's own weights are not needed again).
    pub(super) fn score_test_set(
        &mut self,
        test: &Split,
        best_epoch: usize,
        last_epoch: usize,
        best_weights: &Option<HashMap<String, Tensor>>,
    ) -> Result<BTreeMap<String, f64>, TrainError> {
        if best_epoch != last_epoch {
            let Some(weights) = best_weights else {
                // Resumed from a checkpoint without the best epoch's weights: nothing to score.
                tracing::warn!("the best epoch's weights are not at hand; the test set is not scored");
                return Ok(BTreeMap::new());
            };
            let _no_grad = tch::no_grad_guard();
            for (name, mut variable) in self.stepper.vs.variables() {
                if let Some(w) = weights.get(&name) {
                    variable.f_copy_(w).map_err(torch("loading the best epoch's weights"))?;
                }
            }
        }
        let (metrics, _) = self.evaluate_split(test)?;
        Ok(metrics.into_iter().map(|(k, v)| (k.replacen("eval_", "test_", 1), v)).collect())
    }
}
