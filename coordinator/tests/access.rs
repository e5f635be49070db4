//! Scoped tokens against a real coordinator: every RPC of the Coordinator service with each
//! role's token (and a wrong one, and none), the single-token form, and the dashboard per role
//! (API routes, login, stop, and the Stop button in headless Chromium).

mod common;

use bertsweep_coordinator::access::COORDINATOR_SERVICE;
use bertsweep_coordinator::server::ServerConfig;
use bertsweep_testkit::ServeProcess;
use common::roles::*;
use serde_json::Value;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_role_as_its_table_says() {
    let rpcs = proto_rpcs();
    assert!(rpcs.len() >= 17, "{rpcs:?}");
    for rpc in &rpcs {
        assert!(EXPECTED.iter().any(|(m, _)| m == rpc), "{rpc} has no expected roles in this test");
    }
    let served = Served::start(with_tokens(&token_file_text())).await;
    let url = served.url();
    // Right tokens first: wrong ones from this address would soon be refused unchecked.
    for (role, token) in [("admin", ADMIN), ("worker", WORKER), ("viewer", VIEWER)] {
        let mut c = client(&url, Some(token)).await;
        for rpc in &rpcs {
            let roles = EXPECTED.iter().find(|(m, _)| m == rpc).unwrap().1;
            let result = call(&mut c, rpc).await;
            if roles.contains(&role) {
                assert_allowed(&result, &format!("{rpc} with a {role} token"));
            } else {
                let status = result.expect_err(&format!("{rpc} must refuse a {role} token"));
                assert_eq!(status.code(), Code::PermissionDenied, "{rpc} with a {role} token: {status:?}");
                let needs = roles.join(" or ");
                assert_eq!(status.message(), format!("this token has role {role}; {rpc} needs {needs}"));
            }
        }
    }
    // Health needs no token; reflection is for viewers (and admins).
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&url).await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    for (token, allowed) in [(WORKER, false), (VIEWER, true), (ADMIN, true)] {
        use tonic_reflection::pb::v1::{server_reflection_client::ServerReflectionClient, server_reflection_request};
        let mut reflection = ServerReflectionClient::with_interceptor(
            channel(&url).await,
            bertsweep_proto::auth::BearerToken::new(Some(token)).unwrap(),
        );
        let request = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        match reflection.server_reflection_info(futures::stream::iter([request])).await {
            Ok(mut stream) if allowed => {
                let listed = stream.get_mut().message().await.unwrap().unwrap();
                assert!(format!("{listed:?}").contains(COORDINATOR_SERVICE));
            }
            Ok(_) => panic!("a worker token may not use server reflection"),
            Err(status) => {
                assert!(!allowed, "{status:?}");
                assert_eq!(status.code(), Code::PermissionDenied);
                assert_eq!(status.message(), "this token has role worker; server reflection needs viewer or admin");
            }
        }
    }
    // No token, then a wrong one: UNAUTHENTICATED everywhere (the wrong ones soon unchecked).
    let mut none = client(&url, None).await;
    for rpc in &rpcs {
        let status = call(&mut none, rpc).await.expect_err(rpc);
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        assert!(status.message().contains("requires a token"), "{rpc}: {status:?}");
    }
    let mut wrong = client(&url, Some("not-a-token-of-this-coordinator")).await;
    for (i, rpc) in rpcs.iter().enumerate() {
        let status = call(&mut wrong, rpc).await.expect_err(rpc);
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        if i == 0 {
            assert!(status.message().starts_with("wrong token"), "{status:?}");
        }
    }
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_token_form_is_an_admin() {
    // A bare token, from `--token` or a one-line file: everything, as before roles existed.
    for config in
        [ServerConfig { token: Some(ADMIN.into()), ..ServerConfig::default() }, with_tokens(&format!("{ADMIN}\n"))]
    {
        let served = Served::start(config).await;
        let mut c = client(&served.url(), Some(ADMIN)).await;
        for rpc in proto_rpcs() {
            assert_allowed(&call(&mut c, &rpc).await, &rpc);
        }
        served.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_for_viewers_stops_for_admins_and_refuses_workers() {
    let served = Served::start(with_tokens(&token_file_text())).await;
    let addr = served.http;
    let (_worker, running) = study_with_a_running_trial(&served.url()).await;
    let trial = running.number;
    let routes = [
        "/".to_string(),
        format!("/studies/{STUDY}"),
        format!("/studies/{STUDY}/trials/{trial}"),
        "/api/session".to_string(),
        "/api/studies".to_string(),
        format!("/api/studies/{STUDY}"),
        format!("/api/studies/{STUDY}/trials"),
        format!("/api/studies/{STUDY}/trials.csv"),
        format!("/api/studies/{STUDY}/trials/{trial}"),
        format!("/api/studies/{STUDY}/trials/{trial}/model.tar"),
        format!("/api/studies/{STUDY}/trials/{trial}/model/config.json"),
        format!("/api/studies/{STUDY}/configurations"),
        format!("/api/studies/{STUDY}/importance"),
        format!("/api/studies/{STUDY}/events"),
        "/no/such/page".to_string(),
    ];
    for (token, role) in [(VIEWER, "viewer"), (ADMIN, "admin")] {
        let auth = bearer(token);
        for route in &routes {
            let reply = get(addr, route, &[("Authorization", &auth)]).await;
            assert!(![401, 403].contains(&reply.status), "{role} reads {route}: {} {}", reply.status, reply.body);
        }
    }
    let worker = bearer(WORKER);
    for route in &routes {
        let reply = get(addr, route, &[("Authorization", &worker)]).await;
        assert_eq!(reply.status, 403, "a worker token reads {route}: {}", reply.body);
        if route.starts_with("/api/") {
            assert_eq!(
                reply.json()["error"],
                "this token has role worker, which the dashboard does not accept; use a viewer or admin token"
            );
        } else {
            assert!(
                reply.body.contains("id=\"login-form\"") && reply.body.contains("worker"),
                "{route}: {}",
                reply.body
            );
            assert!(!reply.body.contains("app.js"), "{route}: the app is not served to a worker");
        }
    }

    // The login form: a worker's token opens no session; a viewer's opens one that reads.
    let login = |token: &str| format!("token={token}&next=%2F");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let refused = http(addr, "POST", "/login", &form, &login(WORKER)).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("worker") && !refused.head.to_ascii_lowercase().contains("set-cookie"));
    let cookie_of = |reply: &Reply| {
        let line = reply.head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
        line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string()
    };
    let viewer_login = http(addr, "POST", "/login", &form, &login(VIEWER)).await;
    assert_eq!(viewer_login.status, 303);
    let viewer_cookie = cookie_of(&viewer_login);
    let session = get(addr, "/api/session", &[("Cookie", &viewer_cookie)]).await.json();
    assert_eq!(
        (session["auth"].as_bool(), session["role"].as_str(), session["can_stop"].as_bool()),
        (Some(true), Some("viewer"), Some(false))
    );
    assert_eq!(get(addr, &format!("/api/studies/{STUDY}/trials"), &[("Cookie", &viewer_cookie)]).await.status, 200);
    let admin_cookie = cookie_of(&http(addr, "POST", "/login", &form, &login(ADMIN)).await);
    let session = get(addr, "/api/session", &[("Cookie", &admin_cookie)]).await.json();
    assert_eq!((session["role"].as_str(), session["can_stop"].as_bool()), (Some("admin"), Some(true)));

    // Stopping: a viewer's token is refused, so is a session alone; an admin's token stops.
    let stop = format!("/api/studies/{STUDY}/stop");
    let refused = http(addr, "POST", &stop, &[("Authorization", &bearer(VIEWER))], "").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["error"], "this token has role viewer; stopping a study needs admin");
    assert_eq!(http(addr, "POST", &stop, &[("Authorization", &worker)], "").await.status, 403);
    assert_eq!(http(addr, "POST", &stop, &[("Cookie", &admin_cookie)], "").await.status, 401);
    let study = get(addr, &format!("/api/studies/{STUDY}"), &[("Cookie", &viewer_cookie)]).await.json();
    assert_eq!(study["study"]["state"], "RUNNING", "refused stops change nothing");
    let stopped = http(addr, "POST", &stop, &[("Authorization", &bearer(ADMIN))], "").await;
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(stopped.json()["study"]["state"], "STOPPED");
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_study_page_offers_stop_to_an_admin_session_only() {
    use bertsweep_testkit::browser::Browser;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, token_file_text()).unwrap();
    let serve = ServeProcess::start(
        env!("CARGO_BIN_EXE_bertsweep"),
        &dir.path().join("page.db"),
        &["--http", "127.0.0.1:0", "--token-file", tokens.to_str().unwrap()],
    )
    .unwrap();
    let base = serve.dashboard.clone().expect("the banner names the dashboard");
    study_with_a_running_trial(&serve.url).await;
    let browser = Browser::launch(1200, 900).expect("headless Chromium and chromedriver");
    let study_url = format!("{base}studies/{STUDY}");
    let log_in = |token: &str| {
        browser.goto(&study_url).unwrap();
        let submit = "document.querySelector('#token').value = arguments[0]; document.querySelector('#login-form').submit(); return true;";
        browser.eval(submit, vec![Value::from(token)]).unwrap();
    };
    // The page once the session box names `role` and the study is drawn: is Stop offered?
    let stop_offered = |role: &str| {
        let ready = format!(
            "const r = document.querySelector('#session-role'); return document.body.dataset.ready === '1' && !!r && r.textContent === '{role}';"
        );
        browser.wait_for(&format!("the study page as {role}"), &ready, Duration::from_secs(30)).unwrap();
        let offered = "const a = document.querySelector('.stop-area'); return !!a && !a.hidden;";
        browser.eval(offered, vec![]).unwrap() == Value::Bool(true)
    };
    let log_out = || {
        browser.eval("document.querySelector('#session-box form').submit(); return true;", vec![]).unwrap();
        browser
            .wait_for("the login form", "return !!document.querySelector('#login-form');", Duration::from_secs(10))
            .unwrap();
    };

    log_in(WORKER);
    let why = browser
        .wait_for(
            "the worker refusal",
            "const e = document.querySelector('#login-error'); return e ? e.textContent : false;",
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(why.as_str().unwrap().contains("worker"), "{why}");
    log_in(VIEWER);
    assert!(!stop_offered("viewer"), "a viewer's page offers no Stop");
    log_out();
    log_in(ADMIN);
    assert!(stop_offered("admin"), "an admin's page offers Stop");
}
