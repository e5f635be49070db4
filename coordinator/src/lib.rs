//! bertsweep coordinator: stores studies and trials, decides what to try next, and serves the
//! `bertsweep.v1.Coordinator` gRPC API to workers and the CLI.
//!
//! # Layout
//! The study model and every decision live in `bertsweep-core` (no I/O); its modules are
//! re-exported here under their old paths: [`spec`], [`params`], [`model`], [`sampler`],
//! [`stopping`], [`importance`], [`ops`], [`registry`], [`error`], [`text`]. This crate holds
//! what touches the world:
//! - [`evaluation`]: trials' dev-set predictions — checked, scored once (the objective's
//!   bootstrap interval), summarised per class, stored, and compared (`best`'s paired bootstrap).
//! - [`clock`]: the wall clock (the core never reads it).
//! - [`blobs`]: uploaded inputs and kept models on disk, and their garbage collection.
//! - [`store`]: SQLite via sqlx — migrations, start-up load, group-commit writer, backups.
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
//! - [`cli`]: the `bertsweep` command line (client verbs and output formats).

pub use bertsweep_core::{error, importance, model, ops, params, registry, sampler, spec, stopping, text};

pub mod access;
pub mod auth_throttle;
pub mod blobs;
pub mod cli;
pub mod clock;
pub mod connections;
pub mod dashboard;
pub mod evaluation;
pub mod reload;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;
