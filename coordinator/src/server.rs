//! Assembles the coordinator: store, registry, reaper, and the gRPC server (bertsweep.v1 plus
//! grpc.health.v1 and server reflection), with optional bearer tokens with roles
//! ([`crate::access`]) and TLS ([`crate::tls`]), both reloadable ([`crate::reload`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bertsweep_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tracing::info;

use crate::access::{AuthLayer, TokenSet, Tokens};
use crate::clock::now_ms;
use crate::connections::{ConnectionLimits, Tracker};
use crate::registry::{LeaseConfig, Registry};
use crate::service::{CoordinatorService, Shared};
use crate::store::{Store, StoreError};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `sqlite://path` (created if missing).
    pub db_url: String,
    /// When set, every RPC except health must carry `authorization: Bearer <token>`: the
    /// single-token form (`--token`), whose token is an admin's. At most one of this and
    /// `tokens`.
    pub token: Option<String>,
    /// Tokens with roles (`--token-file`): every RPC except health needs one whose role the
    /// method allows ([`crate::access::required`]).
    pub tokens: Option<TokenSet>,
    /// Re-reads the token file and TLS files into the running server when asked (SIGHUP).
    pub reloader: Option<crate::reload::Reloader>,
    /// Lease lifetime without a heartbeat.
    pub lease_ttl: Duration,
    /// AcquireTrial long-poll when the worker does not say.
    pub long_poll: Duration,
    /// TLS on the gRPC port (None = plaintext).
    pub tls: Option<ServerTls>,
    /// Where uploaded inputs and kept models live (None: `<db file>.data` beside the database).
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest blob (one file) an upload may carry.
    pub max_blob_bytes: u64,
    /// How old an unreferenced blob (or an unfinished upload) must be before it is deleted;
    /// the sweep runs at start-up and then once per this period.
    pub orphan_grace: Duration,
    /// Free space an upload may not take the data disk below (None: 1 GiB, or 5 % of a
    /// smaller disk).
    pub min_free_bytes: Option<u64>,
    /// Re-hash every stored blob at start-up (in the background), quarantining those that do
    /// not match their digest.
    pub verify_blobs: bool,
    /// Workers neither asking for work nor heartbeating for this long (and holding no trial)
    /// are forgotten.
    pub worker_expiry: Duration,
    /// Connection caps and timeouts, the same on every port.
    pub connection_limits: ConnectionLimits,
}

/// Default of `serve --worker-expiry`.
pub const DEFAULT_WORKER_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The server's TLS material, as PEM bytes.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain the server presents (`--tls-cert`).
    pub cert_pem: Vec<u8>,
    /// Its private key (`--tls-key`).
    pub key_pem: Vec<u8>,
    /// CA whose client certificates are required (`--tls-client-ca`: mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            db_url: "sqlite://bertsweep.db".into(),
            token: None,
            tokens: None,
            reloader: None,
            lease_ttl: Duration::from_secs(30),
            long_poll: Duration::from_secs(30),
            tls: None,
            data_dir: None,
            max_blob_bytes: crate::blobs::DEFAULT_MAX_BLOB_BYTES,
            orphan_grace: crate::blobs::ORPHAN_GRACE,
            min_free_bytes: None,
            verify_blobs: false,
            worker_expiry: DEFAULT_WORKER_EXPIRY,
            connection_limits: ConnectionLimits::default(),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened, migrated or loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored study no longer validates or replays.
    #[error("the stored studies cannot be loaded: {0}")]
    Restore(#[from] crate::error::CoordinatorError),
    /// tonic could not bind or serve.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Flags that contradict each other or name unreadable files (TLS, data directory).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Listeners served beside the gRPC API, bound by the caller (so it can print their addresses
/// and refuse a taken port before anything else starts).
#[derive(Debug, Default)]
pub struct Sidecars {
    /// `GET /metrics` in the Prometheus text format (plain HTTP, no token: bind it where only
    /// the scraper reaches).
    pub metrics: Option<TcpListener>,
    /// A plaintext gRPC server carrying only grpc.health.v1, for probes that cannot speak TLS
    /// or send a token (Kubernetes' native gRPC probes). It reveals nothing but SERVING.
    pub health: Option<TcpListener>,
    /// The web dashboard (`--http`): the same token and TLS as the gRPC API.
    pub http: Option<TcpListener>,
}

/// Opens the store, restores the registry, and serves on `listener` until `shutdown`
/// resolves; queued writes are flushed before returning.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (ready, _) = tokio::sync::oneshot::channel();
    run_with_ready(listener, config, shutdown, ready).await
}

