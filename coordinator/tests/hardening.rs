//! The edges of the gRPC API (issue "Hardening"): per-attempt progress of requeued trials,
//! safe names, studies that could never run, bounded error text and reports, idempotent
//! repeats, status codes for undecodable and over-size requests, prompt wake-ups of waiting
//! workers, the final WatchStudy event and reflection in both versions.

mod common;

use std::time::Duration;

use bertsweep_proto::v1 as pb;
use common::*;
use tonic::Code;

/// A 2-point grid.
const TWO_POINTS: &str = "[parameters.per_device_train_batch_size]\nvalues = [16, 32]\n";

/// A 3-epoch, 4-point grid with one lease at a time.
fn three_epochs(name: &str, budget: &str) -> String {
    study_toml(name, budget, &(grid_params(2) + "[parameters.num_train_epochs]\nvalue = 3\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_trial_reports_from_epoch_one_again_and_completes() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &three_epochs("requeue", "parallel_trials = 1")).await;
    let w = register(&mut c).await;

    // Attempt 1 reports two epochs, then its worker is lost (retryable, as a lease expiry is).
    let first = acquire(&mut c, &w, 100).await.unwrap();
    report(&mut c, &first, 1, 0.60).await.unwrap();
    report(&mut c, &first, 2, 0.70).await.unwrap();
    assert_eq!(fail(&mut c, &first, pb::FailureKind::Retryable).await, pb::TrialState::Pending);

    // Attempt 2 starts again at epoch 1: accepted, on its own curve.
    let second = acquire(&mut c, &w, 100).await.unwrap();
    assert_eq!((second.number, second.attempt), (first.number, 2));
    for (epoch, acc) in [(1, 0.65), (2, 0.75), (3, 0.80)] {
        let answer = report(&mut c, &second, epoch, acc).await.unwrap();
        assert_eq!(answer.decision, pb::Decision::Continue as i32);
    }
    complete(&mut c, &second, 0.80).await.unwrap();

    let check = |t: &pb::Trial| {
        assert_eq!(t.state, pb::TrialState::Completed as i32);
        assert_eq!(t.value, Some(0.80));
        let current: Vec<(u32, u32)> = t.intermediate.iter().map(|e| (e.attempt, e.epoch)).collect();
        assert_eq!(current, vec![(2, 1), (2, 2), (2, 3)], "the curve is the current attempt's");
        let mut earlier: Vec<(u32, u32, f64)> =
            t.earlier_attempts.iter().map(|e| (e.attempt, e.epoch, e.metrics["eval_accuracy"])).collect();
        earlier.sort_by_key(|e| e.1);
        assert_eq!(earlier, vec![(1, 1, 0.60), (1, 2, 0.70)], "earlier attempts are kept for the record");
    };
    check(&trials(&mut c, "requeue").await[0]);

    // The split survives a restart (epochs are stored per lease).
    let dir = server.stop_keeping_files().await;
    let db = format!("sqlite://{}", dir.path().join("test.db").display());
    let restarted = TestServer::start_on_db(Duration::from_secs(30), &db).await;
    let mut c = restarted.client().await;
    check(&trials(&mut c, "requeue").await[0]);
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_names_never_runnable_studies_and_oversized_budgets_are_refused() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    for name in [".", "..", "...", "-rf", "--help", "_x", "a/b"] {
        let err = c
            .create_study(pb::CreateStudyRequest { spec_toml: study_toml(name, "", &grid_params(2)) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains("A-Z a-z 0-9"), "{}", err.message());
    }
    // A step so small the lattice overflows: refused, never a 0-trial study.
    let tiny_step = study_toml(
        "tiny-step",
        "",
        "[parameters.warmup_ratio]\ndistribution = \"uniform\"\nmin = 0.0\nmax = 0.5\nstep = 1e-300\n",
    );
    let err = c.create_study(pb::CreateStudyRequest { spec_toml: tiny_step }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("more than the limit"), "{}", err.message());
    // max_trials over the grid size is refused with the grid size.
    let err = c
        .create_study(pb::CreateStudyRequest { spec_toml: study_toml("big", "max_trials = 50", TWO_POINTS) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("max_trials = 50") && err.message().contains("grid's 2 trials"),
        "{}",
        err.message()
    );
    let listed = c.list_studies(pb::ListStudiesRequest::default()).await.unwrap().into_inner();
    assert!(listed.studies.is_empty(), "nothing was created");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quote_at_most_a_little_of_the_input() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    let huge = "n".repeat(1 << 20);
    let short = |s: &tonic::Status| {
        assert!(s.message().len() < 700, "{} bytes of message", s.message().len());
    };
    let err = c.get_study(pb::GetStudyRequest { name: huge.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    short(&err);
    let err =
        c.create_study(pb::CreateStudyRequest { spec_toml: study_toml(&huge, "", &grid_params(2)) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    short(&err);
    let unknown_key =
        study_toml("k", "", &grid_params(2)) + &format!("[parameters.{}]\nvalue = 1\n", "p".repeat(100_000));
    let err = c.create_study(pb::CreateStudyRequest { spec_toml: unknown_key }).await.unwrap_err();
    short(&err);
    let err = c
        .acquire_trial(pb::AcquireTrialRequest { worker_id: "w".repeat(10_000), study: String::new(), wait_ms: 10 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    short(&err);
    let err = c
        .acquire_trial(pb::AcquireTrialRequest { worker_id: "w".repeat(60), study: String::new(), wait_ms: 10 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    short(&err);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_bounded_and_repeats_are_idempotent_or_refused() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &three_epochs("bounds", "parallel_trials = 1")).await;
    let w = register(&mut c).await;
    let a = acquire(&mut c, &w, 100).await.unwrap();
    let send = |epoch: u32, metrics: std::collections::HashMap<String, f64>| pb::ReportProgressRequest {
        trial_id: a.trial_id,
        lease_token: a.lease_token,
        epoch,
        metrics,
        checkpoint: String::new(),
        peak_device_memory_bytes: 0,
    };
    let mut many = metrics(0.5);
    many.extend((0..150_000).map(|i| (format!("m{i}"), 1.0)));
    let mut sixty_five = metrics(0.5);
    sixty_five.extend((0..63).map(|i| (format!("m{i}"), 1.0)));
    let mut bad_name = metrics(0.5);
    bad_name.insert("Eval-Acc".into(), 1.0);
    let mut infinite = metrics(0.5);
    infinite.insert("train_loss".into(), f64::INFINITY);
    for (epoch, m, why) in [
        (1, many, "150,000 metrics"),
        (1, sixty_five, "65 metrics"),
        (1, bad_name, "a metric name outside [a-z0-9_]"),
        (1, infinite, "an infinite value"),
        (u32::MAX, metrics(0.5), "epoch 2^32-1"),
        (4, metrics(0.5), "an epoch past num_train_epochs = 3"),
    ] {
        let err = c.report_progress(send(epoch, m)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
    }
    let mut sixty_four = metrics(0.5);
    sixty_four.extend((0..62).map(|i| (format!("m{i}"), 1.0)));
    assert_eq!(sixty_four.len(), 64);
    c.report_progress(send(1, sixty_four.clone())).await.expect("64 metrics are fine");
    // The same epoch again: the same answer; other metrics: refused, the first kept.
    let again = c.report_progress(send(1, sixty_four)).await.unwrap().into_inner();
    assert_eq!(again.decision, pb::Decision::Continue as i32);
    let err = report(&mut c, &a, 1, 0.9).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let t = &trials(&mut c, "bounds").await[0];
    assert_eq!(t.intermediate.len(), 1);
    assert_eq!(t.intermediate[0].metrics["eval_accuracy"], 0.5);

    complete(&mut c, &a, 0.7).await.unwrap();
    complete(&mut c, &a, 0.7).await.expect("an identical completion is idempotent");
    let err = complete(&mut c, &a, 0.9).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a different completion is refused");
    let t = &trials(&mut c, "bounds").await[0];
    assert_eq!((t.state, t.value), (pb::TrialState::Completed as i32, Some(0.7)), "the first completion stands");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_requests_get_the_callers_codes() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    // Field 1 (a string) claims 100 bytes and has 2.
    let err = raw_call(&server.url, "GetStudy", vec![0x0a, 100, b'a', b'b']).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raw_call(&server.url, "CreateStudy", vec![0x0a; 5 << 20]).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The server still answers normally.
    let mut c = server.client().await;
    assert!(c.list_studies(pb::ListStudiesRequest::default()).await.is_ok());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_study_answers_waiting_and_later_acquires_at_once() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &three_epochs("wake", "parallel_trials = 1")).await;
    let w = register(&mut c).await;
    let _held = acquire(&mut c, &w, 100).await.unwrap();
    // A second worker parks on the full study for up to 60 s.
    let url = server.url.clone();
    let w2 = w.clone();
    let parked = tokio::spawn(async move {
        let mut c = bertsweep_proto::v1::coordinator_client::CoordinatorClient::connect(url).await.unwrap();
        let request = pb::AcquireTrialRequest { worker_id: w2, study: "wake".into(), wait_ms: 60_000 };
        c.acquire_trial(request).await.unwrap().into_inner()
    });
    // Whether the call is already parked when the stop lands or arrives just after, it must
    // answer long before its 60 s long-poll runs out (before the fix it waited all of it).
    c.stop_study(pb::StopStudyRequest { name: "wake".into() }).await.unwrap();
    // Well inside the 60 s long-poll: the stop woke it.
    let answer = tokio::time::timeout(Duration::from_secs(20), parked).await.expect("woken by the stop").unwrap();
    assert!(answer.assignment.is_none());
    assert_eq!(answer.study_state, pb::StudyState::Stopped as i32);
    assert!(answer.reason.contains("stopped"), "{}", answer.reason);
    // A later call on the ended study answers at once too.
    let request = pb::AcquireTrialRequest { worker_id: w.clone(), study: "wake".into(), wait_ms: 60_000 };
    let answer = tokio::time::timeout(Duration::from_secs(20), c.acquire_trial(request))
        .await
        .expect("no long-poll")
        .unwrap()
        .into_inner();
    assert_eq!(answer.study_state, pb::StudyState::Stopped as i32);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_watch_event_has_no_trial_and_a_terminal_state() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &study_toml("fin", "parallel_trials = 2", TWO_POINTS)).await;
    let w = register(&mut c).await;
    for _ in 0..2 {
        let a = acquire(&mut c, &w, 100).await.unwrap();
        complete(&mut c, &a, 0.5).await.unwrap();
    }
    let mut stream = c.watch_study(pb::WatchStudyRequest { study: "fin".into() }).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        events.push(e);
    }
    assert_eq!(events.len(), 3, "two snapshot rows, then the final event, then the end");
    assert!(events[..2].iter().all(|e| e.snapshot && e.trial.is_some()));
    let last = events.last().unwrap();
    assert!(last.trial.is_none() && !last.snapshot);
    assert_eq!(last.study_state, pb::StudyState::Completed as i32);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start(Duration::from_secs(30)).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).unwrap().connect().await.unwrap();

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
    else {
        panic!("unexpected v1 reply {reply:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "bertsweep.v1.Coordinator"));

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
    else {
        panic!("unexpected v1alpha reply {reply:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "bertsweep.v1.Coordinator"));
    server.shutdown().await;
}
