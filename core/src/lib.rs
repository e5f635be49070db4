//! bertsweep's core: the study model and every decision, with no I/O. The compiler keeps it
//! that way: this crate depends on neither tokio, sqlx, tonic nor axum, and nothing here reads
//! the clock (callers pass `now`).
//!
//! # Layout
//! - [`spec`]: the study file (TOML) — parsing and validation into a [`spec::StudySpec`].
//! - [`params`]: hyperparameter values and the parameters workers understand.
//! - [`model`]: domain types — trials, studies, states, assignments, evaluations.
//! - [`sampler`]: what to try next (grid, random, TPE) behind the [`sampler::Sampler`] trait.
//! - [`stopping`]: early-stopping decisions behind [`stopping::EarlyStopper`].
//! - [`importance`]: hyperparameter importance by fANOVA (the `importance` verb).
//! - [`ops`]: what the registry asks a store to persist and what a store loads back.
//! - [`registry`]: the trial lifecycle state machine (leases, fencing, requeue, study end).
//! - [`error`]: [`error::CoordinatorError`], what an operation can be refused with.
//! - [`evaluation`]: what the lifecycle needs of evaluations (each trial's interval seed).
//! - [`telemetry`]: the counters the lifecycle moves (no-ops until a recorder is installed).
//! - [`text`]: safe names and bounded error text (how much of an input a message may quote).
//! - `testing` (tests and the `testing` feature only): study-file builders.

pub mod error;
pub mod evaluation;
pub mod importance;
pub mod model;
pub mod ops;
pub mod params;
pub mod registry;
pub mod sampler;
pub mod spec;
pub mod stopping;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