/// [`run`], signalling `ready` once the database is open and the server is about to accept.
pub async fn run_with_ready(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ServerError> {
    run_with_sidecars(listener, Sidecars::default(), config, shutdown, ready).await
}

/// [`run_with_ready`] that also serves the metrics and health listeners in `sidecars` until
/// the same `shutdown`.
pub async fn run_with_sidecars(
    listener: TcpListener,
    sidecars: Sidecars,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ServerError> {
    let limits = config.connection_limits;
    run_with_limits(listener, sidecars, config, limits, shutdown, ready).await
}

/// [`run_with_sidecars`] with the connection caps and timeouts in `limits` (the same on every
/// port: gRPC, health and dashboard) instead of the defaults.
pub async fn run_with_limits(
    listener: TcpListener,
    sidecars: Sidecars,
    config: ServerConfig,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ServerError> {
    let metrics_handle = match sidecars.metrics {
        Some(_) => {
            let handle = bertsweep_telemetry::install("coordinator", Some(crate::telemetry::GAUGE_IDLE))
                .map_err(|e| ServerError::Config(e.to_string()))?;
            crate::telemetry::describe();
            crate::connections::describe();
            Some(handle)
        }
        None => None,
    };
    let ttl_ms =
        u32::try_from(config.lease_ttl.as_millis()).map_err(|_| ServerError::Config("lease TTL is too long".into()))?;
    if ttl_ms < 100 {
        return Err(ServerError::Config("lease TTL must be at least 100 ms".into()));
    }
    let token_set = match (&config.token, &config.tokens) {
        (Some(_), Some(_)) => return Err(ServerError::Config("give a token or a token file, not both".into())),
        (Some(token), None) => Some(
            TokenSet::admin(token)
                .map_err(|_| ServerError::Config("the token is empty; set a non-empty secret".into()))?,
        ),
        (None, tokens) => tokens.clone(),
    };
    let tokens = Tokens::new(token_set);
    // TLS material is checked before the database is touched: a refused start changes nothing.
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::LiveTls::new)
        .transpose()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    if let Some(reloader) = &config.reloader {
        reloader.attach(crate::reload::Live { tokens: tokens.clone(), tls: tls.clone() });
    }
    let data_dir = config.data_dir.clone().unwrap_or_else(|| crate::blobs::default_data_dir(&config.db_url));
    let mut blobs = crate::blobs::BlobStore::open(&data_dir, config.max_blob_bytes).map_err(|e| {
        ServerError::Config(format!("cannot use the data directory {}: {e}; pass --data-dir", data_dir.display()))
    })?;
    if let Some(bytes) = config.min_free_bytes {
        blobs = blobs.with_min_free_space(bytes);
    }
    crate::service::operations::clear_backups(&data_dir).map_err(|e| {
        ServerError::Config(format!("cannot use the data directory {}: {e}; pass --data-dir", data_dir.display()))
    })?;
    let store = Store::open(&config.db_url).await?;
    let snapshot = store.load().await?;
    let registry = Registry::restore(snapshot, LeaseConfig { ttl_ms }, now_ms())?;
    let (events, _) = broadcast::channel(4096);
    let writer = store.spawn_writer(events.clone());
    let (work, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        registry: Mutex::new(registry),
        writer: writer.clone(),
        events,
        work,
        default_wait: config.long_poll,
        heartbeat_interval: config.lease_ttl / 3,
        blobs,
        backups: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    let collector = tokio::spawn(collect_orphans_forever(shared.clone(), config.orphan_grace));
    let reaper = tokio::spawn(reap_forever(shared.clone(), config.worker_expiry));
    if config.verify_blobs {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || match shared.blobs.verify_all() {
            Ok((checked, bad)) => info!(checked, quarantined = bad, "stored blobs verified"),
            Err(e) => tracing::warn!("verifying the stored blobs failed: {e}"),
        });
    }
    // The caps below, not the file-descriptor limit, are what should bound the connections
    // (raised once the configuration is known good: a refused start says one line only).
    match crate::connections::raise_open_file_limit() {
        Ok((_, soft)) => {
            let ports = 1 + usize::from(sidecars.health.is_some()) + usize::from(sidecars.http.is_some());
            let wanted = (ports * limits.max_connections + 256) as u64;
            if soft < wanted {
                tracing::warn!(
                    limit = soft,
                    wanted,
                    "the open-file limit is below what the connection caps may hold; raise the hard limit \
                     (ulimit -Hn, LimitNOFILE=) or lower the caps"
                );
            }
        }
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
    // Health follows the database: NOT_SERVING while commits fail.
    let mut health_tasks = Vec::new();
    // One shutdown signal for the gRPC server and its sidecars.
    let (stop_tx, stop_rx) = watch::channel(false);
    let dashboard_stop = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|&stop| stop).await;
        }
    };
    let mut sidecar_tasks = Vec::new();
    if let (Some(listener), Some(handle)) = (sidecars.metrics, metrics_handle) {
        let state = shared.clone();
        // Workers poll at least once per long-poll and heartbeat every TTL/3.
        let window_ms = (config.long_poll + config.lease_ttl).as_millis() as i64;
        let refresh = Arc::new(move || {
            {
                let registry = state.lock();
                let now = now_ms();
                let (studies, connected) = registry.gauges(now - window_ms);
                crate::telemetry::set_gauges(&studies, connected, now);
            }
            crate::telemetry::set_health(state.writer.failing().is_some(), state.blobs.disk_space().ok());
        });
        let stop = stopped();
        sidecar_tasks.push(tokio::spawn(async move {
            if let Err(e) = bertsweep_telemetry::serve(listener, handle, refresh, stop).await {
                tracing::error!("{e}");
            }
        }));
    }
    if let Some(listener) = sidecars.health {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_serving::<CoordinatorServer<CoordinatorService>>().await;
        health_tasks.push(tokio::spawn(follow_database_health(writer.watch_failing(), reporter.clone())));
        let tracker = Tracker::new("health", limits);
        let incoming = tracker.incoming(listener);
        let tracking = tracker.layer();
        let stop = stopped();
        let stop = async move {
            stop.await;
            tracker.shutdown();
        };
        sidecar_tasks.push(tokio::spawn(async move {
            // Kept alive for as long as the server runs: dropping it would mark the service unknown.
            let _reporter = reporter;
            if let Err(e) = keepalive(tonic::transport::Server::builder())
                .layer(tracking)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
            {
                tracing::error!("the health listener failed: {e}");
            }
        }));
    }
    if let Some(listener) = sidecars.http {
        let config = crate::dashboard::DashboardConfig { tokens: tokens.clone(), tls: tls.clone(), limits };
        sidecar_tasks.push(tokio::spawn(crate::dashboard::serve(listener, shared.clone(), config, dashboard_stop)));
    }
    let tracker = Tracker::new("grpc", limits);
    let shutdown = {
        let tracker = tracker.clone();
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            tracker.shutdown();
        }
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CoordinatorServer<CoordinatorService>>().await;
    health_tasks.push(tokio::spawn(follow_database_health(writer.watch_failing(), health_reporter.clone())));
    // Reflection in both versions: grpcurl and newer tools speak v1, older clients v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bertsweep_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| ServerError::Config(format!("reflection: {e}"));
    let reflection_v1 = reflection_builder().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection_builder().build_v1alpha().map_err(reflection_error)?;
    let coordinator = CoordinatorServer::new(CoordinatorService::new(shared.clone()));

    let addr = listener.local_addr().map_err(|e| ServerError::Config(e.to_string()))?;
    info!(%addr, db = %config.db_url, auth = tokens.required(), tls = tls.is_some(), "coordinator listening");
    let _ = ready.send(());
    // Authentication innermost: the metrics and the connection tracking see its refusals too.
    let router = keepalive(tonic::transport::Server::builder())
        .layer(tracker.layer())
        .layer(bertsweep_telemetry::rpc::RpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(crate::service::wire_errors::caller_error_codes))
        .layer(AuthLayer::new(tokens))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator);
    // TLS is done here rather than by tonic, so a reload can change the certificate.
    let result = match tls {
        Some(tls) => {
            let incoming = crate::tls::incoming(&tracker, listener, tls, limits.handshake_timeout);
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        None => router.serve_with_incoming_shutdown(tracker.incoming(listener), shutdown).await,
    };
    reaper.abort();
    collector.abort();
    for task in health_tasks {
        task.abort();
    }
    // The sidecars saw the same stop (or the server failed): nothing of theirs needs flushing.
    for task in sidecar_tasks {
        task.abort();
    }
    writer.close().await;
    info!("coordinator stopped");
    result.map_err(ServerError::from)
}

