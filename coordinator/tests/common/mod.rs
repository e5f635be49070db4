//! Shared helpers for the coordinator's integration tests: an in-process server on
//! 127.0.0.1:0 over a temporary SQLite file, and gRPC clients for scripted fake workers.
#![allow(dead_code)]

pub mod dashboard_sweep;
pub mod fuzzing;
pub mod roles;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bertsweep_coordinator::server::{self, ServerConfig};
use bertsweep_proto::v1 as pb;
use bertsweep_proto::v1::coordinator_client::CoordinatorClient;
use bertsweep_testkit::StudyToml;
use tonic::transport::Channel;

pub type Client = CoordinatorClient<Channel>;

/// A running in-process coordinator.
pub struct TestServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(lease_ttl: Duration) -> Self {
        Self::start_with(lease_ttl, None).await
    }

    pub async fn start_with(lease_ttl: Duration, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self::start_in(dir, lease_ttl, token, db_url).await
    }

    /// A server over an existing database (its own temporary directory stays empty).
    pub async fn start_on_db(lease_ttl: Duration, db_url: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), lease_ttl, None, db_url.to_string()).await
    }

    async fn start_in(dir: tempfile::TempDir, lease_ttl: Duration, token: Option<&str>, db_url: String) -> Self {
        let config = ServerConfig {
            db_url,
            token: token.map(String::from),
            lease_ttl,
            long_poll: Duration::from_secs(5),
            tls: None,
            ..ServerConfig::default()
        };
        Self::start_config_in(dir, config).await
    }

    /// A server with any configuration (its own temporary directory stays empty).
    pub async fn start_config(config: ServerConfig) -> Self {
        Self::start_config_in(tempfile::tempdir().unwrap(), config).await
    }

    async fn start_config_in(dir: tempfile::TempDir, config: ServerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            server::run_with_ready(
                listener,
                config,
                async {
                    let _ = stopped.await;
                },
                ready_tx,
            )
            .await
            .unwrap();
        });
        ready_rx.await.expect("server failed to start");
        TestServer { url, dir, stop: Some(stop), task: Some(task) }
    }

    pub async fn client(&self) -> Client {
        Self::client_for(&self.url).await
    }

    /// A client of the coordinator at `url`.
    pub async fn client_for(url: &str) -> Client {
        CoordinatorClient::connect(url.to_string()).await.unwrap()
    }

    /// The client type the CLI, the worker and `bertsweep_transfer::remote::Remote` use.
    pub async fn intercepted_client(&self) -> bertsweep_proto::Client {
        let channel = tonic::transport::Endpoint::from_shared(self.url.clone()).unwrap().connect().await.unwrap();
        CoordinatorClient::with_interceptor(channel, bertsweep_proto::auth::BearerToken::new(None).unwrap())
    }

    /// Shuts down and hands back the directory holding the database.
    pub async fn stop_keeping_files(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let empty = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, empty)
    }

    /// Shuts down gracefully; a server that panicked fails the test here.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }
}

/// A grid study over inputs on the workers with the given budget lines and parameter tables.
pub fn study_toml(name: &str, budget: &str, parameters: &str) -> String {
    StudyToml::new(name).budget(budget).parameters(parameters).to_string()
}

/// A grid of `n_lr` learning rates × 2 batch sizes.
pub fn grid_params(n_lr: u32) -> String {
    format!(
        "[parameters.learning_rate]\ndistribution = \"log_uniform\"\nmin = 1e-5\nmax = 5e-5\ngrid_points = {n_lr}\n[parameters.per_device_train_batch_size]\nvalues = [16, 32]\n"
    )
}

pub async fn create(client: &mut Client, toml: &str) -> pb::Study {
    client.create_study(pb::CreateStudyRequest { spec_toml: toml.into() }).await.unwrap().into_inner()
}

