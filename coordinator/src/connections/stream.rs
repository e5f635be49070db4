//! `GuardedStream`: an accepted TCP connection that counts its bytes as activity for the
//! tracker and leaves the table when dropped; tonic's `Connected` for the peer address.

use super::*;

/// An accepted TCP connection under a [`Tracker`]: reads and writes go straight to the socket;
/// once the tracker closes it, they fail (so the server drops it), and dropping it leaves the
/// table.
#[derive(Debug)]
pub struct GuardedStream {
    pub(super) inner: TcpStream,
    pub(super) conn: Arc<Conn>,
    pub(super) tracker: Tracker,
}

impl GuardedStream {
    /// The socket underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// `service` with every request counted as in flight on this connection (the dashboard
    /// wraps its router per connection so).
    pub fn track<S>(&self, service: S) -> TrackRequests<S> {
        TrackRequests { inner: service, source: Source::Connection(self.conn.clone()) }
    }

    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection closed by the coordinator's connection limits")
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        let open = {
            let mut table = self.tracker.inner.table();
            if table.remove(self.conn.id).is_none() {
                return;
            }
            table.live.len()
        };
        self.tracker.inner.set_gauge(open);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.conn.read_waker.register(cx.waker());
        if this.conn.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.started.store(true, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.conn.write_waker.register(cx.waker());
        if this.conn.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.conn.write_waker.register(cx.waker());
        if this.conn.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}