/// HTTP/2 keepalive pings on a gRPC server (TCP keepalive and TCP_NODELAY are set per socket by
/// [`Tracker::admit`]: tonic ignores its own socket settings for a custom incoming stream).
fn keepalive(builder: tonic::transport::Server) -> tonic::transport::Server {
    builder
        .http2_keepalive_interval(Some(crate::connections::HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::connections::HTTP2_KEEPALIVE_TIMEOUT))
}

/// Requeues expired leases, waking at the next expiry (checked at least every second).
/// Blobs no study or trial refers to (uploads whose study was never created, models and
/// checkpoints of uploads whose trial was lost meanwhile, manifests never named) and uploads
/// abandoned half-way go once they are `grace` old: at start-up, then once per `grace`, so a
/// coordinator that runs for months does not fill its disk with them.
async fn collect_orphans_forever(shared: Arc<Shared>, grace: Duration) {
    let mut every = tokio::time::interval(grace.max(Duration::from_millis(100)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared.blobs.collect(|| shared.lock().blob_roots(), grace).await;
        shared.blobs.clear_abandoned_uploads(grace).await;
    }
}

/// Sets the coordinator's health to NOT_SERVING while the database cannot commit, and back
/// to SERVING once it can.
async fn follow_database_health(
    mut failing: watch::Receiver<Option<String>>,
    reporter: tonic_health::server::HealthReporter,
) {
    loop {
        let why = failing.borrow_and_update().clone();
        match why {
            Some(why) => {
                tracing::error!("health is NOT_SERVING: the database cannot commit ({why})");
                reporter.set_not_serving::<CoordinatorServer<CoordinatorService>>().await;
            }
            None => reporter.set_serving::<CoordinatorServer<CoordinatorService>>().await,
        }
        if failing.changed().await.is_err() {
            return;
        }
    }
}

/// How often idle workers are looked for.
const WORKER_EXPIRY_EVERY: Duration = Duration::from_secs(60);

async fn reap_forever(shared: Arc<Shared>, worker_expiry: Duration) {
    let mut expiry_due = tokio::time::Instant::now() + WORKER_EXPIRY_EVERY.min(worker_expiry);
    loop {
        if tokio::time::Instant::now() >= expiry_due {
            expiry_due = tokio::time::Instant::now() + WORKER_EXPIRY_EVERY.min(worker_expiry);
            let idle_since = now_ms() - worker_expiry.as_millis() as i64;
            let _ = shared.apply(|reg, _| Ok(reg.expire_workers(idle_since))).await;
        }
        let next = shared.lock().next_expiry();
        let wait = next.map(|at| (at - now_ms() + 1).clamp(10, 1000) as u64).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // Reaping needs no caller to wait for the commit.
        let _ = shared.apply(|reg, now| Ok(reg.reap(now))).await;
    }
}
