//! Shared by `access.rs` and `reload.rs`: an in-process coordinator with role tokens (and
//! optionally TLS, a reloader and the dashboard), clients per role, one call per RPC, raw
//! HTTP/1.1 for the dashboard, a private PKI for certificate reloads.

use bertsweep_coordinator::access::TokenSet;
use bertsweep_coordinator::reload::TlsFiles;
use bertsweep_coordinator::server::{self, ServerConfig, Sidecars};
use bertsweep_proto::v1 as pb;
use bertsweep_testkit::StudyToml;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

pub const ADMIN: &str = "admin-token-0123456789abcdef";

pub const WORKER: &str = "worker-token-0123456789abcdef";

pub const VIEWER: &str = "viewer-token-0123456789abcdef";

pub const STUDY: &str = "scoped";

pub fn token_file_text() -> String {
    format!("# roles for the access tests\nadmin:{ADMIN}\nworker:{WORKER}\n\nviewer:{VIEWER}\n")
}

/// Who may call each RPC, as the issue states it (admin may call everything). A method of the
/// proto missing here fails [`every_rpc_answers_each_role_as_its_table_says`].
pub const EXPECTED: &[(&str, &[&str])] = &[
    ("CreateStudy", &["admin"]),
    ("StopStudy", &["admin"]),
    ("DeleteStudy", &["admin"]),
    ("Backup", &["admin"]),
    ("GetStudy", &["worker", "viewer", "admin"]),
    ("ListStudies", &["viewer", "admin"]),
    ("ListTrials", &["viewer", "admin"]),
    ("ListConfigurations", &["viewer", "admin"]),
    ("GetBestTrial", &["viewer", "admin"]),
    ("WatchStudy", &["viewer", "admin"]),
    ("RegisterWorker", &["worker", "admin"]),
    ("AcquireTrial", &["worker", "admin"]),
    ("Heartbeat", &["worker", "admin"]),
    ("ReportProgress", &["worker", "admin"]),
    ("CompleteTrial", &["worker", "admin"]),
    ("FailTrial", &["worker", "admin"]),
    ("OfferArtifact", &["worker", "admin"]),
    ("FindMissingBlobs", &["worker", "admin"]),
    ("UploadBlob", &["worker", "admin"]),
    ("DownloadBlob", &["worker", "viewer", "admin"]),
];

/// The RPCs of `bertsweep.v1.Coordinator`, read from the proto itself.
pub fn proto_rpcs() -> Vec<String> {
    include_str!("../../../proto/bertsweep/v1/coordinator.proto")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .map(|m| m.trim().to_string())
        .collect()
}

