//! The lifecycle's typed errors: every way an operation is refused. The coordinator's
//! `service::convert` maps each to one gRPC status code.

use crate::spec::SpecError;

/// Why a coordinator operation was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The study file was rejected (INVALID_ARGUMENT).
    #[error("invalid study file: {0}")]
    Spec(#[from] SpecError),
    /// A request field is malformed or out of range (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// A study with this name already exists (ALREADY_EXISTS).
    #[error("a study named {0:?} already exists; choose another name")]
    StudyExists(String),
    /// No such study, trial or worker (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// A stale lease or a call that does not fit the trial's state (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
}

/// Shorthand for results of coordinator operations.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
