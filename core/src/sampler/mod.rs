//! Samplers: what to try next. The coordinator owns them; workers never sample.
//!
//! A sampler is a pure function of the study, the trial number and the history, so its choice
//! survives coordinator restarts without persisted sampler state, and requeued trials keep
//! their params (they are never re-sampled). New algorithms (TPE) implement [`Sampler`] and
//! slot in through [`for_spec`] without touching the lifecycle code.

mod grid;
mod random;
mod tpe;

pub use grid::GridSampler;
pub use random::RandomSampler;
pub use tpe::TpeSampler;

use crate::model::Trial;
use crate::params::Params;
use crate::spec::{Objective, SamplerKind, StudySpec};

/// Proposes parameters for new trials.
pub trait Sampler: Send + Sync {
    /// Parameters for configuration `config_index` (the trial number, or trial number /
    /// repeats when each configuration runs with several seeds), or None when the search space
    /// is exhausted. `trials` holds every earlier trial of the study (index = number), live
    /// ones included.
    fn sample(&self, config_index: u32, trials: &[Trial], objective: &Objective) -> Option<Params>;
}

/// The sampler a study file asks for.
pub fn for_spec(spec: &StudySpec) -> Box<dyn Sampler> {
    match spec.sampler {
        SamplerKind::Grid => Box::new(GridSampler::new(spec)),
        SamplerKind::Random => Box::new(RandomSampler::new(spec)),
        SamplerKind::Tpe => Box::new(TpeSampler::new(spec)),
    }
}
