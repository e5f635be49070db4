//! Malformed or out-of-range RPC fields are refused with INVALID_ARGUMENT / NOT_FOUND and
//! change nothing.

mod common;

use std::time::Duration;

use bertsweep_proto::v1 as pb;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_change_nothing() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &study_toml("v", "parallel_trials = 2", &grid_params(2))).await;
    let err = c.create_study(pb::CreateStudyRequest { spec_toml: "name = 1".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .acquire_trial(pb::AcquireTrialRequest { worker_id: "ghost".into(), study: String::new(), wait_ms: 10 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let w = register(&mut c).await;
    let err = c
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), study: "nope".into(), wait_ms: 10 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .acquire_trial(pb::AcquireTrialRequest { worker_id: w.clone(), study: String::new(), wait_ms: 3_600_000 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let a = acquire(&mut c, &w, 100).await.unwrap();
    let before = trials(&mut c, "v").await;
    let bad_reports = [
        pb::ReportProgressRequest {
            trial_id: 0,
            lease_token: a.lease_token,
            epoch: 1,
            metrics: metrics(0.5),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: 0,
            epoch: 1,
            metrics: metrics(0.5),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch: 0,
            metrics: metrics(0.5),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch: 1,
            metrics: Default::default(),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch: 1,
            metrics: metrics(f64::NAN),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch: 1,
            metrics: [("eval_loss".to_string(), 0.3)].into_iter().collect(),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        },
        pb::ReportProgressRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            epoch: 1,
            metrics: metrics(0.5),
            checkpoint: String::new(),
            peak_device_memory_bytes: (1 << 50) + 1,
        },
    ];
    for r in bad_reports {
        let err = c.report_progress(r).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = c
        .report_progress(pb::ReportProgressRequest {
            trial_id: 999_999,
            lease_token: 1,
            epoch: 1,
            metrics: metrics(0.5),
            checkpoint: String::new(),
            peak_device_memory_bytes: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .fail_trial(pb::FailTrialRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            error: "x".into(),
            kind: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .complete_trial(pb::CompleteTrialRequest {
            trial_id: a.trial_id,
            lease_token: a.lease_token,
            metrics: Default::default(),
            artifact: String::new(),
            peak_device_memory_bytes: 0,
            predictions: None,
            test_metrics: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = complete_with_peak(&mut c, &a, 0.5, u64::MAX).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("peak_device_memory_bytes 18446744073709551615 is over 2^50 bytes"), "{err:?}");
    assert_eq!(err.message().lines().count(), 1, "{err:?}");
    assert_eq!(trials(&mut c, "v").await, before, "refused requests changed nothing");
    report(&mut c, &a, 2, 0.6).await.unwrap();
    let err = report(&mut c, &a, 1, 0.6).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "epochs go forward");
    server.shutdown().await;
}
