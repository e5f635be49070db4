//! The web dashboard (`serve --http`): its JSON API and guards over real HTTP(S), and the
//! throttle on wrong tokens across both ports. The pages in headless Chromium are in
//! `dashboard_browser.rs`; the sweep they watch is in `common/dashboard_sweep.rs`.

mod common;

use bertsweep_coordinator::server::ServerTls;
use bertsweep_proto::v1 as pb;
use common::dashboard_sweep::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
