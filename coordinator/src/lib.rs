//! bertsweep coordinator: stores studies and trials, decides what to try next, and serves the
//! `bertsweep.v1.Coordinator` gRPC API to workers and the CLI.
//!
//! # Layout
//! - [`spec`]: the study file (TOML) — parsing and validation into a [`spec::StudySpec`].
//! - [`params`]: hyperparameter values and the parameters workers understand.
//! - [`model`]: domain types — trials, studies, states, assignments.
//! - [`sampler`]: what to try next (grid, random, TPE) behind the [`sampler::Sampler`] trait.
//! - [`stopping`]: early-stopping decisions behind [`stopping::EarlyStopper`].
//! - [`importance`]: hyperparameter importance by fANOVA (the `importance` verb).
//! - [`ops`]: what the registry asks the store to persist and what the store loads back.
//! - [`registry`]: the trial lifecycle state machine (leases, fencing, requeue, study end).
//! - [`error`]: [`error::CoordinatorError`], what an operation can be refused with.
//! - [`evaluation`]: trials' dev-set predictions — checked, scored once (the objective's
//!   bootstrap interval), summarised per class, and compared (`best`'s paired bootstrap).
//! - [`blobs`]: uploaded inputs and kept models on disk, and their garbage collection.
//! - [`store`]: SQLite via sqlx — migrations, start-up load, group-commit writer.
//! - [`service`]: the gRPC methods; [`service::convert`] is the server's only proto ↔ domain
//!   mapping (the CLI, a client, works on the messages themselves).
//! - [`server`]: wires store, registry, reaper, auth, health and reflection into a server, with
//!   the optional metrics and plaintext health listeners beside it.
//! - [`connections`]: bounds and reaps the TCP connections of every port (caps, handshake and
//!   idle timeouts, the open-file limit).
//! - [`access`]: tokens with roles (worker, viewer, admin), the token file, and the table of
//!   what each gRPC method needs, enforced by a tower layer.
//! - [`auth_throttle`]: slows down token guessing per peer address, on both ports.
//! - [`tls`]: TLS on the gRPC port and the dashboard (rustls, mutual TLS), handshakes off the
//!   accept loop, configurations a reload can replace.
//! - [`reload`]: re-reads the token file and the TLS files into a running server (SIGHUP).
//! - [`dashboard`]: the web dashboard (`serve --http`): JSON API, live events, login, pages.
//! - [`telemetry`]: the coordinator's Prometheus metrics (names, counters, scrape-time gauges).
//! - [`text`]: safe names and bounded error text (how much of an input a message may quote).
//! - [`fixtures`]: study files, large databases and `bertsweep serve` processes for tests and
//!   benchmarks.
//! - [`cli`]: the `bertsweep` command line (client verbs and output formats).

pub mod access;
pub mod auth_throttle;
pub mod blobs;
pub mod cli;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod evaluation;
pub mod fixtures;
pub mod importance;
pub mod model;
pub mod ops;
pub mod params;
pub mod registry;
pub mod reload;
pub mod sampler;
pub mod server;
pub mod service;
pub mod spec;
pub mod stopping;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tls;
