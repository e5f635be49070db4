//! Idle connections against an in-process coordinator, on the gRPC port and on the dashboard:
//! how long a new client takes to be served with 0 and with 5,000 idle connections open (each
//! connected and silent), and how long until the idle ones are closed, under the default
//! connection limits (a 4,096-connection cap, so 904 of the 5,000 are shed at once, and the
//! rest go at the 10 s handshake timeout).
//!
//! One JSON line per measurement on stdout. `cargo bench -p bertsweep-coordinator --bench
//! idle_connections`.

use std::net::SocketAddr;
use std::time::Instant;

use bertsweep_coordinator::connections::{self, ConnectionLimits};
use bertsweep_coordinator::server::{self, ServerConfig, Sidecars};
use bertsweep_proto::v1 as pb;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IDLE: usize = 5000;
const TOKEN: &str = "bench-token-3b7a";

/// New clients timed per setting.
const RUNS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let (_, soft) = connections::raise_open_file_limit().expect("the open-file limit");
    let needed = (2 * IDLE + 1000) as u64;
    if soft < needed {
        println!("{}", json!({"bench": "idle_connections", "skipped": format!("open-file limit {soft} < {needed}")}));
        return;
    }
    let limits = ConnectionLimits::default();
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        db_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        token: Some(TOKEN.into()),
        ..ServerConfig::default()
    };
    let listener = listen();
    let grpc = listener.local_addr().unwrap();
    let http_listener = listen();
    let http = http_listener.local_addr().unwrap();
    let sidecars = Sidecars { http: Some(http_listener), ..Sidecars::default() };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        server::run_with_limits(listener, sidecars, config, limits, std::future::pending(), ready_tx).await.unwrap();
    });
    ready_rx.await.unwrap();

    for (port, addr) in [("grpc", grpc), ("dashboard", http)] {
        let quiet = time_new_clients(port, addr).await;
        report(port, 0, 0, &quiet);

        let opened = Instant::now();
        let mut idle = open_idle(addr, IDLE).await;
        let last_opened = Instant::now();
        let still_open = idle.iter().filter(|(s, _)| is_open(s)).count();
        let busy = time_new_clients(port, addr).await;
        report(port, IDLE, still_open, &busy);

        // How long each idle connection lived, from its connect to the server closing it.
        let lifetimes = futures::stream::iter(idle.iter_mut().map(|(s, connected)| async move {
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return (Instant::now(), connected.elapsed().as_secs_f64()),
                    Ok(_) => {}
                }
            }
        }))
        .buffer_unordered(IDLE)
        .collect::<Vec<_>>()
        .await;
        let all_closed = lifetimes.iter().map(|(at, _)| *at).max().unwrap();
        let handshake_s = limits.handshake_timeout.as_secs_f64();
        // Shed for a newer connection while the table was full, or closed at the timeout.
        let (mut shed, mut timed_out): (Vec<f64>, Vec<f64>) =
            lifetimes.iter().map(|(_, lived)| *lived).partition(|&lived| lived < handshake_s - 0.25);
        shed.sort_by(f64::total_cmp);
        timed_out.sort_by(f64::total_cmp);
        let pick = |v: &[f64], q: f64| v.get(((v.len() as f64 - 1.0) * q) as usize).map(|&x| round(x));
        println!(
            "{}",
            json!({
                "bench": "idle_connections",
                "port": port,
                "measure": "idle_closed",
                "idle": IDLE,
                "max_connections": limits.max_connections,
                "handshake_timeout_s": handshake_s,
                "open_all_s": round(last_opened.duration_since(opened).as_secs_f64()),
                "shed": shed.len(),
                "shed_lifetime_s_max": pick(&shed, 1.0),
                "closed_at_timeout": timed_out.len(),
                "timeout_lifetime_s_min": pick(&timed_out, 0.0),
                "timeout_lifetime_s_median": pick(&timed_out, 0.5),
                "timeout_lifetime_s_max": pick(&timed_out, 1.0),
                "all_closed_after_last_open_s": round(all_closed.duration_since(last_opened).as_secs_f64()),
            })
        );
    }
}

/// Whether the server still holds `stream` open (nothing readable says otherwise), at once.
fn is_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// A listener on 127.0.0.1 whose accept queue holds 4,096 connections (the kernel's usual
/// `somaxconn`), so that opening thousands of connections at once measures the coordinator
/// rather than SYN retransmissions after the 1,024-deep queue of `TcpListener::bind` overflows.
fn listen() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One line for the new clients timed after opening `idle` idle connections, `idle_open` of
/// which the server still held when the timing began.
fn report(port: &str, idle: usize, idle_open: usize, samples_ms: &[f64]) {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "bench": "idle_connections",
            "port": port,
            "measure": "new_client_served",
            "idle": idle,
            "idle_open": idle_open,
            "runs": sorted.len(),
            "median_ms": round(sorted[sorted.len() / 2]),
            "max_ms": round(*sorted.last().unwrap()),
        })
    );
}

/// Milliseconds for each of [`RUNS`] new clients to connect and get an answer: a gRPC
/// ListStudies over a fresh channel, or `GET /login` over a fresh HTTP/1.1 connection.
async fn time_new_clients(port: &str, addr: SocketAddr) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        match port {
            "grpc" => {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
                let auth = bertsweep_proto::auth::BearerToken::new(Some(TOKEN)).unwrap();
                let mut client = pb::coordinator_client::CoordinatorClient::with_interceptor(channel, auth);
                client.list_studies(pb::ListStudiesRequest::default()).await.unwrap();
            }
            _ => {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let request = format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).await.unwrap();
                assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}

/// `n` connections to `addr` that never send a byte, each with when it connected.
async fn open_idle(addr: SocketAddr, n: usize) -> Vec<(TcpStream, Instant)> {
    futures::stream::iter(0..n)
        .map(|_| async move { (TcpStream::connect(addr).await.expect("connect"), Instant::now()) })
        .buffered(128)
        .collect()
        .await
}
