//! Early stopping: after each reported epoch, decide whether a trial continues.
//!
//! The coordinator owns the decision (workers never decide); the verdict travels back in the
//! ReportProgress answer and the trial ends PRUNED with the metrics of that epoch. Policies
//! implement [`EarlyStopper`]; the study file picks one. Decisions read the per-epoch
//! objective of every trial in the study, so trials reporting out of order are judged against
//! whatever has been reported so far.

use bertsweep_proto::contract::DEFAULT_EPOCHS;

use crate::model::{Decision, Trial, TrialState};
use crate::params::ParamValue;
use crate::spec::{EarlyStopping, Objective, StudySpec};

/// Decides whether a trial that just reported `value` at `epoch` keeps training.
pub trait EarlyStopper: Send + Sync {
    /// `trial` has just reported `value` (the objective) at `epoch` (already recorded in its
    /// intermediate values); `trials` are the trials it is judged against: every trial of the
    /// study, or under cross-validation those of its own fold (itself included).
    fn decide(&self, trial: &Trial, epoch: u32, value: f64, trials: &[&Trial], objective: &Objective) -> Decision;

    /// What to do instead of [`Decision::Pause`] when the trial cannot pause (its worker
    /// reported no checkpoint for this epoch): by default, go on.
    fn fallback(
        &self,
        _trial: &Trial,
        _epoch: u32,
        _value: f64,
        _trials: &[&Trial],
        _objective: &Objective,
    ) -> Decision {
        Decision::Continue
    }
}

/// Never stops a trial.
pub struct NoEarlyStopping;

impl EarlyStopper for NoEarlyStopping {
    fn decide(&self, _trial: &Trial, _epoch: u32, _value: f64, _trials: &[&Trial], _objective: &Objective) -> Decision {
        Decision::Continue
    }
}

/// The stopper a study file asks for.
pub fn for_spec(spec: &StudySpec) -> Box<dyn EarlyStopper> {
    match spec.early_stopping {
        EarlyStopping::None => Box::new(NoEarlyStopping),
        EarlyStopping::Asha { min_epochs, reduction_factor, promotion: false } => {
            Box::new(Asha { min_epochs, reduction_factor })
        }
        EarlyStopping::Asha { min_epochs, reduction_factor, promotion: true } => {
            Box::new(AshaPromotion { rungs: Asha { min_epochs, reduction_factor } })
        }
        EarlyStopping::Median { min_epochs, warmup_trials } => Box::new(MedianStopping { min_epochs, warmup_trials }),
    }
}

/// Epochs the trial will train in all (its num_train_epochs, else the worker's default).
pub fn planned_epochs(trial: &Trial) -> u32 {
    match trial.params.get(bertsweep_proto::contract::params::NUM_TRAIN_EPOCHS) {
        Some(ParamValue::Int(n)) if *n > 0 => *n as u32,
        Some(v) => v.as_f64().map(|x| x as u32).unwrap_or(DEFAULT_EPOCHS),
        None => DEFAULT_EPOCHS,
    }
}

/// The objective a trial reported at `epoch`.
fn value_at(trial: &Trial, epoch: u32, objective: &Objective) -> Option<f64> {
    trial.intermediate.get(&epoch).and_then(|m| m.get(&objective.metric)).copied()
}

/// Values oriented so larger is better.
fn score(value: f64, objective: &Objective) -> f64 {
    if objective.maximize {
        value
    } else {
        -value
    }
}

