//! Reloads without dropping anything: a token-file reload that keeps open connections,
//! streams and running trials, a TLS reload served to new connections on both ports, and
//! SIGHUP to a real `bertsweep serve`.

mod common;

use bertsweep_coordinator::access::TokenSet;
use bertsweep_coordinator::reload::{read_token_file, ReloadSources, Reloader};
use bertsweep_coordinator::server::ServerConfig;
use bertsweep_proto::v1 as pb;
use bertsweep_testkit::{ServeProcess, StudyToml};
use common::eventually;
use common::roles::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

// Reloads
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reload_keeps_connections_streams_and_running_trials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, token_file_text()).unwrap();
    let reloader = Reloader::new(ReloadSources { token_file: Some(file.clone()), ..ReloadSources::default() });
    let config = ServerConfig {
        tokens: Some(read_token_file(&file).unwrap()),
        reloader: Some(reloader.clone()),
        ..ServerConfig::default()
    };
    let served = Served::start(config).await;
    let url = served.url();
    let (mut worker, running) = study_with_a_running_trial(&url).await;

    // A viewer watches the study on its own connection; a browser session is open too.
    let viewer_channel = channel(&url).await;
    let mut viewer = client_on(viewer_channel.clone(), Some(VIEWER));
    let mut events = viewer.watch_study(pb::WatchStudyRequest { study: STUDY.into() }).await.unwrap().into_inner();
    assert!(next_event(&mut events).await.snapshot);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let login = http(served.http, "POST", "/login", &form, &format!("token={VIEWER}&next=%2F")).await;
    let cookie = login.head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    let cookie = cookie.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string();
    assert_eq!(get(served.http, "/api/studies", &[("Cookie", &cookie)]).await.status, 200);

    // The viewer's token is replaced by another; an invalid file first changes nothing.
    const NEW_VIEWER: &str = "new-viewer-token-0123456789";
    std::fs::write(&file, format!("admin:{ADMIN}\nworker:{WORKER}\nviewer:{NEW_VIEWER}\nbogus:line\n")).unwrap();
    let refused = reloader.reload();
    let why = refused.tokens.unwrap().unwrap_err();
    assert!(why.contains("line 4: unknown role") && !why.contains("line\n"), "{why}");
    assert!(call(&mut viewer, "ListStudies").await.is_ok(), "the old tokens stay after a refused reload");
    std::fs::write(&file, format!("admin:{ADMIN}\nworker:{WORKER}\nviewer:{NEW_VIEWER}\n")).unwrap();
    let reloaded = reloader.reload();
    let counts = reloaded.tokens.unwrap().unwrap();
    assert_eq!((counts.admin, counts.worker, counts.viewer), (1, 1, 1));
    assert_eq!(counts.to_string(), "1 admin, 1 worker, 1 viewer");
    assert_eq!(reloaded.tls, None);

    // The removed token is refused on its own open connection; the new one works.
    let status = call(&mut viewer, "ListStudies").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut new_viewer = client_on(viewer_channel, Some(NEW_VIEWER));
    new_viewer.list_studies(pb::ListStudiesRequest::default()).await.unwrap();
    assert_eq!(get(served.http, "/api/studies", &[("Cookie", &cookie)]).await.status, 401, "its session ended");
    assert_eq!(get(served.http, "/api/studies", &[("Authorization", &bearer(NEW_VIEWER))]).await.status, 200);

    // The running trial goes on with the worker's unchanged token, on the same connection, and
    // the stream opened before the reload still carries its events.
    worker
        .heartbeat(pb::HeartbeatRequest { trial_id: running.trial_id, lease_token: running.lease_token })
        .await
        .unwrap();
    let mut metrics = std::collections::HashMap::new();
    metrics.insert("eval_accuracy".to_string(), 0.75);
    let report = pb::ReportProgressRequest {
        trial_id: running.trial_id,
        lease_token: running.lease_token,
        epoch: 1,
        metrics,
        ..Default::default()
    };
    worker.report_progress(report).await.unwrap();
    // Events come in commit order: the report's is among the next few.
    loop {
        let event = next_event(&mut events).await;
        let trial = event.trial.expect("a trial event");
        if trial.trial_id == running.trial_id && !trial.intermediate.is_empty() {
            break;
        }
    }
    drop(events);
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_reload_serves_the_new_certificate_to_new_connections_on_both_ports() {
    let pki = Pki::new();
    pki.serve_as("first");
    let reloader = Reloader::new(ReloadSources { tls: Some(pki.files()), ..ReloadSources::default() });
    let config = ServerConfig {
        tokens: Some(TokenSet::parse(&token_file_text()).unwrap()),
        tls: Some(pki.files().read().unwrap()),
        reloader: Some(reloader.clone()),
        ..ServerConfig::default()
    };
    let served = Served::start(config).await;
    assert_eq!(pki.served_name(served.grpc).await, "first");
    assert_eq!(pki.served_name(served.http).await, "first");

    // A connection from before the reload, with a stream open on it.
    let before = pki.channel(served.grpc).await;
    let mut admin = client_on(before.clone(), Some(ADMIN));
    let toml =
        StudyToml::new(STUDY).parameters("[parameters.per_device_train_batch_size]\nvalues = [8, 16]").to_string();
    admin.create_study(pb::CreateStudyRequest { spec_toml: toml }).await.unwrap();
    let mut watching = client_on(before.clone(), Some(VIEWER))
        .watch_study(pb::WatchStudyRequest { study: STUDY.into() })
        .await
        .unwrap()
        .into_inner();

    // Broken files are refused and change nothing.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    let why = reloader.reload().tls.unwrap().unwrap_err();
    assert!(why.contains("TLS"), "{why}");
    assert_eq!(pki.served_name(served.grpc).await, "first");

    pki.serve_as("second");
    assert_eq!(reloader.reload().tls, Some(Ok(())));
    assert_eq!(pki.served_name(served.grpc).await, "second");
    assert_eq!(pki.served_name(served.http).await, "second");

    // The old connection still works, and so does its stream: stopping the study ends it with
    // the final event.
    admin.stop_study(pb::StopStudyRequest { name: STUDY.into() }).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watching.message().await.unwrap() {
            if event.trial.is_none() && event.study_state == pb::StudyState::Stopped as i32 {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(ended, "the stream opened before the reload saw the study stop");
    // And new mutual-TLS connections work with the new certificate.
    client_on(pki.channel(served.grpc).await, Some(VIEWER))
        .list_studies(pb::ListStudiesRequest::default())
        .await
        .unwrap();
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_real_serve() {
    let pki = Pki::new();
    pki.serve_as("first");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, token_file_text()).unwrap();
    let arg = |p: &Path| p.display().to_string();
    let (cert, key, ca, token_arg) =
        (arg(&pki.path("server.pem")), arg(&pki.path("server.key")), arg(&pki.path("ca.pem")), arg(&tokens));
    let mut serve = ServeProcess::start(
        env!("CARGO_BIN_EXE_bertsweep"),
        &dir.path().join("hup.db"),
        &["--token-file", &token_arg, "--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca],
    )
    .unwrap();
    let addr: SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    assert_eq!(pki.served_name(addr).await, "first");
    let open = pki.channel(addr).await;
    list_with(open.clone(), VIEWER).await.unwrap();

    const NEW_VIEWER: &str = "sighup-viewer-token-0123456789";
    std::fs::write(&tokens, format!("admin:{ADMIN}\nworker:{WORKER}\nviewer:{NEW_VIEWER}\n")).unwrap();
    pki.serve_as("second");
    kill(&serve.child, "-HUP");
    eventually("the new viewer token to work", Duration::from_secs(20), || {
        let open = open.clone();
        async move { list_with(open, NEW_VIEWER).await.ok() }
    })
    .await;
    let status = list_with(open.clone(), VIEWER).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "the removed token: {status:?}");
    assert_eq!(pki.served_name(addr).await, "second");

    // A file that does not parse is refused (the in-process test shows the old tokens stay);
    // the process lives on and a later, valid file is read.
    std::fs::write(&tokens, "admin:\n").unwrap();
    kill(&serve.child, "-HUP");
    const THIRD_VIEWER: &str = "third-viewer-token-0123456789";
    std::fs::write(&tokens, format!("admin:{ADMIN}\nviewer:{THIRD_VIEWER}\n")).unwrap();
    kill(&serve.child, "-HUP");
    eventually("the third viewer token to work", Duration::from_secs(20), || {
        let open = open.clone();
        async move { list_with(open, THIRD_VIEWER).await.ok() }
    })
    .await;
    assert!(serve.child.try_wait().unwrap().is_none(), "SIGHUP does not end the coordinator");
    list_with(pki.channel(addr).await, ADMIN).await.unwrap();
}