// An in-process coordinator with tokens (and optionally TLS, a reloader and the dashboard)
pub struct Served {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

impl Served {
    pub async fn start(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            db_url: format!("sqlite://{}", dir.path().join("access.db").display()),
            long_poll: Duration::from_millis(200),
            ..config
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = listener.local_addr().unwrap();
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
        Served { grpc, http, stop: Some(stop), task, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

pub fn with_tokens(text: &str) -> ServerConfig {
    ServerConfig { tokens: Some(TokenSet::parse(text).unwrap()), ..ServerConfig::default() }
}

pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap()
}

pub fn client_on(channel: tonic::transport::Channel, token: Option<&str>) -> bertsweep_proto::Client {
    pb::coordinator_client::CoordinatorClient::with_interceptor(
        channel,
        bertsweep_proto::auth::BearerToken::new(token).unwrap(),
    )
}

pub async fn client(url: &str, token: Option<&str>) -> bertsweep_proto::Client {
    client_on(channel(url).await, token)
}

/// Calls `rpc` with an empty request: enough to pass or fail authorisation (an allowed call
/// then fails validation, changing nothing).
pub async fn call(c: &mut bertsweep_proto::Client, rpc: &str) -> Result<(), tonic::Status> {
    match rpc {
        "CreateStudy" => c.create_study(pb::CreateStudyRequest::default()).await.map(drop),
        "GetStudy" => c.get_study(pb::GetStudyRequest::default()).await.map(drop),
        "ListStudies" => c.list_studies(pb::ListStudiesRequest::default()).await.map(drop),
        "StopStudy" => c.stop_study(pb::StopStudyRequest::default()).await.map(drop),
        "DeleteStudy" => c.delete_study(pb::DeleteStudyRequest::default()).await.map(drop),
        "Backup" => c.backup(pb::BackupRequest::default()).await.map(drop),
        "ListTrials" => c.list_trials(pb::ListTrialsRequest::default()).await.map(drop),
        "ListConfigurations" => c.list_configurations(pb::ListConfigurationsRequest::default()).await.map(drop),
        "GetBestTrial" => c.get_best_trial(pb::GetBestTrialRequest::default()).await.map(drop),
        "WatchStudy" => c.watch_study(pb::WatchStudyRequest::default()).await.map(drop),
        "RegisterWorker" => c.register_worker(pb::RegisterWorkerRequest::default()).await.map(drop),
        "AcquireTrial" => c.acquire_trial(pb::AcquireTrialRequest::default()).await.map(drop),
        "Heartbeat" => c.heartbeat(pb::HeartbeatRequest::default()).await.map(drop),
        "ReportProgress" => c.report_progress(pb::ReportProgressRequest::default()).await.map(drop),
        "CompleteTrial" => c.complete_trial(pb::CompleteTrialRequest::default()).await.map(drop),
        "FailTrial" => c.fail_trial(pb::FailTrialRequest::default()).await.map(drop),
        "OfferArtifact" => c.offer_artifact(pb::OfferArtifactRequest::default()).await.map(drop),
        "FindMissingBlobs" => c.find_missing_blobs(pb::FindMissingBlobsRequest::default()).await.map(drop),
        "UploadBlob" => c.upload_blob(futures::stream::iter([pb::UploadBlobRequest::default()])).await.map(drop),
        "DownloadBlob" => c.download_blob(pb::DownloadBlobRequest::default()).await.map(drop),
        other => panic!("this test does not call {other} yet: add it to `call`"),
    }
}

/// Asserts `result` got past authentication and authorisation.
pub fn assert_allowed(result: &Result<(), tonic::Status>, what: &str) {
    if let Err(status) = result {
        assert!(
            !matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{what} should be allowed: {status:?}"
        );
    }
}

// The dashboard, per role
/// One HTTP/1.1 reply.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all((text + "\r\n" + body).as_bytes()).await.unwrap();
    // Event streams never end: read the head, then whatever follows within a moment.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let wait =
            if raw.windows(4).any(|w| w == b"\r\n\r\n") { Duration::from_millis(300) } else { Duration::from_secs(10) };
        match tokio::time::timeout(wait.min(deadline - tokio::time::Instant::now()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{path}: no HTTP reply: {text:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply { status, head: head.to_string(), body: body.to_string() }
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    http(addr, "GET", path, headers, "").await
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A study with one trial running.
pub async fn study_with_a_running_trial(url: &str) -> (bertsweep_proto::Client, pb::Assignment) {
    let mut admin = client(url, Some(ADMIN)).await;
    let toml = StudyToml::new(STUDY)
        .budget("max_trials = 4\nparallel_trials = 2")
        .parameters("[parameters.per_device_train_batch_size]\nvalues = [8, 16, 32, 64]")
        .to_string();
    admin.create_study(pb::CreateStudyRequest { spec_toml: toml }).await.unwrap();
    let mut worker = client(url, Some(WORKER)).await;
    let id = worker
        .register_worker(pb::RegisterWorkerRequest {
            hostname: "w".into(),
            devices: vec!["cpu".into()],
            version: "t".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let assignment = worker
        .acquire_trial(pb::AcquireTrialRequest { worker_id: id, study: String::new(), wait_ms: 1000 })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .unwrap();
    (worker, assignment)
}

/// The next event of `events`, within 10 s.
pub async fn next_event(events: &mut tonic::Streaming<pb::TrialEvent>) -> pb::TrialEvent {
    tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("an event in time").unwrap().unwrap()
}

/// A CA, two server certificates it issued (`first`, `second`) for 127.0.0.1 and localhost,
/// and a client certificate, as files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "access test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf = |name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        let local = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
        leaf("first", local(), ExtendedKeyUsagePurpose::ServerAuth);
        leaf("second", local(), ExtendedKeyUsagePurpose::ServerAuth);
        leaf("client", vec!["worker-1".into()], ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca_pem: ca.pem() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// Makes `server.pem`/`server.key` the `name` certificate.
    pub fn serve_as(&self, name: &str) {
        std::fs::copy(self.path(&format!("{name}.pem")), self.path("server.pem")).unwrap();
        std::fs::copy(self.path(&format!("{name}.key")), self.path("server.key")).unwrap();
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles { cert: self.path("server.pem"), key: self.path("server.key"), client_ca: Some(self.path("ca.pem")) }
    }

    /// The common name of the certificate `addr` presents to a new TLS connection (with the
    /// client certificate, for mutual TLS).
    pub async fn served_name(&self, addr: SocketAddr) -> String {
        use rustls_pki_types::pem::PemObject;
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(self.path("client.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.expect("a TLS handshake");
        let der = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        for name in ["first", "second"] {
            let pem = self.read(&format!("{name}.pem"));
            let ours = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap();
            if ours == der {
                return name.to_string();
            }
        }
        panic!("an unknown certificate")
    }

    /// A gRPC channel over mutual TLS.
    pub async fn channel(&self, addr: SocketAddr) -> tonic::transport::Channel {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(self.read("client.pem"), self.read("client.key")))
            .domain_name("localhost");
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

pub fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub async fn list_with(channel: tonic::transport::Channel, token: &str) -> Result<(), tonic::Status> {
    client_on(channel, Some(token)).list_studies(pb::ListStudiesRequest::default()).await.map(drop)
}
