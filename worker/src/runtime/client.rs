//! The worker's gRPC client: bearer token, and retries with backoff while the coordinator is
//! down or restarting.

use std::future::Future;
use std::time::Duration;

use bertsweep_proto::auth::BearerToken;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::warn;

/// A cloneable client (clones share one HTTP/2 connection).
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Why the worker cannot talk to the coordinator at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The --coordinator value does not parse as a URL.
    #[error("--coordinator {0:?} is not a valid URL; use e.g. http://127.0.0.1:50051")]
    BadUrl(String),
    /// The token cannot be a header value.
    #[error(transparent)]
    BadToken(#[from] bertsweep_proto::auth::BadToken),
}

/// A lazily connecting client: the first call (and every call after a restart) reconnects.
pub fn connect(url: &str, token: Option<&str>) -> Result<Client, ClientError> {
    let url = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|_| ClientError::BadUrl(url.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let auth = BearerToken::new(token)?;
    Ok(CoordinatorClient::with_interceptor(endpoint.connect_lazy(), auth))
}

/// Errors worth retrying: the coordinator is unreachable, restarting or overloaded.
pub fn is_transient(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled)
}

/// Retries `call` with exponential backoff (0.2 s → 10 s) on transient errors until it
/// succeeds, fails permanently, or `give_up_after` passes.
pub async fn with_retry<T, F, Fut>(what: &str, give_up_after: Option<Duration>, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut warned = false;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(status) if is_transient(&status) => {
                if give_up_after.is_some_and(|limit| started.elapsed() > limit) {
                    return Err(status);
                }
                if !warned || delay >= Duration::from_secs(10) {
                    warn!("{what}: coordinator unavailable ({}); retrying in {delay:?}", status.message());
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(status) => return Err(status),
        }
    }
}