pub async fn register(client: &mut Client) -> String {
    client
        .register_worker(pb::RegisterWorkerRequest {
            hostname: "test".into(),
            devices: vec!["cpu".into()],
            version: "t".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id
}

pub async fn acquire(client: &mut Client, worker: &str, wait_ms: u32) -> Option<pb::Assignment> {
    client
        .acquire_trial(pb::AcquireTrialRequest { worker_id: worker.into(), study: String::new(), wait_ms })
        .await
        .unwrap()
        .into_inner()
        .assignment
}

pub fn metrics(acc: f64) -> HashMap<String, f64> {
    [("eval_accuracy".to_string(), acc), ("eval_loss".to_string(), 1.0 - acc)].into_iter().collect()
}

pub async fn report(
    client: &mut Client,
    a: &pb::Assignment,
    epoch: u32,
    acc: f64,
) -> Result<pb::ReportProgressResponse, tonic::Status> {
    report_with_peak(client, a, epoch, acc, 0).await
}

/// [`report`] with the attempt's peak device memory so far (0: not measured).
pub async fn report_with_peak(
    client: &mut Client,
    a: &pb::Assignment,
    epoch: u32,
    acc: f64,
    peak_device_memory_bytes: u64,
) -> Result<pb::ReportProgressResponse, tonic::Status> {
    client
        .report_progress(pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch,
            metrics: metrics(acc),
            checkpoint: String::new(),
            peak_device_memory_bytes,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn complete(client: &mut Client, a: &pb::Assignment, acc: f64) -> Result<(), tonic::Status> {
    complete_with_peak(client, a, acc, 0).await
}

/// [`complete`] with the attempt's peak device memory (0: not measured).
pub async fn complete_with_peak(
    client: &mut Client,
    a: &pb::Assignment,
    acc: f64,
    peak_device_memory_bytes: u64,
) -> Result<(), tonic::Status> {
    complete_with(client, a, acc, peak_device_memory_bytes, None, HashMap::new()).await
}

/// [`complete`] with the peak device memory, the best epoch's dev-set predictions and the
/// kept model's test-set scores.
pub async fn complete_with(
    client: &mut Client,
    a: &pb::Assignment,
    acc: f64,
    peak_device_memory_bytes: u64,
    predictions: Option<pb::DevPredictions>,
    test_metrics: HashMap<String, f64>,
) -> Result<(), tonic::Status> {
    client
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            metrics: metrics(acc),
            artifact: String::new(),
            peak_device_memory_bytes,
            predictions,
            test_metrics,
        })
        .await
        .map(|_| ())
}

/// Dev-set predictions of `n` binary examples (labels alternate), the first `correct` of them
/// predicted right with probability 0.8: accuracy `correct / n`.
pub fn predictions(n: usize, correct: usize) -> pb::DevPredictions {
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let probabilities = labels
        .iter()
        .enumerate()
        .flat_map(|(i, &y)| {
            let p1 = if (y == 1) == (i < correct) { 0.8 } else { 0.2 };
            [1.0 - p1, p1]
        })
        .collect();
    pb::DevPredictions {
        epoch: 1,
        classes: 2,
        labels,
        probabilities,
        class_weights: vec![],
        class_names: vec!["negative".into(), "positive".into()],
    }
}

/// Reports the trial of `a` as failed with `kind`; returns the trial's state afterwards.
pub async fn fail(client: &mut Client, a: &pb::Assignment, kind: pb::FailureKind) -> pb::TrialState {
    let request = pb::FailTrialRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        error: "lost".into(),
        kind: kind as i32,
    };
    pb::TrialState::try_from(client.fail_trial(request).await.unwrap().into_inner().state).unwrap()
}

pub async fn study(client: &mut Client, name: &str) -> pb::Study {
    client.get_study(pb::GetStudyRequest { name: name.into() }).await.unwrap().into_inner()
}

/// Every trial of a study, following the pages.
pub async fn trials(client: &mut Client, name: &str) -> Vec<pb::Trial> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListTrialsRequest { study: name.into(), page_size: 0, page_token };
        let page = client.list_trials(request).await.unwrap().into_inner();
        out.extend(page.trials);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn param_key(params: &HashMap<String, pb::ParamValue>) -> String {
    let mut items: Vec<String> = params.iter().map(|(k, v)| format!("{k}={:?}", v.kind)).collect();
    items.sort();
    items.join(",")
}

/// Raw bytes as a request body, to send what no generated client would.
#[derive(Clone, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Sends `body` as the request of `method` and returns the status it was refused with (or OK).
pub async fn raw_call(url: &str, method: &str, body: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    raw_call_on(channel, method, body).await
}

/// [`raw_call`] over an open channel.
pub async fn raw_call_on(channel: Channel, method: &str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_maybe_shared(format!("/bertsweep.v1.Coordinator/{method}")).unwrap();
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}
