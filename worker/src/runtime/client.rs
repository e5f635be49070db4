//! The worker's gRPC client: bearer token, and retries with backoff while the coordinator is
//! down or restarting.

use std::future::Future;
use std::time::Duration;

use bertsweep_proto::auth::BearerToken;
use bertsweep_proto::connect;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::warn;

/// A cloneable client (clones share one HTTP/2 connection).
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// Why the worker cannot talk to the coordinator at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The --coordinator value, a TLS file or flag combination is unusable.
    #[error(transparent)]
    Settings(#[from] connect::ConnectError),
    /// The token cannot be a header value.
    #[error(transparent)]
    BadToken(#[from] bertsweep_proto::auth::BadToken),
    /// A problem retrying cannot fix: a certificate the client or server refuses, TLS against
    /// plaintext.
    #[error("{0}")]
    Refused(String),
}

/// A lazily connecting client: the first call (and every call after a restart) reconnects.
///
/// One connection attempt is made first: a certificate or TLS mismatch is reported at once
/// (one line naming the cause), while an unreachable coordinator is left to the callers'
/// retries, so a worker may start before its coordinator.
pub async fn connect(url: &str, token: Option<&str>, tls: &connect::ClientTls) -> Result<Client, ClientError> {
    let endpoint = connect::endpoint(url, tls)?;
    let auth = BearerToken::new(token)?;
    // A connected channel reconnects by itself after a coordinator restart, like a lazy one.
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => {
            let explained = connect::explain_failure(url, &connect::innermost(&e));
            if !explained.starts_with("cannot reach") {
                return Err(ClientError::Refused(explained));
            }
            endpoint.connect_lazy()
        }
    };
    Ok(CoordinatorClient::with_interceptor(channel, auth))
}

/// Errors worth retrying: the coordinator is unreachable, restarting or overloaded.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    )
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

/// One RPC with [`with_retry`]'s retries and backoff: every attempt calls `rpc` with a clone of
/// `client` (clones share its connection) and of `request`; on success, the response's
/// message. The one place the worker's calls build their retry closure.
pub async fn call<Req, Resp, F, Fut>(
    client: &Client,
    what: &str,
    give_up_after: Option<Duration>,
    request: &Req,
    rpc: F,
) -> Result<Resp, Status>
where
    Req: Clone,
    F: Fn(Client, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    with_retry(what, give_up_after, || rpc(client.clone(), request.clone())).await.map(tonic::Response::into_inner)
}
