//! Shared by `dashboard.rs` and `dashboard_browser.rs`: the scripted sweep every dashboard test
//! watches (seed repeats, median pruning, predictions and test scores), a coordinator with the
//! dashboard (token and TLS optional), raw HTTP/1.1 to it, and what the browser test reads.

use bertsweep_coordinator::server::{self, ServerConfig, ServerTls, Sidecars};
use bertsweep_proto::v1 as pb;
use bertsweep_testkit::browser::Browser;
use bertsweep_testkit::{dev_predictions, held_out_scores, StudyToml, DEV_EXAMPLES, SEARCH_SPACE};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const TOKEN: &str = "dashboard-test-token-5f1c";

pub const STUDY: &str = "sst2-sweep";

// A scripted worker (gRPC, with the token)
pub async fn client(url: &str, token: Option<&str>) -> bertsweep_proto::Client {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let auth = bertsweep_proto::auth::BearerToken::new(token).unwrap();
    pb::coordinator_client::CoordinatorClient::with_interceptor(channel, auth)
}

/// The sweep's study file: random search over learning rate and batch size, two seeds per
/// configuration, three epochs, median pruning from epoch 2 once six trials completed, and a
/// held-out test file.
pub fn sweep_toml() -> String {
    StudyToml::new(STUDY)
        .sampler("random")
        .seed(3)
        .repeats(2)
        .budget("max_trials = 12\nparallel_trials = 12\nmax_attempts = 2")
        .task("test_file = \"worker:/data/test.tsv\"")
        .parameters(SEARCH_SPACE)
        .parameters("[parameters.num_train_epochs]\nvalue = 3")
        .section("[early_stopping]\ntype = \"median\"\nmin_epochs = 2\nwarmup_trials = 6")
        .to_string()
}

/// Accuracy after `epoch` for these params: rises with the learning rate, a little with epochs,
/// barely with the seed; the batch size does not matter.
pub fn accuracy(a: &pb::Assignment, epoch: u32) -> f64 {
    let param = |name: &str| match a.params.get(name).and_then(|v| v.kind.as_ref()) {
        Some(pb::param_value::Kind::FloatValue(v)) => *v,
        Some(pb::param_value::Kind::IntValue(v)) => *v as f64,
        _ => 0.0,
    };
    0.55 + 5000.0 * (param("learning_rate") - 1e-5) + 0.02 * f64::from(epoch) + 0.003 * param("seed")
}

/// The device memory a trial of these params peaks at after `epoch`: grows with the batch size
/// and a little with every epoch (a caching allocator only ever grows).
pub fn peak_bytes(a: &pb::Assignment, epoch: u32) -> u64 {
    let batch = match a.params.get("per_device_train_batch_size").and_then(|v| v.kind.as_ref()) {
        Some(pb::param_value::Kind::IntValue(v)) => *v as u64,
        _ => 8,
    };
    1_000_000_000 + batch * 100_000_000 + u64::from(epoch) * 1_000_000
}

/// The middle class's name as the workers send it: markup, which the pages must show as text.
pub const MARKUP_CLASS: &str = "<i>neutral</i>";

/// The dev-set predictions a worker sends with its completion: [`DEV_EXAMPLES`] examples of
/// three classes, scoring `acc`.
pub fn predictions(a: &pb::Assignment, acc: f64) -> pb::DevPredictions {
    let mut p = dev_predictions(acc, 3, DEV_EXAMPLES, a.number);
    p.class_names[1] = MARKUP_CLASS.into();
    p
}

/// The best trial, its interval, and the trials whose interval overlaps it, checking every
/// row's `ci` and `overlaps_best` on the way.
pub async fn tied_with_best(addr: SocketAddr) -> (u64, [f64; 2], Vec<u64>) {
    let best = get(addr, &format!("/api/studies/{STUDY}"), &[]).await.json()["study"]["best_trial"].as_u64().unwrap();
    let all = get(addr, &format!("/api/studies/{STUDY}/trials"), &[]).await.json()["trials"].clone();
    let all = all.as_array().unwrap();
    let best_ci = interval(&all[best as usize]["ci"]).expect("the best trial's interval");
    let mut tied = Vec::new();
    for t in all {
        let ci = interval(&t["ci"]);
        assert_eq!(ci.is_some(), t["state"] == "COMPLETED", "{t}");
        let expected = t["number"].as_u64() != Some(best) && ci.is_some_and(|ci| overlap(ci, best_ci));
        assert_eq!(t["overlaps_best"].as_bool(), Some(expected), "{t}");
        if expected {
            tied.push(t["number"].as_u64().unwrap());
        }
    }
    (best, best_ci, tied)
}

