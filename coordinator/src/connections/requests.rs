//! Requests in flight: a tower layer marking a connection busy from a request's arrival until
//! its response body ends or is dropped, so busy connections are neither idle nor shed.

use super::*;

/// Builds [`TrackRequests`] services that find a request's connection by its peer address.
#[derive(Debug, Clone)]
pub struct TrackRequestsLayer {
    pub(super) tracker: Tracker,
}

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner, source: Source::Peer(self.tracker.clone()) }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Source {
    /// The one connection this service serves (the dashboard).
    Connection(Arc<Conn>),
    /// Any connection of this tracker, by the peer address in the request (tonic).
    Peer(Tracker),
}

/// Counts each request as in flight on its connection until its response body ends or is
/// dropped; a connection with a request in flight is neither idle nor shed.
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    pub(super) inner: S,
    pub(super) source: Source,
}

/// The peer address tonic put in a request's extensions (plain TCP or TLS).
pub(crate) fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.get_ref().remote_addr()))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TrackRequests<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let conn = match &self.source {
            Source::Connection(conn) => Some(conn.clone()),
            Source::Peer(tracker) => peer_of(&request).and_then(|peer| tracker.find(peer)),
        };
        let guard = conn.map(InFlight::start);
        TrackedFuture { inner: Box::pin(self.inner.call(request)), guard }
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.last_active_ms.store(conn.now_ms(), Ordering::Release);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_active_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The response future of [`TrackRequests`].
#[derive(Debug)]
pub struct TrackedFuture<F> {
    inner: Pin<Box<F>>,
    guard: Option<InFlight>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = ready!(this.inner.as_mut().poll(cx));
        let guard = this.guard.take();
        Poll::Ready(response.map(|response| response.map(|body| TrackedBody { inner: Box::pin(body), guard })))
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: Pin<Box<B>>,
    guard: Option<InFlight>,
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
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
