//! Bounds and reaps the TCP connections of every port the coordinator serves (gRPC, the
//! plaintext health listener, the dashboard), so idle or silent clients cannot lock others out.
//!
//! Each port has a [`Tracker`]: a table of its live connections, at most
//! [`ConnectionLimits::max_connections`]. Every accepted socket is wrapped in a
//! [`GuardedStream`] that remembers whether the client has sent a byte yet, and that the tracker
//! can close from outside (its pending read or write fails at once, so hyper drops it).
//! Requests are counted per connection by [`TrackRequests`] (a tower layer on the gRPC server,
//! a wrapper around the dashboard's router per connection): a request is in flight from its
//! arrival until its response body is finished or dropped, so a long-poll, a `WatchStudy` stream
//! or a dashboard event stream keeps its connection busy even when no byte moves.
//!
//! A connection is *idle* while it has no request in flight; HTTP/2 keepalive pings do not
//! count as use. A reaper task per tracker closes
//! - connections that sent no byte within [`ConnectionLimits::handshake_timeout`] (TLS or not),
//! - connections idle longer than [`ConnectionLimits::idle_timeout`] (HTTP/1 keep-alive and
//!   HTTP/2 alike).
//!
//! When the table is full, a new connection takes the place of the one idle the longest (those
//! that never sent a byte first); when every connection has a request in flight, the new one is
//! refused (closed) rather than exceed the cap. Closes are counted in [`CLOSED_TOTAL`] by port
//! and reason, and [`OPEN`] is the number of connections each port holds.
//!
//! [`raise_open_file_limit`] lifts the soft open-file limit to the hard one at start-up, so the
//! caps, not the file-descriptor limit, are what bound the process.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use futures::Stream;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

mod requests;
mod stream;
pub use requests::*;
pub use stream::*;

