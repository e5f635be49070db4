//! Prometheus metrics for both binaries, through the `metrics` facade and
//! `metrics-exporter-prometheus`.
//!
//! - [`install`]: the process-wide recorder and its render handle (once per process).
//! - [`serve`]: `GET /metrics` in the Prometheus text format on a listener of its own, so
//!   scraping never shares a port (or TLS and token rules) with the gRPC API.
//! - [`rpc`]: a tower layer timing every gRPC call by method and status code.
//!
//! Label values are bounded by design: study names, trial states, method names and status
//! codes; never trial ids or worker ids.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod logs;
pub mod rpc;

/// Buckets (seconds) for calls and commits: 1 ms to 10 minutes.
const SHORT_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Buckets (seconds) for whole trials, epochs and streams: 10 s to a day (a BERT-large epoch
/// on a big data set takes hours).
const LONG_BUCKETS: &[f64] =
    &[10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0];

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The histogram buckets were refused by the exporter.
    #[error("cannot configure the Prometheus exporter: {0}")]
    Exporter(String),
    /// The /metrics listener failed.
    #[error("the metrics endpoint failed: {0}")]
    Serve(#[from] std::io::Error),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder (the first call does;
/// later calls return the same handle) and records `bertsweep_build_info{component, version}`.
/// Before this runs, every `metrics::` call is a no-op, so code paths without `--metrics-listen`
/// pay nothing. With `gauge_idle`, a gauge not set for that long leaves the output (the
/// coordinator sets every gauge it wants shown at each scrape, so an ended study's series go).
pub fn install(
    component: &'static str,
    gauge_idle: Option<std::time::Duration>,
) -> Result<PrometheusHandle, TelemetryError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(SHORT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("trial_duration_seconds".into()), LONG_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("epoch_seconds".into()), LONG_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(rpc::RPC_STREAM_DURATION.into()), LONG_BUCKETS))
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, gauge_idle)
        .build_recorder();
    let handle = HANDLE.get_or_init(|| {
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is already installed; /metrics will stay empty");
        }
        handle
    });
    metrics::describe_gauge!("bertsweep_build_info", "Always 1; the labels say which build runs.");
    metrics::gauge!("bertsweep_build_info", "component" => component, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle.clone())
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. `before_render` runs before
/// each scrape (to refresh gauges that are read from state rather than counted as it changes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    before_render: Arc<dyn Fn() + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    let render = move || {
        before_render();
        handle.run_upkeep();
        handle.render()
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = render();
            async move { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body) }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
