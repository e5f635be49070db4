//! `bertsweep_rpc_duration_seconds{method, code}`: how long each unary gRPC call took, from
//! the request's arrival to the end of its response, by method and final status; streams and
//! long polls (whose duration is their life, not their latency) go to
//! `bertsweep_rpc_stream_duration_seconds{method, code}` instead, so that a latency panel or
//! alert on the first is not drowned by AcquireTrial's 20-second waits. Codes are gRPC's
//! canonical names (`OK`, `UNAVAILABLE`, …). The status comes from the `grpc-status` header of an error-only response, or from
//! the trailers; a response dropped before its trailers (a client that went away) counts as
//! `CANCELLED`. Paths the server does not know answer `UNIMPLEMENTED` and are labelled
//! `unknown`, so a client sending random paths cannot grow the label set.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The unary calls' histogram.
pub const RPC_DURATION: &str = "bertsweep_rpc_duration_seconds";
/// The streams' and long polls' histogram (their whole life).
pub const RPC_STREAM_DURATION: &str = "bertsweep_rpc_stream_duration_seconds";

/// Methods whose duration is a life rather than a latency: the long poll, server and client
/// streams, health watches and reflection.
pub const STREAMING_METHODS: &[&str] =
    &["AcquireTrial", "WatchStudy", "UploadBlob", "DownloadBlob", "Watch", "ServerReflectionInfo"];

/// gRPC's canonical name of `code` (`OK`, `INVALID_ARGUMENT`, …), as Prometheus rules and
/// other gRPC tooling spell them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Wraps a gRPC server's HTTP service with [`RpcMetrics`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] builds.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// One call being timed.
#[derive(Debug)]
struct Timing {
    path: String,
    start: Instant,
    /// Set from an error-only response's headers.
    code: Option<tonic::Code>,
}

impl Timing {
    fn finish(self, code: tonic::Code) {
        let method = if code == tonic::Code::Unimplemented {
            "unknown".to_string()
        } else {
            self.path.rsplit('/').next().unwrap_or("unknown").to_string()
        };
        let name = if STREAMING_METHODS.contains(&method.as_str()) { RPC_STREAM_DURATION } else { RPC_DURATION };
        metrics::histogram!(name, "method" => method, "code" => code_name(code))
            .record(self.start.elapsed().as_secs_f64());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(value))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let timing = Timing { path: request.uri().path().to_string(), start: Instant::now(), code: None };
        MeteredFuture { inner: self.inner.call(request), timing: Some(timing) }
    }
}

pin_project! {
    /// The response future of [`RpcMetrics`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        timing: Option<Timing>,
    }
}

impl<F, B, E> std::future::Future for MeteredFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                if let Some(timing) = this.timing.take() {
                    timing.finish(tonic::Code::Internal);
                }
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(response)) => {
                let mut timing = this.timing.take();
                if let Some(t) = timing.as_mut() {
                    t.code = grpc_status(response.headers());
                }
                Poll::Ready(Ok(response.map(|inner| MeteredBody { inner, timing })))
            }
        }
    }
}

pin_project! {
    /// A response body that records its call's duration and status when it ends or is dropped.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        timing: Option<Timing>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(timing) = this.project().timing.take() {
                let code = timing.code.unwrap_or(tonic::Code::Cancelled);
                timing.finish(code);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|t| grpc_status(t).unwrap_or(tonic::Code::Unknown))
            }
            Poll::Ready(Some(Err(_))) => Some(tonic::Code::Internal),
            Poll::Ready(None) => Some(this.timing.as_ref().and_then(|t| t.code).unwrap_or(tonic::Code::Unknown)),
            Poll::Pending => None,
        };
        if let Some(code) = ended {
            if let Some(timing) = this.timing.take() {
                timing.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
