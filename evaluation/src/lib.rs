//! bertsweep's evaluation maths, shared by the worker (which scores every epoch) and the
//! coordinator (which keeps each trial's dev-set predictions and judges how far to trust a
//! ranking). Pure functions only: no I/O, no clock, no torch.
//!
//! - [`metrics`]: classification metrics with scikit-learn's semantics, per-class scores and
//!   the confusion matrix.
//! - [`predictions`]: one evaluation's labels and class probabilities in data-set order, and
//!   every objective metric scored from them on any subset of the examples.
//! - [`bootstrap`]: seeded bootstrap confidence intervals and paired comparisons.

pub mod bootstrap;
pub mod metrics;
pub mod predictions;

pub use bootstrap::{confidence_interval, paired_comparison, Comparison, Interval, Run, Verdict};
pub use predictions::Predictions;

/// Why an evaluation could not be scored or compared.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    /// The predictions contradict themselves (sizes, ranges); the message says how.
    #[error("invalid dev-set predictions: {0}")]
    InvalidPredictions(String),
    /// Not one of the objective metrics.
    #[error("{0:?} is not a metric bertsweep computes from predictions")]
    UnknownMetric(String),
    /// A paired comparison of sets that were scored on different examples.
    #[error(
        "the two configurations were evaluated on different dev examples; a paired comparison needs the same dev set"
    )]
    DifferentExamples,
    /// A comparison with a side that has no evaluations.
    #[error("a comparison needs at least one evaluation on each side")]
    NothingToCompare,
}