/// A `[low, high]` interval from the API.
pub fn interval(v: &Value) -> Option<[f64; 2]> {
    Some([v.get(0)?.as_f64()?, v.get(1)?.as_f64()?])
}

pub fn overlap(a: [f64; 2], b: [f64; 2]) -> bool {
    a[0] <= b[1] && b[0] <= a[1]
}

/// Trials numbered below this complete with held-out test scores ([`TEST_GAP`] worse than
/// their dev scores), and so does a clear winner (dev accuracy 0.9 or more: only the trial the
/// tests complete at 0.95 while they watch); the others complete without (as when their model
/// was not kept).
pub const TESTED: u32 = 3;

/// How much worse than on the dev set the tested trials score on the test set.
pub const TEST_GAP: f64 = 0.02;

/// The test scores a worker sends with the completion of `a` at dev accuracy `acc`.
pub fn test_metrics(a: &pb::Assignment, acc: f64) -> HashMap<String, f64> {
    if a.number < TESTED || acc >= 0.9 {
        held_out_scores(&metrics(acc), TEST_GAP).into_iter().collect()
    } else {
        HashMap::new()
    }
}

pub fn metrics(acc: f64) -> HashMap<String, f64> {
    [("eval_accuracy", acc), ("eval_loss", 1.0 - acc), ("train_loss", 1.1 - acc)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// One fake worker's session with the coordinator.
pub struct Worker {
    pub client: bertsweep_proto::Client,
    pub id: String,
}

impl Worker {
    pub async fn register(url: &str, token: Option<&str>) -> Self {
        let mut client = client(url, token).await;
        let request = pb::RegisterWorkerRequest {
            hostname: "gpu-box-1".into(),
            devices: vec!["cuda:0".into()],
            version: "t".into(),
        };
        let id = client.register_worker(request).await.unwrap().into_inner().worker_id;
        Worker { client, id }
    }

    pub async fn acquire(&mut self) -> pb::Assignment {
        let request = pb::AcquireTrialRequest { worker_id: self.id.clone(), study: STUDY.into(), wait_ms: 0 };
        self.client.acquire_trial(request).await.unwrap().into_inner().assignment.expect("a trial to run")
    }

    /// Reports `epoch` with `acc`; returns whether the coordinator says stop.
    pub async fn report(&mut self, a: &pb::Assignment, epoch: u32, acc: f64) -> bool {
        let request = pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch,
            metrics: metrics(acc),
            checkpoint: String::new(),
            peak_device_memory_bytes: peak_bytes(a, epoch),
        };
        let reply = self.client.report_progress(request).await.unwrap().into_inner();
        reply.decision == pb::Decision::Stop as i32
    }

    pub async fn complete(&mut self, a: &pb::Assignment, acc: f64) {
        self.complete_with(a, acc, String::new()).await;
    }

    pub async fn complete_with(&mut self, a: &pb::Assignment, acc: f64, artifact: String) {
        let request = pb::CompleteTrialRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            metrics: metrics(acc),
            artifact,
            // Not measured at completion: the epochs' peaks stand.
            peak_device_memory_bytes: 0,
            predictions: Some(predictions(a, acc)),
            test_metrics: test_metrics(a, acc),
        };
        self.client.complete_trial(request).await.unwrap();
    }

    /// Runs one trial through all three epochs and completes it.
    pub async fn run_to_completion(&mut self) -> pb::Assignment {
        let a = self.acquire().await;
        for epoch in 1..=3 {
            assert!(!self.report(&a, epoch, accuracy(&a, epoch)).await, "a good trial was stopped");
        }
        self.complete(&a, accuracy(&a, 3)).await;
        a
    }
}

