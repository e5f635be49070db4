//! Why a trial failed ([`TrainError`]), classified once, where the error is made: invalid
//! hyperparameters and running out of memory are their own variants, so whether a retry can
//! help is a match on the variant ([`TrainError::is_infeasible`]), never a reading of text.

use tch::TchError;

use crate::config::ConfigError;
use crate::data::DataError;
use crate::export::ExportError;
use crate::pretrained::PretrainedError;
use crate::tokenizer::TokenizerError;

/// Why a trial failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The hyperparameters cannot work with this model or data (retrying will not help).
    #[error("invalid trial: {0}")]
    InvalidTrial(String),
    /// config.json could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The pre-trained weights could not be loaded.
    #[error(transparent)]
    Pretrained(#[from] PretrainedError),
    /// A data file could not be used.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Writing the artifact failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The device (or the host) ran out of memory: the batch or sequence length does not fit,
    /// and retrying the same configuration cannot succeed. Shown as one line, like
    /// [`TrainError::Torch`].
    #[error("{context}: {}", first_line(detail))]
    OutOfMemory {
        /// What the trial was doing.
        context: String,
        /// libtorch's message (or the panic's), whole.
        detail: String,
    },
    /// A torch operation failed (device error, ...). Shown as one line: libtorch's messages go
    /// on with a C++ backtrace that says nothing to a user.
    #[error("{context}: {}", first_line(&error.to_string()))]
    Torch {
        /// What the trial was doing.
        context: String,
        /// The torch error, whole (not the error's `source`, so that no report prints the
        /// backtrace after the one-line message).
        error: TchError,
    },
    /// A torch call inside tch panicked (some tch calls have no fallible form).
    #[error("{context}: {}", first_line(message))]
    Panic {
        /// What the trial was doing.
        context: String,
        /// The panic message.
        message: String,
    },
}

impl TrainError {
    /// A torch operation that failed while doing `context`: [`TrainError::OutOfMemory`] when
    /// libtorch says the memory ran out, [`TrainError::Torch`] otherwise.
    pub fn torch(context: impl Into<String>, error: TchError) -> Self {
        let context = context.into();
        let detail = error.to_string();
        if says_out_of_memory(&detail) {
            TrainError::OutOfMemory { context, detail }
        } else {
            TrainError::Torch { context, error }
        }
    }

    /// A panic inside a torch call while doing `context`, classified as [`TrainError::torch`]
    /// classifies errors.
    pub fn panic(context: impl Into<String>, message: String) -> Self {
        let context = context.into();
        if says_out_of_memory(&message) {
            TrainError::OutOfMemory { context, detail: message }
        } else {
            TrainError::Panic { context, message }
        }
    }

    /// True when retrying the same configuration cannot succeed: out of memory (the batch
    /// or sequence length does not fit the device) or hyperparameters invalid for the task.
    pub fn is_infeasible(&self) -> bool {
        matches!(self, TrainError::InvalidTrial(_) | TrainError::OutOfMemory { .. })
    }

    /// True when the device (or the host) ran out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, TrainError::OutOfMemory { .. })
    }
}

/// Whether a libtorch message (or a panic's) says the device or the host ran out of memory.
/// libtorch reports it only in words (CUDA's caching allocator and the CPU allocator alike),
/// so this is the one place that reads them; everything after matches on
/// [`TrainError::OutOfMemory`].
fn says_out_of_memory(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("out of memory") || message.contains("can't allocate memory")
}

/// `map_err` adapter: a failed torch operation while doing `context` (see
/// [`TrainError::torch`]).
pub(super) fn torch(context: &str) -> impl FnOnce(TchError) -> TrainError + '_ {
    move |error| TrainError::torch(context, error)
}

/// The first non-blank line of a libtorch message (the rest is "Exception raised from …" and
/// C++ stack frames).
fn first_line(message: &str) -> &str {
    message.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("")
}
