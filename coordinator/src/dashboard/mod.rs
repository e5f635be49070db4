//! The web dashboard that `bertsweep serve --http ADDR` serves beside the gRPC API: a page per
//! study with its history, learning curves, parallel coordinates, slices, importance, seed
//! spread and trial table, kept live by server-sent events.
//!
//! Everything it shows is read from the in-memory registry under its lock, a page of trials at
//! a time, so a browser never touches SQLite and a 10,000-trial study costs the coordinator a
//! few milliseconds per request. Live updates come from the same committed-change broadcast as
//! WatchStudy, so the page sees exactly what the CLI's `--follow` sees.
//!
//! - [`auth`]: the token gate (login form → HttpOnly session cookie, or a bearer header);
//!   viewer and admin tokens read, only an admin's stops a study, a worker's is refused.
//! - [`api`]: the JSON API (studies, trials, configurations, importance, CSV, model files, stop).
//! - [`events`]: one server-sent-event stream per open study page.
//! - [`pages`]: the embedded HTML shell and assets, the login and not-found pages, and the
//!   security headers every reply carries.
//!
//! HTTPS uses the coordinator's own certificate (and client CA, for mutual TLS) through
//! [`crate::tls::LiveTls`], so a reload changes it for new connections.

pub mod api;
pub mod auth;
pub mod events;
pub mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::access::Tokens;
use crate::connections::{ConnectionLimits, Tracker};
use crate::service::Shared;

/// Server-sent-event streams open at once (each is one open study or trial page).
pub const MAX_LIVE_STREAMS: usize = 256;

/// How the dashboard runs: the same secrets as the gRPC API.
#[derive(Clone)]
pub struct DashboardConfig {
    /// The coordinator's tokens (shared with the gRPC port, swapped by a reload): when set,
    /// every page and API call needs a viewer's or an admin's (login or bearer).
    pub tokens: Tokens,
    /// HTTPS with the gRPC port's certificate, as in force when each connection is accepted.
    pub tls: Option<crate::tls::LiveTls>,
    /// Connections held at once, and how long one may stay silent (TLS handshake and request
    /// headers included) or idle (HTTP/1 keep-alive, HTTP/2) before it is closed.
    pub limits: ConnectionLimits,
}

/// What every handler shares.
pub struct AppState {
    /// The registry, blobs and the committed-change broadcast.
    pub shared: Arc<Shared>,
    /// Who may read and who may stop.
    pub gate: auth::Gate,
    /// Importance per study, recomputed only when its completed trials change.
    pub importance: api::ImportanceCache,
    /// Limits open event streams to [`MAX_LIVE_STREAMS`].
    pub streams: Arc<Semaphore>,
    /// Turns true when the coordinator shuts down (event streams end).
    pub stop: watch::Receiver<bool>,
}

/// The routes: assets and login are public; every page and API call passes the gate.
pub fn router(state: Arc<AppState>) -> Router {
    let gated = Router::new()
        .route("/", get(pages::shell))
        .route("/studies/{name}", get(pages::study))
        .route("/studies/{name}/trials/{number}", get(pages::trial))
        .route("/api/session", get(api::session))
        .route("/api/studies", get(api::studies))
        .route("/api/studies/{name}", get(api::study))
        .route("/api/studies/{name}/trials", get(api::trials))
        .route("/api/studies/{name}/trials.csv", get(api::trials_csv))
        .route("/api/studies/{name}/trials/{number}", get(api::trial))
        .route("/api/studies/{name}/trials/{number}/model/{*path}", get(api::model_file))
        .route("/api/studies/{name}/trials/{number}/model.tar", get(api::model_tar))
        .route("/api/studies/{name}/configurations", get(api::configurations))
        .route("/api/studies/{name}/importance", get(api::importance))
        .route("/api/studies/{name}/events", get(events::stream))
        .route("/api/studies/{name}/stop", post(api::stop))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::gate));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{file}", get(pages::asset))
        .merge(gated)
        .layer(axum::middleware::from_fn(pages::security_headers))
        .with_state(state)
}

/// Serves the dashboard on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, config: DashboardConfig, stop: watch::Receiver<bool>) {
    let secure = config.tls.is_some();
    let state = Arc::new(AppState {
        shared,
        gate: auth::Gate::new(config.tokens.clone(), secure),
        importance: api::ImportanceCache::default(),
        streams: Arc::new(Semaphore::new(MAX_LIVE_STREAMS)),
        stop: stop.clone(),
    });
    let app = router(state);
    // A full table sheds its longest-idle connection (or refuses the newcomer when every one is
    // busy) instead of leaving accept blocked; silent and idle connections are reaped.
    let tracker = Tracker::new("dashboard", config.limits);
    let handshake_timeout = config.limits.handshake_timeout;
    let mut stopping = stop.clone();
    loop {
        let tcp = tokio::select! {
            tcp = tracker.accept(&listener) => tcp,
            _ = stopped(&mut stopping) => {
                tracker.shutdown();
                return;
            }
        };
        let Some(guarded) = tracker.admit(tcp) else { continue };
        // Who is asking, for the per-address slow-down of wrong tokens.
        let peer = guarded.get_ref().peer_addr().ok().map(|a| crate::auth_throttle::PeerAddr(a.ip()));
        let app = match peer {
            Some(peer) => app.clone().layer(axum::Extension(peer)),
            None => app.clone(),
        };
        let app = guarded.track(app);
        let tls = config.tls.as_ref().map(crate::tls::LiveTls::dashboard_acceptor);
        let stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(guarded)).await {
                    Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), app, handshake_timeout, stop).await,
                    Ok(Err(e)) => tracing::debug!("dashboard TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("dashboard TLS handshake timed out"),
                },
                None => serve_connection(TokioIo::new(guarded), app, handshake_timeout, stop).await,
            }
        });
    }
}

/// Serves one connection (HTTP/1.1 or HTTP/2) until it closes or the coordinator stops.
async fn serve_connection<I>(
    io: TokioIo<I>,
    app: crate::connections::TrackRequests<Router>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Idle keep-alive (HTTP/1) and idle HTTP/2 connections are closed by the tracker's reaper;
    // HTTP/2 pings find peers that went away without closing.
    builder.http1().timer(TokioTimer::new()).keep_alive(true).header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(crate::connections::HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(crate::connections::HTTP2_KEEPALIVE_TIMEOUT);
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}
