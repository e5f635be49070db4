//! Samplers: what to try next. The coordinator owns them; workers never sample.
//!
//! A sampler is a pure function of the study, the trial number and the history, so its choice
//! survives coordinator restarts without persisted sampler state, and requeued trials keep
//! their params (they are never re-sampled). New algorithms (TPE) implement [`Sampler`] and
//! slot in through [`for_spec`] without touching the lifecycle code.

mod grid;
mod random;

pub use grid::GridSampler;
pub use random::RandomSampler;

use crate::model::Trial;
use crate::params::Params;
use crate::spec::{Objective, SamplerKind, StudySpec};

/// Proposes parameters for new trials.
pub trait Sampler: Send + Sync {
    /// Parameters for trial `number`, or None when the search space is exhausted. `trials`
    /// holds every earlier trial of the study (index = number), live ones included.
    fn sample(&self, number: u32, trials: &[Trial], objective: &Objective) -> Option<Params>;
}

/// The sampler a study file asks for.
pub fn for_spec(spec: &StudySpec) -> Box<dyn Sampler> {
    match spec.sampler {
        SamplerKind::Grid => Box::new(GridSampler::new(spec)),
        SamplerKind::Random => Box::new(RandomSampler::new(spec)),
    }
}
