use super::*;
use crate::ops::WriteOp;
use tokio::sync::broadcast;

/// Tokens handed out whose commits never reached the disk (a power loss under
/// `synchronous = NORMAL`) are still never issued again: each start reserves a new range
/// durably, above the last one.
#[tokio::test]
async fn every_start_issues_tokens_above_every_earlier_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::open(&url).await.unwrap();
    let first = store.load().await.unwrap().lease_tokens_from;
    // The run issues tokens first.. first+1000 and none of them is ever committed.
    store.pool.close().await;
    drop(store);
    let store = Store::open(&url).await.unwrap();
    let second = store.load().await.unwrap().lease_tokens_from;
    assert!(second >= first + LEASE_TOKENS_PER_RUN, "{first} then {second}");
    let reserved: i64 =
        sqlx::query_scalar("SELECT reserved_below FROM lease_token_ranges").fetch_one(&store.pool).await.unwrap();
    assert_eq!(reserved as u64, second + LEASE_TOKENS_PER_RUN);
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&store.pool).await.unwrap();
    assert_eq!(synchronous, 1, "back to NORMAL for the writer");
}

/// A trial's peak device memory is written with its row and read back at start-up.
#[tokio::test]
async fn a_trials_peak_memory_and_evaluation_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::open(&url).await.unwrap();
    store.load().await.unwrap();
    let writer = store.spawn_writer(broadcast::channel(4).0);
    let study = StudyRecord {
        id: 1,
        name: "s".into(),
        state: StudyState::Running,
        spec_toml: String::new(),
        reason: String::new(),
        created_ms: 0,
        finished_ms: None,
    };
    let mut trial = crate::model::test_trial(0, Default::default(), TrialState::Running);
    trial.peak_device_memory_bytes = 3_000_000_000;
    let sent = bertsweep_proto::v1::DevPredictions {
        epoch: 2,
        classes: 2,
        labels: vec![0, 1, 1],
        probabilities: vec![0.75, 0.25, 0.5, 0.5, 0.125, 0.875],
        class_weights: vec![1.0, 2.0],
        class_names: vec!["neg".into(), "pos".into()],
    };
    let evaluation = std::sync::Arc::new(crate::evaluation::evaluate(sent, "eval_accuracy", 5).unwrap());
    trial.evaluation = Some(evaluation.clone());
    let ops = vec![WriteOp::Study(study), WriteOp::Trial { trial: Box::new(trial), study_state: StudyState::Running }];
    writer.wait(writer.submit(ops)).await.unwrap();
    writer.close().await;

    let loaded = Store::open(&url).await.unwrap().load().await.unwrap();
    assert_eq!(loaded.trials.len(), 1);
    assert_eq!(loaded.trials[0].peak_device_memory_bytes, 3_000_000_000);
    assert_eq!(loaded.trials[0].evaluation.as_deref(), Some(&*evaluation), "predictions and interval");
}
