//! Idle, silent and excess connections on the gRPC and dashboard ports, over real sockets
//! against an in-process coordinator: thousands of clients that connect and send nothing do not
//! lock anyone out and are closed after the handshake timeout; a connection that went quiet
//! after a request is closed after the idle timeout (a live event stream is not); a full table
//! sheds its longest-idle connection and refuses newcomers only when every connection is busy.
//!
//! The tests check behaviour; how long things take is `benches/idle_connections.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bertsweep_coordinator::connections::{self, ConnectionLimits};
use bertsweep_coordinator::server::{self, ServerConfig, ServerTls, Sidecars};
use bertsweep_proto::v1 as pb;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Idle connections opened against one port.
const IDLE: usize = 5000;

/// The tests that open thousands of sockets run one at a time (they share this process's
/// file descriptors).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A coordinator in this process with the dashboard on its own port.
struct Served {
    grpc: SocketAddr,
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A listener on 127.0.0.1 whose accept queue holds 4,096 connections (the kernel's usual
/// `somaxconn`), so that opening thousands of connections at once measures the coordinator
/// rather than SYN retransmissions after the 1,024-deep queue of `TcpListener::bind` overflows.
fn listen() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// A coordinator with `limits` on every port, guarded by `token` when given, over `tls` when
/// given.
async fn serve_with(limits: ConnectionLimits, token: Option<&str>, tls: Option<ServerTls>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        db_url: format!("sqlite://{}", dir.path().join("idle.db").display()),
        token: token.map(String::from),
        tls,
        lease_ttl: Duration::from_secs(30),
        long_poll: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let listener = listen();
    let grpc = listener.local_addr().unwrap();
    let http_listener = listen();
    let http = http_listener.local_addr().unwrap();
    let sidecars = Sidecars { http: Some(http_listener), ..Sidecars::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        server::run_with_limits(listener, sidecars, config, limits, stop, ready_tx).await.unwrap();
    });
    ready_rx.await.expect("the coordinator failed to start");
    Served { grpc, http, stop: Some(stop), task, _dir: dir }
}

/// A coordinator with `limits` on every port and no token.
async fn serve(limits: ConnectionLimits) -> Served {
    serve_with(limits, None, None).await
}

impl Served {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("the coordinator did not stop").unwrap();
    }
}

/// Raises this process's open-file limit; false (with the reason printed) when even the hard
/// limit cannot hold `IDLE` client sockets plus the server's side of them.
fn enough_file_descriptors() -> bool {
    let needed = (2 * IDLE + 1000) as u64;
    match connections::raise_open_file_limit() {
        Ok((_, soft)) if soft >= needed => true,
        Ok((_, soft)) => {
            println!("skipped: the open-file limit is {soft}, and {IDLE} idle connections need about {needed}");
            false
        }
        Err(e) => {
            println!("skipped: the open-file limit cannot be read or raised: {e}");
            false
        }
    }
}

/// `n` connections to `addr` that never send a byte, in the order they were opened.
async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    futures::stream::iter(0..n)
        .map(|_| TcpStream::connect(addr))
        .buffered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|c| c.expect("connect"))
        .collect()
}

/// Whether the server closed `stream` before `deadline` (whatever it sent first is skipped:
/// an HTTP/2 server sends its SETTINGS before reading anything).
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether `stream` is still open now (nothing read tells it was closed), without waiting.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Asserts that the server closes every one of `idle` within `within`.
async fn assert_all_closed(idle: Vec<TcpStream>, within: Duration, port: &str) {
    let deadline = Instant::now() + within;
    let total = idle.len();
    for (i, mut stream) in idle.into_iter().enumerate() {
        assert!(
            closed_by(&mut stream, deadline).await,
            "idle connection {i} of {total} to the {port} port is still open {within:?} later"
        );
    }
}

/// An HTTP/1.1 reply read off a keep-alive connection: its status and body.
async fn read_reply(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the reply's headers: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let complete = |raw: &[u8]| match header("content-length") {
        Some(len) => raw.len() >= head_end + len.parse::<usize>().unwrap(),
        None => raw.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&raw) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed in the middle of the reply");
        raw.extend_from_slice(&buf[..n]);
    }
    (status, String::from_utf8_lossy(&raw[head_end..]).to_string())
}

/// `GET path` on a fresh connection (closed after the reply); the reply's status.
async fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut stream).await.0
}