/// What the scripted sweep left behind.
pub struct Sweep {
    pub worker: Worker,
    /// Still RUNNING (one epoch reported).
    pub running: pb::Assignment,
    pub completed: usize,
    pub pruned: u32,
}

/// Creates the study and runs it to: 6 completed, 1 pruned (at epoch 2), 1 running (epoch 1).
pub async fn sweep(url: &str, token: Option<&str>) -> Sweep {
    let mut worker = Worker::register(url, token).await;
    worker.client.create_study(pb::CreateStudyRequest { spec_toml: sweep_toml() }).await.unwrap();
    for _ in 0..6 {
        worker.run_to_completion().await;
    }
    let doomed = worker.acquire().await;
    assert!(!worker.report(&doomed, 1, 0.30).await);
    assert!(worker.report(&doomed, 2, 0.31).await, "the median rule prunes a trial far below the others");
    let running = worker.acquire().await;
    worker.report(&running, 1, accuracy(&running, 1)).await;
    Sweep { worker, running, completed: 6, pruned: doomed.number }
}

// HTTP over a plain or TLS stream
/// One HTTP/1.1 reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: String) -> Reply {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text + "\r\n" + body
}

pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, request(addr, method, path, headers, body)).await
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    http(addr, "GET", path, headers, "").await
}

/// A coordinator in this process with the dashboard on its own port.
pub struct Served {
    pub grpc_url: String,
    pub http: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

pub async fn serve(token: Option<&str>, tls: Option<ServerTls>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        db_url: format!("sqlite://{}", dir.path().join("d.db").display()),
        token: token.map(String::from),
        lease_ttl: Duration::from_secs(30),
        long_poll: Duration::from_millis(200),
        tls: tls.clone(),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let grpc_url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let sidecars = Sidecars { http: Some(http_listener), ..Sidecars::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        server::run_with_sidecars(listener, sidecars, config, stop, ready_tx).await.unwrap();
    });
    ready_rx.await.unwrap();
    Served { grpc_url, http, stop: Some(stop), task, _dir: dir }
}

impl Served {
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Reads `stream` into `seen` until it holds `needle` (at most 10 s).
pub async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?} in the stream; got {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

// The pages, in a real browser
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots")
}

/// Every chart's `data-series`, by `data-chart`.
pub fn series(browser: &Browser) -> HashMap<String, u64> {
    let value = browser
        .eval(
            "const out = {}; document.querySelectorAll('[data-chart]').forEach(e => { out[e.dataset.chart] = Number(e.dataset.series || 0); }); return out;",
            vec![],
        )
        .unwrap();
    value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect()
}

pub fn assert_no_console_errors(browser: &Browser, page: &str) {
    let errors = browser.console_errors().unwrap();
    assert!(errors.is_empty(), "console errors on the {page} page: {errors:#?}");
}

pub const READY: &str = "return document.body.dataset.ready === '1';";

/// A function of the study's name: which table rows carry the "may be tied with the best"
/// mark, against the trials the API says overlap the best's interval, as a promise of
/// `{expected, shown, badges, cis, same}`.
pub const TIED_ROWS: &str = r#"(study) => fetch('/api/studies/' + study + '/trials').then(r => r.json()).then(j => {
  const expected = j.trials.filter(t => t.overlaps_best === true).map(t => t.number).sort((a, b) => a - b);
  const rows = Array.from(document.querySelectorAll('#trials-table tr[data-trial]'));
  const shown = rows.filter(r => r.dataset.overlapsBest === '1').map(r => Number(r.dataset.trial)).sort((a, b) => a - b);
  const badges = rows.filter(r => r.querySelector('td.ci .badge.tied')).length;
  const cis = rows.filter(r => /[0-9] – [0-9]/.test((r.querySelector('td.ci') || {}).textContent || '')).length;
  return { expected, shown, badges, cis, same: JSON.stringify(expected) === JSON.stringify(shown) };
})"#;

/// A gRPC client that sends `token` on every call.
pub async fn grpc_with_token(
    url: &str,
    token: &str,
) -> pb::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
    >,
> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    pb::coordinator_client::CoordinatorClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", value.clone());
        Ok(r)
    })
}