/// numpy's default (linear) percentile of sorted values, `q` in [0, 1].
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Asynchronous successive halving, stop-based (as Ray Tune's ASHA): rungs at
/// `min_epochs × reduction_factor^k`. A trial reaching a rung continues only if its objective
/// is at least the (1 − 1/η) quantile of the values every trial has recorded at that rung
/// (itself included), so it never waits for a rung to fill.
pub struct Asha {
    /// The first rung.
    pub min_epochs: u32,
    /// η: rungs are η× apart and the top 1/η continues at each.
    pub reduction_factor: u32,
}

impl Asha {
    /// Whether `epoch` is a rung.
    pub fn is_rung(&self, epoch: u32) -> bool {
        let mut rung = self.min_epochs as u64;
        while rung < epoch as u64 {
            rung *= self.reduction_factor as u64;
        }
        rung == epoch as u64
    }
}

impl EarlyStopper for Asha {
    fn decide(&self, trial: &Trial, epoch: u32, value: f64, trials: &[&Trial], objective: &Objective) -> Decision {
        // Stopping at the last epoch saves nothing: the trial is finishing anyway.
        if epoch >= planned_epochs(trial) || !self.is_rung(epoch) {
            return Decision::Continue;
        }
        // Worst first, as `quantile` reads them.
        let mut recorded = rung_scores(trial.id, epoch, score(value, objective), trials, objective);
        recorded.reverse();
        let cutoff = quantile(&recorded, 1.0 - 1.0 / self.reduction_factor as f64);
        if score(value, objective) < cutoff {
            Decision::Stop(format!(
                "asha: not in the top 1/{} of {} trials at epoch {epoch}",
                self.reduction_factor,
                recorded.len()
            ))
        } else {
            Decision::Continue
        }
    }
}

/// Asynchronous successive halving, promotion-based (Li et al., "A System for Massively
/// Parallel Hyperparameter Tuning", algorithm 2): a trial reaching a rung continues at once
/// only if it is already among the top ⌊n/η⌋ of the n trials recorded there; otherwise it
/// pauses (its checkpoint kept) and the registry promotes it later, when enough results have
/// arrived for it to rank there ([`promotable`]). Trials never promoted are pruned when the
/// study has nothing else left to run.
pub struct AshaPromotion {
    /// Where the rungs are.
    pub rungs: Asha,
}

impl EarlyStopper for AshaPromotion {
    fn decide(&self, trial: &Trial, epoch: u32, value: f64, trials: &[&Trial], objective: &Objective) -> Decision {
        if epoch >= planned_epochs(trial) || !self.rungs.is_rung(epoch) {
            return Decision::Continue;
        }
        let ranked = rung_scores(trial.id, epoch, score(value, objective), trials, objective);
        if in_top(&ranked, score(value, objective), self.rungs.reduction_factor) {
            Decision::Continue
        } else {
            Decision::Pause(format!(
                "asha: paused at epoch {epoch}, not yet in the top 1/{} of {} trials there",
                self.rungs.reduction_factor,
                ranked.len()
            ))
        }
    }

    fn fallback(&self, trial: &Trial, epoch: u32, value: f64, trials: &[&Trial], objective: &Objective) -> Decision {
        self.rungs.decide(trial, epoch, value, trials, objective)
    }
}

/// Scores (larger is better) every trial recorded at `epoch`, `own` standing for `trial_id`'s,
/// best first.
fn rung_scores(trial_id: u64, epoch: u32, own: f64, trials: &[&Trial], objective: &Objective) -> Vec<f64> {
    let mut ranked: Vec<f64> = trials
        .iter()
        .filter(|t| t.id != trial_id)
        .filter_map(|t| value_at(t, epoch, objective))
        .map(|v| score(v, objective))
        .collect();
    ranked.push(own);
    ranked.sort_by(|a, b| b.total_cmp(a));
    ranked
}

/// Whether `own` is among the top ⌊n/η⌋ of `ranked` (best first; ties count as in).
fn in_top(ranked: &[f64], own: f64, reduction_factor: u32) -> bool {
    let keep = ranked.len() / reduction_factor.max(1) as usize;
    keep >= 1 && own >= ranked[keep - 1]
}

/// The PAUSED trial to promote next, if any: the one at the highest rung, best first, that now
/// ranks among the top ⌊n/η⌋ of the n trials recorded at its rung.
pub fn promotable(trials: &[Trial], reduction_factor: u32, objective: &Objective) -> Option<u32> {
    let mut best: Option<(u32, f64, u32)> = None;
    let mut by_rung: std::collections::HashMap<u32, Vec<f64>> = std::collections::HashMap::new();
    for t in trials.iter().filter(|t| t.state == TrialState::Paused) {
        let rung = t.last_epoch();
        let Some(own) = value_at(t, rung, objective).map(|v| score(v, objective)) else { continue };
        let ranked = by_rung.entry(rung).or_insert_with(|| {
            let mut r: Vec<f64> =
                trials.iter().filter_map(|t| value_at(t, rung, objective)).map(|v| score(v, objective)).collect();
            r.sort_by(|a, b| b.total_cmp(a));
            r
        });
        if in_top(ranked, own, reduction_factor) {
            let better = match best {
                None => true,
                Some((r, s, _)) => rung > r || (rung == r && own > s),
            };
            if better {
                best = Some((rung, own, t.number));
            }
        }
    }
    best.map(|(_, _, number)| number)
}

/// Stops a trial whose objective at epoch e is worse than the median of the completed trials'
/// objectives at epoch e (Optuna's MedianPruner), once `warmup_trials` trials have completed
/// and from epoch `min_epochs` on.
pub struct MedianStopping {
    /// No trial is stopped before this epoch.
    pub min_epochs: u32,
    /// No trial is stopped before this many trials have completed.
    pub warmup_trials: u32,
}

impl EarlyStopper for MedianStopping {
    fn decide(&self, trial: &Trial, epoch: u32, value: f64, trials: &[&Trial], objective: &Objective) -> Decision {
        if epoch < self.min_epochs || epoch >= planned_epochs(trial) {
            return Decision::Continue;
        }
        let completed: Vec<&Trial> =
            trials.iter().copied().filter(|t| t.state == TrialState::Completed && t.id != trial.id).collect();
        if (completed.len() as u32) < self.warmup_trials.max(1) {
            return Decision::Continue;
        }
        let mut at_epoch: Vec<f64> =
            completed.iter().filter_map(|t| value_at(t, epoch, objective)).map(|v| score(v, objective)).collect();
        if at_epoch.is_empty() {
            return Decision::Continue;
        }
        at_epoch.sort_by(f64::total_cmp);
        let median = quantile(&at_epoch, 0.5);
        if score(value, objective) < median {
            Decision::Stop(format!(
                "median: worse than the median of {} completed trials at epoch {epoch}",
                at_epoch.len()
            ))
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn objective(maximize: bool) -> Objective {
        Objective { metric: if maximize { "eval_accuracy" } else { "eval_loss" }.into(), maximize }
    }

    /// A trial with `values[e-1]` reported at epoch e, planning `epochs` epochs.
    fn trial(number: u32, epochs: i64, values: &[f64], state: TrialState, metric: &str) -> Trial {
        let mut params = Params::new();
        params.insert("num_train_epochs".into(), ParamValue::Int(epochs));
        Trial {
            intermediate: values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32 + 1, [(metric.to_string(), *v)].into_iter().collect()))
                .collect(),
            ..crate::model::test_trial(number, params, state)
        }
    }

    fn decide(s: &dyn EarlyStopper, t: &Trial, epoch: u32, history: &[Trial], obj: &Objective) -> bool {
        let value = t.intermediate[&epoch][&obj.metric];
        let history: Vec<&Trial> = history.iter().collect();
        matches!(s.decide(t, epoch, value, &history, obj), Decision::Stop(_))
    }

    #[test]
    fn asha_rungs() {
        let asha = Asha { min_epochs: 1, reduction_factor: 3 };
        assert!(asha.is_rung(1) && asha.is_rung(3) && asha.is_rung(9));
        assert!(!asha.is_rung(2) && !asha.is_rung(4));
        let asha = Asha { min_epochs: 2, reduction_factor: 2 };
        assert!(asha.is_rung(2) && asha.is_rung(4) && !asha.is_rung(1) && !asha.is_rung(3));
    }

    #[test]
    fn asha_keeps_the_top_third_and_never_waits_for_a_rung_to_fill() {
        let asha = Asha { min_epochs: 1, reduction_factor: 3 };
        let obj = objective(true);
        let m = "eval_accuracy";
        // The first trial at a rung always continues (nothing to compare with).
        let first = trial(0, 4, &[0.5], TrialState::Running, m);
        assert!(!decide(&asha, &first, 1, std::slice::from_ref(&first), &obj));
        // Three earlier trials at epoch 1: 0.6, 0.7, 0.8. Cutoff = 2/3 quantile of the four values.
        let mut history = vec![
            trial(0, 4, &[0.6, 0.6], TrialState::Completed, m),
            trial(1, 4, &[0.7], TrialState::Pruned, m),
            trial(2, 4, &[0.8], TrialState::Running, m),
        ];
        let weak = trial(3, 4, &[0.65], TrialState::Running, m);
        history.push(weak.clone());
        assert!(decide(&asha, &weak, 1, &history, &obj), "0.65 is not in the top third");
        let strong = trial(3, 4, &[0.85], TrialState::Running, m);
        history[3] = strong.clone();
        assert!(!decide(&asha, &strong, 1, &history, &obj), "0.85 is the best");
        // Not a rung, or the last epoch: never stopped.
        let late = trial(4, 2, &[0.1, 0.1], TrialState::Running, m);
        history.push(late.clone());
        assert!(!decide(&asha, &late, 2, &history, &obj));
    }

    #[test]
    fn asha_ties_continue_and_minimize_flips_the_order() {
        let asha = Asha { min_epochs: 1, reduction_factor: 2 };
        let obj = objective(true);
        let m = "eval_accuracy";
        let history = vec![trial(0, 3, &[0.7], TrialState::Running, m), trial(1, 3, &[0.7], TrialState::Running, m)];
        assert!(!decide(&asha, &history[1], 1, &history, &obj), "a tie with the cutoff continues");

        let obj = objective(false);
        let m = "eval_loss";
        let history = vec![
            trial(0, 3, &[0.3], TrialState::Running, m),
            trial(1, 3, &[0.5], TrialState::Running, m),
            trial(2, 3, &[0.9], TrialState::Running, m),
        ];
        assert!(decide(&asha, &history[2], 1, &history, &obj), "the highest loss stops");
        assert!(!decide(&asha, &history[0], 1, &history, &obj), "the lowest loss continues");
    }

    #[test]
    fn asha_judges_out_of_order_arrivals_against_what_is_recorded() {
        // Trial 5 reports epoch 1 after trials 0-4 reached epoch 3 (their epoch-1 values stay).
        let asha = Asha { min_epochs: 1, reduction_factor: 3 };
        let obj = objective(true);
        let m = "eval_accuracy";
        let mut history: Vec<Trial> =
            (0..5).map(|i| trial(i, 4, &[0.6 + i as f64 * 0.02, 0.7, 0.75], TrialState::Running, m)).collect();
        let late = trial(5, 4, &[0.61], TrialState::Running, m);
        history.push(late.clone());
        assert!(decide(&asha, &late, 1, &history, &obj));
    }

    #[test]
    fn median_after_warmup() {
        let median = MedianStopping { min_epochs: 1, warmup_trials: 2 };
        let obj = objective(true);
        let m = "eval_accuracy";
        let mut history = vec![trial(0, 3, &[0.6, 0.7, 0.8], TrialState::Completed, m)];
        let t = trial(1, 3, &[0.1], TrialState::Running, m);
        history.push(t.clone());
        assert!(!decide(&median, &t, 1, &history, &obj), "only one completed trial: still warming up");
        history.insert(1, trial(1, 3, &[0.8, 0.85, 0.9], TrialState::Completed, m));
        let t = trial(2, 3, &[0.65], TrialState::Running, m);
        history.push(t.clone());
        assert!(decide(&median, &t, 1, &history, &obj), "0.65 < median(0.6, 0.8) = 0.7");
        let t = trial(2, 3, &[0.75], TrialState::Running, m);
        *history.last_mut().unwrap() = t.clone();
        assert!(!decide(&median, &t, 1, &history, &obj));
        // Running (not completed) trials never set the median.
        let obj_min = objective(false);
        let hl = vec![
            trial(0, 3, &[0.2, 0.1], TrialState::Running, "eval_loss"),
            trial(1, 3, &[0.9], TrialState::Running, "eval_loss"),
        ];
        assert!(!decide(&MedianStopping { min_epochs: 1, warmup_trials: 0 }, &hl[1], 1, &hl, &obj_min));
    }
}