async fn grpc_client(addr: SocketAddr) -> common::Client {
    common::TestServer::client_for(&format!("http://{addr}")).await
}

async fn list_studies(client: &mut common::Client) -> Result<usize, tonic::Status> {
    let request = pb::ListStudiesRequest::default();
    client.list_studies(request).await.map(|r| r.into_inner().studies.len())
}

/// A TCP relay to `upstream`: returns its address and a channel that receives one message
/// each time the server's side of a relayed connection ends while the client kept its own open.
async fn relay(upstream: SocketAddr) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (client_done_tx, mut client_done) = tokio::sync::oneshot::channel::<()>();
                let upward = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = client_done_tx.send(());
                    let _ = server_write.shutdown().await;
                });
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                if client_done.try_recv().is_err() {
                    let _ = tx.send(());
                }
                let _ = client_write.shutdown().await;
                upward.abort();
            });
        }
    });
    (addr, rx)
}

// ---------------------------------------------------------------------------------------------
// 5,000 clients that connect and say nothing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_serves_a_new_client_past_5000_idle_connections_then_closes_them() {
    let _heavy = HEAVY.lock().await;
    if !enough_file_descriptors() {
        return;
    }
    let limits = ConnectionLimits { handshake_timeout: Duration::from_secs(3), ..ConnectionLimits::default() };
    let served = serve(limits).await;
    let idle = open_idle(served.grpc, IDLE).await;

    let served_new = tokio::time::timeout(Duration::from_secs(30), async {
        let mut client = grpc_client(served.grpc).await;
        list_studies(&mut client).await
    })
    .await
    .expect("a new gRPC client was not served while 5,000 idle connections were open");
    assert_eq!(served_new.unwrap(), 0);

    // Over the cap some were shed at once; the rest go at the handshake timeout.
    assert_all_closed(idle, Duration::from_secs(60), "gRPC").await;
    let mut client = grpc_client(served.grpc).await;
    assert_eq!(list_studies(&mut client).await.unwrap(), 0);
    drop(client);
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_serves_login_past_5000_idle_connections_then_closes_them() {
    let _heavy = HEAVY.lock().await;
    if !enough_file_descriptors() {
        return;
    }
    let limits = ConnectionLimits { handshake_timeout: Duration::from_secs(3), ..ConnectionLimits::default() };
    // With a token, /login is the one page anybody may load.
    let served = serve_with(limits, Some("idle-test-token-8d2e"), None).await;
    let idle = open_idle(served.http, IDLE).await;

    let status = tokio::time::timeout(Duration::from_secs(30), get(served.http, "/login"))
        .await
        .expect("GET /login was not served while 5,000 idle connections were open");
    assert_eq!(status, 200);

    assert_all_closed(idle, Duration::from_secs(60), "dashboard").await;
    assert_eq!(get(served.http, "/login").await, 200);
    served.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Connections that went quiet after a request

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_connection_quiet_after_a_request_is_closed_but_a_live_event_stream_is_not() {
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    // The handshake timeout (hyper's header-read timeout too) is far off: only the idle
    // timeout can close the quiet connection within the test's deadline.
    let served = serve(limits).await;
    let mut client = grpc_client(served.grpc).await;
    common::create(&mut client, &common::study_toml("quiet", "max_trials = 4", &common::grid_params(2))).await;
    drop(client);

    // An event stream: a response that goes on writing while the browser never sends again.
    let mut events = TcpStream::connect(served.http).await.unwrap();
    let request = format!("GET /api/studies/quiet/events HTTP/1.1\r\nHost: {}\r\n\r\n", served.http);
    events.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = events.read(&mut buf).await.unwrap();
        assert!(n > 0, "the event stream closed before its headers");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");

    // A keep-alive connection that asks for a page, reads it, then says nothing.
    let mut quiet = TcpStream::connect(served.http).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", served.http);
    quiet.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_reply(&mut quiet).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        closed_by(&mut quiet, Instant::now() + Duration::from_secs(30)).await,
        "a keep-alive connection quiet past the idle timeout was not closed"
    );
    // The stream has been quiet on the browser's side at least as long, but it is in flight.
    assert!(still_open(&events), "the idle timeout closed a live event stream");
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_quiet_after_a_call_is_closed_and_the_client_reconnects() {
    let limits = ConnectionLimits {
        handshake_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let served = serve(limits).await;
    let (relayed, mut server_closed) = relay(served.grpc).await;
    let mut client = grpc_client(relayed).await;
    assert_eq!(list_studies(&mut client).await.unwrap(), 0);

    let closed = tokio::time::timeout(Duration::from_secs(30), server_closed.recv()).await;
    assert!(matches!(closed, Ok(Some(()))), "the coordinator kept a gRPC connection idle past the idle timeout");

    // The channel notices and connects again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match list_studies(&mut client).await {
            Ok(n) => {
                assert_eq!(n, 0);
                break;
            }
            Err(status) => assert!(Instant::now() < deadline, "the client did not recover: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_are_closed_on_both_ports_and_tls_clients_are_served() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let tls = ServerTls {
        cert_pem: cert.cert.pem().into_bytes(),
        key_pem: cert.key_pair.serialize_pem().into_bytes(),
        client_ca_pem: None,
    };
    let limits = ConnectionLimits { handshake_timeout: Duration::from_secs(1), ..ConnectionLimits::default() };
    let served = serve_with(limits, None, Some(tls)).await;

    for (port, addr) in [("gRPC", served.grpc), ("dashboard", served.http)] {
        // One says nothing; one starts a TLS record (a ClientHello's first bytes) and stalls.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(closed_by(&mut silent, deadline).await, "a silent connection to the {port} port stayed open");
        assert!(closed_by(&mut stalled, deadline).await, "a stalled TLS handshake on the {port} port stayed open");
    }

    // Real TLS clients get through.
    let ca = tonic::transport::Certificate::from_pem(cert.cert.pem());
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", served.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::coordinator_client::CoordinatorClient::new(channel);
    assert_eq!(list_studies(&mut client).await.unwrap(), 0);

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(served.http).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("a TLS handshake with the dashboard");
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", served.http);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    drop(client);
    served.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A full table

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dashboard_sheds_its_oldest_idle_connection_for_each_newcomer() {
    let limits = ConnectionLimits {
        max_connections: 50,
        handshake_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let served = serve(limits).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(served.http).await.unwrap());
    }
    let newcomer = TcpStream::connect(served.http).await.unwrap();
    assert!(
        closed_by(&mut idle[0], Instant::now() + Duration::from_secs(30)).await,
        "the oldest idle connection was not shed for the 51st"
    );
    assert!(idle[1..].iter().all(still_open), "a younger idle connection was shed");
    assert!(still_open(&newcomer));

    // A real client gets in the same way.
    let status = tokio::time::timeout(Duration::from_secs(30), get(served.http, "/"))
        .await
        .expect("GET / was not served while the table was full");
    assert_eq!(status, 200);
    assert!(closed_by(&mut idle[1], Instant::now() + Duration::from_secs(30)).await);
    assert!(idle[2..].iter().all(still_open), "a younger idle connection was shed");
    drop(idle);
    drop(newcomer);
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_grpc_port_sheds_idle_connections_before_busy_ones_and_refuses_when_all_are_busy() {
    let limits = ConnectionLimits {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let served = serve(limits).await;
    // A: a client with a WatchStudy stream open (a request in flight).
    let mut a = grpc_client(served.grpc).await;
    common::create(&mut a, &common::study_toml("busy", "max_trials = 4", &common::grid_params(2))).await;
    let watch_a = a.watch_study(pb::WatchStudyRequest { study: "busy".into() }).await.unwrap().into_inner();

    // B, then C: silent. C takes B's place; A is older but busy.
    let mut b = TcpStream::connect(served.grpc).await.unwrap();
    let mut c = TcpStream::connect(served.grpc).await.unwrap();
    assert!(closed_by(&mut b, Instant::now() + Duration::from_secs(30)).await, "B was not shed for C");

    // D: a second busy client takes C's place.
    let mut d = grpc_client(served.grpc).await;
    let watch_d = d.watch_study(pb::WatchStudyRequest { study: "busy".into() }).await.unwrap().into_inner();
    assert!(closed_by(&mut c, Instant::now() + Duration::from_secs(30)).await, "C was not shed for D");

    // E: both connections are busy, so E is turned away rather than exceed the cap.
    let mut e = TcpStream::connect(served.grpc).await.unwrap();
    assert!(closed_by(&mut e, Instant::now() + Duration::from_secs(30)).await, "E was let in past the cap");

    // A and D still hold their connections (a reconnect would be refused too).
    assert_eq!(list_studies(&mut a).await.unwrap(), 1);
    assert_eq!(list_studies(&mut d).await.unwrap(), 1);
    drop((watch_a, watch_d, a, d));
    served.shutdown().await;
}
