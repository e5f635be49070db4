//! `serve --metrics-listen` and `--health-listen`: /metrics parses as Prometheus text
//! exposition, its counters move as trials run, fail, expire and are released, its labels never
//! carry trial or worker ids and stay bounded under random method names, and the plaintext
//! health listener answers SERVING.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bertsweep_coordinator::server::{self, ServerConfig, Sidecars};
use bertsweep_proto::v1 as pb;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET http://addr/metrics over a plain TCP connection.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The exposition parsed by a Prometheus text-format parser; panics on text it rejects.
fn parse(body: &str) -> prometheus_parse::Scrape {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the exposition parses")
}

/// Value of the sample `name` whose labels include all of `labels` (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map(|b| b.count).unwrap_or(0.0),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .sum()
}

/// Calls a method the server does not have.
async fn call_unknown(url: &str, method: &str) -> tonic::Code {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(format!("/bertsweep.v1.Coordinator/{method}")).unwrap();
    let result: Result<tonic::Response<Vec<u8>>, _> = grpc.unary(tonic::Request::new(Vec::new()), path, RawCodec).await;
    result.expect_err("an unknown method fails").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_trials_and_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        db_url: format!("sqlite://{}", dir.path().join("m.db").display()),
        lease_ttl: Duration::from_millis(400),
        long_poll: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let health_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_url = format!("http://{}", health_listener.local_addr().unwrap());
    let sidecars = Sidecars { metrics: Some(metrics_listener), health: Some(health_listener), http: None };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
        };
        server::run_with_sidecars(listener, sidecars, config, stop, ready_tx).await.unwrap();
    });
    ready_rx.await.unwrap();

    // The plaintext health listener: the whole server ("", what Kubernetes asks by default)
    // and the coordinator service.
    let channel = tonic::transport::Endpoint::from_shared(health_url).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "bertsweep.v1.Coordinator"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }

    let before = parse(&scrape(metrics_addr).await);
    assert_eq!(value(&before, "bertsweep_build_info", &[("component", "coordinator")]), 1.0);

    let mut client = TestServer::client_for(&url).await;
    let toml = study_toml("metered", "max_trials = 4\nparallel_trials = 4\nmax_attempts = 3", &grid_params(2));
    create(&mut client, &toml).await;
    let worker = register(&mut client).await;

    // Completed.
    let a = acquire(&mut client, &worker, 0).await.unwrap();
    report(&mut client, &a, 1, 0.8).await.unwrap();
    complete(&mut client, &a, 0.8).await.unwrap();
    // Requeued after a retryable failure, then released, then lost to an expired lease.
    let b = acquire(&mut client, &worker, 0).await.unwrap();
    assert_eq!(fail(&mut client, &b, pb::FailureKind::Retryable).await, pb::TrialState::Pending);
    let b = acquire(&mut client, &worker, 0).await.unwrap();
    assert_eq!(fail(&mut client, &b, pb::FailureKind::Released).await, pb::TrialState::Pending);
    let b = acquire(&mut client, &worker, 0).await.unwrap();
    let mut trial_ids = vec![a.trial_id.to_string(), b.trial_id.to_string()];
    eventually("the lease to expire", Duration::from_secs(10), || {
        let mut client = client.clone();
        let number = b.number;
        async move {
            let trials = trials(&mut client, "metered").await;
            (trials[number as usize].state() == pb::TrialState::Pending).then_some(())
        }
    })
    .await;
    // A refused call and methods that do not exist, with ever-new names.
    assert!(client.get_study(pb::GetStudyRequest { name: "nope".into() }).await.is_err());
    for i in 0..20 {
        assert_eq!(call_unknown(&url, &format!("NoSuchMethod{i}")).await, tonic::Code::Unimplemented);
    }
    // One more acquisition so the worker counts as connected (the last one was 400 ms ago).
    let c = acquire(&mut client, &worker, 0).await.unwrap();
    trial_ids.push(c.trial_id.to_string());

    let after = parse(&scrape(metrics_addr).await);
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(value(&after, "bertsweep_trials", &[("study", "metered"), ("state", "COMPLETED")]), 1.0);
    assert_eq!(value(&after, "bertsweep_trials", &[("study", "metered"), ("state", "RUNNING")]), 1.0);
    assert_eq!(value(&after, "bertsweep_studies", &[("state", "RUNNING")]), 1.0);
    assert_eq!(value(&after, "bertsweep_running_trials", &[]), 1.0);
    assert_eq!(value(&after, "bertsweep_connected_workers", &[]), 1.0);
    // Demand: 4 trials in the budget, 2 created (one completed, one running), 3 free places.
    assert_eq!(value(&after, "bertsweep_trial_demand", &[("study", "metered")]), 2.0);
    assert_eq!(delta("bertsweep_trials_ended_total", &[("state", "COMPLETED")]), 1.0);
    assert_eq!(delta("bertsweep_requeues_total", &[("reason", "retryable_error")]), 1.0);
    assert_eq!(delta("bertsweep_requeues_total", &[("reason", "released")]), 1.0);
    assert_eq!(delta("bertsweep_requeues_total", &[("reason", "lease_expired")]), 1.0);
    assert_eq!(delta("bertsweep_lease_expiries_total", &[]), 1.0);
    assert!(delta("bertsweep_db_commit_seconds_count", &[]) >= 1.0, "no commit timed");
    assert!(value(&after, "bertsweep_trial_duration_seconds_count", &[("state", "COMPLETED")]) >= 1.0);
    assert_eq!(
        value(&after, "bertsweep_rpc_duration_seconds_count", &[("method", "CompleteTrial"), ("code", "OK")]),
        1.0
    );
    assert_eq!(
        value(&after, "bertsweep_rpc_duration_seconds_count", &[("method", "GetStudy"), ("code", "NOT_FOUND")]),
        1.0
    );
    assert_eq!(
        value(&after, "bertsweep_rpc_duration_seconds_count", &[("method", "unknown"), ("code", "UNIMPLEMENTED")]),
        20.0
    );

    // The long poll is timed apart from unary latency, under gRPC's code names.
    assert!(
        value(&after, "bertsweep_rpc_stream_duration_seconds_count", &[("method", "AcquireTrial"), ("code", "OK")])
            >= 4.0
    );
    assert_eq!(
        value(&after, "bertsweep_rpc_duration_seconds_count", &[("method", "AcquireTrial"), ("code", "OK")]),
        0.0
    );
    // Counters exist from the start, at 0: an alert on rate() sees a series before the first event.
    assert!(after.samples.iter().any(|s| s.metric == "bertsweep_requeues_total"), "requeues from 0");

    // Bounded labels: no trial or worker id, no method name a client made up.
    let mut label_values: HashMap<String, String> = HashMap::new();
    for sample in &after.samples {
        for (key, value) in sample.labels.iter() {
            label_values.insert(value.clone(), format!("{}{{{key}}}", sample.metric));
        }
    }
    for id in trial_ids.iter().chain([&worker]) {
        assert!(!label_values.contains_key(id.as_str()), "id {id} is a label value of {}", label_values[id.as_str()]);
    }
    assert!(label_values.keys().all(|v| !v.starts_with("NoSuchMethod")), "made-up method names became labels");
    let rpc_series = after.samples.iter().filter(|s| s.metric == "bertsweep_rpc_duration_seconds_count").count();
    assert!(rpc_series <= 12, "{rpc_series} RPC series for 7 methods");

    // A stopped study wants no worker: its demand drops to 0 at once.
    client.stop_study(pb::StopStudyRequest { name: "metered".into() }).await.unwrap();
    let stopped = parse(&scrape(metrics_addr).await);
    assert_eq!(value(&stopped, "bertsweep_trial_demand", &[("study", "metered")]), 0.0);

    let _ = stop_tx.send(());
    server.await.unwrap();
}