/// Connections a port holds at once by default; a further one sheds the longest-idle one.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a new connection may stay silent (no byte: no TLS ClientHello, no HTTP/2 preface,
/// no request line) before it is closed, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may go without a request in flight before it is closed, by default.
/// Well above the longest AcquireTrial long-poll (60 s) and a worker's heartbeat interval
/// (a third of the lease TTL), so a working worker's connection is never idle this long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the server pings an HTTP/2 client (gRPC and the dashboard over h2).
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long the server waits for the answer to its HTTP/2 ping before closing the connection.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Idle time before the kernel starts TCP keepalive probes on an accepted socket.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Interval between TCP keepalive probes once they started.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Once the server stops, how long an idle connection is left to the HTTP/2 GOAWAY (or the
/// HTTP/1 close) of a graceful shutdown before it is closed outright.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Counter of connections the limits closed, labelled `port` (`grpc`, `health`, `dashboard`)
/// and `reason` ([`REASON_HANDSHAKE`], [`REASON_IDLE`], [`REASON_SHED`], [`REASON_REFUSED`],
/// [`REASON_SHUTDOWN`]).
pub const CLOSED_TOTAL: &str = "bertsweep_connections_closed_total";

/// Gauge of the connections a port holds, labelled `port`.
pub const OPEN: &str = "bertsweep_connections_open";

/// No byte within the handshake timeout.
pub const REASON_HANDSHAKE: &str = "handshake_timeout";
/// No request in flight for the idle timeout.
pub const REASON_IDLE: &str = "idle_timeout";
/// Made room for a new connection while the table was full.
pub const REASON_SHED: &str = "shed";
/// A new connection turned away: the table was full of connections with requests in flight.
pub const REASON_REFUSED: &str = "refused";
/// Never sent a byte, or idle past [`SHUTDOWN_GRACE`], when the server stopped.
pub const REASON_SHUTDOWN: &str = "shutdown";

/// Describes the metrics above to the installed recorder.
pub fn describe() {
    metrics::describe_counter!(CLOSED_TOTAL, "Connections closed by the connection limits, by port and reason.");
    metrics::describe_gauge!(OPEN, "Connections held open, by port.");
}

/// How many connections a port holds and how long they may stay silent or idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections held at once (at least 1).
    pub max_connections: usize,
    /// A connection that sent no byte this long after it was accepted is closed.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both values; returns the soft
/// limit before and after.
pub fn raise_open_file_limit() -> io::Result<(u64, u64)> {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    tracing::info!(before, after, hard, "open-file limit (soft) raised to the hard limit");
    Ok((before, after))
}

/// One live connection, shared by its [`GuardedStream`], the table and in-flight requests.
#[derive(Debug)]
struct Conn {
    id: u64,
    peer: Option<SocketAddr>,
    epoch: Instant,
    /// Milliseconds since `epoch` when it was accepted.
    opened_ms: u64,
    /// Milliseconds since `epoch` of the last request start or end (or the accept).
    last_active_ms: AtomicU64,
    /// The client has sent at least one byte.
    started: AtomicBool,
    in_flight: AtomicUsize,
    closed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    /// Whether it may be closed to make room or for idleness: nothing in flight.
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Sort key for shedding: never-started connections first (oldest first), then the rest
    /// by how long ago their last request ended; ties go to the one accepted first.
    fn shed_key(&self) -> (bool, u64, u64) {
        if self.started.load(Ordering::Acquire) {
            (true, self.last_active_ms.load(Ordering::Acquire), self.id)
        } else {
            (false, self.opened_ms, self.id)
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: HashMap<u64, Arc<Conn>>,
    by_peer: HashMap<SocketAddr, u64>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.live.remove(&id)?;
        if let Some(peer) = conn.peer {
            if self.by_peer.get(&peer) == Some(&id) {
                self.by_peer.remove(&peer);
            }
        }
        Some(conn)
    }

    /// The idle connection to close for a newcomer, if any is idle.
    fn victim(&self) -> Option<u64> {
        self.live.values().filter(|c| c.idle()).min_by_key(|c| c.shed_key()).map(|c| c.id)
    }
}

#[derive(Debug)]
struct Inner {
    port: &'static str,
    limits: ConnectionLimits,
    epoch: Instant,
    table: Mutex<Table>,
    /// When the last "table full" warning was logged (ms since `epoch`, +1 so 0 means never).
    warned_full_ms: AtomicU64,
    /// When the server stopped (ms since `epoch`, +1 so 0 means running): from then on idle
    /// connections get [`SHUTDOWN_GRACE`] instead of the idle timeout.
    draining_since_ms: AtomicU64,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_gauge(&self, open: usize) {
        metrics::gauge!(OPEN, "port" => self.port).set(open as f64);
    }

    fn count(&self, reason: &'static str, n: u64) {
        if n > 0 {
            metrics::counter!(CLOSED_TOTAL, "port" => self.port, "reason" => reason).increment(n);
        }
    }

    /// Logs `message` about this port at most once a minute.
    fn warn_limited(&self, message: &str) {
        let now = self.now_ms() + 1;
        let last = self.warned_full_ms.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= 60_000 {
            self.warned_full_ms.store(now, Ordering::Relaxed);
            tracing::warn!(
                port = self.port,
                max_connections = self.limits.max_connections,
                "{message} (logged at most once a minute; see {CLOSED_TOTAL})"
            );
        }
    }

    /// Closes the connections past their handshake or idle timeout.
    fn reap(&self) {
        let now = self.now_ms();
        let handshake = self.limits.handshake_timeout.as_millis() as u64;
        let idle = self.limits.idle_timeout.as_millis() as u64;
        let draining_since = self.draining_since_ms.load(Ordering::Acquire);
        let draining = draining_since > 0;
        let drained = draining && (now + 1).saturating_sub(draining_since) >= SHUTDOWN_GRACE.as_millis() as u64;
        let mut silent = Vec::new();
        let mut idled = Vec::new();
        let open = {
            let mut table = self.table();
            let expired: Vec<(u64, bool)> = table
                .live
                .values()
                .filter_map(|c| {
                    let started = c.started.load(Ordering::Acquire);
                    if !started && now.saturating_sub(c.opened_ms) >= handshake {
                        Some((c.id, true))
                    } else if c.idle()
                        && (drained || now.saturating_sub(c.last_active_ms.load(Ordering::Acquire)) >= idle)
                    {
                        Some((c.id, false))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, never_started) in expired {
                if let Some(conn) = table.remove(id) {
                    if never_started {
                        silent.push(conn);
                    } else {
                        idled.push(conn);
                    }
                }
            }
            table.live.len()
        };
        for conn in silent.iter().chain(&idled) {
            conn.close();
        }
        self.count(REASON_HANDSHAKE, silent.len() as u64);
        self.count(if draining { REASON_SHUTDOWN } else { REASON_IDLE }, idled.len() as u64);
        if !silent.is_empty() || !idled.is_empty() {
            self.set_gauge(open);
            tracing::debug!(port = self.port, silent = silent.len(), idle = idled.len(), "closed connections");
        }
    }
}

/// The live connections of one port, and the reaper that enforces their timeouts. Cheap to
/// clone (one shared table); the reaper ends once the tracker and every connection it handed
/// out are gone.
#[derive(Debug, Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl Tracker {
    /// A tracker for the port called `port` (the metrics' label), with its reaper task spawned
    /// on the current tokio runtime.
    pub fn new(port: &'static str, limits: ConnectionLimits) -> Self {
        let limits = ConnectionLimits { max_connections: limits.max_connections.max(1), ..limits };
        let inner = Arc::new(Inner {
            port,
            limits,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            warned_full_ms: AtomicU64::new(0),
            draining_since_ms: AtomicU64::new(0),
        });
        let tick = (limits.handshake_timeout.min(limits.idle_timeout).min(SHUTDOWN_GRACE) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(reap_forever(Arc::downgrade(&inner), tick));
        Tracker { inner }
    }

    /// The limits this tracker enforces.
    pub fn limits(&self) -> ConnectionLimits {
        self.inner.limits
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.inner.table().live.len()
    }

    /// Takes `tcp` into the table (TCP_NODELAY and keepalive set): when the table is full the
    /// longest-idle connection is closed to make room, and when none is idle `tcp` is closed
    /// and `None` returned.
    pub fn admit(&self, tcp: TcpStream) -> Option<GuardedStream> {
        configure_socket(&tcp);
        let inner = &self.inner;
        let peer = tcp.peer_addr().ok();
        let now = inner.now_ms();
        let (conn, shed, open) = {
            let mut table = inner.table();
            let mut shed = None;
            if table.live.len() >= inner.limits.max_connections {
                match table.victim() {
                    Some(id) => shed = table.remove(id),
                    None => {
                        drop(table);
                        drop(tcp);
                        inner.count(REASON_REFUSED, 1);
                        inner.warn_limited(&format!(
                            "the {} port holds all the connections it may, each with a request in flight: \
                             new connections are refused",
                            inner.port
                        ));
                        return None;
                    }
                }
            }
            let id = table.next_id;
            table.next_id += 1;
            let conn = Arc::new(Conn {
                id,
                peer,
                epoch: inner.epoch,
                opened_ms: now,
                last_active_ms: AtomicU64::new(now),
                started: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                read_waker: AtomicWaker::new(),
                write_waker: AtomicWaker::new(),
            });
            table.live.insert(id, conn.clone());
            if let Some(peer) = peer {
                table.by_peer.insert(peer, id);
            }
            (conn, shed, table.live.len())
        };
        if let Some(victim) = shed {
            victim.close();
            inner.count(REASON_SHED, 1);
            inner.warn_limited(&format!(
                "the {} port holds all the connections it may: the longest-idle ones are closed to make room",
                inner.port
            ));
        }
        inner.set_gauge(open);
        Some(GuardedStream { inner: tcp, conn, tracker: self.clone() })
    }

    /// Accepts from `listener` for ever, yielding the connections [`Tracker::admit`] keeps (the
    /// stream a tonic server's `serve_with_incoming_shutdown` takes). Accept errors are
    /// retried (see [`Tracker::accept`]); the stream never ends or fails.
    pub fn incoming(&self, listener: TcpListener) -> impl Stream<Item = io::Result<GuardedStream>> + Send + 'static {
        futures::stream::unfold((listener, self.clone()), |(listener, tracker)| async move {
            loop {
                let tcp = tracker.accept(&listener).await;
                if let Some(stream) = tracker.admit(tcp) {
                    return Some((Ok(stream), (listener, tracker)));
                }
            }
        })
    }

    /// Accepts the next connection from `listener`, retrying errors: out of file descriptors,
    /// it closes its longest-idle connection to free one; other errors not of the client's
    /// doing are logged and retried after a pause.
    pub async fn accept(&self, listener: &TcpListener) -> TcpStream {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => return tcp,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    let shed = self.shed_one();
                    self.inner.warn_limited(&format!(
                        "the {} port cannot accept: {e}; idle connections are closed to make room \
                         (raise the open-file limit or lower the connection cap)",
                        self.inner.port
                    ));
                    // The freed descriptor is released once its connection task notices.
                    tokio::time::sleep(Duration::from_millis(if shed { 10 } else { 100 })).await;
                }
                Err(e) => {
                    tracing::warn!(port = self.inner.port, "could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Closes the longest-idle connection, if any is idle; whether one was.
    fn shed_one(&self) -> bool {
        let (victim, open) = {
            let mut table = self.inner.table();
            let victim = table.victim().and_then(|id| table.remove(id));
            (victim, table.live.len())
        };
        let Some(victim) = victim else { return false };
        victim.close();
        self.inner.count(REASON_SHED, 1);
        self.inner.set_gauge(open);
        true
    }

    /// For a prompt shutdown: closes the connections that have not sent a byte (a graceful
    /// shutdown would wait for them), and from now on closes idle ones after
    /// [`SHUTDOWN_GRACE`] instead of the idle timeout.
    pub fn shutdown(&self) {
        let now = self.inner.now_ms() + 1;
        let _ = self.inner.draining_since_ms.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        let (closed, open) = {
            let mut table = self.inner.table();
            let ids: Vec<u64> =
                table.live.values().filter(|c| !c.started.load(Ordering::Acquire)).map(|c| c.id).collect();
            let closed: Vec<_> = ids.into_iter().filter_map(|id| table.remove(id)).collect();
            (closed, table.live.len())
        };
        for conn in &closed {
            conn.close();
        }
        self.inner.count(REASON_SHUTDOWN, closed.len() as u64);
        self.inner.set_gauge(open);
    }

    /// A tower layer counting each request as in flight on the connection it arrived on,
    /// found by the peer address tonic puts in the request's extensions.
    pub fn layer(&self) -> TrackRequestsLayer {
        TrackRequestsLayer { tracker: self.clone() }
    }

    fn find(&self, peer: SocketAddr) -> Option<Arc<Conn>> {
        let table = self.inner.table();
        let id = table.by_peer.get(&peer)?;
        table.live.get(id).cloned()
    }
}

fn configure_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    let keepalive = keepalive.with_interval(TCP_KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

async fn reap_forever(inner: Weak<Inner>, tick: Duration) {
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.reap();
    }
}
