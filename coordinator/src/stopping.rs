//! Early stopping: after each reported epoch, decide whether a trial continues.
//!
//! The coordinator owns the decision (workers never decide); the verdict travels back in the
//! ReportProgress answer. Policies implement [`EarlyStopper`]; the study file picks one.

use crate::model::{Decision, Trial};
use crate::spec::{Objective, StudySpec};

/// Decides whether a trial that just reported `value` at `epoch` keeps training.
pub trait EarlyStopper: Send + Sync {
    /// `trial` has just reported `value` (the objective) at `epoch`; `trials` holds every trial
    /// of the study (index = number) with their per-epoch metrics.
    fn decide(&self, trial: &Trial, epoch: u32, value: f64, trials: &[Trial], objective: &Objective) -> Decision;
}

/// Never stops a trial.
pub struct NoEarlyStopping;

impl EarlyStopper for NoEarlyStopping {
    fn decide(&self, _trial: &Trial, _epoch: u32, _value: f64, _trials: &[Trial], _objective: &Objective) -> Decision {
        Decision::Continue
    }
}

/// The stopper a study file asks for.
pub fn for_spec(_spec: &StudySpec) -> Box<dyn EarlyStopper> {
    Box::new(NoEarlyStopping)
}
