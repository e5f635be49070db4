//! The web dashboard (`serve --http`): its JSON API and guards over real HTTP(S), and its
//! pages in a real headless Chromium against a real `bertsweep serve` process.
//!
//! The study every test watches is a scripted sweep with seed repeats (2 per configuration),
//! median pruning and learning-rate-driven accuracy: completed trials, a pruned one and a
//! running one, with more finishing while a page is open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bertsweep_coordinator::server::{self, ServerConfig, ServerTls, Sidecars};
use bertsweep_proto::v1 as pb;
use bertsweep_testkit::browser::Browser;
use bertsweep_testkit::{dev_predictions, held_out_scores, ServeProcess, StudyToml, DEV_EXAMPLES, SEARCH_SPACE};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TOKEN: &str = "dashboard-test-token-5f1c";
const STUDY: &str = "sst2-sweep";

// ---------------------------------------------------------------------------------------------
// A scripted worker (gRPC, with the token)

async fn client(url: &str, token: Option<&str>) -> bertsweep_proto::Client {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let auth = bertsweep_proto::auth::BearerToken::new(token).unwrap();
    pb::coordinator_client::CoordinatorClient::with_interceptor(channel, auth)
}

/// The sweep's study file: random search over learning rate and batch size, two seeds per
/// configuration, three epochs, median pruning from epoch 2 once six trials completed, and a
/// held-out test file.
fn sweep_toml() -> String {
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
fn accuracy(a: &pb::Assignment, epoch: u32) -> f64 {
    let param = |name: &str| match a.params.get(name).and_then(|v| v.kind.as_ref()) {
        Some(pb::param_value::Kind::FloatValue(v)) => *v,
        Some(pb::param_value::Kind::IntValue(v)) => *v as f64,
        _ => 0.0,
    };
    0.55 + 5000.0 * (param("learning_rate") - 1e-5) + 0.02 * f64::from(epoch) + 0.003 * param("seed")
}

/// The device memory a trial of these params peaks at after `epoch`: grows with the batch size
/// and a little with every epoch (a caching allocator only ever grows).
fn peak_bytes(a: &pb::Assignment, epoch: u32) -> u64 {
    let batch = match a.params.get("per_device_train_batch_size").and_then(|v| v.kind.as_ref()) {
        Some(pb::param_value::Kind::IntValue(v)) => *v as u64,
        _ => 8,
    };
    1_000_000_000 + batch * 100_000_000 + u64::from(epoch) * 1_000_000
}

/// The middle class's name as the workers send it: markup, which the pages must show as text.
const MARKUP_CLASS: &str = "<i>neutral</i>";

/// The dev-set predictions a worker sends with its completion: [`DEV_EXAMPLES`] examples of
/// three classes, scoring `acc`.
fn predictions(a: &pb::Assignment, acc: f64) -> pb::DevPredictions {
    let mut p = dev_predictions(acc, 3, DEV_EXAMPLES, a.number);
    p.class_names[1] = MARKUP_CLASS.into();
    p
}

/// The best trial, its interval, and the trials whose interval overlaps it, checking every
/// row's `ci` and `overlaps_best` on the way.
async fn tied_with_best(addr: SocketAddr) -> (u64, [f64; 2], Vec<u64>) {
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
fn interval(v: &Value) -> Option<[f64; 2]> {
    Some([v.get(0)?.as_f64()?, v.get(1)?.as_f64()?])
}

fn overlap(a: [f64; 2], b: [f64; 2]) -> bool {
    a[0] <= b[1] && b[0] <= a[1]
}

/// Trials numbered below this complete with held-out test scores ([`TEST_GAP`] worse than
/// their dev scores), and so does a clear winner (dev accuracy 0.9 or more: only the trial the
/// tests complete at 0.95 while they watch); the others complete without (as when their model
/// was not kept).
const TESTED: u32 = 3;
/// How much worse than on the dev set the tested trials score on the test set.
const TEST_GAP: f64 = 0.02;

/// The test scores a worker sends with the completion of `a` at dev accuracy `acc`.
fn test_metrics(a: &pb::Assignment, acc: f64) -> HashMap<String, f64> {
    if a.number < TESTED || acc >= 0.9 {
        held_out_scores(&metrics(acc), TEST_GAP).into_iter().collect()
    } else {
        HashMap::new()
    }
}

fn metrics(acc: f64) -> HashMap<String, f64> {
    [("eval_accuracy", acc), ("eval_loss", 1.0 - acc), ("train_loss", 1.1 - acc)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// One fake worker's session with the coordinator.
struct Worker {
    client: bertsweep_proto::Client,
    id: String,
}

impl Worker {
    async fn register(url: &str, token: Option<&str>) -> Self {
        let mut client = client(url, token).await;
        let request = pb::RegisterWorkerRequest {
            hostname: "gpu-box-1".into(),
            devices: vec!["cuda:0".into()],
            version: "t".into(),
        };
        let id = client.register_worker(request).await.unwrap().into_inner().worker_id;
        Worker { client, id }
    }

    async fn acquire(&mut self) -> pb::Assignment {
        let request = pb::AcquireTrialRequest { worker_id: self.id.clone(), study: STUDY.into(), wait_ms: 0 };
        self.client.acquire_trial(request).await.unwrap().into_inner().assignment.expect("a trial to run")
    }

    /// Reports `epoch` with `acc`; returns whether the coordinator says stop.
    async fn report(&mut self, a: &pb::Assignment, epoch: u32, acc: f64) -> bool {
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

    async fn complete(&mut self, a: &pb::Assignment, acc: f64) {
        self.complete_with(a, acc, String::new()).await;
    }

    async fn complete_with(&mut self, a: &pb::Assignment, acc: f64, artifact: String) {
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
    async fn run_to_completion(&mut self) -> pb::Assignment {
        let a = self.acquire().await;
        for epoch in 1..=3 {
            assert!(!self.report(&a, epoch, accuracy(&a, epoch)).await, "a good trial was stopped");
        }
        self.complete(&a, accuracy(&a, 3)).await;
        a
    }
}

/// What the scripted sweep left behind.
struct Sweep {
    worker: Worker,
    /// Still RUNNING (one epoch reported).
    running: pb::Assignment,
    completed: usize,
    pruned: u32,
}

/// Creates the study and runs it to: 6 completed, 1 pruned (at epoch 2), 1 running (epoch 1).
async fn sweep(url: &str, token: Option<&str>) -> Sweep {
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

// ---------------------------------------------------------------------------------------------
// HTTP over a plain or TLS stream

/// One HTTP/1.1 reply.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: String) -> Reply {
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

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text + "\r\n" + body
}

async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, request(addr, method, path, headers, body)).await
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    http(addr, "GET", path, headers, "").await
}

/// A coordinator in this process with the dashboard on its own port.
struct Served {
    grpc_url: String,
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn serve(token: Option<&str>, tls: Option<ServerTls>) -> Served {
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
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Reads `stream` into `seen` until it holds `needle` (at most 10 s).
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, needle: &str) {
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

// ---------------------------------------------------------------------------------------------
// The API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_every_page_and_call_and_only_the_token_stops() {
    let served = serve(Some(TOKEN), None).await;
    let addr = served.http;
    let sweep = sweep(&served.grpc_url, Some(TOKEN)).await;

    // Nothing without the token: API calls get a one-line 401, pages the login form and no data.
    for path in ["/api/studies", &format!("/api/studies/{STUDY}/trials"), &format!("/api/studies/{STUDY}/trials.csv")] {
        let reply = get(addr, path, &[]).await;
        assert_eq!(reply.status, 401, "{path}");
        assert!(reply.json()["error"].as_str().unwrap().contains("log in at /login"), "{path}");
    }
    for path in ["/", &format!("/studies/{STUDY}"), "/studies/nope"] {
        let reply = get(addr, path, &[]).await;
        assert_eq!(reply.status, 401, "{path}");
        // The form, not the app: no script, no trial data.
        assert!(reply.body.contains("id=\"login-form\""), "{path}: {}", reply.body);
        assert!(!reply.body.contains("app.js") && !reply.body.contains("COMPLETED"), "{path}: {}", reply.body);
    }
    let wrong = get(addr, "/api/studies", &[("Authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"].as_str().unwrap().starts_with("wrong token"));
    let forged = get(addr, "/api/studies", &[("Cookie", "bertsweep_session=0123456789abcdef")]).await;
    assert_eq!(forged.status, 401);

    // The login form: a wrong token gets the form again; the right one a cookie and a redirect.
    let form = |token: &str| format!("token={token}&next=%2Fstudies%2F{STUDY}");
    let login_headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let bad = http(addr, "POST", "/login", &login_headers, &form("guess")).await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("Wrong token") && bad.header("set-cookie").is_none());
    let good = http(addr, "POST", "/login", &login_headers, &form(TOKEN)).await;
    assert_eq!(good.status, 303);
    assert_eq!(good.header("location"), Some(format!("/studies/{STUDY}").as_str()));
    let set_cookie = good.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("Cookie", cookie.as_str())];
    let offsite =
        http(addr, "POST", "/login", &login_headers, &format!("token={TOKEN}&next=%2F%2Fevil.example%2F")).await;
    assert_eq!(offsite.header("location"), Some("/"), "login never redirects off the site");

    // With the session: pages and data, and the security headers.
    let page = get(addr, &format!("/studies/{STUDY}"), &with_cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/assets/app.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let session = get(addr, "/api/session", &with_cookie).await.json();
    assert_eq!((session["auth"].as_bool(), session["can_stop"].as_bool()), (Some(true), Some(true)));

    // A session only reads: stopping takes the token itself.
    let stop_path = format!("/api/studies/{STUDY}/stop");
    let refused = http(addr, "POST", &stop_path, &with_cookie, "").await;
    assert_eq!(refused.status, 401);
    assert!(refused.json()["error"].as_str().unwrap().contains("Authorization: Bearer"));
    let refused = http(addr, "POST", &stop_path, &[("Authorization", "Bearer wrong")], "").await;
    assert_eq!(refused.status, 401);
    let study = get(addr, &format!("/api/studies/{STUDY}"), &with_cookie).await.json();
    assert_eq!(study["study"]["state"], "RUNNING", "refused stops change nothing");

    // Logging out ends the session.
    let out = http(addr, "POST", "/logout", &with_cookie, "").await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(addr, "/api/studies", &with_cookie).await.status, 401);

    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let stopped = http(addr, "POST", &stop_path, &auth, "").await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["study"]["state"], "STOPPED");
    let trials = get(addr, &format!("/api/studies/{STUDY}/trials"), &auth).await.json();
    let running = &trials["trials"][sweep.running.number as usize];
    assert_eq!(running["state"], "STOPPED");
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pages_trials_and_derives_configurations_importance_csv_and_events() {
    let served = serve(None, None).await;
    let addr = served.http;
    let mut sweep = sweep(&served.grpc_url, None).await;

    // An open coordinator (no token): readable, and the page cannot stop studies.
    let session = get(addr, "/api/session", &[]).await.json();
    assert_eq!((session["auth"].as_bool(), session["can_stop"].as_bool()), (Some(false), Some(false)));
    let refused = http(addr, "POST", &format!("/api/studies/{STUDY}/stop"), &[], "").await;
    assert_eq!(refused.status, 403);
    assert!(refused.json()["error"].as_str().unwrap().contains("bertsweep study stop"));

    // An open dashboard answers only to an IP or localhost, so a rebound DNS name gets nothing.
    assert_eq!(http(addr, "GET", "/api/studies", &[], "").await.status, 200, "Host: 127.0.0.1:PORT");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let rebinding = "GET /api/studies HTTP/1.1\r\nHost: attacker.example:8080\r\nConnection: close\r\n\r\n";
    stream.write_all(rebinding.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 403") && raw.contains("DNS rebinding") && !raw.contains(STUDY), "{raw}");

    let studies = get(addr, "/api/studies", &[]).await.json();
    let row = &studies["studies"][0];
    assert_eq!(
        (row["name"].as_str(), row["sampler"].as_str(), row["early_stopping"].as_str()),
        (Some(STUDY), Some("random"), Some("median"))
    );
    assert_eq!(row["counts"]["completed"], 6);
    assert_eq!(row["counts"]["pruned"], 1);
    assert_eq!(row["counts"]["running"], 1);
    assert_eq!((row["max_trials"].as_u64(), row["repeats"].as_u64()), (Some(12), Some(2)));
    assert!(row["best_trial"].is_u64() && row["best_value"].is_f64());

    let study = get(addr, &format!("/api/studies/{STUDY}"), &[]).await.json();
    let lr = study["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "learning_rate").unwrap();
    assert_eq!((lr["kind"].as_str(), lr["log"].as_bool()), (Some("range"), Some(true)));
    assert_eq!(study["max_epochs"].as_f64(), Some(3.0));

    // Trials in pages: `next` walks them all; bad paging gets a clear 400.
    let first = get(addr, &format!("/api/studies/{STUDY}/trials?limit=3"), &[]).await.json();
    assert_eq!((first["total"].as_u64(), first["next"].as_u64()), (Some(8), Some(3)));
    let rest = get(addr, &format!("/api/studies/{STUDY}/trials?from=3&limit=2000"), &[]).await.json();
    assert_eq!((rest["trials"].as_array().unwrap().len(), rest["next"].is_null()), (5, true));
    let pruned = &rest["trials"][(sweep.pruned - 3) as usize];
    assert_eq!(pruned["state"], "PRUNED");
    assert_eq!(pruned["curve"].as_array().unwrap().len(), 2, "pruned at epoch 2");
    let batch = pruned["params"]["per_device_train_batch_size"].as_u64().unwrap();
    assert_eq!(pruned["peak_device_memory_bytes"].as_u64(), Some(1_000_000_000 + batch * 100_000_000 + 2_000_000));
    for bad in ["limit=5000", "limit=ten", "from=-1"] {
        let reply = get(addr, &format!("/api/studies/{STUDY}/trials?{bad}"), &[]).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert!(reply.json()["error"].as_str().unwrap().contains("must be a whole number"), "{bad}");
    }
    for (path, status) in [
        ("/api/studies/nope".to_string(), 404),
        ("/api/studies/..%2Fetc".to_string(), 404),
        (format!("/api/studies/{STUDY}/trials/99"), 404),
        (format!("/api/studies/{STUDY}/trials/x"), 404),
        ("/api/nothing".to_string(), 404),
    ] {
        let reply = get(addr, &path, &[]).await;
        assert_eq!(reply.status, status, "{path}");
        assert!(!reply.json()["error"].as_str().unwrap().is_empty(), "{path}");
    }
    let missing_page = get(addr, "/studies/nope", &[]).await;
    assert_eq!(missing_page.status, 404);
    assert!(missing_page.body.contains("There is no study named &quot;nope&quot;"), "{}", missing_page.body);

    // One trial in full: every epoch's metrics.
    let detail = get(addr, &format!("/api/studies/{STUDY}/trials/0"), &[]).await.json();
    assert_eq!(detail["state"], "COMPLETED");
    assert_eq!(detail["epochs"].as_array().unwrap().len(), 3);
    assert!(detail["epochs"][2]["metrics"]["train_loss"].is_f64());
    assert!(detail["model_files"].is_null(), "no model kept for this trial");
    // Its peak device memory: the largest any report carried (the completion carried none).
    let batch = detail["params"]["per_device_train_batch_size"].as_u64().unwrap();
    assert_eq!(detail["peak_device_memory_bytes"].as_u64(), Some(1_000_000_000 + batch * 100_000_000 + 3_000_000));
    // Its dev-set evaluation: the objective's interval, per-class scores and the confusion
    // matrix (rows true, columns predicted), from the predictions its worker sent.
    let e = &detail["evaluation"];
    assert_eq!((e["epoch"].as_u64(), e["examples"].as_u64(), e["class_count"].as_u64()), (Some(3), Some(200), Some(3)));
    let ci = interval(&e["ci"]).expect("an interval of eval_accuracy");
    assert_eq!(detail["ci"], e["ci"]);
    let value = detail["value"].as_f64().unwrap();
    assert!(ci[0] < value && value < ci[1] && ci[1] - ci[0] < 0.2, "{ci:?} around {value}");
    let names: Vec<&str> = e["per_class"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["negative", MARKUP_CLASS, "positive"]);
    assert_eq!(e["confusion"]["classes"], serde_json::json!(names));
    let matrix: Vec<Vec<u64>> = serde_json::from_value(e["confusion"]["matrix"].clone()).unwrap();
    assert_eq!(matrix.iter().flatten().sum::<u64>(), 200);
    let right: u64 = (0..3).map(|k| matrix[k][k]).sum();
    assert_eq!(right, (value * 200.0).round() as u64, "the diagonal holds the accuracy");
    for (k, row) in matrix.iter().enumerate() {
        assert_eq!(row.iter().sum::<u64>(), e["per_class"][k]["support"].as_u64().unwrap(), "row {k}: its support");
    }
    // Its held-out test scores, whole, and the objective's among them on its row.
    assert_eq!(detail["test_metrics"].as_object().unwrap().keys().collect::<Vec<_>>(), ["test_accuracy", "test_loss"]);
    assert!((detail["test_metrics"]["test_accuracy"].as_f64().unwrap() - (value - TEST_GAP)).abs() < 1e-12);
    assert!((detail["test_metrics"]["test_loss"].as_f64().unwrap() - (1.0 - value + TEST_GAP)).abs() < 1e-12);
    assert_eq!(detail["test_value"], detail["test_metrics"]["test_accuracy"]);
    let pruned_detail = get(addr, &format!("/api/studies/{STUDY}/trials/{}", sweep.pruned), &[]).await.json();
    assert!(pruned_detail["evaluation"].is_null() && pruned_detail["ci"].is_null(), "no predictions before completing");
    assert!(pruned_detail["test_metrics"].is_null() && pruned_detail["test_value"].is_null(), "no test scores");
    let untested = get(addr, &format!("/api/studies/{STUDY}/trials/{TESTED}"), &[]).await.json();
    assert_eq!(untested["state"], "COMPLETED");
    assert!(untested["test_metrics"].is_null() && untested["test_value"].is_null(), "{untested}");
    // Rows: the test counterpart of the objective (eval_accuracy → test_accuracy) where there
    // is one, null elsewhere; the test scores change nothing else (the best is by dev value).
    let rows = get(addr, &format!("/api/studies/{STUDY}/trials"), &[]).await.json()["trials"].clone();
    for t in rows.as_array().unwrap() {
        let tested = t["number"].as_u64().unwrap() < u64::from(TESTED);
        match t["test_value"].as_f64() {
            Some(test) => {
                assert!(tested, "{t}");
                assert!((test - (t["value"].as_f64().unwrap() - TEST_GAP)).abs() < 1e-12, "{t}");
            }
            None => assert!(!tested && t["test_value"].is_null(), "{t}"),
        }
    }

    // Every completed trial's interval, and whether it overlaps the best trial's: the six
    // completed trials' accuracies lie within 0.08 of each other, so on 200 examples most
    // intervals overlap the best's.
    let (best, best_ci, tied) = tied_with_best(addr).await;
    assert!(tied.len() >= 3, "{tied:?}");

    // Seed spread: configurations with both seeds' points.
    let configs = get(addr, &format!("/api/studies/{STUDY}/configurations"), &[]).await.json();
    let configs = configs["configurations"].as_array().unwrap();
    let with_points: Vec<&Value> = configs.iter().filter(|c| !c["points"].as_array().unwrap().is_empty()).collect();
    assert_eq!(with_points.iter().map(|c| c["points"].as_array().unwrap().len()).sum::<usize>(), sweep.completed);
    assert!(
        with_points.iter().any(|c| c["points"].as_array().unwrap().len() == 2),
        "some configuration ran both seeds"
    );
    assert!(configs.iter().all(|c| c["params"].get("seed").is_none()));
    // The best trial's configuration, and those where any seed's interval overlaps the best
    // trial's interval.
    assert_eq!(configs.iter().filter(|c| c["best"] == true).count(), 1);
    for c in configs {
        let any =
            c["points"].as_array().unwrap().iter().any(|p| {
                p["trial"].as_u64() != Some(best) && interval(&p["ci"]).is_some_and(|ci| overlap(ci, best_ci))
            });
        assert_eq!(c["overlaps_best"].as_bool(), Some(any && c["best"] != true), "{c}");
    }

    // Importance: the learning rate drives accuracy, the batch size does not.
    let importance = get(addr, &format!("/api/studies/{STUDY}/importance"), &[]).await;
    assert_eq!(importance.status, 200, "{}", importance.body);
    let list = importance.json()["importances"].as_array().unwrap().clone();
    assert_eq!(list[0]["name"], "learning_rate", "{list:?}");
    assert!(list[0]["importance"].as_f64().unwrap() > 0.5, "{list:?}");

    // CSV: a header and one row per trial, parameters as columns.
    let csv = get(addr, &format!("/api/studies/{STUDY}/trials.csv"), &[]).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("number,state,value,learning_rate"), "{}", lines[0]);
    assert!(lines[0].ends_with(",duration_s,peak_device_memory_bytes,error"), "{}", lines[0]);
    assert_eq!(lines.len(), 9);

    // Live events: a trial completed while the stream is open arrives as a `trial` event.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request(addr, "GET", &format!("/api/studies/{STUDY}/events"), &[], "").as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "event: study").await;
    assert!(seen.contains("text/event-stream"), "{seen}");
    let running = sweep.running.clone();
    for epoch in 2..=3 {
        // Well above the median, so the rule lets it finish.
        assert!(!sweep.worker.report(&running, epoch, 0.95).await);
    }
    // It completes with a model kept on the coordinator, as workers upload it.
    let model = tempfile::tempdir().unwrap();
    std::fs::write(model.path().join("config.json"), b"{\"architectures\": [\"BertForSequenceClassification\"]}")
        .unwrap();
    std::fs::create_dir(model.path().join("tokenizer")).unwrap();
    std::fs::write(model.path().join("tokenizer/vocab.txt"), b"[PAD]\n[UNK]\nfilm\n").unwrap();
    let uploaded = bertsweep_transfer::remote::Remote::new(sweep.worker.client.clone())
        .upload_path(model.path(), "gpu-box-1:/models/t7".into())
        .await
        .unwrap();
    sweep.worker.complete_with(&running, 0.95, bertsweep_transfer::InputRef::Blob(uploaded.digest).to_string()).await;
    read_until(&mut stream, &mut seen, &format!("\"number\":{},\"state\":\"COMPLETED\"", running.number)).await;
    // Its event carries its interval but no view of the best (which can change with any event).
    let event =
        seen.lines().rev().find(|l| l.contains(&format!("\"number\":{},\"state\":\"COMPLETED\"", running.number)));
    let event: Value = serde_json::from_str(event.unwrap().trim_start_matches("data:").trim()).unwrap();
    assert!(interval(&event["ci"]).is_some() && event.get("overlaps_best").is_none(), "{event}");
    // At 0.95 it is the clear best now: no other interval reaches its.
    let (best, _, tied) = tied_with_best(addr).await;
    assert_eq!((best, tied), (u64::from(running.number), vec![]));
    assert!((event["test_value"].as_f64().unwrap() - (0.95 - TEST_GAP)).abs() < 1e-12, "{event}");

    // Its trial page offers each file of the model, byte for byte.
    let detail = get(addr, &format!("/api/studies/{STUDY}/trials/{}", running.number), &[]).await.json();
    assert_eq!(detail["has_model"], true);
    let files = detail["model_files"].as_array().expect("the coordinator keeps this model").clone();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let path = file["path"].as_str().unwrap();
        let reply = get(addr, file["url"].as_str().unwrap(), &[]).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body.as_bytes(), std::fs::read(model.path().join(path)).unwrap(), "{path}");
        assert!(reply.header("content-disposition").unwrap().starts_with("attachment"), "{path}");
    }
    // The whole model as one archive, which GNU tar unpacks into the same directory.
    let tar_url = detail["model_tar_url"].as_str().expect("a tar link for a kept model");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut raw = Vec::new();
    let mut stream = stream;
    stream.write_all(request(addr, "GET", tar_url, &[], "").as_bytes()).await.unwrap();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains("application/x-tar"), "{head}");
    let unpacked = tempfile::tempdir().unwrap();
    let archive = unpacked.path().join("model.tar");
    std::fs::write(&archive, &raw[split + 4..]).unwrap();
    let out = std::process::Command::new("tar").arg("-xf").arg(&archive).current_dir(unpacked.path()).output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    for file in &files {
        let path = file["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(unpacked.path().join(path)).unwrap(),
            std::fs::read(model.path().join(path)).unwrap(),
            "{path}"
        );
    }
    let none = get(addr, &format!("/api/studies/{STUDY}/trials/0/model.tar"), &[]).await;
    assert_eq!(none.status, 404, "a trial without a kept model");
    for bad in ["../../bertsweep.db", "missing.bin", "tokenizer/../config.json"] {
        let reply = get(addr, &format!("/api/studies/{STUDY}/trials/{}/model/{bad}", running.number), &[]).await;
        assert_eq!(reply.status, 404, "{bad}");
    }
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_speaks_https_with_the_coordinators_certificate() {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let tls = ServerTls {
        cert_pem: ca.cert.pem().into_bytes(),
        key_pem: ca.key_pair.serialize_pem().into_bytes(),
        client_ca_pem: None,
    };
    let served = serve(Some(TOKEN), Some(tls)).await;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(served.http).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("the dashboard presents the coordinator's certificate");
    let bearer = format!("Bearer {TOKEN}");
    let reply = exchange(stream, request(served.http, "GET", "/api/session", &[("Authorization", &bearer)], "")).await;
    assert_eq!(reply.status, 200);
    let tcp = tokio::net::TcpStream::connect(served.http).await.unwrap();
    let stream = connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let login = exchange(
        stream,
        request(
            served.http,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &format!("token={TOKEN}"),
        ),
    )
    .await;
    assert!(login.header("set-cookie").unwrap().contains("; Secure"), "the cookie never travels in clear");
    // Plain HTTP on the TLS port gets nothing.
    let mut plain = tokio::net::TcpStream::connect(served.http).await.unwrap();
    plain.write_all(request(served.http, "GET", "/api/session", &[], "").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("\"auth\""));
    served.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The pages, in a real browser

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots")
}

/// Every chart's `data-series`, by `data-chart`.
fn series(browser: &Browser) -> HashMap<String, u64> {
    let value = browser
        .eval(
            "const out = {}; document.querySelectorAll('[data-chart]').forEach(e => { out[e.dataset.chart] = Number(e.dataset.series || 0); }); return out;",
            vec![],
        )
        .unwrap();
    value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect()
}

fn assert_no_console_errors(browser: &Browser, page: &str) {
    let errors = browser.console_errors().unwrap();
    assert!(errors.is_empty(), "console errors on the {page} page: {errors:#?}");
}

const READY: &str = "return document.body.dataset.ready === '1';";

/// A function of the study's name: which table rows carry the "may be tied with the best"
/// mark, against the trials the API says overlap the best's interval, as a promise of
/// `{expected, shown, badges, cis, same}`.
const TIED_ROWS: &str = r#"(study) => fetch('/api/studies/' + study + '/trials').then(r => r.json()).then(j => {
  const expected = j.trials.filter(t => t.overlaps_best === true).map(t => t.number).sort((a, b) => a - b);
  const rows = Array.from(document.querySelectorAll('#trials-table tr[data-trial]'));
  const shown = rows.filter(r => r.dataset.overlapsBest === '1').map(r => Number(r.dataset.trial)).sort((a, b) => a - b);
  const badges = rows.filter(r => r.querySelector('td.ci .badge.tied')).length;
  const cis = rows.filter(r => /[0-9] – [0-9]/.test((r.querySelector('td.ci') || {}).textContent || '')).length;
  return { expected, shown, badges, cis, same: JSON.stringify(expected) === JSON.stringify(shown) };
})"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_in_chromium_and_follow_the_sweep_live() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let serve = ServeProcess::start(
        env!("CARGO_BIN_EXE_bertsweep"),
        &dir.path().join("b.db"),
        &["--http", "127.0.0.1:0", "--token-file", token_file.to_str().unwrap()],
    )
    .unwrap();
    let base = serve.dashboard.clone().expect("the banner names the dashboard");
    let mut sweep = sweep(&serve.url, Some(TOKEN)).await;
    let shots = screenshots();

    let browser = Browser::launch(1400, 2200).expect("headless Chromium and chromedriver");
    // Without the token: the login form, no data.
    let study_url = format!("{base}studies/{STUDY}");
    browser.goto(&study_url).unwrap();
    let text = browser.eval("return document.body.innerText;", vec![]).unwrap();
    assert!(text.as_str().unwrap().contains("Log in") && !text.as_str().unwrap().contains("COMPLETED"));
    assert_eq!(browser.eval("return !!document.querySelector('#login-form');", vec![]).unwrap(), Value::Bool(true));
    browser.screenshot(&shots.join("login.png")).unwrap();
    // A wrong token: the form again, saying so.
    let submit = "document.querySelector('#token').value = arguments[0]; document.querySelector('#login-form').submit(); return true;";
    browser.eval(submit, vec![Value::from("wrong-token")]).unwrap();
    browser
        .wait_for(
            "the wrong-token message",
            "return !!document.querySelector('#login-error');",
            Duration::from_secs(10),
        )
        .unwrap();
    // The right one: on to the study page.
    browser.eval(submit, vec![Value::from(TOKEN)]).unwrap();
    browser.wait_for("the study page", READY, Duration::from_secs(30)).unwrap();
    assert_eq!(browser.url().unwrap(), study_url);
    // The two refused documents (the study before login, the wrong token) are logged as
    // failed loads with their 401; nothing else may be.
    let refused = browser.console_errors().unwrap();
    assert!(refused.len() == 2 && refused.iter().all(|e| e.contains("status of 401")), "{refused:#?}");
    assert_no_console_errors(&browser, "study");

    let drawn = series(&browser);
    let searched = 2; // learning_rate, per_device_train_batch_size (seed and epochs are not searched)
    assert_eq!(drawn.get("history"), Some(&2), "{drawn:?}");
    assert_eq!(drawn.get("curves"), Some(&8), "6 completed, 1 pruned, 1 running: {drawn:?}");
    assert_eq!(drawn.get("parallel"), Some(&7), "trials with a value: {drawn:?}");
    assert_eq!(drawn.get("slice"), Some(&searched), "{drawn:?}");
    assert_eq!(drawn.get("importance"), Some(&searched), "{drawn:?}");
    let configs_with_points = browser
        .eval("return fetch('/api/studies/' + arguments[0] + '/configurations').then(r => r.json()).then(j => j.configurations.filter(c => c.points.length > 0).length);", vec![Value::from(STUDY)])
        .unwrap();
    assert_eq!(drawn.get("seeds").copied(), configs_with_points.as_u64(), "{drawn:?}");
    let rows =
        browser.eval("return document.querySelectorAll('#trials-table tr[data-trial]').length;", vec![]).unwrap();
    assert_eq!(rows.as_u64(), Some(8));
    // Peak device memory, in binary units: every trial reported one (1 GB + 100 MB per example
    // of batch: about 2.4 or 3.9 GiB).
    let headers = browser
        .eval("return Array.from(document.querySelectorAll('#trials-table th')).map(th => th.textContent);", vec![])
        .unwrap();
    assert!(headers.as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("Peak memory")), "{headers}");
    let first_row =
        browser.eval("return document.querySelector('#trials-table tr[data-trial=\"0\"]').innerText;", vec![]).unwrap();
    assert!(first_row.as_str().unwrap().contains(" GiB"), "{first_row}");
    // The objective's 95% interval has its own column, and the trials whose interval overlaps
    // the best's (which may be tied with it) are marked, as the API computes it.
    assert!(headers.as_array().unwrap().iter().any(|h| h.as_str().unwrap().contains("95% CI")), "{headers}");
    let tied = browser.eval(&format!("return ({TIED_ROWS})(arguments[0]);"), vec![Value::from(STUDY)]).unwrap();
    assert_eq!(tied["same"], true, "{tied}");
    assert!(!tied["expected"].as_array().unwrap().is_empty(), "some trial may be tied with the best: {tied}");
    assert_eq!(tied["badges"].as_u64(), Some(tied["shown"].as_array().unwrap().len() as u64), "{tied}");
    assert_eq!(tied["cis"].as_u64(), Some(6), "every completed trial's interval: {tied}");
    let best_row = browser
        .eval("return document.querySelector('#trials-table tr.is-best').dataset.overlapsBest || '';", vec![])
        .unwrap();
    assert_eq!(best_row, "", "the best is not marked as tied with itself");
    // The seed spread marks configurations the same way (any seed's interval overlapping the
    // best trial's).
    let configs_tied = browser
        .eval("return fetch('/api/studies/' + arguments[0] + '/configurations').then(r => r.json()).then(j => j.configurations.filter(c => c.overlaps_best).length);", vec![Value::from(STUDY)])
        .unwrap();
    let marked = browser
        .eval("return Number(document.querySelector('[data-chart=\"seeds\"]').dataset.overlapping);", vec![])
        .unwrap();
    assert_eq!(marked, configs_tied);
    let note = browser.eval("return document.querySelector('#panel-seeds .panel-note').textContent;", vec![]).unwrap();
    if configs_tied.as_u64() > Some(0) {
        assert!(note.as_str().unwrap().contains("overlap the best trial's"), "{note}");
    }
    // The held-out test score of the objective: its own column beside Value, filled for the
    // trials that have one; and beside the best value in the header when the best has one.
    let labels: Vec<String> = headers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().trim_end_matches(['▲', '▼']).to_string())
        .collect();
    let value_at = labels.iter().position(|l| l == "Value").expect("a Value column");
    assert_eq!(labels.get(value_at + 1).map(String::as_str), Some("Test"), "{labels:?}");
    let api_rows = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0] + '/trials').then(r => r.json()).then(j => j.trials);",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    for t in api_rows.as_array().unwrap() {
        let shown = browser
            .eval(
                "const c = document.querySelector(`#trials-table tr[data-trial=\"${arguments[0]}\"] td.test`); return c ? c.textContent : null;",
                vec![t["number"].clone()],
            )
            .unwrap();
        match t["test_value"].as_f64() {
            Some(test) => assert!((shown.as_str().unwrap().parse::<f64>().unwrap() - test).abs() < 1e-4, "{shown} {t}"),
            None => assert_eq!(shown, "—", "{t}"),
        }
    }
    let tested_rows = api_rows.as_array().unwrap().iter().filter(|t| t["test_value"].is_f64()).count();
    assert_eq!(tested_rows, TESTED as usize, "{api_rows}");
    let best_now = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0]).then(r => r.json()).then(j => j.study.best_trial);",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    let best_test = browser
        .eval("const e = document.querySelector('#best-test-value'); return e ? e.textContent : null;", vec![])
        .unwrap();
    assert_eq!(best_test.is_string(), best_now.as_u64().unwrap() < u64::from(TESTED), "{best_test} {best_now}");
    if let Some(text) = best_test.as_str() {
        // The gap is the best trial's own (not its configuration's mean's).
        assert!(text.contains("test 0.") && text.ends_with("(dev − test +0.0200)"), "{text}");
    }
    browser.screenshot(&shots.join("study.png")).unwrap();

    // A trial that completes while the page is open shows up without a reload.
    let running = sweep.running.clone();
    let row_state = format!(
        "const r = document.querySelector('#trials-table tr[data-trial=\"{}\"]'); return r ? r.innerText : '';",
        running.number
    );
    assert!(browser.eval(&row_state, vec![]).unwrap().as_str().unwrap().contains("RUNNING"));
    for epoch in 2..=3 {
        // Well above the median, so the rule lets it finish.
        assert!(!sweep.worker.report(&running, epoch, 0.95).await);
    }
    sweep.worker.complete(&running, 0.95).await;
    browser
        .wait_for(
            "the completed trial in the table",
            &format!(
                "const r = document.querySelector('#trials-table tr[data-trial=\"{}\"]'); return !!r && r.innerText.includes('COMPLETED');",
                running.number
            ),
            Duration::from_secs(20),
        )
        .unwrap();
    browser
        .wait_for(
            "the history to gain a point",
            "return Number(document.body.dataset.events || 0) > 0;",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(series(&browser).get("parallel"), Some(&8), "the new value is drawn");
    // The new best has a test score: the header shows it beside the dev value, live.
    let best_test = browser
        .wait_for(
            "the new best's test value in the header",
            "const e = document.querySelector('#best-test-value'); return !!e && e.textContent.startsWith('test 0.9300') && e.closest('dd').textContent;",
            Duration::from_secs(10),
        )
        .unwrap();
    let best_test = best_test.as_str().unwrap();
    assert!(
        best_test.starts_with("0.9500 (trial ") && best_test.ends_with("test 0.9300 (dev − test +0.0200)"),
        "{best_test}"
    );
    // The marks follow the new trial (which may be the new best) without a reload.
    browser
        .wait_for(
            "the tied marks to follow the live change",
            &format!("return ({TIED_ROWS})('{STUDY}').then(x => x.same && x.cis === 7);"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_no_console_errors(&browser, "study (live)");

    // The trial page: every metric per epoch.
    browser.goto(&format!("{base}studies/{STUDY}/trials/0")).unwrap();
    browser.wait_for("the trial page", READY, Duration::from_secs(20)).unwrap();
    assert_eq!(series(&browser).get("metrics"), Some(&3), "eval_accuracy, eval_loss, train_loss");
    let peak = browser
        .eval("const e = document.querySelector('#trial-peak-memory'); return e ? e.textContent : '';", vec![])
        .unwrap();
    assert!(peak.as_str().unwrap().contains("Peak memory") && peak.as_str().unwrap().contains(" GiB"), "{peak}");
    // Its dev-set evaluation: the interval beside the value, per-class scores and the
    // confusion matrix, class names as text (one is markup).
    let detail = browser
        .eval(
            "return fetch('/api/studies/' + arguments[0] + '/trials/0').then(r => r.json());",
            vec![Value::from(STUDY)],
        )
        .unwrap();
    let ci =
        browser.eval("const e = document.querySelector('#trial-ci'); return e ? e.textContent : '';", vec![]).unwrap();
    assert!(ci.as_str().unwrap().contains("95% CI") && ci.as_str().unwrap().contains(" – "), "{ci}");
    let tied_badge = browser.eval("return !!document.querySelector('.subtitle .badge.tied');", vec![]).unwrap();
    assert_eq!(tied_badge, detail["overlaps_best"], "the trial page marks a possible tie as the API says");
    let per_class = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-per-class tbody tr')).map(r => Array.from(r.children).map(c => c.textContent));",
            vec![],
        )
        .unwrap();
    let per_class: Vec<Vec<String>> = serde_json::from_value(per_class).unwrap();
    assert_eq!(per_class.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["negative", MARKUP_CLASS, "positive"]);
    assert_eq!(per_class.iter().map(|r| r[4].parse::<u64>().unwrap()).sum::<u64>(), 200, "{per_class:?}");
    for row in &per_class {
        for score in &row[1..4] {
            assert!((0.0..=1.0).contains(&score.parse::<f64>().unwrap()), "{row:?}");
        }
    }
    // Dev and held-out test side by side: one row per metric scored on both, the gap
    // labelled as selection optimism, and the test set never used to choose.
    let dev_test = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-dev-test tbody tr')).map(r => Array.from(r.children).map(c => c.textContent));",
            vec![],
        )
        .unwrap();
    let dev_test: Vec<Vec<String>> = serde_json::from_value(dev_test).unwrap();
    let test = &detail["test_metrics"];
    let dev = &detail["metrics"];
    assert_eq!(dev_test.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["accuracy", "loss"], "{dev_test:?}");
    for row in &dev_test {
        let (d, t) =
            (dev[format!("eval_{}", row[0])].as_f64().unwrap(), test[format!("test_{}", row[0])].as_f64().unwrap());
        let shown: Vec<f64> = row[1..].iter().map(|c| c.parse::<f64>().unwrap()).collect();
        assert!(
            (shown[0] - d).abs() < 1e-4 && (shown[1] - t).abs() < 1e-4 && (shown[2] - (d - t)).abs() < 1e-4,
            "{row:?}"
        );
    }
    assert_eq!(
        (dev_test[0][3].as_str(), dev_test[1][3].as_str()),
        ("+0.0200", "-0.0200"),
        "scores lower, losses higher on test"
    );
    let labels = browser
        .eval(
            "const t = document.querySelector('#trial-dev-test'); return [t.querySelector('caption').textContent, Array.from(t.querySelectorAll('thead th')).pop().textContent, document.querySelector('#trial-dev-test-note').textContent];",
            vec![],
        )
        .unwrap();
    assert!(labels[0].as_str().unwrap().contains("selection optimism (dev − test)"), "{labels}");
    assert_eq!(labels[1], "selection optimism (dev − test)");
    assert_eq!(labels[2], "scored once on the held-out test set; never used to choose");
    let markup = browser.eval("return document.querySelectorAll('#evaluation-panel i').length;", vec![]).unwrap();
    assert_eq!(markup, 0, "class names are text, never markup");
    let cells = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-confusion td.cm-cell')).map(c => [Number(c.dataset.true), Number(c.dataset.predicted), Number(c.textContent), getComputedStyle(c).backgroundColor]);",
            vec![],
        )
        .unwrap();
    let cells: Vec<(usize, usize, u64, String)> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells.len(), 9, "3 true × 3 predicted classes");
    let matrix: Vec<Vec<u64>> = serde_json::from_value(detail["evaluation"]["confusion"]["matrix"].clone()).unwrap();
    for (t, p, count, shade) in &cells {
        assert_eq!(*count, matrix[*t][*p], "cell ({t}, {p})");
        let row: u64 = matrix[*t].iter().sum();
        let alpha: f64 = shade.rsplit(',').next().unwrap().trim_end_matches(')').trim().parse().unwrap_or(1.0);
        let expected = if *count == 0 { 0.0 } else { 0.85 * *count as f64 / row as f64 };
        assert!((alpha - expected).abs() < 0.01, "cell ({t}, {p}): {shade}, {count} of {row}");
    }
    let right: u64 = cells.iter().filter(|c| c.0 == c.1).map(|c| c.2).sum();
    let value = detail["value"].as_f64().unwrap();
    assert_eq!(right, (value * 200.0).round() as u64, "the diagonal holds the trial's accuracy");
    let headers = browser
        .eval(
            "return Array.from(document.querySelectorAll('#trial-confusion thead th')).map(th => th.textContent);",
            vec![],
        )
        .unwrap();
    assert_eq!(
        headers.as_array().unwrap()[1..4],
        [Value::from("negative"), Value::from(MARKUP_CLASS), Value::from("positive")]
    );
    browser
        .wait_for(
            "the trial page's live stream to open",
            "return document.body.dataset.live === '1';",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_no_console_errors(&browser, "trial");
    browser.screenshot(&shots.join("trial.png")).unwrap();

    // The studies page.
    browser.goto(&base).unwrap();
    browser
        .wait_for(
            "the studies page",
            &format!("return document.body.innerText.includes('{STUDY}');"),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_no_console_errors(&browser, "studies");
    browser.screenshot(&shots.join("studies.png")).unwrap();

    // An unknown study: a clear 404 page.
    browser.goto(&format!("{base}studies/no-such-study")).unwrap();
    let message =
        browser.eval("const e = document.querySelector('#not-found'); return e ? e.innerText : '';", vec![]).unwrap();
    assert!(message.as_str().unwrap().contains("There is no study named \"no-such-study\""), "{message}");
    browser.screenshot(&shots.join("not-found.png")).unwrap();
    // The 404 status itself shows as a console error for the document; nothing else may.
    let errors: Vec<String> = browser.console_errors().unwrap().into_iter().filter(|e| !e.contains("404")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// A gRPC client that sends `token` on every call.
async fn grpc_with_token(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_from_one_address_are_slowed_down_on_both_ports() {
    use bertsweep_coordinator::auth_throttle::FREE_FAILURES;
    let served = serve(Some(TOKEN), None).await;
    let addr = served.http;

    // gRPC: a few wrong tokens are answered as wrong; then even the right one waits its turn.
    let mut wrong = grpc_with_token(&served.grpc_url, "guess-guess-guess").await;
    let list = || pb::ListStudiesRequest { page_size: 1, ..Default::default() };
    for _ in 0..FREE_FAILURES {
        let e = wrong.list_studies(list()).await.unwrap_err();
        assert!(e.code() == tonic::Code::Unauthenticated && e.message().starts_with("wrong token"), "{e:?}");
    }
    let e = wrong.list_studies(list()).await.unwrap_err();
    assert!(e.code() == tonic::Code::Unauthenticated && e.message().contains("too many wrong tokens"), "{e:?}");
    let mut right = grpc_with_token(&served.grpc_url, TOKEN).await;
    let e = right.list_studies(list()).await.unwrap_err();
    assert!(e.message().contains("too many wrong tokens"), "refused unchecked while it waits: {e:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while right.list_studies(list()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A right token reset the address: mistakes are free again.
    let e = wrong.list_studies(list()).await.unwrap_err();
    assert!(e.message().starts_with("wrong token"), "{e:?}");

    // The dashboard keeps its own count: the login form, then bearer headers.
    let form = |token: &str| format!("token={token}&next=%2F");
    let content = [("Content-Type", "application/x-www-form-urlencoded")];
    for _ in 0..FREE_FAILURES {
        assert_eq!(http(addr, "POST", "/login", &content, &form("guess")).await.status, 401);
    }
    let refused = http(addr, "POST", "/login", &content, &form(TOKEN)).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some() && refused.json()["error"].as_str().unwrap().contains("wait"));
    let refused = get(addr, "/api/studies", &[("Authorization", "Bearer guess")]).await;
    assert_eq!(refused.status, 429);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = http(addr, "POST", "/login", &content, &form(TOKEN)).await;
        if reply.status == 303 {
            break;
        }
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served.shutdown().await;
}
