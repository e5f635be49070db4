//! Trial lifecycle over real gRPC: lease, heartbeat, progress, completion, requeue of expired
//! leases with fencing, failures, study completion and WatchStudy, and the peak device memory
//! trials report and later leases of their shape are told to expect.

mod common;

use std::time::Duration;

use bertsweep_proto::v1 as pb;
use common::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_and_watch() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(&mut c, &study_toml("life", "parallel_trials = 2", &grid_params(2))).await;
    let mut watch = c.watch_study(pb::WatchStudyRequest { study: "life".into() }).await.unwrap().into_inner();
    let worker = register(&mut c).await;

    for i in 0..4u32 {
        let a = acquire(&mut c, &worker, 1000).await.expect("a trial");
        assert_eq!(a.number, i);
        assert_eq!(a.study, "life");
        assert!(a.lease_token > 0 && a.lease_ttl_ms == 30_000);
        let task = a.task.clone().unwrap();
        assert_eq!(
            (task.text_column.as_str(), task.max_seq_length, task.objective_metric.as_str(), task.maximize),
            ("sentence", 128, "eval_accuracy", true)
        );
        let hb = c
            .heartbeat(pb::HeartbeatRequest { trial_id: a.trial_id, lease_token: a.lease_token })
            .await
            .unwrap()
            .into_inner();
        assert!(!hb.stop);
        for epoch in 1..=2 {
            let r = report(&mut c, &a, epoch, 0.5 + epoch as f64 / 10.0).await.unwrap();
            assert_eq!(r.decision, pb::Decision::Continue as i32);
        }
        complete(&mut c, &a, 0.7 + i as f64 / 100.0).await.unwrap();
        // Completing twice with the same lease is harmless.
        complete(&mut c, &a, 0.7 + i as f64 / 100.0).await.unwrap();
    }
    assert!(acquire(&mut c, &worker, 100).await.is_none());
    let s = study(&mut c, "life").await;
    assert_eq!(s.state, pb::StudyState::Completed as i32);
    assert_eq!(s.counts.unwrap().completed, 4);
    let best =
        c.get_best_trial(pb::GetBestTrialRequest { study: "life".into() }).await.unwrap().into_inner().trial.unwrap();
    assert_eq!(best.number, 3);
    assert_eq!(best.intermediate.len(), 2);

    // The watch stream saw every trial reach COMPLETED and then the study end.
    let mut completed = std::collections::HashSet::new();
    let mut ended = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap() {
        match ev.trial {
            Some(t) if t.state == pb::TrialState::Completed as i32 => {
                completed.insert(t.number);
            }
            Some(_) => {}
            None => {
                ended = ev.study_state == pb::StudyState::Completed as i32;
                break;
            }
        }
    }
    assert!(ended, "stream ends with the study");
    assert_eq!(completed.len(), 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_requeued_and_the_old_token_is_fenced() {
    let server = TestServer::start(Duration::from_millis(300)).await;
    let mut c = server.client().await;
    create(&mut c, &study_toml("lease", "parallel_trials = 1\nmax_attempts = 3", &grid_params(2))).await;
    let w1 = register(&mut c).await;
    let w2 = register(&mut c).await;
    let first = acquire(&mut c, &w1, 1000).await.unwrap();
    report(&mut c, &first, 1, 0.6).await.unwrap();
    // w1 goes silent; the reaper requeues the trial, and w2 gets it with the same params.
    let second = eventually("requeue", Duration::from_secs(10), || {
        let mut c = c.clone();
        let w2 = w2.clone();
        async move { acquire(&mut c, &w2, 200).await }
    })
    .await;
    assert_eq!(second.number, first.number);
    assert_eq!(second.params, first.params);
    assert_eq!(second.attempt, 2);
    assert!(second.lease_token > first.lease_token);

    // Every call with the stale token is refused and changes nothing.
    let before = trials(&mut c, "lease").await;
    let err = report(&mut c, &first, 2, 0.9).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(complete(&mut c, &first, 0.9).await.unwrap_err().code(), Code::FailedPrecondition);
    let err = c
        .heartbeat(pb::HeartbeatRequest { trial_id: first.trial_id, lease_token: first.lease_token })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = c
        .fail_trial(pb::FailTrialRequest {
            trial_id: first.trial_id,
            lease_token: first.lease_token,
            error: "x".into(),
            kind: pb::FailureKind::Retryable as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let after = trials(&mut c, "lease").await;
    assert_eq!(before[0].state, after[0].state);
    assert_eq!(before[0].intermediate, after[0].intermediate);
    assert_eq!(after[0].state, pb::TrialState::Running as i32);

    // The new holder completes it normally.
    complete(&mut c, &second, 0.8).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_infeasible_retry_release_and_study_failure() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    create(
        &mut c,
        &study_toml("fails", "parallel_trials = 4\nmax_attempts = 2\nmax_failed_trials = 2", &grid_params(3)),
    )
    .await;
    let w = register(&mut c).await;
    let fc = c.clone();
    let fail = |a: pb::Assignment, kind: pb::FailureKind| {
        let mut c = fc.clone();
        async move {
            c.fail_trial(pb::FailTrialRequest {
                trial_id: a.trial_id,
                lease_token: a.lease_token,
                error: "boom".into(),
                kind: kind as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .state
        }
    };
    let a = acquire(&mut c, &w, 100).await.unwrap();
    // Released: requeued without using an attempt, and handed out before new samples.
    assert_eq!(fail(a.clone(), pb::FailureKind::Released).await, pb::TrialState::Pending as i32);
    let a = acquire(&mut c, &w, 100).await.unwrap();
    assert_eq!((a.number, a.attempt), (0, 1));
    // Retryable: requeued until attempts run out.
    assert_eq!(fail(a, pb::FailureKind::Retryable).await, pb::TrialState::Pending as i32);
    let a = acquire(&mut c, &w, 100).await.unwrap();
    assert_eq!((a.number, a.attempt), (0, 2));
    assert_eq!(fail(a, pb::FailureKind::Retryable).await, pb::TrialState::Failed as i32);
    // Infeasible: failed at once, never retried.
    let b = acquire(&mut c, &w, 100).await.unwrap();
    let running = acquire(&mut c, &w, 100).await.unwrap();
    assert_eq!(fail(b, pb::FailureKind::Infeasible).await, pb::TrialState::Failed as i32);
    // Two failures = max_failed_trials: the study fails and live trials are told to stop.
    let s = study(&mut c, "fails").await;
    assert_eq!(s.state, pb::StudyState::Failed as i32);
    assert!(s.reason.contains("2 trials failed"), "{}", s.reason);
    let hb = c
        .heartbeat(pb::HeartbeatRequest { trial_id: running.trial_id, lease_token: running.lease_token })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.stop);
    let r = report(&mut c, &running, 1, 0.5).await.unwrap();
    assert_eq!(r.decision, pb::Decision::Stop as i32);
    assert!(acquire(&mut c, &w, 100).await.is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_study_and_long_poll_wakes_when_work_appears() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    let w = register(&mut c).await;
    // A worker waiting with no study wakes as soon as one is created.
    let waiter = {
        let mut c = c.clone();
        let w = w.clone();
        tokio::spawn(async move { acquire(&mut c, &w, 20_000).await })
    };
    tokio::task::yield_now().await;
    create(&mut c, &study_toml("wake", "parallel_trials = 1", &grid_params(2))).await;
    let got = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("long poll woke").unwrap();
    let a = got.expect("assignment");
    // parallel_trials = 1: the next caller waits until a completes.
    let waiter = {
        let mut c = c.clone();
        let w = w.clone();
        tokio::spawn(async move { acquire(&mut c, &w, 20_000).await })
    };
    complete(&mut c, &a, 0.7).await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(b.number, 1);
    let stopped = c.stop_study(pb::StopStudyRequest { name: "wake".into() }).await.unwrap().into_inner();
    assert_eq!(stopped.state, pb::StudyState::Stopped as i32);
    let hb = c
        .heartbeat(pb::HeartbeatRequest { trial_id: b.trial_id, lease_token: b.lease_token })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.stop);
    assert_eq!(complete(&mut c, &b, 0.9).await.unwrap_err().code(), Code::FailedPrecondition);
    let err = c.stop_study(pb::StopStudyRequest { name: "wake".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.shutdown().await;
}

const GB: u64 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_device_memory_is_kept_per_trial_and_expected_per_shape_across_a_restart() {
    let server = TestServer::start(Duration::from_secs(30)).await;
    let mut c = server.client().await;
    // The first parameter varies slowest: trials 0-3 have batch size 16, trials 4-7 batch size 32.
    let params = "[parameters.per_device_train_batch_size]\nvalues = [16, 32]\n\
                  [parameters.learning_rate]\nvalues = [1e-5, 2e-5, 3e-5, 4e-5]\n";
    create(&mut c, &study_toml("mem", "parallel_trials = 2", params)).await;
    let mut watch = c.watch_study(pb::WatchStudyRequest { study: "mem".into() }).await.unwrap().into_inner();
    let w = register(&mut c).await;
    let batch = |a: &pb::Assignment| a.params["per_device_train_batch_size"].kind.clone();
    let peaks = |trials: &[pb::Trial]| trials.iter().map(|t| t.peak_device_memory_bytes).collect::<Vec<_>>();

    // Two trials of one shape; nothing has been measured yet.
    let a = acquire(&mut c, &w, 1000).await.unwrap();
    let b = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!((a.number, b.number), (0, 1));
    assert_eq!(batch(&a), batch(&b));
    assert_eq!((a.expected_peak_bytes, b.expected_peak_bytes), (0, 0));
    // 3 GB, then a lower 2 GB on a later epoch, then a completion that measured nothing.
    report_with_peak(&mut c, &a, 1, 0.6, 3 * GB).await.unwrap();
    report_with_peak(&mut c, &a, 2, 0.7, 2 * GB).await.unwrap();
    complete_with_peak(&mut c, &a, 0.7, 0).await.unwrap();
    report_with_peak(&mut c, &b, 1, 0.6, GB).await.unwrap();
    assert_eq!(peaks(&trials(&mut c, "mem").await), [3 * GB, GB], "each trial keeps its largest");
    // Watchers see it too.
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        if ev.trial.is_some_and(|t| t.number == 0 && t.peak_device_memory_bytes == 3 * GB) {
            break;
        }
    }

    // A later trial of that shape expects the largest peak of its shape.
    let c2 = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!((c2.number, batch(&c2) == batch(&a), c2.expected_peak_bytes), (2, true, 3 * GB));
    complete_with_peak(&mut c, &b, 0.7, 0).await.unwrap();
    complete_with_peak(&mut c, &c2, 0.7, 0).await.unwrap();
    let d = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!((d.number, d.expected_peak_bytes), (3, 3 * GB));
    complete_with_peak(&mut c, &d, 0.7, 0).await.unwrap();
    // A trial of another shape expects nothing: none of its shape has reported.
    let e = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!(e.number, 4);
    assert_ne!(batch(&e), batch(&a));
    assert_eq!(e.expected_peak_bytes, 0);
    complete_with_peak(&mut c, &e, 0.7, 6 * GB).await.unwrap();

    // `bertsweep trials`: json carries the bytes (null when none was measured), the table human
    // units, csv the bytes.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bertsweep"))
            .env_remove("BERTSWEEP_TOKEN")
            .env("BERTSWEEP_COORDINATOR", &server.url)
            .env("RUST_LOG", "off")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&cli(&["trials", "mem", "--format", "json"])).unwrap();
    let shown: Vec<Option<u64>> =
        json.as_array().unwrap().iter().map(|t| t["peak_device_memory_bytes"].as_u64()).collect();
    assert_eq!(shown, [Some(3 * GB), Some(GB), None, None, Some(6 * GB)]);
    let table = cli(&["trials", "mem"]);
    let rows: Vec<&str> = table.lines().collect();
    let column = rows[0].find("PEAK MEM").expect("a peak memory column");
    let cell = |row: usize| rows[row][column..].split("  ").next().unwrap().trim_end();
    assert_eq!([cell(1), cell(2), cell(3), cell(5)], ["3.0 GB", "1.0 GB", "-", "6.0 GB"], "{table}");
    let csv = cli(&["trials", "mem", "--format", "csv"]);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|h| *h == "peak_device_memory_bytes").expect("a csv column");
    let cells: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(column).unwrap()).collect();
    assert_eq!(cells, ["3000000000", "1000000000", "", "", "6000000000"]);

    // A restarted coordinator keeps every trial's peak, and what each shape expects (an open
    // watch would hold the graceful shutdown).
    drop(watch);
    let dir = server.stop_keeping_files().await;
    let db_url = format!("sqlite://{}", dir.path().join("test.db").display());
    let server = TestServer::start_on_db(Duration::from_secs(30), &db_url).await;
    let mut c = server.client().await;
    assert_eq!(peaks(&trials(&mut c, "mem").await), [3 * GB, GB, 0, 0, 6 * GB]);
    let w = register(&mut c).await;
    let f = acquire(&mut c, &w, 1000).await.unwrap();
    assert_eq!((f.number, batch(&f) == batch(&e), f.expected_peak_bytes), (5, true, 6 * GB));
    server.shutdown().await;
}
